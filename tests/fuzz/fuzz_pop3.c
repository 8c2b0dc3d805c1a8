/* libFuzzer target for the POP3 command parser and the RETR/TOP dot-stuffing transform.
 *
 * The input is cut into lines as the connection does (buf_line_find with the POP3 limit),
 * each line is parsed as a command and its arguments as message numbers; tokens must stay
 * inside the line. The same bytes then go through the transform, split at positions taken
 * from the input, and the output must be the same whatever the split, end with CRLF.CRLF and
 * contain no line that starts with a single '.' other than the terminator. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "pop3_dot.h"
#include "pop3_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_token(struct pop3_token t, const char *line, size_t len)
{
	if (t.len > 0 && (t.p < line || t.p + t.len > line + len))
		abort();
}

static void parse_lines(const char *p, size_t n)
{
	while (n > 0) {
		size_t line_len, used;
		enum buf_line_result r =
			buf_line_find(p, n, POP3_MAX_COMMAND_LINE, &line_len, &used);
		if (r != BUF_LINE_OK)
			line_len = used = n; /* the rest as one (possibly too long) line */
		struct pop3_command cmd;
		if (pop3_parse_command(p, line_len, &cmd) == POP3_PARSE_OK) {
			check_token(cmd.keyword, p, line_len);
			check_token(cmd.rest, p, line_len);
			if (cmd.keyword.len == 0 || cmd.keyword.len > POP3_MAX_KEYWORD)
				abort();
			struct pop3_token t[POP3_MAX_ARGS];
			int k = pop3_parse_args(cmd.rest, t, POP3_MAX_ARGS);
			for (int i = 0; i < k; i++) {
				check_token(t[i], p, line_len);
				uint32_t v;
				(void)pop3_parse_uint(t[i], &v);
			}
		}
		p += used;
		n -= used;
	}
}

struct out {
	char *p;
	size_t len, cap;
};

static void out_fn(void *ctx, const char *d, size_t n)
{
	struct out *o = ctx;
	if (o->len + n > o->cap) {
		o->cap = (o->len + n) * 2;
		o->p = realloc(o->p, o->cap);
		if (!o->p)
			abort();
	}
	memcpy(o->p + o->len, d, n);
	o->len += n;
}

static void transform(const char *p, size_t n, size_t step, bool convert, bool top, uint32_t lines,
		      struct out *o)
{
	struct pop3_dot d;
	pop3_dot_init(&d, convert, top, lines);
	for (size_t off = 0; off < n; off += step)
		pop3_dot_feed(&d, p + off, off + step > n ? n - off : step, out_fn, o);
	pop3_dot_finish(&d, out_fn, o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	bool convert = data[0] & 1, top = data[0] & 2;
	uint32_t lines = data[0] >> 2;
	size_t step = (size_t)data[1] + 1;
	const char *p = (const char *)data + 2;
	size_t n = size - 2;

	parse_lines(p, n);

	struct out whole = {0}, split = {0};
	transform(p, n, n ? n : 1, convert, top, lines, &whole);
	transform(p, n, step, convert, top, lines, &split);
	if (whole.len != split.len || memcmp(whole.p, split.p, whole.len) != 0)
		abort();
	if (whole.len < 3 || memcmp(whole.p + whole.len - 3, ".\r\n", 3) != 0)
		abort();
	/* The terminator starts a line; with conversion on, that line end is CRLF (without
	 * it the store promised CRLF, so a bare LF in the input stays bare). */
	if (whole.len > 3 && whole.p[whole.len - 4] != '\n')
		abort();
	if (whole.len > 3 && convert && whole.p[whole.len - 5] != '\r')
		abort();
	/* Every line (after a LF) that starts with '.' is stuffed: "..", except the end. */
	for (size_t i = 0; i + 3 < whole.len; i++) {
		bool start = i == 0 || whole.p[i - 1] == '\n';
		if (start && whole.p[i] == '.' && whole.p[i + 1] != '.')
			abort();
		if (start && whole.p[i] == '.')
			i++; /* skip the stuffed pair */
	}
	free(whole.p);
	free(split.p);
	return 0;
}
