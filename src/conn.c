#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "config.h"
#include "conn_internal.h"
#include "log.h"
#include "proto.h"
#include "tls.h"

/* Output queued in plaintext before it is pushed to the socket (or encrypted): one TLS record. */
#define CONN_CORK_SIZE 16384
/* A protocol that writes past this without looking at conn_output_blocked() is broken. */
#define CONN_OUT_HARD_MAX (64u * 1024 * 1024)
/* Input kept unconsumed: at least this much, so a pipelining client is not stopped early. */
#define CONN_IN_MIN 32768
/* One stream chunk read from a file. */
#define CONN_STREAM_CHUNK 65536

enum conn_state {
	CONN_TLS_HANDSHAKE, /* implicit TLS, before the session exists */
	CONN_OPEN,          /* the protocol runs (possibly with a STARTTLS handshake under way) */
	CONN_CLOSING,       /* flushing the last output */
	CONN_CLOSED,        /* uv_close issued */
};

struct conn_stream_state {
	int fd;
	uint64_t offset;
	uint64_t remaining;
	conn_filter_fn *filter;
	conn_stream_done_fn *done;
	void *ctx;
};

struct wreq {
	uv_write_t req;
	struct conn *c;
	size_t len;
	char data[];
};

/* RFC 4978 DEFLATE under the protocol, above TLS. Our deflate uses a 4 KiB window and
 * memLevel 5 (about 32 KiB) so a compressed idle connection stays small; inflate must take
 * whatever window the client chose (32 KiB). */
struct conn_zlib {
	z_stream def;
	z_stream inf;
	struct buf rx; /* compressed input not inflated yet (while the input buffer is full) */
};
#define CONN_Z_WINDOW_BITS 12
#define CONN_Z_MEM_LEVEL   5

struct conn {
	uv_tcp_t tcp;
	uv_timer_t timer; /* handshake, idle and closing deadlines */
	struct server *server;
	const struct proto_ops *proto;
	void *session;
	struct config *config;
	const struct config_listener *lcfg;
	struct tls_creds *creds;
	struct tls_session *tls;
	struct conn_stream_state *stream;

	struct buf in;       /* plaintext input not consumed yet */
	struct buf out;      /* plaintext output not yet pushed (corked) */
	struct buf tls_rx;   /* ciphertext GnuTLS has not read yet (only while input is full) */
	struct conn_zlib *z; /* COMPRESS=DEFLATE, when started */
	size_t wq_bytes;     /* bytes in uv_write requests in flight */
	unsigned wq_reqs;

	uint64_t id;
	uint64_t bytes_in, bytes_out;
	uint64_t started_ms;
	char peer[INET6_ADDRSTRLEN];
	unsigned local_port;
	unsigned peer_port;
	unsigned idle_timeout_s;
	unsigned bad_commands;
	enum conn_state state;
	unsigned open_handles;

	bool refused : 1;
	bool reading : 1;
	bool input_paused : 1;
	bool blocked : 1;       /* output passed the high watermark and has not drained yet */
	bool starttls : 1;      /* TLS was started by STARTTLS (handshake may be running) */
	bool discard_input : 1; /* STARTTLS: plaintext after the command is thrown away */
	bool in_hook : 1;
	bool session_freed : 1;
	bool pending; /* on the server's deferred-work list */
	bool loopback;
	bool close_started : 1; /* the last flush (and TLS close_notify) is under way */

	struct conn *next, *prev, *pending_next;
};

static uint64_t next_conn_id = 1;

static void conn_update_reading(struct conn *c);
static void conn_process_input(struct conn *c);
static void conn_restart_idle_timer(struct conn *c);
static bool conn_tls_drive(struct conn *c, const char *data, size_t len);
static size_t conn_input_room(const struct conn *c);
static bool conn_inflate(struct conn *c);
static void conn_finish_close(struct conn *c);
static void conn_check_drain(struct conn *c);
static void conn_begin_close(struct conn *c, const char *reason, bool flush);

uint64_t conn_id(const struct conn *c)
{
	return c->id;
}

const char *conn_peer_addr(const struct conn *c)
{
	return c->peer;
}

unsigned conn_local_port(const struct conn *c)
{
	return c->local_port;
}

bool conn_peer_is_loopback(const struct conn *c)
{
	return c->loopback;
}

uv_loop_t *conn_loop(const struct conn *c)
{
	return c->tcp.loop;
}

const struct config *conn_config(const struct conn *c)
{
	return c->config;
}

