/* The mbox back-end on its own: reading an MTA's mbox (From_ lines, quoting, our hidden
 * headers), appends and their sync into the file, flags and expunges written as UW-IMAP and
 * Dovecot write them, an MTA delivering while we have the folder open, mutt editing or
 * removing messages behind our back, lost state (X-IMAPbase/X-UID/X-UIDL), a rewrite cut
 * short by a crash at each point, lock timeouts, and the folder layout. */
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
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mbox_scan.h"
#include "mbox_sync.h"
#include "storage_test.h"
#include "storage_util.h"

struct fx {
	uv_loop_t loop;
	char *dir;
	char root[4096];
	char inbox_path[4200];
	struct store *store;
	struct mailbox *inbox;
	bool mboxrd;
};

static bool sync_done;
static int sync_result;

static void on_sync(struct mailbox *mbox, int result)
{
	(void)mbox;
	sync_done = true;
	sync_result = result;
}

static void write_file(const char *path, const char *data)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(storage_write_all(fd, data, strlen(data)), 0);
	close(fd);
}

__attribute__((noinline)) static char *read_file(const char *path)
{
	char *data;
	size_t len;
	assert_int_equal(storage_read_file(path, 1u << 26, &data, &len), 0);
	return data;
}

/* Deliver MSG as Debian's MTAs do: PATH.lock, fcntl write lock, append the From_ line and the
 * mboxo-quoted message and an empty line, fsync, unlock. */
static void mta_deliver(const char *path, const char *msg)
{
	char lock[4300];
	snprintf(lock, sizeof(lock), "%s.lock", path);
	int lfd = open(lock, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(lfd >= 0);
	close(lfd);
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
	assert_true(fd >= 0);
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	assert_int_equal(fcntl(fd, F_SETLKW, &fl), 0);
	struct sbuf b = {0};
	assert_int_equal(sbuf_printf(&b, "From mta@example.com Tue Nov 24 10:00:00 2026\n"), 0);
	for (const char *p = msg; *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);
		if (strncmp(p, "From ", 5) == 0)
			assert_int_equal(sbuf_add(&b, ">", 1), 0);
		assert_int_equal(sbuf_add(&b, p, len), 0);
		p += len;
	}
	assert_int_equal(sbuf_add(&b, "\n", 1), 0);
	assert_int_equal(storage_write_all(fd, b.data, b.len), 0);
	sbuf_free(&b);
	fsync(fd);
	close(fd);
	unlink(lock);
}

static void open_store(struct fx *fx)
{
	uv_loop_init(&fx->loop);
	assert_int_equal(store_open_mbox(&fx->loop, fx->root, NULL, 300, fx->mboxrd, &fx->store),
			 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->inbox), 0);
}

static void close_store(struct fx *fx)
{
	mailbox_unref(&fx->inbox);
	store_unref(&fx->store);
	st_loop_close(&fx->loop);
}

static void reopen(struct fx *fx)
{
	close_store(fx);
	open_store(fx);
}

static struct fx *fx_new(const char *inbox_data)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	fx->dir = st_tmpdir();
	snprintf(fx->root, sizeof(fx->root), "%s/u", fx->dir);
	snprintf(fx->inbox_path, sizeof(fx->inbox_path), "%s/inbox", fx->root);
	assert_int_equal(mkdir(fx->root, 0700), 0);
	if (inbox_data != NULL)
		write_file(fx->inbox_path, inbox_data);
	return fx;
}

static int setup(void **state)
{
	mbox_sync_done_hook = on_sync;
	sync_done = false;
	struct fx *fx = fx_new(NULL);
	open_store(fx);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	if (fx->store != NULL)
		close_store(fx);
	st_rmdir(&fx->dir);
	free(fx);
	return 0;
}

/* Wait for a sync since the last wait (a small one runs inside the change itself). */
static void wait_sync(struct fx *fx)
{
	assert_true(st_run_until(&fx->loop, &sync_done, 10000));
	assert_int_equal(sync_result, 0);
	sync_done = false;
}

static void assert_msg(struct view *v, uint32_t seq, const char *want)
{
	size_t len;
	char *got = st_read_msg(v, seq, &len);
	assert_non_null(got);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(got, want, len);
	struct mail_info info;
	assert_int_equal(view_msg_info(v, seq, &info), 0);
	assert_int_equal(info.size, strlen(want));
	free(got);
}

static const char mta_mbox[] = "junk before the first message\n"
			       "\n"
			       "From alice@example.com Mon Nov 23 07:14:24 2026\n"
			       "From: Alice <alice@example.com>\n"
			       "Subject: one\n"
			       "Status: RO\n"
			       "X-Status: AF\n"
			       "X-Keywords: $Work Later\n"
			       "Content-Length: 999\n"
			       "\n"
			       "Hello.\n"
			       ">From the quoted line\n"
			       "\n"
			       "From bob@example.com Mon Nov 23 08:00:00 2026\n"
			       "Subject: two\n"
			       "Status: O\n"
			       "\n"
			       "no separator follows\n"
			       "From carol@example.com Tue Nov 24 09:30:05 2026\n"
			       "Subject: three\n"
			       "X-Weird:\n"
			       "  continued\n"
			       "\n"
			       "last, without final newline";

