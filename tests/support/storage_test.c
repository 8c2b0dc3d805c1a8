#include "storage_test.h"
#include "config.h"
#include "storage_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <strings.h>
#include <sys/inotify.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *st_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char tmpl[4096];
	snprintf(tmpl, sizeof(tmpl), "%s/mk-storage-XXXXXX", base && *base ? base : "/tmp");
	char *p = mkdtemp(tmpl);
	assert_non_null(p);
	return strdup(p);
}

void st_rmdir(char **path_p)
{
	if (*path_p == NULL)
		return;
	storage_remove_tree(*path_p);
	free(*path_p);
	*path_p = NULL;
}

void st_write_file(const char *dir, const char *sub, const char *name, const char *data)
{
	char tmp[4096], path[4096];
	static unsigned n;
	snprintf(tmp, sizeof(tmp), "%s/tmp/st-write.%d.%u", dir, (int)getpid(), ++n);
	snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(storage_write_all(fd, data, strlen(data)), 0);
	close(fd);
	assert_int_equal(rename(tmp, path), 0);
}

size_t st_count_files(const char *dir, const char *sub)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	DIR *d = opendir(path);
	if (d == NULL)
		return 0;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

bool st_find_file(const char *dir, const char *sub, const char *prefix, char *out, size_t size)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	DIR *d = opendir(path);
	if (d == NULL)
		return false;
	int found = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' || strncmp(de->d_name, prefix, strlen(prefix)) != 0)
			continue;
		snprintf(out, size, "%s", de->d_name);
		found++;
	}
	closedir(d);
	return found == 1;
}

static void deadline_cb(uv_timer_t *t)
{
	*(bool *)t->data = true;
}

bool st_run_until(uv_loop_t *loop, const bool *flag, unsigned timeout_ms)
{
	uv_timer_t t;
	bool expired = false;
	uv_timer_init(loop, &t);
	t.data = &expired;
	uv_timer_start(&t, deadline_cb, timeout_ms, 0);
	while (!*flag && !expired)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return *flag;
}

static void close_walk(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void close_deadline_cb(uv_timer_t *t)
{
	uv_stop(t->loop);
}

void st_loop_close(uv_loop_t *loop)
{
	/* pending close callbacks, zero timers and work still on the thread pool (an mbox
	 * rewrite holds its mailbox until it is done): run until nothing is left or 10 s
	 * passed; a handle still open then is a leak the test reports (ASan), never a hang */
	uv_timer_t t;
	uv_timer_init(loop, &t);
	uv_timer_start(&t, close_deadline_cb, 10000, 0);
	uv_unref((uv_handle_t *)&t);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&t, NULL);
	for (int i = 0; i < 8; i++)
		uv_run(loop, UV_RUN_NOWAIT);
	uv_walk(loop, close_walk, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(loop), 0);
}

char *st_read_msg(struct view *view, uint32_t seq, size_t *len_r)
{
	struct mail_stream *s;
	if (view_msg_open(view, seq, &s) < 0)
		return NULL;
	size_t size = (size_t)mail_stream_size(s), len = 0;
	char *buf = malloc(size + 1);
	assert_non_null(buf);
	char chunk[7]; /* small on purpose: exercises CR/LF split across reads */
	for (;;) {
		ssize_t n = mail_stream_read(s, chunk, sizeof(chunk));
		assert_true(n >= 0);
		if (n == 0)
			break;
		assert_true(len + (size_t)n <= size);
		memcpy(buf + len, chunk, (size_t)n);
		len += (size_t)n;
	}
	assert_int_equal(len, size);
	buf[len] = '\0';
	mail_stream_free(&s);
	*len_r = len;
	return buf;
}

uint32_t st_append(struct mailbox *mbox, const char *data, unsigned flags)
{
	struct mail_append *a;
	assert_int_equal(mailbox_append_begin(mbox, flags, 0, 0, &a), 0);
	size_t len = strlen(data);
	/* in chunks, as an IMAP literal arrives */
	for (size_t off = 0; off < len; off += 5)
		assert_int_equal(mail_append_write(a, data + off, len - off < 5 ? len - off : 5),
				 0);
	uint32_t uid = 0;
	assert_int_equal(mail_append_finish(&a, &uid), 0);
	assert_true(uid > 0);
	return uid;
}

