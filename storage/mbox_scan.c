/* mbox_scan — From_ separation, hidden headers and served bytes (mbox_scan.h). */
#include "mbox_scan.h"
#include "storage_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define SCAN_CHUNK (256u * 1024)

static const char *const hidden[] = {"Status",     "X-Status", "X-Keywords", "X-UID",
				     "X-IMAPbase", "X-IMAP",   "X-UIDL",     "Content-Length"};

#define HASH_MUL 0x9e3779b97f4a7c15ull

void mbox_hash_init(struct mbox_hash *mh)
{
	memset(mh, 0, sizeof(*mh));
	mh->h = 0x6d626f786d6b7031ull;
}

static inline uint64_t hash_mix(uint64_t h, uint64_t w)
{
	h = (h ^ w) * HASH_MUL;
	return h ^ (h >> 29);
}

void mbox_hash_add(struct mbox_hash *mh, const void *p, size_t len)
{
	const unsigned char *s = p;
	mh->len += len;
	while (len > 0 && mh->n != 0) {
		mh->carry |= (uint64_t)*s++ << (8 * mh->n);
		len--;
		if (++mh->n == 8) {
			mh->h = hash_mix(mh->h, mh->carry);
			mh->carry = 0;
			mh->n = 0;
		}
	}
	uint64_t h = mh->h;
	while (len >= 8) {
		uint64_t w = (uint64_t)s[0] | (uint64_t)s[1] << 8 | (uint64_t)s[2] << 16 |
			     (uint64_t)s[3] << 24 | (uint64_t)s[4] << 32 | (uint64_t)s[5] << 40 |
			     (uint64_t)s[6] << 48 | (uint64_t)s[7] << 56;
		h = hash_mix(h, w);
		s += 8;
		len -= 8;
	}
	mh->h = h;
	while (len > 0) {
		mh->carry |= (uint64_t)*s++ << (8 * mh->n);
		mh->n++;
		len--;
	}
}

uint64_t mbox_hash_final(const struct mbox_hash *mh)
{
	uint64_t h = hash_mix(mh->h, mh->carry ^ ((uint64_t)mh->n << 56));
	return hash_mix(h, mh->len);
}

bool mbox_hidden_header(const char *line, size_t len)
{
	const char *colon = memchr(line, ':', len < 32 ? len : 32);
	if (colon == NULL)
		return false;
	size_t n = (size_t)(colon - line);
	for (size_t i = 0; i < sizeof(hidden) / sizeof(hidden[0]); i++)
		if (strlen(hidden[i]) == n && strncasecmp(line, hidden[i], n) == 0)
			return true;
	return false;
}

static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
				     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

int64_t mbox_from_date(const char *line, size_t len)
{
	char buf[256];
	if (len >= sizeof(buf))
		len = sizeof(buf) - 1;
	memcpy(buf, line, len);
	buf[len] = '\0';
	/* find " Mmm dd hh:mm" */
	for (char *p = buf + 5; (p = strchr(p, ' ')) != NULL; p++) {
		int mon = -1;
		for (int m = 0; m < 12; m++)
			if (strncmp(p + 1, months[m], 3) == 0 && p[4] == ' ')
				mon = m;
		if (mon < 0)
			continue;
		int day, hh, mm, ss = 0, n = 0;
		if (sscanf(p + 5, "%d %d:%d%n", &day, &hh, &mm, &n) != 3)
			continue;
		const char *q = p + 5 + n;
		if (*q == ':') {
			int n2 = 0;
			if (sscanf(q, ":%d%n", &ss, &n2) != 1)
				continue;
			q += n2;
		}
		/* the year: the first 4-digit word after the time (a zone may come first) */
		long year = -1;
		for (int words = 0; words < 3 && *q; words++) {
			while (*q == ' ')
				q++;
			const char *w = q;
			while (*q && *q != ' ' && *q != '\r' && *q != '\n')
				q++;
			if (q - w == 4 && w[0] >= '0' && w[0] <= '9' && w[3] >= '0' &&
			    w[3] <= '9') {
				year = strtol(w, NULL, 10);
				break;
			}
		}
		if (year < 1970 || year > 9999 || day < 1 || day > 31 || hh > 23 || mm > 59 ||
		    ss > 60)
			continue;
		struct tm tm = {0};
		tm.tm_year = (int)year - 1900;
		tm.tm_mon = mon;
		tm.tm_mday = day;
		tm.tm_hour = hh;
		tm.tm_min = mm;
		tm.tm_sec = ss;
		return (int64_t)timegm(&tm);
	}
	return -1;
}

