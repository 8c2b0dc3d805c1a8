/* maildir — the Maildir++ back-end (storage/mailbox_private.h).
 *
 * Files per folder directory:
 *   new/ cur/ tmp/         the standard Maildir directories. A file name is
 *                          BASE[:2,INFO]; BASE never changes, INFO holds the flags
 *                          (D F P R S T) and keywords (a..z = keyword 0..25).
 *   mailkeep-uidlist       BASE -> UID, modseq, CRLF size, internal date (uidlist.h)
 *   mailkeep-keywords      "IDX NAME" per line, rewritten atomically
 *   mailkeep-cache         parsed-message blobs keyed by BASE (append-only, checksummed)
 *   mailkeep-pop3-retrieved  UID -> time of the first POP3 RETR (pop3_retrieved.h)
 *
 * Names we create: "<sec>.M<usec>P<pid>Q<n>.<host>,S=<file size>,W=<CRLF size>", so a later
 * scan knows the CRLF size from the name alone (as Dovecot does). A message delivered from
 * outside without W= is read once to count its bare LFs; the result is kept in the UID list.
 *
 * Order on append/copy: the file is written in tmp/ and fsynced, renamed into cur/, the
 * directory fsynced, then its UID record appended to the UID list and fsynced; only then is
 * the UID returned. A crash before the UID record leaves a file the next scan numbers above
 * every UID ever handed out (UIDNEXT is in the list), so no UID is ever reused.
 */
#include "mailbox_private.h"
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
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define KEYWORDS_FILE "mailkeep-keywords"
/* The last UIDVALIDITY given out, kept apart from the UID list so that a lost list still
 * gets a strictly greater one (time alone could repeat within a second). */
#define UIDVALIDITY_FILE "mailkeep-uidvalidity"
#define CACHE_FILE       "mailkeep-cache"
/* Compact the UID list when the log outgrows the base this much. */
#define LOG_COMPACT_MIN 1000
/* A directory changed this recently may change again within its timestamp granularity:
 * keep re-reading it on refresh until it is older. 2 s for file systems with whole-second
 * times; with sub-second times (ext4, xfs, btrfs, tmpfs) the kernel's coarse clock ticks at
 * most every 10 ms, so 100 ms is safe there. */
#define DIR_DIRTY_NS      2000000000LL
#define DIR_DIRTY_NS_FINE 100000000LL
/* at most one fs-event re-read per folder this often (ms) */
#define DEBOUNCE_MS   10
#define SCAN_RETRIES  5
#define MISSING_LOOKS 3
/* Tries to reach a file that another program keeps renaming (each after a fresh look). */
#define LOCATE_TRIES 10

/* Names our own changes will be reported under by the fs events (ring of hashes). */
#define OWN_EVENTS 256

struct maildir {
	int lock_fd;
	int log_fd;
	struct sbuf pending; /* UID list lines not yet written */
	bool list_torn;   /* the list's end may hold a partial record: rewrite before appending */
	bool append_only; /* pending holds expunge records: memory is not the state to write */
	bool refresh_deferred; /* a re-read's changes wait for the UID list (logged once) */
	bool append_failed;    /* the last append failed (logged once) */
	bool fsync_cur, fsync_new;
	size_t n_log;
	struct timespec mtime_new, mtime_cur;
	bool dirty_new, dirty_cur; /* re-read that directory at the next refresh */
	uv_fs_event_t ev_new, ev_cur;
	uv_timer_t debounce;
	uint64_t event_refresh_at; /* uv_now() of the last re-read an fs event caused */
	bool watching;
	bool watch_ok;     /* both directories watched: our own changes need no re-read */
	bool watch_paused; /* events off while expunged files are unlinked on the pool */
	bool own_changed;  /* we renamed/linked/unlinked since the last commit */
	bool clean_before; /* ... and the directories were as last seen just before */
	uint32_t own[OWN_EVENTS];
	unsigned own_next;
	/* cache */
	int cache_fd;
	char *cache_map;
	size_t cache_map_len;
	uint64_t cache_end;
	size_t cache_garbage;
};

/* ---- names -------------------------------------------------------------------------------- */

static unsigned flag_from_letter(char c, uint8_t *bflags)
{
	switch (c) {
	case 'D':
		return MAIL_DRAFT;
	case 'F':
		return MAIL_FLAGGED;
	case 'R':
		return MAIL_ANSWERED;
	case 'S':
		return MAIL_SEEN;
	case 'T':
		return MAIL_DELETED;
	case 'P':
		*bflags |= MREC_PASSED;
		return 0;
	default:
		return 0;
	}
}

/* Split NAME into base and info. */
static void name_parse(const char *name, size_t len, uint16_t *base_len_r, uint8_t *flags_r,
		       uint32_t *kw_r, uint8_t *bflags_r)
{
	const char *colon = memchr(name, ':', len);
	size_t base_len = colon ? (size_t)(colon - name) : len;
	uint8_t flags = 0, bflags = 0;
	uint32_t kw = 0;
	if (colon != NULL && len - base_len >= 3 && colon[1] == '2' && colon[2] == ',') {
		for (size_t i = base_len + 3; i < len; i++) {
			char c = name[i];
			if (c >= 'a' && c <= 'z')
				kw |= 1u << (c - 'a');
			else
				flags |= (uint8_t)flag_from_letter(c, &bflags);
		}
	}
	*base_len_r = (uint16_t)(base_len > UINT16_MAX ? UINT16_MAX : base_len);
	*flags_r = flags;
	*kw_r = kw;
	*bflags_r = bflags;
}

/* BASE:2,INFO into out; info letters in ASCII order as the Maildir spec asks. */
static int name_build(char *out, size_t size, const char *base, size_t base_len, unsigned flags,
		      uint32_t kw, uint8_t bflags)
{
	char info[48];
	size_t n = 0;
	if (flags & MAIL_DRAFT)
		info[n++] = 'D';
	if (flags & MAIL_FLAGGED)
		info[n++] = 'F';
	if (bflags & MREC_PASSED)
		info[n++] = 'P';
	if (flags & MAIL_ANSWERED)
		info[n++] = 'R';
	if (flags & MAIL_SEEN)
		info[n++] = 'S';
	if (flags & MAIL_DELETED)
		info[n++] = 'T';
	for (int i = 0; i < MAILBOX_MAX_KEYWORDS; i++)
		if (kw & (1u << i))
			info[n++] = (char)('a' + i);
	info[n] = '\0';
	if (base_len + 3 + n + 1 > size || base_len + 3 + n > UINT16_MAX)
		return -ENAMETOOLONG;
	memcpy(out, base, base_len);
	memcpy(out + base_len, ":2,", 3);
	memcpy(out + base_len + 3, info, n + 1);
	return (int)(base_len + 3 + n);
}

/* ",W=<n>" (CRLF size) or ",S=<n>" (file size) in a base name. */
static bool base_size_field(const char *base, size_t len, char key, uint64_t *v_r)
{
	for (size_t i = 0; i + 3 < len; i++) {
		if (base[i] != ',' || base[i + 1] != key || base[i + 2] != '=')
			continue;
		uint64_t v = 0;
		size_t j = i + 3, digits = 0;
		while (j < len && base[j] >= '0' && base[j] <= '9' && digits < 19) {
			v = v * 10 + (uint64_t)(base[j] - '0');
			j++;
			digits++;
		}
		if (digits > 0 && (j == len || base[j] == ',')) {
			*v_r = v;
			return true;
		}
	}
	return false;
}

static bool name_ok(const char *name)
{
	if (name[0] == '.' || name[0] == '\0')
		return false;
	for (const char *p = name; *p; p++)
		if (*p == '\n' || *p == '/')
			return false;
	return strlen(name) < 4096;
}

static int rec_path(const struct mailbox *mbox, const struct mail_rec *rec, char *buf, size_t size)
{
	return storage_path(buf, size, "%s/%s/%s", mbox->path,
			    (rec->bflags & MREC_IN_NEW) ? "new" : "cur",
			    mailbox_rec_key(mbox, rec));
}

static unsigned name_counter;

static int base_new(char *out, size_t size, uint64_t file_size, uint64_t crlf_size)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	char host[256];
	if (gethostname(host, sizeof(host)) < 0)
		strcpy(host, "localhost");
	host[sizeof(host) - 1] = '\0';
	char safe[512];
	size_t n = 0;
	for (const char *p = host; *p && n + 5 < sizeof(safe); p++) {
		if (*p == '/' || *p == ':' || *p == ',') {
			n += (size_t)snprintf(safe + n, sizeof(safe) - n, "\\%03o",
					      (unsigned)(unsigned char)*p);
		} else {
			safe[n++] = *p;
		}
	}
	safe[n] = '\0';
	return storage_path(out, size, "%lld.M%ldP%dQ%u.%s,S=%" PRIu64 ",W=%" PRIu64,
			    (long long)ts.tv_sec, (long)(ts.tv_nsec / 1000), (int)getpid(),
			    ++name_counter, safe, file_size, crlf_size);
}

/* CRLF size of the open file FD: its size plus one per LF not preceded by CR. */
static int count_crlf_size(int fd, uint64_t *size_r)
{
	char buf[65536];
	uint64_t size = 0;
	bool last_cr = false;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n' && !last_cr)
				size++;
			last_cr = buf[i] == '\r';
		}
		size += (uint64_t)n;
	}
	*size_r = size;
	return 0;
}

/* ---- scanning ----------------------------------------------------------------------------- */

struct scan {
	struct mailbox_load ld; /* only ents + pool used */
	uint32_t *hash;         /* base -> ent index + 1 */
	size_t hash_cap;
};

static void scan_free(struct scan *sc)
{
	free(sc->ld.ents);
	free(sc->ld.pool);
	free(sc->hash);
	memset(sc, 0, sizeof(*sc));
}

static const char *scan_key(const struct scan *sc, const struct load_ent *e)
{
	return sc->ld.pool + e->key_off;
}

static int scan_hash_grow(struct scan *sc)
{
	size_t cap = sc->hash_cap ? sc->hash_cap * 2 : 1024;
	uint32_t *h = calloc(cap, sizeof(*h));
	if (h == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < sc->ld.n_ents; i++) {
		const struct load_ent *e = &sc->ld.ents[i];
		size_t s = storage_hash32(scan_key(sc, e), e->base_len) & (cap - 1);
		while (h[s] != 0)
			s = (s + 1) & (cap - 1);
		h[s] = (uint32_t)i + 1;
	}
	free(sc->hash);
	sc->hash = h;
	sc->hash_cap = cap;
	return 0;
}

