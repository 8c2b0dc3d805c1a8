/* quota — one user's usage (messages, sum of RFC822.SIZE) over every folder, and the limits
 * the configuration gives them (storage/README.md "Quota").
 *
 * Usage = the records of every registered (open) mailbox of the store, kept up to date by the
 * core on every record added or removed (mailbox_rec_add / _remove / _drop_from call
 * quota_note), plus the last counts of the folders that are not open (a small table, filled
 * when a mailbox is closed and emptied of a folder when it is opened again). Nothing here
 * reads a message file or knows the back-end: the numbers are the record sizes the core
 * reports as RFC822.SIZE, so Maildir and mbox count alike.
 *
 * Counting: when a store gets a limit (login), every folder that is neither open nor in the
 * table is opened in the background, one after the other, with mailbox_open_async (the scan
 * runs on libuv's thread pool, the loop only builds the array), and closed again: that fills
 * the table. A check or a GETQUOTA that comes before it has finished counts the folders left
 * at once through store_status (the UID list and the directory names, as STATUS does). From
 * then on the counter only moves with changes. Mail that arrives behind the server's back is
 * counted when a mailbox sees it (open, refresh).
 */
#include "mailbox_private.h"

#include "config.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct quota_folder {
	char *name;
	uint64_t bytes;
	uint64_t messages;
};

struct quota_waiter {
	void (*cb)(void *data);
	void *data;
};

static void usage_sub(struct store_quota *q, uint64_t messages, uint64_t bytes)
{
	q->messages = q->messages >= messages ? q->messages - messages : 0;
	q->bytes = q->bytes >= bytes ? q->bytes - bytes : 0;
}

static struct quota_folder *folder_find(struct store_quota *q, const char *name)
{
	for (size_t i = 0; i < q->n_folders; i++)
		if (strcmp(q->folders[i].name, name) == 0)
			return &q->folders[i];
	return NULL;
}

static void folder_drop(struct store_quota *q, struct quota_folder *f)
{
	usage_sub(q, f->messages, f->bytes);
	free(f->name);
	*f = q->folders[--q->n_folders];
}

void quota_folder_forget(struct store *store, const char *name)
{
	struct store_quota *q = store_get_quota(store);
	struct quota_folder *f = folder_find(q, name);
	if (f != NULL)
		folder_drop(q, f);
}

void quota_folder_rename(struct store *store, const char *from, const char *to)
{
	struct store_quota *q = store_get_quota(store);
	quota_folder_forget(store, to); /* a folder removed behind our back had that name */
	struct quota_folder *f = folder_find(q, from);
	if (f == NULL)
		return;
	char *n = strdup(to);
	if (n == NULL) {
		/* counted again from the folder itself when next needed */
		folder_drop(q, f);
		q->known = false;
		return;
	}
	free(f->name);
	f->name = n;
}

void quota_forget_all(struct store *store)
{
	struct store_quota *q = store_get_quota(store);
	while (q->n_folders > 0)
		folder_drop(q, &q->folders[q->n_folders - 1]);
	q->known = false;
}

void quota_mailbox_attach(struct mailbox *mbox)
{
	struct store_quota *q = store_get_quota(mbox->store);
	/* the folder's numbers now come from its records */
	quota_folder_forget(mbox->store, mbox->name);
	uint64_t bytes = 0;
	for (uint32_t i = 0; i < mbox->n_recs; i++)
		bytes += mbox->recs[i].size;
	mbox->quota_bytes = bytes;
	mbox->quota_counted = true;
	q->messages += mbox->n_recs;
	q->bytes += bytes;
}

void quota_mailbox_detach(struct mailbox *mbox)
{
	if (!mbox->quota_counted)
		return;
	mbox->quota_counted = false;
	struct store_quota *q = store_get_quota(mbox->store);
	if (q->n_folders == q->cap_folders) {
		size_t cap = q->cap_folders ? q->cap_folders * 2 : 16;
		struct quota_folder *n = realloc(q->folders, cap * sizeof(*n));
		if (n != NULL) {
			q->folders = n;
			q->cap_folders = cap;
		}
	}
	char *name = q->n_folders < q->cap_folders ? strdup(mbox->name) : NULL;
	if (name == NULL) {
		/* cannot remember it: take it out and count it again when needed */
		usage_sub(q, mbox->n_recs, mbox->quota_bytes);
		q->known = false;
		return;
	}
	q->folders[q->n_folders++] = (struct quota_folder){
		.name = name,
		.bytes = mbox->quota_bytes,
		.messages = mbox->n_recs,
	};
}

