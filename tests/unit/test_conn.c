/* The connection layer through the real daemon (mk-testd, serving tests/support/testproto)
 * over loopback sockets: lines, limits, back-pressure, idle timeout, per-address limit,
 * graceful SIGTERM, file streaming, implicit TLS, STARTTLS, certificate reload, garbage
 * instead of a ClientHello. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <poll.h>
#include <zlib.h>

#include "testtls.h"
#include "testutil.h"

#define T_MS 10000 /* bound for every wait */

static void expect_line(int fd, const char *want)
{
	char line[4096];
	ssize_t n = test_read_line(fd, line, sizeof(line), T_MS);
	if (n < 0)
		fail_msg("timeout waiting for '%s'", want);
	assert_string_equal(line, want);
}

static void expect_tls_line(struct test_tls *t, const char *want)
{
	char line[4096];
	ssize_t n = test_tls_read_line(t, line, sizeof(line));
	if (n < 0)
		fail_msg("TLS read failed waiting for '%s'", want);
	assert_string_equal(line, want);
}

/* The first log line containing needle (a copy that lives until the next call). */
static const char *log_text_of(struct testd *t, const char *needle)
{
	static char line[1024];
	char path[512];
	snprintf(path, sizeof(path), "%s/daemon.log", t->dir);
	FILE *f = fopen(path, "r");
	line[0] = '\0';
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, needle))
			break;
	if (f)
		fclose(f);
	return line;
}

static void start_plain(struct testd *t, unsigned port, const char *extra_server,
			const char *extra_listener)
{
	char cfg[2048];
	snprintf(cfg, sizeof(cfg),
		 "[server]\nmail_root = %%DIR%%/mail\nshutdown_timeout = 5\n%s\n"
		 "[listener t]\nprotocol = test\naddress = 127.0.0.1\nport = %u\n%s\n",
		 extra_server, port, extra_listener);
	testd_start(t, NULL, cfg);
}

static void test_lines_and_pipelining(void **state)
{
	struct testd t;
	unsigned port = test_free_port();
	start_plain(&t, port, "", "");
	int fd = test_connect(port);
	expect_line(fd, "+HELLO\r\n");
	/* CRLF and bare LF, several commands in one write, answered in order */
	test_send(fd, "ECHO one\r\nECHO two\nECHO three\r\n");
	expect_line(fd, "one\r\n");
	expect_line(fd, "two\r\n");
	expect_line(fd, "three\r\n");
	/* a line split over several writes */
	test_send(fd, "EC");
	test_send(fd, "HO fo");
	test_send(fd, "ur\r");
	test_send(fd, "\n");
	expect_line(fd, "four\r\n");
	test_send(fd, "QUIT\r\n");
	expect_line(fd, "+BYE\r\n");
	assert_true(test_wait_eof(fd, T_MS));
	close(fd);
	testd_stop(&t);
}

static void test_line_too_long(void **state)
{
	struct testd t;
	unsigned port = test_free_port();
	start_plain(&t, port, "", "max_line = 100\n");
	int fd = test_connect(port);
	expect_line(fd, "+HELLO\r\n");
	char line[200];
	memset(line, 'x', sizeof(line));
	memcpy(line, "ECHO ", 5);
	line[100] = '\r';
	line[101] = '\n';
	line[102] = '\0';
	/* exactly 100 bytes: accepted */
	test_send(fd, line);
	char want[200];
	snprintf(want, sizeof(want), "%.95s\r\n", line + 5);
	expect_line(fd, want);
	/* 101 bytes: refused and closed, the server goes on */
	line[100] = 'x';
	line[101] = '\r';
	line[102] = '\n';
	line[103] = '\0';
	test_send(fd, line);
	expect_line(fd, "-ERR line too long\r\n");
	assert_true(test_wait_eof(fd, T_MS));
	close(fd);
	assert_true(testd_wait_log(&t, "event=line_too_long max=100", 1, T_MS));
	fd = test_connect(port);
	expect_line(fd, "+HELLO\r\n");
	close(fd);
	testd_stop(&t);
}

