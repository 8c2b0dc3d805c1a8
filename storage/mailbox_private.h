/* mailbox_private — the mailbox object's insides and the back-end interface (storage room
 * only; protocols use storage.h).
 *
 * The core (mailbox.c, view.c) owns the in-memory model: the message array in UID order, the
 * string pool holding back-end keys, the key index, keywords, views and announcements. A
 * back-end (maildir.c, mbox.c) owns the disk: loading, persisting
 * UIDs, renaming/unlinking/linking files, opening message bytes, watching for outside
 * changes. The core never touches a file; a back-end never touches a view.
 *
 * Order of every change (DESIGN.md): back-end writes and makes it durable, then the core
 * updates memory (mailbox_rec_*), then announces (mailbox_announce_*).
 */
#ifndef MK_MAILBOX_PRIVATE_H
#define MK_MAILBOX_PRIVATE_H

#include "storage.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* Back-end bits kept per message (mail_rec.bflags). */
enum mail_rec_bflags {
	MREC_IN_NEW = 1 << 0, /* Maildir: file is in new/ (no info part) */
	MREC_PASSED = 1 << 1, /* Maildir: 'P' (forwarded) kept through renames */
	MREC_SEEN_SCAN = 1 << 2,
};

/* One message, 64 bytes; its key (Maildir: the current file name) lives in mbox->pool. */
struct mail_rec {
	uint32_t uid;
	uint32_t keywords;
	uint64_t modseq;
	uint64_t size; /* CRLF size */
	int64_t idate;
	uint64_t emailid;   /* RFC 8474 EMAILID: kept by MOVE and COPY; 0: derived from the key */
	uint32_t savedate;  /* RFC 8514: seconds since the epoch it was saved into this folder;
			     * 0: unknown, the internal date is used */
	uint32_t key_off;   /* key in the pool */
	uint16_t key_len;   /* whole key (Maildir: base name + ":2,info") */
	uint16_t base_len;  /* stable part (Maildir base name): key[0..base_len) */
	uint32_t cache_off; /* cached blob offset in the cache file; cache_len 0 = none */
	uint32_t cache_len;
	uint8_t flags;  /* enum mail_flags, MAIL_FLAGS_SETTABLE only */
	uint8_t bflags; /* enum mail_rec_bflags */
};

/* A message found on disk during a load or a refresh. */
struct load_ent {
	uint32_t uid; /* 0 until known */
	uint32_t keywords;
	uint64_t modseq;
	uint64_t size;
	int64_t idate;
	int64_t savedate; /* as mail_rec; set when numbered or read from the UID list */
	uint64_t emailid;
	uint32_t key_off; /* in load->pool */
	uint16_t key_len;
	uint16_t base_len;
	uint32_t cache_off;
	uint32_t cache_len;
	uint8_t flags;
	uint8_t bflags;
	uint8_t list_flags; /* flags and keywords the UID list has (when known) */
	uint32_t list_keywords;
	uint64_t list_modseq;
	bool known;        /* found in the UID list */
	bool flags_differ; /* the file's flags differ from the UID list's (changed outside) */
};

/* The result of a load, built without touching the mailbox (may run on a worker thread). */
struct mailbox_load {
	char *path;                /* folder directory (mbox: the folder's state directory) */
	const struct store *store; /* the store (its settings are immutable: thread-safe) */
	const char *name;          /* normalized folder name, valid during load */
	int err;
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highest_modseq;
	bool list_rebuilt; /* the UID list was missing or torn */
	bool list_dirty;   /* the UID list should be compacted after attach */
	struct load_ent *ents;
	size_t n_ents, cap_ents;
	char *pool;
	size_t pool_len, pool_cap;
	char *keywords[MAILBOX_MAX_KEYWORDS];
	unsigned n_keywords;
	uint32_t first_recent_uid; /* first UID numbered by this load */
	bool on_loop;              /* loaded by mailbox_open: keep the folder lock for attach */
	bool wait_lock;            /* another load of this folder is running: wait for its lock */
	void *backend;             /* back-end private load data */
	void (*backend_free)(void *backend);
};

