/* IMAP after login, over the fake connection with the real store in a temporary directory:
 * LOGIN/AUTHENTICATE through a fake auth service, SELECT, APPEND, FETCH, STORE, SEARCH,
 * EXPUNGE, COPY/MOVE, folder commands, IDLE, and announcements between two sessions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imap.h"
#include "imap_internal.h"
#include "storage.h"
#include "imap_fake_auth.h"
#include "imap_fake_conn.h"

struct env {
	char root[256];
	char mail_root[300];
	uv_loop_t loop;
};

static int env_setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	const char *tmp = getenv("TMPDIR");
	snprintf(e->root, sizeof(e->root), "%s/mk-imap-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(e->root));
	snprintf(e->mail_root, sizeof(e->mail_root), "%s/%%u", e->root);
	assert_int_equal(uv_loop_init(&e->loop), 0);
	imap_auth_service_set(fake_auth_service());
	/* Commands never yield the loop here (test_yield checks that path on its own). */
	imap_slice_ns = UINT64_MAX;
	/* SELECT opens in-line here; test_async_select covers the thread-pool path. */
	imap_async_open = false;
	/* SEARCH reads content on the loop here; test_async_search covers the pool path. */
	imap_async_search = false;
	/* SORT/THREAD order in-line too; test_async_sort covers the pool path. */
	imap_async_sort = false;
	/* STORE/EXPUNGE/APPEND commit in-line too; test_async_commit covers the group commit. */
	imap_async_commit = false;
	*state = e;
	return 0;
}

static int env_teardown(void **state)
{
	struct env *e = *state;
	/* Run close callbacks of storage handles, then the loop must be empty. */
	for (int i = 0; i < 10; i++)
		uv_run(&e->loop, UV_RUN_NOWAIT);
	assert_int_equal(uv_loop_close(&e->loop), 0);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->root);
	assert_int_equal(system(cmd), 0);
	free(e);
	return 0;
}

/* Replace the digits after each marker by "V" (UIDVALIDITY is a time stamp). */
static void mask(char *s, const char *marker)
{
	size_t ml = strlen(marker);
	for (char *p = strstr(s, marker); p; p = strstr(p + ml, marker)) {
		char *d = p + ml, *e = d;
		while (*e >= '0' && *e <= '9')
			e++;
		if (e == d)
			continue;
		*d = 'V';
		memmove(d + 1, e, strlen(e) + 1);
	}
}

/* MAILBOXIDs are random: "MAILBOXID (F0123...)" becomes "MAILBOXID (V)". */
static void mask_mailboxid(char *s)
{
	const char *marker = "MAILBOXID (";
	size_t ml = strlen(marker);
	for (char *p = strstr(s, marker); p; p = strstr(p + ml, marker)) {
		char *d = p + ml, *e = strchr(d, ')');
		if (e == NULL || e == d)
			continue;
		*d = 'V';
		memmove(d + 1, e, strlen(e) + 1);
	}
}

static void expect(struct conn *c, const char *want)
{
	char *got = fake_conn_take_output(c);
	mask_mailboxid(got);
	mask(got, "UIDVALIDITY ");
	mask(got, "APPENDUID ");
	mask(got, "COPYUID ");
	if (strcmp(got, want) != 0)
		fail_msg("output differs:\n--- got ---\n%s--- want ---\n%s---", got, want);
	free(got);
}

static struct conn *session(struct env *e, bool loopback)
{
	struct fake_conn_opts o = {
		.loopback = loopback, .mail_root = e->mail_root, .loop = &e->loop};
	struct conn *c = fake_conn_new(&imap_proto_ops, &o);
	free(fake_conn_take_output(c));
	return c;
}

#define CAPS_BASE                                                                                  \
	"IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS CHILDREN " \
	"LIST-EXTENDED LIST-STATUS SPECIAL-USE CREATE-SPECIAL-USE ESEARCH SEARCHRES MOVE "         \
	"STATUS=SIZE "                                                                             \
	"BINARY CONDSTORE QRESYNC APPENDLIMIT=67108864 MULTIAPPEND WITHIN OBJECTID SAVEDATE "      \
	"SORT SORT=DISPLAY ESORT THREAD=ORDEREDSUBJECT THREAD=REFERENCES PREVIEW QUOTA "           \
	"QUOTA=RES-STORAGE QUOTA=RES-MESSAGE UTF8=ACCEPT"
#define CAPS_AUTH CAPS_BASE " COMPRESS=DEFLATE UNAUTHENTICATE"

static struct conn *logged_in(struct env *e, const char *user)
{
	struct conn *c = session(e, true);
	fake_conn_input(c, "L LOGIN u p\r\n");
	fake_auth_answer(AUTH_RESULT_OK, user);
	fake_conn_pump(c);
	expect(c, "L OK [CAPABILITY " CAPS_AUTH "] Logged in\r\n");
	return c;
}

static void test_login(void **state)
{
	struct env *e = *state;
	struct conn *c = session(e, true);
	/* The password as a literal; a pipelined NOOP waits for the login. */
	fake_conn_input(c, "a LOGIN alice {6}\r\ns3cr\"t\r\nb NOOP\r\n");
	expect(c, "+ Ready for literal data\r\n");
	assert_true(fake_auth_pending());
	assert_string_equal(fake_auth_last_user(), "alice");
	assert_string_equal(fake_auth_last_password(), "s3cr\"t");
	assert_string_equal(fake_auth_last_mechanism(), "IMAP-LOGIN");
	fake_auth_answer(AUTH_RESULT_OK, "alice");
	fake_conn_pump(c);
	expect(c, "a OK [CAPABILITY " CAPS_AUTH "] Logged in\r\nb OK NOOP completed.\r\n");
	fake_conn_input(c, "c LOGIN x y\r\n");
	expect(c, "c BAD Already logged in.\r\n");
	fake_conn_free(&c);
}

