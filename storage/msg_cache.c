/* The cache blob of a parsed message (msg_parse_serialize / msg_parse_deserialize).
 *
 * Layout, all integers little-endian:
 *   "MKMP" u16 version u16 0 u32 total_len u64 psize u64 vsize u32 nparts u32 arena_len
 *   u32 body_len u32 bodystructure_len
 *   nparts part records (CACHE_PART_SIZE octets each, fields in struct mime_part order; the
 *   13th string is the PREVIEW text, the top part's only: version 2; the 14th the References
 *   field, the top part's only, NIL when it has none: version 3)
 *   arena, BODY string, BODYSTRUCTURE string
 *   u32 CRC-32 (IEEE) of everything before it
 * Loading checks every field against the blob and the tree's invariants (preorder indices,
 * ranges nested inside their parents, strings NUL-terminated inside the arena) before any
 * of it is used. */
#include "mime_private.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_MAGIC     "MKMP"
#define CACHE_HDR_SIZE  44
#define CACHE_NSTR      14
#define CACHE_PART_SIZE (5 * 4 + 6 * 8 + CACHE_NSTR * 8 + 3 * 4)
#define CACHE_MAX_PARTS 1000000u
#define CACHE_MAX_DEPTH 4096u

/* CRC-32 (IEEE 802.3, the zlib one) sliced by 8: eight table lookups per 8 octets, so a warm
 * folder of 10,000 blobs is checked in a few milliseconds. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
					  crc_table[0][crc_table[t - 1][i] & 0xff];
}

static uint32_t crc32_calc(const unsigned char *p, size_t n)
{
	pthread_once(&crc_once, crc_init);
	uint32_t c = 0xffffffffu;
	while (n >= 8) {
		uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
				   (uint32_t)p[3] << 24);
		c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		    crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
		    crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
		p += 8;
		n -= 8;
	}
	while (n-- > 0)
		c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static struct mime_str *part_strs(struct mime_part *p, unsigned i)
{
	struct mime_str *s[CACHE_NSTR] = {&p->type,    &p->subtype,     &p->params, &p->id,
					  &p->desc,    &p->enc,         &p->md5,    &p->loc,
					  &p->disp,    &p->disp_params, &p->lang,   &p->envelope,
					  &p->preview, &p->references};
	return s[i];
}

static void part_encode(const struct mime_part *cp, unsigned char *b)
{
	struct mime_part *p = (struct mime_part *)cp;
	put32(b, p->parent);
	put32(b + 4, p->first_child);
	put32(b + 8, p->next);
	put32(b + 12, p->flags);
	put32(b + 16, p->lines);
	b += 20;
	uint64_t o[6] = {p->hdr_poff,  p->hdr_voff,  p->body_poff,
			 p->body_voff, p->body_pend, p->body_vend};
	for (int i = 0; i < 6; i++, b += 8)
		put64(b, o[i]);
	for (unsigned i = 0; i < CACHE_NSTR; i++, b += 8) {
		struct mime_str *s = part_strs(p, i);
		put32(b, s ? s->off : MIME_NONE);
		put32(b + 4, s ? s->len : 0);
	}
	put32(b, p->nparams);
	put32(b + 4, p->ndisp_params);
	put32(b + 8, p->nlang);
}

int msg_parse_serialize(const struct msg_parsed *m, struct buf *out)
{
	size_t blen = buf_used(&m->body), bslen = buf_used(&m->bodystructure);
	size_t total = CACHE_HDR_SIZE + (size_t)m->nparts * CACHE_PART_SIZE + m->arena_len + blen +
		       bslen + 4;
	if (total > buf_room(out) || total > UINT32_MAX)
		return -ENOBUFS;
	unsigned char *b = malloc(total);
	if (!b)
		return -ENOMEM;
	memcpy(b, CACHE_MAGIC, 4);
	b[4] = MSG_PARSE_CACHE_VERSION;
	b[5] = b[6] = b[7] = 0;
	put32(b + 8, (uint32_t)total);
	put64(b + 12, m->psize);
	put64(b + 20, m->vsize);
	put32(b + 28, m->nparts);
	put32(b + 32, m->arena_len);
	put32(b + 36, (uint32_t)blen);
	put32(b + 40, (uint32_t)bslen);
	unsigned char *p = b + CACHE_HDR_SIZE;
	for (uint32_t i = 0; i < m->nparts; i++, p += CACHE_PART_SIZE)
		part_encode(&m->parts[i], p);
	memcpy(p, m->arena, m->arena_len);
	p += m->arena_len;
	if (blen)
		memcpy(p, mime_bp(&m->body), blen);
	p += blen;
	if (bslen)
		memcpy(p, mime_bp(&m->bodystructure), bslen);
	p += bslen;
	put32(p, crc32_calc(b, total - 4));
	int ret = buf_append(out, b, total);
	free(b);
	return ret;
}

static bool str_ok(const struct msg_parsed *m, struct mime_str s)
{
	if (s.off == MIME_NONE)
		return s.len == 0;
	return s.off < m->arena_len && s.len < m->arena_len - s.off &&
	       m->arena[s.off + s.len] == '\0';
}

/* A "a\0b\0..." list of exactly n strings filling s. */
static bool list_ok(const struct msg_parsed *m, struct mime_str s, uint32_t n)
{
	if (s.off == MIME_NONE)
		return n == 0;
	const char *p = m->arena + s.off;
	uint32_t count = 0;
	for (uint32_t i = 0; i < s.len; i++)
		if (p[i] == '\0')
			count++;
	/* every string ends in a NUL inside s.len (str_ok checked the one past it) */
	return count == n && (n == 0 || p[s.len - 1] == '\0');
}