static void test_read_mta_file(void **state)
{
	(void)state;
	struct fx *fx = fx_new(mta_mbox);
	open_store(fx);
	assert_int_equal(mailbox_count(fx->inbox), 3);
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_msg(v, 1,
		   "From: Alice <alice@example.com>\r\nSubject: one\r\n\r\nHello.\r\n"
		   ">From the quoted line\r\n");
	assert_msg(v, 2, "Subject: two\r\n\r\nno separator follows");
	/* the LF before a From_ line is the separator (Dovecot): "two" ends without one */
	assert_msg(v, 3,
		   "Subject: three\r\nX-Weird:\r\n  continued\r\n\r\n"
		   "last, without final newline");
	struct mail_info info;
	assert_int_equal(view_msg_info(v, 1, &info), 0);
	assert_int_equal(info.uid, 1);
	assert_int_equal(info.flags & MAIL_FLAGS_SETTABLE,
			 MAIL_SEEN | MAIL_ANSWERED | MAIL_FLAGGED);
	assert_int_equal(info.internal_date, 1795418064); /* 2026-11-23 07:14:24 UTC */
	assert_int_equal(mailbox_keyword_count(fx->inbox), 2);
	assert_string_equal(mailbox_keyword_name(fx->inbox, 0), "$Work");
	assert_int_equal(info.keywords, 3);
	assert_int_equal(view_msg_info(v, 2, &info), 0);
	assert_int_equal(info.flags & MAIL_FLAGS_SETTABLE, 0);
	/* opening never writes the file */
	char *after = read_file(fx->inbox_path);
	assert_string_equal(after, mta_mbox);
	free(after);
	/* UIDLs are stable: the same after the state is lost */
	char u1[MAIL_UIDL_MAX + 1], u1b[MAIL_UIDL_MAX + 1];
	assert_int_equal(view_msg_uidl(v, 1, u1, sizeof(u1)), 0);
	uint32_t uv = mailbox_uidvalidity(fx->inbox);
	view_free(&v);
	char list_file[4200];
	snprintf(list_file, sizeof(list_file), "%s/.mailkeep/box/INBOX/mailkeep-uidlist", fx->root);
	assert_int_equal(unlink(list_file), 0);
	reopen(fx);
	assert_true(mailbox_uidvalidity(fx->inbox) > uv); /* renumbered: no X-UIDs yet */
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(view_msg_uidl(v, 1, u1b, sizeof(u1b)), 0);
	assert_string_equal(u1, u1b);
	view_free(&v);
	close_store(fx);
	fx->store = NULL;
	st_rmdir(&fx->dir);
	free(fx);
}

static void test_append_sync_and_restart(void **state)
{
	struct fx *fx = *state;
	const char *m1 = "Subject: a\r\nStatus: RO\r\n\r\nFrom the body\r\n>From quoted\r\n";
	uint32_t u1 = st_append(fx->inbox, m1, MAIL_SEEN);
	uint32_t u2 = st_append(fx->inbox, "Subject: b\r\n\r\nno newline", MAIL_FLAGGED);
	assert_int_equal(u1, 1);
	assert_int_equal(u2, 2);
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	/* mboxo: a From_ line is quoted and stays so; our header names are dropped */
	const char *s1 = "Subject: a\r\n\r\n>From the body\r\n>From quoted\r\n";
	const char *s2 = "Subject: b\r\n\r\nno newline" /* stored "no newline\n" */;
	assert_msg(v, 1, s1);
	assert_msg(v, 2, s2);
	wait_sync(fx);
	assert_msg(v, 1, s1);
	assert_msg(v, 2, s2);
	char *file = read_file(fx->inbox_path);
	char want[2048];
	char from1[128], from2[128];
	struct mail_info i1, i2;
	assert_int_equal(view_msg_info(v, 1, &i1), 0);
	assert_int_equal(view_msg_info(v, 2, &i2), 0);
	mbox_from_line(i1.internal_date, from1, sizeof(from1));
	mbox_from_line(i2.internal_date, from2, sizeof(from2));
	char uidl1[MAIL_UIDL_MAX + 1], uidl2[MAIL_UIDL_MAX + 1];
	/* X-IMAPbase is padded, and its UIDNEXT kept up to date in place */
	char imapbase[64];
	snprintf(imapbase, sizeof(imapbase), "%u 3", mailbox_uidvalidity(fx->inbox));
	assert_int_equal(view_msg_uidl(v, 1, uidl1, sizeof(uidl1)), 0);
	assert_int_equal(view_msg_uidl(v, 2, uidl2, sizeof(uidl2)), 0);
	snprintf(want, sizeof(want),
		 "%sSubject: a\nStatus: RO\nX-IMAPbase: %-32s\nX-UID: 1\nX-UIDL: %s\n\n"
		 ">From the body\n>From quoted\n\n"
		 "%sSubject: b\nStatus: O\nX-Status: F\nX-UID: 2\nX-UIDL: %s\n\nno newline\n",
		 from1, imapbase, uidl1, from2, uidl2);
	assert_string_equal(file, want);
	free(file);
	view_free(&v);
	/* a restart reads it back the same (from the index, and from a full scan) */
	uint32_t uv = mailbox_uidvalidity(fx->inbox);
	reopen(fx);
	assert_int_equal(mailbox_uidvalidity(fx->inbox), uv);
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(view_count(v), 2);
	assert_msg(v, 1, s1);
	struct mail_info info;
	assert_int_equal(view_msg_info(v, 2, &info), 0);
	assert_int_equal(info.uid, 2);
	assert_int_equal(info.flags & MAIL_FLAGS_SETTABLE, MAIL_FLAGGED);
	view_free(&v);
	/* all our state gone: X-IMAPbase and X-UID give the same UIDs, X-UIDL the UIDLs */
	close_store(fx);
	char state_dir[4200];
	snprintf(state_dir, sizeof(state_dir), "%s/.mailkeep", fx->root);
	assert_int_equal(storage_remove_tree(state_dir), 0);
	open_store(fx);
	assert_int_equal(mailbox_uidvalidity(fx->inbox), uv);
	assert_int_equal(mailbox_uidnext(fx->inbox), 3);
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(view_msg_info(v, 2, &info), 0);
	assert_int_equal(info.uid, 2);
	assert_int_equal(info.flags & MAIL_FLAGS_SETTABLE, MAIL_FLAGGED);
	char again[MAIL_UIDL_MAX + 1];
	assert_int_equal(view_msg_uidl(v, 2, again, sizeof(again)), 0);
	assert_string_equal(again, uidl2);
	view_free(&v);
}

