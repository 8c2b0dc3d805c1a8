#include "imap_utf7.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static int b64_value(unsigned char c)
{
	const char *p = c ? strchr(b64, c) : NULL;
	return p ? (int)(p - b64) : -1;
}

static bool put(char *out, size_t size, size_t *o, char c)
{
	if (*o + 1 >= size)
		return false;
	out[(*o)++] = c;
	return true;
}

static bool put_utf8(char *out, size_t size, size_t *o, uint32_t cp)
{
	char tmp[4];
	size_t n;
	if (cp < 0x80) {
		tmp[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		tmp[0] = (char)(0xc0 | (cp >> 6));
		tmp[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		tmp[0] = (char)(0xe0 | (cp >> 12));
		tmp[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		tmp[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		tmp[0] = (char)(0xf0 | (cp >> 18));
		tmp[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		tmp[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		tmp[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	for (size_t i = 0; i < n; i++)
		if (!put(out, size, o, tmp[i]))
			return false;
	return true;
}

int imap_utf7_to_utf8(const char *in, char *out, size_t size)
{
	size_t o = 0;
	if (size == 0)
		return -ENAMETOOLONG;
	for (const char *p = in; *p;) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20 || c > 0x7e)
			return -EINVAL;
		if (c != '&') {
			if (!put(out, size, &o, (char)c))
				return -ENAMETOOLONG;
			p++;
			continue;
		}
		p++;
		if (*p == '-') {
			if (!put(out, size, &o, '&'))
				return -ENAMETOOLONG;
			p++;
			continue;
		}
		/* A shifted run: base64 of UTF-16BE up to '-'. */
		uint32_t bits = 0, high = 0;
		int nbits = 0;
		size_t units = 0;
		for (;;) {
			if (*p == '-')
				break;
			int v = b64_value((unsigned char)*p);
			if (v < 0)
				return -EINVAL;
			bits = (bits << 6) | (uint32_t)v;
			nbits += 6;
			p++;
			if (nbits >= 16) {
				nbits -= 16;
				uint32_t u = (bits >> nbits) & 0xffff;
				units++;
				if (high) {
					if (u < 0xdc00 || u > 0xdfff)
						return -EINVAL;
					u = 0x10000 + ((high - 0xd800) << 10) + (u - 0xdc00);
					high = 0;
				} else if (u >= 0xd800 && u <= 0xdbff) {
					high = u;
					continue;
				} else if (u >= 0xdc00 && u <= 0xdfff) {
					return -EINVAL;
				} else if (u >= 0x20 && u <= 0x7e) {
					return -EINVAL; /* printable ASCII must not be encoded */
				}
				if (!put_utf8(out, size, &o, u))
					return -ENAMETOOLONG;
			}
		}
		/* Leftover bits must be zero padding, fewer than 6 of them; no lone surrogate. */
		if (units == 0 || high || nbits >= 6 || (bits & ((1u << nbits) - 1)) != 0)
			return -EINVAL;
		p++; /* '-' */
	}
	out[o] = '\0';
	return 0;
}

/* Next code point of UTF-8 at *p (advanced), or -1 on invalid input. */
static int32_t utf8_next(const unsigned char **p)
{
	const unsigned char *s = *p;
	uint32_t cp;
	int n;
	if (s[0] < 0x80) {
		cp = s[0];
		n = 0;
	} else if ((s[0] & 0xe0) == 0xc0) {
		cp = s[0] & 0x1f;
		n = 1;
	} else if ((s[0] & 0xf0) == 0xe0) {
		cp = s[0] & 0x0f;
		n = 2;
	} else if ((s[0] & 0xf8) == 0xf0) {
		cp = s[0] & 0x07;
		n = 3;
	} else {
		return -1;
	}
	for (int i = 1; i <= n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	static const uint32_t min[] = {0, 0x80, 0x800, 0x10000};
	if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*p = s + n + 1;
	return (int32_t)cp;
}

int imap_utf8_to_utf7(const char *in, char *out, size_t size)
{
	size_t o = 0;
	if (size == 0)
		return -ENAMETOOLONG;
	const unsigned char *p = (const unsigned char *)in;
	while (*p) {
		if (*p < 0x80) {
			if (*p < 0x20 || *p == 0x7f)
				return -EINVAL;
			if (!put(out, size, &o, (char)*p))
				return -ENAMETOOLONG;
			if (*p == '&' && !put(out, size, &o, '-'))
				return -ENAMETOOLONG;
			p++;
			continue;
		}
		if (!put(out, size, &o, '&'))
			return -ENAMETOOLONG;
		uint32_t bits = 0;
		int nbits = 0;
		while (*p >= 0x80) {
			int32_t cp = utf8_next(&p);
			if (cp < 0)
				return -EINVAL;
			uint32_t units[2];
			int nu = 0;
			if (cp >= 0x10000) {
				units[nu++] = 0xd800 + (((uint32_t)cp - 0x10000) >> 10);
				units[nu++] = 0xdc00 + (((uint32_t)cp - 0x10000) & 0x3ff);
			} else {
				units[nu++] = (uint32_t)cp;
			}
			for (int k = 0; k < nu; k++) {
				bits = (bits << 16) | units[k];
				nbits += 16;
				while (nbits >= 6) {
					nbits -= 6;
					if (!put(out, size, &o, b64[(bits >> nbits) & 0x3f]))
						return -ENAMETOOLONG;
				}
			}
		}
		if (nbits > 0 && !put(out, size, &o, b64[(bits << (6 - nbits)) & 0x3f]))
			return -ENAMETOOLONG;
		if (!put(out, size, &o, '-'))
			return -ENAMETOOLONG;
	}
	out[o] = '\0';
	return 0;
}
