/* Logins through the real helper processes and real PAM: pam_matrix with a generated passdb
 * (pam_start_confdir; or pam_wrapper with plain pam_start when MK_USE_PAM_WRAPPER=1), the
 * slow/expiring test module, helper death, the loop never blocked, throttling, cancel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "auth_pamtest.h"

struct fixture {
	struct auth_pamtest t; /* per test; or a copy of wrap_dir under pam_wrapper */
	uv_loop_t loop;
	struct auth_service *svc;
};

static bool use_pam_wrapper(void)
{
	const char *e = getenv("MK_USE_PAM_WRAPPER");
	return e != NULL && strcmp(e, "1") == 0;
}

static void fixture_start(struct fixture *f)
{
	assert_int_equal(auth_service_start(&f->t.cfg, &f->svc), 0);
	assert_int_equal(auth_service_attach(f->svc, &f->loop), 0);
}

/* Under pam_wrapper one directory serves the whole run (pam_wrapper copies it when it sets
 * itself up, on a process's first pam_start: the dispatcher's probe). */
static struct auth_pamtest wrap_dir;

static int group_setup(void **state)
{
	if (!use_pam_wrapper())
		return 0;
	auth_pamtest_init(&wrap_dir);
	setenv("PAM_WRAPPER_SERVICE_DIR", wrap_dir.confdir, 1);
	return 0;
}

