#include "tls.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct tls_creds {
	unsigned refs;
	gnutls_certificate_credentials_t cert;
	gnutls_priority_t priority;
	char fingerprint[65];
};

enum tls_hs_state {
	TLS_HS_IN_PROGRESS,
	TLS_HS_DONE,
	TLS_HS_FAILED,
};

struct tls_session {
	gnutls_session_t gs;
	struct tls_creds *creds;
	tls_push_fn *push;
	void *ctx;
	enum tls_hs_state hs;
	/* Ciphertext fed and not yet pulled by GnuTLS (points into the caller's buffer). */
	const char *in;
	size_t in_len, in_off;
	bool push_failed;
	int last_error;
	char describe[96];
};

/* One session-ticket key for the process, kept across certificate reloads so that clients
 * resume their sessions after a reload too. */
static gnutls_datum_t ticket_key;

static int tls_global_init(void)
{
	if (ticket_key.data)
		return 0;
	int r = gnutls_session_ticket_key_generate(&ticket_key);
	return r < 0 ? -EIO : 0;
}

int tls_creds_load(const char *cert, const char *key, const char *priority,
		   struct tls_creds **creds_r, char *err, size_t errlen)
{
	const char *errpos = NULL;
	int r;

	if (tls_global_init() < 0) {
		snprintf(err, errlen, "cannot generate a session ticket key");
		return -EIO;
	}
	struct tls_creds *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->refs = 1;
	if ((r = gnutls_certificate_allocate_credentials(&c->cert)) < 0)
		goto fail_gnutls;
	r = gnutls_certificate_set_x509_key_file2(c->cert, cert, key, GNUTLS_X509_FMT_PEM, NULL, 0);
	if (r < 0) {
		snprintf(err, errlen, "cannot load certificate %s with key %s: %s", cert, key,
			 gnutls_strerror(r));
		goto fail;
	}
	r = gnutls_priority_init2(&c->priority, priority, &errpos, 0);
	if (r < 0) {
		snprintf(err, errlen, "bad TLS priority string at '%s': %s",
			 errpos ? errpos : priority, gnutls_strerror(r));
		c->priority = NULL;
		goto fail;
	}
	/* The fingerprint of the leaf certificate, for logs and tests. */
	gnutls_x509_crt_t *crts = NULL;
	unsigned n_crts = 0;
	if (gnutls_certificate_get_x509_crt(c->cert, 0, &crts, &n_crts) == 0 && n_crts > 0) {
		unsigned char fp[32];
		size_t fplen = sizeof(fp);
		if (gnutls_x509_crt_get_fingerprint(crts[0], GNUTLS_DIG_SHA256, fp, &fplen) == 0)
			for (size_t i = 0; i < fplen; i++)
				snprintf(c->fingerprint + 2 * i, 3, "%02x", fp[i]);
		for (unsigned i = 0; i < n_crts; i++)
			gnutls_x509_crt_deinit(crts[i]);
		gnutls_free(crts);
	}
	*creds_r = c;
	return 0;
fail_gnutls:
	snprintf(err, errlen, "GnuTLS: %s", gnutls_strerror(r));
fail:
	if (c->cert)
		gnutls_certificate_free_credentials(c->cert);
	free(c);
	return -EINVAL;
}

struct tls_creds *tls_creds_ref(struct tls_creds *creds)
{
	creds->refs++;
	return creds;
}

void tls_creds_unref(struct tls_creds **creds_p)
{
	struct tls_creds *c = *creds_p;
	if (!c)
		return;
	*creds_p = NULL;
	if (--c->refs > 0)
		return;
	gnutls_priority_deinit(c->priority);
	gnutls_certificate_free_credentials(c->cert);
	free(c);
}

void tls_creds_fingerprint(const struct tls_creds *creds, char out[65])
{
	memcpy(out, creds->fingerprint, 65);
}

/* GnuTLS transport: pull from the fed ciphertext, never block. */
static ssize_t tls_pull(gnutls_transport_ptr_t ptr, void *dst, size_t len)
{
	struct tls_session *s = ptr;
	size_t avail = s->in_len - s->in_off;
	if (avail == 0) {
		gnutls_transport_set_errno(s->gs, EAGAIN);
		return -1;
	}
	size_t n = avail < len ? avail : len;
	memcpy(dst, s->in + s->in_off, n);
	s->in_off += n;
	return (ssize_t)n;
}

static int tls_pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms)
{
	struct tls_session *s = ptr;
	size_t avail = s->in_len - s->in_off;
	if (avail > 0)
		return (int)(avail > 0x7fffffff ? 0x7fffffff : avail);
	gnutls_transport_set_errno(s->gs, EAGAIN);
	return -1;
}

/* GnuTLS transport: push always takes everything (the connection queues it); back-pressure is
 * the application's business (STYLE.md §2.8). */
static ssize_t tls_vec_push(gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
	struct tls_session *s = ptr;
	size_t total = 0;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len == 0)
			continue;
		if (s->push(s->ctx, iov[i].iov_base, iov[i].iov_len) < 0) {
			s->push_failed = true;
			gnutls_transport_set_errno(s->gs, EPIPE);
			return -1;
		}
		total += iov[i].iov_len;
	}
	return (ssize_t)total;
}

