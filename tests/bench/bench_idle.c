/* bench_idle — the server's memory per idle connection, plain and TLS.
 *
 *   bench_idle [N]      (default 1000; needs MK_TESTD or runs build/tests/mk-testd)
 *
 * Starts the daemon with the test protocol (the connection layer alone: no protocol or store
 * state), opens N connections that complete their greeting (and TLS handshake), and reports
 * the daemon's VmRSS before and after, and the difference per connection. Prints figures;
 * never fails on them. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "testtls.h"
#include "testutil.h"

static void measure(const char *label, bool tls, int n)
{
	struct testd t;
	unsigned port = test_free_port();
	char dir[256], cfg[1024], fp[65];
	test_tmpdir(dir, sizeof(dir));
	if (tls) {
		char cert[300], key[300];
		snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
		snprintf(key, sizeof(key), "%s/key.pem", dir);
		test_make_cert(cert, key, "bench.test", fp);
	}
	snprintf(cfg, sizeof(cfg),
		 "[server]\nlog_level = info\nmax_connections_per_address = 100000\n"
		 "max_connections = 100000\n"
		 "[tls]\ncert = %%DIR%%/cert.pem\nkey = %%DIR%%/key.pem\n"
		 "[listener b]\nprotocol = test\naddress = 127.0.0.1\nport = %u\ntls = %s\n",
		 port, tls ? "implicit" : "none");
	if (!tls) /* no certificate was made: drop the [tls] lines */
		snprintf(cfg, sizeof(cfg),
			 "[server]\nlog_level = info\nmax_connections_per_address = 100000\n"
			 "max_connections = 100000\n"
			 "[listener b]\nprotocol = test\naddress = 127.0.0.1\nport = %u\n",
			 port);
	testd_start_in(&t, NULL, dir, cfg);
	/* one connection first, so one-time allocations (GnuTLS, the loop) are in the baseline */
	int warm = test_connect(port);
	struct test_tls *wt = tls ? test_tls_start(warm, 10000) : NULL;
	char line[256];
	if (tls)
		test_tls_read_line(wt, line, sizeof(line));
	else
		test_read_line(warm, line, sizeof(line), 10000);
	size_t before = testd_rss(&t);
	int *fds = calloc((size_t)n, sizeof(int));
	struct test_tls **ts = calloc((size_t)n, sizeof(*ts));
	for (int i = 0; i < n; i++) {
		fds[i] = test_connect(port);
		if (tls) {
			ts[i] = test_tls_start(fds[i], 10000);
			if (!ts[i] || test_tls_read_line(ts[i], line, sizeof(line)) <= 0) {
				fprintf(stderr, "connection %d failed\n", i);
				exit(1);
			}
		} else if (test_read_line(fds[i], line, sizeof(line), 10000) <= 0) {
			fprintf(stderr, "connection %d failed\n", i);
			exit(1);
		}
	}
	size_t after = testd_rss(&t);
	printf("%-6s %6d idle connections: server RSS %8.1f KiB -> %8.1f KiB, %7.0f bytes per "
	       "connection\n",
	       label, n, before / 1024.0, after / 1024.0, (double)(after - before) / n);
	for (int i = 0; i < n; i++) {
		test_tls_free(ts[i]);
		close(fds[i]);
	}
	test_tls_free(wt);
	close(warm);
	free(fds);
	free(ts);
	testd_stop(&t);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1000;
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	signal(SIGPIPE, SIG_IGN);
	measure("plain", false, n);
	measure("tls", true, n);
	return 0;
}
