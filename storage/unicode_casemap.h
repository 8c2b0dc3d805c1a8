/* unicode_casemap — the "i;unicode-casemap" collation (RFC 5051), the comparison IMAP SORT and
 * THREAD use for strings (RFC 5256 §1 with RFC 5051 as the server's choice, as Dovecot does).
 *
 * A string is mapped to its comparison form: every character to its simple titlecase mapping
 * (UnicodeData.txt field 14), then the whole string to its full compatibility decomposition
 * (NFKD). Two strings are equal when their forms are equal octet for octet, and ordered by
 * the octets of their forms (i;octet). The tables are GNU libunistring's (uc_totitle,
 * u8_normalize with UNINORM_NFKD; Debian libunistring-dev), which follow the Unicode version
 * of the library: small, already a dependency of GnuTLS, where ICU would be tens of MB.
 *
 * Input is UTF-8; an octet that is not part of a valid UTF-8 sequence is taken as U+FFFD, so
 * every input has a form. Pure ASCII takes a fast path (a-z to A-Z, nothing to decompose).
 */
#ifndef MK_UNICODE_CASEMAP_H
#define MK_UNICODE_CASEMAP_H

#include <stddef.h>

#include "buf.h"

/* Append the comparison form of S[0..LEN) to OUT. Returns 0, -ENOBUFS (OUT's bound; nothing
 * appended) or -ENOMEM. */
int unicode_casemap(const char *s, size_t len, struct buf *out);

#endif
