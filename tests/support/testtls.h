/* testtls — a blocking GnuTLS client over a connected socket, with bounded reads (test-only). */
#ifndef MK_TESTTLS_H
#define MK_TESTTLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct test_tls;

/* Handshake over fd (accepting any certificate); NULL if it failed. */
struct test_tls *test_tls_start(int fd, unsigned timeout_ms);
/* The same with a GnuTLS priority string of the client's (NULL: the defaults). */
struct test_tls *test_tls_start_priority(int fd, unsigned timeout_ms, const char *priority);
/* The same, offering to resume the session saved by test_tls_save_session. */
struct test_tls *test_tls_start_resume(int fd, unsigned timeout_ms, const void *data, size_t len);
/* Save the session for resumption (call after a read: TLS 1.3 tickets follow the handshake).
 * Returns a malloc'd copy and its length. */
void *test_tls_save_session(struct test_tls *t, size_t *len_r);
bool test_tls_resumed(struct test_tls *t);
/* SHA-256 of the server's certificate, hex (65 bytes). */
void test_tls_fingerprint(struct test_tls *t, char *fp);
/* "TLS1.3" etc. */
const char *test_tls_version(struct test_tls *t);
void test_tls_send(struct test_tls *t, const char *s);
/* One line (LF kept); length, 0 on EOF/close_notify, -1 on timeout or error. */
ssize_t test_tls_read_line(struct test_tls *t, char *buf, size_t len);
/* Raw bytes: up to len; 0 on EOF/close_notify, -1 on timeout or error. */
ssize_t test_tls_recv(struct test_tls *t, char *buf, size_t len);
void test_tls_send_bytes(struct test_tls *t, const void *data, size_t len);
/* Free the session (the socket stays open and owned by the caller). */
void test_tls_free(struct test_tls *t);

#endif
