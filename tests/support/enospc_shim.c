/* An LD_PRELOAD shim for the consistency tests (issue 8): a full disk on demand.
 *
 * While the file named by the environment variable MK_ENOSPC_CONTROL exists, every write,
 * pwrite, writev, pwritev, fsync, fdatasync and fallocate on a regular file fails with ENOSPC
 * and writes nothing. Sockets, pipes, terminals and directories are left alone, so the
 * daemon still talks to its clients, logs, and fsyncs directories. When the control file goes,
 * space "returns". Without MK_ENOSPC_CONTROL the shim changes nothing.
 *
 * glibc's stdio calls write() internally without going through the PLT, so an fwrite is not
 * failed here; the fsync/fflush that must follow it to make it durable is (fsync is).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* The interposed functions are exported symbols without a header of their own. */
ssize_t write(int fd, const void *buf, size_t n);
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off);
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off);
ssize_t writev(int fd, const struct iovec *iov, int cnt);
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off);
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off);
int fsync(int fd);
int fdatasync(int fd);
int fallocate(int fd, int mode, off_t off, off_t len);
int posix_fallocate(int fd, off_t off, off_t len);

#define NEXT(type, name) ((type)dlsym(RTLD_NEXT, name))

/* With MK_ENOSPC_VERBOSE set, each refused call is reported on stderr (a pipe or terminal,
 * which the shim never fails): "enospc_shim: CALL PATH". */
static void enospc_report(int fd, const char *call)
{
	if (getenv("MK_ENOSPC_VERBOSE") == NULL)
		return;
	char link[64], path[512], line[640];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof(path) - 1);
	path[n < 0 ? 0 : n] = '\0';
	int len = snprintf(line, sizeof(line), "enospc_shim: %s %s\n", call, path);
	if (len > 0) {
		ssize_t w = NEXT(ssize_t(*)(int, const void *, size_t), "write")(
			2, line, (size_t)len < sizeof(line) ? (size_t)len : sizeof(line) - 1);
		(void)w;
	}
}

/* True when the disk is "full" and FD is a regular file (then errno is ENOSPC). */
static int enospc_now(int fd, const char *call)
{
	const char *ctl = getenv("MK_ENOSPC_CONTROL");
	if (ctl == NULL || *ctl == '\0')
		return 0;
	int saved = errno;
	struct stat st;
	int full = stat(ctl, &st) == 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
	errno = saved;
	if (full) {
		enospc_report(fd, call);
		errno = ENOSPC;
	}
	return full;
}

ssize_t write(int fd, const void *buf, size_t n)
{
	if (enospc_now(fd, "write")) {
		return -1;
	}
	return NEXT(ssize_t(*)(int, const void *, size_t), "write")(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	if (enospc_now(fd, "pwrite")) {
		return -1;
	}
	return NEXT(ssize_t(*)(int, const void *, size_t, off_t), "pwrite")(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	if (enospc_now(fd, "pwrite64")) {
		return -1;
	}
	return NEXT(ssize_t(*)(int, const void *, size_t, off_t), "pwrite64")(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	if (enospc_now(fd, "writev")) {
		return -1;
	}
	return NEXT(ssize_t(*)(int, const struct iovec *, int), "writev")(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	if (enospc_now(fd, "pwritev")) {
		return -1;
	}
	return NEXT(ssize_t(*)(int, const struct iovec *, int, off_t), "pwritev")(fd, iov, cnt,
										  off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	if (enospc_now(fd, "pwritev64")) {
		return -1;
	}
	return NEXT(ssize_t(*)(int, const struct iovec *, int, off_t), "pwritev64")(fd, iov, cnt,
										    off);
}

int fsync(int fd)
{
	if (enospc_now(fd, "fsync")) {
		return -1;
	}
	return NEXT(int (*)(int), "fsync")(fd);
}

int fdatasync(int fd)
{
	if (enospc_now(fd, "fdatasync")) {
		return -1;
	}
	return NEXT(int (*)(int), "fdatasync")(fd);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	if (enospc_now(fd, "fallocate")) {
		return -1;
	}
	return NEXT(int (*)(int, int, off_t, off_t), "fallocate")(fd, mode, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len)
{
	if (enospc_now(fd, "posix_fallocate"))
		return ENOSPC;
	return NEXT(int (*)(int, off_t, off_t), "posix_fallocate")(fd, off, len);
}
