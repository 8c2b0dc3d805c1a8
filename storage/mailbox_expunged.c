/* mailbox_expunged — the expunged UIDs a mailbox remembers for QRESYNC (RFC 7162 §3.2.5,
 * VANISHED (EARLIER)).
 *
 * Each expunge is noted with the modseq the mailbox's HIGHESTMODSEQ moves to for it, in the
 * order the expunges happen (modseqs never decrease along the list). The list starts empty
 * when the folder is opened in this process (expunged_horizon = HIGHESTMODSEQ then) and keeps
 * the last MAILBOX_EXPUNGED_MAX expunges: when full, the older half is dropped and the
 * horizon moves up to the newest modseq dropped. A question about expunges after a modseq
 * below the horizon is answered "not known exactly" and the protocol falls back to reporting
 * every UID missing from the client's range, which RFC 7162 §3.2.5.2 allows.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mailbox_private.h"

struct mailbox_expunged {
	uint32_t uid;
	uint64_t modseq;
};

void mailbox_expunged_note(struct mailbox *mbox, uint32_t uid, uint64_t modseq)
{
	if (mbox->n_expunged == MAILBOX_EXPUNGED_MAX) {
		size_t drop = MAILBOX_EXPUNGED_MAX / 2;
		mbox->expunged_horizon = mbox->expunged[drop - 1].modseq;
		/* a batch split by the cut: its remaining entries are below the horizon too */
		memmove(mbox->expunged, mbox->expunged + drop,
			(mbox->n_expunged - drop) * sizeof(*mbox->expunged));
		mbox->n_expunged -= drop;
	}
	if (mbox->n_expunged == mbox->cap_expunged) {
		size_t cap = mbox->cap_expunged ? mbox->cap_expunged * 2 : 64;
		if (cap > MAILBOX_EXPUNGED_MAX)
			cap = MAILBOX_EXPUNGED_MAX;
		struct mailbox_expunged *n = realloc(mbox->expunged, cap * sizeof(*n));
		if (n == NULL) {
			/* cannot remember it: nothing before this expunge is known exactly */
			mbox->expunged_horizon = modseq;
			mbox->n_expunged = 0;
			return;
		}
		mbox->expunged = n;
		mbox->cap_expunged = cap;
	}
	mbox->expunged[mbox->n_expunged].uid = uid;
	mbox->expunged[mbox->n_expunged].modseq = modseq;
	mbox->n_expunged++;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

int mailbox_expunged_since(const struct mailbox *mbox, uint64_t modseq, uint32_t **uids_r,
			   size_t *n_r)
{
	*uids_r = NULL;
	*n_r = 0;
	if (modseq < mbox->expunged_horizon)
		return 0;
	/* first entry with a modseq above MODSEQ (the list is ordered by modseq) */
	size_t lo = 0, hi = mbox->n_expunged;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (mbox->expunged[mid].modseq <= modseq)
			lo = mid + 1;
		else
			hi = mid;
	}
	size_t n = mbox->n_expunged - lo;
	if (n > 0) {
		uint32_t *uids = malloc(n * sizeof(*uids));
		if (uids == NULL)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++)
			uids[i] = mbox->expunged[lo + i].uid;
		qsort(uids, n, sizeof(*uids), cmp_u32);
		*uids_r = uids;
		*n_r = n;
	}
	return 1;
}

uint64_t mailbox_expunged_horizon(const struct mailbox *mbox)
{
	return mbox->expunged_horizon;
}
