/* mail_parsed — the MIME parser's results through the per-folder cache: a cached blob when it
 * is there and valid (msg_parse_deserialize checks it against the message size), else parse
 * the file and store the blob (msg_parse_serialize) for next time. */
#include "mailbox_private.h"
#include "msg_parse.h"

#include "buf.h"
#include "log.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#define PARSED_BLOB_MAX (1u << 20)

int view_msg_parsed(const struct view *view, uint32_t seq, struct msg_parsed **msg_r)
{
	struct mail_info info;
	int r = view_msg_info(view, seq, &info);
	if (r < 0)
		return r;
	struct mailbox *mbox = view_mailbox(view);
	const void *blob;
	size_t blob_len;
	if (mailbox_cache_get(mbox, info.uid, &blob, &blob_len) == 0 &&
	    msg_parse_deserialize(blob, blob_len, info.size, msg_r) == 0)
		return 0;
	struct mail_stream *stream;
	r = view_msg_open(view, seq, &stream);
	if (r < 0)
		return r;
	bool conv;
	int fd = mail_stream_fd(stream, &conv);
	struct stat st;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		mail_stream_free(&stream);
		return r;
	}
	struct msg_source src = msg_source_fd(fd, (uint64_t)st.st_size);
	r = msg_parse(&src, NULL, msg_r);
	mail_stream_free(&stream);
	if (r < 0)
		return r;
	struct buf b;
	buf_init(&b, PARSED_BLOB_MAX);
	if (msg_parse_serialize(*msg_r, &b) == 0) {
		int cr = mailbox_cache_put(mbox, info.uid, buf_peek(&b), buf_used(&b));
		if (cr < 0 && cr != -ENOENT)
			log_warn("storage: cache write failed folder=%s err=%d",
				 log_escape_str(mailbox_name(mbox)), cr);
	}
	buf_clear(&b);
	return 0;
}
