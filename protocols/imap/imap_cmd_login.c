/* imap_cmd_login — LOGIN and AUTHENTICATE (PLAIN, LOGIN; SASL-IR, RFC 4959) through the auth
 * service, then opening the user's store.
 *
 * While the auth helper works no further command is read (conn_input_pause); pipelined
 * commands wait in the input buffer. A session that goes away meanwhile cancels its request.
 * Results map to RFC 5530 codes: [AUTHENTICATIONFAILED], [EXPIRED], [UNAVAILABLE],
 * [PRIVACYREQUIRED] (plaintext refused on this connection). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "config.h"
#include "imap.h"
#include "imap_internal.h"
#include "log.h"
#include "sasl.h"

static struct auth_service *imap_auth_service;

void imap_auth_service_set(struct auth_service *svc)
{
	imap_auth_service = svc;
}

struct auth_service *imap_auth_service_get(void)
{
	return imap_auth_service;
}

enum login_step {
	LOGIN_ARGS,   /* reading the command's arguments */
	LOGIN_SASL,   /* AUTHENTICATE: waiting for a response line */
	LOGIN_WAIT,   /* the auth helper is working */
	LOGIN_RESULT, /* its answer is in */
	LOGIN_OVER,   /* answered without a login (cancelled, bad data) */
};

struct login_ctx {
	enum login_step step;
	struct imap_session *s;
	struct sasl *sasl;
	const char *mech; /* "IMAP-LOGIN", "PLAIN", "LOGIN" */
	struct auth_request *req;
	enum auth_result result;
	char user[IMAP_USER_MAX + 1]; /* canonical, on success */
	struct imap_sync_wait *prep;  /* the user's first store tree, made on the pool */
};

static void login_ctx_free(struct imap_cmd *cmd)
{
	struct login_ctx *l = cmd->ctx;
	if (!l)
		return;
	auth_request_cancel(&l->req);
	imap_sync_wait_release(&l->prep);
	sasl_free(&l->sasl);
	if (l->step == LOGIN_WAIT)
		conn_input_resume(l->s->conn);
	explicit_bzero(l, sizeof(*l));
	free(l);
	cmd->ctx = NULL;
}

static struct login_ctx *login_ctx_get(struct imap_cmd *cmd)
{
	if (!cmd->ctx) {
		struct login_ctx *l = calloc(1, sizeof(*l));
		if (!l)
			return NULL;
		l->s = cmd->s;
		cmd->ctx = l;
		cmd->ctx_free = login_ctx_free;
	}
	return cmd->ctx;
}

static void login_done(void *ctx, enum auth_result result, const char *canonical_user,
		       const char *reason)
{
	struct login_ctx *l = ctx;
	l->req = NULL;
	l->result = result;
	if (result == AUTH_RESULT_OK && canonical_user)
		snprintf(l->user, sizeof(l->user), "%s", canonical_user);
	l->step = LOGIN_RESULT;
	conn_input_resume(l->s->conn);
	imap_session_wakeup(l->s);
}

/* Hand user/password to the auth service. Returns the handler's result. */
static enum cmd_result login_start(struct imap_cmd *cmd, struct login_ctx *l, const char *user,
				   const char *password)
{
	struct imap_session *s = cmd->s;
	struct auth_service *svc = imap_auth_service;
	if (!svc) {
		imap_cmd_reply(cmd, "NO", "[UNAVAILABLE] Authentication service unavailable.");
		return CMD_DONE;
	}
	struct auth_request_info info = {
		.protocol = "imap",
		.mechanism = l->mech,
		.user = user,
		.password = password,
		.remote_address = conn_peer_addr(s->conn),
		.local_port = conn_local_port(s->conn),
		.tls = conn_is_tls(s->conn),
		.conn_id = conn_id(s->conn),
	};
	l->step = LOGIN_WAIT;
	conn_input_pause(s->conn);
	l->req = auth_request_start(svc, &info, login_done, l);
	if (!l->req) {
		l->step = LOGIN_ARGS;
		conn_input_resume(s->conn);
		imap_cmd_reply(cmd, "NO", "[UNAVAILABLE] Out of memory.");
		return CMD_DONE;
	}
	return CMD_MORE;
}

