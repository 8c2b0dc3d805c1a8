/* Quota accounting (issue 7, RFC 9208): the user's usage over every folder follows append,
 * copy, move, expunge, folder delete and rename, mail delivered behind the store's back, and
 * is counted again to the same numbers after a restart; limits refuse an append or a copy
 * that would pass them and leave nothing behind; a move within the user is always allowed.
 * Back-end independent: also run as test_storage_quota_mbox (MK_STORE_FORMAT=mbox). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "mailbox_private.h"
#include "storage_test.h"

#define MSG_A  "Subject: a\r\n\r\nfirst body.\r\n"          /* 27 bytes */
#define MSG_B  "Subject: b\r\n\r\nsecond, longer body.\r\n" /* 36 bytes */
#define MSG_LF "Subject: lf\n\nbare\nline feeds!\n"         /* 30 bytes, 34 with CRLF */

struct fx {
	uv_loop_t loop;
	char *dir;
	char root[4096];
	struct store *store;
	struct mailbox *inbox;
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	uv_loop_init(&fx->loop);
	fx->dir = st_tmpdir();
	snprintf(fx->root, sizeof(fx->root), "%s/u", fx->dir);
	assert_int_equal(st_store_open(&fx->loop, fx->root, &fx->store), 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->inbox), 0);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	mailbox_unref(&fx->inbox);
	store_unref(&fx->store);
	st_loop_close(&fx->loop);
	st_rmdir(&fx->dir);
	free(fx);
	return 0;
}

/* Limits from a config text's [server] section (no [user NAME] section applies). */
static void set_limits(struct store *store, const char *storage, const char *messages)
{
	char text[512];
	snprintf(text, sizeof(text),
		 "[server]\nquota_storage = %s\nquota_messages = %s\n"
		 "[listener imap]\nprotocol = imap\n",
		 storage, messages);
	struct config *cfg;
	struct config_errors errs;
	assert_int_equal(config_load_string("t.conf", text, strlen(text), &cfg, &errs), 0);
	store_quota_configure(store, cfg);
	config_unref(&cfg);
}

static void expect_usage(struct store *store, uint64_t messages, uint64_t bytes)
{
	struct store_quota_usage u;
	assert_int_equal(store_quota_get(store, &u), 0);
	assert_int_equal(u.messages, messages);
	assert_int_equal(u.bytes, bytes);
}

/* Close everything and open the store again, as after a restart, with the same limits. */
static void restart(struct fx *fx, const char *storage, const char *messages)
{
	mailbox_unref(&fx->inbox);
	store_unref(&fx->store);
	st_loop_close(&fx->loop);
	uv_loop_init(&fx->loop);
	assert_int_equal(st_store_open(&fx->loop, fx->root, &fx->store), 0);
	set_limits(fx->store, storage, messages);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->inbox), 0);
}

/* What a folder holds on disk, as a short text: Maildir "files TMP NEW CUR", mbox "mbox SIZE"
 * (the folder's file). A refused append or copy must leave it as it was. */
static void folder_state(const char *root, const char *folder, char *out, size_t size)
{
	if (st_format() == ST_MBOX) {
		char path[4200];
		struct stat st;
		st_mbox_path(root, folder, path, sizeof(path));
		/* a folder's file may not exist before its first message: size 0 */
		snprintf(out, size, "mbox %lld",
			 stat(path, &st) == 0 ? (long long)st.st_size : 0LL);
		return;
	}
	char dir[4200];
	if (strcmp(folder, "INBOX") == 0)
		snprintf(dir, sizeof(dir), "%s", root);
	else
		snprintf(dir, sizeof(dir), "%s/.%s", root, folder);
	snprintf(out, size, "files %zu %zu %zu", st_count_files(dir, "tmp"),
		 st_count_files(dir, "new"), st_count_files(dir, "cur"));
}

/* FOLDER's state is WANT (Maildir: "files ..."); under mbox, a Maildir WANT means "as empty
 * as a new folder" (compared with the empty folder's state, taken before). */
static void assert_folder_state(const char *root, const char *folder, const char *want)
{
	char got[64];
	folder_state(root, folder, got, sizeof(got));
	if (st_format() == ST_MBOX && strncmp(want, "files", 5) == 0)
		want = "mbox 0";
	assert_string_equal(got, want);
}

/* An append through the streaming API; returns its result (the UID in *uid_r). */
static int try_append(struct mailbox *mbox, const char *data, uint32_t *uid_r)
{
	struct mail_append *a;
	int r = mailbox_append_begin(mbox, 0, 0, 0, &a);
	if (r < 0)
		return r;
	r = mail_append_write(a, data, strlen(data));
	if (r < 0) {
		mail_append_abort(&a);
		return r;
	}
	return mail_append_finish(&a, uid_r);
}

