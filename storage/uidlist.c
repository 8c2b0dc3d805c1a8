#include "uidlist.h"
#include "storage.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void (*uidlist_crash_hook)(int point);

void uidlist_uidl_from_base(const char *base, size_t len, char *out)
{
	bool plain = len > 0 && len <= MAIL_UIDL_MAX;
	for (size_t i = 0; plain && i < len; i++)
		if ((unsigned char)base[i] < 0x21 || (unsigned char)base[i] > 0x7e)
			plain = false;
	if (plain) {
		memcpy(out, base, len);
		out[len] = '\0';
		return;
	}
	uint64_t a = storage_hash64(base, len, 0x6d61696c6b656570ull);
	uint64_t b = storage_hash64(base, len, 0x75696476616c6964ull);
	snprintf(out, MAIL_UIDL_MAX + 1, "X%016" PRIx64 "%016" PRIx64, a, b);
}

int uidlist_line(struct sbuf *b, const char *fmt, ...)
{
	char payload[8192];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(payload, sizeof(payload), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(payload))
		return -ENAMETOOLONG;
	return sbuf_printf(b, "%08x %s\n", storage_hash32(payload, (size_t)n), payload);
}

int uidlist_line_header(struct sbuf *b, uint32_t uidvalidity, uint32_t uidnext,
			uint64_t highest_modseq, size_t nbase)
{
	return uidlist_line(b, "H 2 %" PRIu32 " %" PRIu32 " %" PRIu64 " %zu", uidvalidity, uidnext,
			    highest_modseq, nbase);
}

int uidlist_line_add(struct sbuf *b, uint32_t uid, uint64_t modseq, uint64_t size, int64_t idate,
		     unsigned flags, uint32_t keywords, int64_t savedate, uint64_t emailid,
		     const char *uidl, const char *base, size_t base_len)
{
	return uidlist_line(b,
			    "A %" PRIu32 " %" PRIu64 " %" PRIu64 " %" PRId64 " %x %" PRIx32
			    " %" PRId64 " %" PRIx64 " %s %.*s",
			    uid, modseq, size, idate, flags, keywords, savedate, emailid, uidl,
			    (int)base_len, base);
}

int uidlist_line_flags(struct sbuf *b, uint32_t uid, uint64_t modseq, unsigned flags,
		       uint32_t keywords)
{
	return uidlist_line(b, "F %" PRIu32 " %" PRIu64 " %x %" PRIx32, uid, modseq, flags,
			    keywords);
}

int uidlist_line_expunge(struct sbuf *b, uint32_t uid, uint64_t modseq)
{
	return uidlist_line(b, "- %" PRIu32 " %" PRIu64, uid, modseq);
}

int uidlist_line_expunge_unlink(struct sbuf *b, uint32_t uid, uint64_t modseq)
{
	return uidlist_line(b, "X %" PRIu32 " %" PRIu64, uid, modseq);
}

int uidlist_write(const char *path, const struct sbuf *b)
{
	char tmp[4096];
	int r = storage_path(tmp, sizeof(tmp), "%s.tmp", path);
	if (r < 0)
		return r;
	FILE *f = fopen(tmp, "we");
	if (f == NULL)
		return -errno;
	if (b->len > 0 && fwrite(b->data, 1, b->len, f) != b->len)
		r = -EIO;
	if (fflush(f) != 0 && r == 0)
		r = -errno;
	if (r == 0 && fsync(fileno(f)) < 0)
		r = -errno;
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	if (uidlist_crash_hook != NULL)
		uidlist_crash_hook(1);
	if (rename(tmp, path) < 0) {
		r = -errno;
		unlink(tmp);
		return r;
	}
	if (uidlist_crash_hook != NULL)
		uidlist_crash_hook(2);
	return storage_fsync_parent(path);
}

/* Parse an unsigned decimal/hex field at *p, advancing past one following space (or end). */
static bool parse_u64(const char **p, const char *end, int base, uint64_t *v_r)
{
	const char *s = *p;
	uint64_t v = 0;
	size_t digits = 0;
	while (s < end && *s != ' ') {
		unsigned d;
		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = (unsigned)(*s - 'a' + 10);
		else
			return false;
		if (v > (UINT64_MAX - d) / (unsigned)base)
			return false;
		v = v * (unsigned)base + d;
		s++;
		digits++;
	}
	if (digits == 0 || digits > 20)
		return false;
	if (s < end)
		s++;
	*p = s;
	*v_r = v;
	return true;
}

