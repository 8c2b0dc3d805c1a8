/* The helper alone: the PAM conversation function, the result mapping, and the dispatcher
 * (authd_serve) driven over a socketpair: replies, malformed input, a foreign PAM service,
 * a crashing PAM module, the bounded queue. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth_pam.h"
#include "auth_pamtest.h"
#include "authd.h"

static void test_conv_answers(void **state)
{
	struct auth_pam_conv_data d = {.user = "bob", .password = "pw"};
	struct pam_message m[4] = {
		{.msg_style = PAM_PROMPT_ECHO_OFF, .msg = "Password: "},
		{.msg_style = PAM_PROMPT_ECHO_ON, .msg = "Login: "},
		{.msg_style = PAM_TEXT_INFO, .msg = "hello"},
		{.msg_style = PAM_ERROR_MSG, .msg = "account locked"},
	};
	const struct pam_message *mp[4] = {&m[0], &m[1], &m[2], &m[3]};
	struct pam_response *resp = NULL;
	assert_int_equal(auth_pam_conv(4, mp, &resp, &d), PAM_SUCCESS);
	assert_non_null(resp);
	assert_string_equal(resp[0].resp, "pw");
	assert_string_equal(resp[1].resp, "bob");
	assert_null(resp[2].resp);
	assert_null(resp[3].resp);
	assert_string_equal(d.info, "account locked");
	for (int i = 0; i < 4; i++)
		free(resp[i].resp);
	free(resp);
}

static void test_conv_refuses(void **state)
{
	struct auth_pam_conv_data d = {.user = "bob", .password = "pw"};
	struct pam_message ok = {.msg_style = PAM_PROMPT_ECHO_OFF, .msg = "Password: "};
	struct pam_message odd = {.msg_style = 99, .msg = "binary"};
	const struct pam_message *mp[2] = {&ok, &odd};
	struct pam_response *resp = (struct pam_response *)&d; /* must be reset */
	/* an unknown style after an answered prompt: everything wiped, nothing returned */
	assert_int_equal(auth_pam_conv(2, mp, &resp, &d), PAM_CONV_ERR);
	assert_null(resp);
	/* counts outside 1..AUTH_PAM_MAX_MESSAGES */
	assert_int_equal(auth_pam_conv(0, mp, &resp, &d), PAM_CONV_ERR);
	assert_int_equal(auth_pam_conv(-1, mp, &resp, &d), PAM_CONV_ERR);
	assert_int_equal(auth_pam_conv(AUTH_PAM_MAX_MESSAGES + 1, mp, &resp, &d), PAM_CONV_ERR);
	assert_null(resp);
	/* exactly the cap is fine */
	const struct pam_message **many = calloc(AUTH_PAM_MAX_MESSAGES, sizeof(*many));
	struct pam_message info = {.msg_style = PAM_TEXT_INFO, .msg = "x"};
	for (int i = 0; i < AUTH_PAM_MAX_MESSAGES; i++)
		many[i] = &info;
	assert_int_equal(auth_pam_conv(AUTH_PAM_MAX_MESSAGES, many, &resp, &d), PAM_SUCCESS);
	free(resp);
	free(many);
}

static void test_result_map(void **state)
{
	assert_int_equal(auth_pam_map(PAM_SUCCESS), AUTH_RESULT_OK);
	assert_int_equal(auth_pam_map(PAM_AUTH_ERR), AUTH_RESULT_PERMFAIL);
	assert_int_equal(auth_pam_map(PAM_USER_UNKNOWN), AUTH_RESULT_PERMFAIL);
	assert_int_equal(auth_pam_map(PAM_PERM_DENIED), AUTH_RESULT_PERMFAIL);
	assert_int_equal(auth_pam_map(PAM_MAXTRIES), AUTH_RESULT_PERMFAIL);
	assert_int_equal(auth_pam_map(PAM_CRED_INSUFFICIENT), AUTH_RESULT_PERMFAIL);
	assert_int_equal(auth_pam_map(PAM_SYSTEM_ERR), AUTH_RESULT_TEMPFAIL);
	assert_int_equal(auth_pam_map(PAM_ABORT), AUTH_RESULT_TEMPFAIL);
	assert_int_equal(auth_pam_map(PAM_AUTHINFO_UNAVAIL), AUTH_RESULT_TEMPFAIL);
	assert_int_equal(auth_pam_map(PAM_NEW_AUTHTOK_REQD), AUTH_RESULT_EXPIRED);
	assert_int_equal(auth_pam_map(PAM_ACCT_EXPIRED), AUTH_RESULT_EXPIRED);
}

