/* The IMAP session over an in-process fake connection: exact bytes of greetings, replies,
 * the gate, limits, STARTTLS, timeouts; transcripts also fed one byte at a time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap.h"
#include "imap_fake_conn.h"

#define CAPS_BASE                                                                                  \
	"IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS CHILDREN " \
	"LIST-EXTENDED LIST-STATUS SPECIAL-USE CREATE-SPECIAL-USE ESEARCH SEARCHRES MOVE "         \
	"STATUS=SIZE "                                                                             \
	"BINARY CONDSTORE QRESYNC APPENDLIMIT=67108864 MULTIAPPEND WITHIN OBJECTID SAVEDATE "      \
	"SORT SORT=DISPLAY ESORT THREAD=ORDEREDSUBJECT THREAD=REFERENCES PREVIEW QUOTA "           \
	"QUOTA=RES-STORAGE QUOTA=RES-MESSAGE UTF8=ACCEPT"
#define CAPS_PLAIN     CAPS_BASE " AUTH=PLAIN AUTH=LOGIN"
#define GREETING_PLAIN "* OK [CAPABILITY " CAPS_PLAIN "] mailkeep ready.\r\n"
/* A starttls listener, not loopback: no plaintext login before TLS. */
#define GREETING_STARTTLS                                                                          \
	"* OK [CAPABILITY " CAPS_BASE " STARTTLS LOGINDISABLED] mailkeep ready.\r\n"

static const struct fake_conn_opts loopback = {.loopback = true};

/* Feed input whole, then again one byte at a time on a fresh session: both must give
 * expected (after the greeting) and the same closed state. */
static void transcript(const struct fake_conn_opts *opts, const char *input, const char *expected,
		       bool closed)
{
	for (int bytewise = 0; bytewise < 2; bytewise++) {
		struct conn *c = fake_conn_new(&imap_proto_ops, opts);
		free(fake_conn_take_output(c));
		if (bytewise) {
			for (const char *p = input; *p && !fake_conn_closed(c); p++)
				fake_conn_input_n(c, p, 1);
		} else {
			fake_conn_input(c, input);
		}
		char *got = fake_conn_take_output(c);
		if (strcmp(got, expected) != 0)
			fail_msg("%s input:\n%s--- got ---\n%s--- want ---\n%s---",
				 bytewise ? "bytewise" : "whole", input, got, expected);
		free(got);
		assert_int_equal(fake_conn_closed(c), closed);
		fake_conn_free(&c);
	}
}

static void test_greeting(void **state)
{
	struct conn *c = fake_conn_new(&imap_proto_ops, &loopback);
	fake_conn_expect(c, GREETING_PLAIN);
	fake_conn_free(&c);
	struct fake_conn_opts o = {.can_starttls = true};
	c = fake_conn_new(&imap_proto_ops, &o);
	fake_conn_expect(c, GREETING_STARTTLS);
	fake_conn_free(&c);
}

static void test_any_state_commands(void **state)
{
	transcript(&loopback, "a CAPABILITY\r\n",
		   "* CAPABILITY " CAPS_PLAIN "\r\n"
		   "a OK Capability completed.\r\n",
		   false);
	transcript(&loopback, "a1 NOOP\r\nA2 noop\r\n",
		   "a1 OK NOOP completed.\r\nA2 OK NOOP completed.\r\n", false);
	transcript(&loopback, "z LOGOUT\r\nnever NOOP\r\n",
		   "* BYE Logging out.\r\nz OK Logout completed.\r\n", true);
	transcript(&loopback, "\r\n\r\nb NOOP\r\n", "b OK NOOP completed.\r\n", false);
}

static void test_id(void **state)
{
	const char *reply = "* ID (\"name\" \"mailkeep\" \"version\" \"" MAILKEEP_VERSION "\")\r\n";
	char want[256];
	snprintf(want, sizeof(want), "%si OK ID completed.\r\n", reply);
	transcript(&loopback, "i ID NIL\r\n", want, false);
	transcript(&loopback, "i ID (\"name\" \"imaplib\" \"version\" NIL)\r\n", want, false);
	/* A literal in a list, with its continuation sent at once. */
	snprintf(want, sizeof(want), "+ Ready for literal data\r\n%si OK ID completed.\r\n", reply);
	transcript(&loopback, "i ID ({4}\r\nname \"x\")\r\n", want, false);
	transcript(&loopback, "i ID (\"name\")\r\n",
		   "i BAD ID needs at most 30 field-value pairs.\r\n", false);
	transcript(&loopback, "i ID\r\n", "i BAD ID needs NIL or a list of field-value pairs.\r\n",
		   false);
	transcript(&loopback, "i ID ((a) \"b\")\r\n", "i BAD Invalid ID field.\r\n", false);
}