size_t mbox_from_line(int64_t idate, char *buf, size_t size)
{
	time_t t = (time_t)idate;
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	static const char *const wdays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	int n = snprintf(buf, size, "From MAILER-DAEMON %s %s %2d %02d:%02d:%02d %d\n",
			 wdays[tm.tm_wday % 7], months[tm.tm_mon % 12], tm.tm_mday, tm.tm_hour,
			 tm.tm_min, tm.tm_sec, tm.tm_year + 1900);
	return n < 0 || (size_t)n >= size ? 0 : (size_t)n;
}

/* ---- the served-bytes filter, line by line ------------------------------------------------ */

struct filter {
	bool in_hdr;   /* still in the header block */
	bool skipping; /* inside a hidden header field (continuation lines too) */
	bool mboxrd;
};

/* Is this line start (at least 6 bytes or the whole line) an mboxrd-quoted From? Returns the
 * number of bytes to drop (0 or 1). */
static size_t rd_unquote(const char *s, size_t len)
{
	size_t i = 0;
	while (i < len && s[i] == '>')
		i++;
	if (i == 0 || len - i < 5 || memcmp(s + i, "From ", 5) != 0)
		return 0;
	return 1;
}

/* Decide what of one line (whole, starting at a line start) is served: *skip_r bytes are
 * dropped from its start, or the whole line when it returns false. Updates the header
 * state. LINE holds at least the first min(len, 64) bytes of the line. */
static bool filter_line(struct filter *f, const char *line, size_t len, size_t *skip_r)
{
	*skip_r = 0;
	if (f->in_hdr) {
		if (len == 0 || line[0] == '\n' ||
		    (line[0] == '\r' && len > 1 && line[1] == '\n')) {
			f->in_hdr = false;
			f->skipping = false;
			return true;
		}
		if (line[0] == ' ' || line[0] == '\t')
			return !f->skipping;
		f->skipping = mbox_hidden_header(line, len);
		if (f->skipping)
			return false;
	}
	if (f->mboxrd)
		*skip_r = rd_unquote(line, len);
	return true;
}

/* ---- scanning ----------------------------------------------------------------------------- */

struct reader {
	int fd;
	uint64_t end;
	uint64_t base; /* file offset of buf[0] */
	char *buf;
	size_t len;
	size_t off;
};

/* Make at least WANT bytes (or up to the end) available at r->off. 0 or -errno. */
static int reader_fill(struct reader *r, size_t want)
{
	if (r->len - r->off >= want || r->base + r->len >= r->end)
		return 0;
	memmove(r->buf, r->buf + r->off, r->len - r->off);
	r->base += r->off;
	r->len -= r->off;
	r->off = 0;
	while (r->len < SCAN_CHUNK && r->base + r->len < r->end) {
		uint64_t left = r->end - (r->base + r->len);
		size_t n = SCAN_CHUNK - r->len;
		if (n > left)
			n = (size_t)left;
		ssize_t got = pread(r->fd, r->buf + r->len, n, (off_t)(r->base + r->len));
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		if (got == 0)
			return -EIO; /* cut short under us */
		r->len += (size_t)got;
		if (r->len - r->off >= want)
			break;
	}
	return 0;
}

static bool is_from_line(const char *s, size_t avail, bool after_blank)
{
	if (avail < 5 || memcmp(s, "From ", 5) != 0)
		return false;
	if (after_blank)
		return true;
	const char *nl = memchr(s, '\n', avail < 255 ? avail : 255);
	return mbox_from_date(s, nl != NULL ? (size_t)(nl - s) : (avail < 255 ? avail : 255)) >= 0;
}