static struct load_ent *scan_find(const struct scan *sc, const char *base, size_t len)
{
	if (sc->hash_cap == 0)
		return NULL;
	size_t s = storage_hash32(base, len) & (sc->hash_cap - 1);
	while (sc->hash[s] != 0) {
		struct load_ent *e = &sc->ld.ents[sc->hash[s] - 1];
		if (e->base_len == len && memcmp(scan_key(sc, e), base, len) == 0)
			return e;
		s = (s + 1) & (sc->hash_cap - 1);
	}
	return NULL;
}

/* Add (or replace, same base) one directory entry. */
static int scan_add(struct scan *sc, const char *name, bool in_new)
{
	struct load_ent e = {0};
	size_t len = strlen(name);
	if (len > UINT16_MAX)
		return 0;
	name_parse(name, len, &e.base_len, &e.flags, &e.keywords, &e.bflags);
	if (in_new)
		e.bflags |= MREC_IN_NEW;
	e.key_len = (uint16_t)len;
	struct load_ent *old = scan_find(sc, name, e.base_len);
	if (old != NULL) {
		/* seen twice (moved during the scan): the later sighting wins */
		uint32_t idx = (uint32_t)(old - sc->ld.ents);
		int r = mailbox_load_add(&sc->ld, &e, name);
		if (r < 0)
			return r;
		sc->ld.ents[idx] = sc->ld.ents[--sc->ld.n_ents];
		return 0;
	}
	if ((sc->ld.n_ents + 1) * 2 > sc->hash_cap) {
		int r = scan_hash_grow(sc);
		if (r < 0)
			return r;
	}
	int r = mailbox_load_add(&sc->ld, &e, name);
	if (r < 0)
		return r;
	struct load_ent *ne = &sc->ld.ents[sc->ld.n_ents - 1];
	size_t s = storage_hash32(name, ne->base_len) & (sc->hash_cap - 1);
	while (sc->hash[s] != 0)
		s = (s + 1) & (sc->hash_cap - 1);
	sc->hash[s] = (uint32_t)sc->ld.n_ents;
	return 0;
}

static int scan_dir(struct scan *sc, const char *path, const char *sub)
{
	char dir[4096];
	int r = storage_path(dir, sizeof(dir), "%s/%s", path, sub);
	if (r < 0)
		return r;
	DIR *d = opendir(dir);
	if (d == NULL)
		return errno == ENOENT ? 0 : -errno;
	struct dirent *de;
	bool in_new = strcmp(sub, "new") == 0;
	while ((de = readdir(d)) != NULL) {
		if (!name_ok(de->d_name))
			continue;
		if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
			continue;
		r = scan_add(sc, de->d_name, in_new);
		if (r < 0)
			break;
	}
	closedir(d);
	return r;
}

/* new/ first, then cur/: a file moved new -> cur during the scan is seen at least once. */
static int scan_dirs(struct scan *sc, const char *path, bool do_new, bool do_cur)
{
	int r = do_new ? scan_dir(sc, path, "new") : 0;
	if (r == 0 && do_cur)
		r = scan_dir(sc, path, "cur");
	return r;
}

static int scan_folder(struct scan *sc, const char *path)
{
	return scan_dirs(sc, path, true, true);
}

/* Stat and size one entry not in the UID list. -ENOENT if it moved meanwhile. */
static int ent_stat(const char *path, struct load_ent *e, const char *key)
{
	char file[4096];
	int r = storage_path(file, sizeof(file), "%s/%s/%s", path,
			     (e->bflags & MREC_IN_NEW) ? "new" : "cur", key);
	if (r < 0)
		return r;
	uint64_t w;
	bool have_w = base_size_field(key, e->base_len, 'W', &w);
	struct stat st;
	int fd = -1;
	if (have_w) {
		if (stat(file, &st) < 0)
			return -errno;
	} else {
		fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		if (fstat(fd, &st) < 0) {
			r = -errno;
			close(fd);
			return r;
		}
		r = count_crlf_size(fd, &w);
		close(fd);
		if (r < 0)
			return r;
	}
	e->size = w;
	e->idate = (int64_t)st.st_mtime;
	return 0;
}

/* ---- keywords ----------------------------------------------------------------------------- */

static int keywords_read(const char *path, char **names, unsigned *n_r)
{
	char file[4096], *data;
	size_t len;
	*n_r = 0;
	int r = storage_path(file, sizeof(file), "%s/%s", path, KEYWORDS_FILE);
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
			break; /* keep the prefix that is in order */
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

static int md_save_keywords(struct mailbox *mbox)
{
	struct sbuf b = {0};
	int r = 0;
	for (unsigned i = 0; i < mbox->n_keywords && r == 0; i++)
		r = sbuf_printf(&b, "%u %s\n", i, mbox->keywords[i]);
	char file[4096];
	if (r == 0)
		r = storage_path(file, sizeof(file), "%s/%s", mbox->path, KEYWORDS_FILE);
	if (r == 0)
		r = storage_write_file_atomic(file, b.data ? b.data : "", b.len);
	sbuf_free(&b);
	return r;
}

/* ---- POP3 retrieval record ---------------------------------------------------------------- */

static int md_pop3_ret_read(struct mailbox *mbox, struct pop3_ret_file *f)
{
	char file[4096];
	int r = storage_path(file, sizeof(file), "%s/%s", mbox->path, POP3_RETRIEVED_FILE);
	if (r < 0)
		return r;
	return pop3_retrieved_read(file, mbox->uidvalidity, f);
}

static int md_pop3_ret_write(struct mailbox *mbox, const struct pop3_ret *ents, size_t n,
			     bool append)
{
	char file[4096];
	int r = storage_path(file, sizeof(file), "%s/%s", mbox->path, POP3_RETRIEVED_FILE);
	if (r < 0)
		return r;
	if (append && n == 0)
		return 0;
	if (append) {
		/* a lost record only delays an expiry (pop3_retrieved.h): its fdatasync runs on
		 * the thread pool, nobody waits */
		int fd;
		r = pop3_retrieved_append_nosync(file, ents, n, &fd);
		if (r == 0)
			r = mailbox_sync_defer(mbox, fd, true);
		mailbox_sync_kick(mbox);
		return r;
	}
	return pop3_retrieved_write(file, mbox->uidvalidity, ents, n);
}

/* ---- cache file --------------------------------------------------------------------------- */

/* Map the cache file and point every entry of SC at its newest valid blob. Returns the
 * mapping (or NULL), its length and the end of the valid records. */
static void cache_scan(const char *path, struct scan *sc, char **map_r, size_t *map_len_r,
		       uint64_t *end_r, size_t *garbage_r)
{
	*map_r = NULL;
	*map_len_r = 0;
	*end_r = 0;
	*garbage_r = 0;
	char file[4096];
	if (storage_path(file, sizeof(file), "%s/%s", path, CACHE_FILE) < 0)
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
		struct load_ent *e = scan_find(sc, b, h.base_len);
		size_t rec_len = sizeof(h) + h.base_len + h.data_len;
		if (e != NULL) {
			if (e->cache_len != 0)
				garbage += sizeof(h) + e->cache_len;
			e->cache_off = (uint32_t)(d - map);
			e->cache_len = h.data_len;
		} else {
			garbage += rec_len;
		}
		pos += rec_len;
	}
	*map_r = map;
	*map_len_r = len;
	*end_r = pos;
	*garbage_r = garbage + (len - pos);
}

static int md_cache_get(struct mailbox *mbox, const struct mail_rec *rec, const void **data_r,
			size_t *len_r)
{
	struct maildir *md = mbox->backend;
	int r = folder_cache_read(md->cache_fd, md->cache_end, &md->cache_map, &md->cache_map_len,
				  rec->cache_off, rec->cache_len, data_r);
	if (r < 0)
		return r;
	*len_r = rec->cache_len;
	return 0;
}

static int cache_open_fd(struct mailbox *mbox)
{
	struct maildir *md = mbox->backend;
	if (md->cache_fd >= 0)
		return 0;
	char file[4096];
	int r = storage_path(file, sizeof(file), "%s/%s", mbox->path, CACHE_FILE);
	if (r < 0)
		return r;
	md->cache_fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (md->cache_fd < 0)
		return -errno;
	/* drop a damaged tail so new records follow valid ones */
	if (ftruncate(md->cache_fd, (off_t)md->cache_end) < 0)
		return -errno;
	return 0;
}

static int md_cache_put(struct mailbox *mbox, struct mail_rec *rec, const void *data, size_t len)
{
	struct maildir *md = mbox->backend;
	int r = cache_open_fd(mbox);
	if (r < 0)
		return r;
	uint32_t data_off;
	int e = folder_cache_append(md->cache_fd, &md->cache_end, mailbox_rec_key(mbox, rec),
				    rec->base_len, data, len, &data_off);
	if (e < 0)
		return e;
	if (rec->cache_len != 0)
		md->cache_garbage += sizeof(struct folder_cache_hdr) + rec->cache_len;
	rec->cache_off = data_off;
	rec->cache_len = (uint32_t)len;
	return 0;
}

/* Rewrite the cache with only live records (at attach, when half of it is garbage). */
static void cache_compact(struct mailbox *mbox)
{
	struct maildir *md = mbox->backend;
	if (md->cache_map == NULL || md->cache_garbage < 1u << 20 ||
	    md->cache_garbage < md->cache_map_len / 2)
		return;
	char file[4096], tmp[4096];
	if (storage_path(file, sizeof(file), "%s/%s", mbox->path, CACHE_FILE) < 0 ||
	    storage_path(tmp, sizeof(tmp), "%s/%s.tmp", mbox->path, CACHE_FILE) < 0)
		return;
	int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	uint64_t off = 0;
	uint32_t *offs = malloc(((size_t)mbox->n_recs + 1) * sizeof(*offs));
	bool ok = offs != NULL;
	for (uint32_t i = 0; ok && i < mbox->n_recs; i++) {
		struct mail_rec *rec = &mbox->recs[i];
		offs[i] = 0;
		if (rec->cache_len == 0)
			continue;
		const char *base = mailbox_rec_key(mbox, rec);
		const char *data = md->cache_map + rec->cache_off;
		struct folder_cache_hdr h = {FOLDER_CACHE_MAGIC, rec->base_len, rec->cache_len, 0};
		h.sum = folder_cache_sum(base, rec->base_len, data, rec->cache_len);
		ok = storage_write_all(fd, &h, sizeof(h)) == 0 &&
		     storage_write_all(fd, base, rec->base_len) == 0 &&
		     storage_write_all(fd, data, rec->cache_len) == 0;
		offs[i] = (uint32_t)(off + sizeof(h) + rec->base_len);
		off += sizeof(h) + rec->base_len + rec->cache_len;
	}
	if (ok && rename(tmp, file) == 0) {
		for (uint32_t i = 0; i < mbox->n_recs; i++)
			if (mbox->recs[i].cache_len != 0)
				mbox->recs[i].cache_off = offs[i];
		munmap(md->cache_map, md->cache_map_len);
		md->cache_map = NULL;
		md->cache_map_len = 0;
		if (md->cache_fd >= 0)
			close(md->cache_fd);
		md->cache_fd = fd;
		md->cache_end = off;
		md->cache_garbage = 0;
	} else {
		close(fd);
		unlink(tmp);
	}
	free(offs);
}

