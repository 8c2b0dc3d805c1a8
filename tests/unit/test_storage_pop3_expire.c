/* POP3 retention in the store: the retrieval record (first RETR time per UID) written
 * durably and byte-exact, kept across a restart, discarded with a rebuilt UID list, tolerant
 * of damage, compacted; the expiry under both pop3_delete policies: retrieved more than
 * `days` ago goes, retrieved since stays, never retrieved stays whatever its age. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage_test.h"
#include "storage_util.h"

#define DAY  86400
#define NOW  ((int64_t)1790000000)
#define DAYS 10u

struct fx {
	uv_loop_t loop;
	char *dir;
	char root[4200];
	char record[4300];
	struct store *store;
	struct mailbox *mbox;
	struct view *imap;
};

static void fx_open(struct fx *fx)
{
	assert_int_equal(st_store_open(&fx->loop, fx->root, &fx->store), 0);
	assert_int_equal(mailbox_open(fx->store, "INBOX", &fx->mbox), 0);
	assert_int_equal(view_new(fx->mbox, VIEW_IMAP, NULL, NULL, &fx->imap), 0);
}

static void fx_close(struct fx *fx)
{
	view_free(&fx->imap);
	mailbox_unref(&fx->mbox);
	store_unref(&fx->store);
	for (int i = 0; i < 4; i++)
		uv_run(&fx->loop, UV_RUN_NOWAIT);
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	uv_loop_init(&fx->loop);
	fx->dir = st_tmpdir();
	snprintf(fx->root, sizeof(fx->root), "%s/u", fx->dir);
	snprintf(fx->record, sizeof(fx->record), "%s/mailkeep-pop3-retrieved", fx->root);
	fx_open(fx);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	fx_close(fx);
	st_loop_close(&fx->loop);
	st_rmdir(&fx->dir);
	free(fx);
	return 0;
}

/* The expected file: a checksummed line per payload (the UID list's line format). */
static void want_add(char *buf, size_t size, const char *payload)
{
	size_t len = strlen(buf);
	snprintf(buf + len, size - len, "%08x %s\n", storage_hash32(payload, strlen(payload)),
		 payload);
}

static void want_rec(char *buf, size_t size, uint32_t uid, int64_t t)
{
	char p[64];
	snprintf(p, sizeof(p), "%" PRIu32 " %" PRId64, uid, t);
	want_add(buf, size, p);
}

static void want_header(char *buf, size_t size, uint32_t uidvalidity)
{
	char p[64];
	buf[0] = '\0';
	snprintf(p, sizeof(p), "R 1 %" PRIu32, uidvalidity);
	want_add(buf, size, p);
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	static char buf[1 << 16];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

static void write_all(const char *path, const char *data)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, strlen(data), f), strlen(data));
	assert_int_equal(fclose(f), 0);
}

static uint32_t append_dated(struct mailbox *mbox, int64_t idate)
{
	struct mail_append *a;
	uint32_t uid;
	assert_int_equal(mailbox_append_begin(mbox, 0, 0, idate, &a), 0);
	assert_int_equal(mail_append_write(a, "Subject: x\r\n\r\nbody\r\n", 20), 0);
	assert_int_equal(mail_append_finish(&a, &uid), 0);
	return uid;
}

static void mark1(struct mailbox *mbox, uint32_t uid, int64_t t)
{
	assert_int_equal(mailbox_pop3_mark_retrieved(mbox, &uid, 1, t), 0);
}

static int64_t rtime(struct mailbox *mbox, uint32_t uid)
{
	int64_t t = -1;
	int r = mailbox_pop3_retrieved_time(mbox, uid, &t);
	return r == 0 ? t : r;
}

