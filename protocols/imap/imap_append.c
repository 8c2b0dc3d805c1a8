/* imap_append — APPEND (RFC 9051 §6.3.12) with UIDPLUS APPENDUID (RFC 4315) and
 * MULTIAPPEND (RFC 3502).
 *
 * The message literal is never held in memory: the parser runs in stream mode, and the bytes
 * go chunk by chunk to the store's append stream (a file in the folder's tmp/), which is
 * made durable and given its UID only when the whole literal has arrived. A failure found
 * after the client was invited to send (no such mailbox, a bad flag) still reads the literal
 * to its end, then answers NO, so the connection stays in step.
 *
 * MULTIAPPEND is atomic: every message is streamed to its own temporary file first; only when
 * the whole command has arrived and every part was accepted are they finished (made durable
 * and numbered), one after the other in the same loop turn, so no other session sees a part
 * of them. If finishing one fails, those finished before it are expunged again and the
 * command answers NO: the mailbox ends as it was (only UIDs are used up). At most
 * IMAP_MULTIAPPEND_MAX messages per command (each holds an open file until the end).
 *
 * Quota (RFC 9208): a message whose literal alone would pass the user's limit is refused
 * before anything is written (its bytes are read and dropped); MULTIAPPEND checks all its
 * messages together before finishing the first, so an over-quota MULTIAPPEND leaves nothing
 * (no file, no UID); the store checks each finish again (storage/README.md "Quota"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "imap_internal.h"
#include "log.h"

enum append_step {
	AP_ARGS, /* reading up to the literal */
	AP_DATA, /* streaming the literal */
	AP_TAIL, /* the rest of the command after the literal */
	AP_WAIT, /* one message being made durable */
};

#define IMAP_MULTIAPPEND_MAX 128

struct append_ctx {
	enum append_step step;
	struct mailbox *mbox;
	struct mail_append *app;                        /* the message being streamed */
	struct mail_append *done[IMAP_MULTIAPPEND_MAX]; /* streamed, waiting for the end */
	unsigned n_done;
	unsigned argpos;         /* the first arg of the next message (after the last literal) */
	const char *fail_status; /* non-NULL: answer this once the literal is read */
	char fail_text[128];
	int err;
	struct imap_sync_wait *wait; /* a single message being made durable (AP_WAIT) */
};

static void append_ctx_free(struct imap_cmd *cmd)
{
	struct append_ctx *a = cmd->ctx;
	if (!a)
		return;
	if (a->app)
		mail_append_abort(&a->app);
	for (unsigned i = 0; i < a->n_done; i++)
		if (a->done[i])
			mail_append_abort(&a->done[i]);
	imap_sync_wait_release(&a->wait);
	mailbox_unref(&a->mbox);
	cmd->s->flag_mbox = NULL;
	free(a);
	cmd->ctx = NULL;
}

static void append_fail(struct append_ctx *a, const char *status, const char *text)
{
	if (a->fail_status)
		return;
	a->fail_status = status;
	snprintf(a->fail_text, sizeof(a->fail_text), "%s", text);
	if (a->app)
		mail_append_abort(&a->app);
	for (unsigned i = 0; i < a->n_done; i++)
		if (a->done[i])
			mail_append_abort(&a->done[i]);
	a->n_done = 0;
}

/* "17-Jul-1996 02:44:25 -0700" (the day may be one digit or space-padded). */
static bool parse_date_time(const char *s, int64_t *t_r)
{
	static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	int day, year, hh, mm, ss, zone;
	char month[4], sign;
	if (*s == ' ')
		s++;
	int used = 0;
	if (sscanf(s, "%2d-%3s-%4d %2d:%2d:%2d %c%4d%n", &day, month, &year, &hh, &mm, &ss, &sign,
		   &zone, &used) != 8 ||
	    s[used] != '\0' || (sign != '+' && sign != '-'))
		return false;
	int m = -1;
	for (int i = 0; i < 12; i++)
		if (strcasecmp(month, mon[i]) == 0)
			m = i;
	if (m < 0 || day < 1 || day > 31 || year < 1970 || hh > 23 || mm > 59 || ss > 60 ||
	    zone % 100 > 59)
		return false;
	struct tm tm = {0};
	tm.tm_mday = day;
	tm.tm_mon = m;
	tm.tm_year = year - 1900;
	tm.tm_hour = hh;
	tm.tm_min = mm;
	tm.tm_sec = ss;
	int64_t t = (int64_t)timegm(&tm);
	int64_t off = (int64_t)(zone / 100) * 3600 + (int64_t)(zone % 100) * 60;
	*t_r = sign == '+' ? t - off : t + off;
	return true;
}

