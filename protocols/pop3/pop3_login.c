/* pop3_login — USER/PASS and AUTH (RFC 5034, SASL PLAIN and LOGIN with initial response),
 * the login through the auth service, and opening the maildrop (the INBOX snapshot view).
 *
 * While a login is with the auth service or the mailbox is being opened, no further command
 * is read (pipelined commands wait in the input buffer), and the session ends cleanly if the
 * connection goes meanwhile: the auth request is cancelled, a pending open is detached. */
#include "pop3_session.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "pop3.h"
#include "pop3_delay.h"
#include "sasl.h"
#include "storage.h"

static struct auth_service *pop3_auth_service;

void pop3_auth_service_set(struct auth_service *svc)
{
	pop3_auth_service = svc;
}

/* An asynchronous INBOX open outlives its session if the connection drops meanwhile: the
 * session only points at this, and the callback frees it. */
struct pop3_open {
	struct pop3_session *s; /* NULL once the session is gone */
};

static void login_wipe_user(struct pop3_session *s)
{
	if (s->user != NULL) {
		explicit_bzero(s->user, strlen(s->user));
		free(s->user);
		s->user = NULL;
	}
}

static void login_set_mech(struct pop3_session *s, const char *mech)
{
	free(s->mech_name);
	s->mech_name = strdup(mech);
}

static const char *login_mech(const struct pop3_session *s)
{
	return s->mech_name ? s->mech_name : "-";
}

/* The login failed: answer, and close after too many failures. */
static void login_failed(struct pop3_session *s, const char *reply, const char *why)
{
	s->auth_failures++;
	log_info("pop3 conn=%llu event=login_failed mech=%s reason=\"%s\" failures=%u",
		 (unsigned long long)s->id, login_mech(s), why, s->auth_failures);
	conn_write_str(s->conn, reply);
	const struct config *cfg = conn_config(s->conn);
	if (cfg != NULL && cfg->auth_max_failures > 0 &&
	    s->auth_failures >= cfg->auth_max_failures) {
		log_info("pop3 conn=%llu event=too_many_login_failures", (unsigned long long)s->id);
		conn_close(s->conn, "too many failed logins");
	}
}

/* RFC 2449 EXPIRE: messages downloaded more than pop3_expire_days ago go before the snapshot
 * is taken, so the client's numbering never includes them. Under pop3_delete = hide they are
 * hidden from POP3 (kept for IMAP), as a committed DELE would. Only -EBUSY (another POP3
 * session holds the maildrop) stops the login: a failed expiry only keeps mail longer, which
 * EXPIRE (a minimum retention) allows. */
static int login_expire(struct pop3_session *s, struct mailbox *mbox)
{
	if (s->set.expire_days == 0)
		return 0;
	uint32_t n = 0;
	const char *policy = s->set.delete_policy == POP3_DELETE_HIDE ? "hide" : "expunge";
	int ret = mailbox_pop3_expire(mbox, s->set.expire_days, (int64_t)time(NULL),
				      s->set.delete_policy, &n);
	if (ret == -EBUSY)
		return ret;
	if (ret < 0)
		log_warn("pop3 conn=%llu event=expire_failed user=%s days=%u policy=%s expired=%u "
			 "error=\"%s\"",
			 (unsigned long long)s->id, log_escape_str(s->canonical_user),
			 s->set.expire_days, policy, n, strerror(-ret));
	else if (n > 0)
		log_info("pop3 conn=%llu event=expired user=%s messages=%u days=%u policy=%s",
			 (unsigned long long)s->id, log_escape_str(s->canonical_user), n,
			 s->set.expire_days, policy);
	return 0;
}

