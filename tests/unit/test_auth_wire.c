/* auth_wire: exact bytes of encoded frames, decoding split at every byte, field caps,
 * oversized declared lengths and every kind of malformed frame. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "auth_wire.h"

static struct auth_wire_request sample_request(void)
{
	struct auth_wire_request req = {.id = 0x01020304, .local_port = 143, .tls = true};
	strcpy(req.service, "mk");
	strcpy(req.user, "bob");
	strcpy(req.password, "pw");
	strcpy(req.address, "::1");
	return req;
}

static const uint8_t sample_request_bytes[] = {
	0, 0,   0,   26,       /* body length */
	1, 1,   2,   3,   4,   /* type, id */
	0, 143, 1,             /* port, tls */
	0, 2,   'm', 'k',      /* service */
	0, 3,   'b', 'o', 'b', /* user */
	0, 2,   'p', 'w',      /* password */
	0, 3,   ':', ':', '1', /* address */
};

static void test_request_encode_exact(void **state)
{
	struct auth_wire_request req = sample_request();
	uint8_t out[AUTH_WIRE_MAX_FRAME];
	int n = auth_wire_request_encode(&req, out, sizeof(out));
	assert_int_equal(n, sizeof(sample_request_bytes));
	assert_memory_equal(out, sample_request_bytes, sizeof(sample_request_bytes));
	/* too small an output buffer */
	assert_int_equal(auth_wire_request_encode(&req, out, sizeof(sample_request_bytes) - 1),
			 -EMSGSIZE);
}

static void test_reply_encode_exact(void **state)
{
	struct auth_wire_reply r = {.id = 7, .result = AUTH_RESULT_OK};
	strcpy(r.user, "Bob");
	strcpy(r.reason, "ok");
	static const uint8_t expect[] = {0, 0, 0,   15,  2,   0, 0, 0,   7,  0,
					 0, 3, 'B', 'o', 'b', 0, 2, 'o', 'k'};
	uint8_t out[64];
	assert_int_equal(auth_wire_reply_encode(&r, out, sizeof(out)), sizeof(expect));
	assert_memory_equal(out, expect, sizeof(expect));
}

static void test_encode_refuses_invalid(void **state)
{
	uint8_t out[AUTH_WIRE_MAX_FRAME];
	struct auth_wire_request req = sample_request();
	req.id = 0;
	assert_int_equal(auth_wire_request_encode(&req, out, sizeof(out)), -EINVAL);
	req = sample_request();
	req.user[0] = '\0';
	assert_int_equal(auth_wire_request_encode(&req, out, sizeof(out)), -EINVAL);
	req = sample_request();
	req.service[0] = '\0';
	assert_int_equal(auth_wire_request_encode(&req, out, sizeof(out)), -EINVAL);

	struct auth_wire_reply r = {.id = 1, .result = AUTH_RESULT_OK};
	assert_int_equal(auth_wire_reply_encode(&r, out, sizeof(out)), -EINVAL); /* OK needs user */
	r.result = AUTH_RESULT_PERMFAIL;
	strcpy(r.user, "x");
	assert_int_equal(auth_wire_reply_encode(&r, out, sizeof(out)), -EINVAL); /* fail has none */
	r.user[0] = '\0';
	r.result = (enum auth_result)9;
	assert_int_equal(auth_wire_reply_encode(&r, out, sizeof(out)), -EINVAL);
}

