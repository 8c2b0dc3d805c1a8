/* mbox_lock — dotlock + fcntl, the way Debian's MTAs lock a mailbox (mbox_scan.h).
 *
 * Order for writing: PATH.lock first (liblockfile's protocol: O_EXCL create, our pid inside;
 * stale when its pid is gone on this host or it has not changed for 5 minutes), then an
 * fcntl write lock on the whole file. Reading takes an fcntl read lock only (an MTA holds
 * its write lock while it appends, so a read never sees half a message). The fcntl locks are
 * open-file-description locks (F_OFD_SETLK): they conflict with the classic POSIX locks MTAs
 * and mutt take, and closing another descriptor of the file in this process never drops them.
 */
#include "mbox_scan.h"
#include "storage_util.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DOTLOCK_STALE_S 300

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void nap_ms(unsigned ms)
{
	struct timespec ts = {0, (long)ms * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Remove LOCK when it is stale; true when it was removed. */
static bool dotlock_check_stale(const char *lock)
{
	struct stat st;
	if (stat(lock, &st) < 0)
		return errno == ENOENT;
	bool stale = time(NULL) - st.st_mtime > DOTLOCK_STALE_S;
	if (!stale) {
		char buf[32];
		int fd = open(lock, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			ssize_t n = read(fd, buf, sizeof(buf) - 1);
			close(fd);
			if (n > 0) {
				buf[n] = '\0';
				char *end;
				long pid = strtol(buf, &end, 10);
				/* a pid of ours that is gone: a crash of a previous run */
				if (end != buf && pid > 0 && kill((pid_t)pid, 0) < 0 &&
				    errno == ESRCH)
					stale = true;
			}
		}
	}
	if (stale && unlink(lock) == 0) {
		log_warn("storage: removed stale mbox dotlock path=%s", log_escape_str(lock));
		return true;
	}
	return false;
}

/* The lock file appears with our PID already in it: written under a unique name, then
 * linked into place (liblockfile's procedure), so a process killed at any moment never
 * leaves an empty FILE.lock that no one can tell stale from live (it would block the spool,
 * MTAs and mutt included, until it is 5 minutes old). */
static int dotlock_try(const char *lock)
{
	static unsigned seq;
	char tmp[4200], buf[32];
	if (snprintf(tmp, sizeof(tmp), "%s.%d.%u", lock, (int)getpid(), ++seq) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	int r = storage_write_all(fd, buf, (size_t)n);
	close(fd);
	if (r == 0 && link(tmp, lock) < 0) {
		/* link(2) may report failure on NFS when it worked: the link count tells */
		struct stat st;
		int err = errno;
		r = stat(tmp, &st) == 0 && st.st_nlink == 2 ? 0 : err == EEXIST ? -EAGAIN : -err;
	}
	unlink(tmp);
	return r;
}

static int fcntl_try(int fd, bool write)
{
	struct flock fl = {0};
	fl.l_type = write ? F_WRLCK : F_RDLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	return errno == EAGAIN || errno == EACCES ? -EAGAIN : -errno;
}

int mbox_lock(const char *path, int fd, bool write, unsigned timeout_ms, bool *dotlocked_r)
{
	return mbox_lock_wait(path, fd, write, timeout_ms, NULL, dotlocked_r);
}

int mbox_lock_wait(const char *path, int fd, bool write, unsigned timeout_ms,
		   const struct mbox_lock_nap *nap, bool *dotlocked_r)
{
	*dotlocked_r = false;
	char lock[4096];
	int r = storage_path(lock, sizeof(lock), "%s.lock", path);
	if (r < 0)
		return r;
	uint64_t deadline = now_ms() + timeout_ms;
	unsigned wait = 10, stale_retries = 0;
	bool dotlocked = !write;
	for (;;) {
		if (!dotlocked) {
			r = dotlock_try(lock);
			if (r == -EAGAIN && dotlock_check_stale(lock) && stale_retries++ < 3)
				continue; /* gone now: take it at once */
			if (r == -EAGAIN)
				;
			else if (r < 0 && r != -EACCES && r != -EPERM)
				return r;
			/* a spool directory we may not write to: fcntl only (as mutt does) */
			dotlocked = r == 0 || r == -EACCES || r == -EPERM;
			*dotlocked_r = r == 0;
		}
		if (dotlocked) {
			r = fcntl_try(fd, write);
			if (r == 0)
				return 0;
			if (r != -EAGAIN) {
				if (*dotlocked_r)
					unlink(lock);
				*dotlocked_r = false;
				return r;
			}
		}
		if (now_ms() >= deadline) {
			if (*dotlocked_r)
				unlink(lock);
			*dotlocked_r = false;
			return -EBUSY;
		}
		if (nap != NULL)
			nap->fn(nap->arg, wait);
		else
			nap_ms(wait);
		if (wait < 100)
			wait *= 2;
	}
}

void mbox_unlock(const char *path, int fd, bool dotlocked)
{
	struct flock fl = {0};
	fl.l_type = F_UNLCK;
	fl.l_whence = SEEK_SET;
	(void)fcntl(fd, F_OFD_SETLK, &fl);
	if (!dotlocked)
		return;
	char lock[4096];
	if (storage_path(lock, sizeof(lock), "%s.lock", path) == 0)
		unlink(lock);
}
