/* A full disk and interrupted changes (issue 8 defects D1-D3, bug B9): a change whose UID-list
 * record cannot be written changes nothing (not the files, not memory, not the views), reading
 * and refreshing go on without space, an expunge record written before its file was removed is
 * completed at the next open, and an async open of a folder that is being closed still gets it.
 *
 * A full disk is made with RLIMIT_FSIZE: every write past a small size fails (EFBIG), as a
 * write on a full disk fails (ENOSPC); renames and unlinks still work, as they do there. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "storage_test.h"
#include "storage_util.h"
#include "uidlist.h"

struct fx {
	uv_loop_t loop;
	char *dir;
	char root[4096];
	struct store *store;
	struct mailbox *inbox;
	uint32_t uids[3];
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	uv_loop_init(&fx->loop);
	fx->dir = st_tmpdir();
	snprintf(fx->root, sizeof(fx->root), "%s/u", fx->dir);
	assert_int_equal(st_store_open(&fx->loop, fx->root, &fx->store), 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->inbox), 0);
	fx->uids[0] = st_append(fx->inbox, "Subject: one\r\n\r\none\r\n", 0);
	fx->uids[1] = st_append(fx->inbox, "Subject: two\r\n\r\ntwo\r\n", MAIL_DELETED);
	fx->uids[2] = st_append(fx->inbox, "Subject: three\r\n\r\nthree\r\n", MAIL_SEEN);
	if (st_format() == ST_MBOX) {
		/* the file follows the UID list soon after: let it, so a failed change's file
		 * can be compared with this one */
		char p[4200];
		unsigned three = 3;
		st_mbox_path(fx->root, "INBOX", p, sizeof(p));
		assert_true(st_mbox_wait(&fx->loop, p, st_mbox_has_count, &three, 10000));
	}
	signal(SIGXFSZ, SIG_IGN);
	*state = fx;
	return 0;
}

static void disk_full(bool on)
{
	struct rlimit rl;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &rl), 0);
	rl.rlim_cur = on ? 64 : rl.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	disk_full(false);
	mailbox_unref(&fx->inbox);
	store_unref(&fx->store);
	st_loop_close(&fx->loop);
	st_rmdir(&fx->dir);
	free(fx);
	return 0;
}

static void reopen(struct fx *fx)
{
	mailbox_unref(&fx->inbox);
	store_unref(&fx->store);
	st_loop_close(&fx->loop);
	uv_loop_init(&fx->loop);
	assert_int_equal(st_store_open(&fx->loop, fx->root, &fx->store), 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->inbox), 0);
}

/* FOLDER holds N messages on disk: files in cur/ (Maildir), messages in the file (mbox,
 * waited for: the file follows the UID list soon after). */
static void assert_disk_count(struct fx *fx, const char *folder, unsigned n)
{
	char p[4200];
	if (st_format() == ST_MBOX) {
		st_mbox_path(fx->root, folder, p, sizeof(p));
		assert_true(st_mbox_wait(&fx->loop, p, st_mbox_has_count, &n, 10000));
		return;
	}
	if (strcmp(folder, "INBOX") == 0)
		snprintf(p, sizeof(p), "%s", fx->root);
	else
		snprintf(p, sizeof(p), "%s/.%s", fx->root, folder);
	assert_int_equal(st_count_files(p, "cur"), n);
}

/* The names in cur/ and new/, sorted, as one string (Maildir); the INBOX file's bytes
 * (mbox): what a failed change must leave exactly as it was. */
static void dir_names(const struct fx *fx, char *out, size_t size)
{
	if (st_format() == ST_MBOX) {
		char p[4200];
		st_mbox_path(fx->root, "INBOX", p, sizeof(p));
		FILE *f = fopen(p, "r");
		assert_non_null(f);
		size_t n = fread(out, 1, size - 1, f);
		assert_true(n < size - 1);
		out[n] = '\0';
		fclose(f);
		return;
	}
	char *names[64];
	size_t n = 0;
	for (int k = 0; k < 2; k++) {
		char d[4200];
		snprintf(d, sizeof(d), "%s/%s", fx->root, k ? "cur" : "new");
		DIR *dir = opendir(d);
		assert_non_null(dir);
		struct dirent *de;
		while ((de = readdir(dir)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			assert_true(n < 64);
			char *s = malloc(strlen(de->d_name) + 5);
			sprintf(s, "%s/%s", k ? "cur" : "new", de->d_name);
			names[n++] = s;
		}
		closedir(dir);
	}
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
			char *t = names[j];
			names[j] = names[j - 1];
			names[j - 1] = t;
		}
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		strncat(out, names[i], size - strlen(out) - 2);
		strcat(out, " ");
		free(names[i]);
	}
}