/* One message's [flags] [date] literal, args G[0..ng) (G[ng-1] the literal): begin it. */
static void append_group(struct imap_cmd *cmd, struct append_ctx *a, const struct imap_arg *g,
			 unsigned ng)
{
	struct imap_session *s = cmd->s;
	const struct imap_arg *flags_arg = NULL, *date_arg = NULL;
	const struct imap_arg *lit = &g[ng - 1];
	if (lit->utf8_wrapped) {
		/* RFC 6855 §4: UTF8 (~{n}...) — the atom UTF8 is not a flag or date */
		if (ng < 2 || !lit->literal8 || !imap_arg_is(&g[ng - 2], "UTF8")) {
			append_fail(a, "BAD", "Invalid APPEND arguments.");
			return;
		}
		ng--; /* g[ng - 1] is now the atom UTF8, skipped like the literal */
	}
	for (unsigned i = 0; i + 1 < ng; i++) {
		if (g[i].type == IMAP_ARG_LIST && !flags_arg && !date_arg)
			flags_arg = &g[i];
		else if ((g[i].type == IMAP_ARG_STRING) && !date_arg)
			date_arg = &g[i];
		else {
			append_fail(a, "BAD", "Invalid APPEND arguments.");
			return;
		}
	}
	int64_t date = 0;
	if (date_arg && !parse_date_time(date_arg->str, &date)) {
		append_fail(a, "BAD", "Invalid date-time.");
		return;
	}
	unsigned flags = 0;
	uint32_t keywords = 0;
	if (flags_arg) {
		const char *err;
		s->flag_mbox = a->mbox;
		int r = imap_parse_flag_list(s, flags_arg, true, &flags, &keywords, &err);
		s->flag_mbox = NULL;
		if (r < 0) {
			append_fail(a, r == -EINVAL ? "BAD" : "NO", err);
			return;
		}
	}
	/* The message's CRLF size is at least its literal's: refuse what cannot fit at once. */
	uint64_t bytes = lit->literal_size;
	for (unsigned i = 0; i < a->n_done; i++)
		bytes += mail_append_size(a->done[i]);
	if (store_quota_check(s->store, a->n_done + 1, bytes) < 0) {
		a->err = -EDQUOT;
		append_fail(a, "NO", "[OVERQUOTA] Quota exceeded");
		return;
	}
	/* A literal8 (RFC 3516 BINARY, or RFC 6855's UTF8 data: a message with UTF-8 headers)
	 * is stored as it comes, NUL octets included. */
	int r = mailbox_append_begin(a->mbox, flags & MAIL_FLAGS_SETTABLE, keywords, date, &a->app);
	if (r < 0) {
		a->err = r;
		append_fail(a, "NO",
			    r == -ENOSPC || r == -EDQUOT ? "[OVERQUOTA] Out of space."
							 : "[SERVERBUG] Append failed.");
	}
}

/* Check the arguments before the first literal, open the mailbox and begin the append. */
static void append_begin(struct imap_cmd *cmd, struct append_ctx *a, const struct imap_arg *args)
{
	struct imap_session *s = cmd->s;
	unsigned n = 0;
	while (args[n].type != IMAP_ARG_EOL)
		n++;
	a->argpos = n;
	/* mailbox [flags] [date] [UTF8 (] literal [)] */
	unsigned most = n > 0 && args[n - 1].utf8_wrapped ? 5 : 4;
	if (n < 2 || n > most || args[n - 1].type != IMAP_ARG_LITERAL_SIZE) {
		append_fail(a, "BAD", "APPEND needs a mailbox and a message literal.");
		return;
	}
	const char *name;
	size_t len;
	char norm[STORE_NAME_MAX + 1];
	if (!imap_arg_get_astring(&args[0], &name, &len) || memchr(name, '\0', len) ||
	    imap_mailbox_name_in(s, name, norm) < 0) {
		append_fail(a, "NO", "[CANNOT] Invalid mailbox name.");
		return;
	}
	int r = mailbox_open(s->store, norm, &a->mbox);
	if (r < 0) {
		if (r == -ENOENT)
			append_fail(a, "NO", "[TRYCREATE] Mailbox doesn't exist.");
		else
			append_fail(a, "NO", "[SERVERBUG] Mailbox cannot be opened.");
		return;
	}
	append_group(cmd, a, &args[1], n - 1);
}

