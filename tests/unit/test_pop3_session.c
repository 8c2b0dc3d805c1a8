/* The POP3 session end to end in one process: the real session, command table and store (a
 * temporary Maildir), a fake connection (tests/support/pop3_fake_conn.c) and a fake auth
 * service defined here (the link seam: this file defines the auth.h functions the session
 * uses, so auth_client's are never linked). Every command in every state, exact bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "pop3.h"
#include "pop3_delay.h"
#include "pop3_fake_conn.h"
#include "pop3_settings.h"
#include "sasl.h"
#include "base64.h"
#include "storage.h"

/* ---- fake auth service: alice/secret and bob/hunter2 log in; "temp" is TEMPFAIL,
 * "old" EXPIRED, anything else PERMFAIL. Answers later, from the loop. ---- */

struct auth_service {
	int unused;
};
static struct auth_service fake_svc;
static unsigned fake_auth_started, fake_auth_cancelled;

struct auth_request {
	uv_timer_t timer;
	enum auth_result result;
	char user[AUTH_WIRE_MAX_USER + 1];
	auth_done_fn *done;
	void *ctx;
};

static void fake_auth_closed(uv_handle_t *h)
{
	free(h->data);
}

static void fake_auth_fire(uv_timer_t *t)
{
	struct auth_request *r = t->data;
	r->done(r->ctx, r->result, r->result == AUTH_RESULT_OK ? r->user : NULL, "fake");
	uv_close((uv_handle_t *)&r->timer, fake_auth_closed);
}

struct auth_request *auth_request_start(struct auth_service *svc,
					const struct auth_request_info *info, auth_done_fn *done,
					void *ctx)
{
	assert_ptr_equal(svc, &fake_svc);
	assert_string_equal(info->protocol, "pop3");
	struct auth_request *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	if ((strcmp(info->user, "alice") == 0 && strcmp(info->password, "secret") == 0) ||
	    (strcmp(info->user, "bob") == 0 && strcmp(info->password, "hunter 2") == 0))
		r->result = AUTH_RESULT_OK;
	else if (strcmp(info->user, "temp") == 0)
		r->result = AUTH_RESULT_TEMPFAIL;
	else if (strcmp(info->user, "old") == 0)
		r->result = AUTH_RESULT_EXPIRED;
	else
		r->result = AUTH_RESULT_PERMFAIL;
	snprintf(r->user, sizeof(r->user), "%s", info->user);
	r->done = done;
	r->ctx = ctx;
	uv_timer_init(uv_default_loop(), &r->timer);
	r->timer.data = r;
	uv_timer_start(&r->timer, fake_auth_fire, 0, 0);
	fake_auth_started++;
	return r;
}

void auth_request_cancel(struct auth_request **req_p)
{
	if (*req_p == NULL)
		return;
	fake_auth_cancelled++;
	uv_timer_stop(&(*req_p)->timer);
	uv_close((uv_handle_t *)&(*req_p)->timer, fake_auth_closed);
	*req_p = NULL;
}

bool auth_plaintext_allowed(const struct config *cfg, bool tls, bool peer_is_loopback)
{
	return tls || peer_is_loopback || cfg->allow_plaintext_auth;
}

bool auth_failures_exceeded(const struct config *cfg, unsigned failures)
{
	return cfg->auth_max_failures > 0 && failures >= cfg->auth_max_failures;
}

bool auth_user_name_valid(const char *user)
{
	return user[0] != 0 && user[0] != '.' && strchr(user, '/') == NULL;
}

/* ---- settings seam: the session reads its POP3 settings through this ---- */

static struct pop3_settings test_settings;

void pop3_settings_get(const struct config *cfg, struct pop3_settings *set_r)
{
	*set_r = test_settings;
}

/* ---- fixture ---- */

struct fx {
	char dir[64];
	struct config *cfg;
};

static const char M1[] = "From: a@example.com\r\nSubject: one\r\n\r\n.leading dot\r\nline2\r\n";
/* Bare LF on disk, a lone "." line, and no final newline. */
static const char M2[] = "From: b@example.com\nSubject: two\n\nbody1\n.\n..\nlast";
static const char M3[] = "Subject: three\r\n\r\nx\r\n";
/* CRLF sizes, as text for the expected answers; checked against the messages below. */
#define M1_SIZE 58
#define M2_SIZE 55 /* 49 bytes on disk, six LF become CRLF */
#define M3_SIZE 21
_Static_assert(sizeof(M1) - 1 == M1_SIZE, "M1 size");
_Static_assert(sizeof(M2) - 1 + 6 == M2_SIZE, "M2 size");
_Static_assert(sizeof(M3) - 1 == M3_SIZE, "M3 size");

