/* buf — a growable byte buffer with a hard maximum (every buffer has a bound).
 *
 * Content is data[off..len). Storage is allocated on first append and released by
 * buf_release() once the buffer is empty, so an idle owner holds no memory (DESIGN.md "Idle is
 * cheap"). The struct is public so that owners can embed it; touch its fields only through these
 * functions.
 */
#ifndef MK_BUF_H
#define MK_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
	char *data;
	size_t off; /* first unconsumed byte */
	size_t len; /* end of content */
	size_t cap;
	size_t max; /* content never exceeds this */
};

void buf_init(struct buf *b, size_t max);
/* Append n bytes. Returns 0, or -ENOBUFS (nothing appended) when the content would pass max,
 * or -ENOMEM. */
int buf_append(struct buf *b, const void *p, size_t n);
/* Bytes that may still be appended before max. */
size_t buf_room(const struct buf *b);
static inline size_t buf_used(const struct buf *b)
{
	return b->len - b->off;
}
static inline const char *buf_peek(const struct buf *b)
{
	return b->data + b->off;
}
/* Drop the first n unconsumed bytes (n <= buf_used). Pointers into the buffer stay valid
 * until the next buf_append, buf_release or buf_clear. */
void buf_consume(struct buf *b, size_t n);
/* Free the storage if the buffer is empty (call when no borrowed pointer is left). */
void buf_release(struct buf *b);
/* Drop everything and free the storage. The buffer stays usable. */
void buf_clear(struct buf *b);

enum buf_line_result {
	BUF_LINE_MORE,     /* no complete line yet, and it may still fit */
	BUF_LINE_OK,       /* a complete line */
	BUF_LINE_TOO_LONG, /* more than max bytes before the line end */
};

/* Find the line at the start of data[0..len). A line ends at LF; a CR just before the LF is not
 * part of the line (so CRLF and bare LF both work). max is the longest line accepted, its
 * terminator excluded. On BUF_LINE_OK: *line_len_r is the length without terminator and
 * *used_r the length with it. */
enum buf_line_result buf_line_find(const char *data, size_t len, size_t max, size_t *line_len_r,
				   size_t *used_r);

/* Literal mode: take up to *remaining bytes from the front of b. Returns how many are
 * available now (possibly 0), points *data_r at them, consumes them from b and subtracts them
 * from *remaining. The bytes stay valid until the next call that changes b. */
size_t buf_take_literal(struct buf *b, uint64_t *remaining, const char **data_r);

#endif
