/* The loop side of authentication: the helper's channel on a uv_pipe_t, requests matched by
 * id, the per-address failure delay, the login log line. See auth.h. */
#include "auth.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "auth_service_private.h"
#include "authd.h"
#include "config.h"
#include "log.h"

#define AUTH_DEFAULT_SERVICE    "mailkeep"
#define AUTH_MAX_PENDING        4096  /* requests in flight or waiting for the helper */
#define AUTH_WORKER_TIMEOUT_SEC 60    /* one PAM transaction, enforced in the helper */
#define AUTH_REQUEST_TIMEOUT_MS 90000 /* the loop side's own bound */
#define AUTH_START_TIMEOUT_MS   10000 /* waiting for the helper's first channel */
#define AUTH_HELPER_QUEUE       256   /* requests the dispatcher holds for a free worker */
#define AUTH_THROTTLE_SLOTS     4096  /* client addresses remembered */
#define AUTH_THROTTLE_FORGET_MS (15 * 60 * 1000)

enum auth_req_state {
	AUTH_REQ_WAIT_CHANNEL, /* frame built, no helper connected yet */
	AUTH_REQ_SENT,         /* written to the helper, waiting for its reply */
	AUTH_REQ_DELIVER,      /* result known; the timer delivers it (0 ms or the fail delay) */
	AUTH_REQ_FINISHED,     /* done called or cancelled */
};

struct auth_frame {
	uv_write_t req;
	size_t len;
	uint8_t data[AUTH_WIRE_MAX_FRAME];
};

struct auth_request {
	struct auth_service *svc;
	struct auth_request *prev, *next; /* svc->requests: every request not yet freed */
	bool listed;
	enum auth_req_state state;
	bool cancelled;
	bool done_called;
	bool timer_closing;
	uint32_t id;
	uv_timer_t timer;
	auth_done_fn *done;
	void *ctx;
	struct auth_frame *frame; /* AUTH_REQ_WAIT_CHANNEL: the encoded request (password!) */

	/* the result to deliver */
	enum auth_result result;
	char canonical[AUTH_WIRE_MAX_USER + 1];
	char reason[AUTH_WIRE_MAX_REASON + 1];

	/* for the log line */
	char protocol[16];
	char mechanism[16];
	char user[AUTH_WIRE_MAX_USER + 1];
	char address[AUTH_WIRE_MAX_ADDRESS + 1];
	bool tls;
	uint64_t conn_id;
	uint64_t started_ms;
};

struct auth_throttle_slot {
	char address[AUTH_WIRE_MAX_ADDRESS + 1];
	unsigned failures;
	uint64_t last_ms;
};

struct auth_channel {
	uv_pipe_t pipe;
	struct auth_service *svc;
	struct auth_wire_decoder dec;
	bool dead;
	char rbuf[4096];
};

struct auth_service {
	struct authd_options opts;
	char *pam_service;
	char *pam_confdir;
	unsigned fail_delay_ms;
	unsigned fail_delay_max_ms;
	unsigned request_timeout_ms;

	uv_loop_t *loop;
	pid_t supervisor_pid;
	int ctl_fd;    /* before attach */
	uv_pipe_t ctl; /* after attach */
	bool ctl_open;
	bool ctl_dead;
	uint8_t ctl_buf[sizeof(struct authd_ctl_msg)];
	size_t ctl_have;

	int first_fd; /* the first channel, before attach */
	pid_t helper_pid;
	struct auth_channel *chan;

	uint32_t next_id;
	unsigned n_requests;           /* not yet freed */
	struct auth_request *requests; /* every request not yet freed, newest first */
	unsigned open_handles;
	bool freeing;