static void test_mark_record(void **state)
{
	struct fx *fx = *state;
	st_only(ST_MAILDIR); /* the record file's place and the UID list are Maildir's */
	uint32_t u1 = st_append(fx->mbox, "a\r\n", 0);
	uint32_t u2 = st_append(fx->mbox, "b\r\n", 0);
	uint32_t u3 = st_append(fx->mbox, "c\r\n", 0);
	assert_int_equal(access(fx->record, F_OK), -1); /* nothing until the first download */
	assert_int_equal(rtime(fx->mbox, u1), -ENOENT);

	/* one call: duplicates once, a missing UID skipped */
	uint32_t batch[] = {u2, u1, u2, 999};
	assert_int_equal(mailbox_pop3_mark_retrieved(fx->mbox, batch, 4, NOW), 0);
	char want[4096];
	want_header(want, sizeof(want), mailbox_uidvalidity(fx->mbox));
	want_rec(want, sizeof(want), u1, NOW);
	want_rec(want, sizeof(want), u2, NOW);
	assert_string_equal(read_all(fx->record), want);

	/* the first download counts: a later RETR does not move it */
	mark1(fx->mbox, u1, NOW + 50);
	assert_int_equal(rtime(fx->mbox, u1), NOW);
	assert_string_equal(read_all(fx->record), want);
	/* a new one is appended */
	mark1(fx->mbox, u3, NOW + 5);
	want_rec(want, sizeof(want), u3, NOW + 5);
	assert_string_equal(read_all(fx->record), want);
	assert_int_equal(rtime(fx->mbox, u3), NOW + 5);
	assert_int_equal(rtime(fx->mbox, 999), -ENOENT);
	assert_int_equal(mailbox_pop3_mark_retrieved(fx->mbox, NULL, 0, NOW), 0);
	/* the file removed behind our back: the append fails, and the whole record (memory
	 * holds it) is written again */
	assert_int_equal(unlink(fx->record), 0);
	uint32_t u4 = st_append(fx->mbox, "d\r\n", 0);
	mark1(fx->mbox, u4, NOW + 9);
	want_rec(want, sizeof(want), u4, NOW + 9);
	assert_string_equal(read_all(fx->record), want);
}

