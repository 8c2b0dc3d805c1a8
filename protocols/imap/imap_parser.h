/* imap_parser — the incremental, resumable IMAP command parser (STYLE.md rules 4–5).
 *
 * The parser never blocks and never reads past the end of the command it is parsing. It takes
 * its input through struct imap_parser_input (the session wires that to conn_read_line and
 * conn_read_literal; the tests to a plain buffer), so it sees whole lines and literal bytes.
 * A call that runs out of input returns -2; calling again once more input is there carries on
 * where it stopped, whatever way the bytes were split.
 *
 * Tokens: atoms, quoted strings (with \" and \\ escapes), literals {n}, {n+} (LITERAL+) and
 * ~{n} (literal8), NIL and nested lists, in any argument position. A synchronising literal is
 * answered at once through input->send_continuation. Every token is copied, unescaped and
 * NUL-terminated, into the parser's per-command arena, which imap_parser_reset() frees; the
 * args returned stay valid until then.
 *
 * Limits (struct imap_parser_limits) are checked before any byte is accepted: a literal
 * larger than max_literal or than what is left of the command budget, a list deeper than
 * max_depth, more than max_args arguments. A broken command is read to its end (its
 * non-synchronising literals skipped) and then reported (-1); the error is "fatal" (the session
 * answers BYE and closes) when the rest cannot be skipped safely: a line longer than the
 * connection's limit, or a non-synchronising literal over the limit (RFC 7888 §4).
 */
#ifndef MK_IMAP_PARSER_H
#define MK_IMAP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum imap_arg_type {
	IMAP_ARG_EOL = 0,     /* the end of an argument array (sentinel) */
	IMAP_ARG_ATOM,        /* str/len */
	IMAP_ARG_STRING,      /* a quoted string, unescaped: str/len */
	IMAP_ARG_LITERAL,     /* {n} or ~{n}: str/len (may hold NUL when literal8) */
	IMAP_ARG_NIL,         /* the atom NIL (any case); str is "NIL" */
	IMAP_ARG_LIST,        /* list/list_count */
	IMAP_ARG_LITERAL_SIZE /* stream mode only: literal_size, data read by the caller */
};

struct imap_arg {
	enum imap_arg_type type;
	bool literal8; /* LITERAL or LITERAL_SIZE written ~{n} */
	/* stream mode: a LITERAL_SIZE written "UTF8 (~{n}...)" (RFC 6855 §4 APPEND): the
	 * parentheses are taken by the parser, the atom UTF8 stays the arg before it */
	bool utf8_wrapped;
	const char *str;
	size_t len;
	uint64_t literal_size;
	const struct imap_arg *list; /* list_count args, then an IMAP_ARG_EOL */
	unsigned list_count;
};

/* Where the parser takes its bytes from. */
enum imap_input_line {
	IMAP_INPUT_MORE, /* no complete line buffered yet */
	IMAP_INPUT_OK,   /* line_r, len_r: one line without its CRLF, valid until the next call */
	IMAP_INPUT_TOO_LONG, /* the line passed the connection's limit: fatal */
};
struct imap_parser_input {
	enum imap_input_line (*read_line)(void *ctx, const char **line_r, size_t *len_r);
	/* Take up to the remaining literal bytes buffered now (see conn_read_literal). */
	size_t (*read_literal)(void *ctx, uint64_t *remaining, const char **data_r);
	/* Send "+ Ready" for a synchronising literal, and flush it now. */
	void (*send_continuation)(void *ctx);
	void *ctx;
};

struct imap_parser_limits {
	size_t max_command;   /* bytes of command text plus buffered literals, per command */
	uint64_t max_literal; /* the largest literal read into the arena */
	uint64_t max_stream;  /* the largest literal in stream mode (APPEND) */
	/* LITERAL- (RFC 7888 §4): a larger non-synchronising literal is skipped (its bytes read
	 * and dropped) and the command fails with "[TOOBIG] …"; 0 = no such cap (LITERAL+). */
	uint64_t max_nonsync;
	unsigned max_depth; /* list nesting */
	unsigned max_args;  /* arguments at every level together */
};

struct imap_parser;

/* The error for a non-synchronising literal over max_nonsync (LITERAL-). */
#define IMAP_PARSER_ERR_LITERAL_MINUS "[TOOBIG] Non-synchronizing literal too large (LITERAL-)"

/* input is copied; limits too. Returns NULL on ENOMEM. */
struct imap_parser *imap_parser_new(const struct imap_parser_input *input,
				    const struct imap_parser_limits *limits);
void imap_parser_free(struct imap_parser **p_p);
/* New limits, used from the next command on (e.g. raised after login). */
void imap_parser_set_limits(struct imap_parser *p, const struct imap_parser_limits *limits);
/* Forget the current command (its args become invalid) and free its arena. */
void imap_parser_reset(struct imap_parser *p);

/* Read the command's arguments. Returns the number of complete top-level arguments in
 * *args_r (terminated by an IMAP_ARG_EOL entry) once count of them are complete or the
 * command ended (count 0: read to the end); -2 when more input is needed; -1 on error (see
 * imap_parser_get_error). Calling again returns the same leading args, then more. */
int imap_parser_read_args(struct imap_parser *p, unsigned count, const struct imap_arg **args_r);
/* True once the whole command (the line end after its last argument) has been read. */
bool imap_parser_eol(const struct imap_parser *p);
/* The error of the last -1: a message for the client; *fatal_r when the connection must end. */
const char *imap_parser_get_error(const struct imap_parser *p, bool *fatal_r);

/* Stream mode (APPEND): a literal among the top-level args is not read into the arena;
 * so is a literal8 in "UTF8 (~{n}...)" (RFC 6855), marked utf8_wrapped;
 * read_args returns with an IMAP_ARG_LITERAL_SIZE as its last arg (limited by max_stream, the
 * continuation already sent), and the caller takes the bytes with
 * imap_parser_read_literal_data before calling read_args again. Reset clears the mode. */
void imap_parser_set_stream_mode(struct imap_parser *p, bool on);
/* > 0: *data_r holds that many literal bytes (valid until the next call); 0: the literal is
 * complete; -2: more input is needed. */
ssize_t imap_parser_read_literal_data(struct imap_parser *p, const char **data_r);

/* True when the atom or string arg equals s, ignoring ASCII case. */
bool imap_arg_is(const struct imap_arg *arg, const char *s);
/* An atom, quoted string or literal (not NIL): its bytes. */
bool imap_arg_get_astring(const struct imap_arg *arg, const char **str_r, size_t *len_r);
/* An atom. */
bool imap_arg_get_atom(const struct imap_arg *arg, const char **str_r);
/* A string, literal or NIL (*str_r NULL). */
bool imap_arg_get_nstring(const struct imap_arg *arg, const char **str_r, size_t *len_r);

#endif
