#include "pop3_fake_conn.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "conn.h"
#include "proto.h"

struct conn {
	const struct proto_ops *ops;
	void *session;
	struct fake_conn_opts o;
	struct config_listener listener;
	uint64_t id;
	struct buf in;
	char *out; /* flushed: what the client has seen */
	size_t out_len, out_cap;
	size_t flushed; /* out[0..flushed) is flushed; the rest waits for a hook's end or
			 * conn_flush (as conn.c pushes output only then) */
	size_t queued;  /* bytes "not yet accepted by the kernel" */
	bool blocked;   /* went above the watermark: on_drain owed */
	bool hold;      /* the client reads nothing: blocked output stays blocked */
	bool paused;
	bool input_owed; /* resume with input buffered: on_input owed */
	bool closing;
	bool tls, can_starttls, starttls_pending;
	unsigned bad;
	/* a file stream */
	bool streaming;
	int s_fd;
	uint64_t s_off, s_left;
	conn_filter_fn *s_filter;
	conn_stream_done_fn *s_done;
	void *s_ctx;
};

static uint64_t fake_next_id = 1;

static void fake_hook_done(struct conn *c);

struct conn *fake_conn_new(const struct proto_ops *ops, const struct fake_conn_opts *opts)
{
	struct conn *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	c->ops = ops;
	c->o = *opts;
	if (c->o.stream_chunk == 0)
		c->o.stream_chunk = 4096;
	if (c->o.max_bad == 0)
		c->o.max_bad = 20;
	c->listener.name = "test";
	c->listener.protocol = "pop3";
	c->listener.tls = opts->tls        ? LISTENER_TLS_IMPLICIT
			  : opts->starttls ? LISTENER_TLS_STARTTLS
					   : LISTENER_TLS_NONE;
	c->listener.max_bad_commands = c->o.max_bad;
	c->listener.max_line = opts->max_line;
	c->id = fake_next_id++;
	c->tls = opts->tls;
	c->can_starttls = opts->starttls && !opts->tls;
	buf_init(&c->in, 1 << 20);
	c->session = ops->session_new(c);
	assert_non_null(c->session);
	fake_hook_done(c);
	fake_conn_run(c);
	return c;
}

/* conn.c flushes after every hook returns; output queued elsewhere (a loop callback such
 * as the auth service's answer) waits for conn_flush. */
static void fake_hook_done(struct conn *c)
{
	c->flushed = c->out_len;
}

static bool fake_quiet(const struct conn *c)
{
	if (c->closing)
		return true;
	if (c->blocked && c->hold)
		return true; /* waiting for the client to read */
	return !c->paused && !c->streaming && !c->starttls_pending && !c->blocked && !c->input_owed;
}

static void fake_deadline_cb(uv_timer_t *t)
{
	*(bool *)t->data = true;
}

static void fake_step(struct conn *c)
{
	if (c->blocked) {
		/* The kernel took everything. A stream in progress is pumped on (conn.c resumes
		 * the stream rather than calling on_drain). */
		c->queued = 0;
		c->blocked = false;
		if (!c->streaming)
			c->ops->on_drain(c->session);
		fake_hook_done(c);
		return;
	}
	if (c->starttls_pending) {
		c->starttls_pending = false;
		buf_clear(&c->in); /* plaintext after STLS is never read */
		c->tls = true;
		c->can_starttls = false;
		if (c->ops->on_tls_ready)
			c->ops->on_tls_ready(c->session);
		fake_hook_done(c);
		return;
	}
	if (c->streaming) {
		char chunk[65536];
		size_t n = c->o.stream_chunk < sizeof(chunk) ? c->o.stream_chunk : sizeof(chunk);
		if (n > c->s_left)
			n = (size_t)c->s_left;
		ssize_t r = n ? pread(c->s_fd, chunk, n, (off_t)c->s_off) : 0;
		assert_true(r >= 0);
		if ((size_t)r < n) /* the file is shorter than asked: the end */
			c->s_left = (uint64_t)r;
		c->s_off += (uint64_t)r;
		c->s_left -= (uint64_t)r;
		bool last = c->s_left == 0;
		if (c->s_filter)
			c->s_filter(c, c->s_ctx, chunk, (size_t)r, last);
		else
			conn_write(c, chunk, (size_t)r);
		if (last) {
			c->streaming = false;
			c->s_done(c, c->s_ctx, 0);
		}
		fake_hook_done(c);
		return;
	}
	if (c->input_owed && !c->paused) {
		c->input_owed = false;
		c->ops->on_input(c->session);
		fake_hook_done(c);
	}
}

void fake_conn_run(struct conn *c)
{
	bool expired = false;
	uv_timer_t deadline;
	bool timer = false;
	while (!fake_quiet(c)) {
		if (c->paused && !c->streaming && !c->starttls_pending && !c->blocked) {
			/* The session waits for something outside (auth, an async open). */
			assert_non_null(c->o.loop);
			if (!timer) {
				uv_timer_init(c->o.loop, &deadline);
				deadline.data = &expired;
				uv_timer_start(&deadline, fake_deadline_cb, 10000, 0);
				timer = true;
			}
			uv_run(c->o.loop, UV_RUN_ONCE);
			if (expired)
				fail_msg("the session did not finish waiting within 10 s");
			continue;
		}
		fake_step(c);
	}
	if (timer) {
		uv_close((uv_handle_t *)&deadline, NULL);
		uv_run(c->o.loop, UV_RUN_NOWAIT);
	}
}

void fake_conn_send_len(struct conn *c, const char *data, size_t len)
{
	assert_false(c->closing);
	assert_int_equal(buf_append(&c->in, data, len), 0);
	c->input_owed = true;
	fake_conn_run(c);
}