	struct auth_throttle_slot *throttle;
	size_t n_throttle;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = src ? strnlen(src, cap - 1) : 0;
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

/* ---- throttling ---------------------------------------------------------------------- */

static struct auth_throttle_slot *throttle_find(const struct auth_service *svc, const char *address)
{
	uint64_t now = now_ms();
	for (size_t i = 0; i < svc->n_throttle; i++) {
		struct auth_throttle_slot *t = &svc->throttle[i];
		if (strcmp(t->address, address) == 0)
			return now - t->last_ms > AUTH_THROTTLE_FORGET_MS ? NULL : t;
	}
	return NULL;
}

static uint64_t delay_for(const struct auth_service *svc, unsigned failures)
{
	uint64_t d = svc->fail_delay_ms;
	for (unsigned i = 1; i < failures && d < svc->fail_delay_max_ms; i++)
		d *= 2;
	return d > svc->fail_delay_max_ms ? svc->fail_delay_max_ms : d;
}

uint64_t auth_service_fail_delay_ms(const struct auth_service *svc, const char *address)
{
	const struct auth_throttle_slot *t = throttle_find(svc, address);
	return delay_for(svc, (t ? t->failures : 0) + 1);
}

/* Record one failure from address; returns the delay it gets and the count. */
static uint64_t throttle_fail(struct auth_service *svc, const char *address, unsigned *failures_r)
{
	uint64_t now = now_ms();
	struct auth_throttle_slot *t = NULL;
	for (size_t i = 0; i < svc->n_throttle; i++) {
		if (strcmp(svc->throttle[i].address, address) == 0) {
			t = &svc->throttle[i];
			if (now - t->last_ms > AUTH_THROTTLE_FORGET_MS)
				t->failures = 0;
			break;
		}
	}
	if (t == NULL) {
		if (svc->n_throttle < AUTH_THROTTLE_SLOTS) {
			t = &svc->throttle[svc->n_throttle++];
		} else {
			/* full: reuse the slot with the oldest failure */
			t = &svc->throttle[0];
			for (size_t i = 1; i < svc->n_throttle; i++) {
				if (svc->throttle[i].last_ms < t->last_ms)
					t = &svc->throttle[i];
			}
		}
		copy_str(t->address, sizeof(t->address), address);
		t->failures = 0;
	}
	if (t->failures < 64)
		t->failures++;
	t->last_ms = now;
	*failures_r = t->failures;
	return delay_for(svc, t->failures);
}

static void throttle_success(struct auth_service *svc, const char *address)
{
	for (size_t i = 0; i < svc->n_throttle; i++) {
		if (strcmp(svc->throttle[i].address, address) == 0) {
			svc->throttle[i] = svc->throttle[--svc->n_throttle];
			return;
		}
	}
}

/* ---- requests ------------------------------------------------------------------------- */

static void service_maybe_free(struct auth_service *svc);

static void request_unlist(struct auth_request *req)
{
	struct auth_service *svc = req->svc;
	if (!req->listed)
		return;
	if (req->prev)
		req->prev->next = req->next;
	else
		svc->requests = req->next;
	if (req->next)
		req->next->prev = req->prev;
	req->prev = req->next = NULL;
	req->listed = false;
}

static void request_list(struct auth_request *req)
{
	struct auth_service *svc = req->svc;
	req->prev = NULL;
	req->next = svc->requests;
	if (svc->requests)
		svc->requests->prev = req;
	svc->requests = req;
	req->listed = true;
}

static void frame_wipe_free(struct auth_frame *f)
{
	if (f == NULL)
		return;
	explicit_bzero(f->data, sizeof(f->data));
	free(f);
}

static void request_closed(uv_handle_t *h)
{
	struct auth_request *req = h->data;
	struct auth_service *svc = req->svc;
	request_unlist(req);
	frame_wipe_free(req->frame);
	explicit_bzero(req, sizeof(*req));
	free(req);
	svc->n_requests--;
	svc->open_handles--;
	service_maybe_free(svc);
}

/* Free once nobody will call back or look it up. */
static void request_maybe_free(struct auth_request *req)
{
	if (req->state != AUTH_REQ_FINISHED || req->timer_closing)
		return;
	req->timer_closing = true;
	uv_timer_stop(&req->timer);
	uv_close((uv_handle_t *)&req->timer, request_closed);
}

static void request_deliver_cb(uv_timer_t *t)
{
	struct auth_request *req = t->data;
	if (req->state != AUTH_REQ_DELIVER)
		return;
	req->state = AUTH_REQ_FINISHED;
	if (!req->cancelled && !req->done_called) {
		req->done_called = true;
		req->done(req->ctx, req->result,
			  req->result == AUTH_RESULT_OK ? req->canonical : NULL, req->reason);
	}
	request_maybe_free(req);
}

/* Deliver result after delay_ms (0: on the next loop iteration). */
static void request_deliver(struct auth_request *req, enum auth_result result,
			    const char *canonical, const char *reason, uint64_t delay_ms)
{
	req->result = result;
	copy_str(req->canonical, sizeof(req->canonical), canonical);
	copy_str(req->reason, sizeof(req->reason), reason);
	req->state = AUTH_REQ_DELIVER;
	if (req->svc->loop == NULL || req->timer_closing)
		return;
	uv_timer_start(&req->timer, request_deliver_cb, delay_ms, 0);
}

static void request_log(const struct auth_request *req, enum auth_result result,
			const char *canonical, const char *reason, uint64_t delay_ms,
			unsigned failures)
{
	char extra[96] = "";
	if (result == AUTH_RESULT_PERMFAIL)
		snprintf(extra, sizeof(extra), " failures=%u delay_ms=%llu", failures,
			 (unsigned long long)delay_ms);
	const char *fmt = "auth: login conn=%llu user=%s rip=%s proto=%s mech=%s tls=%s "
			  "result=%s canonical=%s reason=%s ms=%llu%s%s%s";
	void (*logf)(const char *, ...) = result == AUTH_RESULT_OK ? log_info : log_warn;
	logf(fmt, (unsigned long long)req->conn_id, log_escape_str(req->user),
	     log_escape_str(req->address), req->protocol, req->mechanism, req->tls ? "yes" : "no",
	     auth_result_name(result), canonical && canonical[0] ? log_escape_str(canonical) : "-",
	     reason && reason[0] ? log_escape_str(reason) : "-",
	     (unsigned long long)(now_ms() - req->started_ms), extra,
	     req->cancelled ? " cancelled=yes" : "", req->done_called ? " late=yes" : "");
}

/* The helper's verdict for req (or ours, when the helper could not be asked). */
static void request_result(struct auth_request *req, enum auth_result result, const char *canonical,
			   const char *reason)
{
	struct auth_service *svc = req->svc;
	uint64_t delay = 0;
	unsigned failures = 0;

	frame_wipe_free(req->frame);
	req->frame = NULL;
	if (result == AUTH_RESULT_OK && !auth_user_name_valid(canonical)) {
		/* it would go into a path: refuse it here, once for every protocol */
		log_error("auth: PAM gave the unusable user name %s for %s",
			  log_escape_str(canonical), log_escape_str(req->user));
		result = AUTH_RESULT_PERMFAIL;
		canonical = NULL;
		reason = "canonical user name not usable";
	}
	if (result == AUTH_RESULT_PERMFAIL)
		delay = throttle_fail(svc, req->address, &failures);
	else if (result == AUTH_RESULT_OK || result == AUTH_RESULT_EXPIRED)
		throttle_success(svc, req->address);
	request_log(req, result, canonical, reason, delay, failures);
	if (req->cancelled || req->done_called) {
		req->state = AUTH_REQ_FINISHED;
		request_maybe_free(req);
		return;
	}
	request_deliver(req, result, canonical, reason, delay);
}

static void frame_written(uv_write_t *w, int status)
{
	struct auth_frame *f = w->data;
	frame_wipe_free(f);
}

static void channel_close(struct auth_channel *ch, const char *why);

/* The helper did not answer in time: TEMPFAIL now; the request stays listed until the helper
 * answers or its channel closes. */
static void request_timeout_cb(uv_timer_t *t)
{
	struct auth_request *req = t->data;
	if (req->state != AUTH_REQ_SENT || req->cancelled || req->done_called)
		return;
	log_warn("auth: helper did not answer conn=%llu user=%s within %u ms",
		 (unsigned long long)req->conn_id, log_escape_str(req->user),
		 req->svc->request_timeout_ms);
	req->done_called = true;
	req->done(req->ctx, AUTH_RESULT_TEMPFAIL, NULL, "auth helper timed out");
}

static void request_send(struct auth_request *req)
{
	struct auth_service *svc = req->svc;
	struct auth_frame *f = req->frame;
	req->frame = NULL;
	req->state = AUTH_REQ_SENT;
	f->req.data = f;
	uv_buf_t b = uv_buf_init((char *)f->data, (unsigned)f->len);
	int r = uv_write(&f->req, (uv_stream_t *)&svc->chan->pipe, &b, 1, frame_written);
	if (r < 0) {
		frame_wipe_free(f);
		channel_close(svc->chan, uv_strerror(r));
		return;
	}
	/* the loop side's own bound, in case the helper never answers: counted from now, not
	 * from the loop's cached time (which may be this turn's start: the bound would end
	 * early) */
	uv_update_time(req->timer.loop);
	uv_timer_start(&req->timer, request_timeout_cb, req->svc->request_timeout_ms, 0);
}

struct auth_request *auth_request_start(struct auth_service *svc,
					const struct auth_request_info *info, auth_done_fn *done,
					void *ctx)
{
	if (svc->loop == NULL) {
		errno = EINVAL; /* not attached */
		return NULL;
	}
	struct auth_request *req = calloc(1, sizeof(*req));
	if (req == NULL)
		return NULL;
	req->svc = svc;
	req->done = done;
	req->ctx = ctx;
	req->conn_id = info->conn_id;
	req->tls = info->tls;
	req->started_ms = now_ms();
	copy_str(req->protocol, sizeof(req->protocol), info->protocol ? info->protocol : "-");
	copy_str(req->mechanism, sizeof(req->mechanism), info->mechanism ? info->mechanism : "-");
	copy_str(req->user, sizeof(req->user), info->user);
	copy_str(req->address, sizeof(req->address), info->remote_address);
	uv_timer_init(svc->loop, &req->timer);
	req->timer.data = req;
	svc->open_handles++;
	svc->n_requests++;
	request_list(req);
	if (++svc->next_id == 0)
		svc->next_id = 1;
	req->id = svc->next_id;

	const char *user = info->user ? info->user : "";
	const char *password = info->password ? info->password : "";
	const char *address = info->remote_address ? info->remote_address : "";
	const char *refused = NULL;
	enum auth_result refused_result = AUTH_RESULT_PERMFAIL;
	if (user[0] == '\0')
		refused = "empty user name";
	else if (strlen(user) > AUTH_WIRE_MAX_USER)
		refused = "user name too long";
	else if (strlen(password) > AUTH_WIRE_MAX_PASSWORD)
		refused = "password too long";
	else if (strlen(address) > AUTH_WIRE_MAX_ADDRESS)
		refused = "client address too long", refused_result = AUTH_RESULT_TEMPFAIL;
	else if (svc->n_requests > AUTH_MAX_PENDING)
		refused = "too many logins in progress", refused_result = AUTH_RESULT_TEMPFAIL;
	else if (svc->ctl_dead && svc->chan == NULL)
		refused = "auth helper unavailable", refused_result = AUTH_RESULT_TEMPFAIL;
	if (refused != NULL) {
		request_result(req, refused_result, NULL, refused);
		return req;
	}

	struct auth_wire_request *w = calloc(1, sizeof(*w));
	req->frame = malloc(sizeof(*req->frame));
	if (w == NULL || req->frame == NULL) {
		free(w);
		request_result(req, AUTH_RESULT_TEMPFAIL, NULL, "out of memory");
		return req;
	}
	w->id = req->id;
	w->local_port = (uint16_t)info->local_port;
	w->tls = info->tls;
	copy_str(w->service, sizeof(w->service), svc->pam_service);
	copy_str(w->user, sizeof(w->user), user);
	copy_str(w->password, sizeof(w->password), password);
	copy_str(w->address, sizeof(w->address), address);
	int n = auth_wire_request_encode(w, req->frame->data, sizeof(req->frame->data));
	explicit_bzero(w, sizeof(*w));
	free(w);
	if (n < 0) {
		request_result(req, AUTH_RESULT_TEMPFAIL, NULL, "cannot encode request");
		return req;
	}
	req->frame->len = (size_t)n;
	req->state = AUTH_REQ_WAIT_CHANNEL;
	if (svc->chan != NULL && !svc->chan->dead)
		request_send(req);
	return req;
}

void auth_request_cancel(struct auth_request **req_p)
{
	struct auth_request *req = *req_p;
	if (req == NULL)
		return;
	*req_p = NULL;
	req->cancelled = true;
	frame_wipe_free(req->frame);
	req->frame = NULL;
	if (req->state == AUTH_REQ_WAIT_CHANNEL) {
		/* never sent: nothing to wait for */
		req->state = AUTH_REQ_FINISHED;
	} else if (req->state == AUTH_REQ_DELIVER) {
		req->state = AUTH_REQ_FINISHED;
	}
	/* AUTH_REQ_SENT stays until the helper answers (it is logged and counted). */
	request_maybe_free(req);
}

/* ---- the channel to the helper --------------------------------------------------------- */

static void channel_closed(uv_handle_t *h)
{
	struct auth_channel *ch = h->data;
	struct auth_service *svc = ch->svc;
	auth_wire_decoder_wipe(&ch->dec);
	free(ch);
	svc->open_handles--;
	service_maybe_free(svc);
}

/* Fail every request the helper was asked; requests not yet sent wait for the next channel. */
static void channel_close(struct auth_channel *ch, const char *why)
{
	struct auth_service *svc = ch->svc;
	if (ch->dead)
		return;
	ch->dead = true;
	if (svc->chan == ch) {
		svc->chan = NULL;
		svc->helper_pid = 0;
	}
	uv_close((uv_handle_t *)&ch->pipe, channel_closed);
	unsigned failed = 0;
	struct auth_request *req = svc->requests, *next;
	for (; req != NULL; req = next) {
		next = req->next;
		if (req->state != AUTH_REQ_SENT)
			continue;
		failed++;
		request_result(req, AUTH_RESULT_TEMPFAIL, NULL, "auth helper died");
	}
	if (!svc->freeing)
		log_warn("auth: helper connection lost (%s); %u login(s) in flight failed", why,
			 failed);
}

static void channel_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct auth_channel *ch = h->data;
	*buf = uv_buf_init(ch->rbuf, sizeof(ch->rbuf));
}