const struct config_listener *conn_listener(const struct conn *c)
{
	return c->lcfg;
}

bool conn_is_tls(const struct conn *c)
{
	return c->tls != NULL;
}

bool conn_can_starttls(const struct conn *c)
{
	return c->lcfg->tls == LISTENER_TLS_STARTTLS && !c->tls && c->creds;
}

const char *conn_tls_describe(const struct conn *c)
{
	return c->tls && tls_session_handshake_done(c->tls) ? tls_session_describe(c->tls) : NULL;
}

uv_stream_t *conn_stream(struct conn *c)
{
	return (uv_stream_t *)&c->tcp;
}

struct conn **conn_link_next(struct conn *c)
{
	return &c->next;
}

struct conn **conn_link_prev(struct conn *c)
{
	return &c->prev;
}

struct conn **conn_pending_next(struct conn *c)
{
	return &c->pending_next;
}

bool *conn_pending_flag(struct conn *c)
{
	return &c->pending;
}

void conn_set_refused(struct conn *c)
{
	c->refused = true;
}

/* ---- socket writes ---- */

static void conn_on_write(uv_write_t *req, int status)
{
	struct wreq *w = (struct wreq *)req;
	struct conn *c = w->c;
	c->wq_bytes -= w->len;
	c->wq_reqs--;
	free(w);
	if (status < 0) {
		if (status != UV_ECANCELED && c->state < CONN_CLOSED)
			conn_begin_close(c, uv_strerror(status), false);
		return;
	}
	if (c->state == CONN_OPEN && c->wq_reqs == 0)
		conn_restart_idle_timer(c); /* a slow reader still taking a download is not idle */
	conn_check_drain(c);
}

/* Hand bytes to the socket: try a direct write when nothing is in flight (no copy), queue
 * the rest. Never try_write behind pending writes, or bytes would go out of order. */
static int conn_sock_write(struct conn *c, const char *data, size_t len)
{
	if (c->state == CONN_CLOSED)
		return -1;
	c->bytes_out += len;
	if (c->wq_reqs == 0) {
		uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
		int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
		if (r > 0) {
			data += r;
			len -= (size_t)r;
		} else if (r != UV_EAGAIN && r != UV_ENOSYS) {
			return -1;
		}
		if (len == 0)
			return 0;
	}
	struct wreq *w = malloc(sizeof(*w) + len);
	if (!w)
		return -1;
	w->c = c;
	w->len = len;
	memcpy(w->data, data, len);
	uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
	if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_on_write) < 0) {
		free(w);
		return -1;
	}
	c->wq_bytes += len;
	c->wq_reqs++;
	return 0;
}

static int conn_tls_push(void *ctx, const void *data, size_t len)
{
	return conn_sock_write(ctx, data, len);
}

size_t conn_output_queued(const struct conn *c)
{
	return buf_used(&c->out) + c->wq_bytes;
}

bool conn_output_blocked(const struct conn *c)
{
	return c->blocked || conn_output_queued(c) >= c->config->output_high_watermark;
}

/* Send plaintext protocol bytes down: through TLS when there is TLS, else to the socket. */
static int conn_send_transport(struct conn *c, const char *data, size_t n)
{
	if (c->tls)
		return tls_session_send(c->tls, data, n);
	return conn_sock_write(c, data, n);
}

/* Compress and send; a sync flush ends every batch so that interactive replies never wait
 * inside the compressor (RFC 4978 §4). */
static int conn_send_deflated(struct conn *c, const char *data, size_t n)
{
	z_stream *zs = &c->z->def;
	char chunk[16384];
	zs->next_in = (Bytef *)data;
	zs->avail_in = (uInt)n;
	do {
		zs->next_out = (Bytef *)chunk;
		zs->avail_out = sizeof(chunk);
		if (deflate(zs, Z_SYNC_FLUSH) == Z_STREAM_ERROR)
			return -1;
		size_t have = sizeof(chunk) - zs->avail_out;
		if (have > 0 && conn_send_transport(c, chunk, have) < 0)
			return -1;
	} while (zs->avail_out == 0);
	return 0;
}

void conn_flush(struct conn *c)
{
	size_t n = buf_used(&c->out);
	if (n == 0 || c->state == CONN_CLOSED)
		return;
	if (c->tls && !tls_session_handshake_done(c->tls))
		return; /* keep it corked until the handshake is done */
	int r = c->z ? conn_send_deflated(c, buf_peek(&c->out), n)
		     : conn_send_transport(c, buf_peek(&c->out), n);
	buf_consume(&c->out, n);
	buf_release(&c->out);
	if (r < 0) {
		conn_begin_close(c, "write failed", false);
		return;
	}
	if (conn_output_queued(c) >= c->config->output_high_watermark && !c->blocked) {
		c->blocked = true;
		conn_update_reading(c);
	}
}

