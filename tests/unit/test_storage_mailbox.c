/* The mailbox object and the Maildir back-end: append (streamed), reading with CRLF,
 * flags on disk as mutt names them, keywords, copy/move, expunge, STATUS counts, UID list
 * persistence and rebuild, async open, the parsed-data cache. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mailbox_private.h"
#include "storage_test.h"
#include "storage_util.h"
#include "uidlist.h"

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

/* Close everything and open the store again, as after a restart. */
static void reopen(struct fx *fx)
{
	mailbox_unref(&fx->inbox);
	store_unref(&fx->store);
	st_loop_close(&fx->loop);
	uv_loop_init(&fx->loop);
	assert_int_equal(st_store_open(&fx->loop, fx->root, &fx->store), 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->inbox), 0);
}

static void test_append_and_read(void **state)
{
	struct fx *fx = *state;
	uint32_t uv = mailbox_uidvalidity(fx->inbox);
	assert_true(uv > 0);
	assert_int_equal(mailbox_uidnext(fx->inbox), 1);
	/* bare LF on input: stored as given, served as CRLF with the CRLF size */
	const char *lf = "Subject: lf\n\nline one\nline two\n";
	const char *crlf = "Subject: lf\r\n\r\nline one\r\nline two\r\n";
	uint32_t u1 = st_append(fx->inbox, lf, MAIL_SEEN | MAIL_FLAGGED);
	uint32_t u2 = st_append(fx->inbox, crlf, 0);
	assert_int_equal(u1, 1);
	assert_int_equal(u2, 2);
	assert_int_equal(mailbox_uidnext(fx->inbox), 3);
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(view_count(v), 2);
	struct mail_info info;
	assert_int_equal(view_msg_info(v, 1, &info), 0);
	assert_int_equal(info.uid, 1);
	assert_int_equal(info.size, strlen(crlf));
	assert_int_equal(info.flags & MAIL_FLAGS_SETTABLE, MAIL_SEEN | MAIL_FLAGGED);
	size_t len;
	char *got = st_read_msg(v, 1, &len);
	assert_string_equal(got, crlf);
	free(got);
	got = st_read_msg(v, 2, &len);
	assert_string_equal(got, crlf);
	free(got);

	struct mail_stream *s;
	bool conv;
	if (st_format() == ST_MAILDIR) {
		/* zero-copy path: the CRLF file needs no conversion, the LF one does */
		assert_int_equal(view_msg_open(v, 2, &s), 0);
		assert_true(mail_stream_fd(s, &conv) >= 0);
		assert_false(conv);
		mail_stream_free(&s);
	}
	assert_int_equal(view_msg_open(v, 1, &s), 0);
	/* partial read from an offset in the CRLF form */
	char part[16];
	assert_int_equal(mail_stream_seek(s, 11), 0);
	assert_int_equal(mail_stream_read(s, part, 6), 6);
	assert_memory_equal(part, "\r\n\r\nli", 6);
	assert_int_equal(mail_stream_seek(s, 2), 0);
	assert_int_equal(mail_stream_read(s, part, 3), 3);
	assert_memory_equal(part, "bje", 3);
	assert_int_equal(mail_stream_seek(s, 1000), -EINVAL);
	mail_stream_free(&s);

	if (st_format() == ST_MBOX) {
		/* in the file, as UW-IMAP and Dovecot write it: the first message carries
		 * X-IMAPbase (UIDVALIDITY UIDNEXT), each its X-UID, flags in Status/X-Status */
		char mbox[4200], val[256], want[256];
		st_mbox_path(fx->root, "INBOX", mbox, sizeof(mbox));
		unsigned two = 2; /* the file follows soon after (storage/README.md "mbox") */
		assert_true(st_mbox_wait(&fx->loop, mbox, st_mbox_has_count, &two, 10000));
		assert_true(st_mbox_header(mbox, 0, "X-IMAPbase", val, sizeof(val)));
		snprintf(want, sizeof(want), "%u %u", uv, 3u);
		assert_int_equal(strncmp(val, want, strlen(want)), 0);
		assert_true(st_mbox_header(mbox, 0, "X-UID", val, sizeof(val)));
		assert_string_equal(val, "1");
		assert_true(st_mbox_header(mbox, 1, "X-UID", val, sizeof(val)));
		assert_string_equal(val, "2");
		assert_true(st_mbox_header(mbox, 0, "Status", val, sizeof(val)));
		assert_non_null(strchr(val, 'R'));
		assert_true(st_mbox_header(mbox, 0, "X-Status", val, sizeof(val)));
		assert_non_null(strchr(val, 'F'));
		assert_false(st_mbox_header(mbox, 1, "X-Status", val, sizeof(val)) &&
			     strchr(val, 'F') != NULL);
		view_free(&v);
		goto restart;
	}
	/* on disk: in cur/ with the flags in the name and the sizes in the base */
	char name[1024];
	assert_true(st_find_file(fx->root, "cur", "", name, sizeof(name)) == false);
	assert_int_equal(st_count_files(fx->root, "cur"), 2);
	assert_int_equal(st_count_files(fx->root, "tmp"), 0);
	char uidl[MAIL_UIDL_MAX + 1], key[1024];
	assert_int_equal(view_msg_uidl(v, 1, uidl, sizeof(uidl)), 0);
	assert_int_equal(view_msg_key(v, 1, key, sizeof(key)), 0);
	assert_string_equal(uidl, key);
	char want[1100];
	snprintf(want, sizeof(want), "%s:2,FS", key);
	char path[8192];
	snprintf(path, sizeof(path), "%s/cur/%s", fx->root, want);
	assert_int_equal(access(path, F_OK), 0);
	assert_non_null(strstr(key, ",S=31,W=35"));
	view_free(&v);

restart:
	/* after a restart: same UIDs, UIDVALIDITY, sizes */
	reopen(fx);
	assert_int_equal(mailbox_uidvalidity(fx->inbox), uv);
	assert_int_equal(mailbox_uidnext(fx->inbox), 3);
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(view_msg_info(v, 2, &info), 0);
	assert_int_equal(info.uid, 2);
	assert_int_equal(info.size, strlen(crlf));
	view_free(&v);
}