struct msg_state {
	struct mbox_scan_msg m;
	struct filter f;
	struct mbox_hash hash, hdr_hash;
	uint64_t size;
	bool first;
	bool open;
	bool pending_lf; /* the last served byte is an LF not hashed yet (it may be the
			  * separator) */
	bool pending_cr; /* ... and a CR came before it */
	bool region_lf;  /* the last byte of the message's region is LF (the separator) */
};

static void parse_ours(struct msg_state *st, const char *line, size_t len)
{
	char v[MBOX_HDR_VALUE_MAX + 1];
	const char *colon = memchr(line, ':', len);
	if (colon == NULL)
		return;
	size_t n = (size_t)(colon - line);
	const char *p = colon + 1;
	size_t vl = len - (size_t)(p - line);
	while (vl > 0 && (*p == ' ' || *p == '\t')) {
		p++;
		vl--;
	}
	while (vl > 0 && (p[vl - 1] == '\n' || p[vl - 1] == '\r' || p[vl - 1] == ' '))
		vl--;
	if (vl > MBOX_HDR_VALUE_MAX)
		vl = MBOX_HDR_VALUE_MAX;
	memcpy(v, p, vl);
	v[vl] = '\0';
	struct mbox_scan_msg *m = &st->m;
	if (n == 6 && strncasecmp(line, "Status", 6) == 0) {
		m->has_status = true;
		if (strchr(v, 'R') != NULL)
			m->flags |= MAIL_SEEN;
	} else if (n == 8 && strncasecmp(line, "X-Status", 8) == 0) {
		m->has_status = true;
		if (strchr(v, 'A') != NULL)
			m->flags |= MAIL_ANSWERED;
		if (strchr(v, 'F') != NULL)
			m->flags |= MAIL_FLAGGED;
		if (strchr(v, 'T') != NULL)
			m->flags |= MAIL_DRAFT;
		if (strchr(v, 'D') != NULL)
			m->flags |= MAIL_DELETED;
	} else if (n == 10 && strncasecmp(line, "X-Keywords", 10) == 0) {
		free(m->keywords);
		m->keywords = strdup(v);
	} else if (n == 5 && strncasecmp(line, "X-UID", 5) == 0) {
		char *end;
		unsigned long u = strtoul(v, &end, 10);
		if (end != v && u > 0 && u < UINT32_MAX)
			m->xuid = (uint32_t)u;
	} else if (n == 10 && strncasecmp(line, "X-IMAPbase", 10) == 0 && st->first) {
		unsigned long a, b;
		if (sscanf(v, "%lu %lu", &a, &b) == 2 && a > 0 && a < UINT32_MAX && b > 0 &&
		    b < UINT32_MAX) {
			m->base_validity = (uint32_t)a;
			m->base_next = (uint32_t)b;
		}
	} else if (n == 6 && strncasecmp(line, "X-UIDL", 6) == 0) {
		bool ok = vl > 0 && vl <= MAIL_UIDL_MAX;
		for (size_t i = 0; ok && i < vl; i++)
			ok = (unsigned char)v[i] >= 0x21 && (unsigned char)v[i] <= 0x7e;
		if (ok)
			memcpy(m->uidl, v, vl + 1);
	}
}

