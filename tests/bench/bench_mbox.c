/* bench_mbox [COUNT] [BIG_MB] [TMPDIR]: the issue 11 figures, mbox next to Maildir, on the
 * same generated messages (storage_bench_gen.h):
 *  1. open + metadata (ENVELOPE, BODYSTRUCTURE, FLAGS, RFC822.SIZE of every message) of a
 *     COUNT-message folder: cold (no state of ours: a full scan / stat of every file, parse,
 *     cache write) and warm (state and cache there) — the page cache is warm in both
 *     (dropping it needs root);
 *  2. RETR throughput: every message opened and read whole as CRLF (what POP3 RETR streams);
 *  3. expunge of one message near the start of a BIG_MB mbox (the mbox rewrite, on the
 *     thread pool) next to a Maildir expunge (an unlink, whatever the folder's size).
 * The Maildir is written by bench_maildir_generate; the mbox holds the same messages, each
 * with an MTA's From_ line and mboxo quoting. Prints figures, never fails on timing. */
#include "mailbox_private.h"
#include "mbox_sync.h"
#include "msg_parse.h"
#include "storage.h"
#include "storage_bench_gen.h"
#include "storage_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_mbox: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

struct open_wait {
	struct mailbox *mbox;
	int err;
	bool done;
};

static void open_cb(int err, struct mailbox *mbox, void *data)
{
	struct open_wait *w = data;
	w->err = err;
	w->mbox = mbox;
	w->done = true;
}

static struct mailbox *open_async(uv_loop_t *loop, struct store *store)
{
	struct open_wait w = {0};
	int r = mailbox_open_async(store, "INBOX", open_cb, &w);
	if (r < 0)
		die("mailbox_open_async", r);
	while (!w.done)
		uv_run(loop, UV_RUN_ONCE);
	if (w.err < 0)
		die("open", w.err);
	return w.mbox;
}

/* FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE) as the IMAP layer gets them. */
static size_t metadata(struct view *v)
{
	size_t total = 0;
	uint32_t n = view_count(v);
	for (uint32_t seq = 1; seq <= n; seq++) {
		struct mail_info info;
		if (view_msg_info(v, seq, &info) < 0)
			die("view_msg_info", EIO);
		struct msg_parsed *p;
		int r = view_msg_parsed(v, seq, &p);
		if (r < 0)
			die("view_msg_parsed", r);
		size_t a, b;
		msg_parsed_envelope(p, &a);
		msg_parsed_bodystructure(p, &b);
		total += a + b + (size_t)info.size % 7;
		msg_parsed_free(&p);
	}
	return total;
}

/* Every message read whole, CRLF: bytes. */
static uint64_t retr_all(struct view *v)
{
	static char buf[65536];
	uint64_t total = 0;
	uint32_t n = view_count(v);
	for (uint32_t seq = 1; seq <= n; seq++) {
		struct mail_stream *s;
		int r = view_msg_open(v, seq, &s);
		if (r < 0)
			die("view_msg_open", r);
		ssize_t got;
		while ((got = mail_stream_read(s, buf, sizeof(buf))) > 0)
			total += (uint64_t)got;
		if (got < 0)
			die("mail_stream_read", (int)got);
		mail_stream_free(&s);
	}
	return total;
}

static void close_loop(uv_loop_t *loop)
{
	for (int i = 0; i < 50; i++)
		uv_run(loop, UV_RUN_NOWAIT);
	uv_loop_close(loop);
}

/* Append the messages of the Maildir MD (cur/ and new/, in name order) to the mbox OUT as
 * an MTA writes them: From_ line, LF, mboxo quoting, an empty line. COPIES times over. */
static uint64_t maildir_to_mbox(const char *md, const char *out, unsigned copies)
{
	FILE *f = fopen(out, "w");
	if (f == NULL)
		die("fopen", errno);
	uint64_t bytes = 0;
	const char *subs[] = {"new", "cur"};
	char *line = NULL;
	size_t cap = 0;
	for (unsigned c = 0; c < copies; c++) {
		for (int s = 0; s < 2; s++) {
			char dir[4200];
			snprintf(dir, sizeof(dir), "%s/%s", md, subs[s]);
			struct dirent **names;
			int n = scandir(dir, &names, NULL, alphasort);
			for (int i = 0; i < n; i++) {
				if (names[i]->d_name[0] == '.') {
					free(names[i]);
					continue;
				}
				char path[4500];
				snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
				free(names[i]);
				FILE *in = fopen(path, "r");
				if (in == NULL)
					continue;
				fprintf(f, "From bench@example.com Mon Nov 23 07:%02u:%02u 2026\n",
					(c + (unsigned)i / 60) % 60, (unsigned)i % 60);
				if (copies > 1)
					fprintf(f, "X-Copy: %u\n",
						c); /* each copy its own message */
				ssize_t len;
				bool last_lf = true;
				while ((len = getline(&line, &cap, in)) > 0) {
					if (len >= 2 && line[len - 2] == '\r') {
						line[len - 2] = '\n';
						len--;
					}
					if (strncmp(line, "From ", 5) == 0)
						fputc('>', f);
					fwrite(line, 1, (size_t)len, f);
					bytes += (uint64_t)len;
					last_lf = line[len - 1] == '\n';
				}
				fclose(in);
				fputs(last_lf ? "\n" : "\n\n", f);
			}
			free(names);
		}
	}
	free(line);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		die("write mbox", errno);
	fclose(f);
	return bytes;
}