/* A message that is all header and has no final newline (APPEND allows it): our header lines
 * cannot follow its last line, so they go before that line's field, and the flags stay what
 * the client set (the sync used to write none, and the next scan took the file's "none"). */
static void test_header_only_without_newline(void **state)
{
	struct fx *fx = *state;
	uint32_t u1 = st_append(fx->inbox, "Subject: h\r\nX-A: 1", MAIL_ANSWERED);
	uint32_t u2 = st_append(fx->inbox, "Subject: k\r\nX-Long: a\r\n b", MAIL_FLAGGED);
	assert_int_equal(u1, 1);
	assert_int_equal(u2, 2);
	wait_sync(fx);
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_msg(v, 1, "Subject: h\r\nX-A: 1");
	assert_msg(v, 2, "Subject: k\r\nX-Long: a\r\n b");
	struct mail_info i1, i2;
	assert_int_equal(view_msg_info(v, 1, &i1), 0);
	assert_int_equal(view_msg_info(v, 2, &i2), 0);
	char from1[128], from2[128], uidl1[MAIL_UIDL_MAX + 1], uidl2[MAIL_UIDL_MAX + 1];
	mbox_from_line(i1.internal_date, from1, sizeof(from1));
	mbox_from_line(i2.internal_date, from2, sizeof(from2));
	assert_int_equal(view_msg_uidl(v, 1, uidl1, sizeof(uidl1)), 0);
	assert_int_equal(view_msg_uidl(v, 2, uidl2, sizeof(uidl2)), 0);
	char imapbase[64], want[2048];
	snprintf(imapbase, sizeof(imapbase), "%u 3", mailbox_uidvalidity(fx->inbox));
	snprintf(want, sizeof(want),
		 "%sSubject: h\nStatus: O\nX-Status: A\nX-IMAPbase: %-32s\nX-UID: 1\n"
		 "X-UIDL: %s\nX-A: 1\n"
		 "%sSubject: k\nStatus: O\nX-Status: F\nX-UID: 2\nX-UIDL: %s\nX-Long: a\n b\n",
		 from1, imapbase, uidl1, from2, uidl2);
	char *file = read_file(fx->inbox_path);
	assert_string_equal(file, want);
	free(file);
	/* a scan of the file (its mtime moved) finds the flags we wrote */
	struct timespec ts[2] = {{0, UTIME_OMIT}, {1000000000, 0}};
	assert_int_equal(utimensat(AT_FDCWD, fx->inbox_path, ts, 0), 0);
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	struct st_sync_log log;
	assert_string_equal(st_sync(v, 0, &log), "");
	assert_msg(v, 1, "Subject: h\r\nX-A: 1");
	assert_msg(v, 2, "Subject: k\r\nX-Long: a\r\n b");
	assert_int_equal(view_msg_info(v, 1, &i1), 0);
	assert_int_equal(view_msg_info(v, 2, &i2), 0);
	assert_int_equal(i1.flags & MAIL_FLAGS_SETTABLE, MAIL_ANSWERED);
	assert_int_equal(i2.flags & MAIL_FLAGS_SETTABLE, MAIL_FLAGGED);
	view_free(&v);
}

/* The flags of UID in INBOX (-1: not there), and the number of messages. */
static int uid_flags(struct fx *fx, uint32_t uid, uint32_t *count_r)
{
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	int flags = -1;
	*count_r = view_count(v);
	for (uint32_t seq = 1; seq <= *count_r; seq++) {
		struct mail_info info;
		assert_int_equal(view_msg_info(v, seq, &info), 0);
		if (info.uid == uid)
			flags = (int)(info.flags & MAIL_FLAGS_SETTABLE);
	}
	view_free(&v);
	return flags;
}

