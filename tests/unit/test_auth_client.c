/* auth_client against a fake helper: the test holds the control socket and the channel and
 * plays supervisor and dispatcher, so it can send exactly what it wants: exact request bytes,
 * replies, malformed replies, replies to unknown ids, silence (timeouts), a new channel, and
 * the supervisor's death. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth_pamtest.h"
#include "auth_service_private.h"
#include "authd.h"

struct fake {
	uv_loop_t loop;
	struct config cfg;
	struct auth_service *svc;
	int ctl;  /* the supervisor's end */
	int chan; /* the dispatcher's end of the current channel */
	struct auth_wire_decoder dec;
};

static int setup(void **state)
{
	struct fake *f = calloc(1, sizeof(*f));
	int c[2], h[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, h), 0);
	f->cfg.pam_service = (char *)"mk-fake";
	f->cfg.auth_workers = 2;
	assert_int_equal(uv_loop_init(&f->loop), 0);
	assert_int_equal(auth_service_start_fds(&f->cfg, c[0], h[0], 4242, 200, &f->svc), 0);
	assert_int_equal(auth_service_attach(f->svc, &f->loop), 0);
	f->ctl = c[1];
	f->chan = h[1];
	auth_wire_decoder_init(&f->dec, AUTH_WIRE_TYPE_REQUEST);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fake *f = *state;
	auth_service_free(&f->svc);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	if (f->ctl >= 0)
		close(f->ctl);
	if (f->chan >= 0)
		close(f->chan);
	free(f);
	return 0;
}

/* Read one request from the channel; the loop runs meanwhile (bounded). False on EOF. */
static bool fake_read_request(struct fake *f, struct auth_wire_request *req)
{
	for (int i = 0; i < 500; i++) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		struct pollfd p = {.fd = f->chan, .events = POLLIN};
		if (poll(&p, 1, 10) == 0)
			continue;
		uint8_t b;
		ssize_t n = read(f->chan, &b, 1);
		if (n <= 0)
			return false;
		size_t used;
		int r = auth_wire_decoder_feed_request(&f->dec, &b, 1, &used, req);
		assert_true(r >= 0);
		if (r == 1)
			return true;
		i = 0;
	}
	fail_msg("no request within the bound");
	return false;
}

static void fake_reply(struct fake *f, uint32_t id, enum auth_result result, const char *user,
		       const char *reason)
{
	struct auth_wire_reply r = {.id = id, .result = result};
	snprintf(r.user, sizeof(r.user), "%s", user);
	snprintf(r.reason, sizeof(r.reason), "%s", reason);
	uint8_t frame[AUTH_WIRE_MAX_FRAME];
	int n = auth_wire_reply_encode(&r, frame, sizeof(frame));
	assert_true(n > 0);
	assert_int_equal(write(f->chan, frame, (size_t)n), n);
}

/* A new channel from the "supervisor". */
static void fake_new_channel(struct fake *f, pid_t pid)
{
	int h[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, h), 0);
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
	memcpy(CMSG_DATA(c), &h[0], sizeof(int));
	assert_int_equal(sendmsg(f->ctl, &mh, 0), sizeof(msg));
	close(h[0]);
	if (f->chan >= 0)
		close(f->chan);
	f->chan = h[1];
	auth_wire_decoder_init(&f->dec, AUTH_WIRE_TYPE_REQUEST);
}

