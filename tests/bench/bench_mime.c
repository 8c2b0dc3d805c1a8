/* MIME parser throughput: parse + ENVELOPE + BODYSTRUCTURE for a generated set of messages
 * (plain, multipart/alternative, attachments in base64, forwarded message/rfc822, long
 * headers), then the same strings loaded from cache blobs instead of parsing.
 * Usage: bench_mime [messages (default 10000)]. Prints messages/second; never fails on
 * timing. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "msg_parse.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void add(struct buf *b, const char *s)
{
	if (buf_append(b, s, strlen(s)) < 0) {
		fprintf(stderr, "bench_mime: out of memory\n");
		exit(1);
	}
}

static void addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void addf(struct buf *b, const char *fmt, ...)
{
	char tmp[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	add(b, tmp);
}

static void gen_header(struct buf *b, unsigned i, const char *ct)
{
	addf(b,
	     "Return-Path: <sender%u@example.com>\r\n"
	     "Received: from mx%u.example.net (mx%u.example.net [192.0.2.%u])\r\n"
	     "\tby mail.example.com with ESMTPS id %08X\r\n\tfor <user@example.com>; "
	     "Mon, 11 Mar 2024 10:%02u:00 +0000\r\n"
	     "Date: Mon, 11 Mar 2024 10:%02u:00 +0000\r\n"
	     "From: \"Sender Number %u\" <sender%u@example.com>\r\n"
	     "To: User <user@example.com>, team@example.com\r\n"
	     "Cc: =?UTF-8?B?SsO8cmdlbg==?= <juergen@example.de>\r\n"
	     "Subject: Report %u about the quarterly numbers and other things\r\n"
	     "Message-ID: <msg-%u@example.com>\r\n"
	     "In-Reply-To: <msg-%u@example.com>\r\n"
	     "MIME-Version: 1.0\r\n"
	     "Content-Type: %s\r\n\r\n",
	     i, i % 7, i % 7, i % 250, i * 2654435761u, i % 60, i % 60, i, i, i, i, i ? i - 1 : 0,
	     ct);
}

static void gen_text(struct buf *b, unsigned lines)
{
	for (unsigned l = 0; l < lines; l++)
		add(b,
		    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n");
}

static void gen_base64(struct buf *b, unsigned bytes)
{
	static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char line[80];
	for (unsigned done = 0; done < bytes; done += 57) {
		for (int k = 0; k < 76; k++)
			line[k] = al[(done + (unsigned)k * 7) % 64];
		line[76] = '\r';
		line[77] = '\n';
		buf_append(b, line, 78);
	}
}

static void gen_message(struct buf *b, unsigned i)
{
	switch (i % 4) {
	case 0:
		gen_header(b, i, "text/plain; charset=us-ascii");
		gen_text(b, 10 + i % 40);
		break;
	case 1:
		gen_header(b, i, "multipart/alternative; boundary=\"alt-b\"");
		add(b, "--alt-b\r\nContent-Type: text/plain; charset=utf-8\r\n"
		       "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
		gen_text(b, 20);
		add(b, "--alt-b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html>");
		gen_text(b, 20);
		add(b, "</html>\r\n--alt-b--\r\n");
		break;
	case 2:
		gen_header(b, i, "multipart/mixed; boundary=\"mix-b\"");
		add(b, "--mix-b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n");
		gen_text(b, 8);
		add(b, "--mix-b\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n"
		       "Content-Disposition: attachment; filename=\"report.pdf\"\r\n"
		       "Content-Transfer-Encoding: base64\r\n\r\n");
		gen_base64(b, 20000 + (i % 10) * 3000);
		add(b, "--mix-b--\r\n");
		break;
	default:
		gen_header(b, i, "multipart/mixed; boundary=\"fwd-b\"");
		add(b, "--fwd-b\r\nContent-Type: text/plain\r\n\r\nForwarded below.\r\n"
		       "--fwd-b\r\nContent-Type: message/rfc822\r\n\r\n");
		gen_header(b, i + 1, "multipart/alternative; boundary=\"in-b\"");
		add(b, "--in-b\r\nContent-Type: text/plain\r\n\r\n");
		gen_text(b, 5);
		add(b, "--in-b\r\nContent-Type: text/html\r\n\r\n");
		gen_text(b, 5);
		add(b, "--in-b--\r\n--fwd-b--\r\n");
		break;
	}
}

int main(int argc, char **argv)
{
	unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 10000;
	if (n == 0)
		n = 1;
	struct buf *msgs = calloc(n, sizeof(*msgs));
	struct buf *blobs = calloc(n, sizeof(*blobs));
	if (!msgs || !blobs)
		return 1;
	uint64_t total = 0;
	for (unsigned i = 0; i < n; i++) {
		buf_init(&msgs[i], 1 << 20);
		gen_message(&msgs[i], i);
		total += buf_used(&msgs[i]);
	}

	size_t sink = 0, blob_total = 0;
	double t0 = now();
	for (unsigned i = 0; i < n; i++) {
		struct msg_source src = msg_source_mem(buf_peek(&msgs[i]), buf_used(&msgs[i]));
		struct msg_parsed *m;
		size_t l;
		if (msg_parse(&src, NULL, &m) < 0)
			return 1;
		(void)msg_parsed_envelope(m, &l);
		sink += l;
		(void)msg_parsed_bodystructure(m, &l);
		sink += l;
		buf_init(&blobs[i], 1 << 20);
		if (msg_parse_serialize(m, &blobs[i]) < 0)
			return 1;
		blob_total += buf_used(&blobs[i]);
		msg_parsed_free(&m);
	}
	double t1 = now();
	for (unsigned i = 0; i < n; i++) {
		struct msg_parsed *m;
		size_t l;
		if (msg_parse_deserialize(buf_peek(&blobs[i]), buf_used(&blobs[i]), 0, &m) < 0)
			return 1;
		(void)msg_parsed_envelope(m, &l);
		sink += l;
		(void)msg_parsed_bodystructure(m, &l);
		sink += l;
		msg_parsed_free(&m);
	}
	double t2 = now();
	printf("messages: %u, %.1f MB, cache blobs %.1f KB total (%.0f B/message)\n", n,
	       (double)total / 1e6, (double)blob_total / 1e3, (double)blob_total / n);
	printf("cold: parse + ENVELOPE + BODYSTRUCTURE (+ serialize): %.3f s, %.0f messages/s, "
	       "%.0f MB/s\n",
	       t1 - t0, n / (t1 - t0), (double)total / 1e6 / (t1 - t0));
	printf("warm: load from cache blob + ENVELOPE + BODYSTRUCTURE: %.3f s, %.0f messages/s\n",
	       t2 - t1, n / (t2 - t1));
	for (unsigned i = 0; i < n; i++) {
		buf_clear(&msgs[i]);
		buf_clear(&blobs[i]);
	}
	free(msgs);
	free(blobs);
	return sink == 0;
}
