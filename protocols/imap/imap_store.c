/* imap_store — STORE, UID STORE (flags and keywords, .SILENT), COPY, UID COPY (UIDPLUS
 * COPYUID, RFC 4315), MOVE and UID MOVE (RFC 6851). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_internal.h"
#include "log.h"

/* The flags are changed at once; the FETCH responses that report them go out as output
 * drains (a STORE over a big mailbox never queues its whole answer). */
struct store_ctx {
	struct imap_sync_wait *wait; /* the change's durability, NULL once known */
	uint32_t *uids;
	size_t n, pos;
	bool expunged;
	bool silent;
	char *modified; /* UNCHANGEDSINCE failures as a set (RFC 7162 §3.1.3), or NULL */
};

static char *uid_list_format(const uint32_t *uids, size_t n);

struct imap_sync_wait *imap_sync_wait_new(struct imap_cmd *cmd)
{
	struct imap_sync_wait *w = calloc(1, sizeof(*w));
	if (w)
		w->cmd = cmd;
	return w;
}

void imap_sync_wait_cb(int err, void *data)
{
	struct imap_sync_wait *w = data;
	if (!w->cmd) {
		free(w);
		return;
	}
	w->err = err;
	w->done = true;
	imap_session_wakeup(w->cmd->s);
}

void imap_sync_wait_append_cb(int err, uint32_t uid, void *data)
{
	struct imap_sync_wait *w = data;
	w->uid = uid;
	imap_sync_wait_cb(err, data);
}

void imap_sync_wait_release(struct imap_sync_wait **wp)
{
	struct imap_sync_wait *w = *wp;
	*wp = NULL;
	if (!w)
		return;
	if (w->done)
		free(w);
	else
		w->cmd = NULL; /* the callback frees it */
}

