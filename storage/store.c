/* store — one user's Maildir++ tree: folders, special-use attributes, subscriptions, and the
 * registry of open mailboxes (one mailbox object per folder per process).
 *
 * Layout (storage/README.md): INBOX is the root (cur/ new/ tmp/); folder "a.b" is the
 * directory ".a.b" (the client's modified UTF-7 name as is); each folder directory holds
 * an empty `maildirfolder` file (Maildir++), and `mailkeep-special-use` when it has a
 * special-use attribute (so the attribute follows the folder through renames), and
 * `mailkeep-mailboxid` (its RFC 8474 MAILBOXID, written when it is created or first asked
 * for, so it follows renames too and a folder made again after a DELETE gets a new one). The
 * root holds
 * `subscriptions` (one name a line) and `mailkeep-defaults` (the default folders were made).
 */
#include "mailbox_private.h"
#include "mbox_private.h"
#include "storage_util.h"

#include "config.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define SUBSCRIPTIONS_FILE "subscriptions"
#define DEFAULTS_MARKER    "mailkeep-defaults"
#define SPECIAL_USE_FILE   "mailkeep-special-use"
#define MAILBOXID_FILE     "mailkeep-mailboxid"
#define MAX_FOLDERS        10000

struct store {
	unsigned refs;
	uv_loop_t *loop;
	const struct mailbox_backend_ops *ops;
	char *root;
	char *state; /* where subscriptions live: root (Maildir), root/.mailkeep (mbox) */
	bool is_mbox;
	struct mbox_opts mbox; /* mbox settings (is_mbox only) */
	struct mailbox *open;  /* open mailboxes */
	struct store_quota quota;
	struct store *next;
};

/* Every open store of the process (loop thread only). */
static struct store *open_stores;
static _Atomic unsigned tmp_counter; /* store_prepare_async creates trees on the pool too */

static const struct {
	const char *name;
	enum store_special_use use;
	const char *attr;
} defaults[] = {
	{"Sent", STORE_SPECIAL_SENT, "\\Sent"},
	{"Drafts", STORE_SPECIAL_DRAFTS, "\\Drafts"},
	{"Trash", STORE_SPECIAL_TRASH, "\\Trash"},
	{"Junk", STORE_SPECIAL_JUNK, "\\Junk"},
	{"Archive", STORE_SPECIAL_ARCHIVE, "\\Archive"},
};

const char *store_special_use_name(enum store_special_use use)
{
	for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
		if (defaults[i].use == use)
			return defaults[i].attr;
	return NULL;
}

/* ---- names ------------------------------------------------------------------------------- */

static bool mutf7_valid(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c > 0x7e)
			return false;
		if (c != '&')
			continue;
		size_t j = i + 1, n = 0;
		while (j < len && s[j] != '-') {
			char b = s[j];
			if (!((b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') ||
			      (b >= '0' && b <= '9') || b == '+' || b == ','))
				return false;
			j++;
			n++;
		}
		if (j == len)
			return false; /* unterminated shift */
		/* whole UTF-16 units: 6n bits leave fewer than 6 spare bits, and not "&AA-"
		 * style empty units */
		if (n > 0 && ((n * 6) % 16 >= 6 || n * 6 < 16))
			return false;
		i = j;
	}
	return true;
}

int store_name_normalize(const char *name, char *out, size_t out_size)
{
	size_t len = strlen(name);
	if (len > 0 && name[len - 1] == STORE_SEPARATOR)
		len--; /* "foo." = create "foo" (RFC 3501 CREATE) */
	if (len == 0 || len > STORE_NAME_MAX - 1 || len + 1 > out_size)
		return -EINVAL;
	if (!mutf7_valid(name, len))
		return -EINVAL;
	size_t level = 0;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (c == '/' || c == '*' || c == '%' || c == '\\')
			return -EINVAL;
		if (c == STORE_SEPARATOR) {
			if (level == 0)
				return -EINVAL; /* empty level */
			level = 0;
			continue;
		}
		level++;
	}
	if (level == 0)
		return -EINVAL;
	memcpy(out, name, len);
	out[len] = '\0';
	if (strncasecmp(out, "INBOX", 5) == 0 && (out[5] == '\0' || out[5] == STORE_SEPARATOR))
		memcpy(out, "INBOX", 5);
	return 0;
}

static bool is_inbox(const char *norm)
{
	return strcmp(norm, "INBOX") == 0;
}

int store_folder_path(const struct store *store, const char *name, char *buf, size_t size)
{
	if (store->is_mbox)
		return mbox_store_state_path(store, name, buf, size);
	if (is_inbox(name))
		return storage_path(buf, size, "%s", store->root);
	return storage_path(buf, size, "%s/.%s", store->root, name);
}

static bool dir_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Folder NORM exists (Maildir: its directory; mbox: its file). */
static bool folder_exists(const struct store *store, const char *norm)
{
	if (store->is_mbox)
		return mbox_store_exists(store, norm);
	char path[4096];
	return store_folder_path(store, norm, path, sizeof(path)) == 0 && dir_exists(path);
}

const struct mbox_opts *store_mbox_opts(const struct store *store)
{
	return store->is_mbox ? &store->mbox : NULL;
}

/* ---- registry ---------------------------------------------------------------------------- */

