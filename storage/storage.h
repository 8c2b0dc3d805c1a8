/* storage — the mail store shared by every protocol (DESIGN.md "The store: one mailbox, many
 * views"). Protocols see the store only through this header.
 *
 * Objects (all opaque, all used on the loop thread only):
 *   struct store    one user's store (mail_root with %u expanded): folders, subscriptions.
 *                   Shared: store_open() for a user already open returns the same object.
 *   struct mailbox  one open folder, ONE per folder per process, shared by every session,
 *                   reference-counted. Holds, in UID order, every message's UID, flags,
 *                   keywords, CRLF size, internal date, modseq and back-end key, plus
 *                   UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ.
 *   struct view     one session's window on a mailbox: an IMAP sequence map with the
 *                   announcements it still owes, or a POP3 snapshot with deleted marks.
 *   struct mail_stream   a message's bytes with CRLF line ends and its exact CRLF size.
 *   struct mail_append   a message being appended, streamed to disk in chunks.
 *
 * Every change (append, flags, expunge, copy/move, external delivery or rename) goes to disk
 * first (durably), then to the mailbox in memory, then is announced to every view of that
 * mailbox: the view's notify callback is called soon after (from the loop, never from inside
 * the call that made the change), and view_sync() hands over what is owed when the protocol
 * chooses.
 *
 * Folder names are the names clients see: modified UTF-7 (RFC 3501 §5.1.3), hierarchy
 * separator '.' (STORE_SEPARATOR), "INBOX" case-insensitive. On disk the Maildir++ folder for
 * "a.b" is the directory ".a.b" (the mUTF-7 form, as Dovecot stores it); INBOX is the root.
 *
 * Errors: functions return 0 or a negative errno. storage_error_text() turns one into a short
 * text that is safe to send to a client (NO / -ERR); the internal detail (paths, system
 * errors) goes to the log.
 */
#ifndef MK_STORAGE_H
#define MK_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

struct config;
struct store;
struct mailbox;
struct view;
struct mail_stream;
struct mail_append;

#define STORE_SEPARATOR '.'
/* Longest folder name accepted (bytes of the mUTF-7 form). */
#define STORE_NAME_MAX 255
/* Keywords per folder (Maildir filenames carry them as the letters a..z). */
#define MAILBOX_MAX_KEYWORDS 26
/* Longest keyword name (an IMAP atom). */
#define MAILBOX_KEYWORD_MAX 64
/* A POP3 UIDL: 1..70 characters 0x21..0x7E (RFC 1939), plus the NUL. */
#define MAIL_UIDL_MAX 70
/* The keyword that hides a message from POP3 under pop3_delete = hide. */
#define MAIL_KEYWORD_POP3_DELETED "$POP3Deleted"

/* A client-safe text for an error returned by any function here ("Mailbox doesn't exist",
 * "Mailbox already exists", "Internal error", ...). Never NULL. */
const char *storage_error_text(int err);

/* ---------------------------------------------------------------------------------------- */
/* The user store                                                                            */

/* Open the store of USER under cfg->mail_root ("%u" replaced by USER; a root without %u gets
 * "/%u" appended), with USER's quota limits from CFG (store_quota_configure). The tree is created
 * on first use: INBOX, and Sent, Drafts, Trash, Junk, Archive with their special-use attributes. If
 * the user's store is already open in this process the same object is returned with one more
 * reference. USER must be a plain name (no '/', not starting with '.', 1..255 bytes): -EINVAL
 * otherwise. With mail_format = mbox the store is an mbox tree (storage/README.md, "mbox"): the
 * root is the user's mail directory, INBOX the file cfg->mbox_inbox (%u expanded) or ROOT/inbox.
 * The store keeps LOOP for file watching; it must outlive the store. */
int store_open(uv_loop_t *loop, const struct config *cfg, const char *user, struct store **store_r);
/* The first login of a user creates the tree (six folders: some 40 fsyncs), which must not
 * hold the loop: store_prepare_async makes USER's tree on libuv's thread pool, then
 * CB(err, DATA) on the loop (never inside the call), after which store_open finds it made.
 * *READY_R true (no callback): the tree is there already (or the store is open). Logins of one
 * user at once share one preparation (an mbox tree, a few empty files, is made by store_open:
 * ready at once). -EINVAL as store_open. */