static void logf_(struct st_sync_log *log, const char *fmt, ...)
{
	size_t n = strlen(log->text);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(log->text + n, sizeof(log->text) - n, fmt, ap);
	va_end(ap);
}

static void h_expunge(void *ctx, uint32_t seq, uint32_t uid)
{
	logf_(ctx, "E%u ", seq);
}

static void h_exists(void *ctx, uint32_t count)
{
	logf_(ctx, "X%u ", count);
}

static void h_recent(void *ctx, uint32_t count)
{
	logf_(ctx, "R%u ", count);
}

static void h_flags(void *ctx, uint32_t seq, const struct mail_info *info)
{
	char f[64];
	size_t n = 0;
	if (info->flags & MAIL_DRAFT)
		f[n++] = 'D';
	if (info->flags & MAIL_FLAGGED)
		f[n++] = 'F';
	if (info->flags & MAIL_ANSWERED)
		f[n++] = 'R';
	if (info->flags & MAIL_SEEN)
		f[n++] = 'S';
	if (info->flags & MAIL_DELETED)
		f[n++] = 'T';
	for (int i = 0; i < 26; i++)
		if (info->keywords & (1u << i))
			f[n++] = (char)('a' + i);
	f[n] = '\0';
	logf_(ctx, "F%u=%s ", seq, f);
}

const struct view_sync_handler st_sync_handler = {h_expunge, h_exists, h_recent, h_flags};

const char *st_sync(struct view *view, unsigned flags, struct st_sync_log *log)
{
	log->text[0] = '\0';
	assert_int_equal(view_sync(view, flags, &st_sync_handler, log), 0);
	return log->text;
}

/* ---------------------------------------------------------------------------------------- */
/* The back-end under test, and the outside world of an mbox store                            */

enum st_format st_format(void)
{
	const char *f = getenv("MK_STORE_FORMAT");
	return f != NULL && strcmp(f, "mbox") == 0 ? ST_MBOX : ST_MAILDIR;
}

void st_only(enum st_format format)
{
	if (st_format() != format)
		skip();
}

/* The store keeps the configuration it was opened with: one for the whole test program. */
static struct config *st_mbox_config;

int st_store_open(uv_loop_t *loop, const char *root, struct store **store_r)
{
	if (st_format() == ST_MAILDIR)
		return store_open_path(loop, root, store_r);
	const char *slash = strrchr(root, '/');
	assert_non_null(slash);
	assert_true(slash > root && slash[1] != '\0');
	char text[8192];
	int n = snprintf(text, sizeof(text),
			 "[server]\nmail_root = %.*s/%%u\nmail_format = mbox\n%s\n"
			 "[listener t]\nprotocol = imap\naddress = 127.0.0.1\nport = 1\n",
			 (int)(slash - root), root,
			 getenv("MK_STORE_EXTRA") ? getenv("MK_STORE_EXTRA") : "");
	assert_true(n > 0 && (size_t)n < sizeof(text));
	if (st_mbox_config == NULL) {
		struct config_errors errors = {0};
		int r = config_load_string("storage-test", text, (size_t)n, &st_mbox_config,
					   &errors);
		for (size_t i = 0; i < errors.n; i++)
			print_error("config: %s\n", errors.items[i].message);
		config_errors_free(&errors);
		if (r < 0)
			return r;
	} else {
		/* the same text every time: only mail_root may differ, and it is read at open */
		free(st_mbox_config->mail_root);
		st_mbox_config->mail_root = strndup(text + strlen("[server]\nmail_root = "),
						    (size_t)(slash - root) + 3);
		assert_non_null(st_mbox_config->mail_root);
	}
	return store_open(loop, st_mbox_config, slash + 1, store_r);
}

