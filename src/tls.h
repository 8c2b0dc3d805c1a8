/* tls — GnuTLS behind the connection layer (STYLE.md §2, after knot-resolver's daemon/tls.c).
 *
 * Credentials are loaded once and reference-counted: every session holds a reference, so a
 * SIGHUP reload hands new handshakes the new certificate while open sessions keep theirs.
 *
 * A session never touches a socket: ciphertext comes in through tls_session_feed() and goes
 * out through the push callback, which must accept every byte (it queues them).
 */
#ifndef MK_TLS_H
#define MK_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct tls_creds;
struct tls_session;

/* The default priority string: GnuTLS's defaults, TLS 1.2 and 1.3 only. */
#define TLS_DEFAULT_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* Load a PEM certificate chain and key and compile the priority string. On error returns
 * -EINVAL and writes why into err. */
int tls_creds_load(const char *cert, const char *key, const char *priority,
		   struct tls_creds **creds_r, char *err, size_t errlen);
struct tls_creds *tls_creds_ref(struct tls_creds *creds);
void tls_creds_unref(struct tls_creds **creds_p);
/* SHA-256 of the first certificate in the chain, as lowercase hex (65 bytes with NUL). */
void tls_creds_fingerprint(const struct tls_creds *creds, char out[65]);

/* Push ciphertext to the network; must take all of it (queue what cannot go now). Returns 0,
 * or -1 when the connection is broken. */
typedef int tls_push_fn(void *ctx, const void *data, size_t len);

struct tls_session *tls_session_new(struct tls_creds *creds, tls_push_fn *push, void *ctx);
void tls_session_free(struct tls_session **s_p);

enum tls_status {
	TLS_STATUS_OK = 0,
	TLS_STATUS_AGAIN = -1, /* needs more ciphertext */
	TLS_STATUS_EOF = -2,   /* the peer sent close_notify */
	TLS_STATUS_ERROR = -3, /* fatal; the session is done */
};

/* Hand the session ciphertext that arrived. It is read in place and must stay valid until
 * tls_session_unread() returns 0 or new data is fed; keep the unread tail otherwise. */
void tls_session_feed(struct tls_session *s, const char *data, size_t len);
/* Ciphertext fed and not yet read by GnuTLS. */
size_t tls_session_unread(const struct tls_session *s);
/* Pointer to that unread ciphertext (to save it before the feed buffer is reused). */
const char *tls_session_unread_data(const struct tls_session *s);

/* Drive the handshake: TLS_STATUS_OK when done, AGAIN, or ERROR (an alert was sent). */
int tls_session_handshake(struct tls_session *s);
bool tls_session_handshake_done(const struct tls_session *s);
/* Decrypt into out: >0 bytes, or a tls_status. */
ssize_t tls_session_recv(struct tls_session *s, char *out, size_t len);
/* Decrypted bytes held inside GnuTLS, ready without more ciphertext. */
size_t tls_session_pending(const struct tls_session *s);
/* Encrypt and push. Returns 0 or TLS_STATUS_ERROR. */
int tls_session_send(struct tls_session *s, const void *data, size_t len);
/* Send close_notify (GNUTLS_SHUT_WR: does not wait for the peer's). */
void tls_session_bye(struct tls_session *s);
/* "TLSv1.3 AES-256-GCM" */
const char *tls_session_describe(struct tls_session *s);
/* The last GnuTLS error, for the log. */
const char *tls_session_error(const struct tls_session *s);

#endif