void conn_write(struct conn *c, const void *data, size_t len)
{
	/* A closing connection still takes its last words, until the final flush starts. */
	if (c->state >= CONN_CLOSED || (c->state == CONN_CLOSING && c->close_started))
		return;
	if (buf_append(&c->out, data, len) < 0) {
		log_error("conn=%llu event=output_overflow queued=%zu", (unsigned long long)c->id,
			  conn_output_queued(c));
		conn_abort(c, "output overflow");
		return;
	}
	if (buf_used(&c->out) >= CONN_CORK_SIZE)
		conn_flush(c);
}

void conn_write_str(struct conn *c, const char *s)
{
	conn_write(c, s, strlen(s));
}

void conn_vprintf(struct conn *c, const char *fmt, va_list ap)
{
	char small[512];
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	if (n < 0) {
		va_end(ap2);
		return;
	}
	if ((size_t)n < sizeof(small)) {
		conn_write(c, small, (size_t)n);
	} else {
		char *big = malloc((size_t)n + 1);
		if (big) {
			vsnprintf(big, (size_t)n + 1, fmt, ap2);
			conn_write(c, big, (size_t)n);
			free(big);
		}
	}
	va_end(ap2);
}

void conn_printf(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	conn_vprintf(c, fmt, ap);
	va_end(ap);
}

/* ---- hooks ---- */

static void conn_closing_flush(struct conn *c);

/* TLS input left over while the input buffer was full: decrypt more once there is room. */
static bool conn_tls_backlog(const struct conn *c)
{
	return c->tls && tls_session_handshake_done(c->tls) && conn_input_room(c) > 0 &&
	       (buf_used(&c->tls_rx) > 0 || tls_session_pending(c->tls) > 0);
}

/* Compressed input left over while the input buffer was full. */
static bool conn_z_backlog(const struct conn *c)
{
	return c->z && buf_used(&c->z->rx) > 0 && buf_room(&c->in) > 0;
}

static void conn_after_hook(struct conn *c)
{
	c->in_hook = false;
	conn_flush(c);
	if (c->discard_input) {
		/* STARTTLS: the plaintext after the command is dropped (RFC 2595 §3.1). */
		buf_clear(&c->in);
		c->discard_input = false;
	}
	buf_release(&c->in);
	if (c->state == CONN_CLOSING) {
		conn_closing_flush(c);
		return;
	}
	conn_update_reading(c);
	if (conn_tls_backlog(c) || conn_z_backlog(c))
		server_schedule(c->server, c);
}

static void conn_start_session(struct conn *c)
{
	c->state = CONN_OPEN;
	if (c->refused) {
		conn_write_str(c, c->proto->refuse_line);
		conn_begin_close(c, "connection limit", true);
		return;
	}
	c->in_hook = true;
	c->session = c->proto->session_new(c);
	conn_after_hook(c);
	if (!c->session)
		conn_begin_close(c, "session refused", true);
}

/* ---- reading ---- */

static void conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct conn *c = h->data;
	size_t len;
	char *base = server_read_buffer(c->server, &len);
	size_t room = conn_input_room(c);
	if (room < len)
		len = room;
	*b = uv_buf_init(base, (unsigned)len);
}

/* Room for transport plaintext: compressed bytes wait in z->rx, plain ones go to the input. */
static size_t conn_input_room(const struct conn *c)
{
	return c->z ? buf_room(&c->z->rx) : buf_room(&c->in);
}

/* Inflate waiting compressed input into the input buffer while it has room. Returns false
 * when the stream is corrupt (the connection is closed). */
static bool conn_inflate(struct conn *c)
{
	z_stream *zs = &c->z->inf;
	while (buf_used(&c->z->rx) > 0 && buf_room(&c->in) > 0) {
		char plain[16384];
		size_t want = buf_room(&c->in) < sizeof(plain) ? buf_room(&c->in) : sizeof(plain);
		zs->next_in = (Bytef *)buf_peek(&c->z->rx);
		zs->avail_in = (uInt)buf_used(&c->z->rx);
		zs->next_out = (Bytef *)plain;
		zs->avail_out = (uInt)want;
		int r = inflate(zs, Z_SYNC_FLUSH);
		size_t used = buf_used(&c->z->rx) - zs->avail_in;
		size_t got = want - zs->avail_out;
		buf_consume(&c->z->rx, used);
		(void)buf_append(&c->in, plain, got); /* fits: at most the room */
		if (r == Z_STREAM_END || (r != Z_OK && r != Z_BUF_ERROR)) {
			log_info("conn=%llu event=compress_error error=\"%s\"",
				 (unsigned long long)c->id, zs->msg ? zs->msg : "end of stream");
			conn_begin_close(c, "bad DEFLATE input", false);
			return false;
		}
		if (used == 0 && got == 0)
			break; /* needs more input */
	}
	buf_release(&c->z->rx);
	return true;
}

