/* imap_internal — what the IMAP session and its command files share (the room's private
 * header; nothing outside protocols/imap includes it).
 *
 * A session reads one command at a time: the tag and command name through the parser, the
 * gate (struct imap_cmd_def flags against the session state), then the handler. A handler is
 * resumable (STYLE.md rule 3): it returns CMD_MORE when it waits for input (more arguments, a
 * literal, an AUTHENTICATE response, IDLE's DONE), for output to drain, or for another part of
 * the server (PAM); the session calls it again on the next input, drain or wake-up. State it
 * needs across calls lives in cmd->ctx (freed by cmd->ctx_free when the command ends).
 */
#ifndef MK_IMAP_INTERNAL_H
#define MK_IMAP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "storage.h"
#include "imap_parser.h"
#include "imap_seqset.h"

#define IMAP_TAG_MAX  64
#define IMAP_USER_MAX 256
/* Pre-login: a small budget per command (STYLE.md rule 5). */
#define IMAP_PREAUTH_MAX_COMMAND (16 * 1024)
#define IMAP_PREAUTH_MAX_LITERAL (8 * 1024)
/* After login. */
#define IMAP_MAX_COMMAND    (1024 * 1024)
#define IMAP_MAX_LITERAL    (256 * 1024)
#define IMAP_MAX_APPEND     (64ULL * 1024 * 1024)
#define IMAP_MAX_APPEND_STR "67108864" /* APPENDLIMIT (RFC 7889): IMAP_MAX_APPEND */
#define IMAP_MAX_DEPTH      16
#define IMAP_MAX_ARGS       8192
/* LITERAL- (config imap_literal_plus = no): the largest non-synchronising literal. */
#define IMAP_LITERAL_MINUS_MAX 4096

/* Defaults for proto_ops (listeners may override). */
#define IMAP_DEFAULT_MAX_LINE (64 * 1024)
#define IMAP_AUTOLOGOUT_S     (30 * 60)

enum imap_state {
	IMAP_NOT_AUTH,
	IMAP_AUTH,
	IMAP_SELECTED,
	IMAP_LOGOUT,
};

enum cmd_result {
	CMD_DONE,  /* the tagged reply is queued; the next command may start */
	CMD_MORE,  /* call again on more input, drained output or a wake-up */
	CMD_ERROR, /* the connection must end (the handler queued the BYE) */
};

/* Command gate flags (STYLE.md rule 2). */
enum imap_cmd_flags {
	CMDF_PREAUTH = 1 << 0,       /* allowed before login */
	CMDF_AUTH = 1 << 1,          /* allowed after login (authenticated or selected) */
	CMDF_SELECTED = 1 << 2,      /* needs a selected mailbox */
	CMDF_NOT_AUTH_ONLY = 1 << 3, /* only before login (LOGIN, AUTHENTICATE, STARTTLS) */
	CMDF_NO_EXPUNGE = 1 << 4, /* FETCH/STORE/SEARCH: no untagged EXPUNGE (RFC 9051 §7.5.1) */
	CMDF_UID = 1 << 5,        /* may follow UID */
};
#define CMDF_ANY (CMDF_PREAUTH | CMDF_AUTH)

struct imap_session;
struct imap_cmd;

typedef enum cmd_result imap_cmd_fn(struct imap_cmd *cmd);

struct imap_cmd_def {
	const char *name;
	imap_cmd_fn *func;
	unsigned flags;
};

struct imap_cmd {
	struct imap_session *s;
	const struct imap_cmd_def *def;
	char tag[IMAP_TAG_MAX + 1];
	bool uid; /* UID FETCH etc. */
	/* The handler's own state across CMD_MORE, and how to free it (may be NULL). */
	void *ctx;
	void (*ctx_free)(struct imap_cmd *cmd);
};

