#include "storage_test.h"
#include "storage_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

void st_loop_close(uv_loop_t *loop)
{
	/* pending close callbacks and zero timers; a handle still open here is a leak the test
	 * reports (ASan), never a hang */
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
