/* testproto — a tiny line protocol that exercises the connection layer in tests (test-only).
 *
 *   greeting            "+HELLO\r\n"
 *   ECHO text           "text\r\n"
 *   BIG n               n bytes of the pattern "0123456789abcdef...", produced only while
 *                       output is not blocked (resumed on drain), then "\r\n.\r\n"
 *   FILE path           the file's bytes through conn_stream_file, then ".\r\n"
 *   STARTTLS            "+OK begin TLS\r\n", then the handshake
 *   COMPRESS            "+OK DEFLATE active\r\n", then DEFLATE both ways (RFC 4978)
 *   TLS                 "tls=yes\r\n" or "tls=no\r\n"
 *   QUIT                "+BYE\r\n" and close
 *   anything else       "-ERR unknown command\r\n"; too many: "-ERR too many bad commands"
 *   line too long       "-ERR line too long\r\n" and close
 *   idle timeout        "-ERR idle timeout\r\n";  SIGTERM: "-ERR server shutting down\r\n"
 *   limit refusal       "-ERR too many connections\r\n"
 */
#ifndef MK_TESTPROTO_H
#define MK_TESTPROTO_H

#include "proto.h"

extern const struct proto_ops testproto_ops;

#endif
