/* proto — the one descriptor a protocol exports (STYLE.md rule 1, after nginx's
 * ngx_mail_protocol_t). A listener records which descriptor serves it; src/ never branches on
 * the protocol.
 *
 * Every hook runs on the loop thread. After any hook returns, the connection flushes the
 * output the hook queued. A hook may call conn_close(); the session is freed later, from
 * session_free, never inside a hook.
 */
#ifndef MK_PROTO_H
#define MK_PROTO_H

#include <stddef.h>

struct conn;

struct proto_ops {
	const char *name;                /* matches `protocol =` in a listener section */
	unsigned default_idle_timeout_s; /* when the listener sets none */
	unsigned default_max_line;       /* when the listener sets none */
	/* Sent, then the connection is closed, when a connection limit refuses a client. */
	const char *refuse_line;

	/* The connection is ready (after the TLS handshake on implicit TLS): allocate the session
	 * and queue the greeting. Returns NULL to close the connection at once. */
	void *(*session_new)(struct conn *c);
	/* New input is buffered: consume it with conn_read_line/conn_read_literal. Stop early and
	 * return when conn_output_blocked(); on_drain follows once output has drained. */
	void (*on_input)(void *session);
	/* Output fell below the low watermark after being blocked: resume the command in
	 * progress, then go on with buffered input. */
	void (*on_drain)(void *session);
	/* A STARTTLS upgrade finished its handshake (optional). */
	void (*on_tls_ready)(void *session);
	/* The idle timer fired: queue the protocol's goodbye. The connection closes after it. */
	void (*on_timeout)(void *session);
	/* The server is stopping: queue the goodbye. The connection closes after it. */
	void (*on_shutdown)(void *session);
	/* The connection is gone (peer closed, error, or after conn_close). No conn_* call on it
	 * may follow. Frees the session. */
	void (*session_free)(void *session);
};

#endif
