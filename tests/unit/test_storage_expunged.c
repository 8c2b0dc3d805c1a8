/* The expunged UIDs a mailbox remembers for QRESYNC (mailbox_expunged.c): every way a message
 * leaves (EXPUNGE, MOVE, a file removed behind the store's back, POP3 expiry) is noted with
 * the modseq HIGHESTMODSEQ moves to for it; answers are exact after the open and "unknown"
 * before it; the list keeps the last MAILBOX_EXPUNGED_MAX and then raises its horizon. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mailbox_private.h"
#include "storage_test.h"

struct fx {
	uv_loop_t loop;
	char *dir;
	char root[4200];
	struct store *store;
	struct mailbox *mbox;
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	uv_loop_init(&fx->loop);
	fx->dir = st_tmpdir();
	snprintf(fx->root, sizeof(fx->root), "%s/u", fx->dir);
	assert_int_equal(st_store_open(&fx->loop, fx->root, &fx->store), 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->mbox), 0);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	mailbox_unref(&fx->mbox);
	store_unref(&fx->store);
	st_loop_close(&fx->loop);
	st_rmdir(&fx->dir);
	free(fx);
	return 0;
}

/* mailbox_expunged_since as text: "exact 1,4" / "unknown" / "exact". */
static const char *since(struct mailbox *mbox, uint64_t modseq)
{
	static char out[256];
	uint32_t *uids;
	size_t n;
	int r = mailbox_expunged_since(mbox, modseq, &uids, &n);
	assert_true(r == 0 || r == 1);
	if (r == 0) {
		assert_null(uids);
		assert_int_equal(n, 0);
		return "unknown";
	}
	size_t o = (size_t)snprintf(out, sizeof(out), "exact");
	for (size_t i = 0; i < n; i++)
		o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%u", i ? "," : " ", uids[i]);
	free(uids);
	return out;
}

#define MSG "Subject: x\r\n\r\nbody\r\n"

static void test_expunge_move_external(void **state)
{
	struct fx *fx = *state;
	struct mailbox *m = fx->mbox;
	/* a new folder starts at HIGHESTMODSEQ 1; each append takes the next modseq */
	assert_int_equal(mailbox_highest_modseq(m), 1);
	assert_int_equal(mailbox_expunged_horizon(m), 1);
	for (int i = 0; i < 6; i++)
		st_append(m, MSG, 0);
	assert_int_equal(mailbox_highest_modseq(m), 7);
	assert_string_equal(since(m, 7), "exact");
	assert_string_equal(since(m, 0), "unknown");
	/* one EXPUNGE of two messages: one modseq for the batch */
	uint32_t two[] = {4, 2};
	assert_int_equal(mailbox_expunge(m, two, 2), 0);
	assert_int_equal(mailbox_highest_modseq(m), 8);
	assert_string_equal(since(m, 7), "exact 2,4");
	assert_string_equal(since(m, 8), "exact");
	/* a flag change, then a MOVE out: the move's expunge gets modseq 10 */
	uint32_t one = 5;
	assert_int_equal(mailbox_store_flags(m, NULL, &one, 1, FLAG_OP_ADD, MAIL_FLAGGED, 0), 0);
	struct mailbox *trash;
	assert_int_equal(mailbox_open(fx->store, "Trash", &trash), 0);
	uint32_t moved = 1, new_uid;
	assert_int_equal(mailbox_move(m, &moved, 1, trash, &new_uid), 0);
	assert_int_equal(mailbox_highest_modseq(m), 10);
	assert_string_equal(since(m, 9), "exact 1");
	assert_string_equal(since(m, 7), "exact 1,2,4");
	assert_string_equal(since(trash, 1), "exact"); /* an arrival is no expunge */
	mailbox_unref(&trash);
	/* a file removed behind the store's back (mutt, a shell) */
	char name[512], path[5000];
	struct view *v;
	assert_int_equal(view_new(m, VIEW_IMAP, NULL, NULL, &v), 0);
	if (st_format() == ST_MBOX) {
		/* mutt deletes the second message of the file (UIDs 3 5 6: seq 2) */
		st_mbox_path(fx->root, "INBOX", path, sizeof(path));
		st_mbox_remove(path, 1);
	} else {
		char key[256];
		assert_int_equal(view_msg_key(v, 2, key, sizeof(key)), 0); /* UIDs 3 5 6: seq 2 */
		assert_true(st_find_file(fx->root, "cur", key, name, sizeof(name)));
		snprintf(path, sizeof(path), "%s/cur/%s", fx->root, name);
		assert_int_equal(unlink(path), 0);
	}
	/* the store calls a file gone only after several scans agree */
	for (int i = 0; i < 10 && mailbox_count(m) == 3; i++)
		assert_int_equal(m->ops->refresh(m, true), 0);
	assert_int_equal(mailbox_count(m), 2);
	assert_string_equal(since(m, 10), "exact 5");
	view_free(&v);
	/* closed and reopened: the process no longer knows what went before */
	uint64_t high = mailbox_highest_modseq(m);
	mailbox_unref(&fx->mbox);
	for (int i = 0; i < 4; i++)
		uv_run(&fx->loop, UV_RUN_NOWAIT);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->mbox), 0);
	m = fx->mbox;
	assert_int_equal(mailbox_highest_modseq(m), high);
	assert_int_equal(mailbox_expunged_horizon(m), high);
	assert_string_equal(since(m, high - 1), "unknown");
	assert_string_equal(since(m, high), "exact");
	uint32_t last = 6;
	assert_int_equal(mailbox_expunge(m, &last, 1), 0);
	assert_string_equal(since(m, high), "exact 6");
}

/* The bound: past MAILBOX_EXPUNGED_MAX the older half goes and the horizon rises to the
 * newest modseq dropped; what is kept stays exact. */
static void test_bound(void **state)
{
	struct fx *fx = *state;
	struct mailbox *m = fx->mbox;
	uint64_t base = mailbox_highest_modseq(m);
	for (uint32_t i = 1; i <= MAILBOX_EXPUNGED_MAX; i++)
		mailbox_expunged_note(m, i, base + i);
	assert_int_equal(mailbox_expunged_horizon(m), base);
	assert_int_equal(m->n_expunged, MAILBOX_EXPUNGED_MAX);
	uint32_t *uids;
	size_t n;
	assert_int_equal(mailbox_expunged_since(m, base, &uids, &n), 1);
	assert_int_equal(n, MAILBOX_EXPUNGED_MAX);
	free(uids);
	/* one more: the first half is forgotten */
	mailbox_expunged_note(m, MAILBOX_EXPUNGED_MAX + 1, base + MAILBOX_EXPUNGED_MAX + 1);
	assert_int_equal(m->n_expunged, MAILBOX_EXPUNGED_MAX / 2 + 1);
	assert_int_equal(mailbox_expunged_horizon(m), base + MAILBOX_EXPUNGED_MAX / 2);
	assert_string_equal(since(m, base + MAILBOX_EXPUNGED_MAX / 2 - 1), "unknown");
	assert_int_equal(mailbox_expunged_since(m, base + MAILBOX_EXPUNGED_MAX / 2, &uids, &n), 1);
	assert_int_equal(n, MAILBOX_EXPUNGED_MAX / 2 + 1);
	assert_int_equal(uids[0], MAILBOX_EXPUNGED_MAX / 2 + 1);
	assert_int_equal(uids[n - 1], MAILBOX_EXPUNGED_MAX + 1);
	free(uids);
	assert_string_equal(since(m, base + MAILBOX_EXPUNGED_MAX), "exact 65537");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_expunge_move_external, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bound, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
