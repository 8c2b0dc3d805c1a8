/* pop3_parse and pop3_dot: the command line splitter, strict numbers, and the RETR/TOP body
 * transform fed in chunks split at every byte (and at every pair of positions for short
 * inputs), compared byte for byte with the expected wire form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "pop3_dot.h"
#include "pop3_parse.h"

static void assert_token(struct pop3_token t, const char *s)
{
	assert_int_equal(t.len, strlen(s));
	assert_memory_equal(t.p, s, t.len);
}

static void test_parse_command(void **state)
{
	struct pop3_command cmd;
	const char *l = "RETR 1";
	assert_int_equal(pop3_parse_command(l, strlen(l), &cmd), POP3_PARSE_OK);
	assert_token(cmd.keyword, "RETR");
	assert_token(cmd.rest, "1");

	l = "quit";
	assert_int_equal(pop3_parse_command(l, strlen(l), &cmd), POP3_PARSE_OK);
	assert_token(cmd.keyword, "quit");
	assert_int_equal(cmd.rest.len, 0);

	/* PASS keeps every byte after the one separator, spaces included. */
	l = "PASS  two words ";
	assert_int_equal(pop3_parse_command(l, strlen(l), &cmd), POP3_PARSE_OK);
	assert_token(cmd.keyword, "PASS");
	assert_token(cmd.rest, " two words ");

	l = "  NOOP";
	assert_int_equal(pop3_parse_command(l, strlen(l), &cmd), POP3_PARSE_OK);
	assert_token(cmd.keyword, "NOOP");

	assert_int_equal(pop3_parse_command("", 0, &cmd), POP3_PARSE_EMPTY);
	assert_int_equal(pop3_parse_command("   ", 3, &cmd), POP3_PARSE_EMPTY);
	assert_int_equal(pop3_parse_command("RETRX 1", 7, &cmd), POP3_PARSE_BAD);
	assert_int_equal(pop3_parse_command("RE\0R", 4, &cmd), POP3_PARSE_BAD);
	assert_int_equal(pop3_parse_command("R\x80", 2, &cmd), POP3_PARSE_BAD);
	assert_int_equal(pop3_parse_command("R\tT", 3, &cmd), POP3_PARSE_BAD);

	/* RFC 2449: 255 octets with CRLF, so 253 without. */
	char line[300];
	memset(line, 'a', sizeof(line));
	memcpy(line, "USER ", 5);
	assert_int_equal(pop3_parse_command(line, 253, &cmd), POP3_PARSE_OK);
	assert_int_equal(cmd.rest.len, 248);
	assert_int_equal(pop3_parse_command(line, 254, &cmd), POP3_PARSE_TOO_LONG);
}

static void test_parse_args(void **state)
{
	struct pop3_token t[2];
	struct pop3_token in = {"1  20 ", 6};
	assert_int_equal(pop3_parse_args(in, t, 2), 2);
	assert_token(t[0], "1");
	assert_token(t[1], "20");
	in = (struct pop3_token){"1 2 3", 5};
	assert_int_equal(pop3_parse_args(in, t, 2), -1);
	in = (struct pop3_token){"   ", 3};
	assert_int_equal(pop3_parse_args(in, t, 2), 0);
	in = (struct pop3_token){"", 0};
	assert_int_equal(pop3_parse_args(in, t, 0), 0);
	in = (struct pop3_token){"x", 1};
	assert_int_equal(pop3_parse_args(in, t, 0), -1);
}

static void test_parse_uint(void **state)
{
	uint32_t n = 7;
	assert_true(pop3_parse_uint((struct pop3_token){"1", 1}, &n));
	assert_int_equal(n, 1);
	assert_true(pop3_parse_uint((struct pop3_token){"4294967295", 10}, &n));
	assert_int_equal(n, 4294967295u);
	assert_true(pop3_parse_uint((struct pop3_token){"007", 3}, &n));
	assert_int_equal(n, 7);
	assert_true(pop3_parse_uint((struct pop3_token){"0", 1}, &n));
	assert_int_equal(n, 0);
	assert_false(pop3_parse_uint((struct pop3_token){"4294967296", 10}, &n));
	assert_false(pop3_parse_uint((struct pop3_token){"99999999999", 11}, &n));
	assert_false(pop3_parse_uint((struct pop3_token){"", 0}, &n));
	assert_false(pop3_parse_uint((struct pop3_token){"+1", 2}, &n));
	assert_false(pop3_parse_uint((struct pop3_token){"-1", 2}, &n));
	assert_false(pop3_parse_uint((struct pop3_token){"1x", 2}, &n));
	assert_true(pop3_token_equals((struct pop3_token){"uIdL", 4}, "UIDL"));
	assert_false(pop3_token_equals((struct pop3_token){"UID", 3}, "UIDL"));
}

