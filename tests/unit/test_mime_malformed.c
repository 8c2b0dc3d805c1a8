/* The MIME parser on hostile input: 1,000-level nesting, a 10 MB header read from a file
 * under a memory limit, lines longer than the read window, CR/LF split across windows, and
 * random garbage. Each case must parse without a crash, keep the limits, and give the same
 * answers from memory, from a file descriptor and from the cache blob. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "mime_fetch.h"
#include "msg_parse.h"

#if defined(__SANITIZE_ADDRESS__)
#define MK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MK_ASAN 1
#endif
#endif

static void gen_append(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void gen_append(struct buf *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	assert_int_equal(buf_append(b, tmp, (size_t)n), 0);
}

/* A temporary file holding data; returns an fd open for reading. */
static int temp_file(const void *data, size_t len)
{
	char path[] = "/tmp/mk-mime-XXXXXX";
	const char *tmpdir = getenv("TMPDIR");
	char pbuf[4096];
	if (tmpdir && *tmpdir) {
		snprintf(pbuf, sizeof(pbuf), "%s/mk-mime-XXXXXX", tmpdir);
	} else {
		snprintf(pbuf, sizeof(pbuf), "%s", path);
	}
	int fd = mkstemp(pbuf);
	assert_true(fd >= 0);
	unlink(pbuf);
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(fd, (const char *)data + done, len - done);
		assert_true(n > 0);
		done += (size_t)n;
	}
	return fd;
}

static void assert_same(const struct msg_parsed *a, const struct msg_parsed *b)
{
	size_t la, lb;
	const char *sa = msg_parsed_bodystructure(a, &la), *sb = msg_parsed_bodystructure(b, &lb);
	assert_int_equal(la, lb);
	assert_memory_equal(sa, sb, la);
	sa = msg_parsed_envelope(a, &la);
	sb = msg_parsed_envelope(b, &lb);
	assert_int_equal(la, lb);
	assert_memory_equal(sa, sb, la);
	assert_int_equal(msg_parsed_size(a), msg_parsed_size(b));
	assert_int_equal(msg_parsed_part_count(a), msg_parsed_part_count(b));
}

/* Parse from memory and from an fd, check both agree and survive the cache. */
static struct msg_parsed *parse_both(const char *data, size_t len,
				     const struct msg_parse_limits *lim)
{
	struct msg_source src = msg_source_mem(data, len);
	struct msg_parsed *m, *f, *c;
	assert_int_equal(msg_parse(&src, lim, &m), 0);
	int fd = temp_file(data, len);
	struct msg_source fsrc = msg_source_fd(fd, len);
	assert_int_equal(msg_parse(&fsrc, lim, &f), 0);
	close(fd);
	assert_same(m, f);
	msg_parsed_free(&f);
	struct buf blob;
	buf_init(&blob, 1 << 24);
	assert_int_equal(msg_parse_serialize(m, &blob), 0);
	assert_int_equal(msg_parse_deserialize(buf_peek(&blob), buf_used(&blob), 0, &c), 0);
	assert_same(m, c);
	msg_parsed_free(&c);
	buf_clear(&blob);
	return m;
}

static size_t count_str(const char *s, size_t len, const char *needle)
{
	size_t n = 0, nl = strlen(needle);
	for (const char *p = s; (p = memmem(p, len - (size_t)(p - s), needle, nl)) != NULL; p += nl)
		n++;
	return n;
}

static void test_nesting_1000(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 1 << 24);
	gen_append(&b, "From: a@example.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n");
	for (int i = 0; i < 1000; i++)
		gen_append(&b,
			   "Content-Type: multipart/mixed; boundary=\"b%04d\"\r\n\r\n--b%04d\r\n"
			   "Content-Type: text/plain\r\n\r\nleaf %d\r\n--b%04d\r\n",
			   i, i, i, i);
	gen_append(&b, "Content-Type: text/plain\r\n\r\nbottom\r\n");
	for (int i = 999; i >= 0; i--)
		gen_append(&b, "--b%04d--\r\n", i);

	struct msg_parsed *m = parse_both(buf_peek(&b), buf_used(&b), NULL);
	size_t len;
	const char *bs = msg_parsed_bodystructure(m, &len);
	/* 100 levels (the default limit) are real multiparts; the 100th is cut to a leaf */
	assert_int_equal(count_str(bs, len, "\"mixed\" (\"boundary\""), 99);
	assert_int_equal(count_str(bs, len, "\"application\" \"octet-stream\""), 1);
	assert_true(msg_parsed_part_count(m) <= 2 * 100 + 1);
	assert_int_equal(msg_parsed_size(m), buf_used(&b));

	/* the cut part still serves its bytes: part 2.2.2... (99 twos) is the leaf */
	struct msg_section sec;
	char spec[512] = "";
	for (int i = 0; i < 99; i++)
		strcat(spec, i ? ".2" : "2");
	assert_int_equal(msg_section_parse(spec, strlen(spec), &sec), 0);
	struct msg_range r;
	assert_int_equal(msg_section_resolve(m, &sec, &r), 0);
	assert_true(r.size > 1000);
	msg_section_clear(&sec);
	msg_parsed_free(&m);

	/* a tighter limit is obeyed */
	struct msg_parse_limits lim;
	msg_parse_limits_default(&lim);
	lim.max_depth = 5;
	lim.max_parts = 7;
	m = parse_both(buf_peek(&b), buf_used(&b), &lim);
	assert_true(msg_parsed_part_count(m) <= 7);
	msg_parsed_free(&m);
	buf_clear(&b);
}

