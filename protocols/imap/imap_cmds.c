/* imap_cmds — the command table (searched with bsearch; keep it sorted by name) and the
 * commands valid in any state: CAPABILITY, NOOP, LOGOUT, ID (RFC 2971), ENABLE (RFC 5161),
 * STARTTLS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_internal.h"
#include "log.h"

static const struct imap_cmd_def imap_cmds[] = {
	{"APPEND", imap_cmd_append, CMDF_AUTH},
	{"AUTHENTICATE", imap_cmd_authenticate, CMDF_PREAUTH | CMDF_NOT_AUTH_ONLY},
	{"CAPABILITY", imap_cmd_capability, CMDF_ANY},
	{"CHECK", imap_cmd_check, CMDF_AUTH | CMDF_SELECTED},
	{"CLOSE", imap_cmd_close, CMDF_AUTH | CMDF_SELECTED},
	{"COMPRESS", imap_cmd_compress, CMDF_AUTH},
	{"COPY", imap_cmd_copy, CMDF_AUTH | CMDF_SELECTED | CMDF_UID},
	{"CREATE", imap_cmd_create, CMDF_AUTH},
	{"DELETE", imap_cmd_delete, CMDF_AUTH},
	{"ENABLE", imap_cmd_enable, CMDF_AUTH},
	{"EXAMINE", imap_cmd_examine, CMDF_AUTH},
	{"EXPUNGE", imap_cmd_expunge, CMDF_AUTH | CMDF_SELECTED | CMDF_UID},
	{"FETCH", imap_cmd_fetch, CMDF_AUTH | CMDF_SELECTED | CMDF_UID | CMDF_NO_EXPUNGE},
	{"GETQUOTA", imap_cmd_getquota, CMDF_AUTH},
	{"GETQUOTAROOT", imap_cmd_getquotaroot, CMDF_AUTH},
	{"ID", imap_cmd_id, CMDF_ANY},
	{"IDLE", imap_cmd_idle, CMDF_AUTH},
	{"LIST", imap_cmd_list, CMDF_AUTH},
	{"LOGIN", imap_cmd_login, CMDF_PREAUTH | CMDF_NOT_AUTH_ONLY},
	{"LOGOUT", imap_cmd_logout, CMDF_ANY},
	{"LSUB", imap_cmd_lsub, CMDF_AUTH},
	{"MOVE", imap_cmd_move, CMDF_AUTH | CMDF_SELECTED | CMDF_UID},
	{"NAMESPACE", imap_cmd_namespace, CMDF_AUTH},
	{"NOOP", imap_cmd_noop, CMDF_ANY},
	{"RENAME", imap_cmd_rename, CMDF_AUTH},
	{"SEARCH", imap_cmd_search, CMDF_AUTH | CMDF_SELECTED | CMDF_UID | CMDF_NO_EXPUNGE},
	{"SELECT", imap_cmd_select, CMDF_AUTH},
	{"SETQUOTA", imap_cmd_setquota, CMDF_AUTH},
	{"SORT", imap_cmd_sort, CMDF_AUTH | CMDF_SELECTED | CMDF_UID | CMDF_NO_EXPUNGE},
	{"STARTTLS", imap_cmd_starttls, CMDF_PREAUTH | CMDF_NOT_AUTH_ONLY},
	{"STATUS", imap_cmd_status, CMDF_AUTH},
	{"STORE", imap_cmd_store, CMDF_AUTH | CMDF_SELECTED | CMDF_UID | CMDF_NO_EXPUNGE},
	{"SUBSCRIBE", imap_cmd_subscribe, CMDF_AUTH},
	{"THREAD", imap_cmd_thread, CMDF_AUTH | CMDF_SELECTED | CMDF_UID | CMDF_NO_EXPUNGE},
	{"UID", NULL, CMDF_AUTH | CMDF_SELECTED},
	{"UNAUTHENTICATE", imap_cmd_unauthenticate, CMDF_AUTH},
	{"UNSELECT", imap_cmd_unselect, CMDF_AUTH | CMDF_SELECTED},
	{"UNSUBSCRIBE", imap_cmd_unsubscribe, CMDF_AUTH},
};

static int cmd_cmp(const void *key, const void *elem)
{
	const struct imap_cmd_def *d = elem;
	return strcasecmp(key, d->name);
}

const struct imap_cmd_def *imap_cmd_find(const char *name)
{
	return bsearch(name, imap_cmds, sizeof(imap_cmds) / sizeof(imap_cmds[0]),
		       sizeof(imap_cmds[0]), cmd_cmp);
}

int imap_cmd_no_args(struct imap_cmd *cmd)
{
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r;
	if (args[0].type != IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "Unexpected arguments.");
		return -1;
	}
	return 1;
}

enum cmd_result imap_cmd_capability(struct imap_cmd *cmd)
{
	int r = imap_cmd_no_args(cmd);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	char caps[1024];
	imap_capability_string(cmd->s, caps, sizeof(caps));
	conn_printf(cmd->s->conn, "* CAPABILITY %s\r\n", caps);
	imap_cmd_reply(cmd, "OK", "Capability completed.");
	return CMD_DONE;
}

enum cmd_result imap_cmd_noop(struct imap_cmd *cmd)
{
	int r = imap_cmd_no_args(cmd);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	imap_cmd_reply(cmd, "OK", "NOOP completed.");
	return CMD_DONE;
}

enum cmd_result imap_cmd_logout(struct imap_cmd *cmd)
{
	int r = imap_cmd_no_args(cmd);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	struct imap_session *s = cmd->s;
	conn_write_str(s->conn, "* BYE Logging out.\r\n");
	imap_cmd_reply(cmd, "OK", "Logout completed.");
	imap_set_state(s, IMAP_LOGOUT);
	conn_close(s->conn, "logout");
	return CMD_DONE;
}

/* RFC 2971 limits: at most 30 pairs, field names up to 30 octets, values up to 1024. */
#define ID_MAX_PAIRS 30
#define ID_MAX_NAME  30
#define ID_MAX_VALUE 1024

