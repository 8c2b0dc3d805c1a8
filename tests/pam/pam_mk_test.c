/* pam_mk_test — a PAM module for mailkeep's tests only. Options:
 *   slow_user=NAME slow_ms=N  pam_sm_authenticate sleeps N ms for NAME (a slow PAM stack:
 *                             the sleep is the behaviour under test, inside the module)
 *   mark=DIR                  ...and first creates DIR/NAME, so a test can see that the
 *                             login has reached PAM
 *   expired_user=NAME         pam_sm_acct_mgmt answers PAM_ACCT_EXPIRED for NAME
 *   canon=FROM:TO             pam_sm_authenticate renames user FROM to TO (PAM_USER)
 *   crash_user=NAME           pam_sm_authenticate kills the process with SIGSEGV for NAME (a
 *                             PAM module that crashes)
 * Otherwise every function answers PAM_IGNORE, leaving the decision to pam_matrix.
 */
#include <fcntl.h>
#include <security/pam_modules.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *opt(int argc, const char **argv, const char *key)
{
	size_t n = strlen(key);
	for (int i = 0; i < argc; i++) {
		if (strncmp(argv[i], key, n) == 0 && argv[i][n] == '=')
			return argv[i] + n + 1;
	}
	return NULL;
}

int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv);
int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv);
int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv);

int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	const char *user = NULL;
	if (pam_get_user(pamh, &user, NULL) != PAM_SUCCESS || user == NULL)
		return PAM_IGNORE;
	const char *canon = opt(argc, argv, "canon");
	if (canon != NULL) {
		const char *colon = strchr(canon, ':');
		if (colon != NULL && strncmp(user, canon, (size_t)(colon - canon)) == 0 &&
		    user[colon - canon] == '\0') {
			pam_set_item(pamh, PAM_USER, colon + 1);
			return PAM_IGNORE;
		}
	}
	const char *crash = opt(argc, argv, "crash_user");
	if (crash != NULL && strcmp(user, crash) == 0)
		raise(SIGSEGV);
	const char *slow = opt(argc, argv, "slow_user");
	const char *ms = opt(argc, argv, "slow_ms");
	if (slow != NULL && ms != NULL && strcmp(user, slow) == 0) {
		const char *mark = opt(argc, argv, "mark");
		if (mark != NULL) {
			char path[4096];
			size_t n = strlen(mark);
			if (n + strlen(user) + 2 < sizeof(path)) {
				memcpy(path, mark, n);
				path[n] = '/';
				strcpy(path + n + 1, user);
				unlink(path); /* a fresh file: watchers see a creation */
				int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
				if (fd >= 0)
					close(fd);
			}
		}
		long t = strtol(ms, NULL, 10);
		struct timespec ts = {.tv_sec = t / 1000, .tv_nsec = (t % 1000) * 1000000};
		while (nanosleep(&ts, &ts) != 0)
			;
	}
	return PAM_IGNORE;
}

int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	return PAM_IGNORE;
}

int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	const char *user = NULL;
	const char *expired = opt(argc, argv, "expired_user");
	if (expired != NULL && pam_get_user(pamh, &user, NULL) == PAM_SUCCESS && user != NULL &&
	    strcmp(user, expired) == 0)
		return PAM_ACCT_EXPIRED;
	return PAM_IGNORE;
}
