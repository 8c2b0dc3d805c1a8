/* Changes made behind the server's back: an MTA delivering into new/ (noticed by the fs
 * event within a bounded wait, and by mailbox_refresh), mutt renaming/removing files in cur/,
 * half-written files in tmp/, and a renamer racing our scans and reads. */
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
#include <time.h>
#include <unistd.h>

#include "mailbox_private.h"
#include "storage_test.h"

struct fx {
	uv_loop_t loop;
	char *dir;
	char root[4096];
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
	uv_loop_init(&fx->loop);
	fx->dir = st_tmpdir();
	snprintf(fx->root, sizeof(fx->root), "%s/u", fx->dir);
	assert_int_equal(store_open_path(&fx->loop, fx->root, &fx->store), 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->mbox), 0);
	assert_int_equal(view_new(fx->mbox, VIEW_IMAP, on_notify, fx, &fx->v), 0);
	*state = fx;
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

/* The MTA delivers while the loop runs: the fs event brings it to the view, no command. */
static void test_delivery_by_fs_event(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	st_write_file(fx->root, "new", "1700000000.P1Q1.mta", "Subject: hi\n\nhello\n");
	assert_true(st_run_until(&fx->loop, &fx->notified, 5000));
	assert_string_equal(st_sync(fx->v, 0, &log), "X1 R1 ");
	size_t len;
	char *data = st_read_msg(fx->v, 1, &len);
	assert_string_equal(data, "Subject: hi\r\n\r\nhello\r\n");
	free(data);
	/* a burst of deliveries: one notification, every message there */
	fx->notified = false;
	for (int i = 2; i <= 20; i++) {
		char name[64];
		snprintf(name, sizeof(name), "17000000%02d.P1Q%d.mta", i, i);
		st_write_file(fx->root, "new", name, "x\n");
	}
	assert_true(st_run_until(&fx->loop, &fx->notified, 5000));
	/* the event may have come before the last file: refresh settles it */
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	st_sync(fx->v, 0, &log);
	assert_int_equal(view_count(fx->v), 20);
	/* numbered in delivery (name) order */
	uint32_t uid;
	assert_int_equal(view_seq_to_uid(fx->v, 20, &uid), 0);
	assert_int_equal(uid, 20);
	char uidl[MAIL_UIDL_MAX + 1];
	assert_int_equal(view_msg_uidl(fx->v, 20, uidl, sizeof(uidl)), 0);
	assert_string_equal(uidl, "1700000020.P1Q20.mta");
}

/* Without the loop running: the refresh before a command finds everything. */
static void test_refresh(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	st_write_file(fx->root, "new", "1700000001.a.mta", "one\n");
	st_write_file(fx->root, "cur", "1700000002.b.mta:2,S", "two\n");
	/* half-written, in tmp/: never seen */
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s/tmp/1700000003.c.mta", fx->root);
	int fd = open(tmp, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "partial", 7), 7);
	close(fd);
	/* dot files and non-Maildir names are ignored */
	st_write_file(fx->root, "cur", ".hidden", "x\n");
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	assert_int_equal(mailbox_count(fx->mbox), 2);
	assert_string_equal(st_sync(fx->v, 0, &log), "X2 R2 ");
	/* nothing changed: nothing announced */
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	assert_false(view_has_changes(fx->v));

	/* mutt marks message 1 read and flagged (moves it new -> cur) */
	char from[4200], to[4200];
	snprintf(from, sizeof(from), "%s/new/1700000001.a.mta", fx->root);
	snprintf(to, sizeof(to), "%s/cur/1700000001.a.mta:2,FS", fx->root);
	uint64_t ms = mailbox_highest_modseq(fx->mbox);
	assert_int_equal(rename(from, to), 0);
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	assert_string_equal(st_sync(fx->v, 0, &log), "F1=FS ");
	struct mail_info info;
	assert_int_equal(view_msg_info(fx->v, 1, &info), 0);
	assert_true(info.modseq > ms);
	char uidl[MAIL_UIDL_MAX + 1];
	assert_int_equal(view_msg_uidl(fx->v, 1, uidl, sizeof(uidl)), 0);
	assert_string_equal(uidl, "1700000001.a.mta");
	/* mutt deletes message 2: both views of the folder are told */
	struct view *v2;
	assert_int_equal(view_new(fx->mbox, VIEW_IMAP, NULL, NULL, &v2), 0);
	snprintf(from, sizeof(from), "%s/cur/1700000002.b.mta:2,S", fx->root);
	assert_int_equal(unlink(from), 0);
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	assert_string_equal(st_sync(fx->v, 0, &log), "E2 ");
	assert_string_equal(st_sync(v2, 0, &log), "E2 ");
	view_free(&v2);
	assert_int_equal(mailbox_count(fx->mbox), 1);
	/* the tmp file is finally delivered */
	snprintf(to, sizeof(to), "%s/new/1700000003.c.mta", fx->root);
	assert_int_equal(rename(tmp, to), 0);
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	assert_string_equal(st_sync(fx->v, 0, &log), "X2 R2 ");
	assert_int_equal(view_seq_to_uid(fx->v, 2, &info.uid), 0);
	assert_int_equal(info.uid, 3);
}