static void store_ctx_free(struct imap_cmd *cmd)
{
	struct store_ctx *st = cmd->ctx;
	if (st) {
		imap_sync_wait_release(&st->wait);
		free(st->uids);
		free(st->modified);
		free(st);
	}
	cmd->ctx = NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static enum cmd_result store_report(struct imap_cmd *cmd, struct store_ctx *st)
{
	struct imap_session *s = cmd->s;
	while (st->pos < st->n) {
		if (conn_output_blocked(s->conn))
			return CMD_MORE;
		uint32_t seq;
		struct mail_info info;
		uint32_t uid = st->uids[st->pos++];
		if (view_uid_to_seq(s->view, uid, &seq) < 0 ||
		    view_msg_info(s->view, seq, &info) < 0)
			continue;
		imap_write_flags_fetch(s, seq, &info, cmd->uid, !st->silent);
	}
	if (st->expunged)
		imap_cmd_reply(cmd, "NO", "[EXPUNGEISSUED] Some messages were expunged meanwhile.");
	else if (st->modified)
		imap_cmd_reply(cmd, "OK", "[MODIFIED %s] Conditional STORE failed.", st->modified);
	else
		imap_cmd_reply(cmd, "OK", "Store completed.");
	return CMD_DONE;
}

enum cmd_result imap_cmd_store(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	struct store_ctx *st = cmd->ctx;
	if (st && st->wait) {
		if (!st->wait->done)
			return CMD_MORE;
		int err = st->wait->err;
		imap_sync_wait_release(&st->wait);
		if (err < 0) {
			imap_cmd_reply_error(cmd, err);
			return CMD_DONE;
		}
	}
	if (st)
		return store_report(cmd, st);
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	/* (UNCHANGEDSINCE modseq) before the item (RFC 7162 §3.1.3, RFC 4466 §2.5) */
	bool unchanged_set = false;
	uint64_t unchangedsince = 0;
	if (args[0].type != IMAP_ARG_EOL && args[1].type == IMAP_ARG_LIST) {
		const struct imap_arg *m = args[1].list;
		if (args[1].list_count != 2 || !imap_arg_is(&m[0], "UNCHANGEDSINCE") ||
		    !imap_arg_modseq(&m[1], true, &unchangedsince)) {
			imap_cmd_reply(cmd, "BAD", "Invalid STORE modifiers.");
			return CMD_DONE;
		}
		unchanged_set = true;
		args++; /* args[0] stays the set: shift the rest by one below */
	}
	const struct imap_arg *set_arg = unchanged_set ? &args[-1] : &args[0];
	const char *item;
	if (set_arg->type == IMAP_ARG_EOL || !imap_arg_get_atom(&args[1], &item) ||
	    args[2].type == IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "STORE needs a sequence set, an item and flags.");
		return CMD_DONE;
	}
	enum flag_op op = FLAG_OP_REPLACE;
	if (item[0] == '+') {
		op = FLAG_OP_ADD;
		item++;
	} else if (item[0] == '-') {
		op = FLAG_OP_REMOVE;
		item++;
	}
	bool silent;
	if (strcasecmp(item, "FLAGS") == 0) {
		silent = false;
	} else if (strcasecmp(item, "FLAGS.SILENT") == 0) {
		silent = true;
	} else {
		imap_cmd_reply(cmd, "BAD", "Invalid STORE item.");
		return CMD_DONE;
	}
	if (s->readonly) {
		imap_cmd_reply(cmd, "NO", "[READ-ONLY] Mailbox is read-only.");
		return CMD_DONE;
	}
	/* Flags: one list, or flags separated by spaces. */
	unsigned flags = 0;
	uint32_t keywords = 0;
	const char *err;
	for (const struct imap_arg *a = &args[2]; a->type != IMAP_ARG_EOL; a++) {
		unsigned f;
		uint32_t k;
		if ((a->type == IMAP_ARG_LIST && a != &args[2]) ||
		    (a->type == IMAP_ARG_LIST && a[1].type != IMAP_ARG_EOL)) {
			imap_cmd_reply(cmd, "BAD", "Invalid flag list.");
			return CMD_DONE;
		}
		r = imap_parse_flag_list(s, a, op != FLAG_OP_REMOVE, &f, &k, &err);
		if (r < 0) {
			imap_cmd_reply(cmd, r == -EINVAL ? "BAD" : "NO", "%s", err);
			return CMD_DONE;
		}
		flags |= f;
		keywords |= k;
	}
	if (unchanged_set)
		imap_condstore_enable(s); /* CONDSTORE-enabling (RFC 7162 §3.1) */
	struct imap_seqset set;
	imap_seqset_init(&set);
	if (!imap_arg_seqset(cmd, set_arg, &set)) {
		imap_seqset_free(&set);
		return CMD_DONE;
	}
	uint32_t *uids;
	size_t n;
	r = imap_seqset_to_uids(s, &set, cmd->uid, &uids, &n);
	imap_seqset_free(&set);
	if (r < 0) {
		if (r == -EINVAL)
			imap_cmd_reply(cmd, "BAD", "Invalid message sequence number.");
		else
			imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	/* Messages expunged meanwhile are left alone (RFC 2180 §4.2). */
	bool expunged = false;
	size_t live = 0, n_mod = 0;
	uint32_t *mod = NULL; /* failed UNCHANGEDSINCE: sequence numbers, or UIDs for UID STORE */
	if (unchanged_set && n > 0 && !(mod = malloc(n * sizeof(*mod)))) {
		free(uids);
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return CMD_DONE;
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t seq;
		struct mail_info info;
		if (view_uid_to_seq(s->view, uids[i], &seq) == 0 &&
		    view_msg_info(s->view, seq, &info) == 0) {
			if (unchanged_set && info.modseq > unchangedsince)
				mod[n_mod++] = cmd->uid ? uids[i] : seq;
			else
				uids[live++] = uids[i];
		} else {
			expunged = true;
		}
	}
	char *modified = NULL;
	if (n_mod > 0) {
		qsort(mod, n_mod, sizeof(*mod), cmp_u32);
		modified = uid_list_format(mod, n_mod);
	}
	free(mod);
	if (n_mod > 0 && !modified) {
		free(uids);
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return CMD_DONE;
	}
	st = calloc(1, sizeof(*st));
	bool wait = live && imap_async_commit;
	struct imap_sync_wait *w = wait && st ? imap_sync_wait_new(cmd) : NULL;
	if (!st || (wait && !w)) {
		free(st);
		free(uids);
		free(modified);
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return CMD_DONE;
	}
	/* OK once durable: the fsyncs run on the thread pool (group commit) */
	if (wait)
		r = mailbox_store_flags_async(view_mailbox(s->view), s->view, uids, live, op, flags,
					      keywords, imap_sync_wait_cb, w);
	else if (live)
		r = mailbox_store_flags(view_mailbox(s->view), s->view, uids, live, op, flags,
					keywords);
	else
		r = 0;
	if (r < 0) {
		free(w);
		free(st);
		free(uids);
		free(modified);
		imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	st->wait = w;
	st->uids = uids;
	/* With CONDSTORE on, .SILENT still reports each new MODSEQ (RFC 7162 §3.1.3). */
	st->n = silent && !s->condstore ? 0 : live;
	st->silent = silent;
	st->modified = modified;
	st->expunged = expunged;
	cmd->ctx = st;
	cmd->ctx_free = store_ctx_free;
	return st->wait ? CMD_MORE : store_report(cmd, st);
}

/* A UID list in the given order as a sequence set ("4:6,2"), into a malloc'd string. */
static char *uid_list_format(const uint32_t *uids, size_t n)
{
	size_t cap = n * 22 + 1, o = 0;
	char *out = malloc(cap);
	if (!out)
		return NULL;
	out[0] = '\0';
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j + 1 < n && uids[j + 1] == uids[j] + 1)
			j++;
		if (j == i)
			o += (size_t)snprintf(out + o, cap - o, "%s%u", o ? "," : "", uids[i]);
		else
			o += (size_t)snprintf(out + o, cap - o, "%s%u:%u", o ? "," : "", uids[i],
					      uids[j]);
		i = j + 1;
	}
	return out;
}

