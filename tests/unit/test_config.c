/* config: defaults, IPv6, and every kind of error with its line number. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config.h"

static struct config *load_ok(const char *text)
{
	struct config *cfg = NULL;
	struct config_errors errs;
	int r = config_load_string("t.conf", text, strlen(text), &cfg, &errs);
	for (size_t i = 0; i < errs.n; i++)
		fprintf(stderr, "unexpected: %u: %s\n", errs.items[i].line, errs.items[i].message);
	assert_int_equal(r, 0);
	assert_int_equal(errs.n, 0);
	config_errors_free(&errs);
	return cfg;
}

/* Load text that must fail with exactly one error on line `line` whose text contains `what`. */
static void expect_error(const char *text, unsigned line, const char *what)
{
	struct config *cfg = NULL;
	struct config_errors errs;
	int r = config_load_string("t.conf", text, strlen(text), &cfg, &errs);
	assert_int_equal(r, -EINVAL);
	assert_null(cfg);
	if (errs.n != 1 || errs.items[0].line != line || !strstr(errs.items[0].message, what)) {
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "got: %s:%u: %s\n", errs.items[i].file, errs.items[i].line,
				errs.items[i].message);
		fail_msg("expected one error on line %u containing '%s'", line, what);
	}
	assert_string_equal(errs.items[0].file, "t.conf");
	config_errors_free(&errs);
}