static void test_login_failures(void **state)
{
	struct env *e = *state;
	struct conn *c = session(e, true);
	fake_conn_input(c, "a LOGIN alice bad\r\n");
	fake_auth_answer(AUTH_RESULT_PERMFAIL, NULL);
	fake_conn_pump(c);
	expect(c, "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
	fake_conn_input(c, "b LOGIN alice x\r\n");
	fake_auth_answer(AUTH_RESULT_TEMPFAIL, NULL);
	fake_conn_pump(c);
	expect(c, "b NO [UNAVAILABLE] Temporary authentication failure.\r\n");
	fake_conn_input(c, "c LOGIN alice x\r\n");
	fake_auth_answer(AUTH_RESULT_EXPIRED, NULL);
	fake_conn_pump(c);
	expect(c, "c NO [EXPIRED] Password expired.\r\n");
	fake_conn_input(c, "d LOGIN alice\r\n");
	expect(c, "d BAD LOGIN needs a user name and a password.\r\n");
	/* A session that goes away while PAM works cancels its request. */
	unsigned before = fake_auth_cancelled();
	fake_conn_input(c, "e LOGIN alice x\r\n");
	assert_true(fake_auth_pending());
	fake_conn_free(&c);
	assert_false(fake_auth_pending());
	assert_int_equal(fake_auth_cancelled(), before + 1);
}

static void test_logindisabled(void **state)
{
	struct env *e = *state;
	struct fake_conn_opts o = {.mail_root = e->mail_root, .loop = &e->loop};
	struct conn *c = fake_conn_new(&imap_proto_ops, &o);
	expect(c, "* OK [CAPABILITY " CAPS_BASE " LOGINDISABLED] mailkeep ready.\r\n");
	fake_conn_input(c, "a LOGIN alice x\r\nb AUTHENTICATE PLAIN\r\n");
	expect(c, "a NO [PRIVACYREQUIRED] Plaintext authentication is disallowed on non-secure "
		  "connections.\r\n"
		  "b NO [PRIVACYREQUIRED] Plaintext authentication is disallowed on non-secure "
		  "connections.\r\n");
	assert_false(fake_auth_pending());
	fake_conn_free(&c);
}

static void test_authenticate(void **state)
{
	struct env *e = *state;
	struct conn *c = session(e, true);
	/* SASL-IR: "\0alice\0pw" */
	fake_conn_input(c, "a AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n");
	assert_true(fake_auth_pending());
	assert_string_equal(fake_auth_last_user(), "alice");
	assert_string_equal(fake_auth_last_password(), "pw");
	assert_string_equal(fake_auth_last_mechanism(), "PLAIN");
	fake_auth_answer(AUTH_RESULT_PERMFAIL, NULL);
	fake_conn_pump(c);
	expect(c, "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
	/* Without an initial response: an empty challenge first. */
	fake_conn_input(c, "b AUTHENTICATE plain\r\n");
	expect(c, "+ \r\n");
	fake_conn_input(c, "AGFsaWNlAHB3\r\n");
	assert_true(fake_auth_pending());
	fake_auth_answer(AUTH_RESULT_OK, "alice");
	fake_conn_pump(c);
	expect(c, "b OK [CAPABILITY " CAPS_AUTH "] Logged in\r\n");
	fake_conn_free(&c);

	c = session(e, true);
	fake_conn_input(c, "c AUTHENTICATE PLAIN\r\n*\r\n");
	expect(c, "+ \r\nc BAD Authentication canceled.\r\n");
	fake_conn_input(c, "d AUTHENTICATE LOGIN\r\n");
	expect(c, "+ VXNlcm5hbWU6\r\n");
	fake_conn_input(c, "YWxpY2U=\r\n");
	expect(c, "+ UGFzc3dvcmQ6\r\n");
	fake_conn_input(c, "cHc=\r\n");
	assert_string_equal(fake_auth_last_user(), "alice");
	assert_string_equal(fake_auth_last_password(), "pw");
	fake_auth_answer(AUTH_RESULT_OK, "alice");
	fake_conn_pump(c);
	expect(c, "d OK [CAPABILITY " CAPS_AUTH "] Logged in\r\n");
	fake_conn_input(c, "e AUTHENTICATE PLAIN\r\n");
	expect(c, "e BAD Already logged in.\r\n");
	fake_conn_free(&c);

	c = session(e, true);
	fake_conn_input(c, "f AUTHENTICATE CRAM-MD5\r\ng AUTHENTICATE PLAIN !!!\r\n");
	expect(c, "f NO Unsupported authentication mechanism.\r\n"
		  "g BAD Invalid authentication data: invalid base64\r\n");
	fake_conn_free(&c);
}

#define SELECT_EMPTY                                                                               \
	"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"                              \
	"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags "         \
	"permitted.\r\n"                                                                           \
	"* 0 EXISTS\r\n"                                                                           \
	"* 0 RECENT\r\n"                                                                           \
	"* OK [UIDVALIDITY V] UIDs valid.\r\n"                                                     \
	"* OK [UIDNEXT 1] Predicted next UID.\r\n"                                                 \
	"* OK [HIGHESTMODSEQ 1] Highest\r\n"                                                       \
	"* OK [MAILBOXID (V)] Ok\r\n"

#define MSG1                                                                                       \
	"From: Alice <alice@example.org>\r\n"                                                      \
	"To: bob@example.org\r\n"                                                                  \
	"Subject: Hello there\r\n"                                                                 \
	"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n"                                                 \
	"Message-ID: <1@example.org>\r\n"                                                          \
	"\r\n"                                                                                     \
	"Hi Bob,\r\nthe quick brown fox.\r\n"

static void append(struct conn *c, const char *tag, const char *mbox, const char *flags,
		   const char *msg, unsigned uid)
{
	char cmd[4096], want[256];
	snprintf(cmd, sizeof(cmd), "%s APPEND %s %s{%zu+}\r\n%s\r\n", tag, mbox, flags, strlen(msg),
		 msg);
	fake_conn_input(c, cmd);
	/* Untagged EXISTS/RECENT may come first when mbox is selected: check the tagged line. */
	snprintf(want, sizeof(want), "%s OK [APPENDUID V %u] Append completed.\r\n", tag, uid);
	char *got = fake_conn_take_output(c);
	mask(got, "APPENDUID ");
	size_t gl = strlen(got), wl = strlen(want);
	if (gl < wl || strcmp(got + gl - wl, want) != 0)
		fail_msg("APPEND: got [%s] want [...%s]", got, want);
	free(got);
}

static void test_select_append_fetch(void **state)
{
	struct env *e = *state;
	struct conn *c = logged_in(e, "bob");
	fake_conn_input(c, "s SELECT INBOX\r\n");
	expect(c, SELECT_EMPTY "s OK [READ-WRITE] Select completed.\r\n");
	/* An empty mailbox: 1:* names nothing, 1 is past the end. */
	fake_conn_input(c, "e1 FETCH 1:* FLAGS\r\ne2 UID FETCH 1:* FLAGS\r\ne3 FETCH 1 FLAGS\r\n");
	expect(c, "e1 OK Fetch completed.\r\ne2 OK Fetch completed.\r\n"
		  "e3 BAD Invalid message sequence number.\r\n");
	/* APPEND into the selected mailbox: EXISTS comes before the tagged OK. */
	char cmd[128];
	snprintf(cmd, sizeof(cmd),
		 "a APPEND INBOX (\\Seen) \" 2-Nov-2026 10:00:00 +0100\" {%zu}\r\n", strlen(MSG1));
	fake_conn_input(c, cmd);
	expect(c, "+ Ready for literal data\r\n");
	fake_conn_input(c, MSG1);
	fake_conn_input(c, "\r\n");
	expect(c, "* 1 EXISTS\r\n* 1 RECENT\r\na OK [APPENDUID V 1] Append completed.\r\n");
	fake_conn_input(c, "f FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE UID)\r\n");
	expect(c, "* 1 FETCH (FLAGS (\\Seen \\Recent) INTERNALDATE \" 2-Nov-2026 09:00:00 +0000\" "
		  "RFC822.SIZE 176 UID 1)\r\nf OK Fetch completed.\r\n");
	fake_conn_input(c,
			"g UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (Subject)] BODY[TEXT]<4.5>)\r\n");
	expect(c, "* 1 FETCH (UID 1 BODY[HEADER.FIELDS (Subject)] {24}\r\n"
		  "Subject: Hello there\r\n\r\n BODY[TEXT]<4> {5}\r\nob,\r\n)\r\n"
		  "g OK Fetch completed.\r\n");
	fake_conn_input(c, "h FETCH 1 ENVELOPE\r\n");
	expect(c,
	       "* 1 FETCH (ENVELOPE (\"Mon, 2 Nov 2026 10:00:00 +0000\" \"Hello there\" "
	       "((\"Alice\" NIL \"alice\" \"example.org\")) ((\"Alice\" NIL \"alice\" "
	       "\"example.org\")) ((\"Alice\" NIL \"alice\" \"example.org\")) ((NIL NIL \"bob\" "
	       "\"example.org\")) NIL NIL NIL \"<1@example.org>\"))\r\nh OK Fetch completed.\r\n");
	fake_conn_input(c, "i FETCH 1 BODYSTRUCTURE\r\n");
	expect(c, "* 1 FETCH (BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
		  "\"7bit\" 31 2 NIL NIL NIL NIL))\r\ni OK Fetch completed.\r\n");
	fake_conn_input(c, "j FETCH 2 FLAGS\r\nk FETCH 1 (FOO)\r\nl FETCH x FLAGS\r\n");
	expect(c, "j BAD Invalid message sequence number.\r\nk BAD Invalid FETCH items.\r\n"
		  "l BAD Invalid sequence set.\r\n");
	fake_conn_free(&c);
}

static void test_store_expunge(void **state)
{
	struct env *e = *state;
	struct conn *c = logged_in(e, "carol");
	fake_conn_input(c, "s SELECT INBOX\r\n");
	expect(c, SELECT_EMPTY "s OK [READ-WRITE] Select completed.\r\n");
	append(c, "a1", "INBOX", "", MSG1, 1);
	free(fake_conn_take_output(c));
	append(c, "a2", "INBOX", "", MSG1, 2);
	append(c, "a3", "INBOX", "", MSG1, 3);
	fake_conn_input(c, "t STORE 1 +FLAGS (\\Deleted $Work)\r\n");
	expect(c, "* 1 FETCH (FLAGS (\\Deleted \\Recent $Work))\r\nt OK Store completed.\r\n");
	fake_conn_input(c, "u UID STORE 3 FLAGS.SILENT \\Deleted\r\n");
	expect(c, "u OK Store completed.\r\n");
	fake_conn_input(c, "v STORE 2 -FLAGS \\Recent\r\nw STORE 1 FLAGS \\Bogus\r\n");
	expect(c, "* 2 FETCH (FLAGS (\\Recent))\r\nv OK Store completed.\r\n"
		  "w BAD Invalid system flag.\r\n");
	fake_conn_input(c, "x EXPUNGE\r\n");
	/* Each EXPUNGE carries the number valid at that moment. */
	expect(c, "* 1 EXPUNGE\r\n* 2 EXPUNGE\r\nx OK Expunge completed.\r\n");
	fake_conn_input(c, "y FETCH 1:* UID\r\nz SEARCH ALL\r\n");
	expect(c, "* 1 FETCH (UID 2)\r\ny OK Fetch completed.\r\n* SEARCH 1\r\nz OK Search "
		  "completed.\r\n");
	fake_conn_input(c, "c CLOSE\r\nd FETCH 1 UID\r\n");
	expect(c, "c OK Close completed.\r\nd BAD No mailbox selected.\r\n");
	fake_conn_free(&c);
}

static void test_search(void **state)
{
	struct env *e = *state;
	struct conn *c = logged_in(e, "dave");
	fake_conn_input(c, "s SELECT INBOX\r\n");
	free(fake_conn_take_output(c));
	append(c, "a1", "INBOX", "(\\Seen) ", MSG1, 1);
	free(fake_conn_take_output(c));
	append(c, "a2", "INBOX", "", "Subject: other\r\n\r\nnothing here\r\n", 2);
	append(c, "a3", "INBOX", "(\\Flagged) ", "Subject: third\r\nFrom: zed@x\r\n\r\nFOX\r\n", 3);
	fake_conn_input(c, "a SEARCH UNSEEN\r\n");
	expect(c, "* SEARCH 2 3\r\na OK Search completed.\r\n");
	fake_conn_input(c, "b SEARCH TEXT fox\r\n");
	expect(c, "* SEARCH 1 3\r\nb OK Search completed.\r\n");
	fake_conn_input(c, "c UID SEARCH OR FLAGGED SUBJECT hello\r\n");
	expect(c, "* SEARCH 1 3\r\nc OK Search completed.\r\n");
	fake_conn_input(c, "d SEARCH NOT (FROM zed) BODY \"quick brown\"\r\n");
	expect(c, "* SEARCH 1\r\nd OK Search completed.\r\n");
	fake_conn_input(c, "e SEARCH RETURN (MIN MAX COUNT ALL) 1:3 OR SEEN FLAGGED\r\n");
	expect(c,
	       "* ESEARCH (TAG \"e\") MIN 1 MAX 3 ALL 1,3 COUNT 2\r\ne OK Search completed.\r\n");
	fake_conn_input(c, "f UID SEARCH RETURN (SAVE) SENTON 2-Nov-2026\r\ng FETCH $ UID\r\n");
	expect(c, "f OK Search completed.\r\n* 1 FETCH (UID 1)\r\ng OK Fetch completed.\r\n");
	fake_conn_input(c, "h SEARCH CHARSET KOI8-R ALL\r\ni SEARCH FOO\r\nj SEARCH CHARSET UTF-8 "
			   "HEADER Subject THIRD\r\n");
	expect(c, "h NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.\r\n"
		  "i BAD Unknown search key.\r\n* SEARCH 3\r\nj OK Search completed.\r\n");
	/* WITHIN (RFC 5032): internal dates against now; 1-3 were appended just now. */
	append(c, "a4", "INBOX", "\"01-Jan-2020 00:00:00 +0000\" ", MSG1, 4);
	fake_conn_input(c, "k SEARCH OLDER 86400\r\nl SEARCH YOUNGER 86400\r\n"
			   "m UID SEARCH YOUNGER 4294967295 NOT OLDER 3600\r\nn SEARCH OLDER 0\r\n"
			   "o SEARCH YOUNGER\r\np SEARCH OLDER 4294967296\r\n");
	expect(c, "* SEARCH 4\r\nk OK Search completed.\r\n* SEARCH 1 2 3\r\nl OK Search "
		  "completed.\r\n* SEARCH 1 2 3\r\nm OK Search completed.\r\nn BAD Invalid "
		  "interval.\r\no BAD Invalid interval.\r\np BAD Invalid interval.\r\n");
	fake_conn_free(&c);
}

static void test_folders(void **state)
{
	struct env *e = *state;
	struct conn *c = logged_in(e, "erin");
	fake_conn_input(c, "a CREATE Work.Projects\r\nb CREATE Work\r\n");
	expect(c, "a OK [MAILBOXID (V)] Create completed.\r\nb NO [ALREADYEXISTS] Mailbox already "
		  "exists.\r\n");
	fake_conn_input(c, "c LIST \"\" %\r\n");
	expect(c, "* LIST (\\HasNoChildren) \".\" INBOX\r\n"
		  "* LIST (\\HasNoChildren \\Archive) \".\" Archive\r\n"
		  "* LIST (\\HasNoChildren \\Drafts) \".\" Drafts\r\n"
		  "* LIST (\\HasNoChildren \\Junk) \".\" Junk\r\n"
		  "* LIST (\\HasNoChildren \\Sent) \".\" Sent\r\n"
		  "* LIST (\\HasNoChildren \\Trash) \".\" Trash\r\n"
		  "* LIST (\\HasChildren) \".\" Work\r\n"
		  "c OK List completed.\r\n");
	fake_conn_input(c, "d LIST \"\" \"\"\r\ne NAMESPACE\r\n");
	expect(c, "* LIST (\\Noselect) \".\" \"\"\r\nd OK List completed.\r\n"
		  "* NAMESPACE ((\"\" \".\")) NIL NIL\r\ne OK Namespace completed.\r\n");
	fake_conn_input(c, "f SUBSCRIBE Work.Projects\r\ng LSUB \"\" *\r\n");
	/* The special-use folders are subscribed when the store is created; LSUB shows their
	 * special-use attributes too. */
	expect(c, "f OK Subscribe completed.\r\n"
		  "* LSUB (\\Archive) \".\" Archive\r\n"
		  "* LSUB (\\Drafts) \".\" Drafts\r\n"
		  "* LSUB (\\Junk) \".\" Junk\r\n"
		  "* LSUB (\\Sent) \".\" Sent\r\n"
		  "* LSUB (\\Trash) \".\" Trash\r\n"
		  "* LSUB () \".\" Work.Projects\r\n"
		  "g OK Lsub completed.\r\n");
	fake_conn_input(c, "h LIST (SUBSCRIBED RECURSIVEMATCH) \"\" %\r\n");
	expect(c, "* LIST (\\HasNoChildren \\Subscribed \\Archive) \".\" Archive\r\n"
		  "* LIST (\\HasNoChildren \\Subscribed \\Drafts) \".\" Drafts\r\n"
		  "* LIST (\\HasNoChildren \\Subscribed \\Junk) \".\" Junk\r\n"
		  "* LIST (\\HasNoChildren \\Subscribed \\Sent) \".\" Sent\r\n"
		  "* LIST (\\HasNoChildren \\Subscribed \\Trash) \".\" Trash\r\n"
		  "* LIST (\\HasChildren) \".\" Work (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n"
		  "h OK List completed.\r\n");
	fake_conn_input(c, "i RENAME Work.Projects Work.Done\r\nj LIST \"\" Work* RETURN (STATUS "
			   "(MESSAGES UIDNEXT))\r\n");
	expect(c, "i OK Rename completed.\r\n"
		  "* LIST (\\HasChildren) \".\" Work\r\n"
		  "* STATUS Work (MESSAGES 0 UIDNEXT 1)\r\n"
		  "* LIST (\\HasNoChildren) \".\" Work.Done\r\n"
		  "* STATUS Work.Done (MESSAGES 0 UIDNEXT 1)\r\n"
		  "j OK List completed.\r\n");
	append(c, "k", "Work.Done", "(\\Seen) ", MSG1, 1);
	fake_conn_input(c, "l STATUS Work.Done (MESSAGES UNSEEN SIZE UIDVALIDITY)\r\n");
	expect(c, "* STATUS Work.Done (MESSAGES 1 UIDVALIDITY V UNSEEN 0 SIZE 176)\r\n"
		  "l OK Status completed.\r\n");
	fake_conn_input(c, "m DELETE Work\r\nn DELETE Work.Done\r\no DELETE Nope\r\np DELETE "
			   "INBOX\r\n");
	expect(c, "m NO [HASCHILDREN] Mailbox has children: delete them first.\r\n"
		  "n OK Delete completed.\r\n"
		  "o NO [NONEXISTENT] Mailbox doesn't exist.\r\n"
		  "p NO [CANNOT] INBOX cannot be deleted.\r\n");
	fake_conn_input(c, "q APPEND Nope {3+}\r\nabc\r\nr SELECT Nope\r\n");
	expect(c, "q NO [TRYCREATE] Mailbox doesn't exist.\r\nr NO [NONEXISTENT] Mailbox doesn't "
		  "exist.\r\n");
	fake_conn_free(&c);
}

static void test_copy_move(void **state)
{
	struct env *e = *state;
	struct conn *c = logged_in(e, "frank");
	fake_conn_input(c, "s SELECT INBOX\r\n");
	free(fake_conn_take_output(c));
	append(c, "a1", "INBOX", "", MSG1, 1);
	free(fake_conn_take_output(c));
	append(c, "a2", "INBOX", "", MSG1, 2);
	fake_conn_input(c, "c COPY 1:2 Trash\r\n");
	expect(c, "c OK [COPYUID V 1:2 1:2] Copy completed.\r\n");
	fake_conn_input(c, "d COPY 1 Nowhere\r\n");
	expect(c, "d NO [TRYCREATE] Mailbox doesn't exist.\r\n");
	fake_conn_input(c, "m UID MOVE 2 Archive\r\n");
	expect(c, "* OK [COPYUID V 2 1] Moved UIDs.\r\n* 2 EXPUNGE\r\nm OK Move completed.\r\n");
	fake_conn_input(c, "x EXAMINE Trash\r\n");
	char *out = fake_conn_take_output(c);
	assert_non_null(strstr(out, "* OK [CLOSED] Previous mailbox closed.\r\n"));
	assert_non_null(strstr(out, "* 2 EXISTS\r\n"));
	assert_non_null(strstr(out, "* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n"));
	assert_non_null(strstr(out, "x OK [READ-ONLY] Examine completed.\r\n"));
	free(out);
	fake_conn_input(c, "y STORE 1 +FLAGS \\Seen\r\nz FETCH 1 BODY[TEXT]\r\n");
	expect(c, "y NO [READ-ONLY] Mailbox is read-only.\r\n"
		  "* 1 FETCH (BODY[TEXT] {31}\r\nHi Bob,\r\nthe quick brown fox.\r\n)\r\n"
		  "z OK Fetch completed.\r\n");
	fake_conn_free(&c);
}

/* COPY and MOVE naming messages another session expunged (this one not told yet): the rest is
 * copied or moved and the reply is OK, whatever the length of the COPYUID lists; a NO would
 * say the destination is as before (RFC 9051 §6.4.7), which it is not. NO [EXPUNGEISSUED]
 * only when nothing was left to copy. */
static void test_copy_expunged(void **state)
{
	struct env *e = *state;
	struct conn *a = logged_in(e, "hank");
	struct conn *b = logged_in(e, "hank");
	fake_conn_input(a, "c CREATE Archive\r\n");
	free(fake_conn_take_output(a));
	fake_conn_input(a, "s SELECT INBOX\r\n");
	free(fake_conn_take_output(a));
	/* 600 messages put into cur/ as mutt would: an every-other-UID set makes a COPYUID
	 * too long for the reply */
	char path[600];
	for (unsigned i = 1; i <= 600; i++) {
		snprintf(path, sizeof(path), "%s/hank/cur/%u.M%uP1.test:2,", e->root,
			 1700000000 + i, i);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, "Subject: x\n\nhi\n", 15), 15);
		close(fd);
	}
	fake_conn_input(a, "n NOOP\r\n");
	expect(a, "* 600 EXISTS\r\n* 600 RECENT\r\nn OK NOOP completed.\r\n");
	fake_conn_input(b, "s SELECT INBOX\r\n");
	free(fake_conn_take_output(b));
	fake_conn_input(b, "t UID STORE 3,10,20 +FLAGS.SILENT (\\Deleted)\r\nx EXPUNGE\r\n");
	free(fake_conn_take_output(b));
	char cmd[4096];
	size_t n = (size_t)snprintf(cmd, sizeof(cmd), "c UID COPY 1");
	for (unsigned u = 3; u < 600; u += 2)
		n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, ",%u", u);
	snprintf(cmd + n, sizeof(cmd) - n, " Archive\r\n");
	fake_conn_input(a, cmd);
	expect(a, "* 3 EXPUNGE\r\n* 9 EXPUNGE\r\n* 18 EXPUNGE\r\nc OK Copy completed.\r\n");
	fake_conn_input(a, "m UID MOVE 9:10 Archive\r\n");
	expect(a, "* OK [COPYUID V 9 300] Moved UIDs.\r\n* 8 EXPUNGE\r\nm OK Move completed.\r\n");
	fake_conn_input(b, "t UID STORE 11 +FLAGS.SILENT (\\Deleted)\r\nx EXPUNGE\r\n");
	free(fake_conn_take_output(b));
	fake_conn_input(a, "m UID MOVE 11 Archive\r\nc UID COPY 11 Archive\r\n");
	expect(a, "* 8 EXPUNGE\r\nm NO [EXPUNGEISSUED] Some messages were expunged meanwhile.\r\n"
		  "c OK Copy completed.\r\n");
	fake_conn_input(a, "x STATUS Archive (MESSAGES)\r\n");
	expect(a, "* STATUS Archive (MESSAGES 300)\r\nx OK Status completed.\r\n");
	fake_conn_free(&a);
	fake_conn_free(&b);
}

