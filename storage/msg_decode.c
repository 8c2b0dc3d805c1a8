/* Transfer decoding (RFC 2045 §6.7 quoted-printable, §6.8 base64), RFC 2047 encoded words,
 * and the UTF-8 text of a message for SEARCH. */
#include "mime_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define QP_MAX_WS    76 /* a QP line is at most 76 octets: more white space is an error */
#define TEXT_CHUNK   8192
#define TEXT_OUT_MAX (64 * 1024)

enum mime_cte mime_cte_from_name(const char *s, size_t len)
{
	if (s == NULL || len == 0 || mime_name_eq(s, len, "7bit") || mime_name_eq(s, len, "8bit") ||
	    mime_name_eq(s, len, "binary"))
		return MIME_CTE_IDENTITY;
	if (mime_name_eq(s, len, "base64"))
		return MIME_CTE_BASE64;
	if (mime_name_eq(s, len, "quoted-printable"))
		return MIME_CTE_QP;
	return MIME_CTE_UNKNOWN;
}

enum mime_cte mime_part_cte(const struct msg_parsed *m, const struct mime_part *p)
{
	return mime_cte_from_name(mime_str_ptr(m, p->enc), p->enc.len);
}

enum qp_state { QP_TEXT, QP_WS, QP_EQUALS, QP_EQUALS_WS, QP_HEX2, QP_CR, QP_SOFTCR };

struct mime_decoder {
	enum mime_cte cte;
	bool strict; /* report undecodable input (BINARY) instead of passing it through */
	bool bad;    /* undecodable input seen */
	uint32_t acc;
	int nsext;
	bool padded;
	enum qp_state qp;
	char hex1;
	char ws[QP_MAX_WS + 1]; /* white space that may turn out to be trailing */
	size_t wslen, wsrun;
};

int mime_decoder_new(enum mime_cte cte, bool strict, struct mime_decoder **dec_r)
{
	struct mime_decoder *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->cte = cte;
	d->strict = strict;
	*dec_r = d;
	return 0;
}

void mime_decoder_free(struct mime_decoder **decp)
{
	free(*decp);
	*decp = NULL;
}

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

static int b64_feed(struct mime_decoder *d, const char *in, size_t n, bool final, char *out,
		    size_t *olen)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '\r' || c == '\n' || c == ' ' || c == '\t')
			continue;
		if (c == '=') {
			if (d->nsext == 1)
				return -EBADMSG;
			if (d->nsext == 2)
				out[o++] = (char)(d->acc >> 4);
			else if (d->nsext == 3) {
				out[o++] = (char)(d->acc >> 10);
				out[o++] = (char)(d->acc >> 2);
			}
			d->nsext = 0;
			d->acc = 0;
			d->padded = true;
			continue;
		}
		int v = b64_value(c);
		if (v < 0 || d->padded)
			return -EBADMSG;
		d->acc = (d->acc << 6) | (uint32_t)v;
		if (++d->nsext == 4) {
			out[o++] = (char)(d->acc >> 16);
			out[o++] = (char)(d->acc >> 8);
			out[o++] = (char)d->acc;
			d->nsext = 0;
			d->acc = 0;
		}
	}
	if (final) {
		/* missing padding is forgiven; a lone sextet is not */
		if (d->nsext == 1)
			return -EBADMSG;
		if (d->nsext == 2)
			out[o++] = (char)(d->acc >> 4);
		else if (d->nsext == 3) {
			out[o++] = (char)(d->acc >> 10);
			out[o++] = (char)(d->acc >> 2);
		}
		d->nsext = 0;
	}
	*olen = o;
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static void qp_ws_add(struct mime_decoder *d, char c)
{
	if (d->wslen < QP_MAX_WS + 1)
		d->ws[d->wslen++] = c;
	d->wsrun++;
}

/* Undecodable input: what was held back goes out as it was, and the error is noted. */
static size_t qp_invalid(struct mime_decoder *d, char *out)
{
	size_t o = 0;
	if (d->qp == QP_EQUALS || d->qp == QP_HEX2 || d->qp == QP_EQUALS_WS || d->qp == QP_SOFTCR)
		out[o++] = '=';
	if (d->qp == QP_HEX2)
		out[o++] = d->hex1;
	if (d->qp == QP_EQUALS_WS || d->qp == QP_CR || d->qp == QP_SOFTCR) {
		memcpy(out + o, d->ws, d->wslen);
		o += d->wslen;
	}
	if (d->qp == QP_CR || d->qp == QP_SOFTCR)
		out[o++] = '\r';
	d->wslen = d->wsrun = 0;
	d->qp = QP_TEXT;
	d->bad = true;
	return o;
}