static void test_bad_commands(void **state)
{
	struct testd t;
	unsigned port = test_free_port();
	start_plain(&t, port, "", "max_bad_commands = 3\n");
	int fd = test_connect(port);
	expect_line(fd, "+HELLO\r\n");
	test_send(fd, "NOPE\r\nNOPE\r\nNOPE\r\nECHO never\r\n");
	expect_line(fd, "-ERR unknown command\r\n");
	expect_line(fd, "-ERR unknown command\r\n");
	expect_line(fd, "-ERR unknown command\r\n");
	expect_line(fd, "-ERR too many bad commands\r\n");
	assert_true(test_wait_eof(fd, T_MS));
	close(fd);
	testd_stop(&t);
}

/* A client that never reads: the server stops producing at the high watermark, and its memory
 * does not grow with the size of the reply. Then the client reads all of it, intact. */
static void test_back_pressure(void **state)
{
	struct testd t;
	unsigned port = test_free_port();
	start_plain(&t, port, "output_high_watermark = 128K\noutput_low_watermark = 32K\n", "");
	int fd = test_connect(port);
	int small = 64 * 1024;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	expect_line(fd, "+HELLO\r\n");
	size_t rss_before = testd_rss(&t);
	const size_t total = 64u * 1024 * 1024;
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "BIG %zu\r\n", total);
	test_send(fd, cmd);
	/* The protocol logs each time it finds output blocked; wait for the first. */
	assert_true(testd_wait_log(&t, "event=test_blocked", 1, T_MS));
	size_t rss_blocked = testd_rss(&t);
	long grow = (long)rss_blocked - (long)rss_before;
	printf("back-pressure: RSS %zu -> %zu bytes (%+ld) with a %zu-byte reply unread\n",
	       rss_before, rss_blocked, grow, total);
	/* What the server held when it stopped producing: at most the watermark (128K) plus one
	 * corked TLS-record-sized write (16K) plus the protocol's last 4K chunk. */
	char *queued = strstr(log_text_of(&t, "event=test_blocked"), "queued=");
	assert_non_null(queued);
	assert_true(strtoul(queued + 7, NULL, 10) <= 128 * 1024 + 16384 + 4096);
#if !defined(__SANITIZE_ADDRESS__)
	/* and the process as a whole (not under ASan, whose quarantine keeps freed memory) */
	assert_true(grow < 1024 * 1024);
#endif
	/* now read it all and check every byte */
	static const char pattern[] =
		"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
	char *buf = malloc(1 << 20);
	size_t got = 0;
	while (got < total) {
		size_t want = total - got < (1 << 20) ? total - got : (1 << 20);
		size_t n = test_read_exact(fd, buf, want, T_MS);
		assert_int_equal(n, want);
		for (size_t i = 0; i < n; i++)
			if (buf[i] != pattern[(got + i) % 62])
				fail_msg("byte %zu differs", got + i);
		got += n;
	}
	free(buf);
	expect_line(fd, "\r\n");
	expect_line(fd, ".\r\n");
	unsigned blocks = testd_count_log(&t, "event=test_blocked");
	printf("back-pressure: output blocked %u times over %zu bytes\n", blocks, total);
	assert_true(blocks > 1);
	/* the connection still works */
	test_send(fd, "ECHO after\r\n");
	expect_line(fd, "after\r\n");
	close(fd);
	testd_stop(&t);
}

static void test_idle_timeout(void **state)
{
	struct testd t;
	unsigned port = test_free_port();
	start_plain(&t, port, "", "idle_timeout = 1\n");
	int fd = test_connect(port);
	expect_line(fd, "+HELLO\r\n");
	expect_line(fd, "-ERR idle timeout\r\n");
	assert_true(test_wait_eof(fd, T_MS));
	close(fd);
	assert_true(testd_wait_log(&t, "reason=\"idle timeout\"", 1, T_MS));
	testd_stop(&t);
}

static void test_per_address_limit(void **state)
{
	struct testd t;
	unsigned port = test_free_port();
	start_plain(&t, port, "max_connections_per_address = 3\n", "");
	int fds[3];
	for (int i = 0; i < 3; i++) {
		fds[i] = test_connect(port);
		expect_line(fds[i], "+HELLO\r\n");
	}
	int extra = test_connect(port);
	expect_line(extra, "-ERR too many connections\r\n");
	assert_true(test_wait_eof(extra, T_MS));
	close(extra);
	assert_true(testd_wait_log(&t, "reason=max_connections_per_address limit=3", 1, T_MS));
	/* the others are untouched */
	test_send(fds[0], "ECHO still\r\n");
	expect_line(fds[0], "still\r\n");
	/* one leaves, a new one is welcome */
	test_send(fds[1], "QUIT\r\n");
	expect_line(fds[1], "+BYE\r\n");
	assert_true(test_wait_eof(fds[1], T_MS));
	close(fds[1]);
	assert_true(testd_wait_log(&t, "event=close", 2, T_MS));
	int again = test_connect(port);
	expect_line(again, "+HELLO\r\n");
	close(again);
	close(fds[0]);
	close(fds[2]);
	testd_stop(&t);
}