struct pop3_ret;
struct pop3_ret_file;

struct mailbox_backend_ops {
	const char *name;
	/* Read everything needed to build the mailbox: thread-safe, touches only LD. */
	int (*load)(struct mailbox_load *ld);
	/* On the loop: take LD into MBOX (assign and persist UIDs of new messages, start
	 * watching). */
	int (*attach)(struct mailbox *mbox, struct mailbox_load *ld);
	/* Look for outside changes; with FORCE skip the cheap "nothing changed" check. */
	int (*refresh)(struct mailbox *mbox, bool force);
	/* Give REC new flags/keywords on disk; REC->modseq is the new modseq. Updates the key
	 * through mailbox_rec_set_key. Made durable by commit. */
	int (*set_flags)(struct mailbox *mbox, struct mail_rec *rec, unsigned flags,
			 uint32_t keywords);
	/* Expunge REC, step 1: queue the record saying it is expunged (nothing on disk changes
	 * yet). After a commit that wrote it, unlink removes the file; a record written whose
	 * file is still there (a crash between the two) is completed at the next load. */
	int (*expunge)(struct mailbox *mbox, struct mail_rec *rec);
	/* Expunge REC, step 2: remove its message from disk (0 when already gone). */
	int (*unlink)(struct mailbox *mbox, struct mail_rec *rec);
	/* Make the changes since the last commit durable (directory fsyncs, UID list). On a
	 * failure the queued records stay queued: the caller undoes its change and drops them
	 * (discard), or a later commit writes them. */
	int (*commit)(struct mailbox *mbox);
	/* The queued records so far, and dropping those queued after MARK (their change was
	 * undone or never made). */
	size_t (*pending_mark)(struct mailbox *mbox);
	void (*discard)(struct mailbox *mbox, size_t mark);
	/* Append: create the temporary file; write; finish (durable, adds the record). */
	int (*append_begin)(struct mailbox *mbox, struct mail_append *a);
	int (*append_write)(struct mail_append *a, const void *data, size_t len);
	int (*append_finish)(struct mail_append *a, uint32_t *uid_r);
	void (*append_abort)(struct mail_append *a);
	/* Copy SREC of SRC into DST as a new message (durable after DST's commit), saved now
	 * (savedate) and with SREC's emailid (RFC 8474: kept by COPY and MOVE). With
	 * MOVE the source file may be moved instead (then SRC's record is expunged by the core
	 * without touching disk). */
	int (*copy)(struct mailbox *src, struct mail_rec *srec, struct mailbox *dst, unsigned flags,
		    uint32_t keywords, bool move, uint32_t *uid_r);
	/* Undo a copy whose record in DST could not be written: DREC's file goes (with MOVE it
	 * is renamed back to where SRC's record SUID has it). The core drops DREC. */
	int (*copy_undo)(struct mailbox *src, uint32_t suid, struct mailbox *dst,
			 struct mail_rec *drec, bool move);
	/* Open REC's bytes: fd and whether LF must become CRLF. */
	int (*open_msg)(struct mailbox *mbox, const struct mail_rec *rec, int *fd_r,
			bool *needs_crlf_r);
	/* Persist the keyword table. */
	int (*save_keywords)(struct mailbox *mbox);
	/* Cache file: append a blob for REC (sets cache_off/len), and read it back. */
	int (*cache_put)(struct mailbox *mbox, struct mail_rec *rec, const void *data, size_t len);
	int (*cache_get)(struct mailbox *mbox, const struct mail_rec *rec, const void **data_r,
			 size_t *len_r);
	/* The folder's POP3 retrieval record (pop3_retrieved.h) for mbox->uidvalidity: read
	 * it; write it whole with ENTS (atomic), or with APPEND add ENTS at its end (durable
	 * before returning, or soon: a lost record only delays an expiry, so maildir hands
	 * the append's fdatasync to mailbox_sync_defer). */
	int (*pop3_ret_read)(struct mailbox *mbox, struct pop3_ret_file *f);
	int (*pop3_ret_write)(struct mailbox *mbox, const struct pop3_ret *ents, size_t n,
			      bool append);
	/* Stop watching and free back-end data (the uv handles are closed by the core). */
	void (*free)(struct mailbox *mbox);

