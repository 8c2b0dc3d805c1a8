/* mailbox_sync — group commit: the fsyncs of changes made on the loop run on libuv's thread
 * pool, so the loop never waits for the disk (DESIGN.md: work that can take long runs on the
 * pool, its result is applied on the loop).
 *
 * A change does its writes, renames and unlinks on the loop and hands each file or directory
 * that must reach the disk to mailbox_sync_defer (a duplicate descriptor, owned from then on).
 * mailbox_sync_wait queues a callback behind them. The descriptors and callbacks gathered since
 * the last start form one batch; a batch starts at once when fewer than SYNC_RUNNING_MAX are
 * running (the rest of the pool stays free for opens and searches), else it waits and takes in
 * everything arriving meanwhile: N clients committing at once pay for one round of fsyncs, and
 * a descriptor of a file the batch already syncs (the same UID list, the same cur/) is synced
 * once. An fsync started after a write covers it, so batches may run side by side: a waiter
 * only needs the batch holding its own descriptors. */
#include "mailbox_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* Batches syncing at once. fsync waits for the disk, not the CPU: several in flight let the
 * device merge them (measured with mailkeep-bench mixed: 2 -> 8 took 10 clients from 690 to
 * 1,338 ops/s at load 11). The daemon gives libuv's pool 16 threads (src/main.c), so opens and
 * SEARCH keep threads of their own. */
#define SYNC_RUNNING_MAX 8

struct sync_fd {
	int fd;
	bool datasync;
};

struct sync_waiter {
	mailbox_sync_cb *cb;
	void *data;
};

struct sync_batch {
	uv_work_t work;
	struct sync_fd *fds;
	size_t n_fds, cap_fds;
	struct sync_waiter *waiters;
	size_t n_waiters, cap_waiters;
	int err;
};

static struct {
	uv_loop_t *loop;
	struct sync_batch *forming;
	unsigned running;
} eng;

static struct sync_batch *batch_get(uv_loop_t *loop)
{
	if (eng.loop != loop && eng.running == 0 && eng.forming == NULL)
		eng.loop = loop; /* a new loop (tests run one after another) */
	if (eng.loop != loop)
		return NULL;
	if (eng.forming == NULL)
		eng.forming = calloc(1, sizeof(*eng.forming));
	return eng.forming;
}

struct synced {
	dev_t dev;
	ino_t ino;
	bool full; /* fsync, not only fdatasync */
};

static void sync_work(uv_work_t *w)
{
	struct sync_batch *b = w->data;
	struct synced done[64];
	size_t n_done = 0;
	for (size_t i = 0; i < b->n_fds; i++) {
		struct sync_fd *f = &b->fds[i];
		struct stat st;
		bool again = false;
		bool known = fstat(f->fd, &st) == 0;
		/* a file this batch synced already (fully, or as much as asked now) is done */
		for (size_t k = 0; known && k < n_done && !again; k++)
			again = done[k].dev == st.st_dev && done[k].ino == st.st_ino &&
				(done[k].full || f->datasync);
		if (!again) {
			int r = f->datasync ? fdatasync(f->fd) : fsync(f->fd);
			if (r < 0 && b->err == 0)
				b->err = -errno;
			if (known && n_done < sizeof(done) / sizeof(done[0]))
				done[n_done++] =
					(struct synced){st.st_dev, st.st_ino, !f->datasync};
		}
		close(f->fd);
		f->fd = -1;
	}
}

static void batch_start(void);

static void sync_after(uv_work_t *w, int status)
{
	struct sync_batch *b = w->data;
	eng.running--;
	if (status < 0 && b->err == 0)
		b->err = status;
	if (b->err < 0)
		log_error("storage: fsync failed err=%s", strerror(-b->err));
	/* the next batch first, so it runs while these callbacks answer */
	batch_start();
	for (size_t i = 0; i < b->n_waiters; i++)
		b->waiters[i].cb(b->err, b->waiters[i].data);
	free(b->fds);
	free(b->waiters);
	free(b);
}

static void batch_start(void)
{
	struct sync_batch *b = eng.forming;
	if (b == NULL || eng.running >= SYNC_RUNNING_MAX || (b->n_fds == 0 && b->n_waiters == 0))
		return;
	eng.forming = NULL;
	b->work.data = b;
	int r = uv_queue_work(eng.loop, &b->work, sync_work, sync_after);
	if (r < 0) {
		/* cannot happen with a valid loop; sync here rather than lose durability */
		sync_work(&b->work);
		eng.running++;
		sync_after(&b->work, 0);
		return;
	}
	eng.running++;
}

int mailbox_sync_defer(struct mailbox *mbox, int fd, bool datasync)
{
	struct sync_batch *b = batch_get(mbox->loop);
	if (b != NULL && b->n_fds == b->cap_fds) {
		size_t cap = b->cap_fds ? b->cap_fds * 2 : 8;
		struct sync_fd *p = realloc(b->fds, cap * sizeof(*p));
		if (p == NULL) {
			b = NULL;
		} else {
			b->fds = p;
			b->cap_fds = cap;
		}
	}
	if (b == NULL) {
		/* no memory (or a second loop): sync here, durability first */
		int r = (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? -errno : 0;
		close(fd);
		return r;
	}
	b->fds[b->n_fds++] = (struct sync_fd){fd, datasync};
	return 0;
}

void mailbox_sync_kick(struct mailbox *mbox)
{
	if (eng.loop == mbox->loop)
		batch_start();
}

int mailbox_sync_wait(struct mailbox *mbox, mailbox_sync_cb *cb, void *data)
{
	struct sync_batch *b = batch_get(mbox->loop);
	if (b == NULL)
		return -ENOMEM;
	if (b->n_waiters == b->cap_waiters) {
		size_t cap = b->cap_waiters ? b->cap_waiters * 2 : 8;
		struct sync_waiter *p = realloc(b->waiters, cap * sizeof(*p));
		if (p == NULL)
			return -ENOMEM;
		b->waiters = p;
		b->cap_waiters = cap;
	}
	b->waiters[b->n_waiters++] = (struct sync_waiter){cb, data};
	batch_start();
	return 0;
}
