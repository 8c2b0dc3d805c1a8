/* mailbox_pop3 — POP3 retention on the shared mailbox (storage.h, "POP3 retention"): when
 * each message was first downloaded whole over POP3, and the expiry that reads it
 * (pop3_expire_days, RFC 2449 EXPIRE).
 *
 * The times live in the back-end's retrieval record (pop3_retrieved.h), read on first use
 * into mbox->pop3_ret (ascending uid, 16 bytes a retrieved message). Disk first: a batch of
 * marks is appended durably before memory takes it. The record is keyed by UID under the
 * folder's UIDVALIDITY, so a rebuilt UID list (new UIDVALIDITY) discards it: no message is
 * then expired until it is downloaded again, never a wrong one.
 */
#include "mailbox_private.h"
#include "pop3_retrieved.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Rewrite the record instead of appending when it holds this many lines more than twice the
 * live records (records of expunged messages are garbage). */
#define POP3_RET_COMPACT_SLACK 1000
#define SECONDS_PER_DAY        86400

static size_t ret_lower(const struct mailbox *m, uint32_t uid)
{
	size_t lo = 0, hi = m->n_pop3_ret;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->pop3_ret[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static const struct pop3_ret *ret_find(const struct mailbox *m, uint32_t uid)
{
	size_t i = ret_lower(m, uid);
	return i < m->n_pop3_ret && m->pop3_ret[i].uid == uid ? &m->pop3_ret[i] : NULL;
}

/* Records of messages no longer in the mailbox go (UIDs are never reused). */
static size_t ret_prune(struct mailbox *m, struct pop3_ret *ents, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (mailbox_rec_find(m, ents[i].uid) != NULL)
			ents[k++] = ents[i];
	return k;
}

/* Read the record for the current UIDVALIDITY, once. */
static int ret_load(struct mailbox *m)
{
	if (m->pop3_ret_uidvalidity != 0 && m->pop3_ret_uidvalidity == m->uidvalidity)
		return 0;
	struct pop3_ret_file f;
	int r = m->ops->pop3_ret_read(m, &f);
	if (r < 0)
		return r;
	free(m->pop3_ret);
	m->pop3_ret = f.ents;
	m->n_pop3_ret = ret_prune(m, f.ents, f.n);
	m->pop3_ret_dead = 0;
	m->pop3_ret_lines = f.lines;
	m->pop3_ret_rewrite = f.rewrite;
	m->pop3_ret_uidvalidity = m->uidvalidity;
	return 0;
}

void mailbox_pop3_on_expunge(struct mailbox *m, uint32_t uid)
{
	if (m->pop3_ret_uidvalidity != 0 && ret_find(m, uid) != NULL)
		m->pop3_ret_dead++;
}

static int cmp_ret_uid(const void *a, const void *b)
{
	const struct pop3_ret *x = a, *y = b;
	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

int mailbox_pop3_mark_retrieved(struct mailbox *m, const uint32_t *uids, size_t n, int64_t now)
{
	if (m->gone)
		return -ENOENT;
	if (n == 0)
		return 0;
	int r = ret_load(m);
	if (r < 0)
		return r;
	struct pop3_ret *add = malloc(n * sizeof(*add));
	if (add == NULL)
		return -ENOMEM;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (mailbox_rec_find(m, uids[i]) != NULL && ret_find(m, uids[i]) == NULL)
			add[k++] = (struct pop3_ret){.uid = uids[i], .time = now};
	if (k > 1) {
		qsort(add, k, sizeof(*add), cmp_ret_uid);
		size_t u = 1;
		for (size_t i = 1; i < k; i++)
			if (add[i].uid != add[u - 1].uid)
				add[u++] = add[i];
		k = u;
	}
	if (k == 0) {
		free(add);
		return 0;
	}
	struct pop3_ret *merged = malloc((m->n_pop3_ret + k) * sizeof(*merged));
	if (merged == NULL) {
		free(add);
		return -ENOMEM;
	}
	size_t a = 0, b = 0, nm = 0;
	while (a < m->n_pop3_ret || b < k) {
		if (b == k || (a < m->n_pop3_ret && m->pop3_ret[a].uid < add[b].uid))
			merged[nm++] = m->pop3_ret[a++];
		else
			merged[nm++] = add[b++];
	}
	size_t live = nm - m->pop3_ret_dead;
	bool rewrite =
		m->pop3_ret_rewrite || m->pop3_ret_lines + k > 2 * live + POP3_RET_COMPACT_SLACK;
	if (!rewrite) {
		r = m->ops->pop3_ret_write(m, add, k, true);
		if (r == 0)
			m->pop3_ret_lines += k;
		else
			rewrite = true; /* a partial line may end the file now: write it whole */
	}
	if (rewrite) {
		nm = ret_prune(m, merged, nm);
		r = m->ops->pop3_ret_write(m, merged, nm, false);
		if (r == 0) {
			m->pop3_ret_lines = nm;
			m->pop3_ret_dead = 0;
		}
		m->pop3_ret_rewrite = r < 0;
	}
	free(add);
	if (r < 0) {
		free(merged);
		return r;
	}
	/* disk first, then memory */
	free(m->pop3_ret);
	m->pop3_ret = merged;
	m->n_pop3_ret = nm;
	return 0;
}

int mailbox_pop3_retrieved_time(struct mailbox *m, uint32_t uid, int64_t *time_r)
{
	if (m->gone)
		return -ENOENT;
	int r = ret_load(m);
	if (r < 0)
		return r;
	const struct pop3_ret *e = ret_find(m, uid);
	if (e == NULL || mailbox_rec_find(m, uid) == NULL)
		return -ENOENT;
	*time_r = e->time;
	return 0;
}

int mailbox_pop3_expire(struct mailbox *m, unsigned days, int64_t now,
			enum pop3_delete_policy policy, uint32_t *n_r)
{
	*n_r = 0;
	if (days == 0)
		return 0;
	if (m->gone)
		return -ENOENT;
	if (m->pop3_view != NULL)
		return -EBUSY;
	int r = ret_load(m);
	if (r < 0)
		return r;
	unsigned hide_idx;
	uint32_t hide = 0;
	if (mailbox_keyword_index(m, MAIL_KEYWORD_POP3_DELETED, false, &hide_idx) == 0)
		hide = 1u << hide_idx;
	/* retrieved more than DAYS days ago: time < now - days */
	int64_t cutoff = now - (int64_t)days * SECONDS_PER_DAY;
	uint32_t *uids = malloc((m->n_pop3_ret + 1) * sizeof(*uids));
	if (uids == NULL)
		return -ENOMEM;
	size_t k = 0;
	for (size_t i = 0; i < m->n_pop3_ret; i++) {
		if (m->pop3_ret[i].time >= cutoff)
			continue;
		const struct mail_rec *rec = mailbox_rec_find(m, m->pop3_ret[i].uid);
		if (rec != NULL && !(rec->keywords & hide))
			uids[k++] = rec->uid;
	}
	if (k > 0 && policy == POP3_DELETE_EXPUNGE) {
		r = mailbox_expunge(m, uids, k);
	} else if (k > 0) {
		r = mailbox_keyword_index(m, MAIL_KEYWORD_POP3_DELETED, true, &hide_idx);
		if (r == 0) {
			hide = 1u << hide_idx;
			r = mailbox_store_flags(m, NULL, uids, k, FLAG_OP_ADD, 0, hide);
		}
	}
	/* what was done, also when a failure stopped part way */
	uint32_t done = 0;
	for (size_t i = 0; i < k; i++) {
		const struct mail_rec *rec = mailbox_rec_find(m, uids[i]);
		if (rec == NULL || (policy == POP3_DELETE_HIDE && (rec->keywords & hide)))
			done++;
	}
	free(uids);
	*n_r = done;
	return r;
}
