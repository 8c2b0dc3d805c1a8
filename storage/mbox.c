/* mbox — the mbox back-end (storage/mailbox_private.h; layout in mbox_private.h, file format
 * and procedures in storage/README.md, "mbox").
 *
 * The mbox file holds the messages; everything else is ours, in the folder's state
 * directory, so that opening never writes the file:
 *   mailkeep-uidlist      uidlist.h: UID, modseq, CRLF size, date, flags, keywords; for mbox
 *                         the uidl column holds the content hash (16 hex) and the base column
 *                         the POP3 UIDL (the record's key)
 *   mailkeep-mbox-index   where each message is: offsets, the flags its headers carry, and
 *                         the file's identity (inode, size, mtime) it describes (a cache: a
 *                         mismatch means a scan)
 *   spool/UID             an APPENDed/copied message not yet in the file (durable before its
 *                         UID is given; moved into the file by the next sync)
 *   mailkeep-rewrite      the backup of a rewrite in progress (mbox_sync.c)
 *   mailkeep-keywords, mailkeep-cache, mailkeep-pop3-retrieved, mailkeep-lock as Maildir
 *
 * A message is known by its content hash (the served bytes: our hidden headers excluded), so
 * flag edits by mutt or a rewrite by anyone keep its UID; X-UID (ours) tells duplicates
 * apart. Changes (flags, expunges, appends) are durable in the UID list first, like Maildir's;
 * the file itself is brought up to date by a sync on the thread pool (mbox_sync.c), under the
 * MTA's locks, soon after.
 */
#include "mbox_private.h"
#include "mbox_scan.h"
#include "mbox_sync.h"
#include "pop3_retrieved.h"
#include "folder_cache.h"
#include "storage_util.h"
#include "uidlist.h"

#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/mman.h> /* mmap, memfd_create */
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define KEYWORDS_FILE    "mailkeep-keywords"
#define UIDVALIDITY_FILE "mailkeep-uidvalidity"
#define LOCK_FILE        "mailkeep-lock"
#define CACHE_FILE       "mailkeep-cache"
#define LOG_COMPACT_MIN  1000
#define LOCK_WAIT_MAX_MS 2000
/* The longest an open on the loop waits for an MTA's lock (a delivery holds it for
 * milliseconds); longer holders get -EBUSY there and mbox_lock_timeout on the pool. */
#define MBOX_LOOP_LOCK_WAIT_MS 200
/* A message read is copied into memory (memfd) up to this size, else into an unnamed file
 * in the state directory. */
#define MBOX_MEMFD_MAX (1u << 20)
/* A sync after flag changes waits for this much quiet (a rewrite may be long). */
#define SYNC_DELAY_FLAGS_MS 2000
/* ... after an expunge or an append (the file should follow soon). */
#define SYNC_DELAY_MS 20
/* The longest a refresh on the loop waits for a pool sync that may take in what an MTA or
 * mutt just did (it waits for the locks they held, or it copies an MTA's tail): the command
 * then sees it. Longer (locks held elsewhere for long), it sees it at a later command. */
#define MBOX_GATE_WAIT_MS 1000
/* A refresh that found the file locked looks again after this. */
#define REFRESH_RETRY_MS 50

/* ---- small helpers ------------------------------------------------------------------------ */

static int state_file(const char *state, const char *name, char *buf, size_t size)
{
	return storage_path(buf, size, "%s/%s", state, name);
}

static void hash_hex(uint64_t h, char out[17])
{
	snprintf(out, 17, "%016" PRIx64, h);
}

static bool hash_parse(const char *s, size_t len, uint64_t *h_r)
{
	if (len != 16)
		return false;
	uint64_t h = 0;
	for (size_t i = 0; i < 16; i++) {
		char c = s[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return false;
		h = h << 4 | d;
	}
	*h_r = h;
	return true;
}

static bool same_sig(const struct mbox_sig *a, const struct mbox_sig *b)
{
	return a->ino == b->ino && a->dev == b->dev && a->size == b->size &&
	       a->mtime_sec == b->mtime_sec && a->mtime_nsec == b->mtime_nsec;
}

void mbox_sig_from_stat(const struct stat *st, struct mbox_sig *sig)
{
	sig->ino = (uint64_t)st->st_ino;
	sig->dev = (uint64_t)st->st_dev;
	sig->size = (uint64_t)st->st_size;
	sig->mtime_sec = (int64_t)st->st_mtim.tv_sec;
	sig->mtime_nsec = (int64_t)st->st_mtim.tv_nsec;
}

/* Save dates are kept as 32-bit seconds (mail_rec): 1..UINT32_MAX. */
static int64_t savedate_clamp(int64_t t)
{
	if (t < 1)
		return 1;
	return t > (int64_t)UINT32_MAX ? (int64_t)UINT32_MAX : t;
}

/* ---- the message table (by uid) ----------------------------------------------------------- */

struct mmsg *mbox_msg_find(struct mbox_be *be, uint32_t uid)
{
	size_t lo = 0, hi = be->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (be->msgs[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < be->n && be->msgs[lo].uid == uid ? &be->msgs[lo] : NULL;
}

static int msgs_grow(struct mmsg **msgs, size_t n, size_t *cap)
{
	if (n < *cap)
		return 0;
	size_t c = *cap ? *cap * 2 : 256;
	struct mmsg *m = realloc(*msgs, c * sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	*msgs = m;
	*cap = c;
	return 0;
}

/* Add M (uid above all others, or inserted in order). */
static int msgs_add(struct mbox_be *be, const struct mmsg *m)
{
	int r = msgs_grow(&be->msgs, be->n, &be->cap);
	if (r < 0)
		return r;
	size_t i = be->n;
	while (i > 0 && be->msgs[i - 1].uid > m->uid)
		i--;
	memmove(&be->msgs[i + 1], &be->msgs[i], (be->n - i) * sizeof(*m));
	be->msgs[i] = *m;
	be->n++;
	return 0;
}

void mbox_msg_remove(struct mbox_be *be, uint32_t uid)
{
	struct mmsg *m = mbox_msg_find(be, uid);
	if (m == NULL)
		return;
	free(m->gone_uidl);
	size_t i = (size_t)(m - be->msgs);
	memmove(&be->msgs[i], &be->msgs[i + 1], (be->n - i - 1) * sizeof(*m));
	be->n--;
}

/* ---- keywords ----------------------------------------------------------------------------- */

static int keywords_read(const char *path, char **names, unsigned *n_r)
{
	char file[4096], *data;
	size_t len;
	*n_r = 0;
	int r = state_file(path, KEYWORDS_FILE, file, sizeof(file));
	if (r < 0)
		return r;
	r = storage_read_file(file, 65536, &data, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	char *save = NULL;
	for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(line, ' ');
		if (sp == NULL)
			continue;
		*sp = '\0';
		char *end;
		unsigned long idx = strtoul(line, &end, 10);
		if (*end != '\0' || idx != *n_r || idx >= MAILBOX_MAX_KEYWORDS ||
		    strlen(sp + 1) > MAILBOX_KEYWORD_MAX)
			break;
		names[idx] = strdup(sp + 1);
		if (names[idx] == NULL) {
			free(data);
			return -ENOMEM;
		}
		(*n_r)++;
	}
	free(data);
	return 0;
}

static int keywords_write(const char *path, char *const *names, unsigned n)
{
	struct sbuf b = {0};
	int r = 0;
	for (unsigned i = 0; i < n && r == 0; i++)
		r = sbuf_printf(&b, "%u %s\n", i, names[i]);
	char file[4096];
	if (r == 0)
		r = state_file(path, KEYWORDS_FILE, file, sizeof(file));
	if (r == 0)
		r = storage_write_file_atomic(file, b.data ? b.data : "", b.len);
	sbuf_free(&b);
	return r;
}

static int mb_save_keywords(struct mailbox *mbox)
{
	return keywords_write(mbox->path, mbox->keywords, mbox->n_keywords);
}

static bool keyword_ok(const char *w)
{
	size_t len = strlen(w);
	if (len == 0 || len > MAILBOX_KEYWORD_MAX || w[0] == '\\')
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)w[i];
		if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c) != NULL)
			return false;
	}
	return true;
}

/* The mask of an X-Keywords value over NAMES, adding names (up to the limit) when ADD. */
static uint32_t keywords_mask(const char *value, char **names, unsigned *n, bool add, bool *added_r)
{
	uint32_t mask = 0;
	if (value == NULL)
		return 0;
	char buf[MBOX_HDR_VALUE_MAX + 1];
	snprintf(buf, sizeof(buf), "%s", value);
	char *save = NULL;
	for (char *w = strtok_r(buf, " ,\t", &save); w; w = strtok_r(NULL, " ,\t", &save)) {
		if (!keyword_ok(w))
			continue;
		unsigned i;
		for (i = 0; i < *n; i++)
			if (strcasecmp(names[i], w) == 0)
				break;
		if (i == *n) {
			if (!add || *n >= MAILBOX_MAX_KEYWORDS)
				continue;
			names[i] = strdup(w);
			if (names[i] == NULL)
				continue;
			(*n)++;
			*added_r = true;
		}
		mask |= 1u << i;
	}
	return mask;
}

/* ---- POP3 retrieval record ---------------------------------------------------------------- */

static int mb_pop3_ret_read(struct mailbox *mbox, struct pop3_ret_file *f)
{
	char file[4096];
	int r = state_file(mbox->path, POP3_RETRIEVED_FILE, file, sizeof(file));
	if (r < 0)
		return r;
	return pop3_retrieved_read(file, mbox->uidvalidity, f);
}

static int mb_pop3_ret_write(struct mailbox *mbox, const struct pop3_ret *ents, size_t n,
			     bool append)
{
	char file[4096];
	int r = state_file(mbox->path, POP3_RETRIEVED_FILE, file, sizeof(file));
	if (r < 0)
		return r;
	if (append)
		return pop3_retrieved_append(file, ents, n);
	return pop3_retrieved_write(file, mbox->uidvalidity, ents, n);
}

/* ---- cache file (folder_cache.h; keyed by the record's key = UIDL) ------------------------ */

/* Map the cache of LD's folder and point each entry at its newest valid blob. */
static void cache_scan(struct mailbox_load *ld, struct mb_load *ml)
{
	char file[4096];
	if (state_file(ld->path, CACHE_FILE, file, sizeof(file)) < 0)
		return;
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof(struct folder_cache_hdr) ||
	    (uint64_t)st.st_size > FOLDER_CACHE_MAX_BYTES) {
		close(fd);
		return;
	}
	size_t len = (size_t)st.st_size;
	char *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return;
	/* key -> entry: open addressing over the load's entries */
	size_t cap = 64;
	while (cap < ld->n_ents * 2)
		cap *= 2;
	uint32_t *tab = calloc(cap, sizeof(*tab));
	if (tab == NULL) {
		munmap(map, len);
		return;
	}
	for (size_t i = 0; i < ld->n_ents; i++) {
		const struct load_ent *e = &ld->ents[i];
		size_t h = storage_hash32(ld->pool + e->key_off, e->base_len) & (cap - 1);
		while (tab[h] != 0)
			h = (h + 1) & (cap - 1);
		tab[h] = (uint32_t)i + 1;
	}
	size_t pos = 0, garbage = 0;
	while (pos + sizeof(struct folder_cache_hdr) <= len) {
		struct folder_cache_hdr h;
		memcpy(&h, map + pos, sizeof(h));
		if (h.magic != FOLDER_CACHE_MAGIC || h.base_len == 0 || h.base_len > UINT16_MAX ||
		    h.data_len == 0 || (uint64_t)h.base_len + h.data_len > len - pos - sizeof(h))
			break;
		const char *b = map + pos + sizeof(h);
		const char *d = b + h.base_len;
		if (folder_cache_sum(b, h.base_len, d, h.data_len) != h.sum)
			break;
		size_t rec_len = sizeof(h) + h.base_len + h.data_len;
		struct load_ent *found = NULL;
		for (size_t k = storage_hash32(b, h.base_len) & (cap - 1); tab[k] != 0;
		     k = (k + 1) & (cap - 1)) {
			struct load_ent *e = &ld->ents[tab[k] - 1];
			if (e->base_len == h.base_len &&
			    memcmp(ld->pool + e->key_off, b, h.base_len) == 0) {
				found = e;
				break;
			}
		}
		if (found != NULL) {
			if (found->cache_len != 0)
				garbage += sizeof(h) + found->cache_len;
			found->cache_off = (uint32_t)(d - map);
			found->cache_len = h.data_len;
		} else {
			garbage += rec_len;
		}
		pos += rec_len;
	}
	free(tab);
	ml->cache_map = map;
	ml->cache_map_len = len;
	ml->cache_end = pos;
	ml->cache_garbage = garbage + (len - pos);
}