/* "uid:flags:modseq " for every message. */
static void picture(struct mailbox *mbox, char *out, size_t size)
{
	struct view *v;
	assert_int_equal(view_new(mbox, VIEW_IMAP, NULL, NULL, &v), 0);
	out[0] = '\0';
	for (uint32_t seq = 1; seq <= view_count(v); seq++) {
		struct mail_info info;
		assert_int_equal(view_msg_info(v, seq, &info), 0);
		size_t len = strlen(out);
		snprintf(out + len, size - len, "%u:%x:%llu ", info.uid,
			 info.flags & MAIL_FLAGS_SETTABLE, (unsigned long long)info.modseq);
	}
	view_free(&v);
}

/* D1: STORE whose records cannot be written undoes its renames and tells nobody; the modseq
 * does not move, now or after a restart. */
static void test_store_full(void **state)
{
	struct fx *fx = *state;
	char names[4096], names2[4096], pic[1024], pic2[1024];
	struct view *other;
	struct st_sync_log log;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &other), 0);
	st_sync(other, 0, &log);
	dir_names(fx, names, sizeof(names));
	picture(fx->inbox, pic, sizeof(pic));
	uint64_t ms = mailbox_highest_modseq(fx->inbox);
	disk_full(true);
	assert_int_equal(
		mailbox_store_flags(fx->inbox, NULL, fx->uids, 3, FLAG_OP_ADD, MAIL_FLAGGED, 0),
		-EFBIG);
	assert_int_equal(mailbox_store_flags(fx->inbox, NULL, &fx->uids[1], 1, FLAG_OP_REMOVE,
					     MAIL_DELETED, 0),
			 -EFBIG);
	dir_names(fx, names2, sizeof(names2));
	assert_string_equal(names2, names);
	picture(fx->inbox, pic2, sizeof(pic2));
	assert_string_equal(pic2, pic);
	assert_int_equal(mailbox_highest_modseq(fx->inbox), ms);
	uv_run(&fx->loop, UV_RUN_NOWAIT);
	assert_string_equal(st_sync(other, 0, &log), "");
	/* reading goes on */
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	disk_full(false);
	view_free(&other);
	reopen(fx);
	picture(fx->inbox, pic2, sizeof(pic2));
	assert_string_equal(pic2, pic);
	assert_int_equal(mailbox_highest_modseq(fx->inbox), ms);
	/* and once there is space it works */
	assert_int_equal(
		mailbox_store_flags(fx->inbox, NULL, fx->uids, 1, FLAG_OP_ADD, MAIL_FLAGGED, 0), 0);
	assert_int_equal(mailbox_highest_modseq(fx->inbox), ms + 1);
	reopen(fx);
	assert_int_equal(mailbox_highest_modseq(fx->inbox), ms + 1);
}

/* D2: EXPUNGE whose record cannot be written leaves the message: file, memory, views. */
static void test_expunge_full(void **state)
{
	struct fx *fx = *state;
	char names[4096], names2[4096], pic[1024], pic2[1024];
	struct view *other;
	struct st_sync_log log;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &other), 0);
	st_sync(other, 0, &log);
	dir_names(fx, names, sizeof(names));
	picture(fx->inbox, pic, sizeof(pic));
	uint64_t ms = mailbox_highest_modseq(fx->inbox);
	disk_full(true);
	assert_int_equal(mailbox_expunge(fx->inbox, &fx->uids[1], 1), -EFBIG);
	dir_names(fx, names2, sizeof(names2));
	assert_string_equal(names2, names);
	picture(fx->inbox, pic2, sizeof(pic2));
	assert_string_equal(pic2, pic);
	assert_int_equal(mailbox_highest_modseq(fx->inbox), ms);
	uv_run(&fx->loop, UV_RUN_NOWAIT);
	assert_string_equal(st_sync(other, 0, &log), "");
	disk_full(false);
	view_free(&other);
	reopen(fx);
	picture(fx->inbox, pic2, sizeof(pic2));
	assert_string_equal(pic2, pic);
	assert_int_equal(mailbox_expunge(fx->inbox, &fx->uids[1], 1), 0);
	assert_int_equal(mailbox_count(fx->inbox), 2);
	assert_disk_count(fx, "INBOX", 2);
	assert_int_equal(mailbox_highest_modseq(fx->inbox), ms + 1);
	reopen(fx);
	assert_int_equal(mailbox_count(fx->inbox), 2);
	assert_int_equal(mailbox_highest_modseq(fx->inbox), ms + 1);
}

