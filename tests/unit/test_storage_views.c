/* Views: every operation's announcements reaching two IMAP views (in the order and with the
 * numbers IMAP needs), the notify callback, sequence mapping with expunges still owed, and
 * POP3 snapshots with DELE committed under both pop3_delete policies. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage_test.h"

struct fx {
	uv_loop_t loop;
	char *dir;
	struct store *store;
	struct mailbox *mbox;
	struct view *v1, *v2;
	int notified1, notified2;
	bool free_in_notify;
};

static void notify1(struct view *view, void *data)
{
	struct fx *fx = data;
	assert_ptr_equal(view, fx->v1);
	fx->notified1++;
}

static void notify2(struct view *view, void *data)
{
	struct fx *fx = data;
	assert_ptr_equal(view, fx->v2);
	fx->notified2++;
	if (fx->free_in_notify) {
		/* a session closing from inside its own notification */
		view_free(&fx->v2);
		view_free(&fx->v1);
	}
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	uv_loop_init(&fx->loop);
	fx->dir = st_tmpdir();
	char root[4200];
	snprintf(root, sizeof(root), "%s/u", fx->dir);
	assert_int_equal(st_store_open(&fx->loop, root, &fx->store), 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->mbox), 0);
	assert_int_equal(view_new(fx->mbox, VIEW_IMAP, notify1, fx, &fx->v1), 0);
	assert_int_equal(view_new(fx->mbox, VIEW_IMAP, notify2, fx, &fx->v2), 0);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	view_free(&fx->v1);
	view_free(&fx->v2);
	mailbox_unref(&fx->mbox);
	store_unref(&fx->store);
	st_loop_close(&fx->loop);
	st_rmdir(&fx->dir);
	free(fx);
	return 0;
}

static void spin(struct fx *fx)
{
	for (int i = 0; i < 4; i++)
		uv_run(&fx->loop, UV_RUN_NOWAIT);
}

static void test_append_announced(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	assert_int_equal(view_count(fx->v1), 0);
	uint32_t uid = st_append(fx->mbox, "hello\r\n", 0);
	/* never from inside the call that made the change */
	assert_int_equal(fx->notified1, 0);
	assert_int_equal(fx->notified2, 0);
	assert_int_equal(view_count(fx->v1), 0); /* not told yet */
	assert_true(view_has_changes(fx->v1));
	spin(fx);
	assert_int_equal(fx->notified1, 1);
	assert_int_equal(fx->notified2, 1);
	/* a second change before sync: no second notification */
	st_append(fx->mbox, "again\r\n", 0);
	spin(fx);
	assert_int_equal(fx->notified1, 1);
	assert_string_equal(st_sync(fx->v1, 0, &log), "X2 R2 ");
	assert_string_equal(st_sync(fx->v2, 0, &log), "X2 R0 "); /* \Recent went to v1 */
	assert_int_equal(view_count(fx->v1), 2);
	assert_int_equal(view_recent_count(fx->v1), 2);
	struct mail_info info;
	assert_int_equal(view_msg_info(fx->v1, 1, &info), 0);
	assert_int_equal(info.uid, uid);
	assert_true(info.flags & MAIL_RECENT);
	assert_int_equal(view_msg_info(fx->v2, 1, &info), 0);
	assert_false(info.flags & MAIL_RECENT);
	assert_false(view_has_changes(fx->v1));
	assert_string_equal(st_sync(fx->v1, 0, &log), "");
	/* after sync, notification is armed again */
	st_append(fx->mbox, "third\r\n", 0);
	spin(fx);
	assert_int_equal(fx->notified1, 2);
	assert_int_equal(fx->notified2, 2);
	/* v2 does not sync: the next change does not notify it again */
	st_append(fx->mbox, "fourth\r\n", 0);
	spin(fx);
	assert_int_equal(fx->notified2, 2);
}

