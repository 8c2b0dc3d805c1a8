/* gen_maildir DIR [COUNT] [SEED] — the Maildir for mailkeep-bench (issue 9's size mix).
 *
 * 99% of COUNT come from the storage bench's generator (storage_bench_gen.h: mostly 2–20 KB,
 * multipart/alternative and multipart/mixed, base64 attachments, RFC 2047 and raw UTF-8
 * headers, bare-LF and CRLF files, flags in cur/, the newest 2% in new/); the other 1% are
 * large: 200 KB – 1 MB with a base64 attachment, written here (their names sort among the
 * others by delivery time). Deterministic for a given seed. Prints the count and bytes. */
#include "storage_bench_gen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint32_t rng;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

/* One large message: text part and a base64 attachment of about `att` bytes. */
static char *big_message(unsigned i, unsigned att, size_t *len_r)
{
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t cap = (size_t)att + (size_t)att / 38 + 4096;
	char *p = malloc(cap);
	if (p == NULL)
		abort();
	int n = snprintf(p, cap,
			 "Return-Path: <scanner@example.org>\r\n"
			 "From: =?UTF-8?Q?B=C3=BCro_Scanner?= <scanner%u@example.org>\r\n"
			 "To: Team <team@example.com>\r\n"
			 "Subject: =?UTF-8?Q?Scan_vom_M=C3=A4rz_=28gro=C3=9F=29?= %u\r\n"
			 "Date: Tue, 5 Mar 2024 %02u:%02u:00 +0100\r\n"
			 "Message-ID: <big%u.%08x@example.org>\r\n"
			 "MIME-Version: 1.0\r\n"
			 "Content-Type: multipart/mixed; boundary=\"big-%u\"\r\n\r\n"
			 "--big-%u\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
			 "The scanned documents are attached. Grüße.\r\n\r\n"
			 "--big-%u\r\nContent-Type: application/pdf; name=\"scan-%u.pdf\"\r\n"
			 "Content-Disposition: attachment; filename=\"scan-%u.pdf\"\r\n"
			 "Content-Transfer-Encoding: base64\r\n\r\n",
			 i, i, (i / 60) % 24, i % 60, i, rnd(), i, i, i, i, i);
	size_t len = (size_t)n;
	for (unsigned done = 0; done < att; done += 76) {
		for (int j = 0; j < 76; j++)
			p[len++] = b64[rnd() % 64];
		p[len++] = '\r';
		p[len++] = '\n';
	}
	len += (size_t)snprintf(p + len, cap - len, "--big-%u--\r\n", i);
	*len_r = len;
	return p;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR [COUNT] [SEED]\n", argv[0]);
		return 2;
	}
	unsigned count = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 10000;
	unsigned seed = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 1;
	unsigned big = count / 100;
	uint64_t bytes = bench_maildir_generate(argv[1], count - big, seed);
	if (bytes == 0 && count - big > 0)
		return 1;
	rng = seed * 2654435761u + 1;
	for (unsigned i = 0; i < big; i++) {
		unsigned att = 200000 + rnd() % 800000;
		size_t len;
		char *msg = big_message(i, att, &len);
		char path[4096];
		snprintf(path, sizeof(path), "%s/cur/%u.V802I%xM%06u.mail.example.com:2,S", argv[1],
			 1700000000u + (i * 100 + 50) * 37u, 0x10000 + i, rnd() % 1000000);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || write(fd, msg, len) != (ssize_t)len) {
			fprintf(stderr, "%s: %s\n", path, strerror(errno));
			free(msg);
			return 1;
		}
		close(fd);
		free(msg);
		bytes += len;
	}
	printf("wrote %u messages (%u large), %llu bytes, into %s\n", count, big,
	       (unsigned long long)bytes, argv[1]);
	return 0;
}