typedef void store_prepare_cb(int err, void *data);
int store_prepare_async(uv_loop_t *loop, const struct config *cfg, const char *user, bool *ready_r,
			store_prepare_cb *cb, void *data);
/* The same with an explicit user root directory (tests, tools): a Maildir++ store. */
int store_open_path(uv_loop_t *loop, const char *root, struct store **store_r);
/* An mbox store rooted at ROOT (tests, tools): INBOX is the file INBOX (absolute; NULL or ""
 * = ROOT/inbox); lock waits give up after LOCK_TIMEOUT_MS (-EBUSY); MBOXRD selects mboxrd
 * reading (else mboxo). */
int store_open_mbox(uv_loop_t *loop, const char *root, const char *inbox, unsigned lock_timeout_ms,
		    bool mboxrd, struct store **store_r);
struct store *store_ref(struct store *store);
/* Drop a reference; at zero the store is freed (open mailboxes hold their own reference).
 * Sets *store_p to NULL. */
void store_unref(struct store **store_p);
/* The user's root directory (for logs). */
const char *store_root(const struct store *store);

/* Normalise a client-supplied folder name: checks mUTF-7 syntax, the length, that no
 * hierarchy level is empty and that no '/' or control character occurs; a first level that
 * is "INBOX" in any case becomes "INBOX". A single trailing separator is dropped (RFC 3501
 * CREATE). Writes the result into out (size >= STORE_NAME_MAX + 1). -EINVAL on a bad name. */
int store_name_normalize(const char *name, char *out, size_t out_size);

/* Special-use attributes (RFC 6154). */
enum store_special_use {
	STORE_SPECIAL_NONE = 0,
	STORE_SPECIAL_SENT = 1 << 0,
	STORE_SPECIAL_DRAFTS = 1 << 1,
	STORE_SPECIAL_TRASH = 1 << 2,
	STORE_SPECIAL_JUNK = 1 << 3,
	STORE_SPECIAL_ARCHIVE = 1 << 4,
};
/* "\\Sent" etc. for one bit, NULL for none. */
const char *store_special_use_name(enum store_special_use use);

enum store_folder_attr {
	STORE_FOLDER_NOSELECT = 1 << 0,    /* a level that exists only because of its children */
	STORE_FOLDER_HASCHILDREN = 1 << 1, /* else \HasNoChildren */
	STORE_FOLDER_SUBSCRIBED = 1 << 2,
	STORE_FOLDER_NONEXISTENT = 1 << 3, /* only subscribed, no folder (LSUB / LIST SUBSCRIBED) */
};

struct store_folder {
	char *name;           /* wire name, "INBOX" first, then sorted bytewise */
	unsigned attrs;       /* enum store_folder_attr */
	unsigned special_use; /* enum store_special_use */
};

/* Every folder (INBOX first), every level implied by a deeper folder (NOSELECT), and every
 * subscribed name that does not exist (NONEXISTENT). The caller matches LIST patterns.
 * Free with store_folder_list_free. */
int store_folder_list(struct store *store, struct store_folder **folders_r, size_t *n_r);
void store_folder_list_free(struct store_folder **folders_p, size_t n);

/* Create a folder and any missing parent levels. -EEXIST if it exists, -EINVAL bad name.
 * special_use: attributes to record (RFC 6154 CREATE USE), 0 for none. */
int store_folder_create(struct store *store, const char *name, unsigned special_use);
/* The folder's MAILBOXID (RFC 8474) into BUF (size >= STORE_MAILBOXID_MAX + 1): made when the
 * folder is created (a folder without one, e.g. INBOX or one made by another program, gets
 * one on first use), kept through RENAME, never reused (a folder deleted and created again
 * gets a new one). -ENOENT if the folder does not exist. */
#define STORE_MAILBOXID_MAX 64
int store_folder_mailboxid(struct store *store, const char *name, char *buf, size_t size);
/* Delete a folder and its messages. -EPERM for INBOX, -ENOTEMPTY if it has child folders
 * (delete them first), -ENOENT if it does not exist. Views of an open mailbox of that folder
 * are told every message is expunged, and later operations on it fail with -ENOENT. */