static int mb_cache_get(struct mailbox *mbox, const struct mail_rec *rec, const void **data_r,
			size_t *len_r)
{
	struct mbox_be *be = mbox->backend;
	int r = folder_cache_read(be->cache_fd, be->cache_end, &be->cache_map, &be->cache_map_len,
				  rec->cache_off, rec->cache_len, data_r);
	if (r < 0)
		return r;
	*len_r = rec->cache_len;
	return 0;
}

static int mb_cache_put(struct mailbox *mbox, struct mail_rec *rec, const void *data, size_t len)
{
	struct mbox_be *be = mbox->backend;
	if (be->cache_fd < 0) {
		char file[4096];
		int r = state_file(mbox->path, CACHE_FILE, file, sizeof(file));
		if (r < 0)
			return r;
		be->cache_fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (be->cache_fd < 0)
			return -errno;
		if (ftruncate(be->cache_fd, (off_t)be->cache_end) < 0)
			return -errno;
	}
	uint32_t data_off;
	int e = folder_cache_append(be->cache_fd, &be->cache_end, mailbox_rec_key(mbox, rec),
				    rec->base_len, data, len, &data_off);
	if (e < 0)
		return e;
	rec->cache_off = data_off;
	rec->cache_len = (uint32_t)len;
	return 0;
}

/* ---- folder lock, UIDVALIDITY ------------------------------------------------------------- */

static int folder_lock(const char *path, bool wait, int *fd_r)
{
	char file[4096];
	int r = state_file(path, LOCK_FILE, file, sizeof(file));
	if (r < 0)
		return r;
	int fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	for (unsigned waited_ms = 0;; waited_ms++) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK || !wait || waited_ms >= LOCK_WAIT_MAX_MS) {
			r = errno == EWOULDBLOCK ? -EBUSY : -errno;
			close(fd);
			return r;
		}
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, NULL);
	}
	*fd_r = fd;
	return 0;
}

/* A UIDVALIDITY strictly above OLD and the last one handed out here, durably noted. */
static int uidvalidity_new(const char *path, uint32_t old, uint32_t *v_r)
{
	char file[4096], *data;
	size_t len;
	uint32_t last = old;
	int r = state_file(path, UIDVALIDITY_FILE, file, sizeof(file));
	if (r < 0)
		return r;
	if (storage_read_file(file, 64, &data, &len) == 0) {
		unsigned long v = strtoul(data, NULL, 10);
		if (v > last && v < UINT32_MAX)
			last = (uint32_t)v;
		free(data);
	}
	uint32_t now = (uint32_t)time(NULL);
	uint32_t v = now > last ? now : last + 1;
	if (v == 0)
		v = 1;
	char text[16];
	int n = snprintf(text, sizeof(text), "%u\n", v);
	r = storage_write_file_atomic(file, text, (size_t)n);
	if (r == 0)
		*v_r = v;
	return r;
}

/* ---- the index ---------------------------------------------------------------------------- */

#define INDEX_FILE  "mailkeep-mbox-index"
#define INDEX_MAGIC 0x3158444958424d4dull /* "MMBXIDX1" */

struct index_hdr {
	uint64_t magic;
	struct mbox_sig sig;
	uint64_t n;
};

struct index_ent {
	uint32_t uid;
	uint8_t state;
	uint8_t file_flags;
	uint8_t file_ours;
	uint8_t pad;
	uint32_t file_kw;
	uint32_t pad2;
	uint64_t from_off, hdr_off, end_off, hash;
};

/* Write the index of the messages in the file (atomic rename; no fsync: it is a cache whose
 * identity check fails when it is not the file's). */
int mbox_index_write(const char *state, const struct mbox_sig *sig, const struct mmsg *msgs,
		     size_t n)
{
	struct sbuf b = {0};
	struct index_hdr h = {INDEX_MAGIC, *sig, 0};
	for (size_t i = 0; i < n; i++)
		if (msgs[i].state != MM_SPOOL)
			h.n++;
	int r = sbuf_add(&b, &h, sizeof(h));
	for (size_t i = 0; i < n && r == 0; i++) {
		const struct mmsg *m = &msgs[i];
		if (m->state == MM_SPOOL)
			continue;
		struct index_ent e = {0};
		e.uid = m->uid;
		e.state = m->state;
		e.file_flags = m->file_flags;
		e.file_ours = m->file_ours;
		e.file_kw = m->file_kw;
		e.from_off = m->from_off;
		e.hdr_off = m->hdr_off;
		e.end_off = m->end_off;
		e.hash = m->hash;
		r = sbuf_add(&b, &e, sizeof(e));
	}
	uint64_t sum = 0;
	if (r == 0) {
		sum = storage_hash64(b.data, b.len, 0);
		r = sbuf_add(&b, &sum, sizeof(sum));
	}
	char file[4096], tmp[4096];
	if (r == 0)
		r = state_file(state, INDEX_FILE, file, sizeof(file));
	if (r == 0)
		r = state_file(state, INDEX_FILE ".tmp", tmp, sizeof(tmp));
	if (r == 0) {
		int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0)
			r = -errno;
		if (r == 0)
			r = storage_write_all(fd, b.data, b.len);
		if (fd >= 0)
			close(fd);
		if (r == 0 && rename(tmp, file) < 0)
			r = -errno;
		if (r < 0)
			unlink(tmp);
	}
	sbuf_free(&b);
	return r;
}

/* Read the index: its entries (uid order) and the file identity it describes. */
static int index_read(const char *state, struct mbox_sig *sig_r, struct mmsg **msgs_r, size_t *n_r)
{
	char file[4096], *data;
	size_t len;
	*msgs_r = NULL;
	*n_r = 0;
	int r = state_file(state, INDEX_FILE, file, sizeof(file));
	if (r == 0)
		r = storage_read_file(file, 1u << 30, &data, &len);
	if (r < 0)
		return r;
	struct index_hdr h;
	uint64_t sum;
	if (len < sizeof(h) + sizeof(sum)) {
		free(data);
		return -EBADMSG;
	}
	memcpy(&h, data, sizeof(h));
	memcpy(&sum, data + len - sizeof(sum), sizeof(sum));
	if (h.magic != INDEX_MAGIC ||
	    h.n != (len - sizeof(h) - sizeof(sum)) / sizeof(struct index_ent) ||
	    (len - sizeof(h) - sizeof(sum)) % sizeof(struct index_ent) != 0 ||
	    storage_hash64(data, len - sizeof(sum), 0) != sum) {
		free(data);
		return -EBADMSG;
	}
	struct mmsg *msgs = calloc(h.n ? h.n : 1, sizeof(*msgs));
	if (msgs == NULL) {
		free(data);
		return -ENOMEM;
	}
	for (size_t i = 0; i < h.n; i++) {
		struct index_ent e;
		memcpy(&e, data + sizeof(h) + i * sizeof(e), sizeof(e));
		if ((i > 0 && e.uid <= msgs[i - 1].uid) || e.uid == 0 ||
		    (e.state != MM_FILE && e.state != MM_GONE) || e.hdr_off < e.from_off ||
		    e.end_off < e.hdr_off) {
			free(msgs);
			free(data);
			return -EBADMSG;
		}
		struct mmsg *m = &msgs[i];
		m->uid = e.uid;
		m->state = e.state;
		m->file_flags = e.file_flags;
		m->file_ours = e.file_ours != 0;
		m->file_kw = e.file_kw;
		m->from_off = e.from_off;
		m->hdr_off = e.hdr_off;
		m->end_off = e.end_off;
		m->hash = e.hash;
	}
	*sig_r = h.sig;
	*msgs_r = msgs;
	*n_r = h.n;
	free(data);
	return 0;
}

/* ---- matching a scan with what we know ---------------------------------------------------- */

/* What a scan is compared with: a message we know (live or expunged-but-in-file). */
struct known {
	uint32_t uid;
	uint64_t hash;
	bool gone; /* expunged by us, still in the file */
	bool matched;
	size_t idx; /* caller's index */
};