static bool parse_i64(const char **p, const char *end, int64_t *v_r)
{
	bool neg = *p < end && **p == '-';
	if (neg)
		(*p)++;
	uint64_t v;
	if (!parse_u64(p, end, 10, &v) || v > INT64_MAX)
		return false;
	*v_r = neg ? -(int64_t)v : (int64_t)v;
	return true;
}

static bool parse_word(const char **p, const char *end, const char **w_r, size_t *len_r)
{
	const char *s = *p, *e = s;
	while (e < end && *e != ' ')
		e++;
	if (e == s)
		return false;
	*w_r = s;
	*len_r = (size_t)(e - s);
	*p = e < end ? e + 1 : e;
	return true;
}

struct parse_state {
	struct uidlist *list;
	size_t cap_ents;
	size_t pool_cap;
};

static int pool_add(struct parse_state *st, const char *s, size_t len, uint32_t *off_r)
{
	struct uidlist *l = st->list;
	if (l->pool_len + len + 1 > st->pool_cap) {
		size_t cap = st->pool_cap ? st->pool_cap * 2 : 4096;
		while (cap < l->pool_len + len + 1)
			cap *= 2;
		if (cap > UINT32_MAX)
			return -EFBIG;
		char *n = realloc(l->pool, cap);
		if (n == NULL)
			return -ENOMEM;
		l->pool = n;
		st->pool_cap = cap;
	}
	*off_r = (uint32_t)l->pool_len;
	memcpy(l->pool + l->pool_len, s, len);
	l->pool[l->pool_len + len] = '\0';
	l->pool_len += len + 1;
	return 0;
}