void quota_note(struct mailbox *mbox, int64_t messages, int64_t bytes)
{
	if (bytes >= 0)
		mbox->quota_bytes += (uint64_t)bytes;
	else
		mbox->quota_bytes -= mbox->quota_bytes >= (uint64_t)-bytes ? (uint64_t)-bytes
									   : mbox->quota_bytes;
	if (!mbox->quota_counted)
		return;
	struct store_quota *q = store_get_quota(mbox->store);
	if (messages >= 0)
		q->messages += (uint64_t)messages;
	if (bytes >= 0)
		q->bytes += (uint64_t)bytes;
	usage_sub(q, messages < 0 ? (uint64_t)-messages : 0, bytes < 0 ? (uint64_t)-bytes : 0);
}

void quota_free(struct store_quota *q)
{
	for (size_t i = 0; i < q->n_folders; i++)
		free(q->folders[i].name);
	free(q->folders);
	free(q->waiters);
	free(q->user);
	memset(q, 0, sizeof(*q));
}

/* Count every folder that is neither open nor remembered (once per store). */
static void quota_count_all(struct store *store)
{
	struct store_quota *q = store_get_quota(store);
	struct store_folder *folders;
	size_t n;
	int r = store_folder_list(store, &folders, &n);
	if (r < 0) {
		log_warn("storage: quota: cannot list folders root=%s err=%s",
			 log_escape_str(store_root(store)), strerror(-r));
		return; /* known stays false: tried again at the next check */
	}
	size_t counted = 0;
	for (size_t i = 0; i < n; i++) {
		const char *name = folders[i].name;
		if (folders[i].attrs & (STORE_FOLDER_NOSELECT | STORE_FOLDER_NONEXISTENT))
			continue;
		if (store_mailbox_find(store, name) != NULL || folder_find(q, name) != NULL)
			continue;
		struct mailbox_status st;
		/* opening registers it (counted), closing remembers it (quota_mailbox_detach) */
		r = store_status(store, name, &st);
		if (r < 0)
			log_warn("storage: quota: folder not counted root=%s folder=%s err=%s",
				 log_escape_str(store_root(store)), log_escape_str(name),
				 strerror(-r));
		else
			counted++;
	}
	store_folder_list_free(&folders, n);
	q->known = true;
	log_debug("storage: quota counted root=%s folders=%zu messages=%llu bytes=%llu",
		  log_escape_str(store_root(store)), counted, (unsigned long long)q->messages,
		  (unsigned long long)q->bytes);
}

static bool quota_limited(const struct store_quota *q)
{
	return q->limit_bytes != 0 || q->limit_messages != 0;
}

/* The background count: the folders listed at its start, opened one at a time. */
struct quota_count {
	struct store *store; /* referenced until the count ends */
	struct store_folder *folders;
	size_t n, next;
	bool failed;
};

static void count_next(struct quota_count *c);

static void count_open_cb(int err, struct mailbox *mbox, void *data)
{
	struct quota_count *c = data;
	if (err < 0) {
		c->failed = true; /* the next check counts it on the loop */
		log_debug("storage: quota: background count skipped a folder err=%s",
			  strerror(-err));
	}
	mailbox_unref(&mbox); /* closing remembers its counts */
	count_next(c);
}

static void count_next(struct quota_count *c)
{
	struct store_quota *q = store_get_quota(c->store);
	while (c->next < c->n) {
		const struct store_folder *f = &c->folders[c->next++];
		if ((f->attrs & (STORE_FOLDER_NOSELECT | STORE_FOLDER_NONEXISTENT)) ||
		    store_mailbox_find(c->store, f->name) != NULL ||
		    folder_find(q, f->name) != NULL)
			continue;
		int r = mailbox_open_async(c->store, f->name, count_open_cb, c);
		if (r == 0)
			return; /* count_open_cb goes on */
		c->failed = true;
	}
	if (!c->failed && !q->known) {
		q->known = true;
		log_debug("storage: quota counted root=%s messages=%llu bytes=%llu",
			  log_escape_str(store_root(c->store)), (unsigned long long)q->messages,
			  (unsigned long long)q->bytes);
	}
	q->counting = false;
	store_folder_list_free(&c->folders, c->n);
	/* the commands that waited for the count go on (each may add a waiter again) */
	struct quota_waiter *w = q->waiters;
	size_t nw = q->n_waiters;
	q->waiters = NULL;
	q->n_waiters = q->cap_waiters = 0;
	for (size_t i = 0; i < nw; i++)
		w[i].cb(w[i].data);
	free(w);
	store_unref(&c->store);
	free(c);
}

