/* pop3_fake_conn — an in-process stand-in for src/conn.c for the POP3 session tests: it
 * implements every function of conn.h, records every byte the session writes, runs file
 * streams in small chunks (to exercise the filter's split handling), models the output
 * high watermark (on_drain) and STLS, and drives the libuv loop while the session waits
 * (a login, an asynchronous mailbox open), bounded by a deadline timer.
 *
 * Link it instead of mk_core's conn.c (a test that uses it links no server code).
 */
#ifndef MK_POP3_FAKE_CONN_H
#define MK_POP3_FAKE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct conn;
struct config;
struct proto_ops;

struct fake_conn_opts {
	const struct config *config;
	uv_loop_t *loop;
	bool tls;              /* the connection is TLS already (implicit TLS) */
	bool starttls;         /* a tls = starttls listener */
	bool loopback;         /* the peer is 127.0.0.1 */
	size_t high_watermark; /* queued output that blocks; 0 = never blocks */
	size_t stream_chunk;   /* bytes per filter call while streaming a file */
	unsigned max_bad;      /* max_bad_commands */
	unsigned max_line;     /* the listener's max_line (0 = ops default) */
};

/* A connection served by OPS; the session is created (greeting queued) at once. */
struct conn *fake_conn_new(const struct proto_ops *ops, const struct fake_conn_opts *opts);
/* Client bytes arrive; the session runs until it is quiet. */
void fake_conn_send(struct conn *c, const char *data);
void fake_conn_send_len(struct conn *c, const char *data, size_t len);
/* Client bytes arrive and on_input runs once; nothing else (the session may be left
 * waiting for the loop). */
void fake_conn_send_once(struct conn *c, const char *data);
/* Run until the session has nothing in progress (or is closed); fails the test after 10 s. */
void fake_conn_run(struct conn *c);
/* Everything flushed since the last take (after a hook returned, or by conn_flush: output
 * queued outside a hook and never flushed does not count), NUL-terminated; the caller frees
 * it. */
char *fake_conn_take(struct conn *c, size_t *len_r);
/* The client stops reading (hold): output above the watermark stays blocked, so a stream or
 * listing stops part way; releasing it runs the session on. */
void fake_conn_hold(struct conn *c, bool hold);
bool fake_conn_closed(const struct conn *c);
/* Bad commands counted so far. */
unsigned fake_conn_bad_count(const struct conn *c);
/* Hooks the session saw: idle timeout and shutdown. */
void fake_conn_timeout(struct conn *c);
void fake_conn_shutdown(struct conn *c);
/* Drop the connection (peer gone) and free the session. */
void fake_conn_free(struct conn **c_p);

#endif