static void test_total_limit(void **state)
{
	struct testd t;
	unsigned port = test_free_port();
	start_plain(&t, port, "max_connections = 2\n", "");
	int a = test_connect(port), b = test_connect(port);
	expect_line(a, "+HELLO\r\n");
	expect_line(b, "+HELLO\r\n");
	int c = test_connect(port);
	expect_line(c, "-ERR too many connections\r\n");
	assert_true(test_wait_eof(c, T_MS));
	assert_true(testd_wait_log(&t, "reason=max_connections limit=2", 1, T_MS));
	close(a);
	close(b);
	close(c);
	testd_stop(&t);
}

static void test_graceful_sigterm(void **state)
{
	struct testd t;
	unsigned port = test_free_port();
	start_plain(&t, port, "", "");
	int a = test_connect(port), b = test_connect(port);
	expect_line(a, "+HELLO\r\n");
	expect_line(b, "+HELLO\r\n");
	testd_signal(&t, SIGTERM);
	expect_line(a, "-ERR server shutting down\r\n");
	expect_line(b, "-ERR server shutting down\r\n");
	assert_true(test_wait_eof(a, T_MS));
	assert_true(test_wait_eof(b, T_MS));
	assert_int_equal(testd_wait_exit(&t, T_MS), 0);
	assert_true(testd_wait_log(&t, "event=stopped", 1, T_MS));
	close(a);
	close(b);
	testd_stop(&t);
}

/* A listener on IPv4 and IPv6 loopback; the per-address count keeps the families apart. */
static void test_ipv6_listener(void **state)
{
	int probe = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	if (probe < 0 || bind(probe, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (probe >= 0)
			close(probe);
		skip(); /* no IPv6 loopback on this machine */
	}
	close(probe);
	struct testd t;
	unsigned port = test_free_port();
	char cfg[512];
	snprintf(cfg, sizeof(cfg),
		 "[server]\nmax_connections_per_address = 1\n"
		 "[listener t]\nprotocol = test\naddress = 127.0.0.1, ::1\nport = %u\n",
		 port);
	testd_start(&t, NULL, cfg);
	int v4 = test_connect(port);
	expect_line(v4, "+HELLO\r\n");
	int v6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sa.sin6_port = htons((uint16_t)port);
	assert_int_equal(connect(v6, (struct sockaddr *)&sa, sizeof(sa)), 0);
	expect_line(v6, "+HELLO\r\n");
	assert_true(testd_wait_log(&t, "peer=::1", 1, T_MS));
	close(v4);
	close(v6);
	testd_stop(&t);
}

static void test_stream_file(void **state)
{
	struct testd t;
	unsigned port = test_free_port();
	start_plain(&t, port, "", "");
	char path[400];
	snprintf(path, sizeof(path), "%s/blob", t.dir);
	size_t size = 5 * 1024 * 1024 + 123;
	char *data = malloc(size);
	for (size_t i = 0; i < size; i++)
		data[i] = (char)(i * 7 + (i >> 9));
	test_write_file(path, data, size);
	int fd = test_connect(port);
	expect_line(fd, "+HELLO\r\n");
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "FILE %s\r\nECHO next\r\n", path);
	test_send(fd, cmd);
	char *got = malloc(size);
	assert_int_equal(test_read_exact(fd, got, size, T_MS), size);
	assert_memory_equal(got, data, size);
	expect_line(fd, ".\r\n");
	expect_line(fd, "next\r\n"); /* input waited for the stream to end */
	free(got);
	free(data);
	close(fd);
	testd_stop(&t);
}

