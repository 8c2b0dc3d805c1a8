#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
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

#define LOG_MAX (32u * 1024 * 1024)

static void die(const char *what)
{
	fprintf(stderr, "testutil: %s: %s\n", what, strerror(errno));
	abort();
}

void test_tmpdir(char *out, size_t len)
{
	const char *base = getenv("TMPDIR");
	snprintf(out, len, "%s/mk-test-XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(out))
		die("mkdtemp");
}

unsigned test_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		die("free port");
	close(fd);
	return ntohs(sa.sin_port);
}

void test_write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
		die(path);
}

void test_make_cert(const char *cert_path, const char *key_path, const char *name, char *fp)
{
	gnutls_x509_privkey_t key;
	gnutls_x509_crt_t crt;
	gnutls_datum_t out;
	unsigned char serial[8];
	time_t now = time(NULL);

	gnutls_x509_privkey_init(&key);
	if (gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
					 GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) < 0)
		die("key");
	gnutls_x509_crt_init(&crt);
	gnutls_x509_crt_set_version(crt, 3);
	gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial));
	serial[0] &= 0x7f;
	gnutls_x509_crt_set_serial(crt, serial, sizeof(serial));
	gnutls_x509_crt_set_activation_time(crt, now - 3600);
	gnutls_x509_crt_set_expiration_time(crt, now + 30 * 86400);
	gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, name, strlen(name));
	gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, name, strlen(name),
					     GNUTLS_FSAN_SET);
	gnutls_x509_crt_set_key(crt, key);
	if (gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0) < 0)
		die("sign");
	gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &out);
	test_write_file(cert_path, out.data, out.size);
	gnutls_free(out.data);
	gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &out);
	test_write_file(key_path, out.data, out.size);
	gnutls_free(out.data);
	if (fp) {
		unsigned char d[32];
		size_t dlen = sizeof(d);
		gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, d, &dlen);
		for (size_t i = 0; i < dlen; i++)
			sprintf(fp + 2 * i, "%02x", d[i]);
	}
	gnutls_x509_crt_deinit(crt);
	gnutls_x509_privkey_deinit(key);
}

/* ---- the daemon's log, collected by a thread ---- */

struct logger {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char *text;
	size_t len;
	bool eof;
	int fd;
	FILE *copy;
};

static void *logger_main(void *arg)
{
	struct logger *lg = arg;
	char chunk[8192];
	for (;;) {
		ssize_t n = read(lg->fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		pthread_mutex_lock(&lg->lock);
		if (n <= 0) {
			lg->eof = true;
			pthread_cond_broadcast(&lg->cond);
			pthread_mutex_unlock(&lg->lock);
			break;
		}
		if (lg->copy)
			fwrite(chunk, 1, (size_t)n, lg->copy);
		if (lg->len + (size_t)n <= LOG_MAX) {
			memcpy(lg->text + lg->len, chunk, (size_t)n);
			lg->len += (size_t)n;
			lg->text[lg->len] = '\0';
		}
		pthread_cond_broadcast(&lg->cond);
		pthread_mutex_unlock(&lg->lock);
	}
	return NULL;
}

static unsigned count_in(const char *text, const char *needle)
{
	unsigned n = 0;
	/* count lines containing needle */
	for (const char *p = text; (p = strstr(p, needle)); n++) {
		const char *nl = strchr(p, '\n');
		if (!nl)
			return n + 1;
		p = nl + 1;
	}
	return n;
}

static void deadline_after(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

bool testd_wait_log(struct testd *t, const char *needle, unsigned count, unsigned timeout_ms)
{
	struct logger *lg = t->logger;
	struct timespec dl;
	deadline_after(&dl, timeout_ms);
	pthread_mutex_lock(&lg->lock);
	bool ok;
	while (!(ok = count_in(lg->text, needle) >= count) && !lg->eof) {
		if (pthread_cond_timedwait(&lg->cond, &lg->lock, &dl) == ETIMEDOUT) {
			ok = count_in(lg->text, needle) >= count;
			break;
		}
	}
	pthread_mutex_unlock(&lg->lock);
	if (!ok)
		fprintf(stderr, "testutil: no %u x '%s' in the log within %u ms; log:\n%s\n", count,
			needle, timeout_ms, lg->text);
	return ok;
}

unsigned testd_count_log(struct testd *t, const char *needle)
{
	struct logger *lg = t->logger;
	pthread_mutex_lock(&lg->lock);
	unsigned n = count_in(lg->text, needle);
	pthread_mutex_unlock(&lg->lock);
	return n;
}

static void testd_spawn(struct testd *t, const char *binary)
{
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		die("pipe");
	t->pid = fork();
	if (t->pid < 0)
		die("fork");
	if (t->pid == 0) {
		/* A failing assertion leaves the test without calling testd_stop: the daemon must
		 * not outlive the test process. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(pipefd[1], 2);
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 1);
		execl(binary, binary, "-f", "-c", t->config, (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", binary, strerror(errno));
		_exit(127);
	}
	close(pipefd[1]);
	t->log_fd = pipefd[0];
	t->pidfd = (int)syscall(SYS_pidfd_open, t->pid, 0);
	struct logger *lg = calloc(1, sizeof(*lg));
	lg->text = malloc(LOG_MAX + 1);
	lg->text[0] = '\0';
	lg->fd = t->log_fd;
	char path[512];
	snprintf(path, sizeof(path), "%s/daemon.log", t->dir);
	lg->copy = fopen(path, "w");
	if (lg->copy)
		setvbuf(lg->copy, NULL, _IONBF, 0);
	pthread_mutex_init(&lg->lock, NULL);
	pthread_cond_init(&lg->cond, NULL);
	t->logger = lg;
	pthread_create(&lg->thread, NULL, logger_main, lg);
}

void testd_start_in(struct testd *t, const char *binary, const char *dir, const char *config_text)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "%s", dir);
	snprintf(t->config, sizeof(t->config), "%s/mailkeep.conf", t->dir);
	/* %DIR% in the text stands for the directory */
	size_t cap = strlen(config_text) * 2 + 4096, o = 0;
	char *text = malloc(cap);
	for (const char *p = config_text; *p;) {
		if (strncmp(p, "%DIR%", 5) == 0) {
			o += (size_t)snprintf(text + o, cap - o, "%s", t->dir);
			p += 5;
		} else {
			text[o++] = *p++;
		}
	}
	text[o] = '\0';
	test_write_file(t->config, text, o);
	free(text);
	if (!binary)
		binary = getenv("MK_TESTD");
	if (!binary)
		die("MK_TESTD not set");
	testd_spawn(t, binary);
	if (!testd_wait_log(t, "event=started", 1, 20000)) {
		testd_stop(t);
		abort();
	}
}

void testd_start(struct testd *t, const char *binary, const char *config_text)
{
	char dir[256];
	test_tmpdir(dir, sizeof(dir));
	testd_start_in(t, binary, dir, config_text);
}

size_t testd_rss(struct testd *t)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)t->pid);
	FILE *f = fopen(path, "r");
	size_t kb = 0;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %zu kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb * 1024;
}