static void channel_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct auth_channel *ch = s->data;
	struct auth_service *svc = ch->svc;
	if (nread == 0)
		return;
	if (nread < 0) {
		channel_close(ch, nread == UV_EOF ? "helper closed the connection"
						  : uv_strerror((int)nread));
		return;
	}
	size_t off = 0;
	while (off < (size_t)nread && !ch->dead) {
		struct auth_wire_reply reply;
		size_t used = 0;
		int r = auth_wire_decoder_feed_reply(&ch->dec, buf->base + off, (size_t)nread - off,
						     &used, &reply);
		off += used;
		if (r < 0) {
			log_error("auth: malformed reply from the helper; dropping it");
			channel_close(ch, "malformed reply");
			return;
		}
		if (r == 0)
			continue;
		struct auth_request *req = svc->requests;
		while (req != NULL && !(req->id == reply.id && req->state == AUTH_REQ_SENT))
			req = req->next;
		if (req == NULL) {
			log_error("auth: helper replied to unknown id %u; dropping it", reply.id);
			channel_close(ch, "reply to an unknown request");
			return;
		}
		uv_timer_stop(&req->timer);
		request_result(req, reply.result, reply.user, reply.reason);
	}
}

static struct auth_channel *channel_new(struct auth_service *svc)
{
	struct auth_channel *ch = calloc(1, sizeof(*ch));
	if (ch == NULL)
		return NULL;
	ch->svc = svc;
	auth_wire_decoder_init(&ch->dec, AUTH_WIRE_TYPE_REPLY);
	uv_pipe_init(svc->loop, &ch->pipe, 0);
	ch->pipe.data = ch;
	svc->open_handles++;
	return ch;
}