int store_folder_delete(struct store *store, const char *name);
/* Rename a folder and every folder below it. -EEXIST if NEW (or a child of NEW it would
 * need) exists, -ENOENT if OLD does not, -EINVAL when NEW is below OLD. Renaming INBOX moves
 * its messages into the new folder and leaves INBOX empty (RFC 3501 §6.3.5). */
int store_folder_rename(struct store *store, const char *old_name, const char *new_name);
/* Add or remove NAME in the subscriptions file (atomic rewrite). Subscribing a name that does
 * not exist is allowed (RFC 3501 §6.3.6). */
int store_subscribe(struct store *store, const char *name, bool subscribe);

/* STATUS counts (RFC 3501 §6.3.10, RFC 7162 HIGHESTMODSEQ, RFC 8438 SIZE). */
struct mailbox_status {
	uint32_t messages;
	uint32_t unseen;
	uint32_t recent;
	uint32_t deleted;
	uint32_t uidnext;
	uint32_t uidvalidity;
	uint64_t highest_modseq;
	uint64_t size;         /* sum of CRLF sizes */
	uint64_t deleted_size; /* sum of CRLF sizes of the \\Deleted messages (RFC 9208) */
};
/* Counts for a folder. Uses the open mailbox when there is one; otherwise opens it (reading
 * the UID list and the directory names, never the message files unless a message delivered
 * from outside has no size in its name yet) and closes it again. Errors as mailbox_open. */
int store_status(struct store *store, const char *name, struct mailbox_status *status_r);

/* Quota (RFC 9208; storage/README.md "Quota"): one quota per user over all their folders, in
 * messages and in the sum of their RFC822.SIZEs; limits from the configuration (quota_storage,
 * quota_messages, [user NAME]). Usage is counted once per store the first time it is needed
 * (every folder's STATUS counts, no message file opened), then kept by every change; mail that
 * arrives behind the server's back is counted when a mailbox sees it. */
struct store_quota_usage {
	uint64_t bytes, bytes_limit;       /* limit 0 = unlimited */
	uint64_t messages, messages_limit; /* limit 0 = unlimited */
};
/* The limits and, when there is one, the usage (counted first if need be; 0 when both
 * limits are 0: nothing is counted then). */
int store_quota_get(struct store *store, struct store_quota_usage *usage_r);
/* Would MESSAGES more messages of BYTES in all stay within the limits? 0 if so, -EDQUOT (and
 * a log line) if not. Every arrival through the store is checked with it (append, copy, and
 * a move into another user's store); protocols may call it earlier to refuse before reading
 * a message. */
int store_quota_check(struct store *store, uint64_t messages, uint64_t bytes);
/* The usage is counted in the background after login (every folder opened on the thread
 * pool); store_quota_check and store_quota_get before that has ended count what is left at
 * once, on the loop (seconds for a big mailbox). A caller that can wait asks here first: 1
 * when a count runs (CB(DATA) is called on the loop once it has ended), 0 when the usage is
 * at hand or no count runs (ask store_quota_check now), -ENOMEM. A waiter that goes away
 * calls store_quota_wait_cancel with the same CB and DATA. */
int store_quota_wait(struct store *store, void (*cb)(void *data), void *data);
void store_quota_wait_cancel(struct store *store, void (*cb)(void *data), void *data);
/* Take the limits of STORE's user from CFG, unless the store has them from a newer config.
 * When there is a limit and the usage is not counted yet, counting starts in the background
 * (each folder opened with mailbox_open_async and closed again; a check before it ends
 * counts what is left at once). */
void store_quota_configure(struct store *store, const struct config *cfg);
/* Whether the usage has been counted over every folder (tests, logs). */
bool store_quota_counted(const struct store *store);
/* The same for every open store of the process (SIGHUP reload). */
void store_config_apply(const struct config *cfg);

/* ---------------------------------------------------------------------------------------- */
/* Mailboxes                                                                                 */

