#include "imap_fake_conn.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "buf.h"
#include "config.h"

struct fake_stream {
	int fd;
	uint64_t offset, length;
	conn_filter_fn *filter;
	conn_stream_done_fn *done;
	void *ctx;
};

struct conn {
	const struct proto_ops *ops;
	void *session;
	struct fake_conn_opts opts;
	struct buf in, out, sent; /* sent: output "read by the client" at drains */
	unsigned drains;
	struct config cfg;
	struct config_listener lst;
	uv_loop_t own_loop;
	uv_loop_t *loop;
	bool closing, paused, resume_pending, starttls_called, tls, was_blocked;
	bool compressed; /* conn_compress_start was called (the bytes stay plain here) */
	unsigned bad, idle;
	struct fake_stream *stream;
};

static size_t max_line(const struct conn *c)
{
	return c->opts.max_line ? c->opts.max_line : c->ops->default_max_line;
}

struct conn *fake_conn_new(const struct proto_ops *ops, const struct fake_conn_opts *opts)
{
	struct conn *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	c->ops = ops;
	if (opts)
		c->opts = *opts;
	buf_init(&c->in, 1 << 20); /* lines are still cut at max_line */
	buf_init(&c->out, 64 << 20);
	buf_init(&c->sent, 64 << 20);
	c->cfg.allow_plaintext_auth = c->opts.allow_plaintext_auth;
	c->cfg.output_high_watermark = c->opts.high_watermark;
	c->cfg.mail_root = (char *)c->opts.mail_root;
	c->cfg.mail_format = MAIL_FORMAT_MAILDIR;
	c->cfg.auth_max_failures = c->opts.auth_max_failures;
	c->cfg.imap_idle_keepalive = c->opts.idle_keepalive;
	c->cfg.imap_literal_plus = !c->opts.literal_minus;
	c->cfg.quota_storage = c->opts.quota_storage;
	c->cfg.quota_messages = c->opts.quota_messages;
	c->lst.protocol = (char *)ops->name;
	c->lst.max_bad_commands = c->opts.max_bad_commands ? c->opts.max_bad_commands : 20;
	c->tls = c->opts.tls;
	c->idle = ops->default_idle_timeout_s;
	if (c->opts.loop) {
		c->loop = c->opts.loop;
	} else {
		assert_int_equal(uv_loop_init(&c->own_loop), 0);
		c->loop = &c->own_loop;
	}
	c->session = ops->session_new(c);
	assert_non_null(c->session);
	return c;
}

static void deliver(struct conn *c)
{
	if (c->closing || c->paused || c->stream)
		return;
	c->ops->on_input(c->session);
}

void fake_conn_pump(struct conn *c)
{
	for (int guard = 0; guard < 100000; guard++) {
		if (c->closing)
			return;
		if (c->stream) {
			struct fake_stream *st = c->stream;
			char chunk[4096];
			size_t n = st->length < sizeof(chunk) ? (size_t)st->length : sizeof(chunk);
			ssize_t r = n ? pread(st->fd, chunk, n, (off_t)st->offset) : 0;
			int status = 0;
			if (r < 0 || (n && r == 0)) {
				status = r < 0 ? -errno : -EIO;
			} else {
				st->offset += (uint64_t)r;
				st->length -= (uint64_t)r;
				bool last = st->length == 0;
				if (st->filter)
					st->filter(c, st->ctx, chunk, (size_t)r, last);
				else
					conn_write(c, chunk, (size_t)r);
				if (!last)
					continue;
			}
			c->stream = NULL;
			st->done(c, st->ctx, status);
			free(st);
			continue;
		}
		if (c->was_blocked) {
			c->was_blocked = false;
			/* The "client" read it. */
			assert_int_equal(buf_append(&c->sent, buf_peek(&c->out), buf_used(&c->out)),
					 0);
			buf_clear(&c->out);
			c->drains++;
			c->ops->on_drain(c->session);
			continue;
		}
		if (c->resume_pending && !c->paused) {
			c->resume_pending = false;
			deliver(c);
			continue;
		}
		return;
	}
	fail_msg("fake_conn_pump: no progress");
}

