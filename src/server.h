/* server — the listeners and every connection, on one libuv loop.
 *
 * Start-up order (DESIGN.md "Process model"): server_new and server_bind run while the process
 * may still be root (ports below 1024); server_listen runs after the privilege drop.
 */
#ifndef MK_SERVER_H
#define MK_SERVER_H

#include <stddef.h>
#include <uv.h>

struct server;
struct config;
struct proto_ops;

/* protos: the protocols built in (looked up by name for each listener). Takes a reference
 * on config. Returns 0 or -errno, with why in the log. */
int server_new(uv_loop_t *loop, struct config *config, const struct proto_ops *const *protos,
	       size_t n_protos, struct server **server_r);
/* Load TLS credentials and bind every listener's addresses. */
int server_bind(struct server *s);
/* Start accepting, and handle SIGTERM/SIGINT (stop) and SIGHUP (reload). */
int server_listen(struct server *s);
/* Stop accepting, tell every session goodbye, close when flushed (or after
 * shutdown_timeout). uv_run returns once everything is closed. */
void server_stop(struct server *s);
/* Call fn once when the server starts stopping (after the sessions were told goodbye). */
void server_on_stop(struct server *s, void (*fn)(void));
/* Call fn with the new config after every reload that took effect (SIGHUP). */
void server_on_reload(struct server *s, void (*fn)(const struct config *cfg));
/* Re-read the config file: new certificates and live settings for new connections. A bad
 * file or certificate is logged and the old one stays. Returns 0 or -errno. */
int server_reload(struct server *s);
void server_free(struct server **s_p);

/* For tests and the benchmark: current number of open connections. */
size_t server_connection_count(const struct server *s);

#endif
