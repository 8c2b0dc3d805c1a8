/* base64 (RFC 4648 vectors, every malformed form) and the SASL PLAIN/LOGIN step machine
 * (initial response or not, authzid rules, cancellation, every malformed response). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "sasl.h"

static void test_base64_vectors(void **state)
{
	static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const enc[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
					  "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	for (size_t i = 0; i < 7; i++) {
		char out[16];
		uint8_t dec[16];
		assert_int_equal(base64_encode(plain[i], strlen(plain[i]), out, sizeof(out)),
				 strlen(enc[i]));
		assert_string_equal(out, enc[i]);
		assert_int_equal(base64_decode(enc[i], strlen(enc[i]), dec, sizeof(dec)),
				 strlen(plain[i]));
		assert_memory_equal(dec, plain[i], strlen(plain[i]));
	}
	/* every byte value round-trips */
	uint8_t all[256], back[256];
	char text[400];
	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	int n = base64_encode(all, 256, text, sizeof(text));
	assert_int_equal(n, 344);
	assert_int_equal(base64_decode(text, (size_t)n, back, sizeof(back)), 256);
	assert_memory_equal(all, back, 256);
	/* encode needs room for the NUL */
	char small[4];
	assert_int_equal(base64_encode("f", 1, small, 4), -ENOBUFS);
	assert_int_equal(base64_encoded_len(4), 8);
	assert_true(base64_decoded_max(8) >= 6);
}

static void test_base64_malformed(void **state)
{
	static const char *const bad[] = {
		"Z",        "Zg",    "Zg=",     "Zm9vY", /* not a multiple of 4 */
		"Zg==Zg==",                              /* padding inside */
		"Z===",     "====",  "Zm=v",    "=m9v",  /* '=' in the wrong place */
		"Zm9v\n",   "Zm 9v", " Zm9v",   "Zm9v ", /* white space */
		"Zm9-",     "Zm9_",  "Zm9\x80", "Zm\0v", /* outside the alphabet */
		"Zh==",     "Zm9=",                      /* non-zero bits under padding */
	};
	static const size_t len[] = {1, 2, 3, 5, 8, 4, 4, 4, 4, 5, 5, 5, 5, 4, 4, 4, 4, 4, 4};
	uint8_t out[16];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(base64_decode(bad[i], len[i], out, sizeof(out)), -EINVAL);
	/* output too small */
	assert_int_equal(base64_decode("Zm9vYmFy", 8, out, 5), -ENOBUFS);
}

/* base64 of arbitrary bytes, into a static buffer. */
static const char *b64(const void *p, size_t n)
{
	static char out[4096];
	assert_true(base64_encode(p, n, out, sizeof(out)) >= 0);
	return out;
}

static struct sasl *new_sasl(enum sasl_mech mech)
{
	struct sasl *s = NULL;
	assert_int_equal(sasl_new(mech, &s), 0);
	return s;
}

static void test_mech_parse(void **state)
{
	enum sasl_mech m;
	assert_int_equal(sasl_mech_parse("plain", 5, &m), 0);
	assert_int_equal(m, SASL_MECH_PLAIN);
	assert_int_equal(sasl_mech_parse("LOGIN", 5, &m), 0);
	assert_int_equal(m, SASL_MECH_LOGIN);
	assert_int_equal(sasl_mech_parse("LoGiN", 5, &m), 0);
	assert_int_equal(sasl_mech_parse("CRAM-MD5", 8, &m), -ENOENT);
	assert_int_equal(sasl_mech_parse("PLAINX", 6, &m), -ENOENT);
	assert_int_equal(sasl_mech_parse("PLAI", 4, &m), -ENOENT);
	assert_int_equal(sasl_mech_parse("", 0, &m), -ENOENT);
	assert_string_equal(sasl_mech_name(SASL_MECH_PLAIN), "PLAIN");
	assert_string_equal(sasl_mech_name(SASL_MECH_LOGIN), "LOGIN");
}

