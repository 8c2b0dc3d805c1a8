/* pop3_retrieved — the per-folder record of when POP3 first downloaded each message whole
 * (RETR; TOP never counts), which the POP3 retention (pop3_expire_days, RFC 2449 EXPIRE)
 * reads. Internal to the storage room; protocols use mailbox_pop3_*() in storage.h.
 *
 * File `mailkeep-pop3-retrieved` in the folder directory, text, every line checksummed as in
 * the UID list ("HHHHHHHH payload\n", HHHHHHHH = FNV-1a 32 of the payload in hex):
 *
 *   R 1 <uidvalidity>     header (first line): the UIDs below belong to this UIDVALIDITY
 *   <uid> <time>          message UID was first retrieved at TIME (seconds since the epoch)
 *
 * Written with the UID list's rules: created or compacted as .tmp, fsync, rename, fsync the
 * directory; new records appended with one write + fdatasync.
 *
 * Reading errs on the side of keeping mail (a lost record means "never retrieved", which
 * only keeps a message longer): a missing or bad header, or one naming another UIDVALIDITY
 * (the UID list was rebuilt and the messages renumbered) discards every record; a bad line
 * (torn last write, damage) is dropped; a UID recorded twice keeps its earliest time. Any of
 * these sets `rewrite`, and the next write rewrites the whole file instead of appending
 * after the damage.
 */
#ifndef MK_POP3_RETRIEVED_H
#define MK_POP3_RETRIEVED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define POP3_RETRIEVED_FILE "mailkeep-pop3-retrieved"
/* Largest record read (about 2.5 million lines; compaction keeps it near the folder's
 * message count). A larger file is treated as damaged: discarded, then rewritten. */
#define POP3_RETRIEVED_MAX_BYTES (64u << 20)

struct pop3_ret {
	uint32_t uid;
	int64_t time;
};

struct pop3_ret_file {
	struct pop3_ret *ents; /* ascending uid, each uid once */
	size_t n;
	size_t lines; /* record lines in the file now (for the compaction decision) */
	bool rewrite; /* missing, damaged or for another UIDVALIDITY: rewrite before appending */
};

/* Read the record at PATH for UIDVALIDITY into F (cleared first). A missing file is an empty
 * record with rewrite set. -errno only when the file cannot be read at all (then F is empty). */
int pop3_retrieved_read(const char *path, uint32_t uidvalidity, struct pop3_ret_file *f);
void pop3_retrieved_free(struct pop3_ret_file *f);

/* Replace the record at PATH with the header for UIDVALIDITY and ENTS[0..n): atomically and
 * durably (.tmp, fsync, rename, fsync dir). */
int pop3_retrieved_write(const char *path, uint32_t uidvalidity, const struct pop3_ret *ents,
			 size_t n);
/* Append ENTS[0..n) to the record at PATH (which must exist with a good header and end with
 * a whole line): one write + fdatasync. On failure a partial line may be left at the end
 * (the next read drops it); the caller rewrites the file before appending again. */
int pop3_retrieved_append(const char *path, const struct pop3_ret *ents, size_t n);
/* The same without the fdatasync: *FD_R is the open file (to sync, then close) on success. */
int pop3_retrieved_append_nosync(const char *path, const struct pop3_ret *ents, size_t n,
				 int *fd_r);

#endif