void fake_conn_input_n(struct conn *c, const char *data, size_t len)
{
	assert_int_equal(buf_append(&c->in, data, len), 0);
	deliver(c);
	fake_conn_pump(c);
}

void fake_conn_input(struct conn *c, const char *s)
{
	fake_conn_input_n(c, s, strlen(s));
}

char *fake_conn_take_output(struct conn *c)
{
	size_t n1 = buf_used(&c->sent), n2 = buf_used(&c->out);
	char *s = malloc(n1 + n2 + 1);
	assert_non_null(s);
	if (n1)
		memcpy(s, buf_peek(&c->sent), n1);
	if (n2)
		memcpy(s + n1, buf_peek(&c->out), n2);
	s[n1 + n2] = '\0';
	buf_clear(&c->sent);
	buf_clear(&c->out);
	return s;
}

void fake_conn_put_back(struct conn *c, const char *s)
{
	assert_int_equal(buf_used(&c->sent), 0);
	struct buf tmp;
	buf_init(&tmp, 64 << 20);
	assert_int_equal(buf_append(&tmp, s, strlen(s)), 0);
	assert_int_equal(buf_append(&tmp, buf_peek(&c->out), buf_used(&c->out)), 0);
	buf_clear(&c->out);
	c->out = tmp;
	c->out.max = 64 << 20;
}

size_t fake_conn_output_len(const struct conn *c)
{
	return buf_used(&c->sent) + buf_used(&c->out);
}

unsigned fake_conn_drains(const struct conn *c)
{
	return c->drains;
}

void fake_conn_expect(struct conn *c, const char *expected)
{
	char *got = fake_conn_take_output(c);
	if (strcmp(got, expected) != 0)
		fail_msg("output differs:\n--- got ---\n%s--- want ---\n%s---", got, expected);
	free(got);
}

bool fake_conn_closed(const struct conn *c)
{
	return c->closing;
}

bool fake_conn_starttls_called(const struct conn *c)
{
	return c->starttls_called;
}

unsigned fake_conn_idle_timeout(const struct conn *c)
{
	return c->idle;
}

void *fake_conn_session(struct conn *c)
{
	return c->session;
}

uv_loop_t *fake_conn_uv_loop(struct conn *c)
{
	return c->loop;
}

void fake_conn_finish_starttls(struct conn *c)
{
	assert_true(c->starttls_called);
	c->tls = true;
	c->starttls_called = false;
	if (c->ops->on_tls_ready)
		c->ops->on_tls_ready(c->session);
	fake_conn_pump(c);
}

void fake_conn_timeout(struct conn *c)
{
	c->ops->on_timeout(c->session);
	c->closing = true;
}

void fake_conn_shutdown(struct conn *c)
{
	c->ops->on_shutdown(c->session);
	c->closing = true;
}

void fake_conn_free(struct conn **c_p)
{
	struct conn *c = *c_p;
	if (!c)
		return;
	if (c->stream) {
		struct fake_stream *st = c->stream;
		c->stream = NULL;
		st->done(c, st->ctx, -ECANCELED);
		free(st);
	}
	c->closing = true;
	c->ops->session_free(c->session);
	if (c->loop == &c->own_loop) {
		/* Let closed handles' callbacks run, then the loop must be empty. */
		uv_run(c->loop, UV_RUN_NOWAIT);
		assert_int_equal(uv_loop_close(c->loop), 0);
	}
	buf_clear(&c->in);
	buf_clear(&c->out);
	buf_clear(&c->sent);
	free(c);
	*c_p = NULL;
}

/* ---- conn.h ---- */

uint64_t conn_id(const struct conn *c)
{
	return 1;
}

const char *conn_peer_addr(const struct conn *c)
{
	return c->opts.loopback ? "127.0.0.1" : "192.0.2.1";
}

unsigned conn_local_port(const struct conn *c)
{
	return 143;
}

bool conn_peer_is_loopback(const struct conn *c)
{
	return c->opts.loopback;
}