void st_mbox_path(const char *root, const char *folder, char *out, size_t size)
{
	if (strcasecmp(folder, "INBOX") == 0) {
		snprintf(out, size, "%s/inbox", root);
		return;
	}
	int n = snprintf(out, size, "%s/%s", root, folder);
	assert_true(n > 0 && (size_t)n < size);
	for (char *p = out + strlen(root) + 1; *p; p++)
		if (*p == STORE_SEPARATOR)
			*p = '/';
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* PID has exited (gone, or a zombie nobody reaped yet). */
static bool pid_dead(pid_t pid)
{
	if (kill(pid, 0) < 0)
		return errno == ESRCH;
	char path[64], buf[256];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	const char *paren = strrchr(buf, ')');
	return paren != NULL && paren[1] == ' ' && paren[2] == 'Z';
}

/* A dotlock is stale when the PID it holds is dead on this host or when it is older than
 * 5 minutes (liblockfile). Removes it and returns true then; else *pid_r is its holder (0 if
 * unknown). */
static bool dotlock_break_stale(const char *lock, pid_t *pid_r)
{
	char buf[32] = "";
	struct stat st;
	*pid_r = 0;
	int fd = open(lock, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT; /* gone meanwhile: try again */
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	bool stale = false;
	if (fstat(fd, &st) == 0 && st.st_mtime < time(NULL) - 300)
		stale = true;
	close(fd);
	if (n > 0) {
		buf[n] = '\0';
		long pid = strtol(buf, NULL, 10);
		if (pid > 0 && pid_dead((pid_t)pid))
			stale = true;
		else if (pid > 0)
			*pid_r = (pid_t)pid;
	}
	if (stale && unlink(lock) < 0 && errno != ENOENT)
		return false;
	return stale;
}

static void on_alarm(int sig)
{
	(void)sig;
}

int st_mbox_lock(const char *path, unsigned timeout_ms)
{
	char lock[4200], tmp[4300], dir[4200];
	snprintf(lock, sizeof(lock), "%s.lock", path);
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	assert_non_null(slash);
	*slash = '\0';
	int64_t deadline = now_ms() + timeout_ms;
	static unsigned seq;
	for (;;) {
		snprintf(tmp, sizeof(tmp), "%s.%d.%u", lock, (int)getpid(), ++seq);
		int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0)
			return -errno;
		char pid[32];
		int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
		bool ok = write(fd, pid, (size_t)n) == n;
		close(fd);
		int r = ok ? link(tmp, lock) : -1;
		int err = errno;
		struct stat st;
		/* link(2) may succeed on NFS and say it failed: the link count tells */
		bool got = r == 0 || (stat(tmp, &st) == 0 && st.st_nlink == 2);
		unlink(tmp);
		if (got)
			break;
		if (!ok || err != EEXIST)
			return ok ? -err : -EIO;
		pid_t holder;
		if (dotlock_break_stale(lock, &holder))
			continue;
		/* wait for its removal: watch the directory, then look again (no lost wake-up) */
		int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
		if (in < 0)
			return -errno;
		if (inotify_add_watch(in, dir, IN_DELETE | IN_MOVED_FROM) < 0) {
			err = errno;
			close(in);
			return -err;
		}
		/* ... or for its holder's death (a pidfd is readable once it has exited) */
		int pfd = holder > 0 ? pidfd_open(holder, 0) : -1;
		if (access(lock, F_OK) == 0) {
			int64_t left = deadline - now_ms();
			struct pollfd p[2] = {{in, POLLIN, 0}, {pfd, POLLIN, 0}};
			if (left <= 0 || poll(p, pfd >= 0 ? 2 : 1, (int)left) <= 0) {
				close(in);
				if (pfd >= 0)
					close(pfd);
				return -ETIMEDOUT;
			}
		}
		close(in);
		if (pfd >= 0)
			close(pfd);
	}
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		int err = errno;
		unlink(lock);
		return -err;
	}
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	if (fcntl(fd, F_SETLK, &fl) < 0) {
		/* taken: F_SETLKW, interrupted by a timer at the deadline */
		struct sigaction sa = {.sa_handler = on_alarm}, old;
		sigaction(SIGALRM, &sa, &old);
		int64_t left = deadline - now_ms();
		if (left < 1)
			left = 1;
		struct itimerval it = {.it_value = {left / 1000, (left % 1000) * 1000}};
		setitimer(ITIMER_REAL, &it, NULL);
		int r = fcntl(fd, F_SETLKW, &fl);
		int err = errno;
		struct itimerval off = {0};
		setitimer(ITIMER_REAL, &off, NULL);
		sigaction(SIGALRM, &old, NULL);
		if (r < 0) {
			close(fd);
			unlink(lock);
			return err == EINTR ? -ETIMEDOUT : -err;
		}
	}
	return fd;
}