/* Fields at their caps round-trip; one byte over is refused by the encoder. */
static void test_field_caps(void **state)
{
	struct auth_wire_request req = sample_request();
	memset(req.service, 's', AUTH_WIRE_MAX_SERVICE);
	req.service[AUTH_WIRE_MAX_SERVICE] = '\0';
	memset(req.user, 'u', AUTH_WIRE_MAX_USER);
	req.user[AUTH_WIRE_MAX_USER] = '\0';
	memset(req.password, 'p', AUTH_WIRE_MAX_PASSWORD);
	req.password[AUTH_WIRE_MAX_PASSWORD] = '\0';
	memset(req.address, 'a', AUTH_WIRE_MAX_ADDRESS);
	req.address[AUTH_WIRE_MAX_ADDRESS] = '\0';
	uint8_t out[AUTH_WIRE_MAX_FRAME];
	int n = auth_wire_request_encode(&req, out, sizeof(out));
	assert_int_equal(n, AUTH_WIRE_MAX_FRAME);

	struct auth_wire_decoder d;
	struct auth_wire_request got;
	size_t used;
	auth_wire_decoder_init(&d, AUTH_WIRE_TYPE_REQUEST);
	assert_int_equal(auth_wire_decoder_feed_request(&d, out, (size_t)n, &used, &got), 1);
	assert_int_equal(used, (size_t)n);
	assert_memory_equal(&got, &req, sizeof(req));

	/* a field without its NUL within the cap: the encoder refuses it */
	char over[AUTH_WIRE_MAX_PASSWORD + 2];
	memset(over, 'p', sizeof(over));
	memcpy(got.password, over, sizeof(got.password)); /* no NUL at all */
	assert_int_equal(auth_wire_request_encode(&got, out, sizeof(out)), -EMSGSIZE);
}

/* Two frames back to back, split into three pieces at every pair of positions. */
static void test_decode_every_split(void **state)
{
	struct auth_wire_request a = sample_request(), b = sample_request();
	b.id = 99;
	b.tls = false;
	memset(b.password, 0, sizeof(b.password));
	memset(b.address, 0, sizeof(b.address));
	uint8_t stream[2 * AUTH_WIRE_MAX_FRAME];
	int na = auth_wire_request_encode(&a, stream, sizeof(stream));
	int nb = auth_wire_request_encode(&b, stream + na, sizeof(stream) - (size_t)na);
	assert_true(na > 0 && nb > 0);
	size_t total = (size_t)(na + nb);

	for (size_t s1 = 0; s1 <= total; s1++) {
		for (size_t s2 = s1; s2 <= total; s2++) {
			struct auth_wire_decoder d;
			struct auth_wire_request got[3];
			size_t ngot = 0;
			size_t cuts[4] = {0, s1, s2, total};
			auth_wire_decoder_init(&d, AUTH_WIRE_TYPE_REQUEST);
			for (int piece = 0; piece < 3; piece++) {
				const uint8_t *p = stream + cuts[piece];
				size_t left = cuts[piece + 1] - cuts[piece];
				while (left > 0) {
					size_t used = 0;
					int r = auth_wire_decoder_feed_request(&d, p, left, &used,
									       &got[ngot]);
					assert_true(r >= 0);
					assert_true(used <= left && (used > 0 || r == 1));
					if (r == 1)
						ngot++;
					p += used;
					left -= used;
				}
			}
			assert_int_equal(ngot, 2);
			assert_memory_equal(&got[0], &a, sizeof(a));
			assert_memory_equal(&got[1], &b, sizeof(b));
			assert_true(auth_wire_decoder_idle(&d));
		}
	}
}

/* Byte by byte, a reply stream. */
static void test_decode_reply_bytewise(void **state)
{
	struct auth_wire_reply r = {.id = 5, .result = AUTH_RESULT_EXPIRED};
	strcpy(r.reason, "Authentication token is no longer valid");
	uint8_t out[AUTH_WIRE_MAX_FRAME];
	int n = auth_wire_reply_encode(&r, out, sizeof(out));
	struct auth_wire_decoder d;
	struct auth_wire_reply got;
	auth_wire_decoder_init(&d, AUTH_WIRE_TYPE_REPLY);
	for (int i = 0; i < n; i++) {
		size_t used;
		int rc = auth_wire_decoder_feed_reply(&d, out + i, 1, &used, &got);
		assert_int_equal(used, 1);
		assert_int_equal(rc, i == n - 1 ? 1 : 0);
	}
	assert_int_equal(got.id, 5);
	assert_int_equal(got.result, AUTH_RESULT_EXPIRED);
	assert_string_equal(got.user, "");
	assert_string_equal(got.reason, r.reason);
}

static int decode_request_bytes(const uint8_t *p, size_t n)
{
	struct auth_wire_decoder d;
	struct auth_wire_request got;
	size_t used = 0, off = 0;
	int r = 0;
	auth_wire_decoder_init(&d, AUTH_WIRE_TYPE_REQUEST);
	while (off < n) {
		r = auth_wire_decoder_feed_request(&d, p + off, n - off, &used, &got);
		off += used;
		if (r != 0)
			return r;
	}
	return r;
}