/* Open folder NAME. If it is open in this process, returns the same object with one more
 * reference. Otherwise loads it on the calling thread: the UID list, the keyword table and
 * the directory listing (plus a stat and size count for messages not yet in the UID list).
 * A warm open of 10,000 messages takes about 20 ms (see storage/README.md); for a folder
 * that may be large and cold prefer mailbox_open_async. -ENOENT if the folder does not exist;
 * -EBUSY if another process has it open (each open folder holds a lock, so two mailkeep
 * processes never number one folder): a temporary error (IMAP NO [INUSE], POP3
 * -ERR [IN-USE]); -EAGAIN (the same) if the folder kept changing under every scan. A folder
 * whose new messages cannot be numbered for want of space opens without them. */
int mailbox_open(struct store *store, const char *name, struct mailbox **mbox_r);

/* Called on the loop thread with a referenced mailbox (err == 0) or an error (mbox NULL). */
typedef void mailbox_open_cb(int err, struct mailbox *mbox, void *data);
/* The same, with the directory scan, the numbering of new messages and the UID-list write on
 * libuv's thread pool, so the loop only builds the array. CB is always called later from the
 * loop, never from inside this call (a folder open already is held until then, so it is
 * that object even if everyone else closes it meanwhile). Same errors as mailbox_open. */
int mailbox_open_async(struct store *store, const char *name, mailbox_open_cb *cb, void *data);

struct mailbox *mailbox_ref(struct mailbox *mbox);
/* Drop a reference; sets *mbox_p to NULL. At zero the mailbox stops watching its folder and
 * is freed (every view must be freed first: each holds a reference). */
void mailbox_unref(struct mailbox **mbox_p);

const char *mailbox_name(const struct mailbox *mbox);
uint32_t mailbox_uidvalidity(const struct mailbox *mbox);
uint32_t mailbox_uidnext(const struct mailbox *mbox);
uint64_t mailbox_highest_modseq(const struct mailbox *mbox);
/* Messages in the mailbox now (not what any view has been told). */
uint32_t mailbox_count(const struct mailbox *mbox);
unsigned mailbox_special_use(const struct mailbox *mbox);
/* Fill STATUS counts from memory. */
void mailbox_get_status(const struct mailbox *mbox, struct mailbox_status *status_r);

/* QRESYNC (RFC 7162): the mailbox remembers the UIDs expunged since it was opened in this
 * process, each with the modseq of its expunge, the last MAILBOX_EXPUNGED_MAX of them
 * (16 bytes each). */
#define MAILBOX_EXPUNGED_MAX 65536
/* The UIDs expunged with a modseq above MODSEQ, ascending, into *uids_r (malloc'd; NULL when
 * none). Returns 1 when that answer is exact, 0 when the mailbox does not remember back to
 * MODSEQ (nothing returned: the caller reports every UID missing from the client's range,
 * RFC 7162 §3.2.5.2), or -ENOMEM. */
int mailbox_expunged_since(const struct mailbox *mbox, uint64_t modseq, uint32_t **uids_r,
			   size_t *n_r);
/* The lowest modseq mailbox_expunged_since answers exactly for. */
uint64_t mailbox_expunged_horizon(const struct mailbox *mbox);

/* Look for changes made behind the server's back: a cheap check of the folder's directory
 * times (two stat calls); if anything changed, the directory is re-read and the differences
 * (arrivals, external flag renames, removals) are announced to the views. Call before
 * answering a command (IMAP NOOP/CHECK/IDLE start, any command that reports changes).
 * File-system events trigger the same work on their own. Reading needs no space: when the
 * UID list cannot record what the re-read found (a full disk), none of it is taken in (nothing
 * is shown that is not durable), 0 is returned, and the next refresh tries again. */
int mailbox_refresh(struct mailbox *mbox);

/* Keywords: up to MAILBOX_MAX_KEYWORDS per folder, kept in the folder's keyword table. A
 * keyword's index is stable for the life of the folder. */
unsigned mailbox_keyword_count(const struct mailbox *mbox);
/* Name of keyword IDX (< mailbox_keyword_count), valid while the mailbox lives. */
const char *mailbox_keyword_name(const struct mailbox *mbox, unsigned idx);
/* Index of NAME (case-insensitive match, RFC 3501 flags are case-insensitive). With CREATE
 * a missing keyword is added (table written durably first). -ENOENT (not found, no create),
 * -ENOSPC (table full: PERMANENTFLAGS should stop offering \*), -EINVAL (not an atom or
 * starts with '\'). */
