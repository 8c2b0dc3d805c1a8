/* auth policy: plaintext rules, failure limit, user-name validation, mail paths, and the
 * privilege drop skipped when not root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "process.h"

static void test_plaintext(void **state)
{
	struct config cfg = {.allow_plaintext_auth = false};
	assert_true(auth_plaintext_allowed(&cfg, true, false));
	assert_true(auth_plaintext_allowed(&cfg, false, true));
	assert_true(auth_plaintext_allowed(&cfg, true, true));
	assert_false(auth_plaintext_allowed(&cfg, false, false));
	cfg.allow_plaintext_auth = true;
	assert_true(auth_plaintext_allowed(&cfg, false, false));
}

static void test_failures_exceeded(void **state)
{
	struct config cfg = {.auth_max_failures = 3};
	assert_false(auth_failures_exceeded(&cfg, 0));
	assert_false(auth_failures_exceeded(&cfg, 2));
	assert_true(auth_failures_exceeded(&cfg, 3));
	assert_true(auth_failures_exceeded(&cfg, 4));
	cfg.auth_max_failures = 0;
	assert_false(auth_failures_exceeded(&cfg, 1000));
}

static void test_user_names(void **state)
{
	static const char *const good[] = {"bob",   "bob.smith", "b",   "bob@example.org",
					   "b-o_b", "..x" + 2,   "Bob", "user name",
					   "b.."};
	static const char *const bad[] = {"",       ".bob",  "..",   ".",     "a/b",  "/",
					  "../etc", "bob\n", "b\tb", "b\x7f", "b\x01"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_true(auth_user_name_valid(good[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(auth_user_name_valid(bad[i]));
	char max[AUTH_WIRE_MAX_USER + 2];
	memset(max, 'u', sizeof(max));
	max[AUTH_WIRE_MAX_USER] = '\0';
	assert_true(auth_user_name_valid(max));
	max[AUTH_WIRE_MAX_USER] = 'u';
	max[AUTH_WIRE_MAX_USER + 1] = '\0';
	assert_false(auth_user_name_valid(max));
}

static void test_mail_path(void **state)
{
	struct config cfg = {.mail_root = (char *)"/var/mail/%u/Maildir"};
	char out[64];
	assert_int_equal(auth_user_mail_path(&cfg, "bob", out, sizeof(out)), 0);
	assert_string_equal(out, "/var/mail/bob/Maildir");
	cfg.mail_root = (char *)"/srv/%u/%u%%x";
	assert_int_equal(auth_user_mail_path(&cfg, "al", out, sizeof(out)), 0);
	assert_string_equal(out, "/srv/al/al%%x");
	cfg.mail_root = (char *)"/srv/shared";
	assert_int_equal(auth_user_mail_path(&cfg, "al", out, sizeof(out)), 0);
	assert_string_equal(out, "/srv/shared");
	cfg.mail_root = (char *)"/m/%u";
	/* exactly fitting, and one byte short */
	assert_int_equal(auth_user_mail_path(&cfg, "abc", out, 7), 0);
	assert_string_equal(out, "/m/abc");
	assert_int_equal(auth_user_mail_path(&cfg, "abcd", out, 7), -ENAMETOOLONG);
	assert_int_equal(auth_user_mail_path(&cfg, "abc", out, 0), -ENAMETOOLONG);
	/* invalid names never reach the path */
	assert_int_equal(auth_user_mail_path(&cfg, "../root", out, sizeof(out)), -EINVAL);
	assert_int_equal(auth_user_mail_path(&cfg, ".hidden", out, sizeof(out)), -EINVAL);
	assert_int_equal(auth_user_mail_path(&cfg, "a/b", out, sizeof(out)), -EINVAL);
	assert_int_equal(auth_user_mail_path(&cfg, "", out, sizeof(out)), -EINVAL);
	cfg.mail_root = NULL;
	assert_int_equal(auth_user_mail_path(&cfg, "bob", out, sizeof(out)), -EINVAL);
}

/* Not root: nothing changes and it says so (as root, test_auth_root covers the drop). */
static void test_drop_skipped_when_not_root(void **state)
{
	if (geteuid() == 0 || getuid() == 0)
		skip();
	uid_t u = getuid();
	struct config cfg = {.mail_user = (char *)"nobody"};
	assert_int_equal(process_drop_privileges(&cfg), 0);
	assert_int_equal(getuid(), u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plaintext),
		cmocka_unit_test(test_failures_exceeded),
		cmocka_unit_test(test_user_names),
		cmocka_unit_test(test_mail_path),
		cmocka_unit_test(test_drop_skipped_when_not_root),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
