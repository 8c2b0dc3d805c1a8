/* imap_parser: every input fed whole, split at every byte and one byte at a time must parse
 * to the same arguments, with exactly one continuation per synchronising literal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "imap_parser.h"

struct test_input {
	struct buf b;
	size_t max_line;
	unsigned continuations;
};

static enum imap_input_line t_read_line(void *ctx, const char **line_r, size_t *len_r)
{
	struct test_input *t = ctx;
	size_t len, used;
	switch (buf_line_find(buf_peek(&t->b), buf_used(&t->b), t->max_line, &len, &used)) {
	case BUF_LINE_MORE:
		return IMAP_INPUT_MORE;
	case BUF_LINE_TOO_LONG:
		return IMAP_INPUT_TOO_LONG;
	case BUF_LINE_OK:
		break;
	}
	*line_r = buf_peek(&t->b);
	*len_r = len;
	buf_consume(&t->b, used);
	return IMAP_INPUT_OK;
}

static size_t t_read_literal(void *ctx, uint64_t *remaining, const char **data_r)
{
	struct test_input *t = ctx;
	return buf_take_literal(&t->b, remaining, data_r);
}

static void t_continue(void *ctx)
{
	struct test_input *t = ctx;
	t->continuations++;
}

static const struct imap_parser_limits default_limits = {
	.max_command = 4096,
	.max_literal = 1024,
	.max_stream = 1 << 20,
	.max_depth = 4,
	.max_args = 64,
};

struct fixture {
	struct test_input in;
	struct imap_parser *p;
};

static struct fixture *fixture_new(const struct imap_parser_limits *lim)
{
	struct fixture *f = calloc(1, sizeof(*f));
	buf_init(&f->in.b, 1 << 20);
	f->in.max_line = 200;
	struct imap_parser_input in = {t_read_line, t_read_literal, t_continue, &f->in};
	f->p = imap_parser_new(&in, lim ? lim : &default_limits);
	assert_non_null(f->p);
	return f;
}

static void fixture_free(struct fixture *f)
{
	imap_parser_free(&f->p);
	assert_null(f->p);
	buf_clear(&f->in.b);
	free(f);
}

static void feed(struct fixture *f, const char *s, size_t len)
{
	assert_int_equal(buf_append(&f->in.b, s, len), 0);
}

/* Arguments as text: atoms bare, strings "..", literals {n:..} (~{n:..} for literal8), NIL,
 * lists (..), literal sizes <n>. */
static void dump(const struct imap_arg *args, char *out, size_t size, size_t *o)
{
	for (const struct imap_arg *a = args; a->type != IMAP_ARG_EOL; a++) {
		if (a != args)
			*o += (size_t)snprintf(out + *o, size - *o, " ");
		switch (a->type) {
		case IMAP_ARG_ATOM:
			*o += (size_t)snprintf(out + *o, size - *o, "%s", a->str);
			break;
		case IMAP_ARG_STRING:
			*o += (size_t)snprintf(out + *o, size - *o, "\"%s\"", a->str);
			break;
		case IMAP_ARG_LITERAL:
			*o += (size_t)snprintf(out + *o, size - *o,
					       "%s{%zu:", a->literal8 ? "~" : "", a->len);
			for (size_t i = 0; i < a->len; i++)
				*o += (size_t)snprintf(out + *o, size - *o, "%c",
						       a->str[i] ? a->str[i] : '0');
			*o += (size_t)snprintf(out + *o, size - *o, "}");
			break;
		case IMAP_ARG_NIL:
			*o += (size_t)snprintf(out + *o, size - *o, "NIL");
			break;
		case IMAP_ARG_LIST:
			*o += (size_t)snprintf(out + *o, size - *o, "(");
			dump(a->list, out, size, o);
			assert_int_equal(a->list[a->list_count].type, IMAP_ARG_EOL);
			*o += (size_t)snprintf(out + *o, size - *o, ")");
			break;
		case IMAP_ARG_LITERAL_SIZE:
			*o += (size_t)snprintf(out + *o, size - *o, "<%llu>",
					       (unsigned long long)a->literal_size);
			break;
		case IMAP_ARG_EOL:
			break;
		}
	}
}