struct tls_session *tls_session_new(struct tls_creds *creds, tls_push_fn *push, void *ctx)
{
	struct tls_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	if (gnutls_init(&s->gs, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL) < 0) {
		free(s);
		return NULL;
	}
	s->creds = tls_creds_ref(creds);
	s->push = push;
	s->ctx = ctx;
	s->hs = TLS_HS_IN_PROGRESS;
	if (gnutls_priority_set(s->gs, creds->priority) < 0 ||
	    gnutls_credentials_set(s->gs, GNUTLS_CRD_CERTIFICATE, creds->cert) < 0 ||
	    gnutls_session_ticket_enable_server(s->gs, &ticket_key) < 0) {
		tls_session_free(&s);
		return NULL;
	}
	gnutls_certificate_server_set_request(s->gs, GNUTLS_CERT_IGNORE);
	gnutls_transport_set_pull_function(s->gs, tls_pull);
	gnutls_transport_set_pull_timeout_function(s->gs, tls_pull_timeout);
	gnutls_transport_set_vec_push_function(s->gs, tls_vec_push);
	gnutls_transport_set_ptr(s->gs, s);
	return s;
}

void tls_session_free(struct tls_session **s_p)
{
	struct tls_session *s = *s_p;
	if (!s)
		return;
	*s_p = NULL;
	gnutls_deinit(s->gs);
	tls_creds_unref(&s->creds);
	free(s);
}

void tls_session_feed(struct tls_session *s, const char *data, size_t len)
{
	s->in = data;
	s->in_len = len;
	s->in_off = 0;
}

size_t tls_session_unread(const struct tls_session *s)
{
	return s->in_len - s->in_off;
}

const char *tls_session_unread_data(const struct tls_session *s)
{
	return s->in + s->in_off;
}

int tls_session_handshake(struct tls_session *s)
{
	while (s->hs == TLS_HS_IN_PROGRESS) {
		int r = gnutls_handshake(s->gs);
		if (r == GNUTLS_E_SUCCESS) {
			s->hs = TLS_HS_DONE;
			break;
		}
		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
			return TLS_STATUS_AGAIN;
		if (r == GNUTLS_E_WARNING_ALERT_RECEIVED) {
			log_debug("event=tls_warning_alert alert=%s",
				  gnutls_alert_get_name(gnutls_alert_get(s->gs)));
			continue;
		}
		s->last_error = r;
		s->hs = TLS_HS_FAILED;
		if (!s->push_failed)
			(void)gnutls_alert_send_appropriate(s->gs, r);
		return TLS_STATUS_ERROR;
	}
	return s->hs == TLS_HS_DONE ? TLS_STATUS_OK : TLS_STATUS_ERROR;
}

bool tls_session_handshake_done(const struct tls_session *s)
{
	return s->hs == TLS_HS_DONE;
}

ssize_t tls_session_recv(struct tls_session *s, char *out, size_t len)
{
	for (;;) {
		ssize_t r = gnutls_record_recv(s->gs, out, len);
		if (r > 0)
			return r;
		if (r == 0)
			return TLS_STATUS_EOF;
		if (r == GNUTLS_E_AGAIN)
			return TLS_STATUS_AGAIN;
		if (r == GNUTLS_E_INTERRUPTED)
			continue;
		if (r == GNUTLS_E_REHANDSHAKE) {
			/* TLS 1.2 renegotiation is refused: we never offer it. */
			(void)gnutls_alert_send(s->gs, GNUTLS_AL_WARNING,
						GNUTLS_A_NO_RENEGOTIATION);
			continue;
		}
		if (r == GNUTLS_E_WARNING_ALERT_RECEIVED)
			continue;
		s->last_error = (int)r;
		return TLS_STATUS_ERROR;
	}
}

size_t tls_session_pending(const struct tls_session *s)
{
	return gnutls_record_check_pending(s->gs);
}

int tls_session_send(struct tls_session *s, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t r = gnutls_record_send(s->gs, p, len);
		if (r == GNUTLS_E_INTERRUPTED || r == GNUTLS_E_AGAIN)
			continue; /* cannot happen with our push, which always takes all */
		if (r < 0) {
			s->last_error = (int)r;
			return TLS_STATUS_ERROR;
		}
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

void tls_session_bye(struct tls_session *s)
{
	if (s->hs == TLS_HS_DONE && !s->push_failed)
		(void)gnutls_bye(s->gs, GNUTLS_SHUT_WR);
}

const char *tls_session_describe(struct tls_session *s)
{
	const char *cipher = gnutls_cipher_get_name(gnutls_cipher_get(s->gs));
	const char *vers = gnutls_protocol_get_name(gnutls_protocol_get_version(s->gs));
	snprintf(s->describe, sizeof(s->describe), "%s/%s", vers ? vers : "?",
		 cipher ? cipher : "?");
	return s->describe;
}

const char *tls_session_error(const struct tls_session *s)
{
	return s->last_error ? gnutls_strerror(s->last_error) : "none";
}
