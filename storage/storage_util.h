/* storage_util — small file-system and hashing helpers shared by the storage room (internal).
 *
 * Durability rule (mk-helpers, DESIGN.md): write to a temporary file, fsync it, rename it over
 * the target, fsync the directory; only then is a change acknowledged.
 */
#ifndef MK_STORAGE_UTIL_H
#define MK_STORAGE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* FNV-1a, 32 and 64 bits. */
uint32_t storage_hash32(const void *p, size_t len);
uint64_t storage_hash64(const void *p, size_t len, uint64_t seed);

/* fsync the directory DIR. 0 or -errno. */
int storage_fsync_dir(const char *dir);
/* fsync the directory holding PATH (everything before the last '/'). */
int storage_fsync_parent(const char *path);
/* Write LEN bytes to FD, retrying short writes and EINTR. 0 or -errno. */
int storage_write_all(int fd, const void *p, size_t len);
/* Replace PATH with DATA atomically and durably: PATH.tmp, fsync, rename, fsync dir. */
int storage_write_file_atomic(const char *path, const void *data, size_t len);
/* Read the whole of PATH into a malloc'd buffer (NUL-terminated, not counted in *len_r),
 * refusing files larger than MAX (-EFBIG). -ENOENT if missing. */
int storage_read_file(const char *path, size_t max, char **data_r, size_t *len_r);
/* mkdir that treats EEXIST as success. */
int storage_mkdir(const char *path, mode_t mode);
/* Remove PATH and everything below it (no symlink following). 0 or -errno. */
int storage_remove_tree(const char *path);
/* snprintf into buf; -ENAMETOOLONG when it does not fit. */
int storage_path(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A growable byte vector with an upper bound, for building files and lists in memory. */
struct sbuf {
	char *data;
	size_t len;
	size_t cap;
};
int sbuf_add(struct sbuf *b, const void *p, size_t len);
int sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_free(struct sbuf *b);

#endif