static struct uidlist_ent *find_ent(struct uidlist *l, uint32_t uid)
{
	size_t lo = 0, hi = l->n_ents;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (l->ents[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < l->n_ents && l->ents[lo].uid == uid)
		return &l->ents[lo];
	return NULL;
}

/* One payload. Returns 0, or -EBADMSG when malformed. */
static int parse_payload(struct parse_state *st, const char *p, const char *end, bool base)
{
	struct uidlist *l = st->list;
	uint64_t uid, modseq, flags, kw, size;
	char op = *p;
	if (end - p < 2 || p[1] != ' ')
		return -EBADMSG;
	p += 2;
	if (base && op != '+' && op != 'A')
		return -EBADMSG;
	switch (op) {
	case '+':
	case 'A': {
		int64_t idate, savedate = 0;
		uint64_t emailid = 0;
		const char *uidl, *b;
		size_t uidl_len, b_len;
		if (!parse_u64(&p, end, 10, &uid) || !parse_u64(&p, end, 10, &modseq) ||
		    !parse_u64(&p, end, 10, &size) || !parse_i64(&p, end, &idate) ||
		    !parse_u64(&p, end, 16, &flags) || !parse_u64(&p, end, 16, &kw))
			return -EBADMSG;
		if (op == 'A' &&
		    (!parse_i64(&p, end, &savedate) || !parse_u64(&p, end, 16, &emailid)))
			return -EBADMSG;
		if (!parse_word(&p, end, &uidl, &uidl_len))
			return -EBADMSG;
		b = p;
		b_len = (size_t)(end - p);
		if (uid == 0 || uid > UINT32_MAX || b_len == 0 || uidl_len > MAIL_UIDL_MAX ||
		    flags > 0xff || kw > UINT32_MAX)
			return -EBADMSG;
		if (l->n_ents > 0 && l->ents[l->n_ents - 1].uid >= uid)
			return -EBADMSG; /* UIDs only grow */
		if (l->n_ents == st->cap_ents) {
			size_t cap = st->cap_ents ? st->cap_ents * 2 : 1024;
			struct uidlist_ent *n = realloc(l->ents, cap * sizeof(*n));
			if (n == NULL)
				return -ENOMEM;
			l->ents = n;
			st->cap_ents = cap;
		}
		struct uidlist_ent *e = &l->ents[l->n_ents];
		memset(e, 0, sizeof(*e));
		e->uid = (uint32_t)uid;
		e->modseq = modseq;
		e->size = size;
		e->idate = idate;
		e->savedate = savedate;
		e->emailid = emailid;
		e->flags = (uint8_t)flags;
		e->keywords = (uint32_t)kw;
		int r = pool_add(st, b, b_len, &e->base_off);
		if (r == 0)
			r = pool_add(st, uidl, uidl_len, &e->uidl_off);
		if (r < 0)
			return r;
		e->base_len = (uint32_t)b_len;
		e->uidl_len = (uint32_t)uidl_len;
		l->n_ents++;
		if (uid >= l->uidnext)
			l->uidnext = (uint32_t)(uid + 1 > UINT32_MAX ? UINT32_MAX : uid + 1);
		break;
	}
	case 'F': {
		if (!parse_u64(&p, end, 10, &uid) || !parse_u64(&p, end, 10, &modseq) ||
		    !parse_u64(&p, end, 16, &flags) || !parse_u64(&p, end, 16, &kw) || p != end ||
		    flags > 0xff || kw > UINT32_MAX)
			return -EBADMSG;
		struct uidlist_ent *e = find_ent(l, (uint32_t)uid);
		if (e != NULL) {
			e->modseq = modseq;
			e->flags = (uint8_t)flags;
			e->keywords = (uint32_t)kw;
		}
		break;
	}
	case '-':
	case 'X': {
		if (!parse_u64(&p, end, 10, &uid) || !parse_u64(&p, end, 10, &modseq) || p != end)
			return -EBADMSG;
		struct uidlist_ent *e = find_ent(l, (uint32_t)uid);
		if (e != NULL) {
			e->expunged = true;
			e->unlink_pending = op == 'X';
		}
		break;
	}
	default:
		return -EBADMSG;
	}
	if (modseq > l->highest_modseq)
		l->highest_modseq = modseq;
	return 0;
}

/* Check one line's checksum; on success payload_r and end_r delimit the payload. */
static bool line_ok(const char *line, size_t len, const char **payload_r, const char **end_r)
{
	if (len < 10 || line[8] != ' ')
		return false;
	uint32_t want = 0;
	for (int i = 0; i < 8; i++) {
		char c = line[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return false;
		want = want << 4 | d;
	}
	if (storage_hash32(line + 9, len - 9) != want)
		return false;
	*payload_r = line + 9;
	*end_r = line + len;
	return true;
}

int uidlist_read(const char *path, struct uidlist *list, uint32_t *old_uidvalidity_r)
{
	memset(list, 0, sizeof(*list));
	*old_uidvalidity_r = 0;
	char *data;
	size_t len;
	int r = storage_read_file(path, UIDLIST_MAX_BYTES, &data, &len);
	if (r < 0)
		return r;
	struct parse_state st = {.list = list};
	size_t pos = 0, lineno = 0, nbase = 0;
	r = 0;
	while (pos < len) {
		const char *line = data + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t llen = nl ? (size_t)(nl - line) : len - pos;
		bool last = nl == NULL || pos + llen + 1 >= len;
		const char *payload, *pend;
		bool ok = nl != NULL && line_ok(line, llen, &payload, &pend);
		if (ok && lineno == 0) {
			uint64_t ver, uv, un, hm, nb;
			const char *p = payload;
			if (pend - p < 2 || p[0] != 'H' || p[1] != ' ') {
				ok = false;
			} else {
				p += 2;
				ok = parse_u64(&p, pend, 10, &ver) && (ver == 1 || ver == 2) &&
				     parse_u64(&p, pend, 10, &uv) && parse_u64(&p, pend, 10, &un) &&
				     parse_u64(&p, pend, 10, &hm) && parse_u64(&p, pend, 10, &nb) &&
				     p == pend && uv > 0 && uv <= UINT32_MAX && un <= UINT32_MAX;
			}
			if (ok) {
				list->uidvalidity = (uint32_t)uv;
				list->uidnext = un > 0 ? (uint32_t)un : 1;
				list->highest_modseq = hm;
				nbase = (size_t)nb;
				*old_uidvalidity_r = list->uidvalidity;
			}
		} else if (ok) {
			int pr = parse_payload(&st, payload, pend, lineno <= nbase);
			if (pr == -ENOMEM) {
				r = pr;
				break;
			}
			ok = pr == 0;
		}
		if (!ok) {
			if (lineno == 0 || lineno <= nbase || !last) {
				r = -EBADMSG;
				break;
			}
			list->torn_tail = true; /* never acknowledged: drop it */
			break;
		}
		if (lineno > nbase)
			list->n_log++;
		lineno++;
		pos += llen + 1;
	}
	free(data);
	if (r == 0 && (lineno == 0 || lineno <= nbase))
		r = -EBADMSG; /* no header, or the base was cut short */
	if (r < 0) {
		uidlist_free(list);
		return r;
	}
	list->n_base = nbase;
	return 0;
}

void uidlist_free(struct uidlist *list)
{
	free(list->ents);
	free(list->pool);
	memset(list, 0, sizeof(*list));
}

const char *uidlist_ent_base(const struct uidlist *list, const struct uidlist_ent *e)
{
	return list->pool + e->base_off;
}

const char *uidlist_ent_uidl(const struct uidlist *list, const struct uidlist_ent *e)
{
	return list->pool + e->uidl_off;
}
