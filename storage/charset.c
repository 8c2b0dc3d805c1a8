/* Charset conversion to UTF-8 with glibc iconv (no extra library: every charset mail uses,
 * from ISO-8859-x and windows-125x to ISO-2022-JP and GB18030, is in glibc's gconv modules).
 * Invalid or unconvertible input becomes U+FFFD; nothing here ever fails on bad data. */
#include "mime_private.h"

#include <errno.h>
#include <iconv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CHARSET_NAME_MAX 64
#define CHARSET_CARRY    16
static const char replacement[] = "\xef\xbf\xbd";

struct charset_conv {
	iconv_t cd; /* (iconv_t)-1: input taken as UTF-8 and validated */
	char name[CHARSET_NAME_MAX + 1];
	char carry[CHARSET_CARRY];
	size_t clen;
};

/* Converters kept open per thread, by charset name: iconv_open loads (dlopen) the gconv
 * module and iconv_close unloads it when it was the last user, which cost SEARCH TEXT a
 * dlopen/dlclose per text part. A few names per thread (the loop and the pool's threads);
 * a converter is reset before it is kept. */
#define CONV_CACHE 8
struct conv_cached {
	char name[CHARSET_NAME_MAX + 1];
	iconv_t cd;
};
static _Thread_local struct conv_cached conv_cache[CONV_CACHE];
static _Thread_local unsigned conv_cache_n;

static iconv_t conv_cache_take(const char *name)
{
	for (unsigned i = 0; i < conv_cache_n; i++) {
		if (strcasecmp(conv_cache[i].name, name) == 0) {
			iconv_t cd = conv_cache[i].cd;
			conv_cache[i] = conv_cache[--conv_cache_n];
			return cd;
		}
	}
	return (iconv_t)-1;
}

static void conv_cache_put(const char *name, iconv_t cd)
{
	iconv(cd, NULL, NULL, NULL, NULL); /* back to the initial shift state */
	if (conv_cache_n == CONV_CACHE) {
		/* full: close the oldest */
		iconv_close(conv_cache[0].cd);
		memmove(&conv_cache[0], &conv_cache[1], (CONV_CACHE - 1) * sizeof(conv_cache[0]));
		conv_cache_n--;
	}
	memcpy(conv_cache[conv_cache_n].name, name, sizeof(conv_cache[0].name));
	conv_cache[conv_cache_n++].cd = cd;
}

/* Length of the valid UTF-8 sequence at s (1..4), 0 when invalid, -1 when cut short. */
static int utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	int len;
	uint32_t min;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		min = 0x10000;
	} else {
		return 0;
	}
	uint32_t cp = c & (0x3f >> (len - 1));
	for (int i = 1; i < len; i++) {
		if ((size_t)i >= n)
			return -1;
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* Copy valid UTF-8, U+FFFD for invalid octets; returns octets consumed (an incomplete
 * sequence at the end is left unless final). */
static size_t utf8_copy(const char *s, size_t n, bool final, struct buf *out, int *err)
{
	size_t i = 0, start = 0;
	while (i < n) {
		if ((unsigned char)s[i] < 0x80) { /* ASCII runs: no call per octet */
			i++;
			continue;
		}
		int l = utf8_seq((const unsigned char *)s + i, n - i);
		if (l > 0) {
			i += (size_t)l;
			continue;
		}
		if (l < 0 && !final)
			break;
		if (*err == 0)
			*err = buf_append(out, s + start, i - start);
		if (*err == 0)
			*err = buf_append(out, replacement, 3);
		i++;
		start = i;
	}
	if (*err == 0)
		*err = buf_append(out, s + start, i - start);
	return i;
}

static bool charset_is_utf8(const char *cs)
{
	return strcasecmp(cs, "utf-8") == 0 || strcasecmp(cs, "utf8") == 0 ||
	       strcasecmp(cs, "us-ascii") == 0 || strcasecmp(cs, "ascii") == 0 || cs[0] == '\0';
}

int charset_conv_open(const char *charset, size_t charset_len, struct charset_conv **conv_r)
{
	char cs[CHARSET_NAME_MAX + 1];
	if (charset_len > CHARSET_NAME_MAX)
		return -EINVAL;
	memcpy(cs, charset, charset_len);
	cs[charset_len] = '\0';
	char *star = strchr(cs, '*'); /* RFC 2231 language suffix */
	if (star)
		*star = '\0';
	struct charset_conv *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cd = (iconv_t)-1;
	if (!charset_is_utf8(cs)) {
		memcpy(c->name, cs, sizeof(c->name));
		c->cd = conv_cache_take(cs);
		if (c->cd == (iconv_t)-1)
			c->cd = iconv_open("UTF-8", cs);
		if (c->cd == (iconv_t)-1) {
			free(c);
			return -EINVAL;
		}
	}
	*conv_r = c;
	return 0;
}

void charset_conv_free(struct charset_conv **convp)
{
	struct charset_conv *c = *convp;
	if (!c)
		return;
	if (c->cd != (iconv_t)-1)
		conv_cache_put(c->name, c->cd);
	free(c);
	*convp = NULL;
}

static int conv_run(struct charset_conv *c, const char *s, size_t n, bool final, struct buf *out,
		    size_t *used_r)
{
	int err = 0;
	if (c->cd == (iconv_t)-1) {
		*used_r = utf8_copy(s, n, final, out, &err);
		return err;
	}
	char obuf[4096];
	char *in = (char *)s;
	size_t inleft = n;
	while (inleft > 0 && err == 0) {
		char *o = obuf;
		size_t oleft = sizeof(obuf);
		size_t r = iconv(c->cd, &in, &inleft, &o, &oleft);
		int e = errno;
		err = buf_append(out, obuf, sizeof(obuf) - oleft);
		if (r != (size_t)-1 || err != 0)
			continue;
		if (e == E2BIG)
			continue;
		if (e == EINVAL && !final)
			break; /* incomplete sequence: wait for more */
		/* EILSEQ, or EINVAL at the end: one replacement, skip one octet */
		err = buf_append(out, replacement, 3);
		in++;
		inleft--;
		iconv(c->cd, NULL, NULL, NULL, NULL);
	}
	*used_r = n - inleft;
	return err;
}

int charset_conv_feed(struct charset_conv *c, const char *s, size_t len, bool final,
		      struct buf *out)
{
	int ret;
	size_t used;
	const char *in = s;
	char *tmp = NULL;
	if (c->clen > 0) {
		/* the incomplete sequence held back goes first */
		tmp = malloc(c->clen + len);
		if (!tmp)
			return -ENOMEM;
		memcpy(tmp, c->carry, c->clen);
		if (len)
			memcpy(tmp + c->clen, s, len);
		len += c->clen;
		in = tmp;
		c->clen = 0;
	}
	ret = conv_run(c, in, len, final, out, &used);
	size_t left = len - used;
	if (ret == 0 && left > CHARSET_CARRY) {
		/* cannot be one incomplete character */
		left = 0;
		ret = buf_append(out, replacement, 3);
	}
	if (ret == 0 && left > 0) {
		memcpy(c->carry, in + used, left);
		c->clen = left;
	}
	free(tmp);
	return ret;
}

int charset_to_utf8(const char *charset, size_t charset_len, const char *s, size_t len,
		    struct buf *out)
{
	struct charset_conv *c;
	int ret = charset_conv_open(charset, charset_len, &c);
	if (ret < 0)
		return ret;
	ret = charset_conv_feed(c, s, len, true, out);
	charset_conv_free(&c);
	return ret;
}