/* Parse one command; returns its dump, or "ERR:<message>" / "FATAL:<message>". */
static void parse_result(struct fixture *f, int r, const struct imap_arg *args, char *out,
			 size_t size)
{
	if (r == -1) {
		bool fatal;
		const char *msg = imap_parser_get_error(f->p, &fatal);
		snprintf(out, size, "%s:%s", fatal ? "FATAL" : "ERR", msg);
		return;
	}
	assert_true(r >= 0);
	assert_true(imap_parser_eol(f->p));
	size_t o = 0;
	out[0] = '\0';
	dump(args, out, size, &o);
}

/* Feed input in pieces: split at split (0 = whole), or byte by byte when bytewise. */
static void run_split(const struct imap_parser_limits *lim, const char *input, size_t len,
		      size_t split, bool bytewise, char *out, size_t size, unsigned *cont_r,
		      size_t *left_r)
{
	struct fixture *f = fixture_new(lim);
	const struct imap_arg *args = NULL;
	int r = -2;
	size_t fed = 0;
	while (r == -2) {
		size_t n;
		if (fed == len) {
			n = 0;
		} else if (bytewise) {
			n = 1;
		} else if (split && fed < split) {
			n = split - fed;
		} else {
			n = len - fed;
		}
		feed(f, input + fed, n);
		fed += n;
		r = imap_parser_read_args(f->p, 0, &args);
		if (r == -2 && fed == len)
			break;
	}
	if (r == -2)
		snprintf(out, size, "MORE");
	else
		parse_result(f, r, args, out, size);
	*cont_r = f->in.continuations;
	*left_r = buf_used(&f->in.b) + (len - fed);
	fixture_free(f);
}

/* The input must give expected (and conts continuations) whichever way it is split, and leave
 * exactly `left` bytes unread. */
static void check_len(const struct imap_parser_limits *lim, const char *input, size_t len,
		      const char *expected, unsigned conts, size_t left)
{
	char out[2048];
	unsigned c;
	size_t l;
	for (size_t split = 0; split <= len; split++) {
		run_split(lim, input, len, split, false, out, sizeof(out), &c, &l);
		if (strcmp(out, expected) != 0 || c != conts || (left != SIZE_MAX && l != left))
			fail_msg("input %s split at %zu: got [%s] cont %u left %zu, want [%s] cont "
				 "%u left %zu",
				 input, split, out, c, l, expected, conts, left);
	}
	run_split(lim, input, len, 0, true, out, sizeof(out), &c, &l);
	if (strcmp(out, expected) != 0 || c != conts || (left != SIZE_MAX && l != left))
		fail_msg("input %s bytewise: got [%s] cont %u left %zu", input, out, c, l);
}

static void check_lim(const struct imap_parser_limits *lim, const char *input, const char *expected,
		      unsigned conts, size_t left)
{
	check_len(lim, input, strlen(input), expected, conts, left);
}

/* Inputs holding NUL bytes. */
#define CHECK_BIN(input, expected, conts)                                                          \
	check_len(&default_limits, input, sizeof(input) - 1, expected, conts, 0)

static void check(const char *input, const char *expected, unsigned conts)
{
	check_lim(&default_limits, input, expected, conts, 0);
}