/* Transport plaintext arrived: straight into the input, or through inflate. */
static bool conn_input_add(struct conn *c, const char *data, size_t len)
{
	if (!c->z) {
		(void)buf_append(&c->in, data, len); /* fits: callers read at most the room */
		return true;
	}
	(void)buf_append(&c->z->rx, data, len);
	return conn_inflate(c);
}

/* Feed ciphertext to GnuTLS and collect plaintext into c->in while there is room. Returns
 * false when the connection was closed. */
static bool conn_tls_drive(struct conn *c, const char *data, size_t len)
{
	bool from_saved = false;
	if (buf_used(&c->tls_rx) > 0) {
		/* Older ciphertext waits: keep order by appending behind it. */
		if (len > 0 && buf_append(&c->tls_rx, data, len) < 0) {
			conn_begin_close(c, "TLS input overflow", false);
			return false;
		}
		data = buf_peek(&c->tls_rx);
		len = buf_used(&c->tls_rx);
		from_saved = true;
	}
	tls_session_feed(c->tls, data, len);

	bool ok = true;
	if (!tls_session_handshake_done(c->tls)) {
		int r = tls_session_handshake(c->tls);
		if (r == TLS_STATUS_ERROR) {
			log_info("conn=%llu event=tls_failed error=\"%s\"",
				 (unsigned long long)c->id, tls_session_error(c->tls));
			conn_begin_close(c, "TLS handshake failed", false);
			return false;
		}
		if (r == TLS_STATUS_OK) {
			log_info("conn=%llu event=tls_ready tls=%s", (unsigned long long)c->id,
				 tls_session_describe(c->tls));
			if (c->state == CONN_TLS_HANDSHAKE) {
				conn_start_session(c);
			} else if (c->proto->on_tls_ready && c->session) {
				c->in_hook = true;
				c->proto->on_tls_ready(c->session);
				conn_after_hook(c);
			}
			conn_restart_idle_timer(c); /* from the handshake deadline to idle */
			conn_flush(c);              /* output corked during the handshake */
		}
	}
	if (c->state >= CONN_CLOSING)
		ok = false;
	while (ok && tls_session_handshake_done(c->tls) && conn_input_room(c) > 0) {
		char plain[16384];
		size_t room = conn_input_room(c);
		size_t want = room < sizeof(plain) ? room : sizeof(plain);
		ssize_t r = tls_session_recv(c->tls, plain, want);
		if (r > 0) {
			if (!conn_input_add(c, plain, (size_t)r))
				ok = false;
			continue;
		}
		if (r == TLS_STATUS_AGAIN)
			break;
		if (r == TLS_STATUS_EOF) {
			conn_begin_close(c, "client closed TLS", false);
		} else {
			log_info("conn=%llu event=tls_error error=\"%s\"",
				 (unsigned long long)c->id, tls_session_error(c->tls));
			conn_begin_close(c, "TLS error", false);
		}
		ok = false;
	}
	/* Keep what GnuTLS has not read (the input buffer is full): it is read again once the
	 * protocol has consumed some input. */
	size_t unread = tls_session_unread(c->tls);
	if (from_saved) {
		buf_consume(&c->tls_rx, len - unread);
		buf_release(&c->tls_rx);
	} else if (unread > 0 && ok) {
		if (buf_append(&c->tls_rx, tls_session_unread_data(c->tls), unread) < 0) {
			conn_begin_close(c, "TLS input overflow", false);
			ok = false;
		}
	}
	tls_session_feed(c->tls, NULL, 0);
	return ok;
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
	struct conn *c = stream->data;
	if (nread == 0 || c->state >= CONN_CLOSING)
		return;
	if (nread == UV_ENOBUFS) {
		/* Input is full: wait for the protocol to consume some. */
		c->reading = false;
		uv_read_stop(stream);
		return;
	}
	if (nread < 0) {
		const char *why = nread == UV_EOF ? "client disconnected" : uv_strerror((int)nread);
		if (nread == UV_EOF && c->tls && tls_session_handshake_done(c->tls))
			why = "client disconnected without TLS close_notify";
		conn_begin_close(c, why, false);
		return;
	}
	c->bytes_in += (uint64_t)nread;
	conn_restart_idle_timer(c);
	if (c->tls) {
		if (!conn_tls_drive(c, b->base, (size_t)nread))
			return;
	} else if (!conn_input_add(c, b->base, (size_t)nread)) { /* alloc gave at most room */
		return;
	}
	conn_process_input(c);
	conn_update_reading(c);
}

