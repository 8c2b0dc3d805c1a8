/* ENVELOPE (RFC 3501 §7.4.2): raw header strings and RFC 5322 address lists.
 *
 * Address parsing follows RFC 5322 §3.4 with the recovery rules of Dovecot 2.3's
 * message-address.c, so malformed headers give the bytes a Dovecot server gives: a missing
 * local part or domain is "MISSING_MAILBOX" / "MISSING_DOMAIN", an angle address that does
 * not close before more data has the domain "SYNTAX_ERROR", a bad source route is
 * "INVALID_ROUTE", a comment after an addr-spec is its display name, words without an
 * address become a display name, an empty list element is a placeholder address, and the
 * list ends at the first address not followed by ','. */
#include "mime_private.h"

#include <errno.h>
#include <string.h>

#include "msg_imapstr.h"

#define ENV_MISSING_MAILBOX "MISSING_MAILBOX"
#define ENV_MISSING_DOMAIN  "MISSING_DOMAIN"
#define ENV_STR_MAX         (1024 * 1024)

/* The lexer: every function returns 1 when data remains after it (white space and comments
 * after a token are skipped), 0 at the end, -1 on a syntax error (RFC 5322 §3.2). */
struct alex {
	const char *p, *end;
	struct buf *comment; /* the text of the last comment skipped */
};

