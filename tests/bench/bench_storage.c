/* bench_storage [COUNT] [TMPDIR]: figures for the store on a generated Maildir
 * (storage_bench_gen.h): cold and warm open, ENVELOPE+BODYSTRUCTURE of every message cold
 * (parse + cache write) and warm (from the cache), refresh, one flag change, one 20 KB append
 * with fsync. "Cold" means no UID list and no cache yet; the kernel's page cache is warm (the
 * generator just wrote the files; dropping it needs root). Prints figures, never fails on
 * timing. */
#include "mailbox_private.h"
#include "msg_parse.h"
#include "storage.h"
#include "storage_bench_gen.h"
#include "storage_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

struct stall {
	uv_timer_t timer;
	double last, max;
};

static void stall_cb(uv_timer_t *t)
{
	struct stall *s = t->data;
	double n = now_ms();
	if (n - s->last > s->max)
		s->max = n - s->last;
	s->last = n;
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

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_storage: %s: %s\n", what, strerror(-err));
	exit(1);
}

/* ENVELOPE + BODYSTRUCTURE of every message of V; returns total bytes of the strings. */
static size_t all_envelopes(struct view *v)
{
	size_t total = 0;
	uint32_t n = view_count(v);
	for (uint32_t seq = 1; seq <= n; seq++) {
		struct msg_parsed *p;
		int r = view_msg_parsed(v, seq, &p);
		if (r < 0)
			die("view_msg_parsed", r);
		size_t a, b;
		msg_parsed_envelope(p, &a);
		msg_parsed_bodystructure(p, &b);
		total += a + b;
		msg_parsed_free(&p);
	}
	return total;
}

static void close_loop(uv_loop_t *loop)
{
	for (int i = 0; i < 8; i++)
		uv_run(loop, UV_RUN_NOWAIT);
	uv_loop_close(loop);
}