/* Odd line ends: a CR alone stays, CRLF stays, a bare LF becomes CRLF, a last line without
 * an end stays; the size matches the bytes served. A file cut short under us gives -EIO,
 * never a literal of the wrong length. */
static void test_stream_edges(void **state)
{
	struct fx *fx = *state;
	st_only(ST_MAILDIR); /* bytes only a Maildir file holds; mbox: test_mbox_external */
	st_write_file(fx->root, "new", "1700000000.odd.host", "A: 1\rB: 2\r\n\nbody\nlast line");
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	struct mail_info info;
	assert_int_equal(view_msg_info(v, 1, &info), 0);
	const char *want = "A: 1\rB: 2\r\n\r\nbody\r\nlast line";
	assert_int_equal(info.size, strlen(want));
	size_t len;
	char *got = st_read_msg(v, 1, &len);
	assert_string_equal(got, want);
	free(got);
	/* cut the file: the stream refuses to make up bytes */
	char path[8192];
	snprintf(path, sizeof(path), "%s/new/1700000000.odd.host", fx->root);
	assert_int_equal(truncate(path, 10), 0);
	struct mail_stream *s;
	assert_int_equal(view_msg_open(v, 1, &s), 0);
	char buf[64];
	ssize_t n, total = 0;
	while ((n = mail_stream_read(s, buf, sizeof(buf))) > 0)
		total += n;
	assert_int_equal(n, -EIO);
	assert_true(total < (ssize_t)strlen(want));
	mail_stream_free(&s);
	view_free(&v);
}

static void test_append_abort_and_date(void **state)
{
	struct fx *fx = *state;
	struct mail_append *a;
	assert_int_equal(mailbox_append_begin(fx->inbox, 0, 0, 0, &a), 0);
	assert_int_equal(mail_append_write(a, "partial", 7), 0);
	if (st_format() == ST_MAILDIR)
		assert_int_equal(st_count_files(fx->root, "tmp"), 1);
	mail_append_abort(&a);
	assert_null(a);
	if (st_format() == ST_MAILDIR) {
		assert_int_equal(st_count_files(fx->root, "tmp"), 0);
	} else {
		char mbox[4200];
		st_mbox_path(fx->root, "INBOX", mbox, sizeof(mbox));
		assert_int_equal(st_mbox_count(mbox), 0);
	}
	assert_int_equal(mailbox_count(fx->inbox), 0);
	assert_int_equal(mailbox_uidnext(fx->inbox), 1);

	assert_int_equal(mailbox_append_begin(fx->inbox, MAIL_DRAFT, 0, 1000000000, &a), 0);
	assert_int_equal(mail_append_write(a, "x\r\n", 3), 0);
	uint32_t uid;
	assert_int_equal(mail_append_finish(&a, &uid), 0);
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	struct mail_info info;
	assert_int_equal(view_msg_info(v, 1, &info), 0);
	assert_int_equal(info.internal_date, 1000000000);
	assert_true(info.flags & MAIL_DRAFT);
	view_free(&v);
	/* a keyword bit that is not in the table */
	assert_int_equal(mailbox_append_begin(fx->inbox, 0, 1u << 3, 0, &a), -EINVAL);
}

/* mutt names: flags in ":2," info are read, and ours are written the way mutt reads them. */
static void test_mutt_names(void **state)
{
	struct fx *fx = *state;
	st_only(ST_MAILDIR); /* mbox: mutt's Status/X-Status in test_mbox_external */
	unsigned kw;
	assert_int_equal(mailbox_keyword_index(fx->inbox, "$Label1", true, &kw), 0);
	assert_int_equal(kw, 0);
	st_write_file(fx->root, "cur", "1700000001.123_1.mutt:2,RS", "Subject: a\n\nA\n");
	st_write_file(fx->root, "cur", "1700000002.123_2.mutt:2,FPT", "Subject: b\n\nB\n");
	st_write_file(fx->root, "cur", "1700000003.123_3.mutt:2,Da", "Subject: c\n\nC\n");
	st_write_file(fx->root, "new", "1700000004.123_4.mutt", "Subject: d\n\nD\n");
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(view_count(v), 4);
	struct mail_info i1, i2, i3, i4;
	assert_int_equal(view_msg_info(v, 1, &i1), 0);
	assert_int_equal(view_msg_info(v, 2, &i2), 0);
	assert_int_equal(view_msg_info(v, 3, &i3), 0);
	assert_int_equal(view_msg_info(v, 4, &i4), 0);
	assert_int_equal(i1.flags & MAIL_FLAGS_SETTABLE, MAIL_ANSWERED | MAIL_SEEN);
	assert_int_equal(i2.flags & MAIL_FLAGS_SETTABLE, MAIL_FLAGGED | MAIL_DELETED);
	assert_int_equal(i3.flags & MAIL_FLAGS_SETTABLE, MAIL_DRAFT);
	assert_int_equal(i3.keywords, 1);
	assert_int_equal(i4.flags & MAIL_FLAGS_SETTABLE, 0);
	assert_true(i4.flags & MAIL_RECENT);
	assert_int_equal(i1.size, strlen("Subject: a\r\n\r\nA\r\n"));
	/* UIDL = base name, the part that never changes */
	char uidl[MAIL_UIDL_MAX + 1];
	assert_int_equal(view_msg_uidl(v, 2, uidl, sizeof(uidl)), 0);
	assert_string_equal(uidl, "1700000002.123_2.mutt");
	assert_int_equal(view_msg_uidl(v, 4, uidl, sizeof(uidl)), 0);
	assert_string_equal(uidl, "1700000004.123_4.mutt");

	/* our changes, named as mutt expects: letters in ASCII order, P kept */
	uint32_t u2 = i2.uid, u4 = i4.uid;
	assert_int_equal(mailbox_store_flags(fx->inbox, v, &u2, 1, FLAG_OP_ADD,
					     MAIL_SEEN | MAIL_ANSWERED, 1u << kw),
			 0);
	char path[8192];
	snprintf(path, sizeof(path), "%s/cur/1700000002.123_2.mutt:2,FPRSTa", fx->root);
	assert_int_equal(access(path, F_OK), 0);
	/* a message in new/ moves to cur/ when its flags change */
	assert_int_equal(mailbox_store_flags(fx->inbox, v, &u4, 1, FLAG_OP_REPLACE, MAIL_SEEN, 0),
			 0);
	snprintf(path, sizeof(path), "%s/cur/1700000004.123_4.mutt:2,S", fx->root);
	assert_int_equal(access(path, F_OK), 0);
	assert_int_equal(st_count_files(fx->root, "new"), 0);
	assert_int_equal(view_msg_uidl(v, 4, uidl, sizeof(uidl)), 0);
	assert_string_equal(uidl, "1700000004.123_4.mutt");
	assert_int_equal(mailbox_store_flags(fx->inbox, v, &u2, 1, FLAG_OP_REMOVE,
					     MAIL_DELETED | MAIL_FLAGGED, 1u << kw),
			 0);
	snprintf(path, sizeof(path), "%s/cur/1700000002.123_2.mutt:2,PRS", fx->root);
	assert_int_equal(access(path, F_OK), 0);
	view_free(&v);

	/* the flags survive a restart, read back from the names */
	reopen(fx);
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(view_msg_info(v, 2, &i2), 0);
	assert_int_equal(i2.flags & MAIL_FLAGS_SETTABLE, MAIL_ANSWERED | MAIL_SEEN);
	assert_int_equal(i2.uid, u2);
	view_free(&v);
}