/* A dispatcher in a child process on one end of a socketpair. */
struct dispatcher {
	struct auth_pamtest t;
	struct authd_options opts;
	int fd;
	pid_t pid;
	struct auth_wire_decoder dec;
};

static void dispatcher_start_limit(struct dispatcher *d, unsigned workers, unsigned queue,
				   unsigned timeout_sec)
{
	auth_pamtest_init(&d->t);
	d->opts = (struct authd_options){.pam_service = PAMTEST_SERVICE,
					 .pam_confdir = d->t.confdir,
					 .workers = workers,
					 .max_queue = queue,
					 .worker_timeout_sec = timeout_sec};
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	d->pid = fork();
	assert_true(d->pid >= 0);
	if (d->pid == 0) {
		close(sv[0]);
		int r = authd_serve(sv[1], &d->opts);
		_exit(r == 0 ? 0 : r == -EBADMSG ? 3 : 4);
	}
	close(sv[1]);
	d->fd = sv[0];
	auth_wire_decoder_init(&d->dec, AUTH_WIRE_TYPE_REPLY);
}

static void dispatcher_start(struct dispatcher *d, unsigned workers, unsigned queue)
{
	dispatcher_start_limit(d, workers, queue, 30);
}

/* The child's exit status, once it has hung up (callers saw EOF first). */
static int dispatcher_wait(struct dispatcher *d)
{
	int status = 0;
	while (waitpid(d->pid, &status, 0) < 0 && errno == EINTR)
		;
	close(d->fd);
	auth_pamtest_cleanup(&d->t);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void send_request(struct dispatcher *d, uint32_t id, const char *service, const char *user,
			 const char *password)
{
	struct auth_wire_request req = {.id = id, .local_port = 110};
	snprintf(req.service, sizeof(req.service), "%s", service);
	snprintf(req.user, sizeof(req.user), "%s", user);
	snprintf(req.password, sizeof(req.password), "%s", password);
	snprintf(req.address, sizeof(req.address), "127.0.0.1");
	uint8_t frame[AUTH_WIRE_MAX_FRAME];
	int n = auth_wire_request_encode(&req, frame, sizeof(frame));
	assert_true(n > 0);
	assert_int_equal(write(d->fd, frame, (size_t)n), n);
}

/* Read one reply, waiting at most 10 s; returns false on EOF. */
static bool read_reply(struct dispatcher *d, struct auth_wire_reply *r)
{
	for (;;) {
		struct pollfd p = {.fd = d->fd, .events = POLLIN};
		assert_int_equal(poll(&p, 1, 10000), 1);
		uint8_t b;
		ssize_t n = read(d->fd, &b, 1);
		if (n == 0)
			return false;
		assert_int_equal(n, 1);
		size_t used;
		int rc = auth_wire_decoder_feed_reply(&d->dec, &b, 1, &used, r);
		assert_true(rc >= 0);
		if (rc == 1)
			return true;
	}
}

static void test_dispatcher_replies(void **state)
{
	struct dispatcher d;
	struct auth_wire_reply r;
	dispatcher_start(&d, 2, 4);
	send_request(&d, 7, PAMTEST_SERVICE, "bob", "secret");
	assert_true(read_reply(&d, &r));
	assert_int_equal(r.id, 7);
	assert_int_equal(r.result, AUTH_RESULT_OK);
	assert_string_equal(r.user, "bob");
	send_request(&d, 8, PAMTEST_SERVICE, "bob", "nope");
	assert_true(read_reply(&d, &r));
	assert_int_equal(r.id, 8);
	assert_int_equal(r.result, AUTH_RESULT_PERMFAIL);
	assert_string_equal(r.reason, "pam_authenticate: Authentication failure");
	/* a PAM module that crashes: TEMPFAIL, and the dispatcher goes on */
	send_request(&d, 9, PAMTEST_SERVICE, "crash", "x");
	assert_true(read_reply(&d, &r));
	assert_int_equal(r.id, 9);
	assert_int_equal(r.result, AUTH_RESULT_TEMPFAIL);
	assert_string_equal(r.reason,
			    "auth worker failed: killed by signal 11 (Segmentation fault)");
	send_request(&d, 10, PAMTEST_SERVICE, "bob", "secret");
	assert_true(read_reply(&d, &r));
	assert_int_equal(r.result, AUTH_RESULT_OK);
	/* EOF: a clean exit */
	shutdown(d.fd, SHUT_WR);
	assert_false(read_reply(&d, &r));
	assert_int_equal(dispatcher_wait(&d), 0);
}

static void test_dispatcher_malformed(void **state)
{
	struct dispatcher d;
	struct auth_wire_reply r;
	dispatcher_start(&d, 2, 4);
	static const uint8_t junk[] = {0, 0, 0, 20, 9, 9, 9, 9, 9, 9, 9, 9,
				       9, 9, 9, 9,  9, 9, 9, 9, 9, 9, 9, 9};
	assert_int_equal(write(d.fd, junk, sizeof(junk)), sizeof(junk));
	assert_false(read_reply(&d, &r)); /* it hangs up */
	assert_int_equal(dispatcher_wait(&d), 3);

	/* an oversized length, refused from the header alone */
	dispatcher_start(&d, 2, 4);
	static const uint8_t huge[] = {0x7f, 0xff, 0xff, 0xff};
	assert_int_equal(write(d.fd, huge, sizeof(huge)), sizeof(huge));
	assert_false(read_reply(&d, &r));
	assert_int_equal(dispatcher_wait(&d), 3);

	/* a request for another PAM service than the configured one */
	dispatcher_start(&d, 2, 4);
	send_request(&d, 1, "login", "root", "x");
	assert_false(read_reply(&d, &r));
	assert_int_equal(dispatcher_wait(&d), 3);
}

/* One worker, a queue of one: the slow login holds the worker, the next waits in the queue,
 * the third is answered "busy" at once. */
static void test_dispatcher_queue_bound(void **state)
{
	struct dispatcher d;
	struct auth_wire_reply r;
	dispatcher_start(&d, 1, 1);
	send_request(&d, 1, PAMTEST_SERVICE, "slow", "slowpw");
	send_request(&d, 2, PAMTEST_SERVICE, "bob", "secret");
	send_request(&d, 3, PAMTEST_SERVICE, "fast", "fastpw");
	assert_true(read_reply(&d, &r));
	assert_int_equal(r.id, 3);
	assert_int_equal(r.result, AUTH_RESULT_TEMPFAIL);
	assert_string_equal(r.reason, "auth helper busy");
	assert_true(read_reply(&d, &r));
	assert_int_equal(r.id, 1);
	assert_int_equal(r.result, AUTH_RESULT_OK);
	assert_true(read_reply(&d, &r));
	assert_int_equal(r.id, 2);
	assert_int_equal(r.result, AUTH_RESULT_OK);
	close(d.fd);
	d.fd = -1;
	int status = 0;
	assert_int_equal(waitpid(d.pid, &status, 0), d.pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	auth_pamtest_cleanup(&d.t);
}

/* A PAM stack slower than the worker's time limit: the worker is killed, TEMPFAIL. */
static void test_dispatcher_worker_timeout(void **state)
{
	struct dispatcher d;
	struct auth_wire_reply r;
	dispatcher_start_limit(&d, 2, 4, 1);
	send_request(&d, 5, PAMTEST_SERVICE, "slow", "slowpw");
	assert_true(read_reply(&d, &r));
	assert_int_equal(r.id, 5);
	assert_int_equal(r.result, AUTH_RESULT_TEMPFAIL);
	assert_string_equal(r.reason, "PAM timed out after 1s");
	shutdown(d.fd, SHUT_WR);
	assert_false(read_reply(&d, &r));
	assert_int_equal(dispatcher_wait(&d), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conv_answers),
		cmocka_unit_test(test_conv_refuses),
		cmocka_unit_test(test_result_map),
		cmocka_unit_test(test_dispatcher_replies),
		cmocka_unit_test(test_dispatcher_malformed),
		cmocka_unit_test(test_dispatcher_queue_bound),
		cmocka_unit_test(test_dispatcher_worker_timeout),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
