/* pop3_retrieved — the POP3 retrieval record file (pop3_retrieved.h). */
#include "pop3_retrieved.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage_util.h"
#include "uidlist.h"

void pop3_retrieved_free(struct pop3_ret_file *f)
{
	free(f->ents);
	f->ents = NULL;
	f->n = 0;
	f->lines = 0;
}

/* A checksummed line "HHHHHHHH payload": the payload when the checksum holds. */
static bool line_payload(const char *line, size_t len, const char **p_r, size_t *plen_r)
{
	if (len < 10 || line[8] != ' ')
		return false;
	uint32_t sum = 0;
	for (int i = 0; i < 8; i++) {
		char c = line[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return false;
		sum = sum << 4 | d;
	}
	*p_r = line + 9;
	*plen_r = len - 9;
	return storage_hash32(*p_r, *plen_r) == sum;
}

/* An unsigned decimal number filling [p, end): no sign, no leading zero, at most 19 digits. */
static bool parse_dec(const char *p, const char *end, uint64_t *v_r)
{
	size_t n = (size_t)(end - p);
	if (n == 0 || n > 19 || (n > 1 && p[0] == '0'))
		return false;
	uint64_t v = 0;
	for (; p < end; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	*v_r = v;
	return true;
}

/* "R 1 <uidvalidity>" */
static bool parse_header(const char *p, size_t len, uint32_t *uidvalidity_r)
{
	uint64_t v;
	if (len < 5 || memcmp(p, "R 1 ", 4) != 0 || !parse_dec(p + 4, p + len, &v) || v == 0 ||
	    v > UINT32_MAX)
		return false;
	*uidvalidity_r = (uint32_t)v;
	return true;
}

/* "<uid> <time>", time possibly negative (a clock before 1970 is still a time). */
static bool parse_record(const char *p, size_t len, struct pop3_ret *e)
{
	const char *end = p + len;
	const char *sp = memchr(p, ' ', len);
	uint64_t uid, t;
	if (sp == NULL || !parse_dec(p, sp, &uid) || uid == 0 || uid > UINT32_MAX)
		return false;
	const char *q = sp + 1;
	bool neg = q < end && *q == '-';
	if (neg)
		q++;
	if (!parse_dec(q, end, &t) || t > INT64_MAX)
		return false;
	e->uid = (uint32_t)uid;
	e->time = neg ? -(int64_t)t : (int64_t)t;
	return true;
}

static int cmp_ret(const void *a, const void *b)
{
	const struct pop3_ret *x = a, *y = b;
	if (x->uid != y->uid)
		return x->uid < y->uid ? -1 : 1;
	if (x->time != y->time)
		return x->time < y->time ? -1 : 1;
	return 0;
}

int pop3_retrieved_read(const char *path, uint32_t uidvalidity, struct pop3_ret_file *f)
{
	memset(f, 0, sizeof(*f));
	char *data;
	size_t len;
	int r = storage_read_file(path, POP3_RETRIEVED_MAX_BYTES, &data, &len);
	if (r == -ENOENT || r == -EFBIG) {
		f->rewrite = true;
		return 0;
	}
	if (r < 0)
		return r;
	size_t cap = 0;
	bool header = false;
	for (size_t off = 0; off < len;) {
		const char *line = data + off;
		const char *nl = memchr(line, '\n', len - off);
		size_t llen = nl ? (size_t)(nl - line) : len - off;
		off += llen + (nl != NULL);
		const char *p;
		size_t plen;
		if (nl == NULL || !line_payload(line, llen, &p, &plen)) {
			/* a write that never completed, or damage: that line only */
			f->rewrite = true;
			if (!header)
				break; /* without its header no record can be trusted */
			continue;
		}
		if (!header) {
			uint32_t uv;
			if (!parse_header(p, plen, &uv) || uv != uidvalidity) {
				f->rewrite = true;
				break;
			}
			header = true;
			continue;
		}
		struct pop3_ret e;
		if (!parse_record(p, plen, &e)) {
			f->rewrite = true;
			continue;
		}
		if (f->n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct pop3_ret *ne = realloc(f->ents, ncap * sizeof(*ne));
			if (ne == NULL) {
				free(data);
				pop3_retrieved_free(f);
				return -ENOMEM;
			}
			f->ents = ne;
			cap = ncap;
		}
		f->ents[f->n++] = e;
		f->lines++;
	}
	free(data);
	if (!header) {
		f->rewrite = true;
		f->n = 0;
		f->lines = 0;
		return 0;
	}
	if (f->n > 1) {
		qsort(f->ents, f->n, sizeof(*f->ents), cmp_ret);
		size_t k = 1;
		for (size_t i = 1; i < f->n; i++)
			if (f->ents[i].uid != f->ents[k - 1].uid)
				f->ents[k++] = f->ents[i]; /* the first of a uid is its earliest */
		if (k != f->n)
			f->rewrite = true;
		f->n = k;
	}
	return 0;
}

static int build_lines(struct sbuf *b, const struct pop3_ret *ents, size_t n)
{
	int r = 0;
	for (size_t i = 0; i < n && r == 0; i++)
		r = uidlist_line(b, "%" PRIu32 " %" PRId64, ents[i].uid, ents[i].time);
	return r;
}

int pop3_retrieved_write(const char *path, uint32_t uidvalidity, const struct pop3_ret *ents,
			 size_t n)
{
	struct sbuf b = {0};
	int r = uidlist_line(&b, "R 1 %" PRIu32, uidvalidity);
	if (r == 0)
		r = build_lines(&b, ents, n);
	if (r == 0)
		r = storage_write_file_atomic(path, b.data, b.len);
	sbuf_free(&b);
	return r;
}

int pop3_retrieved_append_nosync(const char *path, const struct pop3_ret *ents, size_t n, int *fd_r)
{
	*fd_r = -1;
	struct sbuf b = {0};
	int r = build_lines(&b, ents, n);
	if (r < 0) {
		sbuf_free(&b);
		return r;
	}
	int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0)
		r = -errno;
	if (r == 0)
		r = storage_write_all(fd, b.data, b.len);
	sbuf_free(&b);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		return r;
	}
	*fd_r = fd;
	return 0;
}

int pop3_retrieved_append(const char *path, const struct pop3_ret *ents, size_t n)
{
	if (n == 0)
		return 0;
	int fd;
	int r = pop3_retrieved_append_nosync(path, ents, n, &fd);
	if (r < 0)
		return r;
	if (fdatasync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}