int mailbox_keyword_index(struct mailbox *mbox, const char *name, bool create, unsigned *idx_r);

/* ---------------------------------------------------------------------------------------- */
/* Messages and changes                                                                      */

enum mail_flags {
	MAIL_SEEN = 1 << 0,
	MAIL_ANSWERED = 1 << 1,
	MAIL_FLAGGED = 1 << 2,
	MAIL_DELETED = 1 << 3,
	MAIL_DRAFT = 1 << 4,
	MAIL_RECENT = 1 << 5, /* reported by views only; ignored in changes */
};
#define MAIL_FLAGS_SETTABLE (MAIL_SEEN | MAIL_ANSWERED | MAIL_FLAGGED | MAIL_DELETED | MAIL_DRAFT)

struct mail_info {
	uint32_t uid;
	unsigned flags;    /* enum mail_flags; MAIL_RECENT as this view sees it */
	uint32_t keywords; /* bit i: keyword i of the mailbox */
	uint64_t modseq;
	uint64_t size;         /* exact size with CRLF line ends (RFC822.SIZE, POP3 LIST) */
	int64_t internal_date; /* seconds since the epoch */
	int64_t save_date;     /* RFC 8514: when it was saved into this folder (APPEND, COPY,
				* MOVE, delivery), seconds since the epoch; never 0 */
	uint64_t email_id;     /* RFC 8474 EMAILID (the same after MOVE and COPY); never 0 */
};

enum flag_op {
	FLAG_OP_REPLACE, /* STORE FLAGS */
	FLAG_OP_ADD,     /* STORE +FLAGS */
	FLAG_OP_REMOVE,  /* STORE -FLAGS */
};

/* Change flags/keywords of the messages UIDS[0..n) (UIDs no longer present are skipped).
 * Each changed message's file is renamed (":2," info) and the change gets a new modseq.
 * ORIGIN (may be NULL) is the view that asked: it is not told about its own change (the
 * protocol answers STORE itself); every other view is. Returns 0 or -errno. When the UID-list
 * records cannot be written (-ENOSPC, -EDQUOT, -EIO...) nothing changes: the renames are
 * undone and nobody is told. A failure of one message's rename part way leaves the messages
 * done before it changed, and announced (-EAGAIN when another program kept renaming a
 * message's file through every retry). */
int mailbox_store_flags(struct mailbox *mbox, struct view *origin, const uint32_t *uids, size_t n,
			enum flag_op op, unsigned flags, uint32_t keywords);

/* Durability off the loop (storage/README.md, "Group commit"): the *_async forms of the
 * changes below do their disk writes, renames and memory updates at once, exactly as the
 * plain forms, but their fsyncs run on libuv's thread pool, batched with every other change
 * committing meanwhile, and CB(err, DATA) is called on the loop — never inside the call —
 * once the change is durable (then answer OK). A returned error is the plain form's error
 * (nothing changed, CB is not called). err < 0 in CB is an fsync that failed (an I/O error):
 * the change may be lost in a crash, answer an error. */
typedef void mailbox_sync_cb(int err, void *data);

/* mailbox_store_flags, then CB once durable. CB NULL: nobody waits (the change is made
 * durable soon; a crash before loses it — POP3's \Seen). Other sessions see the new flags at
 * once (as with Dovecot, a flag change is visible before it is durable). */
int mailbox_store_flags_async(struct mailbox *mbox, struct view *origin, const uint32_t *uids,
			      size_t n, enum flag_op op, unsigned flags, uint32_t keywords,
			      mailbox_sync_cb *cb, void *data);

/* mailbox_expunge in two steps: the records are written now, and once they are durable (off
 * the loop) the files are unlinked, memory and the views updated, then CB. Until then the
 * messages are still there for everyone. */
int mailbox_expunge_async(struct mailbox *mbox, const uint32_t *uids, size_t n, mailbox_sync_cb *cb,
			  void *data);

/* Expunge the messages UIDS[0..n) (missing ones skipped). Every view is owed an EXPUNGE for
 * each message it had been told about. All or nothing: the records are written first; if
 * they cannot be, -errno and no message is touched. */
