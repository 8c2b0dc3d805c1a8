/* The MIME parser: one pass over the message's lines, bounded memory.
 *
 * Lines come from a window over the source (the whole buffer, or MSG_READ_CHUNK octets of the
 * file read with pread); a line longer than the window comes in fragments, and only the first
 * fragment of a line can be a delimiter or start a header field. A stack of open parts follows
 * the nesting; each open multipart with a boundary is checked, innermost first, against every
 * line that starts with "--". Offsets are tracked twice: physical (source) and virtual (CRLF
 * form, a bare LF counting two octets). */
#include "mime_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MIME_ARENA_MAX    (16u * 1024 * 1024)
#define MIME_BOUNDARY_MAX 80 /* RFC 2046 allows 70; longer ones are cut here (Dovecot) */
#define MIME_RENDER_MAX   (64u * 1024 * 1024)
#define MIME_DEPTH_MAX    1000 /* BODYSTRUCTURE rendering recurses once per level */

size_t mime_read_window = MSG_READ_CHUNK;

void msg_parse_limits_default(struct msg_parse_limits *l)
{
	l->max_depth = 100;
	l->max_parts = 10000;
	l->max_header_value = 64 * 1024;
	l->max_header_keep = 256 * 1024;
}

struct mime_str mime_arena_add(struct mime_arena *a, const char *s, size_t len)
{
	struct mime_str r = {MIME_NONE, 0};
	if (a->full || len >= MIME_ARENA_MAX)
		return r;
	uint32_t off = (uint32_t)buf_used(&a->b);
	if (buf_append(&a->b, s, len) < 0 || buf_append(&a->b, "", 1) < 0) {
		a->full = true;
		return r;
	}
	r.off = off;
	r.len = (uint32_t)len;
	return r;
}