static void test_flags_announced(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	uint32_t u1 = st_append(fx->mbox, "1\r\n", 0);
	uint32_t u2 = st_append(fx->mbox, "2\r\n", 0);
	st_sync(fx->v1, 0, &log);
	st_sync(fx->v2, 0, &log);
	uint64_t ms = mailbox_highest_modseq(fx->mbox);
	/* v1 stores: v1 answers its own STORE, so only v2 is told */
	assert_int_equal(mailbox_store_flags(fx->mbox, fx->v1, &u2, 1, FLAG_OP_ADD,
					     MAIL_SEEN | MAIL_FLAGGED, 0),
			 0);
	assert_int_equal(mailbox_highest_modseq(fx->mbox), ms + 1);
	assert_false(view_has_changes(fx->v1));
	assert_string_equal(st_sync(fx->v2, 0, &log), "F2=FS ");
	struct mail_info info;
	assert_int_equal(view_msg_info(fx->v2, 2, &info), 0);
	assert_int_equal(info.modseq, ms + 1);
	/* a change that changes nothing is not a change */
	assert_int_equal(mailbox_store_flags(fx->mbox, NULL, &u2, 1, FLAG_OP_ADD, MAIL_SEEN, 0), 0);
	assert_int_equal(mailbox_highest_modseq(fx->mbox), ms + 1);
	assert_false(view_has_changes(fx->v2));
	/* several changes of one message: one FETCH with the final flags */
	assert_int_equal(mailbox_store_flags(fx->mbox, NULL, &u1, 1, FLAG_OP_ADD, MAIL_SEEN, 0), 0);
	assert_int_equal(mailbox_store_flags(fx->mbox, NULL, &u1, 1, FLAG_OP_ADD, MAIL_DELETED, 0),
			 0);
	assert_string_equal(st_sync(fx->v1, 0, &log), "F1=ST ");
	assert_string_equal(st_sync(fx->v2, 0, &log), "F1=ST ");
}

static void test_expunge_announced(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	uint32_t u[5];
	for (int i = 0; i < 5; i++)
		u[i] = st_append(fx->mbox, "m\r\n", 0);
	st_sync(fx->v1, 0, &log);
	st_sync(fx->v2, 0, &log);
	/* expunge 2 and 4, a new arrival, a flag change on 5 */
	uint32_t gone[2] = {u[3], u[1]};
	assert_int_equal(mailbox_expunge(fx->mbox, gone, 2), 0);
	uint32_t u6 = st_append(fx->mbox, "six\r\n", 0);
	assert_int_equal(mailbox_store_flags(fx->mbox, NULL, &u[4], 1, FLAG_OP_ADD, MAIL_SEEN, 0),
			 0);
	/* before sync, v2's numbers have not moved */
	assert_int_equal(view_count(fx->v2), 5);
	uint32_t uid, seq;
	assert_int_equal(view_seq_to_uid(fx->v2, 2, &uid), 0);
	assert_int_equal(uid, u[1]);
	assert_int_equal(view_seq_to_uid(fx->v2, 3, &uid), 0);
	assert_int_equal(uid, u[2]);
	assert_int_equal(view_seq_to_uid(fx->v2, 5, &uid), 0);
	assert_int_equal(uid, u[4]);
	assert_int_equal(view_seq_to_uid(fx->v2, 6, &uid), -ERANGE);
	assert_int_equal(view_uid_to_seq(fx->v2, u[3], &seq), 0);
	assert_int_equal(seq, 4);
	assert_int_equal(view_uid_to_seq(fx->v2, u[4], &seq), 0);
	assert_int_equal(seq, 5);
	assert_int_equal(view_uid_to_seq(fx->v2, u6, &seq), -ENOENT);
	assert_int_equal(view_uid_lower_bound(fx->v2, u[3]), 4);
	assert_int_equal(view_uid_lower_bound(fx->v2, u6), 6);
	struct mail_info info;
	assert_int_equal(view_msg_info(fx->v2, 4, &info), -ENOENT);
	assert_int_equal(info.uid, u[3]);
	struct mail_stream *s;
	assert_int_equal(view_msg_open(fx->v2, 4, &s), -ENOENT);
	/* UID FETCH/STORE time: no EXPUNGE allowed, the rest may go */
	/* v2 is first to hear of uid 6: it is \Recent there */
	assert_string_equal(st_sync(fx->v2, VIEW_SYNC_NO_EXPUNGE, &log), "X6 R1 F5=S ");
	assert_int_equal(view_count(fx->v2), 6);
	assert_int_equal(view_uid_to_seq(fx->v2, u6, &seq), 0);
	assert_int_equal(seq, 6);
	/* now the expunges, each with the number valid when it is sent */
	assert_string_equal(st_sync(fx->v2, 0, &log), "E2 E3 ");
	assert_int_equal(view_count(fx->v2), 4);
	assert_int_equal(view_uid_to_seq(fx->v2, u6, &seq), 0);
	assert_int_equal(seq, 4);
	/* v1 all at once: expunges first, then EXISTS, then FETCH by new numbers */
	/* (v1 keeps the \Recent it claimed first: uids 1, 3, 5) */
	assert_string_equal(st_sync(fx->v1, 0, &log), "E2 E3 X4 R3 F3=S ");
	/* an arrival expunged before a view heard of it is never mentioned */
	uint32_t u7 = st_append(fx->mbox, "seven\r\n", 0);
	assert_int_equal(mailbox_expunge(fx->mbox, &u7, 1), 0);
	assert_string_equal(st_sync(fx->v1, 0, &log), "");
	/* a flag change then expunge: only the expunge */
	assert_int_equal(mailbox_store_flags(fx->mbox, NULL, &u6, 1, FLAG_OP_ADD, MAIL_SEEN, 0), 0);
	assert_int_equal(mailbox_expunge(fx->mbox, &u6, 1), 0);
	assert_string_equal(st_sync(fx->v1, 0, &log), "E4 ");
}