/* Messages of every shape the consistency test sends, APPENDed (in 5-byte pieces) and
 * written into the file, then found again by a scan of the grown file (an MTA delivers
 * after each: matched by content hash) and by a whole scan: the same UID, the same flags,
 * no message numbered twice. */
static void test_shapes_found_again(void **state)
{
	struct fx *fx = *state;
	static char big[80000];
	memset(big, 'L', sizeof(big) - 1);
	memcpy(big, "Subject: long\r\n\r\n", 17);
	static const char *const shapes[] = {
		"Subject: a\r\n\r\nbody\r\n",
		"Subject: a\r\n\r\nno final newline",
		"Subject: a\r\nX-A: 1",
		"Subject: a\r\nX-A: 1\r\n",
		"\r\nno header\r\n",
		"Subject: a\r\n\r\nline\rwith a CR\r\n",
		"Subject: a\r\n\r\nends with a CR\r",
		"Subject: a\r\n\r\nCR-in-line\rx",
		"Subject: a\r\n\r\nFrom the start\r\n>From quoted\r\n",
		"Subject: a\r\n\r\n\r\n\r\n",
		"Subject: a\n\nLF only\n",
		"Subject: a\r\n\r\nbody\r\n\r\n",
		"Subject: a\r\nFrom nobody\r\n\r\nb\r\n",
		"Subject: a\r\n\r\nlast\r\nFrom x Mon Nov 23 10:46:07 2026",
		"Subject: a\r\n\r\n. dotted\r\n.. line\r\n",
		"Subject: a\r\n\r\n\r\n",
		"Subject: a\r\n\r\n",
		"Subject: a\r\n",
		big,
	};
	size_t n = sizeof(shapes) / sizeof(shapes[0]);
	uint32_t uids[32];
	for (size_t i = 0; i < n; i++) {
		uids[i] = st_append(fx->inbox, shapes[i], MAIL_ANSWERED | MAIL_FLAGGED);
		wait_sync(fx);
		mta_deliver(fx->inbox_path, "Subject: mta\n\nx\n");
		assert_int_equal(mailbox_refresh(fx->inbox), 0);
		uint32_t count;
		int fl = uid_flags(fx, uids[i], &count);
		if (fl != (MAIL_ANSWERED | MAIL_FLAGGED) || count != 2 * (i + 1))
			fail_msg("shape %zu: flags %d, %u messages (want %zu)", i, fl, count,
				 2 * (i + 1));
	}
	/* a whole scan (the mtime moved), and a restart */
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 0) {
			struct timespec ts[2] = {{0, UTIME_OMIT}, {1000000000, 0}};
			assert_int_equal(utimensat(AT_FDCWD, fx->inbox_path, ts, 0), 0);
			assert_int_equal(mailbox_refresh(fx->inbox), 0);
		} else {
			reopen(fx);
		}
		for (size_t i = 0; i < n; i++) {
			uint32_t count;
			int fl = uid_flags(fx, uids[i], &count);
			if (fl != (MAIL_ANSWERED | MAIL_FLAGGED) || count != 2 * n)
				fail_msg("pass %d, shape %zu: flags %d, %u messages", pass, i, fl,
					 count);
		}
	}
}

/* Work items that hold the thread pool's threads until the pipe has a byte for each. */
struct pool_block {
	uv_work_t work;
	int fd;
	bool *done;
};

static void block_work(uv_work_t *w)
{
	struct pool_block *b = w->data;
	char c;
	(void)!read(b->fd, &c, 1);
}

static void block_done(uv_work_t *w, int status)
{
	(void)status;
	struct pool_block *b = w->data;
	*b->done = true;
}

/* M8 (tests/integration/consistency.md): a big sync queued on the thread pool, a refresh
 * that takes in an MTA's delivery before the sync begins, then the sync. It must not write
 * from its older plan (the delivery copied as "an MTA's tail" with its record left at the
 * old offset, numbered again by the next scan): it is planned again. */