static void start_tls(struct testd *t, unsigned port_implicit, unsigned port_starttls, char *fp)
{
	char dir[256], cert[300], key[300], cfg[2048];
	test_tmpdir(dir, sizeof(dir));
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	test_make_cert(cert, key, "first.test", fp);
	snprintf(cfg, sizeof(cfg),
		 "[tls]\ncert = %%DIR%%/cert.pem\nkey = %%DIR%%/key.pem\nhandshake_timeout = 2\n"
		 "[listener tls]\nprotocol = test\naddress = 127.0.0.1\nport = %u\n"
		 "tls = implicit\n"
		 "[listener starttls]\nprotocol = test\naddress = 127.0.0.1\nport = %u\n"
		 "tls = starttls\n",
		 port_implicit, port_starttls);
	testd_start_in(t, NULL, dir, cfg);
}

static void test_tls_implicit_and_starttls(void **state)
{
	struct testd t;
	unsigned pi = test_free_port(), ps = test_free_port();
	char fp[65], got[65];
	start_tls(&t, pi, ps, fp);

	int fd = test_connect(pi);
	struct test_tls *tls = test_tls_start(fd, T_MS);
	assert_non_null(tls);
	test_tls_fingerprint(tls, got);
	assert_string_equal(got, fp);
	expect_tls_line(tls, "+HELLO\r\n"); /* the greeting comes after the handshake */
	test_tls_send(tls, "TLS\r\nECHO secret\r\n");
	expect_tls_line(tls, "tls=yes\r\n");
	expect_tls_line(tls, "secret\r\n");
	test_tls_send(tls, "QUIT\r\n");
	expect_tls_line(tls, "+BYE\r\n");
	char line[64];
	assert_int_equal(test_tls_read_line(tls, line, sizeof(line)), 0); /* close_notify */
	test_tls_free(tls);
	close(fd);

	/* STARTTLS: plaintext sent after the command in the same packet is discarded */
	fd = test_connect(ps);
	expect_line(fd, "+HELLO\r\n");
	test_send(fd, "TLS\r\nSTARTTLS\r\nECHO injected\r\n");
	expect_line(fd, "tls=no\r\n");
	expect_line(fd, "+OK begin TLS\r\n");
	tls = test_tls_start(fd, T_MS);
	assert_non_null(tls);
	test_tls_send(tls, "TLS\r\nSTARTTLS\r\n");
	expect_tls_line(tls, "tls=yes\r\n"); /* not "injected" */
	expect_tls_line(tls, "-ERR TLS not available\r\n");
	test_tls_free(tls);
	close(fd);
	testd_stop(&t);
}

static void test_tls_reload(void **state)
{
	struct testd t;
	unsigned pi = test_free_port(), ps = test_free_port();
	char fp1[65], fp2[65], got[65], cert[400], key[400];
	start_tls(&t, pi, ps, fp1);
	snprintf(cert, sizeof(cert), "%s/cert.pem", t.dir);
	snprintf(key, sizeof(key), "%s/key.pem", t.dir);

	int old_fd = test_connect(pi);
	struct test_tls *old = test_tls_start(old_fd, T_MS);
	assert_non_null(old);
	expect_tls_line(old, "+HELLO\r\n");
	size_t ticket_len = 0;
	void *ticket = test_tls_save_session(old, &ticket_len); /* a session ticket */
	assert_non_null(ticket);

	/* a renewed certificate, then SIGHUP */
	test_make_cert(cert, key, "second.test", fp2);
	assert_string_not_equal(fp1, fp2);
	testd_signal(&t, SIGHUP);
	assert_true(testd_wait_log(&t, "event=reloaded", 1, T_MS));
	int fd = test_connect(pi);
	struct test_tls *tls = test_tls_start(fd, T_MS);
	assert_non_null(tls);
	test_tls_fingerprint(tls, got);
	assert_string_equal(got, fp2);
	test_tls_free(tls);
	close(fd);
	/* a session ticket from before the reload still resumes (one ticket key per process) */
	fd = test_connect(pi);
	tls = test_tls_start_resume(fd, T_MS, ticket, ticket_len);
	assert_non_null(tls);
	assert_true(test_tls_resumed(tls));
	expect_tls_line(tls, "+HELLO\r\n");
	test_tls_free(tls);
	close(fd);
	free(ticket);
	/* the session opened before the reload goes on */
	test_tls_send(old, "ECHO still here\r\n");
	expect_tls_line(old, "still here\r\n");

	/* a broken certificate: logged, the running one stays */
	test_write_file(cert, "not a certificate\n", 18);
	testd_signal(&t, SIGHUP);
	assert_true(testd_wait_log(&t, "event=reload_failed", 1, T_MS));
	fd = test_connect(pi);
	tls = test_tls_start(fd, T_MS);
	assert_non_null(tls);
	test_tls_fingerprint(tls, got);
	assert_string_equal(got, fp2);
	test_tls_free(tls);
	close(fd);
	test_tls_free(old);
	close(old_fd);
	testd_stop(&t);
}