static void test_keywords(void **state)
{
	struct fx *fx = *state;
	unsigned idx;
	assert_int_equal(mailbox_keyword_index(fx->inbox, "Work", false, &idx), -ENOENT);
	assert_int_equal(mailbox_keyword_index(fx->inbox, "Work", true, &idx), 0);
	assert_int_equal(idx, 0);
	assert_int_equal(mailbox_keyword_index(fx->inbox, "work", false, &idx), 0);
	assert_int_equal(mailbox_keyword_index(fx->inbox, "$Junk", true, &idx), 0);
	assert_int_equal(idx, 1);
	assert_int_equal(mailbox_keyword_index(fx->inbox, "\\Seen", true, &idx), -EINVAL);
	assert_int_equal(mailbox_keyword_index(fx->inbox, "two words", true, &idx), -EINVAL);
	assert_int_equal(mailbox_keyword_index(fx->inbox, "", true, &idx), -EINVAL);
	for (int i = 2; i < MAILBOX_MAX_KEYWORDS; i++) {
		char name[16];
		snprintf(name, sizeof(name), "k%d", i);
		assert_int_equal(mailbox_keyword_index(fx->inbox, name, true, &idx), 0);
		assert_int_equal(idx, (unsigned)i);
	}
	assert_int_equal(mailbox_keyword_index(fx->inbox, "one-too-many", true, &idx), -ENOSPC);
	assert_int_equal(mailbox_keyword_count(fx->inbox), MAILBOX_MAX_KEYWORDS);
	uint32_t uid = st_append(fx->inbox, "k\r\n", 0);
	assert_int_equal(mailbox_store_flags(fx->inbox, NULL, &uid, 1, FLAG_OP_ADD, 0,
					     (1u << 0) | (1u << 25)),
			 0);
	if (st_format() == ST_MBOX) {
		/* keywords by name in X-Keywords, as Dovecot writes them */
		char mbox[4200];
		st_mbox_path(fx->root, "INBOX", mbox, sizeof(mbox));
		struct st_mbox_field kw = {0, "X-Keywords", "Work k25"};
		assert_true(st_mbox_wait(&fx->loop, mbox, st_mbox_has_field, &kw, 10000));
		reopen(fx);
		goto restarted;
	}
	char name[1024];
	assert_true(st_find_file(fx->root, "cur", "", name, sizeof(name)));
	assert_non_null(strstr(name, ":2,az"));
	char kwfile[4200], data[4096];
	snprintf(kwfile, sizeof(kwfile), "%s/mailkeep-keywords", fx->root);
	FILE *f = fopen(kwfile, "r");
	assert_non_null(f);
	size_t n = fread(data, 1, sizeof(data) - 1, f);
	data[n] = '\0';
	fclose(f);
	assert_int_equal(strncmp(data, "0 Work\n1 $Junk\n2 k2\n", 20), 0);
	reopen(fx);
restarted:
	assert_int_equal(mailbox_keyword_count(fx->inbox), MAILBOX_MAX_KEYWORDS);
	assert_string_equal(mailbox_keyword_name(fx->inbox, 1), "$Junk");
	struct view *v;
	struct mail_info info;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(view_msg_info(v, 1, &info), 0);
	assert_int_equal(info.keywords, (1u << 0) | (1u << 25));
	view_free(&v);
}

static void test_expunge_never_reuses_uids(void **state)
{
	struct fx *fx = *state;
	uint32_t a = st_append(fx->inbox, "a\r\n", 0);
	uint32_t b = st_append(fx->inbox, "b\r\n", 0);
	uint64_t ms = mailbox_highest_modseq(fx->inbox);
	assert_int_equal(mailbox_expunge(fx->inbox, &b, 1), 0);
	assert_true(mailbox_highest_modseq(fx->inbox) > ms);
	assert_int_equal(mailbox_count(fx->inbox), 1);
	if (st_format() == ST_MAILDIR) {
		assert_int_equal(st_count_files(fx->root, "cur"), 1);
	} else {
		char mbox[4200];
		unsigned one = 1;
		st_mbox_path(fx->root, "INBOX", mbox, sizeof(mbox));
		assert_true(st_mbox_wait(&fx->loop, mbox, st_mbox_has_count, &one, 10000));
	}
	reopen(fx);
	assert_int_equal(mailbox_count(fx->inbox), 1);
	assert_int_equal(mailbox_uidnext(fx->inbox), b + 1);
	uint32_t c = st_append(fx->inbox, "c\r\n", 0);
	assert_int_equal(c, b + 1);
	/* expunging the highest UID, then restarting, still does not hand it out again */
	assert_int_equal(mailbox_expunge(fx->inbox, &c, 1), 0);
	reopen(fx);
	assert_int_equal(st_append(fx->inbox, "d\r\n", 0), c + 1);
	(void)a;
}

