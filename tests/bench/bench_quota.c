/* bench_quota [FOLDERS] [PER_FOLDER] [TMPDIR] [background]: what the quota costs. A user with
 * FOLDERS folders (INBOX and FOLDERS-1 more) of PER_FOLDER generated messages each
 * (storage_bench_gen.h); prints the first count of the usage cold (no UID lists yet: every
 * folder is numbered and its list written, as on the first login after a migration) and warm
 * (the lists exist: a restart), the cost of one check once counted, and an append with the
 * check against one without a limit. With "background", first the count a login starts
 * (mailbox_open_async per folder): how long until counted, and the longest loop stall. Prints
 * figures, never fails on timing. */
#include "config.h"
#include "storage.h"
#include "storage_bench_gen.h"
#include "storage_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void limits(struct store *store, const char *storage)
{
	char text[256];
	snprintf(text, sizeof(text),
		 "[server]\nquota_storage = %s\n[listener i]\nprotocol = imap\n", storage);
	struct config *cfg;
	struct config_errors errs;
	if (config_load_string("bench", text, strlen(text), &cfg, &errs) < 0) {
		fprintf(stderr, "config failed\n");
		exit(1);
	}
	store_quota_configure(store, cfg);
	config_unref(&cfg);
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

/* The background count a login starts: time until counted, and the longest the loop was
 * kept from a 1 ms timer meanwhile. */
static void count_background(uv_loop_t *loop, const char *root, const char *what)
{
	struct store *store;
	if (store_open_path(loop, root, &store) < 0)
		exit(1);
	struct stall st = {.last = now_ms()};
	uv_timer_init(loop, &st.timer);
	st.timer.data = &st;
	uv_timer_start(&st.timer, stall_cb, 1, 1);
	double t0 = now_ms();
	st.last = t0;
	limits(store, "16384G");
	while (!store_quota_counted(store))
		uv_run(loop, UV_RUN_ONCE);
	double t = now_ms() - t0;
	printf("background count, %s: counted after %.1f ms, loop blocked at most %.1f ms\n", what,
	       t, st.max);
	uv_close((uv_handle_t *)&st.timer, NULL);
	store_unref(&store);
	while (uv_run(loop, UV_RUN_NOWAIT) != 0)
		;
}

static double count_once(uv_loop_t *loop, const char *root, struct store_quota_usage *u)
{
	struct store *store;
	if (store_open_path(loop, root, &store) < 0)
		exit(1);
	limits(store, "16384G");
	double t0 = now_ms();
	if (store_quota_get(store, u) < 0)
		exit(1);
	double t = now_ms() - t0;
	store_unref(&store);
	uv_run(loop, UV_RUN_NOWAIT);
	return t;
}

int main(int argc, char **argv)
{
	unsigned folders = argc > 1 ? (unsigned)atoi(argv[1]) : 20;
	unsigned per = argc > 2 ? (unsigned)atoi(argv[2]) : 1000;
	const char *tmp = argc > 3 ? argv[3] : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	char root[4096], dir[4200];
	snprintf(root, sizeof(root), "%s/mk-bench-quota-%d", tmp, (int)getpid());
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct store *store;
	if (store_open_path(&loop, root, &store) < 0)
		return 1;
	uint64_t bytes = 0;
	for (unsigned f = 0; f < folders; f++) {
		char name[64];
		snprintf(name, sizeof(name), "F%03u", f);
		if (f > 0 && store_folder_create(store, name, 0) < 0)
			return 1;
		if (f == 0)
			snprintf(dir, sizeof(dir), "%s", root);
		else
			snprintf(dir, sizeof(dir), "%s/.%s", root, name);
		bytes += bench_maildir_generate(dir, per, f + 1);
	}
	store_unref(&store);
	printf("user: %u folders x %u messages, %.1f MB on disk\n", folders, per, bytes / 1e6);

	struct store_quota_usage u;
	if (argc > 4 && strcmp(argv[4], "background") == 0) {
		count_background(&loop, root, "cold");
		count_background(&loop, root, "warm");
	}
	double cold = count_once(&loop, root, &u);
	printf("first count, cold (numbers every folder, writes the UID lists): %.1f ms "
	       "(%llu messages, %llu bytes)\n",
	       cold, (unsigned long long)u.messages, (unsigned long long)u.bytes);
	double warm = count_once(&loop, root, &u);
	printf("first count, warm (a restart: UID lists + directory names): %.1f ms\n", warm);

	if (store_open_path(&loop, root, &store) < 0)
		return 1;
	limits(store, "16384G");
	store_quota_get(store, &u);
	double t0 = now_ms();
	int n = 1000000;
	for (int i = 0; i < n; i++)
		if (store_quota_check(store, 1, 20000) < 0)
			return 1;
	printf("one check once counted: %.1f ns\n", (now_ms() - t0) * 1e6 / n);

	struct mailbox *inbox;
	if (mailbox_open(store, "INBOX", &inbox) < 0)
		return 1;
	static char msg[20000];
	memset(msg, 'x', sizeof(msg));
	memcpy(msg, "Subject: b\r\n\r\n", 14);
	for (int pass = 0; pass < 2; pass++) {
		limits(store, pass == 0 ? "0" : "16384G");
		double total = 0;
		int k = 200;
		for (int i = 0; i < k; i++) {
			struct mail_append *a;
			uint32_t uid;
			double s = now_ms();
			if (mailbox_append_begin(inbox, 0, 0, 0, &a) < 0 ||
			    mail_append_write(a, msg, sizeof(msg)) < 0 ||
			    mail_append_finish(&a, &uid) < 0)
				return 1;
			total += now_ms() - s;
		}
		printf("append of 20 KB, %s: %.2f ms avg over %d\n",
		       pass == 0 ? "no limit" : "with a limit", total / k, k);
	}
	mailbox_unref(&inbox);
	store_unref(&store);
	while (uv_run(&loop, UV_RUN_NOWAIT) != 0)
		;
	uv_loop_close(&loop);
	storage_remove_tree(root);
	return 0;
}
