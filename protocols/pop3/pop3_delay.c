#include "pop3_delay.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

#define DELAY_BUCKETS 1024

struct delay_entry {
	struct delay_entry *next;
	uint64_t last; /* time of the last login */
	char user[];
};

static struct delay_entry *delay_table[DELAY_BUCKETS];
static size_t delay_count;

static unsigned delay_hash(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h % DELAY_BUCKETS;
}

static struct delay_entry *delay_find(const char *user)
{
	for (struct delay_entry *e = delay_table[delay_hash(user)]; e; e = e->next)
		if (strcmp(e->user, user) == 0)
			return e;
	return NULL;
}

bool pop3_delay_allowed(const char *user, unsigned delay, uint64_t now, unsigned *wait_r)
{
	struct delay_entry *e = delay_find(user);
	if (delay == 0 || e == NULL || now >= e->last + delay)
		return true;
	*wait_r = (unsigned)(e->last + delay - now);
	return false;
}

/* Drop every entry whose delay has run out. */
static void delay_prune(unsigned delay, uint64_t now)
{
	for (size_t b = 0; b < DELAY_BUCKETS; b++) {
		struct delay_entry **p = &delay_table[b];
		while (*p) {
			struct delay_entry *e = *p;
			if (now >= e->last + delay) {
				*p = e->next;
				free(e);
				delay_count--;
			} else {
				p = &e->next;
			}
		}
	}
}

void pop3_delay_record(const char *user, unsigned delay, uint64_t now)
{
	if (delay == 0)
		return;
	struct delay_entry *e = delay_find(user);
	if (e != NULL) {
		e->last = now;
		return;
	}
	if (delay_count >= POP3_DELAY_MAX_USERS)
		delay_prune(delay, now);
	if (delay_count >= POP3_DELAY_MAX_USERS) {
		log_warn("pop3 event=login_delay_table_full users=%zu", delay_count);
		return;
	}
	size_t len = strlen(user);
	e = malloc(sizeof(*e) + len + 1);
	if (e == NULL)
		return;
	memcpy(e->user, user, len + 1);
	e->last = now;
	unsigned b = delay_hash(user);
	e->next = delay_table[b];
	delay_table[b] = e;
	delay_count++;
}

void pop3_delay_clear(void)
{
	for (size_t b = 0; b < DELAY_BUCKETS; b++) {
		while (delay_table[b]) {
			struct delay_entry *e = delay_table[b];
			delay_table[b] = e->next;
			free(e);
		}
	}
	delay_count = 0;
}
