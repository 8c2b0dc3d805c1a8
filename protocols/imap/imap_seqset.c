#include "imap_seqset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void imap_seqset_init(struct imap_seqset *set)
{
	memset(set, 0, sizeof(*set));
}

void imap_seqset_free(struct imap_seqset *set)
{
	free(set->r);
	imap_seqset_init(set);
}

void imap_seqset_clear(struct imap_seqset *set)
{
	set->n = 0;
	set->saved = false;
	set->star = false;
}

int imap_seqset_add(struct imap_seqset *set, uint32_t lo, uint32_t hi)
{
	if (set->n == set->cap) {
		if (set->cap >= IMAP_SEQSET_MAX_RANGES)
			return -E2BIG;
		size_t cap = set->cap ? set->cap * 2 : 8;
		if (cap > IMAP_SEQSET_MAX_RANGES)
			cap = IMAP_SEQSET_MAX_RANGES;
		struct imap_seq_range *r = realloc(set->r, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		set->r = r;
		set->cap = cap;
	}
	if (lo > hi) {
		uint32_t t = lo;
		lo = hi;
		hi = t;
	}
	set->r[set->n].lo = lo;
	set->r[set->n].hi = hi;
	set->n++;
	return 0;
}

/* One seq-number: nz-number or `*` (returned as 0). */
static int parse_number(const char *s, size_t len, size_t *pos, uint32_t *v_r, bool *star)
{
	size_t i = *pos;
	if (i < len && s[i] == '*') {
		*pos = i + 1;
		*v_r = 0;
		*star = true;
		return 0;
	}
	if (i >= len || s[i] < '1' || s[i] > '9')
		return -EINVAL;
	uint64_t v = 0;
	while (i < len && s[i] >= '0' && s[i] <= '9') {
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > UINT32_MAX)
			return -EINVAL;
		i++;
	}
	*pos = i;
	*v_r = (uint32_t)v;
	return 0;
}

int imap_seqset_parse(struct imap_seqset *set, const char *s, size_t len)
{
	imap_seqset_clear(set);
	if (len == 1 && s[0] == '$') {
		set->saved = true;
		return 0;
	}
	size_t pos = 0;
	for (;;) {
		uint32_t lo, hi;
		int r = parse_number(s, len, &pos, &lo, &set->star);
		if (r < 0)
			return r;
		hi = lo;
		if (pos < len && s[pos] == ':') {
			pos++;
			r = parse_number(s, len, &pos, &hi, &set->star);
			if (r < 0)
				return r;
		}
		r = imap_seqset_add(set, lo, hi);
		if (r < 0)
			return r;
		if (pos == len)
			return 0;
		if (s[pos] != ',')
			return -EINVAL;
		pos++;
	}
}

static int range_cmp(const void *a, const void *b)
{
	const struct imap_seq_range *x = a, *y = b;
	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	return x->hi < y->hi ? -1 : x->hi > y->hi;
}

void imap_seqset_normalize(struct imap_seqset *set)
{
	if (set->n == 0)
		return;
	qsort(set->r, set->n, sizeof(set->r[0]), range_cmp);
	size_t o = 0;
	for (size_t i = 1; i < set->n; i++) {
		struct imap_seq_range *cur = &set->r[o];
		if (set->r[i].lo <= cur->hi ||
		    (cur->hi != UINT32_MAX && set->r[i].lo == cur->hi + 1)) {
			if (set->r[i].hi > cur->hi)
				cur->hi = set->r[i].hi;
		} else {
			set->r[++o] = set->r[i];
		}
	}
	set->n = o + 1;
}

void imap_seqset_resolve(struct imap_seqset *set, uint32_t star)
{
	for (size_t i = 0; i < set->n; i++) {
		struct imap_seq_range *r = &set->r[i];
		if (r->lo == 0)
			r->lo = star;
		if (r->hi == 0)
			r->hi = star;
		if (r->lo > r->hi) {
			uint32_t t = r->lo;
			r->lo = r->hi;
			r->hi = t;
		}
	}
	/* In an empty mailbox `*` is 0: drop what became 0 (no message has it). */
	size_t o = 0;
	for (size_t i = 0; i < set->n; i++) {
		if (set->r[i].hi == 0)
			continue;
		if (set->r[i].lo == 0)
			set->r[i].lo = 1;
		set->r[o++] = set->r[i];
	}
	set->n = o;
	imap_seqset_normalize(set);
}

bool imap_seqset_contains(const struct imap_seqset *set, uint32_t v)
{
	size_t lo = 0, hi = set->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v < set->r[mid].lo)
			hi = mid;
		else if (v > set->r[mid].hi)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

uint64_t imap_seqset_count(const struct imap_seqset *set)
{
	uint64_t n = 0;
	for (size_t i = 0; i < set->n; i++)
		n += (uint64_t)set->r[i].hi - set->r[i].lo + 1;
	return n;
}

uint32_t imap_seqset_max(const struct imap_seqset *set)
{
	return set->n ? set->r[set->n - 1].hi : 0;
}

size_t imap_seqset_format(const struct imap_seqset *set, char *out, size_t size)
{
	size_t total = 0;
	for (size_t i = 0; i < set->n; i++) {
		char tmp[32];
		int k;
		if (set->r[i].lo == set->r[i].hi)
			k = snprintf(tmp, sizeof(tmp), "%s%u", i ? "," : "", set->r[i].lo);
		else
			k = snprintf(tmp, sizeof(tmp), "%s%u:%u", i ? "," : "", set->r[i].lo,
				     set->r[i].hi);
		if (size > 0 && total < size - 1) {
			size_t room = size - 1 - total;
			size_t c = (size_t)k < room ? (size_t)k : room;
			memcpy(out + total, tmp, c);
		}
		total += (size_t)k;
	}
	if (size > 0)
		out[total < size - 1 ? total : size - 1] = '\0';
	return total;
}

int imap_seqset_copy(struct imap_seqset *dst, const struct imap_seqset *src)
{
	imap_seqset_clear(dst);
	for (size_t i = 0; i < src->n; i++) {
		int r = imap_seqset_add(dst, src->r[i].lo, src->r[i].hi);
		if (r < 0)
			return r;
	}
	dst->saved = src->saved;
	dst->star = src->star;
	return 0;
}