static void conn_update_reading(struct conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	bool want = c->state < CONN_CLOSING && !c->blocked && conn_input_room(c) > 0 &&
		    buf_room(&c->in) > 0 && buf_used(&c->tls_rx) == 0 &&
		    !(c->z && buf_used(&c->z->rx) > 0) && !c->stream;
	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc, conn_on_read) == 0)
			c->reading = true;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
}

static bool conn_input_ready(const struct conn *c)
{
	return c->state == CONN_OPEN && c->session && !c->input_paused && !c->stream &&
	       !c->blocked && buf_used(&c->in) > 0 && !c->in_hook &&
	       !(c->tls && !tls_session_handshake_done(c->tls));
}

static void conn_process_input(struct conn *c)
{
	if (!conn_input_ready(c))
		return;
	c->in_hook = true;
	c->proto->on_input(c->session);
	conn_after_hook(c);
}

enum conn_line_result conn_read_line(struct conn *c, const char **line_r, size_t *len_r)
{
	size_t line_len, used;
	if (c->discard_input || c->state != CONN_OPEN)
		return CONN_LINE_MORE;
	size_t max = c->lcfg->max_line ? c->lcfg->max_line : c->proto->default_max_line;
	switch (buf_line_find(buf_peek(&c->in), buf_used(&c->in), max, &line_len, &used)) {
	case BUF_LINE_MORE:
		return CONN_LINE_MORE;
	case BUF_LINE_TOO_LONG:
		log_info("conn=%llu event=line_too_long max=%zu", (unsigned long long)c->id, max);
		return CONN_LINE_TOO_LONG;
	case BUF_LINE_OK:
		break;
	}
	*line_r = buf_peek(&c->in);
	*len_r = line_len;
	buf_consume(&c->in, used);
	return CONN_LINE_OK;
}

size_t conn_read_literal(struct conn *c, uint64_t *remaining, const char **data_r)
{
	if (c->discard_input || c->state != CONN_OPEN)
		return 0;
	return buf_take_literal(&c->in, remaining, data_r);
}

size_t conn_input_pending(const struct conn *c)
{
	return buf_used(&c->in);
}

void conn_input_pause(struct conn *c)
{
	c->input_paused = true;
}

void conn_input_resume(struct conn *c)
{
	if (!c->input_paused)
		return;
	c->input_paused = false;
	if (c->state == CONN_OPEN) {
		server_schedule(c->server, c);
		conn_update_reading(c);
	}
}

/* ---- output drain, streams ---- */

static void conn_stream_pump(struct conn *c)
{
	static char chunk[CONN_STREAM_CHUNK];
	while (c->stream && c->state == CONN_OPEN && !conn_output_blocked(c)) {
		struct conn_stream_state *st = c->stream;
		size_t want = st->remaining < sizeof(chunk) ? (size_t)st->remaining : sizeof(chunk);
		ssize_t got = 0;
		if (want > 0) {
			got = pread(st->fd, chunk, want, (off_t)st->offset);
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0) {
				int err = got < 0 ? -errno : -EIO; /* a file that shrank */
				c->stream = NULL;
				c->in_hook = true;
				st->done(c, st->ctx, err);
				free(st);
				conn_after_hook(c);
				return;
			}
		}
		st->offset += (uint64_t)got;
		st->remaining -= (uint64_t)got;
		bool last = st->remaining == 0;
		c->in_hook = true;
		if (st->filter)
			st->filter(c, st->ctx, chunk, (size_t)got, last);
		else
			conn_write(c, chunk, (size_t)got);
		if (last) {
			c->stream = NULL;
			st->done(c, st->ctx, 0);
			free(st);
		}
		conn_after_hook(c);
	}
}

