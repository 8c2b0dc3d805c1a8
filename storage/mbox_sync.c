/* mbox_sync — writing our state into the mbox file (mbox_sync.h).
 *
 * A sync runs on libuv's thread pool, under the file's write locks (dotlock, then fcntl;
 * waiting at most mbox_lock_timeout), and rewrites the file IN PLACE from the first message
 * that changes (an expunged one, or one whose flags differ from its Status/X-Status/
 * X-Keywords), so that an MTA holding a descriptor of the file never writes into a file that
 * was replaced. Messages it rewrites get our headers (Status, X-Status, X-Keywords, X-UID,
 * X-UIDL; X-IMAPbase on the first message of the file); spooled appends go after them; data an
 * MTA appended since our last look follows, untouched.
 *
 * Crash safety, in order:
 *  1. the tail [S, end) is copied to STATE/mailkeep-rewrite (after a header naming S, its
 *     length, the file's inode and E = the larger of the old and the new end), fsynced, and
 *     checked against what we expect there (From_ offsets and content hashes: a file changed
 *     behind us is left alone and read again);
 *  2. the file is extended to E if the new data is longer, fsynced, and the backup's header
 *     marked "extended" (fdatasync) — only from here is the file written;
 *  3. the new tail is written at S, fsynced, the file cut to its new end, fsynced;
 *  4. the locks are released; the backup is unlinked by sync_apply once the index
 *     describes the new file (a crash before: mbox_sync_recover finishes it and tells the
 *     open that the differences are ours).
 * The next open of the folder (mbox_sync_recover) finds a backup only after a crash in 1-3:
 * without the mark nothing was written and it is dropped; with it, the bytes after E (an
 * MTA's delivery after the crash) are saved to mailkeep-rewrite-tail, the backup is written
 * back at S, the saved bytes after it, and the file cut there: the file is as before the
 * rewrite plus the new delivery, every message whole. The sync is then simply done again.
 */
#include "mbox_private.h"
#include "mbox_scan.h"
#include "mbox_sync.h"
#include "uidlist.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BACKUP_FILE       "mailkeep-rewrite"
#define BACKUP_TAIL_FILE  "mailkeep-rewrite-tail"
#define BACKUP_MAGIC      0x314b43424b4d4d4dull
#define IO_CHUNK          (1u << 20)
#define SYNC_RETRY_MS     1000
#define SYNC_RETRY_MAX_MS 30000

/* Test hooks (tests/unit, mbox_sync.h). */
void (*mbox_sync_crash_hook)(int point);
void (*mbox_sync_done_hook)(struct mailbox *mbox, int result);

struct backup_hdr {
	uint64_t magic;
	uint64_t start;   /* S */
	uint64_t len;     /* bytes saved: the old [S, end) */
	uint64_t ext_end; /* E */
	uint64_t ino;
	uint64_t extended; /* 1 once the file may have been written */
	uint64_t new_end;  /* != 0: the new tail is whole in [start, new_end), zeros up to E */
};

enum item_kind { ITEM_KEEP, ITEM_DROP, ITEM_SPOOL };

struct sync_item {
	uint32_t uid;
	uint8_t kind;
	uint8_t flags; /* what HDRS says */
	uint32_t kw;
	uint64_t from_off, hdr_off, end_off, hash;
	int64_t idate;
	char *hdrs; /* our header lines */
	size_t hdrs_len;
	char *uidl;
	uint64_t new_from, new_hdr, new_end;
};

struct sync_job {
	uv_work_t work;
	struct mailbox *mbox;
	struct mbox_be *be;
	char file[4096];
	char state[4096];
	int fd;
	bool mboxrd;
	unsigned timeout_ms;
	struct mbox_sig expect;
	struct sync_item *items;
	size_t n;
	size_t first; /* first item written (in-file items before it stay) */
	uint64_t start;
	/* results */
	int err;
	bool outside; /* the file changed behind us: read it again */
	bool tail;    /* an MTA appended meanwhile: read its messages */
	struct mbox_sig result;
	int backup_fd;
	uint32_t uidvalidity, uidnext;
	bool noref; /* made inside the mailbox's free: holds no reference */
	/* under be->sync_mu, be->sync_cv signalled at each change: how far the worker is.
	 * CHECKED: it holds the locks and found the file as the plan expects (plus an MTA's
	 * tail when TAIL): nothing changed since our last look but what it writes. FINISHED:
	 * its result is in the job, it still holds the locks; RELEASED: it no longer does. */
	enum { JOB_QUEUED, JOB_STARTED, JOB_CHECKED, JOB_FINISHED, JOB_RELEASED } phase;
	/* on the loop: a refresh's wait for it ran out once (no more waits) / its result has
	 * been taken in (by a refresh, or by sync_done) */
	bool waited, applied;
	/* under be->sync_mu: a refresh waits for the worker to take the locks: try again now */
	bool poked;
	/* under be->sync_mu, set while it is queued: a refresh read changes the plan does not
	 * know of (an MTA's delivery would be copied as a tail the plan's offsets miss) */
	bool stale;
	bool first_kept;    /* the file's first message is not rewritten */
	uint64_t first_hdr; /* ... its header */
};

/* ---- writing helpers ---------------------------------------------------------------------- */

struct writer {
	int fd;
	uint64_t pos;
	char *buf;
	size_t len;
	int err;
};

static void w_flush(struct writer *w)
{
	if (w->err == 0 && w->len > 0) {
		size_t done = 0;
		while (done < w->len) {
			ssize_t n =
				pwrite(w->fd, w->buf + done, w->len - done, (off_t)(w->pos + done));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				w->err = n < 0 ? -errno : -EIO;
				break;
			}
			done += (size_t)n;
		}
	}
	w->pos += w->len;
	w->len = 0;
}

static void w_add(struct writer *w, const void *p, size_t len)
{
	const char *s = p;
	while (len > 0) {
		size_t n = IO_CHUNK - w->len;
		if (n > len)
			n = len;
		memcpy(w->buf + w->len, s, n);
		w->len += n;
		s += n;
		len -= n;
		if (w->len == IO_CHUNK)
			w_flush(w);
	}
}

static uint64_t w_tell(const struct writer *w)
{
	return w->pos + w->len;
}

