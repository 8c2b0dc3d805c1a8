/* unicode_casemap — i;unicode-casemap (RFC 5051) with libunistring's tables. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <unicase.h>
#include <uninorm.h>
#include <unistr.h>

#include "unicode_casemap.h"

int unicode_casemap(const char *s, size_t len, struct buf *out)
{
	const uint8_t *p = (const uint8_t *)s;
	bool ascii = true;
	for (size_t i = 0; i < len && ascii; i++)
		ascii = p[i] < 0x80;
	if (ascii) {
		if (buf_room(out) < len)
			return -ENOBUFS;
		for (size_t i = 0; i < len; i++) {
			char c = s[i] >= 'a' && s[i] <= 'z' ? (char)(s[i] - 'a' + 'A') : s[i];
			int r = buf_append(out, &c, 1);
			if (r < 0)
				return r;
		}
		return 0;
	}
	/* Titlecase each character (a character's titlecase is at most 4 UTF-8 octets). */
	if (len > SIZE_MAX / 4)
		return -ENOMEM;
	uint8_t *title = malloc(len * 4 + 4);
	if (!title)
		return -ENOMEM;
	size_t tlen = 0;
	for (size_t i = 0; i < len;) {
		ucs4_t uc;
		int n = u8_mbtouc(&uc, p + i, len - i); /* invalid sequences give U+FFFD, n >= 1 */
		i += (size_t)n;
		int w = u8_uctomb(title + tlen, uc_totitle(uc), 4);
		if (w > 0)
			tlen += (size_t)w;
	}
	size_t dlen = 0;
	uint8_t *d = u8_normalize(UNINORM_NFKD, title, tlen, NULL, &dlen);
	free(title);
	if (!d)
		return -ENOMEM;
	int r = buf_room(out) < dlen ? -ENOBUFS : buf_append(out, d, dlen);
	free(d);
	return r;
}