static void test_sync_planned_before_a_refresh(void **state)
{
	struct fx *fx = *state;
	static char big[1200000];
	memset(big, 'b', sizeof(big) - 1);
	memcpy(big, "Subject: big\n\n", 14);
	for (size_t i = 100; i < sizeof(big) - 1; i += 100)
		big[i] = '\n';
	mta_deliver(fx->inbox_path, big);
	mta_deliver(fx->inbox_path, "Subject: small\n\nx\n");
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	assert_int_equal(mailbox_count(fx->inbox), 2);
	/* every thread of the pool busy: the sync stays queued */
	const char *env = getenv("UV_THREADPOOL_SIZE");
	int threads = env != NULL && atoi(env) > 0 ? atoi(env) : 4;
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	struct pool_block blocks[128];
	bool done[128] = {false};
	assert_true(threads <= 128);
	for (int i = 0; i < threads; i++) {
		blocks[i] = (struct pool_block){.fd = pfd[0], .done = &done[i]};
		blocks[i].work.data = &blocks[i];
		assert_int_equal(uv_queue_work(&fx->loop, &blocks[i].work, block_work, block_done),
				 0);
	}
	/* a flag change of the first message: a rewrite of more than 1 MiB, on the pool */
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	uint32_t one = 1;
	assert_int_equal(mailbox_store_flags(fx->inbox, v, &one, 1, FLAG_OP_ADD, MAIL_FLAGGED, 0),
			 0);
	mbox_sync_start(fx->inbox, false);
	/* the MTA delivers; a command's refresh reads it before the sync begins */
	mta_deliver(fx->inbox_path, "Subject: late\n\ny\n");
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	assert_int_equal(mailbox_count(fx->inbox), 3);
	/* the pool goes on: the sync runs, planned again */
	assert_int_equal(write(pfd[1], blocks, (size_t)threads), threads);
	for (int i = 0; i < threads; i++)
		assert_true(st_run_until(&fx->loop, &done[i], 10000));
	wait_sync(fx);
	close(pfd[0]);
	close(pfd[1]);
	/* the next delivery and scan: each message once, where the file has it */
	mta_deliver(fx->inbox_path, "Subject: later\n\nz\n");
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	struct st_sync_log log;
	st_sync(v, 0, &log);
	assert_int_equal(view_count(v), 4);
	for (uint32_t seq = 1; seq <= 4; seq++) {
		struct mail_info info;
		assert_int_equal(view_msg_info(v, seq, &info), 0);
		assert_int_equal(info.uid, seq);
	}
	assert_msg(v, 3, "Subject: late\r\n\r\ny\r\n");
	assert_msg(v, 4, "Subject: later\r\n\r\nz\r\n");
	struct mail_info info;
	assert_int_equal(view_msg_info(v, 1, &info), 0);
	assert_int_equal(info.flags & MAIL_FLAGS_SETTABLE, MAIL_FLAGGED);
	view_free(&v);
}

static void test_flags_and_expunge_rewrite(void **state)
{
	struct fx *fx = *state;
	close_store(fx);
	write_file(fx->inbox_path, mta_mbox);
	open_store(fx);
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	uint32_t one = 1, two = 2;
	unsigned idx;
	assert_int_equal(mailbox_keyword_index(fx->inbox, "Later", false, &idx), 0);
	assert_int_equal(mailbox_store_flags(fx->inbox, v, &two, 1, FLAG_OP_ADD,
					     MAIL_SEEN | MAIL_DRAFT, 1u << idx),
			 0);
	assert_int_equal(mailbox_expunge(fx->inbox, &one, 1), 0);
	wait_sync(fx);
	char *file = read_file(fx->inbox_path);
	char uidl2[MAIL_UIDL_MAX + 1], uidl3[MAIL_UIDL_MAX + 1];
	struct st_sync_log log;
	st_sync(v, 0, &log);
	assert_int_equal(view_count(v), 2);
	assert_int_equal(view_msg_uidl(v, 1, uidl2, sizeof(uidl2)), 0);
	assert_int_equal(view_msg_uidl(v, 2, uidl3, sizeof(uidl3)), 0);
	char want[2048];
	snprintf(want, sizeof(want),
		 "junk before the first message\n\n"
		 "From bob@example.com Mon Nov 23 08:00:00 2026\n"
		 "Subject: two\nStatus: RO\nX-Status: T\nX-Keywords: Later\n"
		 "X-UID: 2\nX-UIDL: %s\n\nno separator follows\n"
		 "From carol@example.com Tue Nov 24 09:30:05 2026\n"
		 "Subject: three\nX-Weird:\n  continued\nStatus: O\nX-UID: 3\nX-UIDL: %s\n\n"
		 "last, without final newline\n",
		 uidl2, uidl3);
	/* the first message kept our X-IMAPbase only when it is at the start */
	assert_string_equal(file, want);
	free(file);
	assert_msg(v, 2,
		   "Subject: three\r\nX-Weird:\r\n  continued\r\n\r\n"
		   "last, without final newline");
	view_free(&v);
	reopen(fx);
	assert_int_equal(mailbox_count(fx->inbox), 2);
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	struct mail_info info;
	assert_int_equal(view_msg_info(v, 1, &info), 0);
	assert_int_equal(info.uid, 2);
	assert_int_equal(info.flags & MAIL_FLAGS_SETTABLE, MAIL_SEEN | MAIL_DRAFT);
	view_free(&v);
}

static bool notified;
static void on_notify(struct view *view, void *data)
{
	(void)view;
	(void)data;
	notified = true;
}

