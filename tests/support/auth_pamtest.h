/* auth_pamtest — shared helpers for auth/ tests: a temporary PAM configuration directory
 * (pam_matrix with a generated passdb, plus the pam_mk_test module), a config filled by
 * hand, and loop helpers that wait for events with a deadline. */
#ifndef MK_AUTH_PAMTEST_H
#define MK_AUTH_PAMTEST_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "auth.h"
#include "config.h"

/* Users in the generated passdb (user:password:service):
 *   bob/secret, fast/fastpw, slow/slowpw (2 s in PAM), gone/gonepw (acct: other service),
 *   old/oldpw (acct: PAM_ACCT_EXPIRED); "BOB" is renamed to "bob" by the stack. */
#define PAMTEST_SERVICE "mailkeep-test"
#define PAMTEST_SLOW_MS 2000

struct auth_pamtest {
	char dir[512];     /* the temporary directory */
	char confdir[600]; /* dir/pam.d: the service files */
	char passdb[600];
	char markdir[600]; /* pam_mk_test creates markdir/slow when the slow login starts */
	struct config cfg; /* pam_service, pam_confdir, delays filled in */
};

/* Create the directory and files; cfg uses pam_start_confdir (pam_confdir set). */
void auth_pamtest_init(struct auth_pamtest *t);
/* Also write a service file name whose passdb does not exist. */
void auth_pamtest_add_broken_service(struct auth_pamtest *t, const char *name);
void auth_pamtest_cleanup(struct auth_pamtest *t);

/* One login's outcome, filled by auth_pamtest_done. */
struct pamtest_login {
	bool finished;
	unsigned calls;
	enum auth_result result;
	char user[AUTH_WIRE_MAX_USER + 1];
	char reason[AUTH_WIRE_MAX_REASON + 1];
	uint64_t start_ms, done_ms;
	struct auth_request *req;
};

uint64_t pamtest_now_ms(void);
/* Start a login for user/password from address; the outcome lands in l. */
void pamtest_login(struct auth_service *svc, struct pamtest_login *l, const char *user,
		   const char *password, const char *address);

/* Run loop until *flag is true or timeout_ms pass; returns *flag. */
bool pamtest_run_until(uv_loop_t *loop, const bool *flag, unsigned timeout_ms);
/* Run until pred(arg) or timeout; returns pred(arg). */
bool pamtest_run_until_pred(uv_loop_t *loop, bool (*pred)(void *), void *arg, unsigned timeout_ms);

/* Close a handle the caller owns (e.g. on its stack) and run the loop until it is closed. */
void pamtest_close(uv_loop_t *loop, uv_handle_t *h);

#endif
