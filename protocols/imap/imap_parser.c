#include "imap_parser.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_arena.h"

enum parser_state {
	PS_READ_LINE,    /* the next line of the command is needed */
	PS_PARSE,        /* tokens left in the current line */
	PS_LITERAL,      /* reading literal bytes into the arena */
	PS_STREAM,       /* stream mode: the caller reads the literal's bytes */
	PS_DONE,         /* the command is complete */
	PS_SKIP_LINE,    /* error: read the rest of the command and drop it */
	PS_SKIP_LITERAL, /* error: drop a non-synchronising literal's bytes */
	PS_ERROR,        /* error: reported */
};

/* Arguments are built as a tree of nodes linked by index while parsing (the node array may
 * move while it grows), and laid out as arrays of struct imap_arg for the caller. */
struct pnode {
	struct imap_arg arg;
	int next;        /* next sibling, -1 at the end */
	int first, last; /* children of a list */
	unsigned count;
};

struct imap_parser {
	struct imap_parser_input in;
	struct imap_parser_limits lim, next_lim;
	enum parser_state state;
	struct imap_arena arena;

	/* The current line, copied (the input's bytes are borrowed only until it is called
	 * again). */
	char *line;
	size_t line_len, line_cap, pos;
	bool need_sep; /* a token just ended: SP, ')' or the line end must follow */

	size_t used; /* bytes of this command so far (lines and buffered literals) */

	struct pnode *nodes;
	unsigned n_nodes, cap_nodes;
	int top_first, top_last;
	unsigned top_count;
	int stack[64]; /* open lists, innermost last; depth is bounded by max_depth <= 64 */
	unsigned depth;

	/* The literal being read (PS_LITERAL, PS_STREAM, PS_SKIP_LITERAL). */
	uint64_t lit_remaining;
	char *lit_data;
	size_t lit_off;
	int lit_node;
	bool lit_binary;

	bool stream_mode;
	bool skip_nonsync_ok;
	bool utf8_wrap; /* stream mode: inside "UTF8 (", its ')' still to come */

	/* Output arrays, rebuilt on each successful read_args. */
	struct imap_arg *out;
	size_t out_cap;

	const char *error;
	bool fatal;
};

#define MAX_DEPTH_CAP      64
#define LITERAL_DIGITS_MAX 19 /* fits uint64 without overflow */

struct imap_parser *imap_parser_new(const struct imap_parser_input *input,
				    const struct imap_parser_limits *limits)
{
	struct imap_parser *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->in = *input;
	imap_parser_set_limits(p, limits);
	p->lim = p->next_lim;
	imap_parser_reset(p);
	return p;
}

void imap_parser_free(struct imap_parser **p_p)
{
	struct imap_parser *p = *p_p;
	if (!p)
		return;
	imap_arena_clear(&p->arena);
	if (p->line)
		explicit_bzero(p->line, p->line_cap);
	free(p->line);
	free(p->nodes);
	free(p->out);
	free(p);
	*p_p = NULL;
}

void imap_parser_set_limits(struct imap_parser *p, const struct imap_parser_limits *limits)
{
	p->next_lim = *limits;
	if (p->next_lim.max_depth > MAX_DEPTH_CAP)
		p->next_lim.max_depth = MAX_DEPTH_CAP;
}

void imap_parser_reset(struct imap_parser *p)
{
	p->lim = p->next_lim;
	if (p->line)
		explicit_bzero(p->line, p->line_len); /* may hold a password */
	imap_arena_clear(&p->arena);
	/* The arena holds the unescaped tokens (never longer than the command, plus alignment
	 * per token) and the literals. */
	imap_arena_init(&p->arena, p->lim.max_command + (size_t)p->lim.max_args * 32 + 4096);
	p->state = PS_READ_LINE;
	p->line_len = p->pos = 0;
	p->need_sep = false;
	p->used = 0;
	p->n_nodes = 0;
	p->top_first = p->top_last = -1;
	p->top_count = 0;
	p->depth = 0;
	p->lit_remaining = 0;
	p->lit_data = NULL;
	p->lit_off = 0;
	p->lit_node = -1;
	p->stream_mode = false;
	p->utf8_wrap = false;
	p->error = NULL;
	p->fatal = false;
	/* Give the memory back between commands: an idle session holds none of it
	 * (DESIGN.md "Idle is cheap"); a malloc per command costs less than that. */
	free(p->line);
	p->line = NULL;
	p->line_cap = 0;
	free(p->nodes);
	p->nodes = NULL;
	p->cap_nodes = 0;
	free(p->out);
	p->out = NULL;
	p->out_cap = 0;
}

