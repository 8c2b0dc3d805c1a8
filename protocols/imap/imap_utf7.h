/* imap_utf7 — mailbox names between modified UTF-7 (RFC 3501 §5.1.3, what the store and
 * IMAP4rev1 clients use) and UTF-8 (what IMAP4rev2 clients send and expect, RFC 9051 §5.1). */
#ifndef MK_IMAP_UTF7_H
#define MK_IMAP_UTF7_H

#include <stddef.h>

/* Decode modified UTF-7 into UTF-8 (NUL-terminated in out[size]). Returns 0, -EINVAL (not
 * valid modified UTF-7: bad base64, a non-minimal or unterminated shift, an encoded printable
 * ASCII character, a lone surrogate) or -ENAMETOOLONG. */
int imap_utf7_to_utf8(const char *in, char *out, size_t size);
/* Encode UTF-8 as modified UTF-7. Returns 0, -EINVAL (not valid UTF-8, or a control
 * character) or -ENAMETOOLONG. */
int imap_utf8_to_utf7(const char *in, char *out, size_t size);

#endif