/* 10 MB of header in one folded field and 100,000 short fields. */
static void make_big_header(struct buf *b)
{
	gen_append(b, "From: big@example.com\r\nSubject: huge header\r\nX-Long: start");
	for (int i = 0; i < 160000; i++)
		gen_append(b, "\r\n continuation line number %07d of a very long folded field", i);
	gen_append(b, "\r\n");
	for (int i = 0; i < 20000; i++)
		gen_append(b, "To: user%d@example.com\r\n", i);
	gen_append(b,
		   "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nbody\r\n--x--\r\n");
}

static void test_header_10mb(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 16 << 20);
	make_big_header(&b);
	size_t len = buf_used(&b);
	assert_true(len > 7 * 1000 * 1000);
	struct msg_parsed *m = parse_both(buf_peek(&b), len, NULL);
	size_t elen;
	const char *env = msg_parsed_envelope(m, &elen);
	/* the kept To: values are capped (256 KiB per header block), the envelope stays small */
	assert_true(elen < 512 * 1024);
	assert_non_null(memmem(env, elen, "\"user0\" \"example.com\"", 21));
	struct buf blob;
	buf_init(&blob, 1 << 24);
	assert_int_equal(msg_parse_serialize(m, &blob), 0);
	assert_true(buf_used(&blob) < 1024 * 1024); /* fits the store's 1 MiB cache entry */
	buf_clear(&blob);

	/* HEADER.FIELDS on it works and is exact */
	struct msg_section sec;
	struct msg_range r;
	struct msg_source src = msg_source_mem(buf_peek(&b), len);
	assert_int_equal(msg_section_parse("HEADER.FIELDS (SUBJECT)", 23, &sec), 0);
	assert_int_equal(msg_section_resolve(m, &sec, &r), 0);
	struct buf f;
	buf_init(&f, 1 << 20);
	assert_int_equal(msg_section_fields(&src, &r, &sec, &f), 0);
	assert_int_equal(buf_used(&f), 24);
	assert_memory_equal(buf_peek(&f), "Subject: huge header\r\n\r\n", 24);
	buf_clear(&f);
	msg_section_clear(&sec);
	msg_parsed_free(&m);

	/* From a file under a memory limit far below the header size: parsing memory does not
	 * grow with the header (skipped under ASan, whose shadow memory defeats RLIMIT_DATA). */
#ifndef MK_ASAN
	int fd = temp_file(buf_peek(&b), len);
	buf_clear(&b);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl;
		struct msg_parsed *cm;
		FILE *st = fopen("/proc/self/statm", "r");
		unsigned long size = 0, rss = 0, shared = 0, text = 0, lib = 0, data = 0;
		if (!st || fscanf(st, "%lu %lu %lu %lu %lu %lu", &size, &rss, &shared, &text, &lib,
				  &data) != 6)
			_exit(3);
		fclose(st);
		rl.rlim_cur = rl.rlim_max = data * (unsigned long)sysconf(_SC_PAGESIZE) + (6 << 20);
		if (setrlimit(RLIMIT_DATA, &rl) < 0)
			_exit(4);
		struct msg_source fsrc = msg_source_fd(fd, len);
		if (msg_parse(&fsrc, NULL, &cm) != 0)
			_exit(1);
		if (msg_parsed_size(cm) != len)
			_exit(2);
		msg_parsed_free(&cm);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(fd);
#else
	buf_clear(&b);
#endif
}