/* ch's pipe is open: make it the current channel and send what waited for a helper. */
static int channel_activate(struct auth_channel *ch, pid_t pid)
{
	struct auth_service *svc = ch->svc;
	int r = uv_read_start((uv_stream_t *)&ch->pipe, channel_alloc, channel_read);
	if (r < 0) {
		ch->dead = true;
		uv_close((uv_handle_t *)&ch->pipe, channel_closed);
		return r;
	}
	if (svc->chan != NULL)
		channel_close(svc->chan, "replaced by a new helper");
	svc->chan = ch;
	svc->helper_pid = pid;
	/* oldest first: the list is newest first */
	struct auth_request *last = svc->requests;
	while (last != NULL && last->next != NULL)
		last = last->next;
	for (struct auth_request *req = last, *prev; req != NULL; req = prev) {
		prev = req->prev;
		if (req->state == AUTH_REQ_WAIT_CHANNEL && svc->chan == ch)
			request_send(req);
	}
	return 0;
}

/* ---- the control socket to the supervisor ---------------------------------------------- */

static void ctl_closed(uv_handle_t *h)
{
	struct auth_service *svc = h->data;
	svc->open_handles--;
	service_maybe_free(svc);
}

static void ctl_dead(struct auth_service *svc, const char *why)
{
	if (svc->ctl_dead)
		return;
	svc->ctl_dead = true;
	int status = 0;
	char st[64] = "exit status unknown";
	if (svc->supervisor_pid > 0 &&
	    waitpid(svc->supervisor_pid, &status, WNOHANG) == svc->supervisor_pid) {
		svc->supervisor_pid = 0;
		if (WIFSIGNALED(status))
			snprintf(st, sizeof(st), "killed by signal %d", WTERMSIG(status));
		else
			snprintf(st, sizeof(st), "exited with status %d", WEXITSTATUS(status));
	}
	uv_read_stop((uv_stream_t *)&svc->ctl);
	if (svc->freeing)
		return;
	log_error("auth: helper supervisor lost (%s; %s): logins fail until mailkeep restarts", why,
		  st);
	/* with no supervisor no new helper will come: fail what waits for one */
	struct auth_request *req = svc->requests, *next;
	for (; req != NULL; req = next) {
		next = req->next;
		if (req->state == AUTH_REQ_WAIT_CHANNEL)
			request_result(req, AUTH_RESULT_TEMPFAIL, NULL, "auth helper unavailable");
	}
}