/* Our own changes do not make the next command re-read the folder (their fs events are
 * recognised by name), yet a delivery right after one of them is still seen, by refresh
 * and by the fs event. */
static void test_own_changes_no_reread(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	uint32_t u1 = st_append(fx->mbox, "one\r\n", 0);
	st_append(fx->mbox, "two\r\n", 0);
	/* Let the echoes of those arrive, and start from a settled folder: it was created and
	 * written just now, and within 100 ms of a change a directory's time cannot show a
	 * second one, so until then every refresh re-reads it whatever we did (the attach marks
	 * it so). 150 ms of real time (the loop's clock is refreshed first: the appends'
	 * fsyncs may have taken long), then one refresh that finds the folder settled. */
	bool never = false;
	uv_update_time(&fx->loop);
	st_run_until(&fx->loop, &never, 150);
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	st_sync(fx->v, 0, &log);
	unsigned long before = fx->mbox->rescans;
	assert_int_equal(mailbox_store_flags(fx->mbox, fx->v, &u1, 1, FLAG_OP_ADD, MAIL_SEEN, 0),
			 0);
	uint32_t u3 = st_append(fx->mbox, "three\r\n", 0);
	assert_int_equal(mailbox_expunge(fx->mbox, &u3, 1), 0);
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	fx->notified = false;
	st_run_until(&fx->loop, &never, 50); /* the fs events of our changes come and go */
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	assert_int_equal(fx->mbox->rescans, before);
	/* someone else delivers right after our change: refresh sees it at once */
	assert_int_equal(mailbox_store_flags(fx->mbox, fx->v, &u1, 1, FLAG_OP_ADD, MAIL_FLAGGED, 0),
			 0);
	st_write_file(fx->root, "new", "1700000009.other.mta", "x\n");
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	assert_int_equal(mailbox_count(fx->mbox), 3);
	/* and with the loop running: the fs event brings the next one */
	st_sync(fx->v, 0, &log);
	fx->notified = false;
	assert_int_equal(mailbox_store_flags(fx->mbox, fx->v, &u1, 1, FLAG_OP_REMOVE, MAIL_SEEN, 0),
			 0);
	st_write_file(fx->root, "new", "1700000010.other.mta", "y\n");
	assert_true(st_run_until(&fx->loop, &fx->notified, 5000));
	assert_string_equal(st_sync(fx->v, 0, &log), "X4 R4 ");
}

/* A file a dead writer left in tmp/ goes after 36 hours (at the next open); a young one stays. */
static void test_tmp_cleanup(void **state)
{
	struct fx *fx = *state;
	char old[4200], young[4200];
	snprintf(old, sizeof(old), "%s/tmp/1600000000.dead.host", fx->root);
	snprintf(young, sizeof(young), "%s/tmp/1700000000.writing.host", fx->root);
	FILE *f = fopen(old, "w");
	assert_non_null(f);
	fclose(f);
	f = fopen(young, "w");
	assert_non_null(f);
	fclose(f);
	struct timespec t[2] = {{time(NULL) - 37 * 3600, 0}, {time(NULL) - 37 * 3600, 0}};
	assert_int_equal(utimensat(AT_FDCWD, old, t, 0), 0);
	view_free(&fx->v);
	mailbox_unref(&fx->mbox);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->mbox), 0);
	assert_int_equal(view_new(fx->mbox, VIEW_IMAP, on_notify, fx, &fx->v), 0);
	assert_int_equal(access(old, F_OK), -1);
	assert_int_equal(access(young, F_OK), 0);
	assert_int_equal(mailbox_count(fx->mbox), 0);
}

/* Flag changes made while the server was down get a new modseq at the next open. */
static void test_changed_while_down(void **state)
{
	struct fx *fx = *state;
	uint32_t uid = st_append(fx->mbox, "m\r\n", 0);
	uint64_t ms = mailbox_highest_modseq(fx->mbox);
	view_free(&fx->v);
	mailbox_unref(&fx->mbox);
	char name[1024], from[8192], to[8192];
	assert_true(st_find_file(fx->root, "cur", "", name, sizeof(name)));
	snprintf(from, sizeof(from), "%s/cur/%s", fx->root, name);
	snprintf(to, sizeof(to), "%s/cur/%.*sRS", fx->root, (int)strlen(name), name);
	assert_int_equal(rename(from, to), 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->mbox), 0);
	assert_int_equal(view_new(fx->mbox, VIEW_IMAP, on_notify, fx, &fx->v), 0);
	struct mail_info info;
	assert_int_equal(view_msg_info(fx->v, 1, &info), 0);
	assert_int_equal(info.uid, uid);
	assert_int_equal(info.flags & MAIL_FLAGS_SETTABLE, MAIL_ANSWERED | MAIL_SEEN);
	assert_true(info.modseq > ms);
}

