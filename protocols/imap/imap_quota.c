/* imap_quota — GETQUOTA, GETQUOTAROOT and SETQUOTA (RFC 9208 QUOTA, QUOTA=RES-STORAGE,
 * QUOTA=RES-MESSAGE).
 *
 * One quota root per user, named "" (the empty string), holding every folder of the user (as
 * Dovecot's default "User quota" root): its resources are STORAGE (the sum of the messages'
 * RFC822.SIZE, in units of 1024 octets: usage rounded up, limit rounded down, so a client never
 * sees room that is not there) and MESSAGE (messages over all folders). Only resources with a
 * limit are reported; a user without any limit has no quota root (GETQUOTAROOT lists none,
 * GETQUOTA "" answers NO [NONEXISTENT]), as RFC 9208's grammar has no empty resource list.
 * Limits come from the configuration (quota_storage, quota_messages, [user NAME]): SETQUOTA is
 * answered NO [NOPERM] (RFC 9208 §4.1.3 lets a server refuse; QUOTASET is not advertised).
 * The usage is the store's (store_quota_get); refusing arrivals is the store's job.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "imap_internal.h"

static void quota_counted(void *data)
{
	struct imap_session *s = data;
	s->quota_waiting = false;
	if (!conn_is_closing(s->conn))
		imap_session_wakeup(s);
}

bool imap_quota_ready(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	if (s->quota_waiting)
		return false;
	if (!s->store || store_quota_wait(s->store, quota_counted, s) != 1)
		return true;
	s->quota_waiting = true;
	return false;
}

void imap_quota_wait_cancel(struct imap_session *s)
{
	if (s->quota_waiting && s->store)
		store_quota_wait_cancel(s->store, quota_counted, s);
	s->quota_waiting = false;
}

static bool has_root(const struct store_quota_usage *u)
{
	return u->bytes_limit != 0 || u->messages_limit != 0;
}

/* "* QUOTA "" (STORAGE u l MESSAGE u l)\r\n": only the limited resources. */
static void write_quota(struct imap_session *s, const struct store_quota_usage *u)
{
	conn_write_str(s->conn, "* QUOTA \"\" (");
	const char *sp = "";
	if (u->bytes_limit != 0) {
		conn_printf(s->conn, "STORAGE %llu %llu",
			    (unsigned long long)((u->bytes + 1023) / 1024),
			    (unsigned long long)(u->bytes_limit / 1024));
		sp = " ";
	}
	if (u->messages_limit != 0)
		conn_printf(s->conn, "%sMESSAGE %llu %llu", sp, (unsigned long long)u->messages,
			    (unsigned long long)u->messages_limit);
	conn_write_str(s->conn, ")\r\n");
}

static bool get_usage(struct imap_cmd *cmd, struct store_quota_usage *u)
{
	int r = store_quota_get(cmd->s->store, u);
	if (r < 0) {
		imap_cmd_reply_error(cmd, r);
		return false;
	}
	return true;
}

enum cmd_result imap_cmd_getquota(struct imap_cmd *cmd)
{
	if (!imap_quota_ready(cmd))
		return CMD_MORE;
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	const char *root;
	size_t len;
	if (!imap_arg_get_astring(&args[0], &root, &len) || args[1].type != IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "GETQUOTA needs one quota root.");
		return CMD_DONE;
	}
	struct store_quota_usage u;
	if (!get_usage(cmd, &u))
		return CMD_DONE;
	if (len != 0 || !has_root(&u)) {
		imap_cmd_reply(cmd, "NO", "[NONEXISTENT] No such quota root.");
		return CMD_DONE;
	}
	write_quota(cmd->s, &u);
	imap_cmd_reply(cmd, "OK", "Getquota completed.");
	return CMD_DONE;
}

/* Whether folder NORM exists (selectable, or a level of the hierarchy). */
static int folder_exists(struct store *store, const char *norm)
{
	struct store_folder *f;
	size_t n;
	int r = store_folder_list(store, &f, &n);
	if (r < 0)
		return r;
	r = -ENOENT;
	for (size_t i = 0; i < n && r == -ENOENT; i++)
		if (strcmp(f[i].name, norm) == 0 && !(f[i].attrs & STORE_FOLDER_NONEXISTENT))
			r = 0;
	store_folder_list_free(&f, n);
	return r;
}

enum cmd_result imap_cmd_getquotaroot(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	if (!imap_quota_ready(cmd))
		return CMD_MORE;
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	char norm[STORE_NAME_MAX + 1];
	if (args[0].type == IMAP_ARG_EOL || args[1].type != IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "GETQUOTAROOT needs one mailbox name.");
		return CMD_DONE;
	}
	if (!imap_arg_mailbox(cmd, &args[0], norm))
		return CMD_DONE;
	r = folder_exists(s->store, norm);
	if (r < 0) {
		imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	struct store_quota_usage u;
	if (!get_usage(cmd, &u))
		return CMD_DONE;
	conn_write_str(s->conn, "* QUOTAROOT ");
	imap_write_mailbox(s, norm);
	conn_write_str(s->conn, has_root(&u) ? " \"\"\r\n" : "\r\n");
	if (has_root(&u))
		write_quota(s, &u);
	imap_cmd_reply(cmd, "OK", "Getquotaroot completed.");
	return CMD_DONE;
}

/* SETQUOTA root (resource limit ...): checked, then refused. */
enum cmd_result imap_cmd_setquota(struct imap_cmd *cmd)
{
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	const char *root;
	size_t len;
	bool ok = imap_arg_get_astring(&args[0], &root, &len) && args[1].type == IMAP_ARG_LIST &&
		  args[2].type == IMAP_ARG_EOL && args[1].list_count % 2 == 0;
	for (unsigned i = 0; ok && i < args[1].list_count; i += 2) {
		const struct imap_arg *name = &args[1].list[i], *limit = &args[1].list[i + 1];
		ok = name->type == IMAP_ARG_ATOM && limit->type == IMAP_ARG_ATOM &&
		     limit->len > 0 && strspn(limit->str, "0123456789") == limit->len;
	}
	if (!ok) {
		imap_cmd_reply(cmd, "BAD", "SETQUOTA needs a quota root and (resource limit ...).");
		return CMD_DONE;
	}
	imap_cmd_reply(cmd, "NO", "[NOPERM] Quota limits are set in the server configuration.");
	return CMD_DONE;
}