static bool part_ok(const struct msg_parsed *m, uint32_t i, uint32_t *depth)
{
	const struct mime_part *p = &m->parts[i];
	if ((p->flags & ~(uint32_t)MIME_F_ALL) != 0)
		return false;
	if (i == 0) {
		if (p->parent != MIME_NONE || !(p->flags & MIME_F_MESSAGE) ||
		    p->next != MIME_NONE || p->hdr_poff != 0 || p->hdr_voff != 0 ||
		    p->body_pend != m->psize || p->body_vend != m->vsize)
			return false;
		depth[0] = 0;
	} else {
		if (p->parent >= i)
			return false;
		const struct mime_part *up = &m->parts[p->parent];
		/* a part may end up to one line end past its parent: when an empty body is
		 * followed by the parent's delimiter, the header's last CRLF is the one the
		 * parent gives to that delimiter */
		if (p->hdr_poff < up->body_poff || p->body_pend > up->body_pend + 2 ||
		    p->hdr_voff < up->body_voff || p->body_vend > up->body_vend + 2)
			return false;
		depth[i] = depth[p->parent] + 1;
		if (depth[i] > CACHE_MAX_DEPTH)
			return false;
	}
	if (p->first_child != MIME_NONE && (p->first_child <= i || p->first_child >= m->nparts ||
					    m->parts[p->first_child].parent != i))
		return false;
	if (p->next != MIME_NONE &&
	    (p->next <= i || p->next >= m->nparts || m->parts[p->next].parent != p->parent))
		return false;
	if (p->hdr_poff > p->body_poff || p->body_poff > p->body_pend ||
	    p->hdr_voff > p->body_voff || p->body_voff > p->body_vend || p->body_pend > m->psize ||
	    p->body_vend > m->vsize)
		return false;
	if (p->body_vend - p->body_voff < p->body_pend - p->body_poff ||
	    p->lines > p->body_vend - p->body_voff)
		return false;
	if ((p->flags & MIME_F_RFC822) && p->first_child != MIME_NONE &&
	    !(m->parts[p->first_child].flags & MIME_F_MESSAGE))
		return false;
	for (unsigned k = 0; k < CACHE_NSTR; k++)
		if (!str_ok(m, *part_strs((struct mime_part *)p, k)))
			return false;
	/* version 2: the top part always has its preview, no other part one */
	if ((i == 0) != (p->preview.off != MIME_NONE))
		return false;
	/* version 3: only the top part may have References */
	if (i != 0 && p->references.off != MIME_NONE)
		return false;
	return list_ok(m, p->params, 2 * p->nparams) &&
	       list_ok(m, p->disp_params, 2 * p->ndisp_params) && list_ok(m, p->lang, p->nlang) &&
	       (!(p->flags & MIME_F_MESSAGE) || p->envelope.off != MIME_NONE);
}