static void ctl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct auth_service *svc = h->data;
	*buf = uv_buf_init((char *)svc->ctl_buf + svc->ctl_have,
			   (unsigned)(sizeof(svc->ctl_buf) - svc->ctl_have));
}

static void ctl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct auth_service *svc = s->data;
	if (nread == 0)
		return;
	if (nread < 0) {
		ctl_dead(svc, nread == UV_EOF ? "closed" : uv_strerror((int)nread));
		return;
	}
	svc->ctl_have += (size_t)nread;
	if (svc->ctl_have < sizeof(svc->ctl_buf))
		return;
	svc->ctl_have = 0;
	struct authd_ctl_msg msg;
	memcpy(&msg, svc->ctl_buf, sizeof(msg));
	if (msg.type != AUTHD_CTL_CHANNEL || uv_pipe_pending_count(&svc->ctl) < 1) {
		ctl_dead(svc, "malformed message");
		return;
	}
	struct auth_channel *ch = channel_new(svc);
	if (ch == NULL) {
		ctl_dead(svc, "out of memory");
		return;
	}
	int r = uv_accept(s, (uv_stream_t *)&ch->pipe);
	if (r < 0) {
		log_error("auth: cannot take the new helper channel: %s", uv_strerror(r));
		ch->dead = true;
		uv_close((uv_handle_t *)&ch->pipe, channel_closed);
		return;
	}
	log_info("auth: helper pid=%ld connected", (long)msg.pid);
	r = channel_activate(ch, (pid_t)msg.pid);
	if (r < 0)
		log_error("auth: cannot open the helper channel: %s", strerror(-r));
}