static void deadline_cb(uv_timer_t *t)
{
}

/* Run the loop until the connection has output, at most a few seconds (a deadline timer). */
static void wait_output(struct env *e, struct conn *c)
{
	uv_timer_t t;
	uv_timer_init(&e->loop, &t);
	assert_int_equal(uv_timer_start(&t, deadline_cb, 5000, 0), 0);
	while (uv_is_active((uv_handle_t *)&t) && fake_conn_output_len(c) == 0)
		uv_run(&e->loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(&e->loop, UV_RUN_NOWAIT);
}

static void test_two_sessions_and_idle(void **state)
{
	struct env *e = *state;
	struct conn *a = logged_in(e, "gina");
	struct conn *b = logged_in(e, "gina");
	fake_conn_input(a, "s SELECT INBOX\r\n");
	free(fake_conn_take_output(a));
	fake_conn_input(b, "s SELECT INBOX\r\n");
	free(fake_conn_take_output(b));
	append(b, "a1", "INBOX", "", MSG1, 1);
	free(fake_conn_take_output(b));
	append(b, "a2", "INBOX", "", MSG1, 2);
	/* A learns of the arrivals at its next command; \Recent went to B. */
	fake_conn_input(a, "n NOOP\r\n");
	expect(a, "* 2 EXISTS\r\n* 0 RECENT\r\nn OK NOOP completed.\r\n");
	/* A flag change by B reaches A as FETCH FLAGS. */
	fake_conn_input(b, "t STORE 1 +FLAGS.SILENT (\\Flagged)\r\n");
	expect(b, "t OK Store completed.\r\n");
	fake_conn_input(a, "n NOOP\r\n");
	expect(a, "* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\nn OK NOOP completed.\r\n");
	/* An expunge by B: not during A's FETCH or STORE or SEARCH, but at NOOP. */
	fake_conn_input(b, "t STORE 1 +FLAGS.SILENT (\\Deleted)\r\nx EXPUNGE\r\n");
	free(fake_conn_take_output(b));
	fake_conn_input(a, "f FETCH 1:2 UID\r\ng SEARCH ALL\r\n");
	expect(a, "* 2 FETCH (UID 2)\r\nf NO [EXPUNGEISSUED] Some messages were expunged "
		  "meanwhile.\r\n* SEARCH 2\r\ng OK Search completed.\r\n");
	fake_conn_input(a, "n NOOP\r\n");
	expect(a, "* 1 EXPUNGE\r\nn OK NOOP completed.\r\n");
	/* IDLE: B's append reaches A at once. */
	fake_conn_input(a, "i IDLE\r\n");
	expect(a, "+ idling\r\n");
	append(b, "a3", "INBOX", "", MSG1, 3);
	wait_output(e, a);
	expect(a, "* 2 EXISTS\r\n* 0 RECENT\r\n");
	/* A delivery from outside (an MTA writing new/) reaches A too. */
	char path[600];
	snprintf(path, sizeof(path), "%s/gina/new/1700000000.M1P1.test", e->root);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "Subject: x\n\nhi\n", 15), 15);
	close(fd);
	wait_output(e, a);
	expect(a, "* 3 EXISTS\r\n* 1 RECENT\r\n");
	fake_conn_input(a, "DONE\r\n");
	expect(a, "i OK Idle completed.\r\n");
	fake_conn_input(a, "j IDLE\r\nnope\r\n");
	expect(a, "+ idling\r\nj BAD Expected DONE.\r\n");
	fake_conn_free(&a);
	fake_conn_free(&b);
}

#define MIME_MSG                                                                                   \
	"Subject: bin\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"  \
	"--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"  \
	"caf=C3=A9\r\n"                                                                            \
	"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"  \
	"\r\nAAECAwQ=\r\n"                                                                         \
	"--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-weird\r\n\r\nzzz\r\n"    \
	"--XX--\r\n"

static void test_binary(void **state)
{
	struct env *e = *state;
	struct conn *c = logged_in(e, "kate");
	append(c, "a", "INBOX", "", MIME_MSG, 1);
	fake_conn_input(c, "s SELECT INBOX\r\n");
	free(fake_conn_take_output(c));
	fake_conn_input(c, "b FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[2] BINARY.PEEK[2]<1.3>)\r\n");
	expect(c, "* 1 FETCH (BINARY[1] {5}\r\ncaf\xc3\xa9 BINARY.SIZE[2] 5 BINARY[2]<1> "
		  "{3}\r\n\x01\x02\x03)\r\nb OK Fetch completed.\r\n");
	/* NUL in the decoded part: a literal8. */
	fake_conn_input(c, "c FETCH 1 BINARY.PEEK[2]\r\n");
	char *out = fake_conn_take_output(c);
	static const char want_c[] = "* 1 FETCH (BINARY[2] ~{5}\r\n\0\x01\x02\x03\x04)\r\n";
	assert_memory_equal(out, want_c, sizeof(want_c) - 1);
	assert_string_equal(out + sizeof(want_c) - 1, "c OK Fetch completed.\r\n");
	free(out);
	fake_conn_input(c, "d FETCH 1 BINARY.PEEK[3]\r\ne FETCH 1 BINARY.PEEK[9]\r\n"
			   "f FETCH 1 BINARY[1.x]\r\n");
	expect(c, "* 1 FETCH (BINARY[3] NIL)\r\nd NO [UNKNOWN-CTE] Unknown "
		  "Content-Transfer-Encoding.\r\n* 1 FETCH (BINARY[9] NIL)\r\ne OK Fetch "
		  "completed.\r\nf BAD Invalid FETCH items.\r\n");
	/* BINARY[] is the whole message; without PEEK it sets \Seen. */
	fake_conn_input(c, "g FETCH 1 (BINARY.SIZE[] BINARY[]<0.7> FLAGS)\r\n");
	char want[160];
	snprintf(want, sizeof(want),
		 "* 1 FETCH (BINARY.SIZE[] %zu BINARY[]<0> {7}\r\nSubject FLAGS (\\Seen))\r\n"
		 "g OK Fetch completed.\r\n",
		 strlen(MIME_MSG));
	expect(c, want);
	/* APPEND with a literal8 keeps NUL octets. */
	static const char append8[] = "h APPEND INBOX ~{4+}\r\na\0b\n\r\n";
	fake_conn_input_n(c, append8, sizeof(append8) - 1);
	free(fake_conn_take_output(c));
	fake_conn_input(c, "i FETCH 2 BINARY.PEEK[]\r\n");
	out = fake_conn_take_output(c);
	static const char want_i[] = "* 2 FETCH (BINARY[] ~{5}\r\na\0b\r\n)\r\ni OK Fetch "
				     "completed.\r\n";
	assert_memory_equal(out, want_i, sizeof(want_i));
	free(out);
	fake_conn_free(&c);
}

static void test_idle_keepalive(void **state)
{
	struct env *e = *state;
	struct fake_conn_opts o = {
		.loopback = true, .mail_root = e->mail_root, .loop = &e->loop, .idle_keepalive = 1};
	struct conn *c = fake_conn_new(&imap_proto_ops, &o);
	free(fake_conn_take_output(c));
	fake_conn_input(c, "L LOGIN u p\r\n");
	fake_auth_answer(AUTH_RESULT_OK, "judy");
	fake_conn_pump(c);
	free(fake_conn_take_output(c));
	fake_conn_input(c, "i IDLE\r\n");
	expect(c, "+ idling\r\n");
	wait_output(e, c);
	expect(c, "* OK Still here\r\n");
	fake_conn_input(c, "DONE\r\n");
	expect(c, "i OK Idle completed.\r\n");
	/* Idle again, then the connection goes while idling: the timer is released. */
	fake_conn_input(c, "j IDLE\r\n");
	expect(c, "+ idling\r\n");
	fake_conn_free(&c);
}

/* Run the loop until c's output ends with want's last line (a deadline timer bounds it). */
static void wait_for(struct env *e, struct conn *c, const char *tagged)
{
	uv_timer_t t;
	uv_timer_init(&e->loop, &t);
	assert_int_equal(uv_timer_start(&t, deadline_cb, 5000, 0), 0);
	for (;;) {
		char *got = fake_conn_take_output(c);
		bool done = strstr(got, tagged) != NULL;
		fake_conn_put_back(c, got);
		free(got);
		if (done || !uv_is_active((uv_handle_t *)&t))
			break;
		uv_run(&e->loop, UV_RUN_ONCE);
	}
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(&e->loop, UV_RUN_NOWAIT);
}

static void test_yield(void **state)
{
	struct env *e = *state;
	struct conn *a = logged_in(e, "leo");
	struct conn *b = logged_in(e, "leo");
	fake_conn_input(a, "s SELECT INBOX\r\n");
	for (int i = 1; i <= 5; i++) {
		char tag[8];
		snprintf(tag, sizeof(tag), "a%d", i);
		append(a, tag, "INBOX", "", i == 3 ? MSG1 : "Subject: x\r\n\r\ny\r\n", (unsigned)i);
	}
	free(fake_conn_take_output(a));
	/* Yield after every message: A's SEARCH and FETCH go on over several loop turns, and
	 * B's NOOP is answered meanwhile. */
	imap_slice_ns = 0;
	fake_conn_input(a, "t SEARCH TEXT fox\r\nf FETCH 1:5 (UID RFC822.SIZE)\r\n");
	assert_int_equal(fake_conn_output_len(a), 0);
	fake_conn_input(b, "n NOOP\r\n");
	expect(b, "n OK NOOP completed.\r\n");
	wait_for(e, a, "f OK Fetch completed.\r\n");
	expect(a, "* SEARCH 3\r\nt OK Search completed.\r\n"
		  "* 1 FETCH (UID 1 RFC822.SIZE 17)\r\n* 2 FETCH (UID 2 RFC822.SIZE 17)\r\n"
		  "* 3 FETCH (UID 3 RFC822.SIZE 176)\r\n* 4 FETCH (UID 4 RFC822.SIZE 17)\r\n"
		  "* 5 FETCH (UID 5 RFC822.SIZE 17)\r\nf OK Fetch completed.\r\n");
	/* The session goes away in the middle of a yielded command: nothing is left behind. */
	fake_conn_input(a, "g SEARCH BODY y\r\n");
	imap_slice_ns = UINT64_MAX;
	fake_conn_free(&a);
	fake_conn_free(&b);
}

/* SORT and THREAD give the loop back like SEARCH (the search, then each message's keys) and
 * answer exactly after any number of turns; another session is served meanwhile. */
static void test_sort_thread_yield(void **state)
{
	struct env *e = *state;
	struct conn *a = logged_in(e, "sam");
	struct conn *b = logged_in(e, "sam");
	fake_conn_input(a, "s SELECT INBOX\r\n");
	static const char *const msgs[] = {
		"Subject: b\r\nMessage-ID: <1@x>\r\nDate: Mon, 2 Nov 2026 10:05:00 "
		"+0000\r\n\r\nx\r\n",
		"Subject: Re: b\r\nMessage-ID: <2@x>\r\nReferences: <1@x>\r\n"
		"Date: Mon, 2 Nov 2026 10:01:00 +0000\r\n\r\nx\r\n",
		"Subject: a\r\nMessage-ID: <3@x>\r\nDate: Mon, 2 Nov 2026 10:03:00 "
		"+0000\r\n\r\nx\r\n",
		"Subject: Re: a\r\nMessage-ID: <4@x>\r\nIn-Reply-To: <3@x>\r\n"
		"Date: Mon, 2 Nov 2026 10:04:00 +0000\r\n\r\nx\r\n",
		"Subject: c\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\nx\r\n",
	};
	for (unsigned i = 0; i < 5; i++) {
		char tag[8];
		snprintf(tag, sizeof(tag), "a%u", i + 1);
		append(a, tag, "INBOX", "", msgs[i], i + 1);
	}
	free(fake_conn_take_output(a));
	imap_slice_ns = 0;
	fake_conn_input(
		a, "s SORT (SUBJECT) UTF-8 ALL\r\nd SORT RETURN (ALL) (DATE) UTF-8 ALL\r\n"
		   "t THREAD REFERENCES UTF-8 ALL\r\no UID THREAD ORDEREDSUBJECT UTF-8 ALL\r\n");
	assert_int_equal(fake_conn_output_len(a), 0);
	fake_conn_input(b, "n NOOP\r\n");
	expect(b, "n OK NOOP completed.\r\n");
	wait_for(e, a, "o OK Thread completed.\r\n");
	expect(a, "* SORT 3 4 1 2 5\r\ns OK Sort completed.\r\n"
		  "* ESEARCH (TAG \"d\") ALL 5,2:4,1\r\nd OK Sort completed.\r\n"
		  "* THREAD (5)(3 4)(1 2)\r\nt OK Thread completed.\r\n"
		  "* THREAD (5)(2 1)(3 4)\r\no OK Thread completed.\r\n");
	/* the session goes away in the middle of a yielded THREAD: nothing is left behind */
	fake_conn_input(a, "g THREAD REFERENCES UTF-8 ALL\r\n");
	imap_slice_ns = UINT64_MAX;
	fake_conn_free(&a);
	fake_conn_free(&b);
}

