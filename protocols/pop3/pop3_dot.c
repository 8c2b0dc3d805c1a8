#include "pop3_dot.h"

#include <string.h>

void pop3_dot_init(struct pop3_dot *d, bool convert_lf, bool limited, uint32_t top_lines)
{
	memset(d, 0, sizeof(*d));
	d->convert_lf = convert_lf;
	d->limited = limited;
	d->lines_left = top_lines;
	d->line_start = true;
}

static void dot_emit(pop3_dot_out_fn *out, void *ctx, const char *p, size_t n)
{
	if (n > 0)
		out(ctx, p, n);
}

/* One line end passed: advance TOP's header/body bookkeeping. */
static void dot_line_done(struct pop3_dot *d, bool empty)
{
	if (!d->limited)
		return;
	if (!d->in_body) {
		if (empty) {
			d->in_body = true;
			if (d->lines_left == 0)
				d->stopped = true;
		}
	} else if (--d->lines_left == 0) {
		d->stopped = true;
	}
}

void pop3_dot_feed(struct pop3_dot *d, const char *data, size_t len, pop3_dot_out_fn *out,
		   void *ctx)
{
	size_t i = 0, span = 0; /* data[span..i) is pending pass-through output */

	if (d->stopped || d->finished)
		return;
	while (i < len) {
		if (d->line_start) {
			d->line_start = false;
			d->line_len = 0;
			if (data[i] == '.') {
				dot_emit(out, ctx, data + span, i - span);
				out(ctx, ".", 1);
				span = i;
			}
		}
		const char *lf = memchr(data + i, '\n', len - i);
		if (!lf) {
			d->line_len += len - i;
			d->prev_cr = data[len - 1] == '\r';
			i = len;
			break;
		}
		size_t j = (size_t)(lf - data);
		bool cr_before = j > i ? data[j - 1] == '\r' : d->prev_cr;
		d->line_len += j - i;
		if (d->convert_lf && !cr_before) {
			dot_emit(out, ctx, data + span, j - span);
			out(ctx, "\r", 1);
			span = j;
		}
		bool empty = d->line_len == 0 || (d->line_len == 1 && cr_before);
		i = j + 1;
		d->line_start = true;
		d->prev_cr = false;
		dot_line_done(d, empty);
		if (d->stopped)
			break;
	}
	dot_emit(out, ctx, data + span, i - span);
}

void pop3_dot_finish(struct pop3_dot *d, pop3_dot_out_fn *out, void *ctx)
{
	if (d->finished)
		return;
	d->finished = true;
	if (!d->line_start)
		out(ctx, d->prev_cr ? "\n" : "\r\n", d->prev_cr ? 1 : 2);
	out(ctx, ".\r\n", 3);
}

bool pop3_dot_stopped(const struct pop3_dot *d)
{
	return d->stopped;
}