static void test_mta_delivery_and_outside_changes(void **state)
{
	struct fx *fx = *state;
	st_append(fx->inbox, "Subject: ours\r\n\r\nbody\r\n", 0);
	wait_sync(fx);
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, on_notify, NULL, &v), 0);
	struct st_sync_log log;
	st_sync(v, 0, &log);
	/* an MTA appends: the file watch notices, the view is told */
	notified = false;
	mta_deliver(fx->inbox_path, "Subject: delivered\n\nFrom a line\nbye\n");
	assert_true(st_run_until(&fx->loop, &notified, 5000));
	assert_string_equal(st_sync(v, 0, &log), "X2 R2 ");
	assert_msg(v, 2, "Subject: delivered\r\n\r\n>From a line\r\nbye\r\n");
	struct mail_info info;
	assert_int_equal(view_msg_info(v, 2, &info), 0);
	assert_int_equal(info.uid, 2);
	mta_deliver(fx->inbox_path, "Subject: third\n\nx\n");
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	assert_string_equal(st_sync(v, 0, &log), "X3 R3 ");
	/* mutt marks the delivered one read and removes ours (rewriting the file) */
	char *file = read_file(fx->inbox_path);
	char *second = strstr(file, "From mta@");
	assert_non_null(second);
	char *hdr_end = strstr(second, "\n\n");
	struct sbuf b = {0};
	assert_int_equal(sbuf_add(&b, second, (size_t)(hdr_end - second) + 1), 0);
	assert_int_equal(sbuf_printf(&b, "Status: RO\n"), 0);
	assert_int_equal(sbuf_add(&b, hdr_end + 1, strlen(hdr_end + 1) + 1), 0);
	char tmp[4300];
	snprintf(tmp, sizeof(tmp), "%s.mutt", fx->inbox_path);
	write_file(tmp, b.data);
	assert_int_equal(rename(tmp, fx->inbox_path), 0);
	sbuf_free(&b);
	free(file);
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	assert_string_equal(st_sync(v, 0, &log), "E1 F1=S ");
	assert_int_equal(view_msg_info(v, 1, &info), 0);
	assert_int_equal(info.uid, 2); /* untouched messages keep their UIDs */
	assert_int_equal(view_msg_info(v, 2, &info), 0);
	assert_int_equal(info.uid, 3);
	assert_msg(v, 2, "Subject: third\r\n\r\nx\r\n");
	view_free(&v);
}

static void test_mboxrd(void **state)
{
	(void)state;
	struct fx *fx = fx_new("From a Mon Nov 23 07:14:24 2026\nSubject: rd\n\n>From x\n>>From y\n"
			       ">Fromage\n\n");
	fx->mboxrd = true;
	open_store(fx);
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_msg(v, 1, "Subject: rd\r\n\r\nFrom x\r\n>From y\r\n>Fromage\r\n");
	st_append(fx->inbox, "Subject: b\r\n\r\nFrom x\r\n>From y\r\n", 0);
	wait_sync(fx);
	struct st_sync_log log;
	assert_string_equal(st_sync(v, 0, &log), "X2 R2 ");
	assert_msg(v, 2, "Subject: b\r\n\r\nFrom x\r\n>From y\r\n");
	char *file = read_file(fx->inbox_path);
	assert_non_null(strstr(file, "\n>From x\n>>From y\n\n"));
	free(file);
	view_free(&v);
	close_store(fx);
	fx->store = NULL;
	st_rmdir(&fx->dir);
	free(fx);
}

/* ---- a rewrite cut short ------------------------------------------------------------------ */

static int crash_at;
static void crash_hook(int point)
{
	if (point == crash_at)
		_exit(0);
}

/* The child PID crashed at its crash point (exit 0). Our dotlock is left (its pid is gone:
 * stale): the MTA's own stale-lock rule removes it. */
static void crash_reap(struct fx *fx, pid_t pid)
{
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	char lock[4300];
	snprintf(lock, sizeof(lock), "%s.lock", fx->inbox_path);
	unlink(lock);
}

static void test_crash_during_rewrite(void **state)
{
	(void)state;
	char base[sizeof(mta_mbox) + 4];
	snprintf(base, sizeof(base), "%s\n\n", mta_mbox); /* ends as an MTA leaves it */
	for (crash_at = 1; crash_at <= 3; crash_at++) {
		struct fx *fx = fx_new(base);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			mbox_sync_crash_hook = crash_hook;
			open_store(fx);
			uint32_t one = 1;
			assert_int_equal(mailbox_expunge(fx->inbox, &one, 1), 0);
			sync_done = false;
			st_run_until(&fx->loop, &sync_done, 10000);
			_exit(3); /* the hook did not fire */
		}
		/* the file may be half written; an MTA delivers after the crash */
		crash_reap(fx, pid);
		mta_deliver(fx->inbox_path, "Subject: after crash\n\nhi\n");
		mbox_sync_done_hook = on_sync;
		sync_done = false;
		open_store(fx);
		/* restored: everything but the expunged one, and the new delivery */
		assert_int_equal(mailbox_count(fx->inbox), 3);
		struct view *v;
		assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
		assert_msg(v, 1, "Subject: two\r\n\r\nno separator follows");
		assert_msg(v, 2,
			   "Subject: three\r\nX-Weird:\r\n  continued\r\n\r\n"
			   "last, without final newline\r\n");
		assert_msg(v, 3, "Subject: after crash\r\n\r\nhi\r\n");
		struct mail_info info;
		assert_int_equal(view_msg_info(v, 1, &info), 0);
		assert_int_equal(info.uid, 2);
		assert_int_equal(view_msg_info(v, 3, &info), 0);
		assert_int_equal(info.uid, 4);
		/* the expunge is finished by the next sync */
		wait_sync(fx);
		char *file = read_file(fx->inbox_path);
		assert_null(strstr(file, "Subject: one"));
		assert_non_null(strstr(file, "Subject: after crash"));
		free(file);
		assert_msg(v, 3, "Subject: after crash\r\n\r\nhi\r\n");
		view_free(&v);
		close_store(fx);
		st_rmdir(&fx->dir);
		free(fx);
	}
	crash_at = 0;
}

