/* pop3_cmds — the command table and the commands that need no login machinery or stream:
 * CAPA, STLS, APOP, QUIT, STAT, LIST, UIDL, DELE, NOOP, RSET; and opening/closing the
 * maildrop (the INBOX snapshot view). */
#include "pop3_session.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conn.h"
#include "log.h"
#include "storage.h"

#define AUTHZ POP3_CMDF_AUTHORIZATION
#define TRANS POP3_CMDF_TRANSACTION

/* RFC 1939 + RFC 2449 + RFC 5034 + RFC 2595. Searched linearly (15 entries). */
static const struct pop3_cmd pop3_cmds[] = {
	{"APOP", pop3_cmd_apop, AUTHZ},         {"AUTH", pop3_cmd_auth, AUTHZ},
	{"CAPA", pop3_cmd_capa, AUTHZ | TRANS}, {"DELE", pop3_cmd_dele, TRANS},
	{"LIST", pop3_cmd_list, TRANS},         {"NOOP", pop3_cmd_noop, TRANS},
	{"PASS", pop3_cmd_pass, AUTHZ},         {"QUIT", pop3_cmd_quit, AUTHZ | TRANS},
	{"RETR", pop3_cmd_retr, TRANS},         {"RSET", pop3_cmd_rset, TRANS},
	{"STAT", pop3_cmd_stat, TRANS},         {"STLS", pop3_cmd_stls, AUTHZ},
	{"TOP", pop3_cmd_top, TRANS},           {"UIDL", pop3_cmd_uidl, TRANS},
	{"USER", pop3_cmd_user, AUTHZ},
};

const struct pop3_cmd *pop3_cmd_find(struct pop3_token keyword)
{
	for (size_t i = 0; i < sizeof(pop3_cmds) / sizeof(pop3_cmds[0]); i++)
		if (pop3_token_equals(keyword, pop3_cmds[i].name))
			return &pop3_cmds[i];
	return NULL;
}

enum pop3_cmd_result pop3_cmd_capa(struct pop3_session *s, struct pop3_token args)
{
	if (args.len > 0)
		return pop3_cmd_bad(s, "-ERR Syntax: CAPA takes no arguments.\r\n");
	struct conn *c = s->conn;
	bool authz = s->state == POP3_AUTHORIZATION;
	conn_write_str(c, "+OK Capability list follows\r\n"
			  "TOP\r\n"
			  "UIDL\r\n"
			  "RESP-CODES\r\n"
			  "AUTH-RESP-CODE\r\n"
			  "PIPELINING\r\n");
	if (authz && pop3_session_plaintext_allowed(s))
		conn_write_str(c, "USER\r\nSASL PLAIN LOGIN\r\n");
	if (authz && conn_can_starttls(c))
		conn_write_str(c, "STLS\r\n");
	if (s->set.expire_days == 0)
		conn_write_str(c, "EXPIRE NEVER\r\n");
	else
		conn_printf(c, "EXPIRE %u\r\n", s->set.expire_days);
	if (s->set.login_delay > 0)
		conn_printf(c, "LOGIN-DELAY %u\r\n", s->set.login_delay);
	conn_write_str(c, "IMPLEMENTATION mailkeep\r\n.\r\n");
	return POP3_CMD_DONE;
}

enum pop3_cmd_result pop3_cmd_stls(struct pop3_session *s, struct pop3_token args)
{
	if (args.len > 0)
		return pop3_cmd_bad(s, "-ERR Syntax: STLS takes no arguments.\r\n");
	if (conn_is_tls(s->conn)) {
		pop3_reply_err(s, "Already using TLS.");
		return POP3_CMD_DONE;
	}
	if (!conn_can_starttls(s->conn)) {
		pop3_reply_err(s, "STLS is not available on this port.");
		return POP3_CMD_DONE;
	}
	pop3_reply_ok(s, "Begin TLS negotiation.");
	if (conn_starttls(s->conn) < 0) {
		/* The +OK is queued; a handshake that cannot start leaves nothing to talk to. */
		conn_close(s->conn, "STLS failed to start");
		return POP3_CMD_DONE;
	}
	s->in_stls = true;
	pop3_session_command_wait(s);
	return POP3_CMD_MORE;
}

enum pop3_cmd_result pop3_cmd_apop(struct pop3_session *s, struct pop3_token args)
{
	/* APOP needs the plaintext secret on the server; PAM never gives it. The greeting has no
	 * timestamp, so a conforming client never tries. */
	pop3_reply_err(s, "[AUTH] APOP is not supported; use USER/PASS or AUTH.");
	return POP3_CMD_DONE;
}