void st_mbox_unlock(const char *path, int fd)
{
	char lock[4200];
	snprintf(lock, sizeof(lock), "%s.lock", path);
	struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET};
	fcntl(fd, F_SETLK, &fl);
	close(fd);
	unlink(lock);
}

/* Run FN(ARG) in a child process (an MTA or mutt is another process: its fcntl locks are
 * its own, and closing its fds never drops ours) and wait for it; asserts it succeeded. */
static void in_child(void (*fn)(const void *arg), const void *arg)
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* a test's full disk (RLIMIT_FSIZE) is not the MTA's */
		struct rlimit rl;
		if (getrlimit(RLIMIT_FSIZE, &rl) == 0) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_FSIZE, &rl);
		}
		fn(arg);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("mbox helper child failed: status %d", status);
}

/* Why the lock of PATH could not be had: the dotlock's holder, whether it lives. */
static void lock_report(const char *path, int err)
{
	char lock[4200], buf[64] = "", comm[64] = "?";
	snprintf(lock, sizeof(lock), "%s.lock", path);
	int fd = open(lock, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		buf[n > 0 ? n : 0] = '\0';
		close(fd);
		char proc[64];
		snprintf(proc, sizeof(proc), "/proc/%ld/comm", strtol(buf, NULL, 10));
		int cf = open(proc, O_RDONLY | O_CLOEXEC);
		if (cf >= 0) {
			n = read(cf, comm, sizeof(comm) - 1);
			comm[n > 0 ? n - 1 : 0] = '\0';
			close(cf);
		}
	}
	fprintf(stderr, "mbox helper: lock %s: %s (dotlock holder pid %s comm %s dead=%d)\n", path,
		strerror(-err), fd >= 0 ? buf : "none", comm,
		fd >= 0 ? pid_dead((pid_t)strtol(buf, NULL, 10)) : -1);
}

static void child_check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "mbox helper: %s: %s\n", what, strerror(errno));
		_exit(1);
	}
}

struct deliver_arg {
	const char *path;
	const char *data;
};

static void deliver_child(const void *p)
{
	const struct deliver_arg *a = p;
	struct sbuf b = {0};
	time_t t = time(NULL);
	struct tm tm;
	char date[64];
	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", &tm);
	/* an MTA waits minutes for a busy spool (exim: lock_retries x lock_interval); 30 s */
	int fd = st_mbox_lock(a->path, 30000);
	if (fd < 0) {
		lock_report(a->path, fd);
		_exit(1);
	}
	struct stat st;
	child_check(fstat(fd, &st) == 0, "fstat");
	if (st.st_size > 0) {
		/* the LF before a From_ line is the separator (Dovecot's rule; the last message
		 * may end without a LF of its own): only a file not ending in a LF needs one */
		char last = 0;
		child_check(pread(fd, &last, 1, st.st_size - 1) == 1, "pread");
		if (last != '\n')
			sbuf_add(&b, "\n", 1);
	}
	sbuf_printf(&b, "From MAILER-DAEMON %s\n", date);
	const char *s = a->data;
	bool bol = true;
	for (; *s; s++) {
		if (bol && strncmp(s, "From ", 5) == 0)
			sbuf_add(&b, ">", 1);
		if (s[0] == '\r' && s[1] == '\n')
			continue;
		sbuf_add(&b, s, 1);
		bol = *s == '\n';
	}
	if (!bol)
		sbuf_add(&b, "\n", 1);
	sbuf_add(&b, "\n", 1);
	child_check(b.data != NULL, "memory");
	child_check(pwrite(fd, b.data, b.len, st.st_size) == (ssize_t)b.len, "write");
	child_check(fsync(fd) == 0, "fsync");
	st_mbox_unlock(a->path, fd);
	sbuf_free(&b);
}

