/* auth — logins for every protocol: PAM in a separate helper process, failed-login delays,
 * the plaintext policy and the user-to-mailbox mapping.
 *
 * Start-up (src/main.c), in this order:
 *     auth_service_start(cfg, &svc)     // while still root, before the loop runs; forks the
 *                                       // helper (authd.h), which keeps root
 *     process_drop_privileges(cfg)      // src/process.h: the network process becomes mail_user
 *     auth_service_attach(svc, loop)
 *     uv_run(loop) ...
 *     auth_service_free(&svc); uv_run(loop, UV_RUN_DEFAULT) // closes handles
 *
 * A protocol logs a user in with auth_request_start() and waits for done(); the session
 * must not read further commands meanwhile (conn_input_pause). The result maps to replies:
 *
 *     AUTH_RESULT_OK        IMAP OK            POP3 +OK         (use canonical_user: it
 *                                                              passed auth_user_name_valid)
 *     AUTH_RESULT_PERMFAIL  NO [AUTHENTICATIONFAILED]  -ERR [AUTH]
 *     AUTH_RESULT_EXPIRED   NO [EXPIRED]       -ERR [AUTH]
 *     AUTH_RESULT_TEMPFAIL  NO [UNAVAILABLE]   -ERR [SYS/TEMP]
 *
 * Failed logins (PERMFAIL) are delayed here, per client address: the first by
 * cfg->auth_fail_delay_ms, each further one from the same address twice as long, up to
 * cfg->auth_fail_delay_max_ms; a success from that address resets it, and other addresses
 * are not delayed. Counting failures per connection and closing it after
 * cfg->auth_max_failures is the protocol's job (auth_failures_exceeded()).
 *
 * Every login is logged once, when the helper answers: user, client address, protocol,
 * mechanism, tls yes/no, result, PAM's reason, delay; never the password.
 */
#ifndef MK_AUTH_H
#define MK_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "auth_wire.h" /* enum auth_result, auth_result_name(), AUTH_WIRE_MAX_* caps */

struct config;
struct auth_service;
struct auth_request;

/* Fork the auth helper (a supervisor that keeps the privileges it was started with and
 * restarts its dispatcher) and wait for its first channel. Copies what it needs from cfg
 * (pam_service, pam_confdir, auth_workers, the delays). Call before the privilege drop and
 * before any thread is started. Returns 0, or -errno (the helper could not be started). */
int auth_service_start(const struct config *cfg, struct auth_service **svc_r);

/* Start talking to the helper on loop. Returns 0 or -errno (a libuv error mapped to errno). */
int auth_service_attach(struct auth_service *svc, uv_loop_t *loop);

/* Stop: every request still waiting gets done(TEMPFAIL, "auth service stopped") on the next
 * loop iteration (cancelled ones stay silent), the helper is told to exit (and reaped, waiting
 * at most 2 s). If the service was attached, the memory is released from close callbacks: run
 * the loop afterwards. Sets *svc_p to NULL; NULL is fine. */
void auth_service_free(struct auth_service **svc_p);

/* The pid of the helper process currently serving requests (the dispatcher), or 0 while none
 * is connected; and the supervisor's. For logs and tests. */
pid_t auth_service_helper_pid(const struct auth_service *svc);
pid_t auth_service_supervisor_pid(const struct auth_service *svc);

/* What a protocol knows about a login attempt. Strings are copied; the password is wiped from
 * every copy once it has been handed to the helper. */
struct auth_request_info {
	const char *protocol;  /* "imap", "pop3" (for the log) */
	const char *mechanism; /* "PLAIN", "LOGIN", "USER" (POP3 USER/PASS), "IMAP-LOGIN" */
	const char *user;      /* as the client sent it */
	const char *password;
	const char *remote_address; /* "192.0.2.1", "::1"; the throttling key */
	unsigned local_port;
	bool tls;
	uint64_t conn_id; /* for the log lines */
};

/* canonical_user (OK only, else NULL) and reason (PAM's words or ours, for logs; never show
 * it to the client) are valid during the call only. After done returns the request is gone:
 * forget the pointer (do not cancel it). */
typedef void auth_done_fn(void *ctx, enum auth_result result, const char *canonical_user,
			  const char *reason);

/* Check a login. done is called exactly once, later, on the loop thread (never from inside
 * this call), unless the request is cancelled first. A user or password longer than the
 * caps in auth_wire.h is a PERMFAIL; a helper that is down or dies is a TEMPFAIL, never a
 * success. Returns NULL only when out of memory, or (errno EINVAL) before
 * auth_service_attach. */
struct auth_request *auth_request_start(struct auth_service *svc,
					const struct auth_request_info *info, auth_done_fn *done,
					void *ctx);

/* The session goes away: done will not be called. The helper's answer is still logged and
 * still counts for the address's delay. Sets *req_p to NULL; NULL is fine. Must not be called
 * from inside this request's own done(). */
void auth_request_cancel(struct auth_request **req_p);

/* The delay the next failed login from address would get, in ms (tests, logs). */
uint64_t auth_service_fail_delay_ms(const struct auth_service *svc, const char *address);

/* Policy: may a plaintext mechanism (PLAIN, LOGIN, IMAP LOGIN, POP3 USER/PASS) be used on this
 * connection? Yes over TLS or from loopback, or everywhere when allow_plaintext_auth is set.
 * When it returns false, IMAP advertises LOGINDISABLED and no AUTH=PLAIN, POP3 omits USER
 * and SASL PLAIN (RFC 3501 §6.2.3, RFC 2595 §6). */
bool auth_plaintext_allowed(const struct config *cfg, bool tls, bool peer_is_loopback);

/* After failures failed logins on one connection, close it (failures >=
 * cfg->auth_max_failures; 0 in the config means never). */
bool auth_failures_exceeded(const struct config *cfg, unsigned failures);

/* A canonical user name that may go into a path: 1..AUTH_WIRE_MAX_USER bytes, no '/', no
 * leading '.', no control characters (bytes below 0x20 and 0x7f). */
bool auth_user_name_valid(const char *user);

/* cfg->mail_root with every "%u" replaced by user, into out[outlen]. Returns 0, -EINVAL for an
 * invalid user name (auth_user_name_valid) or no mail_root, -ENAMETOOLONG when it does not
 * fit. */
int auth_user_mail_path(const struct config *cfg, const char *user, char *out, size_t outlen);

#endif