static void test_tls_garbage_client_hello(void **state)
{
	struct testd t;
	unsigned pi = test_free_port(), ps = test_free_port();
	char fp[65];
	start_tls(&t, pi, ps, fp);
	/* a good client, connected before the garbage */
	int good_fd = test_connect(pi);
	struct test_tls *good = test_tls_start(good_fd, T_MS);
	assert_non_null(good);
	expect_tls_line(good, "+HELLO\r\n");

	int bad = test_connect(pi);
	test_send(bad, "GET / HTTP/1.0\r\nHost: x\r\n\r\n");
	/* the server answers with at most an alert and closes */
	char buf[256];
	size_t n = test_read_exact(bad, buf, sizeof(buf), T_MS);
	assert_true(n < 16);
	close(bad);
	assert_true(testd_wait_log(&t, "event=tls_failed", 1, T_MS));

	/* TLS 1.1 is not offered (TLS 1.2 and 1.3 only) */
	int old_tls = test_connect(pi);
	assert_null(test_tls_start_priority(old_tls, T_MS, "NORMAL:-VERS-ALL:+VERS-TLS1.1"));
	close(old_tls);

	/* a client that connects and says nothing is dropped after handshake_timeout */
	int silent = test_connect(pi);
	assert_true(test_wait_eof(silent, T_MS));
	close(silent);
	assert_true(testd_wait_log(&t, "reason=\"TLS handshake timeout\"", 1, T_MS));

	test_tls_send(good, "ECHO unaffected\r\n");
	expect_tls_line(good, "unaffected\r\n");
	test_tls_free(good);
	close(good_fd);
	testd_stop(&t);
}

/* A COMPRESS=DEFLATE client over a plain socket or TLS (zlib, raw DEFLATE). */
struct zclient {
	int fd;
	struct test_tls *tls;
	z_stream def, inf;
	char plain[1 << 16];
	size_t len, off;
	char raw[16384]; /* compressed bytes read and not inflated yet */
	size_t raw_len, raw_off;
};