int mime_source_pread(const struct msg_source *src, void *dst, size_t len, uint64_t off)
{
	if (off > src->size || len > src->size - off)
		return -EIO;
	if (src->mem) {
		memcpy(dst, src->mem + off, len);
		return 0;
	}
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(src->fd, (char *)dst + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Line reader                                                                               */

struct mime_lines {
	const struct msg_source *src;
	char *win;
	const char *data;
	size_t dlen, pos;
	uint64_t next_read; /* physical offset of the first byte not yet in the window */
	size_t wcap;        /* window size (file sources) */
	bool line_start;
};

struct mime_frag {
	const char *p;
	size_t len; /* with the line end */
	int eol;    /* 0: no line end in this fragment, 1: LF, 2: CRLF */
	bool start; /* first fragment of a line */
};

static int lines_fill(struct mime_lines *r)
{
	if (r->src->mem || r->next_read >= r->src->size)
		return 0;
	size_t keep = r->dlen - r->pos;
	memmove(r->win, r->data + r->pos, keep);
	r->pos = 0;
	r->dlen = keep;
	uint64_t want = r->src->size - r->next_read;
	if (want > r->wcap - keep)
		want = r->wcap - keep;
	int ret = mime_source_pread(r->src, r->win + keep, (size_t)want, r->next_read);
	if (ret < 0)
		return ret;
	r->dlen += (size_t)want;
	r->next_read += want;
	return 1;
}

/* Returns 1 with a fragment, 0 at the end, -errno. */
static int lines_next(struct mime_lines *r, struct mime_frag *f)
{
	int ret;
	for (;;) {
		bool at_end = r->src->mem || r->next_read >= r->src->size;
		if (r->pos == r->dlen && at_end)
			return 0;
		const char *s = r->data + r->pos;
		size_t avail = r->dlen - r->pos;
		const char *lf = memchr(s, '\n', avail);
		if (!lf && !at_end && (r->pos > 0 || r->dlen < r->wcap)) {
			if ((ret = lines_fill(r)) < 0)
				return ret;
			continue;
		}
		f->p = s;
		f->start = r->line_start;
		if (lf) {
			f->len = (size_t)(lf - s) + 1;
			f->eol = (lf > s && lf[-1] == '\r') ? 2 : 1;
		} else {
			f->len = avail;
			f->eol = 0;
			/* keep a CR with the LF that may follow it in the next window */
			if (!at_end && avail > 1 && s[avail - 1] == '\r')
				f->len--;
		}
		r->line_start = f->eol > 0;
		r->pos += f->len;
		return 1;
	}
}

/* ---------------------------------------------------------------------------------------- */
/* Header fields                                                                             */

enum hdr_field {
	HF_NONE = -1,
	HF_CT,
	HF_CTE,
	HF_CID,
	HF_CDESC,
	HF_CMD5,
	HF_CDISP,
	HF_CLANG,
	HF_CLOC,
	HF_N_CONTENT,
	HF_DATE = HF_N_CONTENT,
	HF_SUBJECT,
	HF_MSGID,
	HF_INREPLYTO,
	HF_REFERENCES,
	HF_ADDR0,                       /* + MIME_ENV_FROM .. MIME_ENV_BCC */
	HF_MIME_VERSION = HF_ADDR0 + 6, /* only noted */
};

static const struct {
	const char *name;
	int id;
} hdr_names[] = {
	{"Content-Type", HF_CT},
	{"Content-Transfer-Encoding", HF_CTE},
	{"Content-ID", HF_CID},
	{"Content-Description", HF_CDESC},
	{"Content-MD5", HF_CMD5},
	{"Content-Disposition", HF_CDISP},
	{"Content-Language", HF_CLANG},
	{"Content-Location", HF_CLOC},
	{"Date", HF_DATE},
	{"Subject", HF_SUBJECT},
	{"Message-ID", HF_MSGID},
	{"In-Reply-To", HF_INREPLYTO},
	{"References", HF_REFERENCES},
	{"From", HF_ADDR0 + MIME_ENV_FROM},
	{"Sender", HF_ADDR0 + MIME_ENV_SENDER},
	{"Reply-To", HF_ADDR0 + MIME_ENV_REPLY_TO},
	{"To", HF_ADDR0 + MIME_ENV_TO},
	{"Cc", HF_ADDR0 + MIME_ENV_CC},
	{"Bcc", HF_ADDR0 + MIME_ENV_BCC},
	{"MIME-Version", HF_MIME_VERSION},
};

struct hdr_ctx {
	int field;
	bool message; /* collect envelope fields */
	bool mime;    /* MIME-Version or Content-Type seen, or a part of a multipart */
	struct buf val;
	size_t kept;
	struct buf cf[HF_N_CONTENT];
	bool has_cf[HF_N_CONTENT];
	struct mime_env_fields env;
};

enum open_state {
	ST_HEADER,
	ST_BODY,
	ST_MP_PREAMBLE,
	ST_MP_CHILD,
	ST_MP_WAIT_CHILD,
	ST_MP_EPILOGUE,
	ST_RFC822,
};

struct mime_open {
	uint32_t part;
	uint32_t last_child;
	enum open_state state;
	uint64_t lf_start;
	char *boundary;
	size_t blen;
	bool boundary_active;
};

struct mime_parser {
	struct msg_parse_limits lim;
	struct msg_parsed *m;
	uint32_t cap_parts;
	struct mime_arena arena;
	struct mime_open *stack;
	unsigned depth, stack_cap;
	struct hdr_ctx hdr;
	uint64_t ppos, vpos, lfs;
	int prev_eol;
	bool nomem;
};

static void hdr_reset(struct hdr_ctx *h, bool message, size_t max_value)
{
	h->field = HF_NONE;
	h->message = message;
	h->mime = !message; /* parts after a delimiter are MIME by position */
	h->kept = 0;
	buf_clear(&h->val);
	h->val.max = max_value;
	for (int i = 0; i < HF_N_CONTENT; i++) {
		buf_clear(&h->cf[i]);
		h->has_cf[i] = false;
	}
	buf_clear(&h->env.date);
	buf_clear(&h->env.subject);
	buf_clear(&h->env.message_id);
	buf_clear(&h->env.in_reply_to);
	h->env.has_date = h->env.has_subject = h->env.has_message_id = false;
	h->env.has_in_reply_to = false;
	buf_clear(&h->env.references);
	h->env.has_references = false;
	for (int i = 0; i < 6; i++) {
		buf_clear(&h->env.addr[i]);
		h->env.has_addr[i] = false;
	}
}

static void hdr_init(struct hdr_ctx *h, const struct msg_parse_limits *lim)
{
	memset(h, 0, sizeof(*h));
	buf_init(&h->val, lim->max_header_value);
	/* a kept value may grow 3x when its NULs become U+FFFD */
	size_t kept_max = 3 * lim->max_header_value;
	for (int i = 0; i < HF_N_CONTENT; i++)
		buf_init(&h->cf[i], kept_max);
	buf_init(&h->env.date, kept_max);
	buf_init(&h->env.subject, kept_max);
	buf_init(&h->env.message_id, kept_max);
	buf_init(&h->env.in_reply_to, kept_max);
	buf_init(&h->env.references, kept_max);
	for (int i = 0; i < 6; i++)
		buf_init(&h->env.addr[i], 3 * lim->max_header_keep + 6);
}

static void hdr_free(struct hdr_ctx *h)
{
	hdr_reset(h, false, 0);
}

static void hdr_append(struct mime_parser *ps, const char *s, size_t len)
{
	struct hdr_ctx *h = &ps->hdr;
	if (h->field == HF_NONE || len == 0)
		return;
	size_t room = buf_room(&h->val);
	if (ps->lim.max_header_keep > h->kept && room > ps->lim.max_header_keep - h->kept)
		room = ps->lim.max_header_keep - h->kept;
	else if (ps->lim.max_header_keep <= h->kept)
		room = 0;
	if (len > room)
		len = room;
	if (len > 0 && buf_append(&h->val, s, len) == 0)
		h->kept += len;
}

static void buf_set(struct buf *b, const char *s, size_t len)
{
	buf_clear(b);
	buf_append(b, s, len);
}

/* Which of several Content-* fields counts, as in Dovecot: the first one, except that a
 * Content-Transfer-Encoding that is not a single token and a Content-Language without any
 * tag leave room for a later field, and a Content-Disposition without parameters is
 * replaced by a later one. */
static bool content_field_takes(const struct hdr_ctx *h, int f, const char *v, size_t len)
{
	struct buf tmp;
	struct mime_param_list pl;
	bool takes;
	if (f == HF_CTE) {
		if (h->has_cf[f])
			return false;
		buf_init(&tmp, len + 1);
		mime_parse_token(v, len, &tmp);
		takes = buf_used(&tmp) > 0;
		buf_clear(&tmp);
		return takes;
	}
	if (f == HF_CLANG) {
		if (h->has_cf[f])
			return false;
		mime_param_list_init(&pl);
		mime_parse_language(v, len, &pl);
		takes = pl.count > 0;
		mime_param_list_free(&pl);
		return takes;
	}
	if (f == HF_CDISP && h->has_cf[f]) {
		buf_init(&tmp, 1 << 20);
		mime_param_list_init(&pl);
		mime_parse_disposition(buf_used(&h->cf[f]) ? mime_bp(&h->cf[f]) : "",
				       buf_used(&h->cf[f]), &tmp, &pl);
		takes = pl.count == 0;
		mime_param_list_free(&pl);
		buf_clear(&tmp);
		return takes;
	}
	return !h->has_cf[f];
}

/* The value of the field just ended: line ends at its end dropped, each NUL made U+FFFD (as
 * Dovecot's message_header_strdup does). */
static void hdr_finish_field(struct mime_parser *ps)
{
	struct hdr_ctx *h = &ps->hdr;
	if (h->field == HF_NONE)
		return;
	const char *v = mime_bp(&h->val);
	size_t len = buf_used(&h->val);
	while (len > 0 && (v[len - 1] == '\n' || v[len - 1] == '\r'))
		len--;
	struct buf nul;
	buf_init(&nul, 3 * len + 1);
	if (memchr(v, '\0', len) != NULL) {
		for (size_t i = 0; i < len; i++) {
			if (v[i] == '\0')
				buf_append(&nul, "\xef\xbf\xbd", 3);
			else
				buf_append(&nul, v + i, 1);
		}
		v = mime_bp(&nul);
		len = buf_used(&nul);
	}
	int f = h->field;
	if (f < HF_N_CONTENT) {
		if (content_field_takes(h, f, v, len)) {
			buf_set(&h->cf[f], v, len);
			h->has_cf[f] = true;
		}
	} else if (f == HF_DATE) {
		buf_set(&h->env.date, v, len);
		h->env.has_date = true;
	} else if (f == HF_SUBJECT) {
		buf_set(&h->env.subject, v, len);
		h->env.has_subject = true;
	} else if (f == HF_MSGID) {
		buf_set(&h->env.message_id, v, len);
		h->env.has_message_id = true;
	} else if (f == HF_INREPLYTO) {
		buf_set(&h->env.in_reply_to, v, len);
		h->env.has_in_reply_to = true;
	} else if (f == HF_REFERENCES) {
		/* the first one counts (RFC 5322 allows one; Dovecot's THREAD reads the first) */
		if (!h->env.has_references)
			buf_set(&h->env.references, v, len);
		h->env.has_references = true;
	} else {
		int a = f - HF_ADDR0;
		if (h->env.has_addr[a])
			buf_append(&h->env.addr[a], "", 1);
		buf_append(&h->env.addr[a], v, len);
		h->env.has_addr[a] = true;
	}
	h->field = HF_NONE;
	buf_clear(&h->val);
	buf_clear(&nul);
}

static void hdr_start_field(struct mime_parser *ps, const struct mime_frag *fr)
{
	struct hdr_ctx *h = &ps->hdr;
	const char *colon = memchr(fr->p, ':', fr->len);
	h->field = HF_NONE;
	if (!colon)
		return;
	size_t nlen = (size_t)(colon - fr->p);
	while (nlen > 0 && (fr->p[nlen - 1] == ' ' || fr->p[nlen - 1] == '\t'))
		nlen--;
	for (size_t i = 0; i < sizeof(hdr_names) / sizeof(hdr_names[0]); i++) {
		if (mime_name_eq(fr->p, nlen, hdr_names[i].name)) {
			h->field = hdr_names[i].id;
			break;
		}
	}
	if (h->field == HF_MIME_VERSION || h->field == HF_CT)
		h->mime = true;
	if (h->field == HF_MIME_VERSION || (h->field >= HF_N_CONTENT && !h->message))
		h->field = HF_NONE;
	const char *v = colon + 1, *end = fr->p + fr->len;
	const char *text_end = end - fr->eol;
	/* white space after ':' is skipped, but a value of only white space keeps all of it
	 * except the first octet (Dovecot's SKIP_INITIAL_LWSP) */
	const char *w = v;
	while (w < text_end && (*w == ' ' || *w == '\t'))
		w++;
	if (w == text_end && v < text_end)
		w = v + 1;
	hdr_append(ps, w, (size_t)(end - w));
}

/* ---------------------------------------------------------------------------------------- */
/* Parts                                                                                     */

static uint32_t part_new(struct mime_parser *ps, uint32_t parent)
{
	struct msg_parsed *m = ps->m;
	if (m->nparts >= ps->lim.max_parts)
		return MIME_NONE;
	if (m->nparts == ps->cap_parts) {
		uint32_t cap = ps->cap_parts ? ps->cap_parts * 2 : 8;
		struct mime_part *p = realloc(m->parts, cap * sizeof(*p));
		if (!p) {
			ps->nomem = true;
			return MIME_NONE;
		}
		m->parts = p;
		ps->cap_parts = cap;
	}
	uint32_t idx = m->nparts++;
	struct mime_part *p = &m->parts[idx];
	memset(p, 0, sizeof(*p));
	p->parent = parent;
	p->first_child = p->next = MIME_NONE;
	struct mime_str nil = {MIME_NONE, 0};
	p->type = p->subtype = p->params = p->id = p->desc = p->enc = nil;
	p->md5 = p->loc = p->disp = p->disp_params = p->lang = p->envelope = p->preview = nil;
	p->references = nil;
	p->hdr_poff = p->body_poff = p->body_pend = ps->ppos;
	p->hdr_voff = p->body_voff = p->body_vend = ps->vpos;
	return idx;
}

static int stack_push(struct mime_parser *ps, uint32_t part, bool message)
{
	if (ps->depth == ps->stack_cap) {
		unsigned cap = ps->stack_cap ? ps->stack_cap * 2 : 16;
		struct mime_open *s = realloc(ps->stack, cap * sizeof(*s));
		if (!s) {
			ps->nomem = true;
			return -ENOMEM;
		}
		ps->stack = s;
		ps->stack_cap = cap;
	}
	struct mime_open *o = &ps->stack[ps->depth++];
	memset(o, 0, sizeof(*o));
	o->part = part;
	o->last_child = MIME_NONE;
	o->state = ST_HEADER;
	hdr_reset(&ps->hdr, message, ps->lim.max_header_value);
	return 0;
}

/* Create a child of the open part at stack index k (a multipart or message/rfc822) starting
 * at the current position, and push it in the header state. */
static void child_start(struct mime_parser *ps, unsigned k, uint32_t flags)
{
	struct mime_open *o = &ps->stack[k];
	uint32_t c = part_new(ps, o->part);
	if (c == MIME_NONE)
		return;
	struct msg_parsed *m = ps->m;
	/* ps->stack may move in stack_push: link first */
	if (o->last_child == MIME_NONE)
		m->parts[o->part].first_child = c;
	else
		m->parts[o->last_child].next = c;
	o->last_child = c;
	m->parts[c].flags = flags;
	stack_push(ps, c, (flags & MIME_F_MESSAGE) != 0);
}

static struct mime_str arena_buf(struct mime_parser *ps, const struct buf *b)
{
	return mime_arena_add(&ps->arena, buf_used(b) ? mime_bp(b) : "", buf_used(b));
}

/* The header of the top part ended at the current position (the body starts here). */
static void header_end(struct mime_parser *ps)
{
	struct mime_open *o = &ps->stack[ps->depth - 1];
	struct msg_parsed *m = ps->m;
	struct hdr_ctx *h = &ps->hdr;
	uint32_t pi = o->part;
	struct mime_part *p = &m->parts[pi];
	struct buf tmp1, tmp2;
	struct mime_param_list pl;

	hdr_finish_field(ps);
	p->body_poff = p->body_pend = ps->ppos;
	p->body_voff = p->body_vend = ps->vpos;
	o->lf_start = ps->lfs;
	o->state = ST_BODY;

	bool digest_child = p->parent != MIME_NONE && (m->parts[p->parent].flags & MIME_F_DIGEST);
	if (!h->mime) {
		/* a message without MIME-Version or Content-Type is not MIME: its other
		 * Content-* fields mean nothing (RFC 2045 §4; Dovecot forgets them too) */
		for (int i = 0; i < HF_N_CONTENT; i++)
			h->has_cf[i] = false;
	}
	buf_init(&tmp1, 1024 * 1024);
	buf_init(&tmp2, 1024 * 1024);
	mime_param_list_init(&pl);
	if (h->has_cf[HF_CT]) {
		bool ok = mime_parse_content_type(mime_bp(&h->cf[HF_CT]), buf_used(&h->cf[HF_CT]),
						  &tmp1, &tmp2, &pl);
		p->flags |= MIME_F_HAS_CT;
		p->type = arena_buf(ps, &tmp1);
		p->subtype = arena_buf(ps, &tmp2);
		if (pl.count > 0) {
			p->params = arena_buf(ps, &pl.b);
			p->nparams = pl.count;
		}
		const char *t = buf_used(&tmp1) ? mime_bp(&tmp1) : "";
		const char *s = buf_used(&tmp2) ? mime_bp(&tmp2) : "";
		if (mime_name_eq(t, buf_used(&tmp1), "text")) {
			p->flags |= MIME_F_TEXT;
		} else if (ok && mime_name_eq(t, buf_used(&tmp1), "multipart")) {
			p->flags |= MIME_F_MULTIPART;
			if (mime_name_eq(s, buf_used(&tmp2), "digest"))
				p->flags |= MIME_F_DIGEST;
		} else if (ok && mime_name_eq(t, buf_used(&tmp1), "message") &&
			   mime_name_eq(s, buf_used(&tmp2), "rfc822")) {
			p->flags |= MIME_F_RFC822;
		}
	} else if (digest_child) {
		p->flags |= MIME_F_RFC822;
	} else {
		p->flags |= MIME_F_TEXT;
	}
	if (h->has_cf[HF_CTE]) {
		buf_clear(&tmp1);
		mime_parse_token(mime_bp(&h->cf[HF_CTE]), buf_used(&h->cf[HF_CTE]), &tmp1);
		if (buf_used(&tmp1))
			p->enc = arena_buf(ps, &tmp1);
	}
	if (h->has_cf[HF_CID])
		p->id = arena_buf(ps, &h->cf[HF_CID]);
	if (h->has_cf[HF_CDESC])
		p->desc = arena_buf(ps, &h->cf[HF_CDESC]);
	if (h->has_cf[HF_CMD5])
		p->md5 = arena_buf(ps, &h->cf[HF_CMD5]);
	if (h->has_cf[HF_CLOC])
		p->loc = arena_buf(ps, &h->cf[HF_CLOC]);
	if (h->has_cf[HF_CDISP]) {
		buf_clear(&tmp1);
		mime_param_list_free(&pl);
		mime_param_list_init(&pl);
		if (mime_parse_disposition(mime_bp(&h->cf[HF_CDISP]), buf_used(&h->cf[HF_CDISP]),
					   &tmp1, &pl)) {
			p->disp = arena_buf(ps, &tmp1);
			if (pl.count > 0) {
				p->disp_params = arena_buf(ps, &pl.b);
				p->ndisp_params = pl.count;
			}
		}
	}
	if (h->has_cf[HF_CLANG]) {
		mime_param_list_free(&pl);
		mime_param_list_init(&pl);
		mime_parse_language(mime_bp(&h->cf[HF_CLANG]), buf_used(&h->cf[HF_CLANG]), &pl);
		if (pl.count > 0) {
			p->lang = arena_buf(ps, &pl.b);
			p->nlang = pl.count;
		}
	}
	if (p->flags & MIME_F_MESSAGE) {
		buf_clear(&tmp1);
		tmp1.max = MIME_RENDER_MAX;
		if (mime_envelope_render(&h->env, &tmp1) == 0)
			p->envelope = arena_buf(ps, &tmp1);
		else
			p->envelope = mime_arena_add(&ps->arena, "", 0);
		if (pi == 0 && h->env.has_references)
			p->references = arena_buf(ps, &h->env.references);
	}

	/* What the body holds. */
	if (p->flags & (MIME_F_MULTIPART | MIME_F_RFC822)) {
		bool room = ps->depth < ps->lim.max_depth && m->nparts < ps->lim.max_parts;
		if (!room) {
			p->flags |= MIME_F_OVERFLOW;
		} else if (p->flags & MIME_F_RFC822) {
			o->state = ST_RFC822;
			child_start(ps, ps->depth - 1, MIME_F_MESSAGE);
		} else {
			size_t blen;
			const char *b =
				p->nparams
					? mime_param_find(
						  m->parts[pi].params.off == MIME_NONE
							  ? ""
							  : mime_bp(&ps->arena.b) + p->params.off,
						  p->params.len, p->nparams, "boundary", &blen)
					: NULL;
			if (b && blen > MIME_BOUNDARY_MAX)
				blen = MIME_BOUNDARY_MAX;
			if (b) {
				o->boundary = malloc(blen ? blen : 1);
				if (o->boundary) {
					memcpy(o->boundary, b, blen);
					o->blen = blen;
					o->boundary_active = true;
					o->state = ST_MP_PREAMBLE;
				} else {
					ps->nomem = true;
				}
			}
		}
	}
	mime_param_list_free(&pl);
	buf_clear(&tmp1);
	buf_clear(&tmp2);
}

/* Close the top open part. At a delimiter (at_eof false) the line end before the delimiter
 * line belongs to the delimiter. */
static void part_close(struct mime_parser *ps, bool at_eof)
{
	unsigned k = ps->depth - 1;
	if (ps->stack[k].state == ST_HEADER) {
		/* a header cut short by a delimiter gives its last line end to the delimiter */
		bool give = !at_eof && ps->ppos > ps->m->parts[ps->stack[k].part].hdr_poff;
		if (give) {
			ps->ppos -= (uint64_t)ps->prev_eol;
			ps->vpos -= 2;
			ps->lfs--;
		}
		header_end(ps);
		if (give) {
			ps->ppos += (uint64_t)ps->prev_eol;
			ps->vpos += 2;
			ps->lfs++;
		}
		/* a message/rfc822 part whose header was cut short has just pushed its child */
		while (ps->depth - 1 > k)
			part_close(ps, at_eof);
	}
	struct mime_open *o = &ps->stack[k];
	struct mime_part *p = &ps->m->parts[o->part];
	if (!at_eof && ps->ppos > p->body_poff) {
		p->body_pend = ps->ppos - (uint64_t)ps->prev_eol;
		p->body_vend = ps->vpos - 2;
		p->lines = (uint32_t)(ps->lfs - o->lf_start - 1);
	} else {
		p->body_pend = ps->ppos;
		p->body_vend = ps->vpos;
		p->lines = (uint32_t)(ps->lfs - o->lf_start);
	}
	free(o->boundary);
	ps->depth--;
}

/* A delimiter check for a line starting at the current position. Returns true when the line
 * was a delimiter (and has been acted on). */
static bool check_boundary(struct mime_parser *ps, const struct mime_frag *fr)
{
	if (fr->len < 2 || fr->p[0] != '-' || fr->p[1] != '-')
		return false;
	/* Dovecot's rule: compare the line without its line end and without a trailing "--";
	 * of the open boundaries that prefix it, the longest wins, the innermost on a tie */
	const char *data = fr->p + 2;
	size_t size = fr->len - 2, find = size;
	if (fr->eol > 0) {
		find -= (size_t)fr->eol;
		if (find > 2 && data[find - 1] == '-' && data[find - 2] == '-')
			find -= 2;
	} else if (find > MIME_BOUNDARY_MAX + 4) {
		find = MIME_BOUNDARY_MAX + 4;
	}
	unsigned best = UINT32_MAX;
	for (unsigned k = ps->depth; k-- > 0;) {
		struct mime_open *o = &ps->stack[k];
		if (!o->boundary_active || o->blen > find ||
		    memcmp(data, o->boundary, o->blen) != 0)
			continue;
		if (best == UINT32_MAX || ps->stack[best].blen < o->blen) {
			best = k;
			if (o->blen == find)
				break;
		}
	}
	if (best == UINT32_MAX)
		return false;
	while (ps->depth > best + 1)
		part_close(ps, false);
	struct mime_open *o = &ps->stack[best];
	if (size >= o->blen + 2 && data[o->blen] == '-' && data[o->blen + 1] == '-') {
		o->boundary_active = false;
		o->state = ST_MP_EPILOGUE;
	} else {
		o->state = ST_MP_WAIT_CHILD;
	}
	return true;
}

static void process_frag(struct mime_parser *ps, const struct mime_frag *fr)
{
	struct mime_open *o = &ps->stack[ps->depth - 1];
	if (fr->start) {
		if (o->state == ST_MP_WAIT_CHILD) {
			o->state = ST_MP_CHILD;
			child_start(ps, ps->depth - 1, 0);
			o = &ps->stack[ps->depth - 1];
		}
		if (check_boundary(ps, fr))
			return;
	}
	if (o->state != ST_HEADER)
		return;
	if (fr->start && fr->len == (size_t)fr->eol && fr->eol > 0) {
		/* the empty line ends the header and belongs to it */
		ps->ppos += fr->len;
		ps->vpos += 2;
		ps->lfs++;
		header_end(ps); /* the body (and its line count) starts after this line */
		ps->ppos -= fr->len;
		ps->vpos -= 2;
		ps->lfs--;
		return;
	}
	if (fr->start) {
		if (fr->p[0] == ' ' || fr->p[0] == '\t') {
			hdr_append(ps, fr->p, fr->len);
		} else {
			hdr_finish_field(ps);
			hdr_start_field(ps, fr);
		}
	} else {
		hdr_append(ps, fr->p, fr->len);
	}
}

static void parser_free(struct mime_parser *ps)
{
	for (unsigned i = 0; i < ps->depth; i++)
		free(ps->stack[i].boundary);
	free(ps->stack);
	hdr_free(&ps->hdr);
	buf_clear(&ps->hdr.val);
	for (int i = 0; i < HF_N_CONTENT; i++)
		buf_clear(&ps->hdr.cf[i]);
}

/* Make the PREVIEW text (msg_preview.c) and keep it at the end of the arena, as the top
 * part's preview string. */
static int preview_attach(struct msg_parsed *m, const struct msg_source *src)
{
	struct buf pv;
	buf_init(&pv, MSG_PREVIEW_MAX_CHARS * 4);
	int r = msg_preview_build(src, m, &pv);
	size_t len = buf_used(&pv);
	if (r == 0 && (uint64_t)m->arena_len + len + 1 > UINT32_MAX)
		r = -ENOMEM;
	char *a = r == 0 ? realloc(m->arena, (size_t)m->arena_len + len + 1) : NULL;
	if (r == 0 && a == NULL)
		r = -ENOMEM;
	if (r == 0) {
		if (len > 0)
			memcpy(a + m->arena_len, mime_bp(&pv), len);
		a[m->arena_len + len] = '\0';
		m->arena = a;
		m->parts[0].preview.off = m->arena_len;
		m->parts[0].preview.len = (uint32_t)len;
		m->arena_len += (uint32_t)len + 1;
	}
	buf_clear(&pv);
	return r;
}

int msg_parse(const struct msg_source *src, const struct msg_parse_limits *limits,
	      struct msg_parsed **msg_r)
{
	struct mime_parser ps;
	struct mime_lines rd;
	struct mime_frag fr;
	int ret = 0;

	*msg_r = NULL;
	memset(&ps, 0, sizeof(ps));
	if (limits)
		ps.lim = *limits;
	else
		msg_parse_limits_default(&ps.lim);
	if (ps.lim.max_depth < 1)
		ps.lim.max_depth = 1;
	if (ps.lim.max_depth > MIME_DEPTH_MAX)
		ps.lim.max_depth = MIME_DEPTH_MAX; /* BODYSTRUCTURE rendering recurses per level */
	if (ps.lim.max_parts < 1)
		ps.lim.max_parts = 1;
	ps.m = calloc(1, sizeof(*ps.m));
	if (!ps.m)
		return -ENOMEM;
	buf_init(&ps.m->body, MIME_RENDER_MAX);
	buf_init(&ps.m->bodystructure, MIME_RENDER_MAX);
	buf_init(&ps.arena.b, MIME_ARENA_MAX);
	hdr_init(&ps.hdr, &ps.lim);

	memset(&rd, 0, sizeof(rd));
	rd.src = src;
	rd.line_start = true;
	if (src->mem) {
		rd.data = src->mem;
		rd.dlen = (size_t)src->size;
	} else {
		rd.wcap = mime_read_window;
		if (rd.wcap < 256 || rd.wcap > MSG_READ_CHUNK)
			rd.wcap = MSG_READ_CHUNK;
		rd.win = malloc(rd.wcap);
		if (!rd.win) {
			ret = -ENOMEM;
			goto out;
		}
		rd.data = rd.win;
	}

	uint32_t root = part_new(&ps, MIME_NONE);
	if (root == MIME_NONE || stack_push(&ps, root, true) < 0) {
		ret = -ENOMEM;
		goto out;
	}
	ps.m->parts[root].flags = MIME_F_MESSAGE;
	while ((ret = lines_next(&rd, &fr)) > 0) {
		process_frag(&ps, &fr);
		ps.ppos += fr.len;
		ps.vpos += fr.len + (fr.eol == 1 ? 1 : 0);
		if (fr.eol > 0) {
			ps.lfs++;
			ps.prev_eol = fr.eol;
		}
		if (ps.nomem)
			break;
	}
	if (ret < 0)
		goto out;
	if (ps.stack[ps.depth - 1].state == ST_MP_WAIT_CHILD) {
		ps.stack[ps.depth - 1].state = ST_MP_CHILD;
		child_start(&ps, ps.depth - 1, 0);
	}
	while (ps.depth > 0)
		part_close(&ps, true);
	if (ps.nomem) {
		ret = -ENOMEM;
		goto out;
	}
	ps.m->psize = ps.ppos;
	ps.m->vsize = ps.vpos;
	ps.m->arena_len = (uint32_t)buf_used(&ps.arena.b);
	ps.m->arena = ps.arena.b.data; /* off is always 0: the arena is never consumed */
	if (!ps.m->arena) {
		ps.m->arena = malloc(1);
		if (!ps.m->arena) {
			ret = -ENOMEM;
			goto out;
		}
	}
	ps.arena.b.data = NULL;
	if ((ret = preview_attach(ps.m, src)) < 0)
		goto out;
	if ((ret = mime_bodystructure_render(ps.m, 0, false, &ps.m->body)) < 0 ||
	    (ret = mime_bodystructure_render(ps.m, 0, true, &ps.m->bodystructure)) < 0)
		goto out;
	*msg_r = ps.m;
	ps.m = NULL;
out:
	free(rd.win);
	parser_free(&ps);
	buf_clear(&ps.arena.b);
	msg_parsed_free(&ps.m);
	return ret < 0 ? ret : 0;
}

void msg_parsed_free(struct msg_parsed **msgp)
{
	struct msg_parsed *m = *msgp;
	if (!m)
		return;
	free(m->parts);
	free(m->arena);
	buf_clear(&m->body);
	buf_clear(&m->bodystructure);
	free(m);
	*msgp = NULL;
}

uint64_t msg_parsed_size(const struct msg_parsed *msg)
{
	return msg->vsize;
}

unsigned msg_parsed_part_count(const struct msg_parsed *msg)
{
	return msg->nparts;
}

const char *msg_parsed_references(const struct msg_parsed *msg, size_t *len_r)
{
	struct mime_str s = msg->parts[0].references;
	*len_r = s.off == MIME_NONE ? 0 : s.len;
	return mime_str_ptr(msg, s);
}

const char *msg_parsed_envelope(const struct msg_parsed *msg, size_t *len_r)
{
	*len_r = msg->parts[0].envelope.len;
	return mime_str_ptr(msg, msg->parts[0].envelope);
}

const char *msg_parsed_body(const struct msg_parsed *msg, size_t *len_r)
{
	*len_r = buf_used(&msg->body);
	return mime_bp(&msg->body);
}

const char *msg_parsed_bodystructure(const struct msg_parsed *msg, size_t *len_r)
{
	*len_r = buf_used(&msg->bodystructure);
	return mime_bp(&msg->bodystructure);
}