int mailbox_expunge(struct mailbox *mbox, const uint32_t *uids, size_t n);

/* Copy UIDS[0..n) of SRC into DST (hard link when possible, else a copy), with the same
 * flags and keywords (by name; a keyword DST's full table has no room for is dropped).
 * new_uids_r[i] gets the new UID of uids[i], or 0 if uids[i] was gone (for COPYUID). SRC may
 * equal DST. A copy is a new message: new base name, new UIDL. When DST cannot record the
 * copies, none is made (all new_uids_r are 0, nobody is told) and -errno is returned. */
int mailbox_copy(struct mailbox *src, const uint32_t *uids, size_t n, struct mailbox *dst,
		 uint32_t *new_uids_r);
/* Move (RFC 6851): copy, then expunge from SRC. SRC != DST. */
int mailbox_move(struct mailbox *src, const uint32_t *uids, size_t n, struct mailbox *dst,
		 uint32_t *new_uids_r);

/* Append, streamed: begin, write any number of chunks, then finish (durable, UID assigned)
 * or abort. Bytes are stored exactly as given (CRLF or LF). internal_date 0 means now. The
 * append holds a reference on MBOX. */
int mailbox_append_begin(struct mailbox *mbox, unsigned flags, uint32_t keywords,
			 int64_t internal_date, struct mail_append **append_r);
/* Write one chunk to the temporary file. -errno on a write error (then abort). */
int mail_append_write(struct mail_append *append, const void *data, size_t len);
/* fsync, rename into cur/ with its flags, fsync the directory, record the UID durably,
 * announce. *uid_r gets the UID. Frees the append whatever the result (on failure the
 * temporary file is removed). */
int mail_append_finish(struct mail_append **append_p, uint32_t *uid_r);
/* mail_append_finish with the fsyncs off the loop: the file is fsynced on the thread pool,
 * then (on the loop) renamed and recorded, the record synced on the pool, the views told, and
 * CB(err, uid, DATA) called from the loop. Takes the append whatever the result; a returned
 * error means CB will not be called. */
typedef void mail_append_cb(int err, uint32_t uid, void *data);
int mail_append_finish_async(struct mail_append **append_p, mail_append_cb *cb, void *data);
/* Drop the message; removes the temporary file. */
void mail_append_abort(struct mail_append **append_p);
/* The size the message will have as RFC822.SIZE (its CRLF size), from the bytes written so
 * far: what finish checks against the quota. */
uint64_t mail_append_size(const struct mail_append *append);

/* ---------------------------------------------------------------------------------------- */
/* Views                                                                                     */

enum view_kind {
	VIEW_IMAP,
	VIEW_POP3,
};

/* Called from the loop (never from inside a storage call) when the view has something owed:
 * IDLE pushes at once, other states wait for the next command. Not called again until
 * view_sync() has run. */
typedef void view_notify_cb(struct view *view, void *data);

/* A new view of MBOX (takes a reference on it).
 * VIEW_IMAP: sees every message present now; claims the messages that are \Recent.
 * VIEW_POP3: a snapshot of the messages present now, except those hidden by
 *   $POP3Deleted; numbers stay fixed for the view's life. Only one POP3 view per mailbox at
 *   a time: -EBUSY otherwise (the protocol answers -ERR [IN-USE]).
 * NOTIFY may be NULL. */
int view_new(struct mailbox *mbox, enum view_kind kind, view_notify_cb *notify, void *data,
	     struct view **view_r);
void view_free(struct view **view_p);
struct mailbox *view_mailbox(const struct view *view);

/* Messages the view shows (EXISTS as last announced; the POP3 snapshot size). */
uint32_t view_count(const struct view *view);
/* Messages the view shows as \Recent. */
uint32_t view_recent_count(const struct view *view);
/* UID of message SEQ (1-based). -ERANGE when seq is 0 or > view_count. */
int view_seq_to_uid(const struct view *view, uint32_t seq, uint32_t *uid_r);
/* Sequence number of UID. -ENOENT when the view does not show it. */
int view_uid_to_seq(const struct view *view, uint32_t uid, uint32_t *seq_r);
/* The first sequence number whose UID is >= uid (view_count + 1 if none): for UID ranges. */
uint32_t view_uid_lower_bound(const struct view *view, uint32_t uid);