void imap_parser_set_stream_mode(struct imap_parser *p, bool on)
{
	p->stream_mode = on;
}

bool imap_parser_eol(const struct imap_parser *p)
{
	return p->state == PS_DONE;
}

const char *imap_parser_get_error(const struct imap_parser *p, bool *fatal_r)
{
	if (fatal_r)
		*fatal_r = p->fatal;
	return p->error ? p->error : "Invalid command";
}

/* Does the line end with a literal marker? Used to skip the rest of a broken command. */
static bool line_tail_literal(const char *line, size_t len, uint64_t *size_r, bool *nonsync_r)
{
	if (len < 3 || line[len - 1] != '}')
		return false;
	size_t end = len - 1;
	bool nonsync = false;
	if (line[end - 1] == '+') {
		nonsync = true;
		end--;
	}
	size_t start = end;
	while (start > 0 && line[start - 1] >= '0' && line[start - 1] <= '9')
		start--;
	if (start == end || start == 0 || line[start - 1] != '{' ||
	    end - start > LITERAL_DIGITS_MAX)
		return false;
	uint64_t v = 0;
	for (size_t i = start; i < end; i++)
		v = v * 10 + (uint64_t)(line[i] - '0');
	*size_r = v;
	*nonsync_r = nonsync;
	return true;
}

/* The current command is broken: note why, and arrange to drop the rest of it. The error is
 * reported once the rest has been read. mid_line: the error is in the current line, whose tail
 * may still announce a literal. */
static void parser_fail(struct imap_parser *p, const char *msg, bool mid_line)
{
	if (!p->error)
		p->error = msg;
	if (!mid_line) {
		p->state = PS_SKIP_LINE;
		return;
	}
	uint64_t size;
	bool nonsync;
	if (line_tail_literal(p->line, p->line_len, &size, &nonsync) && nonsync) {
		/* The client sends the literal without waiting: drop its bytes. */
		p->lit_remaining = size;
		p->state = PS_SKIP_LITERAL;
	} else {
		/* No literal, or a synchronising one the client waits to be invited for. */
		p->state = PS_ERROR;
	}
}

static void parser_fail_fatal(struct imap_parser *p, const char *msg)
{
	p->error = msg;
	p->fatal = true;
	p->state = PS_ERROR;
}

static int node_new(struct imap_parser *p, enum imap_arg_type type)
{
	if (p->n_nodes >= p->lim.max_args) {
		parser_fail(p, "Too many arguments", true);
		return -1;
	}
	if (p->n_nodes == p->cap_nodes) {
		unsigned cap = p->cap_nodes ? p->cap_nodes * 2 : 16;
		if (cap > p->lim.max_args)
			cap = p->lim.max_args;
		struct pnode *n = realloc(p->nodes, cap * sizeof(*n));
		if (!n) {
			parser_fail_fatal(p, "Out of memory");
			return -1;
		}
		p->nodes = n;
		p->cap_nodes = cap;
	}
	int i = (int)p->n_nodes++;
	struct pnode *n = &p->nodes[i];
	memset(n, 0, sizeof(*n));
	n->arg.type = type;
	n->next = -1;
	n->first = n->last = -1;
	if (p->depth == 0) {
		if (p->top_last >= 0)
			p->nodes[p->top_last].next = i;
		else
			p->top_first = i;
		p->top_last = i;
	} else {
		struct pnode *parent = &p->nodes[p->stack[p->depth - 1]];
		if (parent->last >= 0)
			p->nodes[parent->last].next = i;
		else
			parent->first = i;
		parent->last = i;
		parent->count++;
	}
	return i;
}

/* A token at the current depth is complete. */
static void token_done(struct imap_parser *p)
{
	if (p->depth == 0)
		p->top_count++;
}

static size_t layout_size(const struct imap_parser *p, int first)
{
	size_t n = 1; /* the EOL sentinel */
	for (int i = first; i >= 0; i = p->nodes[i].next) {
		n++;
		if (p->nodes[i].arg.type == IMAP_ARG_LIST)
			n += layout_size(p, p->nodes[i].first);
	}
	return n;
}

/* Lay out count siblings starting at node first into out[*pos...], recursively. */
static struct imap_arg *layout(struct imap_parser *p, int first, unsigned count, size_t *pos)
{
	struct imap_arg *arr = &p->out[*pos];
	*pos += count + 1;
	unsigned k = 0;
	for (int i = first; i >= 0 && k < count; i = p->nodes[i].next, k++) {
		arr[k] = p->nodes[i].arg;
		if (arr[k].type == IMAP_ARG_LIST) {
			arr[k].list = layout(p, p->nodes[i].first, p->nodes[i].count, pos);
			arr[k].list_count = p->nodes[i].count;
		}
	}
	memset(&arr[count], 0, sizeof(arr[count]));
	arr[count].type = IMAP_ARG_EOL;
	return arr;
}

