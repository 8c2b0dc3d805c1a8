/* pop3_session — the connection side: proto_ops hooks, the input loop, the command gate, the
 * state mutator and the reply writer. */
#include "pop3_session.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "conn.h"
#include "log.h"
#include "pop3.h"
#include "sasl.h"

const char *pop3_state_name(enum pop3_state state)
{
	switch (state) {
	case POP3_AUTHORIZATION:
		return "AUTHORIZATION";
	case POP3_TRANSACTION:
		return "TRANSACTION";
	case POP3_UPDATE:
		return "UPDATE";
	}
	return "?";
}

void pop3_set_state(struct pop3_session *s, enum pop3_state state)
{
	log_debug("pop3 conn=%llu state=%s->%s", (unsigned long long)s->id,
		  pop3_state_name(s->state), pop3_state_name(state));
	s->state = state;
}

static void reply_v(struct pop3_session *s, const char *status, const char *fmt, va_list ap)
{
	char text[512];
	int n = vsnprintf(text, sizeof(text), fmt, ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(text))
		n = sizeof(text) - 1;
	conn_write_str(s->conn, status);
	conn_write(s->conn, text, (size_t)n);
	conn_write(s->conn, "\r\n", 2);
}

void pop3_reply_ok(struct pop3_session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	reply_v(s, "+OK ", fmt, ap);
	va_end(ap);
}

void pop3_reply_err(struct pop3_session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	reply_v(s, "-ERR ", fmt, ap);
	va_end(ap);
}

enum pop3_cmd_result pop3_cmd_bad(struct pop3_session *s, const char *reply)
{
	s->bad_reply = reply;
	return POP3_CMD_BAD;
}

bool pop3_session_plaintext_allowed(const struct pop3_session *s)
{
	return auth_plaintext_allowed(conn_config(s->conn), conn_is_tls(s->conn),
				      conn_peer_is_loopback(s->conn));
}

void pop3_session_command_wait(struct pop3_session *s)
{
	if (!s->busy) {
		s->busy = true;
		conn_input_pause(s->conn);
	}
}

void pop3_session_command_done(struct pop3_session *s)
{
	/* Completions (the auth service, a mailbox open) run outside any conn hook: push
	 * what they queued now. */
	if (conn_input_pending(s->conn) == 0)
		pop3_retr_flush_marks(s); /* nothing pipelined behind: the client waits for us */
	conn_flush(s->conn);
	if (s->busy) {
		s->busy = false;
		if (!conn_is_closing(s->conn))
			conn_input_resume(s->conn);
	}
}

/* A bad command: its answer, or the goodbye when the listener's limit is reached. */
static void session_bad_command(struct pop3_session *s, const char *reply, const char *what)
{
	if (conn_note_bad_command(s->conn)) {
		log_info("pop3 conn=%llu event=too_many_bad_commands last=%s",
			 (unsigned long long)s->id, what);
		conn_write_str(s->conn, "-ERR Too many bad commands, closing connection.\r\n");
		conn_close(s->conn, "too many bad commands");
		return;
	}
	conn_write_str(s->conn, reply);
}

static void session_dispatch(struct pop3_session *s, const char *line, size_t len)
{
	struct pop3_command cmd;
	switch (pop3_parse_command(line, len, &cmd)) {
	case POP3_PARSE_OK:
		break;
	case POP3_PARSE_EMPTY:
		session_bad_command(s, "-ERR Empty command.\r\n", "-");
		return;
	case POP3_PARSE_TOO_LONG:
		log_info("pop3 conn=%llu event=line_too_long len=%zu", (unsigned long long)s->id,
			 len);
		conn_write_str(s->conn, "-ERR Command line too long (RFC 2449: 255 octets), "
					"closing connection.\r\n");
		conn_close(s->conn, "command line too long");
		return;
	case POP3_PARSE_BAD:
		session_bad_command(s, "-ERR Unknown command.\r\n", log_escape(line, len));
		return;
	}

	const struct pop3_cmd *c = pop3_cmd_find(cmd.keyword);
	if (c == NULL) {
		session_bad_command(s, "-ERR Unknown command.\r\n",
				    log_escape(cmd.keyword.p, cmd.keyword.len));
		return;
	}
	if (s->state == POP3_AUTHORIZATION && !(c->flags & POP3_CMDF_AUTHORIZATION)) {
		session_bad_command(s, "-ERR Not logged in.\r\n", c->name);
		return;
	}
	if (s->state == POP3_TRANSACTION && !(c->flags & POP3_CMDF_TRANSACTION)) {
		session_bad_command(s, "-ERR Already logged in.\r\n", c->name);
		return;
	}
	log_debug("pop3 conn=%llu cmd=%s", (unsigned long long)s->id, c->name);

	s->bad_reply = NULL;
	switch (c->func(s, cmd.rest)) {
	case POP3_CMD_DONE:
	case POP3_CMD_MORE:
		break;
	case POP3_CMD_BAD:
		session_bad_command(s, s->bad_reply ? s->bad_reply : "-ERR Syntax error.\r\n",
				    c->name);
		break;
	}
}

