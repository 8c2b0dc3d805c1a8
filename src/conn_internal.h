/* conn_internal — what server.c and conn.c share; protocols never include this. */
#ifndef MK_CONN_INTERNAL_H
#define MK_CONN_INTERNAL_H

#include <stdbool.h>
#include <uv.h>

#include "conn.h"

struct server;
struct tls_creds;
struct proto_ops;

struct conn_params {
	struct server *server;
	const struct proto_ops *proto;
	struct config *config; /* the connection takes its own reference */
	const struct config_listener *listener;
	struct tls_creds *creds; /* non-NULL on TLS listeners; the connection takes a reference */
};

/* Allocate a connection whose TCP handle is initialised on loop, ready for uv_accept. */
struct conn *conn_new(uv_loop_t *loop, const struct conn_params *params);
/* After uv_accept succeeded: learn the client's and our address. */
void conn_init_peer(struct conn *c);
/* A connection limit was hit: the client gets proto->refuse_line (after the TLS handshake on
 * implicit TLS) and the connection closes. */
void conn_set_refused(struct conn *c);
/* Start reading, greet or start TLS. */
void conn_start(struct conn *c);
/* The handle to pass to uv_accept. */
uv_stream_t *conn_stream(struct conn *c);
/* Server stopping: the protocol says goodbye, then the connection closes. */
void conn_shutdown(struct conn *c);
/* Deferred work (resumed input, streams): called from the server's idle handler. */
void conn_run_pending(struct conn *c);

/* Intrusive list links owned by server.c. */
struct conn **conn_link_next(struct conn *c);
struct conn **conn_link_prev(struct conn *c);
struct conn **conn_pending_next(struct conn *c);
bool *conn_pending_flag(struct conn *c);

/* Provided by server.c for conn.c. */
void server_schedule(struct server *s, struct conn *c);
void server_unschedule(struct server *s, struct conn *c);
void server_conn_closed(struct server *s, struct conn *c);
/* The loop's one read buffer (DESIGN.md "Idle is cheap"). */
char *server_read_buffer(struct server *s, size_t *len_r);

#endif