void fake_conn_send_once(struct conn *c, const char *data)
{
	assert_false(c->closing);
	assert_int_equal(buf_append(&c->in, data, strlen(data)), 0);
	if (!c->paused && !c->streaming)
		c->ops->on_input(c->session);
	fake_hook_done(c);
}

void fake_conn_send(struct conn *c, const char *data)
{
	fake_conn_send_len(c, data, strlen(data));
}

char *fake_conn_take(struct conn *c, size_t *len_r)
{
	size_t n = c->flushed;
	char *p = malloc(n + 1);
	assert_non_null(p);
	if (n)
		memcpy(p, c->out, n);
	p[n] = 0;
	if (len_r)
		*len_r = n;
	memmove(c->out, c->out + n, c->out_len - n);
	c->out_len -= n;
	c->flushed = 0;
	return p;
}

void fake_conn_hold(struct conn *c, bool hold)
{
	c->hold = hold;
	if (!hold)
		fake_conn_run(c);
}

bool fake_conn_closed(const struct conn *c)
{
	return c->closing;
}

unsigned fake_conn_bad_count(const struct conn *c)
{
	return c->bad;
}

void fake_conn_timeout(struct conn *c)
{
	c->ops->on_timeout(c->session);
	fake_hook_done(c);
	conn_close(c, "timeout");
}

void fake_conn_shutdown(struct conn *c)
{
	c->ops->on_shutdown(c->session);
	fake_hook_done(c);
	conn_close(c, "shutdown");
}

void fake_conn_free(struct conn **c_p)
{
	struct conn *c = *c_p;
	if (c == NULL)
		return;
	if (c->streaming) {
		c->streaming = false;
		c->s_done(c, c->s_ctx, -ECANCELED);
	}
	c->closing = true;
	c->ops->session_free(c->session);
	buf_clear(&c->in);
	free(c->out);
	free(c);
	*c_p = NULL;
}

/* ---- conn.h ---- */

uint64_t conn_id(const struct conn *c)
{
	return c->id;
}

const char *conn_peer_addr(const struct conn *c)
{
	return c->o.loopback ? "127.0.0.1" : "192.0.2.7";
}

unsigned conn_local_port(const struct conn *c)
{
	return 110;
}

bool conn_peer_is_loopback(const struct conn *c)
{
	return c->o.loopback;
}

uv_loop_t *conn_loop(const struct conn *c)
{
	return c->o.loop;
}

const struct config *conn_config(const struct conn *c)
{
	return c->o.config;
}

const struct config_listener *conn_listener(const struct conn *c)
{
	return &c->listener;
}

bool conn_is_tls(const struct conn *c)
{
	return c->tls;
}

bool conn_can_starttls(const struct conn *c)
{
	return c->can_starttls;
}

int conn_starttls(struct conn *c)
{
	if (!c->can_starttls)
		return -EINVAL;
	c->starttls_pending = true;
	return 0;
}

const char *conn_tls_describe(const struct conn *c)
{
	return c->tls ? "TLSv1.3 FAKE" : NULL;
}

enum conn_line_result conn_read_line(struct conn *c, const char **line_r, size_t *len_r)
{
	size_t max = c->o.max_line ? c->o.max_line : c->ops->default_max_line;
	size_t line_len, used;
	enum buf_line_result r =
		buf_line_find(buf_peek(&c->in), buf_used(&c->in), max, &line_len, &used);
	if (r == BUF_LINE_MORE)
		return CONN_LINE_MORE;
	if (r == BUF_LINE_TOO_LONG)
		return CONN_LINE_TOO_LONG;
	*line_r = buf_peek(&c->in);
	*len_r = line_len;
	buf_consume(&c->in, used); /* bytes stay valid until the next append */
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
	if (buf_used(&c->in) > 0)
		c->input_owed = true;
}

void conn_write(struct conn *c, const void *data, size_t len)
{
	if (c->closing)
		return; /* conn.c drops writes after close */
	if (c->out_len + len > c->out_cap) {
		c->out_cap = (c->out_len + len) * 2 + 64;
		c->out = realloc(c->out, c->out_cap);
		assert_non_null(c->out);
	}
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	c->queued += len;
	if (c->o.high_watermark && c->queued >= c->o.high_watermark)
		c->blocked = true;
}

void conn_write_str(struct conn *c, const char *s)
{
	conn_write(c, s, strlen(s));
}

void conn_vprintf(struct conn *c, const char *fmt, va_list ap)
{
	char tmp[4096];
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	assert_true(n >= 0 && (size_t)n < sizeof(tmp));
	conn_write(c, tmp, (size_t)n);
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
	return c->blocked;
}

size_t conn_output_queued(const struct conn *c)
{
	return c->queued;
}

void conn_flush(struct conn *c)
{
	c->flushed = c->out_len;
}

int conn_stream_file(struct conn *c, int fd, uint64_t offset, uint64_t length,
		     conn_filter_fn *filter, conn_stream_done_fn *done, void *ctx)
{
	assert_false(c->streaming);
	if (c->closing)
		return -ECANCELED;
	c->streaming = true;
	c->s_fd = fd;
	c->s_off = offset;
	c->s_left = length;
	c->s_filter = filter;
	c->s_done = done;
	c->s_ctx = ctx;
	return 0;
}

bool conn_note_bad_command(struct conn *c)
{
	return ++c->bad >= c->o.max_bad;
}

void conn_set_idle_timeout(struct conn *c, unsigned seconds)
{
}

void conn_close(struct conn *c, const char *reason)
{
	c->flushed = c->out_len; /* what is queued still goes out */
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