static int parser_finish(struct imap_parser *p, const struct imap_arg **args_r)
{
	size_t need = layout_size(p, p->top_first);
	if (need > p->out_cap) {
		struct imap_arg *o = realloc(p->out, need * sizeof(*o));
		if (!o) {
			parser_fail_fatal(p, "Out of memory");
			return -1;
		}
		p->out = o;
		p->out_cap = need;
	}
	size_t pos = 0;
	*args_r = layout(p, p->top_first, p->top_count, &pos);
	return (int)p->top_count;
}

static bool is_atom_end(unsigned char c)
{
	return c == ' ' || c == '(' || c == ')' || c == '"' || c < 0x20 || c == 0x7f;
}

/* Parse `{n}`, `{n+}` or `~{n}` at the current position; it must end the line. */
static void parse_literal_marker(struct imap_parser *p)
{
	const char *s = p->line;
	size_t i = p->pos;
	bool binary = false;
	if (s[i] == '~') {
		binary = true;
		i++;
	}
	i++; /* '{' */
	size_t start = i;
	uint64_t size = 0;
	while (i < p->line_len && s[i] >= '0' && s[i] <= '9') {
		if (i - start >= LITERAL_DIGITS_MAX) {
			parser_fail(p, "Literal size too large", true);
			return;
		}
		size = size * 10 + (uint64_t)(s[i] - '0');
		i++;
	}
	bool nonsync = false;
	if (i < p->line_len && s[i] == '+') {
		nonsync = true;
		i++;
	}
	if (i == start || i >= p->line_len || s[i] != '}' || i + 1 != p->line_len) {
		parser_fail(p, "Invalid literal", true);
		return;
	}
	bool stream = p->stream_mode && p->depth == 0;
	uint64_t max = stream ? p->lim.max_stream : p->lim.max_literal;
	bool too_big = size > max;
	if (!stream && !too_big && size > p->lim.max_command - p->used)
		too_big = true;
	if (too_big) {
		if (nonsync)
			parser_fail_fatal(p, "[TOOBIG] Literal too large");
		else
			parser_fail(p, "[TOOBIG] Literal too large", true);
		return;
	}
	if (nonsync && p->lim.max_nonsync > 0 && size > p->lim.max_nonsync) {
		/* LITERAL-: the client sends the bytes anyway; parser_fail skips them. */
		parser_fail(p, "[TOOBIG] Non-synchronizing literal too large (LITERAL-)", true);
		return;
	}
	int n = node_new(p, stream ? IMAP_ARG_LITERAL_SIZE : IMAP_ARG_LITERAL);
	if (n < 0)
		return;
	p->nodes[n].arg.literal8 = binary;
	p->nodes[n].arg.utf8_wrapped = stream && p->utf8_wrap;
	p->nodes[n].arg.literal_size = size;
	p->pos = p->line_len;
	p->lit_remaining = size;
	p->lit_node = n;
	p->lit_binary = binary;
	p->lit_off = 0;
	if (stream) {
		p->state = PS_STREAM;
		token_done(p);
	} else {
		p->lit_data = imap_arena_alloc(&p->arena, (size_t)size + 1);
		if (!p->lit_data) {
			parser_fail_fatal(p, "Out of memory");
			return;
		}
		p->used += (size_t)size;
		p->state = PS_LITERAL;
	}
	if (!nonsync && p->in.send_continuation)
		p->in.send_continuation(p->in.ctx);
}

static void parse_quoted(struct imap_parser *p)
{
	const char *s = p->line;
	size_t i = p->pos + 1, o = 0;
	/* First pass: check it and measure the unescaped length. */
	for (;;) {
		if (i >= p->line_len) {
			parser_fail(p, "Missing '\"'", true);
			return;
		}
		unsigned char c = (unsigned char)s[i];
		if (c == '"')
			break;
		if (c == '\\') {
			if (i + 1 >= p->line_len || (s[i + 1] != '\\' && s[i + 1] != '"')) {
				parser_fail(p, "Invalid escape in quoted string", true);
				return;
			}
			i++;
		} else if (c == '\0' || c == '\r' || c == '\n') {
			parser_fail(p, "Invalid character in quoted string", true);
			return;
		}
		o++;
		i++;
	}
	size_t end = i;
	char *out = imap_arena_alloc(&p->arena, o + 1);
	if (!out) {
		parser_fail_fatal(p, "Out of memory");
		return;
	}
	o = 0;
	for (i = p->pos + 1; i < end; i++) {
		if (s[i] == '\\')
			i++;
		out[o++] = s[i];
	}
	out[o] = '\0';
	int n = node_new(p, IMAP_ARG_STRING);
	if (n < 0)
		return;
	p->nodes[n].arg.str = out;
	p->nodes[n].arg.len = o;
	p->pos = end + 1;
	p->need_sep = true;
	token_done(p);
}

