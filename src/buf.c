#include "buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

size_t buf_room(const struct buf *b)
{
	size_t used = buf_used(b);
	return used >= b->max ? 0 : b->max - used;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (n > buf_room(b))
		return -ENOBUFS;
	if (b->len + n > b->cap && b->off > 0) {
		/* Slide the content to the front before growing. */
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n)
			cap *= 2;
		if (cap > b->max && b->max >= b->len + n)
			cap = b->max;
		char *d = realloc(b->data, cap);
		if (!d)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

void buf_consume(struct buf *b, size_t n)
{
	if (n > buf_used(b))
		n = buf_used(b);
	b->off += n;
	if (b->off == b->len)
		b->off = b->len = 0;
}

void buf_release(struct buf *b)
{
	if (b->data && buf_used(b) == 0) {
		free(b->data);
		b->data = NULL;
		b->cap = b->off = b->len = 0;
	}
}

void buf_clear(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->cap = b->off = b->len = 0;
}

enum buf_line_result buf_line_find(const char *data, size_t len, size_t max, size_t *line_len_r,
				   size_t *used_r)
{
	if (len == 0)
		return BUF_LINE_MORE;
	/* Look no further than max + CR + LF: a longer line is refused without scanning it all. */
	size_t scan = len < max + 2 ? len : max + 2;
	const char *lf = memchr(data, '\n', scan);
	if (!lf)
		return len >= max + 2 ? BUF_LINE_TOO_LONG : BUF_LINE_MORE;
	size_t line = (size_t)(lf - data);
	size_t used = line + 1;
	if (line > 0 && data[line - 1] == '\r')
		line--;
	if (line > max)
		return BUF_LINE_TOO_LONG;
	*line_len_r = line;
	*used_r = used;
	return BUF_LINE_OK;
}

size_t buf_take_literal(struct buf *b, uint64_t *remaining, const char **data_r)
{
	size_t n = buf_used(b);
	if ((uint64_t)n > *remaining)
		n = (size_t)*remaining;
	*data_r = buf_peek(b);
	*remaining -= n;
	buf_consume(b, n); /* keeps the storage, so *data_r stays valid */
	return n;
}