/* Lines longer than the read window, and CRLF split exactly at window edges. */
static void test_window_edges(void **state)
{
	(void)state;
	for (int shift = -3; shift <= 3; shift++) {
		struct buf b;
		buf_init(&b, 1 << 22);
		gen_append(&b,
			   "Subject: window\r\nContent-Type: multipart/mixed; boundary=w\r\n\r\n"
			   "--w\r\nContent-Type: text/plain\r\n\r\n");
		/* pad so that a line end falls at MSG_READ_CHUNK + shift */
		size_t target = MSG_READ_CHUNK + (size_t)(shift + 3);
		while (buf_used(&b) + 80 < target)
			gen_append(&b, "%078d\r\n", 0);
		while (buf_used(&b) + 2 < target)
			buf_append(&b, "y", 1);
		gen_append(&b, "\r\n--w\r\nContent-Type: text/plain\r\n\r\n");
		for (int i = 0; i < 3 * MSG_READ_CHUNK; i++)
			buf_append(&b, "L", 1);
		gen_append(&b, "\n--w\r\n\r\nlast\n--w--\r\n");
		struct msg_parsed *m = parse_both(buf_peek(&b), buf_used(&b), NULL);
		size_t len;
		const char *bs = msg_parsed_bodystructure(m, &len);
		char want[128];
		snprintf(want, sizeof(want), "\"7bit\" %d 0 ", 3 * MSG_READ_CHUNK);
		assert_non_null(memmem(bs, len, want, strlen(want)));
		assert_int_equal(msg_parsed_part_count(m), 4);
		/* the bare LF counts two octets */
		assert_int_equal(msg_parsed_size(m), buf_used(&b) + 2);
		msg_parsed_free(&m);
		buf_clear(&b);
	}
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 16);
}

static const char *const tokens[] = {
	"\r\n",
	"\n",
	"\r",
	"--",
	"--a",
	"--a--",
	"--b\r\n",
	"Content-Type: multipart/mixed; boundary=a\r\n",
	"Content-Type: multipart/digest; boundary=\"b\"\r\n",
	"Content-Type: message/rfc822\r\n",
	"Content-Transfer-Encoding: base64\r\n",
	"Content-Transfer-Encoding: quoted-printable\r\n",
	"\r\n\r\n",
	" ",
	"\t",
	"=?utf-8?B?w7w=?=",
	"=?x?Q?a_b?=",
	"From: \"a\\\" <b@c>, (x\r\n",
	"To: g: a@b, <c@d>;\r\n",
	"Content-Disposition: attachment; filename*0*=utf-8''%41; filename*1=b\r\n",
	"=",
	"=4",
	"=41",
	"\"",
	"(",
	"<",
	">",
	"@",
	";",
	":",
	",",
	"\x80",
	"\xff",
	"\0",
	"Content-Language: en, (c) de\r\n",
	"name*0=\"x\"",
	"Content-Type: text\r\n",
};

static void test_random_garbage(void **state)
{
	(void)state;
	char chunk[8192];
	for (int round = 0; round < 300; round++) {
		struct buf b;
		buf_init(&b, 1 << 20);
		unsigned pieces = rng() % 400;
		for (unsigned i = 0; i < pieces; i++) {
			if (rng() % 3 == 0) {
				char c = (char)rng();
				buf_append(&b, &c, 1);
			} else {
				const char *t =
					tokens[rng() % (sizeof(tokens) / sizeof(tokens[0]))];
				buf_append(&b, t, t[0] ? strlen(t) : 1);
			}
		}
		const char *data = buf_used(&b) ? buf_peek(&b) : "";
		size_t len = buf_used(&b);
		struct msg_parsed *m = parse_both(data, len, NULL);
		struct msg_source src = msg_source_mem(data, len);
		/* every item the FETCH code could ask for */
		struct buf out;
		buf_init(&out, 1 << 24);
		(void)mime_test_fetch(
			&src, m,
			"RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE BODY.PEEK[HEADER] "
			"BODY.PEEK[TEXT] BINARY.SIZE[1] BODY.PEEK[1.MIME] BODY.PEEK[2] "
			"BODY.PEEK[1.1] BODY.PEEK[2.HEADER.FIELDS (FROM TO)] "
			"BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)] BINARY.SIZE[2.1]",
			&out);
		buf_clear(&out);
		struct msg_reader *rd;
		uint32_t path[2] = {1 + rng() % 3, 1 + rng() % 2};
		if (msg_binary_open(&src, m, path, 1 + rng() % 2, &rd) == 0) {
			while (msg_reader_read(rd, chunk, sizeof(chunk)) > 0)
				;
			msg_reader_free(&rd);
		}
		struct buf h;
		buf_init(&h, 1 << 20);
		(void)msg_header_get(&src, m, "From", 0, true, &h);
		buf_clear(&h);
		msg_parsed_free(&m);
		buf_clear(&b);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nesting_1000),
		cmocka_unit_test(test_header_10mb),
		cmocka_unit_test(test_window_edges),
		cmocka_unit_test(test_random_garbage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
