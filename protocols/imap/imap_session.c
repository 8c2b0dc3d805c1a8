/* imap_session — one IMAP connection: the command loop, the gate, replies, the state enum and
 * the proto_ops hooks. */
#include "imap.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "config.h"
#include "imap_internal.h"
#include "log.h"

_Static_assert(IMAP_MAX_APPEND == 67108864ULL, "IMAP_MAX_APPEND_STR must match");

static const char *const state_names[] = {
	[IMAP_NOT_AUTH] = "not_authenticated",
	[IMAP_AUTH] = "authenticated",
	[IMAP_SELECTED] = "selected",
	[IMAP_LOGOUT] = "logout",
};

const char *imap_state_name(enum imap_state state)
{
	return state_names[state];
}

static unsigned long long sid(const struct imap_session *s)
{
	return (unsigned long long)conn_id(s->conn);
}

static void parser_limits_for(const struct imap_session *s, enum imap_state state,
			      struct imap_parser_limits *lim)
{
	const struct config *cfg = conn_config(s->conn);
	lim->max_nonsync = cfg && !cfg->imap_literal_plus ? IMAP_LITERAL_MINUS_MAX : 0;
	if (state == IMAP_NOT_AUTH) {
		lim->max_command = IMAP_PREAUTH_MAX_COMMAND;
		lim->max_literal = IMAP_PREAUTH_MAX_LITERAL;
		lim->max_stream = 0;
		lim->max_depth = 4;
		lim->max_args = 64;
	} else {
		lim->max_command = IMAP_MAX_COMMAND;
		lim->max_literal = IMAP_MAX_LITERAL;
		lim->max_stream = IMAP_MAX_APPEND;
		lim->max_depth = IMAP_MAX_DEPTH;
		lim->max_args = IMAP_MAX_ARGS;
	}
}

void imap_set_state(struct imap_session *s, enum imap_state state)
{
	if (s->state == state)
		return;
	log_debug("conn=%llu imap_state=%s->%s", sid(s), state_names[s->state], state_names[state]);
	s->state = state;
	struct imap_parser_limits lim;
	parser_limits_for(s, state, &lim);
	imap_parser_set_limits(s->parser, &lim); /* from the next command on */
}

bool imap_plaintext_allowed(const struct imap_session *s)
{
	return auth_plaintext_allowed(conn_config(s->conn), conn_is_tls(s->conn),
				      conn_peer_is_loopback(s->conn));
}

/* The capabilities, in the order they are listed. Only what is implemented and tested. */
void imap_capability_string(struct imap_session *s, char *out, size_t size)
{
	size_t o = 0;
	out[0] = '\0';
#define ADD(str) o += (size_t)snprintf(out + o, o < size ? size - o : 0, "%s%s", o ? " " : "", str)
	ADD("IMAP4rev1");
	ADD("IMAP4rev2");
	ADD("SASL-IR");
	const struct config *cfg = conn_config(s->conn);
	ADD(cfg && !cfg->imap_literal_plus ? "LITERAL-" : "LITERAL+");
	ADD("ID");
	ADD("ENABLE");
	ADD("IDLE");
	ADD("NAMESPACE");
	ADD("UNSELECT");
	ADD("UIDPLUS");
	ADD("CHILDREN");
	ADD("LIST-EXTENDED");
	ADD("LIST-STATUS");
	ADD("SPECIAL-USE");
	ADD("CREATE-SPECIAL-USE");
	ADD("ESEARCH");
	ADD("SEARCHRES");
	ADD("MOVE");
	ADD("STATUS=SIZE");
	ADD("BINARY");
	ADD("CONDSTORE");
	ADD("QRESYNC");
	ADD("APPENDLIMIT=" IMAP_MAX_APPEND_STR);
	ADD("MULTIAPPEND");
	ADD("WITHIN");
	ADD("OBJECTID");
	ADD("SAVEDATE");
	ADD("SORT");
	ADD("SORT=DISPLAY");
	ADD("ESORT");
	ADD("THREAD=ORDEREDSUBJECT");
	ADD("THREAD=REFERENCES");
	ADD("PREVIEW");
	ADD("QUOTA");
	ADD("QUOTA=RES-STORAGE");
	ADD("QUOTA=RES-MESSAGE");
	ADD("UTF8=ACCEPT");
	if (s->state == IMAP_NOT_AUTH) {
		if (conn_can_starttls(s->conn))
			ADD("STARTTLS");
		if (imap_plaintext_allowed(s)) {
			ADD("AUTH=PLAIN");
			ADD("AUTH=LOGIN");
		} else {
			ADD("LOGINDISABLED");
		}
	} else {
		ADD("COMPRESS=DEFLATE"); /* after login only (RFC 4978 §3) */
		ADD("UNAUTHENTICATE");   /* RFC 8437 */
	}
#undef ADD
	if (o >= size && size > 0)
		out[size - 1] = '\0';
}

