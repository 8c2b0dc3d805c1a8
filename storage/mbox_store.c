/* mbox_store — the mbox tree's layout for store.c: folder files, hierarchy directories and
 * the state directory (mbox_private.h has the layout).
 *
 * An mbox folder is a file and holds messages only: a folder with children is a directory
 * (listed \NoSelect), so creating "a.b" under a folder file "a" is refused (-EPERM), as
 * Dovecot's mbox layout does. File and directory names are the wire levels as they are
 * (modified UTF-7); names with '.' never occur (it is the separator), so FILE.lock dotlocks
 * and other tools' dot-files are never listed.
 */
#include "mbox_private.h"
#include "storage_util.h"

#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULTS_MARKER  "mailkeep-defaults"
#define SPECIAL_USE_FILE "mailkeep-special-use"
#define LIST_DEPTH_MAX   32

static const struct {
	const char *name;
	enum store_special_use use;
} mbox_defaults[] = {
	{"Sent", STORE_SPECIAL_SENT},       {"Drafts", STORE_SPECIAL_DRAFTS},
	{"Trash", STORE_SPECIAL_TRASH},     {"Junk", STORE_SPECIAL_JUNK},
	{"Archive", STORE_SPECIAL_ARCHIVE},
};

static bool is_inbox(const char *norm)
{
	return strcmp(norm, "INBOX") == 0;
}

int mbox_store_file_path(const struct store *store, const char *norm, char *buf, size_t size)
{
	const struct mbox_opts *mo = store_mbox_opts(store);
	if (is_inbox(norm)) {
		if (mo != NULL && mo->inbox != NULL)
			return storage_path(buf, size, "%s", mo->inbox);
		return storage_path(buf, size, "%s/inbox", store_root(store));
	}
	int r = storage_path(buf, size, "%s/%s", store_root(store), norm);
	if (r < 0)
		return r;
	for (char *p = buf + strlen(store_root(store)) + 1; *p; p++)
		if (*p == STORE_SEPARATOR)
			*p = '/';
	return 0;
}

int mbox_store_state_path(const struct store *store, const char *norm, char *buf, size_t size)
{
	return storage_path(buf, size, "%s%s/box/%s", store_root(store), MBOX_STATE_DIR, norm);
}

static bool is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool mbox_store_exists(const struct store *store, const char *norm)
{
	char path[4096];
	if (is_inbox(norm))
		return true;
	return mbox_store_file_path(store, norm, path, sizeof(path)) == 0 && is_file(path);
}

/* mkdir every directory above the file PATH below ROOT. -EPERM when one is a file. */
static int make_parents(const char *root, const char *path)
{
	char buf[4096];
	size_t rl = strlen(root);
	int r = storage_path(buf, sizeof(buf), "%s", path);
	for (char *p = buf + rl + 1; r == 0 && (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		struct stat st;
		if (stat(buf, &st) == 0 && !S_ISDIR(st.st_mode))
			r = -EPERM;
		else
			r = storage_mkdir(buf, 0700);
		*p = '/';
	}
	return r;
}

static int write_special_use(const char *state, unsigned special_use)
{
	if (special_use == 0)
		return 0;
	char text[128], file[4096];
	size_t n = 0;
	text[0] = '\0';
	for (unsigned bit = 1; bit <= STORE_SPECIAL_ARCHIVE; bit <<= 1) {
		const char *attr = (special_use & bit) ? store_special_use_name(bit) : NULL;
		if (attr != NULL)
			n += (size_t)snprintf(text + n, sizeof(text) - n, "%s\n", attr);
	}
	int r = storage_path(file, sizeof(file), "%s/%s", state, SPECIAL_USE_FILE);
	if (r == 0)
		r = storage_write_file_atomic(file, text, n);
	return r;
}

int mbox_store_create(struct store *store, const char *norm, unsigned special_use)
{
	char path[4096], state[4096];
	int r = mbox_store_file_path(store, norm, path, sizeof(path));
	if (r == 0)
		r = mbox_store_state_path(store, norm, state, sizeof(state));
	if (r < 0)
		return r;
	struct stat st;
	if (lstat(path, &st) == 0)
		return -EEXIST; /* a folder, or a directory of folders (\NoSelect) */
	r = make_parents(store_root(store), path);
	if (r < 0)
		return r;
	/* a stale state directory (a file removed behind our back) must not name the new
	 * folder's messages */
	storage_remove_tree(state);
	r = storage_mkdir(state, 0700);
	if (r == 0)
		r = write_special_use(state, special_use);
	if (r < 0)
		return r;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return errno == EEXIST ? -EEXIST : -errno;
	r = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	if (r == 0)
		r = storage_fsync_parent(path);
	return r;
}

int mbox_store_init(struct store *store)
{
	char path[4096];
	const char *root = store_root(store);
	int r = 0;
	strncpy(path, root, sizeof(path) - 1);
	path[sizeof(path) - 1] = '\0';
	for (char *p = path + 1; *p && r == 0; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		r = storage_mkdir(path, 0700);
		*p = '/';
	}
	if (r == 0)
		r = storage_mkdir(root, 0700);
	if (r == 0)
		r = storage_path(path, sizeof(path), "%s%s", root, MBOX_STATE_DIR);
	if (r == 0)
		r = storage_mkdir(path, 0700);
	if (r == 0)
		r = storage_path(path, sizeof(path), "%s%s/box", root, MBOX_STATE_DIR);
	if (r == 0)
		r = storage_mkdir(path, 0700);
	const struct mbox_opts *mo = store_mbox_opts(store);
	if (r == 0 && mo->inbox == NULL) {
		/* ROOT/inbox (a spool given by mbox_inbox is the MTA's to create) */
		r = storage_path(path, sizeof(path), "%s/inbox", root);
		int fd = r == 0 ? open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600) : -1;
		if (r == 0 && fd < 0)
			r = -errno;
		if (fd >= 0)
			close(fd);
	}
	if (r == 0)
		r = storage_path(path, sizeof(path), "%s%s/%s", root, MBOX_STATE_DIR,
				 DEFAULTS_MARKER);
	if (r < 0 || access(path, F_OK) == 0)
		return r;
	for (size_t i = 0; i < sizeof(mbox_defaults) / sizeof(mbox_defaults[0]); i++) {
		r = mbox_store_create(store, mbox_defaults[i].name, mbox_defaults[i].use);
		if (r == -EEXIST)
			continue;
		if (r == 0)
			r = store_subscribe(store, mbox_defaults[i].name, true);
		if (r < 0)
			return r;
	}
	return storage_write_file_atomic(path, "1\n", 2);
}

