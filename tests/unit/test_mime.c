/* The MIME parser against the shared fixtures (../shared/fixtures/mime): for every message,
 * every FETCH the reference server (Dovecot 2.3.19.1) was sent is rebuilt from the msg_parse
 * API and compared byte for byte with the untagged responses in NAME.expected; the tagged
 * status must agree (OK, or NO with the same response code). Each message is checked parsed
 * from memory, parsed from a file descriptor, loaded back from its cache blob, and with every
 * CRLF turned into a bare LF; messages authored with bare LF (NAME.lf) must give the same
 * bytes.
 *
 * Deliberate differences from Dovecot: none. Where Dovecot's answer is debatable (see the
 * fixtures' README and storage/README.md "Message parsing") we match Dovecot's IMAP4rev1
 * bytes, so these comparisons are exact for all 45 messages. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mime_fetch.h"
#include "msg_parse.h"

#define MAX_FIXTURES 256

struct fx_cmd {
	char tag[8];
	char items[512];
	char status[8];
	char code[64];
	size_t offset, length;
};

static const char *json_str(const char *p, const char *key, char *dst, size_t dstlen)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\": \"", key);
	const char *s = strstr(p, pat);
	if (!s)
		return NULL;
	s += strlen(pat);
	size_t n = 0;
	while (*s && *s != '"' && n + 1 < dstlen) {
		if (*s == '\\' && s[1])
			s++;
		dst[n++] = *s++;
	}
	dst[n] = '\0';
	return s;
}

static const char *json_num(const char *p, const char *key, size_t *v)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\": ", key);
	const char *s = strstr(p, pat);
	if (!s)
		return NULL;
	*v = strtoul(s + strlen(pat), NULL, 10);
	return s + strlen(pat);
}

static unsigned parse_commands(const char *json, struct fx_cmd *cmds, unsigned max)
{
	const char *p = strstr(json, "\"commands\"");
	const char *end = p ? strstr(p, "\"multipart\"") : NULL;
	unsigned n = 0;
	assert_non_null(p);
	assert_non_null(end);
	while (n < max) {
		struct fx_cmd *c = &cmds[n];
		char command[600];
		const char *q = json_str(p, "tag", c->tag, sizeof(c->tag));
		if (!q || q > end)
			break;
		assert_non_null(q = json_str(q, "command", command, sizeof(command)));
		assert_non_null(q = json_str(q, "status", c->status, sizeof(c->status)));
		char text[200];
		assert_non_null(q = json_str(q, "status_text", text, sizeof(text)));
		c->code[0] = '\0';
		if (text[0] == '[') {
			char *close = strchr(text, ']');
			assert_non_null(close);
			snprintf(c->code, sizeof(c->code), "%.*s", (int)(close - text + 1), text);
		}
		assert_non_null(q = json_num(q, "offset", &c->offset));
		assert_non_null(q = json_num(q, "length", &c->length));
		/* "FETCH 1 (items)" */
		assert_int_equal(strncmp(command, "FETCH 1 (", 9), 0);
		size_t il = strlen(command) - 10;
		memcpy(c->items, command + 9, il);
		c->items[il] = '\0';
		p = q;
		n++;
	}
	return n;
}

/* Compare every command's untagged response and status for one parsed message. */
static void check_answers(const char *name, const struct msg_source *src,
			  const struct msg_parsed *msg, const char *expected, size_t explen,
			  const struct fx_cmd *cmds, unsigned ncmds)
{
	for (unsigned i = 0; i < ncmds; i++) {
		const struct fx_cmd *c = &cmds[i];
		assert_true(c->offset + c->length <= explen);
		const char *block = expected + c->offset;
		/* the tagged line is the block's last line */
		size_t ulen = c->length - 2;
		while (ulen > 0 && !(block[ulen - 1] == '\n'))
			ulen--;
		struct buf out;
		buf_init(&out, 1 << 26);
		int ret = mime_test_fetch(src, msg, c->items, &out);
		if (buf_used(&out) != ulen || memcmp(buf_peek(&out), block, ulen) != 0) {
			fprintf(stderr, "%s %s FETCH (%s)\nexpected: %.*s\nactual:   %.*s\n", name,
				c->tag, c->items, (int)ulen, block, (int)buf_used(&out),
				buf_used(&out) ? buf_peek(&out) : "");
			fail_msg("%s %s: response differs", name, c->tag);
		}
		if (strcmp(c->status, "OK") == 0) {
			assert_int_equal(ret, 0);
		} else {
			assert_string_equal(c->status, "NO");
			if (strcmp(c->code, "[PARSE]") == 0)
				assert_int_equal(ret, -EBADMSG);
			else if (strcmp(c->code, "[UNKNOWN-CTE]") == 0)
				assert_int_equal(ret, -EOPNOTSUPP);
			else
				fail_msg("%s %s: unexpected status %s", name, c->tag, c->code);
		}
		buf_clear(&out);
	}
}

static void assert_same_strings(const struct msg_parsed *a, const struct msg_parsed *b)
{
	size_t la, lb;
	const char *sa, *sb;
	assert_int_equal(msg_parsed_size(a), msg_parsed_size(b));
	assert_int_equal(msg_parsed_part_count(a), msg_parsed_part_count(b));
	sa = msg_parsed_envelope(a, &la);
	sb = msg_parsed_envelope(b, &lb);
	assert_int_equal(la, lb);
	assert_memory_equal(sa, sb, la);
	sa = msg_parsed_body(a, &la);
	sb = msg_parsed_body(b, &lb);
	assert_int_equal(la, lb);
	assert_memory_equal(sa, sb, la);
	sa = msg_parsed_bodystructure(a, &la);
	sb = msg_parsed_bodystructure(b, &lb);
	assert_int_equal(la, lb);
	assert_memory_equal(sa, sb, la);
}