/* D2: the record was written, the file not removed (a crash between the two): the next open
 * removes it and never numbers it again. */
static void test_expunge_finished_at_open(void **state)
{
	struct fx *fx = *state;
	st_only(ST_MAILDIR); /* the UID list's X record */
	uint64_t ms = mailbox_highest_modseq(fx->inbox);
	char file[4200];
	snprintf(file, sizeof(file), "%s/%s", fx->root, UIDLIST_FILE);
	struct sbuf b = {0};
	assert_int_equal(uidlist_line_expunge_unlink(&b, fx->uids[1], ms + 1), 0);
	int fd = open(file, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, b.data, b.len), (ssize_t)b.len);
	close(fd);
	sbuf_free(&b);
	assert_int_equal(st_count_files(fx->root, "cur"), 3);
	reopen(fx);
	assert_int_equal(mailbox_count(fx->inbox), 2);
	assert_int_equal(st_count_files(fx->root, "cur"), 2);
	assert_int_equal(mailbox_uidnext(fx->inbox), fx->uids[2] + 1);
	assert_int_equal(mailbox_highest_modseq(fx->inbox), ms + 1);
	reopen(fx);
	assert_int_equal(mailbox_count(fx->inbox), 2);
	assert_int_equal(mailbox_uidnext(fx->inbox), fx->uids[2] + 1);
}

/* D3: while the disk is full a refresh and an open succeed and show only what is durable;
 * a delivery and a mutt rename made meanwhile appear once there is space. */
static void test_refresh_and_open_full(void **state)
{
	struct fx *fx = *state;
	char pic[1024], pic2[1024], name[256];
	picture(fx->inbox, pic, sizeof(pic));
	uint64_t ms = mailbox_highest_modseq(fx->inbox);
	disk_full(true);
	st_deliver(fx->root, "INBOX", "Subject: late\r\n\r\nlate\r\n");
	if (st_format() == ST_MBOX) {
		/* mutt sets \Flagged on the first message: the file is rewritten */
		char p[4200];
		st_mbox_path(fx->root, "INBOX", p, sizeof(p));
		st_mbox_set_status(p, 0, "O", "F");
		goto changed;
	}
	/* mutt sets \Flagged on the first message */
	char cur[4200], old[4500], neu[4500];
	snprintf(cur, sizeof(cur), "%s/cur", fx->root);
	DIR *d = opendir(cur);
	struct dirent *de;
	name[0] = '\0';
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' && strstr(de->d_name, ":2,") != NULL &&
		    strchr(strstr(de->d_name, ":2,"), 'T') == NULL &&
		    strchr(strstr(de->d_name, ":2,"), 'S') == NULL)
			snprintf(name, sizeof(name), "%s", de->d_name);
	closedir(d);
	assert_true(name[0] != '\0');
	snprintf(old, sizeof(old), "%s/%s", cur, name);
	snprintf(neu, sizeof(neu), "%s/%sF", cur, name);
	assert_int_equal(rename(old, neu), 0);
changed:
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	picture(fx->inbox, pic2, sizeof(pic2));
	assert_string_equal(pic2, pic);
	assert_int_equal(mailbox_highest_modseq(fx->inbox), ms);
	/* a fresh open reads without writing */
	reopen(fx);
	picture(fx->inbox, pic2, sizeof(pic2));
	assert_string_equal(pic2, pic);
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	assert_int_equal(mailbox_count(fx->inbox), 3);
	disk_full(false);
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	picture(fx->inbox, pic2, sizeof(pic2));
	char want[1024];
	snprintf(want, sizeof(want), "%u:%x:%llu %u:%x:%llu %u:%x:%llu %u:%x:%llu ", fx->uids[0],
		 MAIL_FLAGGED, (unsigned long long)ms + 1, fx->uids[1], MAIL_DELETED,
		 (unsigned long long)ms - 1, fx->uids[2], MAIL_SEEN, (unsigned long long)ms,
		 fx->uids[2] + 1, 0, (unsigned long long)ms + 2);
	assert_string_equal(pic2, want);
	reopen(fx);
	picture(fx->inbox, pic2, sizeof(pic2));
	assert_string_equal(pic2, want);
}