static int cmp_known(const void *a, const void *b)
{
	const struct known *x = a, *y = b;
	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	if (x->gone != y->gone)
		return x->gone ? 1 : -1; /* live ones first */
	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* For each scanned message, the index in K (sorted here) it is, or SIZE_MAX for a new one:
 * by X-UID when that names a known message with the same content (or any content when
 * TRUST_XUID: the X-UIDs are ours), else the first unmatched
 * known message with the same content (live before expunged, lower UID first). */
static int match_scan(struct known *k, size_t nk, const struct mbox_scan *sc, size_t *match,
		      bool trust_xuid)
{
	if (nk > 1)
		qsort(k, nk, sizeof(*k), cmp_known);
	for (size_t i = 0; i < sc->n; i++) {
		match[i] = SIZE_MAX;
		uint32_t xuid = sc->msgs[i].xuid;
		if (xuid == 0)
			continue;
		for (size_t j = 0; j < nk; j++) {
			/* our own X-UID (the file's X-IMAPbase names our UIDVALIDITY) keeps the
			 * UID of a message mutt rewrote (it adds Lines:, changes line ends) */
			if (k[j].uid == xuid && !k[j].matched &&
			    (k[j].hash == sc->msgs[i].hash || (trust_xuid && !k[j].gone))) {
				k[j].matched = true;
				match[i] = j;
				break;
			}
		}
	}
	for (size_t i = 0; i < sc->n; i++) {
		if (match[i] != SIZE_MAX)
			continue;
		uint64_t h = sc->msgs[i].hash;
		size_t lo = 0, hi = nk;
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;
			if (k[mid].hash < h)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (size_t j = lo; j < nk && k[j].hash == h; j++) {
			if (!k[j].matched) {
				k[j].matched = true;
				match[i] = j;
				break;
			}
		}
	}
	return 0;
}

/* The UIDL of a message we number: its X-UIDL when usable and unused, else 16 hex digits of
 * its header hash ("-UID" added when that is taken). TAKEN(ctx, uidl) says whether a
 * message of the folder has it. */
static void uidl_choose(const struct mbox_scan_msg *sm, uint64_t hdr_hash, uint32_t uid,
			bool (*taken)(void *ctx, const char *uidl), void *ctx, char *out)
{
	if (sm != NULL && sm->uidl[0] != '\0' && !taken(ctx, sm->uidl)) {
		strcpy(out, sm->uidl);
		return;
	}
	hash_hex(hdr_hash, out);
	if (taken(ctx, out))
		snprintf(out + 16, MAIL_UIDL_MAX + 1 - 16, "-%u", uid);
}

/* ---- load (worker thread) ----------------------------------------------------------------- */

static void mb_load_free(void *p)
{
	struct mb_load *ml = p;
	if (ml->cache_map != NULL)
		munmap(ml->cache_map, ml->cache_map_len);
	if (ml->lock_fd >= 0)
		close(ml->lock_fd);
	if (ml->fd >= 0)
		close(ml->fd);
	for (size_t i = 0; i < ml->n; i++)
		free(ml->msgs[i].gone_uidl);
	free(ml->msgs);
	free(ml);
}

/* UIDL set during a load: open addressing over strings in a pool. */
struct uidl_set {
	char **s;
	size_t cap, n;
};

static bool uidl_set_has(void *ctx, const char *u)
{
	struct uidl_set *set = ctx;
	if (set->cap == 0)
		return false;
	for (size_t h = storage_hash32(u, strlen(u)) & (set->cap - 1); set->s[h] != NULL;
	     h = (h + 1) & (set->cap - 1))
		if (strcmp(set->s[h], u) == 0)
			return true;
	return false;
}

static int uidl_set_add(struct uidl_set *set, const char *u)
{
	if ((set->n + 1) * 2 > set->cap) {
		size_t cap = set->cap ? set->cap * 2 : 1024;
		char **n = calloc(cap, sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		for (size_t i = 0; i < set->cap; i++) {
			if (set->s[i] == NULL)
				continue;
			size_t h = storage_hash32(set->s[i], strlen(set->s[i])) & (cap - 1);
			while (n[h] != NULL)
				h = (h + 1) & (cap - 1);
			n[h] = set->s[i];
		}
		free(set->s);
		set->s = n;
		set->cap = cap;
	}
	char *c = strdup(u);
	if (c == NULL)
		return -ENOMEM;
	size_t h = storage_hash32(u, strlen(u)) & (set->cap - 1);
	while (set->s[h] != NULL)
		h = (h + 1) & (set->cap - 1);
	set->s[h] = c;
	set->n++;
	return 0;
}

static void uidl_set_free(struct uidl_set *set)
{
	for (size_t i = 0; i < set->cap; i++)
		free(set->s[i]);
	free(set->s);
	memset(set, 0, sizeof(*set));
}

static bool spool_exists(const char *state, uint32_t uid)
{
	char file[4096];
	struct stat st;
	return storage_path(file, sizeof(file), "%s/spool/%u", state, uid) == 0 &&
	       stat(file, &st) == 0;
}

static void spool_remove(const char *state, uint32_t uid)
{
	char file[4096];
	if (storage_path(file, sizeof(file), "%s/spool/%u", state, uid) == 0)
		unlink(file);
}

/* Scan the file as the index says it may have grown, or whole. On return SC holds the
 * messages found from *FROM_R (0 for a whole scan). */
static int scan_plan(int fd, const struct mbox_sig *cur, bool have_index,
		     const struct mbox_sig *isig, const struct mmsg *imsgs, size_t in, bool mboxrd,
		     struct mbox_scan *sc, uint64_t *from_r, size_t *last_r)
{
	*from_r = 0;
	*last_r = SIZE_MAX;
	if (have_index && in > 0 && cur->ino == isig->ino && cur->dev == isig->dev &&
	    cur->size > isig->size) {
		/* grown: scan from the last message we know, which must still be there */
		size_t last = 0;
		for (size_t i = 1; i < in; i++)
			if (imsgs[i].from_off > imsgs[last].from_off)
				last = i;
		int r = mbox_scan_file(fd, imsgs[last].from_off, cur->size, mboxrd, sc);
		if (r == 0 && sc->n > 0 && sc->msgs[0].from_off == imsgs[last].from_off &&
		    sc->msgs[0].end_off == imsgs[last].end_off &&
		    sc->msgs[0].hash == imsgs[last].hash) {
			*from_r = imsgs[last].from_off;
			*last_r = last;
			return 0;
		}
		mbox_scan_free(sc);
		if (r < 0 && r != -EIO)
			return r;
	}
	return mbox_scan_file(fd, 0, cur->size, mboxrd, sc);
}

/* Everything a load does, under the folder lock and the file's read lock. */
/* READONLY (the state cannot be written: a full disk): open with what the UID list has —
 * messages it does not know wait unnumbered, flags changed in the file wait — and write
 * nothing; the next refresh reads again. */
static int load_scan(struct mailbox_load *ld, struct mb_load *ml, const struct mbox_opts *mo,
		     bool readonly)
{
	char file[4096];
	uint32_t old_validity = 0;
	struct uidlist list = {0};
	int r = state_file(ld->path, UIDLIST_FILE, file, sizeof(file));
	if (r < 0)
		return r;
	r = uidlist_read(file, &list, &old_validity);
	bool have_list = r == 0;
	if (r == -EBADMSG)
		log_warn("storage: UID list torn, messages renumbered path=%s",
			 log_escape_str(file));
	else if (r < 0 && r != -ENOENT)
		return r;
	r = keywords_read(ld->path, ld->keywords, &ld->n_keywords);
	if (r < 0)
		goto out;
	bool kw_added = false;

	struct mbox_sig isig = {0};
	struct mmsg *imsgs = NULL;
	size_t in = 0;
	bool have_index = have_list && index_read(ld->path, &isig, &imsgs, &in) == 0;

	/* known messages: live ones from the list, and those we expunged but the file still
	 * holds ('X' records) */
	size_t nk = 0;
	struct known *k = calloc(list.n_ents + 1, sizeof(*k));
	if (k == NULL) {
		r = -ENOMEM;
		goto out_idx;
	}
	for (size_t i = 0; i < list.n_ents; i++) {
		const struct uidlist_ent *e = &list.ents[i];
		if (e->expunged && !e->unlink_pending)
			continue;
		uint64_t h;
		if (!hash_parse(uidlist_ent_uidl(&list, e), e->uidl_len, &h))
			continue;
		k[nk].uid = e->uid;
		k[nk].hash = h;
		k[nk].gone = e->expunged;
		k[nk].idx = i;
		nk++;
	}

	/* the file */
	struct mbox_sig cur = {0};
	bool exists = ml->fd >= 0;
	if (exists) {
		struct stat st;
		if (fstat(ml->fd, &st) < 0) {
			r = -errno;
			goto out_k;
		}
		mbox_sig_from_stat(&st, &cur);
	}
	ml->sig = cur;
	struct mbox_scan sc = {0};
	size_t *match = NULL;
	uint64_t scan_from = 0;
	size_t last = SIZE_MAX;
	bool use_index = false;
	if (have_index && exists && same_sig(&cur, &isig)) {
		/* the index describes this file: every message we know is in it, or spooled */
		use_index = true;
		for (size_t i = 0; i < nk && use_index; i++) {
			struct mmsg key = {.uid = k[i].uid};
			struct mmsg *m = bsearch(&key, imsgs, in, sizeof(*imsgs), mbox_msg_cmp);
			if (m == NULL && (k[i].gone || !spool_exists(ld->path, k[i].uid)))
				use_index = false;
			if (m != NULL && m->hash != k[i].hash)
				use_index = false;
		}
		for (size_t i = 0; i < in && use_index; i++) {
			const struct uidlist_ent *e = NULL;
			for (size_t lo = 0, hi = list.n_ents; lo < hi;) {
				size_t mid = (lo + hi) / 2;
				if (list.ents[mid].uid < imsgs[i].uid) {
					lo = mid + 1;
				} else {
					if (list.ents[mid].uid == imsgs[i].uid)
						e = &list.ents[mid];
					hi = mid;
				}
			}
			if (e == NULL || (e->expunged && !e->unlink_pending))
				use_index = false;
		}
	}
	if (!use_index && exists) {
		r = scan_plan(ml->fd, &cur, have_index, &isig, imsgs, in, mo->mboxrd, &sc,
			      &scan_from, &last);
		if (r < 0)
			goto out_k;
		match = calloc(sc.n + 1, sizeof(*match));
		if (match == NULL) {
			r = -ENOMEM;
			goto out_scan;
		}
		for (size_t i = 0; scan_from > 0 && i < nk; i++) {
			/* the part before the scan is as the index says */
			struct mmsg key = {.uid = k[i].uid};
			struct mmsg *m = bsearch(&key, imsgs, in, sizeof(*imsgs), mbox_msg_cmp);
			if (m != NULL && m->from_off < scan_from)
				k[i].matched = true;
		}
	}
	if (sc.n > 0 && sc.msgs[0].from_off > 0 && scan_from == 0)
		log_warn("storage: mbox has data before its first From_ line (ignored) path=%s",
			 log_escape_str(ml->file));

	/* lost state: take UIDs from X-IMAPbase / X-UID when they are consistent */
	uint32_t uidvalidity = list.uidvalidity, uidnext = list.uidnext ? list.uidnext : 1;
	uint64_t highest = list.highest_modseq;
	bool adopt = false;
	if (!have_list) {
		ld->list_rebuilt = true;
		if (sc.n > 0 && sc.msgs[0].base_validity > old_validity) {
			adopt = true;
			uint32_t next = sc.msgs[0].base_next;
			for (size_t i = 0; i < sc.n && adopt; i++) {
				uint32_t u = sc.msgs[i].xuid;
				if (u == 0)
					continue;
				if (u >= next)
					next = u + 1;
				for (size_t j = 0; j < i && adopt; j++)
					if (sc.msgs[j].xuid == u)
						adopt = false;
			}
			if (adopt) {
				uidvalidity = sc.msgs[0].base_validity;
				uidnext = next;
			}
		}
		if (!adopt) {
			r = uidvalidity_new(ld->path, old_validity, &uidvalidity);
			if (r < 0)
				goto out_match;
			uidnext = 1;
		} else {
			char text[16];
			int n = snprintf(text, sizeof(text), "%u\n", uidvalidity);
			r = state_file(ld->path, UIDVALIDITY_FILE, file, sizeof(file));
			if (r == 0)
				r = storage_write_file_atomic(file, text, (size_t)n);
			if (r < 0)
				goto out_match;
		}
		highest = 1; /* as a new Maildir list: a new folder starts at HIGHESTMODSEQ 1 */
	}

	/* the result: messages by uid */
	struct uidl_set uidls = {0};
	size_t cap = 0;
	struct mmsg *msgs = NULL;
	size_t n = 0;
	bool changed = !have_list;
	/* 1. known messages, with what the scan or the index says about them */
	bool trust = have_list && sc.n > 0 && scan_from == 0 &&
		     sc.msgs[0].base_validity == list.uidvalidity;
	if (!use_index && exists)
		match_scan(k, nk, &sc, match, trust);
	/* where each known one is: list index -> scan index / index entry */
	size_t *where = malloc((list.n_ents + 1) * sizeof(*where));
	if (where == NULL) {
		r = -ENOMEM;
		goto out_match;
	}
	for (size_t i = 0; i <= list.n_ents; i++)
		where[i] = SIZE_MAX;
	for (size_t i = 0; i < sc.n; i++)
		if (match[i] != SIZE_MAX)
			where[k[match[i]].idx] = i;
	for (size_t i = 0; i < list.n_ents && r == 0; i++) {
		const struct uidlist_ent *e = &list.ents[i];
		if (e->expunged && !e->unlink_pending)
			continue;
		struct mmsg m = {0};
		m.uid = e->uid;
		uint64_t h = 0;
		hash_parse(uidlist_ent_uidl(&list, e), e->uidl_len, &h);
		m.hash = h;
		const struct mmsg *im = NULL;
		if (have_index) {
			struct mmsg key = {.uid = e->uid};
			im = bsearch(&key, imsgs, in, sizeof(*imsgs), mbox_msg_cmp);
			if (im != NULL && im->hash != h)
				im = NULL;
		}
		bool in_file;
		const struct mbox_scan_msg *sm = where[i] != SIZE_MAX ? &sc.msgs[where[i]] : NULL;
		if (use_index) {
			in_file = im != NULL;
		} else if (sm != NULL) {
			in_file = true;
		} else if (im != NULL && scan_from > 0 && im->from_off < scan_from) {
			in_file = true; /* before the part scanned again */
			sm = NULL;
		} else {
			in_file = false;
		}
		if (in_file && sm != NULL && sm->hash != h) {
			/* rewritten by another program, its X-UID kept: the new bytes */
			m.hash = sm->hash;
			changed = true;
		}
		if (in_file && sm != NULL) {
			m.from_off = sm->from_off;
			m.hdr_off = sm->hdr_off;
			m.end_off = sm->end_off;
			m.file_ours = sm->has_ours && sm->xuid == e->uid;
			m.file_flags = sm->flags;
			m.file_kw = keywords_mask(sm->keywords, ld->keywords, &ld->n_keywords,
						  !readonly, &kw_added);
			if (readonly && im != NULL) {
				/* not taken in: the next refresh must see them as changed */
				m.file_flags = im->file_flags;
				m.file_kw = im->file_kw;
			}
		} else if (in_file) {
			m.from_off = im->from_off;
			m.hdr_off = im->hdr_off;
			m.end_off = im->end_off;
			m.file_ours = im->file_ours;
			m.file_flags = im->file_flags;
			m.file_kw = im->file_kw;
		}
		if (e->expunged) {
			if (!in_file) {
				spool_remove(ld->path, e->uid); /* an expunged spooled append */
				continue;
			}
			m.state = MM_GONE;
			m.gone_uidl = strndup(uidlist_ent_base(&list, e), e->base_len);
			ml->sync_wanted = true;
			changed = true; /* keep the 'X' through the rewrite of the list */
		} else if (in_file) {
			m.state = MM_FILE;
			if (spool_exists(ld->path, e->uid))
				spool_remove(ld->path, e->uid); /* flushed before a crash */
		} else if (spool_exists(ld->path, e->uid)) {
			m.state = MM_SPOOL;
			ml->sync_wanted = true;
		} else {
			changed = true; /* removed behind our back */
			log_info("storage: mbox message gone path=%s uid=%u",
				 log_escape_str(ml->file), e->uid);
			continue;
		}
		struct load_ent le = {0};
		le.uid = e->uid;
		le.modseq = e->modseq;
		le.size = e->size;
		le.idate = e->idate;
		/* a version 1 record: derived, the same at every open */
		le.savedate = e->savedate > 0 ? e->savedate : savedate_clamp(e->idate);
		le.emailid = e->emailid != 0 ? e->emailid
					     : mailbox_emailid_from_base(uidlist_ent_base(&list, e),
									 e->base_len);
		le.flags = e->flags;
		le.keywords = e->keywords;
		le.known = true;
		if (in_file && sm != NULL && sm->hash != h)
			le.size = sm->size;
		le.key_len = (uint16_t)e->base_len;
		le.base_len = (uint16_t)e->base_len;
		/* flags edited in the file by someone else (mutt): what changed there wins (the
		 * system flags and the keywords each as a whole, as rescan) */
		if (!readonly && !ml->ours && m.state == MM_FILE && sm != NULL && im != NULL &&
		    (sm->flags != im->file_flags || m.file_kw != im->file_kw)) {
			if (sm->flags != im->file_flags)
				le.flags = sm->flags;
			if (m.file_kw != im->file_kw)
				le.keywords = m.file_kw;
			if (le.flags != e->flags || le.keywords != e->keywords) {
				le.modseq = ++highest;
				changed = true;
			}
		}
		if (m.state == MM_FILE && !readonly &&
		    (le.flags != m.file_flags || le.keywords != m.file_kw))
			ml->sync_wanted =
				true; /* acknowledged before a crash, not in the file yet */
		if (m.state != MM_GONE) {
			r = mailbox_load_add(ld, &le, uidlist_ent_base(&list, e));
			if (r == 0)
				r = uidl_set_add(&uidls, uidlist_ent_base(&list, e));
		}
		if (r == 0)
			r = msgs_grow(&msgs, n, &cap);
		if (r == 0)
			msgs[n++] = m;
		else
			free(m.gone_uidl);
	}
	/* 2. new messages, in file order */
	ld->first_recent_uid = uidnext;
	for (size_t i = 0; i < sc.n && r == 0 && !readonly; i++) {
		if (match[i] != SIZE_MAX)
			continue;
		const struct mbox_scan_msg *sm = &sc.msgs[i];
		uint32_t uid = adopt && sm->xuid != 0 ? sm->xuid : 0;
		if (uid == 0) {
			if (uidnext == UINT32_MAX) {
				r = -EOVERFLOW;
				break;
			}
			uid = uidnext++;
		}
		struct mmsg m = {0};
		m.uid = uid;
		m.state = MM_FILE;
		m.hash = sm->hash;
		m.from_off = sm->from_off;
		m.hdr_off = sm->hdr_off;
		m.end_off = sm->end_off;
		m.file_flags = sm->flags;
		m.file_kw =
			keywords_mask(sm->keywords, ld->keywords, &ld->n_keywords, true, &kw_added);
		m.file_ours = sm->has_ours && sm->xuid == uid;
		char uidl[MAIL_UIDL_MAX + 1];
		uidl_choose(sm, sm->hdr_hash, uid, uidl_set_has, &uidls, uidl);
		struct load_ent le = {0};
		le.uid = uid;
		le.modseq = ++highest;
		le.size = sm->size;
		le.idate = sm->idate >= 0 ? sm->idate : (int64_t)time(NULL);
		le.savedate = savedate_clamp((int64_t)time(NULL));
		le.emailid = mailbox_emailid_from_base(uidl, strlen(uidl));
		le.flags = sm->flags;
		le.keywords = m.file_kw;
		le.key_len = le.base_len = (uint16_t)strlen(uidl);
		r = mailbox_load_add(ld, &le, uidl);
		if (r == 0)
			r = uidl_set_add(&uidls, uidl);
		if (r == 0)
			r = msgs_grow(&msgs, n, &cap);
		if (r == 0)
			msgs[n++] = m;
		changed = true;
	}
	uidl_set_free(&uidls);
	if (r < 0)
		goto out_msgs;
	/* adopted X-UIDs may come in any order: keep both arrays by uid */
	if (n > 1)
		qsort(msgs, n, sizeof(*msgs), mbox_msg_cmp);
	if (ld->n_ents > 1)
		qsort(ld->ents, ld->n_ents, sizeof(*ld->ents), mbox_load_ent_cmp);
	if (kw_added && !readonly) {
		r = keywords_write(ld->path, ld->keywords, ld->n_keywords);
		if (r < 0)
			goto out_msgs;
	}
	ld->uidvalidity = uidvalidity;
	ld->uidnext = uidnext;
	ld->highest_modseq = highest;
	if (readonly) {
		memset(&ml->sig, 0, sizeof(ml->sig)); /* read it again at the next refresh */
	} else if (changed) {
		/* the list as memory has it now (with the expunged-but-in-file ones) */
		struct sbuf b = {0};
		r = mbox_list_build(&b, uidvalidity, uidnext, highest, ld->ents, ld->n_ents,
				    ld->pool, msgs, n);
		if (r == 0)
			r = state_file(ld->path, UIDLIST_FILE, file, sizeof(file));
		if (r == 0)
			r = uidlist_write(file, &b);
		sbuf_free(&b);
		if (r < 0)
			goto out_msgs;
	}
	if (!use_index && exists && !readonly)
		(void)mbox_index_write(ld->path, &cur, msgs, n);
	if (r == 0 && stat(file, &ml->list_st) < 0 &&
	    state_file(ld->path, UIDLIST_FILE, file, sizeof(file)) == 0)
		(void)stat(file, &ml->list_st);
	ml->msgs = msgs;
	ml->n = n;
	msgs = NULL;
	n = 0;
out_msgs:
	for (size_t i = 0; i < n; i++)
		free(msgs[i].gone_uidl);
	free(msgs);
	free(where);
out_match:
	free(match);
out_scan:
	mbox_scan_free(&sc);
out_k:
	free(k);
out_idx:
	free(imsgs);
out:
	uidlist_free(&list);
	return r;
}

int mbox_msg_cmp(const void *a, const void *b)
{
	const struct mmsg *x = a, *y = b;
	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

int mbox_load_ent_cmp(const void *a, const void *b)
{
	const struct load_ent *x = a, *y = b;
	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* The whole UID list: header, then '+' for every live record (ENTS, with keys in POOL) and
 * every expunged-but-in-file message of MSGS, in uid order, then 'X' for the latter. */
int mbox_list_build(struct sbuf *b, uint32_t uidvalidity, uint32_t uidnext, uint64_t highest,
		    const struct load_ent *ents, size_t n_ents, const char *pool,
		    const struct mmsg *msgs, size_t n_msgs)
{
	size_t n_gone = 0;
	for (size_t i = 0; i < n_msgs; i++)
		n_gone += msgs[i].state == MM_GONE;
	int r = uidlist_line_header(b, uidvalidity, uidnext, highest, n_ents + n_gone);
	size_t i = 0, j = 0;
	char hex[17];
	while (r == 0 && (i < n_ents || j < n_msgs)) {
		while (j < n_msgs && msgs[j].state != MM_GONE)
			j++;
		if (i < n_ents && (j >= n_msgs || ents[i].uid < msgs[j].uid)) {
			const struct load_ent *e = &ents[i++];
			const struct mmsg key = {.uid = e->uid};
			const struct mmsg *m =
				bsearch(&key, msgs, n_msgs, sizeof(*msgs), mbox_msg_cmp);
			hash_hex(m != NULL ? m->hash : 0, hex);
			r = uidlist_line_add(b, e->uid, e->modseq, e->size, e->idate, e->flags,
					     e->keywords, e->savedate, e->emailid, hex,
					     pool + e->key_off, e->base_len);
		} else if (j < n_msgs) {
			const struct mmsg *m = &msgs[j++];
			hash_hex(m->hash, hex);
			const char *u = m->gone_uidl != NULL ? m->gone_uidl : "gone";
			r = uidlist_line_add(b, m->uid, 0, 0, 0, 0, 0, 1, 1, hex, u, strlen(u));
		}
	}
	for (size_t g = 0; r == 0 && g < n_msgs; g++)
		if (msgs[g].state == MM_GONE)
			r = uidlist_line_expunge_unlink(b, msgs[g].uid, highest);
	return r;
}

static int mb_load(struct mailbox_load *ld)
{
	struct mb_load *ml = calloc(1, sizeof(*ml));
	if (ml == NULL)
		return -ENOMEM;
	ml->lock_fd = -1;
	ml->fd = -1;
	ld->backend = ml;
	ld->backend_free = mb_load_free;
	const struct mbox_opts *mo = store_mbox_opts(ld->store);
	if (mo == NULL || ld->name == NULL)
		return -EINVAL;
	int r = mbox_store_file_path(ld->store, ld->name, ml->file, sizeof(ml->file));
	if (r < 0)
		return r;
	struct stat st;
	if (strcmp(ld->name, "INBOX") != 0 && (stat(ml->file, &st) < 0 || !S_ISREG(st.st_mode)))
		return -ENOENT;
	r = storage_mkdir(ld->path, 0700);
	char spool[4096];
	if (r == 0)
		r = storage_path(spool, sizeof(spool), "%s/spool", ld->path);
	if (r == 0)
		r = storage_mkdir(spool, 0700);
	if (r < 0)
		return r;
	r = folder_lock(ld->path, ld->wait_lock, &ml->lock_fd);
	if (r < 0)
		return r;
	ml->fd = open(ml->file, O_RDWR | O_CLOEXEC);
	if (ml->fd < 0 && errno == EACCES)
		ml->fd = open(ml->file, O_RDONLY | O_CLOEXEC);
	if (ml->fd < 0 && errno != ENOENT)
		r = -errno;
	/* on the loop (mailbox_open: STATUS, tools) a lock is waited for briefly only; the
	 * thread pool (mailbox_open_async: SELECT, POP3) waits mbox_lock_timeout */
	unsigned lock_ms = mo->lock_timeout_ms;
	if (ld->on_loop && lock_ms > MBOX_LOOP_LOCK_WAIT_MS)
		lock_ms = MBOX_LOOP_LOCK_WAIT_MS;
	/* a rewrite cut short by a crash is undone first (it needs the write locks); one that
	 * was finished (or ended before its index was written) leaves a file our index does not
	 * describe: the differences are ours, the UID list says what they are */
	if (r == 0 && ml->fd >= 0) {
		r = mbox_sync_recover(ld->path, ml->file, ml->fd, lock_ms, false);
		if (r > 0) {
			ml->ours = true;
			r = 0;
		}
	}
	bool dotlocked = false;
	if (r == 0 && ml->fd >= 0)
		r = mbox_lock(ml->file, ml->fd, false, lock_ms, &dotlocked);
	if (r == 0) {
		r = load_scan(ld, ml, mo, false);
		if ((r == -ENOSPC || r == -EFBIG || r == -EDQUOT || r == -EIO || r == -EROFS) &&
		    !ld->list_rebuilt) {
			log_warn(
				"storage: mbox state not written, new messages wait path=%s err=%s",
				log_escape_str(ml->file), strerror(-r));
			for (unsigned i = 0; i < ld->n_keywords; i++) {
				free(ld->keywords[i]);
				ld->keywords[i] = NULL;
			}
			ld->n_keywords = 0;
			ld->n_ents = 0;
			ld->pool_len = 0;
			r = load_scan(ld, ml, mo, true);
		}
		if (ml->fd >= 0)
			mbox_unlock(ml->file, ml->fd, dotlocked);
	}
	if (r == 0)
		cache_scan(ld, ml);
	if (!ld->on_loop && ml->lock_fd >= 0) {
		close(ml->lock_fd);
		ml->lock_fd = -1;
	}
	return r;
}

/* ---- attach (loop) ------------------------------------------------------------------------ */

static int log_open(struct mailbox *mbox)
{
	struct mbox_be *be = mbox->backend;
	char file[4096];
	int r = state_file(mbox->path, UIDLIST_FILE, file, sizeof(file));
	if (r < 0)
		return r;
	if (be->log_fd >= 0)
		close(be->log_fd);
	be->log_fd = open(file, O_WRONLY | O_APPEND | O_CLOEXEC);
	return be->log_fd < 0 ? -errno : 0;
}

static void fs_event_cb(uv_fs_event_t *h, const char *filename, int events, int status);
static void timer_cb(uv_timer_t *t);
static void handle_close_cb(uv_handle_t *h)
{
	mailbox_handle_closed(h->data);
}

static void watch_start(struct mailbox *mbox)
{
	struct mbox_be *be = mbox->backend;
	uv_timer_init(mbox->loop, &be->timer);
	be->timer.data = mbox;
	mailbox_handle_opened(mbox);
	uv_fs_event_init(mbox->loop, &be->ev);
	be->ev.data = mbox;
	mailbox_handle_opened(mbox);
	be->watching = true;
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", be->file);
	char *slash = strrchr(dir, '/');
	if (slash != NULL && slash != dir)
		*slash = '\0';
	if (uv_fs_event_start(&be->ev, fs_event_cb, dir, 0) < 0)
		log_warn("storage: cannot watch dir=%s", log_escape_str(dir));
}

static bool same_stat(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Does a write to a file on DIR's file system that follows a stat of the file always get an
 * mtime of its own? Linux's multigrain timestamps (6.13 on, ext4 xfs btrfs tmpfs) do: once
 * the times were looked at, the next change takes them from the fine clock. Then a file whose
 * size and mtime are the ones we took under its lock is the file we read, even when it
 * changed a moment ago, and a refresh of a big mbox need not read it all again after every
 * change. Probed with an unnamed file: three write+fstat pairs in a row; with a coarse clock
 * (a jiffy, or a second) the mtime does not move between two of them. */
static bool fine_mtime_probe(const char *dir)
{
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		return false;
	struct stat a, b;
	bool fine = fstat(fd, &a) == 0;
	for (int i = 0; fine && i < 3; i++) {
		fine = pwrite(fd, "x", 1, 0) == 1 && fstat(fd, &b) == 0 &&
		       (b.st_mtim.tv_sec != a.st_mtim.tv_sec ||
			b.st_mtim.tv_nsec != a.st_mtim.tv_nsec);
		a = b;
	}
	close(fd);
	return fine;
}

static int mb_attach(struct mailbox *mbox, struct mailbox_load *ld)
{
	struct mb_load *ml = ld->backend;
	if (ml->lock_fd < 0) {
		int r = folder_lock(ld->path, false, &ml->lock_fd);
		if (r < 0)
			return -EAGAIN;
		char file[4096];
		struct stat st;
		r = state_file(ld->path, UIDLIST_FILE, file, sizeof(file));
		if (r < 0)
			return r;
		if (stat(file, &st) < 0 || !same_stat(&st, &ml->list_st)) {
			close(ml->lock_fd);
			ml->lock_fd = -1;
			return -EAGAIN;
		}
	}
	struct mbox_be *be = calloc(1, sizeof(*be));
	if (be == NULL)
		return -ENOMEM;
	be->log_fd = -1;
	be->cache_fd = -1;
	be->backup_fd = -1;
	pthread_rwlock_init(&be->rw, NULL);
	pthread_mutex_init(&be->sync_mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&be->sync_cv, &ca);
	pthread_condattr_destroy(&ca);
	be->lock_fd = ml->lock_fd;
	ml->lock_fd = -1;
	be->fd = ml->fd;
	ml->fd = -1;
	memcpy(be->file, ml->file, sizeof(be->file));
	const struct mbox_opts *mo = store_mbox_opts(mbox->store);
	be->mboxrd = mo->mboxrd;
	be->lock_timeout_ms = mo->lock_timeout_ms;
	be->msgs = ml->msgs;
	be->n = be->cap = ml->n;
	ml->msgs = NULL;
	ml->n = 0;
	be->sig = ml->sig;
	be->cache_map = ml->cache_map;
	be->cache_map_len = ml->cache_map_len;
	be->cache_end = ml->cache_end;
	ml->cache_map = NULL;
	mbox->backend = be;
	/* every entry is numbered and durable now, in UID order */
	int r = mailbox_take_load(mbox, ld);
	if (r < 0)
		return r;
	r = log_open(mbox);
	if (r < 0)
		return r;
	watch_start(mbox);
	/* the probe file lives in our state directory: it says something of the mbox only
	 * when both are on one file system */
	struct stat fst, dst;
	be->fine_mtime = stat(be->file, &fst) == 0 && stat(mbox->path, &dst) == 0 &&
			 fst.st_dev == dst.st_dev && fine_mtime_probe(mbox->path);
	if (ml->sync_wanted) {
		/* finish what a crash or a busy lock left undone: now when quick, else soon */
		be->sync_due = true;
		mbox_sync_start(mbox, true);
		if (be->sync_due)
			mbox_sync_schedule(mbox, SYNC_DELAY_MS);
	}
	return 0;
}

/* ---- UID list writing (loop) -------------------------------------------------------------- */

static void mb_sync_inline(struct mailbox *mbox);

static int list_compact(struct mailbox *mbox)
{
	struct mbox_be *be = mbox->backend;
	struct load_ent *ents = calloc(mbox->n_recs + 1, sizeof(*ents));
	if (ents == NULL)
		return -ENOMEM;
	for (uint32_t i = 0; i < mbox->n_recs; i++) {
		const struct mail_rec *rec = &mbox->recs[i];
		struct load_ent *e = &ents[i];
		e->uid = rec->uid;
		e->modseq = rec->modseq;
		e->size = rec->size;
		e->idate = rec->idate;
		e->savedate = rec->savedate;
		e->emailid = rec->emailid;
		e->flags = rec->flags;
		e->keywords = rec->keywords;
		e->key_off = rec->key_off;
		e->key_len = rec->key_len;
		e->base_len = rec->base_len;
	}
	struct sbuf b = {0};
	int r = mbox_list_build(&b, mbox->uidvalidity, mbox->uidnext, mbox->highest_modseq, ents,
				mbox->n_recs, mbox->pool, be->msgs, be->n);
	free(ents);
	char file[4096];
	if (r == 0)
		r = state_file(mbox->path, UIDLIST_FILE, file, sizeof(file));
	if (r == 0)
		r = uidlist_write(file, &b);
	sbuf_free(&b);
	if (r == 0) {
		be->n_log = 0;
		be->pending.len = 0;
		be->list_torn = false;
		r = log_open(mbox);
	}
	if (r == 0)
		mb_sync_inline(mbox);
	return r;
}

static int list_append(int fd, const char *data, size_t len, bool *torn_r)
{
	off_t end = lseek(fd, 0, SEEK_END);
	if (end < 0)
		return -errno;
	int r = storage_write_all(fd, data, len);
	if (r == 0 && fdatasync(fd) < 0)
		r = -errno;
	if (r < 0 && (ftruncate(fd, end) < 0 || fdatasync(fd) < 0))
		*torn_r = true;
	return r;
}

/* After a durable change: write it into the file now when that is quick. */
static void mb_sync_inline(struct mailbox *mbox)
{
	struct mbox_be *be = mbox->backend;
	if (be->freeing || be->in_commit || be->in_refresh || !be->sync_due)
		return;
	be->in_commit = true;
	mbox_sync_start(mbox, true);
	be->in_commit = false;
}

static int mb_commit(struct mailbox *mbox)
{
	struct mbox_be *be = mbox->backend;
	if (be->pending.len == 0) {
		mb_sync_inline(mbox);
		return 0;
	}
	size_t lines = 0;
	for (size_t i = 0; i < be->pending.len; i++)
		lines += be->pending.data[i] == '\n';
	bool append_only = be->append_only;
	be->append_only = false;
	if (append_only && (be->log_fd < 0 || be->list_torn)) {
		struct sbuf keep = be->pending;
		memset(&be->pending, 0, sizeof(be->pending));
		int r = list_compact(mbox);
		sbuf_free(&be->pending);
		be->pending = keep;
		if (r < 0)
			return r;
	}
	if (be->log_fd < 0 || be->list_torn ||
	    (!append_only && be->n_log + lines > LOG_COMPACT_MIN &&
	     be->n_log + lines > mbox->n_recs))
		return list_compact(mbox);
	int r = list_append(be->log_fd, be->pending.data, be->pending.len, &be->list_torn);
	if (r < 0) {
		log_error("storage: UID list append failed path=%s err=%s",
			  log_escape_str(mbox->path), strerror(-r));
		return r;
	}
	be->n_log += lines;
	be->pending.len = 0;
	mb_sync_inline(mbox);
	return 0;
}

/* commit without waiting (mailbox_private.h): flag records are written here and their
 * fdatasync goes to the group commit (a POP3 download marks every RETR \Seen); anything
 * else (expunges, a list to rewrite) is committed as mb_commit does. The file follows with
 * the next sync (the timer set_flags armed). */
static int mb_commit_nowait(struct mailbox *mbox)
{
	struct mbox_be *be = mbox->backend;
	if (be->pending.len == 0 || be->append_only || be->log_fd < 0 || be->list_torn)
		return mb_commit(mbox);
	size_t lines = 0;
	for (size_t i = 0; i < be->pending.len; i++)
		lines += be->pending.data[i] == '\n';
	if (be->n_log + lines > LOG_COMPACT_MIN && be->n_log + lines > mbox->n_recs)
		return mb_commit(mbox);
	off_t end = lseek(be->log_fd, 0, SEEK_END);
	if (end < 0)
		return -errno;
	int r = storage_write_all(be->log_fd, be->pending.data, be->pending.len);
	if (r < 0) {
		if (ftruncate(be->log_fd, end) < 0)
			be->list_torn = true;
		log_error("storage: UID list append failed path=%s err=%s",
			  log_escape_str(mbox->path), strerror(-r));
		return r;
	}
	int fd = dup(be->log_fd);
	if (fd < 0)
		r = fdatasync(be->log_fd) < 0 ? -errno : 0;
	else
		r = mailbox_sync_defer(mbox, fd, true);
	if (r < 0)
		return r;
	be->n_log += lines;
	be->pending.len = 0;
	return 0;
}

static size_t mb_pending_mark(struct mailbox *mbox)
{
	struct mbox_be *be = mbox->backend;
	return be->pending.len;
}

static void mb_discard(struct mailbox *mbox, size_t mark)
{
	struct mbox_be *be = mbox->backend;
	if (be->pending.len > mark)
		be->pending.len = mark;
}

/* ---- refresh: the file changed ------------------------------------------------------------ */

static void timer_cb(uv_timer_t *t)
{
	struct mailbox *mbox = t->data;
	struct mbox_be *be = mbox->backend;
	if (be == NULL)
		return;
	mailbox_ref(mbox);
	if (be->sync_due)
		mbox_sync_start(mbox, false);
	if (mbox->backend != NULL && be->refresh_due) {
		be->refresh_due = false;
		mbox->ops->refresh(mbox, false);
	}
	mailbox_unref(&mbox);
}

static void fs_event_cb(uv_fs_event_t *h, const char *filename, int events, int status)
{
	struct mailbox *mbox = h->data;
	struct mbox_be *be = mbox->backend;
	if (be == NULL)
		return;
	const char *base = strrchr(be->file, '/');
	base = base != NULL ? base + 1 : be->file;
	if (filename != NULL && status == 0 && strcmp(filename, base) != 0)
		return; /* another user's spool, a dotlock, ... */
	mbox_refresh_later(mbox, 10);
}

void mbox_refresh_later(struct mailbox *mbox, unsigned ms)
{
	struct mbox_be *be = mbox->backend;
	be->refresh_due = true;
	uint64_t due = uv_now(mbox->loop) + ms;
	if (!uv_is_active((uv_handle_t *)&be->timer) || be->timer_due > due) {
		be->timer_due = due;
		uv_timer_start(&be->timer, timer_cb, ms, 0);
	}
}

void mbox_sync_schedule(struct mailbox *mbox, unsigned ms)
{
	struct mbox_be *be = mbox->backend;
	if (be->fd < 0 && be->n == 0)
		return;
	be->sync_due = true;
	uint64_t due = uv_now(mbox->loop) + ms;
	if (!uv_is_active((uv_handle_t *)&be->timer) || be->timer_due > due) {
		be->timer_due = due;
		uv_timer_start(&be->timer, timer_cb, ms, 0);
	}
}

static bool rec_uidl_taken(void *ctx, const char *uidl)
{
	return mailbox_rec_find_base(ctx, uidl, strlen(uidl)) != NULL;
}

/* Re-read the file (its grown end, or all of it) and bring memory up to date. */
static int rescan(struct mailbox *mbox, const struct mbox_sig *cur)
{
	struct mbox_be *be = mbox->backend;
	struct mbox_scan sc = {0};
	uint64_t from = 0;
	size_t last = SIZE_MAX;
	int r = 0;
	/* the in-file messages as an index */
	size_t nin = 0;
	struct mmsg *in = malloc((be->n + 1) * sizeof(*in));
	if (in == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < be->n; i++)
		if (be->msgs[i].state != MM_SPOOL)
			in[nin++] = be->msgs[i];
	if (be->fd >= 0)
		r = scan_plan(be->fd, cur, true, &be->sig, in, nin, be->mboxrd, &sc, &from, &last);
	if (r < 0) {
		free(in);
		return r;
	}
	struct known *k = calloc(nin + 1, sizeof(*k));
	size_t *match = calloc(sc.n + 1, sizeof(*match));
	if (k == NULL || match == NULL) {
		r = -ENOMEM;
		goto out;
	}
	size_t nk = 0;
	for (size_t i = 0; i < nin; i++) {
		if (from > 0 && in[i].from_off < from)
			continue; /* before the part scanned: as it was */
		k[nk].uid = in[i].uid;
		k[nk].hash = in[i].hash;
		k[nk].gone = in[i].state == MM_GONE;
		k[nk].idx = i;
		nk++;
	}
	match_scan(k, nk, &sc, match,
		   from == 0 && sc.n > 0 && sc.msgs[0].base_validity == mbox->uidvalidity);
	size_t mark = be->pending.len;
	uint32_t uidnext0 = mbox->uidnext;
	uint64_t highest0 = mbox->highest_modseq;
	/* known messages not found: removed behind our back */
	uint32_t *removed = malloc((nk + 1) * sizeof(*removed));
	size_t n_removed = 0;
	size_t n_flagged = 0; /* flag changes taken in (each gets the next modseq) */
	if (removed == NULL) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t j = 0; j < nk && r == 0; j++) {
		if (k[j].matched)
			continue;
		removed[n_removed++] = k[j].uid;
		if (!k[j].gone)
			r = uidlist_line_expunge(&be->pending, k[j].uid, mbox->highest_modseq + 1);
	}
	/* flags changed in the file (mutt): what changed there wins, the system flags and the
	 * keywords each as a whole (mutt writes Status/X-Status from what it shows, and keeps an
	 * X-Keywords it does not edit); a change of ours that the file does not have yet and
	 * that the file did not overrule stays, for the next sync to write */
	struct flag_change {
		uint32_t uid;
		uint8_t flags, file_flags;
		uint32_t kw, file_kw;
		bool changed; /* our state changes (else only what we know of the file) */
		uint64_t modseq;
	} *fc = calloc(sc.n + 1, sizeof(*fc));
	size_t n_fc = 0;
	bool kw_added = false;
	unsigned n_kw0 = mbox->n_keywords;
	for (size_t i = 0; i < sc.n && r == 0 && fc != NULL; i++) {
		if (match[i] == SIZE_MAX)
			continue;
		const struct mmsg *m = &in[k[match[i]].idx];
		const struct mbox_scan_msg *sm = &sc.msgs[i];
		uint32_t kw = keywords_mask(sm->keywords, mbox->keywords, &mbox->n_keywords, true,
					    &kw_added);
		if (m->state != MM_FILE || (sm->flags == m->file_flags && kw == m->file_kw))
			continue;
		struct mail_rec *rec = mailbox_rec_find(mbox, m->uid);
		if (rec == NULL)
			continue;
		struct flag_change *c = &fc[n_fc++];
		c->uid = m->uid;
		c->file_flags = sm->flags;
		c->file_kw = kw;
		c->flags = sm->flags != m->file_flags ? sm->flags : (uint8_t)rec->flags;
		c->kw = kw != m->file_kw ? kw : rec->keywords;
		c->changed = c->flags != rec->flags || c->kw != rec->keywords;
		if (!c->changed)
			continue;
		c->modseq = mbox->highest_modseq + ++n_flagged;
		r = uidlist_line_flags(&be->pending, m->uid, c->modseq, c->flags, c->kw);
	}
	if (fc == NULL)
		r = -ENOMEM;
	if (r == 0 && kw_added)
		r = mb_save_keywords(mbox);
	/* new messages */
	struct mmsg *adds = calloc(sc.n + 1, sizeof(*adds));
	size_t n_adds = 0;
	if (adds == NULL && r == 0)
		r = -ENOMEM;
	uint64_t modseq = mbox->highest_modseq + n_flagged; /* the last one given so far */
	char hex[17];
	for (size_t i = 0; i < sc.n && r == 0; i++) {
		if (match[i] != SIZE_MAX)
			continue;
		const struct mbox_scan_msg *sm = &sc.msgs[i];
		if (mbox->uidnext == UINT32_MAX) {
			r = -EOVERFLOW;
			break;
		}
		uint32_t uid = mbox->uidnext;
		char uidl[MAIL_UIDL_MAX + 1];
		uidl_choose(sm, sm->hdr_hash, uid, rec_uidl_taken, mbox, uidl);
		uint32_t kw = keywords_mask(sm->keywords, mbox->keywords, &mbox->n_keywords, false,
					    &kw_added);
		struct mail_rec rec = {0};
		rec.uid = uid;
		rec.modseq = ++modseq;
		rec.size = sm->size;
		rec.idate = sm->idate >= 0 ? sm->idate : (int64_t)time(NULL);
		rec.savedate = (uint32_t)savedate_clamp((int64_t)time(NULL));
		rec.emailid = mailbox_emailid_from_base(uidl, strlen(uidl));
		rec.flags = sm->flags;
		rec.keywords = kw;
		rec.key_len = rec.base_len = (uint16_t)strlen(uidl);
		r = mailbox_rec_add(mbox, &rec, uidl);
		if (r < 0)
			break;
		hash_hex(sm->hash, hex);
		r = uidlist_line_add(&be->pending, uid, rec.modseq, rec.size, rec.idate, rec.flags,
				     kw, rec.savedate, rec.emailid, hex, uidl, strlen(uidl));
		struct mmsg *m = &adds[n_adds++];
		m->uid = uid;
		m->state = MM_FILE;
		m->hash = sm->hash;
		m->from_off = sm->from_off;
		m->hdr_off = sm->hdr_off;
		m->end_off = sm->end_off;
		m->file_flags = sm->flags;
		m->file_kw = kw;
		m->file_ours = false;
	}
	if (r == 0)
		r = mb_commit(mbox);
	if (r < 0) {
		/* nothing shown that is not durable: try again at the next refresh */
		mb_discard(mbox, mark);
		if (mbox->uidnext > uidnext0)
			mailbox_rec_drop_from(mbox, uidnext0);
		mbox->highest_modseq = highest0;
		while (mbox->n_keywords > n_kw0)
			free(mbox->keywords[--mbox->n_keywords]);
		free(adds);
		free(fc);
		free(removed);
		goto out;
	}
	/* durable: memory, then the views */
	if (n_removed > 0 && modseq == highest0)
		modseq = highest0 + 1; /* the expunges' ('-' records carry it) */
	mbox->highest_modseq = modseq;
	bool resized = false;
	for (size_t i = 0; i < sc.n; i++) {
		if (match[i] == SIZE_MAX)
			continue;
		struct mmsg *m = mbox_msg_find(be, in[k[match[i]].idx].uid);
		const struct mbox_scan_msg *sm = &sc.msgs[i];
		if (m == NULL)
			continue;
		if (m->hash != sm->hash) {
			/* rewritten by another program, its X-UID kept: the new bytes */
			struct mail_rec *rec = mailbox_rec_find(mbox, m->uid);
			m->hash = sm->hash;
			if (rec != NULL) {
				rec->size = sm->size;
				rec->cache_len = 0;
			}
			resized = true;
		}
		m->from_off = sm->from_off;
		m->hdr_off = sm->hdr_off;
		m->end_off = sm->end_off;
		m->file_ours = sm->has_ours && sm->xuid == m->uid;
	}
	bool resync = false;
	for (size_t i = 0; i < n_fc; i++) {
		struct mail_rec *rec = mailbox_rec_find(mbox, fc[i].uid);
		struct mmsg *m = mbox_msg_find(be, fc[i].uid);
		if (rec == NULL || m == NULL)
			continue;
		m->file_flags = fc[i].file_flags;
		m->file_kw = fc[i].file_kw;
		resync |= fc[i].flags != fc[i].file_flags || fc[i].kw != fc[i].file_kw;
		if (!fc[i].changed)
			continue;
		rec->flags = fc[i].flags;
		rec->keywords = fc[i].kw;
		rec->modseq = fc[i].modseq;
		mailbox_announce_flags(mbox, NULL, fc[i].uid);
	}
	if (resync)
		mbox_sync_schedule(mbox, SYNC_DELAY_MS); /* what the file lacks of ours */
	for (size_t i = 0; i < n_removed; i++) {
		struct mmsg *m = mbox_msg_find(be, removed[i]);
		bool gone = m != NULL && m->state == MM_GONE;
		mbox_msg_remove(be, removed[i]);
		if (!gone) {
			log_info("storage: mbox message removed outside path=%s uid=%u",
				 log_escape_str(be->file), removed[i]);
			mailbox_rec_remove(mbox, removed[i]);
		}
	}
	for (size_t i = 0; i < n_adds; i++)
		(void)msgs_add(be, &adds[i]);
	be->sig = *cur;
	if (resized)
		(void)list_compact(mbox); /* sizes and hashes are in the '+' records */
	(void)mbox_index_write(mbox->path, &be->sig, be->msgs, be->n);
	mbox->rescans++;
	if (n_adds > 0)
		mailbox_announce_arrivals(mbox);
	free(adds);
	free(fc);
	free(removed);
out:
	free(k);
	free(match);
	free(in);
	mbox_scan_free(&sc);
	return r;
}

/* A file changed this recently may change again within its timestamp granularity (the
 * kernel's coarse clock; whole seconds on some file systems) without its mtime moving: it is
 * read again at each refresh until it is older (as Maildir's directories are) — unless its
 * file system has fine timestamps after a stat (fine_mtime). */
static bool mtime_recent(const struct mbox_sig *sig)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	long long age = (long long)(now.tv_sec - sig->mtime_sec) * 1000000000LL +
			(now.tv_nsec - sig->mtime_nsec);
	return age < (sig->mtime_nsec != 0 ? 100000000LL : 2000000000LL);
}

static int mb_refresh_locked(struct mailbox *mbox, bool force);

static int mb_refresh(struct mailbox *mbox, bool force)
{
	struct mbox_be *be = mbox->backend;
	if (be == NULL || mbox->gone || be->in_refresh)
		return 0;
	/* a sync on the pool: read the file before it begins, or after it (its result taken in
	 * first); while it runs, when it ends */
	int g = mbox_sync_gate(mbox, MBOX_GATE_WAIT_MS);
	if (g < 0) {
		log_debug("storage: mbox refresh after the running sync path=%s",
			  log_escape_str(be->file));
		be->refresh_after_sync = true;
		return 0;
	}
	struct mbox_sig before = be->sig;
	/* no sync while the refresh holds the read lock and describes the file as it was when
	 * it took it: one inside rescan's commit would take the write lock over ours (one open
	 * file description), rewrite the file, and we would then store the offsets we had read */
	be->in_refresh = true;
	int rr = mb_refresh_locked(mbox, force);
	be->in_refresh = false;
	if (g > 0)
		mbox_sync_ungate(mbox, !same_sig(&before, &be->sig));
	return rr;
}

static int mb_refresh_locked(struct mailbox *mbox, bool force)
{
	struct mbox_be *be = mbox->backend;
	struct stat st;
	struct mbox_sig cur = {0};
	if (stat(be->file, &st) < 0) {
		if (errno != ENOENT)
			return -errno;
	} else {
		mbox_sig_from_stat(&st, &cur);
	}
	if (!force && same_sig(&cur, &be->sig) && (be->fine_mtime || !mtime_recent(&cur)))
		return 0;
	if (cur.ino != be->sig.ino || cur.dev != be->sig.dev || be->fd < 0) {
		/* replaced (or created, or removed): read the new file */
		if (be->fd >= 0)
			close(be->fd);
		be->fd = -1;
		if (cur.ino != 0) {
			be->fd = open(be->file, O_RDWR | O_CLOEXEC);
			if (be->fd < 0 && errno == EACCES)
				be->fd = open(be->file, O_RDONLY | O_CLOEXEC);
			if (be->fd < 0)
				return -errno;
			if (fstat(be->fd, &st) == 0)
				mbox_sig_from_stat(&st, &cur);
		}
		struct mbox_sig none = {0};
		be->sig = none; /* a whole scan */
	}
	bool dotlocked = false;
	int r = be->fd >= 0 ? mbox_lock(be->file, be->fd, false, 0, &dotlocked) : 0;
	if (r == -EBUSY) {
		/* an MTA is writing: look again in a moment */
		mbox_refresh_later(mbox, REFRESH_RETRY_MS);
		return 0;
	}
	if (r < 0)
		return r;
	if (be->fd >= 0 && fstat(be->fd, &st) == 0)
		mbox_sig_from_stat(&st, &cur);
	r = rescan(mbox, &cur);
	if (be->fd >= 0)
		mbox_unlock(be->file, be->fd, dotlocked);
	if (r < 0 && r != -ENOMEM) {
		/* reading needs no space: what could not be recorded waits, nothing of it is
		 * shown, and the next refresh reads again */
		if (!be->refresh_failed)
			log_warn("storage: mbox changes not recorded yet path=%s err=%s",
				 log_escape_str(be->file), strerror(-r));
		be->refresh_failed = true;
		return 0;
	}
	if (r == 0 && be->refresh_failed) {
		log_info("storage: mbox changes recorded again path=%s", log_escape_str(be->file));
		be->refresh_failed = false;
	}
	return r;
}

/* ---- changes ------------------------------------------------------------------------------ */

static int mb_set_flags(struct mailbox *mbox, struct mail_rec *rec, unsigned flags,
			uint32_t keywords)
{
	struct mbox_be *be = mbox->backend;
	int r = uidlist_line_flags(&be->pending, rec->uid, rec->modseq, flags, keywords);
	if (r == 0) {
		/* a small sync runs at the commit; a big one waits for SYNC_DELAY_FLAGS_MS
		 * without flag changes (a POP3 download marks every message \Seen: one
		 * rewrite at its end, not one every few RETRs) */
		be->sync_due = true;
		be->timer_due = uv_now(mbox->loop) + SYNC_DELAY_FLAGS_MS;
		uv_timer_start(&be->timer, timer_cb, SYNC_DELAY_FLAGS_MS, 0);
	}
	return r;
}

static int mb_expunge(struct mailbox *mbox, struct mail_rec *rec)
{
	struct mbox_be *be = mbox->backend;
	be->append_only = true;
	return uidlist_line_expunge_unlink(&be->pending, rec->uid, mbox->highest_modseq + 1);
}

static int mb_unlink(struct mailbox *mbox, struct mail_rec *rec)
{
	struct mbox_be *be = mbox->backend;
	struct mmsg *m = mbox_msg_find(be, rec->uid);
	if (m == NULL)
		return 0;
	if (m->state == MM_SPOOL) {
		spool_remove(mbox->path, rec->uid);
		mbox_msg_remove(be, rec->uid);
		return 0;
	}
	if (m->state == MM_FILE) {
		m->state = MM_GONE;
		m->gone_uidl = strndup(mailbox_rec_key(mbox, rec), rec->base_len);
	}
	mbox_sync_schedule(mbox, SYNC_DELAY_MS);
	return 0;
}

/* ---- append ------------------------------------------------------------------------------- */

static unsigned spool_counter;

static int mb_append_begin(struct mailbox *mbox, struct mail_append *a)
{
	int r = storage_path(a->tmp_path, sizeof(a->tmp_path), "%s/spool/tmp.%d.%u", mbox->path,
			     (int)getpid(), ++spool_counter);
	if (r < 0)
		return r;
	a->fd = open(a->tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	return a->fd < 0 ? -errno : 0;
}

static int mb_append_write(struct mail_append *a, const void *data, size_t len)
{
	int r = storage_write_all(a->fd, data, len);
	if (r == 0)
		a->size += len;
	return r;
}

static void mb_append_abort(struct mail_append *a)
{
	if (a->fd >= 0)
		close(a->fd);
	a->fd = -1;
	if (a->tmp_path[0] != '\0')
		unlink(a->tmp_path);
	a->tmp_path[0] = '\0';
}

/* Spool the message in RAW_FD (as a client sent it) for MBOX as UID: its stored form (LF line
 * ends, our header names dropped, From_ lines quoted) into spool/UID, fsynced, with the
 * directory. Returns its served CRLF size, content hash and header hash. */
static int spool_write(struct mailbox *mbox, int raw_fd, uint32_t uid, uint64_t *size_r,
		       uint64_t *hash_r, uint64_t *hdr_hash_r)
{
	struct mbox_be *be = mbox->backend;
	char path[4096], tmp[4096];
	int r = storage_path(path, sizeof(path), "%s/spool/%u", mbox->path, uid);
	if (r == 0)
		r = storage_path(tmp, sizeof(tmp), "%s/spool/new.%u", mbox->path, uid);
	if (r < 0)
		return r;
	int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	r = mbox_spool_convert(raw_fd, fd, be->mboxrd, size_r, hash_r, hdr_hash_r);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r == 0)
		r = storage_fsync_parent(path);
	if (r < 0)
		unlink(tmp);
	return r;
}

/* A new record for a spooled message (memory + queued UID-list line). */
static int spool_add_rec(struct mailbox *mbox, uint32_t uid, uint64_t size, uint64_t hash,
			 uint64_t hdr_hash, int64_t idate, unsigned flags, uint32_t keywords,
			 uint64_t emailid)
{
	struct mbox_be *be = mbox->backend;
	char uidl[MAIL_UIDL_MAX + 1], hex[17];
	/* ours from the start (written as X-UIDL with it): Dovecot's %08Xu%08Xv, unique in
	 * the folder and never that of the message a copy came from */
	(void)hdr_hash;
	snprintf(uidl, sizeof(uidl), "%08X%08X", uid, mbox->uidvalidity);
	if (rec_uidl_taken(mbox, uidl))
		snprintf(uidl, sizeof(uidl), "%08X%08X-%016" PRIx64, uid, mbox->uidvalidity, hash);
	struct mail_rec rec = {0};
	rec.uid = uid;
	rec.modseq = mbox->highest_modseq + 1;
	rec.size = size;
	rec.idate = idate;
	rec.savedate = (uint32_t)savedate_clamp((int64_t)time(NULL)); /* saved here now */
	rec.emailid = emailid != 0 ? emailid : mailbox_emailid_from_base(uidl, strlen(uidl));
	rec.flags = (uint8_t)(flags & MAIL_FLAGS_SETTABLE);
	rec.keywords = keywords;
	rec.key_len = rec.base_len = (uint16_t)strlen(uidl);
	hash_hex(hash, hex);
	int r = uidlist_line_add(&be->pending, uid, rec.modseq, size, idate, rec.flags, keywords,
				 rec.savedate, rec.emailid, hex, uidl, strlen(uidl));
	if (r < 0)
		return r;
	r = mailbox_rec_add(mbox, &rec, uidl);
	if (r < 0)
		return r;
	mbox->highest_modseq = rec.modseq;
	struct mmsg m = {0};
	m.uid = uid;
	m.state = MM_SPOOL;
	m.hash = hash;
	r = msgs_add(be, &m);
	if (r < 0)
		mailbox_rec_drop_from(mbox, uid);
	return r;
}

static int mb_append_finish(struct mail_append *a, uint32_t *uid_r)
{
	struct mailbox *mbox = a->mbox;
	struct mbox_be *be = mbox->backend;
	if (mbox->uidnext == UINT32_MAX)
		return -EOVERFLOW;
	uint32_t uid = mbox->uidnext;
	uint64_t size, hash, hdr_hash;
	size_t mark = be->pending.len;
	uint64_t highest0 = mbox->highest_modseq;
	int r = spool_write(mbox, a->fd, uid, &size, &hash, &hdr_hash);
	if (r < 0)
		return r;
	int64_t idate = a->idate > 0 ? a->idate : (int64_t)time(NULL);
	r = spool_add_rec(mbox, uid, size, hash, hdr_hash, idate, a->flags, a->keywords, 0);
	if (r == 0) {
		/* durable in the spool with its record; into the file at once when quick */
		mbox_sync_schedule(mbox, SYNC_DELAY_MS);
		r = mb_commit(mbox);
		if (r < 0) {
			mb_discard(mbox, mark);
			mbox_msg_remove(be, uid);
			mailbox_rec_drop_from(mbox, uid);
			mbox->highest_modseq = highest0;
		}
	}
	if (r < 0) {
		spool_remove(mbox->path, uid);
		return r;
	}
	mb_append_abort(a); /* the raw file */
	*uid_r = uid;
	return 0;
}

/* The two steps of mail_append_finish_async (mailbox_private.h): the conversion into the
 * spool and its fsync on the thread pool (group commit), then the name, the record, the file.
 * Between the two, A->tmp_path is the converted file, A->crlf_size its served size and
 * A->size its content hash. */
static int mb_append_prepare(struct mail_append *a)
{
	struct mailbox *mbox = a->mbox;
	struct mbox_be *be = mbox->backend;
	char path[4096];
	int r = storage_path(path, sizeof(path), "%s/spool/new.%d.%u", mbox->path, (int)getpid(),
			     ++spool_counter);
	if (r < 0)
		return r;
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	uint64_t size, hash, hdr_hash;
	r = mbox_spool_convert(a->fd, fd, be->mboxrd, &size, &hash, &hdr_hash);
	if (r < 0) {
		close(fd);
		unlink(path);
		return r;
	}
	mb_append_abort(a); /* the raw file */
	int sync_fd = dup(fd);
	a->fd = fd;
	snprintf(a->tmp_path, sizeof(a->tmp_path), "%s", path);
	a->crlf_size = size;
	a->size = hash;
	if (sync_fd < 0)
		return fsync(fd) < 0 ? -errno : 0;
	return mailbox_sync_defer(mbox, sync_fd, false);
}

static int mb_append_finish_nowait(struct mail_append *a, uint32_t *uid_r)
{
	struct mailbox *mbox = a->mbox;
	struct mbox_be *be = mbox->backend;
	if (mbox->uidnext == UINT32_MAX)
		return -EOVERFLOW;
	uint32_t uid = mbox->uidnext;
	char path[4096];
	int r = storage_path(path, sizeof(path), "%s/spool/%u", mbox->path, uid);
	if (r == 0 && rename(a->tmp_path, path) < 0)
		r = -errno;
	if (r == 0)
		r = storage_fsync_parent(path);
	if (r < 0)
		return r;
	a->tmp_path[0] = '\0'; /* renamed: nothing for append_abort to remove */
	size_t mark = be->pending.len;
	uint64_t highest0 = mbox->highest_modseq;
	int64_t idate = a->idate > 0 ? a->idate : (int64_t)time(NULL);
	r = spool_add_rec(mbox, uid, a->crlf_size, a->size, 0, idate, a->flags, a->keywords, 0);
	if (r == 0) {
		mbox_sync_schedule(mbox, SYNC_DELAY_MS);
		r = mb_commit(mbox);
		if (r < 0) {
			mb_discard(mbox, mark);
			mbox_msg_remove(be, uid);
			mailbox_rec_drop_from(mbox, uid);
			mbox->highest_modseq = highest0;
		}
	}
	if (r < 0) {
		spool_remove(mbox->path, uid);
		return r;
	}
	if (a->fd >= 0)
		close(a->fd);
	a->fd = -1;
	*uid_r = uid;
	return 0;
}

/* ---- copy / move -------------------------------------------------------------------------- */

static int mb_open_msg(struct mailbox *mbox, const struct mail_rec *rec, int *fd_r,
		       bool *needs_crlf_r);

static int mb_copy(struct mailbox *src, struct mail_rec *srec, struct mailbox *dst, unsigned flags,
		   uint32_t keywords, bool move, uint32_t *uid_r)
{
	struct mbox_be *dbe = dst->backend;
	if (dst->uidnext == UINT32_MAX)
		return -EOVERFLOW;
	int fd;
	bool crlf;
	int r = src->ops->open_msg(src, srec, &fd, &crlf);
	if (r < 0)
		return r;
	uint32_t uid = dst->uidnext;
	uint64_t size, hash, hdr_hash;
	r = spool_write(dst, fd, uid, &size, &hash, &hdr_hash);
	close(fd);
	if (r < 0)
		return r;
	uint32_t suid = srec->uid;
	int64_t idate = srec->idate;
	uint64_t emailid = srec->emailid; /* RFC 8474: the same message, the same EMAILID */
	r = spool_add_rec(dst, uid, size, hash, hdr_hash, idate, flags, keywords, emailid);
	if (r < 0) {
		spool_remove(dst->path, uid);
		return r;
	}
	if (move) {
		struct mbox_be *sbe = src->backend;
		struct mail_rec *s = mailbox_rec_find(src, suid);
		r = s != NULL ? uidlist_line_expunge_unlink(&sbe->pending, suid,
							    src->highest_modseq + 1)
			      : 0;
		if (r == 0 && s != NULL) {
			sbe->append_only = true;
			mb_unlink(src, s);
		}
	}
	(void)dbe;
	*uid_r = uid;
	mbox_sync_schedule(dst, SYNC_DELAY_MS);
	return r;
}

static int mb_copy_undo(struct mailbox *src, uint32_t suid, struct mailbox *dst,
			struct mail_rec *drec, bool move)
{
	struct mbox_be *dbe = dst->backend;
	spool_remove(dst->path, drec->uid);
	mbox_msg_remove(dbe, drec->uid);
	if (move) {
		struct mbox_be *sbe = src->backend;
		struct mmsg *m = mbox_msg_find(sbe, suid);
		if (m != NULL && m->state == MM_GONE) {
			m->state = MM_FILE;
			free(m->gone_uidl);
			m->gone_uidl = NULL;
		}
	}
	return 0;
}

/* ---- reading ------------------------------------------------------------------------------ */

static int mb_open_msg(struct mailbox *mbox, const struct mail_rec *rec, int *fd_r,
		       bool *needs_crlf_r)
{
	struct mbox_be *be = mbox->backend;
	struct mmsg *m = mbox_msg_find(be, rec->uid);
	if (m == NULL)
		return -ENOENT;
	*needs_crlf_r = true;
	if (m->state == MM_SPOOL) {
		char path[4096];
		int r = storage_path(path, sizeof(path), "%s/spool/%u", mbox->path, rec->uid);
		if (r < 0)
			return r;
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			*fd_r = fd;
			return 0;
		}
		if (errno != ENOENT)
			return -errno;
		/* moved into the file meanwhile: the state comes with the sync's answer */
		return -ENOENT;
	}
	if (m->state != MM_FILE || be->fd < 0)
		return -ENOENT;
	/* the served bytes into an unnamed file: the mbox may be rewritten while the
	 * client reads, the copy stays */
	int out = m->end_off - m->hdr_off <= MBOX_MEMFD_MAX ? memfd_create("mbox-msg", MFD_CLOEXEC)
							    : -1;
	if (out < 0) /* big (or no memfd): on disk, the page cache may drop it */
		out = open(mbox->path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (out < 0)
		return -errno;
	uint64_t hash = 0;
	pthread_rwlock_rdlock(&be->rw);
	int r = mbox_copy_served(be->fd, be->backup_fd, be->split, be->split_off, m->hdr_off,
				 m->end_off, be->mboxrd, out, &hash);
	pthread_rwlock_unlock(&be->rw);
	if (r == 0 && hash != m->hash) {
		/* the file changed under us: the caller refreshes and tries again */
		log_info("storage: mbox message changed while read path=%s uid=%u",
			 log_escape_str(be->file), rec->uid);
		r = -ENOENT;
	}
	if (r == 0 && lseek(out, 0, SEEK_SET) < 0)
		r = -errno;
	if (r < 0) {
		close(out);
		return r == -EIO ? -ENOENT : r;
	}
	*fd_r = out;
	return 0;
}

/* ---- free --------------------------------------------------------------------------------- */

static void mb_free(struct mailbox *mbox)
{
	struct mbox_be *be = mbox->backend;
	be->freeing = true;
	if (be->pending.len > 0)
		mb_commit(mbox);
	/* the last user closed it: bring the file up to date now when that is quick (else
	 * the next open does it; our state has it all) */
	if (!be->sync_running && be->fd >= 0) {
		be->sync_due = true;
		mbox_sync_start(mbox, true);
	}
	if (be->log_fd >= 0)
		close(be->log_fd);
	if (be->lock_fd >= 0)
		close(be->lock_fd);
	if (be->cache_fd >= 0)
		close(be->cache_fd);
	if (be->fd >= 0)
		close(be->fd);
	if (be->backup_fd >= 0)
		close(be->backup_fd);
	if (be->cache_map != NULL)
		munmap(be->cache_map, be->cache_map_len);
	for (size_t i = 0; i < be->n; i++)
		free(be->msgs[i].gone_uidl);
	free(be->msgs);
	be->msgs = NULL;
	be->n = 0;
	sbuf_free(&be->pending);
	pthread_rwlock_destroy(&be->rw);
	pthread_mutex_destroy(&be->sync_mu);
	pthread_cond_destroy(&be->sync_cv);
	mbox->backend = NULL;
	if (be->watching) {
		uv_fs_event_stop(&be->ev);
		uv_timer_stop(&be->timer);
		uv_close((uv_handle_t *)&be->ev, handle_close_cb);
		uv_close((uv_handle_t *)&be->timer, handle_close_cb);
	}
	mbox->backend_mem = be;
}

void mbox_backend_renamed(struct mailbox *mbox)
{
	struct mbox_be *be = mbox->backend;
	if (be == NULL)
		return;
	if (mbox_store_file_path(mbox->store, mbox->name, be->file, sizeof(be->file)) < 0)
		log_warn("storage: renamed mbox path too long folder=%s",
			 log_escape_str(mbox->name));
	if (be->watching) {
		uv_fs_event_stop(&be->ev);
		char dir[4096];
		snprintf(dir, sizeof(dir), "%s", be->file);
		char *slash = strrchr(dir, '/');
		if (slash != NULL && slash != dir)
			*slash = '\0';
		(void)uv_fs_event_start(&be->ev, fs_event_cb, dir, 0);
	}
}

const struct mailbox_backend_ops mbox_backend_ops = {
	.name = "mbox",
	.load = mb_load,
	.attach = mb_attach,
	.refresh = mb_refresh,
	.set_flags = mb_set_flags,
	.expunge = mb_expunge,
	.unlink = mb_unlink,
	.commit = mb_commit,
	.pending_mark = mb_pending_mark,
	.discard = mb_discard,
	.append_begin = mb_append_begin,
	.append_write = mb_append_write,
	.append_finish = mb_append_finish,
	.append_abort = mb_append_abort,
	.copy = mb_copy,
	.copy_undo = mb_copy_undo,
	.open_msg = mb_open_msg,
	.save_keywords = mb_save_keywords,
	.cache_put = mb_cache_put,
	.cache_get = mb_cache_get,
	.pop3_ret_read = mb_pop3_ret_read,
	.pop3_ret_write = mb_pop3_ret_write,
	.free = mb_free,
	.commit_nowait = mb_commit_nowait,
	.append_prepare = mb_append_prepare,
	.append_finish_nowait = mb_append_finish_nowait,
};