/* Run the loop until everything (pool work, handles being closed) is finished. */
static void drain_loop(struct env *e)
{
	while (uv_loop_alive(&e->loop))
		uv_run(&e->loop, UV_RUN_ONCE);
}

#define MSG_ANDRE                                                                                  \
	"From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.org>\r\n"                                   \
	"To: Team: carol@example.org, dan@example.org;\r\n"                                        \
	"Subject: =?UTF-8?Q?caf=C3=A9_menu?=\r\n"                                                  \
	"Date: Tue, 3 Nov 2026 09:00:00 +0000\r\n"                                                 \
	"\r\n"                                                                                     \
	"lunch at noon\r\n"

/* Delete the message file holding NEEDLE behind the server's back (an outside expunge). */
static void unlink_file_with(struct env *e, const char *user, const char *needle)
{
	char dir[600], path[900], buf[4096];
	int found = 0;
	for (int d = 0; d < 2; d++) {
		snprintf(dir, sizeof(dir), "%s/%s/%s", e->root, user, d ? "new" : "cur");
		DIR *dh = opendir(dir);
		assert_non_null(dh);
		struct dirent *de;
		while ((de = readdir(dh)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			int fd = open(path, O_RDONLY);
			assert_true(fd >= 0);
			ssize_t n = read(fd, buf, sizeof(buf) - 1);
			close(fd);
			buf[n > 0 ? n : 0] = '\0';
			if (strstr(buf, needle)) {
				assert_int_equal(unlink(path), 0);
				found++;
			}
		}
		closedir(dh);
	}
	assert_int_equal(found, 1);
}

/* SEARCH with content keys in batches on the thread pool: the same answers as on the loop
 * (FROM/TO/SUBJECT/SENT* from the ENVELOPE, encoded words and groups), a message expunged
 * while its batch is on the pool never matches, and a session that goes away meanwhile
 * leaves nothing behind. */
static void test_async_search(void **state)
{
	struct env *e = *state;
	struct conn *a = logged_in(e, "nora");
	struct conn *b = logged_in(e, "nora");
	fake_conn_input(a, "s SELECT INBOX\r\n");
	append(a, "a1", "INBOX", "", MSG1, 1);
	append(a, "a2", "INBOX", "", "Subject: x\r\n\r\ny\r\n", 2);
	append(a, "a3", "INBOX", "(\\Flagged) ",
	       "Subject: third\r\nFrom: zed@x\r\n\r\nthe FOX again\r\n", 3);
	append(a, "a4", "INBOX", "", MSG_ANDRE, 4);
	append(a, "a5", "INBOX", "", "Subject: x\r\n\r\ny\r\n", 5);
	free(fake_conn_take_output(a));
	fake_conn_input(b, "s SELECT INBOX\r\n");
	free(fake_conn_take_output(b));
	static const char *const searches[][2] = {
		{"SEARCH TEXT fox", "* SEARCH 1 3"},
		{"SEARCH CHARSET UTF-8 FROM \"andr\xc3\xa9 <andre@\"", "* SEARCH 4"},
		{"SEARCH FROM \"Alice <alice@example.org>\"", "* SEARCH 1"},
		{"SEARCH TO team", "* SEARCH 4"},
		{"SEARCH TO dan@example", "* SEARCH 4"},
		{"SEARCH CHARSET UTF-8 SUBJECT \"CAF\xc3\xa9 m\"", "* SEARCH 4"},
		{"SEARCH SENTON 3-Nov-2026", "* SEARCH 4"},
		{"SEARCH SENTBEFORE 3-Nov-2026", "* SEARCH 1"},
		{"SEARCH NOT FROM alice", "* SEARCH 2 3 4 5"},
		{"UID SEARCH OR FROM zed BODY lunch", "* SEARCH 3 4"},
		{"SEARCH FLAGGED TEXT fox", "* SEARCH 3"},
		{"SEARCH UNFLAGGED NOT TEXT fox", "* SEARCH 2 4 5"},
		{"SEARCH HEADER Subject X", "* SEARCH 2 5"},
		{"SEARCH RETURN (MIN MAX COUNT) BODY y",
		 "* ESEARCH (TAG \"q\") MIN 2 MAX 5 COUNT 2"},
	};
	/* Both paths, yielding after every message and never: the same bytes. */
	for (int mode = 0; mode < 4; mode++) {
		imap_async_search = mode & 1;
		imap_slice_ns = mode & 2 ? 0 : UINT64_MAX;
		for (size_t i = 0; i < sizeof(searches) / sizeof(searches[0]); i++) {
			char line[256], want[256];
			snprintf(line, sizeof(line), "q %s\r\n", searches[i][0]);
			snprintf(want, sizeof(want), "%s\r\nq OK Search completed.\r\n",
				 searches[i][1]);
			fake_conn_input(a, line);
			wait_for(e, a, "q OK");
			expect(a, want);
		}
	}
	/* An outside expunge of message 3 after its batch went to the pool, before the result
	 * is applied: no match, and its EXPUNGE waits for a command that may carry it. */
	imap_async_search = true;
	imap_slice_ns = UINT64_MAX;
	fake_conn_input(a, "t SEARCH TEXT fox\r\n");
	assert_int_equal(fake_conn_output_len(a), 0);
	unlink_file_with(e, "nora", "FOX again");
	fake_conn_input(b, "n NOOP\r\n");
	expect(b, "* 3 EXPUNGE\r\nn OK NOOP completed.\r\n");
	wait_for(e, a, "t OK");
	expect(a, "* SEARCH 1\r\nt OK Search completed.\r\n");
	fake_conn_input(a, "u NOOP\r\n");
	expect(a, "* 3 EXPUNGE\r\nu OK NOOP completed.\r\n");
	/* The session goes away while its batch is on the pool. */
	fake_conn_input(a, "v SEARCH BODY lunch\r\n");
	assert_int_equal(fake_conn_output_len(a), 0);
	fake_conn_free(&a);
	fake_conn_free(&b);
	drain_loop(e);
	imap_async_search = false;
}

/* SORT and THREAD order the matches on the thread pool: with slices that never end, the
 * answer still comes only after the loop has run the pool's work, the same bytes; a session
 * gone meanwhile leaves the work to finish alone. */
static void test_async_sort(void **state)
{
	struct env *e = *state;
	struct conn *a = logged_in(e, "olga");
	fake_conn_input(a, "s SELECT INBOX\r\n");
	append(a, "a1", "INBOX", "",
	       "Subject: plan\r\nDate: 2 Jan 2021 10:00 +0000\r\nMessage-ID: <p1@x>\r\n\r\nx\r\n",
	       1);
	append(a, "a2", "INBOX", "",
	       "Subject: Re: plan\r\nDate: 3 Jan 2021 10:00 +0000\r\nMessage-ID: <p2@x>\r\n"
	       "References: <p1@x>\r\n\r\nx\r\n",
	       2);
	append(a, "a3", "INBOX", "",
	       "Subject: apples\r\nDate: 1 Jan 2021 10:00 +0000\r\nMessage-ID: <a1@x>\r\n\r\nx\r\n",
	       3);
	free(fake_conn_take_output(a));
	uint64_t slice = imap_slice_ns;
	imap_slice_ns = UINT64_MAX;
	imap_async_sort = true;
	static const char *const cmds[][2] = {
		{"THREAD REFERENCES UTF-8 ALL", "* THREAD (3)(1 2)\r\nt OK Thread completed.\r\n"},
		{"UID THREAD ORDEREDSUBJECT UTF-8 ALL",
		 "* THREAD (3)(1 2)\r\nt OK Thread completed.\r\n"},
		{"THREAD REFERENCES UTF-8 SUBJECT nothing",
		 "* THREAD\r\nt OK Thread completed.\r\n"},
		{"SORT (SUBJECT REVERSE DATE) UTF-8 ALL",
		 "* SORT 3 2 1\r\nt OK Sort completed.\r\n"},
		{"SORT RETURN (MIN MAX) (DATE) UTF-8 ALL",
		 "* ESEARCH (TAG \"t\") MIN 3 MAX 2\r\nt OK Sort completed.\r\n"},
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		char line[256];
		snprintf(line, sizeof(line), "t %s\r\n", cmds[i][0]);
		fake_conn_input(a, line);
		assert_int_equal(fake_conn_output_len(a), 0);
		wait_for(e, a, "t OK");
		expect(a, cmds[i][1]);
	}
	/* the session goes away while its threading is on the pool */
	fake_conn_input(a, "v THREAD REFERENCES UTF-8 ALL\r\n");
	assert_int_equal(fake_conn_output_len(a), 0);
	fake_conn_free(&a);
	drain_loop(e);
	imap_slice_ns = slice;
	imap_async_sort = false;
}

static void test_async_select(void **state)
{
	struct env *e = *state;
	imap_async_open = true;
	struct conn *c = logged_in(e, "mia");
	append(c, "a", "INBOX", "(\\Seen) ", MSG1, 1);
	/* The open runs on the thread pool; the next command waits its turn. */
	fake_conn_input(c, "s EXAMINE INBOX\r\nn NOOP\r\n");
	assert_int_equal(fake_conn_output_len(c), 0);
	wait_for(e, c, "n OK NOOP completed.\r\n");
	expect(c, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
		  "* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n"
		  "* 1 EXISTS\r\n* 0 RECENT\r\n"
		  "* OK [UIDVALIDITY V] UIDs valid.\r\n"
		  "* OK [UIDNEXT 2] Predicted next UID.\r\n"
		  "* OK [HIGHESTMODSEQ 2] Highest\r\n"
		  "* OK [MAILBOXID (V)] Ok\r\n"
		  "s OK [READ-ONLY] Examine completed.\r\nn OK NOOP completed.\r\n");
	fake_conn_input(c, "t SELECT Nope\r\n");
	wait_for(e, c, "t NO");
	expect(c, "* OK [CLOSED] Previous mailbox closed.\r\nt NO [NONEXISTENT] Mailbox doesn't "
		  "exist.\r\n");
	/* The connection goes while the open is in flight: the callback cleans up. */
	fake_conn_input(c, "u SELECT INBOX\r\n");
	fake_conn_free(&c);
	for (int i = 0; i < 100 && uv_loop_alive(&e->loop); i++)
		uv_run(&e->loop, UV_RUN_ONCE);
	imap_async_open = false;
}

/* STORE, APPEND and EXPUNGE answer once their fsyncs, run on the thread pool, are done; a
 * command behind them waits its turn; the other session hears of it; a session that goes
 * while its change is being synced leaves nothing behind. */
static void test_async_commit(void **state)
{
	struct env *e = *state;
	struct conn *c = logged_in(e, "olga");
	struct conn *o = logged_in(e, "olga");
	imap_async_commit = true;
	/* a user's first login: the folders are made on the thread pool */
	struct conn *f = session(e, true);
	fake_conn_input(f, "L LOGIN u p\r\n");
	fake_auth_answer(AUTH_RESULT_OK, "fiona");
	fake_conn_pump(f);
	wait_for(e, f, "L OK");
	expect(f, "L OK [CAPABILITY " CAPS_AUTH "] Logged in\r\n");
	fake_conn_input(f, "l LIST \"\" *\r\n");
	char *lst = fake_conn_take_output(f);
	assert_non_null(strstr(lst, "* LIST (\\HasNoChildren \\Sent) \".\" Sent\r\n"));
	free(lst);
	fake_conn_free(&f);
	fake_conn_input(c, "s SELECT INBOX\r\n");
	expect(c, SELECT_EMPTY "s OK [READ-WRITE] Select completed.\r\n");
	fake_conn_input(o, "s SELECT INBOX\r\n");
	expect(o, SELECT_EMPTY "s OK [READ-WRITE] Select completed.\r\n");
	char cmd[4096];
	snprintf(cmd, sizeof(cmd), "a APPEND INBOX {%zu+}\r\n%s\r\nn NOOP\r\n", strlen(MSG1), MSG1);
	fake_conn_input(c, cmd);
	assert_int_equal(fake_conn_output_len(c), 0);
	wait_for(e, c, "n OK NOOP completed.\r\n");
	expect(c, "* 1 EXISTS\r\n* 1 RECENT\r\na OK [APPENDUID V 1] Append completed.\r\n"
		  "n OK NOOP completed.\r\n");
	fake_conn_input(o, "n NOOP\r\n");
	expect(o, "* 1 EXISTS\r\n* 0 RECENT\r\nn OK NOOP completed.\r\n");
	fake_conn_input(c, "b STORE 1 +FLAGS (\\Deleted)\r\n");
	assert_int_equal(fake_conn_output_len(c), 0);
	wait_for(e, c, "b OK");
	expect(c, "* 1 FETCH (FLAGS (\\Deleted \\Recent))\r\nb OK Store completed.\r\n");
	fake_conn_input(c, "x EXPUNGE\r\n");
	assert_int_equal(fake_conn_output_len(c), 0);
	wait_for(e, c, "x OK");
	expect(c, "* 1 EXPUNGE\r\nx OK Expunge completed.\r\n");
	fake_conn_input(o, "n NOOP\r\n");
	expect(o, "* 1 EXPUNGE\r\nn OK NOOP completed.\r\n");
	/* nothing to expunge (UID EXPUNGE of no message is answered at once) */
	fake_conn_input(c, "y EXPUNGE\r\nz UID EXPUNGE 5\r\n");
	wait_for(e, c, "z OK");
	expect(c, "y OK Expunge completed.\r\nz OK Expunge completed.\r\n");
	/* the sessions go while their changes are being synced: the APPEND stands (the STORE
	 * came before it was shown, so it touched nothing) */
	snprintf(cmd, sizeof(cmd), "a APPEND INBOX {%zu+}\r\n%s\r\n", strlen(MSG1), MSG1);
	fake_conn_input(c, cmd);
	fake_conn_free(&c);
	fake_conn_input(o, "b STORE 1:* +FLAGS (\\Flagged)\r\n");
	fake_conn_free(&o);
	for (int i = 0; i < 100 && uv_loop_alive(&e->loop); i++)
		uv_run(&e->loop, UV_RUN_ONCE);
	c = logged_in(e, "olga");
	fake_conn_input(c, "s EXAMINE INBOX\r\nf FETCH 1:* (UID FLAGS)\r\n");
	char *got = fake_conn_take_output(c);
	assert_non_null(strstr(got, "* 1 EXISTS\r\n"));
	assert_non_null(strstr(got, "* OK [UIDNEXT 3] Predicted next UID.\r\n"));
	assert_non_null(strstr(got, "* 1 FETCH (UID 2 FLAGS ())\r\nf OK Fetch completed.\r\n"));
	free(got);
	fake_conn_free(&c);
	imap_async_commit = false;
}

static void test_rev2(void **state)
{
	struct env *e = *state;
	struct conn *old = logged_in(e, "nina");
	struct conn *c = logged_in(e, "nina");
	fake_conn_input(c, "a ENABLE IMAP4rev2\r\nb ENABLE IMAP4rev2\r\n");
	expect(c, "* ENABLED IMAP4rev2\r\na OK ENABLE completed.\r\n* ENABLED\r\nb OK ENABLE "
		  "completed.\r\n");
	/* Names are UTF-8 for this session, modified UTF-7 in the store and for rev1. */
	fake_conn_input(c, "c CREATE \"Entw\xc3\xbc"
			   "rfe\"\r\nd LIST \"\" \"Entw\xc3\xbc"
			   "*\"\r\n");
	expect(c, "c OK [MAILBOXID (V)] Create completed.\r\n* LIST (\\HasNoChildren) \".\" "
		  "\"Entw\xc3\xbc"
		  "rfe\"\r\nd OK List completed.\r\n");
	fake_conn_input(old, "e LIST \"\" Entw*\r\n");
	expect(old, "* LIST (\\HasNoChildren) \".\" Entw&APw-rfe\r\ne OK List completed.\r\n");
	fake_conn_input(c, "f CREATE \"bad\xc3\"\r\n");
	expect(c, "f NO [CANNOT] Invalid mailbox name.\r\n");
	append(c, "g",
	       "\"Entw\xc3\xbc"
	       "rfe\"",
	       "", MSG1, 1);
	fake_conn_input(c, "h STATUS \"Entw\xc3\xbc"
			   "rfe\" (MESSAGES)\r\n");
	expect(c, "* STATUS \"Entw\xc3\xbc"
		  "rfe\" (MESSAGES 1)\r\nh OK Status completed.\r\n");
	/* SELECT: no RECENT, no UNSEEN code, a LIST response with the name. */
	fake_conn_input(c, "i SELECT \"Entw\xc3\xbc"
			   "rfe\"\r\n");
	expect(c, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
		  "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] "
		  "Flags permitted.\r\n"
		  "* 1 EXISTS\r\n"
		  "* LIST () \".\" \"Entw\xc3\xbc"
		  "rfe\"\r\n"
		  "* OK [UIDVALIDITY V] UIDs valid.\r\n"
		  "* OK [UIDNEXT 2] Predicted next UID.\r\n"
		  "* OK [HIGHESTMODSEQ 2] Highest\r\n"
		  "* OK [MAILBOXID (V)] Ok\r\n"
		  "i OK [READ-WRITE] Select completed.\r\n");
	/* SEARCH answers with ESEARCH; FLAGS never show \Recent. */
	fake_conn_input(c, "j SEARCH ALL\r\nk FETCH 1 FLAGS\r\nl UID SEARCH SEEN\r\n");
	expect(c, "* ESEARCH (TAG \"j\") ALL 1\r\nj OK Search completed.\r\n"
		  "* 1 FETCH (FLAGS ())\r\nk OK Fetch completed.\r\n"
		  "* ESEARCH (TAG \"l\") UID\r\nl OK Search completed.\r\n");
	fake_conn_input(c, "m ENABLE IMAP4rev2\r\n");
	expect(c, "m BAD ENABLE is not allowed with a mailbox selected.\r\n");
	/* SAVE alone still answers nothing but the tagged OK. */
	fake_conn_input(c, "n SEARCH RETURN (SAVE) ALL\r\no FETCH $ UID\r\n");
	expect(c, "n OK Search completed.\r\n* 1 FETCH (UID 1)\r\no OK Fetch completed.\r\n");
	fake_conn_free(&c);
	fake_conn_free(&old);
}

/* UTF8=ACCEPT (RFC 6855): after ENABLE, names are UTF-8 in every command and response (the
 * store and IMAP4rev1 sessions keep modified UTF-7), but unlike IMAP4rev2 nothing else
 * changes (RECENT, SEARCH); APPEND takes UTF8 (~{n}...); SEARCH CHARSET is BAD; SORT takes
 * only UTF-8; ENABLE with a mailbox selected is BAD. */
static void test_utf8_accept(void **state)
{
	struct env *e = *state;
	struct conn *old = logged_in(e, "uma");
	struct conn *c = logged_in(e, "uma");
	fake_conn_input(c, "a ENABLE UTF8=ACCEPT\r\nb ENABLE UTF8=ACCEPT CONDSTORE\r\n");
	expect(c, "* ENABLED UTF8=ACCEPT\r\na OK ENABLE completed.\r\n* ENABLED CONDSTORE\r\nb OK "
		  "ENABLE completed.\r\n");
	fake_conn_input(c, "c CREATE \"R\xc3\xa9sum\xc3\xa9s.\xe6\x97\xa5\xe6\x9c\xac\"\r\n"
			   "d LIST \"\" \"R\xc3\xa9*\"\r\n");
	expect(c, "c OK [MAILBOXID (V)] Create completed.\r\n"
		  "* LIST (\\HasChildren) \".\" \"R\xc3\xa9sum\xc3\xa9s\"\r\n"
		  "* LIST (\\HasNoChildren) \".\" "
		  "\"R\xc3\xa9sum\xc3\xa9s.\xe6\x97\xa5\xe6\x9c\xac\"\r\n"
		  "d OK List completed.\r\n");
	fake_conn_input(old, "e LIST \"\" R*\r\n");
	expect(old, "* LIST (\\HasChildren) \".\" R&AOk-sum&AOk-s\r\n"
		    "* LIST (\\HasNoChildren) \".\" R&AOk-sum&AOk-s.&ZeVnLA-\r\ne OK List "
		    "completed.\r\n");
	/* RENAME, SUBSCRIBE and LSUB with UTF-8 names */
	fake_conn_input(c, "f RENAME \"R\xc3\xa9sum\xc3\xa9s.\xe6\x97\xa5\xe6\x9c\xac\" "
			   "\"\xc3\x9c\x62\x65r\"\r\ng SUBSCRIBE \"\xc3\x9c\x62\x65r\"\r\n"
			   "h LSUB \"\" \"\xc3\x9c*\"\r\n");
	expect(c, "f OK Rename completed.\r\ng OK Subscribe completed.\r\n"
		  "* LSUB () \".\" \"\xc3\x9c\x62\x65r\"\r\nh OK Lsub completed.\r\n");
	/* APPEND with the UTF8 data item: a message with UTF-8 header fields */
	static const char m[] = "Subject: \xc3\x9c\x62\x65rsicht\r\n\r\nText\r\n";
	char buf[512];
	snprintf(buf, sizeof(buf), "i APPEND \"\xc3\x9c\x62\x65r\" (\\Seen) UTF8 (~{%zu}\r\n",
		 sizeof(m) - 1);
	fake_conn_input(c, buf);
	expect(c, "+ Ready for literal data\r\n");
	snprintf(buf, sizeof(buf), "%s)\r\n", m);
	fake_conn_input(c, buf);
	expect(c, "i OK [APPENDUID V 1] Append completed.\r\n");
	snprintf(buf, sizeof(buf), "i2 APPEND \"\xc3\x9c\x62\x65r\" UTF8 {1+}\r\nx\r\n");
	fake_conn_input(c, buf);
	expect(c, "i2 BAD Invalid APPEND arguments.\r\n");
	fake_conn_input(
		c,
		"j STATUS \"\xc3\x9c\x62\x65r\" (MESSAGES)\r\nk SELECT \"\xc3\x9c\x62\x65r\"\r\n");
	char *out = fake_conn_take_output(c);
	const char *want =
		"* STATUS \"\xc3\x9c\x62\x65r\" (MESSAGES 1)\r\nj OK Status completed.\r\n"
		"* FLAGS (";
	if (strncmp(out, want, strlen(want)) != 0 || strstr(out, "* 0 RECENT\r\n") == NULL ||
	    strstr(out, "* LIST") != NULL ||
	    strstr(out, "k OK [READ-WRITE] Select completed.") == NULL)
		fail_msg("STATUS/SELECT:\n%s", out);
	free(out);
	fake_conn_input(c, "l FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])\r\n"
			   "m SEARCH SUBJECT \"\xc3\x9c\x62\x65rs\"\r\n"
			   "n SEARCH CHARSET UTF-8 ALL\r\no SORT (SUBJECT) US-ASCII ALL\r\n"
			   "p SORT (SUBJECT) UTF-8 ALL\r\nq ENABLE UTF8=ACCEPT\r\n");
	expect(c, "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {23}\r\nSubject: "
		  "\xc3\x9c\x62\x65rsicht\r\n"
		  "\r\n)\r\nl OK Fetch completed.\r\n"
		  "* SEARCH 1\r\nm OK Search completed.\r\n"
		  "n BAD No CHARSET after ENABLE UTF8=ACCEPT.\r\n"
		  "o BAD Only CHARSET UTF-8 after ENABLE UTF8=ACCEPT.\r\n"
		  "* SORT 1\r\np OK Sort completed.\r\n"
		  "q BAD ENABLE is not allowed with a mailbox selected.\r\n");
	/* COPY / MOVE targets are UTF-8 too; a modified UTF-7 form is taken literally */
	fake_conn_input(c, "r COPY 1 \"\xc3\x9c\x62\x65r\"\r\ns COPY 1 &ANw-ber\r\n");
	expect(c, "* 2 EXISTS\r\n* 1 RECENT\r\nr OK [COPYUID V 1 2] Copy completed.\r\n"
		  "s NO [TRYCREATE] Mailbox doesn't exist.\r\n");
	fake_conn_input(old, "t STATUS &ANw-ber (MESSAGES)\r\n");
	expect(old, "* STATUS &ANw-ber (MESSAGES 2)\r\nt OK Status completed.\r\n");
	fake_conn_free(&c);
	fake_conn_free(&old);
}

static void test_pop3_and_failures(void **state)
{
	struct env *e = *state;
	struct conn *a = logged_in(e, "olga");
	append(a, "a1", "INBOX", "", MSG1, 1);
	append(a, "a2", "INBOX", "", MSG1, 2);
	fake_conn_input(a, "s SELECT INBOX\r\ni IDLE\r\n");
	free(fake_conn_take_output(a));
	/* A POP3 session on the same store deletes message 1 and QUITs: the idling IMAP
	 * session hears the EXPUNGE at once. */
	char root[400];
	snprintf(root, sizeof(root), "%s/olga", e->root);
	struct store *st;
	assert_int_equal(store_open_path(&e->loop, root, &st), 0);
	struct mailbox *mbox;
	assert_int_equal(mailbox_open(st, "INBOX", &mbox), 0);
	struct view *pop;
	assert_int_equal(view_new(mbox, VIEW_POP3, NULL, NULL, &pop), 0);
	assert_int_equal(view_pop3_delete(pop, 1), 0);
	assert_int_equal(view_pop3_commit(pop, POP3_DELETE_EXPUNGE), 0);
	wait_output(e, a);
	expect(a, "* 1 EXPUNGE\r\n");
	view_free(&pop);
	mailbox_unref(&mbox);
	store_unref(&st);
	fake_conn_input(a, "DONE\r\n");
	expect(a, "i OK Idle completed.\r\n");
	fake_conn_free(&a);

	/* Failed logins: after auth_max_failures the connection ends. */
	struct fake_conn_opts o = {.loopback = true,
				   .mail_root = e->mail_root,
				   .loop = &e->loop,
				   .auth_max_failures = 2};
	struct conn *c = fake_conn_new(&imap_proto_ops, &o);
	free(fake_conn_take_output(c));
	fake_conn_input(c, "a LOGIN x y\r\n");
	fake_auth_answer(AUTH_RESULT_PERMFAIL, NULL);
	fake_conn_pump(c);
	fake_conn_input(c, "b LOGIN x y\r\n");
	fake_auth_answer(AUTH_RESULT_PERMFAIL, NULL);
	fake_conn_pump(c);
	expect(c, "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
		  "b NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
		  "* BYE Too many failed logins.\r\n");
	assert_true(fake_conn_closed(c));
	fake_conn_free(&c);
}

/* APPEND (stream mode), FETCH, STORE and IDLE fed one byte at a time give the same bytes as
 * fed whole. */
static void test_bytewise(void **state)
{
	struct env *e = *state;
	static const char input[] =
		"a APPEND INBOX (\\Flagged) {12}\r\nSubject: x\r\n\r\n"
		"b APPEND INBOX {3+}\r\nabc\r\n"
		"s SELECT INBOX\r\n"
		"f UID FETCH 1:* (FLAGS BODY[HEADER.FIELDS (SUBJECT)] BODY.PEEK[]<1.2>)\r\n"
		"t STORE 2 +FLAGS ($X \\Answered)\r\n"
		"i IDLE\r\nDONE\r\n"
		"x UID EXPUNGE 5\r\n";
	char *outs[2];
	for (int bytewise = 0; bytewise < 2; bytewise++) {
		struct conn *c = logged_in(e, bytewise ? "pat2" : "pat1");
		if (bytewise) {
			for (size_t i = 0; i < sizeof(input) - 1; i++)
				fake_conn_input_n(c, input + i, 1);
		} else {
			fake_conn_input_n(c, input, sizeof(input) - 1);
		}
		outs[bytewise] = fake_conn_take_output(c);
		mask(outs[bytewise], "UIDVALIDITY ");
		mask(outs[bytewise], "APPENDUID ");
		mask_mailboxid(outs[bytewise]);
		fake_conn_free(&c);
	}
	assert_string_equal(outs[0], outs[1]);
	assert_non_null(strstr(outs[0],
			       "+ Ready for literal data\r\na OK [APPENDUID V 1] Append "
			       "completed.\r\nb OK [APPENDUID V 2] Append completed.\r\n"));
	assert_non_null(strstr(outs[0], "* 1 FETCH (UID 1 FLAGS (\\Flagged \\Seen) "
					"BODY[HEADER.FIELDS (SUBJECT)] {14}\r\nSubject: x\r\n\r\n "
					"BODY[]<1> {2}\r\nub)\r\n"));
	assert_non_null(strstr(outs[0], "* 2 FETCH (UID 2 FLAGS (\\Seen) BODY[HEADER.FIELDS "
					"(SUBJECT)] {2}\r\n\r\n BODY[]<1> {2}\r\nbc)\r\n"
					"f OK Fetch completed.\r\n"));
	assert_non_null(strstr(outs[0], "* 2 FETCH (FLAGS (\\Answered \\Seen $X))\r\nt OK Store "
					"completed.\r\n+ idling\r\ni OK Idle completed.\r\n"
					"x OK Expunge completed.\r\n"));
	free(outs[0]);
	free(outs[1]);
}

static void test_backpressure(void **state)
{
	struct env *e = *state;
	struct fake_conn_opts o = {.loopback = true,
				   .mail_root = e->mail_root,
				   .loop = &e->loop,
				   .high_watermark = 4096};
	struct conn *c = fake_conn_new(&imap_proto_ops, &o);
	free(fake_conn_take_output(c));
	fake_conn_input(c, "L LOGIN u p\r\n");
	fake_auth_answer(AUTH_RESULT_OK, "hank");
	fake_conn_pump(c);
	free(fake_conn_take_output(c));
	/* A 200 KB message, streamed in chunks as the output drains. */
	size_t big = 200 * 1024;
	char *msg = malloc(big + 1);
	memcpy(msg, "Subject: big\r\n\r\n", 16);
	for (size_t i = 16; i < big; i++)
		msg[i] = (i % 64 == 62) ? '\r' : (i % 64 == 63) ? '\n' : 'a' + (char)(i % 26);
	msg[big - 2] = '\r';
	msg[big - 1] = '\n';
	msg[big] = '\0';
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "a APPEND INBOX {%zu+}\r\n", big);
	fake_conn_input(c, cmd);
	fake_conn_input_n(c, msg, big);
	fake_conn_input(c, "\r\ns SELECT INBOX\r\n");
	free(fake_conn_take_output(c));
	/* STORE's FETCH responses also wait for the output to drain. */
	for (int i = 2; i <= 600; i++) {
		snprintf(cmd, sizeof(cmd), "a%d APPEND INBOX {3+}\r\nabc\r\n", i);
		fake_conn_input(c, cmd);
	}
	free(fake_conn_take_output(c));
	unsigned drains = fake_conn_drains(c);
	fake_conn_input(c, "t STORE 2:600 +FLAGS (\\Flagged)\r\n");
	/* ~20 KB of answer through a 4 KB watermark: written in several rounds. */
	assert_true(fake_conn_drains(c) - drains >= 3);
	char *st = fake_conn_take_output(c);
	/* (\Recent too: they arrived while this session had INBOX selected.) */
	assert_non_null(strstr(st, "* 2 FETCH (FLAGS (\\Flagged \\Recent))\r\n"));
	assert_non_null(strstr(st, "* 600 FETCH (FLAGS (\\Flagged \\Recent))\r\n"
				   "t OK Store completed.\r\n"));
	free(st);
	drains = fake_conn_drains(c);
	fake_conn_input(c, "f FETCH 1 BODY.PEEK[]\r\nn NOOP\r\n");
	/* Each drain let the session write a little more, in order, with nothing lost. */
	assert_true(fake_conn_drains(c) - drains > 10);
	char *out = fake_conn_take_output(c);
	char *want = malloc(big + 256);
	size_t wl = (size_t)snprintf(want, 256, "* 1 FETCH (BODY[] {%zu}\r\n", big);
	memcpy(want + wl, msg, big);
	wl += big;
	wl += (size_t)snprintf(want + wl, 256,
			       ")\r\nf OK Fetch completed.\r\nn OK NOOP completed.\r\n");
	if (strlen(out) != wl)
		fail_msg("length %zu want %zu; tail [%s]", strlen(out), wl, out + strlen(out) - 80);
	assert_memory_equal(out, want, wl);
	free(want);
	free(out);
	free(msg);
	fake_conn_free(&c);
}

