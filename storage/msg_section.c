/* Section specs (RFC 3501 §6.4.5 BODY[section]), their byte ranges, HEADER.FIELDS, the CRLF
 * range reader, BINARY, and header field lookup. */
#include "mime_private.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define READER_IN      8192
#define FIELD_NAME_MAX 1000

/* ---------------------------------------------------------------------------------------- */
/* Section spec                                                                              */

static bool spec_word(const char **p, const char *end, const char *w)
{
	size_t n = strlen(w);
	if ((size_t)(end - *p) < n || strncasecmp(*p, w, n) != 0)
		return false;
	*p += n;
	return true;
}

static int spec_fields(const char *p, const char *end, struct msg_section *sec)
{
	if (p >= end || *p != ' ')
		return -EINVAL;
	p++;
	if (p >= end || *p != '(')
		return -EINVAL;
	p++;
	for (;;) {
		if (p < end && *p == ')' && sec->nfields > 0) {
			p++;
			break;
		}
		if (sec->nfields > 0) {
			if (p >= end || *p != ' ')
				return -EINVAL;
			p++;
		}
		const char *s = p;
		char *name;
		size_t n = 0;
		if (p < end && *p == '"') {
			name = malloc((size_t)(end - p));
			if (!name)
				return -ENOMEM;
			for (p++; p < end && *p != '"'; p++) {
				if (*p == '\\' && p + 1 < end)
					p++;
				name[n++] = *p;
			}
			if (p >= end) {
				free(name);
				return -EINVAL;
			}
			p++;
		} else {
			while (p<end && * p> 0x20 && *p < 0x7f && !strchr("(){%*\"\\]", *p))
				p++;
			n = (size_t)(p - s);
			if (n == 0)
				return -EINVAL;
			name = malloc(n + 1);
			if (!name)
				return -ENOMEM;
			memcpy(name, s, n);
		}
		name[n] = '\0';
		if (sec->nfields == MSG_SECTION_MAX_FIELDS) {
			free(name);
			return -EINVAL;
		}
		sec->fields[sec->nfields++] = name;
	}
	return p == end ? 0 : -EINVAL;
}

int msg_section_parse(const char *spec, size_t len, struct msg_section *sec_r)
{
	const char *p = spec, *end = spec + len;
	int ret = 0;
	memset(sec_r, 0, sizeof(*sec_r));
	sec_r->kind = MSG_SECTION_ALL;
	while (p < end && *p >= '0' && *p <= '9') {
		uint64_t n = 0;
		if (*p == '0')
			return -EINVAL;
		while (p < end && *p >= '0' && *p <= '9') {
			n = n * 10 + (uint64_t)(*p++ - '0');
			if (n > UINT32_MAX)
				return -EINVAL;
		}
		if (sec_r->npath == MSG_SECTION_MAX_PATH)
			return -EINVAL;
		sec_r->path[sec_r->npath++] = (uint32_t)n;
		if (p == end)
			return 0;
		if (*p != '.')
			return -EINVAL;
		p++;
		if (p == end)
			return -EINVAL;
	}
	if (p == end)
		return sec_r->npath == 0 ? 0 : -EINVAL;
	if (sec_r->npath > 0 && spec_word(&p, end, "MIME")) {
		sec_r->kind = MSG_SECTION_MIME;
	} else if (spec_word(&p, end, "TEXT")) {
		sec_r->kind = MSG_SECTION_TEXT;
	} else if (spec_word(&p, end, "HEADER.FIELDS.NOT")) {
		sec_r->kind = MSG_SECTION_HEADER_FIELDS_NOT;
		ret = spec_fields(p, end, sec_r);
		p = end;
	} else if (spec_word(&p, end, "HEADER.FIELDS")) {
		sec_r->kind = MSG_SECTION_HEADER_FIELDS;
		ret = spec_fields(p, end, sec_r);
		p = end;
	} else if (spec_word(&p, end, "HEADER")) {
		sec_r->kind = MSG_SECTION_HEADER;
	} else {
		return -EINVAL;
	}
	if (ret == 0 && p != end)
		ret = -EINVAL;
	if (ret < 0)
		msg_section_clear(sec_r);
	return ret;
}