	/* Optional (NULL: the core calls commit, and the loop waits for the disk): commit
	 * without waiting. Does what commit does, but hands every fsync/fdatasync it would wait
	 * for to mailbox_sync_defer: the records are written (a failing write fails here, with
	 * the same rules as commit), durable once mailbox_sync_wait says so. */
	int (*commit_nowait)(struct mailbox *mbox);
	/* Optional, both or neither (NULL: append_finish): append_finish in two steps around
	 * the message file's fsync. append_prepare, on the loop, makes the file ready and hands
	 * its fsync to mailbox_sync_defer; append_finish_nowait, once that is durable, does the
	 * rest of append_finish (rename, record) with commit_nowait. After a failure of either
	 * the core calls append_abort. */
	int (*append_prepare)(struct mail_append *a);
	int (*append_finish_nowait)(struct mail_append *a, uint32_t *uid_r);
	/* Optional (NULL: the core calls unlink on the loop): expunge step 2 off the loop. The
	 * path of REC's file into BUF, taking the coming removal as the store's own change (as
	 * unlink does); the core unlinks it on the thread pool and calls unlink on the loop for
	 * a file not found there (moved meanwhile: unlink finds it). While mbox->unlinking is
	 * non-zero, refresh must not take a file missing from the directory as an expunge. */
	int (*unlink_path)(struct mailbox *mbox, struct mail_rec *rec, char *buf, size_t size);
};

struct view;

struct mailbox {
	unsigned refs;
	struct store *store;
	uv_loop_t *loop;
	char *name; /* wire name */
	char *path; /* folder directory */
	const struct mailbox_backend_ops *ops;
	void *backend;
	void *backend_mem; /* back-end data freed with the mailbox (after its handles close) */
	unsigned special_use;
	bool gone; /* folder deleted: operations fail with -ENOENT */

	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highest_modseq;
	uint32_t first_recent_uid; /* messages with uid >= this are \Recent to the next claimer */

	struct mail_rec *recs; /* UID order */
	uint32_t n_recs, cap_recs;
	char *pool; /* keys */
	size_t pool_len, pool_cap, pool_garbage;

	uint32_t *index; /* open addressing: key hash -> uid (0 = empty) */
	uint32_t index_cap;

	char *keywords[MAILBOX_MAX_KEYWORDS];
	unsigned n_keywords;

	struct view *views;      /* linked list */
	unsigned long views_gen; /* bumped whenever a view joins or leaves the list */
	struct view *pop3_view;
	uv_timer_t notify_timer;
	bool notify_armed;
	unsigned handles_open; /* uv handles not yet closed (free after the last close) */

	unsigned long rescans; /* directory re-reads so far (statistics for tests and the bench) */
	unsigned unlinking; /* expunged files being unlinked on the thread pool (refresh waits) */

	/* POP3 retrieval times (mailbox_pop3.c), read from the back-end on first use: ascending
	 * uid, the earliest RETR of each message. */
	struct pop3_ret *pop3_ret;
	size_t n_pop3_ret;
	size_t pop3_ret_dead;          /* of those, records of messages expunged since */
	size_t pop3_ret_lines;         /* record lines in the file (compaction) */
	uint32_t pop3_ret_uidvalidity; /* UIDVALIDITY it was read for; 0 = not read yet */
	bool pop3_ret_rewrite;         /* the file must be rewritten before the next append */

	/* QRESYNC (mailbox_expunged.c): expunged UIDs with the modseq of their expunge, in
	 * expunge order (modseq never decreases), at most MAILBOX_EXPUNGED_MAX. Every expunge
	 * with a modseq > expunged_horizon is in the list. */
	struct mailbox_expunged *expunged;
	size_t n_expunged, cap_expunged;
	uint64_t expunged_horizon;