static void login_opened(int err, struct mailbox *mbox, void *data)
{
	struct pop3_open *op = data;
	struct pop3_session *s = op->s;
	free(op);
	if (s == NULL) {
		/* The connection went while the mailbox was opening. */
		mailbox_unref(&mbox);
		return;
	}
	s->opening = NULL;

	int ret = err;
	if (ret == 0) {
		/* Mail delivered behind our back since the mailbox was loaded joins the
		 * snapshot. */
		ret = mailbox_refresh(mbox);
		if (ret == 0)
			ret = login_expire(s, mbox);
		if (ret == 0)
			ret = view_new(mbox, VIEW_POP3, NULL, NULL, &s->view);
		mailbox_unref(&mbox);
	}
	if (ret == -EBUSY || ret == -EAGAIN) {
		log_info("pop3 conn=%llu event=login_in_use user=%s", (unsigned long long)s->id,
			 log_escape_str(s->canonical_user));
		conn_write_str(s->conn,
			       "-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n");
		pop3_maildrop_close(s);
		pop3_session_command_done(s);
		return;
	}
	if (ret < 0) {
		log_error("pop3 conn=%llu event=maildrop_failed user=%s error=\"%s\"",
			  (unsigned long long)s->id, log_escape_str(s->canonical_user),
			  strerror(-ret));
		pop3_reply_err(s, "[SYS/TEMP] The mailbox cannot be opened now: %s",
			       storage_error_text(ret));
		pop3_maildrop_close(s);
		pop3_session_command_done(s);
		return;
	}

	/* The snapshot: numbers and sizes stay fixed for the session (RFC 1939 §5). */
	s->snap_count = view_count(s->view);
	s->snap_size = 0;
	for (uint32_t n = 1; n <= s->snap_count; n++) {
		struct mail_info info;
		if (view_msg_info(s->view, n, &info) == 0)
			s->snap_size += info.size;
	}
	s->dele_count = 0;
	s->dele_size = 0;
	pop3_delay_record(s->canonical_user, s->set.login_delay, uv_now(conn_loop(s->conn)) / 1000);
	pop3_set_state(s, POP3_TRANSACTION);
	log_info("pop3 conn=%llu event=login user=%s mech=%s messages=%u octets=%llu",
		 (unsigned long long)s->id, log_escape_str(s->canonical_user), login_mech(s),
		 s->snap_count, (unsigned long long)s->snap_size);
	pop3_reply_ok(s, "Logged in, %u messages (%llu octets).", s->snap_count,
		      (unsigned long long)s->snap_size);
	pop3_session_command_done(s);
}

/* The store tree is there: open the maildrop (asynchronously; input stays paused). */
static void login_open_store(struct pop3_session *s, int ret)
{
	const struct config *cfg = conn_config(s->conn);
	if (ret == 0)
		ret = store_open(conn_loop(s->conn), cfg, s->canonical_user, &s->store);
	struct pop3_open *op = NULL;
	if (ret == 0) {
		op = calloc(1, sizeof(*op));
		if (op == NULL)
			ret = -ENOMEM;
	}
	if (ret == 0) {
		op->s = s;
		ret = mailbox_open_async(s->store, "INBOX", login_opened, op);
		if (ret < 0)
			free(op);
		else
			s->opening = op;
	}
	if (ret < 0) {
		log_error("pop3 conn=%llu event=maildrop_failed user=%s error=\"%s\"",
			  (unsigned long long)s->id, log_escape_str(s->canonical_user),
			  strerror(-ret));
		pop3_reply_err(s, "[SYS/TEMP] The mailbox cannot be opened now: %s",
			       storage_error_text(ret));
		pop3_maildrop_close(s);
		pop3_session_command_done(s);
	}
}

static void login_store_prepared(int err, void *data)
{
	struct pop3_quit_wait *w = data;
	struct pop3_session *s = w->s;
	free(w);
	if (s == NULL)
		return; /* the connection went meanwhile */
	s->prep_wait = NULL;
	login_open_store(s, err);
}

/* The auth service accepted USER: a first login creates the store's folders on the thread
 * pool (not on the loop), then the maildrop is opened. */
static void login_open_maildrop(struct pop3_session *s)
{
	bool ready = false;
	struct pop3_quit_wait *w = calloc(1, sizeof(*w));
	int ret = w ? store_prepare_async(conn_loop(s->conn), conn_config(s->conn),
					  s->canonical_user, &ready, login_store_prepared, w)
		    : -ENOMEM;
	if (ret == 0 && !ready) {
		w->s = s;
		s->prep_wait = w;
		return;
	}
	free(w);
	login_open_store(s, ret);
}