static void test_atoms_and_strings(void **state)
{
	check("a1 NOOP\r\n", "a1 NOOP", 0);
	check("a1 NOOP\n", "a1 NOOP", 0);
	check("\r\n", "", 0);
	check("a LOGIN \"us er\" \"p\\\"a\\\\ss\"\r\n", "a LOGIN \"us er\" \"p\"a\\ss\"", 0);
	check("a LOGIN \"\" \"\"\r\n", "a LOGIN \"\" \"\"", 0);
	check("a SELECT \"INBOX\"\r\n", "a SELECT \"INBOX\"", 0);
	check("x fetch 1:* (FLAGS UID)\r\n", "x fetch 1:* (FLAGS UID)", 0);
	check("x FETCH 1 BODY.PEEK[HEADER.FIELDS (From To)]<0.100>\r\n",
	      "x FETCH 1 BODY.PEEK[HEADER.FIELDS (From To) ]<0.100>", 0);
	check("x STORE 1 +FLAGS (\\Seen \\Deleted)\r\n", "x STORE 1 +FLAGS (\\Seen \\Deleted)", 0);
	check("x LIST \"\" %\r\n", "x LIST \"\" %", 0);
	check("x LIST \"\" *\r\n", "x LIST \"\" *", 0);
	check("x ID NIL\r\n", "x ID NIL", 0);
	check("x ID nil \"NIL\"\r\n", "x ID NIL \"NIL\"", 0);
	check("x ID (\"name\" \"me\" \"os\" NIL)\r\n", "x ID (\"name\" \"me\" \"os\" NIL)", 0);
	check("x A (() (()) ((a)))\r\n", "x A (() (()) ((a)))", 0);
	check("x A ()\r\n", "x A ()", 0);
	check("x SEARCH SUBJECT \"caf\xc3\xa9\"\r\n", "x SEARCH SUBJECT \"caf\xc3\xa9\"", 0);
	/* Lenient white space: doubled or trailing spaces. */
	check("x  NOOP \r\n", "x NOOP", 0);
}

static void test_literals(void **state)
{
	check("a LOGIN {4}\r\nuser {4}\r\npass\r\n", "a LOGIN {4:user} {4:pass}", 2);
	check("a LOGIN {4+}\r\nuser {4+}\r\npass\r\n", "a LOGIN {4:user} {4:pass}", 0);
	check("a LOGIN {0}\r\n {0+}\r\n\r\n", "a LOGIN {0:} {0:}", 1);
	CHECK_BIN("a X ~{3}\r\na\0b\r\n", "a X ~{3:a0b}", 1);
	/* Literals in lists and CRLF inside a literal. */
	check("a X ({4}\r\na\r\nb {2+}\r\n()) c\r\n", "a X ({4:a\r\nb} {2:()}) c", 1);
	check("a X {5}\r\na\r\nb {2+}\r\n()\r\n", "ERR:Missing space between arguments", 1);
	check("a X {3}\r\n)\")\r\n", "a X {3:)\")}", 1);
}

static void test_continuation_and_leftover(void **state)
{
	/* Only the first command is taken; the next one stays buffered. */
	check_lim(&default_limits, "a NOOP\r\nb NOOP\r\n", "a NOOP", 0, 8);
	check_lim(&default_limits, "a X {1}\r\nz\r\nb NOOP\r\n", "a X {1:z}", 1, 8);
}

static void test_errors(void **state)
{
	check("a X \"abc\r\n", "ERR:Missing '\"'", 0);
	check("a X \"a\\bc\"\r\n", "ERR:Invalid escape in quoted string", 0);
	check("a X (a b\r\n", "ERR:Missing ')'", 0);
	check("a X a)\r\n", "ERR:Unexpected ')'", 0);
	check("a X \"a\"b\r\n", "ERR:Missing space between arguments", 0);
	check("a X {3} b\r\n", "ERR:Invalid literal", 0);
	check("a X {}\r\n", "ERR:Invalid literal", 0);
	check("a X {3x}\r\n", "ERR:Invalid literal", 0);
	check("a X {99999999999999999999}\r\n", "ERR:Literal size too large", 0);
	check("a X \x01\r\n", "ERR:Invalid character", 0);
	/* NUL in a plain literal: the rest of the command (another literal) is skipped. */
	CHECK_BIN("a X {3}\r\na\0b {2+}\r\nzz\r\n", "ERR:NUL in literal (use literal8)", 1);
	/* An error before a non-synchronising literal: its bytes are skipped, so the next
	 * command is intact. */
	check_lim(&default_limits, "a X \"\\q\" {5+}\r\nhello\r\nb NOOP\r\n",
		  "ERR:Invalid escape in quoted string", 0, 8);
	check_lim(&default_limits, "a X \"\\q\" {5+}\r\nhello {3+}\r\nabc\r\nb NOOP\r\n",
		  "ERR:Invalid escape in quoted string", 0, 8);
	/* ... but before a synchronising one the client waits: nothing more is read. */
	check_lim(&default_limits, "a X \"\\q\" {5}\r\n", "ERR:Invalid escape in quoted string", 0,
		  0);
}