/* Another program renames messages in cur/ as fast as it can while we re-read the folder
 * and read the messages: nothing is lost, no UID changes, every read gives the bytes. */
static void test_rename_race(void **state)
{
	struct fx *fx = *state;
	enum { N = 8, ROUNDS = 400 };
	char bases[N][64];
	for (int i = 0; i < N; i++) {
		char name[80], body[64];
		snprintf(bases[i], sizeof(bases[i]), "17000000%02d.race%d.host", i, i);
		snprintf(name, sizeof(name), "%s:2,", bases[i]);
		snprintf(body, sizeof(body), "Subject: %d\n\nbody %d\n", i, i);
		st_write_file(fx->root, "cur", name, body);
	}
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	struct st_sync_log log;
	st_sync(fx->v, 0, &log);
	assert_int_equal(view_count(fx->v), N);
	int stop[2], ready[2];
	assert_int_equal(pipe(stop), 0);
	assert_int_equal(pipe(ready), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* drop what we inherited, the folder lock included (flock is per open file
		 * description: a forked child would hold it for us), then say so */
		for (int fd = 3; fd < 1024; fd++)
			if (fd != stop[0] && fd != ready[1])
				close(fd);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		close(ready[1]);
		fcntl(stop[0], F_SETFL, O_NONBLOCK);
		const char *infos[] = {"", "S", "FS", "RS", "F"};
		unsigned cur[N] = {0};
		char buf[1];
		for (unsigned k = 0;; k++) {
			if (read(stop[0], buf, 1) == 0)
				_exit(0); /* parent closed the pipe */
			int i = (int)(k % N);
			unsigned next = (cur[i] + 1) % 5;
			char a[8192], b[8192];
			snprintf(a, sizeof(a), "%s/cur/%s:2,%s", fx->root, bases[i], infos[cur[i]]);
			snprintf(b, sizeof(b), "%s/cur/%s:2,%s", fx->root, bases[i], infos[next]);
			if (rename(a, b) == 0)
				cur[i] = next;
		}
	}
	close(stop[0]);
	close(ready[1]);
	char r1;
	assert_int_equal(read(ready[0], &r1, 1), 1);
	close(ready[0]);
	for (int round = 0; round < ROUNDS; round++) {
		assert_int_equal(mailbox_refresh(fx->mbox), 0);
		assert_int_equal(mailbox_count(fx->mbox), N);
		uint32_t seq = (uint32_t)(round % N) + 1;
		size_t len;
		char *data = st_read_msg(fx->v, seq, &len);
		assert_non_null(data);
		char want[64];
		snprintf(want, sizeof(want), "Subject: %u\r\n\r\nbody %u\r\n", seq - 1, seq - 1);
		assert_string_equal(data, want);
		free(data);
		uv_run(&fx->loop, UV_RUN_NOWAIT);
		if (round % 50 == 49) {
			/* open again while the renamer runs: same UIDs, nothing lost */
			view_free(&fx->v);
			mailbox_unref(&fx->mbox);
			assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->mbox), 0);
			assert_int_equal(view_new(fx->mbox, VIEW_IMAP, on_notify, fx, &fx->v), 0);
			assert_int_equal(view_count(fx->v), N);
			for (uint32_t s2 = 1; s2 <= N; s2++) {
				uint32_t uid2;
				assert_int_equal(view_seq_to_uid(fx->v, s2, &uid2), 0);
				assert_int_equal(uid2, s2);
			}
		}
	}
	close(stop[1]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	st_sync(fx->v, 0, &log);
	assert_int_equal(view_count(fx->v), N);
	for (uint32_t s = 1; s <= N; s++) {
		uint32_t uid;
		char uidl[MAIL_UIDL_MAX + 1];
		assert_int_equal(view_seq_to_uid(fx->v, s, &uid), 0);
		assert_int_equal(uid, s);
		assert_int_equal(view_msg_uidl(fx->v, s, uidl, sizeof(uidl)), 0);
		assert_string_equal(uidl, bases[s - 1]);
	}
	/* nothing was expunged along the way */
	assert_null(strstr(log.text, "E"));
	assert_int_equal(mailbox_uidnext(fx->mbox), N + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_delivery_by_fs_event, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refresh, setup, teardown),
		cmocka_unit_test_setup_teardown(test_own_changes_no_reread, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tmp_cleanup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_changed_while_down, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rename_race, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