int msg_parse_deserialize(const void *data, size_t len, uint64_t expect_size,
			  struct msg_parsed **msg_r)
{
	const unsigned char *b = data;
	*msg_r = NULL;
	if (len < CACHE_HDR_SIZE + 4 || memcmp(b, CACHE_MAGIC, 4) != 0 ||
	    b[4] != MSG_PARSE_CACHE_VERSION || b[5] || b[6] || b[7] || get32(b + 8) != len)
		return -EBADMSG;
	if (get32(b + len - 4) != crc32_calc(b, len - 4))
		return -EBADMSG;
	uint64_t psize = get64(b + 12), vsize = get64(b + 20);
	uint32_t nparts = get32(b + 28), alen = get32(b + 32);
	uint32_t blen = get32(b + 36), bslen = get32(b + 40);
	if (nparts == 0 || nparts > CACHE_MAX_PARTS || vsize < psize ||
	    (expect_size != 0 && vsize != expect_size))
		return -EBADMSG;
	uint64_t need = (uint64_t)CACHE_HDR_SIZE + (uint64_t)nparts * CACHE_PART_SIZE + alen +
			blen + bslen + 4;
	if (need != len || bslen == 0 || blen == 0)
		return -EBADMSG;

	struct msg_parsed *m = calloc(1, sizeof(*m));
	uint32_t *depth = calloc(nparts, sizeof(*depth));
	int ret = -ENOMEM;
	if (!m || !depth)
		goto fail;
	m->parts = calloc(nparts, sizeof(*m->parts));
	m->arena = malloc(alen ? alen : 1);
	buf_init(&m->body, blen);
	buf_init(&m->bodystructure, bslen);
	if (!m->parts || !m->arena)
		goto fail;
	m->nparts = nparts;
	m->arena_len = alen;
	m->psize = psize;
	m->vsize = vsize;
	const unsigned char *p = b + CACHE_HDR_SIZE;
	for (uint32_t i = 0; i < nparts; i++, p += CACHE_PART_SIZE) {
		struct mime_part *pt = &m->parts[i];
		const unsigned char *q = p;
		pt->parent = get32(q);
		pt->first_child = get32(q + 4);
		pt->next = get32(q + 8);
		pt->flags = get32(q + 12);
		pt->lines = get32(q + 16);
		q += 20;
		uint64_t *o[6] = {&pt->hdr_poff,  &pt->hdr_voff,  &pt->body_poff,
				  &pt->body_voff, &pt->body_pend, &pt->body_vend};
		for (int k = 0; k < 6; k++, q += 8)
			*o[k] = get64(q);
		for (unsigned k = 0; k < CACHE_NSTR; k++, q += 8) {
			struct mime_str *s = part_strs(pt, k);
			if (s) {
				s->off = get32(q);
				s->len = get32(q + 4);
			} else if (get32(q) != MIME_NONE || get32(q + 4) != 0) {
				ret = -EBADMSG;
				goto fail;
			}
		}
		pt->nparams = get32(q);
		pt->ndisp_params = get32(q + 4);
		pt->nlang = get32(q + 8);
	}
	memcpy(m->arena, p, alen);
	p += alen;
	ret = -EBADMSG;
	for (uint32_t i = 0; i < nparts; i++)
		if (!part_ok(m, i, depth))
			goto fail;
	ret = buf_append(&m->body, p, blen);
	if (ret == 0)
		ret = buf_append(&m->bodystructure, p + blen, bslen);
	if (ret < 0)
		goto fail;
	free(depth);
	*msg_r = m;
	return 0;
fail:
	free(depth);
	msg_parsed_free(&m);
	return ret;
}
