/* libFuzzer target for the IMAP command parser and sequence sets: the input is a client's
 * byte stream, fed in pieces whose sizes come from the first bytes, parsed command after
 * command (with stream mode for APPEND-like commands) until it runs out. Every limit is small
 * so the fuzzer reaches them. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "imap_parser.h"
#include "imap_seqset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz_input {
	struct buf b;
};

static enum imap_input_line fz_read_line(void *ctx, const char **line_r, size_t *len_r)
{
	struct fz_input *in = ctx;
	size_t len, used;
	switch (buf_line_find(buf_peek(&in->b), buf_used(&in->b), 256, &len, &used)) {
	case BUF_LINE_MORE:
		return IMAP_INPUT_MORE;
	case BUF_LINE_TOO_LONG:
		return IMAP_INPUT_TOO_LONG;
	case BUF_LINE_OK:
		break;
	}
	*line_r = buf_peek(&in->b);
	*len_r = len;
	buf_consume(&in->b, used);
	return IMAP_INPUT_OK;
}

static size_t fz_read_literal(void *ctx, uint64_t *remaining, const char **data_r)
{
	struct fz_input *in = ctx;
	return buf_take_literal(&in->b, remaining, data_r);
}

static void walk(const struct imap_arg *args, unsigned depth)
{
	struct imap_seqset set;
	imap_seqset_init(&set);
	for (const struct imap_arg *a = args; a->type != IMAP_ARG_EOL; a++) {
		if (a->type == IMAP_ARG_LIST) {
			if (a->list[a->list_count].type != IMAP_ARG_EOL)
				__builtin_trap();
			walk(a->list, depth + 1);
		} else if (a->type == IMAP_ARG_ATOM) {
			if (strlen(a->str) != a->len)
				__builtin_trap();
			if (imap_seqset_parse(&set, a->str, a->len) == 0) {
				imap_seqset_resolve(&set, 1000);
				char out[64];
				imap_seqset_format(&set, out, sizeof(out));
				(void)imap_seqset_contains(&set, 7);
			}
		}
	}
	imap_seqset_free(&set);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	size_t piece = (size_t)data[0] % 17 + 1;
	bool stream = data[1] & 1;
	data += 2;
	size -= 2;
	struct fz_input in;
	buf_init(&in.b, 1 << 20);
	struct imap_parser_input pin = {fz_read_line, fz_read_literal, NULL, &in};
	struct imap_parser_limits lim = {
		.max_command = 512,
		.max_literal = 128,
		.max_stream = 1024,
		.max_depth = 8,
		.max_args = 32,
	};
	struct imap_parser *p = imap_parser_new(&pin, &lim);
	size_t fed = 0;
	bool done = false;
	while (!done) {
		const struct imap_arg *args;
		int r = imap_parser_read_args(p, 2, &args);
		if (r >= 2 && stream && imap_arg_is(&args[1], "APPEND"))
			imap_parser_set_stream_mode(p, true);
		if (r >= 0)
			r = imap_parser_read_args(p, 0, &args);
		while (r >= 0 && !imap_parser_eol(p)) {
			/* Stream mode: drain the literal, then go on. */
			const char *d;
			ssize_t n;
			while ((n = imap_parser_read_literal_data(p, &d)) > 0)
				;
			if (n == -2)
				break;
			r = imap_parser_read_args(p, 0, &args);
		}
		if (r >= 0 && imap_parser_eol(p)) {
			walk(args, 0);
			imap_parser_reset(p);
			continue;
		}
		if (r == -1) {
			bool fatal;
			(void)imap_parser_get_error(p, &fatal);
			if (fatal)
				break;
			imap_parser_reset(p);
			continue;
		}
		/* Need more input. */
		if (fed == size) {
			done = true;
			break;
		}
		size_t n = size - fed < piece ? size - fed : piece;
		buf_append(&in.b, data + fed, n);
		fed += n;
	}
	imap_parser_free(&p);
	buf_clear(&in.b);
	return 0;
}
