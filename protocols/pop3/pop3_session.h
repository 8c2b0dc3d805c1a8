/* pop3_session — one POP3 connection's state, shared by the files of this folder (internal).
 *
 * The session reads one line at a time (conn_read_line), looks the keyword up in the command
 * table (pop3_cmds.c), checks the command's state flags in one generic gate, and runs the
 * handler. A handler either answers at once (POP3_CMD_DONE), reports a bad command
 * (POP3_CMD_BAD, counted against the listener's max_bad_commands), or leaves work in progress
 * (POP3_CMD_MORE): a login waiting for PAM, a RETR/TOP stream, or a long LIST/UIDL resumed
 * from on_drain. While work is in progress no further command is read; pipelined commands
 * wait, in order, in the connection's input buffer.
 *
 * The state changes only through pop3_set_state(), which logs `old -> new`.
 */
#ifndef MK_POP3_SESSION_H
#define MK_POP3_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pop3_dot.h"
#include "pop3_parse.h"
#include "pop3_settings.h"

struct conn;
struct store;
struct view;
struct mail_stream;
struct sasl;
struct auth_request;
struct pop3_open;

enum pop3_state {
	POP3_AUTHORIZATION, /* before a successful login (RFC 1939 §4) */
	POP3_TRANSACTION,   /* logged in, the maildrop is open */
	POP3_UPDATE,        /* QUIT from TRANSACTION: marks are being committed, then close */
};

enum pop3_cmd_result {
	POP3_CMD_DONE, /* answered; read the next command */
	POP3_CMD_BAD,  /* s->bad_reply is the answer; counts as a bad command */
	POP3_CMD_MORE, /* in progress; pop3_session_command_done() follows */
};

/* RETR marks (\Seen, and the retrieval time for pop3_expire_days) applied per store call at
 * most. */
#define POP3_SEEN_BATCH 128

struct pop3_session;
typedef enum pop3_cmd_result pop3_cmd_fn(struct pop3_session *s, struct pop3_token args);

/* Where a command may run (the gate checks these before the handler). */
enum pop3_cmd_flags {
	POP3_CMDF_AUTHORIZATION = 1 << 0,
	POP3_CMDF_TRANSACTION = 1 << 1,
};

struct pop3_cmd {
	const char *name;
	pop3_cmd_fn *func;
	unsigned flags; /* enum pop3_cmd_flags */
};

/* The command named by KEYWORD (case-insensitive), or NULL. */
const struct pop3_cmd *pop3_cmd_find(struct pop3_token keyword);

/* A long listing (LIST, UIDL without argument) resumed from on_drain. */
struct pop3_listing {
	bool uidl;     /* UIDL rather than LIST */
	uint32_t next; /* next message number to list */
};

/* A RETR/TOP stream in progress. */
struct pop3_stream {
	struct mail_stream *mail; /* owns the fd */
	int fd;
	uint64_t file_size; /* bytes on disk */
	uint64_t offset;    /* next window's start (TOP reads in windows) */
	uint64_t window;    /* bytes per conn_stream_file call (TOP reads in windows so it can
			     * stop early; RETR streams the whole file at once) */
	uint32_t seq;       /* message number */
	uint32_t uid;
	bool set_seen;  /* RETR of an unseen message with pop3_retr_sets_seen */
	bool retrieved; /* RETR (not TOP): a whole download, recorded for the retention */
	struct pop3_dot dot;
};

/* QUIT waiting for its commit to be durable, or a login for the user's store tree; s is NULL
 * once the session is gone (the callback frees it). */
struct pop3_quit_wait {
	struct pop3_session *s;
	uint32_t marks;
};

struct pop3_session {
	struct conn *conn;
	uint64_t id;
	enum pop3_state state;
	struct pop3_settings set;

	bool busy;                        /* a command is in progress: read no further command */
	struct pop3_quit_wait *quit_wait; /* QUIT's commit in progress */
	struct pop3_quit_wait *prep_wait; /* the user's first store tree being made (login) */
	bool in_stls;                     /* STLS answered, waiting for the handshake */
	const char *bad_reply;            /* POP3_CMD_BAD: the -ERR line to send (static text) */