static enum cmd_result login_finish(struct imap_cmd *cmd, struct login_ctx *l)
{
	struct imap_session *s = cmd->s;
	switch (l->result) {
	case AUTH_RESULT_OK:
		break;
	case AUTH_RESULT_EXPIRED:
		s->auth_failures++;
		imap_cmd_reply(cmd, "NO", "[EXPIRED] Password expired.");
		return CMD_DONE;
	case AUTH_RESULT_TEMPFAIL:
		imap_cmd_reply(cmd, "NO", "[UNAVAILABLE] Temporary authentication failure.");
		return CMD_DONE;
	default:
		s->auth_failures++;
		imap_cmd_reply(cmd, "NO", "[AUTHENTICATIONFAILED] Authentication failed.");
		if (auth_failures_exceeded(conn_config(s->conn), s->auth_failures))
			imap_session_bye(s, "Too many failed logins.");
		return CMD_DONE;
	}
	int r = 0;
	if (l->prep) {
		if (!l->prep->done)
			return CMD_MORE;
		r = l->prep->err;
		imap_sync_wait_release(&l->prep);
	} else if (imap_async_commit) {
		/* a first login creates the folders: on the thread pool, not on the loop */
		bool ready;
		struct imap_sync_wait *w = imap_sync_wait_new(cmd);
		r = w ? store_prepare_async(conn_loop(s->conn), conn_config(s->conn), l->user,
					    &ready, imap_sync_wait_cb, w)
		      : -ENOMEM;
		if (r == 0 && !ready) {
			l->prep = w;
			return CMD_MORE;
		}
		free(w);
	}
	if (r == 0)
		r = store_open(conn_loop(s->conn), conn_config(s->conn), l->user, &s->store);
	if (r < 0) {
		log_warn("conn=%llu event=imap_store_open_failed user=%s error=%s",
			 (unsigned long long)conn_id(s->conn), log_escape_str(l->user),
			 storage_error_text(r));
		imap_cmd_reply(cmd, "NO", "[UNAVAILABLE] Mailbox unavailable.");
		return CMD_DONE;
	}
	snprintf(s->user, sizeof(s->user), "%s", l->user);
	imap_set_state(s, IMAP_AUTH);
	char caps[1024];
	imap_capability_string(s, caps, sizeof(caps));
	imap_cmd_reply(cmd, "OK", "[CAPABILITY %s] Logged in", caps);
	return CMD_DONE;
}

enum cmd_result imap_cmd_login(struct imap_cmd *cmd)
{
	struct login_ctx *l = login_ctx_get(cmd);
	if (!l) {
		imap_cmd_reply(cmd, "NO", "[UNAVAILABLE] Out of memory.");
		return CMD_DONE;
	}
	if (l->step == LOGIN_WAIT)
		return CMD_MORE;
	if (l->step == LOGIN_RESULT)
		return login_finish(cmd, l);
	if (l->step == LOGIN_OVER)
		return CMD_DONE;
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	const char *user, *pass;
	size_t ulen, plen;
	if (!imap_arg_get_astring(&args[0], &user, &ulen) ||
	    !imap_arg_get_astring(&args[1], &pass, &plen) || args[2].type != IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "LOGIN needs a user name and a password.");
		return CMD_DONE;
	}
	if (!imap_plaintext_allowed(cmd->s)) {
		imap_cmd_reply(cmd, "NO",
			       "[PRIVACYREQUIRED] Plaintext authentication is disallowed on "
			       "non-secure connections.");
		return CMD_DONE;
	}
	if (memchr(user, '\0', ulen) || memchr(pass, '\0', plen)) {
		imap_cmd_reply(cmd, "NO", "[AUTHENTICATIONFAILED] Authentication failed.");
		return CMD_DONE;
	}
	l->mech = "IMAP-LOGIN";
	return login_start(cmd, l, user, pass);
}

/* A SASL step: send the challenge, finish, or answer. */
static enum cmd_result sasl_step(struct imap_cmd *cmd, struct login_ctx *l,
				 const struct sasl_step *st)
{
	switch (st->status) {
	case SASL_CONTINUE:
		conn_printf(cmd->s->conn, "+ %s\r\n", st->challenge);
		l->step = LOGIN_SASL;
		return CMD_MORE;
	case SASL_DONE:
		return login_start(cmd, l, st->user, st->password);
	case SASL_CANCELLED:
		l->step = LOGIN_OVER;
		imap_cmd_reply(cmd, "BAD", "Authentication canceled.");
		return CMD_DONE;
	case SASL_ERROR:
		break;
	}
	l->step = LOGIN_OVER;
	imap_cmd_reply(cmd, "BAD", "Invalid authentication data: %s", st->error);
	return CMD_DONE;
}

