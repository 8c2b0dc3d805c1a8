/* Parsers of MIME header field values (RFC 2045 §5, RFC 2183, RFC 3282, RFC 2231), written to
 * give Dovecot 2.3's results on malformed input (see storage/README.md "Message parsing"). */
#include "mime_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct mime_lex {
	const char *p, *end;
	bool error; /* unclosed comment or quoted string */
};

void mime_param_list_init(struct mime_param_list *l)
{
	buf_init(&l->b, 1024 * 1024);
	l->count = 0;
}

void mime_param_list_free(struct mime_param_list *l)
{
	buf_clear(&l->b);
	l->count = 0;
}

static int param_list_add(struct mime_param_list *l, const char *n, size_t nlen, const char *v,
			  size_t vlen)
{
	int ret;
	if ((ret = buf_append(&l->b, n, nlen)) < 0 || (ret = buf_append(&l->b, "", 1)) < 0 ||
	    (ret = buf_append(&l->b, v, vlen)) < 0 || (ret = buf_append(&l->b, "", 1)) < 0)
		return ret;
	l->count++;
	return 0;
}

static bool lex_is_lwsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Skip white space and (nested (comments)). Returns true when data remains. */
static bool lex_skip_cfws(struct mime_lex *x)
{
	while (x->p < x->end) {
		if (lex_is_lwsp(*x->p)) {
			x->p++;
		} else if (*x->p == '(') {
			int depth = 0;
			for (; x->p < x->end; x->p++) {
				if (*x->p == '\\' && x->p + 1 < x->end)
					x->p++;
				else if (*x->p == '(')
					depth++;
				else if (*x->p == ')' && --depth == 0)
					break;
			}
			if (x->p >= x->end) {
				x->error = true;
				return false;
			}
			x->p++;
		} else {
			return true;
		}
	}
	return false;
}

