/* ENVELOPE (RFC 3501 §7.4.2): raw header strings and RFC 5322 address lists.
 *
 * Address parsing follows RFC 5322 §3.4 with Dovecot's recovery rules, so malformed headers
 * give the bytes a Dovecot server gives: a missing local part or domain is filled with
 * "MISSING_MAILBOX" / "MISSING_DOMAIN", a comment after an addr-spec is its display name, a
 * bare phrase without an address becomes a name with both placeholders, and a syntax error
 * that cannot be stepped over (an unclosed quote, comment or '<') gives one placeholder
 * address and ends the list. */
#include "mime_private.h"

#include <errno.h>
#include <string.h>

#include "msg_imapstr.h"

#define ENV_MISSING_MAILBOX "MISSING_MAILBOX"
#define ENV_MISSING_DOMAIN  "MISSING_DOMAIN"
#define ENV_STR_MAX         (1024 * 1024)

struct alex {
	const char *p, *end;
	bool error;
	struct buf *comment; /* the last comment's text, when not NULL */
};

static bool alex_is_atext(unsigned char c)
{
	if (c >= 0x80)
		return true;
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool alex_is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Skip white space and comments; returns true when data remains. */
static bool alex_cfws(struct alex *x)
{
	while (x->p < x->end) {
		if (alex_is_ws(*x->p)) {
			x->p++;
			continue;
		}
		if (*x->p != '(')
			return true;
		int depth = 0;
		const char *start = x->p + 1;
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
		if (x->comment) {
			/* the comment's text, unescaped, folding removed */
			buf_clear(x->comment);
			for (const char *c = start; c < x->p; c++) {
				if (*c == '\r' || *c == '\n')
					continue;
				if (*c == '\\' && c + 1 < x->p)
					c++;
				buf_append(x->comment, c, 1);
			}
		}
		x->p++;
	}
	return false;
}

static bool alex_quoted(struct alex *x, struct buf *out)
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
		buf_append(out, &c, 1);
	}
	x->error = true;
	return false;
}

/* phrase = 1*word (atoms may hold '.', obs-phrase); words joined by one space. Returns the
 * number of words. */
static unsigned alex_phrase(struct alex *x, struct buf *out)
{
	unsigned words = 0;
	while (alex_cfws(x)) {
		unsigned char c = (unsigned char)*x->p;
		if (c == '"') {
			if (buf_used(out) > 0)
				buf_append(out, " ", 1);
			if (!alex_quoted(x, out))
				return words;
		} else if (alex_is_atext(c) || c == '.') {
			if (buf_used(out) > 0)
				buf_append(out, " ", 1);
			const char *s = x->p;
			while (x->p < x->end &&
			       (alex_is_atext((unsigned char)*x->p) || *x->p == '.'))
				x->p++;
			buf_append(out, s, (size_t)(x->p - s));
		} else {
			break;
		}
		words++;
	}
	return words;
}

/* local-part = dot-atom / quoted-string (obs: words joined with '.'). */
static void alex_local_part(struct alex *x, struct buf *out)
{
	for (;;) {
		if (!alex_cfws(x))
			return;
		if (*x->p == '"') {
			if (!alex_quoted(x, out))
				return;
		} else if (alex_is_atext((unsigned char)*x->p)) {
			const char *s = x->p;
			while (x->p < x->end && alex_is_atext((unsigned char)*x->p))
				x->p++;
			buf_append(out, s, (size_t)(x->p - s));
		} else {
			return;
		}
		if (!alex_cfws(x) || *x->p != '.')
			return;
		x->p++;
		buf_append(out, ".", 1);
	}
}