/* ---- load (worker thread) ----------------------------------------------------------------- */

struct md_load {
	int lock_fd;         /* the folder lock (held from load to attach when on the loop) */
	struct stat list_st; /* the UID list as this load left it */
	char *cache_map;
	size_t cache_map_len;
	uint64_t cache_end;
	size_t cache_garbage;
	size_t n_log;
	struct timespec mtime_new, mtime_cur;
	bool list_torn; /* the list needs a rewrite that could not be made (disk full) */
	bool deferred;  /* new or changed messages left unnumbered: refresh again soon */
};

static int dir_mtimes(const char *path, struct timespec *mnew, struct timespec *mcur)
{
	char dir[4096];
	struct stat st;
	int r = storage_path(dir, sizeof(dir), "%s/new", path);
	if (r < 0)
		return r;
	if (stat(dir, &st) < 0)
		return -errno;
	*mnew = st.st_mtim;
	r = storage_path(dir, sizeof(dir), "%s/cur", path);
	if (r < 0)
		return r;
	if (stat(dir, &st) < 0)
		return -errno;
	*mcur = st.st_mtim;
	return 0;
}

static void md_load_free(void *p)
{
	struct md_load *ml = p;
	if (ml->cache_map != NULL)
		munmap(ml->cache_map, ml->cache_map_len);
	if (ml->lock_fd >= 0)
		close(ml->lock_fd);
	free(ml);
}

static int folder_lock(const char *path, bool wait, int *fd_r);
static bool ts_recent(const struct timespec *t);
static void tmp_cleanup(const char *path);
static int load_scan(struct mailbox_load *ld, struct md_load *ml);
static int load_persist(struct mailbox_load *ld, struct md_load *ml);

static int md_load(struct mailbox_load *ld)
{
	struct md_load *ml = calloc(1, sizeof(*ml));
	if (ml == NULL)
		return -ENOMEM;
	ml->lock_fd = -1;
	ld->backend = ml;
	ld->backend_free = md_load_free;
	char file[4096];
	struct stat st;
	int r = storage_path(file, sizeof(file), "%s/cur", ld->path);
	if (r < 0)
		return r;
	if (stat(file, &st) < 0 || !S_ISDIR(st.st_mode))
		return -ENOENT;
	r = folder_lock(ld->path, ld->wait_lock, &ml->lock_fd);
	if (r < 0)
		return r;
	tmp_cleanup(ld->path);
	r = load_scan(ld, ml);
	if (r == 0)
		r = load_persist(ld, ml);
	if (!ld->on_loop) {
		/* a worker never keeps the lock: the loop may be waiting for it in
		 * mailbox_open, and attach takes it again */
		close(ml->lock_fd);
		ml->lock_fd = -1;
	}
	return r;
}

/* Save dates are kept as 32-bit seconds (mail_rec): 1..UINT32_MAX. */
static int64_t savedate_clamp(int64_t t)
{
	if (t < 1)
		return 1;
	return t > (int64_t)UINT32_MAX ? (int64_t)UINT32_MAX : t;
}

/* The delivery time standard Maildir base names start with ("<seconds>."), or 0. */
static int64_t base_time(const char *base)
{
	int64_t t = 0;
	size_t i = 0;
	for (; base[i] >= '0' && base[i] <= '9' && i < 12; i++)
		t = t * 10 + (base[i] - '0');
	return i > 0 && base[i] == '.' ? t : 0;
}

/* A message numbered now (found on disk): saved when its name says it was delivered, else
 * now; EMAILID from its base name. */
static void ent_new_ids(struct load_ent *e, const char *key, int64_t now)
{
	int64_t t = base_time(key);
	e->savedate = savedate_clamp(t > 0 && t <= now ? t : now);
	e->emailid = mailbox_emailid_from_base(key, e->base_len);
}

/* A message numbered by a version 1 list (no save date, no EMAILID): the delivery time its
 * name gives, else its internal date (RFC 8514 wants a date, not NIL, from a folder that
 * keeps them); EMAILID from its base name. */
static void ent_old_ids(struct load_ent *e, const char *key)
{
	if (e->savedate <= 0) {
		int64_t t = base_time(key);
		e->savedate = savedate_clamp(t > 0 ? t : e->idate);
	}
	if (e->emailid == 0)
		e->emailid = mailbox_emailid_from_base(key, e->base_len);
}

/* A scanned file the UID list knows: take its UID, modseq, size and date from the list. */
static void load_ent_known(struct load_ent *e, const struct uidlist_ent *le)
{
	e->known = true;
	e->uid = le->uid;
	e->modseq = le->modseq;
	e->size = le->size;
	e->idate = le->idate;
	e->savedate = le->savedate;
	e->emailid = le->emailid;
	e->list_flags = le->flags;
	e->list_keywords = le->keywords;
	e->list_modseq = le->modseq;
	e->flags_differ = e->flags != le->flags || e->keywords != le->keywords;
}

static int load_scan(struct mailbox_load *ld, struct md_load *ml)
{
	char file[4096];
	int r;
	r = keywords_read(ld->path, ld->keywords, &ld->n_keywords);
	if (r < 0)
		return r;

	struct uidlist list;
	uint32_t old_uv = 0;
	r = storage_path(file, sizeof(file), "%s/%s", ld->path, UIDLIST_FILE);
	if (r < 0)
		return r;
	r = uidlist_read(file, &list, &old_uv);
	bool have_list = r == 0;
	if (r < 0 && r != -ENOENT && r != -EBADMSG)
		return r;
	if (r == -EBADMSG)
		log_warn("storage: UID list torn, rebuilding with a new UIDVALIDITY path=%s",
			 log_escape_str(ld->path));
	if (have_list) {
		ld->uidvalidity = list.uidvalidity;
		ld->uidnext = list.uidnext;
		ld->highest_modseq = list.highest_modseq;
		ml->n_log = list.n_log;
		ld->list_dirty = list.torn_tail;
	} else {
		uint32_t now = (uint32_t)time(NULL);
		char *hint;
		size_t hint_len;
		if (storage_path(file, sizeof(file), "%s/%s", ld->path, UIDVALIDITY_FILE) == 0 &&
		    storage_read_file(file, 64, &hint, &hint_len) == 0) {
			unsigned long v = strtoul(hint, NULL, 10);
			if (v > old_uv && v < UINT32_MAX)
				old_uv = (uint32_t)v;
			free(hint);
		}
		ld->uidvalidity = now > old_uv ? now : old_uv + 1;
		ld->uidnext = 1;
		ld->highest_modseq = 1;
		ld->list_rebuilt = true;
		ld->list_dirty = true;
	}

	r = -EAGAIN;
	for (int attempt = 0; attempt < SCAN_RETRIES && r == -EAGAIN; attempt++) {
		struct scan sc = {0};
		r = dir_mtimes(ld->path, &ml->mtime_new, &ml->mtime_cur);
		if (r == 0)
			r = scan_folder(&sc, ld->path);
		/* attach the UID list */
		size_t missing = 0;
		for (size_t i = 0; r == 0 && have_list && i < list.n_ents; i++) {
			const struct uidlist_ent *le = &list.ents[i];
			if (le->expunged)
				continue;
			struct load_ent *e =
				scan_find(&sc, uidlist_ent_base(&list, le), le->base_len);
			if (e == NULL) {
				missing++;
				continue;
			}
			load_ent_known(e, le);
		}
		/* readdir may miss a file renamed during it: look again, and call a message
		 * gone only when MISSING_LOOKS more scans agree (as a refresh does) */
		for (int look = 0; r == 0 && missing > 0 && look < MISSING_LOOKS; look++) {
			struct scan sc2 = {0};
			r = scan_folder(&sc2, ld->path);
			missing = 0;
			for (size_t i = 0; r == 0 && i < list.n_ents; i++) {
				const struct uidlist_ent *le = &list.ents[i];
				const char *b = uidlist_ent_base(&list, le);
				if (le->expunged || scan_find(&sc, b, le->base_len) != NULL)
					continue;
				struct load_ent *e2 = scan_find(&sc2, b, le->base_len);
				if (e2 == NULL) {
					missing++;
					continue;
				}
				r = scan_add(&sc, scan_key(&sc2, e2),
					     (e2->bflags & MREC_IN_NEW) != 0);
				struct load_ent *e = scan_find(&sc, b, le->base_len);
				if (r == 0 && e != NULL)
					load_ent_known(e, le);
			}
			scan_free(&sc2);
		}
		if (r == 0 && missing > 0)
			ld->list_dirty = true;
		/* an expunge whose record was written but whose file was not removed yet (a
		 * crash between the two): finish it, never number the message again */
		bool finished = false;
		for (size_t i = 0; r == 0 && have_list && i < list.n_ents; i++) {
			const struct uidlist_ent *le = &list.ents[i];
			if (!le->unlink_pending)
				continue;
			struct load_ent *e =
				scan_find(&sc, uidlist_ent_base(&list, le), le->base_len);
			if (e == NULL || e->known)
				continue;
			char f[4096];
			bool in_new = (e->bflags & MREC_IN_NEW) != 0;
			if (storage_path(f, sizeof(f), "%s/%s/%s", ld->path, in_new ? "new" : "cur",
					 scan_key(&sc, e)) < 0)
				continue;
			if (unlink(f) == 0 || errno == ENOENT) {
				log_info("storage: finished an interrupted expunge path=%s uid=%u",
					 log_escape_str(ld->path), le->uid);
				finished = true;
			} else {
				log_error("storage: cannot finish an expunge path=%s err=%s",
					  log_escape_str(f), strerror(errno));
			}
		}
		if (r == 0 && finished) {
			char d[4096];
			for (int k = 0; k < 2; k++)
				if (storage_path(d, sizeof(d), "%s/%s", ld->path,
						 k ? "cur" : "new") == 0)
					(void)storage_fsync_dir(d);
			scan_free(&sc);
			r = -EAGAIN; /* scan again without them */
			continue;
		}
		/* size the unknown ones */
		for (size_t i = 0; r == 0 && i < sc.ld.n_ents; i++) {
			struct load_ent *e = &sc.ld.ents[i];
			if (e->known)
				continue;
			r = ent_stat(ld->path, e, scan_key(&sc, e));
			if (r == -ENOENT)
				r = -EAGAIN; /* renamed since readdir: scan again */
		}
		if (r == 0) {
			cache_scan(ld->path, &sc, &ml->cache_map, &ml->cache_map_len,
				   &ml->cache_end, &ml->cache_garbage);
			free(ld->ents);
			free(ld->pool);
			ld->ents = sc.ld.ents;
			ld->n_ents = sc.ld.n_ents;
			ld->cap_ents = sc.ld.cap_ents;
			ld->pool = sc.ld.pool;
			ld->pool_len = sc.ld.pool_len;
			ld->pool_cap = sc.ld.pool_cap;
			sc.ld.ents = NULL;
			sc.ld.pool = NULL;
		}
		scan_free(&sc);
	}
	if (have_list)
		uidlist_free(&list);
	return r;
}