static bool lex_is_tspecial(unsigned char c)
{
	return c <= 0x20 || c == 0x7f || strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

/* A MIME token (RFC 2045 §5.1); 8-bit octets are accepted as token characters. */
static size_t lex_token(struct mime_lex *x, const char **tok_r)
{
	const char *s = x->p;
	while (x->p < x->end && !lex_is_tspecial((unsigned char)*x->p))
		x->p++;
	*tok_r = s;
	return (size_t)(x->p - s);
}

/* Quoted string at x->p ('"'): unescaped into out, CR/LF of folding dropped. */
static bool lex_quoted(struct mime_lex *x, struct buf *out)
{
	x->p++;
	while (x->p < x->end) {
		char c = *x->p++;
		if (c == '"')
			return true;
		if (c == '\\' && x->p < x->end)
			c = *x->p++;
		else if (c == '\r' || c == '\n')
			continue;
		if (buf_append(out, &c, 1) < 0)
			return false;
	}
	x->error = true;
	return false;
}

/* One "; name=value" at x->p. Returns 1 with a parameter, 0 at the end, -1 on a syntax error
 * (x->p left where it failed, as Dovecot's rfc822_parse_content_param leaves it). */
static int parse_one_param(struct mime_lex *x, struct buf *name, struct buf *val)
{
	const char *t;
	size_t tlen;
	buf_clear(name);
	buf_clear(val);
	if (x->p >= x->end)
		return 0;
	if (*x->p != ';')
		return -1;
	x->p++;
	if (!lex_skip_cfws(x))
		return -1;
	tlen = lex_token(x, &t);
	buf_append(name, t, tlen);
	if (!lex_skip_cfws(x) || *x->p != '=')
		return -1;
	x->p++;
	if (!lex_skip_cfws(x))
		return x->error ? -1 : 1; /* "name=" at the end: an empty value */
	if (*x->p == '"') {
		if (!lex_quoted(x, val))
			return -1;
	} else if (*x->p == '=') {
		/* broken "name==?utf-8?b?...?=": up to ';' or white space */
		const char *v = x->p;
		while (x->p < x->end && *x->p != ';' && !lex_is_lwsp(*x->p))
			x->p++;
		buf_append(val, v, (size_t)(x->p - v));
	} else {
		tlen = lex_token(x, &t);
		buf_append(val, t, tlen);
	}
	lex_skip_cfws(x);
	return x->error ? -1 : 1;
}

/* Raw parameters: (name, value) pairs as written. After a syntax error one octet is skipped
 * and parsing goes on (Dovecot's recovery), so a broken parameter loses itself and what
 * follows up to the next ';' it can resynchronise on. */
static void parse_raw_params(struct mime_lex *x, struct mime_param_list *raw)
{
	struct buf name, val;
	int ret;
	buf_init(&name, 1024 * 1024);
	buf_init(&val, 1024 * 1024);
	while ((ret = parse_one_param(x, &name, &val)) != 0) {
		if (ret < 0) {
			x->error = false;
			if (x->p >= x->end)
				break;
			x->p++;
			continue;
		}
		if (param_list_add(raw, buf_used(&name) ? mime_bp(&name) : "", buf_used(&name),
				   buf_used(&val) ? mime_bp(&val) : "", buf_used(&val)) < 0)
			break;
	}
	buf_clear(&name);
	buf_clear(&val);
}

struct cont_seg {
	const char *base;
	size_t blen;
	unsigned idx;
	bool extended;
	const char *val;
	size_t vlen;
	unsigned order;
};

/* Sorted as Dovecot sorts them: by name, case-sensitively, then by index (stable). */
static int cont_seg_cmp(const void *a, const void *b)
{
	const struct cont_seg *x = a, *y = b;
	size_t n = x->blen < y->blen ? x->blen : y->blen;
	int c = memcmp(x->base, y->base, n);
	if (c != 0)
		return c;
	if (x->blen != y->blen)
		return x->blen < y->blen ? -1 : 1;
	if (x->idx != y->idx)
		return x->idx < y->idx ? -1 : 1;
	return x->order < y->order ? -1 : (x->order > y->order);
}

static void seg_name(struct buf *out, const struct cont_seg *g, bool with_idx)
{
	char num[16];
	buf_clear(out);
	buf_append(out, g->base, g->blen);
	if (with_idx) {
		int n = snprintf(num, sizeof(num), "*%u", g->idx);
		buf_append(out, num, (size_t)n);
	}
	if (g->extended || !with_idx)
		buf_append(out, "*", 1);
}

/* RFC 2231 continuations, joined as Dovecot's rfc2231_parse joins them: a name with '*' is a
 * segment "base*N" or "base*N*" (N may be empty; "base*" alone is an extended segment); plain
 * parameters come first in their order, then the segments grouped by name. A complete group
 * (indexes 0..n-1) becomes one parameter, "base*" when any segment is extended (then plain
 * segments are %-escaped and a plain first segment gets an empty charset''), else "base".
 * A group with a gap or a duplicate is listed segment by segment. Values are not decoded. */
static void params_rfc2231(const struct mime_param_list *raw, struct mime_param_list *out)
{
	const char *p = raw->b.data ? mime_bp(&raw->b) : NULL;
	struct cont_seg *segs = calloc(raw->count ? raw->count : 1, sizeof(*segs));
	unsigned nseg = 0, idx = 0;
	if (!segs)
		return;
	for (uint32_t i = 0; i < raw->count; i++) {
		const char *name = p;
		size_t nlen = strlen(name);
		const char *val = name + nlen + 1;
		size_t vlen = strlen(val);
		p = val + vlen + 1;
		const char *star = memchr(name, '*', nlen);
		if (star) {
			const char *q = star;
			if (q + 1 < name + nlen) {
				/* the index keeps its last value when there are no digits (as in
				 * Dovecot, whose index survives from the previous segment only
				 * for a bare "name*") */
				idx = 0;
				for (q++; q < name + nlen && *q >= '0' && *q <= '9'; q++)
					idx = idx * 10 + (unsigned)(*q - '0');
			}
			bool ext = false;
			if (q < name + nlen && *q == '*') {
				ext = true;
				q++;
			}
			if (q == name + nlen) {
				segs[nseg++] = (struct cont_seg){
					name, (size_t)(star - name), idx, ext, val, vlen, i};
				continue;
			}
		}
		param_list_add(out, name, nlen, val, vlen);
	}
	qsort(segs, nseg, sizeof(*segs), cont_seg_cmp);
	struct buf joined, jname;
	buf_init(&joined, 1024 * 1024);
	buf_init(&jname, 4096);
	for (unsigned i = 0; i < nseg;) {
		unsigned j;
		bool ok = true, ext = false;
		for (j = i; j < nseg && segs[j].blen == segs[i].blen &&
			    strncasecmp(segs[j].base, segs[i].base, segs[i].blen) == 0;
		     j++) {
			if (segs[j].idx != j - i)
				ok = false;
			ext |= segs[j].extended;
		}
		if (!ok) {
			for (unsigned k = i; k < j; k++) {
				seg_name(&jname, &segs[k], true);
				param_list_add(out, mime_bp(&jname), buf_used(&jname), segs[k].val,
					       segs[k].vlen);
			}
		} else {
			buf_clear(&joined);
			if (ext && !segs[i].extended)
				buf_append(&joined, "''", 2);
			for (unsigned k = i; k < j; k++) {
				if (ext && !segs[k].extended) {
					for (size_t c = 0; c < segs[k].vlen; c++) {
						if (segs[k].val[c] == '%')
							buf_append(&joined, "%25", 3);
						else
							buf_append(&joined, segs[k].val + c, 1);
					}
				} else {
					buf_append(&joined, segs[k].val, segs[k].vlen);
				}
			}
			buf_clear(&jname);
			buf_append(&jname, segs[i].base, segs[i].blen);
			if (ext)
				buf_append(&jname, "*", 1);
			param_list_add(out, buf_used(&jname) ? mime_bp(&jname) : "",
				       buf_used(&jname), buf_used(&joined) ? mime_bp(&joined) : "",
				       buf_used(&joined));
		}
		i = j;
	}
	buf_clear(&joined);
	buf_clear(&jname);
	free(segs);
}

bool mime_parse_content_type(const char *v, size_t len, struct buf *type, struct buf *subtype,
			     struct mime_param_list *params)
{
	struct mime_lex x = {v, v + len, false};
	const char *t, *s;
	size_t tlen, slen;

	if (!lex_skip_cfws(&x))
		return false;
	tlen = lex_token(&x, &t);
	if (tlen == 0)
		return false;
	if (!lex_skip_cfws(&x)) {
		/* "text" alone: Dovecot keeps the type with an empty subtype */
		buf_append(type, t, tlen);
		return false;
	}
	if (*x.p != '/')
		return false; /* "text; charset=..." gives "" "" */
	x.p++;
	if (!lex_skip_cfws(&x))
		return false;
	slen = lex_token(&x, &s); /* may be empty: "text/;" is type "text", subtype "" */
	buf_append(type, t, tlen);
	buf_append(subtype, s, slen);

	struct mime_param_list raw;
	mime_param_list_init(&raw);
	parse_raw_params(&x, &raw);
	params_rfc2231(&raw, params);
	mime_param_list_free(&raw);
	return true;
}

bool mime_parse_disposition(const char *v, size_t len, struct buf *type,
			    struct mime_param_list *params)
{
	struct mime_lex x = {v, v + len, false};
	const char *t;
	lex_skip_cfws(&x);
	if (x.error)
		return false;
	/* the type may be empty (Dovecot answers ("" ...) then) */
	size_t tlen = lex_token(&x, &t);
	lex_skip_cfws(&x);
	if (x.error)
		return false;
	buf_append(type, t, tlen);
	struct mime_param_list raw;
	mime_param_list_init(&raw);
	parse_raw_params(&x, &raw);
	params_rfc2231(&raw, params);
	mime_param_list_free(&raw);
	return true;
}

static bool lex_is_atext(unsigned char c)
{
	if (c >= 0x80)
		return true;
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

void mime_parse_language(const char *v, size_t len, struct mime_param_list *tags)
{
	struct mime_lex x = {v, v + len, false};
	lex_skip_cfws(&x);
	while (x.p < x.end) {
		const char *s = x.p;
		while (x.p < x.end && lex_is_atext((unsigned char)*x.p))
			x.p++;
		if (x.p == s)
			break;
		if (buf_append(&tags->b, s, (size_t)(x.p - s)) < 0 ||
		    buf_append(&tags->b, "", 1) < 0)
			break;
		tags->count++;
		if (!lex_skip_cfws(&x) || *x.p != ',')
			break;
		x.p++;
		lex_skip_cfws(&x);
	}
}

void mime_parse_token(const char *v, size_t len, struct buf *out)
{
	struct mime_lex x = {v, v + len, false};
	const char *t;
	if (!lex_skip_cfws(&x))
		return;
	size_t tlen = lex_token(&x, &t);
	/* a token and nothing after it, or the field counts as absent (Dovecot) */
	if (lex_skip_cfws(&x) || x.error)
		return;
	buf_append(out, t, tlen);
}

const char *mime_param_find(const char *list, size_t list_len, uint32_t count, const char *name,
			    size_t *len_r)
{
	const char *p = list, *end = list + list_len;
	for (uint32_t i = 0; i < count && p < end; i++) {
		const char *n = p;
		size_t nlen = strnlen(n, (size_t)(end - n));
		const char *val = n + nlen + 1;
		if (val > end)
			return NULL;
		size_t vlen = strnlen(val, (size_t)(end - val));
		if (strlen(name) == nlen && strncasecmp(n, name, nlen) == 0) {
			*len_r = vlen;
			return val;
		}
		p = val + vlen + 1;
	}
	return NULL;
}

bool mime_name_eq(const char *s, size_t len, const char *name)
{
	return strlen(name) == len && strncasecmp(s, name, len) == 0;
}
