#include "authd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "auth_pam.h"
#include "auth_wire.h"
#include "log.h"

#define AUTHD_MAX_WORKERS 64

struct authd_worker {
	pid_t pid; /* 0: free slot */
	int fd;    /* read end of the worker's reply pipe */
	uint32_t id;
	size_t have;
	bool overflow;
	uint8_t buf[AUTH_WIRE_MAX_FRAME];
};

struct authd {
	int fd;
	const struct authd_options *opts;
	unsigned nworkers;
	struct authd_worker workers[AUTHD_MAX_WORKERS];
	struct auth_wire_request *queue; /* ring of opts->max_queue */
	unsigned q_head;
	unsigned q_len;
	struct auth_wire_decoder dec;
};

/* The helper's processes are single-threaded: fork with _Fork(), which skips the atfork
 * handlers inherited from the network process. Those (libuv's signal lock among them) would
 * otherwise close and recreate file descriptors by number in every child, and the numbers
 * they remember now belong to our sockets. */
static pid_t authd_fork(void)
{
	return _Fork();
}

void authd_signals_reset(void)
{
	for (int sig = 1; sig < NSIG; sig++) {
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	}
	/* The helper lives as long as the network process (it exits when its socket closes). A
	 * terminal's Ctrl-C or a SIGTERM sent to the whole process group must not take it down
	 * first and fail the logins of sessions that are still saying goodbye. */
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

static int write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n > 0) {
		ssize_t w = write(fd, b, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static int send_reply(struct authd *a, uint32_t id, enum auth_result result, const char *user,
		      const char *reason)
{
	struct auth_wire_reply r = {.id = id, .result = result};
	uint8_t frame[AUTH_WIRE_MAX_FRAME];

	if (result == AUTH_RESULT_OK)
		snprintf(r.user, sizeof(r.user), "%s", user);
	snprintf(r.reason, sizeof(r.reason), "%s", reason);
	int n = auth_wire_reply_encode(&r, frame, sizeof(frame));
	if (n < 0)
		return n;
	return write_all(a->fd, frame, (size_t)n);
}

/* In the worker process: run PAM for req and write the reply to fd. Never returns. */
static _Noreturn void worker_main(int fd, struct auth_wire_request *req,
				  const struct authd_options *opts)
{
	char canonical[AUTH_WIRE_MAX_USER + 1];
	char reason[AUTH_WIRE_MAX_REASON + 1];
	uint8_t frame[AUTH_WIRE_MAX_FRAME];

	/* Die with the dispatcher; a stuck PAM module is cut off by the alarm. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* no core file with a password in it */
	prctl(PR_SET_DUMPABLE, 0);
	authd_signals_reset();
	alarm(opts->worker_timeout_sec);
	enum auth_result result = auth_pam_check(req, opts->pam_confdir, canonical, reason);
	explicit_bzero(req->password, sizeof(req->password));
	struct auth_wire_reply r = {.id = req->id, .result = result};
	if (result == AUTH_RESULT_OK)
		memcpy(r.user, canonical, sizeof(r.user));
	memcpy(r.reason, reason, sizeof(r.reason));
	int n = auth_wire_reply_encode(&r, frame, sizeof(frame));
	if (n < 0 || write_all(fd, frame, (size_t)n) < 0)
		_exit(2);
	_exit(0);
}

static int worker_start(struct authd *a, struct auth_wire_request *req)
{
	struct authd_worker *w = NULL;
	for (unsigned i = 0; i < a->nworkers; i++) {
		if (a->workers[i].pid == 0) {
			w = &a->workers[i];
			break;
		}
	}
	if (w == NULL)
		return -EBUSY;
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = authd_fork();
	if (pid < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		return -e;
	}
	if (pid == 0) {
		/* The worker holds only its reply pipe and stderr, and no other request's
		 * password. */
		struct auth_wire_request mine = *req;
		close(a->fd);
		close(p[0]);
		for (unsigned i = 0; i < a->nworkers; i++) {
			if (a->workers[i].pid != 0)
				close(a->workers[i].fd);
		}
		explicit_bzero(a->queue, a->opts->max_queue * sizeof(*a->queue));
		auth_wire_decoder_wipe(&a->dec);
		worker_main(p[1], &mine, a->opts);
	}
	close(p[1]);
	w->pid = pid;
	w->fd = p[0];
	w->id = req->id;
	w->have = 0;
	w->overflow = false;
	log_debug("authd: worker pid=%ld id=%u user=%s", (long)pid, req->id,
		  log_escape_str(req->user));
	return 0;
}

/* Start a request now, or queue it, or answer "busy". The caller's copy is wiped. */
static int request_dispatch(struct authd *a, struct auth_wire_request *req)
{
	int r = worker_start(a, req);
	if (r == -EBUSY && a->q_len < a->opts->max_queue) {
		unsigned slot = (a->q_head + a->q_len) % a->opts->max_queue;
		a->queue[slot] = *req;
		a->q_len++;
		r = 0;
	} else if (r < 0) {
		log_warn("authd: cannot serve id=%u: %s", req->id,
			 r == -EBUSY ? "every worker busy and the queue full" : strerror(-r));
		r = send_reply(a, req->id, AUTH_RESULT_TEMPFAIL, NULL,
			       r == -EBUSY ? "auth helper busy" : "auth helper cannot fork");
	}
	explicit_bzero(req, sizeof(*req));
	return r;
}

static int queue_drain(struct authd *a)
{
	while (a->q_len > 0) {
		struct auth_wire_request *req = &a->queue[a->q_head];
		int r = worker_start(a, req);
		if (r == -EBUSY)
			return 0;
		uint32_t id = req->id;
		explicit_bzero(req, sizeof(*req));
		a->q_head = (a->q_head + 1) % a->opts->max_queue;
		a->q_len--;
		if (r < 0) {
			r = send_reply(a, id, AUTH_RESULT_TEMPFAIL, NULL,
				       "auth helper cannot fork");
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static void status_text(int status, char *out, size_t outlen)
{
	if (WIFSIGNALED(status))
		snprintf(out, outlen, "killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else if (WIFEXITED(status))
		snprintf(out, outlen, "exited with status %d", WEXITSTATUS(status));
	else
		snprintf(out, outlen, "status 0x%x", (unsigned)status);
}

/* The worker closed its pipe: reap it and forward its reply, or a TEMPFAIL. */
static int worker_finish(struct authd *a, struct authd_worker *w)
{
	int status = 0;
	while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
		;
	close(w->fd);
	uint32_t id = w->id;
	pid_t pid = w->pid;
	w->pid = 0;

	struct auth_wire_decoder dec;
	struct auth_wire_reply reply;
	size_t used = 0;
	auth_wire_decoder_init(&dec, AUTH_WIRE_TYPE_REPLY);
	int r = w->overflow ? -EBADMSG
			    : auth_wire_decoder_feed_reply(&dec, w->buf, w->have, &used, &reply);
	explicit_bzero(w->buf, sizeof(w->buf));
	bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	if (r == 1 && used == w->have && reply.id == id && clean) {
		uint8_t frame[AUTH_WIRE_MAX_FRAME];
		int n = auth_wire_reply_encode(&reply, frame, sizeof(frame));
		return n < 0 ? n : write_all(a->fd, frame, (size_t)n);
	}
	char why[96], reason[AUTH_WIRE_MAX_REASON + 1];
	status_text(status, why, sizeof(why));
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
		snprintf(reason, sizeof(reason), "PAM timed out after %us",
			 a->opts->worker_timeout_sec);
	else
		snprintf(reason, sizeof(reason), "auth worker failed: %s", why);
	log_warn("authd: worker pid=%ld id=%u %s", (long)pid, id, reason);
	return send_reply(a, id, AUTH_RESULT_TEMPFAIL, NULL, reason);
}

static int worker_input(struct authd *a, struct authd_worker *w)
{
	uint8_t tmp[512];
	uint8_t *dst = w->have < sizeof(w->buf) ? w->buf + w->have : tmp;
	size_t room = w->have < sizeof(w->buf) ? sizeof(w->buf) - w->have : sizeof(tmp);
	ssize_t n = read(w->fd, dst, room);
	if (n < 0 && errno == EINTR)
		return 0;
	if (n <= 0)
		return worker_finish(a, w);
	if (dst == tmp)
		w->overflow = true;
	else
		w->have += (size_t)n;
	return 0;
}

static void workers_kill(struct authd *a)
{
	for (unsigned i = 0; i < a->nworkers; i++) {
		struct authd_worker *w = &a->workers[i];
		if (w->pid == 0)
			continue;
		kill(w->pid, SIGKILL);
		while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR)
			;
		close(w->fd);
		explicit_bzero(w->buf, sizeof(w->buf));
		w->pid = 0;
	}
}

/* Read from the channel: 1 on EOF, 0 normally, <0 on a malformed request or error. */
static int channel_input(struct authd *a)
{
	uint8_t data[4096];
	ssize_t n = read(a->fd, data, sizeof(data));
	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -errno;
	if (n == 0)
		return 1;
	size_t off = 0;
	int r = 0;
	while (off < (size_t)n) {
		struct auth_wire_request req;
		size_t used = 0;
		r = auth_wire_decoder_feed_request(&a->dec, data + off, (size_t)n - off, &used,
						   &req);
		off += used;
		if (r < 0) {
			log_error("authd: malformed request from the network process; exiting");
			break;
		}
		if (r == 0)
			continue;
		if (strcmp(req.service, a->opts->pam_service) != 0) {
			log_error("authd: request for PAM service %s, configured %s; exiting",
				  log_escape_str(req.service),
				  log_escape_str(a->opts->pam_service));
			explicit_bzero(&req, sizeof(req));
			r = -EBADMSG;
			break;
		}
		r = request_dispatch(a, &req);
		if (r < 0)
			break;
	}
	explicit_bzero(data, sizeof(data));
	return r < 0 ? r : 0;
}

int authd_serve(int fd, const struct authd_options *opts)
{
	struct authd *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -ENOMEM;
	a->fd = fd;
	a->opts = opts;
	a->nworkers = opts->workers < 1                   ? 1
		      : opts->workers > AUTHD_MAX_WORKERS ? AUTHD_MAX_WORKERS
							  : opts->workers;
	if (opts->max_queue == 0) {
		free(a);
		return -EINVAL;
	}
	a->queue = calloc(opts->max_queue, sizeof(*a->queue));
	if (a->queue == NULL) {
		free(a);
		return -ENOMEM;
	}
	auth_wire_decoder_init(&a->dec, AUTH_WIRE_TYPE_REQUEST);
	int pr = auth_pam_probe(opts->pam_service, opts->pam_confdir);
	if (pr != PAM_SUCCESS)
		log_error("authd: PAM service %s cannot start (%s); every login will fail",
			  log_escape_str(opts->pam_service), pam_strerror(NULL, pr));

	int r = 0;
	for (;;) {
		struct pollfd pfd[AUTHD_MAX_WORKERS + 1];
		struct authd_worker *who[AUTHD_MAX_WORKERS + 1];
		nfds_t n = 0;
		pfd[n] = (struct pollfd){.fd = fd, .events = POLLIN};
		who[n++] = NULL;
		for (unsigned i = 0; i < a->nworkers; i++) {
			if (a->workers[i].pid != 0) {
				pfd[n] = (struct pollfd){.fd = a->workers[i].fd, .events = POLLIN};
				who[n++] = &a->workers[i];
			}
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		for (nfds_t i = 1; i < n && r == 0; i++) {
			if (pfd[i].revents != 0)
				r = worker_input(a, who[i]);
		}
		if (r == 0)
			r = queue_drain(a);
		if (r == 0 && pfd[0].revents != 0) {
			r = channel_input(a);
			if (r == 1) {
				r = 0;
				break;
			}
		}
		if (r < 0)
			break;
	}
	workers_kill(a);
	auth_wire_decoder_wipe(&a->dec);
	explicit_bzero(a->queue, opts->max_queue * sizeof(*a->queue));
	free(a->queue);
	free(a);
	return r;
}

int authd_ctl_receive(int ctl_fd, int timeout_ms, int *fd_r, pid_t *pid_r)
{
	struct pollfd pfd = {.fd = ctl_fd, .events = POLLIN};
	int pr;
	while ((pr = poll(&pfd, 1, timeout_ms)) < 0 && errno == EINTR)
		;
	if (pr < 0)
		return -errno;
	if (pr == 0)
		return -ETIMEDOUT;

	struct authd_ctl_msg msg;
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct iovec iov = {.iov_base = &msg, .iov_len = sizeof(msg)};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = cbuf.space,
			    .msg_controllen = sizeof(cbuf.space)};
	ssize_t n;
	while ((n = recvmsg(ctl_fd, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return -errno;
	if (n == 0)
		return -EPIPE;
	int fd = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&fd, CMSG_DATA(c), sizeof(int));
	}
	if (n != sizeof(msg) || msg.type != AUTHD_CTL_CHANNEL || fd < 0 ||
	    (mh.msg_flags & MSG_CTRUNC)) {
		if (fd >= 0)
			close(fd);
		return -EBADMSG;
	}
	*fd_r = fd;
	*pid_r = (pid_t)msg.pid;
	return 0;
}

static int ctl_send(int ctl_fd, int fd, pid_t pid)
{
	struct authd_ctl_msg msg = {.type = AUTHD_CTL_CHANNEL, .pid = (uint32_t)pid};
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(sizeof(int))];
	} cbuf;
	memset(&cbuf, 0, sizeof(cbuf));
	struct iovec iov = {.iov_base = &msg, .iov_len = sizeof(msg)};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = cbuf.space,
			    .msg_controllen = sizeof(cbuf.space)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	ssize_t n;
	while ((n = sendmsg(ctl_fd, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return -errno;
	return n == sizeof(msg) ? 0 : -EIO;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for the control socket to close or to be readable for timeout_ms (-1: forever) while
 * also watching pidfd (may be -1). Returns 1 when the control socket closed, 2 when the
 * dispatcher exited, 0 on timeout. */
static int supervise_wait(int ctl_fd, int pidfd, int timeout_ms)
{
	struct pollfd pfd[2] = {{.fd = ctl_fd, .events = POLLIN}, {.fd = pidfd, .events = POLLIN}};
	int r;
	while ((r = poll(pfd, pidfd >= 0 ? 2 : 1, timeout_ms)) < 0 && errno == EINTR)
		;
	if (r < 0)
		return 1;
	if (pfd[0].revents != 0) {
		char c;
		ssize_t n = recv(ctl_fd, &c, 1, MSG_DONTWAIT);
		if (n > 0)
			log_error("authd: unexpected data on the control socket; exiting");
		if (n != 0 && n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		return 1;
	}
	if (pidfd >= 0 && pfd[1].revents != 0)
		return 2;
	return 0;
}

_Noreturn void authd_supervise(int ctl_fd, const struct authd_options *opts)
{
	int backoff_ms = 0;

	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
			log_error("authd: socketpair: %s", strerror(errno));
			_exit(1);
		}
		int64_t started = now_ms();
		pid_t pid = authd_fork();
		if (pid < 0) {
			log_error("authd: fork: %s", strerror(errno));
			_exit(1);
		}
		if (pid == 0) {
			close(ctl_fd);
			close(sv[0]);
			int r = authd_serve(sv[1], opts);
			_exit(r == 0 ? 0 : 3);
		}
		close(sv[1]);
		int r = ctl_send(ctl_fd, sv[0], pid);
		close(sv[0]);
		if (r < 0) {
			kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
			_exit(0);
		}
		log_info("authd: dispatcher pid=%ld started", (long)pid);
		int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
		int w;
		if (pidfd < 0) {
			/* No pidfd (old kernel): poll the child twice a second. */
			do {
				w = supervise_wait(ctl_fd, -1, 500);
				if (w == 0 && waitpid(pid, NULL, WNOHANG | WNOWAIT) == pid)
					w = 2;
			} while (w == 0);
		} else {
			do {
				w = supervise_wait(ctl_fd, pidfd, -1);
			} while (w == 0);
			close(pidfd);
		}
		if (w == 1) {
			/* The network process is gone: so is the reason to serve. */
			kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
			_exit(0);
		}
		int status = 0;
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		char why[96];
		status_text(status, why, sizeof(why));
		/* A dispatcher that dies at once again and again is restarted ever more slowly. */
		if (now_ms() - started < 1000)
			backoff_ms = backoff_ms == 0         ? 100
				     : backoff_ms * 2 > 5000 ? 5000
							     : backoff_ms * 2;
		else
			backoff_ms = 0;
		log_warn("authd: dispatcher pid=%ld %s; restarting in %d ms", (long)pid, why,
			 backoff_ms);
		if (backoff_ms > 0 && supervise_wait(ctl_fd, -1, backoff_ms) == 1)
			_exit(0);
	}
}