void store_mailbox_register(struct store *store, struct mailbox *mbox)
{
	mbox->next = store->open;
	store->open = mbox;
	char file[4096];
	char *data;
	size_t len;
	mbox->special_use = 0;
	if (storage_path(file, sizeof(file), "%s/%s", mbox->path, SPECIAL_USE_FILE) == 0 &&
	    storage_read_file(file, 256, &data, &len) == 0) {
		for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
			if (strstr(data, defaults[i].attr) != NULL)
				mbox->special_use |= defaults[i].use;
		free(data);
	}
	quota_mailbox_attach(mbox);
}

void store_mailbox_unregister(struct store *store, struct mailbox *mbox)
{
	for (struct mailbox **p = &store->open; *p != NULL; p = &(*p)->next) {
		if (*p == mbox) {
			*p = mbox->next;
			mbox->next = NULL;
			quota_mailbox_detach(mbox);
			return;
		}
	}
}

struct store_quota *store_get_quota(struct store *store)
{
	return &store->quota;
}

void store_config_apply(const struct config *cfg)
{
	for (struct store *s = open_stores; s != NULL; s = s->next)
		store_quota_configure(s, cfg);
}

struct mailbox *store_mailbox_find(struct store *store, const char *name)
{
	for (struct mailbox *m = store->open; m != NULL; m = m->next)
		if (strcmp(m->name, name) == 0)
			return m;
	return NULL;
}

uv_loop_t *store_loop(const struct store *store)
{
	return store->loop;
}

const struct mailbox_backend_ops *store_backend(const struct store *store)
{
	return store->ops;
}

const char *store_root(const struct store *store)
{
	return store->root;
}

/* ---- folder creation ---------------------------------------------------------------------- */

static int special_use_text(unsigned use, char *buf, size_t size)
{
	size_t n = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
		if (!(use & defaults[i].use))
			continue;
		int w = snprintf(buf + n, size - n, "%s\n", defaults[i].attr);
		if (w < 0 || (size_t)w >= size - n)
			return -ENAMETOOLONG;
		n += (size_t)w;
	}
	return (int)n;
}

