/* view — one session's window on a shared mailbox (DESIGN.md "The store").
 *
 * An IMAP view does not copy the mailbox: it shows the mailbox's records with UID below
 * synced_uidnext, plus the expunged messages it has not announced yet (kept as uid + the
 * sequence number they had, which stays valid until the next sync), and remembers which UIDs
 * had flag changes. An idle view costs this struct and nothing per message.
 *
 * A POP3 view is a snapshot: the UIDs present at login (4 bytes a message) and one deleted
 * mark per message; its numbers never move.
 */
#include "mailbox_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "uidlist.h"

struct view_exp {
	uint32_t uid;
	uint32_t seq;
};

struct view {
	struct mailbox *mbox;
	enum view_kind kind;
	view_notify_cb *notify;
	void *data;
	struct view *next, *prev;
	bool dirty;
	bool notified;

	/* IMAP */
	uint32_t synced_uidnext;
	struct view_exp *exp; /* ascending uid (and seq) */
	uint32_t n_exp, cap_exp;
	uint32_t *fl; /* ascending uids with unannounced flag changes */
	uint32_t n_fl, cap_fl;
	uint32_t recent_lo, recent_hi;

	/* POP3 */
	uint32_t *snap;
	uint32_t n_snap;
	uint8_t *dele;
};

struct view *view_next(const struct view *view)
{
	return view->next;
}

struct mailbox *view_mailbox(const struct view *view)
{
	return view->mbox;
}

static uint32_t imap_present(const struct view *v)
{
	return mailbox_rec_lower_bound(v->mbox, v->synced_uidnext);
}

static bool has_changes(const struct view *v)
{
	if (v->kind != VIEW_IMAP)
		return false;
	return v->n_exp > 0 || v->n_fl > 0 || imap_present(v) < v->mbox->n_recs;
}

bool view_has_changes(const struct view *view)
{
	return has_changes(view);
}

bool view_mark_dirty(struct view *view)
{
	if (!has_changes(view))
		return false;
	view->dirty = true;
	return view->notify != NULL && !view->notified;
}

bool view_wants_notify(const struct view *view)
{
	return view->dirty && !view->notified && view->notify != NULL && has_changes(view);
}

void view_call_notify(struct view *view)
{
	view->notified = true;
	view->notify(view, view->data);
}

static void claim_recent(struct view *v)
{
	struct mailbox *m = v->mbox;
	if (m->first_recent_uid >= m->uidnext)
		return;
	if (v->recent_hi != 0 && v->recent_hi == m->first_recent_uid) {
		v->recent_hi = m->uidnext;
	} else {
		v->recent_lo = m->first_recent_uid;
		v->recent_hi = m->uidnext;
	}
	m->first_recent_uid = m->uidnext;
}

int view_new(struct mailbox *mbox, enum view_kind kind, view_notify_cb *notify, void *data,
	     struct view **view_r)
{
	if (mbox->gone)
		return -ENOENT;
	if (kind == VIEW_POP3 && mbox->pop3_view != NULL)
		return -EBUSY;
	if (kind != VIEW_IMAP && kind != VIEW_POP3)
		return -EINVAL;
	struct view *v = calloc(1, sizeof(*v));
	if (v == NULL)
		return -ENOMEM;
	v->kind = kind;
	v->notify = notify;
	v->data = data;
	if (kind == VIEW_POP3) {
		unsigned hide_idx;
		uint32_t hide = 0;
		if (mailbox_keyword_index(mbox, MAIL_KEYWORD_POP3_DELETED, false, &hide_idx) == 0)
			hide = 1u << hide_idx;
		v->snap = malloc(((size_t)mbox->n_recs + 1) * sizeof(*v->snap));
		if (v->snap == NULL) {
			free(v);
			return -ENOMEM;
		}
		for (uint32_t i = 0; i < mbox->n_recs; i++)
			if (!(mbox->recs[i].keywords & hide))
				v->snap[v->n_snap++] = mbox->recs[i].uid;
		v->dele = calloc((size_t)v->n_snap / 8 + 1, 1);
		if (v->dele == NULL) {
			free(v->snap);
			free(v);
			return -ENOMEM;
		}
		mbox->pop3_view = v;
	}
	v->mbox = mailbox_ref(mbox);
	v->synced_uidnext = mbox->uidnext;
	if (kind == VIEW_IMAP)
		claim_recent(v);
	v->next = mbox->views;
	if (mbox->views != NULL)
		mbox->views->prev = v;
	mbox->views = v;
	mbox->views_gen++;
	*view_r = v;
	return 0;
}