/* domain after '@' (x->p at '@'). */
static void alex_domain(struct alex *x, struct buf *out)
{
	x->p++;
	if (!alex_cfws(x))
		return;
	if (*x->p == '[') {
		const char *s = x->p;
		while (x->p < x->end && *x->p != ']')
			x->p++;
		if (x->p >= x->end) {
			x->error = true;
			return;
		}
		x->p++;
		buf_append(out, s, (size_t)(x->p - s));
		return;
	}
	for (;;) {
		const char *s = x->p;
		while (x->p < x->end && alex_is_atext((unsigned char)*x->p))
			x->p++;
		buf_append(out, s, (size_t)(x->p - s));
		if (x->p == s || !alex_cfws(x) || *x->p != '.')
			return;
		x->p++;
		buf_append(out, ".", 1);
		if (!alex_cfws(x))
			return;
	}
}

struct addr_out {
	struct buf *out;
	unsigned count;
	int err;
};

static void emit_field(struct addr_out *o, const struct buf *b, bool set, const char *missing,
		       bool human)
{
	int ret;
	if (set && buf_used(b) > 0)
		ret = human ? msg_imapstr_for_humans(o->out, buf_peek(b), buf_used(b))
			    : msg_imapstr_string(o->out, buf_peek(b), buf_used(b));
	else if (missing)
		ret = msg_imapstr_string(o->out, missing, strlen(missing));
	else
		ret = buf_append(o->out, "NIL", 3);
	if (ret < 0)
		o->err = ret;
}

static void emit_addr(struct addr_out *o, const struct buf *name, bool has_name,
		      const struct buf *route, bool has_route, const struct buf *mbox,
		      const struct buf *domain)
{
	if (o->count++ == 0 && buf_append(o->out, "(", 1) < 0)
		o->err = -ENOBUFS;
	buf_append(o->out, "(", 1);
	emit_field(o, name, has_name, NULL, true);
	buf_append(o->out, " ", 1);
	emit_field(o, route, has_route, NULL, false);
	buf_append(o->out, " ", 1);
	emit_field(o, mbox, true, ENV_MISSING_MAILBOX, false);
	buf_append(o->out, " ", 1);
	emit_field(o, domain, true, ENV_MISSING_DOMAIN, false);
	if (buf_append(o->out, ")", 1) < 0)
		o->err = -ENOBUFS;
}

static void emit_group(struct addr_out *o, const struct buf *name)
{
	if (o->count++ == 0)
		buf_append(o->out, "(", 1);
	if (name) {
		buf_append(o->out, "(NIL NIL ", 9);
		emit_field(o, name, true, NULL, false);
		if (buf_append(o->out, " NIL)", 5) < 0)
			o->err = -ENOBUFS;
	} else if (buf_append(o->out, "(NIL NIL NIL NIL)", 17) < 0) {
		o->err = -ENOBUFS;
	}
}

struct addr_bufs {
	struct buf name, route, mbox, domain, comment;
};

static void addr_bufs_clear(struct addr_bufs *b)
{
	buf_clear(&b->name);
	buf_clear(&b->route);
	buf_clear(&b->mbox);
	buf_clear(&b->domain);
	buf_clear(&b->comment);
}