static void test_limits(void **state)
{
	struct imap_parser_limits lim = default_limits;
	lim.max_depth = 2;
	check_lim(&lim, "a X ((a))\r\n", "a X ((a))", 0, 0);
	check_lim(&lim, "a X (((a)))\r\n", "ERR:Too deeply nested lists", 0, 0);

	lim = default_limits;
	lim.max_args = 4;
	check_lim(&lim, "a X (b)\r\n", "a X (b)", 0, 0);
	check_lim(&lim, "a X (b c)\r\n", "ERR:Too many arguments", 0, 0);
	check_lim(&lim, "a X b c d\r\n", "ERR:Too many arguments", 0, 0);

	lim = default_limits;
	lim.max_literal = 5;
	check_lim(&lim, "a X {5}\r\nhello\r\n", "a X {5:hello}", 1, 0);
	/* Too big and synchronising: BAD, no continuation, the client sends nothing more. */
	check_lim(&lim, "a X {6}\r\n", "ERR:[TOOBIG] Literal too large", 0, 0);
	/* Too big and non-synchronising: the connection must end (RFC 7888 §4). */
	check_lim(&lim, "a X {6+}\r\nhello!\r\n", "FATAL:[TOOBIG] Literal too large", 0, 8);

	/* The command budget: text and literals together. */
	lim = default_limits;
	lim.max_command = 20;
	check_lim(&lim, "a X {10}\r\n0123456789\r\n", "a X {10:0123456789}", 1, 0);
	check_lim(&lim, "a X {20}\r\n", "ERR:[TOOBIG] Literal too large", 0, 0);
	check_lim(&lim, "a X 0123456789012345678\r\n", "ERR:Command too long", 0, 0);
	check_lim(&lim, "a X {8}\r\n01234567 0123456789\r\n", "ERR:Command too long", 1, 0);

	/* The connection's line limit (200 in these tests) is fatal. */
	char line[400];
	memset(line, 'a', 300);
	memcpy(line + 300, "\r\n", 3);
	check_lim(&default_limits, line, "FATAL:Line too long", 0, SIZE_MAX);
}

static void test_count_and_resume(void **state)
{
	struct fixture *f = fixture_new(NULL);
	const struct imap_arg *args;
	feed(f, "t1 UID FETCH 1:3 (FLAGS)\r\n", 26);
	assert_int_equal(imap_parser_read_args(f->p, 2, &args), 2);
	assert_string_equal(args[0].str, "t1");
	assert_string_equal(args[1].str, "UID");
	assert_int_equal(args[2].type, IMAP_ARG_EOL);
	assert_false(imap_parser_eol(f->p));
	assert_int_equal(imap_parser_read_args(f->p, 3, &args), 3);
	assert_string_equal(args[2].str, "FETCH");
	assert_int_equal(imap_parser_read_args(f->p, 0, &args), 5);
	assert_true(imap_parser_eol(f->p));
	assert_int_equal(args[4].type, IMAP_ARG_LIST);
	assert_int_equal(args[4].list_count, 1);
	assert_true(imap_arg_is(&args[4].list[0], "flags"));
	imap_parser_reset(f->p);
	/* The next command after a reset. */
	feed(f, "t2 NOOP\r\n", 9);
	assert_int_equal(imap_parser_read_args(f->p, 0, &args), 2);
	assert_string_equal(args[0].str, "t2");
	fixture_free(f);
}