int store_quota_wait(struct store *store, void (*cb)(void *data), void *data)
{
	struct store_quota *q = store_get_quota(store);
	if (!quota_limited(q) || q->known || !q->counting)
		return 0;
	if (q->n_waiters == q->cap_waiters) {
		size_t cap = q->cap_waiters ? q->cap_waiters * 2 : 4;
		struct quota_waiter *n = realloc(q->waiters, cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		q->waiters = n;
		q->cap_waiters = cap;
	}
	q->waiters[q->n_waiters++] = (struct quota_waiter){cb, data};
	return 1;
}

void store_quota_wait_cancel(struct store *store, void (*cb)(void *data), void *data)
{
	struct store_quota *q = store_get_quota(store);
	for (size_t i = 0; i < q->n_waiters; i++)
		if (q->waiters[i].cb == cb && q->waiters[i].data == data) {
			q->waiters[i] = q->waiters[--q->n_waiters];
			return;
		}
}

/* Start counting in the background (store_quota_configure, when a limit appears). */
static void quota_count_start(struct store *store)
{
	struct store_quota *q = store_get_quota(store);
	struct quota_count *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return; /* counted at the first check instead */
	if (store_folder_list(store, &c->folders, &c->n) < 0) {
		free(c);
		return;
	}
	c->store = store_ref(store);
	q->counting = true;
	count_next(c);
}

int store_quota_get(struct store *store, struct store_quota_usage *usage_r)
{
	struct store_quota *q = store_get_quota(store);
	memset(usage_r, 0, sizeof(*usage_r));
	usage_r->bytes_limit = q->limit_bytes;
	usage_r->messages_limit = q->limit_messages;
	if (!quota_limited(q))
		return 0;
	if (!q->known)
		quota_count_all(store);
	usage_r->bytes = q->bytes;
	usage_r->messages = q->messages;
	return 0;
}

int store_quota_check(struct store *store, uint64_t messages, uint64_t bytes)
{
	struct store_quota *q = store_get_quota(store);
	if (!quota_limited(q))
		return 0;
	if (!q->known)
		quota_count_all(store);
	bool over_msgs = q->limit_messages != 0 && (messages > q->limit_messages ||
						    q->messages > q->limit_messages - messages);
	bool over_bytes = q->limit_bytes != 0 &&
			  (bytes > q->limit_bytes || q->bytes > q->limit_bytes - bytes);
	if (!over_msgs && !over_bytes)
		return 0;
	log_info("storage: over quota user=%s resource=%s messages=%llu+%llu/%llu "
		 "bytes=%llu+%llu/%llu",
		 log_escape_str(q->user ? q->user : store_root(store)),
		 over_bytes ? "STORAGE" : "MESSAGE", (unsigned long long)q->messages,
		 (unsigned long long)messages, (unsigned long long)q->limit_messages,
		 (unsigned long long)q->bytes, (unsigned long long)bytes,
		 (unsigned long long)q->limit_bytes);
	return -EDQUOT;
}

int store_quota_set_user(struct store *store, const char *user)
{
	struct store_quota *q = store_get_quota(store);
	if (q->user != NULL)
		return 0;
	q->user = strdup(user);
	return q->user != NULL ? 0 : -ENOMEM;
}

void store_quota_configure(struct store *store, const struct config *cfg)
{
	struct store_quota *q = store_get_quota(store);
	if (cfg->generation < q->generation)
		return; /* an older config (a connection accepted before a reload) */
	uint64_t bytes;
	unsigned messages;
	config_user_quota(cfg, q->user, &bytes, &messages);
	if (q->generation != 0 && (bytes != q->limit_bytes || messages != q->limit_messages))
		log_info("storage: quota changed user=%s storage=%llu messages=%u",
			 log_escape_str(q->user ? q->user : store_root(store)),
			 (unsigned long long)bytes, messages);
	q->generation = cfg->generation;
	q->limit_bytes = bytes;
	q->limit_messages = messages;
	if (quota_limited(q) && !q->known && !q->counting)
		quota_count_start(store);
}

bool store_quota_counted(const struct store *store)
{
	return store_get_quota((struct store *)store)->known;
}
