/* storage_bench_gen — writes a realistic Maildir for the storage benchmarks: mixed sizes
 * (mostly small text, some with base64 attachments, a few large), multipart/alternative and
 * multipart/mixed, non-ASCII headers (RFC 2047 words and raw UTF-8), half with bare LF line
 * ends (as an MTA writes), names without size fields (as postfix names them), most in cur/
 * with flags, some in new/. Deterministic for a given seed. */
#ifndef MK_STORAGE_BENCH_GEN_H
#define MK_STORAGE_BENCH_GEN_H

#include <stdint.h>

/* Write COUNT messages into the Maildir at DIR (cur/ new/ tmp/ are created). Returns the
 * total bytes written, or 0 on error (message on stderr). */
uint64_t bench_maildir_generate(const char *dir, unsigned count, unsigned seed);

#endif