/* M9 (tests/integration/consistency.md): a pool rewrite planned with one flag change, a
 * newer change recorded (answered) while it waits, and the server killed once the rewrite
 * is done but before its result (the index) is taken in. The next open must not take the
 * file's older flags for another program's edit: the newer record wins. */
static void test_crash_after_rewrite_before_index(void **state)
{
	(void)state;
	static char big[1200000];
	memset(big, 'b', sizeof(big) - 1);
	memcpy(big, "Subject: big\n\n", 14);
	for (size_t i = 100; i < sizeof(big) - 1; i += 100)
		big[i] = '\n';
	struct fx *fx = fx_new(NULL);
	mta_deliver(fx->inbox_path, big);
	mta_deliver(fx->inbox_path, "Subject: small\n\nx\n");
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		crash_at = 5;
		mbox_sync_crash_hook = crash_hook;
		open_store(fx);
		int pfd[2];
		if (pipe(pfd) < 0)
			_exit(4);
		const char *env = getenv("UV_THREADPOOL_SIZE");
		int threads = env != NULL && atoi(env) > 0 ? atoi(env) : 4;
		static struct pool_block blocks[128];
		static bool done[128];
		for (int i = 0; i < threads && i < 128; i++) {
			blocks[i] = (struct pool_block){.fd = pfd[0], .done = &done[i]};
			blocks[i].work.data = &blocks[i];
			uv_queue_work(&fx->loop, &blocks[i].work, block_work, block_done);
		}
		struct view *v;
		if (view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v) < 0)
			_exit(5);
		uint32_t one = 1;
		/* planned with \Flagged (queued: the pool is busy) ... */
		if (mailbox_store_flags(fx->inbox, v, &one, 1, FLAG_OP_ADD, MAIL_FLAGGED, 0) < 0)
			_exit(6);
		mbox_sync_start(fx->inbox, false);
		/* ... then \Seen too, recorded before the rewrite runs */
		if (mailbox_store_flags(fx->inbox, v, &one, 1, FLAG_OP_ADD, MAIL_SEEN, 0) < 0)
			_exit(7);
		if (write(pfd[1], blocks, (size_t)threads) != threads)
			_exit(8);
		sync_done = false;
		st_run_until(&fx->loop, &sync_done, 10000);
		_exit(3); /* the hook did not fire */
	}
	crash_reap(fx, pid);
	mbox_sync_done_hook = on_sync;
	sync_done = false;
	open_store(fx);
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	struct mail_info info;
	assert_int_equal(view_msg_info(v, 1, &info), 0);
	assert_int_equal(info.flags & MAIL_FLAGS_SETTABLE, MAIL_FLAGGED | MAIL_SEEN);
	/* and the file follows */
	wait_sync(fx);
	char *file = read_file(fx->inbox_path);
	assert_non_null(strstr(file, "Status: RO\nX-Status: F\n"));
	free(file);
	view_free(&v);
	close_store(fx);
	st_rmdir(&fx->dir);
	free(fx);
	crash_at = 0;
}

/* ---- locks -------------------------------------------------------------------------------- */

static bool open_answered;
static int open_err;
static void on_open(int err, struct mailbox *mbox, void *data)
{
	(void)data;
	open_answered = true;
	open_err = err;
	if (mbox != NULL)
		mailbox_unref(&mbox);
}

static void test_lock_timeout(void **state)
{
	struct fx *fx = *state;
	mailbox_unref(&fx->inbox);
	write_file(fx->inbox_path, "From a Mon Nov 23 07:14:24 2026\nSubject: x\n\ny\n\n");
	/* another process (an MTA) holds the fcntl lock */
	int go[2], ready[2];
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(ready), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = open(fx->inbox_path, O_RDWR);
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
		if (fd < 0 || fcntl(fd, F_SETLK, &fl) < 0)
			_exit(1);
		char c = 'r';
		if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(1);
		_exit(0);
	}
	char c;
	assert_int_equal(read(ready[0], &c, 1), 1);
	/* on the loop: no wait at all */
	struct mailbox *m;
	assert_int_equal(mailbox_open(fx->store, "INBOX", &m), -EBUSY);
	/* on the thread pool: after mbox_lock_timeout (300 ms here) */
	open_answered = false;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(mailbox_open_async(fx->store, "INBOX", on_open, NULL), 0);
	assert_true(st_run_until(&fx->loop, &open_answered, 10000));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(open_err, -EBUSY);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	assert_true(ms >= 250);
	/* released: it opens */
	assert_int_equal(write(go[1], "g", 1), 1);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(WEXITSTATUS(status), 0);
	open_answered = false;
	assert_int_equal(mailbox_open_async(fx->store, "INBOX", on_open, NULL), 0);
	assert_true(st_run_until(&fx->loop, &open_answered, 10000));
	assert_int_equal(open_err, 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->inbox), 0);
	close(go[0]);
	close(go[1]);
	close(ready[0]);
	close(ready[1]);
}

