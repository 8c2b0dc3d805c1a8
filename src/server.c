#include "server.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "conn_internal.h"
#include "log.h"
#include "proto.h"
#include "tls.h"

#define SERVER_READ_BUFFER 65536
#define SERVER_BACKLOG     511
#define ADDR_BUCKETS       1024

struct listener {
	uv_tcp_t tcp;
	struct server *server;
	char *name;
	const struct proto_ops *proto;
	char address[64];
	bool closed;
};

/* Connections per client address (per-address limit). */
struct addr_count {
	struct addr_count *next;
	unsigned count;
	char addr[46];
};

struct server {
	uv_loop_t *loop;
	struct config *config;
	const struct proto_ops *const *protos;
	size_t n_protos;
	struct tls_creds *creds;

	struct listener **listeners;
	size_t n_listeners;
	unsigned open_listener_handles;

	struct conn *conns; /* every open connection */
	size_t n_conns;
	struct conn *pending; /* connections with deferred work */
	uv_idle_t idle;
	uv_signal_t sig_term, sig_int, sig_hup;
	uv_timer_t stop_timer;
	bool stopping;
	bool listening;
	void (*on_stop)(void);
	void (*on_reload)(const struct config *cfg);
	struct addr_count *addrs[ADDR_BUCKETS];
	char read_buffer[SERVER_READ_BUFFER];
};

static const struct proto_ops *server_find_proto(struct server *s, const char *name)
{
	for (size_t i = 0; i < s->n_protos; i++)
		if (strcmp(s->protos[i]->name, name) == 0)
			return s->protos[i];
	return NULL;
}

char *server_read_buffer(struct server *s, size_t *len_r)
{
	*len_r = sizeof(s->read_buffer);
	return s->read_buffer;
}

/* ---- per-address counts ---- */

static unsigned addr_hash(const char *a)
{
	unsigned h = 2166136261u;
	for (; *a; a++)
		h = (h ^ (unsigned char)*a) * 16777619u;
	return h % ADDR_BUCKETS;
}

static struct addr_count *addr_find(struct server *s, const char *addr, bool create)
{
	unsigned h = addr_hash(addr);
	for (struct addr_count *a = s->addrs[h]; a; a = a->next)
		if (strcmp(a->addr, addr) == 0)
			return a;
	if (!create)
		return NULL;
	struct addr_count *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	snprintf(a->addr, sizeof(a->addr), "%s", addr);
	a->next = s->addrs[h];
	s->addrs[h] = a;
	return a;
}

static void addr_release(struct server *s, const char *addr)
{
	unsigned h = addr_hash(addr);
	for (struct addr_count **ap = &s->addrs[h]; *ap; ap = &(*ap)->next) {
		struct addr_count *a = *ap;
		if (strcmp(a->addr, addr) != 0)
			continue;
		if (--a->count == 0) {
			*ap = a->next;
			free(a);
		}
		return;
	}
}

/* ---- deferred work ---- */

static void server_on_idle(uv_idle_t *h)
{
	struct server *s = h->data;
	/* Take the list first: work may schedule more, which runs on the next turn. */
	struct conn *list = s->pending;
	s->pending = NULL;
	while (list) {
		struct conn *c = list;
		list = *conn_pending_next(c);
		*conn_pending_next(c) = NULL;
		*conn_pending_flag(c) = false;
		conn_run_pending(c);
	}
	if (!s->pending)
		uv_idle_stop(&s->idle);
}

void server_schedule(struct server *s, struct conn *c)
{
	if (*conn_pending_flag(c))
		return;
	*conn_pending_flag(c) = true;
	*conn_pending_next(c) = s->pending;
	s->pending = c;
	uv_idle_start(&s->idle, server_on_idle);
}

void server_unschedule(struct server *s, struct conn *c)
{
	if (!*conn_pending_flag(c))
		return;
	*conn_pending_flag(c) = false;
	for (struct conn **pp = &s->pending; *pp; pp = conn_pending_next(*pp)) {
		if (*pp == c) {
			*pp = *conn_pending_next(c);
			*conn_pending_next(c) = NULL;
			return;
		}
	}
}

/* ---- connections ---- */

static void server_maybe_finish_stop(struct server *s);

void server_conn_closed(struct server *s, struct conn *c)
{
	server_unschedule(s, c);
	struct conn *next = *conn_link_next(c), *prev = *conn_link_prev(c);
	if (prev)
		*conn_link_next(prev) = next;
	else
		s->conns = next;
	if (next)
		*conn_link_prev(next) = prev;
	s->n_conns--;
	addr_release(s, conn_peer_addr(c));
	server_maybe_finish_stop(s);
}