/* RFC 2449 LOGIN-DELAY: refuse a login that comes too soon after the user's last one. */
static bool login_delay_check(struct pop3_session *s)
{
	unsigned wait;
	uint64_t now = uv_now(conn_loop(s->conn)) / 1000;
	if (pop3_delay_allowed(s->canonical_user, s->set.login_delay, now, &wait))
		return true;
	log_info("pop3 conn=%llu event=login_too_soon user=%s wait_s=%u", (unsigned long long)s->id,
		 log_escape_str(s->canonical_user), wait);
	pop3_reply_err(s,
		       "[LOGIN-DELAY] Minimum time between logins is %u seconds; try again in %u.",
		       s->set.login_delay, wait);
	pop3_session_command_done(s);
	return false;
}

static void login_done(void *ctx, enum auth_result result, const char *user, const char *reason)
{
	struct pop3_session *s = ctx;
	s->auth = NULL;
	switch (result) {
	case AUTH_RESULT_OK:
		if (user == NULL || !auth_user_name_valid(user)) {
			log_error("pop3 conn=%llu event=login_bad_canonical_user user=%s",
				  (unsigned long long)s->id, log_escape_str(user));
			pop3_reply_err(s, "[SYS/PERM] This account has no usable mailbox.");
			pop3_session_command_done(s);
			return;
		}
		free(s->canonical_user);
		s->canonical_user = strdup(user);
		if (s->canonical_user == NULL) {
			pop3_reply_err(s, "[SYS/TEMP] Out of memory.");
			pop3_session_command_done(s);
			return;
		}
		if (!login_delay_check(s))
			return;
		login_open_maildrop(s);
		return;
	case AUTH_RESULT_TEMPFAIL:
		login_failed(s, "-ERR [SYS/TEMP] Authentication is temporarily unavailable.\r\n",
			     "tempfail");
		break;
	case AUTH_RESULT_EXPIRED:
		login_failed(s, "-ERR [AUTH] Password expired.\r\n", "expired");
		break;
	case AUTH_RESULT_PERMFAIL:
	default:
		login_failed(s, "-ERR [AUTH] Authentication failed.\r\n", "permfail");
		break;
	}
	pop3_session_command_done(s);
}

/* Hand USER/PASSWORD to the auth service; input stays paused until it answers. */
static enum pop3_cmd_result login_start(struct pop3_session *s, const char *user,
					const char *password)
{
	struct auth_service *svc = pop3_auth_service;
	struct auth_request_info info = {
		.protocol = "pop3",
		.mechanism = login_mech(s),
		.user = user,
		.password = password,
		.remote_address = conn_peer_addr(s->conn),
		.local_port = conn_local_port(s->conn),
		.tls = conn_is_tls(s->conn),
		.conn_id = s->id,
	};
	pop3_session_command_wait(s);
	s->auth = svc ? auth_request_start(svc, &info, login_done, s) : NULL;
	if (s->auth == NULL) {
		log_error("pop3 conn=%llu event=auth_unavailable why=%s", (unsigned long long)s->id,
			  svc ? "out of memory" : "no auth service");
		login_failed(s, "-ERR [SYS/TEMP] Authentication is temporarily unavailable.\r\n",
			     "auth service unavailable");
		pop3_session_command_done(s);
		return POP3_CMD_DONE;
	}
	return POP3_CMD_MORE;
}

static bool login_plaintext_check(struct pop3_session *s)
{
	if (pop3_session_plaintext_allowed(s))
		return true;
	log_info("pop3 conn=%llu event=plaintext_refused", (unsigned long long)s->id);
	conn_write_str(s->conn, "-ERR [AUTH] Plaintext authentication disallowed on non-secure "
				"connections; use STLS first.\r\n");
	return false;
}

enum pop3_cmd_result pop3_cmd_user(struct pop3_session *s, struct pop3_token args)
{
	if (args.len == 0)
		return pop3_cmd_bad(s, "-ERR Syntax: USER name\r\n");
	if (!login_plaintext_check(s))
		return POP3_CMD_DONE;
	if (args.len > AUTH_WIRE_MAX_USER || memchr(args.p, '\0', args.len) != NULL) {
		pop3_reply_err(s, "[AUTH] Invalid user name.");
		return POP3_CMD_DONE;
	}
	login_wipe_user(s);
	s->user = strndup(args.p, args.len);
	if (s->user == NULL) {
		pop3_reply_err(s, "[SYS/TEMP] Out of memory.");
		return POP3_CMD_DONE;
	}
	pop3_reply_ok(s, "Send your password.");
	return POP3_CMD_DONE;
}

