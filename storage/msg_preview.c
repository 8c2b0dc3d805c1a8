/* msg_preview — the RFC 8970 PREVIEW text of a message, made once while parsing and kept in
 * the parsed message (and so in its cache blob).
 *
 * Which text: the first text/plain leaf of the top message (text without a Content-Type
 * counts as text/plain), else its first text/html leaf with the markup removed; parts
 * inside an attached message (message/rfc822) and parts with "Content-Disposition:
 * attachment" are not the message's own text (a message that is only a forwarded one has the
 * empty preview). The part is decoded like SEARCH text
 * (transfer encoding undone, charset converted to UTF-8; unknown charsets and bad octets
 * become U+FFFD), at most PREVIEW_INPUT_MAX octets of it are looked at, in text/plain lines
 * quoting another message ("> ...") are left out (as Dovecot's snippets do), white space and
 * control characters are collapsed into single spaces, the ends trimmed, and the result cut
 * to MSG_PREVIEW_MAX_CHARS characters on a UTF-8 boundary. A message without such a part has
 * the empty preview.
 *
 * HTML: tags and comments are dropped, <style>, <script>, <head> and <title> with what they
 * hold, block-level tags (p, div, br, li, tr, h1..h6, ...) count as white space, and the
 * character references &amp; &lt; &gt; &quot; &apos; &nbsp; &#N; &#xH; are decoded (other
 * references are kept as written).
 */
#include "mime_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PREVIEW_INPUT_MAX (64 * 1024)

struct collect {
	struct buf b;
};

static int collect_cb(void *ctx, const char *utf8, size_t len)
{
	struct collect *c = ctx;
	size_t room = PREVIEW_INPUT_MAX - buf_used(&c->b);
	if (len > room)
		len = room;
	int r = buf_append(&c->b, utf8, len);
	if (r < 0)
		return r;
	return buf_used(&c->b) >= PREVIEW_INPUT_MAX ? 1 : 0;
}

static bool str_is(const struct msg_parsed *m, struct mime_str s, const char *want)
{
	const char *p = mime_str_ptr(m, s);
	return p != NULL && strlen(want) == s.len && strncasecmp(p, want, s.len) == 0;
}

/* Is part I the top message's own text (not inside an attached message, no attachment)? */
static bool own_text(const struct msg_parsed *m, uint32_t i)
{
	const struct mime_part *p = &m->parts[i];
	if (p->first_child != MIME_NONE || !(p->flags & MIME_F_TEXT))
		return false;
	if (str_is(m, p->disp, "attachment"))
		return false;
	for (uint32_t up = p->parent; up != MIME_NONE; up = m->parts[up].parent)
		if (up != 0 && (m->parts[up].flags & MIME_F_MESSAGE))
			return false;
	return !(i != 0 && (p->flags & MIME_F_MESSAGE));
}

