/* libFuzzer target for the mbox reader (issue 11), through the store's public API: the input
 * is an mbox file (any bytes), opened as INBOX of a fresh mbox store and read back whole.
 *
 * Input: byte 0 = options: bit 0 reads it as mboxrd (else mboxo), bit 1 splits the rest in
 * two: the first part is opened and read, then the second part is appended behind the
 * store's back (as an MTA would; the incremental scan) and the mailbox refreshed and read
 * again; bit 2 instead replaces the whole file by the second part (as mutt rewriting it).
 *
 * Must hold for every input: no crash, no leak, no unbounded memory; every message's stream
 * gives exactly its announced size (or fails cleanly with -EIO when the file changed under
 * it); UIDs ascend; UIDLs are 1..70 characters 0x21..0x7E and unique; the message count is at
 * most the number of "From " occurrences. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "storage.h"
#include "storage_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char base[4096];
static struct config *cfg[2];

static void die_if(int cond)
{
	if (cond)
		abort();
}

static void setup(void)
{
	if (base[0] != '\0')
		return;
	const char *t = getenv("TMPDIR");
	snprintf(base, sizeof(base), "%s/mk-fuzz-mbox-XXXXXX", t && *t ? t : "/tmp");
	die_if(mkdtemp(base) == NULL);
	for (int rd = 0; rd < 2; rd++) {
		char text[8192];
		int n = snprintf(text, sizeof(text),
				 "[server]\nmail_root = %s/%%u\nmail_format = mbox\n"
				 "mbox_variant = %s\nmbox_lock_timeout = 1\nlog_level = error\n"
				 "[listener t]\nprotocol = imap\naddress = 127.0.0.1\nport = 1\n",
				 base, rd ? "mboxrd" : "mboxo");
		struct config_errors errors = {0};
		int r = config_load_string("fuzz", text, (size_t)n, &cfg[rd], &errors);
		config_errors_free(&errors);
		die_if(r < 0);
	}
}

static void write_file(const char *path, const uint8_t *p, size_t len, bool append)
{
	int fd = open(path, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0600);
	die_if(fd < 0);
	die_if(storage_write_all(fd, p, len) != 0);
	close(fd);
}

static size_t count_from(const uint8_t *p, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i + 5 <= len; i++)
		n += memcmp(p + i, "From ", 5) == 0;
	return n;
}

static void read_all(struct mailbox *mbox, size_t max_msgs)
{
	struct view *v;
	die_if(view_new(mbox, VIEW_IMAP, NULL, NULL, &v) != 0);
	view_sync(v, 0, NULL, NULL);
	uint32_t count = view_count(v), last_uid = 0;
	die_if(count > max_msgs);
	char(*uidls)[MAIL_UIDL_MAX + 1] = calloc(count + 1, sizeof(*uidls));
	die_if(uidls == NULL);
	static char buf[65536];
	for (uint32_t seq = 1; seq <= count; seq++) {
		struct mail_info info;
		die_if(view_msg_info(v, seq, &info) != 0);
		die_if(info.uid <= last_uid);
		last_uid = info.uid;
		die_if(view_msg_uidl(v, seq, uidls[seq], sizeof(uidls[seq])) != 0);
		size_t ul = strlen(uidls[seq]);
		die_if(ul == 0 || ul > MAIL_UIDL_MAX);
		for (size_t i = 0; i < ul; i++)
			die_if(uidls[seq][i] < 0x21 || uidls[seq][i] > 0x7e);
		for (uint32_t j = 1; j < seq; j++)
			die_if(strcmp(uidls[j], uidls[seq]) == 0);
		struct mail_stream *s;
		int r = view_msg_open(v, seq, &s);
		if (r == -EIO || r == -ENOENT)
			continue;
		die_if(r != 0);
		die_if((uint64_t)mail_stream_size(s) != info.size);
		uint64_t total = 0;
		ssize_t n;
		while ((n = mail_stream_read(s, buf, sizeof(buf))) > 0)
			total += (uint64_t)n;
		die_if(n < 0 && n != -EIO);
		die_if(n == 0 && total != info.size);
		mail_stream_free(&s);
	}
	free(uidls);
	view_free(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 1 << 20)
		return 0;
	setup();
	unsigned opt = data[0];
	const uint8_t *p = data + 1;
	size_t len = size - 1, first = (opt & 6) ? len / 2 : len;
	char root[4200], inbox[4300];
	snprintf(root, sizeof(root), "%s/u", base);
	snprintf(inbox, sizeof(inbox), "%s/inbox", root);
	storage_remove_tree(root); /* every input from scratch: reproducible */
	die_if(mkdir(root, 0700) != 0);
	write_file(inbox, p, first, false);

	uv_loop_t loop;
	uv_loop_init(&loop);
	struct store *store;
	die_if(store_open(&loop, cfg[opt & 1], "u", &store) != 0);
	struct mailbox *mbox;
	int r = mailbox_open(store, "INBOX", &mbox);
	if (r == 0) {
		read_all(mbox, count_from(p, first));
		if (opt & 6) {
			if (opt & 4)
				write_file(inbox, p + first, len - first, false);
			else
				write_file(inbox, p + first, len - first, true);
			die_if(mailbox_refresh(mbox) != 0 && (opt & 4) == 0);
			read_all(mbox, count_from(p, len));
		}
		mailbox_unref(&mbox);
	} else {
		die_if(r != -EBADMSG && r != -EFBIG && r != -EAGAIN);
	}
	store_unref(&store);
	for (int i = 0; i < 8; i++)
		uv_run(&loop, UV_RUN_NOWAIT);
	uv_run(&loop, UV_RUN_DEFAULT);
	die_if(uv_loop_close(&loop) != 0);
	return 0;
}