static void test_expunge_deleted(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	uint32_t u[4];
	for (int i = 0; i < 4; i++)
		u[i] = st_append(fx->mbox, "m\r\n", i % 2 ? MAIL_DELETED : 0);
	st_sync(fx->v1, 0, &log);
	st_sync(fx->v2, 0, &log);
	uint32_t late = st_append(fx->mbox, "late\r\n", MAIL_DELETED);
	/* UID EXPUNGE 4: only uid 4 among the deleted */
	assert_int_equal(view_expunge_deleted(fx->v1, &u[3], 1), 0);
	/* the expunged uid 4 still counts until its EXPUNGE is sent */
	assert_string_equal(st_sync(fx->v1, VIEW_SYNC_NO_EXPUNGE, &log), "X5 R5 ");
	assert_string_equal(st_sync(fx->v1, 0, &log), "E4 ");
	/* EXPUNGE: every \Deleted message the view shows */
	assert_int_equal(view_expunge_deleted(fx->v1, NULL, 0), 0);
	assert_string_equal(st_sync(fx->v1, 0, &log), "E2 E3 ");
	assert_int_equal(mailbox_count(fx->mbox), 2);
	/* v2 never saw "late": two EXPUNGEs and no EXISTS */
	assert_string_equal(st_sync(fx->v2, 0, &log), "E2 E3 ");
	(void)late;
}

static void test_view_frees_in_notify(void **state)
{
	struct fx *fx = *state;
	/* a notify callback that frees its own view and another one is safe (v2 is first in
	 * the list: the newest view) */
	fx->free_in_notify = true;
	st_append(fx->mbox, "x\r\n", 0);
	spin(fx);
	assert_int_equal(fx->notified2, 1);
	assert_int_equal(fx->notified1, 0);
	assert_null(fx->v1);
	assert_null(fx->v2);
	/* the mailbox lives on (the test holds a reference) */
	st_append(fx->mbox, "y\r\n", 0);
	spin(fx);
	assert_int_equal(mailbox_count(fx->mbox), 2);
}

/* ---- POP3 ------------------------------------------------------------------------------- */