/* AUTHENTICATE's response lines, until the exchange ends or input runs out. */
static enum cmd_result sasl_read(struct imap_cmd *cmd, struct login_ctx *l)
{
	while (l->step == LOGIN_SASL) {
		const char *line;
		size_t len;
		switch (conn_read_line(cmd->s->conn, &line, &len)) {
		case CONN_LINE_MORE:
			return CMD_MORE;
		case CONN_LINE_TOO_LONG:
			imap_session_bye(cmd->s, "Authentication response too long.");
			return CMD_DONE;
		case CONN_LINE_OK:
			break;
		}
		struct sasl_step st;
		sasl_continue(l->sasl, line, len, &st);
		enum cmd_result r = sasl_step(cmd, l, &st);
		if (l->step != LOGIN_SASL)
			return r;
	}
	return CMD_MORE;
}

enum cmd_result imap_cmd_authenticate(struct imap_cmd *cmd)
{
	struct login_ctx *l = login_ctx_get(cmd);
	if (!l) {
		imap_cmd_reply(cmd, "NO", "[UNAVAILABLE] Out of memory.");
		return CMD_DONE;
	}
	struct sasl_step st;
	switch (l->step) {
	case LOGIN_WAIT:
		return CMD_MORE;
	case LOGIN_RESULT:
		return login_finish(cmd, l);
	case LOGIN_SASL:
		return sasl_read(cmd, l);
	case LOGIN_OVER:
		return CMD_DONE;
	case LOGIN_ARGS:
		break;
	}
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	const char *mech_name, *initial = NULL;
	size_t initial_len = 0;
	if (!imap_arg_get_atom(&args[0], &mech_name) ||
	    (args[1].type != IMAP_ARG_EOL &&
	     (!imap_arg_get_atom(&args[1], &initial) || args[2].type != IMAP_ARG_EOL))) {
		imap_cmd_reply(cmd, "BAD", "AUTHENTICATE needs a mechanism name.");
		return CMD_DONE;
	}
	if (initial)
		initial_len = args[1].len;
	enum sasl_mech mech;
	if (sasl_mech_parse(mech_name, args[0].len, &mech) < 0) {
		imap_cmd_reply(cmd, "NO", "Unsupported authentication mechanism.");
		return CMD_DONE;
	}
	if (!imap_plaintext_allowed(cmd->s)) {
		imap_cmd_reply(cmd, "NO",
			       "[PRIVACYREQUIRED] Plaintext authentication is disallowed on "
			       "non-secure connections.");
		return CMD_DONE;
	}
	if (sasl_new(mech, &l->sasl) < 0) {
		imap_cmd_reply(cmd, "NO", "[UNAVAILABLE] Out of memory.");
		return CMD_DONE;
	}
	l->mech = sasl_mech_name(mech);
	sasl_begin(l->sasl, initial, initial_len, &st);
	enum cmd_result res = sasl_step(cmd, l, &st);
	if (l->step == LOGIN_SASL)
		return sasl_read(cmd, l); /* the response may be buffered already */
	return res;
}

void imap_login_session_free(struct imap_session *s)
{
	imap_quota_wait_cancel(s);
	store_unref(&s->store);
}

/* UNAUTHENTICATE (RFC 8437): back to the not-authenticated state as after the greeting; the
 * connection keeps its TLS and COMPRESS. A selected mailbox is left without expunging, the
 * store released, ENABLEd extensions and the saved search forgotten. */
enum cmd_result imap_cmd_unauthenticate(struct imap_cmd *cmd)
{
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	if (args[0].type != IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "Unexpected arguments.");
		return CMD_DONE;
	}
	struct imap_session *s = cmd->s;
	imap_idle_keepalive_stop(s, false);
	imap_session_unselect(s);
	imap_quota_wait_cancel(s);
	store_unref(&s->store);
	log_info("conn=%llu event=imap_unauthenticate user=%s",
		 (unsigned long long)conn_id(s->conn), log_escape_str(s->user));
	explicit_bzero(s->user, sizeof(s->user));
	s->rev2 = false;
	s->utf8 = false;
	s->condstore = false;
	s->qresync = false;
	s->readonly = false;
	imap_seqset_clear(&s->searchres);
	imap_set_state(s, IMAP_NOT_AUTH);
	imap_cmd_reply(cmd, "OK", "Unauthenticate completed.");
	return CMD_DONE;
}