static int make_maildir(const char *dir, bool folder)
{
	char sub[4096];
	int r = storage_mkdir(dir, 0700);
	const char *subs[] = {"cur", "new", "tmp"};
	for (size_t i = 0; r == 0 && i < 3; i++) {
		r = storage_path(sub, sizeof(sub), "%s/%s", dir, subs[i]);
		if (r == 0)
			r = storage_mkdir(sub, 0700);
		if (r == 0)
			r = storage_fsync_dir(sub);
	}
	if (r == 0 && folder) {
		r = storage_path(sub, sizeof(sub), "%s/maildirfolder", dir);
		if (r == 0) {
			int fd = open(sub, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
			if (fd < 0)
				r = -errno;
			else
				close(fd);
		}
	}
	if (r == 0)
		r = storage_fsync_dir(dir);
	return r;
}

/* ---- MAILBOXID (RFC 8474) ------------------------------------------------------------------ */

/* A new MAILBOXID: "F" and 32 hex digits of 128 random bits (as Dovecot's mailbox GUIDs). */
static int mailboxid_new(char *buf, size_t size)
{
	uint8_t rnd[16];
	size_t got = 0;
	while (got < sizeof(rnd)) {
		ssize_t n = getrandom(rnd + got, sizeof(rnd) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		got += (size_t)n;
	}
	if (size < STORE_MAILBOXID_MAX + 1)
		return -ENAMETOOLONG;
	buf[0] = 'F';
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(buf + 1 + 2 * i, 3, "%02x", rnd[i]);
	return 0;
}

static int mailboxid_write(const char *dir, const char *id)
{
	char file[4096], text[STORE_MAILBOXID_MAX + 2];
	int r = storage_path(file, sizeof(file), "%s/%s", dir, MAILBOXID_FILE);
	if (r < 0)
		return r;
	int n = snprintf(text, sizeof(text), "%s\n", id);
	return storage_write_file_atomic(file, text, (size_t)n);
}

/* An objectid (RFC 8474): 1..STORE_MAILBOXID_MAX of ALPHA / DIGIT / "_" / "-". */
static bool mailboxid_valid(const char *s, size_t len)
{
	if (len == 0 || len > STORE_MAILBOXID_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

int store_folder_mailboxid(struct store *store, const char *name, char *buf, size_t size)
{
	char norm[STORE_NAME_MAX + 1], path[4096], file[4096];
	int r = store_name_normalize(name, norm, sizeof(norm));
	if (r == 0)
		r = store_folder_path(store, norm, path, sizeof(path));
	if (r == 0)
		r = storage_path(file, sizeof(file), "%s/%s", path, MAILBOXID_FILE);
	if (r < 0)
		return r;
	if (size < STORE_MAILBOXID_MAX + 1)
		return -ENAMETOOLONG;
	if (!dir_exists(path))
		return -ENOENT;
	char *data;
	size_t len;
	r = storage_read_file(file, 256, &data, &len);
	if (r == 0) {
		while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
			len--;
		bool ok = mailboxid_valid(data, len);
		if (ok) {
			memcpy(buf, data, len);
			buf[len] = '\0';
		}
		free(data);
		if (ok)
			return 0;
		log_warn("storage: bad MAILBOXID file replaced path=%s", log_escape_str(file));
	} else if (r != -ENOENT) {
		return r;
	}
	/* A folder made before MAILBOXIDs (or by another program): its id starts now. */
	r = mailboxid_new(buf, size);
	if (r == 0)
		r = mailboxid_write(path, buf);
	return r;
}

/* Create one folder level atomically: build it under a temporary name, then rename. */
static int create_one(struct store *store, const char *norm, unsigned special_use)
{
	char tmp[4096], path[4096];
	int r = storage_path(tmp, sizeof(tmp), "%s/mailkeep-creating.%d.%u", store->root,
			     (int)getpid(), ++tmp_counter);
	if (r == 0)
		r = store_folder_path(store, norm, path, sizeof(path));
	if (r < 0)
		return r;
	r = make_maildir(tmp, true);
	char id[STORE_MAILBOXID_MAX + 1];
	if (r == 0)
		r = mailboxid_new(id, sizeof(id));
	if (r == 0)
		r = mailboxid_write(tmp, id);
	if (r == 0 && special_use != 0) {
		char text[128], file[4096];
		int n = special_use_text(special_use, text, sizeof(text));
		r = n < 0 ? n : storage_path(file, sizeof(file), "%s/%s", tmp, SPECIAL_USE_FILE);
		if (r == 0)
			r = storage_write_file_atomic(file, text, (size_t)n);
	}
	if (r == 0 && rename(tmp, path) < 0)
		r = (errno == ENOTEMPTY || errno == EEXIST) ? -EEXIST : -errno;
	if (r < 0) {
		storage_remove_tree(tmp);
		return r;
	}
	quota_folder_forget(store, norm); /* new and empty (an old entry: removed behind us) */
	return storage_fsync_dir(store->root);
}

int store_folder_create(struct store *store, const char *name, unsigned special_use)
{
	char norm[STORE_NAME_MAX + 1], path[4096];
	int r = store_name_normalize(name, norm, sizeof(norm));
	if (r < 0)
		return r;
	if (is_inbox(norm))
		return -EEXIST;
	if (store->is_mbox)
		return mbox_store_create(store, norm, special_use);
	r = store_folder_path(store, norm, path, sizeof(path));
	if (r < 0)
		return r;
	if (dir_exists(path))
		return -EEXIST;
	/* superior levels first (RFC 3501: the server SHOULD create them) */
	for (char *p = strchr(norm, STORE_SEPARATOR); p != NULL;
	     p = strchr(p + 1, STORE_SEPARATOR)) {
		*p = '\0';
		char ppath[4096];
		if (!is_inbox(norm) && store_folder_path(store, norm, ppath, sizeof(ppath)) == 0 &&
		    !dir_exists(ppath)) {
			r = create_one(store, norm, 0);
			if (r < 0 && r != -EEXIST) {
				*p = STORE_SEPARATOR;
				return r;
			}
		}
		*p = STORE_SEPARATOR;
	}
	return create_one(store, norm, special_use);
}

/* ---- store open -------------------------------------------------------------------------- */

/* The tree is made already (every login opens the store): cur/ new/ tmp/ and the defaults
 * marker are there. Then nothing needs creating, nor an fsync. */
static bool store_tree_ready(const struct store *store)
{
	const char *names[] = {"cur", "new", "tmp", DEFAULTS_MARKER};
	char path[4096];
	struct stat st;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (storage_path(path, sizeof(path), "%s/%s", store->root, names[i]) < 0 ||
		    stat(path, &st) < 0 || (i < 3 && !S_ISDIR(st.st_mode)))
			return false;
	return true;
}

static int store_init_tree(struct store *store)
{
	char path[4096];
	int r = 0;
	if (store->is_mbox)
		return mbox_store_init(store);
	if (store_tree_ready(store))
		return 0;
	/* mkdir -p the root */
	strncpy(path, store->root, sizeof(path) - 1);
	path[sizeof(path) - 1] = '\0';
	for (char *p = path + 1; *p && r == 0; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		r = storage_mkdir(path, 0700);
		*p = '/';
	}
	if (r == 0)
		r = make_maildir(store->root, false);
	if (r < 0)
		return r;
	r = storage_path(path, sizeof(path), "%s/%s", store->root, DEFAULTS_MARKER);
	if (r < 0 || access(path, F_OK) == 0)
		return r;
	for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
		r = create_one(store, defaults[i].name, defaults[i].use);
		if (r < 0 && r != -EEXIST)
			return r;
		if (r == 0) {
			r = store_subscribe(store, defaults[i].name, true);
			if (r < 0)
				return r;
		}
	}
	return storage_write_file_atomic(path, "1\n", 2);
}

static int store_open_common(uv_loop_t *loop, const char *root, const struct mbox_opts *mo,
			     struct store **store_r)
{
	size_t len = strlen(root);
	while (len > 1 && root[len - 1] == '/')
		len--;
	if (len == 0 || len > 3800 || root[0] != '/')
		return -EINVAL;
	for (struct store *s = open_stores; s != NULL; s = s->next) {
		if (s->loop == loop && strlen(s->root) == len && memcmp(s->root, root, len) == 0 &&
		    s->is_mbox == (mo != NULL)) {
			*store_r = store_ref(s);
			return 0;
		}
	}
	struct store *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->root = strndup(root, len);
	if (s->root == NULL) {
		free(s);
		return -ENOMEM;
	}
	s->refs = 1;
	s->loop = loop;
	s->ops = mo != NULL ? &mbox_backend_ops : &maildir_backend_ops;
	s->is_mbox = mo != NULL;
	int r = 0;
	if (mo != NULL) {
		s->mbox = *mo;
		s->mbox.inbox = NULL;
		if (mo->inbox != NULL && mo->inbox[0] != '\0' &&
		    (s->mbox.inbox = strdup(mo->inbox)) == NULL)
			r = -ENOMEM;
		if (r == 0 && asprintf(&s->state, "%s%s", s->root, MBOX_STATE_DIR) < 0) {
			s->state = NULL;
			r = -ENOMEM;
		}
	} else if ((s->state = strdup(s->root)) == NULL) {
		r = -ENOMEM;
	}
	if (r == 0)
		r = store_init_tree(s);
	if (r < 0) {
		log_error("storage: cannot create store root=%s err=%s", log_escape_str(s->root),
			  strerror(-r));
		free(s->mbox.inbox);
		free(s->state);
		free(s->root);
		free(s);
		return r;
	}
	s->next = open_stores;
	open_stores = s;
	*store_r = s;
	return 0;
}

int store_open_path(uv_loop_t *loop, const char *root, struct store **store_r)
{
	return store_open_common(loop, root, NULL, store_r);
}

int store_open_mbox(uv_loop_t *loop, const char *root, const char *inbox, unsigned lock_timeout_ms,
		    bool mboxrd, struct store **store_r)
{
	struct mbox_opts mo = {(char *)inbox, lock_timeout_ms, mboxrd};
	if (inbox != NULL && inbox[0] != '\0' && inbox[0] != '/')
		return -EINVAL;
	return store_open_common(loop, root, &mo, store_r);
}

/* Expand %u (USER) and %% in PATTERN. */
static int expand_user(const char *pattern, const char *user, bool add_user, struct sbuf *b)
{
	bool had_u = false;
	int r = 0;
	for (const char *p = pattern; *p && r == 0; p++) {
		if (p[0] == '%' && p[1] == 'u') {
			r = sbuf_add(b, user, strlen(user));
			had_u = true;
			p++;
		} else if (p[0] == '%' && p[1] == '%') {
			r = sbuf_add(b, "%", 1);
			p++;
		} else {
			r = sbuf_add(b, p, 1);
		}
	}
	if (r == 0 && !had_u && add_user)
		r = sbuf_printf(b, "/%s", user);
	if (r == 0)
		r = sbuf_add(b, "", 1); /* NUL */
	return r;
}

static bool user_valid(const char *user)
{
	size_t len = strlen(user);
	if (len == 0 || len > 255 || user[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++)
		if (user[i] == '/' || (unsigned char)user[i] < 0x20 || user[i] == 0x7f)
			return false;
	return true;
}

/* USER's root directory under cfg->mail_root into B. */
static int user_root(const struct config *cfg, const char *user, struct sbuf *b_r)
{
	memset(b_r, 0, sizeof(*b_r));
	if (!user_valid(user) || cfg->mail_root == NULL)
		return -EINVAL;
	struct sbuf b = {0};
	bool had_u = false;
	int r = 0;
	for (const char *p = cfg->mail_root; *p && r == 0; p++) {
		if (p[0] == '%' && p[1] == 'u') {
			r = sbuf_add(&b, user, strlen(user));
			had_u = true;
			p++;
		} else if (p[0] == '%' && p[1] == '%') {
			r = sbuf_add(&b, "%", 1);
			p++;
		} else {
			r = sbuf_add(&b, p, 1);
		}
	}
	if (r == 0 && !had_u)
		r = sbuf_printf(&b, "/%s", user);
	if (r == 0) {
		size_t len = strlen(b.data);
		while (len > 1 && b.data[len - 1] == '/')
			b.data[--len] = '\0';
		b.len = len;
	}
	if (r < 0)
		sbuf_free(&b);
	*b_r = b;
	return r;
}

int store_open(uv_loop_t *loop, const struct config *cfg, const char *user, struct store **store_r)
{
	struct sbuf b, inbox = {0};
	int r = user_root(cfg, user, &b);
	if (r == 0 && cfg->mail_format == MAIL_FORMAT_MBOX) {
		if (cfg->mbox_inbox != NULL && cfg->mbox_inbox[0] != '\0')
			r = expand_user(cfg->mbox_inbox, user, false, &inbox);
		if (r == 0)
			r = store_open_mbox(loop, b.data, inbox.data,
					    cfg->mbox_lock_timeout * 1000u,
					    cfg->mbox_variant == MBOX_VARIANT_MBOXRD, store_r);
	} else if (r == 0) {
		r = store_open_path(loop, b.data, store_r);
	}
	sbuf_free(&b);
	sbuf_free(&inbox);
	if (r == 0 && store_quota_set_user(*store_r, user) < 0) {
		store_unref(store_r);
		r = -ENOMEM;
	}
	if (r == 0)
		store_quota_configure(*store_r, cfg);
	return r;
}

/* ---- first use off the loop -------------------------------------------------------------- */

struct prep_waiter {
	store_prepare_cb *cb;
	void *data;
};

/* One tree being made on the pool; later logins of the same user wait for it. */
struct store_prep {
	uv_work_t work;
	struct store tmp; /* root only: what store_init_tree uses */
	int err;
	struct prep_waiter *waiters;
	size_t n_waiters, cap_waiters;
	struct store_prep *next;
};

static struct store_prep *preps; /* loop thread only */

static int prep_wait(struct store_prep *p, store_prepare_cb *cb, void *data)
{
	if (p->n_waiters == p->cap_waiters) {
		size_t cap = p->cap_waiters ? p->cap_waiters * 2 : 2;
		struct prep_waiter *w = realloc(p->waiters, cap * sizeof(*w));
		if (w == NULL)
			return -ENOMEM;
		p->waiters = w;
		p->cap_waiters = cap;
	}
	p->waiters[p->n_waiters++] = (struct prep_waiter){cb, data};
	return 0;
}

static void prep_work(uv_work_t *w)
{
	struct store_prep *p = w->data;
	p->err = store_init_tree(&p->tmp);
}

static void prep_after(uv_work_t *w, int status)
{
	struct store_prep *p = w->data;
	if (status < 0 && p->err == 0)
		p->err = status;
	for (struct store_prep **pp = &preps; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	if (p->err < 0)
		log_error("storage: cannot create store root=%s err=%s",
			  log_escape_str(p->tmp.root), strerror(-p->err));
	for (size_t i = 0; i < p->n_waiters; i++)
		p->waiters[i].cb(p->err, p->waiters[i].data);
	free(p->waiters);
	free(p->tmp.root);
	free(p);
}

int store_prepare_async(uv_loop_t *loop, const struct config *cfg, const char *user, bool *ready_r,
			store_prepare_cb *cb, void *data)
{
	*ready_r = false;
	struct sbuf b;
	int r = user_root(cfg, user, &b);
	if (r < 0)
		return r;
	if (cfg->mail_format == MAIL_FORMAT_MBOX) {
		/* an mbox tree is a few empty files: store_open makes it */
		sbuf_free(&b);
		*ready_r = true;
		return 0;
	}
	size_t len = strlen(b.data);
	if (len == 0 || len > 3800 || b.data[0] != '/') {
		sbuf_free(&b);
		return -EINVAL;
	}
	for (struct store *st = open_stores; st != NULL; st = st->next)
		if (st->loop == loop && strcmp(st->root, b.data) == 0)
			*ready_r = true;
	struct store probe = {.root = b.data};
	if (!*ready_r && store_tree_ready(&probe))
		*ready_r = true;
	if (*ready_r) {
		sbuf_free(&b);
		return 0;
	}
	for (struct store_prep *p = preps; p != NULL; p = p->next) {
		if (strcmp(p->tmp.root, b.data) == 0) {
			sbuf_free(&b);
			return prep_wait(p, cb, data);
		}
	}
	struct store_prep *p = calloc(1, sizeof(*p));
	if (p == NULL || prep_wait(p, cb, data) < 0) {
		free(p);
		sbuf_free(&b);
		return -ENOMEM;
	}
	p->tmp.root = b.data;       /* taken from b */
	p->tmp.state = p->tmp.root; /* a Maildir keeps its subscriptions in its root */
	p->work.data = p;
	r = uv_queue_work(loop, &p->work, prep_work, prep_after);
	if (r < 0) {
		free(p->waiters);
		free(p->tmp.root);
		free(p);
		return r;
	}
	p->next = preps;
	preps = p;
	return 0;
}

struct store *store_ref(struct store *store)
{
	store->refs++;
	return store;
}

void store_unref(struct store **store_p)
{
	struct store *s = *store_p;
	if (s == NULL)
		return;
	*store_p = NULL;
	if (--s->refs > 0)
		return;
	for (struct store **p = &open_stores; *p != NULL; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			break;
		}
	}
	quota_free(&s->quota);
	free(s->mbox.inbox);
	free(s->state);
	free(s->root);
	free(s);
}

/* ---- listing ----------------------------------------------------------------------------- */

struct name_list {
	char **names;
	size_t n, cap;
};

static int names_add(struct name_list *l, const char *name)
{
	if (l->n >= MAX_FOLDERS)
		return -E2BIG;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		char **n = realloc(l->names, cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		l->names = n;
		l->cap = cap;
	}
	l->names[l->n] = strdup(name);
	if (l->names[l->n] == NULL)
		return -ENOMEM;
	l->n++;
	return 0;
}

static void names_free(struct name_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->names[i]);
	free(l->names);
	memset(l, 0, sizeof(*l));
}

/* Every existing folder below the root (not INBOX). */
static int names_add_cb(void *ctx, const char *name)
{
	return names_add(ctx, name);
}

static int list_dirs(struct store *store, struct name_list *l)
{
	if (store->is_mbox)
		return mbox_store_list(store, names_add_cb, l);
	DIR *d = opendir(store->root);
	if (d == NULL)
		return -errno;
	struct dirent *de;
	int r = 0;
	char norm[STORE_NAME_MAX + 1];
	while ((de = readdir(d)) != NULL && r == 0) {
		if (de->d_name[0] != '.' || de->d_name[1] == '\0' || de->d_name[1] == '.')
			continue;
		if (store_name_normalize(de->d_name + 1, norm, sizeof(norm)) < 0 ||
		    strcmp(norm, de->d_name + 1) != 0)
			continue; /* not a name we could have made (e.g. ".foo." or "./") */
		if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
			continue;
		char path[4096];
		if (storage_path(path, sizeof(path), "%s/%s/cur", store->root, de->d_name) < 0 ||
		    !dir_exists(path))
			continue;
		r = names_add(l, de->d_name + 1);
	}
	closedir(d);
	return r;
}

static int read_subscriptions(struct store *store, struct name_list *l)
{
	char file[4096], *data;
	size_t len;
	int r = storage_path(file, sizeof(file), "%s/%s", store->state, SUBSCRIPTIONS_FILE);
	if (r < 0)
		return r;
	r = storage_read_file(file, 1u << 20, &data, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	char *save = NULL;
	char norm[STORE_NAME_MAX + 1];
	for (char *line = strtok_r(data, "\n", &save); line && r == 0;
	     line = strtok_r(NULL, "\n", &save))
		if (store_name_normalize(line, norm, sizeof(norm)) == 0)
			r = names_add(l, norm);
	free(data);
	return r;
}

static bool names_has(const struct name_list *l, const char *name)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->names[i], name) == 0)
			return true;
	return false;
}

static int cmp_folder(const void *a, const void *b)
{
	const struct store_folder *x = a, *y = b;
	bool xi = strcmp(x->name, "INBOX") == 0, yi = strcmp(y->name, "INBOX") == 0;
	if (xi != yi)
		return xi ? -1 : 1;
	return strcmp(x->name, y->name);
}

static unsigned folder_special_use(struct store *store, const char *name)
{
	char file[4096], *data;
	size_t len;
	unsigned use = 0;
	if (is_inbox(name))
		return 0;
	char dir[4096];
	if (store_folder_path(store, name, dir, sizeof(dir)) < 0 ||
	    storage_path(file, sizeof(file), "%s/%s", dir, SPECIAL_USE_FILE) < 0 ||
	    storage_read_file(file, 256, &data, &len) < 0)
		return 0;
	for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
		if (strstr(data, defaults[i].attr) != NULL)
			use |= defaults[i].use;
	free(data);
	return use;
}

int store_folder_list(struct store *store, struct store_folder **folders_r, size_t *n_r)
{
	struct name_list dirs = {0}, subs = {0}, all = {0};
	int r = names_add(&all, "INBOX");
	if (r == 0)
		r = list_dirs(store, &dirs);
	if (r == 0)
		r = read_subscriptions(store, &subs);
	/* existing folders and the levels they imply */
	for (size_t i = 0; r == 0 && i < dirs.n; i++) {
		char buf[STORE_NAME_MAX + 1];
		strcpy(buf, dirs.names[i]);
		if (!names_has(&all, buf))
			r = names_add(&all, buf);
		for (char *p = strrchr(buf, STORE_SEPARATOR); r == 0 && p != NULL;
		     p = strrchr(buf, STORE_SEPARATOR)) {
			*p = '\0';
			if (!names_has(&all, buf))
				r = names_add(&all, buf);
		}
	}
	size_t n_real = all.n;
	for (size_t i = 0; r == 0 && i < subs.n; i++)
		if (!names_has(&all, subs.names[i]))
			r = names_add(&all, subs.names[i]);
	struct store_folder *out = NULL;
	if (r == 0) {
		out = calloc(all.n ? all.n : 1, sizeof(*out));
		if (out == NULL)
			r = -ENOMEM;
	}
	for (size_t i = 0; r == 0 && i < all.n; i++) {
		const char *name = all.names[i];
		struct store_folder *f = &out[i];
		f->name = all.names[i];
		all.names[i] = NULL;
		if (i >= n_real) {
			f->attrs = STORE_FOLDER_NONEXISTENT | STORE_FOLDER_NOSELECT;
		} else if (!is_inbox(name) && !names_has(&dirs, name)) {
			f->attrs = STORE_FOLDER_NOSELECT;
		}
		if (names_has(&subs, f->name))
			f->attrs |= STORE_FOLDER_SUBSCRIBED;
		size_t len = strlen(f->name);
		for (size_t j = 0; j < n_real; j++) {
			const char *o = j < i ? out[j].name : all.names[j];
			if (o != NULL && strncmp(o, f->name, len) == 0 &&
			    o[len] == STORE_SEPARATOR) {
				f->attrs |= STORE_FOLDER_HASCHILDREN;
				break;
			}
		}
		if (!(f->attrs & STORE_FOLDER_NOSELECT))
			f->special_use = folder_special_use(store, f->name);
	}
	names_free(&dirs);
	names_free(&subs);
	if (r < 0) {
		if (out != NULL)
			store_folder_list_free(&out, all.n);
		names_free(&all);
		return r;
	}
	size_t n = all.n;
	names_free(&all);
	qsort(out, n, sizeof(*out), cmp_folder);
	*folders_r = out;
	*n_r = n;
	return 0;
}

void store_folder_list_free(struct store_folder **folders_p, size_t n)
{
	struct store_folder *f = *folders_p;
	if (f == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(f[i].name);
	free(f);
	*folders_p = NULL;
}

/* ---- subscriptions ----------------------------------------------------------------------- */

int store_subscribe(struct store *store, const char *name, bool subscribe)
{
	char norm[STORE_NAME_MAX + 1], file[4096];
	int r = store_name_normalize(name, norm, sizeof(norm));
	if (r < 0)
		return r;
	struct name_list subs = {0};
	r = read_subscriptions(store, &subs);
	bool has = r == 0 && names_has(&subs, norm);
	if (r == 0 && has != subscribe) {
		struct sbuf b = {0};
		for (size_t i = 0; r == 0 && i < subs.n; i++)
			if (strcmp(subs.names[i], norm) != 0)
				r = sbuf_printf(&b, "%s\n", subs.names[i]);
		if (r == 0 && subscribe)
			r = sbuf_printf(&b, "%s\n", norm);
		if (r == 0)
			r = storage_path(file, sizeof(file), "%s/%s", store->state,
					 SUBSCRIPTIONS_FILE);
		if (r == 0)
			r = storage_write_file_atomic(file, b.data ? b.data : "", b.len);
		sbuf_free(&b);
	}
	names_free(&subs);
	return r;
}

/* ---- delete / rename --------------------------------------------------------------------- */

/* Names of existing folders below NORM (children at any depth). */
static int list_children(struct store *store, const char *norm, struct name_list *out)
{
	struct name_list dirs = {0};
	int r = list_dirs(store, &dirs);
	size_t len = strlen(norm);
	for (size_t i = 0; r == 0 && i < dirs.n; i++)
		if (strncmp(dirs.names[i], norm, len) == 0 && dirs.names[i][len] == STORE_SEPARATOR)
			r = names_add(out, dirs.names[i]);
	names_free(&dirs);
	return r;
}

int store_folder_delete(struct store *store, const char *name)
{
	char norm[STORE_NAME_MAX + 1], path[4096], trash[4096];
	int r = store_name_normalize(name, norm, sizeof(norm));
	if (r < 0)
		return r;
	if (is_inbox(norm))
		return -EPERM;
	if (!folder_exists(store, norm))
		return -ENOENT;
	struct name_list kids = {0};
	r = list_children(store, norm, &kids);
	size_t n_kids = kids.n;
	names_free(&kids);
	if (r < 0)
		return r;
	if (n_kids > 0)
		return -ENOTEMPTY;
	if (store->is_mbox) {
		r = mbox_store_delete(store, norm);
		if (r < 0)
			return r;
		struct mailbox *mbox = store_mailbox_find(store, norm);
		if (mbox != NULL) {
			while (mbox->n_recs > 0)
				mailbox_rec_remove(mbox, mbox->recs[mbox->n_recs - 1].uid);
			mbox->gone = true;
			store_mailbox_unregister(store, mbox);
		}
		quota_folder_forget(store, norm);
		return 0;
	}
	r = store_folder_path(store, norm, path, sizeof(path));
	if (r < 0)
		return r;
	r = storage_path(trash, sizeof(trash), "%s/mailkeep-deleting.%d.%u", store->root,
			 (int)getpid(), ++tmp_counter);
	if (r < 0)
		return r;
	if (rename(path, trash) < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	r = storage_fsync_dir(store->root);
	struct mailbox *mbox = store_mailbox_find(store, norm);
	if (mbox != NULL) {
		/* tell every view each message is gone, then refuse further work */
		while (mbox->n_recs > 0)
			mailbox_rec_remove(mbox, mbox->recs[mbox->n_recs - 1].uid);
		mbox->gone = true;
		store_mailbox_unregister(store, mbox);
	}
	quota_folder_forget(store, norm);
	int rr = storage_remove_tree(trash);
	if (rr < 0)
		log_warn("storage: deleted folder not fully removed path=%s err=%s",
			 log_escape_str(trash), strerror(-rr));
	return r;
}

static int rename_inbox(struct store *store, const char *new_norm)
{
	int r = store_folder_create(store, new_norm, 0);
	if (r < 0)
		return r;
	char dst[4096];
	r = store_folder_path(store, new_norm, dst, sizeof(dst));
	const char *subs[] = {"new", "cur"};
	for (size_t s = 0; r == 0 && s < 2; s++) {
		char dir[4096];
		r = storage_path(dir, sizeof(dir), "%s/%s", store->root, subs[s]);
		if (r < 0)
			break;
		DIR *d = opendir(dir);
		if (d == NULL) {
			r = -errno;
			break;
		}
		struct dirent *de;
		while ((de = readdir(d)) != NULL && r == 0) {
			if (de->d_name[0] == '.')
				continue;
			char from[4096], to[4096];
			r = storage_path(from, sizeof(from), "%s/%s", dir, de->d_name);
			if (r == 0)
				r = storage_path(to, sizeof(to), "%s/%s/%s", dst, subs[s],
						 de->d_name);
			if (r == 0 && rename(from, to) < 0 && errno != ENOENT)
				r = -errno;
		}
		closedir(d);
		if (r == 0) {
			char ddir[4096];
			r = storage_path(ddir, sizeof(ddir), "%s/%s", dst, subs[s]);
			if (r == 0)
				r = storage_fsync_dir(ddir);
			if (r == 0)
				r = storage_fsync_dir(dir);
		}
	}
	struct mailbox *inbox = store_mailbox_find(store, "INBOX");
	if (inbox != NULL && inbox->ops->refresh != NULL)
		inbox->ops->refresh(inbox, true);
	/* INBOX's messages moved into a folder that is not open: count every folder again */
	quota_forget_all(store);
	return r;
}

/* mbox: RENAME INBOX moves its messages into a new folder (RFC 3501 6.3.5); INBOX stays,
 * empty, and its file is rewritten as for an expunge. */
static int rename_inbox_mbox(struct store *store, const char *new_norm)
{
	int r = store_folder_create(store, new_norm, 0);
	if (r < 0)
		return r;
	struct mailbox *in = NULL, *dst = NULL;
	r = mailbox_open(store, "INBOX", &in);
	if (r == 0)
		r = mailbox_open(store, new_norm, &dst);
	uint32_t *uids = NULL, *new_uids = NULL;
	size_t n = r == 0 ? in->n_recs : 0;
	if (r == 0) {
		uids = malloc((n ? n : 1) * sizeof(*uids));
		new_uids = malloc((n ? n : 1) * sizeof(*new_uids));
		if (uids == NULL || new_uids == NULL)
			r = -ENOMEM;
	}
	for (size_t i = 0; r == 0 && i < n; i++)
		uids[i] = in->recs[i].uid;
	if (r == 0 && n > 0)
		r = mailbox_move(in, uids, n, dst, new_uids);
	free(uids);
	free(new_uids);
	mailbox_unref(&dst);
	mailbox_unref(&in);
	return r;
}

int store_folder_rename(struct store *store, const char *old_name, const char *new_name)
{
	char from[STORE_NAME_MAX + 1], to[STORE_NAME_MAX + 1];
	int r = store_name_normalize(old_name, from, sizeof(from));
	if (r == 0)
		r = store_name_normalize(new_name, to, sizeof(to));
	if (r < 0)
		return r;
	if (is_inbox(to))
		return -EEXIST;
	size_t flen = strlen(from), tlen = strlen(to);
	if (strcmp(from, to) == 0)
		return -EEXIST;
	if (tlen > flen && strncmp(to, from, flen) == 0 && to[flen] == STORE_SEPARATOR)
		return -EINVAL; /* into itself */
	if (folder_exists(store, to))
		return -EEXIST;
	if (is_inbox(from))
		return store->is_mbox ? rename_inbox_mbox(store, to) : rename_inbox(store, to);
	if (!folder_exists(store, from))
		return -ENOENT;
	struct name_list moves = {0};
	r = names_add(&moves, from);
	if (r == 0)
		r = list_children(store, from, &moves);
	/* every target must be free, and fit */
	for (size_t i = 0; r == 0 && i < moves.n; i++) {
		char target[STORE_NAME_MAX + 2], tpath[4096];
		if (tlen + strlen(moves.names[i]) - flen > STORE_NAME_MAX - 1) {
			r = -ENAMETOOLONG;
			break;
		}
		snprintf(target, sizeof(target), "%s%s", to, moves.names[i] + flen);
		(void)tpath;
		if (folder_exists(store, target))
			r = -EEXIST;
	}
	/* superior levels of the new name */
	if (r == 0 && strchr(to, STORE_SEPARATOR) != NULL) {
		char parent[STORE_NAME_MAX + 1];
		strcpy(parent, to);
		*strrchr(parent, STORE_SEPARATOR) = '\0';
		if (!is_inbox(parent) && !store->is_mbox && !folder_exists(store, parent)) {
			r = store_folder_create(store, parent, 0);
			if (r == -EEXIST)
				r = 0;
		}
	}
	for (size_t i = 0; r == 0 && i < moves.n; i++) {
		char target[STORE_NAME_MAX + 2], fpath[4096], tpath[4096];
		snprintf(target, sizeof(target), "%s%s", to, moves.names[i] + flen);
		r = store_folder_path(store, moves.names[i], fpath, sizeof(fpath));
		if (r == 0)
			r = store_folder_path(store, target, tpath, sizeof(tpath));
		if (r == 0 && store->is_mbox)
			r = mbox_store_rename_one(store, moves.names[i], target);
		else if (r == 0 && rename(fpath, tpath) < 0)
			r = -errno;
		if (r < 0)
			break;
		quota_folder_rename(store, moves.names[i], target);
		struct mailbox *mbox = store_mailbox_find(store, moves.names[i]);
		if (mbox != NULL) {
			char *nn = strdup(target), *np = strdup(tpath);
			if (nn == NULL || np == NULL) {
				free(nn);
				free(np);
				r = -ENOMEM;
				break;
			}
			free(mbox->name);
			free(mbox->path);
			mbox->name = nn;
			mbox->path = np;
			if (store->is_mbox)
				mbox_backend_renamed(mbox);
		}
	}
	if (r == 0 && !store->is_mbox)
		r = storage_fsync_dir(store->root);
	names_free(&moves);
	return r;
}

/* ---- status ------------------------------------------------------------------------------ */

int store_status(struct store *store, const char *name, struct mailbox_status *status_r)
{
	struct mailbox *mbox;
	int r = mailbox_open(store, name, &mbox);
	if (r < 0)
		return r;
	mailbox_get_status(mbox, status_r);
	mailbox_unref(&mbox);
	return 0;
}