void view_free(struct view **view_p)
{
	struct view *v = *view_p;
	if (v == NULL)
		return;
	*view_p = NULL;
	struct mailbox *m = v->mbox;
	if (v->prev != NULL)
		v->prev->next = v->next;
	else
		m->views = v->next;
	if (v->next != NULL)
		v->next->prev = v->prev;
	m->views_gen++;
	if (m->pop3_view == v)
		m->pop3_view = NULL;
	free(v->exp);
	free(v->fl);
	free(v->snap);
	free(v->dele);
	free(v);
	mailbox_unref(&m);
}

/* ---- change intake ---------------------------------------------------------------------- */

static uint32_t exp_lower_uid(const struct view *v, uint32_t uid)
{
	uint32_t lo = 0, hi = v->n_exp;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (v->exp[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static uint32_t fl_lower(const struct view *v, uint32_t uid)
{
	uint32_t lo = 0, hi = v->n_fl;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (v->fl[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void fl_remove(struct view *v, uint32_t uid)
{
	uint32_t i = fl_lower(v, uid);
	if (i < v->n_fl && v->fl[i] == uid) {
		memmove(&v->fl[i], &v->fl[i + 1], (v->n_fl - i - 1) * sizeof(*v->fl));
		v->n_fl--;
	}
}

void view_on_expunge(struct view *v, uint32_t uid, uint32_t idx)
{
	if (v->kind != VIEW_IMAP || uid >= v->synced_uidnext)
		return;
	fl_remove(v, uid);
	uint32_t k = exp_lower_uid(v, uid);
	if (v->n_exp == v->cap_exp) {
		uint32_t cap = v->cap_exp ? v->cap_exp * 2 : 8;
		struct view_exp *n = realloc(v->exp, cap * sizeof(*n));
		if (n == NULL) {
			/* Cannot remember it: the view jumps forward instead (its next sync
			 * reports the count only). Keeps memory bounded under failure. */
			return;
		}
		v->exp = n;
		v->cap_exp = cap;
	}
	memmove(&v->exp[k + 1], &v->exp[k], (v->n_exp - k) * sizeof(*v->exp));
	v->exp[k].uid = uid;
	v->exp[k].seq = idx + 1 + k; /* records below it + pending expunges below it */
	v->n_exp++;
}

void view_on_flags(struct view *v, uint32_t uid)
{
	if (v->kind != VIEW_IMAP || uid >= v->synced_uidnext)
		return;
	uint32_t i = fl_lower(v, uid);
	if (i < v->n_fl && v->fl[i] == uid)
		return;
	if (v->n_fl == v->cap_fl) {
		uint32_t cap = v->cap_fl ? v->cap_fl * 2 : 8;
		uint32_t *n = realloc(v->fl, cap * sizeof(*n));
		if (n == NULL)
			return;
		v->fl = n;
		v->cap_fl = cap;
	}
	memmove(&v->fl[i + 1], &v->fl[i], (v->n_fl - i) * sizeof(*v->fl));
	v->fl[i] = uid;
	v->n_fl++;
}

/* ---- sequence numbers ------------------------------------------------------------------- */

uint32_t view_count(const struct view *v)
{
	if (v->kind == VIEW_POP3)
		return v->n_snap;
	return imap_present(v) + v->n_exp;
}

uint32_t view_recent_count(const struct view *v)
{
	if (v->kind != VIEW_IMAP || v->recent_hi == 0)
		return 0;
	uint32_t hi = v->recent_hi < v->synced_uidnext ? v->recent_hi : v->synced_uidnext;
	if (hi <= v->recent_lo)
		return 0;
	uint32_t n = mailbox_rec_lower_bound(v->mbox, hi) -
		     mailbox_rec_lower_bound(v->mbox, v->recent_lo);
	n += exp_lower_uid(v, hi) - exp_lower_uid(v, v->recent_lo);
	return n;
}

int view_seq_to_uid(const struct view *v, uint32_t seq, uint32_t *uid_r)
{
	if (seq == 0 || seq > view_count(v))
		return -ERANGE;
	if (v->kind == VIEW_POP3) {
		*uid_r = v->snap[seq - 1];
		return 0;
	}
	/* first pending expunge with seq >= SEQ */
	uint32_t lo = 0, hi = v->n_exp;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (v->exp[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < v->n_exp && v->exp[lo].seq == seq) {
		*uid_r = v->exp[lo].uid;
		return 0;
	}
	uint32_t idx = seq - 1 - lo;
	*uid_r = v->mbox->recs[idx].uid;
	return 0;
}

int view_uid_to_seq(const struct view *v, uint32_t uid, uint32_t *seq_r)
{
	if (v->kind == VIEW_POP3) {
		uint32_t lo = 0, hi = v->n_snap;
		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;
			if (v->snap[mid] < uid)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < v->n_snap && v->snap[lo] == uid) {
			*seq_r = lo + 1;
			return 0;
		}
		return -ENOENT;
	}
	if (uid == 0 || uid >= v->synced_uidnext)
		return -ENOENT;
	uint32_t k = exp_lower_uid(v, uid);
	if (k < v->n_exp && v->exp[k].uid == uid) {
		*seq_r = v->exp[k].seq;
		return 0;
	}
	uint32_t idx = mailbox_rec_lower_bound(v->mbox, uid);
	if (idx >= v->mbox->n_recs || v->mbox->recs[idx].uid != uid)
		return -ENOENT;
	*seq_r = idx + 1 + k;
	return 0;
}

uint32_t view_uid_lower_bound(const struct view *v, uint32_t uid)
{
	if (v->kind == VIEW_POP3) {
		uint32_t lo = 0, hi = v->n_snap;
		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;
			if (v->snap[mid] < uid)
				lo = mid + 1;
			else
				hi = mid;
		}
		return lo + 1;
	}
	uint32_t a = mailbox_rec_lower_bound(v->mbox, uid);
	uint32_t present = imap_present(v);
	if (a > present)
		a = present;
	return a + exp_lower_uid(v, uid) + 1;
}

int view_msg_info(const struct view *v, uint32_t seq, struct mail_info *info)
{
	uint32_t uid;
	int r = view_seq_to_uid(v, seq, &uid);
	if (r < 0)
		return r;
	memset(info, 0, sizeof(*info));
	info->uid = uid;
	struct mail_rec *rec = mailbox_rec_find(v->mbox, uid);
	if (rec == NULL)
		return -ENOENT;
	info->flags = rec->flags;
	if (v->kind == VIEW_IMAP && uid >= v->recent_lo && uid < v->recent_hi)
		info->flags |= MAIL_RECENT;
	info->keywords = rec->keywords;
	info->modseq = rec->modseq;
	info->size = rec->size;
	info->internal_date = rec->idate;
	/* a back-end that keeps neither: the internal date, a hash of the stable key */
	info->save_date = rec->savedate != 0 ? rec->savedate : rec->idate;
	info->email_id =
		rec->emailid != 0
			? rec->emailid
			: mailbox_emailid_from_base(mailbox_rec_key(v->mbox, rec), rec->base_len);
	return 0;
}

static int view_rec(const struct view *v, uint32_t seq, struct mail_rec **rec_r)
{
	uint32_t uid;
	int r = view_seq_to_uid(v, seq, &uid);
	if (r < 0)
		return r;
	*rec_r = mailbox_rec_find(v->mbox, uid);
	return *rec_r != NULL ? 0 : -ENOENT;
}

int view_msg_uidl(const struct view *v, uint32_t seq, char *buf, size_t size)
{
	struct mail_rec *rec;
	int r = view_rec(v, seq, &rec);
	if (r < 0)
		return r;
	if (size < MAIL_UIDL_MAX + 1)
		return -ENOBUFS;
	uidlist_uidl_from_base(mailbox_rec_key(v->mbox, rec), rec->base_len, buf);
	return 0;
}

int view_msg_key(const struct view *v, uint32_t seq, char *buf, size_t size)
{
	struct mail_rec *rec;
	int r = view_rec(v, seq, &rec);
	if (r < 0)
		return r;
	if ((size_t)rec->base_len + 1 > size)
		return -ENOBUFS;
	memcpy(buf, mailbox_rec_key(v->mbox, rec), rec->base_len);
	buf[rec->base_len] = '\0';
	return 0;
}

int view_msg_open(const struct view *v, uint32_t seq, struct mail_stream **stream_r)
{
	uint32_t uid;
	int r = view_seq_to_uid(v, seq, &uid);
	if (r < 0)
		return r;
	struct mailbox *m = v->mbox;
	for (int attempt = 0; attempt < 2; attempt++) {
		struct mail_rec *rec = mailbox_rec_find(m, uid);
		if (rec == NULL)
			return -ENOENT;
		int fd;
		bool crlf;
		uint64_t size = rec->size;
		r = m->ops->open_msg(m, rec, &fd, &crlf);
		if (r == 0) {
			r = mail_stream_new_fd(fd, size, crlf, stream_r);
			return r;
		}
		if (r != -ENOENT)
			return r;
		/* renamed or removed behind our back: re-read the folder and try once more */
		m->ops->refresh(m, true);
	}
	return -ENOENT;
}

/* ---- sync ------------------------------------------------------------------------------- */

int view_sync(struct view *v, unsigned sync_flags, const struct view_sync_handler *h, void *ctx)
{
	v->dirty = false;
	v->notified = false;
	if (v->kind != VIEW_IMAP)
		return 0;
	if (!(sync_flags & VIEW_SYNC_NO_EXPUNGE)) {
		for (uint32_t j = 0; j < v->n_exp; j++)
			if (h != NULL && h->expunge != NULL)
				h->expunge(ctx, v->exp[j].seq - j, v->exp[j].uid);
		v->n_exp = 0;
		if (v->cap_exp > 64) {
			free(v->exp);
			v->exp = NULL;
			v->cap_exp = 0;
		}
	}
	uint32_t before = imap_present(v);
	struct mailbox *m = v->mbox;
	if (m->uidnext != v->synced_uidnext) {
		v->synced_uidnext = m->uidnext;
		claim_recent(v);
	}
	if (imap_present(v) != before) {
		if (h != NULL && h->exists != NULL)
			h->exists(ctx, view_count(v));
		if (h != NULL && h->recent != NULL)
			h->recent(ctx, view_recent_count(v));
	}
	for (uint32_t i = 0; i < v->n_fl; i++) {
		uint32_t seq;
		struct mail_info info;
		if (view_uid_to_seq(v, v->fl[i], &seq) < 0)
			continue;
		if (view_msg_info(v, seq, &info) < 0)
			continue;
		if (h != NULL && h->flags != NULL)
			h->flags(ctx, seq, &info);
	}
	v->n_fl = 0;
	if (v->cap_fl > 64) {
		free(v->fl);
		v->fl = NULL;
		v->cap_fl = 0;
	}
	return 0;
}

static int expunge_deleted(struct view *v, const uint32_t *uids, size_t n, mailbox_sync_cb *cb,
			   void *data)
{
	if (v->kind != VIEW_IMAP)
		return -EINVAL;
	struct mailbox *m = v->mbox;
	uint32_t present = imap_present(v);
	uint32_t *del = malloc(((size_t)present + 1) * sizeof(*del));
	if (del == NULL)
		return -ENOMEM;
	size_t n_del = 0;
	if (uids == NULL) {
		for (uint32_t i = 0; i < present; i++)
			if (m->recs[i].flags & MAIL_DELETED)
				del[n_del++] = m->recs[i].uid;
	} else {
		for (size_t i = 0; i < n && n_del < present; i++) {
			if (uids[i] >= v->synced_uidnext)
				continue;
			struct mail_rec *rec = mailbox_rec_find(m, uids[i]);
			if (rec != NULL && (rec->flags & MAIL_DELETED))
				del[n_del++] = uids[i];
		}
	}
	int r = cb != NULL ? mailbox_expunge_async(m, del, n_del, cb, data)
			   : mailbox_expunge(m, del, n_del);
	free(del);
	return r;
}

int view_expunge_deleted(struct view *v, const uint32_t *uids, size_t n)
{
	return expunge_deleted(v, uids, n, NULL, NULL);
}

int view_expunge_deleted_async(struct view *v, const uint32_t *uids, size_t n, mailbox_sync_cb *cb,
			       void *data)
{
	return expunge_deleted(v, uids, n, cb, data);
}

/* ---- POP3 ------------------------------------------------------------------------------- */

int view_pop3_delete(struct view *v, uint32_t seq)
{
	if (v->kind != VIEW_POP3)
		return -EINVAL;
	if (seq == 0 || seq > v->n_snap)
		return -ERANGE;
	uint32_t i = seq - 1;
	if (v->dele[i / 8] & (1u << (i % 8)))
		return -EALREADY;
	if (mailbox_rec_find(v->mbox, v->snap[i]) == NULL)
		return -ENOENT;
	v->dele[i / 8] |= (uint8_t)(1u << (i % 8));
	return 0;
}

bool view_pop3_is_deleted(const struct view *v, uint32_t seq)
{
	if (v->kind != VIEW_POP3 || seq == 0 || seq > v->n_snap)
		return false;
	uint32_t i = seq - 1;
	return (v->dele[i / 8] & (1u << (i % 8))) != 0;
}

void view_pop3_reset(struct view *v)
{
	if (v->kind == VIEW_POP3)
		memset(v->dele, 0, (size_t)v->n_snap / 8 + 1);
}

static int pop3_commit(struct view *v, enum pop3_delete_policy policy, mailbox_sync_cb *cb,
		       void *data)
{
	if (v->kind != VIEW_POP3)
		return -EINVAL;
	uint32_t *uids = malloc(((size_t)v->n_snap + 1) * sizeof(*uids));
	if (uids == NULL)
		return -ENOMEM;
	size_t n = 0;
	for (uint32_t i = 0; i < v->n_snap; i++)
		if (v->dele[i / 8] & (1u << (i % 8)))
			uids[n++] = v->snap[i];
	int r = 0;
	if (n > 0 || cb != NULL) {
		if (policy == POP3_DELETE_EXPUNGE) {
			r = cb != NULL ? mailbox_expunge_async(v->mbox, uids, n, cb, data)
				       : mailbox_expunge(v->mbox, uids, n);
		} else {
			unsigned idx;
			r = n == 0 ? 0
				   : mailbox_keyword_index(v->mbox, MAIL_KEYWORD_POP3_DELETED, true,
							   &idx);
			if (r == 0 && cb != NULL)
				r = mailbox_store_flags_async(v->mbox, NULL, uids, n, FLAG_OP_ADD,
							      0, n ? 1u << idx : 0, cb, data);
			else if (r == 0)
				r = mailbox_store_flags(v->mbox, NULL, uids, n, FLAG_OP_ADD, 0,
							1u << idx);
		}
	}
	free(uids);
	if (r == 0)
		view_pop3_reset(v);
	return r;
}

int view_pop3_commit(struct view *v, enum pop3_delete_policy policy)
{
	return pop3_commit(v, policy, NULL, NULL);
}

int view_pop3_commit_async(struct view *v, enum pop3_delete_policy policy, mailbox_sync_cb *cb,
			   void *data)
{
	return pop3_commit(v, policy, cb, data);
}