static void test_expire_by_age(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	uint32_t old = st_append(fx->mbox, "old\r\n", 0);         /* retrieved days+1 ago */
	uint32_t recent = st_append(fx->mbox, "new\r\n", 0);      /* retrieved days-1 ago */
	uint32_t never = append_dated(fx->mbox, NOW - 400 * DAY); /* a year old, never */
	uint32_t edge = st_append(fx->mbox, "edge\r\n", 0);       /* exactly days ago: not more */
	uint32_t past = st_append(fx->mbox, "past\r\n", 0);       /* days ago and one second */
	mark1(fx->mbox, old, NOW - (DAYS + 1) * DAY);
	mark1(fx->mbox, recent, NOW - (DAYS - 1) * DAY);
	mark1(fx->mbox, edge, NOW - DAYS * DAY);
	mark1(fx->mbox, past, NOW - DAYS * DAY - 1);
	st_sync(fx->imap, 0, &log);

	uint32_t n = 99;
	assert_int_equal(mailbox_pop3_expire(fx->mbox, 0, NOW, POP3_DELETE_EXPUNGE, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(mailbox_count(fx->mbox), 5);

	assert_int_equal(mailbox_pop3_expire(fx->mbox, DAYS, NOW, POP3_DELETE_EXPUNGE, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(mailbox_count(fx->mbox), 3);
	/* the phone is told, as for any expunge */
	assert_string_equal(st_sync(fx->imap, 0, &log), "E1 E4 ");
	uint32_t seq;
	assert_int_equal(view_uid_to_seq(fx->imap, recent, &seq), 0);
	assert_int_equal(view_uid_to_seq(fx->imap, never, &seq), 0);
	assert_int_equal(view_uid_to_seq(fx->imap, edge, &seq), 0);
	assert_int_equal(view_uid_to_seq(fx->imap, old, &seq), -ENOENT);
	assert_int_equal(view_uid_to_seq(fx->imap, past, &seq), -ENOENT);
	if (st_format() == ST_MAILDIR) {
		assert_int_equal(st_count_files(fx->root, "cur") + st_count_files(fx->root, "new"),
				 3);
	} else {
		char mbox[4300];
		unsigned three = 3;
		st_mbox_path(fx->root, "INBOX", mbox, sizeof(mbox));
		assert_true(st_mbox_wait(&fx->loop, mbox, st_mbox_has_count, &three, 10000));
	}

	/* again: nothing more; a day later the edge one and the recent one's turn comes */
	assert_int_equal(mailbox_pop3_expire(fx->mbox, DAYS, NOW, POP3_DELETE_EXPUNGE, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(mailbox_pop3_expire(fx->mbox, DAYS, NOW + 1, POP3_DELETE_EXPUNGE, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(
		mailbox_pop3_expire(fx->mbox, DAYS, NOW + 2 * DAY, POP3_DELETE_EXPUNGE, &n), 0);
	assert_int_equal(n, 1);
	/* never retrieved: kept whatever the clock says */
	assert_int_equal(
		mailbox_pop3_expire(fx->mbox, 1, NOW + 3650 * DAY, POP3_DELETE_EXPUNGE, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(mailbox_count(fx->mbox), 1);
	assert_int_equal(view_uid_to_seq(fx->imap, never, &seq), 0);
}

static void test_expire_busy(void **state)
{
	struct fx *fx = *state;
	uint32_t u = st_append(fx->mbox, "a\r\n", 0);
	mark1(fx->mbox, u, NOW - 100 * DAY);
	struct view *p;
	assert_int_equal(view_new(fx->mbox, VIEW_POP3, NULL, NULL, &p), 0);
	uint32_t n = 7;
	/* a POP3 session holds its snapshot: its numbers must not lose messages */
	assert_int_equal(mailbox_pop3_expire(fx->mbox, DAYS, NOW, POP3_DELETE_EXPUNGE, &n), -EBUSY);
	assert_int_equal(n, 0);
	view_free(&p);
	assert_int_equal(mailbox_pop3_expire(fx->mbox, DAYS, NOW, POP3_DELETE_EXPUNGE, &n), 0);
	assert_int_equal(n, 1);
}

static void test_expire_hide(void **state)
{
	struct fx *fx = *state;
	struct st_sync_log log;
	uint32_t a = st_append(fx->mbox, "a\r\n", 0);
	uint32_t b = st_append(fx->mbox, "b\r\n", 0);
	uint32_t c = st_append(fx->mbox, "c\r\n", 0);
	mark1(fx->mbox, a, NOW - (DAYS + 1) * DAY);
	mark1(fx->mbox, b, NOW - (DAYS - 1) * DAY);
	st_sync(fx->imap, 0, &log);
	uint32_t n;
	assert_int_equal(mailbox_pop3_expire(fx->mbox, DAYS, NOW, POP3_DELETE_HIDE, &n), 0);
	assert_int_equal(n, 1);
	/* kept for IMAP with $POP3Deleted, gone from POP3 */
	assert_int_equal(mailbox_count(fx->mbox), 3);
	unsigned idx;
	assert_int_equal(mailbox_keyword_index(fx->mbox, MAIL_KEYWORD_POP3_DELETED, false, &idx),
			 0);
	char want[32];
	snprintf(want, sizeof(want), "F1=%c ", 'a' + idx);
	assert_string_equal(st_sync(fx->imap, 0, &log), want);
	struct view *p;
	assert_int_equal(view_new(fx->mbox, VIEW_POP3, NULL, NULL, &p), 0);
	assert_int_equal(view_count(p), 2);
	uint32_t uid;
	assert_int_equal(view_seq_to_uid(p, 1, &uid), 0);
	assert_int_equal(uid, b);
	assert_int_equal(view_seq_to_uid(p, 2, &uid), 0);
	assert_int_equal(uid, c);
	view_free(&p);
	/* already hidden: not expired again, and an expunge policy leaves it to IMAP too */
	assert_int_equal(mailbox_pop3_expire(fx->mbox, DAYS, NOW, POP3_DELETE_HIDE, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(mailbox_pop3_expire(fx->mbox, DAYS, NOW, POP3_DELETE_EXPUNGE, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(mailbox_count(fx->mbox), 3);
	assert_string_equal(st_sync(fx->imap, 0, &log), "");
}

static void test_survives_restart(void **state)
{
	struct fx *fx = *state;
	uint32_t a = st_append(fx->mbox, "a\r\n", 0);
	uint32_t b = st_append(fx->mbox, "b\r\n", 0);
	st_append(fx->mbox, "c\r\n", 0);
	mark1(fx->mbox, a, NOW - (DAYS + 1) * DAY);
	mark1(fx->mbox, b, NOW - (DAYS - 1) * DAY);
	uint32_t uv = mailbox_uidvalidity(fx->mbox);
	fx_close(fx);

	fx_open(fx);
	assert_int_equal(mailbox_uidvalidity(fx->mbox), uv);
	assert_int_equal(rtime(fx->mbox, a), NOW - (DAYS + 1) * DAY);
	assert_int_equal(rtime(fx->mbox, b), NOW - (DAYS - 1) * DAY);
	uint32_t n;
	assert_int_equal(mailbox_pop3_expire(fx->mbox, DAYS, NOW, POP3_DELETE_EXPUNGE, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(mailbox_count(fx->mbox), 2);
	fx_close(fx);

	/* the expunge is durable too, and b's record still counts after another restart */
	fx_open(fx);
	assert_int_equal(mailbox_count(fx->mbox), 2);
	assert_int_equal(
		mailbox_pop3_expire(fx->mbox, DAYS, NOW + 2 * DAY, POP3_DELETE_EXPUNGE, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(mailbox_count(fx->mbox), 1);
}

/* The UID list is torn: it is rebuilt with a new UIDVALIDITY and the messages renumbered;
 * the record (for the old UIDVALIDITY) is discarded, so nothing expires. */
static void test_rebuilt_uidlist(void **state)
{
	struct fx *fx = *state;
	st_only(ST_MAILDIR); /* the record file's place and the UID list are Maildir's */
	uint32_t a = st_append(fx->mbox, "a\r\n", 0);
	st_append(fx->mbox, "b\r\n", 0);
	st_append(fx->mbox, "c\r\n", 0);
	mark1(fx->mbox, a, NOW - 100 * DAY);
	uint32_t uv = mailbox_uidvalidity(fx->mbox);
	fx_close(fx);

	/* damage the line of the first message (not the last line: a torn list) */
	char list[4300];
	snprintf(list, sizeof(list), "%s/mailkeep-uidlist", fx->root);
	char *text = read_all(list);
	char *second = strchr(text, '\n') + 1;
	second[0] = second[0] == '0' ? '1' : '0';
	write_all(list, text);

	fx_open(fx);
	assert_true(mailbox_uidvalidity(fx->mbox) > uv);
	assert_int_equal(mailbox_count(fx->mbox), 3);
	for (uint32_t seq = 1; seq <= 3; seq++) {
		uint32_t uid;
		assert_int_equal(view_seq_to_uid(fx->imap, seq, &uid), 0);
		assert_int_equal(rtime(fx->mbox, uid), -ENOENT);
	}
	uint32_t n;
	assert_int_equal(mailbox_pop3_expire(fx->mbox, 1, NOW, POP3_DELETE_EXPUNGE, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(mailbox_count(fx->mbox), 3);

	/* the next download rewrites the record for the new UIDVALIDITY */
	uint32_t uid;
	assert_int_equal(view_seq_to_uid(fx->imap, 2, &uid), 0);
	mark1(fx->mbox, uid, NOW);
	char want[4096];
	want_header(want, sizeof(want), mailbox_uidvalidity(fx->mbox));
	want_rec(want, sizeof(want), uid, NOW);
	assert_string_equal(read_all(fx->record), want);
}

/* A damaged line loses that message's record only (kept); a torn last write is dropped and
 * the next write rewrites the file instead of appending after it. */
static void test_damaged_record(void **state)
{
	struct fx *fx = *state;
	st_only(ST_MAILDIR); /* the record file's place and the UID list are Maildir's */
	uint32_t a = st_append(fx->mbox, "a\r\n", 0);
	uint32_t b = st_append(fx->mbox, "b\r\n", 0);
	uint32_t c = st_append(fx->mbox, "c\r\n", 0);
	uint32_t d = st_append(fx->mbox, "d\r\n", 0);
	mark1(fx->mbox, a, NOW - 100 * DAY);
	mark1(fx->mbox, b, NOW - 100 * DAY);
	mark1(fx->mbox, c, NOW - 100 * DAY);
	fx_close(fx);

	char *text = read_all(fx->record);
	char *line_b = strchr(strchr(text, '\n') + 1, '\n') + 1; /* header, a, then b */
	char *t = strchr(line_b, ' ') + 1;                       /* b's payload */
	t = strchr(t, ' ') + 1;                                  /* its time */
	t[0] = t[0] == '1' ? '2' : '1';                          /* checksum no longer holds */
	size_t len = strlen(text);
	snprintf(text + len, 64, "0badc0de 4 %" PRId64, NOW - 100 * DAY); /* torn: no newline */
	write_all(fx->record, text);

	fx_open(fx);
	assert_int_equal(rtime(fx->mbox, a), NOW - 100 * DAY);
	assert_int_equal(rtime(fx->mbox, b), -ENOENT);
	assert_int_equal(rtime(fx->mbox, c), NOW - 100 * DAY);
	assert_int_equal(rtime(fx->mbox, d), -ENOENT);
	uint32_t n;
	assert_int_equal(mailbox_pop3_expire(fx->mbox, DAYS, NOW, POP3_DELETE_EXPUNGE, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(mailbox_count(fx->mbox), 2);
	/* rewritten whole: the expunged ones' records gone, the torn tail gone */
	mark1(fx->mbox, d, NOW);
	char want[4096];
	want_header(want, sizeof(want), mailbox_uidvalidity(fx->mbox));
	want_rec(want, sizeof(want), d, NOW);
	assert_string_equal(read_all(fx->record), want);
	mark1(fx->mbox, b, NOW + 1);
	want_rec(want, sizeof(want), b, NOW + 1);
	assert_string_equal(read_all(fx->record), want);
	/* a header for another UIDVALIDITY (a copy from elsewhere): nothing in it counts */
	fx_close(fx);
	char other[4096];
	want_header(other, sizeof(other), 12345);
	want_rec(other, sizeof(other), b, NOW - 100 * DAY);
	write_all(fx->record, other);
	fx_open(fx);
	assert_int_equal(rtime(fx->mbox, b), -ENOENT);
	assert_int_equal(mailbox_pop3_expire(fx->mbox, 1, NOW, POP3_DELETE_EXPUNGE, &n), 0);
	assert_int_equal(n, 0);
}

/* Records of expunged messages are garbage: once the file holds over 1000 lines more than
 * twice the live records, the next write rewrites it with the live ones only. */
static void test_compaction(void **state)
{
	struct fx *fx = *state;
	st_only(ST_MAILDIR); /* the record file's place and the UID list are Maildir's */
	enum { N = 1100 };
	char name[64];
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "%d.M%dP1.test", 1700000000 + i, i);
		st_write_file(fx->root, "new", name, "Subject: x\r\n\r\ny\r\n");
	}
	assert_int_equal(mailbox_refresh(fx->mbox), 0);
	assert_int_equal(mailbox_count(fx->mbox), N);
	struct st_sync_log log;
	st_sync(fx->imap, 0, &log);
	uint32_t *uids = malloc(N * sizeof(*uids));
	for (uint32_t i = 0; i < N; i++)
		assert_int_equal(view_seq_to_uid(fx->imap, i + 1, &uids[i]), 0);
	assert_int_equal(mailbox_pop3_mark_retrieved(fx->mbox, uids, N, NOW - 100 * DAY), 0);
	uint32_t n;
	assert_int_equal(mailbox_pop3_expire(fx->mbox, DAYS, NOW, POP3_DELETE_EXPUNGE, &n), 0);
	assert_int_equal(n, N);
	free(uids);
	assert_int_equal(mailbox_count(fx->mbox), 0);
	/* the file still has the N lines until the next write */
	size_t lines = 0;
	for (const char *p = read_all(fx->record); *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, N + 1);
	uint32_t u = st_append(fx->mbox, "z\r\n", 0);
	mark1(fx->mbox, u, NOW);
	char want[4096];
	want_header(want, sizeof(want), mailbox_uidvalidity(fx->mbox));
	want_rec(want, sizeof(want), u, NOW);
	assert_string_equal(read_all(fx->record), want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_mark_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expire_by_age, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expire_busy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expire_hide, setup, teardown),
		cmocka_unit_test_setup_teardown(test_survives_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rebuilt_uidlist, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