/* Data of message SEQ. -ERANGE for a bad seq; -ENOENT when the message has been expunged
 * but the view has not announced it yet (info_r->uid is still set): IMAP answers FETCH of
 * it with NO, POP3 with -ERR. */
int view_msg_info(const struct view *view, uint32_t seq, struct mail_info *info_r);
/* POP3 UIDL of SEQ into buf (>= MAIL_UIDL_MAX + 1 bytes). Same errors. */
int view_msg_uidl(const struct view *view, uint32_t seq, char *buf, size_t size);
/* The back-end key of SEQ (Maildir base name) into buf: the cache key for parsed data. */
int view_msg_key(const struct view *view, uint32_t seq, char *buf, size_t size);
/* Open message SEQ for reading. -ENOENT if gone. */
int view_msg_open(const struct view *view, uint32_t seq, struct mail_stream **stream_r);

/* Announcements owed to the view, delivered by view_sync in this order: expunge (one per
 * message, with the sequence number valid at that moment, so they can be sent as they come),
 * exists (new count, when it grew), recent (new \Recent count, with exists), flags (one per
 * message whose flags/keywords changed, by current seq). Any callback may be NULL. */
struct view_sync_handler {
	void (*expunge)(void *ctx, uint32_t seq, uint32_t uid);
	void (*exists)(void *ctx, uint32_t count);
	void (*recent)(void *ctx, uint32_t count);
	void (*flags)(void *ctx, uint32_t seq, const struct mail_info *info);
};
/* Deliver what is owed and bring the view up to date with its mailbox. IMAP calls it only
 * where RFC 9051 allows EXPUNGE (not during FETCH/STORE/SEARCH; UID variants allow all but
 * EXPUNGE: use VIEW_SYNC_NO_EXPUNGE there). A POP3 view has nothing to sync. */
enum view_sync_flags {
	VIEW_SYNC_NO_EXPUNGE = 1 << 0, /* keep expunges owed (numbers stay stable) */
};
int view_sync(struct view *view, unsigned sync_flags, const struct view_sync_handler *handler,
	      void *ctx);
/* True when view_sync has something to deliver. */
bool view_has_changes(const struct view *view);

/* Expunge every message of the view that has \Deleted (IMAP EXPUNGE/CLOSE); with uids
 * non-NULL only those among UIDS[0..n) (UID EXPUNGE). */
int view_expunge_deleted(struct view *view, const uint32_t *uids, size_t n);
/* The same through mailbox_expunge_async: CB once durable and applied (the view's owed
 * EXPUNGEs then include them). */
int view_expunge_deleted_async(struct view *view, const uint32_t *uids, size_t n,
			       mailbox_sync_cb *cb, void *data);

/* POP3 (VIEW_POP3 only, -EINVAL otherwise). */
enum pop3_delete_policy {
	POP3_DELETE_EXPUNGE, /* committed deletes expunge the message */
	POP3_DELETE_HIDE,    /* committed deletes add $POP3Deleted: gone for POP3, kept for IMAP */
};
/* DELE: mark SEQ deleted in this session. -ERANGE bad seq, -EALREADY already marked,
 * -ENOENT expunged meanwhile. */
int view_pop3_delete(struct view *view, uint32_t seq);
bool view_pop3_is_deleted(const struct view *view, uint32_t seq);
/* RSET: drop every mark. */
void view_pop3_reset(struct view *view);
/* QUIT: apply the marks through the mailbox with POLICY (messages expunged meanwhile are
 * skipped). The marks are cleared. */
int view_pop3_commit(struct view *view, enum pop3_delete_policy policy);
/* The same through mailbox_expunge_async / mailbox_store_flags_async: CB once durable (QUIT
 * answers +OK then). The marks are cleared at once. */
int view_pop3_commit_async(struct view *view, enum pop3_delete_policy policy, mailbox_sync_cb *cb,
			   void *data);

