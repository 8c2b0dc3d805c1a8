/* testutil — run a daemon binary on loopback for a test and talk to it (test-only).
 *
 * Nothing here sleeps: every wait is on an event (a log line, readable data, the process
 * exiting) with a bound.
 */
#ifndef MK_TESTUTIL_H
#define MK_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct testd {
	pid_t pid;
	int pidfd;
	char dir[256];    /* a fresh temporary directory, removed by testd_stop */
	char config[300]; /* dir/mailkeep.conf */
	int log_fd;       /* read end of the daemon's stderr */
	void *logger;     /* the thread collecting the log */
};

/* A fresh temporary directory (mkdtemp). */
void test_tmpdir(char *out, size_t len);
/* A TCP port on 127.0.0.1 that was free a moment ago. */
unsigned test_free_port(void);
/* Write a file (whole). */
void test_write_file(const char *path, const void *data, size_t len);
/* A self-signed certificate and key for CN=name, written as PEM; the SHA-256 fingerprint of
 * the certificate as hex into fp (65 bytes) when fp is not NULL. */
void test_make_cert(const char *cert_path, const char *key_path, const char *name, char *fp);

/* Start BINARY (default: env MK_TESTD) with config text in a fresh directory (the text may use
 * %DIR% for that directory) and wait for "event=started" in its log. */
void testd_start(struct testd *t, const char *binary, const char *config_text);
/* Same, but with an already made directory. */
void testd_start_in(struct testd *t, const char *binary, const char *dir, const char *config_text);
/* Wait until the log holds at least `count` lines containing `needle` (bound: timeout_ms).
 * Returns true if it did. */
bool testd_wait_log(struct testd *t, const char *needle, unsigned count, unsigned timeout_ms);
/* Lines of the log that contain needle. */
unsigned testd_count_log(struct testd *t, const char *needle);
/* The daemon's resident memory in bytes (VmRSS). */
size_t testd_rss(struct testd *t);
/* Send a signal. */
void testd_signal(struct testd *t, int sig);
/* Wait for the daemon to exit (bound: timeout_ms); returns its exit status or -1. */
int testd_wait_exit(struct testd *t, unsigned timeout_ms);
/* SIGKILL if still running, reap, remove the directory. */
void testd_stop(struct testd *t);

/* A blocking client socket to 127.0.0.1:port. */
int test_connect(unsigned port);
/* Read one line (up to LF, kept) with a bound; returns its length, 0 on EOF, -1 on timeout. */
ssize_t test_read_line(int fd, char *buf, size_t len, unsigned timeout_ms);
/* Read exactly len bytes with a bound; returns bytes read (less on EOF or timeout). */
size_t test_read_exact(int fd, char *buf, size_t len, unsigned timeout_ms);
/* True if the peer closed the connection (EOF or reset) within timeout_ms, with no more data. */
bool test_wait_eof(int fd, unsigned timeout_ms);
void test_send(int fd, const char *s);

#endif