static int group_teardown(void **state)
{
	if (use_pam_wrapper())
		auth_pamtest_cleanup(&wrap_dir);
	return 0;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (use_pam_wrapper()) {
		/* the service file is found through PAM_WRAPPER_SERVICE_DIR; plain pam_start */
		f->t = wrap_dir;
		f->t.cfg.pam_confdir = NULL;
	} else {
		auth_pamtest_init(&f->t);
	}
	assert_int_equal(uv_loop_init(&f->loop), 0);
	fixture_start(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	auth_service_free(&f->svc);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	if (!use_pam_wrapper())
		auth_pamtest_cleanup(&f->t);
	free(f);
	return 0;
}

static void login_wait(struct fixture *f, struct pamtest_login *l, const char *user,
		       const char *password)
{
	pamtest_login(f->svc, l, user, password, "192.0.2.1");
	assert_non_null(l->req);
	assert_false(l->finished); /* never called from inside auth_request_start */
	assert_true(pamtest_run_until(&f->loop, &l->finished, 10000));
	assert_int_equal(l->calls, 1);
}

static void test_good_password(void **state)
{
	struct fixture *f = *state;
	struct pamtest_login l;
	login_wait(f, &l, "bob", "secret");
	assert_int_equal(l.result, AUTH_RESULT_OK);
	assert_string_equal(l.user, "bob");
	assert_string_equal(l.reason, "");
}

static void test_bad_password(void **state)
{
	struct fixture *f = *state;
	struct pamtest_login l;
	login_wait(f, &l, "bob", "wrong");
	assert_int_equal(l.result, AUTH_RESULT_PERMFAIL);
	assert_string_equal(l.user, "");
	assert_string_equal(l.reason, "pam_authenticate: Authentication failure");
}

static void test_unknown_user(void **state)
{
	struct fixture *f = *state;
	struct pamtest_login l;
	login_wait(f, &l, "nosuchuser", "secret");
	assert_int_equal(l.result, AUTH_RESULT_PERMFAIL);
	assert_true(strncmp(l.reason, "pam_authenticate: ", 18) == 0);
}

/* gone's password is right, but pam_matrix's account check refuses the service. */
static void test_account_refused(void **state)
{
	struct fixture *f = *state;
	struct pamtest_login l;
	login_wait(f, &l, "gone", "gonepw");
	assert_int_equal(l.result, AUTH_RESULT_PERMFAIL);
	assert_true(strncmp(l.reason, "pam_acct_mgmt: ", 15) == 0);
	/* and a wrong password for gone fails earlier */
	login_wait(f, &l, "gone", "x");
	assert_true(strncmp(l.reason, "pam_authenticate: ", 18) == 0);
}

static void test_account_expired(void **state)
{
	struct fixture *f = *state;
	struct pamtest_login l;
	login_wait(f, &l, "old", "oldpw");
	assert_int_equal(l.result, AUTH_RESULT_EXPIRED);
	assert_string_equal(l.reason, "pam_acct_mgmt: User account has expired");
}

/* The canonical name is PAM_USER after the stack ran, not what the client typed. */
static void test_canonical_user(void **state)
{
	struct fixture *f = *state;
	struct pamtest_login l;
	login_wait(f, &l, "BOB", "secret");
	assert_int_equal(l.result, AUTH_RESULT_OK);
	assert_string_equal(l.user, "bob");
}

/* Oversized fields never reach the helper. */
static void test_oversized_input(void **state)
{
	struct fixture *f = *state;
	struct pamtest_login l;
	char big[AUTH_WIRE_MAX_PASSWORD + 2];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	login_wait(f, &l, "bob", big);
	assert_int_equal(l.result, AUTH_RESULT_PERMFAIL);
	assert_string_equal(l.reason, "password too long");
	big[AUTH_WIRE_MAX_USER + 1] = '\0';
	login_wait(f, &l, big, "secret");
	assert_string_equal(l.reason, "user name too long");
	login_wait(f, &l, "", "secret");
	assert_string_equal(l.reason, "empty user name");
}

struct tick {
	bool fired;
	uint64_t at;
};

static void tick_cb(uv_timer_t *t)
{
	struct tick *k = t->data;
	k->fired = true;
	k->at = pamtest_now_ms();
}

/* While slow sits 2 s in its PAM module, a loop timer and a second login complete at once,
 * and the slow login still succeeds afterwards. */
static void test_slow_login_blocks_nothing(void **state)
{
	struct fixture *f = *state;
	struct pamtest_login slow, fast;
	struct tick k = {0};
	uv_timer_t t;

	uint64_t t0 = pamtest_now_ms();
	pamtest_login(f->svc, &slow, "slow", "slowpw", "192.0.2.10");
	uv_timer_init(&f->loop, &t);
	t.data = &k;
	uv_timer_start(&t, tick_cb, 20, 0);
	pamtest_login(f->svc, &fast, "fast", "fastpw", "192.0.2.11");

	assert_true(pamtest_run_until(&f->loop, &fast.finished, 10000));
	assert_int_equal(fast.result, AUTH_RESULT_OK);
	assert_false(slow.finished);
	assert_true(pamtest_run_until(&f->loop, &k.fired, 1000));
	assert_false(slow.finished);
	/* both well before the slow PAM stack returns */
	assert_true(fast.done_ms - t0 < PAMTEST_SLOW_MS / 2);
	assert_true(k.at - t0 < PAMTEST_SLOW_MS / 2);
	printf("# fast login %llu ms, 20 ms timer fired after %llu ms, while slow is in PAM\n",
	       (unsigned long long)(fast.done_ms - t0), (unsigned long long)(k.at - t0));

	assert_true(pamtest_run_until(&f->loop, &slow.finished, 10000));
	assert_int_equal(slow.result, AUTH_RESULT_OK);
	assert_string_equal(slow.user, "slow");
	assert_true(slow.done_ms - t0 >= PAMTEST_SLOW_MS);
	pamtest_close(&f->loop, (uv_handle_t *)&t);
}

struct fs_wait {
	char want[64];
	bool seen;
};

static void fs_cb(uv_fs_event_t *h, const char *filename, int events, int status)
{
	struct fs_wait *w = h->data;
	if (filename != NULL && strcmp(filename, w->want) == 0)
		w->seen = true;
}

/* The dispatcher is killed while a login sits in PAM: that login gets TEMPFAIL (never OK),
 * a new dispatcher comes up, and the next login works. */
static void test_helper_killed_mid_request(void **state)
{
	struct fixture *f = *state;
	struct fs_wait w = {.want = "slow"};
	char mark[700];
	snprintf(mark, sizeof(mark), "%s/slow", f->t.markdir);
	unlink(mark);
	uv_fs_event_t ev;
	uv_fs_event_init(&f->loop, &ev);
	ev.data = &w;
	assert_int_equal(uv_fs_event_start(&ev, fs_cb, f->t.markdir, 0), 0);

	pid_t old = auth_service_helper_pid(f->svc);
	assert_true(old > 0);
	struct pamtest_login slow, next;
	pamtest_login(f->svc, &slow, "slow", "slowpw", "192.0.2.20");
	/* wait until the login is inside the PAM module */
	assert_true(pamtest_run_until(&f->loop, &w.seen, 10000));
	assert_false(slow.finished);
	assert_int_equal(kill(old, SIGKILL), 0);
	assert_true(pamtest_run_until(&f->loop, &slow.finished, 5000));
	assert_int_equal(slow.result, AUTH_RESULT_TEMPFAIL);
	assert_string_equal(slow.reason, "auth helper died");
	assert_true(slow.done_ms - slow.start_ms < PAMTEST_SLOW_MS);

	/* the next login waits for the restarted helper and succeeds */
	login_wait(f, &next, "bob", "secret");
	assert_int_equal(next.result, AUTH_RESULT_OK);
	pid_t now = auth_service_helper_pid(f->svc);
	assert_true(now > 0 && now != old);
	pamtest_close(&f->loop, (uv_handle_t *)&ev);
}

/* Failed logins are delayed per address, doubling, capped; other addresses are not; a success
 * resets. */
static void test_throttle(void **state)
{
	struct fixture *f = *state;
	/* a service with delays: 100 ms doubling up to 400 ms */
	auth_service_free(&f->svc);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	f->t.cfg.auth_fail_delay_ms = 100;
	f->t.cfg.auth_fail_delay_max_ms = 400;
	fixture_start(f);

	static const uint64_t expect[] = {100, 200, 400, 400};
	struct pamtest_login l;
	for (int i = 0; i < 4; i++) {
		assert_int_equal(auth_service_fail_delay_ms(f->svc, "192.0.2.1"), expect[i]);
		login_wait(f, &l, "bob", "wrong");
		assert_int_equal(l.result, AUTH_RESULT_PERMFAIL);
		assert_true(l.done_ms - l.start_ms >= expect[i]);
	}
	/* the address that failed 4 times waits 400 ms; another one only 100 ms */
	assert_int_equal(auth_service_fail_delay_ms(f->svc, "192.0.2.1"), 400);
	assert_int_equal(auth_service_fail_delay_ms(f->svc, "198.51.100.1"), 100);
	struct pamtest_login other;
	pamtest_login(f->svc, &other, "bob", "wrong", "198.51.100.1");
	assert_true(pamtest_run_until(&f->loop, &other.finished, 5000));
	uint64_t other_ms = other.done_ms - other.start_ms;
	assert_true(other_ms >= 100 && other_ms < 400);
	/* a success is not delayed and resets the address */
	login_wait(f, &l, "bob", "secret");
	assert_int_equal(l.result, AUTH_RESULT_OK);
	assert_true(l.done_ms - l.start_ms < 100 + 1000);
	assert_int_equal(auth_service_fail_delay_ms(f->svc, "192.0.2.1"), 100);
}

static bool delay_grew(void *arg)
{
	struct fixture *f = arg;
	return auth_service_fail_delay_ms(f->svc, "203.0.113.5") > 100;
}

/* A cancelled login never calls back, but its failure still counts for the address. */
static void test_cancel(void **state)
{
	struct fixture *f = *state;
	auth_service_free(&f->svc);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	f->t.cfg.auth_fail_delay_ms = 100;
	f->t.cfg.auth_fail_delay_max_ms = 1000;
	fixture_start(f);

	struct pamtest_login l;
	pamtest_login(f->svc, &l, "bob", "wrong", "203.0.113.5");
	auth_request_cancel(&l.req);
	assert_null(l.req);
	assert_true(pamtest_run_until_pred(&f->loop, delay_grew, f, 5000));
	/* and its (cancelled) delay timer never calls back either */
	struct pamtest_login probe;
	login_wait(f, &probe, "bob", "secret");
	assert_int_equal(l.calls, 0);

	/* cancelling during the failure delay */
	pamtest_login(f->svc, &l, "bob", "wrong", "203.0.113.6");
	assert_true(pamtest_run_until_pred(&f->loop, delay_grew, f, 5000));
	auth_request_cancel(&l.req);
	login_wait(f, &probe, "bob", "secret");
	assert_int_equal(l.calls, 0);
}

/* A PAM stack that cannot work (passdb missing) is a temporary failure. */
static void test_pam_unavailable(void **state)
{
	struct fixture *f = *state;
	auth_service_free(&f->svc);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	auth_pamtest_add_broken_service(&f->t, "mailkeep-broken");
	f->t.cfg.pam_service = (char *)"mailkeep-broken";
	fixture_start(f);
	struct pamtest_login l;
	login_wait(f, &l, "bob", "secret");
	assert_int_equal(l.result, AUTH_RESULT_TEMPFAIL);
	assert_true(strncmp(l.reason, "pam_authenticate: ", 18) == 0);
	f->t.cfg.pam_service = (char *)PAMTEST_SERVICE;
}

/* Many logins at once, more than workers: all answered, each with its own result. */
static void test_many_concurrent(void **state)
{
	struct fixture *f = *state;
	enum { N = 24 };
	struct pamtest_login l[N];
	for (int i = 0; i < N; i++)
		pamtest_login(f->svc, &l[i], i % 3 == 0 ? "fast" : "bob",
			      i % 2 == 0 ? (i % 3 == 0 ? "fastpw" : "secret") : "bad",
			      "192.0.2.30");
	for (int i = 0; i < N; i++) {
		assert_true(pamtest_run_until(&f->loop, &l[i].finished, 20000));
		assert_int_equal(l[i].result, i % 2 == 0 ? AUTH_RESULT_OK : AUTH_RESULT_PERMFAIL);
		if (i % 2 == 0)
			assert_string_equal(l[i].user, i % 3 == 0 ? "fast" : "bob");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_good_password, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_password, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_user, setup, teardown),
		cmocka_unit_test_setup_teardown(test_account_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_account_expired, setup, teardown),
		cmocka_unit_test_setup_teardown(test_canonical_user, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_login_blocks_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_helper_killed_mid_request, setup, teardown),
		cmocka_unit_test_setup_teardown(test_throttle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pam_unavailable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_concurrent, setup, teardown),
	};
	/* Under pam_wrapper: the PAM-facing cases (the loop-side ones do not depend on how PAM
	 * is entered). */
	const struct CMUnitTest wrapped[] = {
		cmocka_unit_test_setup_teardown(test_good_password, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_password, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_user, setup, teardown),
		cmocka_unit_test_setup_teardown(test_account_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_account_expired, setup, teardown),
		cmocka_unit_test_setup_teardown(test_canonical_user, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_login_blocks_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_helper_killed_mid_request, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_concurrent, setup, teardown),
	};
	if (use_pam_wrapper())
		return cmocka_run_group_tests_name("pam_wrapper", wrapped, group_setup,
						   group_teardown);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