static void test_plain_initial_response(void **state)
{
	struct sasl *s = new_sasl(SASL_MECH_PLAIN);
	struct sasl_step st;
	const char *ir = b64("\0bob\0secret", 11);
	assert_int_equal(sasl_begin(s, ir, strlen(ir), &st), SASL_DONE);
	assert_string_equal(st.user, "bob");
	assert_string_equal(st.password, "secret");
	/* the exchange is over */
	assert_int_equal(sasl_continue(s, "AAAA", 4, &st), SASL_ERROR);
	assert_string_equal(st.error, "no exchange in progress");
	sasl_free(&s);
	assert_null(s);
	sasl_free(&s);
}

static void test_plain_continuation(void **state)
{
	struct sasl *s = new_sasl(SASL_MECH_PLAIN);
	struct sasl_step st;
	assert_int_equal(sasl_begin(s, NULL, 0, &st), SASL_CONTINUE);
	assert_string_equal(st.challenge, "");
	const char *r = b64("bob\0bob\0pass word", 17); /* authzid equal to authcid */
	assert_int_equal(sasl_continue(s, r, strlen(r), &st), SASL_DONE);
	assert_string_equal(st.user, "bob");
	assert_string_equal(st.password, "pass word");
	sasl_free(&s);
}

/* One PLAIN message (raw, before base64) that must be refused with the given reason, both
 * as initial response and as continuation. */
static void plain_refused(const void *raw, size_t n, const char *why)
{
	const char *r = b64(raw, n);
	char copy[4096];
	strcpy(copy, r);
	struct sasl_step st;
	struct sasl *s = new_sasl(SASL_MECH_PLAIN);
	assert_int_equal(sasl_begin(s, copy, strlen(copy), &st), SASL_ERROR);
	assert_string_equal(st.error, why);
	assert_null(st.user);
	assert_null(st.password);
	sasl_free(&s);
	s = new_sasl(SASL_MECH_PLAIN);
	assert_int_equal(sasl_begin(s, NULL, 0, &st), SASL_CONTINUE);
	assert_int_equal(sasl_continue(s, copy, strlen(copy), &st), SASL_ERROR);
	assert_string_equal(st.error, why);
	sasl_free(&s);
}

static void test_plain_malformed(void **state)
{
	plain_refused("", 0, "malformed PLAIN message");
	plain_refused("bobsecret", 9, "malformed PLAIN message");
	plain_refused("\0bobsecret", 10, "malformed PLAIN message");
	plain_refused("\0\0secret", 8, "empty user name");
	plain_refused("\0bob\0", 5, "empty password");
	plain_refused("\0bob\0sec\0ret", 12, "invalid character in password");
	plain_refused("alice\0bob\0secret", 16, "authorization identity differs from user name");
	plain_refused("bo\0bob\0secret", 13, "authorization identity differs from user name");
	plain_refused("bobb\0bob\0secret", 15, "authorization identity differs from user name");
	plain_refused("\0b\tb\0secret", 11, "invalid character in user name");
	plain_refused("\0b\x7f"
		      "b\0secret",
		      11, "invalid character in user name");
	plain_refused("\0b\nb\0secret", 11, "invalid character in user name");

	char big[AUTH_WIRE_MAX_USER * 2 + AUTH_WIRE_MAX_PASSWORD + 8];
	/* user one byte over the cap */
	big[0] = '\0';
	memset(big + 1, 'u', AUTH_WIRE_MAX_USER + 1);
	big[AUTH_WIRE_MAX_USER + 2] = '\0';
	big[AUTH_WIRE_MAX_USER + 3] = 'p';
	plain_refused(big, AUTH_WIRE_MAX_USER + 4, "user name too long");
	/* password one byte over */
	memcpy(big, "\0u\0", 3);
	memset(big + 3, 'p', AUTH_WIRE_MAX_PASSWORD + 1);
	plain_refused(big, AUTH_WIRE_MAX_PASSWORD + 4, "password too long");
	/* both at the cap, with an equal authzid: accepted */
	size_t o = 0;
	memset(big, 'u', AUTH_WIRE_MAX_USER);
	o = AUTH_WIRE_MAX_USER;
	big[o++] = '\0';
	memset(big + o, 'u', AUTH_WIRE_MAX_USER);
	o += AUTH_WIRE_MAX_USER;
	big[o++] = '\0';
	memset(big + o, 'p', AUTH_WIRE_MAX_PASSWORD);
	o += AUTH_WIRE_MAX_PASSWORD;
	const char *r = b64(big, o);
	assert_true(strlen(r) <= SASL_MAX_RESPONSE);
	struct sasl *s = new_sasl(SASL_MECH_PLAIN);
	struct sasl_step st;
	assert_int_equal(sasl_begin(s, r, strlen(r), &st), SASL_DONE);
	assert_int_equal(strlen(st.user), AUTH_WIRE_MAX_USER);
	assert_int_equal(strlen(st.password), AUTH_WIRE_MAX_PASSWORD);
	sasl_free(&s);
}

