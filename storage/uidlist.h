/* uidlist — the per-folder UID list (internal to the storage room).
 *
 * File `mailkeep-uidlist` in the folder directory, text, one record a line, every line
 * checksummed: "HHHHHHHH payload\n" where HHHHHHHH is the FNV-1a 32 hash of the payload in hex.
 *
 *   H 2 <uidvalidity> <uidnext> <highestmodseq> <nbase>     header (first line; version 1
 *                                                            is read too: same fields)
 *   A <uid> <modseq> <size> <idate> <flags> <kw> <savedate> <emailid> <uidl> <base>
 *                                                            a message (size = CRLF size,
 *                                                            flags/kw/emailid in hex; savedate
 *                                                            seconds, RFC 8514; emailid the
 *                                                            RFC 8474 EMAILID, kept on MOVE)
 *   + <uid> <modseq> <size> <idate> <flags> <kw> <uidl> <base>  a message as version 1 wrote
 *                                                              it (read only: savedate and
 *                                                              emailid unknown, 0)
 *   F <uid> <modseq> <flags> <kw>                            flags changed
 *   - <uid> <modseq>                                         expunged
 *   X <uid> <modseq>                                         expunged by us, written BEFORE
 *                                                            the file is unlinked: a file
 *                                                            still there with that base name
 *                                                            is unlinked at the next load
 *
 * The first nbase lines after the header are the compacted base ('A' or '+' only); after them the
 * file is an append log. Appending a record is one write() plus fsync. Compaction rewrites
 * the file: .tmp, fsync, rename, fsync dir, so a crash leaves either the old or the new list.
 *
 * Reading: a bad or missing line inside the base, or a bad line followed by more lines, is a
 * torn list (-EBADMSG; the caller rebuilds with a new UIDVALIDITY). A bad LAST line of the log
 * is a record whose write never completed; it was never acknowledged and is dropped.
 *
 * Versions: this code writes "H 2" and 'A' records (and may append 'A' records to a list whose
 * header still says 1: a list is only ever read by code that knows both). An older mailkeep
 * reads a version 2 list as torn and rebuilds it (new UIDVALIDITY): downgrading costs clients
 * a resync, never a message.
 */
#ifndef MK_UIDLIST_H
#define MK_UIDLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage_util.h"

#define UIDLIST_FILE "mailkeep-uidlist"
/* Largest UID list read (a 1M-message folder is about 120 MB). */
#define UIDLIST_MAX_BYTES (512u << 20)

struct uidlist_ent {
	uint32_t uid;
	uint8_t flags;
	bool expunged;
	bool unlink_pending; /* an 'X' record: the file may still be there, remove it */
	uint32_t keywords;
	uint64_t modseq;
	uint64_t size;
	int64_t idate;
	int64_t savedate;  /* 0: unknown (a version 1 '+' record) */
	uint64_t emailid;  /* 0: unknown */
	uint32_t base_off; /* in uidlist.pool */
	uint32_t base_len;
	uint32_t uidl_off;
	uint32_t uidl_len;
};

struct uidlist {
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highest_modseq;
	size_t n_base;
	size_t n_log;             /* log records after the base */
	bool torn_tail;           /* a partial last record was dropped */
	struct uidlist_ent *ents; /* by uid, ascending (expunged ones marked) */
	size_t n_ents;
	char *pool;
	size_t pool_len;
};

/* Parse the list at PATH. -ENOENT if missing; -EBADMSG if torn (then *old_uidvalidity_r is
 * the header's UIDVALIDITY if the header was readable, else 0); -errno otherwise. */
int uidlist_read(const char *path, struct uidlist *list, uint32_t *old_uidvalidity_r);
void uidlist_free(struct uidlist *list);
const char *uidlist_ent_base(const struct uidlist *list, const struct uidlist_ent *e);
const char *uidlist_ent_uidl(const struct uidlist *list, const struct uidlist_ent *e);

/* Append one checksummed line with PAYLOAD (no newline) to B. */
int uidlist_line(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int uidlist_line_header(struct sbuf *b, uint32_t uidvalidity, uint32_t uidnext,
			uint64_t highest_modseq, size_t nbase);
int uidlist_line_add(struct sbuf *b, uint32_t uid, uint64_t modseq, uint64_t size, int64_t idate,
		     unsigned flags, uint32_t keywords, int64_t savedate, uint64_t emailid,
		     const char *uidl, const char *base, size_t base_len);
int uidlist_line_flags(struct sbuf *b, uint32_t uid, uint64_t modseq, unsigned flags,
		       uint32_t keywords);
int uidlist_line_expunge(struct sbuf *b, uint32_t uid, uint64_t modseq);
int uidlist_line_expunge_unlink(struct sbuf *b, uint32_t uid, uint64_t modseq);

/* Write the whole list (header + base in B, built with the functions above) atomically to
 * PATH. Test hook: uidlist_crash_hook, if set, is called with 1 after the temporary file
 * is written and fsynced and before the rename, and with 2 after the rename. */
int uidlist_write(const char *path, const struct sbuf *b);
extern void (*uidlist_crash_hook)(int point);

/* The POP3 UIDL of a Maildir base name: the base name itself when it is 1..70 characters of
 * 0x21..0x7E, else "X" + 32 hex digits of a 128-bit hash of it. Deterministic: a rebuilt UID
 * list gives every message the same UIDL. OUT has room for MAIL_UIDL_MAX + 1 bytes. */
void uidlist_uidl_from_base(const char *base, size_t len, char *out);

#endif