void st_deliver(const char *root, const char *folder, const char *data)
{
	if (st_format() == ST_MAILDIR) {
		char md[4200], name[128];
		static unsigned n;
		if (strcasecmp(folder, "INBOX") == 0)
			snprintf(md, sizeof(md), "%s", root);
		else
			snprintf(md, sizeof(md), "%s/.%s", root, folder);
		snprintf(name, sizeof(name), "%ld.M%uP%d.st-mta", (long)time(NULL), ++n,
			 (int)getpid());
		st_write_file(md, "new", name, data);
		return;
	}
	char path[4200];
	st_mbox_path(root, folder, path, sizeof(path));
	struct deliver_arg a = {path, data};
	in_child(deliver_child, &a);
}

/* The line at S (LEN bytes available) is a From_ line with an asctime date:
 * "From ADDR Mon Nov 23 07:14:24 2026". */
static bool from_dated(const char *s, size_t len)
{
	const char *end = memchr(s, '\n', len);
	size_t n = end ? (size_t)(end - s) : len;
	char line[256];
	if (n >= sizeof(line))
		n = sizeof(line) - 1;
	memcpy(line, s, n);
	line[n] = '\0';
	char addr[200], wd[4], mon[4];
	int day, h, m;
	return sscanf(line, "From %199s %3s %3s %d %d:%d", addr, wd, mon, &day, &h, &m) == 6;
}

/* Message starts of an mbox: offset 0, every "From " after an empty line, and every From_
 * line with an asctime date after any LF (the LF before a From_ line is the separator:
 * storage/README.md "mbox"). */
static size_t mbox_starts(const char *data, size_t len, size_t *starts, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i + 5 <= len; i++) {
		if (strncmp(data + i, "From ", 5) != 0)
			continue;
		if (i == 0 || (i >= 2 && data[i - 1] == '\n' && data[i - 2] == '\n') ||
		    (data[i - 1] == '\n' && from_dated(data + i, len - i))) {
			assert_true(n < max);
			starts[n++] = i;
		}
	}
	return n;
}

static char *slurp(int fd, size_t *len_r)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return NULL;
	char *buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL)
		return NULL;
	ssize_t n = pread(fd, buf, (size_t)st.st_size, 0);
	if (n != st.st_size) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*len_r = (size_t)n;
	return buf;
}

struct edit_arg {
	const char *path;
	unsigned n;
	const char *status, *xstatus; /* NULL, NULL: remove the message */
};

/* Header block of message [s, e): from after the From line to the empty line. */
static void edit_header(struct sbuf *out, const char *s, const char *e, const struct edit_arg *a)
{
	const char *nl = memchr(s, '\n', (size_t)(e - s));
	child_check(nl != NULL, "From line");
	sbuf_add(out, s, (size_t)(nl + 1 - s));
	const char *p = nl + 1;
	while (p < e && *p != '\n') {
		const char *end = memchr(p, '\n', (size_t)(e - p));
		end = end ? end + 1 : e;
		if (strncasecmp(p, "Status:", 7) != 0 && strncasecmp(p, "X-Status:", 9) != 0)
			sbuf_add(out, p, (size_t)(end - p));
		p = end;
	}
	if (*a->status)
		sbuf_printf(out, "Status: %s\n", a->status);
	if (*a->xstatus)
		sbuf_printf(out, "X-Status: %s\n", a->xstatus);
	sbuf_add(out, p, (size_t)(e - p));
}

