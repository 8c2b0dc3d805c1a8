/* pop3_retr — RETR and TOP: the message streams from its file through conn_stream_file and
 * the dot-stuffing transform, in chunks, as output drains (never whole in memory). TOP reads
 * the file in windows so it stops reading once its line count is reached. */
#include "pop3_session.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "conn.h"
#include "log.h"
#include "storage.h"

/* TOP reads this much per conn_stream_file call. */
#define POP3_TOP_WINDOW (64 * 1024)

static void retr_out(void *ctx, const char *data, size_t len)
{
	conn_write(ctx, data, len);
}

static void retr_filter(struct conn *c, void *ctx, const char *data, size_t len, bool last)
{
	struct pop3_session *s = ctx;
	struct pop3_stream *st = &s->stream;
	pop3_dot_feed(&st->dot, data, len, retr_out, c);
	/* The end of this window is the end of the message, or TOP has all its lines. */
	if (pop3_dot_stopped(&st->dot) || (last && st->offset >= st->file_size))
		pop3_dot_finish(&st->dot, retr_out, c);
}

static void retr_release(struct pop3_session *s)
{
	mail_stream_free(&s->stream.mail);
	s->stream.fd = -1;
	s->stream_active = false;
}

void pop3_retr_flush_marks(struct pop3_session *s)
{
	if (s->view == NULL) {
		s->n_seen = 0;
		s->n_retr = 0;
		return;
	}
	struct mailbox *mbox = view_mailbox(s->view);
	if (s->n_seen > 0) {
		/* RFC 1939 leaves \Seen to us; IMAP views see it at once. Messages expunged
		 * meanwhile are skipped by the store. Nobody waits for it to be durable (its
		 * fsyncs run on the thread pool): a crash may lose a \Seen, never a message,
		 * as with Dovecot, which applies it at QUIT. */
		int ret = mailbox_store_flags_async(mbox, s->view, s->seen_uids, s->n_seen,
						    FLAG_OP_ADD, MAIL_SEEN, 0, NULL, NULL);
		if (ret < 0)
			log_warn("pop3 conn=%llu event=set_seen_failed messages=%zu error=\"%s\"",
				 (unsigned long long)s->id, s->n_seen, strerror(-ret));
		s->n_seen = 0;
	}
	if (s->n_retr > 0) {
		/* The clock of pop3_expire_days starts at the first whole download. A failure
		 * only keeps these messages longer (they cannot expire until downloaded again). */
		int ret = mailbox_pop3_mark_retrieved(mbox, s->retr_uids, s->n_retr,
						      (int64_t)time(NULL));
		if (ret < 0)
			log_warn("pop3 conn=%llu event=mark_retrieved_failed messages=%zu "
				 "error=\"%s\"",
				 (unsigned long long)s->id, s->n_retr, strerror(-ret));
		s->n_retr = 0;
	}
}

/* The whole response is queued: end it (a file shorter than the stat said still gets a
 * proper end), mark RETR's download (\Seen, retrieval time), and let go of the file. */
static void retr_finish(struct pop3_session *s)
{
	struct pop3_stream *st = &s->stream;
	pop3_dot_finish(&st->dot, retr_out, s->conn);
	if (st->set_seen)
		s->seen_uids[s->n_seen++] = st->uid;
	if (st->retrieved)
		s->retr_uids[s->n_retr++] = st->uid;
	if (s->n_seen == POP3_SEEN_BATCH || s->n_retr == POP3_SEEN_BATCH)
		pop3_retr_flush_marks(s);
	retr_release(s);
}

static int retr_next_window(struct pop3_session *s);

static void retr_done(struct conn *c, void *ctx, int status)
{
	struct pop3_session *s = ctx;
	struct pop3_stream *st = &s->stream;
	if (status == -ECANCELED) {
		retr_release(s);
		return;
	}
	if (status < 0) {
		/* Part of the response is out already: nothing the client could trust follows. */
		log_error("pop3 conn=%llu event=retr_read_failed seq=%u uid=%u error=\"%s\"",
			  (unsigned long long)s->id, st->seq, st->uid, strerror(-status));
		retr_release(s);
		conn_abort(c, "message read failed");
		return;
	}
	if (!st->dot.finished && st->offset < st->file_size) {
		int ret = retr_next_window(s);
		if (ret == 0)
			return;
		log_error("pop3 conn=%llu event=retr_stream_failed seq=%u error=\"%s\"",
			  (unsigned long long)s->id, st->seq, strerror(-ret));
		retr_release(s);
		conn_abort(c, "message stream failed");
		return;
	}
	retr_finish(s);
	pop3_session_command_done(s);
}

