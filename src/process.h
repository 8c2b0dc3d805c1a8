/* process — process set-up: dropping root privileges after start-up.
 *
 * main.c calls process_drop_privileges() after the listeners are bound, the TLS keys are
 * loaded and the auth helper is forked (auth_service_start), and before the loop runs.
 */
#ifndef MK_PROCESS_H
#define MK_PROCESS_H

struct config;

/* Become cfg->mail_user: initgroups (its groups in /etc/group), setgid, setuid, each checked,
 * then verify that root cannot be regained. When the process is not running as root it
 * changes nothing, logs "privilege drop skipped" and returns 0.
 * Returns 0, -EINVAL when mail_user is unset or is root, -ENOENT when the user does not exist,
 * or -errno from the failing call. Logs why on failure; the caller must then exit. */
int process_drop_privileges(const struct config *cfg);

#endif
