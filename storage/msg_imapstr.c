#include "msg_imapstr.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Escaped octets allowed in a quoted string before a literal is used instead. */
#define IMAPSTR_MAX_ESCAPES 4

int msg_imapstr_literal_header(struct buf *out, size_t len)
{
	char hdr[32];
	int n = snprintf(hdr, sizeof(hdr), "{%zu}\r\n", len);
	return buf_append(out, hdr, (size_t)n);
}

static bool imapstr_needs_literal(const char *s, size_t len)
{
	unsigned escapes = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			if (++escapes > IMAPSTR_MAX_ESCAPES)
				return true;
		} else if (c == '\r' || c == '\n' || c == 0 || c >= 0x80) {
			return true;
		}
	}
	return false;
}

int msg_imapstr_string(struct buf *out, const char *s, size_t len)
{
	int ret;
	if (s == NULL)
		s = ""; /* callers may pass (NULL, 0) for an empty value */
	if (imapstr_needs_literal(s, len)) {
		if ((ret = msg_imapstr_literal_header(out, len)) < 0)
			return ret;
		return buf_append(out, s, len);
	}
	if ((ret = buf_append(out, "\"", 1)) < 0)
		return ret;
	size_t start = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '"' && s[i] != '\\')
			continue;
		if ((ret = buf_append(out, s + start, i - start)) < 0 ||
		    (ret = buf_append(out, "\\", 1)) < 0)
			return ret;
		start = i;
	}
	if ((ret = buf_append(out, s + start, len - start)) < 0)
		return ret;
	return buf_append(out, "\"", 1);
}

int msg_imapstr_nstring(struct buf *out, const char *s, size_t len)
{
	if (s == NULL)
		return buf_append(out, "NIL", 3);
	return msg_imapstr_string(out, s, len);
}

static bool imapstr_is_atom_char(unsigned char c)
{
	/* ATOM-CHAR: any CHAR except atom-specials "(){ %*\"\\]" and CTL; astrings allow ']'. */
	if (c <= 0x20 || c >= 0x7f)
		return false;
	return strchr("(){%*\"\\", c) == NULL;
}

int msg_imapstr_astring(struct buf *out, const char *s, size_t len)
{
	bool atom = len > 0 && !(len == 3 && strncasecmp(s, "NIL", 3) == 0);
	for (size_t i = 0; atom && i < len; i++)
		atom = imapstr_is_atom_char((unsigned char)s[i]);
	if (atom)
		return buf_append(out, s, len);
	return msg_imapstr_string(out, s, len);
}

int msg_imapstr_nstring_nolf(struct buf *out, const char *s, size_t len)
{
	if (s == NULL)
		return buf_append(out, "NIL", 3);
	if (memchr(s, '\r', len) == NULL && memchr(s, '\n', len) == NULL)
		return msg_imapstr_string(out, s, len);
	char *tmp = malloc(len ? len : 1);
	if (!tmp)
		return -ENOMEM;
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '\r' && s[i] != '\n')
			tmp[n++] = s[i];
		else if (i + 1 < len && s[i + 1] != ' ' && s[i + 1] != '\t' && s[i + 1] != '\r' &&
			 s[i + 1] != '\n')
			tmp[n++] = ' ';
	}
	int ret = msg_imapstr_string(out, tmp, n);
	free(tmp);
	return ret;
}

static bool imapstr_is_lwsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int msg_imapstr_for_humans(struct buf *out, const char *s, size_t len)
{
	bool modify = false;
	unsigned escapes = 0;
	size_t i;
	for (i = 0; i < len && !modify; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\t' || c == '\r' || c == '\n' || c == 0 || c >= 0x80)
			modify = true;
		else if (c == ' ' && (i == 0 || i + 1 == len || s[i + 1] == ' '))
			modify = true;
		else if ((c == '"' || c == '\\') && ++escapes > 0)
			modify = true; /* Dovecot never escapes here: always a literal */
	}
	if (!modify) {
		int ret;
		if ((ret = buf_append(out, "\"", 1)) < 0 || (ret = buf_append(out, s, len)) < 0)
			return ret;
		return buf_append(out, "\"", 1);
	}
	char *tmp = malloc(len ? len : 1);
	if (!tmp)
		return -ENOMEM;
	size_t n = 0;
	bool last_space = true; /* drops leading white space */
	for (i = 0; i < len; i++) {
		if (imapstr_is_lwsp(s[i])) {
			if (!last_space)
				tmp[n++] = ' ';
			last_space = true;
		} else {
			tmp[n++] = s[i] == 0 ? (char)0x80 : s[i];
			last_space = false;
		}
	}
	if (n > 0 && tmp[n - 1] == ' ')
		n--;
	int ret;
	if (n == 0) {
		ret = buf_append(out, "\"\"", 2);
	} else if ((ret = msg_imapstr_literal_header(out, n)) == 0) {
		ret = buf_append(out, tmp, n);
	}
	free(tmp);
	return ret;
}
