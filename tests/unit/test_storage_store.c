/* The user store: first-use tree, special-use, folder create/delete/rename, INBOX rename,
 * subscriptions, listing attributes, name rules. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "storage_test.h"

struct fx {
	uv_loop_t loop;
	char *dir;
	char root[4096];
	struct store *store;
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	uv_loop_init(&fx->loop);
	fx->dir = st_tmpdir();
	snprintf(fx->root, sizeof(fx->root), "%s/users/alice", fx->dir);
	assert_int_equal(st_store_open(&fx->loop, fx->root, &fx->store), 0);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	store_unref(&fx->store);
	st_loop_close(&fx->loop);
	st_rmdir(&fx->dir);
	free(fx);
	return 0;
}

static bool exists(const struct fx *fx, const char *rel)
{
	char p[4200];
	struct stat st;
	snprintf(p, sizeof(p), "%s/%s", fx->root, rel);
	return stat(p, &st) == 0;
}

/* Folder NAME on disk: the Maildir++ directory .NAME with its cur/, or the mbox file. */
static bool folder_on_disk(const struct fx *fx, const char *name)
{
	char p[4200];
	struct stat st;
	if (st_format() == ST_MBOX) {
		st_mbox_path(fx->root, name, p, sizeof(p));
		return stat(p, &st) == 0 && S_ISREG(st.st_mode);
	}
	snprintf(p, sizeof(p), "%s/.%s/cur", fx->root, name);
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static const struct store_folder *find(const struct store_folder *f, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(f[i].name, name) == 0)
			return &f[i];
	return NULL;
}

static void test_first_use(void **state)
{
	struct fx *fx = *state;
	if (st_format() == ST_MAILDIR) {
		assert_true(exists(fx, "cur") && exists(fx, "new") && exists(fx, "tmp"));
		assert_true(exists(fx, ".Sent/cur") && exists(fx, ".Sent/maildirfolder"));
		assert_true(exists(fx, ".Drafts/new") && exists(fx, ".Trash/tmp"));
	}
	assert_true(folder_on_disk(fx, "Sent") && folder_on_disk(fx, "Drafts"));
	assert_true(folder_on_disk(fx, "Trash") && folder_on_disk(fx, "Junk"));
	assert_true(folder_on_disk(fx, "Archive"));
	struct store_folder *f;
	size_t n;
	assert_int_equal(store_folder_list(fx->store, &f, &n), 0);
	assert_int_equal(n, 6);
	assert_string_equal(f[0].name, "INBOX");
	assert_string_equal(f[1].name, "Archive");
	assert_int_equal(find(f, n, "Sent")->special_use, STORE_SPECIAL_SENT);
	assert_int_equal(find(f, n, "Drafts")->special_use, STORE_SPECIAL_DRAFTS);
	assert_int_equal(find(f, n, "Trash")->special_use, STORE_SPECIAL_TRASH);
	assert_int_equal(find(f, n, "Junk")->special_use, STORE_SPECIAL_JUNK);
	assert_int_equal(find(f, n, "Archive")->special_use, STORE_SPECIAL_ARCHIVE);
	assert_int_equal(find(f, n, "INBOX")->special_use, 0);
	assert_true(find(f, n, "Sent")->attrs & STORE_FOLDER_SUBSCRIBED);
	assert_false(find(f, n, "Sent")->attrs & STORE_FOLDER_HASCHILDREN);
	store_folder_list_free(&f, n);
	assert_string_equal(store_special_use_name(STORE_SPECIAL_JUNK), "\\Junk");

	/* opening again gives the same object; a deleted default is not re-created */
	struct store *again;
	assert_int_equal(st_store_open(&fx->loop, fx->root, &again), 0);
	assert_ptr_equal(again, fx->store);
	store_unref(&again);
	assert_int_equal(store_folder_delete(fx->store, "Junk"), 0);
	store_unref(&fx->store);
	assert_int_equal(st_store_open(&fx->loop, fx->root, &fx->store), 0);
	assert_false(exists(fx, ".Junk"));
	assert_false(folder_on_disk(fx, "Junk"));
}

