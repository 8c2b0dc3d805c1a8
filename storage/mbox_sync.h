/* mbox_sync — the mbox back-end's insides shared by mbox.c and mbox_sync.c (storage room,
 * mbox back-end only): the per-message table, and the sync that writes our changes into the
 * file on the thread pool (storage/README.md, "mbox": rewrites and crash safety).
 */
#ifndef MK_MBOX_SYNC_H
#define MK_MBOX_SYNC_H

#include "mailbox_private.h"
#include "storage_util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <uv.h>

/* Where a message is. */
enum mmsg_state {
	MM_FILE = 1,  /* in the mbox file at from_off */
	MM_GONE = 2,  /* expunged by us ('X' record), still in the file until the next sync */
	MM_SPOOL = 3, /* appended by us, in spool/UID until the next sync */
};

/* The identity of the file a set of offsets describes. */
struct mbox_sig {
	uint64_t ino, dev, size;
	int64_t mtime_sec, mtime_nsec;
};
void mbox_sig_from_stat(const struct stat *st, struct mbox_sig *sig);

/* One message of the back-end, by uid (live ones mirror the core's records). */
struct mmsg {
	uint32_t uid;
	uint8_t state;      /* enum mmsg_state */
	uint8_t file_flags; /* the flags the file's Status/X-Status say */
	bool file_ours;     /* the file carries our X-UID and X-UIDL for it */
	uint32_t file_kw;   /* the keywords its X-Keywords says (mask) */
	uint64_t from_off, hdr_off, end_off;
	uint64_t hash;   /* content hash of the served bytes */
	char *gone_uidl; /* MM_GONE: its UIDL (for the UID list's record) */
};

struct mbox_be {
	char file[4096]; /* the mbox file */
	int fd;          /* open on it (-1: none yet) */
	int lock_fd;     /* the folder lock (flock, ours) */
	int log_fd;      /* the UID list, for appends */
	bool mboxrd;
	unsigned lock_timeout_ms;
	struct sbuf pending;
	bool append_only;
	bool list_torn;
	size_t n_log;
	struct mmsg *msgs; /* by uid */
	size_t n, cap;
	struct mbox_sig sig; /* the file as the offsets describe it */
	/* watching and timers */
	uv_fs_event_t ev;
	uv_timer_t timer;
	uint64_t timer_due;
	bool watching;
	bool refresh_due;
	bool sync_due;
	/* sync */
	bool sync_running;
	pthread_mutex_t sync_mu;   /* guards a pool sync's started/finished marks (held for a few
				    * instructions, or by a refresh that reads the file before
				    * the sync it keeps from starting) */
	pthread_cond_t sync_cv;    /* a pool sync's worker finished (under sync_mu; monotonic) */
	struct sync_job *sync_job; /* the sync queued to the pool, until sync_done */
	bool sync_inline;          /* a sync runs on the loop right now */
	bool in_commit;            /* inside mb_commit (a change of the core's is under way) */
	bool freeing;
	bool in_refresh;     /* a refresh is under way (it may hold the read lock): no sync now */
	bool fine_mtime;     /* the file's mtime moves at every change after a stat (multigrain
			      * timestamps): a recent mtime needs no second look */
	bool refresh_failed; /* the last refresh could not record what it found (logged once) */
	bool refresh_after_sync;
	unsigned sync_failures;
	/* readers vs. the rewrite: while backup_fd >= 0, offsets >= split are read from it */
	pthread_rwlock_t rw;
	int backup_fd;
	uint64_t split;
	uint64_t split_off; /* where offset SPLIT is in the backup */
	/* cache */
	int cache_fd;
	char *cache_map;
	size_t cache_map_len;
	uint64_t cache_end;
};