static void test_stream_mode(void **state)
{
	const char *in = "a APPEND INBOX (\\Seen) {11}\r\nhello world\r\nb NOOP\r\n";
	size_t len = strlen(in);
	for (size_t split = 1; split <= len; split++) {
		struct fixture *f = fixture_new(NULL);
		const struct imap_arg *args;
		size_t fed = split;
		feed(f, in, split);
		int r = imap_parser_read_args(f->p, 2, &args);
		if (r == -2) {
			feed(f, in + fed, len - fed);
			fed = len;
			r = imap_parser_read_args(f->p, 2, &args);
		}
		assert_int_equal(r, 2);
		imap_parser_set_stream_mode(f->p, true);
		r = imap_parser_read_args(f->p, 0, &args);
		if (r == -2) {
			feed(f, in + fed, len - fed);
			fed = len;
			r = imap_parser_read_args(f->p, 0, &args);
		}
		assert_int_equal(r, 5);
		assert_int_equal(args[4].type, IMAP_ARG_LITERAL_SIZE);
		assert_int_equal(args[4].literal_size, 11);
		assert_int_equal(f->in.continuations, 1);
		char body[32];
		size_t got = 0;
		for (;;) {
			const char *data;
			ssize_t n = imap_parser_read_literal_data(f->p, &data);
			if (n == 0)
				break;
			if (n == -2) {
				assert_true(fed < len);
				feed(f, in + fed, len - fed);
				fed = len;
				continue;
			}
			memcpy(body + got, data, (size_t)n);
			got += (size_t)n;
		}
		assert_int_equal(got, 11);
		assert_memory_equal(body, "hello world", 11);
		r = imap_parser_read_args(f->p, 0, &args);
		if (r == -2) {
			feed(f, in + fed, len - fed);
			fed = len;
			r = imap_parser_read_args(f->p, 0, &args);
		}
		assert_int_equal(r, 5);
		assert_true(imap_parser_eol(f->p));
		if (fed < len)
			feed(f, in + fed, len - fed);
		assert_int_equal(buf_used(&f->in.b), 8);
		fixture_free(f);
	}
}

/* Stream mode driven like APPEND, the input fed whole or one byte at a time: each read_args
 * result as "<n args, the last one>", literal bytes as "[data]", then "EOL" and the bytes
 * left unread; or "ERR:<message>". */
static void stream_run(const char *in, size_t len, bool bytewise, char *out, size_t size)
{
	struct fixture *f = fixture_new(NULL);
	imap_parser_set_stream_mode(f->p, true);
	size_t fed = bytewise ? 0 : len, o = 0;
	if (!bytewise)
		feed(f, in, len);
	out[0] = '\0';
	for (;;) {
		const struct imap_arg *args;
		int r = imap_parser_read_args(f->p, 0, &args);
		if (r == -2) {
			assert_true(fed < len);
			feed(f, in + fed++, 1);
			continue;
		}
		if (r == -1) {
			bool fatal;
			o += (size_t)snprintf(out + o, size - o, "ERR:%s",
					      imap_parser_get_error(f->p, &fatal));
			break;
		}
		const struct imap_arg *last = &args[r - 1];
		if (imap_parser_eol(f->p)) {
			o += (size_t)snprintf(out + o, size - o, "<%d> EOL", r);
			break;
		}
		assert_int_equal(last->type, IMAP_ARG_LITERAL_SIZE);
		o += (size_t)snprintf(out + o, size - o, "<%d %s%s%llu> [", r,
				      last->utf8_wrapped ? "utf8 " : "", last->literal8 ? "~" : "",
				      (unsigned long long)last->literal_size);
		for (;;) {
			const char *data;
			ssize_t n = imap_parser_read_literal_data(f->p, &data);
			if (n == 0)
				break;
			if (n == -2) {
				assert_true(fed < len);
				feed(f, in + fed++, 1);
				continue;
			}
			o += (size_t)snprintf(out + o, size - o, "%.*s", (int)n, data);
		}
		o += (size_t)snprintf(out + o, size - o, "] ");
	}
	o += (size_t)snprintf(out + o, size - o, " left %zu", buf_used(&f->in.b) + (len - fed));
	fixture_free(f);
}

