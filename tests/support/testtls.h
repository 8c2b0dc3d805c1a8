/* testtls — a blocking GnuTLS client over a connected socket, with bounded reads (test-only). */
#ifndef MK_TESTTLS_H
#define MK_TESTTLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct test_tls;

/* Handshake over fd (accepting any certificate); NULL if it failed. */
struct test_tls *test_tls_start(int fd, unsigned timeout_ms);
/* SHA-256 of the server's certificate, hex (65 bytes). */
void test_tls_fingerprint(struct test_tls *t, char *fp);
/* "TLS1.3" etc. */
const char *test_tls_version(struct test_tls *t);
void test_tls_send(struct test_tls *t, const char *s);
/* One line (LF kept); length, 0 on EOF/close_notify, -1 on timeout or error. */
ssize_t test_tls_read_line(struct test_tls *t, char *buf, size_t len);
/* Free the session (the socket stays open and owned by the caller). */
void test_tls_free(struct test_tls *t);

#endif