void testd_signal(struct testd *t, int sig)
{
	if (t->pid > 0)
		kill(t->pid, sig);
}

int testd_wait_exit(struct testd *t, unsigned timeout_ms)
{
	struct pollfd p = {.fd = t->pidfd, .events = POLLIN};
	if (t->pid <= 0 || t->pidfd < 0 || poll(&p, 1, (int)timeout_ms) != 1)
		return -1;
	int status;
	if (waitpid(t->pid, &status, 0) != t->pid)
		return -1;
	t->pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void testd_stop(struct testd *t)
{
	if (t->pid > 0) {
		kill(t->pid, SIGKILL);
		waitpid(t->pid, NULL, 0);
		t->pid = 0;
	}
	struct logger *lg = t->logger;
	if (lg) {
		pthread_join(lg->thread, NULL);
		if (lg->copy)
			fclose(lg->copy);
		free(lg->text);
		free(lg);
		t->logger = NULL;
	}
	if (t->log_fd > 0)
		close(t->log_fd);
	if (t->pidfd > 0)
		close(t->pidfd);
	if (t->dir[0] && !getenv("MK_KEEP_TEST_DIRS")) {
		char cmd[600];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "testutil: could not remove %s\n", t->dir);
	}
}

/* ---- client side ---- */

int test_connect(unsigned port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("connect");
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static bool wait_readable(int fd, unsigned timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, (int)timeout_ms) == 1;
}

ssize_t test_read_line(int fd, char *buf, size_t len, unsigned timeout_ms)
{
	size_t o = 0;
	while (o + 1 < len) {
		if (!wait_readable(fd, timeout_ms))
			return -1;
		ssize_t n = read(fd, buf + o, 1);
		if (n <= 0)
			break;
		if (buf[o++] == '\n')
			break;
	}
	buf[o] = '\0';
	return (ssize_t)o;
}

size_t test_read_exact(int fd, char *buf, size_t len, unsigned timeout_ms)
{
	size_t o = 0;
	while (o < len) {
		if (!wait_readable(fd, timeout_ms))
			break;
		ssize_t n = read(fd, buf + o, len - o);
		if (n <= 0)
			break;
		o += (size_t)n;
	}
	return o;
}

bool test_wait_eof(int fd, unsigned timeout_ms)
{
	char c;
	if (!wait_readable(fd, timeout_ms))
		return false;
	ssize_t n = read(fd, &c, 1);
	return n == 0 || (n < 0 && errno == ECONNRESET);
}

void test_send(int fd, const char *s)
{
	size_t len = strlen(s);
	if (write(fd, s, len) != (ssize_t)len)
		die("send");
}