/* One mailbox. Returns false when the list must end here. */
static bool parse_mailbox(struct alex *x, struct addr_out *o, struct addr_bufs *b)
{
	const char *start = x->p;
	addr_bufs_clear(b);
	unsigned words = alex_phrase(x, &b->name);
	if (!x->error && alex_cfws(x) && *x->p == '<') {
		/* name-addr: [phrase] "<" [route ":"] [local-part "@" domain] ">" */
		x->p++;
		bool has_route = false;
		if (alex_cfws(x) && *x->p == '@') {
			while (x->p < x->end && *x->p == '@') {
				if (buf_used(&b->route) > 0)
					buf_append(&b->route, ",", 1);
				buf_append(&b->route, "@", 1);
				alex_domain(x, &b->route);
				if (!alex_cfws(x) || *x->p != ',')
					break;
				x->p++;
				alex_cfws(x);
			}
			has_route = true;
			if (x->p < x->end && *x->p == ':')
				x->p++;
		}
		if (alex_cfws(x) && *x->p != '>') {
			alex_local_part(x, &b->mbox);
			if (alex_cfws(x) && *x->p == '@')
				alex_domain(x, &b->domain);
		}
		bool closed = alex_cfws(x) && *x->p == '>';
		if (x->error || !closed) {
			emit_addr(o, &b->name, words > 0, &b->route, has_route, &b->mbox,
				  &b->domain);
			return false;
		}
		x->p++;
		emit_addr(o, &b->name, words > 0 && buf_used(&b->name) > 0, &b->route, has_route,
			  &b->mbox, &b->domain);
		return true;
	}
	/* addr-spec, possibly broken */
	x->p = start;
	x->error = false;
	addr_bufs_clear(b);
	x->comment = &b->comment;
	alex_cfws(x);
	bool quoted = x->p < x->end && *x->p == '"';
	alex_local_part(x, &b->mbox);
	if (x->error) {
		x->comment = NULL;
		buf_clear(&b->mbox);
		emit_addr(o, &b->name, false, &b->route, false, &b->mbox, &b->domain);
		return false;
	}
	if (alex_cfws(x) && *x->p == '@') {
		alex_domain(x, &b->domain); /* a comment after it is the display name */
		alex_cfws(x);
		x->comment = NULL;
		emit_addr(o, &b->comment, buf_used(&b->comment) > 0, &b->route, false, &b->mbox,
			  &b->domain);
		return !x->error;
	}
	x->comment = NULL;
	struct buf rest;
	buf_init(&rest, ENV_STR_MAX);
	buf_append(&rest, buf_peek(&b->mbox), buf_used(&b->mbox));
	unsigned more = alex_phrase(x, &rest);
	bool ok = true;
	if (more > 0) {
		buf_clear(&b->mbox);
		emit_addr(o, &rest, true, &b->route, false, &b->mbox, &b->domain);
	} else if (quoted) {
		emit_addr(o, &b->mbox, true, &b->route, false, &b->domain, &b->domain);
	} else if (buf_used(&b->mbox) > 0) {
		emit_addr(o, &b->comment, buf_used(&b->comment) > 0, &b->route, false, &b->mbox,
			  &b->domain);
	} else {
		emit_addr(o, &b->comment, false, &b->route, false, &b->mbox, &b->domain);
		ok = false;
	}
	buf_clear(&rest);
	return ok && !x->error;
}

static bool parse_address(struct alex *x, struct addr_out *o, struct addr_bufs *b)
{
	const char *start = x->p;
	struct buf gname;
	buf_init(&gname, ENV_STR_MAX);
	unsigned words = alex_phrase(x, &gname);
	if (!x->error && words > 0 && alex_cfws(x) && *x->p == ':') {
		/* group: display-name ":" [mailbox-list] ";" */
		x->p++;
		emit_group(o, &gname);
		buf_clear(&gname);
		bool ok = true;
		while (alex_cfws(x) && *x->p != ';') {
			if (*x->p == ',') {
				x->p++;
				continue;
			}
			if (!parse_mailbox(x, o, b)) {
				ok = false;
				break;
			}
			if (!alex_cfws(x) || *x->p != ',')
				break;
			x->p++;
		}
		if (ok && x->p < x->end && *x->p == ';')
			x->p++;
		emit_group(o, NULL);
		return ok;
	}
	buf_clear(&gname);
	x->p = start;
	x->error = false;
	return parse_mailbox(x, o, b);
}

/* Render one or more header values as one address list. */
static int address_list(const char *const *values, const size_t *lens, unsigned n, struct buf *out)
{
	struct addr_out o = {out, 0, 0};
	struct addr_bufs b;
	buf_init(&b.name, ENV_STR_MAX);
	buf_init(&b.route, ENV_STR_MAX);
	buf_init(&b.mbox, ENV_STR_MAX);
	buf_init(&b.domain, ENV_STR_MAX);
	buf_init(&b.comment, ENV_STR_MAX);
	for (unsigned i = 0; i < n; i++) {
		struct alex x = {values[i], values[i] + lens[i], false, NULL};
		while (alex_cfws(&x)) {
			if (*x.p == ',') {
				x.p++;
				continue;
			}
			if (!parse_address(&x, &o, &b))
				break;
			if (!alex_cfws(&x) || *x.p != ',')
				break;
			x.p++;
		}
	}
	addr_bufs_clear(&b);
	int ret = o.err;
	if (ret == 0)
		ret = o.count ? buf_append(out, ")", 1) : buf_append(out, "NIL", 3);
	return ret;
}

