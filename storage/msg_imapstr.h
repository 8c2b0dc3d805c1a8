/* msg_imapstr — IMAP string syntax (RFC 3501 §4.3, §9) written into a bounded buffer.
 *
 * One writer for every IMAP string the server produces (ENVELOPE, BODYSTRUCTURE, and the IMAP
 * protocol's own responses), so the quoting rules live in one place:
 *   - quoted string when the value has no CR, LF, NUL or 8-bit octet and at most 4 `"`/`\`
 *     (each escaped with `\`);
 *   - otherwise a literal `{n}\r\n` followed by the octets.
 * These are Dovecot's choices (its 2.3 imap-quote), kept so our bytes match a Dovecot server's.
 *
 * Every function appends to `out` (src/buf.h, a buffer with a hard maximum) and returns 0, or
 * -ENOBUFS/-ENOMEM from buf_append; on error the buffer may hold a partial string and the
 * caller must treat the whole response as failed.
 */
#ifndef MK_MSG_IMAPSTR_H
#define MK_MSG_IMAPSTR_H

#include <stddef.h>

#include "buf.h"

/* Append s[0..len) as a quoted string or a literal (never NIL, never an atom). */
int msg_imapstr_string(struct buf *out, const char *s, size_t len);
/* Append NIL when s is NULL, else as msg_imapstr_string. */
int msg_imapstr_nstring(struct buf *out, const char *s, size_t len);
/* Append an astring: a bare atom when s is a non-empty atom other than "NIL" (any case),
 * else as msg_imapstr_string. */
int msg_imapstr_astring(struct buf *out, const char *s, size_t len);
/* nstring with line breaks removed first: each CR/LF is dropped, and a space is put in its
 * place when the next octet is not SP, TAB or the end (how ENVELOPE dates, message ids and
 * BODYSTRUCTURE ids/descriptions are sent). */
int msg_imapstr_nstring_nolf(struct buf *out, const char *s, size_t len);
/* A string for humans (ENVELOPE subject and display names): runs of SP/TAB/CR/LF become one
 * space, leading and trailing white space is dropped, NUL becomes 0x80. Sent quoted when the
 * cleaned value equals the input and needs no escaping, else as a literal of the cleaned value;
 * a value that is empty after cleaning is `""`. */
int msg_imapstr_for_humans(struct buf *out, const char *s, size_t len);
/* Append a literal header `{len}\r\n` (the caller sends the octets). */
int msg_imapstr_literal_header(struct buf *out, size_t len);

#endif