static void zc_init(struct zclient *z, int fd, struct test_tls *tls)
{
	memset(z, 0, sizeof(*z));
	z->fd = fd;
	z->tls = tls;
	assert_int_equal(deflateInit2(&z->def, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
	assert_int_equal(inflateInit2(&z->inf, -15), Z_OK);
}

static void zc_send_raw(struct zclient *z, const void *data, size_t len)
{
	if (z->tls)
		test_tls_send_bytes(z->tls, data, len);
	else
		assert_int_equal(write(z->fd, data, len), (ssize_t)len);
}

static void zc_send(struct zclient *z, const char *text)
{
	unsigned char out[4096];
	z->def.next_in = (Bytef *)text;
	z->def.avail_in = (uInt)strlen(text);
	do {
		z->def.next_out = out;
		z->def.avail_out = sizeof(out);
		deflate(&z->def, Z_SYNC_FLUSH);
		zc_send_raw(z, out, sizeof(out) - z->def.avail_out);
	} while (z->def.avail_out == 0);
}

/* Decompressed bytes: exactly len of them, within the bound. */
static size_t zc_read(struct zclient *z, char *out, size_t len)
{
	size_t got = 0;
	while (got < len) {
		if (z->off < z->len) {
			size_t n = z->len - z->off < len - got ? z->len - z->off : len - got;
			memcpy(out + got, z->plain + z->off, n);
			z->off += n;
			got += n;
			continue;
		}
		if (z->raw_len == z->raw_off) {
			ssize_t n;
			if (z->tls) {
				n = test_tls_recv(z->tls, z->raw, sizeof(z->raw));
			} else {
				struct pollfd p = {.fd = z->fd, .events = POLLIN};
				n = poll(&p, 1, T_MS) == 1 ? read(z->fd, z->raw, sizeof(z->raw))
							   : -1;
			}
			if (n <= 0)
				break;
			z->raw_len = (size_t)n;
			z->raw_off = 0;
		}
		z->inf.next_in = (Bytef *)z->raw + z->raw_off;
		z->inf.avail_in = (uInt)(z->raw_len - z->raw_off);
		z->inf.next_out = (Bytef *)z->plain;
		z->inf.avail_out = sizeof(z->plain);
		int r = inflate(&z->inf, Z_SYNC_FLUSH);
		assert_true(r == Z_OK || r == Z_BUF_ERROR);
		z->raw_off = z->raw_len - z->inf.avail_in;
		z->len = sizeof(z->plain) - z->inf.avail_out;
		z->off = 0;
	}
	return got;
}

static void zc_expect_line(struct zclient *z, const char *want)
{
	char got[256];
	size_t n = strlen(want);
	assert_int_equal(zc_read(z, got, n), n);
	got[n] = '\0';
	assert_string_equal(got, want);
}

static void zc_free(struct zclient *z)
{
	deflateEnd(&z->def);
	inflateEnd(&z->inf);
}

static void compress_session(struct zclient *z)
{
	zc_send(z, "ECHO squeezed\r\nTLS\r\n");
	zc_expect_line(z, "squeezed\r\n");
	zc_expect_line(z, z->tls ? "tls=yes\r\n" : "tls=no\r\n");
	/* a large reply through deflate, back-pressure included */
	size_t total = 3 * 1024 * 1024;
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "BIG %zu\r\n", total);
	zc_send(z, cmd);
	static const char pattern[] =
		"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
	char *buf = malloc(1 << 16);
	for (size_t got = 0; got < total;) {
		size_t want = total - got < (1 << 16) ? total - got : (1 << 16);
		assert_int_equal(zc_read(z, buf, want), want);
		for (size_t i = 0; i < want; i++)
			if (buf[i] != pattern[(got + i) % 62])
				fail_msg("byte %zu differs", got + i);
		got += want;
	}
	free(buf);
	zc_expect_line(z, "\r\n.\r\n");
	zc_send(z, "COMPRESS\r\n");
	zc_expect_line(z, "+OK DEFLATE active\r\n");
	zc_expect_line(z, "-ERR already compressing\r\n");
}

static void test_compress_deflate(void **state)
{
	struct testd t;
	unsigned pi = test_free_port(), ps = test_free_port();
	char fp[65];
	start_tls(&t, pi, ps, fp);
	struct zclient z;

	/* plaintext (STARTTLS listener, before any upgrade) */
	int fd = test_connect(ps);
	expect_line(fd, "+HELLO\r\n");
	test_send(fd, "COMPRESS\r\n");
	expect_line(fd, "+OK DEFLATE active\r\n"); /* uncompressed */
	zc_init(&z, fd, NULL);
	compress_session(&z);
	zc_free(&z);
	close(fd);

	/* inside TLS */
	fd = test_connect(pi);
	struct test_tls *tls = test_tls_start(fd, T_MS);
	assert_non_null(tls);
	expect_tls_line(tls, "+HELLO\r\n");
	test_tls_send(tls, "COMPRESS\r\n");
	expect_tls_line(tls, "+OK DEFLATE active\r\n");
	zc_init(&z, fd, tls);
	compress_session(&z);
	zc_free(&z);
	test_tls_free(tls);
	close(fd);

	/* garbage instead of DEFLATE data: that connection ends, nobody else notices */
	fd = test_connect(ps);
	expect_line(fd, "+HELLO\r\n");
	test_send(fd, "COMPRESS\r\n");
	expect_line(fd, "+OK DEFLATE active\r\n");
	test_send(fd, "\xff\xff\xff\xff this is not deflate\r\n");
	assert_true(test_wait_eof(fd, T_MS));
	close(fd);
	assert_true(testd_wait_log(&t, "reason=\"bad DEFLATE input\"", 1, T_MS));
	testd_stop(&t);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines_and_pipelining),
		cmocka_unit_test(test_line_too_long),
		cmocka_unit_test(test_bad_commands),
		cmocka_unit_test(test_back_pressure),
		cmocka_unit_test(test_idle_timeout),
		cmocka_unit_test(test_per_address_limit),
		cmocka_unit_test(test_total_limit),
		cmocka_unit_test(test_graceful_sigterm),
		cmocka_unit_test(test_ipv6_listener),
		cmocka_unit_test(test_stream_file),
		cmocka_unit_test(test_tls_implicit_and_starttls),
		cmocka_unit_test(test_tls_reload),
		cmocka_unit_test(test_tls_garbage_client_hello),
		cmocka_unit_test(test_compress_deflate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