static void test_open_with_config(void **state)
{
	struct fx *fx = *state;
	struct config cfg = {0};
	char root[4200];
	snprintf(root, sizeof(root), "%s/mail/%%u/Maildir", fx->dir);
	cfg.mail_root = root;
	cfg.mail_format = MAIL_FORMAT_MAILDIR;
	struct store *s;
	assert_int_equal(store_open(&fx->loop, &cfg, "bob", &s), 0);
	char want[4200];
	snprintf(want, sizeof(want), "%s/mail/bob/Maildir", fx->dir);
	assert_string_equal(store_root(s), want);
	store_unref(&s);
	assert_int_equal(store_open(&fx->loop, &cfg, "../evil", &s), -EINVAL);
	assert_int_equal(store_open(&fx->loop, &cfg, ".hidden", &s), -EINVAL);
	assert_int_equal(store_open(&fx->loop, &cfg, "", &s), -EINVAL);
	/* an mbox store: the same root, INBOX from mbox_inbox with %u */
	char inbox[4200];
	snprintf(inbox, sizeof(inbox), "%s/spool/%%u", fx->dir);
	char spool[4200];
	snprintf(spool, sizeof(spool), "%s/spool", fx->dir);
	assert_int_equal(mkdir(spool, 0700), 0);
	cfg.mail_format = MAIL_FORMAT_MBOX;
	cfg.mbox_inbox = inbox;
	cfg.mbox_lock_timeout = 1;
	assert_int_equal(store_open(&fx->loop, &cfg, "bob", &s), 0);
	snprintf(want, sizeof(want), "%s/mail/bob/Maildir", fx->dir);
	assert_string_equal(store_root(s), want);
	struct mailbox *mb;
	assert_int_equal(mailbox_open(s, "INBOX", &mb), 0);
	assert_int_equal(mailbox_count(mb), 0);
	mailbox_unref(&mb);
	store_unref(&s);
	cfg.mbox_inbox = NULL;
	/* no %u: the user is appended */
	snprintf(root, sizeof(root), "%s/flat", fx->dir);
	cfg.mail_format = MAIL_FORMAT_MAILDIR;
	assert_int_equal(store_open(&fx->loop, &cfg, "carol", &s), 0);
	snprintf(want, sizeof(want), "%s/flat/carol", fx->dir);
	assert_string_equal(store_root(s), want);
	store_unref(&s);
}

static void test_names(void **state)
{
	char out[STORE_NAME_MAX + 1];
	assert_int_equal(store_name_normalize("inbox", out, sizeof(out)), 0);
	assert_string_equal(out, "INBOX");
	assert_int_equal(store_name_normalize("InBoX.Sub", out, sizeof(out)), 0);
	assert_string_equal(out, "INBOX.Sub");
	assert_int_equal(store_name_normalize("INBOXES", out, sizeof(out)), 0);
	assert_string_equal(out, "INBOXES");
	assert_int_equal(store_name_normalize("Work.", out, sizeof(out)), 0);
	assert_string_equal(out, "Work");
	assert_int_equal(store_name_normalize("Entw&APw-rfe", out, sizeof(out)), 0);
	assert_int_equal(store_name_normalize("&-", out, sizeof(out)), 0);
	assert_int_equal(store_name_normalize("a&Jjo-b", out, sizeof(out)), 0);
	assert_int_equal(store_name_normalize("a..b", out, sizeof(out)), -EINVAL);
	assert_int_equal(store_name_normalize(".a", out, sizeof(out)), -EINVAL);
	assert_int_equal(store_name_normalize("a/b", out, sizeof(out)), -EINVAL);
	assert_int_equal(store_name_normalize("", out, sizeof(out)), -EINVAL);
	assert_int_equal(store_name_normalize(".", out, sizeof(out)), -EINVAL);
	assert_int_equal(store_name_normalize("Entw\xc3\xbcrfe", out, sizeof(out)), -EINVAL);
	assert_int_equal(store_name_normalize("bad&shift", out, sizeof(out)), -EINVAL);
	assert_int_equal(store_name_normalize("bad&A-", out, sizeof(out)), -EINVAL);
	assert_int_equal(store_name_normalize("tab\there", out, sizeof(out)), -EINVAL);
	char longname[300];
	memset(longname, 'x', 255);
	longname[255] = '\0';
	assert_int_equal(store_name_normalize(longname, out, sizeof(out)), -EINVAL);
}

/* Maildir++ levels are folders of their own; an mbox level with children is a directory
 * (test_mbox_external covers the mbox layout). */