/* ---- the service ------------------------------------------------------------------------ */

/* In the child: become the supervisor. Never returns. */
static _Noreturn void supervisor_child(int ctl_fd, const struct authd_options *opts)
{
	/* Hold nothing of the parent's but stdio and the control socket: no listener, no
	 * loop, no mail store. */
	if (ctl_fd != 3) {
		if (dup2(ctl_fd, 3) < 0)
			_exit(1);
		ctl_fd = 3;
	}
	if (close_range(4, ~0U, 0) < 0) {
		for (int fd = 4; fd < 1024; fd++)
			close(fd);
	}
	authd_signals_reset();
	/* no core file with a password in it, and no ptrace from the network process's uid */
	prctl(PR_SET_DUMPABLE, 0);
	authd_supervise(ctl_fd, opts);
}

static int supervisor_spawn(struct auth_service *svc)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(sv[0]);
		close(sv[1]);
		return -e;
	}
	if (pid == 0) {
		close(sv[0]);
		supervisor_child(sv[1], &svc->opts);
	}
	close(sv[1]);
	int fd = -1;
	pid_t helper = 0;
	int r = authd_ctl_receive(sv[0], AUTH_START_TIMEOUT_MS, &fd, &helper);
	if (r < 0) {
		close(sv[0]);
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		return r;
	}
	svc->supervisor_pid = pid;
	svc->ctl_fd = sv[0];
	svc->first_fd = fd;
	svc->helper_pid = helper;
	return 0;
}