static void test_pop3_snapshot(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	uint32_t u[3];
	u[0] = st_append(fx->mbox, "one\r\n", 0);
	u[1] = st_append(fx->mbox, "two\n", 0);
	u[2] = st_append(fx->mbox, "three\r\n", 0);
	st_sync(fx->v1, 0, &log);
	struct view *p, *p2;
	assert_int_equal(view_new(fx->mbox, VIEW_POP3, NULL, NULL, &p), 0);
	assert_int_equal(view_new(fx->mbox, VIEW_POP3, NULL, NULL, &p2), -EBUSY);
	assert_int_equal(view_count(p), 3);
	char uidl3[MAIL_UIDL_MAX + 1], again[MAIL_UIDL_MAX + 1];
	assert_int_equal(view_msg_uidl(p, 3, uidl3, sizeof(uidl3)), 0);
	/* IMAP expunges message 2 and a new one arrives: POP3 numbers do not move */
	assert_int_equal(mailbox_expunge(fx->mbox, &u[1], 1), 0);
	st_append(fx->mbox, "four\r\n", 0);
	assert_int_equal(view_count(p), 3);
	struct mail_info info;
	assert_int_equal(view_msg_info(p, 2, &info), -ENOENT);
	struct mail_stream *s;
	assert_int_equal(view_msg_open(p, 2, &s), -ENOENT);
	assert_int_equal(view_msg_info(p, 3, &info), 0);
	assert_int_equal(info.uid, u[2]);
	assert_int_equal(view_msg_uidl(p, 3, again, sizeof(again)), 0);
	assert_string_equal(uidl3, again);
	assert_false(view_has_changes(p));
	/* DELE marks */
	assert_int_equal(view_pop3_delete(p, 1), 0);
	assert_int_equal(view_pop3_delete(p, 1), -EALREADY);
	assert_int_equal(view_pop3_delete(p, 2), -ENOENT);
	assert_int_equal(view_pop3_delete(p, 4), -ERANGE);
	assert_int_equal(view_pop3_delete(p, 0), -ERANGE);
	assert_true(view_pop3_is_deleted(p, 1));
	view_pop3_reset(p);
	assert_false(view_pop3_is_deleted(p, 1));
	assert_int_equal(view_pop3_delete(fx->v1, 1), -EINVAL);
	/* a session that drops without QUIT commits nothing */
	assert_int_equal(view_pop3_delete(p, 3), 0);
	view_free(&p);
	assert_int_equal(mailbox_count(fx->mbox), 3);
	/* the lock went with the view */
	assert_int_equal(view_new(fx->mbox, VIEW_POP3, NULL, NULL, &p), 0);
	assert_int_equal(view_count(p), 3);
	view_free(&p);
}

static void test_pop3_commit_expunge(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	for (int i = 0; i < 3; i++)
		st_append(fx->mbox, "msg\r\n", 0);
	st_sync(fx->v1, 0, &log);
	struct view *p;
	assert_int_equal(view_new(fx->mbox, VIEW_POP3, NULL, NULL, &p), 0);
	assert_int_equal(view_pop3_delete(p, 1), 0);
	assert_int_equal(view_pop3_delete(p, 3), 0);
	assert_int_equal(view_pop3_commit(p, POP3_DELETE_EXPUNGE), 0);
	assert_false(view_pop3_is_deleted(p, 1));
	view_free(&p);
	assert_int_equal(mailbox_count(fx->mbox), 1);
	/* the phone sees the POP3 deletes as EXPUNGE */
	assert_string_equal(st_sync(fx->v1, 0, &log), "E1 E2 ");
	assert_int_equal(view_new(fx->mbox, VIEW_POP3, NULL, NULL, &p), 0);
	assert_int_equal(view_count(p), 1);
	view_free(&p);
}

static void test_pop3_commit_hide(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	for (int i = 0; i < 3; i++)
		st_append(fx->mbox, "msg\r\n", 0);
	st_sync(fx->v1, 0, &log);
	struct view *p;
	assert_int_equal(view_new(fx->mbox, VIEW_POP3, NULL, NULL, &p), 0);
	char uidl3[MAIL_UIDL_MAX + 1], again[MAIL_UIDL_MAX + 1];
	assert_int_equal(view_msg_uidl(p, 3, uidl3, sizeof(uidl3)), 0);
	assert_int_equal(view_pop3_delete(p, 2), 0);
	assert_int_equal(view_pop3_commit(p, POP3_DELETE_HIDE), 0);
	view_free(&p);
	/* kept for IMAP, with the keyword */
	assert_int_equal(mailbox_count(fx->mbox), 3);
	unsigned idx;
	assert_int_equal(mailbox_keyword_index(fx->mbox, MAIL_KEYWORD_POP3_DELETED, false, &idx),
			 0);
	char want[32];
	snprintf(want, sizeof(want), "F2=%c ", 'a' + idx);
	assert_string_equal(st_sync(fx->v1, 0, &log), want);
	/* gone from every later POP3 session; the others keep their UIDLs */
	assert_int_equal(view_new(fx->mbox, VIEW_POP3, NULL, NULL, &p), 0);
	assert_int_equal(view_count(p), 2);
	assert_int_equal(view_msg_uidl(p, 2, again, sizeof(again)), 0);
	assert_string_equal(uidl3, again);
	view_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_append_announced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flags_announced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expunge_announced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expunge_deleted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_view_frees_in_notify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pop3_snapshot, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pop3_commit_expunge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pop3_commit_hide, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