#define LOCK_FILE "mailkeep-lock"
/* How long mailbox_open waits for our own worker's lock (a 100,000-message cold scan). */
#define LOCK_WAIT_MAX_MS 10000

/* The folder lock (flock on LOCK_FILE): one process numbers and writes a folder's UID list at
 * a time. A loaded mailbox holds it for its life; a second mailkeep process on the same store
 * gets -EBUSY for that folder instead of corrupting the numbering. WAIT: block (another load
 * of this process is running and will release it soon). */
static int folder_lock(const char *path, bool wait, int *fd_r)
{
	char file[4096];
	int r = storage_path(file, sizeof(file), "%s/%s", path, LOCK_FILE);
	if (r < 0)
		return r;
	int fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	/* waiting is bounded: our own worker lets go within its scan, but if the holder is
	 * another process the loop must not hang on it */
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

/* Files left in tmp/ by a writer that died (ours or an MTA's) are removed after 36 hours, the
 * Maildir convention; a younger one may still be being written. */
#define TMP_MAX_AGE (36 * 3600)

static void tmp_cleanup(const char *path)
{
	char dir[4096];
	if (storage_path(dir, sizeof(dir), "%s/tmp", path) < 0)
		return;
	DIR *d = opendir(dir);
	if (d == NULL)
		return;
	time_t now = time(NULL);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		if (de->d_name[0] == '.')
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode) && st.st_mtime + TMP_MAX_AGE < now &&
		    st.st_atime + TMP_MAX_AGE < now)
			unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

/* ---- UID list writing --------------------------------------------------------------------- */

static int log_open(struct mailbox *mbox)
{
	struct maildir *md = mbox->backend;
	char file[4096];
	int r = storage_path(file, sizeof(file), "%s/%s", mbox->path, UIDLIST_FILE);
	if (r < 0)
		return r;
	if (md->log_fd >= 0)
		close(md->log_fd);
	md->log_fd = open(file, O_WRONLY | O_APPEND | O_CLOEXEC);
	return md->log_fd < 0 ? -errno : 0;
}

static int list_compact(struct mailbox *mbox)
{
	struct maildir *md = mbox->backend;
	struct sbuf b = {0};
	int r = uidlist_line_header(&b, mbox->uidvalidity, mbox->uidnext, mbox->highest_modseq,
				    mbox->n_recs);
	char uidl[MAIL_UIDL_MAX + 1];
	for (uint32_t i = 0; r == 0 && i < mbox->n_recs; i++) {
		const struct mail_rec *rec = &mbox->recs[i];
		const char *key = mailbox_rec_key(mbox, rec);
		uidlist_uidl_from_base(key, rec->base_len, uidl);
		r = uidlist_line_add(&b, rec->uid, rec->modseq, rec->size, rec->idate, rec->flags,
				     rec->keywords, rec->savedate, rec->emailid, uidl, key,
				     rec->base_len);
	}
	char file[4096];
	if (r == 0)
		r = storage_path(file, sizeof(file), "%s/%s", mbox->path, UIDLIST_FILE);
	if (r == 0)
		r = uidlist_write(file, &b);
	sbuf_free(&b);
	if (r == 0) {
		md->n_log = 0;
		md->pending.len = 0;
		md->list_torn = false;
		r = log_open(mbox);
	}
	return r;
}

/* Append DATA to the UID list open as FD, durably. A write or sync that fails is cut off
 * again (ftruncate needs no space), so the list ends where it did; *TORN_R is set when that
 * cannot be made sure of (the list must then be rewritten before anything is appended). */
static int list_append(struct mailbox *mbox, int fd, const char *data, size_t len, bool *torn_r,
		       bool nowait)
{
	off_t end = lseek(fd, 0, SEEK_END);
	if (end < 0)
		return -errno;
	int r = storage_write_all(fd, data, len);
	int dfd = r == 0 && nowait ? dup(fd) : -1;
	if (dfd >= 0)
		r = mailbox_sync_defer(mbox, dfd, true); /* fdatasync on the thread pool */
	else if (r == 0 && fdatasync(fd) < 0)
		r = -errno;
	if (r < 0 && (ftruncate(fd, end) < 0 || fdatasync(fd) < 0))
		*torn_r = true;
	return r;
}

static uint32_t own_key(bool in_new, const char *name)
{
	return (storage_hash32(name, strlen(name)) ^ (in_new ? 0x9e3779b9u : 0)) | 1;
}

static bool ts_eq(const struct timespec *a, const struct timespec *b);

/* We are about to add, remove or rename NAME in new/ or cur/ of MBOX: the event it causes is
 * ours. The first such change since the last commit notes whether the directories were as
 * we last saw them; only then may the commit take their new times as seen. */
static void own_expect(struct mailbox *mbox, bool in_new, const char *name)
{
	struct maildir *md = mbox->backend;
	if (!md->own_changed) {
		struct timespec mn, mc;
		md->clean_before = md->watch_ok && !md->dirty_new && !md->dirty_cur &&
				   dir_mtimes(mbox->path, &mn, &mc) == 0 &&
				   ts_eq(&mn, &md->mtime_new) && ts_eq(&mc, &md->mtime_cur);
	}
	md->own[md->own_next++ % OWN_EVENTS] = own_key(in_new, name);
	md->own_changed = true;
}

static bool own_consume(struct maildir *md, bool in_new, const char *name)
{
	uint32_t k = own_key(in_new, name);
	for (unsigned i = 0; i < OWN_EVENTS; i++) {
		if (md->own[i] == k) {
			md->own[i] = 0;
			return true;
		}
	}
	return false;
}

/* fsync directory DIR of MBOX now, or (NOWAIT) on the thread pool. */
static int dir_sync(struct mailbox *mbox, const char *dir, bool nowait)
{
	if (!nowait)
		return storage_fsync_dir(dir);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return mailbox_sync_defer(mbox, fd, false);
}

/* commit, and with NOWAIT commit_nowait: every fsync goes to mailbox_sync_defer (the UID
 * list is written here; a compaction, rare, still syncs here). */
static int md_commit_impl(struct mailbox *mbox, bool nowait)
{
	struct maildir *md = mbox->backend;
	int r = 0;
	char dir[4096];
	if (md->fsync_cur) {
		r = storage_path(dir, sizeof(dir), "%s/cur", mbox->path);
		if (r == 0)
			r = dir_sync(mbox, dir, nowait);
	}
	if (md->fsync_new && r == 0) {
		r = storage_path(dir, sizeof(dir), "%s/new", mbox->path);
		if (r == 0)
			r = dir_sync(mbox, dir, nowait);
	}
	if (r < 0)
		return r;
	md->fsync_cur = md->fsync_new = false;
	if (md->own_changed && md->clean_before) {
		/* our own change moved the directory times: take them as seen. A change by
		 * someone else meanwhile still arrives as an fs event with a name that is not
		 * ours, and marks the folder dirty. */
		struct timespec mn, mc;
		if (dir_mtimes(mbox->path, &mn, &mc) == 0) {
			md->mtime_new = mn;
			md->mtime_cur = mc;
		}
	}
	md->own_changed = false;
	bool append_only = md->append_only;
	md->append_only = false;
	if (md->pending.len == 0)
		return 0;
	size_t lines = 0;
	for (size_t i = 0; i < md->pending.len; i++)
		lines += md->pending.data[i] == '\n';
	/* a rewrite is made from memory, which already holds every change — except expunges,
	 * whose records are written before memory changes: those append (the rewrite comes
	 * with a later commit); a list that cannot be appended to is rewritten first (memory
	 * as before these expunges), then they are appended */
	if (append_only && (md->log_fd < 0 || md->list_torn)) {
		struct sbuf keep = md->pending;
		memset(&md->pending, 0, sizeof(md->pending));
		r = list_compact(mbox);
		sbuf_free(&md->pending);
		md->pending = keep;
		if (r < 0)
			return r;
	}
	if (md->log_fd < 0 || md->list_torn ||
	    (!append_only && md->n_log + lines > LOG_COMPACT_MIN &&
	     md->n_log + lines > mbox->n_recs))
		return list_compact(mbox);
	r = list_append(mbox, md->log_fd, md->pending.data, md->pending.len, &md->list_torn,
			nowait);
	if (r < 0) {
		/* the records stay queued: the caller undoes its change and drops them, or a
		 * later commit writes them */
		if (!md->append_failed) /* once, not at every refresh while the disk is full */
			log_error("storage: UID list append failed path=%s err=%s",
				  log_escape_str(mbox->path), strerror(-r));
		md->append_failed = true;
		return r;
	}
	if (md->append_failed) {
		log_info("storage: UID list written again path=%s", log_escape_str(mbox->path));
		md->append_failed = false;
	}
	md->n_log += lines;
	md->pending.len = 0;
	return 0;
}

static int md_commit(struct mailbox *mbox)
{
	return md_commit_impl(mbox, false);
}

static int md_commit_nowait(struct mailbox *mbox)
{
	return md_commit_impl(mbox, true);
}

static size_t md_pending_mark(struct mailbox *mbox)
{
	struct maildir *md = mbox->backend;
	return md->pending.len;
}

static void md_discard(struct mailbox *mbox, size_t mark)
{
	struct maildir *md = mbox->backend;
	if (md->pending.len > mark)
		md->pending.len = mark;
}