static void test_more_commands(void **state)
{
	struct env *e = *state;
	struct conn *c = logged_in(e, "ivan");
	fake_conn_input(c, "a ENABLE X-OTHER X-UNKNOWN\r\nb CHECK\r\n");
	expect(c, "* ENABLED\r\na OK ENABLE completed.\r\nb BAD No mailbox selected.\r\n");
	fake_conn_input(c, "c CREATE Receipts (USE (\\Archive))\r\nd CREATE X (USE (\\Bogus))\r\n"
			   "e LIST (SPECIAL-USE) \"\" R*\r\n");
	expect(c, "c OK [MAILBOXID (V)] Create completed.\r\nd NO [USEATTR] Unsupported "
		  "special-use attribute.\r\n"
		  "* LIST (\\HasNoChildren \\Archive) \".\" Receipts\r\ne OK List completed.\r\n");
	append(c, "f", "INBOX", "(\\Draft $Todo) \"02-Nov-2026 10:00:00 -0230\" ", MSG1, 1);
	fake_conn_input(c, "g APPEND INBOX \"31-Foo-2026 10:00:00 +0000\" {3+}\r\nabc\r\n"
			   "h APPEND INBOX (\\Bad) {3+}\r\nabc\r\ni APPEND INBOX\r\n");
	expect(c, "g BAD Invalid date-time.\r\nh BAD Invalid system flag.\r\n"
		  "i BAD APPEND needs a message literal.\r\n");
	fake_conn_input(c, "j STATUS INBOX (MESSAGES UNSEEN DELETED)\r\n");
	expect(c, "* STATUS INBOX (MESSAGES 1 UNSEEN 1 DELETED 0)\r\nj OK Status "
		  "completed.\r\n");
	fake_conn_input(c, "k SELECT INBOX\r\n");
	char *out = fake_conn_take_output(c);
	assert_non_null(strstr(out, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft "
				    "$Todo)\r\n"));
	assert_non_null(strstr(out, "* OK [UNSEEN 1] First unseen.\r\n"));
	free(out);
	fake_conn_input(c, "l FETCH 1 FAST\r\n");
	expect(c, "* 1 FETCH (FLAGS (\\Draft $Todo) INTERNALDATE \" 2-Nov-2026 "
		  "12:30:00 +0000\" RFC822.SIZE 176)\r\nl OK Fetch completed.\r\n");
	fake_conn_input(c, "m FETCH 1 (RFC822.HEADER BODY.PEEK[]<170.100> BODY[]<500.10>)\r\n");
	expect(c, "* 1 FETCH (RFC822.HEADER {145}\r\n"
		  "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: Hello "
		  "there\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: "
		  "<1@example.org>\r\n\r\n BODY[]<170> {6}\r\nfox.\r\n BODY[]<500> {0}\r\n FLAGS "
		  "(\\Seen \\Draft $Todo))\r\nm OK Fetch completed.\r\n");
	fake_conn_input(c, "n FETCH 1 (RFC822.TEXT BODY[1] BODY[2] BODY[1.MIME])\r\n");
	expect(c, "* 1 FETCH (RFC822.TEXT {31}\r\nHi Bob,\r\nthe quick brown fox.\r\n BODY[1] "
		  "{31}\r\nHi Bob,\r\nthe quick brown fox.\r\n BODY[2] \"\" BODY[1.MIME] {145}\r\n"
		  "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: Hello "
		  "there\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: "
		  "<1@example.org>\r\n\r\n)\r\nn OK Fetch completed.\r\n");
	append(c, "o", "INBOX", "(\\Deleted) ", MSG1, 2);
	append(c, "p", "INBOX", "(\\Deleted) ", MSG1, 3);
	fake_conn_input(c, "q UID EXPUNGE 3:4\r\nr UID EXPUNGE\r\n");
	expect(c, "* 3 EXPUNGE\r\nq OK Expunge completed.\r\nr BAD UID EXPUNGE needs a UID "
		  "set.\r\n");
	fake_conn_input(c, "s CHECK\r\nt UNSELECT\r\nu FETCH 1 UID\r\n");
	expect(c, "s OK Check completed.\r\nt OK Unselect completed.\r\nu BAD No mailbox "
		  "selected.\r\n");
	/* UNSELECT expunged nothing: message 2 is still there. */
	fake_conn_input(c, "v STATUS INBOX (MESSAGES)\r\n");
	expect(c, "* STATUS INBOX (MESSAGES 2)\r\nv OK Status completed.\r\n");
	/* IDLE without a selected mailbox is allowed, and the autologout timer is untouched. */
	fake_conn_input(c, "w IDLE\r\nDONE\r\n");
	expect(c, "+ idling\r\nw OK Idle completed.\r\n");
	assert_int_equal(fake_conn_idle_timeout(c), 1800);
	/* COMPRESS DEFLATE (RFC 4978): the OK, then the connection layer compresses; twice is
	 * NO [COMPRESSIONACTIVE]; only DEFLATE. (The bytes: imap_compress.py.) */
	fake_conn_input(c, "x COMPRESS GZIP\r\ny COMPRESS\r\nz COMPRESS DEFLATE\r\n");
	expect(c, "x BAD Unknown compression mechanism.\r\ny BAD COMPRESS needs a mechanism.\r\n"
		  "z OK DEFLATE active.\r\n");
	assert_true(conn_is_compressed(c));
	fake_conn_input(c, "z2 COMPRESS DEFLATE\r\n");
	expect(c, "z2 NO [COMPRESSIONACTIVE] DEFLATE is already active.\r\n");
	fake_conn_free(&c);
	/* APPENDLIMIT (RFC 7889): over it a synchronising literal is refused with NO before the
	 * data; STATUS reports the limit; a non-synchronising one ends the connection. */
	c = logged_in(e, "ivan");
	fake_conn_input(c,
			"ap APPEND INBOX {67108865}\r\naq STATUS INBOX (APPENDLIMIT MESSAGES)\r\n"
			"ar APPEND INBOX {67108864}\r\n");
	expect(c,
	       "ap NO [TOOBIG] Message exceeds the APPENDLIMIT.\r\n* STATUS INBOX (MESSAGES 2 "
	       "APPENDLIMIT 67108864)\r\naq OK Status completed.\r\n+ Ready for literal data\r\n");
	fake_conn_free(&c);
	c = logged_in(e, "ivan");
	fake_conn_input(c, "as APPEND INBOX {67108865+}\r\nabc");
	expect(c, "* BYE [TOOBIG] Literal too large\r\n");
	assert_true(fake_conn_closed(c));
	fake_conn_free(&c);
	/* Not before login. */
	c = session(e, true);
	fake_conn_input(c, "a COMPRESS DEFLATE\r\n");
	expect(c, "a BAD Please log in first.\r\n");
	assert_false(conn_is_compressed(c));
	fake_conn_free(&c);
}