size_t server_connection_count(const struct server *s)
{
	return s->n_conns;
}

static void server_on_connection(uv_stream_t *lstream, int status)
{
	struct listener *l = lstream->data;
	struct server *s = l->server;
	if (status < 0) {
		log_warn("event=accept_failed listener=%s error=\"%s\"", l->name,
			 uv_strerror(status));
		return;
	}
	const struct config_listener *lcfg = config_listener_find(s->config, l->name);
	struct conn_params p = {
		.server = s,
		.proto = l->proto,
		.config = s->config,
		.listener = lcfg,
		.creds = lcfg->tls != LISTENER_TLS_NONE ? s->creds : NULL,
	};
	struct conn *c = conn_new(s->loop, &p);
	if (!c) {
		log_error("event=accept_failed listener=%s error=\"out of memory\"", l->name);
		return;
	}
	if (uv_accept(lstream, conn_stream(c)) < 0) {
		conn_abort(c, "accept failed");
		return;
	}
	/* Link and count first, so every way out (a refusal too) goes through
	 * server_conn_closed. */
	*conn_link_next(c) = s->conns;
	if (s->conns)
		*conn_link_prev(s->conns) = c;
	s->conns = c;
	s->n_conns++;
	conn_init_peer(c);
	struct addr_count *a = addr_find(s, conn_peer_addr(c), true);
	if (!a) {
		conn_abort(c, "out of memory");
		return;
	}
	a->count++;
	if (s->n_conns > s->config->max_connections) {
		log_warn("conn=%llu event=refused reason=max_connections limit=%u peer=%s",
			 (unsigned long long)conn_id(c), s->config->max_connections,
			 conn_peer_addr(c));
		conn_set_refused(c);
	} else if (a->count > s->config->max_connections_per_address) {
		log_warn("conn=%llu event=refused reason=max_connections_per_address limit=%u "
			 "peer=%s",
			 (unsigned long long)conn_id(c), s->config->max_connections_per_address,
			 conn_peer_addr(c));
		conn_set_refused(c);
	}
	conn_start(c);
}

/* ---- listeners ---- */

static void server_on_listener_close(uv_handle_t *h)
{
	struct listener *l = h->data;
	struct server *s = l->server;
	s->open_listener_handles--;
	free(l->name);
	free(l);
	server_maybe_finish_stop(s);
}

static int server_bind_one(struct server *s, const struct config_listener *lc,
			   const struct proto_ops *proto, const char *address, bool wildcard)
{
	struct sockaddr_storage ss;
	bool v6 = strchr(address, ':') != NULL;
	int r = v6 ? uv_ip6_addr(address, (int)lc->port, (struct sockaddr_in6 *)&ss)
		   : uv_ip4_addr(address, (int)lc->port, (struct sockaddr_in *)&ss);
	if (r < 0)
		return r;
	struct listener *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->server = s;
	l->name = strdup(lc->name);
	l->proto = proto;
	snprintf(l->address, sizeof(l->address), "%s", address);
	uv_tcp_init(s->loop, &l->tcp);
	l->tcp.data = l;
	s->open_listener_handles++;
	r = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, v6 ? UV_TCP_IPV6ONLY : 0);
	if (r == 0) {
		/* bind errors surface at listen time in libuv: probe with getsockname */
		struct sockaddr_storage got;
		int len = sizeof(got);
		r = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&got, &len);
	}
	if (r < 0) {
		uv_close((uv_handle_t *)&l->tcp, server_on_listener_close);
		if (wildcard && v6 && (r == UV_EAFNOSUPPORT || r == UV_EADDRNOTAVAIL)) {
			log_warn("event=listen_skipped listener=%s address=%s reason=\"no IPv6 "
				 "here\"",
				 lc->name, address);
			return 0;
		}
		log_error("event=bind_failed listener=%s address=%s port=%u error=\"%s\"", lc->name,
			  address, lc->port, uv_strerror(r));
		return r;
	}
	struct listener **ls = realloc(s->listeners, (s->n_listeners + 1) * sizeof(*ls));
	if (!ls) {
		uv_close((uv_handle_t *)&l->tcp, server_on_listener_close);
		return -ENOMEM;
	}
	s->listeners = ls;
	s->listeners[s->n_listeners++] = l;
	return 0;
}

