#include "testtls.h"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct test_tls {
	gnutls_session_t s;
	gnutls_certificate_credentials_t cred;
	/* bytes decrypted and not yet returned */
	char buf[16384];
	size_t len, off;
};

struct test_tls *test_tls_start(int fd, unsigned timeout_ms)
{
	return test_tls_start_resume(fd, timeout_ms, NULL, 0);
}

static struct test_tls *test_tls_begin(int fd, unsigned timeout_ms, const char *priority,
				       const void *data, size_t len);

struct test_tls *test_tls_start_priority(int fd, unsigned timeout_ms, const char *priority)
{
	return test_tls_begin(fd, timeout_ms, priority, NULL, 0);
}

struct test_tls *test_tls_start_resume(int fd, unsigned timeout_ms, const void *data, size_t len)
{
	return test_tls_begin(fd, timeout_ms, NULL, data, len);
}

static struct test_tls *test_tls_begin(int fd, unsigned timeout_ms, const char *priority,
				       const void *data, size_t len)
{
	struct test_tls *t = calloc(1, sizeof(*t));
	gnutls_certificate_allocate_credentials(&t->cred);
	gnutls_init(&t->s, GNUTLS_CLIENT);
	if (priority)
		gnutls_priority_set_direct(t->s, priority, NULL);
	else
		gnutls_set_default_priority(t->s);
	gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, t->cred);
	if (data)
		gnutls_session_set_data(t->s, data, len);
	gnutls_transport_set_int(t->s, fd);
	gnutls_handshake_set_timeout(t->s, timeout_ms);
	gnutls_record_set_timeout(t->s, timeout_ms);
	int r;
	do {
		r = gnutls_handshake(t->s);
	} while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0) {
		fprintf(stderr, "testtls: handshake: %s\n", gnutls_strerror(r));
		test_tls_free(t);
		return NULL;
	}
	return t;
}

void *test_tls_save_session(struct test_tls *t, size_t *len_r)
{
	gnutls_datum_t d;
	if (gnutls_session_get_data2(t->s, &d) < 0)
		return NULL;
	void *copy = malloc(d.size);
	memcpy(copy, d.data, d.size);
	*len_r = d.size;
	gnutls_free(d.data);
	return copy;
}

bool test_tls_resumed(struct test_tls *t)
{
	return gnutls_session_is_resumed(t->s) != 0;
}

void test_tls_fingerprint(struct test_tls *t, char *fp)
{
	unsigned n = 0;
	const gnutls_datum_t *certs = gnutls_certificate_get_peers(t->s, &n);
	fp[0] = '\0';
	if (!certs || n == 0)
		return;
	unsigned char d[32];
	size_t dlen = sizeof(d);
	gnutls_fingerprint(GNUTLS_DIG_SHA256, &certs[0], d, &dlen);
	for (size_t i = 0; i < dlen; i++)
		sprintf(fp + 2 * i, "%02x", d[i]);
}

const char *test_tls_version(struct test_tls *t)
{
	return gnutls_protocol_get_name(gnutls_protocol_get_version(t->s));
}

void test_tls_send(struct test_tls *t, const char *s)
{
	test_tls_send_bytes(t, s, strlen(s));
}

ssize_t test_tls_recv(struct test_tls *t, char *buf, size_t len)
{
	if (t->off < t->len) {
		size_t n = t->len - t->off < len ? t->len - t->off : len;
		memcpy(buf, t->buf + t->off, n);
		t->off += n;
		return (ssize_t)n;
	}
	ssize_t r;
	do {
		r = gnutls_record_recv(t->s, buf, len);
	} while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
	return r < 0 ? -1 : r;
}

void test_tls_send_bytes(struct test_tls *t, const void *data, size_t len)
{
	const char *s = data;
	while (len > 0) {
		ssize_t r = gnutls_record_send(t->s, s, len);
		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
			continue;
		if (r < 0)
			return;
		s += r;
		len -= (size_t)r;
	}
}

ssize_t test_tls_read_line(struct test_tls *t, char *out, size_t len)
{
	size_t o = 0;
	while (o + 1 < len) {
		if (t->off == t->len) {
			ssize_t r;
			do {
				r = gnutls_record_recv(t->s, t->buf, sizeof(t->buf));
			} while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
			if (r == 0)
				break;
			if (r < 0) {
				out[o] = '\0';
				return o ? (ssize_t)o : -1;
			}
			t->len = (size_t)r;
			t->off = 0;
		}
		char c = t->buf[t->off++];
		out[o++] = c;
		if (c == '\n')
			break;
	}
	out[o] = '\0';
	return (ssize_t)o;
}

void test_tls_free(struct test_tls *t)
{
	if (!t)
		return;
	gnutls_deinit(t->s);
	gnutls_certificate_free_credentials(t->cred);
	free(t);
}