int conn_stream_file(struct conn *c, int fd, uint64_t offset, uint64_t length,
		     conn_filter_fn *filter, conn_stream_done_fn *done, void *ctx)
{
	if (c->stream || c->state != CONN_OPEN)
		return -EBUSY;
	struct conn_stream_state *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->fd = fd;
	st->offset = offset;
	st->remaining = length;
	st->filter = filter;
	st->done = done;
	st->ctx = ctx;
	c->stream = st;
	server_schedule(c->server, c);
	return 0;
}

static void conn_check_drain(struct conn *c)
{
	if (c->state == CONN_CLOSING) {
		if (c->in_hook)
			return;
		if (conn_output_queued(c) == 0)
			conn_finish_close(c);
		return;
	}
	if (c->state != CONN_OPEN || !c->blocked)
		return;
	if (conn_output_queued(c) > c->config->output_low_watermark)
		return;
	c->blocked = false;
	if (c->stream) {
		conn_stream_pump(c);
	} else if (c->session && c->proto->on_drain) {
		c->in_hook = true;
		c->proto->on_drain(c->session);
		conn_after_hook(c);
	}
	conn_process_input(c);
	conn_update_reading(c);
}

void conn_run_pending(struct conn *c)
{
	if (c->state != CONN_OPEN)
		return;
	if (conn_z_backlog(c) && !conn_inflate(c))
		return;
	if (conn_tls_backlog(c) && !conn_tls_drive(c, NULL, 0))
		return;
	if (c->stream)
		conn_stream_pump(c);
	conn_process_input(c);
	conn_update_reading(c);
}

/* ---- STARTTLS ---- */

int conn_starttls(struct conn *c)
{
	if (!conn_can_starttls(c) || c->state != CONN_OPEN)
		return -EINVAL;
	conn_flush(c); /* the OK reply goes out in plaintext */
	c->tls = tls_session_new(c->creds, conn_tls_push, c);
	if (!c->tls) {
		conn_begin_close(c, "cannot create TLS session", false);
		return -ENOMEM;
	}
	c->starttls = true;
	/* Everything buffered after the STARTTLS line is plaintext the RFCs say to discard;
	 * borrowed pointers stay valid until the hook returns (conn_after_hook clears). */
	buf_consume(&c->in, buf_used(&c->in));
	c->discard_input = c->in_hook;
	conn_restart_idle_timer(c);
	return 0;
}

/* ---- COMPRESS=DEFLATE ---- */

int conn_compress_start(struct conn *c)
{
	if (c->z)
		return -EALREADY;
	if (c->state != CONN_OPEN || (c->tls && !tls_session_handshake_done(c->tls)))
		return -EINVAL;
	conn_flush(c); /* the OK reply goes out uncompressed */
	struct conn_zlib *z = calloc(1, sizeof(*z));
	if (!z)
		return -ENOMEM;
	if (deflateInit2(&z->def, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -CONN_Z_WINDOW_BITS,
			 CONN_Z_MEM_LEVEL, Z_DEFAULT_STRATEGY) != Z_OK) {
		free(z);
		return -ENOMEM;
	}
	if (inflateInit2(&z->inf, -MAX_WBITS) != Z_OK) {
		deflateEnd(&z->def);
		free(z);
		return -ENOMEM;
	}
	buf_init(&z->rx, 256 * 1024);
	/* Whatever followed the command is already compressed: it waits for inflate, which runs
	 * after the hook (pointers the protocol borrowed stay valid until then). */
	if (buf_used(&c->in) > 0) {
		(void)buf_append(&z->rx, buf_peek(&c->in), buf_used(&c->in));
		buf_consume(&c->in, buf_used(&c->in));
	}
	c->z = z;
	log_info("conn=%llu event=compress_started", (unsigned long long)c->id);
	server_schedule(c->server, c);
	return 0;
}

bool conn_is_compressed(const struct conn *c)
{
	return c->z != NULL;
}

/* ---- limits, timers ---- */

bool conn_note_bad_command(struct conn *c)
{
	c->bad_commands++;
	if (c->bad_commands < c->lcfg->max_bad_commands)
		return false;
	log_info("conn=%llu event=too_many_bad_commands count=%u", (unsigned long long)c->id,
		 c->bad_commands);
	return true;
}