/* Responses that are not base64, too long, or an empty "=" initial response. */
static void test_plain_bad_base64(void **state)
{
	static const char *const bad[] = {"AGJvYgBzZWNyZXQ",
					  "AGJvYgBzZWNyZXQ=\r",
					  "AGJvYgBz ZWNyZXQ=",
					  "!!!!",
					  "*x",
					  "AGJvYgBzZWNyZXR=",
					  "**"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct sasl_step st;
		struct sasl *s = new_sasl(SASL_MECH_PLAIN);
		assert_int_equal(sasl_begin(s, bad[i], strlen(bad[i]), &st), SASL_ERROR);
		assert_string_equal(st.error, "invalid base64");
		sasl_free(&s);
		s = new_sasl(SASL_MECH_PLAIN);
		sasl_begin(s, NULL, 0, &st);
		assert_int_equal(sasl_continue(s, bad[i], strlen(bad[i]), &st), SASL_ERROR);
		assert_string_equal(st.error, "invalid base64");
		sasl_free(&s);
	}
	/* sanity: the valid form of the first one */
	struct sasl_step st;
	struct sasl *s = new_sasl(SASL_MECH_PLAIN);
	assert_int_equal(sasl_begin(s, "AGJvYgBzZWNyZXQ=", 16, &st), SASL_DONE);
	sasl_free(&s);

	/* "*" as an initial response is not a cancellation, just bad base64 */
	s = new_sasl(SASL_MECH_PLAIN);
	assert_int_equal(sasl_begin(s, "*", 1, &st), SASL_ERROR);
	assert_string_equal(st.error, "invalid base64");
	sasl_free(&s);

	/* "=" is an empty initial response: an empty PLAIN message */
	s = new_sasl(SASL_MECH_PLAIN);
	assert_int_equal(sasl_begin(s, "=", 1, &st), SASL_ERROR);
	assert_string_equal(st.error, "malformed PLAIN message");
	sasl_free(&s);

	/* longer than any valid response: refused before decoding */
	char *huge = malloc(SASL_MAX_RESPONSE + 5);
	memset(huge, 'A', SASL_MAX_RESPONSE + 4);
	s = new_sasl(SASL_MECH_PLAIN);
	assert_int_equal(sasl_begin(s, huge, SASL_MAX_RESPONSE + 4, &st), SASL_ERROR);
	assert_string_equal(st.error, "response too long");
	sasl_free(&s);
	free(huge);
}

static void test_cancel(void **state)
{
	struct sasl_step st;
	struct sasl *s = new_sasl(SASL_MECH_PLAIN);
	sasl_begin(s, NULL, 0, &st);
	assert_int_equal(sasl_continue(s, "*", 1, &st), SASL_CANCELLED);
	assert_null(st.user);
	assert_int_equal(sasl_continue(s, "*", 1, &st), SASL_ERROR);
	sasl_free(&s);

	s = new_sasl(SASL_MECH_LOGIN);
	sasl_begin(s, NULL, 0, &st);
	assert_int_equal(sasl_continue(s, "*", 1, &st), SASL_CANCELLED);
	sasl_free(&s);

	s = new_sasl(SASL_MECH_LOGIN);
	sasl_begin(s, NULL, 0, &st);
	assert_int_equal(sasl_continue(s, "Ym9i", 4, &st), SASL_CONTINUE);
	assert_int_equal(sasl_continue(s, "*", 1, &st), SASL_CANCELLED);
	sasl_free(&s);
}

