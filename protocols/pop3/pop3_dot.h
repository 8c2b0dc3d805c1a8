/* pop3_dot — the RETR/TOP body transform (RFC 1939 §3): byte-stuff every line that starts with
 * '.', turn bare LF into CRLF when the store says the file needs it, and end the response with
 * CRLF "." CRLF (adding the CRLF a last line without newline lacks). For TOP it passes the
 * header, the blank separator line and then only the first N body lines.
 *
 * The transform is incremental: input arrives in chunks split anywhere (between CR and LF,
 * just before a '.'), and all state needed across a split lives in struct pop3_dot. Output goes
 * to a callback in as few calls as possible (runs of unchanged input are passed through whole),
 * so nothing is ever buffered here. The struct is public so a session can embed it; use only
 * these functions on it.
 */
#ifndef MK_POP3_DOT_H
#define MK_POP3_DOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef void pop3_dot_out_fn(void *ctx, const char *data, size_t len);

struct pop3_dot {
	bool convert_lf;     /* insert CR before a bare LF */
	bool limited;        /* TOP: stop after lines_left body lines */
	bool line_start;     /* the next input byte starts a line */
	bool prev_cr;        /* the last input byte was CR */
	bool in_body;        /* TOP: the blank separator line has passed */
	bool stopped;        /* TOP: the line count is reached; further input is ignored */
	bool finished;       /* the terminating line was written */
	uint32_t lines_left; /* TOP: body lines still to pass */
	uint64_t line_len;   /* bytes of the current line so far (saturating) */
};

/* Start a transform. convert_lf: the file has bare LF line ends that must go out as CRLF.
 * limited/top_lines: TOP's line count (limited false for RETR). */
void pop3_dot_init(struct pop3_dot *d, bool convert_lf, bool limited, uint32_t top_lines);
/* Transform one chunk, writing through out. Input after TOP's last line is ignored. */
void pop3_dot_feed(struct pop3_dot *d, const char *data, size_t len, pop3_dot_out_fn *out,
		   void *ctx);
/* End the response: CRLF if the last line had no line end, then ".\r\n". Idempotent. */
void pop3_dot_finish(struct pop3_dot *d, pop3_dot_out_fn *out, void *ctx);
/* True once TOP has passed all the lines it wants (no more input is needed). */
bool pop3_dot_stopped(const struct pop3_dot *d);

#endif
