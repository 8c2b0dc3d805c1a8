#include "auth_pamtest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
		perror(path);
		abort();
	}
}

void auth_pamtest_init(struct auth_pamtest *t)
{
	memset(t, 0, sizeof(*t));
	const char *tmp = getenv("TMPDIR");
	snprintf(t->dir, sizeof(t->dir), "%.400s/mk-authtest-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(t->dir) == NULL) {
		perror("mkdtemp");
		abort();
	}
	snprintf(t->confdir, sizeof(t->confdir), "%s/pam.d", t->dir);
	snprintf(t->passdb, sizeof(t->passdb), "%s/passdb", t->dir);
	snprintf(t->markdir, sizeof(t->markdir), "%s/marks", t->dir);
	if (mkdir(t->confdir, 0700) < 0 || mkdir(t->markdir, 0700) < 0) {
		perror("mkdir");
		abort();
	}
	write_file(t->passdb, "bob:secret:" PAMTEST_SERVICE "\n"
			      "fast:fastpw:" PAMTEST_SERVICE "\n"
			      "slow:slowpw:" PAMTEST_SERVICE "\n"
			      "gone:gonepw:some-other-service\n"
			      "old:oldpw:" PAMTEST_SERVICE "\n");
	char text[16384], path[1024];
	snprintf(text, sizeof(text),
		 "auth optional %s slow_user=slow slow_ms=%d mark=%s canon=BOB:bob "
		 "crash_user=crash\n"
		 "auth required %s passdb=%s\n"
		 "account required %s expired_user=old\n"
		 "account required %s passdb=%s\n",
		 MK_PAM_TEST_MODULE, PAMTEST_SLOW_MS, t->markdir, MK_PAM_MATRIX, t->passdb,
		 MK_PAM_TEST_MODULE, MK_PAM_MATRIX, t->passdb);
	snprintf(path, sizeof(path), "%s/%s", t->confdir, PAMTEST_SERVICE);
	write_file(path, text);

	t->cfg.pam_service = (char *)PAMTEST_SERVICE;
	t->cfg.pam_confdir = t->confdir;
	t->cfg.auth_workers = 4;
	t->cfg.auth_fail_delay_ms = 0;
	t->cfg.auth_fail_delay_max_ms = 0;
	t->cfg.auth_max_failures = 5;
	t->cfg.mail_root = (char *)"/var/mail/%u/Maildir";
}

void auth_pamtest_add_broken_service(struct auth_pamtest *t, const char *name)
{
	char text[16384], path[1024];
	snprintf(text, sizeof(text),
		 "auth required %s passdb=%s/no-such-passdb\n"
		 "account required %s passdb=%s/no-such-passdb\n",
		 MK_PAM_MATRIX, t->dir, MK_PAM_MATRIX, t->dir);
	snprintf(path, sizeof(path), "%s/%.200s", t->confdir, name);
	write_file(path, text);
}

void auth_pamtest_cleanup(struct auth_pamtest *t)
{
	char cmd[1024];
	/* only our own mkdtemp directory */
	if (strstr(t->dir, "/mk-authtest-") != NULL) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cleanup of %s failed\n", t->dir);
	}
}

uint64_t pamtest_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void pamtest_done(void *ctx, enum auth_result result, const char *canonical_user,
			 const char *reason)
{
	struct pamtest_login *l = ctx;
	l->calls++;
	l->finished = true;
	l->result = result;
	l->done_ms = pamtest_now_ms();
	snprintf(l->user, sizeof(l->user), "%s", canonical_user ? canonical_user : "");
	snprintf(l->reason, sizeof(l->reason), "%s", reason ? reason : "");
	l->req = NULL;
}

void pamtest_login(struct auth_service *svc, struct pamtest_login *l, const char *user,
		   const char *password, const char *address)
{
	memset(l, 0, sizeof(*l));
	struct auth_request_info info = {
		.protocol = "imap",
		.mechanism = "PLAIN",
		.user = user,
		.password = password,
		.remote_address = address,
		.local_port = 143,
		.tls = true,
		.conn_id = 1,
	};
	l->start_ms = pamtest_now_ms();
	l->req = auth_request_start(svc, &info, pamtest_done, l);
}

static void deadline_cb(uv_timer_t *t)
{
	*(bool *)t->data = true;
}

bool pamtest_run_until_pred(uv_loop_t *loop, bool (*pred)(void *), void *arg, unsigned timeout_ms)
{
	bool expired = false;
	uv_timer_t deadline;
	uv_timer_init(loop, &deadline);
	deadline.data = &expired;
	uv_timer_start(&deadline, deadline_cb, timeout_ms, 0);
	while (!pred(arg) && !expired)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&deadline, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return pred(arg);
}

static bool flag_pred(void *arg)
{
	return *(const bool *)arg;
}

bool pamtest_run_until(uv_loop_t *loop, const bool *flag, unsigned timeout_ms)
{
	return pamtest_run_until_pred(loop, flag_pred, (void *)flag, timeout_ms);
}

static void closed_cb(uv_handle_t *h)
{
	*(bool *)h->data = true;
}

void pamtest_close(uv_loop_t *loop, uv_handle_t *h)
{
	bool closed = false;
	h->data = &closed;
	uv_close(h, closed_cb);
	while (!closed)
		uv_run(loop, UV_RUN_NOWAIT);
}