enum cmd_result imap_cmd_id(struct imap_cmd *cmd)
{
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	if (args[0].type == IMAP_ARG_EOL || args[1].type != IMAP_ARG_EOL ||
	    (args[0].type != IMAP_ARG_NIL && args[0].type != IMAP_ARG_LIST)) {
		imap_cmd_reply(cmd, "BAD", "ID needs NIL or a list of field-value pairs.");
		return CMD_DONE;
	}
	const char *client_name = NULL, *client_version = NULL;
	if (args[0].type == IMAP_ARG_LIST) {
		const struct imap_arg *l = args[0].list;
		unsigned n = args[0].list_count;
		if (n % 2 != 0 || n / 2 > ID_MAX_PAIRS) {
			imap_cmd_reply(cmd, "BAD", "ID needs at most 30 field-value pairs.");
			return CMD_DONE;
		}
		for (unsigned i = 0; i < n; i += 2) {
			const char *k, *v;
			size_t klen, vlen;
			if (!imap_arg_get_nstring(&l[i], &k, &klen) || !k || klen > ID_MAX_NAME ||
			    !imap_arg_get_nstring(&l[i + 1], &v, &vlen) || vlen > ID_MAX_VALUE) {
				imap_cmd_reply(cmd, "BAD", "Invalid ID field.");
				return CMD_DONE;
			}
			if (v && strcasecmp(k, "name") == 0)
				client_name = v;
			else if (v && strcasecmp(k, "version") == 0)
				client_version = v;
		}
	}
	log_info("conn=%llu event=imap_id client_name=%s client_version=%s",
		 (unsigned long long)conn_id(cmd->s->conn), log_escape_str(client_name),
		 log_escape_str(client_version));
	conn_write_str(cmd->s->conn,
		       "* ID (\"name\" \"mailkeep\" \"version\" \"" MAILKEEP_VERSION "\")\r\n");
	imap_cmd_reply(cmd, "OK", "ID completed.");
	return CMD_DONE;
}