static bool alex_is_atext(unsigned char c)
{
	if (c >= 0x80)
		return true;
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool alex_at(const struct alex *x, char c)
{
	return x->p < x->end && *x->p == c;
}

static int alex_comment(struct alex *x)
{
	int level = 1;
	const char *start = ++x->p;
	buf_clear(x->comment);
	for (; x->p < x->end; x->p++) {
		if (*x->p == '(') {
			level++;
		} else if (*x->p == ')') {
			if (--level == 0) {
				buf_append(x->comment, start, (size_t)(x->p - start));
				x->p++;
				return x->p < x->end;
			}
		} else if (*x->p == '\\') {
			/* the backslash goes, the octet after it stays */
			buf_append(x->comment, start, (size_t)(x->p - start));
			start = x->p + 1;
			if (++x->p >= x->end)
				return -1;
		}
	}
	return -1;
}

static int alex_skip(struct alex *x)
{
	while (x->p < x->end) {
		if (*x->p == ' ' || *x->p == '\t' || *x->p == '\r' || *x->p == '\n') {
			x->p++;
		} else if (*x->p == '(') {
			if (alex_comment(x) < 0)
				return -1;
		} else {
			break;
		}
	}
	return x->p < x->end;
}

/* quoted-string at '"': unescaped, folding line ends dropped. */
static int alex_quoted(struct alex *x, struct buf *out)
{
	const char *start = ++x->p;
	for (; x->p < x->end; x->p++) {
		if (*x->p == '"') {
			buf_append(out, start, (size_t)(x->p - start));
			x->p++;
			return alex_skip(x);
		}
		if (*x->p == '\n') {
			size_t len = (size_t)(x->p - start);
			if (len > 0 && start[len - 1] == '\r')
				len--;
			buf_append(out, start, len);
			start = x->p + 1;
		} else if (*x->p == '\\') {
			if (++x->p >= x->end)
				return -1;
			buf_append(out, start, (size_t)(x->p - 1 - start));
			start = x->p;
		}
	}
	return -1;
}

/* dot-atom, with white space allowed around the dots (RFC 822). */
static int alex_dot_atom(struct alex *x, struct buf *out)
{
	int ret;
	if (x->p >= x->end || !alex_is_atext((unsigned char)*x->p))
		return -1;
	const char *start = x->p++;
	while (x->p < x->end) {
		if (alex_is_atext((unsigned char)*x->p)) {
			x->p++;
			continue;
		}
		buf_append(out, start, (size_t)(x->p - start));
		if ((ret = alex_skip(x)) <= 0)
			return ret;
		if (*x->p != '.')
			return 1;
		x->p++;
		buf_append(out, ".", 1);
		if ((ret = alex_skip(x)) <= 0)
			return ret;
		start = x->p;
	}
	buf_append(out, start, (size_t)(x->p - start));
	return 0;
}

/* atext and '.', possibly none of them (so a phrase may be empty). */
static int alex_atom_or_dot(struct alex *x, struct buf *out)
{
	const char *start = x->p;
	while (x->p < x->end && (alex_is_atext((unsigned char)*x->p) || *x->p == '.'))
		x->p++;
	buf_append(out, start, (size_t)(x->p - start));
	return x->p < x->end ? alex_skip(x) : 0;
}

/* phrase = 1*word / obs-phrase; words joined by one space. */
static int alex_phrase(struct alex *x, struct buf *out)
{
	int ret;
	if (x->p >= x->end)
		return 0;
	if (*x->p == '.')
		return -1;
	for (;;) {
		ret = *x->p == '"' ? alex_quoted(x, out) : alex_atom_or_dot(x, out);
		if (ret <= 0)
			return ret;
		if (!alex_is_atext((unsigned char)*x->p) && *x->p != '"' && *x->p != '.')
			break;
		buf_append(out, " ", 1);
	}
	return alex_skip(x);
}

/* domain at '@': dot-atom or a [domain-literal] kept as written. */
static int alex_domain(struct alex *x, struct buf *out)
{
	x->p++;
	if (alex_skip(x) <= 0)
		return -1;
	if (*x->p != '[')
		return alex_dot_atom(x, out);
	const char *start = x->p;
	for (; x->p < x->end; x->p++) {
		if (*x->p == '\\') {
			if (++x->p >= x->end)
				break;
		} else if (*x->p == ']') {
			x->p++;
			buf_append(out, start, (size_t)(x->p - start));
			return alex_skip(x);
		}
	}
	return -1;
}

/* One address being built; a field is NIL until set. */
struct afield {
	struct buf b;
	bool set;
};

struct aparser {
	struct alex x;
	struct buf str, comment;
	struct afield name, route, mailbox, domain;
	struct buf *out;
	unsigned count;
	int err;
};

static void afield_set(struct afield *f, const char *s, size_t len)
{
	buf_clear(&f->b);
	buf_append(&f->b, s, len);
	f->set = true;
}

static void afield_from(struct afield *f, const struct buf *b)
{
	afield_set(f, buf_used(b) ? mime_bp(b) : "", buf_used(b));
}

static void emit(struct aparser *a, const struct afield *f, bool human)
{
	int ret;
	const char *s = buf_used(&f->b) ? mime_bp(&f->b) : "";
	if (!f->set)
		ret = buf_append(a->out, "NIL", 3);
	else if (human)
		ret = msg_imapstr_for_humans(a->out, s, buf_used(&f->b));
	else
		ret = msg_imapstr_string(a->out, s, buf_used(&f->b));
	if (ret < 0)
		a->err = ret;
}

/* Append the address built so far to the list and start a new one. */
static void add_address(struct aparser *a)
{
	if (a->count++ == 0 && buf_append(a->out, "(", 1) < 0)
		a->err = -ENOBUFS;
	buf_append(a->out, "(", 1);
	emit(a, &a->name, true);
	buf_append(a->out, " ", 1);
	emit(a, &a->route, false);
	buf_append(a->out, " ", 1);
	emit(a, &a->mailbox, false);
	buf_append(a->out, " ", 1);
	emit(a, &a->domain, false);
	if (buf_append(a->out, ")", 1) < 0)
		a->err = -ENOBUFS;
	a->name.set = a->route.set = a->mailbox.set = a->domain.set = false;
}

/* A missing local part or domain gets Dovecot's placeholder. */
static void add_fixed_address(struct aparser *a)
{
	if (!a->mailbox.set)
		afield_set(&a->mailbox, ENV_MISSING_MAILBOX, strlen(ENV_MISSING_MAILBOX));
	if (!a->domain.set || buf_used(&a->domain.b) == 0)
		afield_set(&a->domain, ENV_MISSING_DOMAIN, strlen(ENV_MISSING_DOMAIN));
	add_address(a);
}

static int parse_local_part(struct aparser *a)
{
	int ret;
	buf_clear(&a->str);
	ret = *a->x.p == '"' ? alex_quoted(&a->x, &a->str) : alex_dot_atom(&a->x, &a->str);
	if (ret < 0)
		return -1;
	afield_from(&a->mailbox, &a->str);
	return ret;
}

static int parse_domain(struct aparser *a)
{
	int ret;
	buf_clear(&a->str);
	if ((ret = alex_domain(&a->x, &a->str)) < 0)
		return -1;
	afield_from(&a->domain, &a->str);
	return ret;
}

/* obs-domain-list = "@" domain *(*(CFWS / ",") [CFWS] "@" domain) */
static int parse_domain_list(struct aparser *a)
{
	int ret;
	buf_clear(&a->str);
	for (;;) {
		if (a->x.p >= a->x.end)
			return 0;
		if (*a->x.p != '@')
			break;
		if (buf_used(&a->str) > 0)
			buf_append(&a->str, ",", 1);
		buf_append(&a->str, "@", 1);
		if ((ret = alex_domain(&a->x, &a->str)) <= 0)
			return ret;
		while (alex_skip(&a->x) > 0 && *a->x.p == ',')
			a->x.p++;
	}
	afield_from(&a->route, &a->str);
	return 1;
}

/* "<" [ "@" route ":" ] local-part "@" domain ">" */
static int parse_angle_addr(struct aparser *a)
{
	a->x.p++;
	if (alex_skip(&a->x) <= 0)
		return -1;
	if (*a->x.p == '@') {
		if (parse_domain_list(a) > 0 && alex_at(&a->x, ':')) {
			a->x.p++;
		} else {
			afield_set(&a->route, "INVALID_ROUTE", 13);
			if (a->x.p >= a->x.end)
				return -1;
		}
		if (alex_skip(&a->x) <= 0)
			return -1;
	}
	if (*a->x.p != '>') {
		if (parse_local_part(a) <= 0)
			return -1;
		if (*a->x.p == '@' && parse_domain(a) <= 0)
			return -1;
	}
	if (!alex_at(&a->x, '>'))
		return -1;
	a->x.p++;
	return alex_skip(&a->x);
}

static int parse_name_addr(struct aparser *a)
{
	buf_clear(&a->str);
	if (alex_phrase(&a->x, &a->str) <= 0 || *a->x.p != '<')
		return -1;
	if (buf_used(&a->str) > 0)
		afield_from(&a->name, &a->str);
	if (parse_angle_addr(a) < 0)
		afield_set(&a->domain, "SYNTAX_ERROR", 12);
	return a->x.p < a->x.end;
}

static int parse_addr_spec(struct aparser *a, bool *invalid)
{
	int ret, ret2 = -2;
	buf_clear(&a->comment);
	bool quoted = *a->x.p == '"';
	ret = parse_local_part(a);
	if (ret <= 0)
		*invalid = true;
	if (ret != 0 && alex_at(&a->x, '@')) {
		ret2 = parse_domain(a);
		if (ret2 <= 0)
			ret = ret2;
	}
	if (buf_used(&a->comment) > 0) {
		/* "user@example.com (Name)": the comment is the name */
		afield_from(&a->name, &a->comment);
	} else if (ret2 == -2) {
		/* no "@domain": a lone word is a mailbox, but words after it make the whole a
		 * display name */
		buf_append(&a->str, " ", 1);
		size_t before = buf_used(&a->str);
		(void)alex_phrase(&a->x, &a->str);
		if (buf_used(&a->str) != before) {
			a->mailbox.set = false;
			afield_from(&a->name, &a->str);
		} else if (!quoted) {
			afield_set(&a->domain, "", 0);
		}
		*invalid = true;
		ret = -1;
	}
	return ret;
}

static int parse_mailbox(struct aparser *a)
{
	const char *start = a->x.p;
	bool invalid = false;
	int ret = parse_name_addr(a);
	if (ret < 0) {
		a->x.p = start;
		ret = parse_addr_spec(a, &invalid);
		if (invalid && !a->name.set && a->mailbox.set && !a->domain.set) {
			/* a quoted word alone is a name, not a mailbox */
			afield_from(&a->name, &a->mailbox.b);
			a->mailbox.set = false;
		}
	}
	add_fixed_address(a);
	return ret;
}

/* group = display-name ":" [mailbox-list / CFWS] ";" [CFWS] */
static int parse_group(struct aparser *a)
{
	int ret;
	buf_clear(&a->str);
	if (alex_phrase(&a->x, &a->str) <= 0 || *a->x.p != ':')
		return -1;
	a->x.p++;
	ret = alex_skip(&a->x);
	afield_from(&a->mailbox, &a->str);
	add_address(a); /* (NIL NIL "name" NIL) starts the group */
	if (ret > 0 && *a->x.p != ';') {
		for (;;) {
			(void)parse_mailbox(a); /* a broken member does not end the group */
			if (!alex_at(&a->x, ','))
				break;
			a->x.p++;
			if (alex_skip(&a->x) <= 0) {
				ret = -1;
				break;
			}
		}
	}
	if (ret >= 0) {
		if (!alex_at(&a->x, ';')) {
			ret = -1;
		} else {
			a->x.p++;
			ret = alex_skip(&a->x);
		}
	}
	add_address(a); /* (NIL NIL NIL NIL) ends it */
	return ret == 0 ? 0 : 1;
}

static int parse_address(struct aparser *a)
{
	const char *start = a->x.p;
	int ret = parse_group(a);
	if (ret < 0) {
		a->x.p = start;
		ret = parse_mailbox(a);
	}
	return ret;
}

static void parse_address_list(struct aparser *a)
{
	int ret;
	for (;;) {
		if ((ret = parse_address(a)) == 0)
			break;
		if (!alex_at(&a->x, ','))
			break;
		a->x.p++;
		if ((ret = alex_skip(&a->x)) <= 0) {
			if (ret < 0)
				add_fixed_address(a); /* ends with garbage */
			break;
		}
	}
}

/* Render one or more header values as one address list. */
static int address_list(const char *const *values, const size_t *lens, unsigned n, struct buf *out)
{
	struct aparser a;
	memset(&a, 0, sizeof(a));
	a.out = out;
	buf_init(&a.str, ENV_STR_MAX);
	buf_init(&a.comment, ENV_STR_MAX);
	buf_init(&a.name.b, ENV_STR_MAX);
	buf_init(&a.route.b, ENV_STR_MAX);
	buf_init(&a.mailbox.b, ENV_STR_MAX);
	buf_init(&a.domain.b, ENV_STR_MAX);
	for (unsigned i = 0; i < n && a.err == 0; i++) {
		a.x.p = values[i];
		a.x.end = values[i] + lens[i];
		a.x.comment = &a.comment;
		if (alex_skip(&a.x) > 0)
			parse_address_list(&a);
	}
	buf_clear(&a.str);
	buf_clear(&a.comment);
	buf_clear(&a.name.b);
	buf_clear(&a.route.b);
	buf_clear(&a.mailbox.b);
	buf_clear(&a.domain.b);
	int ret = a.err;
	if (ret == 0)
		ret = a.count ? buf_append(out, ")", 1) : buf_append(out, "NIL", 3);
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
	const char *p = buf_used(b) ? mime_bp(b) : "";
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
#define LIST(i) APPEND(mime_bp(&lists[i]), buf_used(&lists[i]))
	APPEND("(", 1);
	if (f->has_date)
		ret = msg_imapstr_nstring_nolf(out, buf_used(&f->date) ? mime_bp(&f->date) : "",
					       buf_used(&f->date));
	else
		ret = buf_append(out, "NIL", 3);
	if (ret < 0)
		goto out;
	APPEND(" ", 1);
	if (f->has_subject)
		ret = msg_imapstr_for_humans(out, buf_used(&f->subject) ? mime_bp(&f->subject) : "",
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
		bool empty = memcmp(mime_bp(&lists[i]), "NIL", 3) == 0;
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
			out, buf_used(&f->in_reply_to) ? mime_bp(&f->in_reply_to) : "",
			buf_used(&f->in_reply_to));
	else
		ret = buf_append(out, "NIL", 3);
	if (ret < 0)
		goto out;
	APPEND(" ", 1);
	if (f->has_message_id)
		ret = msg_imapstr_nstring_nolf(
			out, buf_used(&f->message_id) ? mime_bp(&f->message_id) : "",
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
