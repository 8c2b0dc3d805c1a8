/* UID list: format, checksums, torn lists, the crash window of a rewrite, UIDL derivation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage_test.h"
#include "storage_util.h"
#include "uidlist.h"

static char *write_list(const char *dir, const struct sbuf *b)
{
	static char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, UIDLIST_FILE);
	assert_int_equal(uidlist_write(path, b), 0);
	return path;
}

static void build(struct sbuf *b, uint32_t uidvalidity, uint32_t n)
{
	b->len = 0;
	assert_int_equal(uidlist_line_header(b, uidvalidity, n + 1, 100, n), 0);
	for (uint32_t i = 1; i <= n; i++) {
		char base[64], uidl[MAIL_UIDL_MAX + 1];
		snprintf(base, sizeof(base), "1700000000.M%uP1.host,S=10,W=11", i);
		uidlist_uidl_from_base(base, strlen(base), uidl);
		assert_int_equal(uidlist_line_add(b, i, 10 + i, 11, 1700000000 + i, MAIL_SEEN, 0,
						  1700000100 + i, 0xfedcba9876543210ull + i, uidl,
						  base, strlen(base)),
				 0);
	}
}

static void test_roundtrip(void **state)
{
	char *dir = st_tmpdir();
	struct sbuf b = {0};
	build(&b, 12345, 3);
	assert_int_equal(uidlist_line_flags(&b, 2, 50, MAIL_FLAGGED, 5), 0);
	assert_int_equal(uidlist_line_expunge(&b, 3, 51), 0);
	char *path = write_list(dir, &b);
	struct uidlist l;
	uint32_t old;
	assert_int_equal(uidlist_read(path, &l, &old), 0);
	assert_int_equal(l.uidvalidity, 12345);
	assert_int_equal(l.uidnext, 4);
	assert_int_equal(l.highest_modseq, 100);
	assert_int_equal(l.n_base, 3);
	assert_int_equal(l.n_log, 2);
	assert_int_equal(l.n_ents, 3);
	assert_string_equal(uidlist_ent_base(&l, &l.ents[0]), "1700000000.M1P1.host,S=10,W=11");
	assert_int_equal(l.ents[1].flags, MAIL_FLAGGED);
	assert_int_equal(l.ents[1].keywords, 5);
	assert_int_equal(l.ents[1].modseq, 50);
	assert_true(l.ents[2].expunged);
	assert_int_equal(l.ents[0].idate, 1700000001);
	assert_int_equal(l.ents[0].savedate, 1700000101);
	assert_true(l.ents[2].emailid == 0xfedcba9876543213ull);
	assert_false(l.torn_tail);
	uidlist_free(&l);
	sbuf_free(&b);
	st_rmdir(&dir);
}

/* The exact lines written (version 2), and a version 1 list (as mailkeep wrote it before
 * save dates and EMAILIDs) still read: its '+' records have both unknown (0), and 'A' records
 * appended to it are read with them. */
static void test_versions(void **state)
{
	char *dir = st_tmpdir();
	struct sbuf b = {0};
	assert_int_equal(uidlist_line_header(&b, 7, 3, 9, 1), 0);
	assert_int_equal(uidlist_line_add(&b, 1, 2, 11, 1700000000, MAIL_SEEN, 0, 1700000005, 0x1f,
					  "u", "1700000000.M1P1.h a", 19),
			 0);
	assert_string_equal(b.data, "86af55d1 H 2 7 3 9 1\n"
				    "c5c5bdb7 A 1 2 11 1700000000 1 0 1700000005 1f u "
				    "1700000000.M1P1.h a\n");
	sbuf_free(&b);

	/* Version 1: header "H 1", '+' records, then an 'A' record of this version. */
	assert_int_equal(uidlist_line(&b, "H 1 7 4 9 2"), 0);
	assert_int_equal(uidlist_line(&b, "+ 1 2 11 1700000000 1 0 u1 1699999999.M1P1.h"), 0);
	assert_int_equal(uidlist_line(&b, "+ 2 3 12 1700000001 0 3 u2 odd name"), 0);
	assert_int_equal(uidlist_line_add(&b, 3, 4, 13, 1700000002, 0, 0, 1700000009, 0x77, "u3",
					  "1700000009.M3P1.h", 17),
			 0);
	char *path = write_list(dir, &b);
	struct uidlist l;
	uint32_t old;
	assert_int_equal(uidlist_read(path, &l, &old), 0);
	assert_int_equal(l.uidvalidity, 7);
	assert_int_equal(l.n_ents, 3);
	assert_int_equal(l.ents[0].savedate, 0);
	assert_true(l.ents[0].emailid == 0);
	assert_string_equal(uidlist_ent_base(&l, &l.ents[1]), "odd name");
	assert_int_equal(l.ents[1].keywords, 3);
	assert_int_equal(l.ents[2].savedate, 1700000009);
	assert_true(l.ents[2].emailid == 0x77);
	assert_string_equal(uidlist_ent_uidl(&l, &l.ents[2]), "u3");
	uidlist_free(&l);
	sbuf_free(&b);

	/* An unknown version is a torn list. */
	assert_int_equal(uidlist_line(&b, "H 3 7 4 9 0"), 0);
	path = write_list(dir, &b);
	assert_int_equal(uidlist_read(path, &l, &old), -EBADMSG);
	sbuf_free(&b);
	st_rmdir(&dir);
}