/* POP3 retention (config pop3_expire_days, advertised as RFC 2449 "EXPIRE n"). The store
 * keeps, per folder, when each message was first downloaded whole over POP3; only such a
 * message can expire. The record is keyed by UID under the folder's UIDVALIDITY: when the
 * UID list is rebuilt it is discarded, and nothing expires until messages are downloaded
 * again (mail is kept rather than expired wrongly). Times are seconds since the epoch. */

/* Record that UIDS[0..n) were downloaded whole (RETR; never TOP) at NOW. Only the first
 * download counts: a UID already recorded keeps its time; UIDs no longer present are
 * skipped. Durable when it returns (one append + fdatasync per call: batch the calls). On
 * failure none of this call's UIDs is recorded. */
int mailbox_pop3_mark_retrieved(struct mailbox *mbox, const uint32_t *uids, size_t n, int64_t now);
/* When UID was first downloaded over POP3. -ENOENT if never (or the message is gone, or the
 * record was lost with a rebuilt UID list). */
int mailbox_pop3_retrieved_time(struct mailbox *mbox, uint32_t uid, int64_t *time_r);
/* Apply retention before a POP3 session takes its snapshot: every message of the POP3
 * maildrop (not hidden by $POP3Deleted) first downloaded more than DAYS days before NOW
 * (retrieved at t < now - days * 86400) goes under POLICY, as a committed DELE would:
 * POP3_DELETE_EXPUNGE expunges it (IMAP views are told EXPUNGE), POP3_DELETE_HIDE adds
 * $POP3Deleted (gone from POP3, kept for IMAP). A message never downloaded is never touched,
 * whatever its age. *n_r gets the number expired (also when an error stopped part way).
 * DAYS 0 does nothing. -EBUSY while a POP3 view of MBOX exists. */
int mailbox_pop3_expire(struct mailbox *mbox, unsigned days, int64_t now,
			enum pop3_delete_policy policy, uint32_t *n_r);

/* ---------------------------------------------------------------------------------------- */
/* Reading a message                                                                         */

/* The bytes of one message with every bare LF served as CRLF, bounded memory (no more than
 * one read chunk). The size is exact before the first byte is read. */
uint64_t mail_stream_size(const struct mail_stream *stream);
/* Read up to len bytes of the CRLF form into buf. Returns bytes read, 0 at the end, or
 * -errno. */
ssize_t mail_stream_read(struct mail_stream *stream, void *buf, size_t len);
/* Position at OFFSET of the CRLF form (partial FETCH). -EINVAL past the end. */
int mail_stream_seek(struct mail_stream *stream, uint64_t offset);
/* Zero-copy path: the open file and whether it needs LF->CRLF conversion. If false, the
 * file's bytes are the CRLF form and may be sent with sendfile/read directly. The fd belongs
 * to the stream. */
int mail_stream_fd(const struct mail_stream *stream, bool *needs_crlf_r);
void mail_stream_free(struct mail_stream **stream_p);

/* ---------------------------------------------------------------------------------------- */
/* Per-folder cache of parsed data (for the MIME parser's serialized results)                */

/* Cached blob of message UID, keyed on disk by the Maildir base name. -ENOENT if none. The
 * pointer is valid until the next storage call on this mailbox. The cache checks each
 * record's framing (base name, length, first and last bytes); checking the whole blob is its
 * owner's job (the MIME parser's blob carries a CRC-32). */
int mailbox_cache_get(struct mailbox *mbox, uint32_t uid, const void **data_r, size_t *len_r);
/* Store BLOB (at most 1 MiB) for UID; written to the folder's cache file (not fsynced: a
 * lost or damaged cache is rebuilt). -ENOENT if the message is gone. */
int mailbox_cache_put(struct mailbox *mbox, uint32_t uid, const void *data, size_t len);

struct msg_parsed; /* msg_parse.h */
/* The parsed structure of message SEQ (ENVELOPE, BODYSTRUCTURE, sections: msg_parse.h): taken
 * from the folder's cache when a valid blob is there, else parsed from the file and cached
 * (so a restart does not parse again). The caller owns the result: msg_parsed_free. -ENOENT
 * when the message is gone, -ERANGE for a bad seq. */
int view_msg_parsed(const struct view *view, uint32_t seq, struct msg_parsed **msg_r);

#endif
