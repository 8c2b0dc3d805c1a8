/* imap_mailbox — the selected mailbox and folder commands: SELECT, EXAMINE, CLOSE, UNSELECT,
 * EXPUNGE, UID EXPUNGE, CHECK, IDLE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST,
 * LSUB, STATUS, NAMESPACE; and the untagged announcements a view owes (EXISTS, RECENT,
 * EXPUNGE, FETCH FLAGS), sent only before a tagged reply or while idling (RFC 9051 §7.5.1,
 * RFC 2180): never an EXPUNGE during FETCH, STORE or SEARCH. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "imap_internal.h"
#include "log.h"
#include "imap_utf7.h"
#include "msg_imapstr.h"

static void write_astring(struct imap_session *s, const char *str);

/* ---------------------------------------------------------------------------------------- */
/* Flags                                                                                     */

static const struct {
	unsigned flag;
	const char *name;
} system_flags[] = {
	{MAIL_ANSWERED, "\\Answered"}, {MAIL_FLAGGED, "\\Flagged"}, {MAIL_DELETED, "\\Deleted"},
	{MAIL_SEEN, "\\Seen"},         {MAIL_DRAFT, "\\Draft"},
};

size_t imap_format_flags(const struct mailbox *mbox, unsigned flags, uint32_t keywords, bool recent,
			 char *out, size_t size)
{
	size_t o = 0;
	out[0] = '\0';
#define ADD(str)                                                                                   \
	do {                                                                                       \
		int k_ = snprintf(out + o, o < size ? size - o : 0, "%s%s", o ? " " : "", str);    \
		o += (size_t)k_;                                                                   \
	} while (0)
	for (size_t i = 0; i < sizeof(system_flags) / sizeof(system_flags[0]); i++)
		if (flags & system_flags[i].flag)
			ADD(system_flags[i].name);
	if (recent && (flags & MAIL_RECENT))
		ADD("\\Recent");
	unsigned nk = mailbox_keyword_count(mbox);
	for (unsigned i = 0; i < nk && i < 32; i++)
		if (keywords & (1u << i))
			ADD(mailbox_keyword_name(mbox, i));
#undef ADD
	if (o >= size)
		out[size - 1] = '\0';
	return o;
}

