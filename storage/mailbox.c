/* mailbox — the in-memory mailbox object shared by every session (DESIGN.md "The store").
 *
 * Records are kept in UID order in one array; back-end keys (Maildir file names) live in one
 * string pool, so a message costs one 56-byte record plus its name, and no malloc of its own.
 * A hash index maps a key's stable part (the Maildir base name) to its UID.
 */
#include "mailbox_private.h"
#include "storage_util.h"

#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- string pool ---------------------------------------------------------------------- */

static int pool_add(struct mailbox *mbox, const char *s, size_t len, uint32_t *off_r)
{
	if (mbox->pool_len + len + 1 > mbox->pool_cap) {
		size_t cap = mbox->pool_cap ? mbox->pool_cap * 2 : 4096;
		while (cap < mbox->pool_len + len + 1)
			cap *= 2;
		if (cap > UINT32_MAX)
			return -EFBIG;
		char *n = realloc(mbox->pool, cap);
		if (n == NULL)
			return -ENOMEM;
		mbox->pool = n;
		mbox->pool_cap = cap;
	}
	*off_r = (uint32_t)mbox->pool_len;
	memcpy(mbox->pool + mbox->pool_len, s, len);
	mbox->pool[mbox->pool_len + len] = '\0';
	mbox->pool_len += len + 1;
	return 0;
}

/* Rewrite the pool without garbage once more than half of it is garbage. */
static void pool_compact(struct mailbox *mbox)
{
	if (mbox->pool_garbage < 65536 || mbox->pool_garbage < mbox->pool_len / 2)
		return;
	size_t need = mbox->pool_len - mbox->pool_garbage + 1;
	char *n = malloc(need);
	if (n == NULL)
		return; /* keep the old pool: still valid */
	size_t len = 0;
	for (uint32_t i = 0; i < mbox->n_recs; i++) {
		struct mail_rec *r = &mbox->recs[i];
		memcpy(n + len, mbox->pool + r->key_off, (size_t)r->key_len + 1);
		r->key_off = (uint32_t)len;
		len += (size_t)r->key_len + 1;
	}
	free(mbox->pool);
	mbox->pool = n;
	mbox->pool_len = len;
	mbox->pool_cap = need;
	mbox->pool_garbage = 0;
}

const char *mailbox_rec_key(const struct mailbox *mbox, const struct mail_rec *rec)
{
	return mbox->pool + rec->key_off;
}

/* ---- base name index -------------------------------------------------------------------- */

static uint32_t index_slot(const struct mailbox *mbox, const char *base, size_t len)
{
	return storage_hash32(base, len) & (mbox->index_cap - 1);
}

static int index_insert(struct mailbox *mbox, const struct mail_rec *rec);

static int index_rebuild(struct mailbox *mbox, uint32_t cap)
{
	uint32_t *n = calloc(cap, sizeof(*n));
	if (n == NULL)
		return -ENOMEM;
	free(mbox->index);
	mbox->index = n;
	mbox->index_cap = cap;
	for (uint32_t i = 0; i < mbox->n_recs; i++)
		index_insert(mbox, &mbox->recs[i]);
	return 0;
}

static int index_insert(struct mailbox *mbox, const struct mail_rec *rec)
{
	if (mbox->index_cap == 0 || (uint64_t)(mbox->n_recs + 1) * 2 > mbox->index_cap) {
		uint32_t cap = mbox->index_cap ? mbox->index_cap : 64;
		while ((uint64_t)(mbox->n_recs + 1) * 2 > cap)
			cap *= 2;
		if (cap != mbox->index_cap)
			return index_rebuild(mbox, cap); /* inserts every record, REC included */
	}
	uint32_t s = index_slot(mbox, mailbox_rec_key(mbox, rec), rec->base_len);
	while (mbox->index[s] != 0) {
		if (mbox->index[s] == rec->uid)
			return 0;
		s = (s + 1) & (mbox->index_cap - 1);
	}
	mbox->index[s] = rec->uid;
	return 0;
}

static void index_remove(struct mailbox *mbox, const struct mail_rec *rec)
{
	if (mbox->index_cap == 0)
		return;
	uint32_t mask = mbox->index_cap - 1;
	uint32_t s = index_slot(mbox, mailbox_rec_key(mbox, rec), rec->base_len);
	while (mbox->index[s] != 0 && mbox->index[s] != rec->uid)
		s = (s + 1) & mask;
	if (mbox->index[s] == 0)
		return;
	/* backward-shift deletion keeps every probe chain intact */
	uint32_t hole = s;
	mbox->index[hole] = 0;
	for (uint32_t j = (hole + 1) & mask; mbox->index[j] != 0; j = (j + 1) & mask) {
		struct mail_rec *r = mailbox_rec_find(mbox, mbox->index[j]);
		uint32_t home = r ? index_slot(mbox, mailbox_rec_key(mbox, r), r->base_len) : j;
		/* move j into the hole if its home is not in (hole, j] cyclically */
		bool between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
		if (!between) {
			mbox->index[hole] = mbox->index[j];
			mbox->index[j] = 0;
			hole = j;
		}
	}
}

