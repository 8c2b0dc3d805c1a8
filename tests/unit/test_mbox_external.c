/* The mbox back-end and the programs that share its files (issue 11): an MTA appending to the
 * spool under dotlock + fcntl (noticed by the fs event within a bounded wait, and by
 * mailbox_refresh), mutt rewriting Status:/X-Status: or deleting a message, a lock held by
 * another program (the store waits, bounded, then says busy), a stale dotlock of a dead
 * process, and the state the file carries for other tools (X-UID, X-IMAPbase, X-UIDL). The
 * mbox counterpart of test_maildir_external; the helpers are in storage_test.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage_test.h"

struct fx {
	uv_loop_t loop;
	char *dir;
	char root[4096];
	char inbox[4200];
	struct store *store;
	struct mailbox *mbox;
	struct view *v;
	bool notified;
};

static void on_notify(struct view *view, void *data)
{
	struct fx *fx = data;
	fx->notified = true;
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	/* a lock held by someone else: give up after a second (the store's timeout) */
	setenv("MK_STORE_EXTRA", "mbox_lock_timeout = 1", 1);
	uv_loop_init(&fx->loop);
	fx->dir = st_tmpdir();
	snprintf(fx->root, sizeof(fx->root), "%s/u", fx->dir);
	st_mbox_path(fx->root, "INBOX", fx->inbox, sizeof(fx->inbox));
	assert_int_equal(st_store_open(&fx->loop, fx->root, &fx->store), 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->mbox), 0);
	assert_int_equal(view_new(fx->mbox, VIEW_IMAP, on_notify, fx, &fx->v), 0);
	*state = fx;
	return 0;
}

static int setup_bare(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	fx->dir = st_tmpdir();
	*state = fx;
	return 0;
}

static int teardown_bare(void **state)
{
	struct fx *fx = *state;
	st_rmdir(&fx->dir);
	free(fx);
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	view_free(&fx->v);
	mailbox_unref(&fx->mbox);
	store_unref(&fx->store);
	st_loop_close(&fx->loop);
	st_rmdir(&fx->dir);
	free(fx);
	return 0;
}

static void reopen(struct fx *fx)
{
	view_free(&fx->v);
	mailbox_unref(&fx->mbox);
	store_unref(&fx->store);
	st_loop_close(&fx->loop);
	uv_loop_init(&fx->loop);
	assert_int_equal(st_store_open(&fx->loop, fx->root, &fx->store), 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->mbox), 0);
	assert_int_equal(view_new(fx->mbox, VIEW_IMAP, on_notify, fx, &fx->v), 0);
}

static void uids(struct view *v, char *out, size_t size)
{
	out[0] = '\0';
	for (uint32_t seq = 1; seq <= view_count(v); seq++) {
		struct mail_info info;
		assert_int_equal(view_msg_info(v, seq, &info), 0);
		size_t n = strlen(out);
		snprintf(out + n, size - n, "%u ", info.uid);
	}
}

/* The MTA appends while the loop runs: the fs event brings it to the view, no command. */
static void test_delivery_by_fs_event(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	st_deliver(fx->root, "INBOX", "Subject: hi\n\nhello\n");
	assert_true(st_run_until(&fx->loop, &fx->notified, 5000));
	assert_string_equal(st_sync(fx->v, 0, &log), "X1 R1 ");
	size_t len;
	char *data = st_read_msg(fx->v, 1, &len);
	assert_string_equal(data, "Subject: hi\r\n\r\nhello\r\n");
	free(data);
	/* a burst: every message there, in file order, with ascending UIDs */
	for (int i = 2; i <= 20; i++) {
		char msg[64];
		snprintf(msg, sizeof(msg), "Subject: %d\n\nbody %d\n", i, i);
		st_deliver(fx->root, "INBOX", msg);
	}
	fx->notified = false;
	for (int i = 0; i < 100 && mailbox_count(fx->mbox) < 20; i++) {
		fx->notified = false;
		assert_true(st_run_until(&fx->loop, &fx->notified, 5000));
	}
	assert_int_equal(mailbox_count(fx->mbox), 20);
	st_sync(fx->v, 0, &log);
	assert_int_equal(view_count(fx->v), 20);
	for (uint32_t seq = 2; seq <= 20; seq++) {
		char want[64];
		snprintf(want, sizeof(want), "Subject: %u\r\n\r\nbody %u\r\n", seq, seq);
		data = st_read_msg(fx->v, seq, &len);
		assert_string_equal(data, want);
		free(data);
		struct mail_info info;
		assert_int_equal(view_msg_info(fx->v, seq, &info), 0);
		assert_int_equal(info.uid, seq);
		assert_int_equal(info.size, strlen(want));
	}
	/* and the UIDs are the same after a restart */
	reopen(fx);
	char list[256];
	uids(fx->v, list, sizeof(list));
	assert_string_equal(list, "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 ");
}

