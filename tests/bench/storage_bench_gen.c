#include "storage_bench_gen.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint32_t rng_state;

static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

struct out {
	char *p;
	size_t len, cap;
	bool lf; /* bare LF line ends */
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->len + n + 1 > o->cap) {
		size_t cap = o->cap ? o->cap * 2 : 65536;
		while (cap < o->len + n + 1)
			cap *= 2;
		o->p = realloc(o->p, cap);
		if (o->p == NULL)
			abort();
		o->cap = cap;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

static void line(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line(struct out *o, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	put(o, buf, (size_t)n);
	put(o, o->lf ? "\n" : "\r\n", o->lf ? 1 : 2);
}

static const char *names[] = {"Alice Martin",
			      "Bob Smith",
			      "=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?=",
			      "=?ISO-8859-1?Q?Fran=E7ois_Dupr=E9?=",
			      "\"Chen, Wei\"",
			      "=?UTF-8?B?0JjQstCw0L0g0J/QtdGC0YDQvtCy?=",
			      "Zoë Quinn"};
static const char *subjects[] = {"Quarterly report",          "=?UTF-8?B?UmU6IMOcYmVyc2ljaHQ=?=",
				 "Re: lunch on Friday?",      "=?UTF-8?Q?Caf=C3=A9_meeting_notes?=",
				 "Invoice 2024-117",          "Grüße aus Köln",
				 "Fwd: build failed (#4412)", "=?ISO-2022-JP?B?GyRCJEskWyQzGyhC?="};
static const char *words[] = {"the",      "report", "meeting", "attached", "please", "review",
			      "numbers",  "server", "mailbox", "tomorrow", "thanks", "regards",
			      "schedule", "budget", "draft",   "final",    "über",   "café"};

static void text_body(struct out *o, unsigned bytes)
{
	char l[128];
	size_t n = 0;
	unsigned written = 0;
	while (written < bytes) {
		const char *w = words[rnd() % (sizeof(words) / sizeof(words[0]))];
		size_t wl = strlen(w);
		if (n + wl + 1 > 72) {
			l[n] = '\0';
			line(o, "%s", l);
			written += (unsigned)n + 2;
			n = 0;
		}
		memcpy(l + n, w, wl);
		n += wl;
		l[n++] = ' ';
	}
	if (n > 0) {
		l[n] = '\0';
		line(o, "%s", l);
	}
}

static void base64_body(struct out *o, unsigned bytes)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char l[80];
	unsigned lines = bytes / 78 + 1;
	for (unsigned i = 0; i < lines; i++) {
		for (int j = 0; j < 76; j++)
			l[j] = a[rnd() % 64];
		l[76] = '\0';
		line(o, "%s", l);
	}
}

static void message(struct out *o, unsigned i)
{
	unsigned kind = rnd() % 100;
	const char *from = names[rnd() % (sizeof(names) / sizeof(names[0]))];
	const char *to = names[rnd() % (sizeof(names) / sizeof(names[0]))];
	line(o, "Return-Path: <sender%u@example.org>", i % 97);
	line(o, "Received: from mx.example.org (mx.example.org [192.0.2.%u])", i % 250);
	line(o, "\tby mail.example.com with ESMTPS id %08x; Mon, 4 Mar 2024 10:%02u:00 +0100",
	     rnd(), i % 60);
	line(o, "From: %s <user%u@example.org>", from, i % 53);
	line(o, "To: %s <team@example.com>, list@example.net", to);
	if (kind % 3 == 0)
		line(o, "Cc: \"Ops\" <ops@example.com>");
	line(o, "Subject: %s", subjects[rnd() % (sizeof(subjects) / sizeof(subjects[0]))]);
	line(o, "Date: Mon, 4 Mar 2024 %02u:%02u:%02u +0100", (i / 60) % 24, i % 60, (i * 7) % 60);
	line(o, "Message-ID: <%u.%08x@example.org>", i, rnd());
	if (i > 0 && kind % 4 == 0)
		line(o, "In-Reply-To: <%u.0@example.org>", i - 1);
	line(o, "MIME-Version: 1.0");
	if (kind < 60) {
		line(o, "Content-Type: text/plain; charset=utf-8");
		line(o, "Content-Transfer-Encoding: 8bit");
		line(o, "%s", "");
		text_body(o, 500 + rnd() % 3500);
	} else if (kind < 84) {
		line(o, "Content-Type: multipart/alternative; boundary=\"alt-%u\"", i);
		line(o, "%s", "");
		line(o, "--alt-%u", i);
		line(o, "Content-Type: text/plain; charset=utf-8");
		line(o, "%s", "");
		text_body(o, 800 + rnd() % 2000);
		line(o, "--alt-%u", i);
		line(o, "Content-Type: text/html; charset=utf-8");
		line(o, "Content-Transfer-Encoding: quoted-printable");
		line(o, "%s", "");
		line(o, "<html><body><p>Hello =C3=BCber caf=C3=A9</p>");
		text_body(o, 1500 + rnd() % 3000);
		line(o, "</body></html>");
		line(o, "--alt-%u--", i);
	} else {
		unsigned att = kind < 99 ? 8000 + rnd() % 40000 : 150000 + rnd() % 250000;
		line(o, "Content-Type: multipart/mixed; boundary=\"mix-%u\"", i);
		line(o, "%s", "");
		line(o, "This is a multi-part message in MIME format.");
		line(o, "--mix-%u", i);
		line(o, "Content-Type: text/plain; charset=iso-8859-1");
		line(o, "Content-Transfer-Encoding: quoted-printable");
		line(o, "%s", "");
		text_body(o, 300 + rnd() % 1000);
		line(o, "--mix-%u", i);
		line(o,
		     "Content-Type: application/pdf; name=\"=?UTF-8?Q?Bericht_M=C3=A4rz.pdf?=\"");
		line(o, "Content-Disposition: attachment; "
			"filename*=UTF-8''Bericht%%20M%%C3%%A4rz.pdf");
		line(o, "Content-Transfer-Encoding: base64");
		line(o, "%s", "");
		base64_body(o, att);
		if (kind % 2 == 0) {
			line(o, "--mix-%u", i);
			line(o, "Content-Type: message/rfc822");
			line(o, "%s", "");
			line(o, "From: %s <fwd@example.org>", from);
			line(o, "Subject: forwarded");
			line(o, "%s", "");
			text_body(o, 400);
		}
		line(o, "--mix-%u--", i);
	}
}

uint64_t bench_maildir_generate(const char *dir, unsigned count, unsigned seed)
{
	rng_state = seed ? seed : 1;
	char path[4096];
	const char *subs[] = {"", "/cur", "/new", "/tmp"};
	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "%s%s", dir, subs[i]);
		if (mkdir(path, 0700) < 0 && errno != EEXIST) {
			perror(path);
			return 0;
		}
	}
	static const char *infos[] = {":2,S", ":2,S", ":2,RS", ":2,FS", ":2,", ":2,S", ":2,T"};
	struct out o = {0};
	uint64_t total = 0;
	for (unsigned i = 0; i < count; i++) {
		o.len = 0;
		o.lf = (rnd() % 2) == 0;
		message(&o, i);
		bool in_new = i + count / 50 >= count; /* the newest 2% not yet seen */
		snprintf(path, sizeof(path), "%s/%s/%u.V801I%xM%06u.mail.example.com%s", dir,
			 in_new ? "new" : "cur", 1700000000u + i * 37u, 4096 + i, rnd() % 1000000,
			 in_new ? "" : infos[rnd() % (sizeof(infos) / sizeof(infos[0]))]);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || write(fd, o.p, o.len) != (ssize_t)o.len) {
			perror(path);
			if (fd >= 0)
				close(fd);
			free(o.p);
			return 0;
		}
		close(fd);
		total += o.len;
	}
	free(o.p);
	return total;
}