int imap_parse_flag_list(struct imap_session *s, const struct imap_arg *arg, bool create,
			 unsigned *flags_r, uint32_t *keywords_r, const char **error_r)
{
	const struct imap_arg *list = arg;
	unsigned n = 1;
	if (arg->type == IMAP_ARG_LIST) {
		list = arg->list;
		n = arg->list_count;
	}
	*flags_r = 0;
	*keywords_r = 0;
	for (unsigned i = 0; i < n; i++) {
		const char *name;
		if (!imap_arg_get_atom(&list[i], &name)) {
			*error_r = "Invalid flag.";
			return -EINVAL;
		}
		if (name[0] == '\\') {
			bool found = false;
			for (size_t k = 0; k < sizeof(system_flags) / sizeof(system_flags[0]);
			     k++) {
				if (strcasecmp(name, system_flags[k].name) == 0) {
					*flags_r |= system_flags[k].flag;
					found = true;
				}
			}
			if (!found && strcasecmp(name, "\\Recent") != 0) {
				*error_r = "Invalid system flag.";
				return -EINVAL;
			}
			continue;
		}
		if (!s->view && !s->flag_mbox) {
			*error_r = "Keywords need a mailbox.";
			return -EINVAL;
		}
		struct mailbox *mbox = s->flag_mbox ? s->flag_mbox : view_mailbox(s->view);
		unsigned idx;
		int r = mailbox_keyword_index(mbox, name, create, &idx);
		if (r == -ENOENT)
			continue; /* removing an unknown keyword: nothing to do */
		if (r < 0) {
			*error_r = r == -ENOSPC ? "[LIMIT] Too many keywords." : "Invalid keyword.";
			return r;
		}
		*keywords_r |= 1u << idx;
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Announcements                                                                             */

/* view_sync's context: with QRESYNC on, expunges are collected into one VANISHED. */
struct sync_state {
	struct imap_session *s;
	struct imap_vanished *vanished; /* NULL: "* n EXPUNGE" */
};

static void sync_expunge(void *ctx, uint32_t seq, uint32_t uid)
{
	struct sync_state *st = ctx;
	if (st->vanished)
		imap_vanished_add(st->vanished, uid, uid);
	else
		conn_printf(st->s->conn, "* %u EXPUNGE\r\n", seq);
}

static void sync_exists(void *ctx, uint32_t count)
{
	struct sync_state *st = ctx;
	if (st->vanished)
		imap_vanished_flush(st->vanished);
	conn_printf(st->s->conn, "* %u EXISTS\r\n", count);
}

static void sync_recent(void *ctx, uint32_t count)
{
	struct sync_state *st = ctx;
	if (!st->s->rev2)
		conn_printf(st->s->conn, "* %u RECENT\r\n", count);
}

void imap_write_flags_fetch(struct imap_session *s, uint32_t seq, const struct mail_info *info,
			    bool uid, bool flags)
{
	char fl[2048];
	conn_printf(s->conn, "* %u FETCH (", seq);
	const char *sp = "";
	if (uid || s->qresync) {
		/* RFC 7162 §3.2.4: with QRESYNC every FETCH carries the UID */
		conn_printf(s->conn, "UID %u", info->uid);
		sp = " ";
	}
	if (flags) {
		imap_format_flags(view_mailbox(s->view), info->flags, info->keywords, !s->rev2, fl,
				  sizeof(fl));
		conn_printf(s->conn, "%sFLAGS (%s)", sp, fl);
		sp = " ";
	}
	if (s->condstore)
		conn_printf(s->conn, "%sMODSEQ (%llu)", sp, (unsigned long long)info->modseq);
	conn_write_str(s->conn, ")\r\n");
}

static void sync_flags(void *ctx, uint32_t seq, const struct mail_info *info)
{
	struct sync_state *st = ctx;
	if (st->vanished)
		imap_vanished_flush(st->vanished);
	imap_write_flags_fetch(st->s, seq, info, true, true);
}

static const struct view_sync_handler sync_handler = {
	sync_expunge,
	sync_exists,
	sync_recent,
	sync_flags,
};

/* Send what the view owes. REFRESH: first look at the folder on disk (the cheap
 * directory check before a command is answered); a notification needs none (the folder
 * changed in memory: that is what it announces). */
static void session_sync(struct imap_session *s, bool allow_expunge, bool refresh)
{
	if (!s->view || conn_is_closing(s->conn))
		return;
	int r = refresh ? mailbox_refresh(view_mailbox(s->view)) : 0;
	if (r < 0)
		log_warn("conn=%llu event=imap_refresh_failed error=%s",
			 (unsigned long long)conn_id(s->conn), storage_error_text(r));
	struct imap_vanished *w = NULL;
	if (s->qresync && allow_expunge && (w = malloc(sizeof(*w))) != NULL)
		imap_vanished_init(w, s, false);
	struct sync_state st = {s, w};
	view_sync(s->view, allow_expunge && (w || !s->qresync) ? 0 : VIEW_SYNC_NO_EXPUNGE,
		  &sync_handler, &st);
	if (w) {
		imap_vanished_flush(w);
		free(w);
	}
}

void imap_session_sync(struct imap_session *s, bool allow_expunge)
{
	session_sync(s, allow_expunge, true);
}

/* The folder changed (a delivery the store has read, another session's change): an idling
 * session hears of it now. One re-read of the folder serves all its idlers: none of them
 * looks at the directories again here (10,000 idlers on 100 folders: 100 re-reads per
 * round of deliveries, not 10,000). */
static void view_notify(struct view *view, void *data)
{
	(void)view;
	struct imap_session *s = data;
	if (s->idling) {
		session_sync(s, true, false);
		conn_flush(s->conn);
	}
}

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                   */

/* A mailbox name as the client wants it: modified UTF-7 for IMAP4rev1, UTF-8 (a quoted
 * string) after ENABLE IMAP4rev2 or UTF8=ACCEPT. */
void imap_write_mailbox(struct imap_session *s, const char *name)
{
	char utf8[STORE_NAME_MAX * 4 + 1];
	if (!imap_utf8_names(s) || imap_utf7_to_utf8(name, utf8, sizeof(utf8)) < 0 ||
	    strcmp(utf8, name) == 0) {
		write_astring(s, name);
		return;
	}
	/* UTF-8 may go in a quoted string in IMAP4rev2 (RFC 9051 §4.3) and after UTF8=ACCEPT
	 * (RFC 6855 §3); names never hold
	 * CR, LF or NUL. */
	conn_write_str(s->conn, "\"");
	for (const char *p = utf8; *p; p++) {
		if (*p == '"' || *p == '\\')
			conn_write_str(s->conn, "\\");
		conn_write(s->conn, p, 1);
	}
	conn_write_str(s->conn, "\"");
}

static void write_astring(struct imap_session *s, const char *str)
{
	struct buf b;
	buf_init(&b, STORE_NAME_MAX * 2 + 32);
	if (msg_imapstr_astring(&b, str, strlen(str)) == 0)
		conn_write(s->conn, buf_peek(&b), buf_used(&b));
	else
		conn_write_str(s->conn, "\"\"");
	buf_clear(&b);
}

static const char *err_code(int err)
{
	switch (err) {
	case -ENOENT:
		return "[NONEXISTENT] ";
	case -EEXIST:
		return "[ALREADYEXISTS] ";
	case -EPERM:
	case -EACCES:
		return "[NOPERM] ";
	case -ENOSPC:
	case -EDQUOT:
		return "[OVERQUOTA] ";
	case -EINVAL:
		return "[CANNOT] ";
	case -ENOTEMPTY:
		return "[INUSE] ";
	case -EBUSY:
	case -EAGAIN: /* the folder is locked or changing right now: try again */
		return "[INUSE] ";
	default:
		return "[SERVERBUG] ";
	}
}

void imap_cmd_reply_error(struct imap_cmd *cmd, int err)
{
	const char *text;
	switch (err) {
	case -ENOENT:
		text = "Mailbox doesn't exist.";
		break;
	case -EEXIST:
		text = "Mailbox already exists.";
		break;
	default:
		text = storage_error_text(err);
		break;
	}
	imap_cmd_reply(cmd, "NO", "%s%s", err_code(err), text);
}

int imap_mailbox_name_in(struct imap_session *s, const char *name, char *out)
{
	char utf7[STORE_NAME_MAX * 4 + 1];
	if (imap_utf8_names(s)) {
		if (imap_utf8_to_utf7(name, utf7, sizeof(utf7)) < 0)
			return -EINVAL;
		name = utf7;
	}
	return store_name_normalize(name, out, STORE_NAME_MAX + 1) < 0 ? -EINVAL : 0;
}

/* A mailbox name argument, normalised into out (STORE_NAME_MAX + 1). False: answered. */
bool imap_arg_mailbox(struct imap_cmd *cmd, const struct imap_arg *arg, char *out)
{
	const char *name;
	size_t len;
	if (!imap_arg_get_astring(arg, &name, &len) || memchr(name, '\0', len)) {
		imap_cmd_reply(cmd, "BAD", "Invalid mailbox name.");
		return false;
	}
	if (imap_mailbox_name_in(cmd->s, name, out) < 0) {
		imap_cmd_reply(cmd, "NO", "[CANNOT] Invalid mailbox name.");
		return false;
	}
	return true;
}

/* Leave the selected mailbox (no expunge). */
void imap_session_unselect(struct imap_session *s)
{
	if (s->view)
		view_free(&s->view);
	if (s->state == IMAP_SELECTED)
		imap_set_state(s, IMAP_AUTH);
}

/* ---------------------------------------------------------------------------------------- */
/* SELECT / EXAMINE                                                                          */

/* A folder open on the thread pool outlives its session if the connection goes meanwhile:
 * the command only points at this, and the callback frees it. */
struct select_wait {
	struct imap_cmd *cmd; /* NULL once the command is gone */
	int err;
	struct mailbox *mbox;
	bool done;
};

struct select_ctx {
	struct select_wait *wait; /* NULL when opened in-line */
	/* SELECT mbox (QRESYNC (uidvalidity modseq [known-uids [seq-match]])), RFC 7162 §3.2.5 */
	bool qresync;
	uint32_t q_uidvalidity;
	uint64_t q_modseq;
	bool q_has_known;
	struct imap_seqset q_known;
	/* After the open: the messages changed since q_modseq go out as output drains. */
	bool reporting;
	uint32_t seq;
};

bool imap_async_open = true;
bool imap_async_commit = true;

static void select_ctx_free(struct imap_cmd *cmd)
{
	struct select_ctx *c = cmd->ctx;
	if (!c)
		return;
	if (c->wait) {
		if (c->wait->done) {
			mailbox_unref(&c->wait->mbox);
			free(c->wait);
		} else {
			c->wait->cmd = NULL; /* the callback frees it */
		}
	}
	imap_seqset_free(&c->q_known);
	free(c);
	cmd->ctx = NULL;
}

static void select_opened(int err, struct mailbox *mbox, void *data)
{
	struct select_wait *w = data;
	if (!w->cmd) {
		mailbox_unref(&mbox);
		free(w);
		return;
	}
	w->err = err;
	w->mbox = mbox;
	w->done = true;
	imap_session_wakeup(w->cmd->s);
}

/* A UID set with no `*` and no `$` (known-uids, seq-match parts). */
static bool parse_plain_set(const struct imap_arg *arg, struct imap_seqset *set)
{
	const char *str;
	if (!imap_arg_get_atom(arg, &str) || imap_seqset_parse(set, str, arg->len) < 0 ||
	    set->star || set->saved)
		return false;
	imap_seqset_normalize(set);
	return true;
}

/* The SELECT/EXAMINE parameter list (RFC 4466 §2.1): CONDSTORE, QRESYNC (...). NULL when
 * it is fine, else the BAD text. */
static const char *parse_select_params(struct imap_session *s, struct select_ctx *c,
				       const struct imap_arg *list, bool *condstore_r)
{
	*condstore_r = false;
	if (list->type != IMAP_ARG_LIST || list->list_count == 0)
		return "Invalid SELECT parameters.";
	const struct imap_arg *a = list->list;
	for (unsigned i = 0; i < list->list_count; i++) {
		if (imap_arg_is(&a[i], "CONDSTORE")) {
			*condstore_r = true;
			continue;
		}
		if (!imap_arg_is(&a[i], "QRESYNC") || i + 1 >= list->list_count ||
		    a[i + 1].type != IMAP_ARG_LIST)
			return "Invalid SELECT parameters.";
		if (!s->qresync)
			return "QRESYNC is not enabled.";
		const struct imap_arg *q = a[i + 1].list;
		unsigned nq = a[i + 1].list_count;
		i++;
		const char *str;
		uint64_t uv = 0;
		if (nq < 2 || nq > 4 || !imap_arg_get_atom(&q[0], &str) || q[0].len > 10)
			return "Invalid QRESYNC parameters.";
		for (size_t k = 0; k < q[0].len; k++) {
			if (str[k] < '0' || str[k] > '9')
				return "Invalid QRESYNC parameters.";
			uv = uv * 10 + (uint64_t)(str[k] - '0');
		}
		if (uv == 0 || uv > UINT32_MAX || !imap_arg_modseq(&q[1], false, &c->q_modseq))
			return "Invalid QRESYNC parameters.";
		c->q_uidvalidity = (uint32_t)uv;
		c->qresync = true;
		if (nq >= 3) {
			if (!parse_plain_set(&q[2], &c->q_known))
				return "Invalid QRESYNC known UIDs.";
			c->q_has_known = true;
		}
		if (nq == 4) {
			/* seq-match-data: checked, then not needed (the expunges are known, or
			 * every missing UID is reported) */
			struct imap_seqset seqs, uids;
			imap_seqset_init(&seqs);
			imap_seqset_init(&uids);
			bool ok = q[3].type == IMAP_ARG_LIST && q[3].list_count == 2 &&
				  parse_plain_set(&q[3].list[0], &seqs) &&
				  parse_plain_set(&q[3].list[1], &uids) &&
				  imap_seqset_count(&seqs) == imap_seqset_count(&uids);
			imap_seqset_free(&seqs);
			imap_seqset_free(&uids);
			if (!ok)
				return "Invalid QRESYNC sequence match data.";
		}
	}
	return NULL;
}

/* Messages changed since the client's modseq, as FETCH (UID FLAGS MODSEQ), then the reply. */
static enum cmd_result select_report(struct imap_cmd *cmd, struct select_ctx *c)
{
	struct imap_session *s = cmd->s;
	uint32_t count = view_count(s->view);
	while (c->seq <= count) {
		if (conn_is_closing(s->conn))
			return CMD_DONE;
		if (conn_output_blocked(s->conn))
			return CMD_MORE;
		struct mail_info info;
		if (view_msg_info(s->view, c->seq, &info) == 0 && info.modseq > c->q_modseq)
			imap_write_flags_fetch(s, c->seq, &info, true, true);
		c->seq++;
	}
	imap_cmd_reply(cmd, "OK", "[%s] %s completed.", s->readonly ? "READ-ONLY" : "READ-WRITE",
		       s->readonly ? "Examine" : "Select");
	return CMD_DONE;
}

static enum cmd_result select_common(struct imap_cmd *cmd, bool readonly)
{
	struct imap_session *s = cmd->s;
	struct select_ctx *c = cmd->ctx;
	struct mailbox *mbox = NULL;
	int r;
	if (c && c->reporting) {
		return select_report(cmd, c);
	} else if (c) {
		/* Waiting for the open on the thread pool. */
		if (!c->wait->done)
			return CMD_MORE;
		r = c->wait->err;
		mbox = c->wait->mbox;
		c->wait->mbox = NULL;
	} else {
		const struct imap_arg *args;
		r = imap_cmd_read_args(cmd, &args);
		if (r <= 0)
			return r == 0 ? CMD_MORE : CMD_DONE;
		char name[STORE_NAME_MAX + 1];
		if (!imap_arg_mailbox(cmd, &args[0], name))
			return CMD_DONE;
		c = calloc(1, sizeof(*c));
		if (!c) {
			imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
			return CMD_DONE;
		}
		imap_seqset_init(&c->q_known);
		cmd->ctx = c;
		cmd->ctx_free = select_ctx_free;
		bool condstore = false;
		if (args[1].type != IMAP_ARG_EOL) {
			const char *bad = args[2].type != IMAP_ARG_EOL
						  ? "Unexpected arguments."
						  : parse_select_params(s, c, &args[1], &condstore);
			if (bad) {
				imap_cmd_reply(cmd, "BAD", "%s", bad);
				return CMD_DONE;
			}
		}
		if (s->view) {
			imap_session_unselect(s);
			conn_write_str(s->conn, "* OK [CLOSED] Previous mailbox closed.\r\n");
		}
		if (condstore)
			imap_condstore_enable(s);
		if (imap_async_open) {
			struct select_wait *w = calloc(1, sizeof(*w));
			if (!w) {
				imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
				return CMD_DONE;
			}
			w->cmd = cmd;
			c->wait = w;
			r = mailbox_open_async(s->store, name, select_opened, w);
			if (r == 0)
				return CMD_MORE;
			w->done = true; /* no callback will come */
		} else {
			r = mailbox_open(s->store, name, &mbox);
		}
	}
	if (r < 0) {
		mailbox_unref(&mbox);
		imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	/* A folder other sessions hold open may have had deliveries behind its back: look
	 * first, so EXISTS and a QRESYNC report already count them. */
	int rr = mailbox_refresh(mbox);
	if (rr < 0)
		log_warn("conn=%llu event=imap_refresh_failed error=%s",
			 (unsigned long long)conn_id(s->conn), storage_error_text(rr));
	r = view_new(mbox, VIEW_IMAP, view_notify, s, &s->view);
	mailbox_unref(&mbox);
	if (r < 0) {
		imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	mbox = view_mailbox(s->view);
	s->readonly = readonly;
	char flags[2048];
	uint32_t all_kw = mailbox_keyword_count(mbox) >= 32
				  ? UINT32_MAX
				  : (1u << mailbox_keyword_count(mbox)) - 1;
	imap_format_flags(mbox, MAIL_FLAGS_SETTABLE, all_kw, false, flags, sizeof(flags));
	conn_printf(s->conn, "* FLAGS (%s)\r\n", flags);
	if (readonly)
		conn_write_str(s->conn, "* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n");
	else
		conn_printf(s->conn, "* OK [PERMANENTFLAGS (%s%s)] Flags permitted.\r\n", flags,
			    mailbox_keyword_count(mbox) < MAILBOX_MAX_KEYWORDS ? " \\*" : "");
	uint32_t count = view_count(s->view);
	conn_printf(s->conn, "* %u EXISTS\r\n", count);
	if (!s->rev2)
		conn_printf(s->conn, "* %u RECENT\r\n", view_recent_count(s->view));
	for (uint32_t seq = 1; seq <= count && !s->rev2; seq++) {
		struct mail_info info;
		if (view_msg_info(s->view, seq, &info) == 0 && !(info.flags & MAIL_SEEN)) {
			conn_printf(s->conn, "* OK [UNSEEN %u] First unseen.\r\n", seq);
			break;
		}
	}
	if (s->rev2) {
		/* RFC 9051 §6.3.2: the canonical name, with its special-use attribute. */
		const char *use = store_special_use_name(mailbox_special_use(mbox));
		conn_printf(s->conn, "* LIST (%s) \".\" ", use ? use : "");
		imap_write_mailbox(s, mailbox_name(mbox));
		conn_write_str(s->conn, "\r\n");
	}
	conn_printf(s->conn, "* OK [UIDVALIDITY %u] UIDs valid.\r\n", mailbox_uidvalidity(mbox));
	conn_printf(s->conn, "* OK [UIDNEXT %u] Predicted next UID.\r\n", mailbox_uidnext(mbox));
	/* Every folder keeps mod-sequences: HIGHESTMODSEQ always (RFC 7162 §3.1.2.1). */
	conn_printf(s->conn, "* OK [HIGHESTMODSEQ %llu] Highest\r\n",
		    (unsigned long long)mailbox_highest_modseq(mbox));
	char mbid[STORE_MAILBOXID_MAX + 1];
	if (store_folder_mailboxid(s->store, mailbox_name(mbox), mbid, sizeof(mbid)) == 0)
		conn_printf(s->conn, "* OK [MAILBOXID (%s)] Ok\r\n", mbid); /* RFC 8474 §4.2 */
	imap_set_state(s, IMAP_SELECTED);
	c->reporting = true;
	c->seq = 1;
	if (c->qresync && c->q_uidvalidity == mailbox_uidvalidity(mbox)) {
		/* RFC 7162 §3.2.5: expunges since the client's modseq, then changed messages. */
		r = imap_vanished_earlier(s, c->q_modseq, c->q_has_known ? &c->q_known : NULL);
		if (r < 0) {
			imap_session_unselect(s);
			imap_cmd_reply_error(cmd, r);
			return CMD_DONE;
		}
	} else {
		c->seq = UINT32_MAX; /* nothing to report */
	}
	return select_report(cmd, c);
}

enum cmd_result imap_cmd_select(struct imap_cmd *cmd)
{
	return select_common(cmd, false);
}

enum cmd_result imap_cmd_examine(struct imap_cmd *cmd)
{
	return select_common(cmd, true);
}

enum cmd_result imap_cmd_close(struct imap_cmd *cmd)
{
	int r = imap_cmd_no_args(cmd);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	struct imap_session *s = cmd->s;
	if (!s->readonly) {
		r = view_expunge_deleted(s->view, NULL, 0);
		if (r < 0)
			log_warn("conn=%llu event=imap_close_expunge_failed error=%s",
				 (unsigned long long)conn_id(s->conn), storage_error_text(r));
	}
	/* No untagged EXPUNGE for CLOSE (RFC 9051 §6.4.1). */
	imap_session_unselect(s);
	imap_cmd_reply(cmd, "OK", "Close completed.");
	return CMD_DONE;
}

enum cmd_result imap_cmd_unselect(struct imap_cmd *cmd)
{
	int r = imap_cmd_no_args(cmd);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	imap_session_unselect(cmd->s);
	imap_cmd_reply(cmd, "OK", "Unselect completed.");
	return CMD_DONE;
}

/* UIDs of the messages in set (sequence numbers, or UIDs when uid) that the view shows.
 * *uids_r is malloc'd. Returns 0, -EINVAL (a sequence number beyond the mailbox), -ENOMEM. */
int imap_seqset_to_uids(struct imap_session *s, struct imap_seqset *set, bool uid,
			uint32_t **uids_r, size_t *n_r)
{
	*uids_r = NULL;
	*n_r = 0;
	/* A UID command may name a message that arrived after this session's last command (its
	 * UID learnt from APPENDUID on another connection): announce arrivals first, so that UID
	 * resolves instead of being skipped. Expunges stay owed: the sequence numbers the command
	 * reports keep their meaning, and naming an expunged message still ends in
	 * NO [EXPUNGEISSUED] (the RFC 2180 choice in the README). */
	if (uid && !set->saved)
		imap_session_sync(s, false);
	uint32_t count = view_count(s->view);
	if (set->saved) {
		uid = true; /* `$` holds UIDs, whichever command uses it */
		imap_seqset_normalize(set);
	} else if (uid) {
		uint32_t max_uid = 0;
		if (count > 0)
			view_seq_to_uid(s->view, count, &max_uid);
		imap_seqset_resolve(set, max_uid);
	} else {
		/* `1:*` in an empty mailbox names nothing (and is not an error); a number past
		 * the end without `*` is. */
		if (count == 0 && set->star)
			return 0;
		imap_seqset_resolve(set, count);
		if (imap_seqset_max(set) > count)
			return -EINVAL;
	}
	size_t cap = 0, n = 0;
	uint32_t *uids = NULL;
	for (size_t i = 0; i < set->n; i++) {
		uint32_t first, last;
		if (uid) {
			first = view_uid_lower_bound(s->view, set->r[i].lo);
			last = count;
		} else {
			first = set->r[i].lo;
			last = set->r[i].hi;
		}
		for (uint32_t seq = first; seq >= 1 && seq <= last; seq++) {
			uint32_t u;
			if (view_seq_to_uid(s->view, seq, &u) < 0)
				break;
			if (uid && u > set->r[i].hi)
				break;
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				uint32_t *nu = realloc(uids, cap * sizeof(*nu));
				if (!nu) {
					free(uids);
					return -ENOMEM;
				}
				uids = nu;
			}
			uids[n++] = u;
			if (seq == UINT32_MAX)
				break;
		}
	}
	*uids_r = uids;
	*n_r = n;
	return 0;
}

/* Parse a sequence-set argument ($ substitutes the saved search). False: answered. */
bool imap_arg_seqset(struct imap_cmd *cmd, const struct imap_arg *arg, struct imap_seqset *set)
{
	const char *str;
	if (!imap_arg_get_atom(arg, &str) || imap_seqset_parse(set, str, arg->len) < 0) {
		imap_cmd_reply(cmd, "BAD", "Invalid sequence set.");
		return false;
	}
	if (set->saved) {
		/* The saved result is kept as UIDs (imap_seqset_to_uids knows). */
		if (imap_seqset_copy(set, &cmd->s->searchres) < 0) {
			imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
			return false;
		}
		set->saved = true;
	}
	return true;
}

static void expunge_ctx_free(struct imap_cmd *cmd)
{
	struct imap_sync_wait *w = cmd->ctx;
	imap_sync_wait_release(&w);
	cmd->ctx = NULL;
}

enum cmd_result imap_cmd_expunge(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	struct imap_sync_wait *w = cmd->ctx;
	if (w) {
		/* the expunge records were durable (or not), the messages gone */
		if (!w->done)
			return CMD_MORE;
		if (w->err < 0)
			imap_cmd_reply_error(cmd, w->err);
		else
			imap_cmd_reply(cmd, "OK", "Expunge completed.");
		return CMD_DONE;
	}
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	if ((cmd->uid && (args[0].type == IMAP_ARG_EOL || args[1].type != IMAP_ARG_EOL)) ||
	    (!cmd->uid && args[0].type != IMAP_ARG_EOL)) {
		imap_cmd_reply(cmd, "BAD",
			       cmd->uid ? "UID EXPUNGE needs a UID set." : "Unexpected arguments.");
		return CMD_DONE;
	}
	if (s->readonly) {
		imap_cmd_reply(cmd, "NO", "[READ-ONLY] Mailbox is read-only.");
		return CMD_DONE;
	}
	uint32_t *uids = NULL;
	size_t n = 0;
	if (cmd->uid) {
		struct imap_seqset set;
		imap_seqset_init(&set);
		if (!imap_arg_seqset(cmd, &args[0], &set)) {
			imap_seqset_free(&set);
			return CMD_DONE;
		}
		r = imap_seqset_to_uids(s, &set, true, &uids, &n);
		imap_seqset_free(&set);
		if (r < 0) {
			imap_cmd_reply_error(cmd, r);
			return CMD_DONE;
		}
	}
	if (!imap_async_commit) {
		r = !cmd->uid ? view_expunge_deleted(s->view, NULL, 0)
		    : n       ? view_expunge_deleted(s->view, uids, n)
			      : 0;
		free(uids);
		if (r < 0)
			imap_cmd_reply_error(cmd, r);
		else
			imap_cmd_reply(cmd, "OK", "Expunge completed.");
		return CMD_DONE;
	}
	w = imap_sync_wait_new(cmd);
	if (!w) {
		free(uids);
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return CMD_DONE;
	}
	cmd->ctx = w;
	cmd->ctx_free = expunge_ctx_free;
	if (cmd->uid) {
		r = n ? view_expunge_deleted_async(s->view, uids, n, imap_sync_wait_cb, w) : 1;
	} else {
		r = view_expunge_deleted_async(s->view, NULL, 0, imap_sync_wait_cb, w);
	}
	free(uids);
	if (r != 0) {
		/* no callback comes: an error, or nothing to expunge */
		w->done = true;
		if (r < 0)
			imap_cmd_reply_error(cmd, r);
		else
			imap_cmd_reply(cmd, "OK", "Expunge completed.");
		return CMD_DONE;
	}
	return CMD_MORE;
}

enum cmd_result imap_cmd_check(struct imap_cmd *cmd)
{
	int r = imap_cmd_no_args(cmd);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	imap_cmd_reply(cmd, "OK", "Check completed.");
	return CMD_DONE;
}

/* ---------------------------------------------------------------------------------------- */
/* IDLE (RFC 2177)                                                                           */

/* No chatter by default (phones pay for every wake-up); `imap_idle_keepalive = N` sends an
 * untagged OK every N seconds of IDLE, for NAT boxes that forget quiet connections. */
static void keepalive_cb(uv_timer_t *t)
{
	struct imap_session *s = t->data;
	if (!s || !s->idling || conn_is_closing(s->conn))
		return;
	conn_write_str(s->conn, "* OK Still here\r\n");
	conn_flush(s->conn);
}

static void keepalive_close_cb(uv_handle_t *h)
{
	free(h);
}

void imap_idle_keepalive_stop(struct imap_session *s, bool free_it)
{
	if (!s->keepalive)
		return;
	uv_timer_stop(s->keepalive);
	if (free_it) {
		s->keepalive->data = NULL;
		uv_close((uv_handle_t *)s->keepalive, keepalive_close_cb);
		s->keepalive = NULL;
	}
}

static void keepalive_start(struct imap_session *s)
{
	const struct config *cfg = conn_config(s->conn);
	unsigned secs = cfg ? cfg->imap_idle_keepalive : 0;
	if (secs == 0)
		return;
	if (!s->keepalive) {
		s->keepalive = malloc(sizeof(*s->keepalive));
		if (!s->keepalive)
			return;
		uv_timer_init(conn_loop(s->conn), s->keepalive);
		s->keepalive->data = s;
	}
	uv_timer_start(s->keepalive, keepalive_cb, (uint64_t)secs * 1000, (uint64_t)secs * 1000);
}

enum cmd_result imap_cmd_idle(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	if (!s->idling) {
		int r = imap_cmd_no_args(cmd);
		if (r <= 0)
			return r == 0 ? CMD_MORE : CMD_DONE;
		conn_write_str(s->conn, "+ idling\r\n");
		s->idling = true;
		/* The arguments are no longer needed: an idling session keeps no parser memory. */
		imap_parser_reset(s->parser);
		imap_session_sync(s, true);
		conn_flush(s->conn);
		keepalive_start(s);
	}
	const char *line;
	size_t len;
	switch (conn_read_line(s->conn, &line, &len)) {
	case CONN_LINE_MORE:
		return CMD_MORE;
	case CONN_LINE_TOO_LONG:
		s->idling = false;
		imap_idle_keepalive_stop(s, false);
		imap_session_bye(s, "Line too long.");
		return CMD_DONE;
	case CONN_LINE_OK:
		break;
	}
	s->idling = false;
	imap_idle_keepalive_stop(s, false);
	if (len == 4 && strncasecmp(line, "DONE", 4) == 0)
		imap_cmd_reply(cmd, "OK", "Idle completed.");
	else
		imap_cmd_reply(cmd, "BAD", "Expected DONE.");
	return CMD_DONE;
}

/* ---------------------------------------------------------------------------------------- */
/* Folder commands                                                                           */

static const struct {
	const char *name;
	unsigned use;
} special_uses[] = {
	{"\\Sent", STORE_SPECIAL_SENT},       {"\\Drafts", STORE_SPECIAL_DRAFTS},
	{"\\Trash", STORE_SPECIAL_TRASH},     {"\\Junk", STORE_SPECIAL_JUNK},
	{"\\Archive", STORE_SPECIAL_ARCHIVE},
};

enum cmd_result imap_cmd_create(struct imap_cmd *cmd)
{
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	char name[STORE_NAME_MAX + 1];
	if (!imap_arg_mailbox(cmd, &args[0], name))
		return CMD_DONE;
	unsigned use = 0;
	if (args[1].type != IMAP_ARG_EOL) {
		/* RFC 6154 §5.3: CREATE name (USE (\Sent ...)) */
		const struct imap_arg *p = &args[1];
		if (p->type != IMAP_ARG_LIST || args[2].type != IMAP_ARG_EOL ||
		    p->list_count != 2 || !imap_arg_is(&p->list[0], "USE") ||
		    p->list[1].type != IMAP_ARG_LIST) {
			imap_cmd_reply(cmd, "BAD", "Invalid CREATE parameters.");
			return CMD_DONE;
		}
		for (unsigned i = 0; i < p->list[1].list_count; i++) {
			const struct imap_arg *a = &p->list[1].list[i];
			bool found = false;
			for (size_t k = 0; k < sizeof(special_uses) / sizeof(special_uses[0]);
			     k++) {
				if (imap_arg_is(a, special_uses[k].name)) {
					use |= special_uses[k].use;
					found = true;
				}
			}
			if (!found) {
				imap_cmd_reply(cmd, "NO",
					       "[USEATTR] Unsupported special-use attribute.");
				return CMD_DONE;
			}
		}
	}
	r = store_folder_create(cmd->s->store, name, use);
	if (r < 0) {
		imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	/* RFC 8474 §4.1: the new folder's MAILBOXID in the tagged OK */
	char id[STORE_MAILBOXID_MAX + 1];
	if (store_folder_mailboxid(cmd->s->store, name, id, sizeof(id)) == 0)
		imap_cmd_reply(cmd, "OK", "[MAILBOXID (%s)] Create completed.", id);
	else
		imap_cmd_reply(cmd, "OK", "Create completed.");
	return CMD_DONE;
}

enum cmd_result imap_cmd_delete(struct imap_cmd *cmd)
{
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	char name[STORE_NAME_MAX + 1];
	if (!imap_arg_mailbox(cmd, &args[0], name))
		return CMD_DONE;
	if (args[1].type != IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "Unexpected arguments.");
		return CMD_DONE;
	}
	struct imap_session *s = cmd->s;
	if (s->view && strcmp(mailbox_name(view_mailbox(s->view)), name) == 0) {
		/* Deleting the selected mailbox: leave it first (RFC 9051 §6.3.9). */
		imap_session_unselect(s);
		conn_write_str(s->conn, "* OK [CLOSED] Mailbox closed.\r\n");
	}
	r = store_folder_delete(s->store, name);
	if (r < 0) {
		if (r == -EPERM)
			imap_cmd_reply(cmd, "NO", "[CANNOT] INBOX cannot be deleted.");
		else if (r == -ENOTEMPTY)
			imap_cmd_reply(cmd, "NO",
				       "[HASCHILDREN] Mailbox has children: delete them first.");
		else
			imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	imap_cmd_reply(cmd, "OK", "Delete completed.");
	return CMD_DONE;
}

enum cmd_result imap_cmd_rename(struct imap_cmd *cmd)
{
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	char from[STORE_NAME_MAX + 1], to[STORE_NAME_MAX + 1];
	if (!imap_arg_mailbox(cmd, &args[0], from))
		return CMD_DONE;
	if (args[1].type == IMAP_ARG_EOL || args[2].type != IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "RENAME needs two mailbox names.");
		return CMD_DONE;
	}
	if (!imap_arg_mailbox(cmd, &args[1], to))
		return CMD_DONE;
	r = store_folder_rename(cmd->s->store, from, to);
	if (r < 0) {
		imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	imap_cmd_reply(cmd, "OK", "Rename completed.");
	return CMD_DONE;
}

static enum cmd_result subscribe_common(struct imap_cmd *cmd, bool on)
{
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	char name[STORE_NAME_MAX + 1];
	if (!imap_arg_mailbox(cmd, &args[0], name))
		return CMD_DONE;
	if (args[1].type != IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "Unexpected arguments.");
		return CMD_DONE;
	}
	r = store_subscribe(cmd->s->store, name, on);
	if (r < 0) {
		imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	imap_cmd_reply(cmd, "OK", "%s completed.", on ? "Subscribe" : "Unsubscribe");
	return CMD_DONE;
}

enum cmd_result imap_cmd_subscribe(struct imap_cmd *cmd)
{
	return subscribe_common(cmd, true);
}

enum cmd_result imap_cmd_unsubscribe(struct imap_cmd *cmd)
{
	return subscribe_common(cmd, false);
}

enum cmd_result imap_cmd_namespace(struct imap_cmd *cmd)
{
	int r = imap_cmd_no_args(cmd);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	conn_write_str(cmd->s->conn, "* NAMESPACE ((\"\" \".\")) NIL NIL\r\n");
	imap_cmd_reply(cmd, "OK", "Namespace completed.");
	return CMD_DONE;
}

/* ---------------------------------------------------------------------------------------- */
/* LIST / LSUB (RFC 3501 §6.3.8-9, RFC 5258 LIST-EXTENDED, RFC 6154, RFC 5819)              */

/* Match name against a LIST pattern: '*' any, '%' any but the separator. */
static bool pattern_match(const char *pat, const char *name)
{
	while (*pat) {
		if (*pat == '*' || *pat == '%') {
			bool any = *pat == '*';
			pat++;
			for (const char *n = name;; n++) {
				if (pattern_match(pat, n))
					return true;
				if (!*n || (!any && *n == STORE_SEPARATOR))
					return false;
			}
		}
		if (*pat != *name)
			return false;
		pat++;
		name++;
	}
	return *name == '\0';
}

/* The pattern with reference prepended, and INBOX matched case-insensitively. */
static bool list_match(const char *ref, const char *pat, const char *name)
{
	char full[2 * STORE_NAME_MAX + 2];
	snprintf(full, sizeof(full), "%s%s", ref, pat);
	if (strncasecmp(full, "INBOX", 5) == 0 && (full[5] == '\0' || full[5] == STORE_SEPARATOR))
		memcpy(full, "INBOX", 5);
	return pattern_match(full, name);
}

enum list_opts {
	LIST_SUBSCRIBED = 1 << 0,     /* selection: subscribed only */
	LIST_RECURSIVEMATCH = 1 << 1, /* selection modifier */
	LIST_SPECIAL_ONLY = 1 << 2,   /* selection: SPECIAL-USE */
	LIST_RET_SUBSCRIBED = 1 << 3, /* return: \Subscribed */
	LIST_RET_CHILDREN = 1 << 4,   /* return: CHILDREN (always sent) */
	LIST_RET_SPECIAL = 1 << 5,    /* return: SPECIAL-USE */
	LIST_RET_STATUS = 1 << 6,     /* return: STATUS (...) */
	LIST_LSUB = 1 << 7,
};

struct status_items {
	unsigned mask;
};
enum {
	ST_MESSAGES = 1 << 0,
	ST_UIDNEXT = 1 << 1,
	ST_UIDVALIDITY = 1 << 2,
	ST_UNSEEN = 1 << 3,
	ST_DELETED = 1 << 4,
	ST_SIZE = 1 << 5,
	ST_RECENT = 1 << 6,
	ST_HIGHESTMODSEQ = 1 << 7,
	ST_APPENDLIMIT = 1 << 8,
	ST_MAILBOXID = 1 << 9,
	ST_DELETED_STORAGE = 1 << 10, /* RFC 9208 §4.3.2 (QUOTA=RES-STORAGE) */
};

static bool parse_status_items(const struct imap_arg *list, unsigned *mask_r)
{
	static const struct {
		const char *name;
		unsigned bit;
	} items[] = {
		{"MESSAGES", ST_MESSAGES},
		{"UIDNEXT", ST_UIDNEXT},
		{"UIDVALIDITY", ST_UIDVALIDITY},
		{"UNSEEN", ST_UNSEEN},
		{"DELETED", ST_DELETED},
		{"SIZE", ST_SIZE},
		{"RECENT", ST_RECENT},
		{"HIGHESTMODSEQ", ST_HIGHESTMODSEQ},
		{"APPENDLIMIT", ST_APPENDLIMIT},
		{"MAILBOXID", ST_MAILBOXID},
		{"DELETED-STORAGE", ST_DELETED_STORAGE},
	};
	if (list->type != IMAP_ARG_LIST || list->list_count == 0)
		return false;
	*mask_r = 0;
	for (unsigned i = 0; i < list->list_count; i++) {
		bool found = false;
		for (size_t k = 0; k < sizeof(items) / sizeof(items[0]); k++) {
			if (imap_arg_is(&list->list[i], items[k].name)) {
				*mask_r |= items[k].bit;
				found = true;
			}
		}
		if (!found)
			return false;
	}
	return true;
}

static void write_status(struct imap_session *s, const char *name, unsigned mask,
			 const struct mailbox_status *st)
{
	conn_write_str(s->conn, "* STATUS ");
	imap_write_mailbox(s, name);
	conn_write_str(s->conn, " (");
	const char *sp = "";
#define ITEM(bit, label, fmt, val)                                                                 \
	if (mask & (bit)) {                                                                        \
		conn_printf(s->conn, "%s" label " " fmt, sp, val);                                 \
		sp = " ";                                                                          \
	}
	ITEM(ST_MESSAGES, "MESSAGES", "%u", st->messages);
	ITEM(ST_RECENT, "RECENT", "%u", st->recent);
	ITEM(ST_UIDNEXT, "UIDNEXT", "%u", st->uidnext);
	ITEM(ST_UIDVALIDITY, "UIDVALIDITY", "%u", st->uidvalidity);
	ITEM(ST_UNSEEN, "UNSEEN", "%u", st->unseen);
	ITEM(ST_DELETED, "DELETED", "%u", st->deleted);
	ITEM(ST_DELETED_STORAGE, "DELETED-STORAGE", "%llu", (unsigned long long)st->deleted_size);
	ITEM(ST_SIZE, "SIZE", "%llu", (unsigned long long)st->size);
	ITEM(ST_HIGHESTMODSEQ, "HIGHESTMODSEQ", "%llu", (unsigned long long)st->highest_modseq);
	ITEM(ST_APPENDLIMIT, "APPENDLIMIT", "%s", IMAP_MAX_APPEND_STR);
	char id[STORE_MAILBOXID_MAX + 1];
	if ((mask & ST_MAILBOXID) && store_folder_mailboxid(s->store, name, id, sizeof(id)) == 0)
		ITEM(ST_MAILBOXID, "MAILBOXID", "(%s)", id);
#undef ITEM
	conn_write_str(s->conn, ")\r\n");
}

static enum cmd_result list_common(struct imap_cmd *cmd, bool lsub)
{
	struct imap_session *s = cmd->s;
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	unsigned opts = lsub ? LIST_SUBSCRIBED | LIST_LSUB : 0;
	unsigned status_mask = 0;
	const struct imap_arg *a = args;
	if (!lsub && a->type == IMAP_ARG_LIST) {
		for (unsigned i = 0; i < a->list_count; i++) {
			const struct imap_arg *o = &a->list[i];
			if (imap_arg_is(o, "SUBSCRIBED"))
				opts |= LIST_SUBSCRIBED | LIST_RET_SUBSCRIBED;
			else if (imap_arg_is(o, "REMOTE"))
				; /* no remote mailboxes here */
			else if (imap_arg_is(o, "RECURSIVEMATCH"))
				opts |= LIST_RECURSIVEMATCH;
			else if (imap_arg_is(o, "SPECIAL-USE"))
				opts |= LIST_SPECIAL_ONLY | LIST_RET_SPECIAL;
			else {
				imap_cmd_reply(cmd, "BAD", "Unknown LIST selection option.");
				return CMD_DONE;
			}
		}
		if ((opts & LIST_RECURSIVEMATCH) &&
		    !(opts & (LIST_SUBSCRIBED | LIST_SPECIAL_ONLY))) {
			imap_cmd_reply(cmd, "BAD",
				       "RECURSIVEMATCH needs another selection option.");
			return CMD_DONE;
		}
		a++;
	}
	const char *ref, *pat;
	size_t reflen, patlen;
	if (!imap_arg_get_astring(&a[0], &ref, &reflen) || a[1].type == IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "LIST needs a reference and a pattern.");
		return CMD_DONE;
	}
	/* One pattern, or a list of patterns (RFC 5258). */
	const struct imap_arg *pats = &a[1];
	unsigned npats = 1;
	if (!lsub && a[1].type == IMAP_ARG_LIST) {
		pats = a[1].list;
		npats = a[1].list_count;
	}
	for (unsigned i = 0; i < npats; i++) {
		if (!imap_arg_get_astring(&pats[i], &pat, &patlen)) {
			imap_cmd_reply(cmd, "BAD", "Invalid pattern.");
			return CMD_DONE;
		}
	}
	a += 2;
	if (!lsub && a->type != IMAP_ARG_EOL) {
		if (!imap_arg_is(a, "RETURN") || a[1].type != IMAP_ARG_LIST ||
		    a[2].type != IMAP_ARG_EOL) {
			imap_cmd_reply(cmd, "BAD", "Invalid LIST return options.");
			return CMD_DONE;
		}
		const struct imap_arg *ro = a[1].list;
		for (unsigned i = 0; i < a[1].list_count; i++) {
			if (imap_arg_is(&ro[i], "SUBSCRIBED"))
				opts |= LIST_RET_SUBSCRIBED;
			else if (imap_arg_is(&ro[i], "CHILDREN"))
				opts |= LIST_RET_CHILDREN;
			else if (imap_arg_is(&ro[i], "SPECIAL-USE"))
				opts |= LIST_RET_SPECIAL;
			else if (imap_arg_is(&ro[i], "STATUS") && i + 1 < a[1].list_count &&
				 parse_status_items(&ro[i + 1], &status_mask)) {
				opts |= LIST_RET_STATUS;
				i++;
			} else {
				imap_cmd_reply(cmd, "BAD", "Unknown LIST return option.");
				return CMD_DONE;
			}
		}
	} else if (lsub && a->type != IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "Unexpected arguments.");
		return CMD_DONE;
	}
	const char *verb = lsub ? "LSUB" : "LIST";
	/* An empty pattern asks for the separator (RFC 3501 §6.3.8). */
	if (npats == 1 && pats[0].len == 0 && !(opts & (LIST_SUBSCRIBED | LIST_SPECIAL_ONLY))) {
		conn_printf(s->conn, "* %s (\\Noselect) \".\" \"\"\r\n", verb);
		imap_cmd_reply(cmd, "OK", "%s completed.", lsub ? "Lsub" : "List");
		return CMD_DONE;
	}
	struct store_folder *folders;
	size_t n;
	r = store_folder_list(s->store, &folders, &n);
	if (r < 0) {
		imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	for (size_t i = 0; i < n; i++) {
		const struct store_folder *f = &folders[i];
		bool match = false;
		char utf8[STORE_NAME_MAX * 4 + 1];
		const char *mname = f->name;
		if (imap_utf8_names(s) && imap_utf7_to_utf8(f->name, utf8, sizeof(utf8)) == 0)
			mname = utf8; /* IMAP4rev2 / UTF8=ACCEPT patterns are UTF-8 */
		for (unsigned k = 0; k < npats && !match; k++)
			match = list_match(ref, pats[k].str, mname);
		if (!match)
			continue;
		bool subscribed = f->attrs & STORE_FOLDER_SUBSCRIBED;
		bool child_info = false;
		if ((opts & LIST_SUBSCRIBED) && !subscribed) {
			/* RECURSIVEMATCH: a parent of a subscribed folder is listed with
			 * CHILDINFO (RFC 5258 §3.5). */
			if (!(opts & LIST_RECURSIVEMATCH))
				continue;
			size_t len = strlen(f->name);
			for (size_t j = 0; j < n && !child_info; j++)
				child_info = (folders[j].attrs & STORE_FOLDER_SUBSCRIBED) &&
					     strncmp(folders[j].name, f->name, len) == 0 &&
					     folders[j].name[len] == STORE_SEPARATOR;
			if (!child_info)
				continue;
		}
		if (!(opts & LIST_SUBSCRIBED) && (f->attrs & STORE_FOLDER_NONEXISTENT))
			continue;
		if ((opts & LIST_SPECIAL_ONLY) && !f->special_use)
			continue;
		char attrs[256];
		size_t o = 0;
		attrs[0] = '\0';
#define ATTR(str) o += (size_t)snprintf(attrs + o, sizeof(attrs) - o, "%s%s", o ? " " : "", str)
		if (f->attrs & STORE_FOLDER_NONEXISTENT)
			ATTR(lsub ? "\\Noselect" : "\\NonExistent");
		else if (f->attrs & STORE_FOLDER_NOSELECT)
			ATTR("\\Noselect");
		if (!(f->attrs & STORE_FOLDER_NONEXISTENT) && !lsub)
			ATTR((f->attrs & STORE_FOLDER_HASCHILDREN) ? "\\HasChildren"
								   : "\\HasNoChildren");
		if ((opts & LIST_RET_SUBSCRIBED) && subscribed)
			ATTR("\\Subscribed");
		/* special-use attributes in LSUB replies too: some Outlook versions look for
		 * them there */
		for (size_t k = 0; k < sizeof(special_uses) / sizeof(special_uses[0]); k++)
			if (f->special_use & special_uses[k].use)
				ATTR(special_uses[k].name);
#undef ATTR
		conn_printf(s->conn, "* %s (%s) \".\" ", verb, attrs);
		imap_write_mailbox(s, f->name);
		if (child_info)
			conn_write_str(s->conn, " (\"CHILDINFO\" (\"SUBSCRIBED\"))");
		conn_write_str(s->conn, "\r\n");
		if ((opts & LIST_RET_STATUS) &&
		    !(f->attrs & (STORE_FOLDER_NOSELECT | STORE_FOLDER_NONEXISTENT))) {
			struct mailbox_status st;
			if (store_status(s->store, f->name, &st) == 0)
				write_status(s, f->name, status_mask, &st);
		}
	}
	store_folder_list_free(&folders, n);
	imap_cmd_reply(cmd, "OK", "%s completed.", lsub ? "Lsub" : "List");
	return CMD_DONE;
}

enum cmd_result imap_cmd_list(struct imap_cmd *cmd)
{
	return list_common(cmd, false);
}

enum cmd_result imap_cmd_lsub(struct imap_cmd *cmd)
{
	return list_common(cmd, true);
}

enum cmd_result imap_cmd_status(struct imap_cmd *cmd)
{
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	char name[STORE_NAME_MAX + 1];
	if (!imap_arg_mailbox(cmd, &args[0], name))
		return CMD_DONE;
	unsigned mask;
	if (!parse_status_items(&args[1], &mask) || args[2].type != IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "Invalid STATUS items.");
		return CMD_DONE;
	}
	if (mask & ST_HIGHESTMODSEQ)
		imap_condstore_enable(cmd->s); /* a CONDSTORE-enabling command (RFC 7162 §3.1) */
	struct mailbox_status st;
	r = store_status(cmd->s->store, name, &st);
	if (r < 0) {
		imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	write_status(cmd->s, name, mask, &st);
	imap_cmd_reply(cmd, "OK", "Status completed.");
	return CMD_DONE;
}