/* ---------------------------------------------------------------------------------------- */
/* Replies                                                                                   */

void imap_session_bye(struct imap_session *s, const char *text)
{
	if (conn_is_closing(s->conn))
		return;
	conn_printf(s->conn, "* BYE %s\r\n", text);
	if (s->state != IMAP_LOGOUT)
		imap_set_state(s, IMAP_LOGOUT);
	conn_close(s->conn, text);
}

/* A bad command was answered: end the connection after too many. */
static void note_bad(struct imap_session *s)
{
	if (conn_note_bad_command(s->conn)) {
		log_info("conn=%llu event=too_many_bad_commands", sid(s));
		imap_session_bye(s, "Too many invalid IMAP commands.");
	}
}

void imap_cmd_reply(struct imap_cmd *cmd, const char *status, const char *fmt, ...)
{
	struct imap_session *s = cmd->s;
	if (conn_is_closing(s->conn))
		return;
	char text[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	/* Announcements owed go out before the tagged reply: EXPUNGE too, except for FETCH,
	 * STORE and SEARCH (their UID forms allow it, RFC 9051 §7.5.1). */
	if (s->view && !s->idling)
		imap_session_sync(s,
				  !(cmd->def && (cmd->def->flags & CMDF_NO_EXPUNGE)) || cmd->uid);
	conn_printf(s->conn, "%s %s %s\r\n", cmd->tag[0] ? cmd->tag : "*", status, text);
	if (strcmp(status, "BAD") == 0)
		note_bad(s);
}

/* ---------------------------------------------------------------------------------------- */
/* Parser input through the connection                                                       */

static enum imap_input_line in_read_line(void *ctx, const char **line_r, size_t *len_r)
{
	struct imap_session *s = ctx;
	switch (conn_read_line(s->conn, line_r, len_r)) {
	case CONN_LINE_MORE:
		return IMAP_INPUT_MORE;
	case CONN_LINE_OK:
		return IMAP_INPUT_OK;
	case CONN_LINE_TOO_LONG:
		break;
	}
	return IMAP_INPUT_TOO_LONG;
}

static size_t in_read_literal(void *ctx, uint64_t *remaining, const char **data_r)
{
	struct imap_session *s = ctx;
	return conn_read_literal(s->conn, remaining, data_r);
}

static void in_send_continuation(void *ctx)
{
	struct imap_session *s = ctx;
	/* Sent at once, even in the middle of a command (STYLE.md rule 5). */
	conn_write_str(s->conn, "+ Ready for literal data\r\n");
	conn_flush(s->conn);
}

/* ---------------------------------------------------------------------------------------- */
/* Commands                                                                                  */

/* The answer to a command that failed before its handler ran: read the rest, then BAD. */
struct bad_ctx {
	const char *msg;
};

static enum cmd_result cmd_bad(struct imap_cmd *cmd)
{
	const struct imap_arg *args;
	struct bad_ctx *b = cmd->ctx;
	int r = imap_cmd_read_args(cmd, &args);
	if (r == 0)
		return CMD_MORE;
	if (r > 0)
		imap_cmd_reply(cmd, "BAD", "%s", b->msg);
	return CMD_DONE;
}

static void bad_ctx_free(struct imap_cmd *cmd)
{
	free(cmd->ctx);
	cmd->ctx = NULL;
}

static const struct imap_cmd_def bad_def = {"", cmd_bad, CMDF_ANY};

/* The parser reported an error for the current command. */
static void parse_error(struct imap_session *s, struct imap_cmd *cmd)
{
	bool fatal;
	const char *msg = imap_parser_get_error(s->parser, &fatal);
	if (fatal) {
		log_warn("conn=%llu event=imap_parse_error fatal=1 error=%s", sid(s),
			 log_escape_str(msg));
		imap_session_bye(s, msg);
		return;
	}
	log_info("conn=%llu event=imap_parse_error error=%s", sid(s), log_escape_str(msg));
	bool literal_minus = strcmp(msg, IMAP_PARSER_ERR_LITERAL_MINUS) == 0;
	if (cmd && literal_minus) {
		/* RFC 7888 §4: the response code leads the text */
		imap_cmd_reply(cmd, "BAD", "%s", msg);
	} else if (cmd && cmd->def && strcmp(cmd->def->name, "APPEND") == 0 &&
		   strncmp(msg, "[TOOBIG]", 8) == 0) {
		/* RFC 7889 §4: a message over APPENDLIMIT is refused with NO, not BAD */
		imap_cmd_reply(cmd, "NO", "[TOOBIG] Message exceeds the APPENDLIMIT.");
	} else if (cmd) {
		imap_cmd_reply(cmd, "BAD", "Error in IMAP command: %s", msg);
	} else {
		conn_printf(s->conn, "* BAD Error in IMAP command: %s\r\n", msg);
		note_bad(s);
	}
}

int imap_cmd_read_args(struct imap_cmd *cmd, const struct imap_arg **args_r)
{
	struct imap_session *s = cmd->s;
	const struct imap_arg *args;
	int r = imap_parser_read_args(s->parser, 0, &args);
	if (r == -2)
		return 0;
	if (r < 0) {
		parse_error(s, cmd);
		return -1;
	}
	unsigned skip = cmd->uid ? 3 : 2;
	if (cmd->def == &bad_def)
		skip = (unsigned)r; /* any shape */
	*args_r = args + ((unsigned)r < skip ? (unsigned)r : skip);
	return 1;
}

static bool tag_valid(const struct imap_arg *arg)
{
	if (arg->type != IMAP_ARG_ATOM || arg->len > IMAP_TAG_MAX)
		return false;
	for (size_t i = 0; i < arg->len; i++) {
		unsigned char c = (unsigned char)arg->str[i];
		if (c == '+' || c == '%' || c == '*' || c == '{' || c == '\\' || c > 0x7e)
			return false;
	}
	return true;
}

static void cmd_begin(struct imap_session *s, const struct imap_cmd_def *def, const char *tag,
		      bool uid)
{
	memset(&s->cmd, 0, sizeof(s->cmd));
	s->cmd.s = s;
	s->cmd.def = def;
	s->cmd.uid = uid;
	snprintf(s->cmd.tag, sizeof(s->cmd.tag), "%s", tag);
	s->cmd_running = true;
}

static void cmd_begin_bad(struct imap_session *s, const char *tag, const char *msg)
{
	cmd_begin(s, &bad_def, tag, false);
	struct bad_ctx *b = malloc(sizeof(*b));
	if (b) {
		b->msg = msg;
		s->cmd.ctx = b;
		s->cmd.ctx_free = bad_ctx_free;
	} else {
		static struct bad_ctx oom = {"Out of memory"};
		s->cmd.ctx = &oom;
	}
}

static const char *gate(const struct imap_session *s, unsigned flags)
{
	switch (s->state) {
	case IMAP_NOT_AUTH:
		if (!(flags & CMDF_PREAUTH))
			return "Please log in first.";
		return NULL;
	case IMAP_AUTH:
		if (flags & CMDF_NOT_AUTH_ONLY)
			return "Already logged in.";
		if (!(flags & CMDF_AUTH))
			return "Not permitted in this state.";
		if (flags & CMDF_SELECTED)
			return "No mailbox selected.";
		return NULL;
	case IMAP_SELECTED:
		if (flags & CMDF_NOT_AUTH_ONLY)
			return "Already logged in.";
		if (!(flags & CMDF_AUTH))
			return "Not permitted in this state.";
		return NULL;
	case IMAP_LOGOUT:
		break;
	}
	return "Logging out.";
}

/* Read the tag and command name of the next command and set it running. Returns false when
 * more input is needed. Re-entrant: the parser hands back what it already read. */
static bool command_start(struct imap_session *s)
{
	const struct imap_arg *args;
	int r = imap_parser_read_args(s->parser, 2, &args);
	if (r == -2)
		return false;
	if (r == -1) {
		parse_error(s, NULL);
		imap_parser_reset(s->parser);
		return true;
	}
	if (r == 0) {
		/* An empty line: ignored, as most servers do. */
		imap_parser_reset(s->parser);
		return true;
	}
	if (!tag_valid(&args[0])) {
		cmd_begin_bad(s, "", "Invalid tag.");
		return true;
	}
	const char *tag = args[0].str;
	if (r < 2 || args[1].type != IMAP_ARG_ATOM) {
		cmd_begin_bad(s, tag, r < 2 ? "Missing command." : "Invalid command name.");
		return true;
	}
	const struct imap_cmd_def *def = imap_cmd_find(args[1].str);
	bool uid = false;
	if (def && strcasecmp(def->name, "UID") == 0) {
		r = imap_parser_read_args(s->parser, 3, &args);
		if (r == -2)
			return false;
		if (r == -1) {
			struct imap_cmd tmp = {.s = s};
			snprintf(tmp.tag, sizeof(tmp.tag), "%s", tag);
			parse_error(s, &tmp);
			imap_parser_reset(s->parser);
			return true;
		}
		if (r < 3 || args[2].type != IMAP_ARG_ATOM) {
			cmd_begin_bad(s, tag, "Missing UID command.");
			return true;
		}
		def = imap_cmd_find(args[2].str);
		if (!def || !(def->flags & CMDF_UID)) {
			cmd_begin_bad(s, tag, "Unknown UID command.");
			return true;
		}
		uid = true;
	}
	if (!def) {
		log_debug("conn=%llu event=unknown_command name=%s", sid(s),
			  log_escape(args[1].str, args[1].len));
		cmd_begin_bad(s, tag, "Unknown command.");
		return true;
	}
	const char *why = gate(s, def->flags);
	if (why) {
		cmd_begin_bad(s, tag, why);
		return true;
	}
	/* The handler may want the literal of its last argument streamed (APPEND). */
	cmd_begin(s, def, tag, uid);
	return true;
}

static void command_finish(struct imap_session *s)
{
	if (s->cmd.ctx_free)
		s->cmd.ctx_free(&s->cmd);
	s->cmd.ctx = NULL;
	s->cmd.ctx_free = NULL;
	s->cmd_running = false;
	imap_parser_reset(s->parser);
}

/* Run commands while input and output allow. */
static void session_run(struct imap_session *s)
{
	if (s->in_input)
		return;
	s->in_input = true;
	while (!conn_is_closing(s->conn) && s->state != IMAP_LOGOUT) {
		if (conn_output_blocked(s->conn))
			break;
		if (s->cmd_running) {
			enum cmd_result r = s->cmd.def->func(&s->cmd);
			if (r == CMD_MORE)
				break;
			command_finish(s);
			if (r == CMD_ERROR && !conn_is_closing(s->conn))
				conn_close(s->conn, "command error");
			continue;
		}
		if (!command_start(s))
			break;
	}
	s->in_input = false;
}

void imap_session_wakeup(struct imap_session *s)
{
	session_run(s);
	conn_flush(s->conn);
}

/* An idle handle runs once per loop turn, after I/O: other connections get their turn between
 * two slices (a zero timer re-armed in its own callback would run again in the same turn). */
uint64_t imap_slice_ns = 2 * 1000 * 1000;

static void wake_cb(uv_idle_t *h)
{
	struct imap_session *s = h->data;
	uv_idle_stop(h);
	if (s && !conn_is_closing(s->conn))
		imap_session_wakeup(s);
}

static void timer_free_cb(uv_handle_t *h)
{
	free(h);
}

enum cmd_result imap_cmd_yield(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	if (!s->wake) {
		s->wake = malloc(sizeof(*s->wake));
		if (!s->wake)
			return CMD_MORE; /* input or drain will resume it */
		uv_idle_init(conn_loop(s->conn), s->wake);
		s->wake->data = s;
	}
	uv_idle_start(s->wake, wake_cb);
	return CMD_MORE;
}

/* ---------------------------------------------------------------------------------------- */
/* proto_ops hooks                                                                           */

static void *imap_session_new(struct conn *c)
{
	struct imap_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->conn = c;
	s->state = IMAP_NOT_AUTH;
	imap_seqset_init(&s->searchres);
	struct imap_parser_input in = {in_read_line, in_read_literal, in_send_continuation, s};
	struct imap_parser_limits lim;
	parser_limits_for(s, IMAP_NOT_AUTH, &lim);
	s->parser = imap_parser_new(&in, &lim);
	if (!s->parser) {
		free(s);
		return NULL;
	}
	char caps[1024];
	imap_capability_string(s, caps, sizeof(caps));
	conn_printf(c, "* OK [CAPABILITY %s] mailkeep ready.\r\n", caps);
	log_debug("conn=%llu event=imap_session_new", sid(s));
	return s;
}

static void imap_on_input(void *session)
{
	session_run(session);
}

static void imap_on_drain(void *session)
{
	session_run(session);
}

static void imap_on_tls_ready(void *session)
{
	struct imap_session *s = session;
	log_debug("conn=%llu event=imap_tls_ready tls=\"%s\"", sid(s),
		  conn_tls_describe(s->conn) ? conn_tls_describe(s->conn) : "-");
	session_run(s);
}

static void imap_on_timeout(void *session)
{
	struct imap_session *s = session;
	conn_write_str(s->conn, "* BYE Disconnected for inactivity.\r\n");
	imap_set_state(s, IMAP_LOGOUT);
}

static void imap_on_shutdown(void *session)
{
	struct imap_session *s = session;
	conn_write_str(s->conn, "* BYE Server shutting down.\r\n");
	imap_set_state(s, IMAP_LOGOUT);
}

static void imap_session_free(void *session)
{
	struct imap_session *s = session;
	if (!s)
		return;
	if (s->cmd_running && s->cmd.ctx_free)
		s->cmd.ctx_free(&s->cmd);
	s->idling = false;
	imap_idle_keepalive_stop(s, true);
	if (s->wake) {
		uv_idle_stop(s->wake);
		s->wake->data = NULL;
		uv_close((uv_handle_t *)s->wake, timer_free_cb);
		s->wake = NULL;
	}
	if (s->view)
		view_free(&s->view);
	imap_login_session_free(s);
	imap_parser_free(&s->parser);
	imap_seqset_free(&s->searchres);
	explicit_bzero(s->user, sizeof(s->user));
	free(s);
}

const struct proto_ops imap_proto_ops = {
	.name = "imap",
	.default_idle_timeout_s = IMAP_AUTOLOGOUT_S,
	.default_max_line = IMAP_DEFAULT_MAX_LINE,
	.refuse_line = "* BYE Too many connections, try again later.\r\n",
	.session_new = imap_session_new,
	.on_input = imap_on_input,
	.on_drain = imap_on_drain,
	.on_tls_ready = imap_on_tls_ready,
	.on_timeout = imap_on_timeout,
	.on_shutdown = imap_on_shutdown,
	.session_free = imap_session_free,
};