static void test_login_exchange(void **state)
{
	struct sasl_step st;
	struct sasl *s = new_sasl(SASL_MECH_LOGIN);
	assert_int_equal(sasl_begin(s, NULL, 0, &st), SASL_CONTINUE);
	assert_string_equal(st.challenge, "VXNlcm5hbWU6"); /* "Username:" */
	assert_int_equal(sasl_continue(s, "Ym9i", 4, &st), SASL_CONTINUE);
	assert_string_equal(st.challenge, "UGFzc3dvcmQ6"); /* "Password:" */
	assert_int_equal(sasl_continue(s, "c2VjcmV0", 8, &st), SASL_DONE);
	assert_string_equal(st.user, "bob");
	assert_string_equal(st.password, "secret");
	sasl_free(&s);

	/* the user name as initial response */
	s = new_sasl(SASL_MECH_LOGIN);
	assert_int_equal(sasl_begin(s, "Ym9i", 4, &st), SASL_CONTINUE);
	assert_string_equal(st.challenge, "UGFzc3dvcmQ6");
	assert_int_equal(sasl_continue(s, "c2VjcmV0", 8, &st), SASL_DONE);
	assert_string_equal(st.user, "bob");
	sasl_free(&s);
}

/* LOGIN step (1 = user, 2 = password) given line must fail with why. */
static void login_refused(int step, const char *line, size_t len, const char *why)
{
	struct sasl_step st;
	struct sasl *s = new_sasl(SASL_MECH_LOGIN);
	sasl_begin(s, NULL, 0, &st);
	if (step == 2)
		assert_int_equal(sasl_continue(s, "Ym9i", 4, &st), SASL_CONTINUE);
	assert_int_equal(sasl_continue(s, line, len, &st), SASL_ERROR);
	assert_string_equal(st.error, why);
	assert_null(st.user);
	/* nothing more is accepted */
	assert_int_equal(sasl_continue(s, "Ym9i", 4, &st), SASL_ERROR);
	sasl_free(&s);
}

static void test_login_malformed(void **state)
{
	login_refused(1, "", 0, "empty user name");
	login_refused(1, "Ym9", 3, "invalid base64");
	login_refused(1, "Ym9i\r", 5, "invalid base64");
	login_refused(1, "AGJvYg==", 8, "invalid character in user name"); /* "\0bob" */
	login_refused(1, "Ym9iCg==", 8, "invalid character in user name"); /* "bob\n" */
	login_refused(2, "", 0, "empty password");
	login_refused(2, "c2Vj", 3, "invalid base64");
	login_refused(2, "cwBz", 4, "invalid character in password"); /* "s\0s" */
	login_refused(2, "=", 1, "invalid base64");

	char user[AUTH_WIRE_MAX_USER + 1];
	memset(user, 'u', sizeof(user));
	const char *r = b64(user, sizeof(user));
	char copy[4096];
	strcpy(copy, r);
	login_refused(1, copy, strlen(copy), "user name too long");
	char pw[AUTH_WIRE_MAX_PASSWORD + 1];
	memset(pw, 'p', sizeof(pw));
	strcpy(copy, b64(pw, sizeof(pw)));
	login_refused(2, copy, strlen(copy), "password too long");

	/* "=" as LOGIN initial response: an empty user name */
	struct sasl_step st;
	struct sasl *s = new_sasl(SASL_MECH_LOGIN);
	assert_int_equal(sasl_begin(s, "=", 1, &st), SASL_ERROR);
	assert_string_equal(st.error, "empty user name");
	sasl_free(&s);
}

static void test_misuse(void **state)
{
	struct sasl_step st;
	struct sasl *s = new_sasl(SASL_MECH_PLAIN);
	/* continue before begin */
	assert_int_equal(sasl_continue(s, "AAAA", 4, &st), SASL_ERROR);
	assert_string_equal(st.error, "no exchange in progress");
	sasl_free(&s);
	s = new_sasl(SASL_MECH_LOGIN);
	sasl_begin(s, NULL, 0, &st);
	assert_int_equal(sasl_begin(s, NULL, 0, &st), SASL_ERROR);
	assert_string_equal(st.error, "exchange already started");
	sasl_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64_vectors),
		cmocka_unit_test(test_base64_malformed),
		cmocka_unit_test(test_mech_parse),
		cmocka_unit_test(test_plain_initial_response),
		cmocka_unit_test(test_plain_continuation),
		cmocka_unit_test(test_plain_malformed),
		cmocka_unit_test(test_plain_bad_base64),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_login_exchange),
		cmocka_unit_test(test_login_malformed),
		cmocka_unit_test(test_misuse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