/* ---- watching ----------------------------------------------------------------------------- */

static void debounce_cb(uv_timer_t *t)
{
	struct mailbox *mbox = t->data;
	struct maildir *md = mbox->backend;
	if (md != NULL)
		md->event_refresh_at = uv_now(mbox->loop);
	mailbox_ref(mbox);
	mbox->ops->refresh(mbox, false);
	mailbox_unref(&mbox);
}

static void fs_event_cb(uv_fs_event_t *h, const char *filename, int events, int status)
{
	struct mailbox *mbox = h->data;
	struct maildir *md = mbox->backend;
	if (md == NULL)
		return;
	if (filename != NULL && status == 0 && own_consume(md, h == &md->ev_new, filename))
		return; /* the echo of our own change */
	if (h == &md->ev_new)
		md->dirty_new = true;
	else
		md->dirty_cur = true;
	/* Coalesce bursts (an MTA delivering many, our own renames) into at most one re-read
	 * every DEBOUNCE_MS; a delivery after a quiet spell is re-read at the next loop turn
	 * (the events of one poll coalesced), so an idling client hears of it at once. */
	if (!uv_is_active((uv_handle_t *)&md->debounce)) {
		uint64_t now = uv_now(mbox->loop), next = md->event_refresh_at + DEBOUNCE_MS;
		uv_timer_start(&md->debounce, debounce_cb, next > now ? next - now : 0, 0);
	}
}

static void md_handle_close_cb(uv_handle_t *h)
{
	mailbox_handle_closed(h->data);
}

static void watch_start(struct mailbox *mbox)
{
	struct maildir *md = mbox->backend;
	char dir[4096];
	uv_timer_init(mbox->loop, &md->debounce);
	md->debounce.data = mbox;
	mailbox_handle_opened(mbox);
	uv_fs_event_init(mbox->loop, &md->ev_new);
	md->ev_new.data = mbox;
	mailbox_handle_opened(mbox);
	uv_fs_event_init(mbox->loop, &md->ev_cur);
	md->ev_cur.data = mbox;
	mailbox_handle_opened(mbox);
	md->watching = true;
	md->watch_ok = true;
	if (storage_path(dir, sizeof(dir), "%s/new", mbox->path) < 0 ||
	    uv_fs_event_start(&md->ev_new, fs_event_cb, dir, 0) < 0) {
		log_warn("storage: cannot watch dir=%s", log_escape_str(dir));
		md->watch_ok = false;
	}
	if (storage_path(dir, sizeof(dir), "%s/cur", mbox->path) < 0 ||
	    uv_fs_event_start(&md->ev_cur, fs_event_cb, dir, 0) < 0) {
		log_warn("storage: cannot watch dir=%s", log_escape_str(dir));
		md->watch_ok = false;
	}
}

static void md_free(struct mailbox *mbox)
{
	struct maildir *md = mbox->backend;
	if (md->pending.len > 0)
		md_commit(mbox);
	if (md->log_fd >= 0)
		close(md->log_fd);
	if (md->lock_fd >= 0)
		close(md->lock_fd);
	if (md->cache_fd >= 0)
		close(md->cache_fd);
	if (md->cache_map != NULL)
		munmap(md->cache_map, md->cache_map_len);
	sbuf_free(&md->pending);
	mbox->backend = NULL;
	if (md->watching) {
		uv_fs_event_stop(&md->ev_new);
		uv_fs_event_stop(&md->ev_cur);
		uv_timer_stop(&md->debounce);
		/* handle data must stay valid until the close callbacks: they point at mbox,
		 * the handles live in md, freed with the mailbox's last handle */
		uv_close((uv_handle_t *)&md->ev_new, md_handle_close_cb);
		uv_close((uv_handle_t *)&md->ev_cur, md_handle_close_cb);
		uv_close((uv_handle_t *)&md->debounce, md_handle_close_cb);
		/* md itself is freed by the core after the last close via backend_mem */
	}
	mbox->backend_mem = md;
}

/* ---- attach (loop) ------------------------------------------------------------------------ */

static int cmp_ent_base(const void *a, const void *b, void *pool)
{
	const struct load_ent *x = a, *y = b;
	const char *p = pool;
	size_t n = x->base_len < y->base_len ? x->base_len : y->base_len;
	int c = memcmp(p + x->key_off, p + y->key_off, n);
	if (c != 0)
		return c;
	return (int)x->base_len - (int)y->base_len;
}