static void test_copy_move(void **state)
{
	struct fx *fx = *state;
	unsigned kw;
	assert_int_equal(mailbox_keyword_index(fx->inbox, "Important", true, &kw), 0);
	uint32_t u[3];
	u[0] = st_append(fx->inbox, "one\r\n", MAIL_SEEN);
	u[1] = st_append(fx->inbox, "two\n", MAIL_FLAGGED);
	u[2] = st_append(fx->inbox, "three\r\n", 0);
	assert_int_equal(mailbox_store_flags(fx->inbox, NULL, &u[1], 1, FLAG_OP_ADD, 0, 1u << kw),
			 0);
	struct mailbox *arch;
	assert_int_equal(mailbox_open(fx->store, "Archive", &arch), 0);
	st_append(arch, "already here\r\n", 0);
	uint32_t want[3] = {u[0], 999, u[1]}, got[3];
	assert_int_equal(mailbox_copy(fx->inbox, want, 3, arch, got), 0);
	assert_int_equal(got[0], 2);
	assert_int_equal(got[1], 0); /* no such message */
	assert_int_equal(got[2], 3);
	assert_int_equal(mailbox_count(fx->inbox), 3);
	assert_int_equal(mailbox_count(arch), 3);
	struct view *v;
	assert_int_equal(view_new(arch, VIEW_IMAP, NULL, NULL, &v), 0);
	struct mail_info info;
	assert_int_equal(view_msg_info(v, 3, &info), 0);
	assert_int_equal(info.flags & MAIL_FLAGS_SETTABLE, MAIL_FLAGGED);
	unsigned akw;
	assert_int_equal(mailbox_keyword_index(arch, "Important", false, &akw), 0);
	assert_int_equal(info.keywords, 1u << akw);
	assert_int_equal(info.size, 5);
	size_t len;
	char *data = st_read_msg(v, 3, &len);
	assert_string_equal(data, "two\r\n");
	free(data);
	/* a copy is a new message: its own UIDL */
	char uidl_a[MAIL_UIDL_MAX + 1], uidl_b[MAIL_UIDL_MAX + 1];
	assert_int_equal(view_msg_uidl(v, 2, uidl_a, sizeof(uidl_a)), 0);
	struct view *iv;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &iv), 0);
	assert_int_equal(view_msg_uidl(iv, 1, uidl_b, sizeof(uidl_b)), 0);
	assert_string_not_equal(uidl_a, uidl_b);
	if (st_format() == ST_MAILDIR) {
		/* hard links where possible */
		struct stat st;
		char name[1024], path[8192];
		assert_int_equal(view_msg_key(iv, 1, name, sizeof(name)), 0);
		snprintf(path, sizeof(path), "%s/cur/%s:2,S", fx->root, name);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_nlink, 2);
	}

	/* move: gone from the source (its views owe an EXPUNGE), present in the target */
	uint32_t mv = u[2], mv_new;
	assert_int_equal(mailbox_move(fx->inbox, &mv, 1, arch, &mv_new), 0);
	assert_int_equal(mv_new, 4);
	assert_int_equal(mailbox_count(fx->inbox), 2);
	struct st_sync_log log;
	assert_string_equal(st_sync(iv, 0, &log), "E3 ");
	assert_string_equal(st_sync(v, 0, &log), "X4 R4 ");
	data = st_read_msg(v, 4, &len);
	assert_string_equal(data, "three\r\n");
	free(data);
	assert_int_equal(mailbox_move(fx->inbox, &mv, 1, fx->inbox, &mv_new), -EINVAL);
	/* copy into the same mailbox */
	uint32_t self;
	assert_int_equal(mailbox_copy(fx->inbox, &u[0], 1, fx->inbox, &self), 0);
	assert_int_equal(self, u[2] + 1);
	assert_int_equal(mailbox_count(fx->inbox), 3);
	view_free(&iv);
	view_free(&v);
	mailbox_unref(&arch);
}

static void test_status(void **state)
{
	struct fx *fx = *state;
	st_append(fx->inbox, "12345\r\n", MAIL_SEEN);
	st_append(fx->inbox, "1\r\n", MAIL_DELETED);
	st_append(fx->inbox, "1\n", 0);
	struct mailbox_status st;
	assert_int_equal(store_status(fx->store, "INBOX", &st), 0);
	assert_int_equal(st.messages, 3);
	assert_int_equal(st.unseen, 2);
	assert_int_equal(st.deleted, 1);
	assert_int_equal(st.recent, 3);
	assert_int_equal(st.uidnext, 4);
	assert_int_equal(st.uidvalidity, mailbox_uidvalidity(fx->inbox));
	assert_int_equal(st.size, 7 + 3 + 3);
	assert_int_equal(st.highest_modseq, mailbox_highest_modseq(fx->inbox));
	/* a closed folder: counted from the UID list and the names (Maildir), or the file
	 * (mbox: a Sent folder mutt wrote, Status: RO = seen, a hidden header) */
	if (st_format() == ST_MAILDIR) {
		char sent[4200];
		snprintf(sent, sizeof(sent), "%s/.Sent", fx->root);
		st_write_file(sent, "cur", "1700000000.1.x:2,S", "hello\n");
		st_write_file(sent, "new", "1700000001.1.x", "hi\n");
	} else {
		st_deliver(fx->root, "Sent", "Status: RO\n\nhello\n");
		st_deliver(fx->root, "Sent", "\nhi\n");
	}
	assert_int_equal(store_status(fx->store, "Sent", &st), 0);
	assert_int_equal(st.messages, 2);
	assert_int_equal(st.unseen, 1);
	assert_int_equal(st.size, 7 + 4 + (st_format() == ST_MBOX ? 4 : 0));
	assert_int_equal(st.uidnext, 3);
	assert_int_equal(store_status(fx->store, "Nope", &st), -ENOENT);
}