static int retr_next_window(struct pop3_session *s)
{
	struct pop3_stream *st = &s->stream;
	uint64_t len = st->file_size - st->offset;
	if (len > st->window)
		len = st->window;
	uint64_t off = st->offset;
	st->offset += len;
	return conn_stream_file(s->conn, st->fd, off, len, retr_filter, retr_done, s);
}

static enum pop3_cmd_result retr_start(struct pop3_session *s, uint32_t n, bool top, uint32_t lines)
{
	struct mail_info info;
	if (!pop3_msg_check(s, n, &info))
		return POP3_CMD_DONE;

	struct pop3_stream *st = &s->stream;
	struct mail_stream *mail = NULL;
	int ret = view_msg_open(s->view, n, &mail);
	if (ret == -ENOENT) {
		pop3_reply_err(s, "Message %u was removed by another session.", n);
		return POP3_CMD_DONE;
	}
	bool needs_crlf = false;
	int fd = -1;
	struct stat sb;
	if (ret == 0) {
		fd = mail_stream_fd(mail, &needs_crlf);
		if (fd < 0)
			ret = fd;
		else if (fstat(fd, &sb) < 0)
			ret = -errno;
	}
	if (ret < 0) {
		log_error("pop3 conn=%llu event=retr_open_failed seq=%u uid=%u error=\"%s\"",
			  (unsigned long long)s->id, n, info.uid, strerror(-ret));
		mail_stream_free(&mail);
		pop3_reply_err(s, "[SYS/TEMP] Message %u cannot be read now.", n);
		return POP3_CMD_DONE;
	}

	memset(st, 0, sizeof(*st));
	st->mail = mail;
	st->fd = fd;
	st->file_size = (uint64_t)sb.st_size;
	st->seq = n;
	st->uid = info.uid;
	st->window = top ? POP3_TOP_WINDOW : st->file_size;
	st->set_seen = !top && s->set.retr_sets_seen && !(info.flags & MAIL_SEEN);
	st->retrieved = !top;
	pop3_dot_init(&st->dot, needs_crlf, top, lines);
	s->stream_active = true;

	if (top)
		pop3_reply_ok(s, "Top of message %u follows.", n);
	else
		pop3_reply_ok(s, "%llu octets", (unsigned long long)info.size);

	if (st->file_size == 0) {
		/* Nothing to read: the terminator alone. */
		retr_finish(s);
		return POP3_CMD_DONE;
	}
	ret = retr_next_window(s);
	if (ret < 0) {
		log_error("pop3 conn=%llu event=retr_stream_failed seq=%u error=\"%s\"",
			  (unsigned long long)s->id, n, strerror(-ret));
		retr_release(s);
		conn_abort(s->conn, "message stream failed");
		return POP3_CMD_DONE;
	}
	pop3_session_command_wait(s);
	return POP3_CMD_MORE;
}

enum pop3_cmd_result pop3_cmd_retr(struct pop3_session *s, struct pop3_token args)
{
	struct pop3_token t[1];
	uint32_t n;
	if (pop3_parse_args(args, t, 1) != 1 || !pop3_parse_uint(t[0], &n))
		return pop3_cmd_bad(s, "-ERR Syntax: RETR message\r\n");
	return retr_start(s, n, false, 0);
}

enum pop3_cmd_result pop3_cmd_top(struct pop3_session *s, struct pop3_token args)
{
	struct pop3_token t[2];
	uint32_t n, lines;
	if (pop3_parse_args(args, t, 2) != 2 || !pop3_parse_uint(t[0], &n) ||
	    !pop3_parse_uint(t[1], &lines))
		return pop3_cmd_bad(s, "-ERR Syntax: TOP message lines\r\n");
	return retr_start(s, n, true, lines);
}

void pop3_retr_abort(struct pop3_session *s)
{
	if (s->stream_active)
		retr_release(s);
}