static void test_dotlock_stale_and_held(void **state)
{
	struct fx *fx = *state;
	/* a fresh dotlock of a live process: the sync waits, gives up, tries again later */
	char lock[4300];
	snprintf(lock, sizeof(lock), "%s.lock", fx->inbox_path);
	pid_t holder = fork();
	assert_true(holder >= 0);
	if (holder == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		pause();
		_exit(0);
	}
	char text[32];
	snprintf(text, sizeof(text), "%d\n", (int)holder);
	write_file(lock, text);
	st_append(fx->inbox, "Subject: x\r\n\r\ny\r\n", 0);
	sync_done = false;
	assert_true(st_run_until(&fx->loop, &sync_done, 10000));
	assert_int_equal(sync_result, -EBUSY);
	/* its process is gone: stale, removed, and the next try writes */
	kill(holder, SIGKILL);
	waitpid(holder, NULL, 0);
	sync_done = false;
	wait_sync(fx);
	assert_int_equal(access(lock, F_OK), -1);
	char *file = read_file(fx->inbox_path);
	assert_non_null(strstr(file, "Subject: x\nStatus: O\nX-IMAPbase: "));
	free(file);
}

/* ---- folders ------------------------------------------------------------------------------ */

static void test_folders(void **state)
{
	struct fx *fx = *state;
	char path[4200];
	snprintf(path, sizeof(path), "%s/Sent", fx->root);
	assert_int_equal(access(path, F_OK), 0); /* the defaults are files */
	assert_int_equal(store_folder_create(fx->store, "Sent.x", 0), -EPERM);
	assert_int_equal(store_folder_create(fx->store, "Lists.mk", 0), 0);
	snprintf(path, sizeof(path), "%s/Lists/mk", fx->root);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(store_folder_create(fx->store, "Lists", 0), -EEXIST);
	/* a file mutt made is a folder too; dot-files and FILE.lock are not */
	snprintf(path, sizeof(path), "%s/Lists/other", fx->root);
	write_file(path, "");
	snprintf(path, sizeof(path), "%s/Lists/other.lock", fx->root);
	write_file(path, "");
	struct store_folder *f;
	size_t n;
	assert_int_equal(store_folder_list(fx->store, &f, &n), 0);
	char names[512] = "";
	for (size_t i = 0; i < n; i++) {
		strcat(names, f[i].name);
		strcat(names, (f[i].attrs & STORE_FOLDER_NOSELECT) ? "(ns) " : " ");
	}
	assert_string_equal(names, "INBOX Archive Drafts Junk Lists(ns) Lists.mk Lists.other Sent "
				   "Trash ");
	store_folder_list_free(&f, n);
	struct mailbox *m;
	assert_int_equal(mailbox_open(fx->store, "Lists.mk", &m), 0);
	uint32_t src = st_append(fx->inbox, "Subject: c\r\n\r\nc\r\n", MAIL_SEEN);
	uint32_t dst;
	assert_int_equal(mailbox_move(fx->inbox, &src, 1, m, &dst), 0);
	assert_int_equal(mailbox_count(fx->inbox), 0);
	assert_int_equal(mailbox_count(m), 1);
	assert_int_equal(store_folder_rename(fx->store, "Lists.mk", "Old.mk"), 0);
	snprintf(path, sizeof(path), "%s/Old/mk", fx->root);
	assert_int_equal(stat(path, &st), 0);
	wait_sync(fx);
	mailbox_unref(&m);
	assert_int_equal(mailbox_open(fx->store, "Old.mk", &m), 0);
	assert_int_equal(mailbox_count(m), 1);
	struct view *v;
	assert_int_equal(view_new(m, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_msg(v, 1, "Subject: c\r\n\r\nc\r\n");
	view_free(&v);
	mailbox_unref(&m);
	assert_int_equal(store_folder_delete(fx->store, "Old.mk"), 0);
	assert_int_equal(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/Old", fx->root);
	assert_int_equal(access(path, F_OK), -1); /* the empty level goes with it */
	/* RENAME INBOX moves its messages into the new folder; INBOX stays, empty */
	st_append(fx->inbox, "Subject: r\r\n\r\nr\r\n", 0);
	assert_int_equal(store_folder_rename(fx->store, "INBOX", "Saved"), 0);
	assert_int_equal(mailbox_count(fx->inbox), 0);
	assert_int_equal(mailbox_open(fx->store, "Saved", &m), 0);
	assert_int_equal(mailbox_count(m), 1);
	mailbox_unref(&m);
	char *file = read_file(fx->inbox_path);
	assert_string_equal(file, "");
	free(file);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_mta_file),
		cmocka_unit_test_setup_teardown(test_append_sync_and_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_header_only_without_newline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shapes_found_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_planned_before_a_refresh, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_flags_and_expunge_rewrite, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mta_delivery_and_outside_changes, setup,
						teardown),
		cmocka_unit_test(test_mboxrd),
		cmocka_unit_test(test_crash_during_rewrite),
		cmocka_unit_test(test_crash_after_rewrite_before_index),
		cmocka_unit_test_setup_teardown(test_lock_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dotlock_stale_and_held, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folders, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