/* The whole command is in and every part was accepted: finish them all, or none. */
static enum cmd_result append_finish_all(struct imap_cmd *cmd, struct append_ctx *a)
{
	uint32_t uids[IMAP_MULTIAPPEND_MAX];
	unsigned n = a->n_done;
	uint32_t validity = mailbox_uidvalidity(a->mbox);
	/* all of them or none: the quota is checked for the whole command first */
	uint64_t bytes = 0;
	for (unsigned i = 0; i < n; i++)
		bytes += mail_append_size(a->done[i]);
	int qr = store_quota_check(cmd->s->store, n, bytes);
	if (qr < 0) {
		imap_cmd_reply_error(cmd, qr);
		return CMD_DONE;
	}
	if (n == 1 && imap_async_commit) {
		/* one message (the common APPEND): its fsyncs run on the thread pool, the
		 * answer comes once it is durable */
		struct imap_sync_wait *w = imap_sync_wait_new(cmd);
		if (!w) {
			imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
			return CMD_DONE;
		}
		a->n_done = 0;
		int r = mail_append_finish_async(&a->done[0], imap_sync_wait_append_cb, w);
		if (r < 0) {
			free(w);
			imap_cmd_reply_error(cmd, r);
			return CMD_DONE;
		}
		a->wait = w;
		a->step = AP_WAIT;
		return CMD_MORE;
	}
	for (unsigned i = 0; i < n; i++) {
		int r = mail_append_finish(&a->done[i], &uids[i]);
		if (r < 0) {
			/* undo the ones made durable before: the mailbox ends as it was */
			int ur = i ? mailbox_expunge(a->mbox, uids, i) : 0;
			if (ur < 0)
				log_warn("conn=%llu event=imap_multiappend_undo_failed error=%s",
					 (unsigned long long)conn_id(cmd->s->conn),
					 storage_error_text(ur));
			imap_cmd_reply_error(cmd, r);
			return CMD_DONE;
		}
	}
	a->n_done = 0;
	if (n == 1) {
		imap_cmd_reply(cmd, "OK", "[APPENDUID %u %u] Append completed.", validity, uids[0]);
		return CMD_DONE;
	}
	/* UIDs of one command are consecutive and ascending: "first:last" */
	imap_cmd_reply(cmd, "OK", "[APPENDUID %u %u:%u] Append completed.", validity, uids[0],
		       uids[n - 1]);
	return CMD_DONE;
}

enum cmd_result imap_cmd_append(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	struct append_ctx *a = cmd->ctx;
	const struct imap_arg *args;
	int r;
	if (!a) {
		if (!imap_quota_ready(cmd))
			return CMD_MORE; /* before a byte of it is read */
		a = calloc(1, sizeof(*a));
		if (!a) {
			imap_session_bye(s, "Out of memory.");
			return CMD_DONE;
		}
		cmd->ctx = a;
		cmd->ctx_free = append_ctx_free;
		imap_parser_set_stream_mode(s->parser, true);
	}
	for (;;) {
		switch (a->step) {
		case AP_WAIT:
			if (!a->wait->done)
				return CMD_MORE;
			if (a->wait->err < 0)
				imap_cmd_reply_error(cmd, a->wait->err);
			else
				imap_cmd_reply(cmd, "OK", "[APPENDUID %u %u] Append completed.",
					       mailbox_uidvalidity(a->mbox), a->wait->uid);
			return CMD_DONE;
		case AP_ARGS:
			r = imap_cmd_read_args(cmd, &args);
			if (r <= 0)
				return r == 0 ? CMD_MORE : CMD_DONE;
			if (imap_parser_eol(s->parser)) {
				/* No literal at all. */
				imap_cmd_reply(cmd, "BAD", "APPEND needs a message literal.");
				return CMD_DONE;
			}
			append_begin(cmd, a, args);
			a->step = AP_DATA;
			continue;
		case AP_DATA: {
			const char *data;
			ssize_t n;
			while ((n = imap_parser_read_literal_data(s->parser, &data)) > 0) {
				if (a->app &&
				    (r = mail_append_write(a->app, data, (size_t)n)) < 0) {
					a->err = r;
					append_fail(a, "NO",
						    r == -ENOSPC || r == -EDQUOT
							    ? "[OVERQUOTA] Out of space."
							    : "[SERVERBUG] Append failed.");
				}
			}
			if (n == -2)
				return CMD_MORE;
			if (a->app) {
				if (a->n_done < IMAP_MULTIAPPEND_MAX)
					a->done[a->n_done++] = a->app;
				else
					mail_append_abort(&a->app);
				a->app = NULL;
			}
			a->step = AP_TAIL;
			continue;
		}
		case AP_TAIL: {
			r = imap_cmd_read_args(cmd, &args);
			if (r <= 0)
				return r == 0 ? CMD_MORE : CMD_DONE;
			unsigned n = 0;
			while (args[n].type != IMAP_ARG_EOL)
				n++;
			if (!imap_parser_eol(s->parser)) {
				/* MULTIAPPEND: another [flags] [date] literal (RFC 3502) */
				if (args[n - 1].type != IMAP_ARG_LITERAL_SIZE || n <= a->argpos ||
				    n - a->argpos > (args[n - 1].utf8_wrapped ? 4u : 3u)) {
					append_fail(a, "BAD", "Invalid APPEND arguments.");
				} else if (!a->fail_status && a->n_done >= IMAP_MULTIAPPEND_MAX) {
					append_fail(a, "NO",
						    "[LIMIT] Too many messages in one APPEND.");
				} else if (!a->fail_status) {
					append_group(cmd, a, &args[a->argpos], n - a->argpos);
				}
				a->argpos = n;
				a->step = AP_DATA;
				continue;
			}
			if (n != a->argpos)
				append_fail(a, "BAD", "Invalid APPEND arguments.");
			if (a->fail_status) {
				imap_cmd_reply(cmd, a->fail_status, "%s", a->fail_text);
				return CMD_DONE;
			}
			return append_finish_all(cmd, a);
		}
		}
	}
}