void msg_section_clear(struct msg_section *sec)
{
	for (unsigned i = 0; i < sec->nfields; i++)
		free(sec->fields[i]);
	sec->nfields = 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Resolution                                                                                */

static bool part_is_multipart(const struct mime_part *p)
{
	return (p->flags & (MIME_F_MULTIPART | MIME_F_OVERFLOW)) == MIME_F_MULTIPART;
}

static bool part_is_rfc822(const struct mime_part *p)
{
	return (p->flags & (MIME_F_RFC822 | MIME_F_OVERFLOW)) == MIME_F_RFC822 &&
	       p->first_child != MIME_NONE;
}

uint32_t mime_part_find(const struct msg_parsed *m, const uint32_t *path, unsigned npath)
{
	/* Dovecot's imap_msgpart_find: a number picks a child of a multipart; anything else
	 * only has part 1 (itself), and the path may go on below it only when it is a
	 * message/rfc822 part, whose following numbers address its message */
	uint32_t idx = 0;
	for (unsigned i = 0; i < npath; i++) {
		bool more = i + 1 < npath;
		const struct mime_part *p = &m->parts[idx];
		if (part_is_multipart(p)) {
			uint32_t c = p->first_child;
			for (uint32_t n = 1; n < path[i] && c != MIME_NONE; n++)
				c = m->parts[c].next;
			if (c == MIME_NONE)
				return MIME_NONE;
			idx = c;
		} else if (path[i] != 1 || (more && !part_is_rfc822(p))) {
			return MIME_NONE;
		}
		if (more && part_is_rfc822(&m->parts[idx]))
			idx = m->parts[idx].first_child;
	}
	return idx;
}

void mime_part_body_range(const struct mime_part *p, struct msg_range *r)
{
	r->phys_off = p->body_poff;
	r->phys_size = p->body_pend - p->body_poff;
	r->off = p->body_voff;
	r->size = p->body_vend - p->body_voff;
}

static void part_header_range(const struct mime_part *p, struct msg_range *r)
{
	r->phys_off = p->hdr_poff;
	r->phys_size = p->body_poff - p->hdr_poff;
	r->off = p->hdr_voff;
	r->size = p->body_voff - p->hdr_voff;
}

int msg_section_resolve(const struct msg_parsed *m, const struct msg_section *sec,
			struct msg_range *r)
{
	if (sec->npath == 0) {
		switch (sec->kind) {
		case MSG_SECTION_ALL:
			r->phys_off = r->off = 0;
			r->phys_size = m->psize;
			r->size = m->vsize;
			return 0;
		case MSG_SECTION_TEXT:
			mime_part_body_range(&m->parts[0], r);
			return 0;
		case MSG_SECTION_MIME:
			return -EINVAL;
		default:
			part_header_range(&m->parts[0], r);
			return 0;
		}
	}
	uint32_t idx = mime_part_find(m, sec->path, sec->npath);
	if (idx == MIME_NONE)
		return -ENOENT;
	const struct mime_part *p = &m->parts[idx];
	switch (sec->kind) {
	case MSG_SECTION_ALL:
		mime_part_body_range(p, r);
		return 0;
	case MSG_SECTION_MIME:
		part_header_range(p, r);
		return 0;
	default:
		break;
	}
	if (!part_is_rfc822(p))
		return -EINVAL;
	const struct mime_part *e = &m->parts[p->first_child];
	if (sec->kind == MSG_SECTION_TEXT)
		mime_part_body_range(e, r);
	else
		part_header_range(e, r);
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Reader                                                                                    */

struct msg_reader {
	struct msg_source src;
	uint64_t ppos, pend;
	uint64_t skip;
	unsigned flags;
	bool prev_cr, owe_lf, finished;
	char in[READER_IN];
	size_t ilen, ipos;
	struct mime_decoder *dec;
	char *out;
	size_t olen, opos;
};

int msg_reader_open(const struct msg_source *src, const struct msg_range *range, uint64_t skip,
		    unsigned flags, struct msg_reader **reader_r)
{
	if (range->phys_off > src->size || range->phys_size > src->size - range->phys_off)
		return -EINVAL;
	struct msg_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->src = *src;
	r->ppos = range->phys_off;
	r->pend = range->phys_off + range->phys_size;
	r->skip = skip;
	r->flags = flags;
	*reader_r = r;
	return 0;
}

/* CRLF form of the range, before any skip or decoding. Runs without an LF are copied whole
 * (this is the inner loop of FETCH BODY[] and SEARCH TEXT). */
static ssize_t reader_norm(struct msg_reader *r, char *dst, size_t len)
{
	size_t n = 0;
	while (n < len) {
		if (r->owe_lf) {
			dst[n++] = '\n';
			r->owe_lf = false;
			continue;
		}
		if (r->ipos == r->ilen) {
			if (r->ppos >= r->pend)
				break;
			uint64_t want = r->pend - r->ppos;
			if (want > READER_IN)
				want = READER_IN;
			int ret = mime_source_pread(&r->src, r->in, (size_t)want, r->ppos);
			if (ret < 0)
				return ret;
			r->ppos += want;
			r->ilen = (size_t)want;
			r->ipos = 0;
		}
		const char *s = r->in + r->ipos;
		size_t take = r->ilen - r->ipos < len - n ? r->ilen - r->ipos : len - n;
		const char *lf = memchr(s, '\n', take);
		size_t run = lf ? (size_t)(lf - s) : take;
		if (run > 0) {
			memcpy(dst + n, s, run);
			if (r->flags & MSG_READER_NUL_TO_80)
				for (size_t i = 0; i < run; i++)
					if (dst[n + i] == 0)
						dst[n + i] = (char)0x80;
			r->prev_cr = s[run - 1] == '\r';
			n += run;
			r->ipos += run;
			continue;
		}
		char c = r->in[r->ipos++];
		if (c == '\n' && !r->prev_cr) {
			dst[n++] = '\r';
			r->owe_lf = true;
			r->prev_cr = false;
			continue;
		}
		r->prev_cr = c == '\r';
		if (c == 0 && (r->flags & MSG_READER_NUL_TO_80))
			c = (char)0x80;
		dst[n++] = c;
	}
	return (ssize_t)n;
}

static ssize_t reader_decoded(struct msg_reader *r, char *dst, size_t len)
{
	if (!r->dec)
		return reader_norm(r, dst, len);
	while (r->opos == r->olen) {
		if (r->finished)
			return 0;
		char tmp[READER_IN];
		ssize_t n = reader_norm(r, tmp, sizeof(tmp));
		if (n < 0)
			return n;
		r->opos = 0;
		int ret = mime_decoder_feed(r->dec, tmp, (size_t)n, n == 0, r->out, &r->olen);
		if (ret < 0)
			return ret;
		if (n == 0)
			r->finished = true;
	}
	size_t n = r->olen - r->opos;
	if (n > len)
		n = len;
	memcpy(dst, r->out + r->opos, n);
	r->opos += n;
	return (ssize_t)n;
}

ssize_t msg_reader_read(struct msg_reader *r, void *dst, size_t len)
{
	while (r->skip > 0) {
		char tmp[READER_IN];
		size_t want = r->skip < sizeof(tmp) ? (size_t)r->skip : sizeof(tmp);
		ssize_t n = reader_decoded(r, tmp, want);
		if (n <= 0)
			return n;
		r->skip -= (uint64_t)n;
	}
	return reader_decoded(r, dst, len);
}

void msg_reader_free(struct msg_reader **rp)
{
	struct msg_reader *r = *rp;
	if (!r)
		return;
	mime_decoder_free(&r->dec);
	free(r->out);
	free(r);
	*rp = NULL;
}

int mime_reader_open_decoded(const struct msg_source *src, const struct msg_range *range,
			     enum mime_cte cte, bool strict, struct msg_reader **reader_r)
{
	int ret = msg_reader_open(src, range, 0, 0, reader_r);
	if (ret < 0 || cte == MIME_CTE_IDENTITY)
		return ret;
	struct msg_reader *r = *reader_r;
	r->out = malloc(READER_IN + MIME_DECODER_SLACK);
	if (!r->out || (ret = mime_decoder_new(cte, strict, &r->dec)) < 0) {
		msg_reader_free(reader_r);
		return ret < 0 ? ret : -ENOMEM;
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* HEADER.FIELDS                                                                             */

static bool section_wants(const struct msg_section *sec, const char *name, size_t len)
{
	while (len > 0 && (name[len - 1] == ' ' || name[len - 1] == '\t'))
		len--;
	bool found = false;
	for (unsigned i = 0; i < sec->nfields && !found; i++)
		found = mime_name_eq(name, len, sec->fields[i]);
	return sec->kind == MSG_SECTION_HEADER_FIELDS ? found : !found;
}

/* Walk the header block field by field. For every field, cb gets its name and then all of
 * its octets (CRLF form) in pieces. */
struct hdr_walk {
	char name[FIELD_NAME_MAX];
	size_t nlen;
	bool in_name, at_line_start, done, take;
	bool has_field;
};

int msg_section_fields(const struct msg_source *src, const struct msg_range *range,
		       const struct msg_section *sec, struct buf *out)
{
	struct msg_reader *r;
	char chunk[READER_IN];
	int ret = msg_reader_open(src, range, 0, 0, &r);
	if (ret < 0)
		return ret;
	struct hdr_walk w = {.at_line_start = true};
	ssize_t n;
	while (!w.done && (n = msg_reader_read(r, chunk, sizeof(chunk))) > 0) {
		for (ssize_t i = 0; i < n && !w.done && ret == 0; i++) {
			char c = chunk[i];
			if (w.at_line_start) {
				w.at_line_start = false;
				if (c == '\r' || c == '\n') {
					/* the empty line ending the header (CRLF form) */
					w.done = true;
					break;
				}
				if (c != ' ' && c != '\t') {
					w.in_name = true;
					w.nlen = 0;
				}
			}
			if (w.in_name) {
				if (c == ':' || c == '\r' || w.nlen == FIELD_NAME_MAX) {
					w.in_name = false;
					w.take = c == ':' ? section_wants(sec, w.name, w.nlen)
							  : sec->kind ==
								    MSG_SECTION_HEADER_FIELDS_NOT;
					if (w.take)
						ret = buf_append(out, w.name, w.nlen);
				} else {
					w.name[w.nlen++] = c;
					continue;
				}
			}
			/* the rest of the line at once: appended when taken, else skipped */
			const char *lf = memchr(chunk + i, '\n', (size_t)(n - i));
			size_t run = lf ? (size_t)(lf - (chunk + i)) + 1 : (size_t)(n - i);
			if (w.take && ret == 0)
				ret = buf_append(out, chunk + i, run);
			i += (ssize_t)run - 1;
			if (lf)
				w.at_line_start = true;
		}
	}
	if (w.in_name && sec->kind == MSG_SECTION_HEADER_FIELDS_NOT && ret == 0) {
		/* header ends inside a name without ':' at EOF */
		ret = buf_append(out, w.name, w.nlen);
	}
	if (n < 0 && ret == 0)
		ret = (int)n;
	msg_reader_free(&r);
	if (ret == 0 && !w.done && !w.at_line_start && w.take)
		ret = buf_append(out, "\r\n", 2); /* a last field without line end (EOF) */
	if (ret == 0)
		ret = buf_append(out, "\r\n", 2);
	return ret;
}

/* ---------------------------------------------------------------------------------------- */
/* BINARY                                                                                    */

static int binary_part(const struct msg_parsed *m, const uint32_t *path, unsigned npath,
		       const struct mime_part **p_r)
{
	uint32_t idx = npath == 0 ? 0 : mime_part_find(m, path, npath);
	if (idx == MIME_NONE)
		return -ENOENT;
	/* a multipart or message/rfc822 part is sent as it is (its encoding is 7bit, 8bit or
	 * binary), as Dovecot does */
	*p_r = &m->parts[idx];
	return 0;
}

int msg_binary_open(const struct msg_source *src, const struct msg_parsed *m, const uint32_t *path,
		    unsigned npath, struct msg_reader **reader_r)
{
	const struct mime_part *p;
	int ret = binary_part(m, path, npath, &p);
	if (ret < 0)
		return ret;
	enum mime_cte cte = mime_part_cte(m, p);
	if (cte == MIME_CTE_UNKNOWN)
		return -EOPNOTSUPP;
	struct msg_range r;
	mime_part_body_range(p, &r);
	return mime_reader_open_decoded(src, &r, cte, true, reader_r);
}

int msg_binary_size(const struct msg_source *src, const struct msg_parsed *m, const uint32_t *path,
		    unsigned npath, uint64_t *size_r)
{
	const struct mime_part *p;
	int ret = binary_part(m, path, npath, &p);
	if (ret < 0)
		return ret;
	enum mime_cte cte = mime_part_cte(m, p);
	if (cte == MIME_CTE_UNKNOWN)
		return -EOPNOTSUPP;
	struct msg_range rg;
	mime_part_body_range(p, &rg);
	if (cte == MIME_CTE_IDENTITY) {
		*size_r = rg.size;
		return 0;
	}
	struct msg_reader *r;
	if ((ret = mime_reader_open_decoded(src, &rg, cte, true, &r)) < 0)
		return ret;
	char tmp[READER_IN];
	ssize_t n;
	uint64_t total = 0;
	while ((n = msg_reader_read(r, tmp, sizeof(tmp))) > 0)
		total += (uint64_t)n;
	msg_reader_free(&r);
	if (n < 0)
		return (int)n;
	*size_r = total;
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Header lookup                                                                             */

int msg_header_get(const struct msg_source *src, const struct msg_parsed *m, const char *name,
		   unsigned index, bool decode, struct buf *out)
{
	struct msg_section sec;
	memset(&sec, 0, sizeof(sec));
	sec.kind = MSG_SECTION_HEADER_FIELDS;
	sec.nfields = 1;
	sec.fields[0] = (char *)name;
	struct msg_range rg;
	part_header_range(&m->parts[0], &rg);
	struct buf fields;
	/* the matching fields of one header block, at most 1 MiB of them */
	buf_init(&fields, rg.size + 16 < (1u << 20) ? (size_t)rg.size + 16 : (1u << 20));
	int ret = msg_section_fields(src, &rg, &sec, &fields);
	if (ret < 0) {
		buf_clear(&fields);
		return ret;
	}
	/* fields: "Name: value\r\n continuation\r\n...\r\n" */
	const char *p = buf_used(&fields) ? mime_bp(&fields) : "";
	const char *end = p + buf_used(&fields);
	unsigned seen = 0;
	ret = -ENOENT;
	while (p < end && !(p[0] == '\r' && p + 1 < end && p[1] == '\n' && p + 2 == end)) {
		/* one field: up to a CRLF not followed by SP/TAB */
		const char *f = p, *fe = p;
		while (fe < end) {
			const char *lf = memchr(fe, '\n', (size_t)(end - fe));
			fe = lf ? lf + 1 : end;
			if (fe >= end || (*fe != ' ' && *fe != '\t'))
				break;
		}
		p = fe;
		if (seen++ != index)
			continue;
		const char *v = memchr(f, ':', (size_t)(fe - f));
		v = v ? v + 1 : fe;
		while (v < fe && (*v == ' ' || *v == '\t'))
			v++;
		struct buf unf;
		buf_init(&unf, (size_t)(fe - v) + 1);
		for (const char *c = v; c < fe;) {
			const char *e = c;
			while (e < fe && *e != '\r' && *e != '\n')
				e++;
			if (e > c)
				buf_append(&unf, c, (size_t)(e - c));
			while (e < fe && (*e == '\r' || *e == '\n'))
				e++;
			c = e;
		}
		if (decode)
			ret = msg_decode_words(buf_used(&unf) ? mime_bp(&unf) : "", buf_used(&unf),
					       out);
		else
			ret = buf_append(out, buf_used(&unf) ? mime_bp(&unf) : "", buf_used(&unf));
		buf_clear(&unf);
		break;
	}
	buf_clear(&fields);
	return ret;
}
