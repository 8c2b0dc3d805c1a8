/* BODY and BODYSTRUCTURE (RFC 3501 §7.4.2, RFC 9051 §7.5.2) from the part tree, in Dovecot
 * 2.3's IMAP4rev1 form: types and parameter names in the case they were written, defaults
 * ("text" "plain", "charset" "us-ascii", "7bit", and "message" "rfc822" always) in lower
 * case, a text part without a charset
 * parameter gets ("charset" "us-ascii"), a multipart without body parts gets one empty
 * text/plain part, a part beyond the nesting limits is "application" "octet-stream". */
#include "mime_private.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "msg_imapstr.h"

#define EMPTY_BODY "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)"
#define EMPTY_BODYSTRUCTURE                                                                        \
	"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)"

struct bs {
	const struct msg_parsed *m;
	struct buf *out;
	int err;
};

static void bs_raw(struct bs *b, const char *s, size_t n)
{
	if (b->err == 0)
		b->err = buf_append(b->out, s, n);
}

static void bs_lit(struct bs *b, const char *s)
{
	bs_raw(b, s, strlen(s));
}

static void bs_string(struct bs *b, struct mime_str s)
{
	if (b->err == 0)
		b->err = msg_imapstr_string(b->out, mime_str_ptr(b->m, s), s.len);
}

static void bs_nstring_nolf(struct bs *b, struct mime_str s)
{
	if (b->err == 0)
		b->err = msg_imapstr_nstring_nolf(b->out, mime_str_ptr(b->m, s), s.len);
}

static void bs_num(struct bs *b, uint64_t v)
{
	char tmp[32];
	int n = snprintf(tmp, sizeof(tmp), " %" PRIu64, v);
	bs_raw(b, tmp, (size_t)n);
}

/* ("name" "value" ...) from a "name\0value\0" list, or NIL; default_charset adds
 * "charset" "us-ascii" when no charset parameter is there. */
static void bs_params(struct bs *b, struct mime_str list, uint32_t count, bool default_charset)
{
	const char *p = mime_str_ptr(b->m, list);
	if (!p)
		count = 0;
	if (count == 0 && !default_charset) {
		bs_lit(b, "NIL");
		return;
	}
	bool seen_charset = false;
	bs_lit(b, "(");
	const char *end = p ? p + list.len : NULL;
	for (uint32_t i = 0; i < count && p < end; i++) {
		size_t nlen = strnlen(p, (size_t)(end - p));
		const char *v = p + nlen + 1;
		size_t vlen = v < end ? strnlen(v, (size_t)(end - v)) : 0;
		if (v > end)
			break;
		if (i > 0)
			bs_lit(b, " ");
		if (mime_name_eq(p, nlen, "charset"))
			seen_charset = true;
		if (b->err == 0)
			b->err = msg_imapstr_string(b->out, p, nlen);
		bs_lit(b, " ");
		if (b->err == 0)
			b->err = msg_imapstr_string(b->out, v, vlen);
		p = v + vlen + 1;
	}
	if (default_charset && !seen_charset) {
		if (count > 0)
			bs_lit(b, " ");
		bs_lit(b, "\"charset\" \"us-ascii\"");
	}
	bs_lit(b, ")");
}

/* body-fld-dsp SP body-fld-lang SP body-fld-loc */
static void bs_ext_common(struct bs *b, const struct mime_part *p)
{
	bs_lit(b, " ");
	if (p->disp.off == MIME_NONE) {
		bs_lit(b, "NIL");
	} else {
		bs_lit(b, "(");
		bs_string(b, p->disp);
		bs_lit(b, " ");
		bs_params(b, p->disp_params, p->ndisp_params, false);
		bs_lit(b, ")");
	}
	bs_lit(b, " ");
	const char *l = mime_str_ptr(b->m, p->lang);
	if (!l || p->nlang == 0) {
		bs_lit(b, "NIL");
	} else {
		const char *end = l + p->lang.len;
		bs_lit(b, "(");
		for (uint32_t i = 0; i < p->nlang && l < end; i++) {
			size_t n = strnlen(l, (size_t)(end - l));
			if (i > 0)
				bs_lit(b, " ");
			if (b->err == 0)
				b->err = msg_imapstr_string(b->out, l, n);
			l += n + 1;
		}
		bs_lit(b, ")");
	}
	bs_lit(b, " ");
	bs_nstring_nolf(b, p->loc);
}

static void bs_part(struct bs *b, uint32_t idx, bool ext);

static void bs_multipart(struct bs *b, const struct mime_part *p, bool ext)
{
	bs_lit(b, "(");
	if (p->first_child == MIME_NONE)
		bs_lit(b, ext ? EMPTY_BODYSTRUCTURE : EMPTY_BODY);
	for (uint32_t c = p->first_child; c != MIME_NONE && b->err == 0; c = b->m->parts[c].next)
		bs_part(b, c, ext);
	bs_lit(b, " ");
	bs_string(b, p->subtype);
	if (ext) {
		bs_lit(b, " ");
		bs_params(b, p->params, p->nparams, false);
		bs_ext_common(b, p);
	}
	bs_lit(b, ")");
}

static void bs_part(struct bs *b, uint32_t idx, bool ext)
{
	const struct mime_part *p = &b->m->parts[idx];
	if ((p->flags & (MIME_F_MULTIPART | MIME_F_OVERFLOW)) == MIME_F_MULTIPART) {
		bs_multipart(b, p, ext);
		return;
	}
	bool text = false;
	bool rfc822 = (p->flags & (MIME_F_RFC822 | MIME_F_OVERFLOW)) == MIME_F_RFC822 &&
		      p->first_child != MIME_NONE;
	bs_lit(b, "(");
	if (p->flags & MIME_F_OVERFLOW) {
		bs_lit(b, "\"application\" \"octet-stream\" NIL");
	} else {
		if (rfc822) {
			/* written in lower case whatever the header said (Dovecot) */
			bs_lit(b, "\"message\" \"rfc822\"");
		} else if (!(p->flags & MIME_F_HAS_CT)) {
			text = true;
			bs_lit(b, "\"text\" \"plain\"");
		} else {
			text = (p->flags & MIME_F_TEXT) != 0;
			bs_string(b, p->type);
			bs_lit(b, " ");
			bs_string(b, p->subtype);
		}
		bs_lit(b, " ");
		bs_params(b, p->params, p->nparams, text);
	}
	bs_lit(b, " ");
	bs_nstring_nolf(b, p->id);
	bs_lit(b, " ");
	bs_nstring_nolf(b, p->desc);
	bs_lit(b, " ");
	if (p->enc.off == MIME_NONE)
		bs_lit(b, "\"7bit\"");
	else
		bs_string(b, p->enc);
	bs_num(b, p->body_vend - p->body_voff);
	if (text) {
		bs_num(b, p->lines);
	} else if (rfc822) {
		const struct mime_part *c = &b->m->parts[p->first_child];
		bs_lit(b, " ");
		if (c->envelope.off == MIME_NONE)
			bs_lit(b, "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
		else
			bs_raw(b, mime_str_ptr(b->m, c->envelope), c->envelope.len);
		bs_lit(b, " ");
		bs_part(b, p->first_child, ext);
		bs_num(b, p->lines);
	}
	if (ext) {
		bs_lit(b, " ");
		bs_nstring_nolf(b, p->md5);
		bs_ext_common(b, p);
	}
	bs_lit(b, ")");
}

int mime_bodystructure_render(const struct msg_parsed *m, uint32_t part, bool extended,
			      struct buf *out)
{
	struct bs b = {m, out, 0};
	bs_part(&b, part, extended);
	return b.err;
}