int server_new(uv_loop_t *loop, struct config *config, const struct proto_ops *const *protos,
	       size_t n_protos, struct server **server_r)
{
	struct server *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->config = config_ref(config);
	s->protos = protos;
	s->n_protos = n_protos;
	uv_idle_init(loop, &s->idle);
	s->idle.data = s;
	uv_timer_init(loop, &s->stop_timer);
	s->stop_timer.data = s;
	uv_signal_init(loop, &s->sig_term);
	uv_signal_init(loop, &s->sig_int);
	uv_signal_init(loop, &s->sig_hup);
	s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
	/* Internal handles must not keep the loop alive on their own. */
	uv_unref((uv_handle_t *)&s->idle);
	*server_r = s;
	return 0;
}

static int server_load_creds(struct server *s, const struct config *cfg, struct tls_creds **creds_r)
{
	char err[512];
	*creds_r = NULL;
	if (!cfg->tls_cert || !cfg->tls_key)
		return 0;
	int r = tls_creds_load(cfg->tls_cert, cfg->tls_key, cfg->tls_priority, creds_r, err,
			       sizeof(err));
	if (r < 0) {
		log_error("event=tls_load_failed error=\"%s\"", err);
		return r;
	}
	char fp[65];
	tls_creds_fingerprint(*creds_r, fp);
	log_info("event=tls_loaded cert=%s sha256=%s", cfg->tls_cert, fp);
	return 0;
}

int server_bind(struct server *s)
{
	int r = server_load_creds(s, s->config, &s->creds);
	if (r < 0)
		return r;
	for (size_t i = 0; i < s->config->n_listeners; i++) {
		const struct config_listener *lc = &s->config->listeners[i];
		const struct proto_ops *proto = server_find_proto(s, lc->protocol);
		if (!proto) {
			log_error(
				"event=bind_failed listener=%s error=\"protocol %s is not part of "
				"this build\"",
				lc->name, lc->protocol);
			return -EPROTONOSUPPORT;
		}
		for (size_t a = 0; a < lc->n_addresses; a++) {
			if (strcmp(lc->addresses[a], "*") == 0) {
				if ((r = server_bind_one(s, lc, proto, "0.0.0.0", true)) < 0 ||
				    (r = server_bind_one(s, lc, proto, "::", true)) < 0)
					return r;
			} else if ((r = server_bind_one(s, lc, proto, lc->addresses[a], false)) <
				   0) {
				return r;
			}
		}
	}
	return 0;
}

static void server_on_signal(uv_signal_t *h, int signum)
{
	struct server *s = h->data;
	if (signum == SIGHUP) {
		log_info("event=signal signal=HUP action=reload");
		(void)server_reload(s);
		return;
	}
	log_info("event=signal signal=%s action=stop", signum == SIGTERM ? "TERM" : "INT");
	server_stop(s);
}

int server_listen(struct server *s)
{
	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < s->n_listeners; i++) {
		struct listener *l = s->listeners[i];
		int r = uv_listen((uv_stream_t *)&l->tcp, SERVER_BACKLOG, server_on_connection);
		if (r < 0) {
			log_error("event=listen_failed listener=%s address=%s error=\"%s\"",
				  l->name, l->address, uv_strerror(r));
			return r;
		}
		struct sockaddr_storage ss;
		int len = sizeof(ss);
		unsigned port = 0;
		if (uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len) == 0)
			port = ntohs(ss.ss_family == AF_INET6
					     ? ((struct sockaddr_in6 *)&ss)->sin6_port
					     : ((struct sockaddr_in *)&ss)->sin_port);
		log_info("event=listening listener=%s proto=%s address=%s port=%u", l->name,
			 l->proto->name, l->address, port);
	}
	uv_signal_start(&s->sig_term, server_on_signal, SIGTERM);
	uv_signal_start(&s->sig_int, server_on_signal, SIGINT);
	uv_signal_start(&s->sig_hup, server_on_signal, SIGHUP);
	s->listening = true;
	return 0;
}

static void server_on_stop_timer(uv_timer_t *t)
{
	struct server *s = t->data;
	log_warn("event=stop_timeout open=%zu", s->n_conns);
	for (struct conn *c = s->conns, *next; c; c = next) {
		next = *conn_link_next(c);
		conn_abort(c, "server stopping (timeout)");
	}
}

