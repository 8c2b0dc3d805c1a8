#include "mime_fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "msg_imapstr.h"

int mime_test_read_file(const char *path, char **data_r, size_t *len_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return -errno;
	}
	char *d = malloc((size_t)st.st_size + 1);
	if (!d) {
		close(fd);
		return -ENOMEM;
	}
	size_t done = 0;
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, d + done, (size_t)st.st_size - done);
		if (n <= 0) {
			free(d);
			close(fd);
			return n < 0 ? -errno : -EIO;
		}
		done += (size_t)n;
	}
	close(fd);
	d[done] = '\0';
	*data_r = d;
	*len_r = done;
	return 0;
}

const char *mime_test_fixture_dir(void)
{
	static char path[4096];
	const char *env = getenv("MK_FIXTURES");
	struct stat st;
	if (env && *env) {
		snprintf(path, sizeof(path), "%s/mime", env);
		if (stat(path, &st) == 0)
			return path;
	}
	snprintf(path, sizeof(path), "%s/../shared/fixtures/mime", MK_TEST_SOURCE_DIR);
	return path;
}

static int append_range(const struct msg_source *src, const struct msg_range *r, uint64_t skip,
			uint64_t count, unsigned flags, struct buf *out)
{
	struct msg_reader *rd;
	char chunk[4096];
	int ret = msg_reader_open(src, r, skip, flags, &rd);
	if (ret < 0)
		return ret;
	uint64_t left = count;
	while (left > 0) {
		ssize_t n = msg_reader_read(rd, chunk, left < sizeof(chunk) ? left : sizeof(chunk));
		if (n <= 0) {
			ret = (int)n;
			break;
		}
		if ((ret = buf_append(out, chunk, (size_t)n)) < 0)
			break;
		left -= (uint64_t)n;
	}
	msg_reader_free(&rd);
	return ret;
}

static int appendf(struct buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int appendf(struct buf *out, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	return buf_append(out, tmp, (size_t)n);
}

/* One BODY[...]<partial> item. name is the spec text (between the brackets). */
static int item_body(const struct msg_source *src, const struct msg_parsed *msg, const char *spec,
		     size_t speclen, const char *partial, struct buf *out)
{
	struct msg_section sec;
	struct msg_range r;
	int ret = msg_section_parse(spec, speclen, &sec);
	if (ret < 0)
		return ret;
	uint64_t skip = 0, count = UINT64_MAX;
	if (partial)
		sscanf(partial, "<%" SCNu64 ".%" SCNu64 ">", &skip, &count);
	ret = appendf(out, "BODY[%.*s]", (int)speclen, spec);
	if (partial)
		ret = appendf(out, "<%" PRIu64 ">", skip);
	ret = buf_append(out, " ", 1);
	int rr = msg_section_resolve(msg, &sec, &r);
	if (rr == -ENOENT) {
		/* Dovecot: a part that does not exist is an empty string */
		ret = buf_append(out, "{0}\r\n", 5);
	} else if (rr < 0) {
		ret = rr;
	} else if (sec.kind == MSG_SECTION_HEADER_FIELDS ||
		   sec.kind == MSG_SECTION_HEADER_FIELDS_NOT) {
		struct buf f;
		buf_init(&f, 1 << 24);
		ret = msg_section_fields(src, &r, &sec, &f);
		if (ret == 0) {
			size_t n = buf_used(&f);
			size_t s = skip < n ? (size_t)skip : n;
			size_t c = count < n - s ? (size_t)count : n - s;
			ret = msg_imapstr_literal_header(out, c);
			if (ret == 0)
				ret = buf_append(out, buf_peek(&f) + s, c);
		}
		buf_clear(&f);
	} else {
		uint64_t s = skip < r.size ? skip : r.size;
		uint64_t c = count < r.size - s ? count : r.size - s;
		ret = msg_imapstr_literal_header(out, (size_t)c);
		if (ret == 0)
			ret = append_range(src, &r, s, c, MSG_READER_NUL_TO_80, out);
	}
	msg_section_clear(&sec);
	return ret;
}

int mime_test_fetch(const struct msg_source *src, const struct msg_parsed *msg, const char *items,
		    struct buf *out)
{
	struct buf data;
	buf_init(&data, 1 << 26);
	int failed = 0, ret = 0;
	unsigned n = 0;
	const char *p = items;
	while (*p && ret == 0) {
		const char *s = p;
		int depth = 0;
		while (*p && (depth > 0 || *p != ' ')) {
			if (*p == '[' || *p == '(')
				depth++;
			else if (*p == ']' || *p == ')')
				depth--;
			p++;
		}
		size_t len = (size_t)(p - s);
		if (*p == ' ')
			p++;
		const char *sep = n > 0 ? " " : "";
		size_t elen;
		const char *e;
		if (len == 11 && strncmp(s, "RFC822.SIZE", 11) == 0) {
			ret = appendf(&data, "%sRFC822.SIZE %" PRIu64, sep, msg_parsed_size(msg));
		} else if (len == 8 && strncmp(s, "ENVELOPE", 8) == 0) {
			e = msg_parsed_envelope(msg, &elen);
			ret = appendf(&data, "%sENVELOPE ", sep);
			ret = buf_append(&data, e, elen);
		} else if (len == 4 && strncmp(s, "BODY", 4) == 0) {
			e = msg_parsed_body(msg, &elen);
			ret = appendf(&data, "%sBODY ", sep);
			ret = buf_append(&data, e, elen);
		} else if (len == 13 && strncmp(s, "BODYSTRUCTURE", 13) == 0) {
			e = msg_parsed_bodystructure(msg, &elen);
			ret = appendf(&data, "%sBODYSTRUCTURE ", sep);
			ret = buf_append(&data, e, elen);
		} else if (strncmp(s, "BODY.PEEK[", 10) == 0) {
			const char *close = memchr(s, ']', len);
			const char *partial = close + 1 < s + len ? close + 1 : NULL;
			buf_append(&data, sep, strlen(sep));
			ret = item_body(src, msg, s + 10, (size_t)(close - s - 10), partial, &data);
		} else if (strncmp(s, "BINARY.SIZE[", 12) == 0) {
			uint32_t path[MSG_SECTION_MAX_PATH];
			unsigned np = 0;
			const char *q = s + 12;
			while (*q != ']') {
				path[np++] = (uint32_t)strtoul(q, (char **)&q, 10);
				if (*q == '.')
					q++;
			}
			uint64_t size;
			int r = msg_binary_size(src, msg, path, np, &size);
			if (r == -ENOENT) {
				size = 0;
				r = 0;
			}
			if (r < 0) {
				failed = r;
				continue; /* Dovecot leaves the item out and answers NO */
			}
			ret = appendf(&data, "%s%.*s %" PRIu64, sep, (int)len, s, size);
		} else {
			ret = -EINVAL;
		}
		n++;
	}
	if (ret == 0) {
		if (buf_used(&data) == 0 && failed)
			ret = buf_append(out, "* 1 FETCH (UID 1)\r\n", 19);
		else if ((ret = buf_append(out, "* 1 FETCH (", 11)) == 0 &&
			 (ret = buf_append(out, buf_peek(&data), buf_used(&data))) == 0)
			ret = buf_append(out, ")\r\n", 3);
	}
	buf_clear(&data);
	return ret < 0 ? ret : failed;
}