/* Read and run commands until there is no complete line, a command is in progress, output
 * is above the high watermark, or the connection is closing. */
static void session_input(struct pop3_session *s)
{
	while (!s->busy && s->cont == NULL && !conn_is_closing(s->conn) &&
	       !conn_output_blocked(s->conn)) {
		const char *line;
		size_t len;
		enum conn_line_result r = conn_read_line(s->conn, &line, &len);
		if (r == CONN_LINE_MORE) {
			/* The client waits for us: its RETRs so far become \Seen now. */
			pop3_retr_flush_marks(s);
			break;
		}
		if (r == CONN_LINE_TOO_LONG) {
			log_info("pop3 conn=%llu event=line_too_long", (unsigned long long)s->id);
			conn_write_str(s->conn, "-ERR Line too long, closing connection.\r\n");
			conn_close(s->conn, "line too long");
			break;
		}
		if (s->sasl != NULL && pop3_login_feed_line(s, line, len))
			continue;
		session_dispatch(s, line, len);
	}
}

static void *pop3_session_new(struct conn *c)
{
	struct pop3_session *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->conn = c;
	s->id = conn_id(c);
	s->state = POP3_AUTHORIZATION;
	s->stream.fd = -1;
	pop3_settings_get(conn_config(c), &s->set);
	log_info("pop3 conn=%llu event=connect addr=%s port=%u tls=%s", (unsigned long long)s->id,
		 conn_peer_addr(c), conn_local_port(c), conn_is_tls(c) ? "yes" : "no");
	/* No APOP timestamp: APOP needs the plaintext secret, which PAM never gives. */
	conn_write_str(c, "+OK mailkeep POP3 ready.\r\n");
	return s;
}

static void pop3_on_input(void *session)
{
	session_input(session);
}

static void pop3_on_drain(void *session)
{
	struct pop3_session *s = session;
	if (s->cont != NULL) {
		enum pop3_cmd_result r = s->cont(s);
		if (r == POP3_CMD_MORE)
			return;
		s->cont = NULL;
	}
	session_input(s);
}

static void pop3_on_tls_ready(void *session)
{
	struct pop3_session *s = session;
	/* RFC 2595 §4: forget everything learned before TLS. */
	free(s->user);
	s->user = NULL;
	s->in_stls = false;
	log_info("pop3 conn=%llu event=stls tls=\"%s\"", (unsigned long long)s->id,
		 log_escape_str(conn_tls_describe(s->conn)));
	pop3_session_command_done(s);
}

/* A multi-line answer (RETR, TOP, LIST, UIDL) is partly out: a goodbye line now would be
 * read as message data, so the connection just ends (the client sees no terminator). */
static bool session_mid_response(const struct pop3_session *s)
{
	return s->stream_active || s->cont != NULL;
}

static void pop3_on_timeout(void *session)
{
	struct pop3_session *s = session;
	log_info("pop3 conn=%llu event=idle_timeout state=%s", (unsigned long long)s->id,
		 pop3_state_name(s->state));
	if (!session_mid_response(s))
		conn_write_str(s->conn, "-ERR Disconnected for inactivity.\r\n");
}

static void pop3_on_shutdown(void *session)
{
	struct pop3_session *s = session;
	if (!session_mid_response(s))
		conn_write_str(s->conn, "-ERR [SYS/TEMP] Server shutting down.\r\n");
}

static void pop3_session_free(void *session)
{
	struct pop3_session *s = session;
	if (s == NULL)
		return;
	if (s->state == POP3_TRANSACTION)
		log_info("pop3 conn=%llu event=disconnect user=%s committed=no dele_marks=%u",
			 (unsigned long long)s->id, log_escape_str(s->canonical_user),
			 s->dele_count);
	if (s->quit_wait)
		s->quit_wait->s = NULL; /* its callback frees it */
	if (s->prep_wait)
		s->prep_wait->s = NULL;
	pop3_retr_abort(s);
	/* Messages sent whole were downloaded: their \Seen stands (DELE marks do not). */
	pop3_retr_flush_marks(s);
	pop3_login_abort(s);
	/* A session that ends without QUIT commits nothing: the view goes with its marks. */
	pop3_maildrop_close(s);
	free(s->user);
	free(s->canonical_user);
	free(s->mech_name);
	free(s);
}

const struct proto_ops pop3_proto_ops = {
	.name = "pop3",
	.default_idle_timeout_s = 600,
	/* Commands are held to RFC 2449's 255 octets (CRLF included) by pop3_parse; the
	 * connection's limit is the longest SASL response line (base64 of a PLAIN message at
	 * the credential caps), which RFC 2449's command limit does not cover. */
	.default_max_line = SASL_MAX_RESPONSE,
	.refuse_line = "-ERR [SYS/TEMP] Too many connections, try again later.\r\n",
	.session_new = pop3_session_new,
	.on_input = pop3_on_input,
	.on_drain = pop3_on_drain,
	.on_tls_ready = pop3_on_tls_ready,
	.on_timeout = pop3_on_timeout,
	.on_shutdown = pop3_on_shutdown,
	.session_free = pop3_session_free,
};