/* A torn UID list: detected, rebuilt with a new UIDVALIDITY, and every UIDL is unchanged. */
static void test_torn_list_rebuilt(void **state)
{
	struct fx *fx = *state;
	st_only(ST_MAILDIR); /* the UID list; mbox: test_mbox_external */
	st_write_file(fx->root, "new", "1700000000.ext1.host", "external\n");
	for (int i = 0; i < 5; i++)
		st_append(fx->inbox, "msg\r\n", 0);
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_POP3, NULL, NULL, &v), 0);
	uint32_t n = view_count(v);
	assert_int_equal(n, 6);
	char before[6][MAIL_UIDL_MAX + 1];
	for (uint32_t i = 0; i < n; i++)
		assert_int_equal(view_msg_uidl(v, i + 1, before[i], sizeof(before[i])), 0);
	view_free(&v);
	uint32_t uv = mailbox_uidvalidity(fx->inbox);
	mailbox_unref(&fx->inbox);
	/* tear it: damage a record in the middle (a torn base is covered in test_uidlist) */
	char list[4200];
	snprintf(list, sizeof(list), "%s/mailkeep-uidlist", fx->root);
	FILE *f = fopen(list, "r+");
	assert_non_null(f);
	assert_int_equal(fseek(f, 150, SEEK_SET), 0);
	fputc('#', f);
	fclose(f);
	store_unref(&fx->store);
	st_loop_close(&fx->loop);
	uv_loop_init(&fx->loop);
	assert_int_equal(st_store_open(&fx->loop, fx->root, &fx->store), 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->inbox), 0);
	assert_int_not_equal(mailbox_uidvalidity(fx->inbox), uv);
	assert_true(mailbox_uidvalidity(fx->inbox) > uv);
	assert_int_equal(view_new(fx->inbox, VIEW_POP3, NULL, NULL, &v), 0);
	assert_int_equal(view_count(v), 6);
	char after[6][MAIL_UIDL_MAX + 1];
	for (uint32_t i = 0; i < n; i++)
		assert_int_equal(view_msg_uidl(v, i + 1, after[i], sizeof(after[i])), 0);
	/* same set of UIDLs (numbering order may differ after a rebuild) */
	for (uint32_t i = 0; i < n; i++) {
		bool found = false;
		for (uint32_t j = 0; j < n; j++)
			found |= strcmp(before[i], after[j]) == 0;
		assert_true(found);
	}
	view_free(&v);
	/* a lost list (deleted) is rebuilt the same way */
	uv = mailbox_uidvalidity(fx->inbox);
	mailbox_unref(&fx->inbox);
	assert_int_equal(unlink(list), 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->inbox), 0);
	assert_int_equal(mailbox_count(fx->inbox), 6);
	assert_true(mailbox_uidvalidity(fx->inbox) > uv);
}

/* A UID list written before save dates and EMAILIDs (version 1, '+' records) opens with the
 * same UIDVALIDITY; its messages get the save date their standard name gives (else their
 * internal date) and an EMAILID from their base name, the same at every open; new messages
 * are saved now; MOVE keeps the EMAILID and COPY too, and a restart keeps both. */