uv_loop_t *conn_loop(const struct conn *c)
{
	return c->loop;
}

const struct config *conn_config(const struct conn *c)
{
	return &c->cfg;
}

const struct config_listener *conn_listener(const struct conn *c)
{
	return &c->lst;
}

bool conn_is_tls(const struct conn *c)
{
	return c->tls;
}

bool conn_can_starttls(const struct conn *c)
{
	return c->opts.can_starttls && !c->tls && !c->starttls_called;
}

int conn_starttls(struct conn *c)
{
	if (!conn_can_starttls(c))
		return -EINVAL;
	c->starttls_called = true;
	buf_clear(&c->in); /* plaintext after STARTTLS is discarded */
	return 0;
}

int conn_compress_start(struct conn *c)
{
	if (c->compressed)
		return -EALREADY;
	if (c->starttls_called && !c->tls)
		return -EINVAL;
	c->compressed = true;
	return 0;
}

bool conn_is_compressed(const struct conn *c)
{
	return c->compressed;
}

const char *conn_tls_describe(const struct conn *c)
{
	return c->tls ? "TLSv1.3 fake" : NULL;
}

enum conn_line_result conn_read_line(struct conn *c, const char **line_r, size_t *len_r)
{
	size_t len, used;
	switch (buf_line_find(buf_peek(&c->in), buf_used(&c->in), max_line(c), &len, &used)) {
	case BUF_LINE_MORE:
		return CONN_LINE_MORE;
	case BUF_LINE_TOO_LONG:
		return CONN_LINE_TOO_LONG;
	case BUF_LINE_OK:
		break;
	}
	*line_r = buf_peek(&c->in);
	*len_r = len;
	buf_consume(&c->in, used);
	return CONN_LINE_OK;
}

size_t conn_read_literal(struct conn *c, uint64_t *remaining, const char **data_r)
{
	return buf_take_literal(&c->in, remaining, data_r);
}

size_t conn_input_pending(const struct conn *c)
{
	return buf_used(&c->in);
}

void conn_input_pause(struct conn *c)
{
	c->paused = true;
}

void conn_input_resume(struct conn *c)
{
	c->paused = false;
	c->resume_pending = true;
}

void conn_write(struct conn *c, const void *data, size_t len)
{
	if (c->closing)
		return;
	assert_int_equal(buf_append(&c->out, data, len), 0);
	if (conn_output_blocked(c))
		c->was_blocked = true;
}

void conn_write_str(struct conn *c, const char *s)
{
	conn_write(c, s, strlen(s));
}

void conn_vprintf(struct conn *c, const char *fmt, va_list ap)
{
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	assert_true(n >= 0);
	conn_write(c, s, (size_t)n);
	free(s);
}

void conn_printf(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	conn_vprintf(c, fmt, ap);
	va_end(ap);
}

bool conn_output_blocked(const struct conn *c)
{
	return c->opts.high_watermark && buf_used(&c->out) > c->opts.high_watermark;
}

size_t conn_output_queued(const struct conn *c)
{
	return buf_used(&c->out);
}

void conn_flush(struct conn *c)
{
}

int conn_stream_file(struct conn *c, int fd, uint64_t offset, uint64_t length,
		     conn_filter_fn *filter, conn_stream_done_fn *done, void *ctx)
{
	if (c->stream)
		return -EBUSY;
	struct fake_stream *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->fd = fd;
	st->offset = offset;
	st->length = length;
	st->filter = filter;
	st->done = done;
	st->ctx = ctx;
	c->stream = st;
	return 0;
}

bool conn_note_bad_command(struct conn *c)
{
	return ++c->bad >= c->lst.max_bad_commands;
}

void conn_set_idle_timeout(struct conn *c, unsigned seconds)
{
	c->idle = seconds ? seconds : c->ops->default_idle_timeout_s;
}

void conn_close(struct conn *c, const char *reason)
{
	c->closing = true;
}

void conn_abort(struct conn *c, const char *reason)
{
	c->closing = true;
}

bool conn_is_closing(const struct conn *c)
{
	return c->closing;
}