/* A service with cfg's settings and no helper yet. */
static int service_new(const struct config *cfg, struct auth_service **svc_r)
{
	struct auth_service *svc = calloc(1, sizeof(*svc));
	if (svc == NULL)
		return -ENOMEM;
	svc->ctl_fd = -1;
	svc->first_fd = -1;
	svc->pam_service = strdup(cfg->pam_service && cfg->pam_service[0] ? cfg->pam_service
									  : AUTH_DEFAULT_SERVICE);
	svc->pam_confdir =
		cfg->pam_confdir && cfg->pam_confdir[0] ? strdup(cfg->pam_confdir) : NULL;
	svc->throttle = calloc(AUTH_THROTTLE_SLOTS, sizeof(*svc->throttle));
	if (svc->pam_service == NULL || svc->throttle == NULL ||
	    (cfg->pam_confdir && cfg->pam_confdir[0] && svc->pam_confdir == NULL)) {
		auth_service_free(&svc);
		return -ENOMEM;
	}
	if (strlen(svc->pam_service) > AUTH_WIRE_MAX_SERVICE) {
		auth_service_free(&svc);
		return -ENAMETOOLONG;
	}
	svc->fail_delay_ms = cfg->auth_fail_delay_ms;
	svc->fail_delay_max_ms = cfg->auth_fail_delay_max_ms;
	if (svc->fail_delay_max_ms < svc->fail_delay_ms)
		svc->fail_delay_max_ms = svc->fail_delay_ms;
	svc->request_timeout_ms = AUTH_REQUEST_TIMEOUT_MS;
	svc->opts.pam_service = svc->pam_service;
	svc->opts.pam_confdir = svc->pam_confdir;
	svc->opts.workers = cfg->auth_workers ? cfg->auth_workers : 1;
	svc->opts.max_queue = AUTH_HELPER_QUEUE;
	svc->opts.worker_timeout_sec = AUTH_WORKER_TIMEOUT_SEC;
	*svc_r = svc;
	return 0;
}

int auth_service_start(const struct config *cfg, struct auth_service **svc_r)
{
	struct auth_service *svc = NULL;
	int r = service_new(cfg, &svc);
	if (r < 0)
		return r;
	r = supervisor_spawn(svc);
	if (r < 0) {
		log_error("auth: cannot start the auth helper: %s", strerror(-r));
		auth_service_free(&svc);
		return r;
	}
	log_info("auth: helper started supervisor=%ld pid=%ld service=%s confdir=%s workers=%u",
		 (long)svc->supervisor_pid, (long)svc->helper_pid, svc->pam_service,
		 svc->pam_confdir ? svc->pam_confdir : "-", svc->opts.workers);
	*svc_r = svc;
	return 0;
}

int auth_service_start_fds(const struct config *cfg, int ctl_fd, int chan_fd, pid_t helper_pid,
			   unsigned request_timeout_ms, struct auth_service **svc_r)
{
	struct auth_service *svc = NULL;
	int r = service_new(cfg, &svc);
	if (r < 0) {
		close(ctl_fd);
		close(chan_fd);
		return r;
	}
	svc->ctl_fd = ctl_fd;
	svc->first_fd = chan_fd;
	svc->helper_pid = helper_pid;
	if (request_timeout_ms > 0)
		svc->request_timeout_ms = request_timeout_ms;
	*svc_r = svc;
	return 0;
}

int auth_service_attach(struct auth_service *svc, uv_loop_t *loop)
{
	if (svc->loop != NULL || svc->ctl_fd < 0)
		return -EALREADY;
	svc->loop = loop;
	uv_pipe_init(loop, &svc->ctl, 1);
	svc->ctl.data = svc;
	svc->open_handles++;
	svc->ctl_open = true;
	int r = uv_pipe_open(&svc->ctl, svc->ctl_fd);
	if (r == 0) {
		svc->ctl_fd = -1;
		r = uv_read_start((uv_stream_t *)&svc->ctl, ctl_alloc, ctl_read);
	}
	if (r < 0)
		return r;
	struct auth_channel *ch = channel_new(svc);
	if (ch == NULL)
		return -ENOMEM;
	r = uv_pipe_open(&ch->pipe, svc->first_fd);
	if (r < 0) {
		ch->dead = true;
		uv_close((uv_handle_t *)&ch->pipe, channel_closed);
		return r;
	}
	svc->first_fd = -1;
	return channel_activate(ch, svc->helper_pid);
}