static int decode_reply_bytes(const uint8_t *p, size_t n)
{
	struct auth_wire_decoder d;
	struct auth_wire_reply got;
	size_t used = 0, off = 0;
	int r = 0;
	auth_wire_decoder_init(&d, AUTH_WIRE_TYPE_REPLY);
	while (off < n) {
		r = auth_wire_decoder_feed_reply(&d, p + off, n - off, &used, &got);
		off += used;
		if (r != 0)
			return r;
	}
	return r;
}

/* A declared length above the largest body is refused from the header alone. */
static void test_oversized_length(void **state)
{
	uint32_t big = AUTH_WIRE_MAX_REQUEST_BODY + 1;
	uint8_t hdr[4] = {(uint8_t)(big >> 24), (uint8_t)(big >> 16), (uint8_t)(big >> 8),
			  (uint8_t)big};
	struct auth_wire_decoder d;
	struct auth_wire_request got;
	size_t used;
	auth_wire_decoder_init(&d, AUTH_WIRE_TYPE_REQUEST);
	assert_int_equal(auth_wire_decoder_feed_request(&d, hdr, 4, &used, &got), -EBADMSG);
	assert_int_equal(used, 4);
	uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
	assert_int_equal(decode_request_bytes(huge, 4), -EBADMSG);
	/* a reply decoder has the smaller reply bound */
	uint32_t rb = AUTH_WIRE_MAX_REPLY_BODY + 1;
	uint8_t rhdr[4] = {0, 0, (uint8_t)(rb >> 8), (uint8_t)rb};
	assert_int_equal(decode_reply_bytes(rhdr, 4), -EBADMSG);
	/* too short to be any request */
	uint8_t tiny[4] = {0, 0, 0, AUTH_WIRE_MIN_REQUEST_BODY - 1};
	assert_int_equal(decode_request_bytes(tiny, 4), -EBADMSG);
	uint8_t zero[4] = {0, 0, 0, 0};
	assert_int_equal(decode_reply_bytes(zero, 4), -EBADMSG);
}

/* Mutations of the sample request, each malformed in one way. */
static void test_malformed_requests(void **state)
{
	uint8_t m[sizeof(sample_request_bytes) + 8];
	size_t n = sizeof(sample_request_bytes);

	assert_int_equal(decode_request_bytes(sample_request_bytes, n), 1);

#define MUTATE(off, val)                                                                           \
	do {                                                                                       \
		memcpy(m, sample_request_bytes, n);                                                \
		m[off] = (val);                                                                    \
		assert_int_equal(decode_request_bytes(m, n), -EBADMSG);                            \
	} while (0)
	MUTATE(4, 2); /* a reply where a request belongs */
	MUTATE(4, 0); /* unknown type */
	memcpy(m, sample_request_bytes, n);
	m[5] = m[6] = m[7] = m[8] = 0;
	assert_int_equal(decode_request_bytes(m, n), -EBADMSG);
	MUTATE(11, 2);    /* tls neither 0 nor 1 */
	MUTATE(13, 3);    /* service length runs into the next field: trailing mismatch */
	MUTATE(13, 0);    /* empty service: then bytes left over */
	MUTATE(18, 0);    /* NUL inside the user */
	MUTATE(12, 0xff); /* service length 0xff02, above the cap */
	MUTATE(26, 9);    /* address length past the end of the body */
#undef MUTATE

	/* empty service and user with a consistent body */
	static const uint8_t empty_user[] = {0, 0, 0, 17,  1, 0, 0, 0, 1, 0, 143,
					     0, 0, 1, 's', 0, 0, 0, 0, 0, 0};
	assert_int_equal(decode_request_bytes(empty_user, sizeof(empty_user)), -EBADMSG);

	/* trailing garbage inside the declared body */
	memcpy(m, sample_request_bytes, n);
	m[3] = 27;
	m[n] = 'x';
	assert_int_equal(decode_request_bytes(m, n + 1), -EBADMSG);

	/* a field one byte above its cap, with the body long enough to hold it */
	uint8_t big[AUTH_WIRE_MAX_FRAME + 16];
	size_t o = 4;
	big[o++] = 1;
	big[o++] = 0, big[o++] = 0, big[o++] = 0, big[o++] = 1;
	big[o++] = 0, big[o++] = 143, big[o++] = 0;
	big[o++] = 0, big[o++] = 1, big[o++] = 's';
	big[o++] = 0, big[o++] = 1, big[o++] = 'u';
	big[o++] = (AUTH_WIRE_MAX_PASSWORD + 1) >> 8;
	big[o++] = (AUTH_WIRE_MAX_PASSWORD + 1) & 0xff;
	memset(big + o, 'p', AUTH_WIRE_MAX_PASSWORD + 1);
	o += AUTH_WIRE_MAX_PASSWORD + 1;
	big[o++] = 0, big[o++] = 0;
	size_t body = o - 4;
	big[0] = 0, big[1] = 0, big[2] = (uint8_t)(body >> 8), big[3] = (uint8_t)body;
	assert_true(body <= AUTH_WIRE_MAX_REQUEST_BODY);
	assert_int_equal(decode_request_bytes(big, o), -EBADMSG);
	/* the same at exactly the cap is fine */
	memmove(big + 20 + AUTH_WIRE_MAX_PASSWORD, big + 21 + AUTH_WIRE_MAX_PASSWORD, 2);
	big[18] = AUTH_WIRE_MAX_PASSWORD >> 8;
	big[19] = AUTH_WIRE_MAX_PASSWORD & 0xff;
	body--;
	big[2] = (uint8_t)(body >> 8), big[3] = (uint8_t)body;
	assert_int_equal(decode_request_bytes(big, o - 1), 1);
}