/* A delivery is seen by the next command (mailbox_refresh) even without the loop running. */
static void test_delivery_by_refresh(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	st_append(fx->mbox, "Subject: ours\r\n\r\nours\r\n", MAIL_SEEN);
	st_deliver(fx->root, "INBOX", "Subject: theirs\n\ntheirs\n");
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	assert_string_equal(st_sync(fx->v, 0, &log), "X2 R2 ");
	size_t len;
	char *data = st_read_msg(fx->v, 2, &len);
	assert_string_equal(data, "Subject: theirs\r\n\r\ntheirs\r\n");
	free(data);
	/* the state headers are the store's, never part of the message a client sees */
	data = st_read_msg(fx->v, 1, &len);
	assert_string_equal(data, "Subject: ours\r\n\r\nours\r\n");
	free(data);
	/* our append reaches the file soon after, next to the MTA's */
	unsigned two = 2;
	assert_true(st_mbox_wait(&fx->loop, fx->inbox, st_mbox_has_count, &two, 10000));
}

/* Message 3 of the file says \Deleted and \Draft (X-Status D and T, in any order). */
static bool third_deleted_draft(const char *path, void *arg)
{
	char val[64];
	return st_mbox_count(path) >= 3 && st_mbox_header(path, 2, "X-Status", val, sizeof(val)) &&
	       strchr(val, 'D') != NULL && strchr(val, 'T') != NULL;
}

/* mutt changes flags (Status: R = \Seen, X-Status: A = \Answered, F = \Flagged, T = \Draft,
 * D = \Deleted) by rewriting the file: the store sees the flags, the UIDs stay, views are
 * told; and the flags the store writes are the ones mutt reads. */
static void test_mutt_flags(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	uint32_t u1 = st_append(fx->mbox, "Subject: 1\r\n\r\none\r\n", 0);
	uint32_t u2 = st_append(fx->mbox, "Subject: 2\r\n\r\ntwo\r\n", MAIL_SEEN);
	uint32_t u3 = st_append(fx->mbox, "Subject: 3\r\n\r\nthree\r\n", 0);
	st_sync(fx->v, 0, &log);
	uint32_t uv = mailbox_uidvalidity(fx->mbox);
	/* mutt edits what is in the file: our appends get there soon after; and the file is
	 * left alone by the store then (its write has finished: the mailbox closed and reopened) */
	unsigned three = 3;
	assert_true(st_mbox_wait(&fx->loop, fx->inbox, st_mbox_has_count, &three, 10000));
	reopen(fx);
	st_sync(fx->v, 0, &log);
	st_mbox_set_status(fx->inbox, 0, "RO", "AF");
	st_mbox_set_status(fx->inbox, 1, "O", "");
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	assert_string_equal(st_sync(fx->v, 0, &log), "F1=FRS F2= ");
	char list[64];
	uids(fx->v, list, sizeof(list));
	char want[64];
	snprintf(want, sizeof(want), "%u %u %u ", u1, u2, u3);
	assert_string_equal(list, want);
	assert_int_equal(mailbox_uidvalidity(fx->mbox), uv);
	size_t len;
	char *data = st_read_msg(fx->v, 1, &len);
	assert_string_equal(data, "Subject: 1\r\n\r\none\r\n");
	free(data);
	/* ours, as mutt reads them */
	assert_int_equal(mailbox_store_flags(fx->mbox, fx->v, &u3, 1, FLAG_OP_REPLACE,
					     MAIL_SEEN | MAIL_DELETED | MAIL_DRAFT, 0),
			 0);
	char val[64];
	assert_true(st_mbox_wait(&fx->loop, fx->inbox, third_deleted_draft, NULL, 10000));
	assert_true(st_mbox_header(fx->inbox, 2, "Status", val, sizeof(val)));
	assert_non_null(strchr(val, 'R'));
	assert_true(st_mbox_header(fx->inbox, 2, "X-Status", val, sizeof(val)));
	assert_non_null(strchr(val, 'D'));
	assert_non_null(strchr(val, 'T'));
	assert_null(strchr(val, 'F'));
	/* and after a restart */
	reopen(fx);
	struct mail_info info;
	assert_int_equal(view_msg_info(fx->v, 1, &info), 0);
	assert_int_equal(info.flags & MAIL_FLAGS_SETTABLE,
			 MAIL_SEEN | MAIL_ANSWERED | MAIL_FLAGGED);
	assert_int_equal(view_msg_info(fx->v, 3, &info), 0);
	assert_int_equal(info.flags & MAIL_FLAGS_SETTABLE, MAIL_SEEN | MAIL_DELETED | MAIL_DRAFT);
	assert_int_equal(mailbox_uidvalidity(fx->mbox), uv);
}