pid_t auth_service_helper_pid(const struct auth_service *svc)
{
	return svc->helper_pid;
}

pid_t auth_service_supervisor_pid(const struct auth_service *svc)
{
	return svc->supervisor_pid;
}

static void service_release(struct auth_service *svc)
{
	free(svc->pam_service);
	free(svc->pam_confdir);
	free(svc->throttle);
	free(svc);
}

static void service_maybe_free(struct auth_service *svc)
{
	if (svc->freeing && svc->open_handles == 0)
		service_release(svc);
}

/* Wait for the supervisor to exit (it does once the control socket closes). */
static void supervisor_reap(struct auth_service *svc)
{
	pid_t pid = svc->supervisor_pid;
	if (pid <= 0)
		return;
	svc->supervisor_pid = 0;
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd >= 0) {
		struct pollfd p = {.fd = pidfd, .events = POLLIN};
		if (poll(&p, 1, 2000) == 0)
			kill(pid, SIGKILL);
		close(pidfd);
	} else {
		kill(pid, SIGKILL);
	}
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

void auth_service_free(struct auth_service **svc_p)
{
	struct auth_service *svc = *svc_p;
	if (svc == NULL)
		return;
	*svc_p = NULL;
	svc->freeing = true;
	if (svc->first_fd >= 0)
		close(svc->first_fd);
	if (svc->ctl_fd >= 0)
		close(svc->ctl_fd);
	svc->first_fd = svc->ctl_fd = -1;
	if (svc->loop == NULL) {
		supervisor_reap(svc);
		service_release(svc);
		return;
	}
	/* Every request a session still waits for is answered TEMPFAIL on the next loop
	 * iteration (a failure delay is cut short); the rest are freed. */
	for (struct auth_request *req = svc->requests; req != NULL; req = req->next) {
		frame_wipe_free(req->frame);
		req->frame = NULL;
		if (req->state == AUTH_REQ_FINISHED)
			continue;
		if (req->cancelled || req->done_called) {
			req->state = AUTH_REQ_FINISHED;
			request_maybe_free(req);
		} else {
			request_deliver(req, AUTH_RESULT_TEMPFAIL, NULL, "auth service stopped", 0);
		}
	}
	if (svc->chan != NULL)
		channel_close(svc->chan, "shutting down");
	if (svc->ctl_open) {
		svc->ctl_open = false;
		uv_close((uv_handle_t *)&svc->ctl, ctl_closed);
	}
	supervisor_reap(svc);
	service_maybe_free(svc);
}

/* ---- policy ----------------------------------------------------------------------------- */

bool auth_plaintext_allowed(const struct config *cfg, bool tls, bool peer_is_loopback)
{
	return tls || peer_is_loopback || cfg->allow_plaintext_auth;
}

bool auth_failures_exceeded(const struct config *cfg, unsigned failures)
{
	return cfg->auth_max_failures > 0 && failures >= cfg->auth_max_failures;
}

bool auth_user_name_valid(const char *user)
{
	size_t n = strnlen(user, AUTH_WIRE_MAX_USER + 1);
	if (n == 0 || n > AUTH_WIRE_MAX_USER || user[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)user[i];
		if (c == '/' || c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

int auth_user_mail_path(const struct config *cfg, const char *user, char *out, size_t outlen)
{
	if (!auth_user_name_valid(user) || cfg->mail_root == NULL || cfg->mail_root[0] == '\0')
		return -EINVAL;
	size_t ulen = strlen(user), o = 0;
	for (const char *p = cfg->mail_root; *p; p++) {
		const char *add = p;
		size_t n = 1;
		if (p[0] == '%' && p[1] == 'u') {
			add = user;
			n = ulen;
			p++;
		}
		if (outlen - o <= n)
			return -ENAMETOOLONG;
		memcpy(out + o, add, n);
		o += n;
	}
	if (o >= outlen)
		return -ENAMETOOLONG;
	out[o] = '\0';
	return 0;
}
