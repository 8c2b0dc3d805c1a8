/* libFuzzer target for the MIME parser (storage/msg_parse.h).
 *
 * Input: byte 0 picks the limits and the read window, the rest is the message. The message
 * is parsed from memory and from a memfd read in small windows (the two must agree whenever
 * no line is longer than the window), every IMAP item is built, sections and BINARY are read,
 * SEARCH text is decoded, and the cache blob must round-trip to identical strings. The raw
 * input is also fed to the cache loader, which must refuse it or load something usable. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mime_private.h"
#include "msg_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die_if(int cond)
{
	if (cond)
		abort();
}

static int count_cb(void *ctx, const char *s, size_t len)
{
	size_t *n = ctx;
	*n += len;
	(void)s;
	return 0;
}

static void same(const struct msg_parsed *a, const struct msg_parsed *b)
{
	size_t la, lb;
	const char *sa, *sb;
	die_if(msg_parsed_size(a) != msg_parsed_size(b));
	die_if(msg_parsed_part_count(a) != msg_parsed_part_count(b));
	sa = msg_parsed_bodystructure(a, &la);
	sb = msg_parsed_bodystructure(b, &lb);
	die_if(la != lb || memcmp(sa, sb, la) != 0);
	sa = msg_parsed_body(a, &la);
	sb = msg_parsed_body(b, &lb);
	die_if(la != lb || memcmp(sa, sb, la) != 0);
	sa = msg_parsed_envelope(a, &la);
	sb = msg_parsed_envelope(b, &lb);
	die_if(la != lb || memcmp(sa, sb, la) != 0);
}

static void exercise(const struct msg_source *src, const struct msg_parsed *m)
{
	static const char *const specs[] = {
		"",
		"HEADER",
		"TEXT",
		"1",
		"1.MIME",
		"2",
		"2.1",
		"2.HEADER",
		"2.TEXT",
		"1.2.3",
		"3.1.MIME",
		"HEADER.FIELDS (FROM SUBJECT)",
		"2.HEADER.FIELDS.NOT (TO)",
	};
	char chunk[4096];
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		struct msg_section sec;
		struct msg_range r;
		die_if(msg_section_parse(specs[i], strlen(specs[i]), &sec) != 0);
		if (msg_section_resolve(m, &sec, &r) == 0) {
			die_if(r.off + r.size > msg_parsed_size(m));
			if (sec.kind == MSG_SECTION_HEADER_FIELDS ||
			    sec.kind == MSG_SECTION_HEADER_FIELDS_NOT) {
				struct buf f;
				buf_init(&f, 1 << 22);
				die_if(msg_section_fields(src, &r, &sec, &f) != 0);
				buf_clear(&f);
			} else {
				struct msg_reader *rd;
				uint64_t total = 0;
				ssize_t n;
				die_if(msg_reader_open(src, &r, 0, MSG_READER_NUL_TO_80, &rd) != 0);
				while ((n = msg_reader_read(rd, chunk, sizeof(chunk))) > 0)
					total += (uint64_t)n;
				die_if(n != 0 || total != r.size);
				msg_reader_free(&rd);
			}
		}
		msg_section_clear(&sec);
	}
	uint32_t paths[][2] = {{1, 1}, {2, 1}, {1, 2}, {3, 3}};
	for (size_t i = 0; i < 4; i++) {
		uint64_t size;
		struct msg_reader *rd;
		int r1 = msg_binary_size(src, m, paths[i], 1 + (unsigned)(i & 1), &size);
		if (msg_binary_open(src, m, paths[i], 1 + (unsigned)(i & 1), &rd) == 0) {
			uint64_t total = 0;
			ssize_t n;
			while ((n = msg_reader_read(rd, chunk, sizeof(chunk))) > 0)
				total += (uint64_t)n;
			die_if(r1 == 0 && (n != 0 || total != size));
			msg_reader_free(&rd);
		}
	}
	size_t textlen = 0;
	die_if(msg_text_foreach(src, m, MSG_TEXT_HEADERS | MSG_TEXT_BODIES, count_cb, &textlen) !=
	       0);
	struct buf h;
	buf_init(&h, 1 << 20);
	(void)msg_header_get(src, m, "subject", 0, true, &h);
	buf_clear(&h);
}

static bool lines_shorter_than(const uint8_t *d, size_t n, size_t max)
{
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		run = d[i] == '\n' ? 0 : run + 1;
		if (run >= max - 1)
			return false;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t opt = data[0];
	const char *msg = (const char *)data + 1;
	size_t len = size - 1;
	struct msg_parse_limits lim;
	msg_parse_limits_default(&lim);
	if (opt & 1) {
		lim.max_depth = 1 + (opt >> 4);
		lim.max_parts = 1 + (opt >> 2);
		lim.max_header_value = 16 + opt;
		lim.max_header_keep = 64 + 2 * opt;
	}

	struct msg_source src = msg_source_mem(msg, len);
	struct msg_parsed *m, *c;
	die_if(msg_parse(&src, &lim, &m) != 0);
	die_if(msg_parsed_part_count(m) > lim.max_parts);
	exercise(&src, m);

	/* the same message from a file, read in small windows */
	int fd = memfd_create("fuzz", 0);
	if (fd >= 0) {
		size_t done = 0;
		while (done < len) {
			ssize_t n = write(fd, msg + done, len - done);
			if (n <= 0)
				break;
			done += (size_t)n;
		}
		if (done == len) {
			size_t win = 256 + (size_t)(opt & 0x3e) * 4;
			mime_read_window = win;
			struct msg_source fsrc = msg_source_fd(fd, len);
			struct msg_parsed *f;
			die_if(msg_parse(&fsrc, &lim, &f) != 0);
			if (lines_shorter_than((const uint8_t *)msg, len, win))
				same(m, f);
			exercise(&fsrc, f);
			msg_parsed_free(&f);
			mime_read_window = MSG_READ_CHUNK;
		}
		close(fd);
	}

	/* cache round trip */
	struct buf blob;
	buf_init(&blob, 1 << 24);
	die_if(msg_parse_serialize(m, &blob) != 0);
	die_if(msg_parse_deserialize(buf_peek(&blob), buf_used(&blob), msg_parsed_size(m), &c) !=
	       0);
	same(m, c);
	exercise(&src, c);
	msg_parsed_free(&c);
	buf_clear(&blob);
	msg_parsed_free(&m);

	/* the raw input as a cache blob: refused, or safe to use */
	if (msg_parse_deserialize(data, size, 0, &c) == 0) {
		size_t l;
		(void)msg_parsed_bodystructure(c, &l);
		msg_parsed_free(&c);
	}
	return 0;
}