static void append_msg(struct mailbox *mbox, const char *data, size_t len)
{
	struct mail_append *a;
	uint32_t uid;
	assert_int_equal(mailbox_append_begin(mbox, 0, 0, 0, &a), 0);
	assert_int_equal(mail_append_write(a, data, len), 0);
	assert_int_equal(mail_append_finish(&a, &uid), 0);
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	strcpy(fx->dir, "/tmp/mk-pop3-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	char text[512];
	snprintf(text, sizeof(text),
		 "[server]\nmail_root = %s/%%u\nauth_max_failures = 3\n"
		 "[listener pop3]\nprotocol = pop3\nport = 1110\n",
		 fx->dir);
	struct config_errors errs;
	assert_int_equal(config_load_string("t.conf", text, strlen(text), &fx->cfg, &errs), 0);

	struct store *store;
	struct mailbox *mbox;
	assert_int_equal(store_open(uv_default_loop(), fx->cfg, "alice", &store), 0);
	assert_int_equal(mailbox_open(store, "INBOX", &mbox), 0);
	append_msg(mbox, M1, sizeof(M1) - 1);
	append_msg(mbox, M2, sizeof(M2) - 1);
	append_msg(mbox, M3, sizeof(M3) - 1);
	mailbox_unref(&mbox);
	store_unref(&store);

	test_settings = (struct pop3_settings){.delete_policy = POP3_DELETE_EXPUNGE,
					       .retr_sets_seen = true};
	pop3_auth_service_set(&fake_svc);
	*state = fx;
	return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	config_unref(&fx->cfg);
	pop3_delay_clear();
	uv_run(uv_default_loop(), UV_RUN_NOWAIT);
	nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

static struct conn *open_conn(struct fx *fx, bool loopback, bool starttls)
{
	struct fake_conn_opts o = {.config = fx->cfg,
				   .loop = uv_default_loop(),
				   .loopback = loopback,
				   .starttls = starttls,
				   .stream_chunk = 7};
	struct conn *c = fake_conn_new(&pop3_proto_ops, &o);
	char *g = fake_conn_take(c, NULL);
	assert_string_equal(g, "+OK mailkeep POP3 ready.\r\n");
	free(g);
	return c;
}

/* Send LINE(s), expect exactly EXPECT back. */
static void chat(struct conn *c, const char *send, const char *expect)
{
	fake_conn_send(c, send);
	size_t len;
	char *got = fake_conn_take(c, &len);
	if (len != strlen(expect) || memcmp(got, expect, len) != 0)
		fail_msg("sent \"%s\"\nexpected \"%s\"\ngot      \"%s\"", send, expect, got);
	free(got);
}

static struct conn *login(struct fx *fx, const char *user, const char *pass)
{
	struct conn *c = open_conn(fx, true, false);
	char line[128];
	snprintf(line, sizeof(line), "USER %s\r\n", user);
	chat(c, line, "+OK Send your password.\r\n");
	snprintf(line, sizeof(line), "PASS %s\r\n", pass);
	fake_conn_send(c, line);
	char *got = fake_conn_take(c, NULL);
	assert_memory_equal(got, "+OK Logged in, ", 15);
	free(got);
	return c;
}

/* Messages of alice's INBOX as the store sees them now: count and \Seen / $POP3Deleted. */
static uint32_t store_count(struct fx *fx, const char *user)
{
	struct store *store;
	struct mailbox *mbox;
	assert_int_equal(store_open(uv_default_loop(), fx->cfg, user, &store), 0);
	assert_int_equal(mailbox_open(store, "INBOX", &mbox), 0);
	assert_int_equal(mailbox_refresh(mbox), 0);
	uint32_t n = mailbox_count(mbox);
	mailbox_unref(&mbox);
	store_unref(&store);
	return n;
}

static unsigned store_flags(struct fx *fx, uint32_t seq, uint32_t *keywords_r)
{
	struct store *store;
	struct mailbox *mbox;
	struct view *v;
	struct mail_info info;
	assert_int_equal(store_open(uv_default_loop(), fx->cfg, "alice", &store), 0);
	assert_int_equal(mailbox_open(store, "INBOX", &mbox), 0);
	assert_int_equal(view_new(mbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(view_msg_info(v, seq, &info), 0);
	view_free(&v);
	mailbox_unref(&mbox);
	store_unref(&store);
	if (keywords_r)
		*keywords_r = info.keywords;
	return info.flags;
}

#define TOTAL 134 /* M1 + M2 + M3 */
#define M23   76  /* M2 + M3 */
#define M13   79  /* M1 + M3 */
_Static_assert(TOTAL == M1_SIZE + M2_SIZE + M3_SIZE && M23 == M2_SIZE + M3_SIZE &&
		       M13 == M1_SIZE + M3_SIZE,
	       "sums");
#define S(x)  #x
#define XS(x) S(x)

/* ---- AUTHORIZATION ---- */

static const char CAPA_LOGIN[] = "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\n"
				 "AUTH-RESP-CODE\r\nPIPELINING\r\nUSER\r\nSASL PLAIN LOGIN\r\n"
				 "EXPIRE NEVER\r\nIMPLEMENTATION mailkeep\r\n.\r\n";

static void test_authorization_commands(void **state)
{
	struct fx *fx = *state;
	struct conn *c = open_conn(fx, true, false);
	chat(c, "CAPA\r\n", CAPA_LOGIN);
	chat(c, "capa\n", CAPA_LOGIN); /* case and bare LF */
	chat(c, "CAPA x\r\n", "-ERR Syntax: CAPA takes no arguments.\r\n");
	chat(c, "STAT\r\n", "-ERR Not logged in.\r\n");
	chat(c, "LIST\r\n", "-ERR Not logged in.\r\n");
	chat(c, "LIST 1\r\n", "-ERR Not logged in.\r\n");
	chat(c, "UIDL\r\n", "-ERR Not logged in.\r\n");
	chat(c, "RETR 1\r\n", "-ERR Not logged in.\r\n");
	chat(c, "TOP 1 0\r\n", "-ERR Not logged in.\r\n");
	chat(c, "DELE 1\r\n", "-ERR Not logged in.\r\n");
	chat(c, "NOOP\r\n", "-ERR Not logged in.\r\n");
	chat(c, "RSET\r\n", "-ERR Not logged in.\r\n");
	chat(c, "STLS\r\n", "-ERR STLS is not available on this port.\r\n");
	chat(c, "APOP alice 0123456789abcdef0123456789abcdef\r\n",
	     "-ERR [AUTH] APOP is not supported; use USER/PASS or AUTH.\r\n");
	chat(c, "XYZZY\r\n", "-ERR Unknown command.\r\n");
	chat(c, "LAST\r\n", "-ERR Unknown command.\r\n");
	chat(c, "\r\n", "-ERR Empty command.\r\n");
	chat(c, "PASS secret\r\n", "-ERR No user name given; send USER first.\r\n");
	chat(c, "USER\r\n", "-ERR Syntax: USER name\r\n");
	chat(c, "AUTH\r\n", "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
	chat(c, "AUTH CRAM-MD5\r\n", "-ERR Unsupported authentication mechanism.\r\n");
	chat(c, "AUTH PLAIN a b\r\n", "-ERR Syntax: AUTH mechanism [initial-response]\r\n");
	assert_int_equal(fake_conn_bad_count(c), 15);
	chat(c, "QUIT\r\n", "+OK Logging out.\r\n");
	assert_true(fake_conn_closed(c));
	fake_conn_free(&c);
	assert_int_equal(fake_auth_started, 0);
}

static void test_plaintext_refused(void **state)
{
	struct fx *fx = *state;
	/* Not loopback, not TLS, a STLS listener: no USER/SASL, STLS offered. */
	struct conn *c = open_conn(fx, false, true);
	chat(c, "CAPA\r\n",
	     "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
	     "PIPELINING\r\nSTLS\r\nEXPIRE NEVER\r\nIMPLEMENTATION mailkeep\r\n.\r\n");
	const char *refused = "-ERR [AUTH] Plaintext authentication disallowed on non-secure "
			      "connections; use STLS first.\r\n";
	chat(c, "USER alice\r\n", refused);
	chat(c, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", refused);
	chat(c, "AUTH\r\n", "+OK\r\n.\r\n");
	/* STLS: the +OK, then plaintext pipelined behind it is dropped. */
	chat(c, "STLS\r\nUSER alice\r\n", "+OK Begin TLS negotiation.\r\n");
	chat(c, "CAPA\r\n", CAPA_LOGIN);
	chat(c, "STLS\r\n", "-ERR Already using TLS.\r\n");
	chat(c, "USER alice\r\n", "+OK Send your password.\r\n");
	chat(c, "PASS secret\r\n", "+OK Logged in, 3 messages (" XS(TOTAL) " octets).\r\n");
	fake_conn_free(&c);
}

static void test_login_failures(void **state)
{
	struct fx *fx = *state;
	struct conn *c = open_conn(fx, true, false);
	chat(c, "USER alice\r\n", "+OK Send your password.\r\n");
	chat(c, "PASS wrong\r\n", "-ERR [AUTH] Authentication failed.\r\n");
	/* PASS only right after USER. */
	chat(c, "PASS secret\r\n", "-ERR No user name given; send USER first.\r\n");
	chat(c, "USER temp\r\nPASS x\r\n",
	     "+OK Send your password.\r\n"
	     "-ERR [SYS/TEMP] Authentication is temporarily unavailable.\r\n");
	assert_false(fake_conn_closed(c));
	/* The third failure (auth_max_failures = 3) closes. */
	chat(c, "USER old\r\nPASS x\r\nNOOP\r\n",
	     "+OK Send your password.\r\n-ERR [AUTH] Password expired.\r\n");
	assert_true(fake_conn_closed(c));
	fake_conn_free(&c);
}

static void test_sasl(void **state)
{
	struct fx *fx = *state;
	struct conn *c = open_conn(fx, true, false);
	/* PLAIN with an initial response (RFC 5034): "\0alice\0secret". */
	chat(c, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
	     "+OK Logged in, 3 messages (" XS(TOTAL) " octets).\r\n");
	fake_conn_free(&c);

	c = open_conn(fx, true, false);
	/* PLAIN with an empty challenge, cancelled, then a bad response, then right. */
	chat(c, "AUTH PLAIN\r\n", "+ \r\n");
	chat(c, "*\r\n", "-ERR Authentication cancelled.\r\n");
	chat(c, "AUTH PLAIN\r\n", "+ \r\n");
	chat(c, "!!!!\r\n", "-ERR [AUTH] Invalid SASL response.\r\n");
	chat(c, "AUTH PLAIN\r\n", "+ \r\n");
	chat(c, "AGFsaWNlAHdyb25n\r\n", "-ERR [AUTH] Authentication failed.\r\n");
	/* LOGIN: user and password in two steps ("bob", "hunter 2"). */
	chat(c, "AUTH LOGIN\r\n", "+ VXNlcm5hbWU6\r\n");
	chat(c, "Ym9i\r\n", "+ UGFzc3dvcmQ6\r\n");
	chat(c, "aHVudGVyIDI=\r\n", "+OK Logged in, 0 messages (0 octets).\r\n");
	fake_conn_free(&c);
}

/* ---- TRANSACTION ---- */

static void test_transaction_commands(void **state)
{
	struct fx *fx = *state;
	struct conn *c = login(fx, "alice", "secret");
	chat(c, "STAT\r\n", "+OK 3 " XS(TOTAL) "\r\n");
	chat(c, "LIST\r\n",
	     "+OK 3 messages (" XS(TOTAL) " octets)\r\n1 " XS(M1_SIZE) "\r\n2 " XS(
		     M2_SIZE) "\r\n3 " XS(M3_SIZE) "\r\n.\r\n");
	chat(c, "LIST 2\r\n", "+OK 2 " XS(M2_SIZE) "\r\n");
	chat(c, "LIST 4\r\n", "-ERR There is no message 4.\r\n");
	chat(c, "LIST 0\r\n", "-ERR There is no message 0.\r\n");
	chat(c, "LIST x\r\n", "-ERR Syntax: LIST [message]\r\n");
	chat(c, "LIST 1 2\r\n", "-ERR Syntax: LIST [message]\r\n");

	fake_conn_send(c, "UIDL\r\n");
	char *u = fake_conn_take(c, NULL);
	char id[3][80];
	assert_int_equal(sscanf(u,
				"+OK Unique-ID listing follows.\r\n1 %79s\r\n2 %79s\r\n3 %79s\r\n",
				id[0], id[1], id[2]),
			 3);
	assert_string_equal(u + strlen(u) - 3, ".\r\n");
	free(u);
	assert_string_not_equal(id[0], id[1]);
	assert_string_not_equal(id[1], id[2]);
	char expect[256];
	snprintf(expect, sizeof(expect), "+OK 2 %s\r\n", id[1]);
	chat(c, "UIDL 2\r\n", expect);
	chat(c, "UIDL 9\r\n", "-ERR There is no message 9.\r\n");

	chat(c, "NOOP\r\n", "+OK NOOP\r\n");
	chat(c, "NOOP 1\r\n", "-ERR Syntax: NOOP takes no arguments.\r\n");
	chat(c, "USER alice\r\n", "-ERR Already logged in.\r\n");
	chat(c, "PASS secret\r\n", "-ERR Already logged in.\r\n");
	chat(c, "AUTH PLAIN\r\n", "-ERR Already logged in.\r\n");
	chat(c, "APOP a b\r\n", "-ERR Already logged in.\r\n");
	chat(c, "STLS\r\n", "-ERR Already logged in.\r\n");
	chat(c, "CAPA\r\n",
	     "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\n"
	     "AUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\n"
	     "IMPLEMENTATION mailkeep\r\n.\r\n");
	chat(c, "RETR\r\n", "-ERR Syntax: RETR message\r\n");
	chat(c, "RETR 1 2\r\n", "-ERR Syntax: RETR message\r\n");
	chat(c, "TOP 1\r\n", "-ERR Syntax: TOP message lines\r\n");
	chat(c, "TOP 1 -1\r\n", "-ERR Syntax: TOP message lines\r\n");
	chat(c, "DELE\r\n", "-ERR Syntax: DELE message\r\n");
	chat(c, "RSET x\r\n", "-ERR Syntax: RSET takes no arguments.\r\n");
	chat(c, "STAT x\r\n", "-ERR Syntax: STAT takes no arguments.\r\n");
	chat(c, "RETR 4\r\n", "-ERR There is no message 4.\r\n");
	chat(c, "TOP 0 1\r\n", "-ERR There is no message 0.\r\n");

	/* RETR: exact bytes, dot-stuffed, bare LF converted, final CRLF added. */
	chat(c, "RETR 1\r\n",
	     "+OK " XS(M1_SIZE) " octets\r\nFrom: a@example.com\r\nSubject: one\r\n\r\n"
				"..leading dot\r\nline2\r\n.\r\n");
	chat(c, "RETR 2\r\n",
	     "+OK " XS(M2_SIZE) " octets\r\nFrom: b@example.com\r\nSubject: two\r\n\r\n"
				"body1\r\n..\r\n...\r\nlast\r\n.\r\n");
	chat(c, "TOP 2 0\r\n",
	     "+OK Top of message 2 follows.\r\nFrom: b@example.com\r\n"
	     "Subject: two\r\n\r\n.\r\n");
	chat(c, "TOP 2 2\r\n",
	     "+OK Top of message 2 follows.\r\nFrom: b@example.com\r\n"
	     "Subject: two\r\n\r\nbody1\r\n..\r\n.\r\n");

	/* DELE / RSET */
	chat(c, "DELE 1\r\n", "+OK Message 1 deleted.\r\n");
	chat(c, "DELE 1\r\n", "-ERR Message 1 is already deleted.\r\n");
	chat(c, "RETR 1\r\n", "-ERR Message 1 is already deleted.\r\n");
	chat(c, "LIST 1\r\n", "-ERR Message 1 is already deleted.\r\n");
	chat(c, "STAT\r\n", "+OK 2 " XS(M23) "\r\n");
	chat(c, "LIST\r\n",
	     "+OK 2 messages (" XS(M23) " octets)\r\n2 " XS(M2_SIZE) "\r\n3 " XS(
		     M3_SIZE) "\r\n.\r\n");
	chat(c, "RSET\r\n", "+OK Maildrop has 3 messages (" XS(TOTAL) " octets).\r\n");
	chat(c, "STAT\r\n", "+OK 3 " XS(TOTAL) "\r\n");
	/* Dropped without QUIT: nothing is committed. */
	chat(c, "DELE 2\r\n", "+OK Message 2 deleted.\r\n");
	fake_conn_free(&c);
	assert_int_equal(store_count(fx, "alice"), 3);

	/* RETR set \Seen on 1 and 2; TOP did not touch 3. */
	assert_true(store_flags(fx, 1, NULL) & MAIL_SEEN);
	assert_true(store_flags(fx, 2, NULL) & MAIL_SEEN);
	c = login(fx, "alice", "secret");
	chat(c, "TOP 3 1\r\n", "+OK Top of message 3 follows.\r\nSubject: three\r\n\r\nx\r\n.\r\n");
	fake_conn_free(&c);
	assert_false(store_flags(fx, 3, NULL) & MAIL_SEEN);
}

static void test_retr_sets_seen_off(void **state)
{
	struct fx *fx = *state;
	test_settings.retr_sets_seen = false;
	struct conn *c = login(fx, "alice", "secret");
	fake_conn_send(c, "RETR 3\r\n");
	free(fake_conn_take(c, NULL));
	fake_conn_free(&c);
	assert_false(store_flags(fx, 3, NULL) & MAIL_SEEN);
}

static void test_quit_expunge(void **state)
{
	struct fx *fx = *state;
	struct conn *c = login(fx, "alice", "secret");
	chat(c, "DELE 1\r\nDELE 3\r\n", "+OK Message 1 deleted.\r\n+OK Message 3 deleted.\r\n");
	chat(c, "QUIT\r\n", "+OK Logging out, 2 messages deleted.\r\n");
	assert_true(fake_conn_closed(c));
	fake_conn_free(&c);
	assert_int_equal(store_count(fx, "alice"), 1);
	c = login(fx, "alice", "secret");
	chat(c, "LIST\r\n",
	     "+OK 1 messages (" XS(M2_SIZE) " octets)\r\n1 " XS(M2_SIZE) "\r\n.\r\n");
	chat(c, "QUIT\r\n", "+OK Logging out, 0 messages deleted.\r\n");
	fake_conn_free(&c);
}

static void test_quit_hide(void **state)
{
	struct fx *fx = *state;
	test_settings.delete_policy = POP3_DELETE_HIDE;
	struct conn *c = login(fx, "alice", "secret");
	chat(c, "DELE 2\r\nQUIT\r\n",
	     "+OK Message 2 deleted.\r\n+OK Logging out, 1 message deleted.\r\n");
	fake_conn_free(&c);
	/* IMAP keeps it, with the keyword; POP3 no longer sees it. */
	assert_int_equal(store_count(fx, "alice"), 3);
	c = login(fx, "alice", "secret");
	chat(c, "STAT\r\n", "+OK 2 " XS(M13) "\r\n");
	chat(c, "LIST\r\n",
	     "+OK 2 messages (" XS(M13) " octets)\r\n1 " XS(M1_SIZE) "\r\n2 " XS(
		     M3_SIZE) "\r\n.\r\n");
	fake_conn_free(&c);
}

static void test_in_use(void **state)
{
	struct fx *fx = *state;
	struct conn *c1 = login(fx, "alice", "secret");
	struct conn *c2 = open_conn(fx, true, false);
	chat(c2, "USER alice\r\nPASS secret\r\n",
	     "+OK Send your password.\r\n"
	     "-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n");
	chat(c2, "STAT\r\n", "-ERR Not logged in.\r\n");
	chat(c1, "QUIT\r\n", "+OK Logging out, 0 messages deleted.\r\n");
	fake_conn_free(&c1);
	chat(c2, "USER alice\r\nPASS secret\r\n",
	     "+OK Send your password.\r\n+OK Logged in, 3 messages (" XS(TOTAL) " octets).\r\n");
	fake_conn_free(&c2);
}

static void test_expunged_by_imap(void **state)
{
	struct fx *fx = *state;
	struct conn *c = login(fx, "alice", "secret");
	/* Another session expunges message 2 (UID 2) after the snapshot. */
	struct store *store;
	struct mailbox *mbox;
	assert_int_equal(store_open(uv_default_loop(), fx->cfg, "alice", &store), 0);
	assert_int_equal(mailbox_open(store, "INBOX", &mbox), 0);
	uint32_t uid = 2;
	assert_int_equal(mailbox_expunge(mbox, &uid, 1), 0);
	mailbox_unref(&mbox);
	store_unref(&store);
	uv_run(uv_default_loop(), UV_RUN_NOWAIT);

	const char *gone = "-ERR Message 2 was removed by another session.\r\n";
	chat(c, "RETR 2\r\n", gone);
	chat(c, "TOP 2 1\r\n", gone);
	chat(c, "DELE 2\r\n", gone);
	chat(c, "LIST 2\r\n", gone);
	chat(c, "UIDL 2\r\n", gone);
	chat(c, "STAT\r\n", "+OK 3 " XS(TOTAL) "\r\n"); /* the snapshot's numbers */
	chat(c, "RETR 3\r\n", "+OK " XS(M3_SIZE) " octets\r\nSubject: three\r\n\r\nx\r\n.\r\n");
	chat(c, "DELE 3\r\nQUIT\r\n",
	     "+OK Message 3 deleted.\r\n+OK Logging out, 1 message deleted.\r\n");
	fake_conn_free(&c);
	assert_int_equal(store_count(fx, "alice"), 1);
}

/* ---- retention: RETR records the first download, pop3_expire_days applies at login ---- */

#define DAY 86400

/* When alice's message UID was first downloaded (through the store), or -ENOENT. */
static int64_t store_retrieved(struct fx *fx, uint32_t uid)
{
	struct store *store;
	struct mailbox *mbox;
	assert_int_equal(store_open(uv_default_loop(), fx->cfg, "alice", &store), 0);
	assert_int_equal(mailbox_open(store, "INBOX", &mbox), 0);
	int64_t t = -1;
	int r = mailbox_pop3_retrieved_time(mbox, uid, &t);
	mailbox_unref(&mbox);
	store_unref(&store);
	return r == 0 ? t : r;
}

/* Record a download of alice's UID at T, as an earlier session would have. */
static void store_mark(struct fx *fx, uint32_t uid, int64_t t)
{
	struct store *store;
	struct mailbox *mbox;
	assert_int_equal(store_open(uv_default_loop(), fx->cfg, "alice", &store), 0);
	assert_int_equal(mailbox_open(store, "INBOX", &mbox), 0);
	assert_int_equal(mailbox_pop3_mark_retrieved(mbox, &uid, 1, t), 0);
	mailbox_unref(&mbox);
	store_unref(&store);
}

static void test_retr_marks_retrieved(void **state)
{
	struct fx *fx = *state;
	test_settings.retr_sets_seen = false; /* the record does not depend on \Seen */
	store_mark(fx, 3, 1000000000);        /* downloaded long ago by another client */
	int64_t t0 = time(NULL);
	struct conn *c = login(fx, "alice", "secret");
	chat(c, "TOP 2 0\r\n",
	     "+OK Top of message 2 follows.\r\nFrom: b@example.com\r\nSubject: two\r\n\r\n.\r\n");
	chat(c, "RETR 1\r\n",
	     "+OK " XS(M1_SIZE) " octets\r\nFrom: a@example.com\r\nSubject: one\r\n\r\n"
				"..leading dot\r\nline2\r\n.\r\n");
	/* marked as soon as the client waits for us (the same points as \Seen) */
	int64_t t = store_retrieved(fx, 1);
	assert_true(t >= t0 && t <= (int64_t)time(NULL));
	assert_int_equal(store_retrieved(fx, 2), -ENOENT); /* TOP is not a download */
	/* a later download does not restart the clock */
	chat(c, "RETR 3\r\n", "+OK " XS(M3_SIZE) " octets\r\nSubject: three\r\n\r\nx\r\n.\r\n");
	assert_int_equal(store_retrieved(fx, 3), 1000000000);
	/* RETR, DELE, then the connection drops: the download stands, the DELE does not */
	fake_conn_send(c, "RETR 2\r\nDELE 2\r\n");
	free(fake_conn_take(c, NULL));
	fake_conn_free(&c);
	assert_int_equal(store_count(fx, "alice"), 3);
	/* read back from disk: the session's mailbox object is gone */
	t = store_retrieved(fx, 2);
	assert_true(t >= t0 && t <= (int64_t)time(NULL));
	assert_false(store_flags(fx, 2, NULL) & MAIL_SEEN);
}

static void test_expire_at_login(void **state)
{
	struct fx *fx = *state;
	test_settings.expire_days = 10;
	int64_t now = time(NULL);
	store_mark(fx, 1, now - 11 * DAY); /* due */
	store_mark(fx, 2, now - 9 * DAY);  /* not yet */
	/* message 3 was never downloaded: it stays whatever its age */
	struct conn *c = open_conn(fx, true, false);
	chat(c, "CAPA\r\n",
	     "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
	     "PIPELINING\r\nUSER\r\nSASL PLAIN LOGIN\r\nEXPIRE 10\r\n"
	     "IMPLEMENTATION mailkeep\r\n.\r\n");
	/* expired before the snapshot: the client's numbering never had it */
	chat(c, "USER alice\r\nPASS secret\r\n",
	     "+OK Send your password.\r\n+OK Logged in, 2 messages (" XS(M23) " octets).\r\n");
	chat(c, "LIST\r\n",
	     "+OK 2 messages (" XS(M23) " octets)\r\n1 " XS(M2_SIZE) "\r\n2 " XS(
		     M3_SIZE) "\r\n.\r\n");
	chat(c, "QUIT\r\n", "+OK Logging out, 0 messages deleted.\r\n");
	fake_conn_free(&c);
	assert_int_equal(store_count(fx, "alice"), 2);
	/* the next login: nothing else is due */
	c = open_conn(fx, true, false);
	chat(c, "USER alice\r\nPASS secret\r\n",
	     "+OK Send your password.\r\n+OK Logged in, 2 messages (" XS(M23) " octets).\r\n");
	fake_conn_free(&c);
	assert_int_equal(store_count(fx, "alice"), 2);
}

static void test_expire_hide(void **state)
{
	struct fx *fx = *state;
	test_settings.expire_days = 10;
	test_settings.delete_policy = POP3_DELETE_HIDE;
	store_mark(fx, 2, time(NULL) - 11 * DAY);
	struct conn *c = open_conn(fx, true, false);
	chat(c, "USER alice\r\nPASS secret\r\n",
	     "+OK Send your password.\r\n+OK Logged in, 2 messages (" XS(M13) " octets).\r\n");
	fake_conn_free(&c);
	/* hidden from POP3 like a DELE under hide; IMAP keeps it with $POP3Deleted */
	assert_int_equal(store_count(fx, "alice"), 3);
	uint32_t kw;
	store_flags(fx, 2, &kw);
	assert_int_equal(kw, 1); /* keyword 0 of the folder: $POP3Deleted */
	store_flags(fx, 1, &kw);
	assert_int_equal(kw, 0);
}

/* A second POP3 login while the maildrop is held expires nothing: the first session's
 * numbers stay whole. */
static void test_expire_in_use(void **state)
{
	struct fx *fx = *state;
	test_settings.expire_days = 10;
	struct conn *c1 = login(fx, "alice", "secret");
	store_mark(fx, 2, time(NULL) - 11 * DAY);
	struct conn *c2 = open_conn(fx, true, false);
	chat(c2, "USER alice\r\nPASS secret\r\n",
	     "+OK Send your password.\r\n"
	     "-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n");
	chat(c1, "LIST 2\r\n", "+OK 2 " XS(M2_SIZE) "\r\n");
	chat(c1, "QUIT\r\n", "+OK Logging out, 0 messages deleted.\r\n");
	fake_conn_free(&c1);
	chat(c2, "USER alice\r\nPASS secret\r\n",
	     "+OK Send your password.\r\n+OK Logged in, 2 messages (" XS(M13) " octets).\r\n");
	fake_conn_free(&c2);
}

/* 500 commands in one write: 500 answers, in order. */
static void test_pipelining(void **state)
{
	struct fx *fx = *state;
	struct conn *c = login(fx, "alice", "secret");
	size_t cap = 500 * 16;
	char *in = malloc(cap), *expect = malloc(500 * 64);
	size_t il = 0, el = 0;
	for (int i = 0; i < 500; i++) {
		int k = i % 5;
		const char *cmd = k == 0   ? "NOOP\r\n"
				  : k == 1 ? "STAT\r\n"
				  : k == 2 ? "LIST 3\r\n"
				  : k == 3 ? "TOP 3 0\r\n"
					   : "RETR 1\r\n";
		const char *ans =
			k == 0   ? "+OK NOOP\r\n"
			: k == 1 ? "+OK 3 " XS(TOTAL) "\r\n"
			: k == 2 ? "+OK 3 " XS(M3_SIZE) "\r\n"
			: k == 3 ? "+OK Top of message 3 follows.\r\nSubject: three\r\n\r\n.\r\n"
				 : "+OK " XS(M1_SIZE) " octets\r\nFrom: a@example.com\r\n"
						      "Subject: one\r\n\r\n..leading "
						      "dot\r\nline2\r\n.\r\n";
		il += (size_t)sprintf(in + il, "%s", cmd);
		el += (size_t)sprintf(expect + el, "%s", ans);
	}
	assert_false(store_flags(fx, 1, NULL) & MAIL_SEEN);
	chat(c, in, expect);
	free(in);
	free(expect);
	/* The session is still open: the 100 RETRs were marked \Seen in batches as soon as
	 * the client had nothing more pending; TOP marked nothing. */
	assert_true(store_flags(fx, 1, NULL) & MAIL_SEEN);
	assert_false(store_flags(fx, 3, NULL) & MAIL_SEEN);
	fake_conn_free(&c);
}

/* Output above the high watermark: LIST and RETR resume from on_drain, bytes unchanged. */
static void test_backpressure(void **state)
{
	struct fx *fx = *state;
	struct store *store;
	struct mailbox *mbox;
	assert_int_equal(store_open(uv_default_loop(), fx->cfg, "bob", &store), 0);
	assert_int_equal(mailbox_open(store, "INBOX", &mbox), 0);
	for (int i = 0; i < 300; i++)
		append_msg(mbox, M3, sizeof(M3) - 1);
	mailbox_unref(&mbox);
	store_unref(&store);

	struct fake_conn_opts o = {.config = fx->cfg,
				   .loop = uv_default_loop(),
				   .loopback = true,
				   .high_watermark = 64,
				   .stream_chunk = 5};
	struct conn *c = fake_conn_new(&pop3_proto_ops, &o);
	free(fake_conn_take(c, NULL));
	fake_conn_send(c, "USER bob\r\nPASS hunter 2\r\nLIST\r\nRETR 300\r\nQUIT\r\n");
	char *got = fake_conn_take(c, NULL);
	char *expect = malloc(300 * 32 + 512);
	size_t el = (size_t)sprintf(expect,
				    "+OK Send your password.\r\n"
				    "+OK Logged in, 300 messages (%u octets).\r\n"
				    "+OK 300 messages (%u octets)\r\n",
				    (unsigned)(300 * M3_SIZE), (unsigned)(300 * M3_SIZE));
	for (int i = 1; i <= 300; i++)
		el += (size_t)sprintf(expect + el, "%d %u\r\n", i, (unsigned)M3_SIZE);
	sprintf(expect + el, ".\r\n+OK " XS(M3_SIZE) " octets\r\nSubject: three\r\n\r\nx\r\n.\r\n"
						     "+OK Logging out, 0 messages deleted.\r\n");
	assert_string_equal(got, expect);
	free(got);
	free(expect);
	fake_conn_free(&c);
}

static void test_limits(void **state)
{
	struct fx *fx = *state;
	/* A command longer than 255 octets with its CRLF. */
	struct conn *c = open_conn(fx, true, false);
	char line[300];
	memset(line, 'a', sizeof(line));
	memcpy(line, "USER ", 5);
	memcpy(line + 254, "\r\n", 3);
	chat(c, line, "-ERR Command line too long (RFC 2449: 255 octets), closing connection.\r\n");
	assert_true(fake_conn_closed(c));
	fake_conn_free(&c);

	/* Exactly 255 with the CRLF is fine. */
	c = open_conn(fx, true, false);
	memcpy(line + 253, "\r\n", 3);
	chat(c, line, "+OK Send your password.\r\n");
	/* Past the connection's line limit (the longest SASL response) without a line end. */
	char *big = malloc(SASL_MAX_RESPONSE + 8);
	memset(big, 'b', SASL_MAX_RESPONSE + 7);
	big[SASL_MAX_RESPONSE + 7] = 0;
	chat(c, big, "-ERR Line too long, closing connection.\r\n");
	free(big);
	assert_true(fake_conn_closed(c));
	fake_conn_free(&c);

	/* A SASL response longer than 255 octets is fine: PLAIN with a 300-byte password. */
	c = open_conn(fx, true, false);
	chat(c, "AUTH PLAIN\r\n", "+ \r\n");
	char raw[320], b64[440];
	size_t rl = (size_t)snprintf(raw, sizeof(raw), "%c%s%c", 0, "alice", 0);
	memset(raw + rl, 'p', 300);
	rl += 300;
	assert_int_equal(base64_encode(raw, rl, b64, sizeof(b64) - 2), 412);
	strcat(b64, "\r\n");
	chat(c, b64, "-ERR [AUTH] Authentication failed.\r\n");
	assert_false(fake_conn_closed(c));
	fake_conn_free(&c);

	/* Bad commands: the 20th closes. */
	c = open_conn(fx, true, false);
	for (int i = 0; i < 19; i++)
		chat(c, "BOGUS\r\n", "-ERR Unknown command.\r\n");
	chat(c, "BOGUS\r\n", "-ERR Too many bad commands, closing connection.\r\n");
	assert_true(fake_conn_closed(c));
	fake_conn_free(&c);

	/* Binary garbage in a keyword. */
	c = open_conn(fx, true, false);
	fake_conn_send_len(c, "\x01\xff\r\n", 4);
	char *got = fake_conn_take(c, NULL);
	assert_string_equal(got, "-ERR Unknown command.\r\n");
	free(got);
	fake_conn_free(&c);
}

static void test_timeout_shutdown(void **state)
{
	struct fx *fx = *state;
	struct conn *c = login(fx, "alice", "secret");
	chat(c, "DELE 1\r\n", "+OK Message 1 deleted.\r\n");
	fake_conn_timeout(c);
	char *got = fake_conn_take(c, NULL);
	assert_string_equal(got, "-ERR Disconnected for inactivity.\r\n");
	free(got);
	fake_conn_free(&c);
	assert_int_equal(store_count(fx, "alice"), 3); /* a timeout commits nothing */

	c = open_conn(fx, true, false);
	fake_conn_shutdown(c);
	got = fake_conn_take(c, NULL);
	assert_string_equal(got, "-ERR [SYS/TEMP] Server shutting down.\r\n");
	free(got);
	fake_conn_free(&c);
}

/* The idle timer or a shutdown in the middle of a RETR or LIST: no goodbye line inside the
 * message data; the connection just ends, and nothing is committed. */
static void test_goodbye_mid_response(void **state)
{
	struct fx *fx = *state;
	for (int shutdown = 0; shutdown < 2; shutdown++) {
		for (int listing = 0; listing < 2; listing++) {
			struct fake_conn_opts o = {.config = fx->cfg,
						   .loop = uv_default_loop(),
						   .loopback = true,
						   .high_watermark = 16,
						   .stream_chunk = 5};
			struct conn *c = fake_conn_new(&pop3_proto_ops, &o);
			fake_conn_send(c, "USER alice\r\nPASS secret\r\nDELE 3\r\n");
			free(fake_conn_take(c, NULL));
			fake_conn_hold(c, true);
			fake_conn_send(c, listing ? "LIST\r\n" : "RETR 1\r\n");
			size_t len;
			char *got = fake_conn_take(c, &len);
			assert_true(len >= 16 && len < 40);
			assert_memory_equal(got, "+OK ", 4);
			free(got);
			if (shutdown)
				fake_conn_shutdown(c);
			else
				fake_conn_timeout(c);
			got = fake_conn_take(c, &len);
			assert_int_equal(len, 0);
			free(got);
			fake_conn_free(&c);
		}
	}
	assert_int_equal(store_count(fx, "alice"), 3);
	/* Not mid-response: the goodbye is sent. */
	struct conn *c = login(fx, "alice", "secret");
	fake_conn_shutdown(c);
	char *got = fake_conn_take(c, NULL);
	assert_string_equal(got, "-ERR [SYS/TEMP] Server shutting down.\r\n");
	free(got);
	fake_conn_free(&c);
}

/* LOGIN-DELAY: advertised, and a second login within the delay is refused (RFC 2449). */
static void test_login_delay(void **state)
{
	struct fx *fx = *state;
	test_settings.login_delay = 60;
	test_settings.expire_days = 30;
	struct conn *c = open_conn(fx, true, false);
	chat(c, "CAPA\r\n",
	     "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
	     "PIPELINING\r\nUSER\r\nSASL PLAIN LOGIN\r\nEXPIRE 30\r\nLOGIN-DELAY 60\r\n"
	     "IMPLEMENTATION mailkeep\r\n.\r\n");
	chat(c, "USER alice\r\nPASS secret\r\nQUIT\r\n",
	     "+OK Send your password.\r\n+OK Logged in, 3 messages (" XS(
		     TOTAL) " octets).\r\n+OK Logging out, 0 messages deleted.\r\n");
	fake_conn_free(&c);
	c = open_conn(fx, true, false);
	chat(c, "USER alice\r\nPASS secret\r\n",
	     "+OK Send your password.\r\n-ERR [LOGIN-DELAY] Minimum time between logins is 60 "
	     "seconds; try again in 60.\r\n");
	chat(c, "STAT\r\n", "-ERR Not logged in.\r\n");
	/* Another user is not held up. */
	chat(c, "USER bob\r\nPASS hunter 2\r\n",
	     "+OK Send your password.\r\n+OK Logged in, 0 messages (0 octets).\r\n");
	fake_conn_free(&c);
}

/* The LOGIN-DELAY table is bounded: when full, expired entries make room; if none has
 * expired, a login goes unrecorded rather than growing the table. */
static void test_login_delay_table(void **state)
{
	unsigned wait = 0;
	char name[32];
	for (unsigned i = 0; i < POP3_DELAY_MAX_USERS; i++) {
		snprintf(name, sizeof(name), "u%u", i);
		pop3_delay_record(name, 10, 100);
	}
	assert_false(pop3_delay_allowed("u7", 10, 105, &wait));
	assert_int_equal(wait, 5);
	pop3_delay_record("late", 10, 105); /* full, nothing expired: not recorded */
	assert_true(pop3_delay_allowed("late", 10, 106, &wait));
	pop3_delay_record("later", 10, 110); /* everything expired: pruned, then recorded */
	assert_false(pop3_delay_allowed("later", 10, 112, &wait));
	assert_int_equal(wait, 8);
	assert_true(pop3_delay_allowed("u7", 10, 112, &wait));
	assert_true(pop3_delay_allowed("anyone", 0, 0, &wait)); /* delay 0: never refused */
}

/* The connection drops while the auth service is still thinking: the request is cancelled. */
static void test_drop_during_login(void **state)
{
	struct fx *fx = *state;
	unsigned started = fake_auth_started, cancelled = fake_auth_cancelled;
	struct conn *c = open_conn(fx, true, false);
	chat(c, "USER alice\r\n", "+OK Send your password.\r\n");
	/* Hand PASS over without running the loop: the session waits on the fake auth. */
	fake_conn_send_once(c, "PASS secret\r\nSTAT\r\n");
	assert_int_equal(fake_auth_started, started + 1);
	char *got = fake_conn_take(c, NULL);
	assert_string_equal(got, ""); /* STAT waits behind the login */
	free(got);
	fake_conn_free(&c);
	assert_int_equal(fake_auth_cancelled, cancelled + 1);
	uv_run(uv_default_loop(), UV_RUN_NOWAIT);
	/* The mailbox was never opened, so a new session gets it. */
	c = login(fx, "alice", "secret");
	fake_conn_free(&c);

	/* Dropped after the auth service said yes, while INBOX is being opened on the thread
	 * pool: the open completes into nothing (no view, no lock left behind). */
	c = open_conn(fx, true, false);
	fake_conn_send_once(c, "USER alice\r\nPASS secret\r\n");
	uv_run(uv_default_loop(), UV_RUN_NOWAIT); /* the auth answer: the open starts */
	assert_int_equal(fake_auth_started, started + 3);
	fake_conn_free(&c);
	assert_int_equal(fake_auth_cancelled, cancelled + 1); /* answered, not cancelled */
	/* A new login queues its open behind the orphaned one and gets the mailbox. */
	c = login(fx, "alice", "secret");
	fake_conn_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_authorization_commands, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plaintext_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_login_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sasl, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transaction_commands, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retr_sets_seen_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quit_expunge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quit_hide, setup, teardown),
		cmocka_unit_test_setup_teardown(test_in_use, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expunged_by_imap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retr_marks_retrieved, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expire_at_login, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expire_hide, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expire_in_use, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipelining, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_shutdown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drop_during_login, setup, teardown),
		cmocka_unit_test_setup_teardown(test_login_delay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_goodbye_mid_response, setup, teardown),
		cmocka_unit_test_setup_teardown(test_login_delay_table, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