static void edit_child(const void *p)
{
	const struct edit_arg *a = p;
	/* an MTA waits minutes for a busy spool (exim: lock_retries x lock_interval); 30 s */
	int fd = st_mbox_lock(a->path, 30000);
	if (fd < 0) {
		lock_report(a->path, fd);
		_exit(1);
	}
	size_t len;
	char *data = slurp(fd, &len);
	child_check(data != NULL, "read");
	static size_t starts[65536];
	size_t n = mbox_starts(data, len, starts, 65536);
	child_check(a->n < n, "no such message");
	size_t s = starts[a->n], e = a->n + 1 < n ? starts[a->n + 1] : len;
	struct sbuf out = {0};
	sbuf_add(&out, data, s);
	if (a->status != NULL)
		edit_header(&out, data + s, data + e, a);
	sbuf_add(&out, data + e, len - e);
	child_check(out.data != NULL || out.len == 0, "memory");
	/* in place from the first byte that changes, as mutt writes it */
	size_t first = 0;
	while (first < len && first < out.len && data[first] == out.data[first])
		first++;
	if (first < out.len)
		child_check(pwrite(fd, out.data + first, out.len - first, (off_t)first) ==
				    (ssize_t)(out.len - first),
			    "write");
	child_check(ftruncate(fd, (off_t)out.len) == 0, "truncate");
	child_check(fsync(fd) == 0, "fsync");
	st_mbox_unlock(a->path, fd);
	sbuf_free(&out);
	free(data);
}

void st_mbox_set_status(const char *path, unsigned n, const char *status, const char *xstatus)
{
	struct edit_arg a = {path, n, status, xstatus};
	in_child(edit_child, &a);
}

void st_mbox_remove(const char *path, unsigned n)
{
	struct edit_arg a = {path, n, NULL, NULL};
	in_child(edit_child, &a);
}

unsigned st_mbox_count(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	size_t len;
	char *data = slurp(fd, &len);
	close(fd);
	assert_non_null(data);
	static size_t starts[65536];
	size_t n = mbox_starts(data, len, starts, 65536);
	free(data);
	return (unsigned)n;
}

bool st_mbox_header(const char *path, unsigned n, const char *field, char *out, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	size_t len;
	char *data = slurp(fd, &len);
	close(fd);
	assert_non_null(data);
	static size_t starts[65536];
	size_t cnt = mbox_starts(data, len, starts, 65536);
	assert_true(n < cnt);
	size_t s = starts[n], e = n + 1 < cnt ? starts[n + 1] : len;
	size_t flen = strlen(field);
	bool found = false;
	const char *p = memchr(data + s, '\n', e - s);
	for (p = p ? p + 1 : data + e; p < data + e && *p != '\n';) {
		const char *end = memchr(p, '\n', (size_t)(data + e - p));
		end = end ? end : data + e;
		if ((size_t)(end - p) > flen && strncasecmp(p, field, flen) == 0 &&
		    p[flen] == ':') {
			const char *v = p + flen + 1;
			while (v < end && *v == ' ')
				v++;
			snprintf(out, size, "%.*s", (int)(end - v), v);
			found = true;
			break;
		}
		p = end + 1;
	}
	free(data);
	return found;
}

struct mbox_wait {
	bool changed;
};

static void mbox_wait_cb(uv_fs_event_t *h, const char *name, int events, int status)
{
	((struct mbox_wait *)h->data)->changed = true;
}

bool st_mbox_wait(uv_loop_t *loop, const char *path, bool (*pred)(const char *path, void *arg),
		  void *arg, unsigned timeout_ms)
{
	char dir[4200];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	assert_non_null(slash);
	*slash = '\0';
	uv_fs_event_t ev;
	struct mbox_wait w = {false};
	assert_int_equal(uv_fs_event_init(loop, &ev), 0);
	ev.data = &w;
	assert_int_equal(uv_fs_event_start(&ev, mbox_wait_cb, dir, 0), 0);
	int64_t deadline = now_ms() + timeout_ms;
	bool ok;
	while (!(ok = pred(path, arg))) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			break;
		w.changed = false;
		st_run_until(loop, &w.changed, (unsigned)left);
	}
	uv_close((uv_handle_t *)&ev, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return ok;
}

bool st_mbox_has_count(const char *path, void *arg)
{
	return st_mbox_count(path) == *(unsigned *)arg;
}

bool st_mbox_has_field(const char *path, void *arg)
{
	const struct st_mbox_field *f = arg;
	if (st_mbox_count(path) <= f->n)
		return false;
	char val[1024];
	bool has = st_mbox_header(path, f->n, f->field, val, sizeof(val));
	if (f->value == NULL)
		return !has;
	return has && strcmp(val, f->value) == 0;
}