struct imap_session {
	struct conn *conn;
	enum imap_state state;
	struct imap_parser *parser;
	struct imap_cmd cmd;
	bool cmd_running;
	bool rev2;          /* ENABLE IMAP4rev2 */
	bool utf8;          /* ENABLE UTF8=ACCEPT (RFC 6855): UTF-8 names, no SEARCH CHARSET */
	bool condstore;     /* CONDSTORE on (RFC 7162 §3.1): MODSEQ in every FETCH with FLAGS */
	bool qresync;       /* ENABLE QRESYNC: VANISHED instead of EXPUNGE (RFC 7162 §3.2) */
	bool in_input;      /* on_input is on the stack (no re-entry) */
	bool quota_waiting; /* a command waits for the quota count (imap_quota_ready) */
	char user[IMAP_USER_MAX + 1]; /* the canonical user once logged in */
	unsigned auth_failures;
	struct store *store;       /* once logged in */
	struct view *view;         /* the selected mailbox */
	bool readonly;             /* EXAMINE */
	bool idling;               /* inside IDLE: announcements go out at once */
	uv_idle_t *wake;           /* imap_cmd_yield: run the command again on the next loop turn */
	uv_timer_t *keepalive;     /* IDLE keep-alives (imap_idle_keepalive), allocated on use */
	struct mailbox *flag_mbox; /* APPEND: where keywords are looked up */
	struct imap_seqset searchres; /* SEARCH RETURN (SAVE), RFC 5182 */
};

/* The command table (imap_cmds.c). */
const struct imap_cmd_def *imap_cmd_find(const char *name);

/* Session services for the handlers (imap_session.c). */
void imap_set_state(struct imap_session *s, enum imap_state state);
const char *imap_state_name(enum imap_state state);
/* The capability list for the current state (no leading "CAPABILITY"). */
void imap_capability_string(struct imap_session *s, char *out, size_t size);
/* The handler's args after the command name (and after UID's subcommand): 1 when they are
 * all read (*args_r), 0 when more input is needed (return CMD_MORE), -1 when the command was
 * answered (BAD, or BYE on a fatal error: return CMD_DONE). */
int imap_cmd_read_args(struct imap_cmd *cmd, const struct imap_arg **args_r);
/* For commands that take no argument: 1 when the line is complete and empty, 0 when more
 * input is needed, -1 when the command was answered (BAD, or a parse error). */