	/* Quota (quota.c): the sum of the records' sizes, kept by mailbox_rec_*; while
	 * quota_counted (from register to unregister) the records are in the store's usage. */
	uint64_t quota_bytes;
	bool quota_counted;

	struct mailbox *next; /* the store's open list */
};

/* Store helpers (store.c). */
void store_mailbox_register(struct store *store, struct mailbox *mbox);
void store_mailbox_unregister(struct store *store, struct mailbox *mbox);
struct mailbox *store_mailbox_find(struct store *store, const char *name);
uv_loop_t *store_loop(const struct store *store);
/* The back-end of the store's mail format (maildir_backend_ops or mbox_backend_ops). */
const struct mailbox_backend_ops *store_backend(const struct store *store);
/* Directory of folder NAME (normalized). */
int store_folder_path(const struct store *store, const char *name, char *buf, size_t size);

/* Quota accounting (quota.c, storage/README.md "Quota"): one user's usage over every folder
 * = the registered mailboxes' records + the last counts of the folders not open. */
struct quota_folder;
struct quota_waiter;
struct store_quota {
	char *user; /* for the [user NAME] lookup; NULL: store_open_path (the [server] limits) */
	unsigned long generation;     /* of the config the limits came from; 0 = none yet */
	uint64_t limit_bytes;         /* 0 = unlimited */
	uint64_t limit_messages;      /* 0 = unlimited */
	bool known;                   /* every folder has been counted */
	bool counting;                /* a background count runs (quota.c) */
	uint64_t bytes, messages;     /* the usage */
	struct quota_folder *folders; /* folders not open: their last counts */
	size_t n_folders, cap_folders;
	struct quota_waiter *waiters; /* store_quota_wait: called when the count ends */
	size_t n_waiters, cap_waiters;
};
struct store_quota *store_get_quota(struct store *store);
/* A mailbox was registered (its records join the usage, replacing the folder's last counts)
 * or unregistered (its counts are remembered for the folder). */
void quota_mailbox_attach(struct mailbox *mbox);
void quota_mailbox_detach(struct mailbox *mbox);
/* Records were added (> 0) or removed (< 0): MESSAGES and BYTES (CRLF sizes). */
void quota_note(struct mailbox *mbox, int64_t messages, int64_t bytes);
/* Folder NAME is gone (deleted), renamed, or every folder must be counted again. */
void quota_folder_forget(struct store *store, const char *name);
void quota_folder_rename(struct store *store, const char *from, const char *to);
void quota_forget_all(struct store *store);
/* USER for the [user NAME] lookup (set once), and the store's quota freed. */
int store_quota_set_user(struct store *store, const char *user);
void quota_free(struct store_quota *q);

/* Core helpers for back-ends (mailbox.c). */
const char *mailbox_rec_key(const struct mailbox *mbox, const struct mail_rec *rec);
int mailbox_rec_set_key(struct mailbox *mbox, struct mail_rec *rec, const char *key, size_t key_len,
			size_t base_len);
struct mail_rec *mailbox_rec_find(struct mailbox *mbox, uint32_t uid);
struct mail_rec *mailbox_rec_find_base(struct mailbox *mbox, const char *base, size_t len);
/* Append a record with a UID above every other (key copied into the pool, indexed). The
 * array may move: earlier mail_rec pointers become invalid. */
int mailbox_rec_add(struct mailbox *mbox, const struct mail_rec *rec, const char *key);
/* Attach: take LD's UIDVALIDITY, keywords (moved out of LD) and entries (in UID order) into
 * MBOX's records, then its UIDNEXT, HIGHESTMODSEQ and first \Recent UID. For back-ends'
 * attach. */
int mailbox_take_load(struct mailbox *mbox, struct mailbox_load *ld);
/* Drop the records with uid >= UID from memory without telling anyone (they were added by a
 * change that could not be made durable, and never announced); UIDNEXT becomes UID. */
