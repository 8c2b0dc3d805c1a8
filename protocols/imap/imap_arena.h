/* imap_arena — a per-command allocator (STYLE.md rule 8, after Dovecot's cmd->pool).
 *
 * Allocations are never moved and are all freed at once by imap_arena_clear(). The arena
 * holds at most max bytes of allocations; beyond that imap_arena_alloc() returns NULL.
 */
#ifndef MK_IMAP_ARENA_H
#define MK_IMAP_ARENA_H

#include <stddef.h>

struct imap_arena_block;

struct imap_arena {
	struct imap_arena_block *blocks;
	size_t used; /* bytes handed out since the last clear */
	size_t max;
};

void imap_arena_init(struct imap_arena *a, size_t max);
/* n bytes aligned for any type, or NULL (limit reached or ENOMEM). */
void *imap_arena_alloc(struct imap_arena *a, size_t n);
/* A NUL-terminated copy of s[0..len), or NULL. */
char *imap_arena_strndup(struct imap_arena *a, const char *s, size_t len);
/* Wipe and free every allocation; the arena stays usable. */
void imap_arena_clear(struct imap_arena *a);

#endif