int imap_cmd_no_args(struct imap_cmd *cmd);
/* "TAG OK text\r\n" (status "OK", "NO" or "BAD"); BAD counts as a bad command. */
void imap_cmd_reply(struct imap_cmd *cmd, const char *status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* "* BYE text" and close the connection. */
void imap_session_bye(struct imap_session *s, const char *text);
/* A change waiting for durability (storage's *_async, imap_store.c): the command returns
 * CMD_MORE until DONE; its ctx_free calls imap_sync_wait_release. */
struct imap_sync_wait {
	struct imap_cmd *cmd; /* NULL once the command is gone (the callback frees it) */
	bool done;
	int err;
	uint32_t uid; /* APPEND */
};
struct imap_sync_wait *imap_sync_wait_new(struct imap_cmd *cmd);
void imap_sync_wait_cb(int err, void *data);
void imap_sync_wait_append_cb(int err, uint32_t uid, void *data);
void imap_sync_wait_release(struct imap_sync_wait **wp);
/* Run commands again after something outside a hook (PAM, a mailbox change) woke the session,
 * and flush. */
void imap_session_wakeup(struct imap_session *s);
/* A long command (SEARCH, FETCH of unparsed messages) gives the loop back: the session runs
 * it again on the next loop turn. Returns CMD_MORE for the handler to return. */
enum cmd_result imap_cmd_yield(struct imap_cmd *cmd);
/* SELECT/EXAMINE open the folder on libuv's thread pool (default); tests may set false. */
extern bool imap_async_open;
/* SEARCH evaluates message content (BODY, TEXT, HEADER, FROM ...) in batches on libuv's
 * thread pool (default); tests may set false (then on the loop, in slices). */
extern bool imap_async_search;
/* SORT and THREAD order their matches on libuv's thread pool (imap_sort.c); tests may turn
 * it off to have the answer within the command's first run. */
extern bool imap_async_sort;
/* STORE, EXPUNGE and APPEND answer once their fsyncs, run on the thread pool with everyone
 * else's (group commit), are done, and a user's first LOGIN has the folders made there
 * (default); tests may set false (the loop waits, in-line). */
extern bool imap_async_commit;
/* Work budget of one loop turn before a long command yields (ns); 2 ms by default. Tests set
 * 0 (yield after every message) or UINT64_MAX (never). */
extern uint64_t imap_slice_ns;
#define IMAP_SLICE_NS imap_slice_ns
/* Whether plaintext passwords are accepted on this connection now. */
bool imap_plaintext_allowed(const struct imap_session *s);

/* The auth service logins go to (imap.h); NULL before it is set. */
struct auth_service *imap_auth_service_get(void);
/* Session teardown for the login and mailbox parts. */
void imap_login_session_free(struct imap_session *s);
/* Before a command that checks the quota (APPEND, COPY, MOVE, GETQUOTA, GETQUOTAROOT):
 * false while the store counts the usage in the background after login (the handler
 * returns CMD_MORE without reading its arguments; the count's end wakes the session), so
 * the check never counts a big mailbox on the loop. */
bool imap_quota_ready(struct imap_cmd *cmd);
/* Forget the wait (before the store is released). */
void imap_quota_wait_cancel(struct imap_session *s);

/* Mailbox helpers (imap_mailbox.c). */
/* Send what the view owes (EXISTS, RECENT, FETCH FLAGS, and EXPUNGE when allowed). */
void imap_session_sync(struct imap_session *s, bool allow_expunge);
void imap_session_unselect(struct imap_session *s);
/* "* seq FETCH (UID u FLAGS (...) MODSEQ (m))": UID when uid or QRESYNC is on, FLAGS when
 * flags, MODSEQ when CONDSTORE is on. */
void imap_write_flags_fetch(struct imap_session *s, uint32_t seq, const struct mail_info *info,
			    bool uid, bool flags);
/* Stop IDLE's keep-alive timer; with free, close and release it (session teardown). */
void imap_idle_keepalive_stop(struct imap_session *s, bool free_it);
/* "(\\Seen \\Deleted kw)" without the parentheses into out; returns the length needed. */
size_t imap_format_flags(const struct mailbox *mbox, unsigned flags, uint32_t keywords, bool recent,
			 char *out, size_t size);
/* A flag or a flag list: system flags and keywords (created in the mailbox when create).
 * Returns 0 or -errno with *error_r the text for NO/BAD. */
int imap_parse_flag_list(struct imap_session *s, const struct imap_arg *arg, bool create,
			 unsigned *flags_r, uint32_t *keywords_r, const char **error_r);
/* NO with the RFC 5530 code that fits err, and storage's client-safe text. */
void imap_cmd_reply_error(struct imap_cmd *cmd, int err);
/* Mailbox names are UTF-8 on the wire (ENABLE IMAP4rev2 or UTF8=ACCEPT), else modified UTF-7. */
static inline bool imap_utf8_names(const struct imap_session *s)
{
	return s->rev2 || s->utf8;
}
/* A client's mailbox name (UTF-8 when imap_utf8_names) into the store's normalised form in
 * out (STORE_NAME_MAX + 1). 0 or -EINVAL. */
int imap_mailbox_name_in(struct imap_session *s, const char *name, char *out);
/* Write a store name for the client (UTF-8 when imap_utf8_names). */
void imap_write_mailbox(struct imap_session *s, const char *name);
/* Mailbox name argument normalised into out (STORE_NAME_MAX + 1); false when answered. */
bool imap_arg_mailbox(struct imap_cmd *cmd, const struct imap_arg *arg, char *out);
/* Sequence-set argument ($ is the saved search); false when answered. */
bool imap_arg_seqset(struct imap_cmd *cmd, const struct imap_arg *arg, struct imap_seqset *set);
/* The UIDs of the view's messages in set (numbers are UIDs when uid). -EINVAL for a sequence
 * number past the end; *uids_r is malloc'd. */
int imap_seqset_to_uids(struct imap_session *s, struct imap_seqset *set, bool uid,
			uint32_t **uids_r, size_t *n_r);

/* CONDSTORE / QRESYNC (imap_condstore.c). */
/* Turn CONDSTORE on (a CONDSTORE-enabling command, RFC 7162 §3.1); with a mailbox selected
 * the first time, "* OK [HIGHESTMODSEQ n]" is sent. */
void imap_condstore_enable(struct imap_session *s);
/* A mod-sequence argument: 1..2^63-1, or 0 too when zero_ok (CHANGEDSINCE 0). */
bool imap_arg_modseq(const struct imap_arg *arg, bool zero_ok, uint64_t *modseq_r);
/* A VANISHED response written as ranges are found (ascending), split into ~8 KiB lines. */
#define IMAP_VANISHED_LINE 8000
struct imap_vanished {
	struct imap_session *s;
	bool earlier;
	bool pending;
	uint32_t lo, hi;
	size_t len;
	char line[IMAP_VANISHED_LINE];
};
void imap_vanished_init(struct imap_vanished *w, struct imap_session *s, bool earlier);
void imap_vanished_add(struct imap_vanished *w, uint32_t lo, uint32_t hi);
/* Write what is collected ("* VANISHED [(EARLIER) ]set"); nothing when empty. */
void imap_vanished_flush(struct imap_vanished *w);
/* "* VANISHED (EARLIER)" for the UIDs in KNOWN (resolved UIDs; NULL = all) expunged after
 * MODSEQ: exact while the mailbox remembers them (mailbox_expunged_since), else every UID of
 * KNOWN up to UIDNEXT-1 that the mailbox does not hold. 0 or -ENOMEM. */
int imap_vanished_earlier(struct imap_session *s, uint64_t modseq, const struct imap_seqset *known);

/* A search program (imap_search.c) for SORT and THREAD: parsed from the keys in ARGS (to the
 * end of the line) over the selected view; 0, or -errno with *error_r the text for BAD/NO. */
struct search_ctx;
typedef int imap_search_match_fn(void *ctx, uint32_t seq, const struct mail_info *info);
int imap_search_parse(struct imap_session *s, const struct imap_arg *args,
		      struct search_ctx **search_r, const char **error_r);
/* Evaluate messages until all are done (1) or the slice is used up (0; call again on the next
 * turn); MATCH is called for each match in sequence order (its negative result is returned). */
int imap_search_step(struct search_ctx *search, imap_search_match_fn *match, void *ctx);
/* Whether the program has a MODSEQ key (the answer then carries the highest modseq). */
bool imap_search_has_modseq(const struct search_ctx *search);
void imap_search_free(struct search_ctx **searchp);

/* Handlers (imap_cmd_*.c). */
enum cmd_result imap_cmd_select(struct imap_cmd *cmd);
enum cmd_result imap_cmd_examine(struct imap_cmd *cmd);
enum cmd_result imap_cmd_close(struct imap_cmd *cmd);
enum cmd_result imap_cmd_unselect(struct imap_cmd *cmd);
enum cmd_result imap_cmd_expunge(struct imap_cmd *cmd);
enum cmd_result imap_cmd_check(struct imap_cmd *cmd);
enum cmd_result imap_cmd_idle(struct imap_cmd *cmd);
enum cmd_result imap_cmd_create(struct imap_cmd *cmd);
enum cmd_result imap_cmd_delete(struct imap_cmd *cmd);
enum cmd_result imap_cmd_rename(struct imap_cmd *cmd);
enum cmd_result imap_cmd_subscribe(struct imap_cmd *cmd);
enum cmd_result imap_cmd_unsubscribe(struct imap_cmd *cmd);
enum cmd_result imap_cmd_namespace(struct imap_cmd *cmd);
enum cmd_result imap_cmd_list(struct imap_cmd *cmd);
enum cmd_result imap_cmd_lsub(struct imap_cmd *cmd);
enum cmd_result imap_cmd_status(struct imap_cmd *cmd);
enum cmd_result imap_cmd_fetch(struct imap_cmd *cmd);
enum cmd_result imap_cmd_store(struct imap_cmd *cmd);
enum cmd_result imap_cmd_copy(struct imap_cmd *cmd);
enum cmd_result imap_cmd_move(struct imap_cmd *cmd);
enum cmd_result imap_cmd_search(struct imap_cmd *cmd);
enum cmd_result imap_cmd_sort(struct imap_cmd *cmd);
enum cmd_result imap_cmd_thread(struct imap_cmd *cmd);
enum cmd_result imap_cmd_append(struct imap_cmd *cmd);
enum cmd_result imap_cmd_login(struct imap_cmd *cmd);
enum cmd_result imap_cmd_authenticate(struct imap_cmd *cmd);
enum cmd_result imap_cmd_capability(struct imap_cmd *cmd);
enum cmd_result imap_cmd_noop(struct imap_cmd *cmd);
enum cmd_result imap_cmd_logout(struct imap_cmd *cmd);
enum cmd_result imap_cmd_id(struct imap_cmd *cmd);
enum cmd_result imap_cmd_enable(struct imap_cmd *cmd);
enum cmd_result imap_cmd_starttls(struct imap_cmd *cmd);
enum cmd_result imap_cmd_compress(struct imap_cmd *cmd);
enum cmd_result imap_cmd_unauthenticate(struct imap_cmd *cmd);
/* QUOTA (imap_quota.c, RFC 9208). */
enum cmd_result imap_cmd_getquota(struct imap_cmd *cmd);
enum cmd_result imap_cmd_getquotaroot(struct imap_cmd *cmd);
enum cmd_result imap_cmd_setquota(struct imap_cmd *cmd);

#endif
