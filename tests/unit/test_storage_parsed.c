/* view_msg_parsed: parse once, then serve from the folder's cache, across restarts; a bad
 * blob is parsed again. Links the whole storage room (the MIME parser included). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg_parse.h"
#include "storage_test.h"

static const char *msg_text = "From: =?UTF-8?Q?J=C3=BCrgen?= <j@example.org>\r\n"
			      "To: a@example.com\r\n"
			      "Subject: report\r\n"
			      "Message-ID: <1@example.org>\r\n"
			      "MIME-Version: 1.0\r\n"
			      "Content-Type: multipart/mixed; boundary=XX\r\n"
			      "\r\n"
			      "--XX\r\n"
			      "Content-Type: text/plain; charset=utf-8\r\n"
			      "\r\n"
			      "hello\r\n"
			      "--XX\r\n"
			      "Content-Type: application/pdf; name=a.pdf\r\n"
			      "Content-Transfer-Encoding: base64\r\n"
			      "\r\n"
			      "JVBERi0xLjQK\r\n"
			      "--XX--\r\n";

static void expect_same(struct msg_parsed *got)
{
	struct msg_source src = msg_source_mem(msg_text, strlen(msg_text));
	struct msg_parsed *ref;
	assert_int_equal(msg_parse(&src, NULL, &ref), 0);
	size_t a, b;
	const char *ea = msg_parsed_envelope(ref, &a), *eb = msg_parsed_envelope(got, &b);
	assert_int_equal(a, b);
	assert_memory_equal(ea, eb, a);
	ea = msg_parsed_bodystructure(ref, &a);
	eb = msg_parsed_bodystructure(got, &b);
	assert_int_equal(a, b);
	assert_memory_equal(ea, eb, a);
	msg_parsed_free(&ref);
}

static void test_parsed_cache(void **state)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	char *dir = st_tmpdir();
	char root[4200];
	snprintf(root, sizeof(root), "%s/u", dir);
	struct store *store;
	struct mailbox *m;
	struct view *v;
	assert_int_equal(st_store_open(&loop, root, &store), 0);
	assert_int_equal(mailbox_open(store, "INBOX", &m), 0);
	uint32_t uid = st_append(m, msg_text, 0);
	assert_int_equal(view_new(m, VIEW_IMAP, NULL, NULL, &v), 0);
	const void *blob;
	size_t len;
	assert_int_equal(mailbox_cache_get(m, uid, &blob, &len), -ENOENT);
	struct msg_parsed *p;
	assert_int_equal(view_msg_parsed(v, 1, &p), 0);
	expect_same(p);
	msg_parsed_free(&p);
	assert_int_equal(mailbox_cache_get(m, uid, &blob, &len), 0); /* cached now */
	assert_true(len > 0);
	assert_int_equal(view_msg_parsed(v, 2, &p), -ERANGE);
	view_free(&v);
	mailbox_unref(&m);
	store_unref(&store);
	st_loop_close(&loop);

	/* after a restart: from the cache (same blob), same strings */
	uv_loop_init(&loop);
	assert_int_equal(st_store_open(&loop, root, &store), 0);
	assert_int_equal(mailbox_open(store, "INBOX", &m), 0);
	assert_int_equal(view_new(m, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(mailbox_cache_get(m, uid, &blob, &len), 0);
	assert_int_equal(view_msg_parsed(v, 1, &p), 0);
	expect_same(p);
	msg_parsed_free(&p);
	/* a blob that does not deserialize is replaced by a fresh parse */
	assert_int_equal(mailbox_cache_put(m, uid, "garbage", 7), 0);
	assert_int_equal(view_msg_parsed(v, 1, &p), 0);
	expect_same(p);
	msg_parsed_free(&p);
	assert_int_equal(mailbox_cache_get(m, uid, &blob, &len), 0);
	assert_true(len > 7);
	view_free(&v);
	mailbox_unref(&m);
	store_unref(&store);
	st_loop_close(&loop);
	st_rmdir(&dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parsed_cache),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