static void test_savedate_emailid(void **state)
{
	st_only(ST_MAILDIR); /* it names Maildir files (cur/); mbox: test_storage_mbox */
	struct fx *fx = *state;
	mailbox_unref(&fx->inbox);
	st_write_file(fx->root, "cur", "1699000000.M1P1.h:2,", "hello\n");
	st_write_file(fx->root, "cur", "oddname:2,", "odd\n");
	struct sbuf b = {0};
	assert_int_equal(uidlist_line(&b, "H 1 4242 3 5 2"), 0);
	assert_int_equal(uidlist_line(&b, "+ 1 4 7 1690000000 0 0 1699000000.M1P1.h "
					  "1699000000.M1P1.h"),
			 0);
	assert_int_equal(uidlist_line(&b, "+ 2 5 5 1690000001 0 0 oddname oddname"), 0);
	char list[4200];
	snprintf(list, sizeof(list), "%s/mailkeep-uidlist", fx->root);
	assert_int_equal(uidlist_write(list, &b), 0);
	sbuf_free(&b);
	reopen(fx);
	assert_int_equal(mailbox_uidvalidity(fx->inbox), 4242);
	struct view *v;
	struct mail_info a, o;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(view_count(v), 2);
	assert_int_equal(view_msg_info(v, 1, &a), 0);
	assert_int_equal(view_msg_info(v, 2, &o), 0);
	assert_int_equal(a.save_date, 1699000000);
	assert_int_equal(o.save_date, 1690000001);
	assert_true(a.email_id != 0 && o.email_id != 0 && a.email_id != o.email_id);
	view_free(&v);

	int64_t before = (int64_t)time(NULL);
	uint32_t uid = st_append(fx->inbox, "new\r\n", 0);
	struct mailbox *trash;
	assert_int_equal(mailbox_open(fx->store, "Trash", &trash), 0);
	uint32_t uids[1] = {1}, nuids[1];
	assert_int_equal(mailbox_move(fx->inbox, uids, 1, trash, nuids), 0);
	uids[0] = 2;
	assert_int_equal(mailbox_copy(fx->inbox, uids, 1, trash, nuids), 0);
	mailbox_unref(&trash);
	reopen(fx);
	assert_int_equal(mailbox_uidvalidity(fx->inbox), 4242);
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	struct mail_info o2, n;
	assert_int_equal(view_count(v), 2);
	assert_int_equal(view_msg_info(v, 1, &o2), 0);
	assert_int_equal(view_msg_info(v, 2, &n), 0);
	assert_int_equal(n.uid, uid);
	assert_true(o2.email_id == o.email_id);
	assert_int_equal(o2.save_date, 1690000001);
	assert_true(n.save_date >= before && n.save_date <= (int64_t)time(NULL));
	assert_true(n.email_id != 0 && n.email_id != o.email_id && n.email_id != a.email_id);
	view_free(&v);
	assert_int_equal(mailbox_open(fx->store, "Trash", &trash), 0);
	assert_int_equal(view_new(trash, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(view_count(v), 2);
	struct mail_info ma, mo;
	assert_int_equal(view_msg_info(v, 1, &ma), 0);
	assert_int_equal(view_msg_info(v, 2, &mo), 0);
	assert_true(ma.email_id == a.email_id); /* moved */
	assert_true(mo.email_id == o.email_id); /* copied */
	assert_true(ma.save_date >= before && mo.save_date >= before);
	view_free(&v);
	mailbox_unref(&trash);
}

static void open_cb(int err, struct mailbox *mbox, void *data)
{
	struct mailbox **out = data;
	assert_int_equal(err, 0);
	*out = mbox;
}

static void open_fail_cb(int err, struct mailbox *mbox, void *data)
{
	int *out = data;
	assert_null(mbox);
	*out = err;
}

static void test_open_async(void **state)
{
	struct fx *fx = *state;
	for (int i = 0; i < 50; i++)
		st_deliver(fx->root, "Sent", "Subject: s\n\nbody\n");
	struct mailbox *m = NULL;
	assert_int_equal(mailbox_open_async(fx->store, "Sent", open_cb, &m), 0);
	assert_null(m); /* never from inside the call */
	bool done = false;
	while (m == NULL)
		uv_run(&fx->loop, UV_RUN_ONCE);
	done = true;
	assert_true(done);
	assert_int_equal(mailbox_count(m), 50);
	/* already open: the same object, still answered later from the loop */
	/* "sent" is not "Sent": only INBOX is case-insensitive */
	int err = 0;
	assert_int_equal(mailbox_open_async(fx->store, "sent", open_fail_cb, &err), 0);
	while (err == 0)
		uv_run(&fx->loop, UV_RUN_ONCE);
	assert_int_equal(err, -ENOENT);
	struct mailbox *m2 = NULL;
	assert_int_equal(mailbox_open_async(fx->store, "Sent", open_cb, &m2), 0);
	while (m2 == NULL)
		uv_run(&fx->loop, UV_RUN_ONCE);
	assert_ptr_equal(m2, m);
	mailbox_unref(&m2);
	mailbox_unref(&m);
	err = 0;
	assert_int_equal(mailbox_open_async(fx->store, "Missing", open_fail_cb, &err), 0);
	while (err == 0)
		uv_run(&fx->loop, UV_RUN_ONCE);
	assert_int_equal(err, -ENOENT);
	assert_int_equal(mailbox_open_async(fx->store, "bad..name", open_fail_cb, &err), -EINVAL);
}

/* ---- group commit (mailbox_sync.c) ---- */

struct done {
	bool called;
	int err;
	uint32_t uid;
};

static void sync_done_cb(int err, void *data)
{
	struct done *d = data;
	assert_false(d->called);
	d->called = true;
	d->err = err;
}

static void append_done_cb(int err, uint32_t uid, void *data)
{
	struct done *d = data;
	assert_false(d->called);
	d->called = true;
	d->err = err;
	d->uid = uid;
}

static void notify_count_cb(struct view *v, void *data)
{
	(void)v;
	(*(int *)data)++;
}

static struct mail_append *begin_msg(struct mailbox *m, const char *text)
{
	struct mail_append *a;
	assert_int_equal(mailbox_append_begin(m, 0, 0, 0, &a), 0);
	assert_int_equal(mail_append_write(a, text, strlen(text)), 0);
	return a;
}

/* The *_async changes: CB never inside the call, the change applied and durable when it
 * comes, a burst of them committed together, and the same through a back-end without the
 * optional nowait ops (the synchronous fallback; the mbox back-end has none of them, so
 * test_storage_mailbox_mbox runs that path both times). */
static void async_changes(struct fx *fx, bool fallback)
{
	const struct mailbox_backend_ops *real = fx->inbox->ops;
	struct mailbox_backend_ops ops = *real;
	bool maildir = st_format() == ST_MAILDIR;
	if (fallback) {
		ops.commit_nowait = NULL;
		ops.append_prepare = NULL;
		ops.append_finish_nowait = NULL;
		fx->inbox->ops = &ops;
	}
	int notified = 0;
	struct view *v, *other;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, notify_count_cb, &notified, &other), 0);
	struct st_sync_log log;

	/* APPEND: a burst of three (three sessions at once), each answered later with its UID */
	struct done d[3] = {{0}};
	for (int i = 0; i < 3; i++) {
		struct mail_append *a = begin_msg(fx->inbox, "Subject: a\r\n\r\nbody\r\n");
		assert_int_equal(mail_append_finish_async(&a, append_done_cb, &d[i]), 0);
		assert_null(a);
		assert_false(d[i].called);
	}
	if (!fallback && maildir) {
		/* nothing shown before the files are durable */
		assert_int_equal(mailbox_uidnext(fx->inbox), 1);
		assert_int_equal(st_count_files(fx->root, "cur"), 0);
		assert_int_equal(st_count_files(fx->root, "tmp"), 3);
	}
	for (int i = 0; i < 3; i++)
		assert_true(st_run_until(&fx->loop, &d[i].called, 5000));
	unsigned uids_seen = 0;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(d[i].err, 0);
		assert_in_range(d[i].uid, 1, 3);
		uids_seen |= 1u << d[i].uid;
	}
	assert_int_equal(uids_seen, 0xe);
	if (maildir) {
		assert_int_equal(st_count_files(fx->root, "cur"), 3);
		assert_int_equal(st_count_files(fx->root, "tmp"), 0);
	}
	assert_string_equal(st_sync(v, 0, &log), "X3 R3 ");
	while (notified == 0)
		uv_run(&fx->loop, UV_RUN_ONCE);
	assert_string_equal(st_sync(other, 0, &log), "X3 R0 ");

	/* STORE: the flags at once, the answer once durable; the other view is told */
	uint32_t two = 2;
	struct done ds = {0};
	assert_int_equal(mailbox_store_flags_async(fx->inbox, v, &two, 1, FLAG_OP_ADD,
						   MAIL_FLAGGED | MAIL_DELETED, 0, sync_done_cb,
						   &ds),
			 0);
	assert_false(ds.called);
	struct mail_info info;
	assert_int_equal(view_msg_info(v, 2, &info), 0);
	assert_int_equal(info.flags & (MAIL_FLAGGED | MAIL_DELETED), MAIL_FLAGGED | MAIL_DELETED);
	assert_true(st_run_until(&fx->loop, &ds.called, 5000));
	assert_int_equal(ds.err, 0);
	assert_string_equal(st_sync(other, 0, &log), "F2=FT ");
	/* nobody waiting (POP3's \Seen): made durable all the same */
	uint32_t one = 1;
	assert_int_equal(mailbox_store_flags_async(fx->inbox, NULL, &one, 1, FLAG_OP_ADD, MAIL_SEEN,
						   0, NULL, NULL),
			 0);

	/* EXPUNGE: still there until its record is durable, then gone for everyone */
	struct done de = {0};
	assert_int_equal(view_expunge_deleted_async(v, NULL, 0, sync_done_cb, &de), 0);
	assert_false(de.called);
	assert_int_equal(mailbox_count(fx->inbox), 3);
	if (maildir)
		assert_int_equal(st_count_files(fx->root, "cur"), 3);
	assert_true(st_run_until(&fx->loop, &de.called, 5000));
	assert_int_equal(de.err, 0);
	assert_int_equal(mailbox_count(fx->inbox), 2);
	if (maildir)
		assert_int_equal(st_count_files(fx->root, "cur"), 2);
	assert_string_equal(st_sync(v, 0, &log), "E2 F1=S ");
	assert_string_equal(st_sync(other, 0, &log), "E2 F1=S ");
	/* an expunge of nothing still answers from the loop */
	struct done dn = {0};
	assert_int_equal(mailbox_expunge_async(fx->inbox, &two, 1, sync_done_cb, &dn), 0);
	assert_false(dn.called);
	assert_true(st_run_until(&fx->loop, &dn.called, 5000));
	assert_int_equal(dn.err, 0);
	view_free(&v);
	view_free(&other);
	fx->inbox->ops = real;

	/* what was answered is on disk: a restart sees it all */
	reopen(fx);
	assert_int_equal(mailbox_count(fx->inbox), 2);
	assert_int_equal(mailbox_uidnext(fx->inbox), 4);
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(view_msg_info(v, 1, &info), 0);
	assert_int_equal(info.uid, 1);
	assert_int_equal(info.flags & MAIL_SEEN, MAIL_SEEN);
	assert_int_equal(view_msg_info(v, 2, &info), 0);
	assert_int_equal(info.uid, 3);
	view_free(&v);
}