/* Quoted-printable (RFC 2045 §6.7) as a state machine over the CRLF form, with the same
 * output and the same notion of invalid input as Dovecot's qp-decoder: trailing white space
 * is dropped, "=" at a line end is a soft break (white space may follow it), lower-case hex
 * is accepted, and anything else after "=" or a CR without LF is passed through but makes the
 * data invalid. */
static int qp_feed(struct mime_decoder *d, const char *in, size_t n, bool final, char *out,
		   size_t *olen)
{
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		char c = in[i];
		int h;
		switch (d->qp) {
		case QP_TEXT:
			if (c == '=')
				d->qp = QP_EQUALS;
			else if (c == '\r')
				d->qp = QP_CR;
			else if (c == '\n') {
				out[o++] = '\r';
				out[o++] = '\n';
			} else if (c == ' ' || c == '\t') {
				d->wslen = d->wsrun = 0;
				qp_ws_add(d, c);
				d->qp = QP_WS;
			} else
				out[o++] = c;
			break;
		case QP_WS:
			if (c == ' ' || c == '\t') {
				qp_ws_add(d, c);
			} else if (c == '\r') {
				d->qp = QP_CR;
			} else if (c == '\n') {
				out[o++] = '\r';
				out[o++] = '\n';
				d->wslen = d->wsrun = 0;
				d->qp = QP_TEXT;
			} else {
				/* not trailing after all */
				memcpy(out + o, d->ws, d->wslen);
				o += d->wslen;
				if (d->wsrun > QP_MAX_WS)
					d->bad = true;
				d->wslen = d->wsrun = 0;
				d->qp = QP_TEXT;
				continue;
			}
			break;
		case QP_EQUALS:
			if (hexval(c) >= 0) {
				d->hex1 = c;
				d->qp = QP_HEX2;
			} else if (c == ' ' || c == '\t') {
				d->wslen = d->wsrun = 0;
				qp_ws_add(d, c);
				d->qp = QP_EQUALS_WS;
			} else if (c == '\r') {
				d->qp = QP_SOFTCR;
			} else if (c == '\n') {
				d->qp = QP_TEXT;
			} else {
				o += qp_invalid(d, out + o);
				continue;
			}
			break;
		case QP_HEX2:
			if ((h = hexval(c)) >= 0) {
				out[o++] = (char)(hexval(d->hex1) << 4 | h);
				d->qp = QP_TEXT;
			} else {
				o += qp_invalid(d, out + o);
				continue;
			}
			break;
		case QP_EQUALS_WS:
			if (c == ' ' || c == '\t') {
				qp_ws_add(d, c);
			} else if (c == '\r') {
				d->qp = QP_SOFTCR;
			} else if (c == '\n') {
				d->wslen = d->wsrun = 0;
				d->qp = QP_TEXT;
			} else {
				o += qp_invalid(d, out + o);
				continue;
			}
			break;
		case QP_CR:
		case QP_SOFTCR:
			if (c == '\n') {
				if (d->qp == QP_CR) {
					out[o++] = '\r';
					out[o++] = '\n';
				}
				d->wslen = d->wsrun = 0;
				d->qp = QP_TEXT;
			} else {
				o += qp_invalid(d, out + o);
				continue;
			}
			break;
		}
		i++;
	}
	if (final) {
		if (d->qp == QP_WS)
			d->qp = QP_TEXT; /* trailing white space at the end is dropped */
		else if (d->qp != QP_TEXT)
			o += qp_invalid(d, out + o);
		d->wslen = d->wsrun = 0;
	}
	*olen = o;
	return d->strict && d->bad ? -EBADMSG : 0;
}

