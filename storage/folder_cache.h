/* folder_cache — the per-folder cache file both back-ends keep (storage room only).
 *
 * The file is a sequence of records: a header, the message's stable base name, and an opaque
 * blob (the parsed-message cache of msg_cache.c). A newer record for the same base name
 * supersedes older ones; a torn or foreign record fails its check and ends the valid part.
 * The owner (maildir.c, mbox.c) keeps the fd, the read-only mapping and the end offset.
 */
#ifndef MK_FOLDER_CACHE_H
#define MK_FOLDER_CACHE_H

#include <stddef.h>
#include <stdint.h>

#define FOLDER_CACHE_MAGIC     0x314b434du /* "MCK1" */
#define FOLDER_CACHE_MAX_BYTES (1u << 31)

struct folder_cache_hdr {
	uint32_t magic;
	uint32_t base_len;
	uint32_t data_len;
	uint32_t sum; /* folder_cache_sum */
};

/* A record's check covers its framing: the base name, the length and the first and last 16
 * bytes of the blob (a torn or misplaced record fails it). Hashing every blob would make a
 * warm open of 10,000 messages read all 5 MB of them; the blob's own integrity is its
 * owner's (the MIME parser's blob carries a CRC-32 checked when it is loaded). */
uint32_t folder_cache_sum(const char *base, size_t blen, const void *data, size_t dlen);

/* Write one record at *END of FD (BASE, then DATA); *END moves past it and *DATA_OFF_R is
 * where DATA starts. -EFBIG past FOLDER_CACHE_MAX_BYTES, else 0 or -errno. */
int folder_cache_append(int fd, uint64_t *end, const char *base, size_t base_len, const void *data,
			size_t len, uint32_t *data_off_r);

/* Point *DATA_R at LEN bytes at OFF, mapping FD again up to END when *MAP (of *MAP_LEN bytes)
 * does not reach them (records appended since). -ENOENT when FD < 0. */
int folder_cache_read(int fd, uint64_t end, char **map, size_t *map_len, uint32_t off, uint32_t len,
		      const void **data_r);

#endif