enum pop3_cmd_result pop3_cmd_pass(struct pop3_session *s, struct pop3_token args)
{
	if (s->user == NULL) {
		/* RFC 1939: PASS only right after a successful USER. */
		pop3_reply_err(s, "No user name given; send USER first.");
		return POP3_CMD_DONE;
	}
	if (!login_plaintext_check(s))
		return POP3_CMD_DONE;
	char *user = s->user;
	s->user = NULL;
	char password[AUTH_WIRE_MAX_PASSWORD + 1];
	enum pop3_cmd_result r;
	if (args.len > AUTH_WIRE_MAX_PASSWORD || memchr(args.p, '\0', args.len) != NULL) {
		login_set_mech(s, "USER");
		login_failed(s, "-ERR [AUTH] Authentication failed.\r\n", "invalid password bytes");
		r = POP3_CMD_DONE;
	} else {
		memcpy(password, args.p, args.len);
		password[args.len] = 0;
		login_set_mech(s, "USER");
		r = login_start(s, user, password);
		explicit_bzero(password, sizeof(password));
	}
	explicit_bzero(user, strlen(user));
	free(user);
	return r;
}

/* One SASL step's outcome: a continuation, a login, or the end of the exchange. */
static enum pop3_cmd_result auth_step(struct pop3_session *s, const struct sasl_step *st)
{
	enum pop3_cmd_result r = POP3_CMD_DONE;
	switch (st->status) {
	case SASL_CONTINUE:
		conn_printf(s->conn, "+ %s\r\n", st->challenge);
		return POP3_CMD_DONE; /* the next line goes to pop3_login_feed_line */
	case SASL_DONE:
		r = login_start(s, st->user, st->password);
		break;
	case SASL_CANCELLED:
		log_info("pop3 conn=%llu event=auth_cancelled mech=%s", (unsigned long long)s->id,
			 login_mech(s));
		conn_write_str(s->conn, "-ERR Authentication cancelled.\r\n");
		break;
	case SASL_ERROR:
		login_failed(s, "-ERR [AUTH] Invalid SASL response.\r\n",
			     st->error ? st->error : "sasl error");
		break;
	}
	sasl_free(&s->sasl);
	return r;
}

enum pop3_cmd_result pop3_cmd_auth(struct pop3_session *s, struct pop3_token args)
{
	struct pop3_token t[2];
	int n = pop3_parse_args(args, t, 2);
	if (n < 0)
		return pop3_cmd_bad(s, "-ERR Syntax: AUTH mechanism [initial-response]\r\n");
	bool plain_ok = pop3_session_plaintext_allowed(s);
	if (n == 0) {
		/* Not in RFC 5034, but old clients (Outlook) ask this way for the list. */
		conn_write_str(s->conn, "+OK\r\n");
		if (plain_ok)
			conn_write_str(s->conn, "PLAIN\r\nLOGIN\r\n");
		conn_write_str(s->conn, ".\r\n");
		return POP3_CMD_DONE;
	}
	enum sasl_mech mech;
	if (sasl_mech_parse(t[0].p, t[0].len, &mech) < 0) {
		pop3_reply_err(s, "Unsupported authentication mechanism.");
		return POP3_CMD_DONE;
	}
	if (!login_plaintext_check(s))
		return POP3_CMD_DONE;
	int ret = sasl_new(mech, &s->sasl);
	if (ret < 0) {
		pop3_reply_err(s, "[SYS/TEMP] Out of memory.");
		return POP3_CMD_DONE;
	}
	login_set_mech(s, sasl_mech_name(mech));
	struct sasl_step st;
	sasl_begin(s->sasl, n == 2 ? t[1].p : NULL, n == 2 ? t[1].len : 0, &st);
	return auth_step(s, &st);
}

bool pop3_login_feed_line(struct pop3_session *s, const char *line, size_t len)
{
	if (s->sasl == NULL)
		return false;
	struct sasl_step st;
	sasl_continue(s->sasl, line, len, &st);
	auth_step(s, &st);
	return true;
}

void pop3_login_abort(struct pop3_session *s)
{
	if (s->auth != NULL)
		auth_request_cancel(&s->auth);
	if (s->opening != NULL) {
		s->opening->s = NULL;
		s->opening = NULL;
	}
	sasl_free(&s->sasl);
	login_wipe_user(s);
}
