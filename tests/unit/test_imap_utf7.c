/* imap_utf7: modified UTF-7 <-> UTF-8 for mailbox names (RFC 3501 §5.1.3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "imap_utf7.h"

static void both(const char *utf7, const char *utf8)
{
	char out[256];
	assert_int_equal(imap_utf7_to_utf8(utf7, out, sizeof(out)), 0);
	assert_string_equal(out, utf8);
	assert_int_equal(imap_utf8_to_utf7(utf8, out, sizeof(out)), 0);
	assert_string_equal(out, utf7);
}

static void test_round_trip(void **state)
{
	both("INBOX", "INBOX");
	both("", "");
	both("&-", "&");
	both("Tom &- Jerry", "Tom & Jerry");
	/* RFC 3501's example: ~peter/mail/台北/日本語 */
	both("~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/"
						"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");
	both("Entw&APw-rfe", "Entw\xc3\xbc"
			     "rfe");
	both("&AOk-t&AOk-", "\xc3\xa9t\xc3\xa9");
	/* A code point beyond the BMP: a surrogate pair. */
	both("&2D3eAA-", "\xf0\x9f\x98\x80");
	/* The names UTF8=ACCEPT sessions use in test_imap_mailbox: hierarchy, two levels. */
	both("R&AOk-sum&AOk-s.&ZeVnLA-", "R\xc3\xa9sum\xc3\xa9s.\xe6\x97\xa5\xe6\x9c\xac");
	both("&ANw-ber", "\xc3\x9c"
			 "ber");
	/* What looks like modified UTF-7, sent as UTF-8, is taken literally. */
	both("&-ANw-ber", "&ANw-ber");
}

static void test_invalid(void **state)
{
	char out[64];
	assert_int_equal(imap_utf7_to_utf8("&", out, sizeof(out)), -EINVAL);
	assert_int_equal(imap_utf7_to_utf8("&U,BTFw", out, sizeof(out)), -EINVAL);
	assert_int_equal(imap_utf7_to_utf8("&AGE-", out, sizeof(out)), -EINVAL); /* 'a' encoded */
	assert_int_equal(imap_utf7_to_utf8("&2D0-", out, sizeof(out)), -EINVAL); /* lone high */
	assert_int_equal(imap_utf7_to_utf8("&U/BTFw-", out, sizeof(out)), -EINVAL);
	assert_int_equal(imap_utf7_to_utf8("caf\xc3\xa9", out, sizeof(out)), -EINVAL);
	assert_int_equal(imap_utf7_to_utf8("&AOkA-", out, sizeof(out)), -EINVAL); /* bad padding */
	assert_int_equal(imap_utf8_to_utf7("\xc3", out, sizeof(out)), -EINVAL);
	assert_int_equal(imap_utf8_to_utf7("\xc0\xaf", out, sizeof(out)), -EINVAL); /* overlong */
	assert_int_equal(imap_utf8_to_utf7("\xed\xa0\x80", out, sizeof(out)), -EINVAL);
	assert_int_equal(imap_utf8_to_utf7("a\tb", out, sizeof(out)), -EINVAL);
	assert_int_equal(imap_utf8_to_utf7("\xc3\xa9\xc3\xa9", out, 6), -ENAMETOOLONG);
	assert_int_equal(imap_utf7_to_utf8("abcdef", out, 6), -ENAMETOOLONG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_invalid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