static void test_bad_commands(void **state)
{
	transcript(&loopback, "a FOO\r\n", "a BAD Unknown command.\r\n", false);
	transcript(&loopback, "a\r\n", "a BAD Missing command.\r\n", false);
	transcript(&loopback, "a \"NOOP\"\r\n", "a BAD Invalid command name.\r\n", false);
	transcript(&loopback, "+a NOOP\r\n", "* BAD Invalid tag.\r\n", false);
	transcript(&loopback, "\"a\" NOOP\r\n", "* BAD Invalid tag.\r\n", false);
	transcript(&loopback, "a NOOP x\r\n", "a BAD Unexpected arguments.\r\n", false);
	transcript(&loopback, "a NOOP \"x\r\nb NOOP\r\n",
		   "a BAD Error in IMAP command: Missing '\"'\r\nb OK NOOP completed.\r\n", false);
	/* The rest of a bad command, literals included, is read before the answer. */
	transcript(&loopback, "a FOO {3+}\r\nabc\r\nb NOOP\r\n",
		   "a BAD Unknown command.\r\nb OK NOOP completed.\r\n", false);
	transcript(&loopback, "a FOO {3}\r\nabc\r\nb NOOP\r\n",
		   "+ Ready for literal data\r\na BAD Unknown command.\r\nb OK NOOP completed.\r\n",
		   false);
	transcript(&loopback, "a UID\r\n", "a BAD Missing UID command.\r\n", false);
	transcript(&loopback, "a UID NOOP\r\n", "a BAD Unknown UID command.\r\n", false);
}

static void test_gate(void **state)
{
	transcript(&loopback, "a ENABLE IMAP4rev2\r\n", "a BAD Please log in first.\r\n", false);
	transcript(&loopback, "a UID FOO 1\r\n", "a BAD Unknown UID command.\r\n", false);
}

static void test_too_many_bad(void **state)
{
	struct fake_conn_opts o = loopback;
	o.max_bad_commands = 3;
	transcript(&o, "a X\r\nb X\r\nc X\r\nd NOOP\r\n",
		   "a BAD Unknown command.\r\nb BAD Unknown command.\r\nc BAD Unknown command.\r\n"
		   "* BYE Too many invalid IMAP commands.\r\n",
		   true);
}

static void test_limits(void **state)
{
	struct fake_conn_opts o = loopback;
	o.max_line = 40;
	transcript(&o, "a NOOP 0123456789012345678901234567890123456789\r\n",
		   "* BYE Line too long\r\n", true);
	/* Before login a literal is capped at 8 KiB: a synchronising one gets BAD... */
	transcript(&loopback, "a ID {9000}\r\nb NOOP\r\n",
		   "a BAD Error in IMAP command: [TOOBIG] Literal too large\r\n"
		   "b OK NOOP completed.\r\n",
		   false);
	/* ... a non-synchronising one ends the connection (RFC 7888 §4). */
	transcript(&loopback, "a ID {9000+}\r\n", "* BYE [TOOBIG] Literal too large\r\n", true);
	transcript(&loopback, "a ID ((((((x))))))\r\n",
		   "a BAD Error in IMAP command: Too deeply nested lists\r\n", false);
}

static void test_starttls(void **state)
{
	struct fake_conn_opts o = {.can_starttls = true};
	struct conn *c = fake_conn_new(&imap_proto_ops, &o);
	fake_conn_expect(c, GREETING_STARTTLS);
	/* Pipelined plaintext after STARTTLS is thrown away (RFC 3501 §6.2.1). */
	fake_conn_input(c, "s STARTTLS\r\ninjected NOOP\r\n");
	fake_conn_expect(c, "s OK Begin TLS negotiation now.\r\n");
	assert_true(fake_conn_starttls_called(c));
	fake_conn_finish_starttls(c);
	fake_conn_expect(c, "");
	fake_conn_input(c, "c CAPABILITY\r\ns2 STARTTLS\r\n");
	/* After TLS: STARTTLS gone, plaintext mechanisms offered. */
	fake_conn_expect(c, "* CAPABILITY " CAPS_PLAIN "\r\n"
			    "c OK Capability completed.\r\n"
			    "s2 BAD TLS is already active.\r\n");
	fake_conn_free(&c);
	transcript(&loopback, "s STARTTLS\r\n", "s BAD TLS is not available.\r\n", false);
}

static void test_timeout_and_shutdown(void **state)
{
	struct conn *c = fake_conn_new(&imap_proto_ops, &loopback);
	free(fake_conn_take_output(c));
	assert_int_equal(fake_conn_idle_timeout(c), 1800);
	fake_conn_timeout(c);
	fake_conn_expect(c, "* BYE Disconnected for inactivity.\r\n");
	assert_true(fake_conn_closed(c));
	fake_conn_free(&c);
	c = fake_conn_new(&imap_proto_ops, &loopback);
	free(fake_conn_take_output(c));
	fake_conn_shutdown(c);
	fake_conn_expect(c, "* BYE Server shutting down.\r\n");
	fake_conn_free(&c);
}

static void test_enable_after_login_needed(void **state)
{
	/* ENABLE is an authenticated-state command (RFC 5161 §3.1). */
	transcript(&loopback, "e ENABLE X\r\n", "e BAD Please log in first.\r\n", false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting),
		cmocka_unit_test(test_any_state_commands),
		cmocka_unit_test(test_id),
		cmocka_unit_test(test_bad_commands),
		cmocka_unit_test(test_gate),
		cmocka_unit_test(test_too_many_bad),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_starttls),
		cmocka_unit_test(test_timeout_and_shutdown),
		cmocka_unit_test(test_enable_after_login_needed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