/* A growable output collector for the filter. */
struct out {
	char *p;
	size_t len, cap;
	size_t calls;
};

static void out_fn(void *ctx, const char *data, size_t len)
{
	struct out *o = ctx;
	assert_true(len > 0); /* the filter never makes empty writes */
	if (o->len + len > o->cap) {
		o->cap = (o->len + len) * 2;
		o->p = realloc(o->p, o->cap);
		assert_non_null(o->p);
	}
	memcpy(o->p + o->len, data, len);
	o->len += len;
	o->calls++;
}

/* Run the transform over in (inlen bytes) cut at the given split points. */
static void dot_run(const char *in, size_t inlen, const size_t *cuts, size_t ncuts, bool convert,
		    bool limited, uint32_t lines, struct out *o)
{
	struct pop3_dot d;
	pop3_dot_init(&d, convert, limited, lines);
	size_t prev = 0;
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : inlen;
		pop3_dot_feed(&d, in + prev, end - prev, out_fn, o);
		prev = end;
	}
	pop3_dot_finish(&d, out_fn, o);
	pop3_dot_finish(&d, out_fn, o); /* idempotent */
}

static void dot_check(const char *in, bool convert, bool limited, uint32_t lines,
		      const char *expect)
{
	size_t inlen = strlen(in), elen = strlen(expect);
	struct out o = {0};
	dot_run(in, inlen, NULL, 0, convert, limited, lines, &o);
	assert_int_equal(o.len, elen);
	assert_memory_equal(o.p, expect, elen);
	for (size_t a = 0; a <= inlen; a++) {
		for (size_t b = a; b <= inlen; b++) {
			size_t cuts[2] = {a, b};
			o.len = 0;
			dot_run(in, inlen, cuts, 2, convert, limited, lines, &o);
			if (o.len != elen || memcmp(o.p, expect, elen) != 0)
				fail_msg("split at %zu,%zu of \"%s\": got \"%.*s\"", a, b, in,
					 (int)o.len, o.p);
		}
	}
	free(o.p);
}

static void test_dot_retr(void **state)
{
	/* Plain CRLF message passes through and gets the terminator. */
	dot_check("Subject: x\r\n\r\nbody\r\n", false, false, 0, "Subject: x\r\n\r\nbody\r\n.\r\n");
	/* Lines starting with '.' get one more. */
	dot_check("A: b\r\n\r\n.\r\n..x\r\n.hidden\r\nend.\r\n", false, false, 0,
		  "A: b\r\n\r\n..\r\n...x\r\n..hidden\r\nend.\r\n.\r\n");
	/* A '.' as the very first byte. */
	dot_check(".x\r\n", false, false, 0, "..x\r\n.\r\n");
	/* Bare LF becomes CRLF when converting; existing CRLF is kept. */
	dot_check("A: b\n\n.dot\nmixed\r\nlast\n", true, false, 0,
		  "A: b\r\n\r\n..dot\r\nmixed\r\nlast\r\n.\r\n");
	/* No final newline: CRLF is added before the terminator. */
	dot_check("A: b\r\n\r\nno newline", false, false, 0, "A: b\r\n\r\nno newline\r\n.\r\n");
	dot_check("A: b\n\n.", true, false, 0, "A: b\r\n\r\n..\r\n.\r\n");
	/* A trailing CR without LF only needs the LF. */
	dot_check("A: b\r\n\r\nx\r", false, false, 0, "A: b\r\n\r\nx\r\n.\r\n");
	/* Empty message. */
	dot_check("", false, false, 0, ".\r\n");
	dot_check("", true, false, 0, ".\r\n");
	/* Bare CR inside a line is data. */
	dot_check("a\rb\n", true, false, 0, "a\rb\r\n.\r\n");
	/* Binary bytes pass through. */
	dot_check("\x01\xff\n", true, false, 0, "\x01\xff\r\n.\r\n");
}