static bool chan_hung_up(void *arg)
{
	struct fake *f = arg;
	struct pollfd p = {.fd = f->chan, .events = POLLIN};
	char b;
	return poll(&p, 1, 0) == 1 && recv(f->chan, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static void login(struct fake *f, struct pamtest_login *l, const char *user)
{
	pamtest_login(f->svc, l, user, "pw", "192.0.2.7");
	assert_non_null(l->req);
	assert_false(l->finished);
}

static void test_request_bytes_and_reply(void **state)
{
	struct fake *f = *state;
	struct pamtest_login l;
	assert_int_equal(auth_service_helper_pid(f->svc), 4242);
	login(f, &l, "bob");
	struct auth_wire_request req;
	assert_true(fake_read_request(f, &req));
	assert_true(req.id != 0);
	assert_string_equal(req.service, "mk-fake");
	assert_string_equal(req.user, "bob");
	assert_string_equal(req.password, "pw");
	assert_string_equal(req.address, "192.0.2.7");
	assert_int_equal(req.local_port, 143);
	assert_true(req.tls);
	fake_reply(f, req.id, AUTH_RESULT_OK, "Bob.Canonical", "");
	assert_true(pamtest_run_until(&f->loop, &l.finished, 5000));
	assert_int_equal(l.result, AUTH_RESULT_OK);
	assert_string_equal(l.user, "Bob.Canonical");
	assert_int_equal(l.calls, 1);
}

/* A canonical name that could not go into a path is refused, whatever PAM said. */
static void test_unusable_canonical(void **state)
{
	struct fake *f = *state;
	static const char *const bad[] = {"../root", ".hidden", "a/b", "tab\tname"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct pamtest_login l;
		struct auth_wire_request req;
		login(f, &l, "bob");
		assert_true(fake_read_request(f, &req));
		fake_reply(f, req.id, AUTH_RESULT_OK, bad[i], "");
		assert_true(pamtest_run_until(&f->loop, &l.finished, 5000));
		assert_int_equal(l.result, AUTH_RESULT_PERMFAIL);
		assert_string_equal(l.user, "");
		assert_string_equal(l.reason, "canonical user name not usable");
	}
}

/* Replies come back in any order and are matched by id. */
static void test_out_of_order(void **state)
{
	struct fake *f = *state;
	struct pamtest_login a, b;
	struct auth_wire_request ra, rb;
	login(f, &a, "alice");
	login(f, &b, "bob");
	assert_true(fake_read_request(f, &ra));
	assert_true(fake_read_request(f, &rb));
	assert_string_equal(ra.user, "alice");
	fake_reply(f, rb.id, AUTH_RESULT_EXPIRED, "", "expired");
	assert_true(pamtest_run_until(&f->loop, &b.finished, 5000));
	assert_false(a.finished);
	assert_int_equal(b.result, AUTH_RESULT_EXPIRED);
	assert_string_equal(b.reason, "expired");
	fake_reply(f, ra.id, AUTH_RESULT_OK, "alice", "");
	assert_true(pamtest_run_until(&f->loop, &a.finished, 5000));
	assert_int_equal(a.result, AUTH_RESULT_OK);
}

/* A malformed reply: the channel is dropped, the login in flight fails temporarily, and a
 * login started afterwards waits for the next channel. */
static void test_malformed_reply(void **state)
{
	struct fake *f = *state;
	struct pamtest_login l, next;
	struct auth_wire_request req;
	login(f, &l, "bob");
	assert_true(fake_read_request(f, &req));
	static const uint8_t junk[] = {0, 0, 0, 12, 2, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0};
	assert_int_equal(write(f->chan, junk, sizeof(junk)), sizeof(junk));
	assert_true(pamtest_run_until(&f->loop, &l.finished, 5000));
	assert_int_equal(l.result, AUTH_RESULT_TEMPFAIL);
	assert_string_equal(l.reason, "auth helper died");
	assert_true(pamtest_run_until_pred(&f->loop, chan_hung_up, f, 5000));
	assert_int_equal(auth_service_helper_pid(f->svc), 0);

	login(f, &next, "carol");
	uv_run(&f->loop, UV_RUN_NOWAIT);
	fake_new_channel(f, 4343);
	assert_true(fake_read_request(f, &req));
	assert_string_equal(req.user, "carol");
	assert_int_equal(auth_service_helper_pid(f->svc), 4343);
	fake_reply(f, req.id, AUTH_RESULT_PERMFAIL, "", "bad password");
	assert_true(pamtest_run_until(&f->loop, &next.finished, 5000));
	assert_int_equal(next.result, AUTH_RESULT_PERMFAIL);
}

static void test_unknown_id(void **state)
{
	struct fake *f = *state;
	struct pamtest_login l;
	struct auth_wire_request req;
	login(f, &l, "bob");
	assert_true(fake_read_request(f, &req));
	fake_reply(f, req.id + 1000, AUTH_RESULT_OK, "mallory", "");
	assert_true(pamtest_run_until(&f->loop, &l.finished, 5000));
	assert_int_equal(l.result, AUTH_RESULT_TEMPFAIL);
	assert_true(pamtest_run_until_pred(&f->loop, chan_hung_up, f, 5000));
}

/* A helper that stays silent: TEMPFAIL after the bound, and its late answer is ignored. */
static void test_timeout(void **state)
{
	struct fake *f = *state;
	struct pamtest_login l;
	struct auth_wire_request req;
	login(f, &l, "bob");
	assert_true(fake_read_request(f, &req));
	assert_true(pamtest_run_until(&f->loop, &l.finished, 5000));
	assert_int_equal(l.result, AUTH_RESULT_TEMPFAIL);
	assert_string_equal(l.reason, "auth helper timed out");
	assert_true(l.done_ms - l.start_ms >= 200);
	fake_reply(f, req.id, AUTH_RESULT_OK, "bob", "");
	/* the late reply is consumed quietly; the channel stays */
	struct pamtest_login next;
	login(f, &next, "bob");
	assert_true(fake_read_request(f, &req));
	fake_reply(f, req.id, AUTH_RESULT_OK, "bob", "");
	assert_true(pamtest_run_until(&f->loop, &next.finished, 5000));
	assert_int_equal(next.result, AUTH_RESULT_OK);
	assert_int_equal(l.calls, 1);
}

/* The supervisor is gone: what waits for a helper fails, and so does every new login, each
 * through its callback and never from inside auth_request_start. */
static void test_supervisor_gone(void **state)
{
	struct fake *f = *state;
	struct pamtest_login inflight, waiting, later;
	struct auth_wire_request req;
	login(f, &inflight, "bob");
	assert_true(fake_read_request(f, &req));
	close(f->chan); /* the dispatcher dies ... */
	f->chan = -1;
	assert_true(pamtest_run_until(&f->loop, &inflight.finished, 5000));
	assert_int_equal(inflight.result, AUTH_RESULT_TEMPFAIL);
	login(f, &waiting, "bob");
	close(f->ctl); /* ... and so does the supervisor */
	f->ctl = -1;
	assert_true(pamtest_run_until(&f->loop, &waiting.finished, 5000));
	assert_int_equal(waiting.result, AUTH_RESULT_TEMPFAIL);
	assert_string_equal(waiting.reason, "auth helper unavailable");
	login(f, &later, "bob");
	assert_true(pamtest_run_until(&f->loop, &later.finished, 5000));
	assert_int_equal(later.result, AUTH_RESULT_TEMPFAIL);
	assert_string_equal(later.reason, "auth helper unavailable");
}

static bool helper_gone(void *arg)
{
	struct fake *f = arg;
	return auth_service_helper_pid(f->svc) == 0;
}

/* The first failure from 192.0.2.7 has been counted (the next one would wait longer). */
static bool delay_started(void *arg)
{
	struct fake *f = arg;
	return auth_service_fail_delay_ms(f->svc, "192.0.2.7") == 10000;
}

/* Cancelled before a helper was there: it is never sent. */
static void test_cancel_unsent(void **state)
{
	struct fake *f = *state;
	struct pamtest_login l, other;
	struct auth_wire_request req;
	close(f->chan);
	f->chan = -1;
	/* wait until the loop has seen the hang-up */
	assert_true(pamtest_run_until_pred(&f->loop, helper_gone, f, 5000));
	login(f, &l, "cancelled");
	login(f, &other, "sent");
	auth_request_cancel(&l.req);
	fake_new_channel(f, 4444);
	assert_true(fake_read_request(f, &req));
	assert_string_equal(req.user, "sent");
	fake_reply(f, req.id, AUTH_RESULT_OK, "sent", "");
	assert_true(pamtest_run_until(&f->loop, &other.finished, 5000));
	assert_int_equal(l.calls, 0);
}

/* Stopping the service answers every waiting session (a 5 s failure delay is cut short)
 * and the loop then ends: no handle is left behind. */
static void test_free_answers_waiting(void **state)
{
	struct fake *f = *state;
	struct pamtest_login sent, delayed, cancelled;
	struct auth_wire_request req;
	auth_service_free(&f->svc);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	int c[2], h[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, h), 0);
	close(f->ctl);
	close(f->chan);
	f->ctl = c[1];
	f->chan = h[1];
	f->cfg.auth_fail_delay_ms = 5000;
	f->cfg.auth_fail_delay_max_ms = 10000;
	assert_int_equal(auth_service_start_fds(&f->cfg, c[0], h[0], 1, 0, &f->svc), 0);
	assert_int_equal(auth_service_attach(f->svc, &f->loop), 0);

	login(f, &delayed, "bob");
	assert_true(fake_read_request(f, &req));
	fake_reply(f, req.id, AUTH_RESULT_PERMFAIL, "", "wrong");
	assert_true(pamtest_run_until_pred(&f->loop, delay_started, f, 5000));
	login(f, &sent, "bob");
	login(f, &cancelled, "bob");
	auth_request_cancel(&cancelled.req);
	uint64_t t0 = pamtest_now_ms();
	auth_service_free(&f->svc);
	assert_false(sent.finished); /* not from inside auth_service_free */
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_true(pamtest_now_ms() - t0 < 4000);
	assert_int_equal(sent.calls, 1);
	assert_int_equal(sent.result, AUTH_RESULT_TEMPFAIL);
	assert_string_equal(sent.reason, "auth service stopped");
	assert_int_equal(delayed.calls, 1);
	assert_int_equal(delayed.result, AUTH_RESULT_TEMPFAIL);
	assert_int_equal(cancelled.calls, 0);
}

/* Not attached: no request. */
static void test_not_attached(void **state)
{
	struct config cfg = {.pam_service = (char *)"x"};
	int c[2], h[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, c), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, h), 0);
	struct auth_service *svc = NULL;
	assert_int_equal(auth_service_start_fds(&cfg, c[0], h[0], 1, 0, &svc), 0);
	struct auth_request_info info = {.user = "bob", .password = "pw"};
	errno = 0;
	assert_null(auth_request_start(svc, &info, NULL, NULL));
	assert_int_equal(errno, EINVAL);
	auth_service_free(&svc);
	assert_null(svc);
	close(c[1]);
	close(h[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_request_bytes_and_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_of_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unusable_canonical, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_supervisor_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_unsent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_answers_waiting, setup, teardown),
		cmocka_unit_test(test_not_attached),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