int main(int argc, char **argv)
{
	unsigned count = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 10000;
	const char *base = argc > 2 ? argv[2] : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	char dir[4096], root[4200];
	snprintf(dir, sizeof(dir), "%s/mk-bench-storage-XXXXXX", base);
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(root, sizeof(root), "%s/u", dir);
	double t = now_ms();
	uint64_t bytes = bench_maildir_generate(root, count, 42);
	if (bytes == 0)
		return 1;
	printf("generated %u messages, %.1f MB, in %.0f ms (%s)\n", count, bytes / 1e6,
	       now_ms() - t, root);
	printf("per-message record: %zu bytes + its file name in the pool\n",
	       sizeof(struct mail_rec));

	uv_loop_t loop;
	uv_loop_init(&loop);
	struct store *store;
	int r = store_open_path(&loop, root, &store);
	if (r < 0)
		die("store_open_path", r);

	/* cold open on the thread pool, with a 1 ms timer watching the loop */
	struct stall st = {0};
	uv_timer_init(&loop, &st.timer);
	st.timer.data = &st;
	st.last = now_ms();
	uv_timer_start(&st.timer, stall_cb, 1, 1);
	struct open_wait w = {0};
	t = now_ms();
	r = mailbox_open_async(store, "INBOX", open_cb, &w);
	if (r < 0)
		die("mailbox_open_async", r);
	while (!w.done)
		uv_run(&loop, UV_RUN_ONCE);
	double cold_open = now_ms() - t;
	uv_timer_stop(&st.timer);
	uv_close((uv_handle_t *)&st.timer, NULL);
	if (w.err < 0)
		die("cold open", w.err);
	struct mailbox *m = w.mbox;
	printf("cold open (async, no UID list: stat + size every file, number, write list): "
	       "%.1f ms, loop blocked at most %.1f ms\n",
	       cold_open, st.max);

	struct view *v;
	r = view_new(m, VIEW_IMAP, NULL, NULL, &v);
	if (r < 0)
		die("view_new", r);
	t = now_ms();
	size_t env = all_envelopes(v);
	printf("cold ENVELOPE+BODYSTRUCTURE of %u (parse + cache write): %.1f ms (%zu bytes)\n",
	       view_count(v), now_ms() - t, env);
	view_free(&v);
	mailbox_unref(&m);
	store_unref(&store);
	close_loop(&loop);

	/* warm: UID list and cache present */
	uv_loop_init(&loop);
	if ((r = store_open_path(&loop, root, &store)) < 0)
		die("store_open_path", r);
	/* the parts of a warm open: the thread-pool half (read the UID list, the two directories
	 * and the cache index) and the loop half (build the array, index) */
	{
		struct mailbox_load ld = {0};
		ld.path = strdup(root);
		int load_reps = getenv("BENCH_LOAD_REPS") ? atoi(getenv("BENCH_LOAD_REPS")) : 0;
		for (int i = 0; i < load_reps; i++) {
			struct mailbox_load l2 = {0};
			l2.path = strdup(root);
			maildir_backend_ops.load(&l2);
			mailbox_load_free(&l2);
		}
		t = now_ms();
		if ((r = maildir_backend_ops.load(&ld)) < 0)
			die("load", r);
		printf("warm open, scan part (thread pool in mailbox_open_async): %.1f ms\n",
		       now_ms() - t);
		mailbox_load_free(&ld);
	}
	t = now_ms();
	if ((r = mailbox_open(store, "INBOX", &m)) < 0)
		die("warm open", r);
	double warm_open = now_ms() - t;
	if ((r = view_new(m, VIEW_IMAP, NULL, NULL, &v)) < 0)
		die("view_new", r);
	double t2 = now_ms();
	env = all_envelopes(v);
	double warm_env = now_ms() - t2;
	printf("warm open (sync): %.1f ms; warm ENVELOPE+BODYSTRUCTURE of %u: %.1f ms; "
	       "open + all envelopes: %.1f ms\n",
	       warm_open, view_count(v), warm_env, warm_open + warm_env);

	t = now_ms();
	const int reps = 50;
	for (int i = 0; i < reps; i++)
		if ((r = m->ops->refresh(m, true)) < 0)
			die("refresh", r);
	printf("re-read of the folder (forced refresh, nothing changed): %.2f ms\n",
	       (now_ms() - t) / reps);
	/* the cheap check, once the directories are older than their timestamp granularity */
	t = now_ms();
	for (int i = 0; i < reps; i++)
		mailbox_refresh(m);
	printf("mailbox_refresh (mtime check; re-reads while a directory changed within its "
	       "timestamp tick): "
	       "%.3f ms\n",
	       (now_ms() - t) / reps);

	/* an MTA delivers one message: refresh re-reads new/ only */
	{
		double sum = 0;
		for (int i = 0; i < 20; i++) {
			char tmp[8192], path[8192];
			snprintf(tmp, sizeof(tmp), "%s/tmp/bench-mta.%d", root, i);
			snprintf(path, sizeof(path), "%s/new/1800000000.bench-mta.%d", root, i);
			FILE *f = fopen(tmp, "w");
			if (f == NULL || fputs("Subject: hi\n\nhello\n", f) < 0)
				die("deliver", -EIO);
			fclose(f);
			if (rename(tmp, path) < 0)
				die("deliver", -errno);
			double a = now_ms();
			if ((r = mailbox_refresh(m)) < 0)
				die("refresh", r);
			sum += now_ms() - a;
		}
		printf("refresh after one delivery into new/ (re-reads new/ only): %.2f ms avg\n",
		       sum / 20);
	}

	double worst = 0;
	t = now_ms();
	for (int i = 0; i < reps; i++) {
		uint32_t uid;
		view_seq_to_uid(v, 1 + (uint32_t)(i * 7919) % view_count(v), &uid);
		double a = now_ms();
		r = mailbox_store_flags(m, v, &uid, 1, i % 2 ? FLAG_OP_REMOVE : FLAG_OP_ADD,
					MAIL_FLAGGED, 0);
		if (r < 0)
			die("store_flags", r);
		if (now_ms() - a > worst)
			worst = now_ms() - a;
	}
	printf("flag change of one message (rename, fsync dir, UID list append + fdatasync): "
	       "%.2f ms avg, %.2f ms max\n",
	       (now_ms() - t) / reps, worst);

	static char msg[20 * 1024];
	size_t n =
		(size_t)snprintf(msg, sizeof(msg), "From: a@example.org\r\nSubject: bench\r\n\r\n");
	while (n + 80 < sizeof(msg))
		n += (size_t)snprintf(msg + n, sizeof(msg) - n, "%076d\r\n", (int)n);
	worst = 0;
	t = now_ms();
	for (int i = 0; i < reps; i++) {
		double a = now_ms();
		struct mail_append *ap;
		uint32_t uid;
		if ((r = mailbox_append_begin(m, MAIL_SEEN, 0, 0, &ap)) < 0)
			die("append_begin", r);
		for (size_t off = 0; off < n; off += 4096)
			if ((r = mail_append_write(ap, msg + off,
						   n - off < 4096 ? n - off : 4096)) < 0)
				die("append_write", r);
		if ((r = mail_append_finish(&ap, &uid)) < 0)
			die("append_finish", r);
		if (now_ms() - a > worst)
			worst = now_ms() - a;
	}
	printf("append of one %zu-byte message (tmp, fsync, rename, fsync dir, UID list): "
	       "%.2f ms avg, %.2f ms max\n",
	       n, (now_ms() - t) / reps, worst);
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("max RSS: %ld KB\n", ru.ru_maxrss);

	view_free(&v);
	mailbox_unref(&m);
	store_unref(&store);
	close_loop(&loop);
	storage_remove_tree(dir);
	return 0;
}
