/* bench_auth — figures for the auth helper, through pam_matrix (pam_start_confdir):
 *   1. PAM alone in this process (auth_pam_check), per login;
 *   2. one login at a time through the helper (loop -> dispatcher -> worker -> PAM -> back);
 *      the difference with (1) is the helper round trip's added latency;
 *   3. logins per second with CONCURRENT requests kept in flight.
 * Usage: bench_auth [logins] [concurrent]   (defaults 500 and 4). Prints, never fails on time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "auth_pam.h"
#include "auth_pamtest.h"
#include "log.h"

struct bench {
	struct auth_service *svc;
	unsigned started, finished, ok, target, concurrent;
};

static void bench_start_one(struct bench *b);

static void bench_done(void *ctx, enum auth_result result, const char *user, const char *reason)
{
	struct bench *b = ctx;
	b->finished++;
	if (result == AUTH_RESULT_OK)
		b->ok++;
	if (b->started < b->target)
		bench_start_one(b);
}

static void bench_start_one(struct bench *b)
{
	struct auth_request_info info = {.protocol = "imap",
					 .mechanism = "PLAIN",
					 .user = "bob",
					 .password = "secret",
					 .remote_address = "127.0.0.1",
					 .local_port = 143,
					 .conn_id = b->started};
	b->started++;
	if (auth_request_start(b->svc, &info, bench_done, b) == NULL) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
}

static bool all_done(void *arg)
{
	struct bench *b = arg;
	return b->finished == b->target;
}

/* Run target logins with concurrent in flight; returns elapsed ms. */
static uint64_t bench_run(uv_loop_t *loop, struct bench *b, unsigned target, unsigned concurrent)
{
	b->started = b->finished = b->ok = 0;
	b->target = target;
	b->concurrent = concurrent;
	uint64_t t0 = pamtest_now_ms();
	for (unsigned i = 0; i < concurrent && b->started < target; i++)
		bench_start_one(b);
	if (!pamtest_run_until_pred(loop, all_done, b, 600000)) {
		fprintf(stderr, "bench did not finish\n");
		exit(1);
	}
	if (b->ok != target) {
		fprintf(stderr, "only %u of %u logins succeeded\n", b->ok, target);
		exit(1);
	}
	return pamtest_now_ms() - t0;
}

int main(int argc, char **argv)
{
	unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 500;
	unsigned conc = argc > 2 ? (unsigned)atoi(argv[2]) : 4;
	struct auth_pamtest t;
	auth_pamtest_init(&t);
	t.cfg.auth_workers = conc;
	log_set_level(LOG_LEVEL_WARN); /* one log line per login would measure the log */

	/* 1. PAM alone, in this process */
	struct auth_wire_request req = {.id = 1};
	snprintf(req.service, sizeof(req.service), "%s", PAMTEST_SERVICE);
	snprintf(req.user, sizeof(req.user), "bob");
	snprintf(req.password, sizeof(req.password), "secret");
	snprintf(req.address, sizeof(req.address), "127.0.0.1");
	char canon[AUTH_WIRE_MAX_USER + 1], reason[AUTH_WIRE_MAX_REASON + 1];
	uint64_t t0 = pamtest_now_ms();
	for (unsigned i = 0; i < n; i++) {
		if (auth_pam_check(&req, t.confdir, canon, reason) != AUTH_RESULT_OK) {
			fprintf(stderr, "direct PAM failed: %s\n", reason);
			return 1;
		}
	}
	double direct = (double)(pamtest_now_ms() - t0) / n;

	uv_loop_t loop;
	uv_loop_init(&loop);
	struct bench b = {0};
	if (auth_service_start(&t.cfg, &b.svc) != 0 || auth_service_attach(b.svc, &loop) != 0) {
		fprintf(stderr, "cannot start the auth service\n");
		return 1;
	}
	bench_run(&loop, &b, 20, 1); /* warm-up */

	/* 2. one at a time through the helper */
	uint64_t serial_ms = bench_run(&loop, &b, n, 1);
	double serial = (double)serial_ms / n;

	/* 3. concurrent */
	uint64_t conc_ms = bench_run(&loop, &b, n, conc);

	printf("auth bench: %u logins via pam_matrix, %u workers\n", n, conc);
	printf("  PAM in-process (auth_pam_check):   %.3f ms/login\n", direct);
	printf("  through the helper, 1 at a time:   %.3f ms/login\n", serial);
	printf("  added helper round trip:           %.3f ms/login\n", serial - direct);
	printf("  through the helper, %u in flight:   %.0f logins/s (%u in %llu ms)\n", conc,
	       conc_ms ? n * 1000.0 / (double)conc_ms : 0.0, n, (unsigned long long)conc_ms);

	auth_service_free(&b.svc);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	auth_pamtest_cleanup(&t);
	return 0;
}
