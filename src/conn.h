/* conn — one client connection: a socket, an optional GnuTLS session, an input buffer holding
 * only unconsumed bytes, and an output queue with high/low watermarks. A protocol reads lines
 * and literals from it and writes bytes to it; it never knows whether TLS is underneath.
 *
 * Lifetime: created by the server on accept, freed after uv_close's callback, never inside
 * one of its own callbacks (STYLE.md rule 9). The protocol's session is freed first, through
 * proto_ops.session_free.
 */
#ifndef MK_CONN_H
#define MK_CONN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

struct conn;
struct config;
struct config_listener;

/* Identity */
uint64_t conn_id(const struct conn *c);
/* The client's address as text ("127.0.0.1", "::1"). */
const char *conn_peer_addr(const struct conn *c);
unsigned conn_local_port(const struct conn *c);
bool conn_peer_is_loopback(const struct conn *c);
uv_loop_t *conn_loop(const struct conn *c);
/* The config and listener section the connection was accepted under (stable for its life). */
const struct config *conn_config(const struct conn *c);
const struct config_listener *conn_listener(const struct conn *c);

/* TLS */
bool conn_is_tls(const struct conn *c);
/* True on a `tls = starttls` listener while the connection is still plaintext. */
bool conn_can_starttls(const struct conn *c);
/* Begin the STARTTLS/STLS handshake. Queue the OK reply first: it is flushed in plaintext,
 * then every plaintext byte already buffered is discarded (RFC 2595 §3.1 / RFC 3501 §6.2.1)
 * and input is taken only through TLS. proto_ops.on_tls_ready is called when it completes.
 * Returns 0 or -EINVAL when STARTTLS is not possible here. */
int conn_starttls(struct conn *c);
/* "TLSv1.3 AES-256-GCM" or NULL. */
const char *conn_tls_describe(const struct conn *c);

/* COMPRESS=DEFLATE (RFC 4978): queue the OK reply first; it is flushed uncompressed, then
 * both directions are raw DEFLATE (inside TLS when there is TLS), output sync-flushed after
 * every hook so replies never wait in the compressor. Returns 0, -EALREADY, -EINVAL (during a
 * STARTTLS handshake) or -ENOMEM. Costs about 72 KiB per connection while active. */
int conn_compress_start(struct conn *c);
bool conn_is_compressed(const struct conn *c);

/* Input */
enum conn_line_result {
	CONN_LINE_MORE,     /* no complete line yet */
	CONN_LINE_OK,       /* *line_r and *len_r describe the line, terminator excluded */
	CONN_LINE_TOO_LONG, /* longer than the listener's max_line; the connection must end */
};
/* Take the next line. The bytes are borrowed until the hook returns. */
enum conn_line_result conn_read_line(struct conn *c, const char **line_r, size_t *len_r);
/* Literal mode: take up to *remaining bytes (see buf_take_literal). */
size_t conn_read_literal(struct conn *c, uint64_t *remaining, const char **data_r);
/* Bytes buffered and not consumed yet. */
size_t conn_input_pending(const struct conn *c);
/* Stop delivering on_input (e.g. while a login waits for PAM); buffered bytes are kept and
 * reading from the socket stops once the input buffer is full. */
void conn_input_pause(struct conn *c);
/* Deliver on_input again; if input is buffered, on_input is called soon (not re-entrantly). */
void conn_input_resume(struct conn *c);

/* Output */
void conn_write(struct conn *c, const void *data, size_t len);
void conn_write_str(struct conn *c, const char *s);
void conn_printf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void conn_vprintf(struct conn *c, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
/* True while queued output is above the high watermark: produce no more until on_drain. */
bool conn_output_blocked(const struct conn *c);
/* Bytes queued and not yet accepted by the kernel. */
size_t conn_output_queued(const struct conn *c);
/* Push queued output to the socket now (done automatically after every hook). */
void conn_flush(struct conn *c);

/* Streaming a file: bytes [offset, offset+length) of fd are read in chunks as output drains.
 * Each chunk is passed to filter (which writes the transformed bytes with conn_write), or
 * written as it is when filter is NULL; last is true for the final call (len may be 0).
 * done(ctx, status) follows once all was queued (status 0), on a read error (-errno), or
 * when the connection closes first (-ECANCELED). The caller keeps owning fd. on_input is not
 * called while a stream runs. */
typedef void conn_filter_fn(struct conn *c, void *ctx, const char *data, size_t len, bool last);
typedef void conn_stream_done_fn(struct conn *c, void *ctx, int status);
int conn_stream_file(struct conn *c, int fd, uint64_t offset, uint64_t length,
		     conn_filter_fn *filter, conn_stream_done_fn *done, void *ctx);

/* Limits and timers */
/* Count a bad command. Returns true when the listener's max_bad_commands is reached: the
 * protocol then queues its goodbye and calls conn_close. */
bool conn_note_bad_command(struct conn *c);
/* Replace the idle timeout (seconds; 0 restores the listener's). IMAP IDLE uses this. */
void conn_set_idle_timeout(struct conn *c, unsigned seconds);

/* Closing */
/* Flush what is queued (TLS close_notify after it), then close. reason goes to the log.
 * Idempotent; no hook but session_free follows. */
void conn_close(struct conn *c, const char *reason);
/* Close now, dropping queued output (no TLS close_notify). */
void conn_abort(struct conn *c, const char *reason);
bool conn_is_closing(const struct conn *c);

#endif
