/* auth_pam — one PAM transaction, run inside an authd worker process (never on the loop).
 *
 * Internal to auth/: authd.c calls auth_pam_check(); the conversation function is exposed
 * only so that tests can drive it with hand-made messages.
 */
#ifndef MK_AUTH_PAM_H
#define MK_AUTH_PAM_H

#include <security/pam_appl.h>
#include <stddef.h>

#include "auth_wire.h"

/* More messages than this in one conversation call is refused (as Dovecot does). */
#define AUTH_PAM_MAX_MESSAGES 1024

/* What the conversation answers with. */
struct auth_pam_conv_data {
	const char *user;
	const char *password;
	/* the last PAM_ERROR_MSG / PAM_TEXT_INFO text, for the log */
	char info[AUTH_WIRE_MAX_REASON + 1];
};

/* The conversation function (STYLE.md §3): ECHO_OFF is answered with the password, ECHO_ON
 * with the user, ERROR_MSG and TEXT_INFO with no answer (the text is kept in data->info);
 * anything else, or num_msg outside 1..AUTH_PAM_MAX_MESSAGES, wipes and frees what was
 * answered so far and returns PAM_CONV_ERR. appdata_ptr is a struct auth_pam_conv_data. */
int auth_pam_conv(int num_msg, const struct pam_message **msg, struct pam_response **resp_r,
		  void *appdata_ptr);

/* Map a PAM return code to a result (STYLE.md §3). */
enum auth_result auth_pam_map(int pam_rc);

/* Start and end one PAM transaction for service without authenticating anybody, in the
 * dispatcher before any worker forks: a PAM configuration that cannot even start is logged
 * once, up front, and PAM's per-process set-up (and that of test shims such as pam_wrapper,
 * which set themselves up on the first pam_start and would otherwise race in concurrent
 * workers) happens once and is inherited. Returns the pam_start code. */
int auth_pam_probe(const char *service, const char *confdir);

/* Check req->user / req->password with PAM service req->service, from config directory
 * confdir (NULL = the system's). Sets PAM_RHOST (req->address), PAM_RUSER (req->user) and
 * PAM_TTY, runs pam_authenticate then pam_acct_mgmt, and on success copies PAM_USER into
 * canonical[AUTH_WIRE_MAX_USER + 1]. reason[AUTH_WIRE_MAX_REASON + 1] gets the step that
 * failed and PAM's message, or "" on success. */
enum auth_result auth_pam_check(const struct auth_wire_request *req, const char *confdir,
				char *canonical, char *reason);

#endif