static void test_malformed_replies(void **state)
{
	static const uint8_t ok[] = {0, 0, 0, 13, 2, 0, 0, 0, 7, 0, 0, 1, 'b', 0, 2, 'o', 'k'};
	uint8_t m[sizeof(ok)];
	assert_int_equal(decode_reply_bytes(ok, sizeof(ok)), 1);
#define MUTATE(off, val)                                                                           \
	do {                                                                                       \
		memcpy(m, ok, sizeof(ok));                                                         \
		m[off] = (val);                                                                    \
		assert_int_equal(decode_reply_bytes(m, sizeof(m)), -EBADMSG);                      \
	} while (0)
	MUTATE(4, 1);  /* a request where a reply belongs */
	MUTATE(8, 0);  /* id 0 */
	MUTATE(9, 4);  /* result out of range */
	MUTATE(9, 1);  /* PERMFAIL with a user */
	MUTATE(12, 0); /* NUL in the user */
	MUTATE(14, 3); /* reason past the end */
	MUTATE(14, 1); /* bytes left over */
#undef MUTATE
	/* OK without a user */
	static const uint8_t ok_nouser[] = {0, 0, 0, 10, 2, 0, 0, 0, 7, 0, 0, 0, 0, 0};
	assert_int_equal(decode_reply_bytes(ok_nouser, sizeof(ok_nouser)), -EBADMSG);
	/* wrong decoder direction */
	struct auth_wire_decoder d;
	struct auth_wire_request req;
	size_t used;
	auth_wire_decoder_init(&d, AUTH_WIRE_TYPE_REPLY);
	assert_int_equal(auth_wire_decoder_feed_request(&d, ok, sizeof(ok), &used, &req), -EBADMSG);
}

static void test_result_names(void **state)
{
	assert_string_equal(auth_result_name(AUTH_RESULT_OK), "ok");
	assert_string_equal(auth_result_name(AUTH_RESULT_PERMFAIL), "permfail");
	assert_string_equal(auth_result_name(AUTH_RESULT_TEMPFAIL), "tempfail");
	assert_string_equal(auth_result_name(AUTH_RESULT_EXPIRED), "expired");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_encode_exact),
		cmocka_unit_test(test_reply_encode_exact),
		cmocka_unit_test(test_encode_refuses_invalid),
		cmocka_unit_test(test_field_caps),
		cmocka_unit_test(test_decode_every_split),
		cmocka_unit_test(test_decode_reply_bytewise),
		cmocka_unit_test(test_oversized_length),
		cmocka_unit_test(test_malformed_requests),
		cmocka_unit_test(test_malformed_replies),
		cmocka_unit_test(test_result_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
