#include "pop3_parse.h"

#include <string.h>
#include <strings.h>

enum pop3_parse_result pop3_parse_command(const char *line, size_t len, struct pop3_command *cmd_r)
{
	memset(cmd_r, 0, sizeof(*cmd_r));
	if (len > POP3_MAX_COMMAND_TEXT)
		return POP3_PARSE_TOO_LONG;

	size_t i = 0;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (i == len)
		return POP3_PARSE_EMPTY;

	size_t start = i;
	while (i < len && line[i] != ' ') {
		unsigned char ch = (unsigned char)line[i];
		if (ch <= 0x20 || ch >= 0x7f)
			return POP3_PARSE_BAD;
		i++;
	}
	if (i - start > POP3_MAX_KEYWORD)
		return POP3_PARSE_BAD;
	cmd_r->keyword.p = line + start;
	cmd_r->keyword.len = i - start;
	if (i < len) {
		/* Skip the one separator; the rest is the command's to interpret (PASS keeps
		 * spaces inside a password). */
		i++;
		cmd_r->rest.p = line + i;
		cmd_r->rest.len = len - i;
	} else {
		cmd_r->rest.p = line + len;
		cmd_r->rest.len = 0;
	}
	return POP3_PARSE_OK;
}

int pop3_parse_args(struct pop3_token args, struct pop3_token *tokens_r, size_t max)
{
	size_t n = 0, i = 0;
	while (i < args.len) {
		while (i < args.len && args.p[i] == ' ')
			i++;
		if (i == args.len)
			break;
		size_t start = i;
		while (i < args.len && args.p[i] != ' ')
			i++;
		if (n == max)
			return -1;
		tokens_r[n].p = args.p + start;
		tokens_r[n].len = i - start;
		n++;
	}
	return (int)n;
}

bool pop3_parse_uint(struct pop3_token t, uint32_t *n_r)
{
	if (t.len == 0 || t.len > 10)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < t.len; i++) {
		if (t.p[i] < '0' || t.p[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(t.p[i] - '0');
	}
	if (v > UINT32_MAX)
		return false;
	*n_r = (uint32_t)v;
	return true;
}

bool pop3_token_equals(struct pop3_token t, const char *s)
{
	size_t n = strlen(s);
	return t.len == n && strncasecmp(t.p, s, n) == 0;
}