/* Folder files below DIR (wire prefix PREFIX), depth-first. */
static int list_dir(const char *dir, const char *prefix, int depth, const char *skip,
		    int (*add)(void *ctx, const char *name), void *ctx)
{
	if (depth > LIST_DEPTH_MAX)
		return 0;
	DIR *d = opendir(dir);
	if (d == NULL)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	struct dirent *de;
	int r = 0;
	while ((de = readdir(d)) != NULL && r == 0) {
		const char *n = de->d_name;
		if (n[0] == '.' || strchr(n, STORE_SEPARATOR) != NULL)
			continue; /* ours, dotlocks, tools' temporary files */
		char name[STORE_NAME_MAX + 1], norm[STORE_NAME_MAX + 1], path[4096];
		if (snprintf(name, sizeof(name), "%s%s%s", prefix, prefix[0] ? "." : "", n) >=
			    (int)sizeof(name) ||
		    store_name_normalize(name, norm, sizeof(norm)) < 0 || strcmp(norm, name) != 0)
			continue;
		if (depth == 0 && skip != NULL && strcmp(n, skip) == 0)
			continue; /* the default INBOX file */
		if (storage_path(path, sizeof(path), "%s/%s", dir, n) < 0)
			continue;
		struct stat st;
		if (stat(path, &st) < 0)
			continue;
		if (S_ISREG(st.st_mode))
			r = add(ctx, name);
		else if (S_ISDIR(st.st_mode))
			r = list_dir(path, name, depth + 1, NULL, add, ctx);
	}
	closedir(d);
	return r;
}

int mbox_store_list(struct store *store, int (*add)(void *ctx, const char *name), void *ctx)
{
	const struct mbox_opts *mo = store_mbox_opts(store);
	return list_dir(store_root(store), "", 0, mo->inbox == NULL ? "inbox" : NULL, add, ctx);
}

/* Remove the now empty directories above PATH, up to ROOT. */
static void prune_parents(const char *root, const char *path)
{
	char buf[4096];
	if (storage_path(buf, sizeof(buf), "%s", path) < 0)
		return;
	size_t rl = strlen(root);
	for (char *p = strrchr(buf, '/'); p != NULL && (size_t)(p - buf) > rl;
	     p = strrchr(buf, '/')) {
		*p = '\0';
		if (rmdir(buf) < 0)
			break;
	}
}

int mbox_store_delete(struct store *store, const char *norm)
{
	char path[4096], state[4096];
	int r = mbox_store_file_path(store, norm, path, sizeof(path));
	if (r == 0)
		r = mbox_store_state_path(store, norm, state, sizeof(state));
	if (r < 0)
		return r;
	if (unlink(path) < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	r = storage_fsync_parent(path);
	int rr = storage_remove_tree(state);
	if (rr < 0 && rr != -ENOENT)
		log_warn("storage: deleted folder's state not fully removed path=%s err=%s",
			 log_escape_str(state), strerror(-rr));
	prune_parents(store_root(store), path);
	return r;
}

int mbox_store_rename_one(struct store *store, const char *from, const char *to)
{
	char fpath[4096], tpath[4096], fstate[4096], tstate[4096];
	int r = mbox_store_file_path(store, from, fpath, sizeof(fpath));
	if (r == 0)
		r = mbox_store_file_path(store, to, tpath, sizeof(tpath));
	if (r == 0)
		r = mbox_store_state_path(store, from, fstate, sizeof(fstate));
	if (r == 0)
		r = mbox_store_state_path(store, to, tstate, sizeof(tstate));
	if (r == 0)
		r = make_parents(store_root(store), tpath);
	if (r < 0)
		return r;
	struct stat st;
	if (lstat(tpath, &st) == 0)
		return -EEXIST;
	if (rename(fpath, tpath) < 0)
		return -errno;
	r = storage_fsync_parent(tpath);
	if (r == 0)
		r = storage_fsync_parent(fpath);
	storage_remove_tree(tstate);
	if (rename(fstate, tstate) < 0 && errno != ENOENT)
		log_warn("storage: renamed folder's state not moved path=%s err=%s",
			 log_escape_str(fstate), strerror(errno));
	prune_parents(store_root(store), fpath);
	return r;
}