/* The number after "UIDVALIDITY " in the connection's pending output (the output is kept). */
static unsigned long peek_uidvalidity(struct conn *c)
{
	char *out = fake_conn_take_output(c);
	const char *p = strstr(out, "UIDVALIDITY ");
	assert_non_null(p);
	unsigned long uv = strtoul(p + 12, NULL, 10);
	mask(out, "UIDVALIDITY ");
	fake_conn_put_back(c, out);
	free(out);
	return uv;
}

#define SELECT_ONE_MORE(exists, uidnext, modseq)                                                   \
	"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"                              \
	"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags "         \
	"permitted.\r\n"                                                                           \
	"* " exists " EXISTS\r\n"                                                                  \
	"* 0 RECENT\r\n"                                                                           \
	"* OK [UNSEEN 1] First unseen.\r\n"                                                        \
	"* OK [UIDVALIDITY V] UIDs valid.\r\n"                                                     \
	"* OK [UIDNEXT " uidnext "] Predicted next UID.\r\n"                                       \
	"* OK [HIGHESTMODSEQ " modseq "] Highest\r\n"                                              \
	"* OK [MAILBOXID (V)] Ok\r\n"

/* CONDSTORE and QRESYNC (RFC 7162): modseqs in FETCH/STORE/SEARCH/STATUS, UNCHANGEDSINCE,
 * then a client that leaves, another session changes and expunges, and the client comes back
 * with SELECT (QRESYNC ...): exactly the expunged UIDs and the changed messages. */