/* mutt deletes a message: the view is told EXPUNGE, the others keep UIDs, UIDLs, bytes. */
static void test_mutt_removes(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	st_deliver(fx->root, "INBOX", "Subject: a\n\nA\n");
	st_deliver(fx->root, "INBOX", "Subject: b\n\nB\n");
	st_deliver(fx->root, "INBOX", "Subject: c\n\nC\n");
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	assert_string_equal(st_sync(fx->v, 0, &log), "X3 R3 ");
	char uidl1[MAIL_UIDL_MAX + 1], uidl3[MAIL_UIDL_MAX + 1], u[MAIL_UIDL_MAX + 1];
	assert_int_equal(view_msg_uidl(fx->v, 1, uidl1, sizeof(uidl1)), 0);
	assert_int_equal(view_msg_uidl(fx->v, 3, uidl3, sizeof(uidl3)), 0);
	assert_string_not_equal(uidl1, uidl3);
	uint32_t uv = mailbox_uidvalidity(fx->mbox);
	st_mbox_remove(fx->inbox, 1);
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	assert_string_equal(st_sync(fx->v, 0, &log), "E2 ");
	char list[64];
	uids(fx->v, list, sizeof(list));
	assert_string_equal(list, "1 3 ");
	assert_int_equal(mailbox_uidvalidity(fx->mbox), uv);
	assert_int_equal(view_msg_uidl(fx->v, 1, u, sizeof(u)), 0);
	assert_string_equal(u, uidl1);
	assert_int_equal(view_msg_uidl(fx->v, 2, u, sizeof(u)), 0);
	assert_string_equal(u, uidl3);
	size_t len;
	char *data = st_read_msg(fx->v, 2, &len);
	assert_string_equal(data, "Subject: c\r\n\r\nC\r\n");
	free(data);
	/* the next message is numbered after every UID handed out */
	st_deliver(fx->root, "INBOX", "Subject: d\n\nD\n");
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	assert_string_equal(st_sync(fx->v, 0, &log), "X3 R3 "); /* RECENT: all three */
	uids(fx->v, list, sizeof(list));
	assert_string_equal(list, "1 3 4 ");
}

/* "From " inside a body: the MTA quotes it (">From "), the message boundary is where the MTA
 * put it, and the size the store gives is the size of the bytes it serves. */
static void test_from_lines(void **state)
{
	struct fx *fx = *state;
	st_deliver(fx->root, "INBOX", "Subject: f\n\nFrom the start\nx\n\nFrom here too\n");
	st_deliver(fx->root, "INBOX", "Subject: g\n\ng\n");
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	struct st_sync_log log;
	assert_string_equal(st_sync(fx->v, 0, &log), "X2 R2 ");
	size_t len;
	char *data = st_read_msg(fx->v, 1, &len);
	struct mail_info info;
	assert_int_equal(view_msg_info(fx->v, 1, &info), 0);
	assert_int_equal(info.size, len);
	/* mboxo as the MTA wrote it: ">From " is not undone (it cannot be told from a
	 * ">From " the sender wrote); see storage/README.md */
	assert_string_equal(data,
			    "Subject: f\r\n\r\n>From the start\r\nx\r\n\r\n>From here too\r\n");
	free(data);
	data = st_read_msg(fx->v, 2, &len);
	assert_string_equal(data, "Subject: g\r\n\r\ng\r\n");
	free(data);
}