/* Copy [off, off+len) of SRC through W. */
static int w_copy(struct writer *w, int src, uint64_t off, uint64_t len, char *buf)
{
	while (len > 0) {
		size_t n = len > IO_CHUNK ? IO_CHUNK : (size_t)len;
		ssize_t got = pread(src, buf, n, (off_t)off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return got < 0 ? -errno : -EIO;
		w_add(w, buf, (size_t)got);
		off += (uint64_t)got;
		len -= (uint64_t)got;
	}
	return w->err;
}

/* Walk the header lines of [from, to) of SRC (LINE_CB for each line, in pieces no longer than
 * IO_CHUNK: FIRST says a piece starts the line, LAST that it ends it) until the empty line
 * that ends the header block. *BODY_R is where that empty line starts, or TO. */
struct hdr_walk {
	int (*line_cb)(struct hdr_walk *hw, uint64_t off, const char *p, size_t len, bool first,
		       bool last);
	uint64_t body; /* the empty line (or the end) */
};

static int hdr_walk(struct hdr_walk *hw, int src, uint64_t from, uint64_t to, char *buf)
{
	uint64_t pos = from;
	bool line_start = true;
	while (pos < to) {
		size_t n = to - pos > IO_CHUNK ? IO_CHUNK : (size_t)(to - pos);
		ssize_t got = pread(src, buf, n, (off_t)pos);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return got < 0 ? -errno : -EIO;
		size_t used = 0;
		while (used < (size_t)got) {
			const char *s = buf + used;
			size_t avail = (size_t)got - used;
			const char *nl = memchr(s, '\n', avail);
			if (nl == NULL && line_start && used > 0 && pos + used + avail < to)
				break; /* read this line from its start with the next chunk */
			size_t seg = nl != NULL ? (size_t)(nl - s) + 1 : avail;
			if (line_start &&
			    (s[0] == '\n' || (s[0] == '\r' && seg == 2 && nl != NULL))) {
				hw->body = pos + used;
				return 0;
			}
			int r = hw->line_cb(hw, pos + used, s, seg, line_start,
					    nl != NULL || pos + used + seg >= to);
			if (r < 0)
				return r;
			line_start = nl != NULL;
			used += seg;
		}
		pos += used;
	}
	hw->body = to;
	return 0;
}

/* Pass 1: where our header lines go. Before the empty line that ends the header block, or at
 * the end of a message that is all header — unless its last line has no LF (a message
 * APPENDed without a final newline: the LF after it is the separator): then before the field
 * that line belongs to, so that the served bytes stay the same. */
struct hdr_place {
	struct hdr_walk hw;
	uint64_t field; /* the start of the current field */
	bool lf;        /* the last line ended with LF */
};

static int place_line(struct hdr_walk *hw, uint64_t off, const char *p, size_t len, bool first,
		      bool last)
{
	struct hdr_place *hp = (struct hdr_place *)hw;
	if (first && p[0] != ' ' && p[0] != '\t')
		hp->field = off;
	if (last)
		hp->lf = p[len - 1] == '\n';
	return 0;
}

/* Pass 2: copy the lines, hidden fields (and their continuation lines) dropped. */
struct hdr_copy {
	struct hdr_walk hw;
	struct writer *w;
	bool skipping;
};

static int copy_line(struct hdr_walk *hw, uint64_t off, const char *p, size_t len, bool first,
		     bool last)
{
	struct hdr_copy *hc = (struct hdr_copy *)hw;
	(void)off;
	(void)last;
	if (first && p[0] != ' ' && p[0] != '\t')
		hc->skipping = mbox_hidden_header(p, len);
	if (!hc->skipping)
		w_add(hc->w, p, len);
	return hc->w->err;
}

/* Write the message at [hdr, end) of SRC with its hidden header lines dropped and HDRS added
 * to its header block (where hdr_place says). */
static int w_message(struct writer *w, int src, uint64_t hdr, uint64_t end, const char *hdrs,
		     size_t hdrs_len, char *buf)
{
	struct hdr_place hp = {{place_line, 0}, hdr, true};
	int r = hdr_walk(&hp.hw, src, hdr, end, buf);
	uint64_t at = hp.hw.body;
	if (r == 0 && at == end && !hp.lf)
		at = hp.field;
	struct hdr_copy hc = {{copy_line, 0}, w, false};
	if (r == 0)
		r = hdr_walk(&hc.hw, src, hdr, at, buf);
	if (r == 0)
		w_add(w, hdrs, hdrs_len);
	if (r == 0)
		r = hdr_walk(&hc.hw, src, at, hp.hw.body, buf);
	if (r == 0)
		r = w->err;
	if (r == 0 && hp.hw.body < end)
		r = w_copy(w, src, hp.hw.body, end - hp.hw.body, buf);
	return r;
}

static int backup_path(const char *state, const char *name, char *buf, size_t size)
{
	return storage_path(buf, size, "%s/%s", state, name);
}

static void imapbase_update(struct sync_job *job);

static void crash_point(int p)
{
	if (mbox_sync_crash_hook != NULL)
		mbox_sync_crash_hook(p);
}

/* The worker's progress, for mbox_sync_gate (everything the job holds is written before). */
static void sync_phase(struct sync_job *job, int phase)
{
	pthread_mutex_lock(&job->be->sync_mu);
	job->phase = phase;
	pthread_cond_broadcast(&job->be->sync_cv);
	pthread_mutex_unlock(&job->be->sync_mu);
}

static void deadline_after(struct timespec *dl, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, dl);
	dl->tv_sec += ms / 1000;
	dl->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (dl->tv_nsec >= 1000000000L) {
		dl->tv_sec++;
		dl->tv_nsec -= 1000000000L;
	}
}

/* ---- the worker --------------------------------------------------------------------------- */

/* Between tries for the file's locks: a refresh that waits for us ends the nap (the MTA or
 * mutt holding them may just have let go; the backoff would keep the loop waiting). */
static void job_nap(void *arg, unsigned ms)
{
	struct sync_job *job = arg;
	struct timespec dl;
	deadline_after(&dl, ms);
	pthread_mutex_lock(&job->be->sync_mu);
	while (!job->poked)
		if (pthread_cond_timedwait(&job->be->sync_cv, &job->be->sync_mu, &dl) != 0)
			break;
	job->poked = false;
	pthread_mutex_unlock(&job->be->sync_mu);
}