/* COPY and MOVE whose records cannot be written in the target leave no message there and
 * take none from the source. */
static void copy_or_move_full(struct fx *fx, bool move)
{
	char names[4096], names2[4096], pic[1024], pic2[1024];
	struct mailbox *archive;
	uint32_t new_uids[3];
	assert_int_equal(mailbox_open(fx->store, "Archive", &archive), 0);
	uint32_t uidnext = mailbox_uidnext(archive);
	uint64_t ms_arch = mailbox_highest_modseq(archive);
	dir_names(fx, names, sizeof(names));
	picture(fx->inbox, pic, sizeof(pic));
	disk_full(true);
	int r = move ? mailbox_move(fx->inbox, fx->uids, 3, archive, new_uids)
		     : mailbox_copy(fx->inbox, fx->uids, 3, archive, new_uids);
	assert_int_equal(r, -EFBIG);
	for (int i = 0; i < 3; i++)
		assert_int_equal(new_uids[i], 0);
	assert_int_equal(mailbox_count(archive), 0);
	assert_int_equal(mailbox_uidnext(archive), uidnext);
	assert_int_equal(mailbox_highest_modseq(archive), ms_arch);
	assert_disk_count(fx, "Archive", 0);
	dir_names(fx, names2, sizeof(names2));
	assert_string_equal(names2, names);
	picture(fx->inbox, pic2, sizeof(pic2));
	assert_string_equal(pic2, pic);
	disk_full(false);
	mailbox_unref(&archive);
	reopen(fx);
	picture(fx->inbox, pic2, sizeof(pic2));
	assert_string_equal(pic2, pic);
	assert_int_equal(mailbox_open(fx->store, "Archive", &archive), 0);
	assert_int_equal(mailbox_count(archive), 0);
	assert_int_equal(mailbox_uidnext(archive), uidnext);
	r = move ? mailbox_move(fx->inbox, fx->uids, 3, archive, new_uids)
		 : mailbox_copy(fx->inbox, fx->uids, 3, archive, new_uids);
	assert_int_equal(r, 0);
	assert_int_equal(new_uids[0], uidnext);
	assert_int_equal(mailbox_count(archive), 3);
	assert_int_equal(mailbox_count(fx->inbox), move ? 0 : 3);
	mailbox_unref(&archive);
}

static void test_copy_full(void **state)
{
	copy_or_move_full(*state, false);
}

static void test_move_full(void **state)
{
	copy_or_move_full(*state, true);
}

/* B9: an async open of a folder that is open answers later with that object, even if every
 * other user closes it before the answer (it used to look the folder up again, find nothing
 * and answer -ENOENT: SELECT said NONEXISTENT). */
static void open_cb(int err, struct mailbox *mbox, void *data)
{
	struct mailbox **out = data;
	assert_int_equal(err, 0);
	assert_non_null(mbox);
	*out = mbox;
}

static void test_async_open_while_closing(void **state)
{
	struct fx *fx = *state;
	struct mailbox *m = NULL;
	assert_int_equal(mailbox_open_async(fx->store, "INBOX", open_cb, &m), 0);
	mailbox_unref(&fx->inbox); /* the last other session goes */
	while (m == NULL)
		uv_run(&fx->loop, UV_RUN_ONCE);
	assert_int_equal(mailbox_count(m), 3);
	/* the folder lock is still ours alone: a second open is the same object */
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->inbox), 0);
	assert_ptr_equal(fx->inbox, m);
	mailbox_unref(&m);
	/* closed, then opened again at once: one object, no lock fight */
	struct mailbox *a = NULL, *b = NULL;
	mailbox_unref(&fx->inbox);
	assert_int_equal(mailbox_open_async(fx->store, "INBOX", open_cb, &a), 0);
	assert_int_equal(mailbox_open_async(fx->store, "INBOX", open_cb, &b), 0);
	while (a == NULL || b == NULL)
		uv_run(&fx->loop, UV_RUN_ONCE);
	assert_ptr_equal(a, b);
	mailbox_unref(&b);
	fx->inbox = a;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_store_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expunge_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expunge_finished_at_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refresh_and_open_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_move_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async_open_while_closing, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