/* What a load hands to attach. */
struct mb_load {
	char file[4096];
	int fd;
	int lock_fd;
	struct stat list_st;
	struct mbox_sig sig;
	struct mmsg *msgs;
	size_t n;
	bool sync_wanted;
	bool ours; /* a rewrite of ours was finished by mbox_sync_recover: what the file says
		    * and the index does not is ours, not another program's edit */
	char *cache_map;
	size_t cache_map_len;
	uint64_t cache_end;
	size_t cache_garbage;
};

struct mmsg *mbox_msg_find(struct mbox_be *be, uint32_t uid);
void mbox_msg_remove(struct mbox_be *be, uint32_t uid);
int mbox_msg_cmp(const void *a, const void *b);
int mbox_load_ent_cmp(const void *a, const void *b);
int mbox_index_write(const char *state, const struct mbox_sig *sig, const struct mmsg *msgs,
		     size_t n);
int mbox_list_build(struct sbuf *b, uint32_t uidvalidity, uint32_t uidnext, uint64_t highest,
		    const struct load_ent *ents, size_t n_ents, const char *pool,
		    const struct mmsg *msgs, size_t n_msgs);
void mbox_refresh_later(struct mailbox *mbox, unsigned ms);

/* A sync rewriting at most this much (file tail + spooled appends) runs on the loop when the
 * locks are free at once; a bigger one, or one that would have to wait, on the thread pool. */
#define MBOX_SYNC_INLINE_MAX (1u << 20)
/* Sync the file with our state after MS (coalesced): mbox_sync_start runs it. */
void mbox_sync_schedule(struct mailbox *mbox, unsigned ms);
/* Start the sync: on the loop when small and the locks are free, else on the thread pool
 * (with INLINE_ONLY: nothing then, the scheduled timer does it). */
void mbox_sync_start(struct mailbox *mbox, bool inline_only);
/* Before a refresh reads the file (loop). 0: no pool sync, or it is done (its result taken
 * in first: a scan with the old offsets would number our own appends again). 1: one is
 * queued and has not begun: it is kept from beginning (it would take the file's locks) until
 * mbox_sync_ungate. -1: one is running: it has checked that the file holds nothing we have
 * not seen (or that did not happen within MS: until such a wait runs out once, it is waited
 * for, and woken if it naps between tries for the locks an MTA or mutt just released): read
 * the file when it ends. */
int mbox_sync_gate(struct mailbox *mbox, unsigned ms);
/* STALE: the refresh took in changes of the file: the sync's plan is made again. */
void mbox_sync_ungate(struct mailbox *mbox, bool stale);
/* Undo a rewrite a crash interrupted (the backup in STATE), under the write locks (taken
 * here, waiting at most TIMEOUT_MS, unless LOCKED_ALREADY). 0 when there was none or it
 * was undone; 1 when it was finished instead (its new tail was whole: also a rewrite that
 * ended but whose index sync_apply had not written yet). */
int mbox_sync_recover(const char *state, const char *file, int fd, unsigned timeout_ms,
		      bool locked_already);
/* Test hook: called on the loop after every sync with its result (0: the file holds our
 * state as of the sync's start; -EBUSY: locks not had in time; 1: changed behind us). */
extern void (*mbox_sync_done_hook)(struct mailbox *mbox, int result);
/* Test hook: called with 1, 2, 3, 4 at the crash points of a rewrite (mbox_sync.c), and 5
 * once it is done and its result not taken in yet. */
extern void (*mbox_sync_crash_hook)(int point);
/* Convert a message as a client sent it (RAW_FD, from offset 0) to its stored form in OUT_FD:
 * CRLF -> LF, our hidden header names dropped, From_ lines quoted (mboxo: "From " ->
 * ">From "; mboxrd: one more '>' on ">*From "). A missing final LF stays missing (the LF
 * the sync writes after every message is the separator): the message round-trips byte for
 * byte. Returns the served CRLF size and the content and header hashes (mbox_scan.h). */
int mbox_spool_convert(int raw_fd, int out_fd, bool mboxrd, uint64_t *size_r, uint64_t *hash_r,
		       uint64_t *hdr_hash_r);

#endif