static void sync_work(uv_work_t *w)
{
	struct sync_job *job = w->data;
	bool dotlocked = false;
	/* a refresh on the loop that reads the file holds sync_mu: we begin after it; once we
	 * have begun, refreshes wait for us (a while) and take in what we wrote before they
	 * read (mbox_sync_gate) */
	sync_phase(job, JOB_STARTED);
	if (job->stale) {
		/* planned before a refresh took in changes: plan again (sync_apply) */
		sync_phase(job, JOB_RELEASED);
		return;
	}
	struct mbox_lock_nap nap = {job_nap, job};
	int r = mbox_lock_wait(job->file, job->fd, true, job->timeout_ms, &nap, &dotlocked);
	if (r < 0) {
		job->err = r;
		sync_phase(job, JOB_RELEASED);
		return;
	}
	char *buf = malloc(IO_CHUNK);
	struct writer wr = {job->fd, 0, malloc(IO_CHUNK), 0, 0};
	int bfd = -1;
	char bpath[4096], btmp[4096];
	struct stat st;
	if (buf == NULL || wr.buf == NULL) {
		r = -ENOMEM;
		goto out;
	}
	if (fstat(job->fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	struct mbox_sig cur;
	mbox_sig_from_stat(&st, &cur);
	/* our descriptor is a dup made with the plan: the file by its name may be another now */
	struct stat pst;
	if (stat(job->file, &pst) < 0 || pst.st_ino != st.st_ino || pst.st_dev != st.st_dev) {
		job->outside = true;
		goto out;
	}
	if (cur.ino != job->expect.ino || cur.size < job->expect.size ||
	    (cur.size == job->expect.size && (cur.mtime_sec != job->expect.mtime_sec ||
					      cur.mtime_nsec != job->expect.mtime_nsec))) {
		job->outside = true;
		goto out;
	}
	if (cur.size > job->expect.size) {
		/* grown: an MTA's append starts exactly where our view of the file ends (after
		 * the LF that ends it); anything else is another program's rewrite (mutt) */
		char head[8] = {0};
		size_t lfs = 0;
		bool ok = job->expect.size == 0 ||
			  (pread(job->fd, head, 1, (off_t)job->expect.size - 1) == 1 &&
			   head[0] == '\n');
		ssize_t hn = ok ? pread(job->fd, head, sizeof(head), (off_t)job->expect.size) : 0;
		while (hn > 0 && lfs < 2 && (size_t)hn > lfs && head[lfs] == '\n')
			lfs++;
		if (!ok || hn < (ssize_t)(lfs + 5) || memcmp(head + lfs, "From ", 5) != 0) {
			job->outside = true;
			goto out;
		}
	}
	uint64_t S = job->start;
	uint64_t old_len = cur.size - S;
	uint64_t tail_len = cur.size - job->expect.size;
	job->tail = tail_len > 0;
	sync_phase(job, JOB_CHECKED);
	/* 1. the backup */
	r = backup_path(job->state, BACKUP_FILE, bpath, sizeof(bpath));
	if (r == 0)
		r = backup_path(job->state, BACKUP_FILE ".tmp", btmp, sizeof(btmp));
	if (r < 0)
		goto out;
	bfd = open(btmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (bfd < 0) {
		r = -errno;
		goto out;
	}
	struct backup_hdr bh = {BACKUP_MAGIC, S, old_len, 0, cur.ino, 0, 0};
	struct writer bw = {bfd, 0, wr.buf, 0, 0};
	w_add(&bw, &bh, sizeof(bh));
	r = w_copy(&bw, job->fd, S, old_len, buf);
	w_flush(&bw);
	if (r == 0)
		r = bw.err;
	if (r == 0 && fsync(bfd) < 0)
		r = -errno;
	/* check what we are about to rewrite is what we think it is */
	for (size_t i = job->first; r == 0 && i < job->n; i++) {
		struct sync_item *it = &job->items[i];
		if (it->kind == ITEM_SPOOL)
			continue;
		char from[5];
		uint64_t hash;
		uint64_t base = sizeof(bh) - S;
		if (pread(bfd, from, 5, (off_t)(it->from_off + base)) != 5 ||
		    memcmp(from, "From ", 5) != 0 ||
		    mbox_copy_served(bfd, -1, 0, 0, it->hdr_off + base, it->end_off + base,
				     job->mboxrd, -1, &hash) < 0 ||
		    hash != it->hash) {
			job->outside = true;
			break;
		}
	}
	if (r < 0 || job->outside) {
		close(bfd);
		bfd = -1;
		unlink(btmp);
		goto out;
	}
	if (rename(btmp, bpath) < 0 || storage_fsync_dir(job->state) < 0) {
		r = -errno;
		close(bfd);
		bfd = -1;
		unlink(btmp);
		unlink(bpath);
		goto out;
	}
	crash_point(1);
	/* the new length: measure by writing to nowhere first would cost a pass; the items
	 * know their sizes well enough to bound E: old + our headers + spooled bytes */
	uint64_t grow = 0;
	for (size_t i = job->first; i < job->n; i++) {
		struct sync_item *it = &job->items[i];
		if (it->kind == ITEM_DROP)
			continue;
		grow += it->hdrs_len + 160; /* headers, a From_ line, a separator */
		if (it->kind == ITEM_SPOOL)
			grow += it->end_off;
	}
	uint64_t E = cur.size + grow;
	/* 2. make room first, so a crash leaves a known end (E is noted before) */
	bh.ext_end = E;
	if (pwrite(bfd, &bh, sizeof(bh), 0) != (ssize_t)sizeof(bh) || fdatasync(bfd) < 0) {
		r = -errno;
		goto undo;
	}
	if (ftruncate(job->fd, (off_t)E) < 0 || fsync(job->fd) < 0) {
		r = -errno;
		goto undo;
	}
	bh.ext_end = E;
	bh.extended = 1;
	if (pwrite(bfd, &bh, sizeof(bh), 0) != (ssize_t)sizeof(bh) || fdatasync(bfd) < 0) {
		r = -errno;
		goto undo;
	}
	crash_point(2);
	pthread_rwlock_wrlock(&job->be->rw);
	job->be->backup_fd = bfd;
	job->be->split = S;
	job->be->split_off = sizeof(bh); /* the backup's data follows its header */
	pthread_rwlock_unlock(&job->be->rw);
	/* 3. the new tail */
	wr.pos = S;
	wr.len = 0;
	uint64_t base = sizeof(bh) - S; /* old offset -> backup offset */
	for (size_t i = job->first; r == 0 && i < job->n; i++) {
		struct sync_item *it = &job->items[i];
		if (it->kind == ITEM_DROP)
			continue;
		it->new_from = w_tell(&wr);
		if (it->kind == ITEM_KEEP) {
			r = w_copy(&wr, bfd, it->from_off + base, it->hdr_off - it->from_off, buf);
			it->new_hdr = w_tell(&wr);
			if (r == 0)
				r = w_message(&wr, bfd, it->hdr_off + base, it->end_off + base,
					      it->hdrs, it->hdrs_len, buf);
		} else {
			char fl[128], sp[4096];
			size_t n = mbox_from_line(it->idate, fl, sizeof(fl));
			w_add(&wr, fl, n);
			it->new_hdr = w_tell(&wr);
			r = storage_path(sp, sizeof(sp), "%s/spool/%u", job->state, it->uid);
			int sfd = r == 0 ? open(sp, O_RDONLY | O_CLOEXEC) : -1;
			if (r == 0 && sfd < 0)
				r = -errno;
			if (r == 0)
				r = w_message(&wr, sfd, 0, it->end_off, it->hdrs, it->hdrs_len,
					      buf);
			if (sfd >= 0)
				close(sfd);
		}
		it->new_end = w_tell(&wr);
		w_add(&wr, "\n", 1);
	}
	uint64_t known_end = w_tell(&wr);
	if (r == 0 && job->first_kept) {
		w_flush(&wr);
		imapbase_update(job);
	}
	if (r == 0 && tail_len > 0)
		r = w_copy(&wr, bfd, job->expect.size + base, tail_len, buf);
	w_flush(&wr);
	if (r == 0)
		r = wr.err;
	uint64_t new_end = wr.pos;
	if (r == 0 && new_end > E)
		r = -EOVERFLOW; /* cannot happen: E bounds the new data */
	if (r == 0 && fsync(job->fd) < 0)
		r = -errno;
	crash_point(3);
	/* the room left over becomes zeros, then the header says the new tail is whole: from
	 * here a crash finishes the rewrite (cut at new_end) instead of undoing it */
	if (r == 0 && new_end < E) {
		memset(buf, 0, IO_CHUNK);
		for (uint64_t at = new_end; r == 0 && at < E;) {
			size_t n = E - at > IO_CHUNK ? IO_CHUNK : (size_t)(E - at);
			ssize_t wn = pwrite(job->fd, buf, n, (off_t)at);
			if (wn <= 0)
				r = wn < 0 ? -errno : -EIO;
			else
				at += (uint64_t)wn;
		}
		if (r == 0 && fsync(job->fd) < 0)
			r = -errno;
	}
	if (r == 0) {
		bh.new_end = new_end;
		if (pwrite(bfd, &bh, sizeof(bh), 0) != (ssize_t)sizeof(bh) || fdatasync(bfd) < 0)
			r = -errno;
	}
	if (r < 0)
		goto undo;
	crash_point(4);
	if (ftruncate(job->fd, (off_t)new_end) < 0 || fsync(job->fd) < 0) {
		/* the new tail is whole: the next open cuts the zeros */
		log_warn("storage: mbox not cut after a rewrite path=%s err=%s",
			 log_escape_str(job->file), strerror(errno));
	}
	/* 4. done. The backup stays until sync_apply has written the index: a crash before
	 * that leaves a file the index does not describe, and the backup tells the next open
	 * that the difference is ours, not another program's edit (mbox_sync_recover) */
	if (fstat(job->fd, &st) == 0)
		mbox_sig_from_stat(&st, &job->result);
	job->result.size = known_end; /* what follows is the MTA's: read at the next refresh */
	crash_point(5);
	job->backup_fd = bfd;
	bfd = -1;
	goto out;
undo:
	/* put the old bytes back while we still hold the locks */
	{
		int ur = 0;
		if (!bh.extended) {
			/* the file was not written: only the room made for it goes */
			if (ftruncate(job->fd, (off_t)cur.size) < 0 || fsync(job->fd) < 0)
				ur = -errno;
			unlink(bpath);
		} else {
			ur = mbox_sync_recover(job->state, job->file, job->fd, 0, true);
		}
		if (ur < 0)
			log_error("storage: mbox rewrite failed and not undone path=%s err=%s "
				  "(the next open restores it)",
				  log_escape_str(job->file), strerror(-ur));
		pthread_rwlock_wrlock(&job->be->rw);
		job->be->backup_fd = -1;
		pthread_rwlock_unlock(&job->be->rw);
		job->outside = true;
	}
out:
	if (bfd >= 0)
		close(bfd);
	free(buf);
	free(wr.buf);
	/* finished before the locks go: what an MTA delivers once they are free is seen by
	 * the next refresh, not skipped as "checked, nothing new" */
	job->err = r;
	sync_phase(job, JOB_FINISHED);
	mbox_unlock(job->file, job->fd, dotlocked);
	sync_phase(job, JOB_RELEASED);
}

/* ---- the loop side ------------------------------------------------------------------------ */

static void job_free(struct sync_job *job)
{
	if (job->fd >= 0)
		close(job->fd);
	for (size_t i = 0; i < job->n; i++) {
		free(job->items[i].hdrs);
		free(job->items[i].uidl);
	}
	free(job->items);
	free(job);
}

/* Take in a finished sync's result on the loop: the offsets and flags it wrote, the file's
 * new signature; or read the file again / retry later. */
static void sync_apply(struct mailbox *mbox, struct sync_job *job, int r)
{
	struct mbox_be *be = mbox->backend;
	job->applied = true;
	if (job->stale && r == 0) {
		/* it wrote nothing: plan again with what the refresh took in */
		mbox_sync_schedule(mbox, 0);
		return;
	}
	if (mbox_sync_done_hook != NULL)
		mbox_sync_done_hook(mbox, r == 0 && job->outside ? 1 : r);
	if (r == 0 && !job->outside) {
		be->sync_failures = 0;
		for (size_t i = job->first; i < job->n; i++) {
			struct sync_item *it = &job->items[i];
			struct mmsg *m = mbox_msg_find(be, it->uid);
			if (it->kind == ITEM_DROP) {
				if (m != NULL && m->state == MM_GONE)
					mbox_msg_remove(be, it->uid);
				continue;
			}
			if (m == NULL) {
				/* expunged while it was written: it is in the file now */
				struct mmsg g = {0};
				g.uid = it->uid;
				g.hash = it->hash; /* the next sync finds it by it */
				g.gone_uidl = it->uidl;
				it->uidl = NULL;
				size_t at = 0;
				while (at < be->n && be->msgs[at].uid < g.uid)
					at++;
				if (be->n == be->cap) {
					size_t cap = be->cap ? be->cap * 2 : 256;
					struct mmsg *nm = realloc(be->msgs, cap * sizeof(*nm));
					if (nm == NULL) {
						free(g.gone_uidl);
						continue;
					}
					be->msgs = nm;
					be->cap = cap;
				}
				memmove(&be->msgs[at + 1], &be->msgs[at],
					(be->n - at) * sizeof(*be->msgs));
				be->msgs[at] = g;
				be->n++;
				m = &be->msgs[at];
				m->state = MM_GONE;
			}
			if (it->kind == ITEM_SPOOL && m->state == MM_SPOOL) {
				m->state = MM_FILE;
				char sp[4096];
				if (storage_path(sp, sizeof(sp), "%s/spool/%u", mbox->path,
						 it->uid) == 0)
					unlink(sp);
			}
			m->from_off = it->new_from;
			m->hdr_off = it->new_hdr;
			m->end_off = it->new_end;
			m->file_flags = it->flags;
			m->file_kw = it->kw;
			m->file_ours = true;
		}
		pthread_rwlock_wrlock(&be->rw);
		if (be->backup_fd >= 0)
			close(be->backup_fd);
		be->backup_fd = -1;
		pthread_rwlock_unlock(&be->rw);
		job->backup_fd = -1;
		be->sig = job->result;
		(void)mbox_index_write(mbox->path, &be->sig, be->msgs, be->n);
		/* durably gone: a backup back after a crash would have the next open redo a
		 * finished rewrite on a file that changed since, and give our UID list the last
		 * word there over mutt's later edits */
		char bpath[4096];
		if (backup_path(job->state, BACKUP_FILE, bpath, sizeof(bpath)) == 0 &&
		    (unlink(bpath) < 0 || storage_fsync_dir(job->state) < 0))
			log_warn("storage: mbox rewrite backup not removed path=%s err=%s",
				 log_escape_str(bpath), strerror(errno));
		if (job->tail)
			mbox_refresh_later(mbox, 0);
	} else {
		if (job->backup_fd >= 0)
			close(job->backup_fd);
		job->backup_fd = -1;
		if (r == 0 && job->outside) {
			/* read the file again, then try again */
			be->sig.mtime_nsec = -1;
			mbox_refresh_later(mbox, 0);
			mbox_sync_schedule(mbox, SYNC_RETRY_MS / 10);
		} else {
			unsigned delay = SYNC_RETRY_MS
					 << (be->sync_failures < 5 ? be->sync_failures : 5);
			if (delay > SYNC_RETRY_MAX_MS)
				delay = SYNC_RETRY_MAX_MS;
			if (be->sync_failures++ == 0 || r != -EBUSY)
				log_warn("storage: mbox not written yet path=%s err=%s retry_ms=%u",
					 log_escape_str(be->file), strerror(-r), delay);
			mbox_sync_schedule(mbox, delay);
		}
	}
}

static void sync_done(uv_work_t *w, int status)
{
	struct sync_job *job = w->data;
	struct mailbox *mbox = job->mbox;
	struct mbox_be *be = mbox->backend;
	if (be == NULL || mbox->gone) {
		if (be != NULL && job->backup_fd >= 0 && be->backup_fd == job->backup_fd) {
			pthread_rwlock_wrlock(&be->rw);
			be->backup_fd = -1; /* closed here, not again by mb_free */
			pthread_rwlock_unlock(&be->rw);
		}
		if (job->backup_fd >= 0)
			close(job->backup_fd);
		if (be != NULL) {
			be->sync_running = false;
			be->sync_job = NULL;
			be->sync_due = false;
		}
		bool noref = job->noref;
		job_free(job);
		if (!noref)
			mailbox_unref(&mbox);
		return;
	}
	be->sync_running = false;
	be->sync_job = NULL;
	if (!job->applied)
		sync_apply(mbox, job, status < 0 ? status : job->err);
	if (be->freeing) {
		be->sync_due = false;
		job_free(job);
		return;
	}
	if (be->refresh_after_sync) {
		be->refresh_after_sync = false;
		mbox_refresh_later(mbox, 0);
	}
	job_free(job);
	/* more to write (changes made meanwhile)? else the file is in sync */
	if (!be->sync_due && !be->sync_inline)
		mbox_sync_start(mbox, false);
	mailbox_unref(&mbox);
}

static int cmp_item_off(const void *a, const void *b)
{
	const struct sync_item *x = a, *y = b;
	if (x->kind == ITEM_SPOOL || y->kind == ITEM_SPOOL) {
		if (x->kind != y->kind)
			return x->kind == ITEM_SPOOL ? 1 : -1;
		return x->uid < y->uid ? -1 : x->uid > y->uid;
	}
	return x->from_off < y->from_off ? -1 : x->from_off > y->from_off;
}

#define IMAPBASE_WIDTH 32

static const char *imapbase_value(uint32_t uidvalidity, uint32_t uidnext)
{
	static char buf[32];
	snprintf(buf, sizeof(buf), "%u %u", uidvalidity, uidnext);
	return buf;
}

/* The first message keeps its header: bring its X-IMAPbase's UIDNEXT up to date in the room
 * its padding leaves (a hidden header: the served bytes do not change). */
static void imapbase_update(struct sync_job *job)
{
	char buf[8192];
	ssize_t n = pread(job->fd, buf, sizeof(buf) - 1, (off_t)job->first_hdr);
	if (n <= 0)
		return;
	buf[n] = '\0';
	char *end = strstr(buf, "\n\n");
	if (end != NULL)
		end[1] = '\0';
	char *p = strncmp(buf, "X-IMAPbase:", 11) == 0 ? buf : strstr(buf, "\nX-IMAPbase:");
	if (p == NULL)
		return;
	if (*p == '\n')
		p++;
	char *v = p + 11;
	while (*v == ' ')
		v++;
	char *eol = strchr(v, '\n');
	if (eol == NULL)
		return;
	unsigned long valid = strtoul(v, NULL, 10);
	if (valid != job->uidvalidity)
		return; /* another program's: leave it */
	char val[64];
	int len = snprintf(val, sizeof(val), "%u %u", job->uidvalidity, job->uidnext);
	size_t room = (size_t)(eol - v);
	if (len < 0 || (size_t)len > room)
		return;
	memset(val + len, ' ', room - (size_t)len);
	(void)!pwrite(job->fd, val, room, (off_t)(job->first_hdr + (uint64_t)(v - buf)));
}

/* Our header lines for REC (and X-IMAPbase when FIRST). */
static char *make_hdrs(struct mailbox *mbox, const struct mail_rec *rec, bool first, size_t *len_r)
{
	struct sbuf b = {0};
	int r = sbuf_printf(&b, "Status: %sO\n", (rec->flags & MAIL_SEEN) ? "R" : "");
	if (r == 0 && (rec->flags & (MAIL_ANSWERED | MAIL_FLAGGED | MAIL_DRAFT | MAIL_DELETED)))
		r = sbuf_printf(&b, "X-Status: %s%s%s%s\n", (rec->flags & MAIL_ANSWERED) ? "A" : "",
				(rec->flags & MAIL_FLAGGED) ? "F" : "",
				(rec->flags & MAIL_DRAFT) ? "T" : "",
				(rec->flags & MAIL_DELETED) ? "D" : "");
	if (r == 0 && rec->keywords != 0) {
		r = sbuf_printf(&b, "X-Keywords:");
		for (unsigned i = 0; r == 0 && i < mbox->n_keywords; i++)
			if (rec->keywords & (1u << i))
				r = sbuf_printf(&b, " %s", mbox->keywords[i]);
		if (r == 0)
			r = sbuf_add(&b, "\n", 1);
	}
	if (r == 0 && first) /* padded: later syncs update UIDNEXT in place */
		r = sbuf_printf(&b, "X-IMAPbase: %-*s\n", IMAPBASE_WIDTH,
				imapbase_value(mbox->uidvalidity, mbox->uidnext));
	if (r == 0)
		r = sbuf_printf(&b, "X-UID: %u\nX-UIDL: %.*s\n", rec->uid, (int)rec->base_len,
				mailbox_rec_key(mbox, rec));
	if (r < 0) {
		sbuf_free(&b);
		return NULL;
	}
	*len_r = b.len;
	return b.data;
}

void mbox_sync_start(struct mailbox *mbox, bool inline_only)
{
	struct mbox_be *be = mbox->backend;
	if (inline_only && (!be->sync_due || be->sync_running))
		return;
	bool was_due = be->sync_due;
	be->sync_due = false;
	if (be->sync_running)
		return;
	if (mbox->gone)
		return;
	/* anything to write? */
	bool spool = false, any = false;
	for (size_t i = 0; i < be->n && !any; i++) {
		const struct mmsg *m = &be->msgs[i];
		if (m->state == MM_GONE) {
			any = true;
		} else if (m->state == MM_SPOOL) {
			spool = any = true;
		} else {
			const struct mail_rec *rec = mailbox_rec_find(mbox, m->uid);
			any = rec != NULL &&
			      (rec->flags != m->file_flags || rec->keywords != m->file_kw);
		}
	}
	for (size_t i = 0; i < be->n && !spool; i++)
		spool = be->msgs[i].state == MM_SPOOL;
	if (!any)
		return;
	if (inline_only) {
		/* only a small sync runs inside a change: where would it start? */
		uint64_t start = be->sig.size;
		for (size_t i = 0; i < be->n; i++) {
			const struct mmsg *m = &be->msgs[i];
			if (m->state == MM_SPOOL || m->from_off >= start)
				continue;
			const struct mail_rec *rec = mailbox_rec_find(mbox, m->uid);
			if (m->state == MM_GONE || rec == NULL || rec->flags != m->file_flags ||
			    rec->keywords != m->file_kw)
				start = m->from_off;
		}
		if (be->sig.size - start > MBOX_SYNC_INLINE_MAX) {
			be->sync_due = was_due; /* the timer starts it on the thread pool */
			return;
		}
	}
	if (be->fd < 0) {
		if (!spool)
			return;
		be->fd = open(be->file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (be->fd < 0) {
			log_warn("storage: cannot create mbox path=%s err=%s",
				 log_escape_str(be->file), strerror(errno));
			mbox_sync_schedule(mbox, SYNC_RETRY_MAX_MS);
			return;
		}
		struct stat st;
		if (fstat(be->fd, &st) == 0)
			mbox_sig_from_stat(&st, &be->sig);
	}
	struct sync_job *job = calloc(1, sizeof(*job));
	if (job == NULL)
		return;
	job->items = calloc(be->n + 1, sizeof(*job->items));
	if (job->items == NULL) {
		free(job);
		return;
	}
	job->be = be;
	/* its own descriptor (one open file description with be->fd, so the same locks): a
	 * refresh may close be->fd while the job waits in the pool's queue */
	job->fd = dup(be->fd);
	if (job->fd < 0) {
		free(job->items);
		free(job);
		return;
	}
	job->mboxrd = be->mboxrd;
	job->timeout_ms = be->lock_timeout_ms;
	job->expect = be->sig;
	job->backup_fd = -1;
	memcpy(job->file, be->file, sizeof(job->file));
	snprintf(job->state, sizeof(job->state), "%s", mbox->path);
	uint64_t first_off = UINT64_MAX;
	for (size_t i = 0; i < be->n; i++) {
		const struct mmsg *m = &be->msgs[i];
		struct sync_item *it = &job->items[job->n++];
		it->uid = m->uid;
		it->from_off = m->from_off;
		it->hdr_off = m->hdr_off;
		it->end_off = m->end_off;
		it->hash = m->hash;
		const struct mail_rec *rec = mailbox_rec_find(mbox, m->uid);
		if (m->state == MM_GONE || rec == NULL) {
			it->kind = ITEM_DROP;
			if (m->state != MM_SPOOL && m->from_off < first_off)
				first_off = m->from_off;
			if (m->state == MM_SPOOL)
				job->n--; /* expunged before it reached the file */
			continue;
		}
		it->kind = m->state == MM_SPOOL ? ITEM_SPOOL : ITEM_KEEP;
		it->flags = rec->flags;
		it->kw = rec->keywords;
		it->idate = rec->idate;
		it->uidl = strndup(mailbox_rec_key(mbox, rec), rec->base_len);
		if (it->kind == ITEM_SPOOL) {
			char sp[4096];
			struct stat st;
			if (storage_path(sp, sizeof(sp), "%s/spool/%u", mbox->path, m->uid) < 0 ||
			    stat(sp, &st) < 0) {
				job->n--;
				free(it->uidl);
				continue;
			}
			it->end_off = (uint64_t)st.st_size;
		} else if ((rec->flags != m->file_flags || rec->keywords != m->file_kw) &&
			   m->from_off < first_off) {
			first_off = m->from_off;
		}
	}
	qsort(job->items, job->n, sizeof(*job->items), cmp_item_off);
	if (first_off == UINT64_MAX)
		first_off = job->expect.size;
	job->start = first_off;
	job->first = job->n;
	for (size_t i = 0; i < job->n; i++) {
		struct sync_item *it = &job->items[i];
		if (it->kind == ITEM_SPOOL || it->from_off >= first_off) {
			if (job->first == job->n)
				job->first = i;
		}
	}
	job->uidvalidity = mbox->uidvalidity;
	job->uidnext = mbox->uidnext;
	job->first_kept = job->first > 0 && job->items[0].kind == ITEM_KEEP;
	job->first_hdr = job->items[0].hdr_off;
	/* our headers for every message written */
	bool first_in_file = true;
	for (size_t i = 0; i < job->n; i++) {
		struct sync_item *it = &job->items[i];
		bool is_first = first_in_file && it->kind != ITEM_DROP;
		if (it->kind != ITEM_DROP)
			first_in_file = false;
		if (i < job->first || it->kind == ITEM_DROP)
			continue;
		const struct mail_rec *rec = mailbox_rec_find(mbox, it->uid);
		it->hdrs = rec != NULL ? make_hdrs(mbox, rec, is_first && job->start == 0,
						   &it->hdrs_len)
				       : NULL;
		if (it->hdrs == NULL) {
			job_free(job);
			return;
		}
	}
	/* small: on the loop now, if the locks are free at once (no waiting here) */
	uint64_t bytes = job->expect.size > job->start ? job->expect.size - job->start : 0;
	for (size_t i = job->first; i < job->n; i++)
		if (job->items[i].kind == ITEM_SPOOL)
			bytes += job->items[i].end_off;
	/* a job holds the mailbox while it runs (not while it is being freed: then it runs
	 * on the loop, inside the free) */
	job->noref = be->freeing;
	job->mbox = be->freeing ? mbox : mailbox_ref(mbox);
	job->work.data = job;
	be->sync_running = true;
	if (bytes <= MBOX_SYNC_INLINE_MAX) {
		job->timeout_ms = 0;
		be->sync_inline = true;
		sync_work(&job->work);
		be->sync_inline = false;
		if (job->err != -EBUSY) {
			be->sync_inline = true;
			sync_done(&job->work, 0);
			be->sync_inline = false;
			return;
		}
		job->err = 0;
		job->outside = job->tail = false;
		job->phase = JOB_QUEUED;
		job->stale = false;
		job->timeout_ms = be->lock_timeout_ms;
	}
	if (inline_only) {
		/* big, or the locks are taken: the thread pool, when the timer says */
		be->sync_running = false;
		be->sync_due = was_due;
		if (!job->noref)
			mailbox_unref(&job->mbox);
		job_free(job);
		return;
	}
	if (uv_queue_work(mbox->loop, &job->work, sync_work, sync_done) < 0) {
		be->sync_running = false;
		mailbox_unref(&job->mbox);
		job_free(job);
		return;
	}
	be->sync_job = job;
}

int mbox_sync_gate(struct mailbox *mbox, unsigned ms)
{
	struct mbox_be *be = mbox->backend;
	struct sync_job *job = be->sync_job;
	if (job == NULL)
		return 0;
	pthread_mutex_lock(&be->sync_mu);
	if (job->phase == JOB_QUEUED)
		return 1; /* sync_mu stays held: the worker begins after the caller's read */
	/* begun: until it has checked the file, something may have changed that we have not
	 * seen (mutt's edit, an MTA's delivery: it may hold the locks they just released) —
	 * wait, as the loop waits for locks elsewhere; once it ran out, no more waits for this
	 * sync (its locks are held elsewhere for long) */
	if (!job->waited) {
		struct timespec dl;
		deadline_after(&dl, ms);
		if (job->phase == JOB_STARTED) {
			job->poked = true; /* it may be napping between tries for the locks */
			pthread_cond_broadcast(&be->sync_cv);
		}
		while (job->phase == JOB_STARTED || (job->phase == JOB_CHECKED && job->tail))
			if (pthread_cond_timedwait(&be->sync_cv, &be->sync_mu, &dl) != 0) {
				job->waited = true;
				break;
			}
	}
	/* finished: it releases the locks next (our read lock is on the same open file
	 * description: taken before that, its unlock would drop ours too) */
	while (job->phase == JOB_FINISHED)
		pthread_cond_wait(&be->sync_cv, &be->sync_mu);
	int phase = job->phase;
	pthread_mutex_unlock(&be->sync_mu);
	if (phase != JOB_RELEASED)
		return -1; /* checked and writing: nothing new to read until it ends */
	if (!job->applied)
		sync_apply(mbox, job, job->err);
	return 0;
}

void mbox_sync_ungate(struct mailbox *mbox, bool stale)
{
	struct mbox_be *be = mbox->backend;
	if (stale)
		be->sync_job->stale = true;
	pthread_mutex_unlock(&be->sync_mu);
}

/* ---- recovery ----------------------------------------------------------------------------- */

/* Where the bytes an MTA appended after a crash start, at or after FROM: past our zeros,
 * and past the LFs it wrote because the file did not end in an empty line. */
static uint64_t tail_start(int fd, uint64_t from, uint64_t size, char *buf)
{
	uint64_t at = from;
	while (at < size) {
		size_t n = size - at > IO_CHUNK ? IO_CHUNK : (size_t)(size - at);
		ssize_t got = pread(fd, buf, n, (off_t)at);
		if (got <= 0)
			return size;
		size_t i = 0;
		while (i < (size_t)got && buf[i] == '\0')
			i++;
		at += i;
		if (i < (size_t)got)
			break;
	}
	char head[8];
	ssize_t hn = at < size ? pread(fd, head, sizeof(head), (off_t)at) : 0;
	size_t lfs = 0;
	while (hn > 0 && lfs < 2 && (size_t)hn > lfs && head[lfs] == '\n')
		lfs++;
	if (lfs > 0 && (size_t)hn >= lfs + 5 && memcmp(head + lfs, "From ", 5) == 0)
		at += lfs;
	return at;
}

/* The new tail was whole (BH->new_end): keep it, move what an MTA appended since down to
 * new_end, cut there. */
static int recover_forward(const char *state, const char *file, int fd, const struct backup_hdr *bh,
			   const struct stat *st, const char *bpath, const char *tpath, char *buf)
{
	log_warn("storage: finishing an interrupted mbox rewrite path=%s", log_escape_str(file));
	uint64_t size = (uint64_t)st->st_size;
	uint64_t t0 = tail_start(fd, bh->new_end, size, buf);
	int r = 0;
	if (t0 > bh->new_end && t0 < size) {
		/* moved down a chunk at a time: each chunk is read before anything is written
		 * over it */
		uint64_t at = t0, to = bh->new_end;
		while (r == 0 && at < size) {
			size_t n = size - at > IO_CHUNK ? IO_CHUNK : (size_t)(size - at);
			ssize_t got = pread(fd, buf, n, (off_t)at);
			if (got <= 0) {
				r = got < 0 ? -errno : -EIO;
				break;
			}
			if (pwrite(fd, buf, (size_t)got, (off_t)to) != got)
				r = -EIO;
			at += (uint64_t)got;
			to += (uint64_t)got;
		}
		size = bh->new_end + (size - t0);
	} else if (t0 >= size) {
		size = bh->new_end;
	} else {
		size = (uint64_t)st->st_size;
	}
	if (r == 0 && (fsync(fd) < 0 || ftruncate(fd, (off_t)size) < 0 || fsync(fd) < 0))
		r = -errno;
	if (r == 0) {
		unlink(bpath);
		unlink(tpath);
		r = storage_fsync_dir(state);
	}
	return r;
}

int mbox_sync_recover(const char *state, const char *file, int fd, unsigned timeout_ms,
		      bool locked_already)
{
	char bpath[4096], tpath[4096], ttmp[4096];
	int r = backup_path(state, BACKUP_FILE, bpath, sizeof(bpath));
	if (r == 0)
		r = backup_path(state, BACKUP_TAIL_FILE, tpath, sizeof(tpath));
	if (r == 0)
		r = backup_path(state, BACKUP_TAIL_FILE ".tmp", ttmp, sizeof(ttmp));
	if (r < 0)
		return r;
	int bfd = open(bpath, O_RDONLY | O_CLOEXEC);
	if (bfd < 0) {
		unlink(tpath); /* a recovery finished but for this */
		return 0;
	}
	bool dotlocked = false;
	bool locked = !locked_already;
	if (locked)
		r = mbox_lock(file, fd, true, timeout_ms, &dotlocked);
	if (r < 0) {
		close(bfd);
		return r;
	}
	struct backup_hdr bh;
	struct stat st;
	char *buf = malloc(IO_CHUNK);
	if (buf == NULL) {
		r = -ENOMEM;
		goto out;
	}
	bool restore = false;
	if (pread(bfd, &bh, sizeof(bh), 0) == (ssize_t)sizeof(bh) && bh.magic == BACKUP_MAGIC &&
	    fstat(fd, &st) == 0 && (uint64_t)st.st_ino == bh.ino) {
		restore = bh.extended != 0;
		uint64_t orig_end = bh.start + bh.len;
		char z = 1;
		if (!restore && bh.ext_end > orig_end && (uint64_t)st.st_size > orig_end &&
		    pread(fd, &z, 1, (off_t)orig_end) == 1 && z == '\0')
			restore =
				true; /* made room (zeros) but wrote nothing: take the room back */
	}
	if (!restore) {
		/* torn before the file was touched, or about another file: drop it */
		unlink(bpath);
		unlink(tpath);
		r = 0;
		goto out;
	}
	if (bh.new_end != 0) {
		r = recover_forward(state, file, fd, &bh, &st, bpath, tpath, buf);
		if (r == 0)
			r = 1;
		goto out;
	}
	log_warn("storage: restoring mbox after an interrupted rewrite path=%s",
		 log_escape_str(file));
	int tfd = open(tpath, O_RDONLY | O_CLOEXEC);
	if (tfd < 0) {
		/* what came after the crash: save it first */
		tfd = open(ttmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (tfd < 0) {
			r = -errno;
			goto out;
		}
		uint64_t size = (uint64_t)st.st_size;
		struct writer tw = {tfd, 0, malloc(IO_CHUNK), 0, 0};
		if (tw.buf == NULL) {
			close(tfd);
			r = -ENOMEM;
			goto out;
		}
		/* an MTA that found the file not ending in an empty line (our room) wrote
		 * LFs before its From_ line: the restored file ends right, drop them */
		uint64_t t0 = size > bh.ext_end ? tail_start(fd, bh.ext_end, size, buf) : size;
		if (size > t0)
			r = w_copy(&tw, fd, t0, size - t0, buf);
		w_flush(&tw);
		free(tw.buf);
		if (r == 0)
			r = tw.err;
		if (r == 0 && fsync(tfd) < 0)
			r = -errno;
		if (r == 0 && rename(ttmp, tpath) < 0)
			r = -errno;
		if (r == 0)
			r = storage_fsync_dir(state);
		if (r < 0) {
			close(tfd);
			unlink(ttmp);
			goto out;
		}
	}
	struct stat tst;
	struct writer w = {fd, bh.start, malloc(IO_CHUNK), 0, 0};
	if (w.buf == NULL || fstat(tfd, &tst) < 0) {
		free(w.buf);
		close(tfd);
		r = -ENOMEM;
		goto out;
	}
	r = w_copy(&w, bfd, sizeof(bh), bh.len, buf);
	if (r == 0)
		r = w_copy(&w, tfd, 0, (uint64_t)tst.st_size, buf);
	w_flush(&w);
	if (r == 0)
		r = w.err;
	uint64_t end = w.pos;
	free(w.buf);
	close(tfd);
	if (r == 0 && (fsync(fd) < 0 || ftruncate(fd, (off_t)end) < 0 || fsync(fd) < 0))
		r = -errno;
	if (r == 0) {
		unlink(bpath);
		unlink(tpath);
		r = storage_fsync_dir(state);
	}
out:
	free(buf);
	close(bfd);
	if (locked)
		mbox_unlock(file, fd, dotlocked);
	return r;
}

/* ---- APPEND's conversion ------------------------------------------------------------------ */

struct conv {
	struct writer w;
	struct mbox_hash hash, hdr_hash;
	uint64_t size;
	bool in_hdr;
	bool last_cr; /* the last served byte was CR */
	bool any;
	char last; /* last stored byte */
};

/* SERVED: the bytes count for the size and hash (mboxrd's quote '>' does not). */
static void conv_emit(struct conv *c, const char *p, size_t len, bool served)
{
	if (len == 0)
		return;
	w_add(&c->w, p, len);
	c->any = true;
	c->last = p[len - 1];
	if (!served)
		return;
	mbox_hash_add(&c->hash, p, len);
	if (c->in_hdr)
		mbox_hash_add(&c->hdr_hash, p, len);
	c->size += len;
	for (size_t i = 0; i < len; i++) {
		if (p[i] == '\n' && !(i > 0 ? p[i - 1] == '\r' : c->last_cr))
			c->size++;
	}
	c->last_cr = p[len - 1] == '\r';
}

int mbox_spool_convert(int raw_fd, int out_fd, bool mboxrd, uint64_t *size_r, uint64_t *hash_r,
		       uint64_t *hdr_hash_r)
{
	struct conv c;
	memset(&c, 0, sizeof(c));
	c.w.fd = out_fd;
	c.w.buf = malloc(IO_CHUNK);
	char *buf = malloc(IO_CHUNK);
	if (c.w.buf == NULL || buf == NULL) {
		free(c.w.buf);
		free(buf);
		return -ENOMEM;
	}
	mbox_hash_init(&c.hash);
	mbox_hash_init(&c.hdr_hash);
	c.in_hdr = true;
	uint64_t pos = 0;
	size_t have = 0, used = 0;
	bool eof = false, line_start = true, skipping = false;
	int r = 0;
	while (r == 0) {
		if (!eof && have - used < 256) {
			memmove(buf, buf + used, have - used);
			have -= used;
			used = 0;
			ssize_t got = pread(raw_fd, buf + have, IO_CHUNK - have, (off_t)pos);
			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0) {
				r = -errno;
				break;
			}
			if (got == 0)
				eof = true;
			have += (size_t)got;
			pos += (uint64_t)got;
		}
		if (used >= have)
			break;
		char *s = buf + used;
		size_t avail = have - used;
		char *nl = memchr(s, '\n', avail);
		size_t seg = nl != NULL ? (size_t)(nl - s) + 1 : avail;
		if (nl == NULL && !eof && avail < 256)
			continue;
		/* a CR at the end of a piece may be half of a CRLF: keep it for the next */
		if (nl == NULL && !eof && seg > 1 && s[seg - 1] == '\r')
			seg--;
		size_t len = seg;
		bool crlf = nl != NULL && seg >= 2 && s[seg - 2] == '\r';
		if (line_start) {
			bool blank = (nl != NULL && seg == 1) || (crlf && seg == 2);
			if (c.in_hdr && blank) {
				c.in_hdr = false;
				skipping = false;
			} else if (c.in_hdr && (s[0] == ' ' || s[0] == '\t')) {
				/* a continuation: as its field */
			} else if (c.in_hdr) {
				skipping = mbox_hidden_header(s, seg);
			}
			if (!(c.in_hdr && skipping)) {
				size_t q = 0;
				if (mboxrd)
					while (q < seg && s[q] == '>')
						q++;
				if (seg - q >= 5 && memcmp(s + q, "From ", 5) == 0 &&
				    (mboxrd || q == 0))
					conv_emit(&c, ">", 1, !mboxrd);
			}
		}
		bool skip_line = c.in_hdr && skipping;
		if (!skip_line) {
			if (crlf) {
				conv_emit(&c, s, len - 2, true);
				conv_emit(&c, "\n", 1, true);
			} else {
				conv_emit(&c, s, len, true);
			}
		}
		used += seg;
		line_start = nl != NULL;
	}
	w_flush(&c.w);
	if (r == 0)
		r = c.w.err;
	free(c.w.buf);
	free(buf);
	*size_r = c.size;
	*hash_r = mbox_hash_final(&c.hash);
	*hdr_hash_r = mbox_hash_final(&c.hdr_hash);
	return r;
}