static void conn_on_timer(uv_timer_t *t)
{
	struct conn *c = t->data;
	switch (c->state) {
	case CONN_TLS_HANDSHAKE:
		conn_begin_close(c, "TLS handshake timeout", false);
		break;
	case CONN_OPEN:
		if (c->tls && !tls_session_handshake_done(c->tls)) {
			conn_begin_close(c, "TLS handshake timeout", false);
			break;
		}
		log_info("conn=%llu event=idle_timeout seconds=%u", (unsigned long long)c->id,
			 c->idle_timeout_s);
		if (c->session && c->proto->on_timeout) {
			c->in_hook = true;
			c->proto->on_timeout(c->session);
			conn_after_hook(c);
		}
		conn_begin_close(c, "idle timeout", true);
		break;
	case CONN_CLOSING:
		/* The client did not take our last words in time. */
		conn_begin_close(c, "close timeout", false);
		break;
	case CONN_CLOSED:
		break;
	}
}

static void conn_restart_idle_timer(struct conn *c)
{
	if (c->state >= CONN_CLOSING)
		return;
	unsigned s = c->idle_timeout_s;
	if (c->state == CONN_TLS_HANDSHAKE || (c->tls && !tls_session_handshake_done(c->tls)))
		s = c->config->tls_handshake_timeout;
	uv_timer_start(&c->timer, conn_on_timer, (uint64_t)s * 1000, 0);
}

void conn_set_idle_timeout(struct conn *c, unsigned seconds)
{
	unsigned def =
		c->lcfg->idle_timeout ? c->lcfg->idle_timeout : c->proto->default_idle_timeout_s;
	c->idle_timeout_s = seconds ? seconds : def;
	conn_restart_idle_timer(c);
}

/* ---- closing ---- */

bool conn_is_closing(const struct conn *c)
{
	return c->state >= CONN_CLOSING;
}

static void conn_on_close(uv_handle_t *h)
{
	struct conn *c = h->data;
	if (--c->open_handles > 0)
		return;
	/* Both handles are closed and every write callback has run: free. */
	if (c->stream) {
		struct conn_stream_state *st = c->stream;
		c->stream = NULL;
		st->done(c, st->ctx, -ECANCELED);
		free(st);
	}
	if (c->session && !c->session_freed) {
		c->session_freed = true;
		c->proto->session_free(c->session);
		c->session = NULL;
	}
	tls_session_free(&c->tls);
	tls_creds_unref(&c->creds);
	buf_clear(&c->in);
	buf_clear(&c->out);
	buf_clear(&c->tls_rx);
	if (c->z) {
		deflateEnd(&c->z->def);
		inflateEnd(&c->z->inf);
		buf_clear(&c->z->rx);
		free(c->z);
	}
	server_conn_closed(c->server, c);
	config_unref(&c->config);
	free(c);
}

static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
	struct conn *c = req->data;
	free(req);
	c->state = CONN_CLOSED;
	uv_close((uv_handle_t *)&c->tcp, conn_on_close);
	uv_close((uv_handle_t *)&c->timer, conn_on_close);
}

static void conn_finish_close(struct conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	server_unschedule(c->server, c);
	uv_timer_stop(&c->timer);
	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
	/* A graceful end sends FIN after the last byte; an abort just closes. */
	if (c->state == CONN_CLOSING && conn_output_queued(c) == 0) {
		uv_shutdown_t *req = malloc(sizeof(*req));
		if (req) {
			req->data = c;
			if (uv_shutdown(req, (uv_stream_t *)&c->tcp, conn_on_shutdown) == 0) {
				c->state = CONN_CLOSED; /* no more writes */
				return;
			}
			free(req);
		}
	}
	c->state = CONN_CLOSED;
	uv_close((uv_handle_t *)&c->tcp, conn_on_close);
	uv_close((uv_handle_t *)&c->timer, conn_on_close);
}

static void conn_begin_close(struct conn *c, const char *reason, bool flush)
{
	if (c->state == CONN_CLOSED)
		return;
	if (c->state != CONN_CLOSING) {
		uint64_t ms = uv_now(c->tcp.loop) - c->started_ms;
		log_info("conn=%llu event=close reason=\"%s\" in=%llu out=%llu ms=%llu",
			 (unsigned long long)c->id, reason, (unsigned long long)c->bytes_in,
			 (unsigned long long)c->bytes_out, (unsigned long long)ms);
	}
	if (!flush) {
		buf_clear(&c->out);
		c->state = CONN_CLOSING;
		conn_finish_close(c);
		return;
	}
	if (c->state == CONN_CLOSING)
		return;
	c->state = CONN_CLOSING;
	conn_update_reading(c);
	if (!c->in_hook)
		conn_closing_flush(c); /* else conn_after_hook does it */
}

/* The last output of a closing connection: flush, TLS close_notify, a deadline, then close
 * once the queue is empty. */
