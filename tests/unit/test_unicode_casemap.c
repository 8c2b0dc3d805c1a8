/* unicode_casemap: i;unicode-casemap (RFC 5051): simple titlecase, then NFKD. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "unicode_casemap.h"

/* The comparison form of s, NUL-terminated in a static buffer. */
static const char *cm(const char *s)
{
	static char out[512];
	struct buf b;
	buf_init(&b, sizeof(out) - 1);
	int r = unicode_casemap(s, strlen(s), &b);
	if (r < 0) {
		buf_clear(&b);
		return r == -ENOBUFS ? "ENOBUFS" : "ERR";
	}
	memcpy(out, b.data ? buf_peek(&b) : "", buf_used(&b));
	out[buf_used(&b)] = '\0';
	buf_clear(&b);
	return out;
}

static void test_ascii(void **state)
{
	assert_string_equal(cm(""), "");
	assert_string_equal(cm("abc XYZ 09 [re]:"), "ABC XYZ 09 [RE]:");
	assert_string_equal(cm("Hello"), cm("hELLO"));
}

static void test_latin(void **state)
{
	/* precomposed lower, precomposed upper and decomposed all map to E + U+0301 */
	assert_string_equal(cm("\xc3\xa9mile"), "E\xcc\x81MILE");
	assert_string_equal(cm("\xc3\x89MILE"), "E\xcc\x81MILE");
	assert_string_equal(cm("e\xcc\x81mile"), "E\xcc\x81MILE");
	/* sharp s has no simple titlecase mapping: it stays */
	assert_string_equal(cm("\xc3\x9f"), "\xc3\x9f");
}

static void test_titlecase_not_uppercase(void **state)
{
	/* U+01C4/U+01C5/U+01C6 (DZ with caron) all titlecase to U+01C5, which decomposes to
	 * D, z, U+030C */
	assert_string_equal(cm("\xc7\x84"), "Dz\xcc\x8c");
	assert_string_equal(cm("\xc7\x85"), "Dz\xcc\x8c");
	assert_string_equal(cm("\xc7\x86"), "Dz\xcc\x8c");
	/* Greek sigma: final and medial small sigma titlecase to capital sigma */
	assert_string_equal(cm("\xcf\x83"), "\xce\xa3");
	assert_string_equal(cm("\xcf\x82"), "\xce\xa3");
	assert_string_equal(cm("\xce\xa3"), "\xce\xa3");
}

static void test_compatibility(void **state)
{
	/* fullwidth A and a: titlecase, then NFKD to ASCII A */
	assert_string_equal(cm("\xef\xbc\xa1"), "A");
	assert_string_equal(cm("\xef\xbd\x81"), "A");
	/* the fi ligature has no titlecase mapping; NFKD makes it "fi" (after titlecasing) */
	assert_string_equal(cm("\xef\xac\x81"), "fi");
	/* superscript two */
	assert_string_equal(cm("x\xc2\xb2"), "X2");
}

static void test_invalid_utf8(void **state)
{
	/* an octet outside a valid sequence is U+FFFD */
	assert_string_equal(cm("a\xff"
			       "b"),
			    "A\xef\xbf\xbd"
			    "B");
	assert_string_equal(cm("\xc3"), "\xef\xbf\xbd");
}

static void test_bound(void **state)
{
	struct buf b;
	buf_init(&b, 3);
	assert_int_equal(unicode_casemap("abcd", 4, &b), -ENOBUFS);
	assert_int_equal(buf_used(&b), 0);
	assert_int_equal(unicode_casemap("\xc3\xa9\xc3\xa9", 4, &b), -ENOBUFS);
	assert_int_equal(buf_used(&b), 0);
	assert_int_equal(unicode_casemap("abc", 3, &b), 0);
	buf_clear(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ascii),
		cmocka_unit_test(test_latin),
		cmocka_unit_test(test_titlecase_not_uppercase),
		cmocka_unit_test(test_compatibility),
		cmocka_unit_test(test_invalid_utf8),
		cmocka_unit_test(test_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