static void test_condstore_qresync(void **state)
{
	struct env *e = *state;
	struct conn *a = logged_in(e, "quinn");
	fake_conn_input(a, "s SELECT INBOX (QRESYNC (1 1))\r\n");
	expect(a, "s BAD QRESYNC is not enabled.\r\n");
	fake_conn_input(a, "e ENABLE QRESYNC\r\ne2 ENABLE CONDSTORE QRESYNC\r\n");
	expect(a, "* ENABLED CONDSTORE QRESYNC\r\ne OK ENABLE completed.\r\n* ENABLED\r\n"
		  "e2 OK ENABLE completed.\r\n");
	fake_conn_input(a, "s SELECT INBOX\r\n");
	expect(a, SELECT_EMPTY "s OK [READ-WRITE] Select completed.\r\n");
	for (unsigned i = 1; i <= 5; i++)
		append(a, "a", "INBOX", "", MSG1, i); /* modseqs 2..6 */
	/* CHANGEDSINCE 0 (iOS) means everything; MODSEQ comes with FLAGS once enabled. */
	fake_conn_input(a, "f FETCH 1:* (FLAGS) (CHANGEDSINCE 0)\r\nf2 FETCH 4:* (FLAGS) "
			   "(CHANGEDSINCE 4)\r\nf3 FETCH 1 UID\r\nf4 FETCH 2 MODSEQ\r\n");
	expect(a,
	       "* 1 FETCH (UID 1 FLAGS (\\Recent) MODSEQ (2))\r\n* 2 FETCH (UID 2 FLAGS "
	       "(\\Recent) MODSEQ (3))\r\n* 3 FETCH (UID 3 FLAGS (\\Recent) MODSEQ (4))\r\n* 4 "
	       "FETCH (UID 4 FLAGS (\\Recent) MODSEQ (5))\r\n* 5 FETCH (UID 5 FLAGS (\\Recent) "
	       "MODSEQ (6))\r\nf OK Fetch completed.\r\n* 4 FETCH (UID 4 FLAGS (\\Recent) MODSEQ "
	       "(5))\r\n* 5 FETCH (UID 5 FLAGS (\\Recent) MODSEQ (6))\r\nf2 OK Fetch "
	       "completed.\r\n* 1 FETCH (UID 1)\r\nf3 OK Fetch completed.\r\n* 2 FETCH (UID 2 "
	       "MODSEQ (3))\r\nf4 OK Fetch completed.\r\n");
	fake_conn_input(a, "t STORE 2 +FLAGS (\\Seen)\r\n"
			   "u STORE 1:3 (UNCHANGEDSINCE 6) +FLAGS.SILENT (\\Flagged)\r\n"
			   "v UID STORE 1:2 (UNCHANGEDSINCE 7) FLAGS (\\Flagged)\r\n");
	expect(a, "* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) MODSEQ (7))\r\nt OK Store "
		  "completed.\r\n* 1 FETCH (UID 1 MODSEQ (8))\r\n* 3 FETCH (UID 3 MODSEQ (9))\r\n"
		  "u OK [MODIFIED 2] Conditional STORE failed.\r\n"
		  "* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent) MODSEQ (10))\r\n"
		  "v OK [MODIFIED 1] Conditional STORE failed.\r\n");
	fake_conn_input(a, "w UID SEARCH MODSEQ 9\r\nx SEARCH MODSEQ \"/flags/\\\\seen\" all 11\r\n"
			   "y SEARCH RETURN (COUNT) MODSEQ 8\r\nz SEARCH MODSEQ x\r\n"
			   "z2 STATUS INBOX (MESSAGES HIGHESTMODSEQ)\r\n");
	expect(a, "* SEARCH 2 3 (MODSEQ 10)\r\nw OK Search completed.\r\n* SEARCH\r\nx OK Search "
		  "completed.\r\n* ESEARCH (TAG \"y\") COUNT 3 MODSEQ 10\r\ny OK Search "
		  "completed.\r\nz BAD Invalid MODSEQ value.\r\n* STATUS INBOX (MESSAGES 5 "
		  "HIGHESTMODSEQ 10)\r\nz2 OK Status completed.\r\n");
	/* The client leaves knowing HIGHESTMODSEQ 10. */
	unsigned long uv;
	fake_conn_input(a, "l STATUS INBOX (UIDVALIDITY)\r\n");
	uv = peek_uidvalidity(a);
	expect(a, "* STATUS INBOX (UIDVALIDITY V)\r\nl OK Status completed.\r\n");
	fake_conn_free(&a);

	/* Another session (no CONDSTORE: EXPUNGE, no MODSEQ) changes 4, expunges 5 and 1. */
	struct conn *b = logged_in(e, "quinn");
	fake_conn_input(b, "s SELECT INBOX\r\n");
	free(fake_conn_take_output(b));
	fake_conn_input(b, "t STORE 4 +FLAGS (\\Answered)\r\nu STORE 5,1 +FLAGS.SILENT "
			   "(\\Deleted)\r\nv EXPUNGE\r\n");
	expect(b, "* 4 FETCH (FLAGS (\\Answered))\r\nt OK Store completed.\r\nu OK Store "
		  "completed.\r\n* 1 EXPUNGE\r\n* 4 EXPUNGE\r\nv OK Expunge completed.\r\n");

	/* The client comes back: VANISHED (EARLIER) 1,5 and message 4's change. */
	a = logged_in(e, "quinn");
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "e ENABLE QRESYNC\r\ns SELECT INBOX (QRESYNC (%lu 10 1:5))\r\n",
		 uv);
	fake_conn_input(a, cmd);
	expect(a, "* ENABLED CONDSTORE QRESYNC\r\ne OK ENABLE completed.\r\n" SELECT_ONE_MORE(
			  "3", "6", "14") "* VANISHED (EARLIER) 1,5\r\n"
					  "* 3 FETCH (UID 4 FLAGS (\\Answered) MODSEQ (11))\r\n"
					  "s OK [READ-WRITE] Select completed.\r\n");
	/* Known UIDs narrow the report; a wrong UIDVALIDITY gets no report at all. */
	snprintf(cmd, sizeof(cmd), "s EXAMINE INBOX (QRESYNC (%lu 11 2:4 (1:2 2:3)))\r\n", uv);
	fake_conn_input(a, cmd);
	free(fake_conn_take_output(a));
	snprintf(cmd, sizeof(cmd), "s SELECT INBOX (QRESYNC (%lu 10 4:5))\r\n", uv + 1);
	fake_conn_input(a, cmd);
	expect(a, "* OK [CLOSED] Previous mailbox closed.\r\n" SELECT_ONE_MORE(
			  "3", "6", "14") "s OK [READ-WRITE] Select completed.\r\n");
	snprintf(cmd, sizeof(cmd), "s SELECT INBOX (QRESYNC (%lu 10 4:5))\r\n", uv);
	fake_conn_input(a, cmd);
	expect(a, "* OK [CLOSED] Previous mailbox closed.\r\n" SELECT_ONE_MORE(
			  "3", "6", "14") "* VANISHED (EARLIER) 5\r\n"
					  "* 3 FETCH (UID 4 FLAGS (\\Answered) MODSEQ (11))\r\n"
					  "s OK [READ-WRITE] Select completed.\r\n");
	/* While selected: VANISHED instead of EXPUNGE, and FETCH with UID and MODSEQ. */
	fake_conn_input(b, "w STORE 3 +FLAGS (\\Flagged)\r\nx STORE 1 +FLAGS (\\Deleted)\r\n"
			   "y EXPUNGE\r\n");
	free(fake_conn_take_output(b));
	fake_conn_input(a, "n NOOP\r\n");
	expect(a, "* VANISHED 2\r\n* 2 FETCH (UID 4 FLAGS (\\Answered \\Flagged) MODSEQ "
		  "(15))\r\nn OK NOOP completed.\r\n");
	fake_conn_input(
		a, "f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 10 VANISHED)\r\n"
		   "g UID FETCH 3 (FLAGS) (CHANGEDSINCE 13 VANISHED)\r\n"
		   "g2 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 16 VANISHED)\r\n"
		   "h FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n"
		   "i UID FETCH 1 (FLAGS) (VANISHED)\r\nj UID FETCH 1 FLAGS (CHANGEDSINCE -1)\r\n"
		   "k SELECT INBOX (QRESYNC (1))\r\n");
	expect(a, "* VANISHED (EARLIER) 1:2,5\r\n"
		  "* 2 FETCH (UID 4 FLAGS (\\Answered \\Flagged) MODSEQ (15))\r\nf OK Fetch "
		  "completed.\r\ng OK Fetch completed.\r\n* VANISHED (EARLIER) 2\r\ng2 OK Fetch "
		  "completed.\r\n"
		  "h BAD VANISHED needs UID FETCH with QRESYNC enabled.\r\n"
		  "i BAD VANISHED needs CHANGEDSINCE.\r\nj BAD Invalid FETCH modifiers.\r\n"
		  "k BAD Invalid QRESYNC parameters.\r\n");
	fake_conn_free(&a);
	fake_conn_free(&b);

	/* Reopened: the expunges before the open are not remembered, so for modseq 16 (after
	 * which only UID 2 went) every UID missing from 1:UIDNEXT-1 is reported instead, as
	 * RFC 7162 §3.2.5.2 allows; nothing changed after 16. */
	for (int i = 0; i < 10; i++)
		uv_run(&e->loop, UV_RUN_NOWAIT);
	a = logged_in(e, "quinn");
	snprintf(cmd, sizeof(cmd), "e ENABLE QRESYNC\r\ns SELECT INBOX (QRESYNC (%lu 16))\r\n", uv);
	fake_conn_input(a, cmd);
	expect(a, "* ENABLED CONDSTORE QRESYNC\r\ne OK ENABLE completed.\r\n" SELECT_ONE_MORE(
			  "2", "6", "17") "* VANISHED (EARLIER) 1:2,5\r\n"
					  "s OK [READ-WRITE] Select completed.\r\n");
	fake_conn_free(&a);
}

/* UNAUTHENTICATE (RFC 8437): back to before login on the same connection; the mailbox is left
 * without expunging, ENABLEd extensions are forgotten, another user may log in. */
static void test_unauthenticate(void **state)
{
	struct env *e = *state;
	struct conn *c = logged_in(e, "ulla");
	fake_conn_input(c, "e ENABLE QRESYNC\r\ns SELECT INBOX\r\n");
	free(fake_conn_take_output(c));
	append(c, "a", "INBOX", "(\\Deleted) ", MSG1, 1);
	fake_conn_input(c, "i IDLE\r\n");
	expect(c, "+ idling\r\n");
	fake_conn_input(c, "DONE\r\nu UNAUTHENTICATE x\r\nu UNAUTHENTICATE\r\nc CAPABILITY\r\n"
			   "s SELECT INBOX\r\nv UNAUTHENTICATE\r\n");
	expect(c, "i OK Idle completed.\r\nu BAD Unexpected arguments.\r\n"
		  "u OK Unauthenticate completed.\r\n* CAPABILITY " CAPS_BASE
		  " AUTH=PLAIN AUTH=LOGIN\r\nc OK Capability completed.\r\n"
		  "s BAD Please log in first.\r\nv BAD Please log in first.\r\n");
	fake_conn_input(c, "L LOGIN u p\r\n");
	fake_auth_answer(AUTH_RESULT_OK, "vera");
	fake_conn_pump(c);
	expect(c, "L OK [CAPABILITY " CAPS_AUTH "] Logged in\r\n");
	fake_conn_input(c, "e ENABLE QRESYNC\r\nt STATUS INBOX (MESSAGES)\r\nu UNAUTHENTICATE\r\n");
	expect(c, "* ENABLED CONDSTORE QRESYNC\r\ne OK ENABLE completed.\r\n"
		  "* STATUS INBOX (MESSAGES 0)\r\nt OK Status completed.\r\n"
		  "u OK Unauthenticate completed.\r\n");
	fake_conn_input(c, "L LOGIN u p\r\n");
	fake_auth_answer(AUTH_RESULT_OK, "ulla");
	fake_conn_pump(c);
	expect(c, "L OK [CAPABILITY " CAPS_AUTH "] Logged in\r\n");
	fake_conn_input(c, "t STATUS INBOX (MESSAGES DELETED)\r\n");
	expect(c, "* STATUS INBOX (MESSAGES 1 DELETED 1)\r\nt OK Status completed.\r\n");
	fake_conn_free(&c);
}

/* Files in DIR (the folder's tmp/ after an APPEND: none may be left). */
static int count_files(const char *dir)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "test $(ls -A '%s' | wc -l) -eq 0", dir);
	return system(cmd) == 0 ? 0 : 1;
}

/* MULTIAPPEND (RFC 3502): several messages in one APPEND, all or none. */
/* The text between "MARKER" and the next ')' in S, into out. */
static void grab(const char *s, const char *marker, char *out, size_t size)
{
	const char *p = strstr(s, marker);
	if (p == NULL)
		fail_msg("no %s in:\n%s", marker, s);
	p += strlen(marker);
	const char *e = strchr(p, ')');
	assert_non_null(e);
	assert_true((size_t)(e - p) < size);
	memcpy(out, p, (size_t)(e - p));
	out[e - p] = '\0';
}

static char *take(struct conn *c)
{
	return fake_conn_take_output(c);
}

/* OBJECTID (RFC 8474) and SAVEDATE (RFC 8514): MAILBOXID made with the folder, kept by
 * RENAME, new after DELETE + CREATE, the same in CREATE, STATUS and SELECT; EMAILID kept by
 * MOVE and COPY and across a restart (every session gone, the store read again); THREADID NIL;
 * SAVEDATE from the delivery time in the name of a message put into new/ from outside, and
 * from the time of the MOVE; the SAVED* search keys. */
static void test_objectid_savedate(void **state)
{
	struct env *e = *state;
	struct conn *c = logged_in(e, "olga");
	char id1[80], id2[80], id3[80], eid[80], eid2[80], buf[512];
	fake_conn_input(c, "a CREATE Work\r\n");
	char *out = take(c);
	grab(out, "a OK [MAILBOXID (", id1, sizeof(id1));
	assert_int_equal(strlen(id1), 33);
	assert_int_equal(id1[0], 'F');
	assert_int_equal(strspn(id1 + 1, "0123456789abcdef"), 32);
	free(out);
	fake_conn_input(c, "b STATUS Work (MESSAGES MAILBOXID)\r\n");
	snprintf(buf, sizeof(buf),
		 "* STATUS Work (MESSAGES 0 MAILBOXID (%s))\r\nb OK Status completed.\r\n", id1);
	fake_conn_expect(c, buf);
	fake_conn_input(c, "c RENAME Work Play\r\nd STATUS Play (MAILBOXID)\r\n");
	snprintf(buf, sizeof(buf),
		 "c OK Rename completed.\r\n* STATUS Play (MAILBOXID (%s))\r\nd OK Status "
		 "completed.\r\n",
		 id1);
	fake_conn_expect(c, buf);
	fake_conn_input(c, "e DELETE Play\r\nf CREATE Play\r\n");
	out = take(c);
	grab(out, "f OK [MAILBOXID (", id2, sizeof(id2));
	assert_string_not_equal(id1, id2);
	free(out);
	/* INBOX (made before any MAILBOXID) gets one on first use, and keeps it. */
	fake_conn_input(c, "g STATUS INBOX (MAILBOXID)\r\n");
	out = take(c);
	grab(out, "* STATUS INBOX (MAILBOXID (", id3, sizeof(id3));
	free(out);

	/* A delivery from outside with the standard name: saved at its delivery time. */
	char path[600];
	snprintf(path, sizeof(path), "%s/olga/new/1700000000.M1P1.test", e->root);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("Subject: hi\n\nbody\n", f);
	fclose(f);
	fake_conn_input(c, "h SELECT INBOX\r\n");
	out = take(c);
	snprintf(buf, sizeof(buf), "* OK [MAILBOXID (%s)] Ok\r\nh OK [READ-WRITE]", id3);
	if (strstr(out, buf) == NULL)
		fail_msg("SELECT:\n%s", out);
	free(out);
	fake_conn_input(c, "i FETCH 1 (EMAILID THREADID SAVEDATE)\r\n");
	out = take(c);
	grab(out, "* 1 FETCH (EMAILID (", eid, sizeof(eid));
	assert_int_equal(strlen(eid), 17);
	assert_int_equal(eid[0], 'M');
	snprintf(buf, sizeof(buf),
		 "* 1 FETCH (EMAILID (%s) THREADID NIL SAVEDATE \"14-Nov-2023 22:13:20 +0000\")\r\n"
		 "i OK Fetch completed.\r\n",
		 eid);
	assert_string_equal(out, buf);
	free(out);
	fake_conn_input(c, "j SEARCH SAVEDON 14-Nov-2023\r\nk SEARCH SAVEDBEFORE 14-Nov-2023\r\n"
			   "l SEARCH SAVEDSINCE 15-Nov-2023\r\nm SEARCH SAVEDATESUPPORTED\r\n"
			   "n SEARCH THREADID T1\r\no SEARCH EMAILID M0000000000000001\r\n"
			   "p SEARCH EMAILID bad!\r\n");
	fake_conn_expect(c, "* SEARCH 1\r\nj OK Search completed.\r\n"
			    "* SEARCH\r\nk OK Search completed.\r\n"
			    "* SEARCH\r\nl OK Search completed.\r\n"
			    "* SEARCH 1\r\nm OK Search completed.\r\n"
			    "* SEARCH\r\nn OK Search completed.\r\n"
			    "* SEARCH\r\no OK Search completed.\r\n"
			    "p BAD Invalid object id.\r\n");
	snprintf(buf, sizeof(buf), "q SEARCH EMAILID %s\r\n", eid);
	fake_conn_input(c, buf);
	fake_conn_expect(c, "* SEARCH 1\r\nq OK Search completed.\r\n");

	/* COPY and MOVE keep the EMAILID; the MOVE's save date is now. */
	fake_conn_input(c, "r COPY 1 Play\r\ns MOVE 1 Play\r\n");
	free(take(c));
	fake_conn_input(c, "t SELECT Play\r\n");
	free(take(c));
	fake_conn_input(c, "u FETCH 1:2 (EMAILID)\r\n");
	snprintf(buf, sizeof(buf),
		 "* 1 FETCH (EMAILID (%s))\r\n* 2 FETCH (EMAILID (%s))\r\nu OK Fetch "
		 "completed.\r\n",
		 eid, eid);
	fake_conn_expect(c, buf);
	fake_conn_input(c, "v SEARCH SAVEDSINCE 1-Jan-2024 SAVEDATESUPPORTED\r\n");
	fake_conn_expect(c, "* SEARCH 1 2\r\nv OK Search completed.\r\n");
	fake_conn_input(c, "w FETCH 2 (SAVEDATE)\r\n");
	out = take(c);
	grab(out, "* 2 FETCH (SAVEDATE \"", eid2, sizeof(eid2));
	free(out);
	fake_conn_free(&c);

	/* A restart: every session gone, the store and folders read again from disk. */
	for (int i = 0; i < 10; i++)
		uv_run(&e->loop, UV_RUN_NOWAIT);
	c = logged_in(e, "olga");
	fake_conn_input(c, "a SELECT Play\r\n");
	out = take(c);
	snprintf(buf, sizeof(buf), "* OK [MAILBOXID (%s)] Ok\r\n", id2);
	assert_non_null(strstr(out, buf));
	free(out);
	fake_conn_input(c, "b FETCH 1:2 (EMAILID SAVEDATE)\r\n");
	out = take(c);
	snprintf(buf, sizeof(buf), "* 2 FETCH (EMAILID (%s) SAVEDATE \"%s)\r\n", eid, eid2);
	if (strstr(out, buf) == NULL)
		fail_msg("after restart:\n%s\nwant %s", out, buf);
	free(out);
	fake_conn_input(c, "c STATUS INBOX (MAILBOXID MESSAGES)\r\n");
	snprintf(buf, sizeof(buf),
		 "* STATUS INBOX (MESSAGES 0 MAILBOXID (%s))\r\nc OK Status completed.\r\n", id3);
	fake_conn_expect(c, buf);
	fake_conn_free(&c);
}