static void parse_atom(struct imap_parser *p)
{
	size_t i = p->pos;
	while (i < p->line_len && !is_atom_end((unsigned char)p->line[i]))
		i++;
	if (i == p->pos) {
		parser_fail(p, "Invalid character", true);
		return;
	}
	size_t len = i - p->pos;
	bool nil = len == 3 && strncasecmp(p->line + p->pos, "NIL", 3) == 0;
	int n = node_new(p, nil ? IMAP_ARG_NIL : IMAP_ARG_ATOM);
	if (n < 0)
		return;
	char *str = imap_arena_strndup(&p->arena, p->line + p->pos, len);
	if (!str) {
		parser_fail_fatal(p, "Out of memory");
		return;
	}
	p->nodes[n].arg.str = str;
	p->nodes[n].arg.len = len;
	p->pos = i;
	p->need_sep = true;
	token_done(p);
}

/* Stream mode, top level, "(~{" right after the atom UTF8: RFC 6855's APPEND data. */
static bool utf8_wrap_starts(const struct imap_parser *p)
{
	if (!p->stream_mode || p->depth != 0 || p->utf8_wrap || p->top_last < 0 ||
	    p->pos + 2 >= p->line_len || p->line[p->pos + 1] != '~' || p->line[p->pos + 2] != '{')
		return false;
	const struct imap_arg *a = &p->nodes[p->top_last].arg;
	return a->type == IMAP_ARG_ATOM && a->len == 4 && strncasecmp(a->str, "UTF8", 4) == 0;
}

/* Parse tokens of the current line until it ends, a literal starts, an error, or count
 * top-level args are complete. */
static void parse_line(struct imap_parser *p, unsigned count)
{
	while (p->state == PS_PARSE) {
		if (count > 0 && p->top_count >= count)
			return;
		if (p->pos >= p->line_len) {
			if (p->depth > 0 || p->utf8_wrap) {
				parser_fail(p, "Missing ')'", true);
				return;
			}
			p->state = PS_DONE;
			return;
		}
		unsigned char c = (unsigned char)p->line[p->pos];
		if (p->utf8_wrap && p->pos == 0) {
			/* right after the literal of "UTF8 (~{n}...)" comes its ')' */
			if (c != ')') {
				parser_fail(p, "Missing ')'", true);
				return;
			}
			p->utf8_wrap = false;
			p->pos++;
			p->need_sep = true;
			continue;
		}
		if (c == ' ') {
			p->pos++;
			p->need_sep = false;
			continue;
		}
		if (c == ')') {
			if (p->depth == 0) {
				parser_fail(p, "Unexpected ')'", true);
				return;
			}
			p->depth--;
			p->pos++;
			/* After a list anything may follow directly: BODY[HEADER.FIELDS (A)]<0.9>
			 */
			p->need_sep = false;
			token_done(p);
			continue;
		}
		if (p->need_sep) {
			parser_fail(p, "Missing space between arguments", true);
			return;
		}
		if (c == '(' && utf8_wrap_starts(p)) {
			p->utf8_wrap = true;
			p->pos++;
			continue;
		}
		if (c == '(') {
			if (p->depth >= p->lim.max_depth) {
				parser_fail(p, "Too deeply nested lists", true);
				return;
			}
			int n = node_new(p, IMAP_ARG_LIST);
			if (n < 0)
				return;
			p->stack[p->depth++] = n;
			p->pos++;
			continue;
		}
		if (c == '"') {
			parse_quoted(p);
			continue;
		}
		if (c == '{' ||
		    (c == '~' && p->pos + 1 < p->line_len && p->line[p->pos + 1] == '{')) {
			parse_literal_marker(p);
			return;
		}
		parse_atom(p);
	}
}