void mailbox_rec_drop_from(struct mailbox *mbox, uint32_t uid);
/* Remove the record of UID from memory and owe its EXPUNGE to the views. */
void mailbox_rec_remove(struct mailbox *mbox, uint32_t uid);
/* mailbox_expunged.c: remember that UID was expunged with MODSEQ (VANISHED (EARLIER)). */
void mailbox_expunged_note(struct mailbox *mbox, uint32_t uid, uint64_t modseq);
/* mailbox_pop3.c: UID's message is gone (its retrieval record becomes garbage). */
void mailbox_pop3_on_expunge(struct mailbox *mbox, uint32_t uid);
/* Announce: a flag change of UID (ORIGIN not told), arrivals (UIDNEXT moved). */
void mailbox_announce_flags(struct mailbox *mbox, struct view *origin, uint32_t uid);
void mailbox_announce_arrivals(struct mailbox *mbox);
/* The EMAILID a message gets when nothing better is known (appended, delivered from outside,
 * or read from a list without one): a 64-bit hash of its stable key (Maildir: the base name,
 * unique in the store), never 0. A COPY or MOVE keeps the source's instead. */
uint64_t mailbox_emailid_from_base(const char *base, size_t len);
/* Next modseq (highest_modseq + 1, stored). */
uint64_t mailbox_next_modseq(struct mailbox *mbox);
/* mailbox_sync.c, group commit. FD (owned from now on) must reach the disk (DATASYNC:
 * fdatasync, else fsync) before the next mailbox_sync_wait callback; it is synced on the
 * thread pool with everything else deferred meanwhile. Without memory it is synced here. */
int mailbox_sync_defer(struct mailbox *mbox, int fd, bool datasync);
/* Call CB(err, DATA) on the loop, never inside this call, once everything deferred so far is
 * durable (err: the first failed fsync of its batch). -ENOMEM: CB will not be called. */
int mailbox_sync_wait(struct mailbox *mbox, mailbox_sync_cb *cb, void *data);
/* Start syncing what was deferred without a waiter (nobody waits, but it must get done). */
void mailbox_sync_kick(struct mailbox *mbox);
/* Free a load result. */
void mailbox_load_free(struct mailbox_load *ld);
int mailbox_load_add(struct mailbox_load *ld, const struct load_ent *ent, const char *key);
/* The record an entry describes (every field; the caller numbers or masks what it must). */
void mailbox_rec_from_ent(const struct load_ent *e, struct mail_rec *rec);
/* Build an empty mailbox object for folder NAME at PATH (no disk access). */
int mailbox_new(struct store *store, const char *name, const char *path, struct mailbox **mbox_r);
/* Views (view.c), called by the core. */
void view_on_expunge(struct view *view, uint32_t uid, uint32_t idx);
void view_on_flags(struct view *view, uint32_t uid);
bool view_mark_dirty(struct view *view);
bool view_wants_notify(const struct view *view);
void view_call_notify(struct view *view);
struct view *view_next(const struct view *view);
/* Back-ends owning uv handles: count one more handle to close before the mailbox is freed,
 * and report its close. */
void mailbox_handle_opened(struct mailbox *mbox);
void mailbox_handle_closed(struct mailbox *mbox);
/* Index of the first record with uid >= UID. */
uint32_t mailbox_rec_lower_bound(const struct mailbox *mbox, uint32_t uid);

/* The Maildir back-end. */
extern const struct mailbox_backend_ops maildir_backend_ops;

struct mail_append {
	struct mailbox *mbox;
	unsigned flags;
	uint32_t keywords;
	int64_t idate;
	int fd;
	uint64_t size;
	uint64_t crlf_size;
	bool last_cr;
	char tmp_path[4096];
	/* Kept by the core (mail_append_write), whatever the back-end does: the CRLF size of
	 * the bytes given so far (every bare LF counted as CRLF), which the quota is checked
	 * with before append_finish. */
	uint64_t given_crlf_size;
	bool given_last_cr;
};

/* A mail_stream over an open fd. */
int mail_stream_new_fd(int fd, uint64_t crlf_size, bool needs_crlf, struct mail_stream **stream_r);

#endif