static void open_and_metadata(const char *label, uv_loop_t *loop, struct store *store)
{
	double t = now_ms();
	struct mailbox *m = open_async(loop, store);
	double t_open = now_ms() - t;
	struct view *v;
	if (view_new(m, VIEW_IMAP, NULL, NULL, &v) < 0)
		die("view_new", EIO);
	t = now_ms();
	size_t n = metadata(v);
	double t_meta = now_ms() - t;
	printf("%-8s open %7.1f ms  + metadata of %u %7.1f ms  = %7.1f ms  (%zu bytes)\n", label,
	       t_open, view_count(v), t_meta, t_open + t_meta, n);
	view_free(&v);
	mailbox_unref(&m);
}

static bool synced;
static double synced_at;
static void on_sync(struct mailbox *mbox, int result)
{
	(void)mbox;
	(void)result;
	synced = true;
	synced_at = now_ms();
}

int main(int argc, char **argv)
{
	unsigned count = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 10000;
	unsigned big_mb = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 300;
	const char *base = argc > 3 ? argv[3] : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	char dir[4096], md[4200], mroot[4200], mfile[4300];
	snprintf(dir, sizeof(dir), "%s/mk-bench-mbox-XXXXXX", base);
	if (mkdtemp(dir) == NULL)
		die("mkdtemp", errno);
	snprintf(md, sizeof(md), "%s/md", dir);
	snprintf(mroot, sizeof(mroot), "%s/mb", dir);
	snprintf(mfile, sizeof(mfile), "%s/inbox", mroot);
	uint64_t bytes = bench_maildir_generate(md, count, 42);
	if (bytes == 0)
		return 1;
	if (mkdir(mroot, 0700) < 0)
		die("mkdir", errno);
	maildir_to_mbox(md, mfile, 1);
	struct stat st;
	stat(mfile, &st);
	printf("%u messages: Maildir %.1f MB, mbox %.1f MB (%s)\n\n", count, bytes / 1e6,
	       st.st_size / 1e6, dir);

	/* 1. open + metadata, cold then warm, then 2. RETR of everything */
	for (int fmt = 0; fmt < 2; fmt++) {
		const char *label = fmt == 0 ? "Maildir" : "mbox";
		for (int pass = 0; pass < 2; pass++) {
			uv_loop_t loop;
			uv_loop_init(&loop);
			struct store *store;
			int r = fmt == 0
					? store_open_path(&loop, md, &store)
					: store_open_mbox(&loop, mroot, NULL, 10000, false, &store);
			if (r < 0)
				die("store open", r);
			printf("%s ", pass == 0 ? "cold" : "warm");
			open_and_metadata(label, &loop, store);
			if (pass == 1) {
				struct mailbox *m = open_async(&loop, store);
				struct view *v;
				view_new(m, VIEW_IMAP, NULL, NULL, &v);
				double t = now_ms();
				uint64_t got = retr_all(v);
				double ms = now_ms() - t;
				printf("     %-8s RETR of all %u: %.1f MB in %.0f ms = %.0f MB/s, "
				       "%.0f messages/s\n",
				       label, view_count(v), got / 1e6, ms, got / 1e3 / ms,
				       view_count(v) * 1e3 / ms);
				view_free(&v);
				mailbox_unref(&m);
			}
			store_unref(&store);
			close_loop(&loop);
		}
	}

	/* 3. expunge near the start of a big mbox (the same messages, copied) */
	unsigned copies = (unsigned)((uint64_t)big_mb * 1000000 / (uint64_t)st.st_size) + 1;
	char broot[4200], bfile[4300];
	snprintf(broot, sizeof(broot), "%s/big", dir);
	snprintf(bfile, sizeof(bfile), "%s/inbox", broot);
	mkdir(broot, 0700);
	maildir_to_mbox(md, bfile, copies);
	stat(bfile, &st);
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct store *store;
	int r = store_open_mbox(&loop, broot, NULL, 10000, false, &store);
	if (r < 0)
		die("store open", r);
	double t = now_ms();
	struct mailbox *m = open_async(&loop, store);
	printf("\nbig mbox: %.1f MB, %u messages; cold open (scan) %.0f ms\n", st.st_size / 1e6,
	       mailbox_count(m), now_ms() - t);
	/* a first sync writes our headers from the first change on: do one at the very end so
	 * the expunge below is measured alone */
	mbox_sync_done_hook = on_sync;
	uint32_t uid = m->recs[1].uid; /* the second message: near the start */
	synced = false;
	t = now_ms();
	r = mailbox_expunge(m, &uid, 1);
	double t_call = now_ms() - t;
	if (r < 0)
		die("expunge", r);
	while (!synced)
		uv_run(&loop, UV_RUN_ONCE);
	printf("mbox    expunge of message 2: answered in %.1f ms (X record durable); file "
	       "rewritten on the thread pool in %.0f ms\n",
	       t_call, synced_at - t);
	mailbox_unref(&m);
	store_unref(&store);
	close_loop(&loop);

	/* Maildir: the same expunge (an unlink; independent of the folder's size) */
	uv_loop_init(&loop);
	if ((r = store_open_path(&loop, md, &store)) < 0)
		die("store open", r);
	m = open_async(&loop, store);
	uid = m->recs[1].uid;
	t = now_ms();
	r = mailbox_expunge(m, &uid, 1);
	printf("Maildir expunge of message 2: %.1f ms (X record + unlink + fsync dir)\n",
	       now_ms() - t);
	mailbox_unref(&m);
	store_unref(&store);
	close_loop(&loop);
	storage_remove_tree(dir);
	return 0;
}