static void check_stream(const char *in, const char *want)
{
	char out[512];
	for (int bytewise = 0; bytewise < 2; bytewise++) {
		stream_run(in, strlen(in), bytewise, out, sizeof(out));
		if (strcmp(out, want) != 0)
			fail_msg("%s (%s): got [%s], want [%s]", in,
				 bytewise ? "bytewise" : "whole", out, want);
	}
}

/* RFC 6855 §4: APPEND's "UTF8 (~{n}...)": the literal streams like a top-level one; the
 * parentheses are the parser's, the atom UTF8 stays in the args. */
static void test_utf8_append_data(void **state)
{
	check_stream("a APPEND INBOX UTF8 (~{4}\r\nh\xc3\xa9!)\r\nb NOOP\r\n",
		     "<5 utf8 ~4> [h\xc3\xa9!] <5> EOL left 8");
	check_stream("a APPEND INBOX (\\Seen) UTF8 (~{2}\r\nab) UTF8 (~{1}\r\nc) {1}\r\nd\r\n",
		     "<6 utf8 ~2> [ab] <8 utf8 ~1> [c] <9 1> [d] <9> EOL left 0");
	check_stream("a APPEND INBOX utf8 (~{2}\r\nab)\r\n", "<5 utf8 ~2> [ab] <5> EOL left 0");
	/* the closing parenthesis is missing, or something else comes before it */
	check_stream("a APPEND INBOX UTF8 (~{2}\r\nab\r\n",
		     "<5 utf8 ~2> [ab] ERR:Missing ')' left 0");
	check_stream("a APPEND INBOX UTF8 (~{2}\r\nab x)\r\n",
		     "<5 utf8 ~2> [ab] ERR:Missing ')' left 0");
	check_stream("a APPEND INBOX UTF8 (~{2}\r\nab))\r\n",
		     "<5 utf8 ~2> [ab] ERR:Unexpected ')' left 0");
	/* not "(~{": an ordinary list (its literal read into the arena) */
	check_stream("a APPEND INBOX UTF8 ({2}\r\nab)\r\n", "<5> EOL left 0");
	check_stream("a APPEND INBOX X (~{2}\r\nab)\r\n", "<5> EOL left 0");
	/* outside stream mode nothing changes */
	check("a X UTF8 (~{2}\r\nab)\r\n", "a X UTF8 (~{2:ab})", 1);
}

static void test_stream_limit(void **state)
{
	struct imap_parser_limits lim = default_limits;
	lim.max_stream = 10;
	struct fixture *f = fixture_new(&lim);
	const struct imap_arg *args;
	feed(f, "a APPEND INBOX {11}\r\n", 21);
	imap_parser_set_stream_mode(f->p, true);
	assert_int_equal(imap_parser_read_args(f->p, 0, &args), -1);
	bool fatal;
	assert_string_equal(imap_parser_get_error(f->p, &fatal), "[TOOBIG] Literal too large");
	assert_false(fatal);
	assert_int_equal(f->in.continuations, 0);
	fixture_free(f);
}

/* LITERAL- (RFC 7888 §4): non-synchronising literals up to 4096 octets are taken, a larger
 * one is read and dropped (the next command stays intact) and the command fails with
 * [TOOBIG]; synchronising literals keep the ordinary limits. */