static void conn_closing_flush(struct conn *c)
{
	if (c->close_started || c->state != CONN_CLOSING)
		return;
	c->close_started = true;
	conn_flush(c);
	if (c->tls)
		tls_session_bye(c->tls);
	uv_timer_start(&c->timer, conn_on_timer, (uint64_t)c->config->shutdown_timeout * 1000 + 1,
		       0);
	conn_check_drain(c);
}

void conn_close(struct conn *c, const char *reason)
{
	conn_begin_close(c, reason, true);
}

void conn_abort(struct conn *c, const char *reason)
{
	conn_begin_close(c, reason, false);
}

void conn_shutdown(struct conn *c)
{
	if (c->state != CONN_OPEN) {
		conn_begin_close(c, "server stopping", false);
		return;
	}
	if (c->session && c->proto->on_shutdown) {
		c->in_hook = true;
		c->proto->on_shutdown(c->session);
		conn_after_hook(c);
	}
	conn_begin_close(c, "server stopping", true);
}

/* ---- creation ---- */

struct conn *conn_new(uv_loop_t *loop, const struct conn_params *p)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (uv_tcp_init(loop, &c->tcp) < 0) {
		free(c);
		return NULL;
	}
	uv_timer_init(loop, &c->timer);
	c->open_handles = 2;
	c->tcp.data = c;
	c->timer.data = c;
	c->id = next_conn_id++;
	c->server = p->server;
	c->proto = p->proto;
	c->config = config_ref(p->config);
	c->lcfg = p->listener;
	c->creds = p->creds ? tls_creds_ref(p->creds) : NULL;
	c->started_ms = uv_now(loop);
	size_t max_line = c->lcfg->max_line ? c->lcfg->max_line : c->proto->default_max_line;
	buf_init(&c->in, max_line + 2 > CONN_IN_MIN ? max_line + 2 : CONN_IN_MIN);
	buf_init(&c->out, CONN_OUT_HARD_MAX);
	buf_init(&c->tls_rx, 1024 * 1024);
	c->idle_timeout_s =
		c->lcfg->idle_timeout ? c->lcfg->idle_timeout : c->proto->default_idle_timeout_s;
	c->state = CONN_OPEN;
	return c;
}

static void sockaddr_text(const struct sockaddr_storage *ss, char *out, size_t len,
			  unsigned *port_r, bool *loopback_r)
{
	*loopback_r = false;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		uv_ip4_name(in, out, len);
		*port_r = ntohs(in->sin_port);
		*loopback_r = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		uv_ip6_name(in6, out, len);
		*port_r = ntohs(in6->sin6_port);
		*loopback_r = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			/* ::ffff:127.0.0.1 is loopback too, and is logged as IPv4 */
			struct in_addr v4;
			memcpy(&v4, &in6->sin6_addr.s6_addr[12], 4);
			inet_ntop(AF_INET, &v4, out, (socklen_t)len);
			*loopback_r = (ntohl(v4.s_addr) >> 24) == 127;
		}
	} else {
		snprintf(out, len, "unknown");
		*port_r = 0;
	}
}

void conn_init_peer(struct conn *c)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	bool lb;
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
		sockaddr_text(&ss, c->peer, sizeof(c->peer), &c->peer_port, &c->loopback);
	else
		snprintf(c->peer, sizeof(c->peer), "unknown");
	len = sizeof(ss);
	char local[INET6_ADDRSTRLEN];
	if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
		sockaddr_text(&ss, local, sizeof(local), &c->local_port, &lb);
}

void conn_start(struct conn *c)
{
	uv_tcp_nodelay(&c->tcp, 1);
	log_info("conn=%llu event=connect listener=%s proto=%s peer=%s peer_port=%u port=%u "
		 "tls=%s",
		 (unsigned long long)c->id, c->lcfg->name, c->proto->name, c->peer, c->peer_port,
		 c->local_port,
		 c->lcfg->tls == LISTENER_TLS_IMPLICIT   ? "implicit"
		 : c->lcfg->tls == LISTENER_TLS_STARTTLS ? "starttls"
							 : "none");
	if (c->lcfg->tls == LISTENER_TLS_IMPLICIT) {
		c->state = CONN_TLS_HANDSHAKE;
		c->tls = tls_session_new(c->creds, conn_tls_push, c);
		if (!c->tls) {
			conn_begin_close(c, "cannot create TLS session", false);
			return;
		}
		conn_restart_idle_timer(c);
		conn_update_reading(c);
		return;
	}
	conn_restart_idle_timer(c);
	conn_start_session(c);
	conn_update_reading(c);
}