int mime_address_render(const char *const *values, const size_t *lens, unsigned n, struct buf *out)
{
	return address_list(values, lens, n, out);
}

/* Split a '\0'-joined buffer into values and render them as one list. */
static int render_addr_field(const struct mime_env_fields *f, int which, struct buf *out)
{
	if (!f->has_addr[which])
		return buf_append(out, "NIL", 3);
	const struct buf *b = &f->addr[which];
	const char *p = buf_used(b) ? buf_peek(b) : "";
	const char *end = p + buf_used(b);
	const char *vals[64];
	size_t lens[64];
	unsigned n = 0;
	for (;;) {
		const char *z = memchr(p, '\0', (size_t)(end - p));
		const char *e = z ? z : end;
		if (n < 64) {
			vals[n] = p;
			lens[n++] = (size_t)(e - p);
		}
		if (!z)
			break;
		p = z + 1;
	}
	return address_list(vals, lens, n, out);
}

int mime_envelope_render(const struct mime_env_fields *f, struct buf *out)
{
	struct buf lists[6];
	int ret = 0;
	for (int i = 0; i < 6; i++) {
		buf_init(&lists[i], out->max);
		if (ret == 0)
			ret = render_addr_field(f, i, &lists[i]);
	}
	if (ret < 0)
		goto out;
#define APPEND(s, n)                                                                               \
	do {                                                                                       \
		if ((ret = buf_append(out, (s), (n))) < 0)                                         \
			goto out;                                                                  \
	} while (0)
#define LIST(i) APPEND(buf_peek(&lists[i]), buf_used(&lists[i]))
	APPEND("(", 1);
	if (f->has_date)
		ret = msg_imapstr_nstring_nolf(out, buf_used(&f->date) ? buf_peek(&f->date) : "",
					       buf_used(&f->date));
	else
		ret = buf_append(out, "NIL", 3);
	if (ret < 0)
		goto out;
	APPEND(" ", 1);
	if (f->has_subject)
		ret = msg_imapstr_for_humans(out,
					     buf_used(&f->subject) ? buf_peek(&f->subject) : "",
					     buf_used(&f->subject));
	else
		ret = buf_append(out, "NIL", 3);
	if (ret < 0)
		goto out;
	/* sender and reply-to default to from when absent or empty (RFC 3501 §7.4.2) */
	APPEND(" ", 1);
	LIST(MIME_ENV_FROM);
	for (int i = MIME_ENV_SENDER; i <= MIME_ENV_REPLY_TO; i++) {
		APPEND(" ", 1);
		bool empty = memcmp(buf_peek(&lists[i]), "NIL", 3) == 0;
		if (empty)
			LIST(MIME_ENV_FROM);
		else
			LIST(i);
	}
	for (int i = MIME_ENV_TO; i <= MIME_ENV_BCC; i++) {
		APPEND(" ", 1);
		LIST(i);
	}
	APPEND(" ", 1);
	if (f->has_in_reply_to)
		ret = msg_imapstr_nstring_nolf(
			out, buf_used(&f->in_reply_to) ? buf_peek(&f->in_reply_to) : "",
			buf_used(&f->in_reply_to));
	else
		ret = buf_append(out, "NIL", 3);
	if (ret < 0)
		goto out;
	APPEND(" ", 1);
	if (f->has_message_id)
		ret = msg_imapstr_nstring_nolf(
			out, buf_used(&f->message_id) ? buf_peek(&f->message_id) : "",
			buf_used(&f->message_id));
	else
		ret = buf_append(out, "NIL", 3);
	if (ret < 0)
		goto out;
	APPEND(")", 1);
#undef LIST
#undef APPEND
out:
	for (int i = 0; i < 6; i++)
		buf_clear(&lists[i]);
	return ret;
}