/* A record whose write never finished (the last line) is dropped, not fatal. */
static void test_torn_tail_dropped(void **state)
{
	char *dir = st_tmpdir();
	struct sbuf b = {0};
	build(&b, 777, 2);
	assert_int_equal(uidlist_line_add(&b, 3, 5, 1, 1, 0, 0, 1, 1, "x", "x", 1), 0);
	b.len -= 7; /* cut the last line mid-way */
	char *path = write_list(dir, &b);
	struct uidlist l;
	uint32_t old;
	assert_int_equal(uidlist_read(path, &l, &old), 0);
	assert_true(l.torn_tail);
	assert_int_equal(l.n_ents, 2);
	assert_int_equal(l.uidnext, 3);
	uidlist_free(&l);
	sbuf_free(&b);
	st_rmdir(&dir);
}

/* Damage inside the list (base cut short, a flipped byte not at the end) is a torn list. */
static void test_torn_detected(void **state)
{
	char *dir = st_tmpdir();
	struct sbuf b = {0};
	struct uidlist l;
	uint32_t old;
	build(&b, 4242, 5);
	size_t full = b.len;
	b.len = full / 2; /* base cut short */
	char *path = write_list(dir, &b);
	assert_int_equal(uidlist_read(path, &l, &old), -EBADMSG);
	assert_int_equal(old, 4242);

	build(&b, 4242, 5);
	char *second = strchr(b.data, '\n') + 1;
	second[20] ^= 0x01; /* a bit flip in the first record */
	path = write_list(dir, &b);
	assert_int_equal(uidlist_read(path, &l, &old), -EBADMSG);

	build(&b, 4242, 5);
	b.data[3] ^= 0x01; /* header checksum */
	path = write_list(dir, &b);
	assert_int_equal(uidlist_read(path, &l, &old), -EBADMSG);
	assert_int_equal(old, 0);
	sbuf_free(&b);
	st_rmdir(&dir);
}

static void crash_at_1(int point)
{
	if (point == 1)
		_exit(42);
}

/* A crash after the new list is written and fsynced but before the rename leaves the old
 * list intact (the child dies inside uidlist_write). */
static void test_crash_before_rename(void **state)
{
	char *dir = st_tmpdir();
	struct sbuf b = {0};
	build(&b, 1111, 2);
	char *path = write_list(dir, &b);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sbuf nb = {0};
		build(&nb, 2222, 9);
		uidlist_crash_hook = crash_at_1;
		uidlist_write(path, &nb);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 42);
	struct uidlist l;
	uint32_t old;
	assert_int_equal(uidlist_read(path, &l, &old), 0);
	assert_int_equal(l.uidvalidity, 1111);
	assert_int_equal(l.n_ents, 2);
	uidlist_free(&l);
	/* the half-done temporary file is there, and ignored */
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	assert_int_equal(access(tmp, F_OK), 0);
	sbuf_free(&b);
	st_rmdir(&dir);
}

static void test_uidl_from_base(void **state)
{
	char out[MAIL_UIDL_MAX + 1], again[MAIL_UIDL_MAX + 1];
	uidlist_uidl_from_base("1700000000.M1P2.host,S=5", 24, out);
	assert_string_equal(out, "1700000000.M1P2.host,S=5");
	/* a space (0x20) is not allowed in a UIDL: hashed, deterministic, 33 chars */
	uidlist_uidl_from_base("odd name", 8, out);
	assert_int_equal(strlen(out), 33);
	assert_int_equal(out[0], 'X');
	uidlist_uidl_from_base("odd name", 8, again);
	assert_string_equal(out, again);
	for (const char *p = out; *p; p++)
		assert_true(*p >= 0x21 && *p <= 0x7e);
	/* too long: hashed */
	char longname[100];
	memset(longname, 'a', 71);
	longname[71] = '\0';
	uidlist_uidl_from_base(longname, 71, out);
	assert_int_equal(strlen(out), 33);
	uidlist_uidl_from_base(longname, 70, out);
	assert_int_equal(strlen(out), 70);
	/* different names, different UIDLs */
	uidlist_uidl_from_base("odd name2", 9, again);
	assert_string_not_equal(out, again);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),      cmocka_unit_test(test_torn_tail_dropped),
		cmocka_unit_test(test_torn_detected),  cmocka_unit_test(test_crash_before_rename),
		cmocka_unit_test(test_uidl_from_base), cmocka_unit_test(test_versions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