static void test_no_limit_counts_nothing(void **state)
{
	struct fx *fx = *state;
	st_append(fx->inbox, MSG_A, 0);
	struct store_quota_usage u;
	assert_int_equal(store_quota_get(fx->store, &u), 0);
	assert_int_equal(u.bytes_limit, 0);
	assert_int_equal(u.messages_limit, 0);
	assert_int_equal(u.bytes, 0); /* nothing counted without a limit */
	assert_int_equal(store_quota_check(fx->store, 1000000, 1ULL << 40), 0);
	set_limits(fx->store, "1G", "0");
	assert_int_equal(store_quota_get(fx->store, &u), 0);
	assert_int_equal(u.bytes_limit, 1ULL << 30);
	assert_int_equal(u.messages_limit, 0);
	assert_int_equal(u.messages, 1);
	assert_int_equal(u.bytes, 27);
}

static void test_append_copy_move_expunge(void **state)
{
	struct fx *fx = *state;
	set_limits(fx->store, "1M", "100");
	expect_usage(fx->store, 0, 0);
	uint32_t a = st_append(fx->inbox, MSG_A, 0);
	uint32_t b = st_append(fx->inbox, MSG_B, 0);
	uint32_t lf = st_append(fx->inbox, MSG_LF, 0);
	expect_usage(fx->store, 3, 27 + 36 + 34); /* RFC822.SIZE: the CRLF size */

	assert_int_equal(store_folder_create(fx->store, "Work", 0), 0);
	struct mailbox *work;
	assert_int_equal(mailbox_open(fx->store, "Work", &work), 0);
	uint32_t uids[2] = {a, b}, out[2];
	assert_int_equal(mailbox_copy(fx->inbox, uids, 2, work, out), 0);
	expect_usage(fx->store, 5, 2 * (27 + 36) + 34);
	/* a move within the user changes nothing */
	assert_int_equal(mailbox_move(fx->inbox, &lf, 1, work, out), 0);
	expect_usage(fx->store, 5, 2 * (27 + 36) + 34);
	assert_int_equal(mailbox_count(work), 3);
	/* expunge */
	assert_int_equal(mailbox_expunge(fx->inbox, &b, 1), 0);
	expect_usage(fx->store, 4, 2 * 27 + 36 + 34);
	/* a closed folder keeps counting */
	mailbox_unref(&work);
	expect_usage(fx->store, 4, 2 * 27 + 36 + 34);
	assert_int_equal(mailbox_open(fx->store, "Work", &work), 0);
	expect_usage(fx->store, 4, 2 * 27 + 36 + 34);
	mailbox_unref(&work);

	/* a restart counts the same from the folders (Work is not open then) */
	restart(fx, "1M", "100");
	mailbox_unref(&fx->inbox);
	expect_usage(fx->store, 4, 2 * 27 + 36 + 34);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->inbox), 0);
	expect_usage(fx->store, 4, 2 * 27 + 36 + 34);
}

static void test_outside_delivery(void **state)
{
	struct fx *fx = *state;
	set_limits(fx->store, "1M", "2");
	st_append(fx->inbox, MSG_A, 0);
	expect_usage(fx->store, 1, 27);
	/* an MTA delivers into the open INBOX: counted when seen, even past the limit */
	st_deliver(fx->root, "INBOX", MSG_B);
	st_deliver(fx->root, "INBOX", MSG_LF);
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	assert_int_equal(mailbox_count(fx->inbox), 3);
	expect_usage(fx->store, 3, 27 + 36 + 34);
	/* over the limit now: no more appends, but reading, flags and expunge still work */
	uint32_t uid = 0;
	assert_int_equal(try_append(fx->inbox, MSG_A, &uid), -EDQUOT);
	uint32_t one = 1;
	assert_int_equal(
		mailbox_store_flags(fx->inbox, NULL, &one, 1, FLAG_OP_ADD, MAIL_DELETED, 0), 0);
	struct mailbox_status st;
	mailbox_get_status(fx->inbox, &st);
	assert_int_equal(st.deleted, 1);
	assert_int_equal(st.deleted_size, 27);
	assert_int_equal(mailbox_expunge(fx->inbox, &one, 1), 0);
	expect_usage(fx->store, 2, 36 + 34);

	/* delivery into a folder that is not open: counted when the folder is opened */
	st_deliver(fx->root, "Trash", MSG_A);
	expect_usage(fx->store, 2, 36 + 34);
	assert_int_equal(store_quota_check(fx->store, 0, 0), 0);
	struct mailbox *t;
	assert_int_equal(mailbox_open(fx->store, "Trash", &t), 0);
	expect_usage(fx->store, 3, 27 + 36 + 34);
	mailbox_unref(&t);
	/* and a restart counts it all the same */
	restart(fx, "1M", "2");
	expect_usage(fx->store, 3, 27 + 36 + 34);
}