/* PREVIEW (RFC 8970): LAZY is NIL until the message was parsed (then from the cache), the
 * plain text is preferred, 8-bit text goes as a literal, a message without text has "". */
static void test_preview(void **state)
{
	struct env *e = *state;
	struct conn *c = logged_in(e, "pia");
	static const char m1[] = "Subject: p\r\nContent-Type: multipart/alternative; boundary=x\r\n"
				 "\r\n--x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
				 "Gr\xc3\xbc\xc3\x9f"
				 "e  aus\r\n\r\n  Berlin\r\n--x\r\nContent-Type: text/html\r\n\r\n"
				 "<p>html</p>\r\n--x--\r\n";
	static const char m2[] =
		"Subject: q\r\nContent-Type: text/html\r\n\r\n<b>Hi</b> &amp; bye\r\n";
	static const char m3[] = "Subject: r\r\nContent-Type: image/gif\r\n\r\nGIF\r\n";
	char buf[1024];
	snprintf(buf, sizeof(buf), "a APPEND INBOX {%zu+}\r\n%s\r\n", sizeof(m1) - 1, m1);
	fake_conn_input(c, buf);
	snprintf(buf, sizeof(buf), "b APPEND INBOX {%zu+}\r\n%s\r\n", sizeof(m2) - 1, m2);
	fake_conn_input(c, buf);
	snprintf(buf, sizeof(buf), "c APPEND INBOX {%zu+}\r\n%s\r\n", sizeof(m3) - 1, m3);
	fake_conn_input(c, buf);
	fake_conn_input(c, "d SELECT INBOX\r\n");
	free(take(c));
	fake_conn_input(c, "e FETCH 1:3 (PREVIEW (LAZY))\r\n");
	fake_conn_expect(c, "* 1 FETCH (PREVIEW NIL)\r\n* 2 FETCH (PREVIEW NIL)\r\n"
			    "* 3 FETCH (PREVIEW NIL)\r\ne OK Fetch completed.\r\n");
	fake_conn_input(c, "f FETCH 1:2 (PREVIEW)\r\n");
	fake_conn_expect(c, "* 1 FETCH (PREVIEW {18}\r\nGr\xc3\xbc\xc3\x9f"
			    "e aus Berlin)\r\n* 2 FETCH (PREVIEW \"Hi & bye\")\r\n"
			    "f OK Fetch completed.\r\n");
	/* now cached: LAZY has it; asked lazily and not, it is computed */
	fake_conn_input(c, "g UID FETCH 2:3 (PREVIEW (LAZY) UID)\r\n"
			   "h FETCH 3 (PREVIEW (LAZY) PREVIEW)\r\ni FETCH 1 (PREVIEW (FAST))\r\n");
	fake_conn_expect(c,
			 "* 2 FETCH (UID 2 PREVIEW \"Hi & bye\")\r\n* 3 FETCH (UID 3 PREVIEW NIL)"
			 "\r\ng OK Fetch completed.\r\n* 3 FETCH (PREVIEW \"\")\r\n"
			 "h OK Fetch completed.\r\ni BAD Invalid FETCH items.\r\n");
	fake_conn_free(&c);
}

static void test_multiappend(void **state)
{
	struct env *e = *state;
	struct conn *c = logged_in(e, "mona");
	fake_conn_input(c, "s SELECT INBOX\r\n");
	free(fake_conn_take_output(c));
	fake_conn_input(c, "m APPEND INBOX (\\Seen) {6+}\r\nmsg 1\n (\\Flagged) \" 2-Nov-2026 "
			   "10:00:00 +0000\" {6+}\r\nmsg 2\n {6+}\r\nmsg 3\n\r\n");
	expect(c, "* 3 EXISTS\r\n* 3 RECENT\r\nm OK [APPENDUID V 1:3] Append completed.\r\n");
	fake_conn_input(c, "f FETCH 1:3 (FLAGS RFC822.SIZE)\r\n");
	expect(c, "* 1 FETCH (FLAGS (\\Seen \\Recent) RFC822.SIZE 7)\r\n"
		  "* 2 FETCH (FLAGS (\\Flagged \\Recent) RFC822.SIZE 7)\r\n"
		  "* 3 FETCH (FLAGS (\\Recent) RFC822.SIZE 7)\r\nf OK Fetch completed.\r\n");
	/* A bad second part: nothing is appended, nothing is left in tmp/. */
	fake_conn_input(c, "n APPEND INBOX {6+}\r\nmsg 4\n (\\Bogus) {6+}\r\nmsg 5\n\r\n"
			   "n2 APPEND INBOX {6+}\r\nmsg 4\n \"bad date\" {6+}\r\nmsg 5\n\r\n"
			   "n3 APPEND INBOX {6+}\r\nmsg 4\n (\\Seen) (\\Seen) {6+}\r\nmsg 5\n\r\n"
			   "n4 APPEND INBOX {6+}\r\nmsg 4\n x\r\nt STATUS INBOX (MESSAGES)\r\n");
	expect(c, "n BAD Invalid system flag.\r\nn2 BAD Invalid date-time.\r\n"
		  "n3 BAD Invalid APPEND arguments.\r\nn4 BAD Invalid APPEND arguments.\r\n"
		  "* STATUS INBOX (MESSAGES 3)\r\nt OK Status completed.\r\n");
	char tmp[400];
	snprintf(tmp, sizeof(tmp), "%s/mona/tmp", e->root);
	assert_int_equal(count_files(tmp), 0);
	/* Synchronising literals: each is invited when its size arrives. */
	fake_conn_input(c, "o APPEND INBOX {4}\r\n");
	expect(c, "+ Ready for literal data\r\n");
	fake_conn_input(c, "abcd {4}\r\n");
	expect(c, "+ Ready for literal data\r\n");
	fake_conn_input(c, "efgh\r\n");
	expect(c, "* 5 EXISTS\r\n* 5 RECENT\r\no OK [APPENDUID V 4:5] Append completed.\r\n");
	assert_int_equal(count_files(tmp), 0);
	fake_conn_free(&c);
}

/* QUOTA (RFC 9208) through the session: GETQUOTAROOT / GETQUOTA with both resources, APPEND
 * refused on the message limit and on a literal that cannot fit (nothing made), UID COPY
 * refused, STATUS DELETED-STORAGE, SETQUOTA refused, EXPUNGE over quota frees room. */
static void test_quota(void **state)
{
	struct env *e = *state;
	struct fake_conn_opts o = {.loopback = true,
				   .mail_root = e->mail_root,
				   .loop = &e->loop,
				   .quota_storage = 2048,
				   .quota_messages = 3};
	struct conn *c = fake_conn_new(&imap_proto_ops, &o);
	free(fake_conn_take_output(c));
	fake_conn_input(c, "L LOGIN u p\r\n");
	fake_auth_answer(AUTH_RESULT_OK, "quentin");
	fake_conn_pump(c);
	expect(c, "L OK [CAPABILITY " CAPS_AUTH "] Logged in\r\n");
	/* The usage is being counted on the thread pool (login started it): the answer waits
	 * for the count instead of counting every folder on the loop. */
	fake_conn_input(c, "g GETQUOTAROOT inbox\r\n");
	assert_int_equal(fake_conn_output_len(c), 0);
	wait_for(e, c, "g OK");
	expect(c, "* QUOTAROOT INBOX \"\"\r\n* QUOTA \"\" (STORAGE 0 2 MESSAGE 0 3)\r\n"
		  "g OK Getquotaroot completed.\r\n");
	/* a session that goes away while it waits for the count */
	struct conn *w = fake_conn_new(&imap_proto_ops, &o);
	free(fake_conn_take_output(w));
	fake_conn_input(w, "L LOGIN u p\r\n");
	fake_auth_answer(AUTH_RESULT_OK, "quincy");
	fake_conn_pump(w);
	expect(w, "L OK [CAPABILITY " CAPS_AUTH "] Logged in\r\n");
	fake_conn_input(w, "g GETQUOTA \"\"\r\n");
	assert_int_equal(fake_conn_output_len(w), 0);
	fake_conn_free(&w);
	drain_loop(e);
	for (unsigned i = 1; i <= 3; i++)
		append(c, "a", "INBOX", "", MSG1, i);
	fake_conn_input(c, "g GETQUOTA \"\"\r\n");
	expect(c, "* QUOTA \"\" (STORAGE 1 2 MESSAGE 3 3)\r\ng OK Getquota completed.\r\n");
	char cmd[4096];
	snprintf(cmd, sizeof(cmd), "a APPEND INBOX {%zu+}\r\n%s\r\n", strlen(MSG1), MSG1);
	fake_conn_input(c, cmd);
	expect(c, "a NO [OVERQUOTA] Quota exceeded\r\n");
	fake_conn_input(c, "s SELECT INBOX\r\n");
	free(take(c));
	fake_conn_input(c, "t UID STORE 1 +FLAGS.SILENT (\\Deleted)\r\n");
	expect(c, "t OK Store completed.\r\n");
	snprintf(cmd, sizeof(cmd),
		 "* STATUS INBOX (MESSAGES 3 DELETED 1 DELETED-STORAGE %zu)\r\n"
		 "st OK Status completed.\r\n",
		 strlen(MSG1));
	fake_conn_input(c, "st STATUS INBOX (MESSAGES DELETED DELETED-STORAGE)\r\n");
	expect(c, cmd);
	fake_conn_input(c, "c UID COPY 1 Trash\r\n");
	expect(c, "c NO [OVERQUOTA] Quota exceeded\r\n");
	fake_conn_input(c, "q SETQUOTA \"\" (STORAGE 1)\r\n");
	expect(c, "q NO [NOPERM] Quota limits are set in the server configuration.\r\n");
	fake_conn_input(c, "x EXPUNGE\r\n");
	expect(c, "* 1 EXPUNGE\r\nx OK Expunge completed.\r\n");
	/* room for one message, not for a literal of 2000 octets */
	snprintf(cmd, sizeof(cmd), "b APPEND INBOX {2000+}\r\n%2000s\r\n", "x");
	fake_conn_input(c, cmd);
	expect(c, "b NO [OVERQUOTA] Quota exceeded\r\n");
	fake_conn_input(c, "g GETQUOTA \"\"\r\n");
	expect(c, "* QUOTA \"\" (STORAGE 1 2 MESSAGE 2 3)\r\ng OK Getquota completed.\r\n");
	fake_conn_input(c, "c UID COPY 2 Trash\r\n");
	char *out = take(c);
	assert_non_null(strstr(out, "c OK [COPYUID "));
	free(out);
	fake_conn_input(c, "z LOGOUT\r\n");
	free(take(c));
	fake_conn_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_login, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_login_failures, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_logindisabled, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_authenticate, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_select_append_fetch, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_condstore_qresync, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_unauthenticate, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_objectid_savedate, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_preview, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_utf8_accept, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_multiappend, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_store_expunge, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_search, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_folders, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_copy_move, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_copy_expunged, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_two_sessions_and_idle, env_setup,
						env_teardown),
		cmocka_unit_test_setup_teardown(test_backpressure, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_more_commands, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_idle_keepalive, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_binary, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_yield, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_sort_thread_yield, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_async_select, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_async_search, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_async_sort, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_async_commit, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_rev2, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_pop3_and_failures, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_bytewise, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_quota, env_setup, env_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
