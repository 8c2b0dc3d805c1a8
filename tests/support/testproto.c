#include "testproto.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"

struct tp_session {
	struct conn *c;
	uint64_t big_left; /* BIG in progress */
	uint64_t big_pos;
	int fd; /* FILE in progress */
};

static const char pattern[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
#define PATTERN_LEN (sizeof(pattern) - 1)

static void *tp_new(struct conn *c)
{
	struct tp_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->c = c;
	s->fd = -1;
	conn_write_str(c, "+HELLO\r\n");
	return s;
}

/* Produce BIG output while the connection takes it. Returns true when finished. */
static bool tp_big_continue(struct tp_session *s)
{
	char chunk[4096];
	while (s->big_left > 0) {
		if (conn_output_blocked(s->c)) {
			log_info("conn=%llu event=test_blocked queued=%zu",
				 (unsigned long long)conn_id(s->c), conn_output_queued(s->c));
			return false;
		}
		size_t n = s->big_left < sizeof(chunk) ? (size_t)s->big_left : sizeof(chunk);
		for (size_t i = 0; i < n; i++)
			chunk[i] = pattern[(s->big_pos + i) % PATTERN_LEN];
		conn_write(s->c, chunk, n);
		s->big_pos += n;
		s->big_left -= n;
	}
	conn_write_str(s->c, "\r\n.\r\n");
	conn_input_resume(s->c);
	return true;
}

static void tp_file_done(struct conn *c, void *ctx, int status)
{
	struct tp_session *s = ctx;
	close(s->fd);
	s->fd = -1;
	if (status == -ECANCELED)
		return;
	conn_write_str(c, status == 0 ? ".\r\n" : "-ERR read failed\r\n");
}

static void tp_command(struct tp_session *s, const char *line, size_t len)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "%.*s", (int)(len < 255 ? len : 255), line);
	char *arg = strchr(cmd, ' ');
	if (arg)
		*arg++ = '\0';
	if (strcasecmp(cmd, "ECHO") == 0) {
		conn_printf(s->c, "%s\r\n", arg ? arg : "");
	} else if (strcasecmp(cmd, "BIG") == 0 && arg) {
		s->big_left = strtoull(arg, NULL, 10);
		s->big_pos = 0;
		conn_input_pause(s->c);
		tp_big_continue(s);
	} else if (strcasecmp(cmd, "FILE") == 0 && arg) {
		s->fd = open(arg, O_RDONLY | O_CLOEXEC);
		off_t size = s->fd >= 0 ? lseek(s->fd, 0, SEEK_END) : -1;
		if (s->fd < 0 || size < 0 ||
		    conn_stream_file(s->c, s->fd, 0, (uint64_t)size, NULL, tp_file_done, s) < 0) {
			if (s->fd >= 0)
				close(s->fd);
			s->fd = -1;
			conn_write_str(s->c, "-ERR cannot open\r\n");
		}
	} else if (strcasecmp(cmd, "STARTTLS") == 0) {
		if (!conn_can_starttls(s->c)) {
			conn_write_str(s->c, "-ERR TLS not available\r\n");
			return;
		}
		conn_write_str(s->c, "+OK begin TLS\r\n");
		conn_starttls(s->c);
	} else if (strcasecmp(cmd, "COMPRESS") == 0) {
		conn_write_str(s->c, "+OK DEFLATE active\r\n");
		if (conn_compress_start(s->c) < 0)
			conn_write_str(s->c, "-ERR already compressing\r\n");
	} else if (strcasecmp(cmd, "TLS") == 0) {
		conn_write_str(s->c, conn_is_tls(s->c) ? "tls=yes\r\n" : "tls=no\r\n");
	} else if (strcasecmp(cmd, "QUIT") == 0) {
		conn_write_str(s->c, "+BYE\r\n");
		conn_close(s->c, "client quit");
	} else {
		conn_write_str(s->c, "-ERR unknown command\r\n");
		if (conn_note_bad_command(s->c)) {
			conn_write_str(s->c, "-ERR too many bad commands\r\n");
			conn_close(s->c, "too many bad commands");
		}
	}
}

static void tp_input(void *session)
{
	struct tp_session *s = session;
	while (!conn_is_closing(s->c) && !conn_output_blocked(s->c) && s->big_left == 0 &&
	       s->fd < 0) {
		const char *line;
		size_t len;
		enum conn_line_result r = conn_read_line(s->c, &line, &len);
		if (r == CONN_LINE_MORE)
			return;
		if (r == CONN_LINE_TOO_LONG) {
			conn_write_str(s->c, "-ERR line too long\r\n");
			conn_close(s->c, "line too long");
			return;
		}
		tp_command(s, line, len); /* after STARTTLS, conn_read_line gives nothing more */
	}
}

static void tp_drain(void *session)
{
	struct tp_session *s = session;
	if (s->big_left > 0)
		tp_big_continue(s);
}

static void tp_timeout(void *session)
{
	struct tp_session *s = session;
	conn_write_str(s->c, "-ERR idle timeout\r\n");
}

static void tp_shutdown(void *session)
{
	struct tp_session *s = session;
	conn_write_str(s->c, "-ERR server shutting down\r\n");
}

static void tp_free(void *session)
{
	free(session);
}

const struct proto_ops testproto_ops = {
	.name = "test",
	.default_idle_timeout_s = 600,
	.default_max_line = 1000,
	.refuse_line = "-ERR too many connections\r\n",
	.session_new = tp_new,
	.on_input = tp_input,
	.on_drain = tp_drain,
	.on_timeout = tp_timeout,
	.on_shutdown = tp_shutdown,
	.session_free = tp_free,
};
