#include "imap_arena.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_BLOCK_SIZE 1024

struct imap_arena_block {
	struct imap_arena_block *next;
	size_t size, off;
	alignas(max_align_t) char data[];
};

void imap_arena_init(struct imap_arena *a, size_t max)
{
	a->blocks = NULL;
	a->used = 0;
	a->max = max;
}

void *imap_arena_alloc(struct imap_arena *a, size_t n)
{
	const size_t align = alignof(max_align_t);
	size_t need = (n + align - 1) & ~(align - 1);
	if (need < n || need > a->max - a->used || a->used > a->max)
		return NULL;
	struct imap_arena_block *b = a->blocks;
	if (!b || b->size - b->off < need) {
		size_t size = need > ARENA_BLOCK_SIZE ? need : ARENA_BLOCK_SIZE;
		b = malloc(sizeof(*b) + size);
		if (!b)
			return NULL;
		b->size = size;
		b->off = 0;
		if (a->blocks && need > ARENA_BLOCK_SIZE) {
			/* A big one-off block goes behind the current one so its free tail
			 * stays usable. */
			b->next = a->blocks->next;
			a->blocks->next = b;
		} else {
			b->next = a->blocks;
			a->blocks = b;
		}
	}
	void *p = b->data + b->off;
	b->off += need;
	a->used += need;
	return p;
}

char *imap_arena_strndup(struct imap_arena *a, const char *s, size_t len)
{
	if (len + 1 == 0)
		return NULL;
	char *p = imap_arena_alloc(a, len + 1);
	if (!p)
		return NULL;
	if (len)
		memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

void imap_arena_clear(struct imap_arena *a)
{
	struct imap_arena_block *b = a->blocks;
	while (b) {
		struct imap_arena_block *next = b->next;
		/* Tokens may be passwords (LOGIN): wipe what was used. */
		explicit_bzero(b->data, b->off);
		free(b);
		b = next;
	}
	a->blocks = NULL;
	a->used = 0;
}