static void test_async_commit(void **state)
{
	async_changes(*state, false);
}

static void test_async_commit_fallback(void **state)
{
	async_changes(*state, true);
}

/* An append whose folder goes while its file is synced fails cleanly; nothing is left in
 * tmp/ or cur/. */
static void test_async_append_abort(void **state)
{
	struct fx *fx = *state;
	struct done d = {0};
	struct mail_append *a = begin_msg(fx->inbox, "Subject: x\r\n\r\nx\r\n");
	assert_int_equal(mail_append_finish_async(&a, append_done_cb, &d), 0);
	fx->inbox->gone = true;
	assert_true(st_run_until(&fx->loop, &d.called, 5000));
	fx->inbox->gone = false;
	assert_int_equal(d.err, -ENOENT);
	assert_int_equal(d.uid, 0);
	if (st_format() == ST_MAILDIR) {
		assert_int_equal(st_count_files(fx->root, "tmp"), 0);
		assert_int_equal(st_count_files(fx->root, "cur"), 0);
	}
	assert_int_equal(mailbox_uidnext(fx->inbox), 1);
}

/* A big expunge (POP3 QUIT after DELE of all) unlinks on the thread pool; a refresh
 * meanwhile takes nothing for an outside removal; afterwards every file and record is gone. */
static void test_async_expunge_many(void **state)
{
	struct fx *fx = *state;
	uint32_t uids[40];
	for (uint32_t i = 0; i < 40; i++)
		uids[i] = st_append(fx->inbox, "Subject: m\r\n\r\nm\r\n", 0);
	struct view *v;
	assert_int_equal(view_new(fx->inbox, VIEW_IMAP, NULL, NULL, &v), 0);
	struct done d = {0};
	assert_int_equal(mailbox_expunge_async(fx->inbox, uids, 40, sync_done_cb, &d), 0);
	bool maildir = st_format() == ST_MAILDIR;
	/* answered once the records are durable: the messages left memory, the files go on the
	 * pool after the answer */
	while (!d.called)
		uv_run(&fx->loop, UV_RUN_ONCE);
	assert_int_equal(d.err, 0);
	assert_int_equal(mailbox_count(fx->inbox), 0);
	bool seen_unlinking = fx->inbox->unlinking > 0;
	while (fx->inbox->unlinking > 0) {
		/* more re-reads than it takes to call a missing file expunged: the files still
		 * there never come back as messages */
		for (int k = 0; k < 5; k++)
			assert_int_equal(mailbox_refresh(fx->inbox), 0);
		assert_int_equal(mailbox_count(fx->inbox), 0);
		uv_run(&fx->loop, UV_RUN_ONCE);
	}
	assert_true(seen_unlinking || !maildir);
	assert_int_equal(mailbox_count(fx->inbox), 0);
	if (maildir)
		assert_int_equal(st_count_files(fx->root, "cur"), 0);
	struct st_sync_log log;
	assert_int_equal(mailbox_refresh(fx->inbox), 0);
	const char *got = st_sync(v, 0, &log);
	assert_int_equal(strncmp(got, "E1 E1 E1 ", 9), 0);
	view_free(&v);
	reopen(fx);
	assert_int_equal(mailbox_count(fx->inbox), 0);
	assert_int_equal(mailbox_uidnext(fx->inbox), 41);
}

