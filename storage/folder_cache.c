/* folder_cache — see folder_cache.h. */
#include "folder_cache.h"

#include "storage_util.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/uio.h>

uint32_t folder_cache_sum(const char *base, size_t blen, const void *data, size_t dlen)
{
	uint32_t h = storage_hash32(base, blen);
	const unsigned char *s = data;
	size_t head = dlen < 16 ? dlen : 16;
	size_t tail = dlen - head < 16 ? dlen - head : 16;
	for (size_t i = 0; i < head; i++)
		h = (h ^ s[i]) * 16777619u;
	for (size_t i = dlen - tail; i < dlen; i++)
		h = (h ^ s[i]) * 16777619u;
	return (h ^ (uint32_t)dlen) * 16777619u;
}

int folder_cache_append(int fd, uint64_t *end, const char *base, size_t base_len, const void *data,
			size_t len, uint32_t *data_off_r)
{
	struct folder_cache_hdr h = {FOLDER_CACHE_MAGIC, (uint32_t)base_len, (uint32_t)len, 0};
	h.sum = folder_cache_sum(base, base_len, data, len);
	uint64_t off = *end;
	size_t total = sizeof(h) + base_len + len;
	if (off + total > FOLDER_CACHE_MAX_BYTES)
		return -EFBIG;
	struct iovec iov[3] = {{&h, sizeof(h)}, {(void *)base, base_len}, {(void *)data, len}};
	ssize_t w = pwritev(fd, iov, 3, (off_t)off);
	if (w < 0)
		return -errno;
	if ((size_t)w != total)
		return -EIO;
	*end = off + total;
	*data_off_r = (uint32_t)(off + sizeof(h) + base_len);
	return 0;
}

int folder_cache_read(int fd, uint64_t end, char **map, size_t *map_len, uint32_t off, uint32_t len,
		      const void **data_r)
{
	if ((uint64_t)off + len > *map_len) {
		/* appended since the file was mapped: map it again */
		if (fd < 0)
			return -ENOENT;
		if (*map != NULL)
			munmap(*map, *map_len);
		*map = NULL;
		*map_len = 0;
		char *m = mmap(NULL, end, PROT_READ, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED)
			return -errno;
		*map = m;
		*map_len = end;
	}
	*data_r = *map + off;
	return 0;
}