enum pop3_cmd_result pop3_cmd_noop(struct pop3_session *s, struct pop3_token args)
{
	if (args.len > 0)
		return pop3_cmd_bad(s, "-ERR Syntax: NOOP takes no arguments.\r\n");
	pop3_reply_ok(s, "NOOP");
	return POP3_CMD_DONE;
}

void pop3_maildrop_close(struct pop3_session *s)
{
	view_free(&s->view);
	store_unref(&s->store);
}

/* QUIT's answer once the commit is done (RET: its result). */
static void quit_finish(struct pop3_session *s, int ret, uint32_t marks)
{
	if (ret < 0) {
		log_error("pop3 conn=%llu event=commit_failed user=%s error=\"%s\"",
			  (unsigned long long)s->id, log_escape_str(s->canonical_user),
			  strerror(-ret));
		pop3_reply_err(s, "[SYS/TEMP] Some deleted messages were not removed: %s",
			       storage_error_text(ret));
	} else {
		log_info("pop3 conn=%llu event=logout user=%s deleted=%u policy=%s",
			 (unsigned long long)s->id, log_escape_str(s->canonical_user), marks,
			 s->set.delete_policy == POP3_DELETE_HIDE ? "hide" : "expunge");
		pop3_reply_ok(s, "Logging out, %u message%s deleted.", marks,
			      marks == 1 ? "" : "s");
	}
	s->dele_count = 0;
	s->dele_size = 0;
	pop3_maildrop_close(s);
	conn_close(s->conn, "QUIT");
}

/* The deletes are durable (their records synced on the thread pool, the files gone). */
static void quit_synced(int err, void *data)
{
	struct pop3_quit_wait *w = data;
	struct pop3_session *s = w->s;
	uint32_t marks = w->marks;
	free(w);
	if (s == NULL)
		return; /* the connection went meanwhile: the commit stands all the same */
	s->quit_wait = NULL;
	quit_finish(s, err, marks);
	pop3_session_command_done(s);
}

enum pop3_cmd_result pop3_cmd_quit(struct pop3_session *s, struct pop3_token args)
{
	(void)args;
	if (s->state == POP3_AUTHORIZATION) {
		pop3_reply_ok(s, "Logging out.");
		conn_close(s->conn, "QUIT");
		return POP3_CMD_DONE;
	}
	pop3_set_state(s, POP3_UPDATE);
	pop3_retr_flush_marks(s);
	uint32_t marks = s->dele_count;
	int ret = 0;
	if (marks > 0) {
		/* +OK only once the deletes are durable; the loop does not wait for the disk */
		struct pop3_quit_wait *w = calloc(1, sizeof(*w));
		ret = w ? view_pop3_commit_async(s->view, s->set.delete_policy, quit_synced, w)
			: -ENOMEM;
		if (ret == 0) {
			w->s = s;
			w->marks = marks;
			s->quit_wait = w;
			pop3_session_command_wait(s);
			return POP3_CMD_MORE;
		}
		free(w);
	}
	quit_finish(s, ret, marks);
	return POP3_CMD_DONE;
}

enum pop3_cmd_result pop3_cmd_stat(struct pop3_session *s, struct pop3_token args)
{
	if (args.len > 0)
		return pop3_cmd_bad(s, "-ERR Syntax: STAT takes no arguments.\r\n");
	conn_printf(s->conn, "+OK %u %llu\r\n", s->snap_count - s->dele_count,
		    (unsigned long long)(s->snap_size - s->dele_size));
	return POP3_CMD_DONE;
}

/* Parse the optional message number of LIST/UIDL or the mandatory one of RETR/DELE.
 * Returns 1 with *n_r set, 0 when absent (and allowed), or -1 on a syntax error. */
static int parse_msg_arg(struct pop3_token args, bool required, uint32_t *n_r)
{
	struct pop3_token t[1];
	int n = pop3_parse_args(args, t, 1);
	if (n < 0)
		return -1;
	if (n == 0)
		return required ? -1 : 0;
	return pop3_parse_uint(t[0], n_r) ? 1 : -1;
}

bool pop3_msg_check(struct pop3_session *s, uint32_t n, struct mail_info *info_r)
{
	if (n == 0 || n > s->snap_count) {
		pop3_reply_err(s, "There is no message %u.", n);
		return false;
	}
	if (view_pop3_is_deleted(s->view, n)) {
		pop3_reply_err(s, "Message %u is already deleted.", n);
		return false;
	}
	int ret = view_msg_info(s->view, n, info_r);
	if (ret == -ENOENT) {
		pop3_reply_err(s, "Message %u was removed by another session.", n);
		return false;
	}
	if (ret < 0) {
		pop3_reply_err(s, "There is no message %u.", n);
		return false;
	}
	return true;
}