static void test_fixture(void **state)
{
	const char *name = *state;
	const char *dir = mime_test_fixture_dir();
	char path[4096];
	char *eml, *expected, *json;
	size_t emllen, explen, jsonlen;
	struct fx_cmd cmds[16];

	snprintf(path, sizeof(path), "%s/%s.eml", dir, name);
	assert_int_equal(mime_test_read_file(path, &eml, &emllen), 0);
	snprintf(path, sizeof(path), "%s/%s.expected", dir, name);
	assert_int_equal(mime_test_read_file(path, &expected, &explen), 0);
	snprintf(path, sizeof(path), "%s/%s.json", dir, name);
	assert_int_equal(mime_test_read_file(path, &json, &jsonlen), 0);
	unsigned ncmds = parse_commands(json, cmds, 16);
	assert_true(ncmds >= 3);

	/* from memory */
	struct msg_source src = msg_source_mem(eml, emllen);
	struct msg_parsed *msg;
	assert_int_equal(msg_parse(&src, NULL, &msg), 0);
	assert_int_equal(msg_parsed_size(msg), emllen); /* the stored files are CRLF */
	check_answers(name, &src, msg, expected, explen, cmds, ncmds);

	/* from a file descriptor, in bounded reads */
	snprintf(path, sizeof(path), "%s/%s.eml", dir, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	struct msg_source fsrc = msg_source_fd(fd, emllen);
	struct msg_parsed *fmsg;
	assert_int_equal(msg_parse(&fsrc, NULL, &fmsg), 0);
	assert_same_strings(msg, fmsg);
	check_answers(name, &fsrc, fmsg, expected, explen, cmds, ncmds);
	msg_parsed_free(&fmsg);
	close(fd);

	/* through the cache blob */
	struct buf blob;
	buf_init(&blob, 1 << 20);
	assert_int_equal(msg_parse_serialize(msg, &blob), 0);
	struct msg_parsed *cmsg;
	assert_int_equal(msg_parse_deserialize(buf_peek(&blob), buf_used(&blob), emllen, &cmsg), 0);
	assert_same_strings(msg, cmsg);
	check_answers(name, &src, cmsg, expected, explen, cmds, ncmds);
	msg_parsed_free(&cmsg);
	buf_clear(&blob);
	msg_parsed_free(&msg);

	/* every message stored with bare LF instead of CRLF gives identical answers: sizes and
	 * offsets count a bare LF as two octets and the readers serve CRLF */
	char *conv = malloc(emllen ? emllen : 1);
	size_t convlen = 0;
	assert_non_null(conv);
	for (size_t i = 0; i < emllen; i++)
		if (!(eml[i] == '\r' && i + 1 < emllen && eml[i + 1] == '\n'))
			conv[convlen++] = eml[i];
	struct msg_source csrc = msg_source_mem(conv, convlen);
	assert_int_equal(msg_parse(&csrc, NULL, &msg), 0);
	assert_int_equal(msg_parsed_size(msg), emllen);
	check_answers(name, &csrc, msg, expected, explen, cmds, ncmds);
	msg_parsed_free(&msg);
	free(conv);

	/* the bare-LF original gives identical answers (sizes count CRLF) */
	snprintf(path, sizeof(path), "%s/%s.lf", dir, name);
	char *lf;
	size_t lflen;
	if (mime_test_read_file(path, &lf, &lflen) == 0) {
		assert_null(memchr(lf, '\r', lflen));
		struct msg_source lsrc = msg_source_mem(lf, lflen);
		assert_int_equal(msg_parse(&lsrc, NULL, &msg), 0);
		assert_int_equal(msg_parsed_size(msg), emllen);
		check_answers(name, &lsrc, msg, expected, explen, cmds, ncmds);
		msg_parsed_free(&msg);
		free(lf);
	}
	free(eml);
	free(expected);
	free(json);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
	const char *dir = mime_test_fixture_dir();
	DIR *d = opendir(dir);
	if (!d) {
		fprintf(stderr, "fixture folder %s: %s\n", dir, strerror(errno));
		return 1;
	}
	char *names[MAX_FIXTURES];
	unsigned n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL && n < MAX_FIXTURES) {
		size_t l = strlen(de->d_name);
		if (l > 4 && strcmp(de->d_name + l - 4, ".eml") == 0)
			names[n++] = strndup(de->d_name, l - 4);
	}
	closedir(d);
	qsort(names, n, sizeof(names[0]), name_cmp);
	if (n != 45) {
		fprintf(stderr, "expected 45 fixtures in %s, found %u\n", dir, n);
		return 1;
	}
	struct CMUnitTest tests[MAX_FIXTURES];
	for (unsigned i = 0; i < n; i++) {
		memset(&tests[i], 0, sizeof(tests[i]));
		tests[i].name = names[i];
		tests[i].test_func = test_fixture;
		tests[i].initial_state = names[i];
	}
	int ret = _cmocka_run_group_tests("mime_fixtures", tests, n, NULL, NULL);
	for (unsigned i = 0; i < n; i++)
		free(names[i]);
	return ret;
}