	/* AUTHORIZATION */
	char *user;                /* the USER argument, until PASS */
	struct sasl *sasl;         /* an AUTH exchange reading continuation lines */
	struct auth_request *auth; /* the login with the auth service */
	struct pop3_open *opening; /* the INBOX being opened after a login */
	unsigned auth_failures;
	char *mech_name; /* "USER", "PLAIN" or "LOGIN", for the log */

	/* TRANSACTION */
	char *canonical_user;
	struct store *store;
	struct view *view;
	uint32_t snap_count; /* messages in the snapshot */
	uint64_t snap_size;  /* their total size */
	uint32_t dele_count; /* DELE marks */
	uint64_t dele_size;  /* and their total size */

	/* RETR's marks not applied yet: \Seen, and the download recorded in the store's
	 * retrieval record (the clock of pop3_expire_days). A pipelined run of RETRs is marked
	 * with one store call each (one durable commit) when the client has no further command
	 * waiting, when a batch is full, before QUIT's commit and when the session ends. */
	uint32_t seen_uids[POP3_SEEN_BATCH];
	size_t n_seen;
	uint32_t retr_uids[POP3_SEEN_BATCH];
	size_t n_retr;

	/* Commands in progress */
	enum pop3_cmd_result (*cont)(struct pop3_session *s); /* resumed from on_drain */
	struct pop3_listing listing;
	struct pop3_stream stream;
	bool stream_active;
};

/* Change the state; logs `pop3 conn=ID state=OLD->NEW`. */
void pop3_set_state(struct pop3_session *s, enum pop3_state state);
const char *pop3_state_name(enum pop3_state state);

/* Queue "+OK text\r\n" / "-ERR text\r\n" (text may start with a [CODE]). */
void pop3_reply_ok(struct pop3_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void pop3_reply_err(struct pop3_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Record REPLY (a full "-ERR ...\r\n" line, static) as a bad command's answer. */
enum pop3_cmd_result pop3_cmd_bad(struct pop3_session *s, const char *reply);

/* A command that returned POP3_CMD_MORE is finished: flush what it queued (completions run
 * outside conn's hooks) and read the next command. */
void pop3_session_command_done(struct pop3_session *s);
/* Stop reading commands until pop3_session_command_done() (a login, a stream). */
void pop3_session_command_wait(struct pop3_session *s);

/* Whether USER/PASS and SASL PLAIN/LOGIN may be used on this connection now. */
bool pop3_session_plaintext_allowed(const struct pop3_session *s);

/* Command handlers (pop3_cmds.c, pop3_login.c, pop3_retr.c). */
pop3_cmd_fn pop3_cmd_capa, pop3_cmd_stls, pop3_cmd_user, pop3_cmd_pass, pop3_cmd_auth,
	pop3_cmd_apop, pop3_cmd_quit, pop3_cmd_stat, pop3_cmd_list, pop3_cmd_uidl, pop3_cmd_retr,
	pop3_cmd_top, pop3_cmd_dele, pop3_cmd_noop, pop3_cmd_rset;

/* pop3_login.c: an AUTH continuation line; true when the line was taken by an exchange. */
bool pop3_login_feed_line(struct pop3_session *s, const char *line, size_t len);
/* Cancel a login in progress and wipe what it holds (session end). */
void pop3_login_abort(struct pop3_session *s);

/* pop3_cmds.c: check that message N of the snapshot can be used (exists, not deleted here,
 * not expunged by another session); answers -ERR and returns false if not. On success
 * *info_r holds its data. */
struct mail_info;
bool pop3_msg_check(struct pop3_session *s, uint32_t n, struct mail_info *info_r);

/* pop3_retr.c: stop a stream in progress (session end). */
void pop3_retr_abort(struct pop3_session *s);
/* pop3_retr.c: apply the pending RETR marks (\Seen, retrieval times) through the mailbox. */
void pop3_retr_flush_marks(struct pop3_session *s);

/* pop3_cmds.c: close the maildrop without committing (session end or failure). */
void pop3_maildrop_close(struct pop3_session *s);

#endif
