/* imap_fake_conn — an in-process stand-in for src/conn.c for IMAP unit tests: it implements
 * every function of conn.h over two buffers, and drives a proto_ops the way the server does
 * (session_new, on_input, on_drain, session_free), so a test can feed bytes and check the
 * exact bytes the protocol wrote. Deferred work (resumed input, file streams) runs in
 * fake_conn_pump(), never re-entrantly, as in the real connection. */
#ifndef MK_IMAP_FAKE_CONN_H
#define MK_IMAP_FAKE_CONN_H

#include <stdbool.h>
#include <stddef.h>

#include "conn.h"
#include "proto.h"

struct fake_conn_opts {
	bool tls;          /* implicit TLS already active */
	bool can_starttls; /* a starttls listener */
	bool loopback;     /* peer is 127.0.0.1 */
	bool allow_plaintext_auth;
	unsigned max_line;         /* 0: the protocol's default */
	unsigned max_bad_commands; /* 0: 20 */
	size_t high_watermark;     /* 0: unlimited */
	const char *mail_root;     /* config mail_root (with %u) */
	unsigned auth_max_failures;
	unsigned idle_keepalive; /* config imap_idle_keepalive */
	bool literal_minus;      /* config imap_literal_plus = no */
	uint64_t quota_storage;  /* config quota_storage (bytes; 0: none) */
	unsigned quota_messages; /* config quota_messages (0: none) */
	uv_loop_t *loop;         /* shared loop (several sessions on one store); NULL: own */
};

/* Create the connection and call session_new (the greeting is in the output). */
struct conn *fake_conn_new(const struct proto_ops *ops, const struct fake_conn_opts *opts);
/* Append input and deliver it (on_input unless paused), then pump. */
void fake_conn_input(struct conn *c, const char *s);
void fake_conn_input_n(struct conn *c, const char *data, size_t len);
/* Run deferred work until nothing is left: resumed input, streams, drain. */
void fake_conn_pump(struct conn *c);
/* The output written so far (NUL-terminated, malloc'd) and clear it; the caller frees. */
char *fake_conn_take_output(struct conn *c);
/* Put output taken with fake_conn_take_output back in front (to peek). */
void fake_conn_put_back(struct conn *c, const char *s);
/* Bytes of output not yet taken. */
size_t fake_conn_output_len(const struct conn *c);
/* How many times on_drain ran (output passed high_watermark and was "sent"). */
unsigned fake_conn_drains(const struct conn *c);
/* The output so far must equal expected exactly (then it is cleared). */
void fake_conn_expect(struct conn *c, const char *expected);
bool fake_conn_closed(const struct conn *c);
bool fake_conn_starttls_called(const struct conn *c);
unsigned fake_conn_idle_timeout(const struct conn *c);
void *fake_conn_session(struct conn *c);
uv_loop_t *fake_conn_uv_loop(struct conn *c);
/* Simulate the STARTTLS handshake finishing: TLS on, on_tls_ready. */
void fake_conn_finish_starttls(struct conn *c);
/* Fire the idle timer / the server shutdown. */
void fake_conn_timeout(struct conn *c);
void fake_conn_shutdown(struct conn *c);
/* session_free and free everything. */
void fake_conn_free(struct conn **c_p);

#endif