static int read_next_line(struct imap_parser *p)
{
	const char *line;
	size_t len;
	switch (p->in.read_line(p->in.ctx, &line, &len)) {
	case IMAP_INPUT_MORE:
		return -2;
	case IMAP_INPUT_TOO_LONG:
		parser_fail_fatal(p, "Line too long");
		return -1;
	case IMAP_INPUT_OK:
		break;
	}
	if (len + 1 > p->line_cap) {
		size_t cap = p->line_cap ? p->line_cap : 128;
		while (cap < len + 1)
			cap *= 2;
		char *l = realloc(p->line, cap);
		if (!l) {
			parser_fail_fatal(p, "Out of memory");
			return -1;
		}
		p->line = l;
		p->line_cap = cap;
	}
	memcpy(p->line, line, len);
	p->line[len] = '\0';
	p->line_len = len;
	p->pos = 0;
	return 0;
}

int imap_parser_read_args(struct imap_parser *p, unsigned count, const struct imap_arg **args_r)
{
	for (;;) {
		switch (p->state) {
		case PS_READ_LINE: {
			int r = read_next_line(p);
			if (r < 0)
				return r;
			if (p->line_len > p->lim.max_command - p->used) {
				p->used = p->lim.max_command;
				parser_fail(p, "Command too long", true);
				break;
			}
			p->used += p->line_len;
			p->state = PS_PARSE;
			break;
		}
		case PS_PARSE:
			parse_line(p, count);
			if (p->state == PS_PARSE)
				return parser_finish(p, args_r); /* count reached */
			break;
		case PS_LITERAL: {
			const char *data;
			size_t n;
			while (p->lit_remaining > 0 &&
			       (n = p->in.read_literal(p->in.ctx, &p->lit_remaining, &data)) > 0) {
				memcpy(p->lit_data + p->lit_off, data, n);
				p->lit_off += n;
			}
			if (p->lit_remaining > 0)
				return -2;
			p->lit_data[p->lit_off] = '\0';
			struct pnode *node = &p->nodes[p->lit_node];
			node->arg.str = p->lit_data;
			node->arg.len = p->lit_off;
			p->state = PS_READ_LINE;
			p->need_sep = true;
			token_done(p);
			if (!p->lit_binary && memchr(p->lit_data, '\0', p->lit_off)) {
				parser_fail(p, "NUL in literal (use literal8)", false);
				break;
			}
			if (count > 0 && p->top_count >= count)
				return parser_finish(p, args_r);
			break;
		}
		case PS_STREAM:
			return parser_finish(p, args_r);
		case PS_DONE:
			return parser_finish(p, args_r);
		case PS_SKIP_LINE: {
			int r = read_next_line(p);
			if (r < 0)
				return r;
			parser_fail(p, p->error, true);
			break;
		}
		case PS_SKIP_LITERAL: {
			const char *data;
			while (p->lit_remaining > 0 &&
			       p->in.read_literal(p->in.ctx, &p->lit_remaining, &data) > 0)
				;
			if (p->lit_remaining > 0)
				return -2;
			p->state = PS_SKIP_LINE;
			break;
		}
		case PS_ERROR:
			return -1;
		}
	}
}

ssize_t imap_parser_read_literal_data(struct imap_parser *p, const char **data_r)
{
	if (p->state != PS_STREAM)
		return 0;
	if (p->lit_remaining == 0) {
		p->state = PS_READ_LINE;
		p->need_sep = true;
		return 0;
	}
	size_t n = p->in.read_literal(p->in.ctx, &p->lit_remaining, data_r);
	if (n == 0)
		return -2;
	return (ssize_t)n;
}

bool imap_arg_is(const struct imap_arg *arg, const char *s)
{
	if (arg->type != IMAP_ARG_ATOM && arg->type != IMAP_ARG_STRING)
		return false;
	return strlen(s) == arg->len && strncasecmp(arg->str, s, arg->len) == 0;
}

bool imap_arg_get_astring(const struct imap_arg *arg, const char **str_r, size_t *len_r)
{
	if (arg->type != IMAP_ARG_ATOM && arg->type != IMAP_ARG_STRING &&
	    arg->type != IMAP_ARG_LITERAL)
		return false;
	*str_r = arg->str;
	if (len_r)
		*len_r = arg->len;
	return true;
}

bool imap_arg_get_atom(const struct imap_arg *arg, const char **str_r)
{
	if (arg->type != IMAP_ARG_ATOM)
		return false;
	*str_r = arg->str;
	return true;
}

bool imap_arg_get_nstring(const struct imap_arg *arg, const char **str_r, size_t *len_r)
{
	if (arg->type == IMAP_ARG_NIL) {
		*str_r = NULL;
		if (len_r)
			*len_r = 0;
		return true;
	}
	if (arg->type != IMAP_ARG_STRING && arg->type != IMAP_ARG_LITERAL)
		return false;
	*str_r = arg->str;
	if (len_r)
		*len_r = arg->len;
	return true;
}
