/* imap_seqset — IMAP sequence sets (RFC 9051 §9 sequence-set, RFC 5182 `$`).
 *
 * A set is a sorted list of disjoint, non-adjacent ranges once resolved. Parsing keeps `*`
 * unresolved (stored as 0, which no sequence number or UID can be); imap_seqset_resolve()
 * replaces it with the mailbox's largest number, turns reversed ranges around (4:2 is 2:4)
 * and merges overlapping and adjacent ranges. `$` alone parses to an empty set marked saved:
 * the session substitutes its SEARCHRES result.
 */
#ifndef MK_IMAP_SEQSET_H
#define MK_IMAP_SEQSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Ranges beyond this many are refused (the command line limit bounds it anyway). */
#define IMAP_SEQSET_MAX_RANGES 100000

struct imap_seq_range {
	uint32_t lo, hi;
};

struct imap_seqset {
	struct imap_seq_range *r;
	size_t n, cap;
	bool saved; /* the text was `$` */
	bool star;  /* the text used `*` */
};

void imap_seqset_init(struct imap_seqset *set);
void imap_seqset_free(struct imap_seqset *set);
/* Empty the set (keeps its storage). */
void imap_seqset_clear(struct imap_seqset *set);
/* Parse s[0..len) into set (cleared first). Returns 0, -EINVAL (not a sequence set: empty,
 * 0, a number over 2^32-1, stray characters) or -ENOMEM/-E2BIG. */
int imap_seqset_parse(struct imap_seqset *set, const char *s, size_t len);
/* Replace `*` by star (the number of messages, or the highest UID; 0 in an empty mailbox),
 * then sort and merge. */
void imap_seqset_resolve(struct imap_seqset *set, uint32_t star);
/* Add a range (lo <= hi, or swapped); the set is unsorted until imap_seqset_normalize. */
int imap_seqset_add(struct imap_seqset *set, uint32_t lo, uint32_t hi);
/* Sort and merge overlapping or adjacent ranges. */
void imap_seqset_normalize(struct imap_seqset *set);
/* A resolved set: is v in it? (binary search) */
bool imap_seqset_contains(const struct imap_seqset *set, uint32_t v);
/* A resolved set: how many numbers it holds. */
uint64_t imap_seqset_count(const struct imap_seqset *set);
/* The largest number in a resolved set (0 when empty). */
uint32_t imap_seqset_max(const struct imap_seqset *set);
/* Write a resolved set as "1:3,7" into out (NUL-terminated, at most size bytes). Returns the
 * full length it needs (excluding the NUL), as snprintf. */
size_t imap_seqset_format(const struct imap_seqset *set, char *out, size_t size);
/* Copy src into dst. 0 or -ENOMEM. */
int imap_seqset_copy(struct imap_seqset *dst, const struct imap_seqset *src);

#endif