static void test_defaults(void **state)
{
	struct config *cfg = load_ok("[listener imap]\nprotocol = imap\n");
	assert_string_equal(cfg->mail_root, "/var/lib/mailkeep/mail");
	assert_int_equal(cfg->mail_format, MAIL_FORMAT_MAILDIR);
	assert_string_equal(cfg->mail_user, "mailkeep");
	assert_string_equal(cfg->pam_service, "mailkeep");
	assert_null(cfg->pam_confdir);
	assert_null(cfg->mbox_inbox);
	assert_int_equal(cfg->mbox_variant, MBOX_VARIANT_MBOXO);
	assert_int_equal(cfg->mbox_lock_timeout, 10);
	assert_false(cfg->allow_plaintext_auth);
	assert_int_equal(cfg->max_connections, 10000);
	assert_int_equal(cfg->max_connections_per_address, 500);
	assert_int_equal(cfg->output_high_watermark, 128 * 1024);
	assert_int_equal(cfg->output_low_watermark, 32 * 1024);
	assert_string_equal(cfg->tls_priority, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2");
	assert_int_equal(cfg->tls_handshake_timeout, 30);
	assert_int_equal(cfg->n_listeners, 1);
	const struct config_listener *l = config_listener_find(cfg, "imap");
	assert_non_null(l);
	assert_string_equal(l->protocol, "imap");
	assert_int_equal(l->port, 143);
	assert_int_equal(l->tls, LISTENER_TLS_NONE);
	assert_int_equal(l->n_addresses, 1);
	assert_string_equal(l->addresses[0], "*");
	assert_int_equal(l->idle_timeout, 0);
	assert_int_equal(l->max_bad_commands, 20);
	assert_int_equal(l->line, 1);
	config_unref(&cfg);
	assert_null(cfg);
}

static void test_default_ports(void **state)
{
	struct config *cfg =
		load_ok("[tls]\ncert = /c.pem\nkey = /k.pem\n"
			"[listener a]\nprotocol = imap\ntls = implicit\n"
			"[listener b]\nprotocol = pop3\n"
			"[listener c]\nprotocol = pop3\ntls = implicit\n"
			"[listener d]\nprotocol = imap\ntls = starttls\nport = 1143\n");
	assert_int_equal(config_listener_find(cfg, "a")->port, 993);
	assert_int_equal(config_listener_find(cfg, "b")->port, 110);
	assert_int_equal(config_listener_find(cfg, "c")->port, 995);
	assert_int_equal(config_listener_find(cfg, "d")->port, 1143);
	assert_int_equal(config_listener_find(cfg, "d")->tls, LISTENER_TLS_STARTTLS);
	config_unref(&cfg);
}

static void test_values_and_comments(void **state)
{
	struct config *cfg = load_ok("; a comment\n# another\n\n"
				     "[server]\n"
				     "mail_root = /srv/mail/%u   ; %u expands to the user\n"
				     "allow_plaintext_auth = YES\n"
				     "output_high_watermark = 1M\n"
				     "output_low_watermark = 64KiB\n"
				     "pam_service = \"mail;keep\"\n"
				     "[listener v6]\n"
				     "protocol = pop3\n"
				     "address = ::1, 127.0.0.1 [fe80::1]\n"
				     "port = 1110\n"
				     "idle_timeout = 60\n");
	assert_string_equal(cfg->mail_root, "/srv/mail/%u");
	assert_true(cfg->allow_plaintext_auth);
	assert_int_equal(cfg->output_high_watermark, 1024 * 1024);
	assert_int_equal(cfg->output_low_watermark, 64 * 1024);
	assert_string_equal(cfg->pam_service, "mail;keep");
	const struct config_listener *l = config_listener_find(cfg, "v6");
	assert_int_equal(l->n_addresses, 3);
	assert_string_equal(l->addresses[0], "::1");
	assert_string_equal(l->addresses[1], "127.0.0.1");
	assert_string_equal(l->addresses[2], "fe80::1");
	assert_int_equal(l->idle_timeout, 60);
	config_unref(&cfg);
}

static void test_same_port_other_address(void **state)
{
	/* The same port on distinct specific addresses is fine. */
	struct config *cfg = load_ok("[listener a]\nprotocol = imap\naddress = 127.0.0.1\n"
				     "[listener b]\nprotocol = imap\naddress = ::1\n");
	config_unref(&cfg);
}

static void test_errors(void **state)
{
	expect_error("[server]\nmail_rot = /x\n[listener x]\nprotocol = imap\n", 2,
		     "unknown setting 'mail_rot' in [server]");
	expect_error("[listener x]\nprotocol = IMAP 4\n", 2, "protocol must be a lower-case name");
	expect_error("[listener x]\nprotocol = imap\nport = 70000\n", 3,
		     "port must be between 1 and 65535");
	expect_error("[listener x]\nprotocol = imap\nport = 14x\n", 3, "whole number");
	expect_error("[listener x]\nprotocol = imap\ntls = maybe\n", 3,
		     "tls must be one of none, starttls, implicit");
	expect_error("[listener x]\nprotocol = imap\naddress = 300.1.1.1\n", 3,
		     "not an IPv4 or IPv6 address");
	expect_error("[listener x]\nprotocol = imap\ntls = implicit\n", 3,
		     "uses TLS but [tls] has no cert");
	expect_error("[tls]\ncert = /c.pem\n[listener x]\nprotocol = imap\ntls = starttls\n", 5,
		     "uses TLS but [tls] has no key");
	expect_error("[listener x]\nprotocol = imap\n[listener y]\nprotocol = pop3\nport = 143\n",
		     5, "uses port 143, already used by listener 'x' (line 1)");
	expect_error("[listener x]\nprotocol = imap\naddress=127.0.0.1\n"
		     "[listener y]\nprotocol = imap\naddress = 0.0.0.0\n",
		     4, "uses port 143");
	expect_error("[listener x]\nprotocol = imap\n[listener x]\nprotocol = pop3\n", 3,
		     "listener 'x' is defined twice");
	expect_error("[listener x]\n", 1, "needs protocol = imap or pop3");
	expect_error("[listener]\nprotocol = imap\n", 1, "[listener] needs a name");
	expect_error("[imap]\n", 1, "unknown section [imap]");
	expect_error("protocol = imap\n", 1, "outside any section");
	expect_error("[server\n", 1, "section header must look like [name]");
	expect_error("[server]\njust words\n[listener x]\nprotocol = imap\n", 2,
		     "expected 'key = value'");
	expect_error("[server]\nallow_plaintext_auth = perhaps\n[listener x]\nprotocol = imap\n", 2,
		     "must be yes or no");
	expect_error("[server]\nmail_root = relative/path\n[listener x]\nprotocol = imap\n", 2,
		     "absolute path");
	expect_error("[server]\nmax_connections = 0\n[listener x]\nprotocol = imap\n", 2,
		     "between 1 and");
	expect_error("[server]\nlog_level = loud\n[listener x]\nprotocol = imap\n", 2,
		     "log_level must be");
	expect_error("[server]\noutput_high_watermark = 2Q\n[listener x]\nprotocol = imap\n", 2,
		     "size");
	expect_error("[server]\noutput_low_watermark = 1M\n[listener x]\nprotocol = imap\n", 2,
		     "below output_high_watermark");
	expect_error("[server]\nmail_user = a\nmail_user = b\n[listener x]\nprotocol = imap\n", 3,
		     "already set on line 2");
	expect_error("[server]\n[server]\n[listener x]\nprotocol = imap\n", 2,
		     "[server] appears twice");
	expect_error("[server]\npam_service = \"open\n[listener x]\nprotocol = imap\n", 2,
		     "unterminated quoted value");
	expect_error("[server]\nmail_format = mbox\nmbox_variant = mboxcl2\n[listener x]\n"
		     "protocol = imap\n",
		     3, "mbox_variant must be one of mboxo, mboxrd");
	expect_error("[server]\nmbox_lock_timeout = 601\n[listener x]\nprotocol = imap\n", 2,
		     "mbox_lock_timeout");
	expect_error("[server]\nmbox_inbox = var/mail/%u\n[listener x]\nprotocol = imap\n", 2,
		     "mbox_inbox");
	expect_error("[server]\n", 0, "no [listener NAME] section");
	{ /* an embedded NUL byte */
		static const char nul[] =
			"[server]\nmail_user = a\0b\n[listener x]\nprotocol = imap\n";
		struct config *cfg = NULL;
		struct config_errors errs;
		assert_int_equal(config_load_string("t.conf", nul, sizeof(nul) - 1, &cfg, &errs),
				 -EINVAL);
		assert_int_equal(errs.n, 1);
		assert_int_equal(errs.items[0].line, 2);
		assert_non_null(strstr(errs.items[0].message, "NUL"));
		config_errors_free(&errs);
	}
}

static void test_all_errors_reported(void **state)
{
	const char *text =
		"[server]\nbogus = 1\nmax_connections = x\n[listener a]\nprotocol = Q!\n";
	struct config *cfg = NULL;
	struct config_errors errs;
	assert_int_equal(config_load_string("t.conf", text, strlen(text), &cfg, &errs), -EINVAL);
	/* Each error once, on its own line; no second error for the listener that follows. */
	assert_int_equal(errs.n, 3);
	assert_int_equal(errs.items[0].line, 2);
	assert_int_equal(errs.items[1].line, 3);
	assert_int_equal(errs.items[2].line, 5);
	config_errors_free(&errs);
}

static void test_check_protocols(void **state)
{
	static const char *const built[] = {"imap", "pop3"};
	struct config *cfg = load_ok("[listener a]\nprotocol = imap\n\n[listener b]\nport = 25\n"
				     "protocol = smtp\n");
	struct config_errors errs = {0};
	assert_int_equal(config_check_protocols(cfg, built, 2, &errs), -EINVAL);
	assert_int_equal(errs.n, 1);
	assert_int_equal(errs.items[0].line, 6);
	assert_string_equal(errs.items[0].message,
			    "protocol smtp is not served by this build (it serves: imap, pop3)");
	config_errors_free(&errs);
	config_unref(&cfg);
}

static void test_missing_file(void **state)
{
	struct config *cfg = NULL;
	struct config_errors errs;
	assert_int_equal(config_load("/nonexistent/mailkeep.conf", &cfg, &errs), -ENOENT);
	assert_int_equal(errs.n, 1);
	assert_int_equal(errs.items[0].line, 0);
	config_errors_free(&errs);
}

/* Quota: [server] defaults, [user NAME] overrides (a key left unset takes [server]'s, wherever
 * [server] is in the file), sizes with suffixes, and every bad value with its line. */
static void test_quota(void **state)
{
	(void)state;
	struct config *cfg = load_ok("[listener imap]\nprotocol = imap\n");
	assert_int_equal(cfg->quota_storage, 0);
	assert_int_equal(cfg->quota_messages, 0);
	assert_int_equal(cfg->n_users, 0);
	uint64_t st;
	unsigned msgs;
	config_user_quota(cfg, "alice", &st, &msgs);
	assert_int_equal(st, 0);
	assert_int_equal(msgs, 0);
	unsigned long gen1 = cfg->generation;
	config_unref(&cfg);

	cfg = load_ok("[user alice]\nquota_storage = 2G\n\n"
		      "[user bob@example.org]\nquota_messages = 7\n\n"
		      "[user carol]\nquota_storage = 0\nquota_messages = 0\n\n"
		      "[server]\nquota_storage = 10M\nquota_messages = 1000\n\n"
		      "[listener imap]\nprotocol = imap\n");
	assert_true(cfg->generation > gen1);
	assert_int_equal(cfg->quota_storage, 10 * 1024 * 1024);
	assert_int_equal(cfg->quota_messages, 1000);
	assert_int_equal(cfg->n_users, 3);
	config_user_quota(cfg, "alice", &st, &msgs);
	assert_int_equal(st, 2ULL * 1024 * 1024 * 1024);
	assert_int_equal(msgs, 1000);
	config_user_quota(cfg, "bob@example.org", &st, &msgs);
	assert_int_equal(st, 10 * 1024 * 1024);
	assert_int_equal(msgs, 7);
	config_user_quota(cfg, "carol", &st, &msgs);
	assert_int_equal(st, 0);
	assert_int_equal(msgs, 0);
	config_user_quota(cfg, "Alice", &st, &msgs); /* exact names */
	assert_int_equal(st, 10 * 1024 * 1024);
	assert_int_equal(msgs, 1000);
	assert_non_null(config_user_find(cfg, "carol"));
	assert_int_equal(config_user_find(cfg, "carol")->line, 7);
	assert_null(config_user_find(cfg, "dave"));
	config_unref(&cfg);

	cfg = load_ok("[server]\nquota_storage = 16384G\n[listener imap]\nprotocol = imap\n");
	assert_int_equal(cfg->quota_storage, 1ULL << 44);
	config_unref(&cfg);

	const char *L = "[listener imap]\nprotocol = imap\n";
	char text[512];
	snprintf(text, sizeof(text), "%s[server]\nquota_storage = lots\n", L);
	expect_error(text, 4, "quota_storage must be a size (like 64K or 1M), not 'lots'");
	snprintf(text, sizeof(text), "%s[server]\nquota_storage = 16385G\n", L);
	expect_error(text, 4, "quota_storage must be between 0 and 17592186044416");
	snprintf(text, sizeof(text), "%s[server]\nquota_messages = 10K\n", L);
	expect_error(text, 4, "quota_messages must be a whole number, not '10K'");
	snprintf(text, sizeof(text), "%s[server]\nquota_messages = -1\n", L);
	expect_error(text, 4, "quota_messages must be a whole number, not '-1'");
	snprintf(text, sizeof(text), "%s[user alice]\nquota_messages = 4000000001\n", L);
	expect_error(text, 4, "quota_messages must be between 0 and 4000000000");
	snprintf(text, sizeof(text), "%s[user alice]\nquota_storage = 1X\n", L);
	expect_error(text, 4, "quota_storage must be a size");
	snprintf(text, sizeof(text), "%s[user alice]\nquota_storage = 1M\nquota_storage = 2M\n", L);
	expect_error(text, 5, "quota_storage is already set on line 4");
	snprintf(text, sizeof(text), "%s[user alice]\n[user bob]\n[user alice]\n", L);
	expect_error(text, 5, "user 'alice' is defined twice (line 3)");
	snprintf(text, sizeof(text), "%s[user]\nquota_storage = 1M\n", L);
	expect_error(text, 3, "[user] needs a name");
	snprintf(text, sizeof(text), "%s[user a/b]\n", L);
	expect_error(text, 3, "user name 'a/b' must be 1 to 255 bytes");
	snprintf(text, sizeof(text), "%s[user .x]\n", L);
	expect_error(text, 3, "not starting with '.'");
	snprintf(text, sizeof(text), "%s[user alice]\nport = 143\n", L);
	expect_error(text, 4, "unknown setting 'port' in [user]");
	snprintf(text, sizeof(text), "%s[users alice]\n", L);
	expect_error(text, 3,
		     "unknown section [users] (expected [server], [tls], [listener NAME] "
		     "or [user NAME])");
}

static void test_settings_table(void **state)
{
	size_t n = config_setting_count();
	assert_true(n > 20);
	for (size_t i = 0; i < n; i++) {
		const struct config_setting_doc *d = config_setting_get(i);
		assert_non_null(d->key);
		assert_true(strlen(d->doc) > 10);
	}
	assert_null(config_setting_get(n));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_default_ports),
		cmocka_unit_test(test_values_and_comments),
		cmocka_unit_test(test_same_port_other_address),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_all_errors_reported),
		cmocka_unit_test(test_check_protocols),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_quota),
		cmocka_unit_test(test_settings_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
