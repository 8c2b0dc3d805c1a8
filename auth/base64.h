/* base64 — RFC 4648 base64 (standard alphabet, with padding), strict decoding as SASL needs
 * (RFC 4422 §3.4 "base64 ... MUST be rejected if it contains characters outside the
 * alphabet or invalid padding").
 *
 * Not auth-specific; it lives here because SASL is its first user.
 */
#ifndef MK_BASE64_H
#define MK_BASE64_H

#include <stddef.h>

/* Characters needed to encode n bytes, without the terminating NUL. */
size_t base64_encoded_len(size_t n);
/* Upper bound of the bytes decoded from n characters. */
size_t base64_decoded_max(size_t n);

/* Encode in[0..n) into out as a NUL-terminated string. Returns the string length, or
 * -ENOBUFS when outlen < base64_encoded_len(n) + 1. */
int base64_encode(const void *in, size_t n, char *out, size_t outlen);

/* Decode in[0..n) into out. Strict: the length must be a multiple of 4, only the alphabet and
 * final '=' padding (one or two) are allowed, no white space, and the unused bits of the last
 * group must be zero (so every byte string has exactly one encoding). Returns the decoded
 * length, -EINVAL on malformed input, -ENOBUFS when it does not fit in outlen. out may have
 * been written to on error. */
int base64_decode(const char *in, size_t n, void *out, size_t outlen);

#endif
