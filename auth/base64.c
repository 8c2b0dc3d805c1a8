#include "base64.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t base64_encoded_len(size_t n)
{
	return (n + 2) / 3 * 4;
}

size_t base64_decoded_max(size_t n)
{
	return n / 4 * 3 + 3;
}

int base64_encode(const void *in, size_t n, char *out, size_t outlen)
{
	const uint8_t *p = in;
	size_t need = base64_encoded_len(n);
	size_t o = 0;

	if (need >= outlen || need > INT_MAX)
		return -ENOBUFS;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		out[o++] = b64_alphabet[(v >> 18) & 63];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		out[o++] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? b64_alphabet[v & 63] : '=';
	}
	out[o] = '\0';
	return (int)o;
}

static int b64_value(char c)
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

int base64_decode(const char *in, size_t n, void *out, size_t outlen)
{
	uint8_t *o = out;
	size_t len = 0;

	if (n % 4 != 0 || n / 4 * 3 > INT_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i += 4) {
		bool last = i + 4 == n;
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			char c = in[i + k];
			if (c == '=' && last && k >= 2) {
				/* '=' only at the end: "xx==" or "xxx=" */
				if (k == 2 && in[i + 3] != '=')
					return -EINVAL;
				pad++;
				v[k] = 0;
				continue;
			}
			if (pad > 0)
				return -EINVAL;
			v[k] = b64_value(c);
			if (v[k] < 0)
				return -EINVAL;
		}
		uint32_t bits = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
				(uint32_t)v[3];
		size_t nbytes = 3 - (size_t)pad;
		/* Non-canonical: bits under the padding must be zero. */
		if ((pad == 1 && (bits & 0xff) != 0) || (pad == 2 && (bits & 0xffff) != 0))
			return -EINVAL;
		if (outlen - len < nbytes)
			return -ENOBUFS;
		o[len++] = (uint8_t)(bits >> 16);
		if (nbytes > 1)
			o[len++] = (uint8_t)(bits >> 8);
		if (nbytes > 2)
			o[len++] = (uint8_t)bits;
	}
	return (int)len;
}