static void test_literal_minus(void **state)
{
	struct imap_parser_limits lim = default_limits;
	lim.max_nonsync = 5;
	check_lim(&lim, "a X {5+}\r\nhello\r\n", "a X {5:hello}", 0, 0);
	check_lim(&lim, "a X {6+}\r\nhello!\r\nb NOOP\r\n",
		  "ERR:[TOOBIG] Non-synchronizing literal too large (LITERAL-)", 0, 8);
	/* The rest of the broken command (another literal) is skipped too. */
	check_lim(&lim, "a X {6+}\r\nhello! {2+}\r\nab\r\nb NOOP\r\n",
		  "ERR:[TOOBIG] Non-synchronizing literal too large (LITERAL-)", 0, 8);
	check_lim(&lim, "a X {6}\r\nhello!\r\n", "a X {6:hello!}", 1, 0);
	check_lim(&lim, "a X {0+}\r\n\r\n", "a X {0:}", 0, 0);
	/* Over the ordinary limit as well: still fatal. */
	lim.max_literal = 5;
	check_lim(&lim, "a X {6+}\r\nhello!\r\n", "FATAL:[TOOBIG] Literal too large", 0, 8);

	/* The real cap, with a literal of 4096 and of 4097 octets. */
	lim = default_limits;
	lim.max_nonsync = 4096;
	lim.max_literal = 8192;
	lim.max_command = 16384;
	struct fixture *f = fixture_new(&lim);
	static char data[4097];
	memset(data, 'x', sizeof(data));
	const struct imap_arg *args;
	feed(f, "a X {4096+}\r\n", 13);
	feed(f, data, 4096);
	feed(f, "\r\n", 2);
	assert_int_equal(imap_parser_read_args(f->p, 0, &args), 3);
	assert_int_equal(args[2].len, 4096);
	imap_parser_reset(f->p);
	feed(f, "b X {4097+}\r\n", 13);
	feed(f, data, 4097);
	feed(f, "\r\nc NOOP\r\n", 10);
	assert_int_equal(imap_parser_read_args(f->p, 0, &args), -1);
	bool fatal;
	assert_string_equal(imap_parser_get_error(f->p, &fatal),
			    "[TOOBIG] Non-synchronizing literal too large (LITERAL-)");
	assert_false(fatal);
	assert_int_equal(f->in.continuations, 0);
	imap_parser_reset(f->p);
	assert_int_equal(imap_parser_read_args(f->p, 0, &args), 2);
	assert_string_equal(args[0].str, "c");
	fixture_free(f);

	/* APPEND (stream mode) is capped the same way. */
	lim = default_limits;
	lim.max_nonsync = 4;
	f = fixture_new(&lim);
	feed(f, "a APPEND INBOX {5+}\r\nhello\r\nb NOOP\r\n", 36);
	imap_parser_set_stream_mode(f->p, true);
	assert_int_equal(imap_parser_read_args(f->p, 0, &args), -1);
	assert_string_equal(imap_parser_get_error(f->p, &fatal),
			    "[TOOBIG] Non-synchronizing literal too large (LITERAL-)");
	assert_false(fatal);
	assert_int_equal(buf_used(&f->in.b), 8);
	fixture_free(f);
}

static void test_arg_helpers(void **state)
{
	struct fixture *f = fixture_new(NULL);
	const struct imap_arg *args;
	feed(f, "a b \"c\" {1+}\r\nd NIL ()\r\n", 24);
	assert_int_equal(imap_parser_read_args(f->p, 0, &args), 6);
	const char *s;
	size_t len;
	assert_true(imap_arg_get_atom(&args[1], &s));
	assert_false(imap_arg_get_atom(&args[2], &s));
	assert_true(imap_arg_get_astring(&args[2], &s, &len));
	assert_true(imap_arg_get_astring(&args[3], &s, &len));
	assert_int_equal(len, 1);
	assert_false(imap_arg_get_astring(&args[4], &s, &len));
	assert_true(imap_arg_get_nstring(&args[4], &s, &len));
	assert_null(s);
	assert_false(imap_arg_get_nstring(&args[1], &s, &len));
	assert_true(imap_arg_is(&args[2], "C"));
	assert_false(imap_arg_is(&args[5], "C"));
	fixture_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_atoms_and_strings),
		cmocka_unit_test(test_literals),
		cmocka_unit_test(test_continuation_and_leftover),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_count_and_resume),
		cmocka_unit_test(test_stream_mode),
		cmocka_unit_test(test_stream_limit),
		cmocka_unit_test(test_literal_minus),
		cmocka_unit_test(test_utf8_append_data),
		cmocka_unit_test(test_arg_helpers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