enum cmd_result imap_cmd_enable(struct imap_cmd *cmd)
{
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	if (args[0].type == IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "ENABLE needs at least one capability.");
		return CMD_DONE;
	}
	if (cmd->s->state == IMAP_SELECTED) {
		/* RFC 5161 §3.1: only in the authenticated state. */
		imap_cmd_reply(cmd, "BAD", "ENABLE is not allowed with a mailbox selected.");
		return CMD_DONE;
	}
	for (const struct imap_arg *a = args; a->type != IMAP_ARG_EOL; a++) {
		if (a->type != IMAP_ARG_ATOM) {
			imap_cmd_reply(cmd, "BAD", "ENABLE takes capability names.");
			return CMD_DONE;
		}
	}
	/* RFC 5161 §3.1: ENABLED lists what this command turned on; unknown names are
	 * ignored. QRESYNC implies CONDSTORE (RFC 7162 §3.2.3). */
	struct imap_session *s = cmd->s;
	bool rev2 = false, condstore = false, qresync = false, utf8 = false;
	for (const struct imap_arg *a = args; a->type != IMAP_ARG_EOL; a++) {
		if (imap_arg_is(a, "IMAP4rev2") && !s->rev2)
			rev2 = true;
		if (imap_arg_is(a, "UTF8=ACCEPT") && !s->utf8)
			utf8 = true;
		if (imap_arg_is(a, "CONDSTORE") && !s->condstore)
			condstore = true;
		if (imap_arg_is(a, "QRESYNC") && !s->qresync)
			qresync = true;
	}
	if (qresync && !s->condstore)
		condstore = true;
	if (rev2)
		s->rev2 = true;
	if (utf8)
		s->utf8 = true; /* RFC 6855 §3: only before SELECT (refused above when selected) */
	if (condstore)
		imap_condstore_enable(s);
	if (qresync)
		s->qresync = true;
	conn_printf(s->conn, "* ENABLED%s%s%s%s\r\n", rev2 ? " IMAP4rev2" : "",
		    condstore ? " CONDSTORE" : "", qresync ? " QRESYNC" : "",
		    utf8 ? " UTF8=ACCEPT" : "");
	imap_cmd_reply(cmd, "OK", "ENABLE completed.");
	return CMD_DONE;
}

/* COMPRESS DEFLATE (RFC 4978): the OK goes out uncompressed, then both directions are raw
 * DEFLATE, inside TLS when there is TLS, flushed after every response (src/conn.c). */
enum cmd_result imap_cmd_compress(struct imap_cmd *cmd)
{
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	struct imap_session *s = cmd->s;
	if (args[0].type != IMAP_ARG_ATOM || args[1].type != IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "COMPRESS needs a mechanism.");
		return CMD_DONE;
	}
	if (!imap_arg_is(&args[0], "DEFLATE")) {
		imap_cmd_reply(cmd, "BAD", "Unknown compression mechanism.");
		return CMD_DONE;
	}
	if (conn_is_compressed(s->conn)) {
		imap_cmd_reply(cmd, "NO", "[COMPRESSIONACTIVE] DEFLATE is already active.");
		return CMD_DONE;
	}
	imap_cmd_reply(cmd, "OK", "DEFLATE active.");
	r = conn_compress_start(s->conn);
	if (r < 0) {
		/* The client now speaks DEFLATE and we cannot: nothing more can be understood. */
		log_warn("conn=%llu event=imap_compress_failed error=%d",
			 (unsigned long long)conn_id(s->conn), r);
		imap_set_state(s, IMAP_LOGOUT);
		conn_close(s->conn, "compress failed");
	}
	return CMD_DONE;
}

enum cmd_result imap_cmd_starttls(struct imap_cmd *cmd)
{
	int r = imap_cmd_no_args(cmd);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	struct imap_session *s = cmd->s;
	if (!conn_can_starttls(s->conn)) {
		imap_cmd_reply(cmd, "BAD", "%s",
			       conn_is_tls(s->conn) ? "TLS is already active."
						    : "TLS is not available.");
		return CMD_DONE;
	}
	imap_cmd_reply(cmd, "OK", "Begin TLS negotiation now.");
	if (conn_starttls(s->conn) < 0) {
		imap_session_bye(s, "TLS failed.");
		return CMD_DONE;
	}
	return CMD_DONE;
}