static void test_create_delete(void **state)
{
	struct fx *fx = *state;
	st_only(ST_MAILDIR);
	assert_int_equal(store_folder_create(fx->store, "Work.Projects.2024", 0), 0);
	assert_true(exists(fx, ".Work/cur"));
	assert_true(exists(fx, ".Work.Projects/cur"));
	assert_true(exists(fx, ".Work.Projects.2024/cur"));
	assert_int_equal(store_folder_create(fx->store, "Work", 0), -EEXIST);
	assert_int_equal(store_folder_create(fx->store, "inbox", 0), -EEXIST);
	assert_int_equal(store_folder_create(fx->store, "Bad..Name", 0), -EINVAL);
	assert_int_equal(store_folder_create(fx->store, "Entw&APw-rfe", STORE_SPECIAL_DRAFTS), 0);
	assert_true(exists(fx, ".Entw&APw-rfe/cur"));

	struct store_folder *f;
	size_t n;
	assert_int_equal(store_folder_list(fx->store, &f, &n), 0);
	assert_true(find(f, n, "Work")->attrs & STORE_FOLDER_HASCHILDREN);
	assert_true(find(f, n, "Work.Projects")->attrs & STORE_FOLDER_HASCHILDREN);
	assert_false(find(f, n, "Work.Projects.2024")->attrs & STORE_FOLDER_HASCHILDREN);
	assert_int_equal(find(f, n, "Entw&APw-rfe")->special_use, STORE_SPECIAL_DRAFTS);
	store_folder_list_free(&f, n);

	assert_int_equal(store_folder_delete(fx->store, "Work"), -ENOTEMPTY);
	assert_int_equal(store_folder_delete(fx->store, "INBOX"), -EPERM);
	assert_int_equal(store_folder_delete(fx->store, "Nope"), -ENOENT);
	assert_int_equal(store_folder_delete(fx->store, "Work.Projects.2024"), 0);
	assert_false(exists(fx, ".Work.Projects.2024"));
	assert_int_equal(store_folder_delete(fx->store, "Work.Projects"), 0);
	assert_int_equal(store_folder_delete(fx->store, "Work"), 0);

	/* a level that exists only through a deeper folder (made by another tool) */
	char p[4200];
	snprintf(p, sizeof(p), "%s/.Lists.Debian", fx->root);
	assert_int_equal(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/.Lists.Debian/cur", fx->root);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(store_folder_list(fx->store, &f, &n), 0);
	const struct store_folder *lists = find(f, n, "Lists");
	assert_non_null(lists);
	assert_int_equal(lists->attrs, STORE_FOLDER_NOSELECT | STORE_FOLDER_HASCHILDREN);
	store_folder_list_free(&f, n);
}

static void test_rename(void **state)
{
	struct fx *fx = *state;
	st_only(ST_MAILDIR);
	assert_int_equal(store_folder_create(fx->store, "A.B.C", 0), 0);
	assert_int_equal(store_folder_create(fx->store, "AB", 0), 0);
	/* a message in A.B survives the rename, with its UID */
	struct mailbox *m;
	assert_int_equal(mailbox_open(fx->store, "A.B", &m), 0);
	uint32_t uid = st_append(m, "Subject: x\r\n\r\nbody\r\n", MAIL_SEEN);
	uint32_t uv = mailbox_uidvalidity(m);
	assert_int_equal(store_folder_rename(fx->store, "A", "Z.Y"), 0);
	assert_false(exists(fx, ".A"));
	assert_false(exists(fx, ".A.B"));
	assert_true(exists(fx, ".Z/cur"));
	assert_true(exists(fx, ".Z.Y/cur"));
	assert_true(exists(fx, ".Z.Y.B/cur"));
	assert_true(exists(fx, ".Z.Y.B.C/cur"));
	assert_true(exists(fx, ".AB/cur")); /* not a child of A */
	assert_string_equal(mailbox_name(m), "Z.Y.B");
	/* the open mailbox keeps working at its new place */
	uint32_t uid2 = st_append(m, "Subject: y\r\n\r\nmore\r\n", 0);
	assert_int_equal(uid2, uid + 1);
	mailbox_unref(&m);
	st_loop_close(&fx->loop);
	uv_loop_init(&fx->loop);
	store_unref(&fx->store);
	assert_int_equal(st_store_open(&fx->loop, fx->root, &fx->store), 0);
	assert_int_equal(mailbox_open(fx->store, "Z.Y.B", &m), 0);
	assert_int_equal(mailbox_count(m), 2);
	assert_int_equal(mailbox_uidvalidity(m), uv);
	mailbox_unref(&m);

	assert_int_equal(store_folder_rename(fx->store, "Z", "AB"), -EEXIST);
	assert_int_equal(store_folder_rename(fx->store, "Z", "Z.Y.Q"), -EINVAL);
	assert_int_equal(store_folder_rename(fx->store, "Nope", "Q"), -ENOENT);
	assert_int_equal(store_folder_rename(fx->store, "Z", "INBOX"), -EEXIST);
}

static void test_rename_inbox(void **state)
{
	struct fx *fx = *state;
	struct mailbox *in;
	assert_int_equal(mailbox_open(fx->store, "INBOX", &in), 0);
	st_append(in, "Subject: 1\r\n\r\n1\r\n", 0);
	st_append(in, "Subject: 2\r\n\r\n2\r\n", MAIL_SEEN);
	assert_int_equal(store_folder_create(fx->store, "INBOX.Child", 0), 0);
	assert_int_equal(store_folder_rename(fx->store, "INBOX", "Old-Inbox"), 0);
	/* INBOX stays, empty; its child is not moved (RFC 3501 6.3.5) */
	assert_int_equal(mailbox_count(in), 0);
	assert_true(folder_on_disk(fx, "INBOX.Child"));
	if (st_format() == ST_MAILDIR)
		assert_int_equal(st_count_files(fx->root, "cur"), 0);
	struct mailbox *old;
	assert_int_equal(mailbox_open(fx->store, "Old-Inbox", &old), 0);
	assert_int_equal(mailbox_count(old), 2);
	struct mailbox_status st;
	mailbox_get_status(old, &st);
	assert_int_equal(st.unseen, 1);
	mailbox_unref(&old);
	mailbox_unref(&in);
}

static void test_subscriptions(void **state)
{
	struct fx *fx = *state;
	assert_int_equal(store_folder_create(fx->store, "News", 0), 0);
	assert_int_equal(store_subscribe(fx->store, "News", true), 0);
	assert_int_equal(store_subscribe(fx->store, "Ghost.Child", true), 0);
	assert_int_equal(store_subscribe(fx->store, "Sent", false), 0);
	assert_int_equal(store_subscribe(fx->store, "bad..name", true), -EINVAL);
	struct store_folder *f;
	size_t n;
	assert_int_equal(store_folder_list(fx->store, &f, &n), 0);
	assert_true(find(f, n, "News")->attrs & STORE_FOLDER_SUBSCRIBED);
	assert_false(find(f, n, "Sent")->attrs & STORE_FOLDER_SUBSCRIBED);
	const struct store_folder *g = find(f, n, "Ghost.Child");
	assert_non_null(g);
	assert_int_equal(g->attrs, STORE_FOLDER_NONEXISTENT | STORE_FOLDER_NOSELECT |
					   STORE_FOLDER_SUBSCRIBED);
	store_folder_list_free(&f, n);
	if (st_format() == ST_MBOX)
		return; /* where the names are kept is the back-end's */
	char data[4200];
	snprintf(data, sizeof(data), "%s/subscriptions", fx->root);
	FILE *fp = fopen(data, "r");
	assert_non_null(fp);
	size_t len = fread(data, 1, sizeof(data) - 1, fp);
	data[len] = '\0';
	fclose(fp);
	assert_string_equal(data, "Drafts\nTrash\nJunk\nArchive\nNews\nGhost.Child\n");
}

static void test_delete_open_mailbox(void **state)
{
	struct fx *fx = *state;
	assert_int_equal(store_folder_create(fx->store, "Tmp", 0), 0);
	struct mailbox *m;
	struct view *v;
	assert_int_equal(mailbox_open(fx->store, "Tmp", &m), 0);
	st_append(m, "a\r\n", 0);
	st_append(m, "b\r\n", 0);
	assert_int_equal(view_new(m, VIEW_IMAP, NULL, NULL, &v), 0);
	assert_int_equal(store_folder_delete(fx->store, "Tmp"), 0);
	struct st_sync_log log;
	assert_string_equal(st_sync(v, 0, &log), "E1 E1 "); /* each EXPUNGE renumbers the rest */
	assert_int_equal(view_count(v), 0);
	struct mail_append *a;
	assert_int_equal(mailbox_append_begin(m, 0, 0, 0, &a), -ENOENT);
	assert_false(exists(fx, ".Tmp"));
	assert_false(folder_on_disk(fx, "Tmp"));
	view_free(&v);
	mailbox_unref(&m);
	/* a new folder of the same name is a new mailbox */
	assert_int_equal(store_folder_create(fx->store, "Tmp", 0), 0);
	assert_int_equal(mailbox_open(fx->store, "Tmp", &m), 0);
	assert_int_equal(mailbox_count(m), 0);
	mailbox_unref(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_first_use, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_with_config, setup, teardown),
		cmocka_unit_test(test_names),
		cmocka_unit_test_setup_teardown(test_create_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rename, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rename_inbox, setup, teardown),
		cmocka_unit_test_setup_teardown(test_subscriptions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_open_mailbox, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
