/* authd — the auth helper: the processes that run PAM, apart from the network process.
 *
 * Internal to auth/ (auth_client.c starts it; tests drive it directly). Two roles:
 *
 *  - the supervisor (authd_supervise): forked by auth_service_start() while the daemon is
 *    still root, before the privilege drop. It keeps root, holds no listener, no libuv, no
 *    mail store. It forks a dispatcher, hands the network process the other end of the
 *    dispatcher's socketpair over the control socket (SCM_RIGHTS, with the dispatcher's pid),
 *    and when the dispatcher dies (a malformed request, a crash, a kill) it logs why and
 *    starts a new one, so a restarted helper still has root. It exits when the control
 *    socket closes (the network process is gone).
 *
 *  - the dispatcher (authd_serve): reads length-prefixed requests (auth_wire.h) from its
 *    channel and forks one worker process per request, at most opts->workers at once (more
 *    wait in a bounded queue; past that a TEMPFAIL "busy" is answered), so one slow PAM stack
 *    never delays another login. A worker runs PAM (auth_pam.c), writes its reply through a
 *    pipe and exits; its memory, password included, dies with it. A worker that crashes,
 *    answers garbage or exceeds opts->worker_timeout_sec is answered for with TEMPFAIL, never
 *    success. A malformed request, or one for another PAM service than the configured one,
 *    ends the dispatcher (the supervisor restarts it).
 */
#ifndef MK_AUTHD_H
#define MK_AUTHD_H

#include <stdint.h>
#include <sys/types.h>

/* The supervisor's message on the control socket: 8 bytes, with the channel fd attached. */
#define AUTHD_CTL_CHANNEL 1
struct authd_ctl_msg {
	uint32_t type; /* AUTHD_CTL_CHANNEL */
	uint32_t pid;  /* the dispatcher serving that channel */
};

struct authd_options {
	const char *pam_service; /* the only service requests may name */
	const char *pam_confdir; /* NULL: the system's PAM configuration */
	unsigned workers;        /* PAM transactions at once, >= 1 */
	unsigned max_queue;      /* requests waiting for a worker before "busy" */
	unsigned worker_timeout_sec;
};

/* Every signal back to its default action and unblocked, except SIGINT, SIGTERM and SIGHUP,
 * which are ignored: the helper ends when the network process closes its socket. */
void authd_signals_reset(void);

/* Serve the channel fd until it reaches EOF (returns 0), the peer sends a malformed request
 * (returns -EBADMSG) or the channel breaks (-errno). Every worker is killed and reaped before
 * it returns. Blocks; never touches libuv. */
int authd_serve(int fd, const struct authd_options *opts);

/* The supervisor's main loop on control socket ctl_fd (see above). Never returns. */
_Noreturn void authd_supervise(int ctl_fd, const struct authd_options *opts);

/* Receive one struct authd_ctl_msg with its fd from ctl_fd, waiting at most timeout_ms.
 * Returns 0 and sets *fd_r / *pid_r, -ETIMEDOUT, -EPIPE on EOF, -EBADMSG on a bad message. */
int authd_ctl_receive(int ctl_fd, int timeout_ms, int *fd_r, pid_t *pid_r);

#endif