static void test_dot_top(void **state)
{
	const char *msg = "From: a\r\nTo: b\r\n\r\nl1\r\n.l2\r\nl3\r\n";
	dot_check(msg, false, true, 0, "From: a\r\nTo: b\r\n\r\n.\r\n");
	dot_check(msg, false, true, 1, "From: a\r\nTo: b\r\n\r\nl1\r\n.\r\n");
	dot_check(msg, false, true, 2, "From: a\r\nTo: b\r\n\r\nl1\r\n..l2\r\n.\r\n");
	dot_check(msg, false, true, 3, "From: a\r\nTo: b\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n");
	dot_check(msg, false, true, 100, "From: a\r\nTo: b\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n");
	/* Bare LF on disk. */
	dot_check("From: a\n\nl1\nl2\n", true, true, 1, "From: a\r\n\r\nl1\r\n.\r\n");
	/* No body at all, and no final newline in the header. */
	dot_check("From: a\r\nTo: b", false, true, 5, "From: a\r\nTo: b\r\n.\r\n");
	/* The body ends without newline inside the count. */
	dot_check("H: 1\n\nonly", true, true, 3, "H: 1\r\n\r\nonly\r\n.\r\n");
	/* A header line that starts with '.' (broken, but must still be stuffed). */
	dot_check(".H: 1\n\nb\n", true, true, 0, "..H: 1\r\n\r\n.\r\n");
}

static void test_dot_stops(void **state)
{
	struct pop3_dot d;
	struct out o = {0};
	pop3_dot_init(&d, false, true, 1);
	pop3_dot_feed(&d, "H: 1\r\n\r\nb1\r\nb2\r\n", 16, out_fn, &o);
	assert_true(pop3_dot_stopped(&d));
	pop3_dot_feed(&d, "more\r\n", 6, out_fn, &o); /* ignored */
	pop3_dot_finish(&d, out_fn, &o);
	assert_int_equal(o.len, 15);
	assert_memory_equal(o.p, "H: 1\r\n\r\nb1\r\n.\r\n", 15);
	free(o.p);

	/* RETR of a long CRLF text goes out in one write per chunk (no per-line calls). */
	size_t n = 100000;
	char *big = malloc(n);
	for (size_t i = 0; i < n; i++)
		big[i] = (i % 100 == 98) ? '\r' : (i % 100 == 99) ? '\n' : 'x';
	struct out o2 = {0};
	pop3_dot_init(&d, true, false, 0);
	pop3_dot_feed(&d, big, n, out_fn, &o2);
	assert_false(pop3_dot_stopped(&d));
	assert_int_equal(o2.calls, 1);
	assert_int_equal(o2.len, n);
	assert_memory_equal(o2.p, big, n);
	free(big);
	free(o2.p);
}

/* A 10,000-character line split into chunks of every size from 1 to 64. */
static void test_dot_long_line(void **state)
{
	size_t n = 10000;
	char *in = malloc(n + 2);
	memset(in, 'y', n);
	in[0] = '.';
	in[n] = '\n';
	in[n + 1] = 0;
	for (size_t chunk = 1; chunk <= 64; chunk++) {
		struct pop3_dot d;
		struct out o = {0};
		pop3_dot_init(&d, true, false, 0);
		for (size_t off = 0; off < n + 1; off += chunk)
			pop3_dot_feed(&d, in + off, off + chunk > n + 1 ? n + 1 - off : chunk,
				      out_fn, &o);
		pop3_dot_finish(&d, out_fn, &o);
		assert_int_equal(o.len, 1 + n + 2 + 3);
		assert_memory_equal(o.p, ".", 1);
		assert_memory_equal(o.p + 1, in, n);
		assert_memory_equal(o.p + 1 + n, "\r\n.\r\n", 5);
		free(o.p);
	}
	free(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_command), cmocka_unit_test(test_parse_args),
		cmocka_unit_test(test_parse_uint),    cmocka_unit_test(test_dot_retr),
		cmocka_unit_test(test_dot_top),       cmocka_unit_test(test_dot_stops),
		cmocka_unit_test(test_dot_long_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
