/* imap_condstore — what CONDSTORE and QRESYNC (RFC 7162) share between the commands: turning
 * CONDSTORE on, mod-sequence arguments, and VANISHED responses.
 *
 * VANISHED lists are written as ranges while they are found, never collected whole, and split
 * into lines of at most IMAP_VANISHED_LINE bytes (RFC 7162 §3.2.10 allows any number of
 * VANISHED responses; RFC 2683 as updated by RFC 7162 §4 asks for lines of about 8 KiB).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_internal.h"

void imap_condstore_enable(struct imap_session *s)
{
	if (s->condstore)
		return;
	s->condstore = true;
	/* RFC 7162 §3.1: a mailbox selected before CONDSTORE was on gets its HIGHESTMODSEQ. */
	if (s->view)
		conn_printf(s->conn, "* OK [HIGHESTMODSEQ %llu] Highest\r\n",
			    (unsigned long long)mailbox_highest_modseq(view_mailbox(s->view)));
}

bool imap_arg_modseq(const struct imap_arg *arg, bool zero_ok, uint64_t *modseq_r)
{
	const char *str;
	if (!imap_arg_get_atom(arg, &str) || str[0] < '0' || str[0] > '9' || arg->len > 19)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < arg->len; i++) {
		if (str[i] < '0' || str[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(str[i] - '0');
	}
	/* mod-sequence-valzer: 0..2^63-1 (19 digits stay below 2^64) */
	if (v > INT64_MAX || (v == 0 && !zero_ok))
		return false;
	*modseq_r = v;
	return true;
}

void imap_vanished_init(struct imap_vanished *w, struct imap_session *s, bool earlier)
{
	memset(w, 0, sizeof(*w));
	w->s = s;
	w->earlier = earlier;
}

static void vanished_put(struct imap_vanished *w)
{
	char tmp[32];
	int k;
	if (w->lo == w->hi)
		k = snprintf(tmp, sizeof(tmp), "%u", w->lo);
	else
		k = snprintf(tmp, sizeof(tmp), "%u:%u", w->lo, w->hi);
	if (w->len > 0 && w->len + 1 + (size_t)k > sizeof(w->line))
		imap_vanished_flush(w);
	if (w->len > 0)
		w->line[w->len++] = ',';
	memcpy(w->line + w->len, tmp, (size_t)k);
	w->len += (size_t)k;
	w->pending = false;
}

void imap_vanished_add(struct imap_vanished *w, uint32_t lo, uint32_t hi)
{
	if (w->pending && w->hi != UINT32_MAX && lo == w->hi + 1) {
		w->hi = hi;
		return;
	}
	if (w->pending)
		vanished_put(w);
	w->lo = lo;
	w->hi = hi;
	w->pending = true;
}

void imap_vanished_flush(struct imap_vanished *w)
{
	if (w->pending)
		vanished_put(w);
	if (w->len == 0)
		return;
	conn_printf(w->s->conn, "* VANISHED %s%.*s\r\n", w->earlier ? "(EARLIER) " : "",
		    (int)w->len, w->line);
	w->len = 0;
}

int imap_vanished_earlier(struct imap_session *s, uint64_t modseq, const struct imap_seqset *known)
{
	struct mailbox *mbox = view_mailbox(s->view);
	uint32_t *uids;
	size_t n;
	int r = mailbox_expunged_since(mbox, modseq, &uids, &n);
	if (r < 0)
		return r;
	struct imap_vanished w;
	imap_vanished_init(&w, s, true);
	if (r == 1) {
		/* Exact: the expunges after MODSEQ that lie in KNOWN. */
		for (size_t i = 0; i < n; i++)
			if (!known || imap_seqset_contains(known, uids[i]))
				imap_vanished_add(&w, uids[i], uids[i]);
		free(uids);
		imap_vanished_flush(&w);
		return 0;
	}
	/* Not remembered that far back: every UID of KNOWN (default 1:UIDNEXT-1) the mailbox
	 * does not hold (RFC 7162 §3.2.5.2). */
	uint32_t top = mailbox_uidnext(mbox) - 1;
	struct imap_seq_range all = {1, top};
	const struct imap_seq_range *ranges = known ? known->r : &all;
	size_t n_ranges = known ? known->n : (top > 0 ? 1 : 0);
	uint32_t count = view_count(s->view);
	for (size_t i = 0; i < n_ranges; i++) {
		uint32_t lo = ranges[i].lo, hi = ranges[i].hi < top ? ranges[i].hi : top;
		if (lo > hi)
			continue;
		uint32_t seq = view_uid_lower_bound(s->view, lo);
		uint32_t next = lo; /* first UID not yet accounted for */
		for (; seq <= count; seq++) {
			uint32_t u;
			if (view_seq_to_uid(s->view, seq, &u) < 0 || u > hi)
				break;
			if (u > next)
				imap_vanished_add(&w, next, u - 1);
			next = u + 1;
		}
		if (next <= hi && next != 0)
			imap_vanished_add(&w, next, hi);
	}
	imap_vanished_flush(&w);
	return 0;
}
