/* pop3_parse — splitting one POP3 command line (RFC 1939 §3, RFC 2449 §4) into its keyword and
 * arguments, and strict argument parsing. Pure functions on borrowed bytes: the line comes from
 * conn_read_line() (terminator already removed) and every token points into it.
 *
 * Line assembly is incremental in conn (buf_line_find); this module only sees whole lines, so
 * it needs no state of its own.
 */
#ifndef MK_POP3_PARSE_H
#define MK_POP3_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 2449 §4: a command line is at most 255 octets including the CRLF. */
#define POP3_MAX_COMMAND_LINE 255
/* The same limit on the line as conn_read_line() returns it (terminator excluded). */
#define POP3_MAX_COMMAND_TEXT (POP3_MAX_COMMAND_LINE - 2)
/* RFC 1939 §3: keywords are three or four characters. */
#define POP3_MAX_KEYWORD 4
/* The most arguments any command takes (TOP msg n). */
#define POP3_MAX_ARGS 2

struct pop3_token {
	const char *p;
	size_t len;
};

enum pop3_parse_result {
	POP3_PARSE_OK,
	POP3_PARSE_EMPTY,    /* an empty or all-blank line */
	POP3_PARSE_TOO_LONG, /* longer than POP3_MAX_COMMAND_TEXT */
	POP3_PARSE_BAD,      /* the keyword is not 1..4 printable non-space characters */
};

struct pop3_command {
	struct pop3_token keyword; /* as the client sent it (case preserved) */
	struct pop3_token rest;    /* everything after the single space following the keyword;
				    * len 0 when there are no arguments */
};

/* Split LINE (len bytes, no terminator) into keyword and the rest. Leading blanks are not
 * allowed by RFC 1939 but are skipped (some clients send them); the keyword ends at the first
 * space. NUL or other control bytes in the keyword give POP3_PARSE_BAD. */
enum pop3_parse_result pop3_parse_command(const char *line, size_t len, struct pop3_command *cmd_r);

/* Split ARGS into space-separated tokens (runs of spaces count as one separator; leading and
 * trailing spaces are ignored). Returns the number of tokens (0..max), or -1 when there are more
 * than max. */
int pop3_parse_args(struct pop3_token args, struct pop3_token *tokens_r, size_t max);

/* A message number or line count: 1..10 decimal digits, no sign, value <= UINT32_MAX. Returns
 * false on anything else (empty, "+1", "1x", "99999999999"). */
bool pop3_parse_uint(struct pop3_token t, uint32_t *n_r);

/* True when the token equals S, ignoring ASCII case. */
bool pop3_token_equals(struct pop3_token t, const char *s);

#endif