static enum cmd_result copy_common(struct imap_cmd *cmd, bool move)
{
	struct imap_session *s = cmd->s;
	if (!imap_quota_ready(cmd))
		return CMD_MORE;
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	if (args[0].type == IMAP_ARG_EOL || args[1].type == IMAP_ARG_EOL ||
	    args[2].type != IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "%s needs a sequence set and a mailbox.",
			       move ? "MOVE" : "COPY");
		return CMD_DONE;
	}
	char name[STORE_NAME_MAX + 1];
	if (!imap_arg_mailbox(cmd, &args[1], name))
		return CMD_DONE;
	if (move && s->readonly) {
		imap_cmd_reply(cmd, "NO", "[READ-ONLY] Mailbox is read-only.");
		return CMD_DONE;
	}
	struct imap_seqset set;
	imap_seqset_init(&set);
	if (!imap_arg_seqset(cmd, &args[0], &set)) {
		imap_seqset_free(&set);
		return CMD_DONE;
	}
	uint32_t *uids;
	size_t n;
	r = imap_seqset_to_uids(s, &set, cmd->uid, &uids, &n);
	imap_seqset_free(&set);
	if (r < 0) {
		if (r == -EINVAL)
			imap_cmd_reply(cmd, "BAD", "Invalid message sequence number.");
		else
			imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	struct mailbox *src = view_mailbox(s->view), *dst;
	r = mailbox_open(s->store, name, &dst);
	if (r < 0) {
		free(uids);
		if (r == -ENOENT)
			imap_cmd_reply(cmd, "NO", "[TRYCREATE] Mailbox doesn't exist.");
		else
			imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	if (move && dst == src) {
		free(uids);
		mailbox_unref(&dst);
		imap_cmd_reply(cmd, "NO", "[CANNOT] Source and destination are the same.");
		return CMD_DONE;
	}
	uint32_t *new_uids = calloc(n ? n : 1, sizeof(*new_uids));
	if (!new_uids) {
		free(uids);
		mailbox_unref(&dst);
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return CMD_DONE;
	}
	if (n)
		r = move ? mailbox_move(src, uids, n, dst, new_uids)
			 : mailbox_copy(src, uids, n, dst, new_uids);
	uint32_t dst_validity = mailbox_uidvalidity(dst);
	mailbox_unref(&dst);
	if (r < 0) {
		free(uids);
		free(new_uids);
		imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	/* COPYUID lists the pairs that were copied, in matching order. */
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (new_uids[i]) {
			uids[k] = uids[i];
			new_uids[k] = new_uids[i];
			k++;
		}
	}
	char *from = k ? uid_list_format(uids, k) : NULL;
	char *to = k ? uid_list_format(new_uids, k) : NULL;
	free(uids);
	free(new_uids);
	/* Very long lists are left out (the reply text is bounded); COPYUID is optional. */
	if (from && to && strlen(from) + strlen(to) < 900) {
		if (move) {
			conn_printf(s->conn, "* OK [COPYUID %u %s %s] Moved UIDs.\r\n",
				    dst_validity, from, to);
		} else {
			imap_cmd_reply(cmd, "OK", "[COPYUID %u %s %s] Copy completed.",
				       dst_validity, from, to);
			free(from);
			free(to);
			return CMD_DONE;
		}
	}
	free(from);
	free(to);
	/* Messages another session expunged are left out (RFC 2180 choice, README): once any
	 * was copied the answer is OK, as a NO would tell the client the destination is as
	 * before (RFC 9051 §6.4.7); NO [EXPUNGEISSUED] only when nothing was left to copy. */
	if (k == 0 && n > 0)
		imap_cmd_reply(cmd, "NO", "[EXPUNGEISSUED] Some messages were expunged meanwhile.");
	else
		imap_cmd_reply(cmd, "OK", "%s completed.", move ? "Move" : "Copy");
	return CMD_DONE;
}

enum cmd_result imap_cmd_copy(struct imap_cmd *cmd)
{
	return copy_common(cmd, false);
}

enum cmd_result imap_cmd_move(struct imap_cmd *cmd)
{
	return copy_common(cmd, true);
}