int mime_decoder_feed(struct mime_decoder *d, const char *in, size_t n, bool final, char *out,
		      size_t *outlen_r)
{
	*outlen_r = 0;
	if (d->cte == MIME_CTE_BASE64)
		return b64_feed(d, in, n, final, out, outlen_r);
	if (d->cte == MIME_CTE_QP)
		return qp_feed(d, in, n, final, out, outlen_r);
	memcpy(out, in, n);
	*outlen_r = n;
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* RFC 2047 encoded words                                                                    */

/* Parse "=?charset?E?text?=" at s; returns its length or 0. */
static size_t ew_parse(const char *s, size_t n, const char **cs, size_t *cslen, char *enc,
		       const char **txt, size_t *txtlen)
{
	if (n < 8 || s[0] != '=' || s[1] != '?')
		return 0;
	const char *p = s + 2, *end = s + n;
	const char *q = memchr(p, '?', (size_t)(end - p));
	if (!q || q == p || q + 3 >= end || q[2] != '?')
		return 0;
	*cs = p;
	*cslen = (size_t)(q - p);
	*enc = q[1];
	if (*enc != 'B' && *enc != 'b' && *enc != 'Q' && *enc != 'q')
		return 0;
	const char *t = q + 3;
	for (const char *e = t; e + 1 < end; e++) {
		if (*e == ' ' || *e == '\t' || *e == '\r' || *e == '\n')
			return 0;
		if (e[0] == '?' && e[1] == '=') {
			*txt = t;
			*txtlen = (size_t)(e - t);
			return (size_t)(e + 2 - s);
		}
	}
	return 0;
}

static int ew_decode(const char *cs, size_t cslen, char enc, const char *t, size_t tlen,
		     struct buf *out)
{
	char *raw = malloc(tlen + 4);
	if (!raw)
		return -ENOMEM;
	size_t n = 0;
	int ret = 0;
	if (enc == 'B' || enc == 'b') {
		struct mime_decoder d = {.cte = MIME_CTE_BASE64};
		ret = b64_feed(&d, t, tlen, true, raw, &n);
	} else {
		for (size_t i = 0; i < tlen; i++) {
			int h, l;
			if (t[i] == '_')
				raw[n++] = ' ';
			else if (t[i] == '=' && i + 2 < tlen && (h = hexval(t[i + 1])) >= 0 &&
				 (l = hexval(t[i + 2])) >= 0) {
				raw[n++] = (char)(h << 4 | l);
				i += 2;
			} else
				raw[n++] = t[i];
		}
	}
	if (ret == 0)
		ret = charset_to_utf8(cs, cslen, raw, n, out);
	free(raw);
	return ret;
}

static int text_to_utf8(const char *s, size_t n, struct buf *out)
{
	/* raw header text: UTF-8 when valid (RFC 6532), else taken as ISO-8859-1 */
	bool valid = true;
	struct charset_conv *c;
	int ret;
	for (size_t i = 0; i < n && valid; i++)
		if ((unsigned char)s[i] >= 0x80)
			valid = false;
	if (valid)
		return buf_append(out, s, n);
	size_t before = buf_used(out);
	if ((ret = charset_conv_open("utf-8", 5, &c)) < 0)
		return ret;
	ret = charset_conv_feed(c, s, n, true, out);
	charset_conv_free(&c);
	if (ret == 0 && memmem(mime_bp(out) + before, buf_used(out) - before, "\xef\xbf\xbd", 3)) {
		out->len = out->off + before;
		ret = charset_to_utf8("iso-8859-1", 10, s, n, out);
	}
	return ret;
}

int msg_decode_words(const char *s, size_t len, struct buf *out)
{
	size_t i = 0, plain = 0;
	bool last_ew = false;
	int ret = 0;
	while (i < len && ret == 0) {
		const char *cs, *t;
		size_t cslen, tlen;
		char enc;
		size_t wl =
			s[i] == '=' ? ew_parse(s + i, len - i, &cs, &cslen, &enc, &t, &tlen) : 0;
		if (wl == 0) {
			i++;
			continue;
		}
		/* white space between two encoded words is dropped (RFC 2047 §6.2) */
		bool only_ws = true;
		for (size_t k = plain; k < i && only_ws; k++)
			only_ws = s[k] == ' ' || s[k] == '\t' || s[k] == '\r' || s[k] == '\n';
		if (!(last_ew && only_ws))
			ret = text_to_utf8(s + plain, i - plain, out);
		size_t before = buf_used(out);
		if (ret == 0 && ew_decode(cs, cslen, enc, t, tlen, out) < 0) {
			/* unknown charset or bad base64: keep the word as it is */
			out->len = out->off + before;
			ret = buf_append(out, s + i, wl);
		}
		i += wl;
		plain = i;
		last_ew = true;
	}
	if (ret == 0)
		ret = text_to_utf8(s + plain, len - plain, out);
	return ret;
}

/* ---------------------------------------------------------------------------------------- */
/* Text for SEARCH                                                                           */

static int text_headers(const struct msg_source *src, const struct msg_parsed *m,
			const struct mime_part *p, msg_text_cb *cb, void *ctx)
{
	struct msg_section sec;
	memset(&sec, 0, sizeof(sec));
	sec.kind = MSG_SECTION_HEADER_FIELDS_NOT; /* no names: every field */
	struct msg_range rg = {p->hdr_poff, p->body_poff - p->hdr_poff, p->hdr_voff,
			       p->body_voff - p->hdr_voff};
	struct buf all, dec;
	buf_init(&all, 1u << 20);
	buf_init(&dec, 4u << 20);
	int ret = msg_section_fields(src, &rg, &sec, &all);
	if (ret == -ENOBUFS)
		ret = 0; /* a giant header: search what fitted */
	const char *f = buf_used(&all) ? mime_bp(&all) : "";
	const char *end = f + buf_used(&all);
	while (ret == 0 && f < end) {
		const char *fe = f;
		while (fe < end) {
			const char *lf = memchr(fe, '\n', (size_t)(end - fe));
			fe = lf ? lf + 1 : end;
			if (fe >= end || (*fe != ' ' && *fe != '\t'))
				break;
		}
		buf_clear(&dec);
		struct buf unf;
		buf_init(&unf, (size_t)(fe - f) + 1);
		for (const char *c = f; c < fe;) {
			const char *e = c;
			while (e < fe && *e != '\r' && *e != '\n')
				e++;
			if (e > c)
				buf_append(&unf, c, (size_t)(e - c));
			while (e < fe && (*e == '\r' || *e == '\n'))
				e++;
			c = e;
		}
		if (buf_used(&unf) > 0) {
			ret = msg_decode_words(mime_bp(&unf), buf_used(&unf), &dec);
			if (ret == 0)
				ret = buf_append(&dec, "\n", 1);
			if (ret == 0)
				ret = cb(ctx, mime_bp(&dec), buf_used(&dec));
		}
		buf_clear(&unf);
		f = fe;
	}
	buf_clear(&all);
	buf_clear(&dec);
	return ret;
}

int mime_text_body(const struct msg_source *src, const struct msg_parsed *m,
		   const struct mime_part *p, msg_text_cb *cb, void *ctx)
{
	enum mime_cte cte = mime_part_cte(m, p);
	if (cte == MIME_CTE_UNKNOWN)
		cte = MIME_CTE_IDENTITY;
	size_t cslen = 0;
	const char *cs = p->nparams ? mime_param_find(mime_str_ptr(m, p->params), p->params.len,
						      p->nparams, "charset", &cslen)
				    : NULL;
	struct charset_conv *conv;
	if (!cs || charset_conv_open(cs, cslen, &conv) < 0) {
		/* unknown charset: taken as UTF-8 (invalid octets become U+FFFD) */
		int r = charset_conv_open("utf-8", 5, &conv);
		if (r < 0)
			return r;
	}
	struct msg_range rg;
	struct msg_reader *rd;
	mime_part_body_range(p, &rg);
	int ret = mime_reader_open_decoded(src, &rg, cte, false, &rd);
	if (ret < 0) {
		charset_conv_free(&conv);
		return ret;
	}
	struct buf out;
	buf_init(&out, TEXT_OUT_MAX);
	char chunk[TEXT_CHUNK];
	for (;;) {
		ssize_t n = msg_reader_read(rd, chunk, sizeof(chunk));
		if (n < 0) {
			/* corrupt transfer encoding: search what decoded */
			ret = n == -EBADMSG ? 0 : (int)n;
			n = 0;
		}
		buf_clear(&out);
		if (ret == 0)
			ret = charset_conv_feed(conv, chunk, (size_t)n, n == 0, &out);
		if (ret == 0 && buf_used(&out) > 0)
			ret = cb(ctx, mime_bp(&out), buf_used(&out));
		if (ret != 0 || n == 0)
			break;
	}
	buf_clear(&out);
	msg_reader_free(&rd);
	charset_conv_free(&conv);
	return ret;
}

int msg_text_foreach(const struct msg_source *src, const struct msg_parsed *m, unsigned what,
		     msg_text_cb *cb, void *ctx)
{
	int ret = 0;
	for (uint32_t i = 0; i < m->nparts && ret == 0; i++) {
		const struct mime_part *p = &m->parts[i];
		if ((what & MSG_TEXT_HEADERS) && (p->flags & MIME_F_MESSAGE))
			ret = text_headers(src, m, p, cb, ctx);
		bool leaf = p->first_child == MIME_NONE;
		if (ret == 0 && (what & MSG_TEXT_BODIES) && leaf && (p->flags & MIME_F_TEXT))
			ret = mime_text_body(src, m, p, cb, ctx);
	}
	return ret;
}