/* A refused append or copy leaves nothing: no file, no UID used, usage unchanged. */
static void test_limits_leave_nothing(void **state)
{
	struct fx *fx = *state;
	set_limits(fx->store, "63", "0"); /* MSG_A + MSG_B = 63 bytes exactly */
	uint32_t a = st_append(fx->inbox, MSG_A, 0);
	uint32_t b = st_append(fx->inbox, MSG_B, 0);
	expect_usage(fx->store, 2, 63);
	uint32_t next = mailbox_uidnext(fx->inbox);
	char before[64];
	folder_state(fx->root, "INBOX", before, sizeof(before));
	uint32_t uid = 0;
	assert_int_equal(try_append(fx->inbox, "x", &uid), -EDQUOT);
	assert_int_equal(uid, 0);
	assert_int_equal(mailbox_uidnext(fx->inbox), next);
	assert_int_equal(mailbox_count(fx->inbox), 2);
	assert_folder_state(fx->root, "INBOX", before);
	expect_usage(fx->store, 2, 63);

	/* copy into another folder: all refused, nothing made */
	assert_int_equal(store_folder_create(fx->store, "Work", 0), 0);
	struct mailbox *work;
	assert_int_equal(mailbox_open(fx->store, "Work", &work), 0);
	uint32_t uids[2] = {a, b}, out[2] = {7, 7};
	assert_int_equal(mailbox_copy(fx->inbox, uids, 2, work, out), -EDQUOT);
	assert_int_equal(out[0], 0);
	assert_int_equal(out[1], 0);
	assert_int_equal(mailbox_count(work), 0);
	assert_int_equal(mailbox_uidnext(work), 1);
	assert_folder_state(fx->root, "Work", "files 0 0 0");
	/* a copy within one folder is new mail too */
	assert_int_equal(mailbox_copy(fx->inbox, &a, 1, fx->inbox, out), -EDQUOT);
	assert_int_equal(mailbox_count(fx->inbox), 2);
	/* a move within the user is always allowed, even at the limit */
	assert_int_equal(mailbox_move(fx->inbox, uids, 2, work, out), 0);
	assert_int_equal(mailbox_count(work), 2);
	expect_usage(fx->store, 2, 63);
	/* room again after an expunge; the boundary is exact (usage + size <= limit) */
	assert_int_equal(mailbox_expunge(work, &out[1], 1), 0); /* MSG_B, 36 bytes */
	expect_usage(fx->store, 1, 27);
	assert_int_equal(store_quota_check(fx->store, 1, 36), 0);
	assert_int_equal(store_quota_check(fx->store, 1, 37), -EDQUOT);
	assert_int_equal(try_append(fx->inbox, MSG_B, &uid), 0);
	expect_usage(fx->store, 2, 63);
	mailbox_unref(&work);

	/* the message limit */
	set_limits(fx->store, "0", "3");
	assert_int_equal(try_append(fx->inbox, MSG_A, &uid), 0);
	assert_int_equal(try_append(fx->inbox, MSG_A, &uid), -EDQUOT);
	expect_usage(fx->store, 3, 90);
	assert_int_equal(store_quota_check(fx->store, 0, 1ULL << 40), 0);
	assert_int_equal(store_quota_check(fx->store, 1, 0), -EDQUOT);
	assert_int_equal(store_quota_check(fx->store, UINT64_MAX, 0), -EDQUOT);
}

