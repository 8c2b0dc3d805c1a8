/* mbox_scan — reading an mbox file (storage room, mbox back-end only): From_ separation, the
 * header lines of ours that clients never see, the bytes a client is served, and locks.
 * Everything here is thread-safe and touches no mailbox.
 *
 * A message starts at a line "From " at the start of the file, after an empty line, or
 * anywhere when the line carries an asctime date ("From a@b Mon Nov 23 07:14:24 2026"). The
 * LF just before the next From_ line (or the last byte of the file, when it is an LF) is the
 * separator, not part of the message (Dovecot's rule: a message is written followed by one
 * LF, so "body\n" is stored "body\n\n", and "body" without a final LF "body\n"). Served bytes: the
 * message after its From_ line, minus the header lines named in MBOX_HIDDEN (Status, X-Status,
 * X-Keywords, X-UID, X-IMAPbase, X-IMAP, X-UIDL, Content-Length, Lines, with their continuation
 * lines), with mboxrd one '>' of each
 * ">+From " line removed (mboxo: bodies as stored). Sizes count a bare LF as two octets.
 */
#ifndef MK_MBOX_SCAN_H
#define MK_MBOX_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "storage.h"

/* The longest X-Keywords / X-UIDL value kept from a header. */
#define MBOX_HDR_VALUE_MAX 1024

struct mbox_scan_msg {
	uint64_t from_off; /* the From_ line */
	uint64_t hdr_off;  /* after the From_ line */
	uint64_t end_off;  /* end of the message (the separator line is not part of it) */
	uint64_t size;     /* served size, CRLF */
	uint64_t hash;     /* mbox_hash of the served bytes (stored line ends) */
	uint64_t hdr_hash; /* mbox_hash of the served header block */
	int64_t idate;     /* From_ line date, -1 when it has none */
	uint8_t flags;     /* from Status / X-Status (enum mail_flags) */
	bool has_status;   /* a Status or X-Status line was there */
	bool has_ours;     /* X-UID and X-UIDL were there (written by us) */
	uint32_t xuid;     /* X-UID, 0 = none */
	uint32_t base_validity, base_next; /* X-IMAPbase (first message only), 0 = none */
	char uidl[MAIL_UIDL_MAX + 1];      /* X-UIDL, "" = none or unusable */
	char *keywords;                    /* X-Keywords value (malloc'd, space separated) */
};

struct mbox_scan {
	struct mbox_scan_msg *msgs;
	size_t n, cap;
	uint64_t end; /* bytes scanned */
};

void mbox_scan_free(struct mbox_scan *sc);

/* Scan FD from FROM (a From_ line, or 0) to END. With EXPECT_FROM the byte at FROM must
 * start a From_ line (-EBADMSG otherwise); data before the first From_ line of a file is
 * ignored (logged by the caller). MBOXRD selects the quoting rule. */
int mbox_scan_file(int fd, uint64_t from, uint64_t end, bool mboxrd, struct mbox_scan *sc);

/* Copy the served bytes of the message at [HDR_OFF, END_OFF) of FD (stored line ends) to
 * OUT_FD, returning their mbox_hash in *hash_r. FD2/SPLIT: offsets >= SPLIT are read from
 * FD2 at (offset - SPLIT + FD2_OFF) (a rewrite in progress keeps the old bytes there); FD2 < 0:
 * none.
 * OUT_FD < 0: the hash only. */
int mbox_copy_served(int fd, int fd2, uint64_t split, uint64_t fd2_off, uint64_t hdr_off,
		     uint64_t end_off, bool mboxrd, int out_fd, uint64_t *hash_r);

/* The hash the index keeps per message: 64 bits over a byte stream, the same however the
 * stream is cut into pieces. */
struct mbox_hash {
	uint64_t h;
	uint64_t carry;
	unsigned n;
	uint64_t len;
};
void mbox_hash_init(struct mbox_hash *mh);
void mbox_hash_add(struct mbox_hash *mh, const void *p, size_t len);
uint64_t mbox_hash_final(const struct mbox_hash *mh);

/* Parse an asctime date from a From_ line ("From x Mon Nov 23 07:14:24 2026", optionally a
 * zone before or after the year): seconds since the epoch, read as UTC; -1 if none. */
int64_t mbox_from_date(const char *line, size_t len);
/* Format a From_ line for a message appended by us into BUF: "From MAILER-DAEMON <date>\n". */
size_t mbox_from_line(int64_t idate, char *buf, size_t size);

/* Header names hidden from clients (case-insensitive, without the colon). */
bool mbox_hidden_header(const char *line, size_t len);

/* ---- locks (mbox_lock.c) ---- */
/* Take PATH.lock (our pid written under a unique name, then link(2)ed into place; a lock
 * whose pid is gone on this host or that
 * has not changed for 5 minutes is stale and removed) and then an fcntl write lock on FD
 * (read lock when !WRITE, without the dotlock: what MTAs exclude is a half-written
 * message), waiting at most TIMEOUT_MS. *DOTLOCKED_R: PATH.lock is ours (a directory we may
 * not write to, such as /var/mail, gets the fcntl lock alone, as mutt does) (poll every 10..100 ms;
 * worker threads only when TIMEOUT_MS > 0). -EBUSY on timeout. */
int mbox_lock(const char *path, int fd, bool write, unsigned timeout_ms, bool *dotlocked_r);
/* How a waiting mbox_lock_wait sleeps between tries: FN(ARG, MS) may return early, when
 * someone wants a new try at once (a refresh waiting for a pool sync). */
struct mbox_lock_nap {
	void (*fn)(void *arg, unsigned ms);
	void *arg;
};
/* mbox_lock, sleeping with NAP (NULL: nanosleep). */
int mbox_lock_wait(const char *path, int fd, bool write, unsigned timeout_ms,
		   const struct mbox_lock_nap *nap, bool *dotlocked_r);
/* Release what mbox_lock took (DOTLOCKED: *dotlocked_r it gave). */
void mbox_unlock(const char *path, int fd, bool dotlocked);

#endif