uint32_t mailbox_rec_lower_bound(const struct mailbox *mbox, uint32_t uid)
{
	uint32_t lo = 0, hi = mbox->n_recs;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (mbox->recs[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct mail_rec *mailbox_rec_find(struct mailbox *mbox, uint32_t uid)
{
	uint32_t i = mailbox_rec_lower_bound(mbox, uid);
	if (i < mbox->n_recs && mbox->recs[i].uid == uid)
		return &mbox->recs[i];
	return NULL;
}

struct mail_rec *mailbox_rec_find_base(struct mailbox *mbox, const char *base, size_t len)
{
	if (mbox->index_cap == 0)
		return NULL;
	uint32_t s = index_slot(mbox, base, len);
	while (mbox->index[s] != 0) {
		struct mail_rec *r = mailbox_rec_find(mbox, mbox->index[s]);
		if (r != NULL && r->base_len == len &&
		    memcmp(mailbox_rec_key(mbox, r), base, len) == 0)
			return r;
		s = (s + 1) & (mbox->index_cap - 1);
	}
	return NULL;
}

int mailbox_rec_set_key(struct mailbox *mbox, struct mail_rec *rec, const char *key, size_t key_len,
			size_t base_len)
{
	if (key_len > UINT16_MAX || base_len > key_len)
		return -ENAMETOOLONG;
	if (key_len == rec->key_len && memcmp(mailbox_rec_key(mbox, rec), key, key_len) == 0)
		return 0;
	/* the base name (index key) never changes for a record */
	uint32_t off;
	if (key_len <= rec->key_len) {
		off = rec->key_off; /* reuse in place */
		memcpy(mbox->pool + off, key, key_len);
		mbox->pool[off + key_len] = '\0';
		mbox->pool_garbage += rec->key_len - key_len;
	} else {
		int r = pool_add(mbox, key, key_len, &off);
		if (r < 0)
			return r;
		mbox->pool_garbage += (size_t)rec->key_len + 1;
	}
	rec->key_off = off;
	rec->key_len = (uint16_t)key_len;
	rec->base_len = (uint16_t)base_len;
	pool_compact(mbox);
	return 0;
}

int mailbox_rec_add(struct mailbox *mbox, const struct mail_rec *rec, const char *key)
{
	if (mbox->n_recs > 0 && mbox->recs[mbox->n_recs - 1].uid >= rec->uid)
		return -EINVAL;
	if (rec->key_len == 0)
		return -EINVAL;
	if (mbox->n_recs == mbox->cap_recs) {
		uint32_t cap = mbox->cap_recs ? mbox->cap_recs * 2 : 64;
		struct mail_rec *n = realloc(mbox->recs, (size_t)cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		mbox->recs = n;
		mbox->cap_recs = cap;
	}
	struct mail_rec *r = &mbox->recs[mbox->n_recs];
	*r = *rec;
	int e = pool_add(mbox, key, rec->key_len, &r->key_off);
	if (e < 0)
		return e;
	mbox->n_recs++;
	e = index_insert(mbox, r);
	if (e < 0) {
		mbox->n_recs--;
		return e;
	}
	if (rec->uid >= mbox->uidnext)
		mbox->uidnext = rec->uid + 1;
	if (rec->modseq > mbox->highest_modseq)
		mbox->highest_modseq = rec->modseq;
	quota_note(mbox, 1, (int64_t)rec->size);
	return 0;
}

int mailbox_take_load(struct mailbox *mbox, struct mailbox_load *ld)
{
	mbox->uidvalidity = ld->uidvalidity;
	mbox->uidnext = ld->uidnext;
	mbox->highest_modseq = ld->highest_modseq;
	for (unsigned i = 0; i < ld->n_keywords; i++) {
		mbox->keywords[i] = ld->keywords[i];
		ld->keywords[i] = NULL;
	}
	mbox->n_keywords = ld->n_keywords;
	ld->n_keywords = 0;
	for (size_t i = 0; i < ld->n_ents; i++) {
		const struct load_ent *e = &ld->ents[i];
		struct mail_rec rec;
		mailbox_rec_from_ent(e, &rec);
		int r = mailbox_rec_add(mbox, &rec, ld->pool + e->key_off);
		if (r < 0)
			return r;
	}
	/* again after the records (adding them moves both along) */
	mbox->uidnext = ld->uidnext;
	mbox->highest_modseq = ld->highest_modseq;
	mbox->first_recent_uid = ld->first_recent_uid;
	return 0;
}

static void notify_schedule(struct mailbox *mbox);

void mailbox_rec_remove(struct mailbox *mbox, uint32_t uid)
{
	uint32_t i = mailbox_rec_lower_bound(mbox, uid);
	if (i >= mbox->n_recs || mbox->recs[i].uid != uid)
		return;
	struct mail_rec *r = &mbox->recs[i];
	quota_note(mbox, -1, -(int64_t)r->size);
	index_remove(mbox, r);
	mbox->pool_garbage += (size_t)r->key_len + 1;
	for (struct view *v = mbox->views; v != NULL; v = view_next(v))
		view_on_expunge(v, uid, i);
	mailbox_pop3_on_expunge(mbox, uid);
	/* every caller moves highest_modseq to this value once the batch is removed */
	mailbox_expunged_note(mbox, uid, mbox->highest_modseq + 1);
	memmove(&mbox->recs[i], &mbox->recs[i + 1], (mbox->n_recs - i - 1) * sizeof(*r));
	mbox->n_recs--;
	pool_compact(mbox);
	notify_schedule(mbox);
}

void mailbox_rec_drop_from(struct mailbox *mbox, uint32_t uid)
{
	uint32_t i = mailbox_rec_lower_bound(mbox, uid);
	for (uint32_t k = i; k < mbox->n_recs; k++) {
		quota_note(mbox, -1, -(int64_t)mbox->recs[k].size);
		index_remove(mbox, &mbox->recs[k]);
		mbox->pool_garbage += (size_t)mbox->recs[k].key_len + 1;
	}
	mbox->n_recs = i;
	if (mbox->uidnext > uid)
		mbox->uidnext = uid;
	pool_compact(mbox);
}

uint64_t mailbox_emailid_from_base(const char *base, size_t len)
{
	uint64_t h = storage_hash64(base, len, 0x656d61696c696430ull);
	return h != 0 ? h : 1;
}

uint64_t mailbox_next_modseq(struct mailbox *mbox)
{
	return ++mbox->highest_modseq;
}

/* ---- announcements ---------------------------------------------------------------------- */

static void notify_close_cb(uv_handle_t *h);

static void notify_timer_cb(uv_timer_t *t)
{
	struct mailbox *mbox = t->data;
	mbox->notify_armed = false;
	mailbox_ref(mbox);
	/* A callback may free any view (even another one): when the list changed meanwhile,
	 * restart from the head (the views told already are marked notified). Otherwise go on
	 * from the next view, so that a delivery to a folder with V idlers costs O(V), not
	 * O(V^2). */
	struct view *v = mbox->views;
	for (;;) {
		while (v != NULL && !view_wants_notify(v))
			v = view_next(v);
		if (v == NULL)
			break;
		unsigned long gen = mbox->views_gen;
		view_call_notify(v);
		v = mbox->views_gen == gen ? view_next(v) : mbox->views;
	}
	mailbox_unref(&mbox);
}

static void notify_schedule(struct mailbox *mbox)
{
	bool any = false;
	for (struct view *v = mbox->views; v != NULL; v = view_next(v))
		if (view_mark_dirty(v))
			any = true;
	if (any && !mbox->notify_armed && mbox->handles_open > 0) {
		mbox->notify_armed = true;
		uv_timer_start(&mbox->notify_timer, notify_timer_cb, 0, 0);
	}
}

void mailbox_announce_flags(struct mailbox *mbox, struct view *origin, uint32_t uid)
{
	for (struct view *v = mbox->views; v != NULL; v = view_next(v))
		if (v != origin)
			view_on_flags(v, uid);
	notify_schedule(mbox);
}

void mailbox_announce_arrivals(struct mailbox *mbox)
{
	notify_schedule(mbox);
}

/* ---- lifetime --------------------------------------------------------------------------- */

int mailbox_new(struct store *store, const char *name, const char *path, struct mailbox **mbox_r)
{
	struct mailbox *mbox = calloc(1, sizeof(*mbox));
	if (mbox == NULL)
		return -ENOMEM;
	mbox->name = strdup(name);
	mbox->path = strdup(path);
	if (mbox->name == NULL || mbox->path == NULL) {
		free(mbox->name);
		free(mbox->path);
		free(mbox);
		return -ENOMEM;
	}
	mbox->refs = 1;
	mbox->store = store_ref(store);
	mbox->loop = store_loop(store);
	mbox->ops = store_backend(store);
	mbox->uidnext = 1;
	uv_timer_init(mbox->loop, &mbox->notify_timer);
	mbox->notify_timer.data = mbox;
	mbox->handles_open = 1;
	*mbox_r = mbox;
	return 0;
}

static void mailbox_destroy(struct mailbox *mbox)
{
	for (unsigned i = 0; i < mbox->n_keywords; i++)
		free(mbox->keywords[i]);
	free(mbox->backend_mem);
	free(mbox->pop3_ret);
	free(mbox->expunged);
	free(mbox->recs);
	free(mbox->pool);
	free(mbox->index);
	free(mbox->name);
	free(mbox->path);
	store_unref(&mbox->store);
	free(mbox);
}

static void notify_close_cb(uv_handle_t *h)
{
	struct mailbox *mbox = h->data;
	if (--mbox->handles_open == 0)
		mailbox_destroy(mbox);
}

struct mailbox *mailbox_ref(struct mailbox *mbox)
{
	mbox->refs++;
	return mbox;
}

void mailbox_unref(struct mailbox **mbox_p)
{
	struct mailbox *mbox = *mbox_p;
	if (mbox == NULL)
		return;
	*mbox_p = NULL;
	if (--mbox->refs > 0)
		return;
	store_mailbox_unregister(mbox->store, mbox);
	if (mbox->ops->free != NULL && mbox->backend != NULL)
		mbox->ops->free(mbox); /* closes back-end handles, which hold handles_open */
	uv_timer_stop(&mbox->notify_timer);
	uv_close((uv_handle_t *)&mbox->notify_timer, notify_close_cb);
}

void mailbox_handle_opened(struct mailbox *mbox)
{
	mbox->handles_open++;
}
void mailbox_handle_closed(struct mailbox *mbox)
{
	if (--mbox->handles_open == 0)
		mailbox_destroy(mbox);
}

/* ---- load results ----------------------------------------------------------------------- */

void mailbox_rec_from_ent(const struct load_ent *e, struct mail_rec *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->uid = e->uid;
	rec->keywords = e->keywords;
	rec->modseq = e->modseq;
	rec->size = e->size;
	rec->idate = e->idate;
	rec->savedate = (uint32_t)e->savedate;
	rec->emailid = e->emailid;
	rec->key_len = e->key_len;
	rec->base_len = e->base_len;
	rec->cache_off = e->cache_off;
	rec->cache_len = e->cache_len;
	rec->flags = e->flags;
	rec->bflags = e->bflags;
}

int mailbox_load_add(struct mailbox_load *ld, const struct load_ent *ent, const char *key)
{
	if (ld->n_ents == ld->cap_ents) {
		size_t cap = ld->cap_ents ? ld->cap_ents * 2 : 256;
		struct load_ent *n = realloc(ld->ents, cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		ld->ents = n;
		ld->cap_ents = cap;
	}
	size_t len = ent->key_len;
	if (ld->pool_len + len + 1 > ld->pool_cap) {
		size_t cap = ld->pool_cap ? ld->pool_cap * 2 : 8192;
		while (cap < ld->pool_len + len + 1)
			cap *= 2;
		char *n = realloc(ld->pool, cap);
		if (n == NULL)
			return -ENOMEM;
		ld->pool = n;
		ld->pool_cap = cap;
	}
	struct load_ent *e = &ld->ents[ld->n_ents++];
	*e = *ent;
	e->key_off = (uint32_t)ld->pool_len;
	memcpy(ld->pool + ld->pool_len, key, len);
	ld->pool[ld->pool_len + len] = '\0';
	ld->pool_len += len + 1;
	return 0;
}

void mailbox_load_free(struct mailbox_load *ld)
{
	free(ld->path);
	free(ld->ents);
	free(ld->pool);
	for (unsigned i = 0; i < ld->n_keywords; i++)
		free(ld->keywords[i]);
	if (ld->backend_free != NULL && ld->backend != NULL)
		ld->backend_free(ld->backend);
	memset(ld, 0, sizeof(*ld));
}

/* ---- open ------------------------------------------------------------------------------- */

static int open_prepare(struct store *store, const char *name, char *norm, char *path,
			size_t path_size)
{
	int r = store_name_normalize(name, norm, STORE_NAME_MAX + 1);
	if (r < 0)
		return r;
	return store_folder_path(store, norm, path, path_size);
}

static int open_finish(struct store *store, const char *norm, struct mailbox_load *ld,
		       struct mailbox **mbox_r)
{
	struct mailbox *mbox;
	int r = mailbox_new(store, norm, ld->path, &mbox);
	if (r < 0)
		return r;
	r = mbox->ops->attach(mbox, ld);
	/* Expunges are known exactly from now on (not those before this process opened it). */
	mbox->expunged_horizon = mbox->highest_modseq;
	mbox->n_expunged = 0;
	if (r == -EAGAIN) {
		/* loaded on a worker, but the folder changed or is locked now: the caller
		 * loads again on the loop */
		log_debug("storage: open retried folder=%s", log_escape_str(norm));
		mailbox_unref(&mbox);
		return r;
	}
	if (r < 0) {
		log_error("storage: open failed folder=%s err=%s", log_escape_str(norm),
			  strerror(-r));
		mailbox_unref(&mbox);
		return r;
	}
	store_mailbox_register(store, mbox);
	*mbox_r = mbox;
	return 0;
}

struct open_req;
static bool open_pending(const struct store *store, const char *norm);

int mailbox_open(struct store *store, const char *name, struct mailbox **mbox_r)
{
	char norm[STORE_NAME_MAX + 1], path[4096];
	int r = open_prepare(store, name, norm, path, sizeof(path));
	if (r < 0)
		return r;
	struct mailbox *mbox = store_mailbox_find(store, norm);
	if (mbox != NULL) {
		*mbox_r = mailbox_ref(mbox);
		return 0;
	}
	struct mailbox_load ld = {0};
	ld.path = strdup(path);
	if (ld.path == NULL)
		return -ENOMEM;
	ld.on_loop = true;
	ld.store = store;
	ld.name = norm;
	/* a worker of ours is loading this folder: its lock goes in a moment, wait for it */
	ld.wait_lock = open_pending(store, norm);
	r = store_backend(store)->load(&ld);
	if (r == 0)
		r = open_finish(store, norm, &ld, mbox_r);
	mailbox_load_free(&ld);
	return r;
}

struct open_req {
	uv_work_t work;
	const struct mailbox_backend_ops *ops;
	struct open_req *next_pending;
	struct store *store;
	char name[STORE_NAME_MAX + 1];
	struct mailbox_load ld;
	mailbox_open_cb *cb;
	void *data;
	int err;
	bool ready;           /* found open already: no work needed */
	struct mailbox *open; /* ... this one, referenced until the answer (it may be closed
			       * by everyone else meanwhile) */
	uv_timer_t defer;
};

/* Async loads running (loop thread only). */
static struct open_req *pending_opens;

static bool open_pending(const struct store *store, const char *norm)
{
	for (struct open_req *p = pending_opens; p != NULL; p = p->next_pending)
		if (p->store == store && strcmp(p->name, norm) == 0)
			return true;
	return false;
}

static void open_work_cb(uv_work_t *w)
{
	struct open_req *req = w->data;
	req->err = req->ops->load(&req->ld);
}

static void open_req_done(struct open_req *req)
{
	struct mailbox *mbox = NULL;
	int r = req->err;
	for (struct open_req **p = &pending_opens; *p != NULL; p = &(*p)->next_pending) {
		if (*p == req) {
			*p = req->next_pending;
			break;
		}
	}
	/* another open may have won the race: use that one */
	mbox = store_mailbox_find(req->store, req->name);
	if (mbox != NULL && (r == 0 || r == -EBUSY)) {
		mailbox_ref(mbox);
		r = 0;
	} else if (r == 0) {
		r = open_finish(req->store, req->name, &req->ld, &mbox);
	}
	if (r == -EAGAIN || r == -EBUSY) {
		/* the folder changed between the worker and now, or its lock was taken
		 * (by another load of ours, or by an object of this folder that has been
		 * closed since): load on the loop. That waits only for our own worker; a
		 * lock another process holds is -EBUSY at once. */
		mbox = NULL;
		r = mailbox_open(req->store, req->name, &mbox);
	}
	mailbox_load_free(&req->ld);
	store_unref(&req->store);
	req->cb(r, r == 0 ? mbox : NULL, req->data);
}

static void open_after_work_cb(uv_work_t *w, int status)
{
	struct open_req *req = w->data;
	if (status < 0 && req->err == 0)
		req->err = status;
	open_req_done(req);
	free(req);
}

static void open_defer_close_cb(uv_handle_t *h)
{
	free(h->data);
}

static void open_defer_cb(uv_timer_t *t)
{
	struct open_req *req = t->data;
	struct mailbox *mbox = req->open;
	req->open = NULL;
	store_unref(&req->store);
	if (mbox->gone) {
		mailbox_unref(&mbox); /* deleted meanwhile */
		req->cb(-ENOENT, NULL, req->data);
	} else {
		req->cb(0, mbox, req->data);
	}
	uv_close((uv_handle_t *)t, open_defer_close_cb);
}

int mailbox_open_async(struct store *store, const char *name, mailbox_open_cb *cb, void *data)
{
	struct open_req *req = calloc(1, sizeof(*req));
	if (req == NULL)
		return -ENOMEM;
	char path[4096];
	int r = open_prepare(store, name, req->name, path, sizeof(path));
	if (r < 0) {
		free(req);
		return r;
	}
	req->store = store_ref(store);
	req->ops = store_backend(store);
	req->cb = cb;
	req->data = data;
	struct mailbox *open = store_mailbox_find(store, req->name);
	if (open != NULL) {
		/* already open: answer from the loop, not from inside this call, with the
		 * object held meanwhile: if the last other user closed it before the timer,
		 * looking it up again would find nothing (B9: SELECT answered NONEXISTENT) */
		req->open = mailbox_ref(open);
		uv_timer_init(store_loop(store), &req->defer);
		req->defer.data = req;
		uv_timer_start(&req->defer, open_defer_cb, 0, 0);
		return 0;
	}
	req->ld.path = strdup(path);
	if (req->ld.path == NULL) {
		store_unref(&req->store);
		free(req);
		return -ENOMEM;
	}
	req->ld.store = store;
	req->ld.name = req->name;
	req->work.data = req;
	r = uv_queue_work(store_loop(store), &req->work, open_work_cb, open_after_work_cb);
	if (r == 0) {
		req->next_pending = pending_opens;
		pending_opens = req;
	}
	if (r < 0) {
		mailbox_load_free(&req->ld);
		store_unref(&req->store);
		free(req);
		return r;
	}
	return 0;
}

/* ---- getters ---------------------------------------------------------------------------- */

const char *mailbox_name(const struct mailbox *mbox)
{
	return mbox->name;
}
uint32_t mailbox_uidvalidity(const struct mailbox *mbox)
{
	return mbox->uidvalidity;
}
uint32_t mailbox_uidnext(const struct mailbox *mbox)
{
	return mbox->uidnext;
}
uint64_t mailbox_highest_modseq(const struct mailbox *mbox)
{
	return mbox->highest_modseq;
}
uint32_t mailbox_count(const struct mailbox *mbox)
{
	return mbox->n_recs;
}
unsigned mailbox_special_use(const struct mailbox *mbox)
{
	return mbox->special_use;
}

void mailbox_get_status(const struct mailbox *mbox, struct mailbox_status *st)
{
	memset(st, 0, sizeof(*st));
	st->messages = mbox->n_recs;
	st->uidnext = mbox->uidnext;
	st->uidvalidity = mbox->uidvalidity;
	st->highest_modseq = mbox->highest_modseq;
	for (uint32_t i = 0; i < mbox->n_recs; i++) {
		const struct mail_rec *r = &mbox->recs[i];
		if (!(r->flags & MAIL_SEEN))
			st->unseen++;
		if (r->flags & MAIL_DELETED) {
			st->deleted++;
			st->deleted_size += r->size;
		}
		if (r->uid >= mbox->first_recent_uid)
			st->recent++;
		st->size += r->size;
	}
}

int mailbox_refresh(struct mailbox *mbox)
{
	if (mbox->gone)
		return -ENOENT;
	return mbox->ops->refresh(mbox, false);
}

/* ---- keywords --------------------------------------------------------------------------- */

unsigned mailbox_keyword_count(const struct mailbox *mbox)
{
	return mbox->n_keywords;
}

const char *mailbox_keyword_name(const struct mailbox *mbox, unsigned idx)
{
	return idx < mbox->n_keywords ? mbox->keywords[idx] : NULL;
}

static bool keyword_valid(const char *name)
{
	size_t len = strlen(name);
	if (len == 0 || len > MAILBOX_KEYWORD_MAX || name[0] == '\\')
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		/* atom-char minus list/resp specials (RFC 3501 flag-keyword) */
		if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c) != NULL)
			return false;
	}
	return true;
}

int mailbox_keyword_index(struct mailbox *mbox, const char *name, bool create, unsigned *idx_r)
{
	if (!keyword_valid(name))
		return -EINVAL;
	for (unsigned i = 0; i < mbox->n_keywords; i++) {
		if (strcasecmp(mbox->keywords[i], name) == 0) {
			*idx_r = i;
			return 0;
		}
	}
	if (!create)
		return -ENOENT;
	if (mbox->gone)
		return -ENOENT;
	if (mbox->n_keywords >= MAILBOX_MAX_KEYWORDS)
		return -ENOSPC;
	char *copy = strdup(name);
	if (copy == NULL)
		return -ENOMEM;
	mbox->keywords[mbox->n_keywords++] = copy;
	int r = mbox->ops->save_keywords(mbox);
	if (r < 0) {
		mbox->keywords[--mbox->n_keywords] = NULL;
		free(copy);
		return r;
	}
	*idx_r = mbox->n_keywords - 1;
	return 0;
}

/* ---- changes ---------------------------------------------------------------------------- */

struct flag_undo {
	uint32_t uid;
	uint8_t flags;
	uint32_t keywords;
	uint64_t modseq;
};

/* The UID-list records of a STORE could not be written: rename every changed file back and
 * restore memory, so nothing changed (nobody was told yet). A message whose rename back
 * fails keeps its new flags (that is what is on disk) and stays in CHANGED; returns how many
 * did. HIGHESTMODSEQ goes back only when every change was undone (never below a modseq
 * still in use). */
static size_t store_flags_undo(struct mailbox *mbox, const struct flag_undo *undo,
			       uint32_t *changed, size_t n_changed, size_t mark,
			       uint64_t old_highest)
{
	size_t kept = 0;
	mbox->ops->discard(mbox, mark);
	for (size_t i = n_changed; i-- > 0;) {
		struct mail_rec *rec = mailbox_rec_find(mbox, undo[i].uid);
		if (rec == NULL)
			continue;
		uint64_t new_modseq = rec->modseq;
		rec->modseq = undo[i].modseq;
		int r = mbox->ops->set_flags(mbox, rec, undo[i].flags, undo[i].keywords);
		if (r < 0) {
			log_error("storage: cannot undo a flag change folder=%s uid=%u err=%s",
				  log_escape_str(mbox->name), undo[i].uid, strerror(-r));
			rec->modseq = new_modseq;
			changed[kept++] = undo[i].uid;
			continue;
		}
		rec->flags = undo[i].flags;
		rec->keywords = undo[i].keywords;
	}
	mbox->ops->discard(mbox, mark);
	if (kept == 0)
		mbox->highest_modseq = old_highest;
	(void)mbox->ops->commit(mbox); /* the directory fsyncs of the renames back */
	return kept;
}

/* The back-end's commit; with NOWAIT its fsyncs go to the thread pool when it can. */
static int commit_maybe_nowait(struct mailbox *mbox, bool nowait)
{
	if (nowait && mbox->ops->commit_nowait != NULL)
		return mbox->ops->commit_nowait(mbox);
	return mbox->ops->commit(mbox);
}

static int store_flags_impl(struct mailbox *mbox, struct view *origin, const uint32_t *uids,
			    size_t n, enum flag_op op, unsigned flags, uint32_t keywords,
			    bool nowait)
{
	if (mbox->gone)
		return -ENOENT;
	flags &= MAIL_FLAGS_SETTABLE;
	uint32_t kw_mask = mbox->n_keywords >= 32 ? UINT32_MAX : (1u << mbox->n_keywords) - 1;
	if (keywords & ~kw_mask)
		return -EINVAL;
	int r = 0;
	uint32_t *changed = malloc((n ? n : 1) * sizeof(*changed));
	struct flag_undo *undo = malloc((n ? n : 1) * sizeof(*undo));
	if (changed == NULL || undo == NULL) {
		free(changed);
		free(undo);
		return -ENOMEM;
	}
	size_t n_changed = 0;
	size_t mark = mbox->ops->pending_mark(mbox);
	uint64_t old_highest = mbox->highest_modseq;
	for (size_t i = 0; i < n && r == 0; i++) {
		struct mail_rec *rec = mailbox_rec_find(mbox, uids[i]);
		if (rec == NULL)
			continue;
		unsigned nf = rec->flags;
		uint32_t nk = rec->keywords;
		switch (op) {
		case FLAG_OP_REPLACE:
			nf = flags;
			nk = keywords;
			break;
		case FLAG_OP_ADD:
			nf |= flags;
			nk |= keywords;
			break;
		case FLAG_OP_REMOVE:
			nf &= ~flags;
			nk &= ~keywords;
			break;
		}
		if (nf == rec->flags && nk == rec->keywords)
			continue;
		uint64_t old_modseq = rec->modseq;
		struct flag_undo u = {rec->uid, rec->flags, rec->keywords, old_modseq};
		rec->modseq = mbox->highest_modseq + 1;
		r = mbox->ops->set_flags(mbox, rec, nf, nk);
		if (r < 0) {
			rec->modseq = old_modseq;
			break;
		}
		mbox->highest_modseq = rec->modseq;
		rec->flags = (uint8_t)nf;
		rec->keywords = nk;
		undo[n_changed] = u;
		changed[n_changed++] = rec->uid;
	}
	int cr = commit_maybe_nowait(mbox, nowait);
	if (cr < 0 && n_changed > 0) {
		/* All or nothing: the rename alone is not the change (its modseq would not be
		 * durable, and after a restart HIGHESTMODSEQ could go below what a client saw),
		 * so undo it and answer the error (storage/README.md). */
		n_changed = store_flags_undo(mbox, undo, changed, n_changed, mark, old_highest);
	}
	if (r == 0)
		r = cr;
	for (size_t i = 0; i < n_changed; i++)
		mailbox_announce_flags(mbox, origin, changed[i]);
	free(changed);
	free(undo);
	return r;
}

int mailbox_store_flags(struct mailbox *mbox, struct view *origin, const uint32_t *uids, size_t n,
			enum flag_op op, unsigned flags, uint32_t keywords)
{
	return store_flags_impl(mbox, origin, uids, n, op, flags, keywords, false);
}

int mailbox_store_flags_async(struct mailbox *mbox, struct view *origin, const uint32_t *uids,
			      size_t n, enum flag_op op, unsigned flags, uint32_t keywords,
			      mailbox_sync_cb *cb, void *data)
{
	int r = store_flags_impl(mbox, origin, uids, n, op, flags, keywords, true);
	if (r < 0)
		return r;
	if (cb == NULL) {
		mailbox_sync_kick(mbox);
		return 0;
	}
	return mailbox_sync_wait(mbox, cb, data);
}

int mailbox_expunge(struct mailbox *mbox, const uint32_t *uids, size_t n)
{
	if (mbox->gone)
		return -ENOENT;
	int r = 0;
	uint32_t *done = malloc((n ? n : 1) * sizeof(*done));
	if (done == NULL)
		return -ENOMEM;
	size_t n_done = 0;
	size_t mark = mbox->ops->pending_mark(mbox);
	/* the records first: if they cannot be written nothing has changed */
	for (size_t i = 0; i < n && r == 0; i++) {
		struct mail_rec *rec = mailbox_rec_find(mbox, uids[i]);
		if (rec == NULL)
			continue;
		r = mbox->ops->expunge(mbox, rec);
		if (r == 0)
			done[n_done++] = rec->uid;
	}
	if (r == 0 && n_done > 0)
		r = mbox->ops->commit(mbox);
	if (r < 0) {
		mbox->ops->discard(mbox, mark);
		free(done);
		return r;
	}
	/* the records are durable: the expunge is done. Remove the files (a crash before
	 * that is completed at the next load), then memory and the views. */
	for (size_t i = 0; i < n_done; i++) {
		struct mail_rec *rec = mailbox_rec_find(mbox, done[i]);
		int ur = rec != NULL ? mbox->ops->unlink(mbox, rec) : 0;
		if (ur < 0)
			log_error("storage: expunged message file not removed folder=%s uid=%u "
				  "err=%s",
				  log_escape_str(mbox->name), done[i], strerror(-ur));
	}
	int cr = mbox->ops->commit(mbox);
	if (cr < 0)
		log_warn("storage: directory sync after expunge failed folder=%s err=%s",
			 log_escape_str(mbox->name), strerror(-cr));
	for (size_t i = 0; i < n_done; i++)
		mailbox_rec_remove(mbox, done[i]);
	if (n_done > 0)
		mbox->highest_modseq++;
	free(done);
	return 0;
}

/* An expunge of at least this many messages unlinks their files on the thread pool. */
#define EXPUNGE_UNLINK_ASYNC_MIN 16

struct expunge_wait {
	struct mailbox *mbox;
	mailbox_sync_cb *cb;
	void *data;
	size_t n_done;
	uint32_t done[];
};

/* The records are durable and the files gone (or going, on the pool): the directory sync
 * (nobody waits), memory, the views, the caller. */
static void expunge_finish(struct expunge_wait *w, int err)
{
	struct mailbox *mbox = w->mbox;
	if (err == 0) {
		/* the directory fsync is not needed for the expunge (its record is durable):
		 * on the thread pool, nobody waits for it */
		int cr = commit_maybe_nowait(mbox, true);
		if (cr < 0)
			log_warn("storage: directory sync after expunge failed folder=%s err=%s",
				 log_escape_str(mbox->name), strerror(-cr));
		mailbox_sync_kick(mbox);
		size_t removed = 0;
		for (size_t i = 0; i < w->n_done; i++)
			if (mailbox_rec_find(mbox, w->done[i]) != NULL) {
				mailbox_rec_remove(mbox, w->done[i]);
				removed++;
			}
		if (removed > 0)
			mbox->highest_modseq++;
	}
	w->cb(err, w->data);
	mailbox_unref(&w->mbox);
	free(w);
}

static void expunge_unlink_loop(struct mailbox *mbox, uint32_t uid)
{
	struct mail_rec *rec = mailbox_rec_find(mbox, uid);
	int ur = rec != NULL ? mbox->ops->unlink(mbox, rec) : 0;
	if (ur < 0)
		log_error("storage: expunged message file not removed folder=%s uid=%u err=%s",
			  log_escape_str(mbox->name), uid, strerror(-ur));
}

/* Unlinking the files of a big expunge (POP3 QUIT after DELE of everything) on the pool. The
 * expunge is already durable (its records are): the caller is answered and the messages leave
 * memory before the files go, so a QUIT does not wait for 10,000 unlinks. A crash meanwhile
 * leaves records whose files are still there, which the next load completes. */
struct unlink_job {
	uv_work_t work;
	struct mailbox *mbox; /* a reference */
	size_t n;
	char **paths; /* NULL: no memory for the path; the next load removes that file */
	int *errs;
};

static void unlink_work(uv_work_t *work)
{
	struct unlink_job *j = work->data;
	for (size_t i = 0; i < j->n; i++)
		if (j->paths[i] != NULL)
			j->errs[i] = unlink(j->paths[i]) < 0 ? -errno : 0;
}

static void unlink_job_free(struct unlink_job *j)
{
	for (size_t i = 0; i < j->n; i++)
		free(j->paths[i]);
	free(j->paths);
	free(j->errs);
	free(j);
}

static void unlink_after(uv_work_t *work, int status)
{
	struct unlink_job *j = work->data;
	struct mailbox *mbox = j->mbox;
	(void)status;
	mbox->unlinking--;
	for (size_t i = 0; i < j->n; i++) {
		/* ENOENT: renamed by another program meanwhile; its record stays and the next
		 * load removes it, as after a crash */
		if (j->paths[i] != NULL && j->errs[i] < 0 && j->errs[i] != -ENOENT)
			log_error("storage: expunged message file not removed folder=%s err=%s",
				  log_escape_str(mbox->name), strerror(-j->errs[i]));
	}
	log_info("storage: expunged files removed event=expunge_unlink_done folder=%s count=%zu",
		 log_escape_str(mbox->name), j->n);
	unlink_job_free(j);
	/* the directory sync for the unlinks: nobody waits for it */
	int cr = commit_maybe_nowait(mbox, true);
	if (cr < 0)
		log_warn("storage: directory sync after expunge failed folder=%s err=%s",
			 log_escape_str(mbox->name), strerror(-cr));
	/* what happened to the folder meanwhile (the back-end may have stopped watching) */
	if (mbox->unlinking == 0 && !mbox->gone)
		(void)mbox->ops->refresh(mbox, false);
	mailbox_unref(&mbox);
}

/* Queue the unlinks of W's files on the thread pool (before W's records leave memory); false
 * when they cannot go there. */
static bool expunge_unlink_async(struct expunge_wait *w)
{
	struct mailbox *mbox = w->mbox;
	if (mbox->ops->unlink_path == NULL)
		return false;
	struct unlink_job *j = calloc(1, sizeof(*j));
	if (j != NULL) {
		j->paths = calloc(w->n_done ? w->n_done : 1, sizeof(*j->paths));
		j->errs = calloc(w->n_done ? w->n_done : 1, sizeof(*j->errs));
	}
	if (j == NULL || j->paths == NULL || j->errs == NULL) {
		if (j != NULL) {
			free(j->paths);
			free(j->errs);
		}
		free(j);
		return false;
	}
	j->n = w->n_done;
	char path[4096];
	for (size_t i = 0; i < w->n_done; i++) {
		struct mail_rec *rec = mailbox_rec_find(mbox, w->done[i]);
		if (rec != NULL && mbox->ops->unlink_path(mbox, rec, path, sizeof(path)) == 0)
			j->paths[i] = strdup(path);
	}
	j->work.data = j;
	j->mbox = mailbox_ref(mbox);
	mbox->unlinking++;
	/* with the line in unlink_after: tests that look at the files wait for this pair */
	log_info("storage: expunged files removed on the pool event=expunge_unlink_start "
		 "folder=%s count=%zu",
		 log_escape_str(mbox->name), j->n);
	if (uv_queue_work(mbox->loop, &j->work, unlink_work, unlink_after) < 0) {
		unlink_work(&j->work);
		unlink_after(&j->work, 0);
	}
	return true;
}

/* The expunge records are durable (or not: ERR): the files go, then memory and the views. */
static void expunge_synced(int err, void *data)
{
	struct expunge_wait *w = data;
	struct mailbox *mbox = w->mbox;
	if (err < 0) {
		/* nothing changed in memory; a record that did reach the disk is completed at
		 * the next load, as after a crash */
		log_error("storage: expunge records not durable folder=%s err=%s",
			  log_escape_str(mbox->name), strerror(-err));
		expunge_finish(w, err);
		return;
	}
	/* a few files are quicker here than a trip to the pool; many (a POP3 QUIT after
	 * DELE of all) would hold the loop for seconds */
	if (w->n_done >= EXPUNGE_UNLINK_ASYNC_MIN && expunge_unlink_async(w)) {
		expunge_finish(w, 0);
		return;
	}
	for (size_t i = 0; i < w->n_done; i++)
		expunge_unlink_loop(mbox, w->done[i]);
	expunge_finish(w, 0);
}

int mailbox_expunge_async(struct mailbox *mbox, const uint32_t *uids, size_t n, mailbox_sync_cb *cb,
			  void *data)
{
	if (mbox->gone)
		return -ENOENT;
	struct expunge_wait *w = malloc(sizeof(*w) + (n ? n : 1) * sizeof(w->done[0]));
	if (w == NULL)
		return -ENOMEM;
	w->n_done = 0;
	int r = 0;
	size_t mark = mbox->ops->pending_mark(mbox);
	for (size_t i = 0; i < n && r == 0; i++) {
		struct mail_rec *rec = mailbox_rec_find(mbox, uids[i]);
		if (rec == NULL)
			continue;
		r = mbox->ops->expunge(mbox, rec);
		if (r == 0)
			w->done[w->n_done++] = rec->uid;
	}
	if (r == 0 && w->n_done > 0)
		r = commit_maybe_nowait(mbox, true);
	if (r == 0) {
		w->mbox = mailbox_ref(mbox);
		w->cb = cb;
		w->data = data;
		r = mailbox_sync_wait(mbox, expunge_synced, w);
		if (r == 0)
			return 0;
		mailbox_unref(&w->mbox);
		/* the records are written; the next load completes them */
		free(w);
		return r;
	}
	mbox->ops->discard(mbox, mark);
	free(w);
	return r;
}

static int copy_keywords(struct mailbox *src, struct mailbox *dst, uint32_t kw, uint32_t *kw_r)
{
	uint32_t out = 0;
	for (unsigned i = 0; i < src->n_keywords; i++) {
		if (!(kw & (1u << i)))
			continue;
		unsigned idx;
		int r = mailbox_keyword_index(dst, src->keywords[i], true, &idx);
		if (r == -ENOSPC)
			continue; /* the copy keeps the flags it can */
		if (r < 0)
			return r;
		out |= 1u << idx;
	}
	*kw_r = out;
	return 0;
}

/* Take back the copies of UIDS[i] made in DST (NEW_UIDS[i], zeroed): their files go (with
 * MOVE back to SRC), their records are dropped; DST's UIDNEXT and HIGHESTMODSEQ return to
 * what they were. Nobody was told of them yet. */
static void copy_undo(struct mailbox *src, const uint32_t *uids, size_t n, struct mailbox *dst,
		      uint32_t *new_uids, bool move, uint32_t uidnext0, uint64_t highest0)
{
	for (size_t i = 0; i < n; i++) {
		if (new_uids[i] == 0)
			continue;
		struct mail_rec *drec = mailbox_rec_find(dst, new_uids[i]);
		int r = drec != NULL ? dst->ops->copy_undo(src, uids[i], dst, drec, move) : 0;
		if (r < 0)
			log_error("storage: cannot undo a %s folder=%s uid=%u err=%s",
				  move ? "move" : "copy", log_escape_str(dst->name), new_uids[i],
				  strerror(-r));
		new_uids[i] = 0;
	}
	if (dst->uidnext > uidnext0)
		mailbox_rec_drop_from(dst, uidnext0);
	dst->highest_modseq = highest0;
}

static int copy_or_move(struct mailbox *src, const uint32_t *uids, size_t n, struct mailbox *dst,
			uint32_t *new_uids_r, bool move)
{
	if (src->gone || dst->gone)
		return -ENOENT;
	if (move && src == dst)
		return -EINVAL;
	int r = 0;
	uint32_t *moved = NULL;
	size_t n_moved = 0;
	if (move) {
		moved = malloc((n ? n : 1) * sizeof(*moved));
		if (moved == NULL)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		new_uids_r[i] = 0;
	if (!move || src->store != dst->store) {
		/* every copy is new mail for DST's user (a move within one user is not) */
		uint64_t msgs = 0, bytes = 0;
		for (size_t i = 0; i < n; i++) {
			const struct mail_rec *rec = mailbox_rec_find(src, uids[i]);
			if (rec != NULL) {
				msgs++;
				bytes += rec->size;
			}
		}
		r = msgs > 0 ? store_quota_check(dst->store, msgs, bytes) : 0;
		if (r < 0) {
			free(moved);
			return r;
		}
	}
	size_t dmark = dst->ops->pending_mark(dst), smark = src->ops->pending_mark(src);
	uint32_t uidnext0 = dst->uidnext;
	uint64_t highest0 = dst->highest_modseq;
	for (size_t i = 0; i < n && r == 0; i++) {
		struct mail_rec *rec = mailbox_rec_find(src, uids[i]);
		if (rec == NULL)
			continue;
		uint32_t kw;
		r = copy_keywords(src, dst, rec->keywords, &kw);
		if (r < 0)
			break;
		rec = mailbox_rec_find(src, uids[i]); /* dst may equal src: array may have moved */
		r = src->ops->copy(src, rec, dst, rec->flags, kw, move, &new_uids_r[i]);
		if (r == 0 && move)
			moved[n_moved++] = uids[i];
	}
	int cr = dst->ops->commit(dst);
	if (cr < 0) {
		/* the target cannot record them: no copy is made, nothing moves */
		copy_undo(src, uids, n, dst, new_uids_r, move, uidnext0, highest0);
		dst->ops->discard(dst, dmark);
		if (move)
			src->ops->discard(src, smark);
		n_moved = 0;
		(void)dst->ops->commit(dst); /* directory fsyncs of the undo */
		if (src != dst)
			(void)src->ops->commit(src);
	}
	if (r == 0)
		r = cr;
	if (move) {
		cr = src->ops->commit(src);
		if (r == 0)
			r = cr;
		for (size_t i = 0; i < n_moved; i++)
			mailbox_rec_remove(src, moved[i]);
		if (n_moved > 0)
			src->highest_modseq++;
		free(moved);
	}
	mailbox_announce_arrivals(dst);
	return r;
}

int mailbox_copy(struct mailbox *src, const uint32_t *uids, size_t n, struct mailbox *dst,
		 uint32_t *new_uids_r)
{
	return copy_or_move(src, uids, n, dst, new_uids_r, false);
}

int mailbox_move(struct mailbox *src, const uint32_t *uids, size_t n, struct mailbox *dst,
		 uint32_t *new_uids_r)
{
	return copy_or_move(src, uids, n, dst, new_uids_r, true);
}

/* ---- append ------------------------------------------------------------------------------ */

int mailbox_append_begin(struct mailbox *mbox, unsigned flags, uint32_t keywords,
			 int64_t internal_date, struct mail_append **append_r)
{
	if (mbox->gone)
		return -ENOENT;
	uint32_t kw_mask = mbox->n_keywords >= 32 ? UINT32_MAX : (1u << mbox->n_keywords) - 1;
	if (keywords & ~kw_mask)
		return -EINVAL;
	struct mail_append *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -ENOMEM;
	a->mbox = mailbox_ref(mbox);
	a->flags = flags & MAIL_FLAGS_SETTABLE;
	a->keywords = keywords;
	a->idate = internal_date;
	a->fd = -1;
	int r = mbox->ops->append_begin(mbox, a);
	if (r < 0) {
		mailbox_unref(&a->mbox);
		free(a);
		return r;
	}
	*append_r = a;
	return 0;
}

int mail_append_write(struct mail_append *a, const void *data, size_t len)
{
	int r = a->mbox->ops->append_write(a, data, len);
	if (r < 0)
		return r;
	/* the size RFC822.SIZE will have, for the quota (back-end independent) */
	const char *p = data;
	for (size_t i = 0; i < len; i++)
		if (p[i] == '\n' && !(i > 0 ? p[i - 1] == '\r' : a->given_last_cr))
			a->given_crlf_size++;
	a->given_crlf_size += len;
	if (len > 0)
		a->given_last_cr = p[len - 1] == '\r';
	return 0;
}

int mail_append_finish(struct mail_append **append_p, uint32_t *uid_r)
{
	struct mail_append *a = *append_p;
	*append_p = NULL;
	struct mailbox *mbox = a->mbox;
	int r = mbox->gone ? -ENOENT : store_quota_check(mbox->store, 1, a->given_crlf_size);
	if (r == 0)
		r = mbox->ops->append_finish(a, uid_r);
	if (r < 0)
		mbox->ops->append_abort(a);
	else
		mailbox_announce_arrivals(mbox);
	mailbox_unref(&a->mbox);
	free(a);
	return r;
}

uint64_t mail_append_size(const struct mail_append *a)
{
	return a->given_crlf_size;
}

struct append_wait {
	struct mail_append *a;
	mail_append_cb *cb;
	void *data;
	uint32_t uid;
	int err;
};

static void append_wait_end(struct append_wait *w, int err)
{
	struct mail_append *a = w->a;
	if (err < 0 && a != NULL)
		a->mbox->ops->append_abort(a);
	if (a != NULL) {
		mailbox_unref(&a->mbox);
		free(a);
	}
	w->cb(err, err < 0 ? 0 : w->uid, w->data);
	free(w);
}

/* The message is recorded and the record durable: tell the views, then the caller. */
static void append_recorded(int err, void *data)
{
	struct append_wait *w = data;
	if (err == 0 && w->err < 0)
		err = w->err;
	if (err == 0)
		mailbox_announce_arrivals(w->a->mbox);
	else if (w->err == 0)
		log_error("storage: appended message record not durable folder=%s uid=%u err=%s",
			  log_escape_str(w->a->mbox->name), w->uid, strerror(-err));
	/* recorded (durable or not): the file is the message now, not to be removed */
	mailbox_unref(&w->a->mbox);
	free(w->a);
	w->a = NULL;
	append_wait_end(w, err);
}

/* The message file is durable: rename and record it, then wait for the record. */
static void append_file_synced(int err, void *data)
{
	struct append_wait *w = data;
	struct mail_append *a = w->a;
	if (err == 0 && a->mbox->gone)
		err = -ENOENT;
	/* again: appends finishing meanwhile count now */
	if (err == 0)
		err = store_quota_check(a->mbox->store, 1, a->given_crlf_size);
	if (err == 0)
		err = a->mbox->ops->append_finish_nowait(a, &w->uid);
	if (err == 0 && mailbox_sync_wait(a->mbox, append_recorded, w) == 0)
		return;
	append_wait_end(w, err < 0 ? err : -ENOMEM);
}

/* mail_append_finish in steps: a check added to one (a limit, a quota) belongs in both. */
int mail_append_finish_async(struct mail_append **append_p, mail_append_cb *cb, void *data)
{
	struct mail_append *a = *append_p;
	*append_p = NULL;
	struct mailbox *mbox = a->mbox;
	struct append_wait *w = calloc(1, sizeof(*w));
	int r = w == NULL    ? -ENOMEM
		: mbox->gone ? -ENOENT
			     : store_quota_check(mbox->store, 1, a->given_crlf_size);
	if (r == 0) {
		w->a = a;
		w->cb = cb;
		w->data = data;
		if (mbox->ops->append_prepare != NULL && mbox->ops->append_finish_nowait != NULL) {
			r = mbox->ops->append_prepare(a);
			if (r == 0)
				r = mailbox_sync_wait(mbox, append_file_synced, w);
		} else {
			/* a back-end without the two steps: finish here, answer from the loop */
			r = mbox->ops->append_finish(a, &w->uid);
			w->err = r;
			if (r == 0)
				r = mailbox_sync_wait(mbox, append_recorded, w);
		}
		if (r == 0)
			return 0;
	}
	mbox->ops->append_abort(a);
	mailbox_unref(&a->mbox);
	free(a);
	free(w);
	return r;
}

void mail_append_abort(struct mail_append **append_p)
{
	struct mail_append *a = *append_p;
	if (a == NULL)
		return;
	*append_p = NULL;
	a->mbox->ops->append_abort(a);
	mailbox_unref(&a->mbox);
	free(a);
}

/* ---- cache ------------------------------------------------------------------------------- */

int mailbox_cache_get(struct mailbox *mbox, uint32_t uid, const void **data_r, size_t *len_r)
{
	struct mail_rec *rec = mailbox_rec_find(mbox, uid);
	if (rec == NULL || rec->cache_len == 0)
		return -ENOENT;
	return mbox->ops->cache_get(mbox, rec, data_r, len_r);
}

int mailbox_cache_put(struct mailbox *mbox, uint32_t uid, const void *data, size_t len)
{
	if (len == 0 || len > (1u << 20))
		return -EINVAL;
	struct mail_rec *rec = mailbox_rec_find(mbox, uid);
	if (rec == NULL)
		return -ENOENT;
	return mbox->ops->cache_put(mbox, rec, data, len);
}
