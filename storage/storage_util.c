#include "storage_util.h"
#include "storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

uint32_t storage_hash32(const void *p, size_t len)
{
	const unsigned char *s = p;
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++) {
		h ^= s[i];
		h *= 16777619u;
	}
	return h;
}

uint64_t storage_hash64(const void *p, size_t len, uint64_t seed)
{
	const unsigned char *s = p;
	uint64_t h = 14695981039346656037ull ^ seed;
	for (size_t i = 0; i < len; i++) {
		h ^= s[i];
		h *= 1099511628211ull;
	}
	/* final avalanche (splitmix64) so short inputs spread over all bits */
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebull;
	h ^= h >> 31;
	return h;
}

int storage_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return r;
}

int storage_fsync_parent(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	if (slash == NULL)
		return storage_fsync_dir(".");
	size_t n = (size_t)(slash - path);
	if (n == 0)
		return storage_fsync_dir("/");
	if (n >= sizeof(dir))
		return -ENAMETOOLONG;
	memcpy(dir, path, n);
	dir[n] = '\0';
	return storage_fsync_dir(dir);
}

int storage_write_all(int fd, const void *p, size_t len)
{
	const char *s = p;
	while (len > 0) {
		ssize_t w = write(fd, s, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		s += w;
		len -= (size_t)w;
	}
	return 0;
}

int storage_write_file_atomic(const char *path, const void *data, size_t len)
{
	char tmp[4096];
	int r = storage_path(tmp, sizeof(tmp), "%s.tmp", path);
	if (r < 0)
		return r;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	r = storage_write_all(fd, data, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	return storage_fsync_parent(path);
}

int storage_read_file(const char *path, size_t max, char **data_r, size_t *len_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	if ((uint64_t)st.st_size > max) {
		close(fd);
		return -EFBIG;
	}
	size_t cap = (size_t)st.st_size + 1, len = 0;
	char *data = malloc(cap);
	if (data == NULL) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		if (len + 1 >= cap) {
			if (cap > max + 1) {
				free(data);
				close(fd);
				return -EFBIG;
			}
			char *n = realloc(data, cap * 2);
			if (n == NULL) {
				free(data);
				close(fd);
				return -ENOMEM;
			}
			data = n;
			cap *= 2;
		}
		ssize_t got = read(fd, data + len, cap - 1 - len);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			int e = -errno;
			free(data);
			close(fd);
			return e;
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	close(fd);
	if (len > max) {
		free(data);
		return -EFBIG;
	}
	data[len] = '\0';
	*data_r = data;
	*len_r = len;
	return 0;
}

int storage_mkdir(const char *path, mode_t mode)
{
	if (mkdir(path, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int remove_tree_at(int parent, const char *name, int depth)
{
	if (depth > 64)
		return -ELOOP;
	if (unlinkat(parent, name, 0) == 0)
		return 0;
	if (errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (d == NULL) {
		int e = -errno;
		close(fd);
		return e;
	}
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		r = remove_tree_at(dirfd(d), de->d_name, depth + 1);
		if (r < 0)
			break;
	}
	closedir(d);
	if (r < 0)
		return r;
	if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int storage_remove_tree(const char *path)
{
	return remove_tree_at(AT_FDCWD, path, 0);
}

int storage_path(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return 0;
}

int sbuf_add(struct sbuf *b, const void *p, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + len + 1)
			cap *= 2;
		char *n = realloc(b->data, cap);
		if (n == NULL)
			return -ENOMEM;
		b->data = n;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
	char small[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n < sizeof(small))
		return sbuf_add(b, small, (size_t)n);
	char *big = malloc((size_t)n + 1);
	if (big == NULL)
		return -ENOMEM;
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	int r = sbuf_add(b, big, (size_t)n);
	free(big);
	return r;
}

void sbuf_free(struct sbuf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

const char *storage_error_text(int err)
{
	switch (err) {
	case 0:
		return "OK";
	case -ENOENT:
		return "No such mailbox or message";
	case -EEXIST:
		return "Mailbox already exists";
	case -EINVAL:
		return "Invalid name or argument";
	case -ENOTEMPTY:
		return "Mailbox has children, delete them first";
	case -EPERM:
	case -EACCES:
		return "Operation not permitted on this mailbox";
	case -EBUSY:
		return "Mailbox is in use by another session";
	case -EAGAIN:
		return "Mailbox is busy, try again";
	case -ENOSPC:
		return "Too many keywords or no space left";
	case -EDQUOT:
		return "Quota exceeded";
	case -EFBIG:
		return "Message too large";
	case -ENAMETOOLONG:
		return "Name too long";
	case -EPROTONOSUPPORT:
		return "Mail format not supported";
	case -ERANGE:
		return "No such message";
	case -EALREADY:
		return "Message already deleted";
	default:
		return "Internal error occurred. Refer to server log for more information.";
	}
}