/* Append code point CP as UTF-8. */
static size_t put_utf8(char *o, uint32_t cp)
{
	if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		cp = 0xfffd;
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* A character reference at s[0] == '&': its UTF-8 into o (at most 4 octets) and the length
 * it takes in s; 0 when it is not one we decode. */
static size_t html_entity(const char *s, size_t len, char *o, size_t *out_r)
{
	static const struct {
		const char *name;
		uint32_t cp;
	} names[] = {{"amp", '&'},  {"lt", '<'},    {"gt", '>'},
		     {"quot", '"'}, {"apos", '\''}, {"nbsp", 0xa0}};
	size_t end = 1;
	while (end < len && end < 12 && s[end] != ';')
		end++;
	if (end >= len || s[end] != ';')
		return 0;
	uint32_t cp = 0;
	if (s[1] == '#') {
		bool hex = end > 2 && (s[2] == 'x' || s[2] == 'X');
		size_t i = hex ? 3 : 2;
		if (i >= end)
			return 0;
		for (; i < end; i++) {
			char c = s[i];
			unsigned d;
			if (c >= '0' && c <= '9')
				d = (unsigned)(c - '0');
			else if (hex && c >= 'a' && c <= 'f')
				d = (unsigned)(c - 'a' + 10);
			else if (hex && c >= 'A' && c <= 'F')
				d = (unsigned)(c - 'A' + 10);
			else
				return 0;
			cp = cp * (hex ? 16 : 10) + d;
			if (cp > 0x10ffff)
				cp = 0x110000;
		}
	} else {
		size_t k;
		for (k = 0; k < sizeof(names) / sizeof(names[0]); k++)
			if (strlen(names[k].name) == end - 1 &&
			    strncmp(s + 1, names[k].name, end - 1) == 0)
				break;
		if (k == sizeof(names) / sizeof(names[0]))
			return 0;
		cp = names[k].cp;
	}
	*out_r = put_utf8(o, cp);
	return end + 1;
}

/* Tag name at s (after '<' and an optional '/'), lower-cased into name (size 16). */
static void tag_name(const char *s, size_t len, char *name)
{
	size_t n = 0;
	while (n < len && n < 15 &&
	       ((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
		(s[n] >= '0' && s[n] <= '9'))) {
		name[n] = (char)(s[n] | 0x20);
		n++;
	}
	name[n] = '\0';
}

/* Elements whose content is not text. */
static bool tag_hides(const char *name)
{
	return strcmp(name, "style") == 0 || strcmp(name, "script") == 0 ||
	       strcmp(name, "head") == 0 || strcmp(name, "title") == 0;
}

/* Remove markup from S (in place; the result is never longer). */
static size_t html_strip(char *s, size_t len)
{
	size_t o = 0, i = 0;
	char hidden[16] = ""; /* inside <style> etc.: skip to its end tag */
	while (i < len) {
		if (s[i] == '<') {
			if (len - i >= 4 && memcmp(s + i, "<!--", 4) == 0) {
				char *e = memmem(s + i + 4, len - i - 4, "-->", 3);
				i = e ? (size_t)(e - s) + 3 : len;
				s[o++] = ' ';
				continue;
			}
			bool closing = i + 1 < len && s[i + 1] == '/';
			char name[16];
			size_t ns = i + 1 + (closing ? 1 : 0);
			tag_name(s + ns, len - ns, name);
			const char *gt = memchr(s + i, '>', len - i);
			i = gt ? (size_t)(gt - s) + 1 : len;
			if (hidden[0] != '\0') {
				if (closing && strcmp(name, hidden) == 0)
					hidden[0] = '\0';
				continue;
			}
			if (!closing && tag_hides(name) && !(gt && gt > s && gt[-1] == '/'))
				memcpy(hidden, name, sizeof(hidden));
			s[o++] = ' '; /* a tag separates words (<p>, <br>, <td> ...) */
			continue;
		}
		if (hidden[0] != '\0') {
			i++;
			continue;
		}
		if (s[i] == '&') {
			char u[4];
			size_t ulen = 0;
			size_t used = html_entity(s + i, len - i, u, &ulen);
			if (used > 0 && ulen <= used) {
				memcpy(s + o, u, ulen);
				o += ulen;
				i += used;
				continue;
			}
		}
		s[o++] = s[i++];
	}
	return o;
}

/* text/plain: drop quoted lines (starting with '>', as Dovecot's snippets do), in place. */
static size_t plain_unquote(char *s, size_t len)
{
	size_t o = 0, i = 0;
	while (i < len) {
		const char *nl = memchr(s + i, '\n', len - i);
		size_t end = nl ? (size_t)(nl - s) + 1 : len;
		if (s[i] != '>') {
			memmove(s + o, s + i, end - i);
			o += end - i;
		}
		i = end;
	}
	return o;
}

/* Collapse white space (ASCII space and controls, U+00A0) into single spaces, trim, and cut
 * to MSG_PREVIEW_MAX_CHARS characters. The input is valid UTF-8. */
static int normalize(const char *s, size_t len, struct buf *out)
{
	char res[MSG_PREVIEW_MAX_CHARS * 4];
	size_t o = 0, chars = 0, i = 0;
	bool space = false;
	while (i < len && chars < MSG_PREVIEW_MAX_CHARS) {
		unsigned char c = (unsigned char)s[i];
		size_t clen = 1;
		bool ws = c <= 0x20 || c == 0x7f;
		if (c >= 0xc0) {
			clen = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
			if (clen > len - i)
				break;
			ws = c == 0xc2 && (unsigned char)s[i + 1] == 0xa0;
		}
		if (ws) {
			space = o > 0;
			i += clen;
			continue;
		}
		if (space) {
			res[o++] = ' ';
			chars++;
			space = false;
			if (chars == MSG_PREVIEW_MAX_CHARS)
				break;
		}
		memcpy(res + o, s + i, clen);
		o += clen;
		chars++;
		i += clen;
	}
	return buf_append(out, res, o);
}

int msg_preview_build(const struct msg_source *src, const struct msg_parsed *m, struct buf *out)
{
	uint32_t plain = MIME_NONE, html = MIME_NONE;
	for (uint32_t i = 0; i < m->nparts && plain == MIME_NONE; i++) {
		if (!own_text(m, i))
			continue;
		const struct mime_part *p = &m->parts[i];
		if (p->subtype.off == MIME_NONE || str_is(m, p->subtype, "plain"))
			plain = i;
		else if (html == MIME_NONE && str_is(m, p->subtype, "html"))
			html = i;
	}
	uint32_t pick = plain != MIME_NONE ? plain : html;
	if (pick == MIME_NONE)
		return 0;
	struct collect c;
	buf_init(&c.b, PREVIEW_INPUT_MAX);
	int r = mime_text_body(src, m, &m->parts[pick], collect_cb, &c);
	if (r == 1)
		r = 0;
	if (r == 0) {
		char *text = c.b.data ? c.b.data + c.b.off : NULL;
		size_t len = buf_used(&c.b);
		if (text && pick == html)
			len = html_strip(text, len);
		else if (text)
			len = plain_unquote(text, len);
		if (text)
			r = normalize(text, len, out);
	}
	buf_clear(&c.b);
	return r;
}

const char *msg_parsed_preview(const struct msg_parsed *msg, size_t *len_r)
{
	struct mime_str s = msg->parts[0].preview;
	*len_r = s.off == MIME_NONE ? 0 : s.len;
	return s.off == MIME_NONE ? "" : msg->arena + s.off;
}
