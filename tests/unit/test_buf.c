/* buf: bounded buffers, line extraction at every split, literal extraction at every split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "buf.h"

static void test_append_bound(void **state)
{
	struct buf b;
	buf_init(&b, 10);
	assert_int_equal(buf_append(&b, "12345", 5), 0);
	assert_int_equal(buf_room(&b), 5);
	assert_int_equal(buf_append(&b, "123456", 6), -ENOBUFS);
	assert_int_equal(buf_used(&b), 5);
	assert_int_equal(buf_append(&b, "67890", 5), 0);
	assert_memory_equal(buf_peek(&b), "1234567890", 10);
	buf_consume(&b, 4);
	assert_int_equal(buf_room(&b), 4);
	assert_int_equal(buf_append(&b, "abcd", 4), 0);
	assert_memory_equal(buf_peek(&b), "567890abcd", 10);
	assert_true(b.cap <= 16);
	buf_consume(&b, 10);
	assert_int_equal(buf_used(&b), 0);
	buf_release(&b);
	assert_null(b.data); /* an idle owner holds no storage */
	buf_clear(&b);
}

/* Feed input in two pieces split at every position; collect the lines found. */
static void lines_split_everywhere(const char *input, size_t max, const char *expect_joined,
				   enum buf_line_result last)
{
	size_t len = strlen(input);
	for (size_t split = 0; split <= len; split++) {
		struct buf b;
		buf_init(&b, 4096);
		char got[1024] = "";
		size_t glen = 0;
		enum buf_line_result r = BUF_LINE_MORE;
		for (int part = 0; part < 2; part++) {
			const char *p = part == 0 ? input : input + split;
			size_t n = part == 0 ? split : len - split;
			assert_int_equal(buf_append(&b, p, n), 0);
			for (;;) {
				size_t line_len, used;
				r = buf_line_find(buf_peek(&b), buf_used(&b), max, &line_len,
						  &used);
				if (r != BUF_LINE_OK)
					break;
				memcpy(got + glen, buf_peek(&b), line_len);
				glen += line_len;
				got[glen++] = '|';
				buf_consume(&b, used);
			}
			if (r == BUF_LINE_TOO_LONG)
				break;
		}
		got[glen] = '\0';
		assert_string_equal(got, expect_joined);
		assert_int_equal(r, last);
		buf_clear(&b);
	}
}

static void test_lines_crlf_and_lf(void **state)
{
	lines_split_everywhere("A1 NOOP\r\nA2 LOGOUT\nrest", 64, "A1 NOOP|A2 LOGOUT|",
			       BUF_LINE_MORE);
	lines_split_everywhere("\r\n\n", 64, "||", BUF_LINE_MORE);
	/* A CR not followed by LF is part of the line. */
	lines_split_everywhere("a\rb\r\n", 64, "a\rb|", BUF_LINE_MORE);
}

static void test_line_limit(void **state)
{
	size_t line_len, used;
	/* Exactly max bytes is accepted, with either terminator. */
	assert_int_equal(buf_line_find("abcd\r\n", 6, 4, &line_len, &used), BUF_LINE_OK);
	assert_int_equal(line_len, 4);
	assert_int_equal(used, 6);
	assert_int_equal(buf_line_find("abcd\n", 5, 4, &line_len, &used), BUF_LINE_OK);
	/* max + 1 is refused as soon as it is known, without waiting for the end. */
	assert_int_equal(buf_line_find("abcde\r\n", 7, 4, &line_len, &used), BUF_LINE_TOO_LONG);
	assert_int_equal(buf_line_find("abcdef", 6, 4, &line_len, &used), BUF_LINE_TOO_LONG);
	assert_int_equal(buf_line_find("abcde", 5, 4, &line_len, &used), BUF_LINE_MORE);
	lines_split_everywhere("ok\nthis line is far too long\n", 8, "ok|", BUF_LINE_TOO_LONG);
}

static void test_literal_split_everywhere(void **state)
{
	const char *wire = "{10}\r\n0123456789 rest\r\n";
	size_t len = strlen(wire);
	for (size_t split = 0; split <= len; split++) {
		struct buf b;
		buf_init(&b, 256);
		char lit[16] = "";
		size_t litlen = 0;
		uint64_t remaining = 0;
		int phase = 0; /* 0: header line, 1: literal, 2: rest of line */
		char rest[32] = "";
		for (int part = 0; part < 2; part++) {
			const char *p = part == 0 ? wire : wire + split;
			size_t n = part == 0 ? split : len - split;
			assert_int_equal(buf_append(&b, p, n), 0);
			for (;;) {
				size_t line_len, used;
				if (phase == 1) {
					const char *d;
					size_t got = buf_take_literal(&b, &remaining, &d);
					memcpy(lit + litlen, d, got);
					litlen += got;
					if (remaining > 0)
						break;
					phase = 2;
					continue;
				}
				if (buf_line_find(buf_peek(&b), buf_used(&b), 64, &line_len,
						  &used) != BUF_LINE_OK)
					break;
				if (phase == 0) {
					assert_memory_equal(buf_peek(&b), "{10}", 4);
					remaining = 10;
					phase = 1;
				} else {
					memcpy(rest, buf_peek(&b), line_len);
					phase = 3;
				}
				buf_consume(&b, used);
			}
		}
		assert_int_equal(litlen, 10);
		assert_memory_equal(lit, "0123456789", 10);
		assert_int_equal(phase, 3);
		assert_string_equal(rest, " rest");
		assert_int_equal(buf_used(&b), 0);
		buf_clear(&b);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_append_bound),
		cmocka_unit_test(test_lines_crlf_and_lf),
		cmocka_unit_test(test_line_limit),
		cmocka_unit_test(test_literal_split_everywhere),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
