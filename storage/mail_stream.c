/* mail_stream — a message's bytes with CRLF line ends, in bounded memory.
 *
 * The size is known before reading (kept per message). A file already in CRLF form (its size
 * on disk equals the CRLF size) is passed through; otherwise every LF not preceded by CR is
 * served as CRLF. The stream never yields more or fewer bytes than its size: a file that
 * changed under us (shorter) gives -EIO rather than a literal of the wrong length.
 */
#include "mailbox_private.h"

#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STREAM_CHUNK 16384

struct mail_stream {
	int fd;
	bool needs_crlf;
	uint64_t size;
	uint64_t pos;    /* bytes of the CRLF form served */
	bool last_cr;    /* last file byte consumed was CR */
	bool pending_lf; /* an LF is owed after an inserted CR */
	size_t buf_off, buf_len;
	char buf[STREAM_CHUNK];
};

int mail_stream_new_fd(int fd, uint64_t crlf_size, bool needs_crlf, struct mail_stream **stream_r)
{
	struct mail_stream *s = malloc(sizeof(*s));
	if (s == NULL) {
		close(fd);
		return -ENOMEM;
	}
	memset(s, 0, offsetof(struct mail_stream, buf));
	s->fd = fd;
	s->needs_crlf = needs_crlf;
	s->size = crlf_size;
	*stream_r = s;
	return 0;
}

uint64_t mail_stream_size(const struct mail_stream *s)
{
	return s->size;
}

int mail_stream_fd(const struct mail_stream *s, bool *needs_crlf_r)
{
	*needs_crlf_r = s->needs_crlf;
	return s->fd;
}

static int fill(struct mail_stream *s)
{
	for (;;) {
		ssize_t n = read(s->fd, s->buf, sizeof(s->buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		s->buf_off = 0;
		s->buf_len = (size_t)n;
		return (int)(n > 0);
	}
}

ssize_t mail_stream_read(struct mail_stream *s, void *out, size_t len)
{
	char *o = out;
	size_t got = 0;
	if (len > s->size - s->pos)
		len = (size_t)(s->size - s->pos);
	while (got < len) {
		if (s->pending_lf) {
			o[got++] = '\n';
			s->pending_lf = false;
			continue;
		}
		if (s->buf_off == s->buf_len) {
			int r = fill(s);
			if (r < 0)
				return r;
			if (r == 0) {
				log_error("storage: message shorter than its recorded size");
				return -EIO;
			}
		}
		if (!s->needs_crlf) {
			size_t n = s->buf_len - s->buf_off;
			if (n > len - got)
				n = len - got;
			memcpy(o + got, s->buf + s->buf_off, n);
			s->buf_off += n;
			got += n;
			continue;
		}
		while (got < len && s->buf_off < s->buf_len) {
			char c = s->buf[s->buf_off];
			if (c == '\n' && !s->last_cr) {
				o[got++] = '\r';
				s->last_cr = true; /* the LF below now follows a CR */
				if (got == len) {
					s->pending_lf = true;
					s->buf_off++;
					s->last_cr = false;
					break;
				}
				continue;
			}
			o[got++] = c;
			s->last_cr = c == '\r';
			s->buf_off++;
		}
	}
	s->pos += got;
	return (ssize_t)got;
}

int mail_stream_seek(struct mail_stream *s, uint64_t offset)
{
	if (offset > s->size)
		return -EINVAL;
	if (offset < s->pos) {
		if (lseek(s->fd, 0, SEEK_SET) < 0)
			return -errno;
		s->pos = 0;
		s->buf_off = s->buf_len = 0;
		s->last_cr = s->pending_lf = false;
	}
	if (!s->needs_crlf && s->buf_off == s->buf_len) {
		if (lseek(s->fd, (off_t)offset, SEEK_SET) < 0)
			return -errno;
		s->pos = offset;
		return 0;
	}
	char skip[4096];
	while (s->pos < offset) {
		uint64_t want = offset - s->pos;
		ssize_t n = mail_stream_read(s, skip,
					     want < sizeof(skip) ? (size_t)want : sizeof(skip));
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EIO;
	}
	return 0;
}

void mail_stream_free(struct mail_stream **sp)
{
	struct mail_stream *s = *sp;
	if (s == NULL)
		return;
	*sp = NULL;
	close(s->fd);
	free(s);
}