static void test_delete_and_rename(void **state)
{
	struct fx *fx = *state;
	set_limits(fx->store, "1M", "0");
	assert_int_equal(store_folder_create(fx->store, "A", 0), 0);
	assert_int_equal(store_folder_create(fx->store, "B", 0), 0);
	struct mailbox *m;
	assert_int_equal(mailbox_open(fx->store, "A", &m), 0);
	st_append(m, MSG_A, 0);
	mailbox_unref(&m);
	assert_int_equal(mailbox_open(fx->store, "B", &m), 0);
	st_append(m, MSG_B, 0);
	expect_usage(fx->store, 2, 63);
	/* rename a closed folder (and its entry) */
	assert_int_equal(store_folder_rename(fx->store, "A", "C.D"), 0);
	expect_usage(fx->store, 2, 63);
	/* delete an open one */
	assert_int_equal(store_folder_delete(fx->store, "B"), 0);
	expect_usage(fx->store, 1, 27);
	mailbox_unref(&m);
	expect_usage(fx->store, 1, 27);
	/* delete the renamed closed one */
	assert_int_equal(store_folder_delete(fx->store, "C.D"), 0);
	expect_usage(fx->store, 0, 0);
	/* renaming INBOX moves its messages: counted again to the same total */
	st_append(fx->inbox, MSG_A, 0);
	st_append(fx->inbox, MSG_B, 0);
	expect_usage(fx->store, 2, 63);
	mailbox_unref(&fx->inbox);
	assert_int_equal(store_folder_rename(fx->store, "INBOX", "Old"), 0);
	expect_usage(fx->store, 2, 63);
	restart(fx, "1M", "0");
	expect_usage(fx->store, 2, 63);
}

/* The limits of the newest config win; an older one (a connection accepted before a reload)
 * changes nothing. */
static void test_newest_config_wins(void **state)
{
	struct fx *fx = *state;
	const char *t1 = "[server]\nquota_messages = 1\n[listener i]\nprotocol = imap\n";
	const char *t2 = "[server]\nquota_messages = 5\n[listener i]\nprotocol = imap\n";
	struct config *c1, *c2;
	struct config_errors errs;
	assert_int_equal(config_load_string("1", t1, strlen(t1), &c1, &errs), 0);
	assert_int_equal(config_load_string("2", t2, strlen(t2), &c2, &errs), 0);
	store_config_apply(c2);
	struct store_quota_usage u;
	assert_int_equal(store_quota_get(fx->store, &u), 0);
	assert_int_equal(u.messages_limit, 5);
	store_quota_configure(fx->store, c1);
	assert_int_equal(store_quota_get(fx->store, &u), 0);
	assert_int_equal(u.messages_limit, 5);
	config_unref(&c1);
	config_unref(&c2);
	set_limits(fx->store, "0", "0"); /* a newer one again */
	assert_int_equal(store_quota_get(fx->store, &u), 0);
	assert_int_equal(u.messages_limit, 0);
}

static void deadline_cb(uv_timer_t *t)
{
	*(bool *)t->data = true;
}

/* Run the loop until the background count has ended, with a 10 s deadline. */
static bool run_until_counted(uv_loop_t *loop, const struct store_quota *q)
{
	uv_timer_t t;
	bool expired = false;
	uv_timer_init(loop, &t);
	t.data = &expired;
	uv_timer_start(&t, deadline_cb, 10000, 0);
	while (q->counting && !expired)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return !q->counting;
}

/* With a limit, the usage is counted in the background (folders opened on the thread pool one
 * after the other): counted without any check, to the same numbers; a check while it runs
 * counts the rest at once, and the background count then adds nothing twice. */
static void test_background_count(void **state)
{
	struct fx *fx = *state;
	for (int f = 0; f < 3; f++) {
		char name[16];
		snprintf(name, sizeof(name), "Box%d", f);
		assert_int_equal(store_folder_create(fx->store, name, 0), 0);
		st_deliver(fx->root, name, MSG_A);
		st_deliver(fx->root, name, MSG_B);
	}
	st_deliver(fx->root, "INBOX", MSG_LF);
	restart(fx, "0", "0");
	struct store_quota *q = store_get_quota(fx->store);
	assert_false(q->counting);
	set_limits(fx->store, "1M", "0"); /* starts the count */
	assert_true(q->counting);
	assert_false(store_quota_counted(fx->store));
	assert_true(st_run_until(&fx->loop, &q->known, 10000));
	assert_false(q->counting);
	assert_int_equal(q->messages, 7);
	assert_int_equal(q->bytes, 3 * (27 + 36) + 34);
	expect_usage(fx->store, 7, 3 * (27 + 36) + 34);

	/* a check before the background count has finished */
	restart(fx, "0", "0");
	q = store_get_quota(fx->store);
	set_limits(fx->store, "1M", "0");
	assert_true(q->counting);
	expect_usage(fx->store, 7, 3 * (27 + 36) + 34);
	assert_true(store_quota_counted(fx->store));
	assert_true(run_until_counted(&fx->loop, q));
	expect_usage(fx->store, 7, 3 * (27 + 36) + 34);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_no_limit_counts_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_copy_move_expunge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outside_delivery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits_leave_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_and_rename, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newest_config_wins, setup, teardown),
		cmocka_unit_test_setup_teardown(test_background_count, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
