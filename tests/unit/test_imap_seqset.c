/* imap_seqset: parsing, `*` and `$`, reversed ranges, merging, formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "imap_seqset.h"

/* Parse s, resolve with star, and format. */
static const char *norm(const char *s, uint32_t star)
{
	static char out[256];
	struct imap_seqset set;
	imap_seqset_init(&set);
	int r = imap_seqset_parse(&set, s, strlen(s));
	if (r < 0) {
		imap_seqset_free(&set);
		return r == -EINVAL ? "EINVAL" : "ERR";
	}
	imap_seqset_resolve(&set, star);
	imap_seqset_format(&set, out, sizeof(out));
	imap_seqset_free(&set);
	return out;
}

static void test_parse(void **state)
{
	assert_string_equal(norm("1", 10), "1");
	assert_string_equal(norm("1:3", 10), "1:3");
	assert_string_equal(norm("3:1", 10), "1:3");
	assert_string_equal(norm("1:*", 10), "1:10");
	assert_string_equal(norm("*", 10), "10");
	assert_string_equal(norm("*:4", 10), "4:10");
	assert_string_equal(norm("20:*", 10), "10:20");
	assert_string_equal(norm("1,2,3,5,7:9,8", 10), "1:3,5,7:9");
	assert_string_equal(norm("5:7,1:6", 10), "1:7");
	assert_string_equal(norm("4294967295", 10), "4294967295");
	assert_string_equal(norm("1:4294967295,7", 10), "1:4294967295");
	/* An empty mailbox: `*` is 0 and matches nothing; 1:* still names 1. */
	assert_string_equal(norm("*", 0), "");
	assert_string_equal(norm("1:*", 0), "1");
	assert_string_equal(norm("3:*", 0), "1:3");
}

static void test_invalid(void **state)
{
	assert_string_equal(norm("", 10), "EINVAL");
	assert_string_equal(norm("0", 10), "EINVAL");
	assert_string_equal(norm("0:3", 10), "EINVAL");
	assert_string_equal(norm("1:", 10), "EINVAL");
	assert_string_equal(norm(":1", 10), "EINVAL");
	assert_string_equal(norm("1,", 10), "EINVAL");
	assert_string_equal(norm(",1", 10), "EINVAL");
	assert_string_equal(norm("1::2", 10), "EINVAL");
	assert_string_equal(norm("1 2", 10), "EINVAL");
	assert_string_equal(norm("01", 10), "EINVAL");
	assert_string_equal(norm("4294967296", 10), "EINVAL");
	assert_string_equal(norm("$$", 10), "EINVAL");
	assert_string_equal(norm("$,1", 10), "EINVAL");
	assert_string_equal(norm("abc", 10), "EINVAL");
}

static void test_saved_and_star(void **state)
{
	struct imap_seqset set;
	imap_seqset_init(&set);
	assert_int_equal(imap_seqset_parse(&set, "$", 1), 0);
	assert_true(set.saved);
	assert_int_equal(set.n, 0);
	assert_int_equal(imap_seqset_parse(&set, "2:*", 3), 0);
	assert_false(set.saved);
	assert_true(set.star);
	assert_int_equal(imap_seqset_parse(&set, "2:4", 3), 0);
	assert_false(set.star);
	imap_seqset_free(&set);
}

static void test_contains_count(void **state)
{
	struct imap_seqset set;
	imap_seqset_init(&set);
	assert_int_equal(imap_seqset_parse(&set, "2:4,10,7:8", 10), 0);
	imap_seqset_resolve(&set, 100);
	assert_false(imap_seqset_contains(&set, 1));
	assert_true(imap_seqset_contains(&set, 2));
	assert_true(imap_seqset_contains(&set, 4));
	assert_false(imap_seqset_contains(&set, 5));
	assert_true(imap_seqset_contains(&set, 7));
	assert_true(imap_seqset_contains(&set, 10));
	assert_false(imap_seqset_contains(&set, 11));
	assert_int_equal(imap_seqset_count(&set), 6);
	assert_int_equal(imap_seqset_max(&set), 10);
	struct imap_seqset copy;
	imap_seqset_init(&copy);
	assert_int_equal(imap_seqset_copy(&copy, &set), 0);
	assert_int_equal(copy.n, 3);
	/* Full range counts without overflow. */
	assert_int_equal(imap_seqset_parse(&set, "1:4294967295", 12), 0);
	imap_seqset_resolve(&set, 5);
	assert_int_equal(imap_seqset_count(&set), 4294967295ULL);
	imap_seqset_free(&set);
	imap_seqset_free(&copy);
}

static void test_format_truncates(void **state)
{
	struct imap_seqset set;
	imap_seqset_init(&set);
	assert_int_equal(imap_seqset_add(&set, 1, 3), 0);
	assert_int_equal(imap_seqset_add(&set, 9, 5), 0);
	assert_int_equal(imap_seqset_add(&set, 20, 20), 0);
	imap_seqset_normalize(&set);
	char out[6];
	assert_int_equal(imap_seqset_format(&set, out, sizeof(out)), 10);
	assert_string_equal(out, "1:3,5");
	char big[32];
	imap_seqset_format(&set, big, sizeof(big));
	assert_string_equal(big, "1:3,5:9,20");
	imap_seqset_free(&set);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_saved_and_star),
		cmocka_unit_test(test_contains_count),
		cmocka_unit_test(test_format_truncates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