/* Another program holds the spool's dotlock (alive): a change never waits for it on the
 * loop longer than mbox_lock_timeout; it fails busy (and is not made) or is made in the
 * store's state, and nothing is written under the other's lock; once the lock is free the
 * file gets the change. */
static void test_lock_held(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	uint32_t uid = st_append(fx->mbox, "Subject: 1\r\n\r\none\r\n", 0);
	assert_string_equal(st_sync(fx->v, 0, &log), "X1 R1 ");
	unsigned one = 1; /* in the file before anyone takes its lock */
	assert_true(st_mbox_wait(&fx->loop, fx->inbox, st_mbox_has_count, &one, 10000));
	int to_child[2], from_child[2];
	assert_int_equal(pipe(to_child), 0);
	assert_int_equal(pipe(from_child), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(to_child[1]);
		close(from_child[0]);
		int fd = st_mbox_lock(fx->inbox, 5000);
		char c = fd >= 0 ? 'k' : 'e';
		if (write(from_child[1], &c, 1) != 1)
			_exit(2);
		while (read(to_child[0], &c, 1) > 0)
			;
		if (fd >= 0)
			st_mbox_unlock(fx->inbox, fd);
		_exit(0);
	}
	close(to_child[0]);
	close(from_child[1]);
	char c;
	assert_int_equal(read(from_child[0], &c, 1), 1);
	assert_int_equal(c, 'k');
	/* the change never waits on the loop for the lock: it is refused busy (and not made),
	 * or made in the store's own state with the file to follow once the lock is free */
	uint64_t t0 = uv_hrtime();
	int r = mailbox_store_flags(fx->mbox, fx->v, &uid, 1, FLAG_OP_ADD, MAIL_SEEN, 0);
	assert_true(uv_hrtime() - t0 < 1500000000ull); /* within mbox_lock_timeout (1 s) */
	assert_true(r == 0 || r == -EBUSY);
	struct mail_info info;
	assert_int_equal(view_msg_info(fx->v, 1, &info), 0);
	assert_int_equal(info.flags & MAIL_SEEN, r == 0 ? MAIL_SEEN : 0);
	struct st_mbox_field seen = {0, "Status", "RO"};
	assert_false(st_mbox_has_field(fx->inbox, &seen)); /* nothing written under their lock */
	close(to_child[1]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(from_child[0]);
	/* the retry writes it (a later change writes it at once, too) */
	assert_int_equal(
		mailbox_store_flags(fx->mbox, fx->v, &uid, 1, FLAG_OP_ADD, MAIL_FLAGGED, 0), 0);
	/* lock free again: the file gets it */
	assert_true(st_mbox_wait(&fx->loop, fx->inbox, st_mbox_has_field, &seen, 10000));
}

static bool absent(const char *path, void *arg)
{
	return access(path, F_OK) != 0;
}

/* A dotlock left by a process that died (kill -9 of an MTA) does not block the spool. */
static void test_stale_dotlock(void **state)
{
	struct fx *fx = *state;
	uint32_t uid = st_append(fx->mbox, "Subject: 1\r\n\r\none\r\n", 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = st_mbox_lock(fx->inbox, 5000);
		if (fd < 0)
			_exit(1);
		raise(SIGKILL); /* dies holding it */
		_exit(2);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	char lock[4300];
	snprintf(lock, sizeof(lock), "%s.lock", fx->inbox);
	assert_int_equal(access(lock, F_OK), 0);
	assert_int_equal(mailbox_store_flags(fx->mbox, fx->v, &uid, 1, FLAG_OP_ADD, MAIL_SEEN, 0),
			 0);
	/* the file gets the change: the dead process's lock was broken (and ours let go) */
	struct st_mbox_field seen = {0, "Status", "RO"};
	assert_true(st_mbox_wait(&fx->loop, fx->inbox, st_mbox_has_field, &seen, 10000));
	assert_true(st_mbox_wait(&fx->loop, lock, absent, NULL, 10000));
	/* and our own MTA takes the lock again too */
	st_deliver(fx->root, "INBOX", "Subject: 2\n\ntwo\n");
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	assert_int_equal(mailbox_count(fx->mbox), 2);
}

/* POP3 UIDLs are in the file (X-UIDL): they survive a lost index, a restart, a mutt rewrite,
 * and stay unique. */
static void test_uidl_in_file(void **state)
{
	struct fx *fx = *state;
	st_deliver(fx->root, "INBOX", "Subject: a\n\nA\n");
	st_deliver(fx->root, "INBOX", "Subject: b\n\nB\n");
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	struct view *pop;
	assert_int_equal(view_new(fx->mbox, VIEW_POP3, NULL, NULL, &pop), 0);
	char a[MAIL_UIDL_MAX + 1], b[MAIL_UIDL_MAX + 1], x[MAIL_UIDL_MAX + 1];
	assert_int_equal(view_msg_uidl(pop, 1, a, sizeof(a)), 0);
	assert_int_equal(view_msg_uidl(pop, 2, b, sizeof(b)), 0);
	assert_string_not_equal(a, b);
	view_free(&pop);
	st_mbox_set_status(fx->inbox, 0, "RO", "");
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	reopen(fx);
	assert_int_equal(view_new(fx->mbox, VIEW_POP3, NULL, NULL, &pop), 0);
	assert_int_equal(view_msg_uidl(pop, 1, x, sizeof(x)), 0);
	assert_string_equal(x, a);
	assert_int_equal(view_msg_uidl(pop, 2, x, sizeof(x)), 0);
	assert_string_equal(x, b);
	view_free(&pop);
	/* written into the file once a rewrite happens, so other tools and a lost index keep
	 * them: flag change -> the file is rewritten */
	uint32_t uid = 1;
	assert_int_equal(
		mailbox_store_flags(fx->mbox, fx->v, &uid, 1, FLAG_OP_ADD, MAIL_FLAGGED, 0), 0);
	struct st_mbox_field ua = {0, "X-UIDL", a}, ub = {1, "X-UIDL", b};
	assert_true(st_mbox_wait(&fx->loop, fx->inbox, st_mbox_has_field, &ua, 10000));
	assert_true(st_mbox_has_field(fx->inbox, &ub));
}

/* After an expunge the file is rewritten (every later message moves): each message still
 * reads back whole, also while an MTA appends meanwhile, and after a restart. */
static void test_read_after_rewrite(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	char msg[128];
	for (unsigned i = 1; i <= 6; i++) {
		snprintf(msg, sizeof(msg), "Subject: %u\r\n\r\nbody %u\r\n", i, i);
		st_append(fx->mbox, msg, 0);
	}
	st_sync(fx->v, 0, &log);
	unsigned n = 6;
	assert_true(st_mbox_wait(&fx->loop, fx->inbox, st_mbox_has_count, &n, 10000));
	for (uint32_t round = 1; round <= 3; round++) {
		uint32_t uid;
		assert_int_equal(view_seq_to_uid(fx->v, 1, &uid), 0);
		assert_int_equal(mailbox_expunge(fx->mbox, &uid, 1), 0);
		snprintf(msg, sizeof(msg), "Subject: mta%u\n\nmta %u\n", round, round);
		st_deliver(fx->root, "INBOX", msg);
		n = 6; /* one gone, one come */
		assert_true(st_mbox_wait(&fx->loop, fx->inbox, st_mbox_has_count, &n, 10000));
		assert_int_equal(mailbox_refresh(fx->mbox), 0);
		st_sync(fx->v, 0, &log);
		assert_int_equal(view_count(fx->v), 6);
		for (uint32_t seq = 1; seq <= 6; seq++) {
			struct mail_info info;
			assert_int_equal(view_msg_info(fx->v, seq, &info), 0);
			size_t len;
			char *data = st_read_msg(fx->v, seq, &len);
			if (data == NULL)
				fail_msg("round %u: seq %u uid %u does not open", round, seq,
					 info.uid);
			if (info.uid <= 6)
				snprintf(msg, sizeof(msg), "Subject: %u\r\n\r\nbody %u\r\n",
					 info.uid, info.uid);
			else
				snprintf(msg, sizeof(msg), "Subject: mta%u\r\n\r\nmta %u\r\n",
					 info.uid - 6, info.uid - 6);
			assert_string_equal(data, msg);
			free(data);
		}
	}
	reopen(fx);
	assert_int_equal(view_count(fx->v), 6);
	char list[64];
	uids(fx->v, list, sizeof(list));
	assert_string_equal(list, "4 5 6 7 8 9 ");
}

/* The helpers themselves: what the MTA and mutt sides write is what mutt and Debian's MTAs
 * write (checked on the bytes, without the store). */
static void test_helpers(void **state)
{
	struct fx *fx = *state;
	char path[4300];
	snprintf(path, sizeof(path), "%s/helper-mbox", fx->dir);
	char root[4300];
	snprintf(root, sizeof(root), "%s", fx->dir);
	/* st_deliver into a folder "helper-mbox" of root fx->dir */
	st_deliver(root, "helper-mbox", "Subject: a\r\n\r\nFrom x\r\n>From y\r\nend");
	st_deliver(root, "helper-mbox", "Subject: b\n\nb\n");
	assert_int_equal(st_mbox_count(path), 2);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	char buf[1024];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *second = strstr(buf, "\n\nFrom MAILER-DAEMON ");
	assert_non_null(second);
	assert_int_equal(strncmp(buf, "From MAILER-DAEMON ", 19), 0);
	const char *body = strchr(buf, '\n') + 1;
	/* mboxo, as exim and postfix write it: only "From " at a line start is quoted */
	const char *want = "Subject: a\n\n>From x\n>From y\nend\n\nFrom MAILER-DAEMON ";
	assert_int_equal(strncmp(body, want, strlen(want)), 0);
	st_mbox_set_status(path, 1, "RO", "F");
	char val[64];
	assert_true(st_mbox_header(path, 1, "Status", val, sizeof(val)));
	assert_string_equal(val, "RO");
	assert_true(st_mbox_header(path, 1, "X-Status", val, sizeof(val)));
	assert_string_equal(val, "F");
	assert_false(st_mbox_header(path, 0, "Status", val, sizeof(val)));
	st_mbox_remove(path, 0);
	assert_int_equal(st_mbox_count(path), 1);
	assert_true(st_mbox_header(path, 0, "Subject", val, sizeof(val)));
	assert_string_equal(val, "b");
	char lock[4400];
	snprintf(lock, sizeof(lock), "%s.lock", path);
	assert_int_not_equal(access(lock, F_OK), 0);

	/* held by a live process: a wait times out; released: a waiter gets it */
	int to_child[2], from_child[2];
	assert_int_equal(pipe(to_child), 0);
	assert_int_equal(pipe(from_child), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(to_child[1]);
		close(from_child[0]);
		int fd = st_mbox_lock(path, 5000);
		char c = fd >= 0 ? 'k' : 'e';
		if (write(from_child[1], &c, 1) != 1)
			_exit(2);
		while (read(to_child[0], &c, 1) > 0)
			;
		st_mbox_unlock(path, fd);
		_exit(0);
	}
	close(to_child[0]);
	close(from_child[1]);
	char c;
	assert_int_equal(read(from_child[0], &c, 1), 1);
	assert_int_equal(c, 'k');
	assert_int_equal(st_mbox_lock(path, 200), -ETIMEDOUT);
	fflush(NULL);
	pid_t waiter = fork();
	assert_true(waiter >= 0);
	if (waiter == 0) {
		close(to_child[1]);
		int fd = st_mbox_lock(path, 10000);
		if (fd < 0)
			_exit(1);
		st_mbox_unlock(path, fd);
		_exit(0);
	}
	close(to_child[1]); /* the holder lets go, the waiter is woken */
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(waitpid(waiter, &status, 0), waiter);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(from_child[0]);
	/* a dotlock whose process is dead is broken */
	int fd = open(lock, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "999999999\n", 10), 10);
	close(fd);
	fd = st_mbox_lock(path, 1000);
	assert_true(fd >= 0);
	st_mbox_unlock(path, fd);
}

int main(void)
{
	setenv("MK_STORE_FORMAT", "mbox", 1);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_helpers, setup_bare, teardown_bare),
		cmocka_unit_test_setup_teardown(test_delivery_by_fs_event, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delivery_by_refresh, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mutt_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mutt_removes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_from_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_held, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_dotlock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uidl_in_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_after_rewrite, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