static int msg_finish(struct mbox_scan *sc, struct msg_state *st, uint64_t end)
{
	if (!st->open)
		return 0;
	st->open = false;
	/* the LF before the next From_ line (or the end of the file) is the separator, not
	 * the message's (Dovecot's rule: a message is written followed by one LF) */
	if (st->region_lf && end > st->m.hdr_off) {
		end--;
		if (st->pending_lf) /* it was served: take it back */
			st->size -= st->pending_cr ? 1 : 2;
	} else if (st->pending_lf) {
		mbox_hash_add(&st->hash, "\n", 1);
	}
	st->m.end_off = end;
	st->m.size = st->size;
	st->m.hash = mbox_hash_final(&st->hash);
	st->m.hdr_hash = mbox_hash_final(&st->hdr_hash);
	st->m.has_ours = st->m.xuid != 0 && st->m.uidl[0] != '\0';
	if (sc->n == sc->cap) {
		size_t cap = sc->cap ? sc->cap * 2 : 64;
		struct mbox_scan_msg *n = realloc(sc->msgs, cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		sc->msgs = n;
		sc->cap = cap;
	}
	sc->msgs[sc->n++] = st->m;
	st->m.keywords = NULL;
	return 0;
}

void mbox_scan_free(struct mbox_scan *sc)
{
	for (size_t i = 0; i < sc->n; i++)
		free(sc->msgs[i].keywords);
	free(sc->msgs);
	memset(sc, 0, sizeof(*sc));
}

int mbox_scan_file(int fd, uint64_t from, uint64_t end, bool mboxrd, struct mbox_scan *sc)
{
	struct reader rd = {fd, end, from, NULL, 0, 0};
	rd.buf = malloc(SCAN_CHUNK);
	if (rd.buf == NULL)
		return -ENOMEM;
	struct msg_state st;
	memset(&st, 0, sizeof(st));
	st.first = from == 0;
	bool after_blank = true; /* the start counts as after an empty line */
	int r = 0;
	while (r == 0) {
		r = reader_fill(&rd, 256);
		if (r < 0 || rd.off >= rd.len)
			break;
		uint64_t line_off = rd.base + rd.off;
		const char *s = rd.buf + rd.off;
		size_t avail = rd.len - rd.off;
		const char *nl = memchr(s, '\n', avail);
		size_t seg = nl != NULL ? (size_t)(nl - s) + 1 : avail;
		bool whole = nl != NULL || rd.base + rd.len >= end;
		if (is_from_line(s, avail, after_blank)) {
			r = msg_finish(sc, &st, line_off);
			if (r < 0)
				break;
			memset(&st, 0, sizeof(st));
			st.first = sc->n == 0 && from == 0;
			st.open = true;
			st.m.from_off = line_off;
			st.m.idate = mbox_from_date(s, seg);
			st.f.in_hdr = true;
			st.f.mboxrd = mboxrd;
			mbox_hash_init(&st.hash);
			mbox_hash_init(&st.hdr_hash);
			/* skip the From_ line, however long */
			for (;;) {
				rd.off += seg;
				if (nl != NULL || rd.base + rd.len >= end)
					break;
				r = reader_fill(&rd, 1);
				if (r < 0 || rd.off >= rd.len)
					break;
				s = rd.buf + rd.off;
				avail = rd.len - rd.off;
				nl = memchr(s, '\n', avail);
				seg = nl != NULL ? (size_t)(nl - s) + 1 : avail;
			}
			st.m.hdr_off = rd.base + rd.off;
			after_blank = false;
			continue;
		}
		if (!st.open) {
			/* bytes before the first From_ line: not a message */
			after_blank = seg == 1 || (seg == 2 && s[0] == '\r');
			rd.off += seg;
			continue;
		}
		bool in_hdr = st.f.in_hdr;
		size_t skip;
		bool keep = filter_line(&st.f, s, seg, &skip);
		if (in_hdr && !keep)
			parse_ours(&st, s, seg);
		bool blank = nl != NULL && (seg == 1 || (seg == 2 && s[0] == '\r'));
		/* the line, possibly in several segments */
		bool last_cr = false;
		size_t first = skip;
		for (;;) {
			if (keep && seg > first) {
				const char *b = s + first;
				size_t n = seg - first;
				if (st.pending_lf) {
					mbox_hash_add(&st.hash, "\n", 1);
					st.pending_lf = false;
				}
				bool ends_lf = b[n - 1] == '\n';
				bool cr_before = n >= 2 ? b[n - 2] == '\r' : last_cr;
				/* hold a final LF back: it may be the separator */
				mbox_hash_add(&st.hash, b, ends_lf ? n - 1 : n);
				if (ends_lf) {
					st.pending_lf = true;
					st.pending_cr = cr_before;
				}
				if (in_hdr && st.f.in_hdr)
					mbox_hash_add(&st.hdr_hash, b, n);
				st.size += n;
				if (ends_lf && !cr_before)
					st.size++;
				last_cr = b[n - 1] == '\r';
			} else if (!keep && st.pending_lf) {
				/* a hidden line follows: that LF was the message's */
				mbox_hash_add(&st.hash, "\n", 1);
				st.pending_lf = false;
			}
			if (seg > 0)
				st.region_lf = s[seg - 1] == '\n';
			rd.off += seg;
			first = 0;
			if (whole)
				break;
			r = reader_fill(&rd, 1);
			if (r < 0 || rd.off >= rd.len)
				break;
			s = rd.buf + rd.off;
			avail = rd.len - rd.off;
			nl = memchr(s, '\n', avail);
			seg = nl != NULL ? (size_t)(nl - s) + 1 : avail;
			whole = nl != NULL || rd.base + rd.len >= end;
		}
		after_blank = blank;
	}
	if (r == 0)
		r = msg_finish(sc, &st, rd.base + rd.off);
	free(st.m.keywords);
	sc->end = rd.base + rd.off;
	free(rd.buf);
	return r;
}

/* ---- serving ------------------------------------------------------------------------------ */

int mbox_copy_served(int fd, int fd2, uint64_t split, uint64_t fd2_off, uint64_t hdr_off,
		     uint64_t end_off, bool mboxrd, int out_fd, uint64_t *hash_r)
{
	char *buf = malloc(SCAN_CHUNK);
	char *out = malloc(SCAN_CHUNK);
	if (buf == NULL || out == NULL) {
		free(buf);
		free(out);
		return -ENOMEM;
	}
	struct filter f = {true, false, mboxrd};
	struct mbox_hash h;
	mbox_hash_init(&h);
	uint64_t pos = hdr_off;
	size_t have = 0, used = 0, out_len = 0;
	bool line_start = true, keep = true;
	int r = 0;
	while (r == 0 && (pos < end_off || used < have)) {
		if (have - used < 256 && pos < end_off) {
			memmove(buf, buf + used, have - used);
			have -= used;
			used = 0;
			size_t n = SCAN_CHUNK - have;
			if (n > end_off - pos)
				n = (size_t)(end_off - pos);
			int src = fd;
			uint64_t at = pos;
			if (fd2 >= 0 && pos >= split) {
				src = fd2;
				at = pos - split + fd2_off;
			} else if (fd2 >= 0 && pos + n > split) {
				n = (size_t)(split - pos);
			}
			ssize_t got = pread(src, buf + have, n, (off_t)at);
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0) {
				r = got < 0 ? -errno : -EIO;
				break;
			}
			have += (size_t)got;
			pos += (uint64_t)got;
		}
		const char *s = buf + used;
		size_t avail = have - used;
		const char *nl = memchr(s, '\n', avail);
		size_t seg = nl != NULL ? (size_t)(nl - s) + 1 : avail;
		if (nl == NULL && pos < end_off && avail < 256)
			continue; /* read more before deciding about a line start */
		size_t skip = 0;
		if (line_start)
			keep = filter_line(&f, s, seg, &skip);
		if (keep && seg > skip) {
			if (out_fd < 0) {
				/* hash only */
			} else if (out_len + seg - skip > SCAN_CHUNK) {
				r = storage_write_all(out_fd, out, out_len);
				out_len = 0;
			}
			if (out_fd < 0) {
				/* hash only */
			} else if (seg - skip > SCAN_CHUNK) {
				if (r == 0)
					r = storage_write_all(out_fd, s + skip, seg - skip);
			} else {
				memcpy(out + out_len, s + skip, seg - skip);
				out_len += seg - skip;
			}
			mbox_hash_add(&h, s + skip, seg - skip);
		}
		used += seg;
		line_start = nl != NULL;
	}
	if (r == 0 && out_len > 0 && out_fd >= 0)
		r = storage_write_all(out_fd, out, out_len);
	free(buf);
	free(out);
	*hash_r = mbox_hash_final(&h);
	return r;
}