static void server_maybe_finish_stop(struct server *s)
{
	if (!s->stopping || s->n_conns > 0 || s->open_listener_handles > 0)
		return;
	/* Everything is closed: release the loop's remaining handles so uv_run returns. */
	if (!uv_is_closing((uv_handle_t *)&s->stop_timer)) {
		uv_close((uv_handle_t *)&s->stop_timer, NULL);
		uv_close((uv_handle_t *)&s->idle, NULL);
		uv_close((uv_handle_t *)&s->sig_term, NULL);
		uv_close((uv_handle_t *)&s->sig_int, NULL);
		uv_close((uv_handle_t *)&s->sig_hup, NULL);
		log_info("event=stopped");
	}
}

void server_stop(struct server *s)
{
	if (s->stopping)
		return;
	s->stopping = true;
	log_info("event=stopping open=%zu", s->n_conns);
	for (size_t i = 0; i < s->n_listeners; i++)
		uv_close((uv_handle_t *)&s->listeners[i]->tcp, server_on_listener_close);
	s->n_listeners = 0;
	for (struct conn *c = s->conns, *next; c; c = next) {
		next = *conn_link_next(c);
		conn_shutdown(c);
	}
	if (s->on_stop)
		s->on_stop();
	uv_timer_start(&s->stop_timer, server_on_stop_timer,
		       (uint64_t)s->config->shutdown_timeout * 1000 + 1, 0);
	uv_unref((uv_handle_t *)&s->stop_timer);
	server_maybe_finish_stop(s);
}

void server_on_stop(struct server *s, void (*fn)(void))
{
	s->on_stop = fn;
}

void server_on_reload(struct server *s, void (*fn)(const struct config *cfg))
{
	s->on_reload = fn;
}

/* Settings that need a restart: the listener set and where they listen. */
static bool server_listeners_equal(const struct config *a, const struct config *b)
{
	if (a->n_listeners != b->n_listeners)
		return false;
	for (size_t i = 0; i < a->n_listeners; i++) {
		const struct config_listener *x = &a->listeners[i];
		const struct config_listener *y = config_listener_find(b, x->name);
		if (!y || strcmp(x->protocol, y->protocol) != 0 || x->port != y->port ||
		    x->n_addresses != y->n_addresses)
			return false;
		for (size_t k = 0; k < x->n_addresses; k++)
			if (strcmp(x->addresses[k], y->addresses[k]) != 0)
				return false;
		if ((x->tls == LISTENER_TLS_NONE) != (y->tls == LISTENER_TLS_NONE))
			return false;
	}
	return true;
}

int server_reload(struct server *s)
{
	struct config *cfg = NULL;
	struct config_errors errs;
	int r = config_load(s->config->path, &cfg, &errs);
	if (r < 0) {
		for (size_t i = 0; i < errs.n; i++)
			log_error("event=reload_failed file=%s line=%u error=\"%s\"",
				  errs.items[i].file, errs.items[i].line, errs.items[i].message);
		config_errors_free(&errs);
		log_warn("event=reload_failed action=\"keeping the running configuration\"");
		return r;
	}
	if (!server_listeners_equal(s->config, cfg)) {
		log_warn(
			"event=reload_partial reason=\"listeners changed: they take effect after a "
			"restart\"");
		config_unref(&cfg);
		return -EINVAL;
	}
	struct tls_creds *creds = NULL;
	if (server_load_creds(s, cfg, &creds) < 0) {
		log_warn("event=reload_failed action=\"keeping the running certificate and "
			 "configuration\"");
		config_unref(&cfg);
		return -EINVAL;
	}
	/* New handshakes use the new credentials; open sessions hold references to theirs. */
	tls_creds_unref(&s->creds);
	s->creds = creds;
	config_unref(&s->config);
	s->config = cfg;
	enum log_level lvl;
	if (cfg->log_level && log_level_parse(cfg->log_level, &lvl))
		log_set_level(lvl);
	log_info("event=reloaded");
	if (s->on_reload)
		s->on_reload(cfg);
	return 0;
}

void server_free(struct server **s_p)
{
	struct server *s = *s_p;
	if (!s)
		return;
	*s_p = NULL;
	for (size_t b = 0; b < ADDR_BUCKETS; b++) {
		while (s->addrs[b]) {
			struct addr_count *a = s->addrs[b];
			s->addrs[b] = a->next;
			free(a);
		}
	}
	free(s->listeners);
	tls_creds_unref(&s->creds);
	config_unref(&s->config);
	free(s);
}