static int cmp_ent_uid(const void *a, const void *b)
{
	const struct load_ent *x = a, *y = b;
	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* Number new entries (sorted by base name: delivery order for standard names) from UIDNEXT,
 * add them as records and queue their UID-list lines. Entries must be sorted with the known
 * ones first in UID order. */
static int add_new_ents(struct mailbox *mbox, struct load_ent *ents, size_t n, const char *pool)
{
	struct maildir *md = mbox->backend;
	char uidl[MAIL_UIDL_MAX + 1];
	for (size_t i = 0; i < n; i++) {
		struct load_ent *e = &ents[i];
		const char *key = pool + e->key_off;
		if (mbox->uidnext == UINT32_MAX)
			return -EOVERFLOW;
		e->uid = mbox->uidnext;
		ent_new_ids(e, key, time(NULL));
		struct mail_rec rec;
		mailbox_rec_from_ent(e, &rec);
		rec.keywords = e->keywords & ((1u << mbox->n_keywords) - 1);
		rec.modseq = ++mbox->highest_modseq;
		int r = mailbox_rec_add(mbox, &rec, key);
		if (r < 0)
			return r;
		uidlist_uidl_from_base(key, e->base_len, uidl);
		r = uidlist_line_add(&md->pending, rec.uid, rec.modseq, rec.size, rec.idate,
				     rec.flags, rec.keywords, rec.savedate, rec.emailid, uidl, key,
				     rec.base_len);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Under the folder lock, in the loader's thread: number the messages the UID list does not
 * know (in base-name order: delivery order for standard names) from UIDNEXT, give messages
 * whose flags changed outside a new modseq, and make it all durable in the UID list before
 * anyone sees a UID. Leaves LD->ents in UID order. */
static int load_persist(struct mailbox_load *ld, struct md_load *ml)
{
	size_t n_known = 0;
	for (size_t i = 0; i < ld->n_ents; i++) {
		if (ld->ents[i].known) {
			struct load_ent t = ld->ents[n_known];
			ld->ents[n_known++] = ld->ents[i];
			ld->ents[i] = t;
		}
	}
	if (n_known > 1)
		qsort(ld->ents, n_known, sizeof(*ld->ents), cmp_ent_uid);
	if (ld->n_ents - n_known > 1)
		qsort_r(ld->ents + n_known, ld->n_ents - n_known, sizeof(*ld->ents), cmp_ent_base,
			ld->pool);
	uint32_t kw_mask = ld->n_keywords >= 32 ? UINT32_MAX : (1u << ld->n_keywords) - 1;
	struct sbuf lines = {0};
	size_t n_lines = 0;
	char uidl[MAIL_UIDL_MAX + 1];
	int r = 0;
	uint32_t uidnext0 = ld->uidnext;
	uint64_t highest0 = ld->highest_modseq;
	ld->first_recent_uid = ld->uidnext;
	int64_t now = (int64_t)time(NULL);
	for (size_t i = 0; i < ld->n_ents && r == 0; i++) {
		struct load_ent *e = &ld->ents[i];
		const char *key = ld->pool + e->key_off;
		e->keywords &= kw_mask;
		if (i < n_known && (e->savedate <= 0 || e->emailid == 0))
			ent_old_ids(e, key); /* a version 1 record: derived, the same every time */
		if (i >= n_known) {
			if (ld->uidnext == UINT32_MAX) {
				r = -EOVERFLOW;
				break;
			}
			e->uid = ld->uidnext++;
			e->modseq = ++ld->highest_modseq;
			e->known = true;
			ent_new_ids(e, key, now);
			uidlist_uidl_from_base(key, e->base_len, uidl);
			r = uidlist_line_add(&lines, e->uid, e->modseq, e->size, e->idate, e->flags,
					     e->keywords, e->savedate, e->emailid, uidl, key,
					     e->base_len);
			n_lines++;
		} else if (e->flags_differ) {
			e->modseq = ++ld->highest_modseq; /* changed outside while we were away */
			r = uidlist_line_flags(&lines, e->uid, e->modseq, e->flags, e->keywords);
			n_lines++;
		}
	}
	char file[4096];
	if (r == 0 && ld->list_rebuilt) {
		char text[16];
		int n = snprintf(text, sizeof(text), "%u\n", ld->uidvalidity);
		r = storage_path(file, sizeof(file), "%s/%s", ld->path, UIDVALIDITY_FILE);
		if (r == 0)
			r = storage_write_file_atomic(file, text, (size_t)n);
	}
	if (r == 0)
		r = storage_path(file, sizeof(file), "%s/%s", ld->path, UIDLIST_FILE);
	bool compact = ld->list_dirty || ld->list_rebuilt ||
		       (ml->n_log + n_lines > LOG_COMPACT_MIN && ml->n_log + n_lines > ld->n_ents);
	bool writing = r == 0;
	if (r == 0 && compact) {
		struct sbuf b = {0};
		r = uidlist_line_header(&b, ld->uidvalidity, ld->uidnext, ld->highest_modseq,
					ld->n_ents);
		for (size_t i = 0; i < ld->n_ents && r == 0; i++) {
			const struct load_ent *e = &ld->ents[i];
			const char *key = ld->pool + e->key_off;
			uidlist_uidl_from_base(key, e->base_len, uidl);
			r = uidlist_line_add(&b, e->uid, e->modseq, e->size, e->idate, e->flags,
					     e->keywords, e->savedate, e->emailid, uidl, key,
					     e->base_len);
		}
		if (r == 0)
			r = uidlist_write(file, &b);
		sbuf_free(&b);
		ml->n_log = 0;
	} else if (r == 0 && n_lines > 0) {
		int fd = open(file, O_WRONLY | O_APPEND | O_CLOEXEC);
		if (fd < 0)
			r = -errno;
		if (r == 0)
			r = list_append(NULL, fd, lines.data, lines.len, &ml->list_torn, false);
		if (fd >= 0)
			close(fd);
		if (r == 0)
			ml->n_log += n_lines;
	}
	sbuf_free(&lines);
	if (r < 0 && writing && !ld->list_rebuilt) {
		/* The list could not be written (a full disk): reading needs no space, so open
		 * with what the list has — messages it does not know stay unnumbered and
		 * changes made outside stay unseen (nothing is shown that is not durable) —
		 * and let the refreshes try again. */
		log_warn("storage: UID list not written, new messages wait path=%s err=%s",
			 log_escape_str(ld->path), strerror(-r));
		ld->n_ents = n_known;
		for (size_t i = 0; i < n_known; i++) {
			struct load_ent *e = &ld->ents[i];
			if (!e->flags_differ)
				continue;
			e->flags = e->list_flags;
			e->keywords = e->list_keywords & kw_mask;
			e->modseq = e->list_modseq;
			e->flags_differ = false;
		}
		ld->uidnext = uidnext0;
		ld->highest_modseq = highest0;
		ld->first_recent_uid = uidnext0;
		if (compact)
			ml->list_torn = true; /* the wanted rewrite comes before any append */
		ml->deferred = true;
		r = 0;
	}
	if (r == 0 && stat(file, &ml->list_st) < 0)
		r = -errno;
	if (r == 0 && ld->n_ents > n_known)
		log_info("storage: numbered new messages path=%s count=%zu first_uid=%u",
			 log_escape_str(ld->path), ld->n_ents - n_known, ld->first_recent_uid);
	return r;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static int md_attach(struct mailbox *mbox, struct mailbox_load *ld)
{
	struct md_load *ml = ld->backend;
	if (ml->lock_fd < 0) {
		/* loaded on a worker: take the lock again and check that nobody changed the
		 * list since (else the caller loads again on the loop) */
		int r = folder_lock(ld->path, false, &ml->lock_fd);
		if (r < 0)
			return -EAGAIN;
		char file[4096];
		struct stat st;
		r = storage_path(file, sizeof(file), "%s/%s", ld->path, UIDLIST_FILE);
		if (r < 0)
			return r;
		if (stat(file, &st) < 0 || !same_file(&st, &ml->list_st)) {
			close(ml->lock_fd);
			ml->lock_fd = -1;
			return -EAGAIN;
		}
	}
	struct maildir *md = calloc(1, sizeof(*md));
	if (md == NULL)
		return -ENOMEM;
	md->log_fd = -1;
	md->cache_fd = -1;
	md->lock_fd = ml->lock_fd;
	ml->lock_fd = -1;
	mbox->backend = md;
	md->cache_map = ml->cache_map;
	md->cache_map_len = ml->cache_map_len;
	md->cache_end = ml->cache_end;
	md->cache_garbage = ml->cache_garbage;
	md->n_log = ml->n_log;
	md->mtime_new = ml->mtime_new;
	md->mtime_cur = ml->mtime_cur;
	md->list_torn = ml->list_torn;
	ml->cache_map = NULL;
	/* every entry is numbered and durable now, in UID order */
	int r = mailbox_take_load(mbox, ld);
	if (r < 0)
		return r;
	r = log_open(mbox);
	if (r < 0)
		return r;
	cache_compact(mbox);
	md->dirty_new = ml->deferred || ts_recent(&md->mtime_new);
	md->dirty_cur = ml->deferred || ts_recent(&md->mtime_cur);
	watch_start(mbox);
	return 0;
}

/* ---- refresh: changes made behind our back ------------------------------------------------ */

static bool ts_eq(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static bool ts_recent(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	long long age =
		(long long)(now.tv_sec - t->tv_sec) * 1000000000LL + (now.tv_nsec - t->tv_nsec);
	/* a time with nanoseconds comes from a file system with sub-second times (a whole
	 * second on one of those happens once in a billion: then we only re-read longer) */
	return age < (t->tv_nsec != 0 ? DIR_DIRTY_NS_FINE : DIR_DIRTY_NS);
}

/* Bring REC up to date with what a scan found for it. Returns 1 if its flags changed. */
static int rec_update_from_ent(struct mailbox *mbox, struct mail_rec *rec, const struct load_ent *e,
			       const char *key)
{
	struct maildir *md = mbox->backend;
	int r = mailbox_rec_set_key(mbox, rec, key, e->key_len, e->base_len);
	if (r < 0)
		return r;
	rec->bflags = (uint8_t)((rec->bflags & ~(MREC_IN_NEW | MREC_PASSED)) |
				(e->bflags & (MREC_IN_NEW | MREC_PASSED)));
	uint32_t kw_mask = mbox->n_keywords >= 32 ? UINT32_MAX : (1u << mbox->n_keywords) - 1;
	uint32_t kw = e->keywords & kw_mask;
	if (rec->flags == e->flags && rec->keywords == kw)
		return 0;
	rec->flags = e->flags;
	rec->keywords = kw;
	rec->modseq = mailbox_next_modseq(mbox);
	r = uidlist_line_flags(&md->pending, rec->uid, rec->modseq, rec->flags, rec->keywords);
	return r < 0 ? r : 1;
}

/* Re-read new/ (DO_NEW) and/or cur/ (DO_CUR) and diff them into the mailbox. A message whose
 * directory was not read counts as seen; one missing from what was read gets full looks
 * (both directories) before it is called gone, since it may have moved between them. */
struct rescan_undo {
	uint8_t flags;
	uint32_t keywords;
	uint64_t modseq;
};

/* Bring REC up to date with E (rec_update_from_ent); when its flags changed, note the UID in
 * FLAGGED and the old flags in UNDO. */
static int rescan_update(struct mailbox *mbox, struct mail_rec *rec, const struct load_ent *e,
			 const char *key, uint32_t *flagged, struct rescan_undo *undo, size_t *n_r)
{
	struct rescan_undo u = {rec->flags, rec->keywords, rec->modseq};
	int r = rec_update_from_ent(mbox, rec, e, key);
	if (r == 1) {
		undo[*n_r] = u;
		flagged[(*n_r)++] = rec->uid;
	}
	return r;
}

/* The UID list could not take what a re-read found (a full disk): forget it — arrivals stay
 * unnumbered, flag changes unseen, removals unapplied; nothing was announced — and re-read
 * at the next refresh. The keys keep the files' current names. */
static void rescan_defer(struct mailbox *mbox, size_t mark, uint32_t uidnext0, uint64_t highest0,
			 const uint32_t *flagged, const struct rescan_undo *undo, size_t n_flagged,
			 int err)
{
	struct maildir *md = mbox->backend;
	md_discard(mbox, mark);
	if (mbox->uidnext > uidnext0)
		mailbox_rec_drop_from(mbox, uidnext0);
	for (size_t i = 0; i < n_flagged; i++) {
		struct mail_rec *rec = mailbox_rec_find(mbox, flagged[i]);
		if (rec == NULL)
			continue;
		rec->flags = undo[i].flags;
		rec->keywords = undo[i].keywords;
		rec->modseq = undo[i].modseq;
	}
	mbox->highest_modseq = highest0;
	md->dirty_new = md->dirty_cur = true;
	if (!md->refresh_deferred)
		log_warn("storage: UID list not written, outside changes wait folder=%s err=%s",
			 log_escape_str(mbox->name), strerror(-err));
	md->refresh_deferred = true;
}

static int rescan(struct mailbox *mbox, bool do_new, bool do_cur)
{
	struct maildir *md = mbox->backend;
	mbox->rescans++;
	struct scan sc = {0}, sc2 = {0};
	int r = scan_dirs(&sc, mbox->path, do_new, do_cur);
	uint32_t *flagged = NULL, *gone = NULL;
	struct rescan_undo *undo = NULL;
	size_t n_flagged = 0, n_gone = 0, n_missing = 0;
	size_t *fresh = NULL, n_fresh = 0;
	size_t mark = md->pending.len;
	uint32_t uidnext0 = mbox->uidnext;
	uint64_t highest0 = mbox->highest_modseq;
	if (r < 0)
		goto out;
	flagged = malloc(((size_t)mbox->n_recs + 1) * sizeof(*flagged));
	undo = malloc(((size_t)mbox->n_recs + 1) * sizeof(*undo));
	gone = malloc(((size_t)mbox->n_recs + 1) * sizeof(*gone));
	fresh = malloc((sc.ld.n_ents + 1) * sizeof(*fresh));
	if (flagged == NULL || undo == NULL || gone == NULL || fresh == NULL) {
		r = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < mbox->n_recs; i++) {
		struct mail_rec *rec = &mbox->recs[i];
		bool read = (rec->bflags & MREC_IN_NEW) ? do_new : do_cur;
		if (read)
			rec->bflags &= (uint8_t)~MREC_SEEN_SCAN;
		else
			rec->bflags |= MREC_SEEN_SCAN;
	}
	for (size_t i = 0; i < sc.ld.n_ents && r >= 0; i++) {
		struct load_ent *e = &sc.ld.ents[i];
		const char *key = scan_key(&sc, e);
		struct mail_rec *rec = mailbox_rec_find_base(mbox, key, e->base_len);
		if (rec == NULL) {
			fresh[n_fresh++] = i;
			continue;
		}
		rec->bflags |= MREC_SEEN_SCAN;
		r = rescan_update(mbox, rec, e, key, flagged, undo, &n_flagged);
	}
	if (r < 0)
		goto out;
	for (uint32_t i = 0; i < mbox->n_recs; i++)
		if (!(mbox->recs[i].bflags & MREC_SEEN_SCAN))
			n_missing++;
	/* A file renamed during readdir can be missed (readdir makes no promise about entries
	 * renamed while it runs): look again, and call a message gone only when it is missing
	 * from MISSING_LOOKS further scans in a row. */
	for (int look = 0; n_missing > 0 && look < MISSING_LOOKS && r >= 0; look++) {
		scan_free(&sc2);
		r = scan_folder(&sc2, mbox->path);
		n_missing = 0;
		for (uint32_t i = 0; r >= 0 && i < mbox->n_recs; i++) {
			struct mail_rec *rec = &mbox->recs[i];
			if (rec->bflags & MREC_SEEN_SCAN)
				continue;
			const char *key = mailbox_rec_key(mbox, rec);
			struct load_ent *e = scan_find(&sc2, key, rec->base_len);
			if (e == NULL) {
				n_missing++;
				continue;
			}
			rec->bflags |= MREC_SEEN_SCAN;
			r = rescan_update(mbox, rec, e, scan_key(&sc2, e), flagged, undo,
					  &n_flagged);
		}
	}
	for (uint32_t i = 0; r >= 0 && n_missing > 0 && i < mbox->n_recs; i++) {
		struct mail_rec *rec = &mbox->recs[i];
		if (rec->bflags & MREC_SEEN_SCAN)
			continue;
		gone[n_gone++] = rec->uid;
		r = uidlist_line_expunge(&md->pending, rec->uid, mbox->highest_modseq + 1);
	}
	if (r < 0)
		goto out;
	/* new arrivals: size them (a file renamed since readdir waits for the next look) */
	struct load_ent *news = malloc((n_fresh + 1) * sizeof(*news));
	if (news == NULL) {
		r = -ENOMEM;
		goto out;
	}
	size_t n_news = 0;
	for (size_t i = 0; i < n_fresh; i++) {
		struct load_ent *e = &sc.ld.ents[fresh[i]];
		int sr = ent_stat(mbox->path, e, scan_key(&sc, e));
		if (sr == -ENOENT) {
			md->dirty_new = md->dirty_cur = true;
			continue;
		}
		if (sr < 0) {
			log_warn("storage: cannot read new message folder=%s err=%s",
				 log_escape_str(mbox->name), strerror(-sr));
			md->dirty_new = md->dirty_cur = true;
			continue;
		}
		news[n_news++] = *e;
	}
	qsort_r(news, n_news, sizeof(*news), cmp_ent_base, sc.ld.pool);
	r = add_new_ents(mbox, news, n_news, sc.ld.pool);
	free(news);
	if (r < 0)
		goto out;
	r = md_commit(mbox);
	if (r < 0) {
		/* reading needs no space: the refresh succeeds with nothing new */
		rescan_defer(mbox, mark, uidnext0, highest0, flagged, undo, n_flagged, r);
		r = 0;
		goto out;
	}
	md->refresh_deferred = false;
	for (size_t i = 0; i < n_gone; i++)
		mailbox_rec_remove(mbox, gone[i]);
	if (n_gone > 0)
		mbox->highest_modseq++;
	for (size_t i = 0; i < n_flagged; i++)
		mailbox_announce_flags(mbox, NULL, flagged[i]);
	if (n_news > 0)
		mailbox_announce_arrivals(mbox);
out:
	free(flagged);
	free(undo);
	free(gone);
	free(fresh);
	scan_free(&sc);
	scan_free(&sc2);
	return r < 0 ? r : 0;
}

/* Watch again after the unlinks of a big expunge; what changed meanwhile is re-read. */
static void watch_resume(struct mailbox *mbox)
{
	struct maildir *md = mbox->backend;
	char dir[4096];
	md->watch_paused = false;
	md->dirty_new = md->dirty_cur = true;
	if (storage_path(dir, sizeof(dir), "%s/new", mbox->path) < 0 ||
	    uv_fs_event_start(&md->ev_new, fs_event_cb, dir, 0) < 0 ||
	    storage_path(dir, sizeof(dir), "%s/cur", mbox->path) < 0 ||
	    uv_fs_event_start(&md->ev_cur, fs_event_cb, dir, 0) < 0) {
		log_warn("storage: cannot watch folder=%s", log_escape_str(mbox->path));
		md->watch_ok = false;
	}
}

static int md_refresh(struct mailbox *mbox, bool force)
{
	struct maildir *md = mbox->backend;
	if (md == NULL)
		return -ENOENT;
	if (md->watch_paused && mbox->unlinking == 0)
		watch_resume(mbox);
	struct timespec mn, mc;
	int r = dir_mtimes(mbox->path, &mn, &mc);
	if (r < 0)
		return r;
	/* only the directories that changed: an MTA's delivery re-reads new/ (a few names), not
	 * a cur/ of 50,000 */
	bool do_new = force || md->dirty_new || !ts_eq(&mn, &md->mtime_new);
	bool do_cur = force || md->dirty_cur || !ts_eq(&mc, &md->mtime_cur);
	if (!do_new && !do_cur)
		return 0;
	if (mbox->unlinking > 0) {
		/* expunged files are being removed off the loop: a re-read now would count them
		 * gone behind our back; the next refresh after them looks (dirty kept) */
		md->dirty_new |= do_new;
		md->dirty_cur |= do_cur;
		return 0;
	}
	md->mtime_new = mn;
	md->mtime_cur = mc;
	md->dirty_new = ts_recent(&mn);
	md->dirty_cur = ts_recent(&mc);
	return rescan(mbox, do_new, do_cur);
}

/* Find REC's file by base name after it was renamed outside (updates the key). */
static int locate(struct mailbox *mbox, struct mail_rec *rec)
{
	struct scan sc = {0};
	int r = scan_folder(&sc, mbox->path);
	if (r == 0) {
		const char *key = mailbox_rec_key(mbox, rec);
		struct load_ent *e = scan_find(&sc, key, rec->base_len);
		if (e == NULL) {
			r = -ENOENT;
		} else {
			r = mailbox_rec_set_key(mbox, rec, scan_key(&sc, e), e->key_len,
						e->base_len);
			rec->bflags =
				(uint8_t)((rec->bflags & ~MREC_IN_NEW) | (e->bflags & MREC_IN_NEW));
		}
	}
	scan_free(&sc);
	return r;
}

/* ---- changes ------------------------------------------------------------------------------ */

static int md_set_flags(struct mailbox *mbox, struct mail_rec *rec, unsigned flags,
			uint32_t keywords)
{
	struct maildir *md = mbox->backend;
	char old[4096], neu[4096], name[4096];
	int r = 0;
	for (int attempt = 0; attempt < LOCATE_TRIES; attempt++) {
		int n = name_build(name, sizeof(name), mailbox_rec_key(mbox, rec), rec->base_len,
				   flags, keywords, rec->bflags);
		if (n < 0)
			return n;
		r = rec_path(mbox, rec, old, sizeof(old));
		if (r == 0)
			r = storage_path(neu, sizeof(neu), "%s/cur/%s", mbox->path, name);
		if (r < 0)
			return r;
		own_expect(mbox, (rec->bflags & MREC_IN_NEW) != 0, mailbox_rec_key(mbox, rec));
		own_expect(mbox, false, name);
		if (rename(old, neu) == 0) {
			if (rec->bflags & MREC_IN_NEW)
				md->fsync_new = true;
			md->fsync_cur = true;
			rec->bflags &= (uint8_t)~MREC_IN_NEW;
			r = mailbox_rec_set_key(mbox, rec, name, (size_t)n, rec->base_len);
			if (r == 0)
				r = uidlist_line_flags(&md->pending, rec->uid, rec->modseq, flags,
						       keywords);
			return r;
		}
		r = -errno;
		if (r != -ENOENT)
			return r;
		r = locate(mbox, rec); /* renamed outside since our last look */
		if (r < 0)
			return r;
	}
	return -EAGAIN; /* another program keeps renaming it */
}

static int md_expunge(struct mailbox *mbox, struct mail_rec *rec)
{
	struct maildir *md = mbox->backend;
	md->append_only = true;
	return uidlist_line_expunge_unlink(&md->pending, rec->uid, mbox->highest_modseq + 1);
}

static int md_unlink(struct mailbox *mbox, struct mail_rec *rec)
{
	struct maildir *md = mbox->backend;
	char path[4096];
	for (int attempt = 0; attempt < LOCATE_TRIES; attempt++) {
		int r = rec_path(mbox, rec, path, sizeof(path));
		if (r < 0)
			return r;
		own_expect(mbox, (rec->bflags & MREC_IN_NEW) != 0, mailbox_rec_key(mbox, rec));
		if (unlink(path) == 0)
			break;
		if (errno != ENOENT)
			return -errno;
		if (locate(mbox, rec) < 0)
			return 0; /* already gone */
		if (attempt == LOCATE_TRIES - 1)
			return -EAGAIN; /* another program keeps renaming it */
	}
	if (rec->bflags & MREC_IN_NEW)
		md->fsync_new = true;
	else
		md->fsync_cur = true;
	return 0;
}

static int md_unlink_path(struct mailbox *mbox, struct mail_rec *rec, char *buf, size_t size)
{
	struct maildir *md = mbox->backend;
	int r = rec_path(mbox, rec, buf, size);
	if (r < 0)
		return r;
	if (md->watching && md->watch_ok && !md->watch_paused) {
		/* one inotify event per unlinked file would wake the loop 10,000 times while the
		 * pool unlinks (measured: QUIT after DELE of 10,000 took 3.4 s instead of 0.3);
		 * the refresh after the unlinks watches again and re-reads the folder */
		uv_fs_event_stop(&md->ev_new);
		uv_fs_event_stop(&md->ev_cur);
		md->watch_paused = true;
	}
	own_expect(mbox, (rec->bflags & MREC_IN_NEW) != 0, mailbox_rec_key(mbox, rec));
	if (rec->bflags & MREC_IN_NEW)
		md->fsync_new = true;
	else
		md->fsync_cur = true;
	return 0;
}

/* Add the record for a file now in cur/NAME and queue its UID-list line. */
static int add_arrival(struct mailbox *mbox, const char *name, size_t name_len, size_t base_len,
		       unsigned flags, uint32_t keywords, uint64_t size, int64_t idate,
		       uint8_t bflags, uint64_t emailid, uint32_t *uid_r)
{
	struct maildir *md = mbox->backend;
	if (mbox->uidnext == UINT32_MAX)
		return -EOVERFLOW;
	struct mail_rec rec = {0};
	rec.uid = mbox->uidnext;
	rec.keywords = keywords;
	rec.modseq = mbox->highest_modseq + 1;
	rec.size = size;
	rec.idate = idate;
	rec.savedate = savedate_clamp((int64_t)time(NULL)); /* saved into this folder now */
	rec.emailid = emailid != 0 ? emailid : mailbox_emailid_from_base(name, base_len);
	rec.key_len = (uint16_t)name_len;
	rec.base_len = (uint16_t)base_len;
	rec.flags = (uint8_t)flags;
	rec.bflags = bflags & MREC_PASSED;
	int r = mailbox_rec_add(mbox, &rec, name);
	if (r < 0)
		return r;
	char uidl[MAIL_UIDL_MAX + 1];
	uidlist_uidl_from_base(name, base_len, uidl);
	md->fsync_cur = true;
	*uid_r = rec.uid;
	return uidlist_line_add(&md->pending, rec.uid, rec.modseq, size, idate, flags, keywords,
				rec.savedate, rec.emailid, uidl, name, base_len);
}

static int md_append_begin(struct mailbox *mbox, struct mail_append *a)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int r = storage_path(a->tmp_path, sizeof(a->tmp_path), "%s/tmp/%lld.M%ldP%dQ%u.append",
			     mbox->path, (long long)ts.tv_sec, (long)(ts.tv_nsec / 1000),
			     (int)getpid(), ++name_counter);
	if (r < 0)
		return r;
	a->fd = open(a->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	return a->fd < 0 ? -errno : 0;
}

static int md_append_write(struct mail_append *a, const void *data, size_t len)
{
	if (a->fd < 0)
		return -EBADF;
	int r = storage_write_all(a->fd, data, len);
	if (r < 0)
		return r;
	const char *s = data;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\n' && !a->last_cr)
			a->crlf_size++;
		a->last_cr = s[i] == '\r';
	}
	a->size += len;
	a->crlf_size += len;
	return 0;
}

/* The internal date: the client's, else now (fixed at the first call). */
static int64_t append_idate(struct mail_append *a)
{
	if (a->idate == 0)
		a->idate = (int64_t)time(NULL);
	return a->idate;
}

/* The message file is durable: rename it into cur/ and record it (NOWAIT: commit_nowait). */
static int append_finish_rest(struct mail_append *a, uint32_t *uid_r, bool nowait)
{
	struct mailbox *mbox = a->mbox;
	int64_t idate = append_idate(a);
	int r;
	char base[1024], name[1200], path[4096];
	r = base_new(base, sizeof(base), a->size, a->crlf_size);
	if (r < 0)
		return r;
	size_t base_len = strlen(base);
	int n = name_build(name, sizeof(name), base, base_len, a->flags, a->keywords, 0);
	if (n < 0)
		return n;
	r = storage_path(path, sizeof(path), "%s/cur/%s", mbox->path, name);
	if (r < 0)
		return r;
	own_expect(mbox, false, name);
	if (rename(a->tmp_path, path) < 0)
		return -errno;
	a->tmp_path[0] = '\0';
	struct maildir *md = mbox->backend;
	size_t mark = md->pending.len;
	uint32_t uidnext0 = mbox->uidnext;
	uint64_t highest0 = mbox->highest_modseq;
	r = add_arrival(mbox, name, (size_t)n, base_len, a->flags, a->keywords, a->crlf_size, idate,
			0, 0, uid_r);
	if (r == 0)
		r = md_commit_impl(mbox, nowait);
	if (r < 0) {
		/* the UID record could not be written: the message was not appended */
		md_discard(mbox, mark);
		if (mbox->uidnext > uidnext0)
			mailbox_rec_drop_from(mbox, uidnext0);
		mbox->highest_modseq = highest0;
		if (unlink(path) == 0)
			md->fsync_cur = true;
	}
	return r;
}

static int md_append_finish(struct mail_append *a, uint32_t *uid_r)
{
	if (a->fd < 0)
		return -EBADF;
	int64_t idate = append_idate(a);
	struct timespec times[2] = {{(time_t)idate, 0}, {(time_t)idate, 0}};
	int r = 0;
	if (futimens(a->fd, times) < 0 || fsync(a->fd) < 0)
		r = -errno;
	if (close(a->fd) < 0 && r == 0)
		r = -errno;
	a->fd = -1;
	if (r < 0)
		return r;
	return append_finish_rest(a, uid_r, false);
}

/* The file's times, then its fsync handed to the thread pool (with the descriptor). */
static int md_append_prepare(struct mail_append *a)
{
	if (a->fd < 0)
		return -EBADF;
	int64_t idate = append_idate(a);
	struct timespec times[2] = {{(time_t)idate, 0}, {(time_t)idate, 0}};
	if (futimens(a->fd, times) < 0)
		return -errno;
	int fd = a->fd;
	a->fd = -1;
	return mailbox_sync_defer(a->mbox, fd, false);
}

static int md_append_finish_nowait(struct mail_append *a, uint32_t *uid_r)
{
	return append_finish_rest(a, uid_r, true);
}

static void md_append_abort(struct mail_append *a)
{
	if (a->fd >= 0)
		close(a->fd);
	a->fd = -1;
	if (a->tmp_path[0] != '\0')
		unlink(a->tmp_path);
	a->tmp_path[0] = '\0';
}

/* Copy the bytes of SRC_PATH into a new file TMP (fsynced). */
static int copy_file(const char *src_path, const char *tmp, int64_t idate)
{
	int in = open(src_path, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -errno;
	int out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0) {
		int e = -errno;
		close(in);
		return e;
	}
	char buf[65536];
	int r = 0;
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		r = storage_write_all(out, buf, (size_t)n);
		if (r < 0)
			break;
	}
	struct timespec times[2] = {{(time_t)idate, 0}, {(time_t)idate, 0}};
	if (r == 0 && (futimens(out, times) < 0 || fsync(out) < 0))
		r = -errno;
	close(in);
	if (close(out) < 0 && r == 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

static int md_copy(struct mailbox *src, struct mail_rec *srec, struct mailbox *dst, unsigned flags,
		   uint32_t keywords, bool move, uint32_t *uid_r)
{
	struct maildir *smd = src->backend;
	char spath[4096], dpath[4096], base[1024], name[1200];
	struct stat st;
	int r = rec_path(src, srec, spath, sizeof(spath));
	if (r == 0 && stat(spath, &st) < 0) {
		r = -errno;
		if (r == -ENOENT && locate(src, srec) == 0)
			r = rec_path(src, srec, spath, sizeof(spath));
		if (r == 0 && stat(spath, &st) < 0)
			r = -errno;
	}
	if (r < 0)
		return r;
	/* take what we need before DST (maybe SRC) grows its array */
	uint64_t size = srec->size;
	int64_t idate = srec->idate;
	uint32_t suid = srec->uid;
	bool s_in_new = (srec->bflags & MREC_IN_NEW) != 0;
	uint8_t bflags = srec->bflags & MREC_PASSED;
	uint64_t emailid = srec->emailid; /* RFC 8474: the same message, the same EMAILID */
	r = base_new(base, sizeof(base), (uint64_t)st.st_size, size);
	if (r < 0)
		return r;
	size_t base_len = strlen(base);
	int n = name_build(name, sizeof(name), base, base_len, flags, keywords, bflags);
	if (n < 0)
		return n;
	r = storage_path(dpath, sizeof(dpath), "%s/cur/%s", dst->path, name);
	if (r < 0)
		return r;
	bool done = false;
	/* a link changes the source's link count (an attribute event), a move removes it */
	own_expect(src, s_in_new, mailbox_rec_key(src, srec));
	own_expect(dst, false, name);
	if (move) {
		if (rename(spath, dpath) == 0)
			done = true;
		else if (errno != EXDEV)
			return -errno;
	} else {
		if (link(spath, dpath) == 0)
			done = true;
		else if (errno != EXDEV && errno != EPERM && errno != EMLINK)
			return -errno;
	}
	if (!done) {
		char tmp[4096];
		r = storage_path(tmp, sizeof(tmp), "%s/tmp/%s", dst->path, base);
		if (r == 0)
			r = copy_file(spath, tmp, idate);
		if (r == 0 && rename(tmp, dpath) < 0) {
			r = -errno;
			unlink(tmp);
		}
		if (r < 0)
			return r;
		if (move && unlink(spath) < 0 && errno != ENOENT)
			log_warn("storage: moved message left in source path=%s",
				 log_escape_str(spath));
	}
	if (move) {
		if (s_in_new)
			smd->fsync_new = true;
		else
			smd->fsync_cur = true;
		r = uidlist_line_expunge(&smd->pending, suid, src->highest_modseq + 1);
		if (r < 0)
			return r;
	}
	return add_arrival(dst, name, (size_t)n, base_len, flags, keywords, size, idate, bflags,
			   emailid, uid_r);
}

static int md_copy_undo(struct mailbox *src, uint32_t suid, struct mailbox *dst,
			struct mail_rec *drec, bool move)
{
	struct maildir *dmd = dst->backend;
	char dpath[4096], spath[4096];
	int r = rec_path(dst, drec, dpath, sizeof(dpath));
	if (r < 0)
		return r;
	own_expect(dst, false, mailbox_rec_key(dst, drec));
	if (move) {
		struct mail_rec *srec = mailbox_rec_find(src, suid);
		if (srec == NULL)
			return -ENOENT;
		r = rec_path(src, srec, spath, sizeof(spath));
		if (r < 0)
			return r;
		bool s_in_new = (srec->bflags & MREC_IN_NEW) != 0;
		own_expect(src, s_in_new, mailbox_rec_key(src, srec));
		if (rename(dpath, spath) < 0)
			return -errno; /* e.g. EXDEV: the move was a copy + unlink */
		struct maildir *smd = src->backend;
		if (s_in_new)
			smd->fsync_new = true;
		else
			smd->fsync_cur = true;
	} else if (unlink(dpath) < 0 && errno != ENOENT) {
		return -errno;
	}
	dmd->fsync_cur = true;
	return 0;
}

static int md_open_msg(struct mailbox *mbox, const struct mail_rec *crec, int *fd_r,
		       bool *needs_crlf_r)
{
	struct mail_rec *rec = mailbox_rec_find(mbox, crec->uid);
	if (rec == NULL)
		return -ENOENT;
	char path[4096];
	for (int attempt = 0; attempt < LOCATE_TRIES; attempt++) {
		int r = rec_path(mbox, rec, path, sizeof(path));
		if (r < 0)
			return r;
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			struct stat st;
			if (fstat(fd, &st) < 0) {
				r = -errno;
				close(fd);
				return r;
			}
			*fd_r = fd;
			*needs_crlf_r = (uint64_t)st.st_size != rec->size;
			return 0;
		}
		if (errno != ENOENT)
			return -errno;
		r = locate(mbox, rec); /* renamed since the last scan (a flag change outside) */
		if (r < 0)
			return r;
	}
	return -ENOENT;
}

const struct mailbox_backend_ops maildir_backend_ops = {
	.name = "maildir",
	.load = md_load,
	.attach = md_attach,
	.refresh = md_refresh,
	.set_flags = md_set_flags,
	.expunge = md_expunge,
	.unlink = md_unlink,
	.commit = md_commit,
	.commit_nowait = md_commit_nowait,
	.append_prepare = md_append_prepare,
	.append_finish_nowait = md_append_finish_nowait,
	.unlink_path = md_unlink_path,
	.pending_mark = md_pending_mark,
	.discard = md_discard,
	.append_begin = md_append_begin,
	.append_write = md_append_write,
	.append_finish = md_append_finish,
	.append_abort = md_append_abort,
	.copy = md_copy,
	.copy_undo = md_copy_undo,
	.open_msg = md_open_msg,
	.save_keywords = md_save_keywords,
	.cache_put = md_cache_put,
	.cache_get = md_cache_get,
	.pop3_ret_read = md_pop3_ret_read,
	.pop3_ret_write = md_pop3_ret_write,
	.free = md_free,
};