/* One line of a LIST/UIDL listing for message N; false when the message is not listed
 * (deleted in this session, or expunged by another). */
static bool listing_line(struct pop3_session *s, uint32_t n, bool uidl)
{
	if (view_pop3_is_deleted(s->view, n))
		return false;
	if (uidl) {
		char id[MAIL_UIDL_MAX + 1];
		if (view_msg_uidl(s->view, n, id, sizeof(id)) < 0)
			return false;
		conn_printf(s->conn, "%u %s\r\n", n, id);
	} else {
		struct mail_info info;
		if (view_msg_info(s->view, n, &info) < 0)
			return false;
		conn_printf(s->conn, "%u %llu\r\n", n, (unsigned long long)info.size);
	}
	return true;
}

/* Continue a multi-line listing until done or output is above the high watermark. */
static enum pop3_cmd_result listing_continue(struct pop3_session *s)
{
	while (s->listing.next <= s->snap_count) {
		if (conn_output_blocked(s->conn))
			return POP3_CMD_MORE;
		listing_line(s, s->listing.next, s->listing.uidl);
		s->listing.next++;
	}
	conn_write_str(s->conn, ".\r\n");
	return POP3_CMD_DONE;
}

static enum pop3_cmd_result listing_cmd(struct pop3_session *s, struct pop3_token args, bool uidl)
{
	uint32_t n;
	int has = parse_msg_arg(args, false, &n);
	if (has < 0)
		return pop3_cmd_bad(s, uidl ? "-ERR Syntax: UIDL [message]\r\n"
					    : "-ERR Syntax: LIST [message]\r\n");
	if (has) {
		struct mail_info info;
		if (!pop3_msg_check(s, n, &info))
			return POP3_CMD_DONE;
		if (uidl) {
			char id[MAIL_UIDL_MAX + 1];
			if (view_msg_uidl(s->view, n, id, sizeof(id)) < 0) {
				pop3_reply_err(s, "Message %u was removed by another session.", n);
				return POP3_CMD_DONE;
			}
			pop3_reply_ok(s, "%u %s", n, id);
		} else {
			pop3_reply_ok(s, "%u %llu", n, (unsigned long long)info.size);
		}
		return POP3_CMD_DONE;
	}
	if (uidl)
		pop3_reply_ok(s, "Unique-ID listing follows.");
	else
		pop3_reply_ok(s, "%u messages (%llu octets)", s->snap_count - s->dele_count,
			      (unsigned long long)(s->snap_size - s->dele_size));
	s->listing.uidl = uidl;
	s->listing.next = 1;
	if (listing_continue(s) == POP3_CMD_DONE)
		return POP3_CMD_DONE;
	s->cont = listing_continue;
	return POP3_CMD_MORE;
}

enum pop3_cmd_result pop3_cmd_list(struct pop3_session *s, struct pop3_token args)
{
	return listing_cmd(s, args, false);
}

enum pop3_cmd_result pop3_cmd_uidl(struct pop3_session *s, struct pop3_token args)
{
	return listing_cmd(s, args, true);
}

enum pop3_cmd_result pop3_cmd_dele(struct pop3_session *s, struct pop3_token args)
{
	uint32_t n;
	if (parse_msg_arg(args, true, &n) < 0)
		return pop3_cmd_bad(s, "-ERR Syntax: DELE message\r\n");
	struct mail_info info;
	if (!pop3_msg_check(s, n, &info))
		return POP3_CMD_DONE;
	int ret = view_pop3_delete(s->view, n);
	if (ret == -ENOENT) {
		pop3_reply_err(s, "Message %u was removed by another session.", n);
		return POP3_CMD_DONE;
	}
	if (ret < 0) {
		pop3_reply_err(s, "Message %u cannot be deleted: %s", n, storage_error_text(ret));
		return POP3_CMD_DONE;
	}
	s->dele_count++;
	s->dele_size += info.size;
	pop3_reply_ok(s, "Message %u deleted.", n);
	return POP3_CMD_DONE;
}

enum pop3_cmd_result pop3_cmd_rset(struct pop3_session *s, struct pop3_token args)
{
	if (args.len > 0)
		return pop3_cmd_bad(s, "-ERR Syntax: RSET takes no arguments.\r\n");
	view_pop3_reset(s->view);
	s->dele_count = 0;
	s->dele_size = 0;
	pop3_reply_ok(s, "Maildrop has %u messages (%llu octets).", s->snap_count,
		      (unsigned long long)s->snap_size);
	return POP3_CMD_DONE;
}