static void test_open_races(void **state)
{
	struct fx *fx = *state;
	for (int i = 0; i < 200; i++)
		st_deliver(fx->root, "Sent", "Subject: r\n\nbody\n");
	/* async then sync on the same cold folder: one object, numbered once */
	struct mailbox *a = NULL, *b = NULL, *c = NULL;
	assert_int_equal(mailbox_open_async(fx->store, "Sent", open_cb, &a), 0);
	assert_int_equal(mailbox_open(fx->store, "Sent", &b), 0);
	assert_int_equal(mailbox_count(b), 200);
	assert_int_equal(mailbox_uidnext(b), 201);
	while (a == NULL)
		uv_run(&fx->loop, UV_RUN_ONCE);
	assert_ptr_equal(a, b);
	mailbox_unref(&a);
	mailbox_unref(&b);
	/* two async opens at once */
	assert_int_equal(mailbox_open_async(fx->store, "Sent", open_cb, &a), 0);
	assert_int_equal(mailbox_open_async(fx->store, "Sent", open_cb, &c), 0);
	while (a == NULL || c == NULL)
		uv_run(&fx->loop, UV_RUN_ONCE);
	assert_ptr_equal(a, c);
	assert_int_equal(mailbox_uidnext(a), 201);
	assert_int_equal(mailbox_uidvalidity(a) > 0, 1);
	mailbox_unref(&a);
	mailbox_unref(&c);
}

/* Another process has the folder open: this one gets -EBUSY for it, never a second
 * numbering; once it is gone the folder opens. */
static void test_folder_lock(void **state)
{
	struct fx *fx = *state;
	int to_child[2], from_child[2];
	assert_int_equal(pipe(to_child), 0);
	assert_int_equal(pipe(from_child), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(to_child[1]);
		close(from_child[0]);
		uv_loop_t loop;
		struct store *s;
		struct mailbox *m;
		uv_loop_init(&loop);
		if (st_store_open(&loop, fx->root, &s) < 0 || mailbox_open(s, "Trash", &m) < 0)
			_exit(1);
		char c = 'k';
		if (write(from_child[1], &c, 1) != 1)
			_exit(2);
		while (read(to_child[0], &c, 1) > 0)
			;
		_exit(0);
	}
	close(to_child[0]);
	close(from_child[1]);
	char c;
	assert_int_equal(read(from_child[0], &c, 1), 1);
	struct mailbox *m;
	assert_int_equal(mailbox_open(fx->store, "Trash", &m), -EBUSY);
	struct mailbox_status st;
	assert_int_equal(store_status(fx->store, "Trash", &st), -EBUSY);
	int err = 0;
	assert_int_equal(mailbox_open_async(fx->store, "Trash", open_fail_cb, &err), 0);
	while (err == 0)
		uv_run(&fx->loop, UV_RUN_ONCE);
	assert_int_equal(err, -EBUSY);
	assert_string_equal(storage_error_text(-EBUSY), "Mailbox is in use by another session");
	close(to_child[1]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(from_child[0]);
	assert_int_equal(mailbox_open(fx->store, "Trash", &m), 0);
	mailbox_unref(&m);
}

static void test_cache(void **state)
{
	struct fx *fx = *state;
	uint32_t a = st_append(fx->inbox, "a\r\n", 0);
	uint32_t b = st_append(fx->inbox, "b\r\n", 0);
	const void *data;
	size_t len;
	assert_int_equal(mailbox_cache_get(fx->inbox, a, &data, &len), -ENOENT);
	assert_int_equal(mailbox_cache_put(fx->inbox, a, "parsed-a", 8), 0);
	assert_int_equal(mailbox_cache_put(fx->inbox, b, "parsed-b-v1", 11), 0);
	assert_int_equal(mailbox_cache_put(fx->inbox, b, "parsed-b-v2", 11), 0);
	assert_int_equal(mailbox_cache_get(fx->inbox, a, &data, &len), 0);
	assert_int_equal(len, 8);
	assert_memory_equal(data, "parsed-a", 8);
	assert_int_equal(mailbox_cache_put(fx->inbox, 99, "x", 1), -ENOENT);
	assert_int_equal(mailbox_cache_put(fx->inbox, a, "x", 0), -EINVAL);
	reopen(fx);
	assert_int_equal(mailbox_cache_get(fx->inbox, b, &data, &len), 0);
	assert_int_equal(len, 11);
	assert_memory_equal(data, "parsed-b-v2", 11);
	if (st_format() == ST_MBOX)
		return; /* the cache file's damage: a Maildir-only name (the same code) */
	/* damage at the end of the cache file: earlier blobs stay, the damaged one is gone */
	char path[8192];
	snprintf(path, sizeof(path), "%s/mailkeep-cache", fx->root);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(truncate(path, st.st_size - 3), 0);
	reopen(fx);
	assert_int_equal(mailbox_cache_get(fx->inbox, a, &data, &len), 0);
	assert_memory_equal(data, "parsed-a", 8);
	assert_int_equal(mailbox_cache_get(fx->inbox, b, &data, &len), 0);
	assert_memory_equal(data, "parsed-b-v1", 11);
	assert_int_equal(mailbox_cache_put(fx->inbox, b, "parsed-b-v3", 11), 0);
	reopen(fx);
	assert_int_equal(mailbox_cache_get(fx->inbox, b, &data, &len), 0);
	assert_memory_equal(data, "parsed-b-v3", 11);
}

static void test_error_text(void **state)
{
	assert_string_equal(storage_error_text(-EEXIST), "Mailbox already exists");
	assert_string_equal(storage_error_text(-EIO),
			    "Internal error occurred. Refer to server log for more information.");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_append_and_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_savedate_emailid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_edges, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_abort_and_date, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mutt_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keywords, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expunge_never_reuses_uids, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_move, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_list_rebuilt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_async, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_races, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async_commit_fallback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async_append_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async_expunge_many, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folder_lock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache, setup, teardown),
		cmocka_unit_test(test_error_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
