/* imap_sort — SORT and UID SORT (RFC 5256) with ESORT (RFC 5267: RETURN (MIN MAX ALL COUNT),
 * and SAVE with SEARCHRES), SORT=DISPLAY (RFC 5957), and the message collector THREAD shares.
 *
 * A SORT or THREAD runs in two resumable phases, each giving the loop back every
 * IMAP_SLICE_NS: the search (imap_search.c's program, the same keys and charsets as SEARCH),
 * then each matching message's keys from its parsed structure (view_msg_parsed: the folder's
 * cache, parsed once otherwise): the ENVELOPE for Date, Subject, From, To, Cc, Message-ID,
 * In-Reply-To, and the References field the parser keeps next to it; no message file is
 * opened once the folder's cache has it. The ordering itself (qsort, or the thread algorithm) then
 * runs in one go.
 *
 * Keys (RFC 5256 §3, RFC 5957): ARRIVAL the internal date; DATE the sent date (the internal
 * date when Date is missing or unparsable), compared in UTC; SIZE RFC822.SIZE; SUBJECT the
 * base subject; FROM, TO, CC the addr-mailbox of the first address; DISPLAYFROM, DISPLAYTO its
 * display name, or mailbox@host when it has none; strings compared with i;unicode-casemap;
 * a missing value is the empty string. Ties keep mailbox order (RFC 5256 §3).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_internal.h"
#include "imap_sort.h"
#include "log.h"
#include "msg_parse.h"
#include "unicode_casemap.h"

/* At most this many References ids are kept per message, the last ones (nearest parents):
 * loop checks walk parent chains, so the bound keeps THREAD linear in practice. */
#define SORT_MAX_REFS     256
#define SORT_MAX_CRITERIA 16

/* ---- the collector ---- */

void imap_sort_refuse(struct imap_cmd *cmd, const char *status, const char *text)
{
	log_info("conn=%llu event=imap_sort_refused cmd=%s status=%s reason=%s",
		 (unsigned long long)conn_id(cmd->s->conn), cmd->def ? cmd->def->name : "-", status,
		 log_escape_str(text));
	imap_cmd_reply(cmd, status, "%s", text);
}

static void sort_msg_clear(struct imap_sort_msg *m)
{
	for (int i = 0; i < SORT_NSTR; i++)
		free(m->str[i]);
	free(m->message_id);
	free(m->refs);
}

static void collect_destroy(struct imap_sort_collect *c)
{
	imap_search_free(&c->search);
	for (size_t i = 0; i < c->n; i++)
		sort_msg_clear(&c->msgs[i]);
	free(c->msgs);
	imap_env_keys_clear(&c->keys);
	buf_clear(&c->out);
	free(c->order_arg);
	free(c->work);
	free(c);
}

void imap_sort_collect_free(struct imap_sort_collect **cp)
{
	struct imap_sort_collect *c = *cp;
	*cp = NULL;
	if (!c)
		return;
	if (c->order_state == 1) {
		c->s = NULL; /* the order still runs on the pool: order_done frees it */
		return;
	}
	collect_destroy(c);
}

void imap_sort_collect_set_order(struct imap_sort_collect *c, imap_sort_order_fn *fn, void *arg)
{
	free(c->order_arg);
	c->order_fn = fn;
	c->order_arg = arg;
}

bool imap_async_sort = true;

static void order_work(uv_work_t *w)
{
	struct imap_sort_collect *c = w->data;
	c->order_fn(c);
}

static void order_done(uv_work_t *w, int status)
{
	struct imap_sort_collect *c = w->data;
	c->order_state = 2;
	if (status < 0 && c->order_err == 0)
		c->order_err = status;
	if (c->s == NULL) {
		collect_destroy(c); /* the command went away meanwhile */
		return;
	}
	if (!conn_is_closing(c->s->conn))
		imap_session_wakeup(c->s);
}

static int collect_match(void *ctx, uint32_t seq, const struct mail_info *info)
{
	struct imap_sort_collect *c = ctx;
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 256;
		struct imap_sort_msg *m = realloc(c->msgs, cap * sizeof(*m));
		if (!m)
			return -ENOMEM;
		c->msgs = m;
		c->cap = cap;
	}
	struct imap_sort_msg *m = &c->msgs[c->n++];
	memset(m, 0, sizeof(*m));
	m->seq = seq;
	m->uid = info->uid;
	m->size = info->size;
	m->arrival = m->date = info->internal_date;
	if (info->modseq > c->highest_modseq)
		c->highest_modseq = info->modseq;
	return 0;
}

int imap_sort_collect_start(struct imap_cmd *cmd, const struct imap_arg *args, unsigned need,
			    struct imap_sort_collect **c_r)
{
	const char *cs;
	size_t len;
	if (!imap_arg_get_astring(args, &cs, &len)) {
		imap_sort_refuse(cmd, "BAD", "Missing charset.");
		return -EINVAL;
	}
	if (cmd->s->utf8 && strcasecmp(cs, "UTF-8") != 0) {
		/* RFC 6855 erratum 4029: after UTF8=ACCEPT only UTF-8 */
		imap_sort_refuse(cmd, "BAD", "Only CHARSET UTF-8 after ENABLE UTF8=ACCEPT.");
		return -EINVAL;
	}
	if (strcasecmp(cs, "UTF-8") != 0 && strcasecmp(cs, "US-ASCII") != 0) {
		imap_sort_refuse(cmd, "NO", "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.");
		return -EINVAL;
	}
	struct imap_sort_collect *c = calloc(1, sizeof(*c));
	if (!c) {
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return -ENOMEM;
	}
	imap_env_keys_init(&c->keys);
	buf_init(&c->out, 0);
	c->s = cmd->s;
	c->need = need;
	const char *error;
	int r = imap_search_parse(cmd->s, args + 1, &c->search, &error);
	if (r < 0) {
		imap_sort_refuse(cmd, r == -ENOMEM ? "NO" : "BAD", error);
		imap_sort_collect_free(&c);
		return r;
	}
	*c_r = c;
	return 0;
}

/* The comparison form of S[0..len) as a NUL-terminated malloc'd string. */
static int casemap_dup(const char *s, size_t len, char **out_r)
{
	struct buf b;
	buf_init(&b, len * 18 + 16); /* NFKD expands a character at most 18 times */
	int r = unicode_casemap(s, len, &b);
	if (r == 0)
		r = buf_append(&b, "", 1);
	if (r == 0) {
		*out_r = strdup(buf_peek(&b));
		r = *out_r ? 0 : -ENOMEM;
	}
	buf_clear(&b);
	return r;
}

static const char *bp(const struct buf *b)
{
	return b->data ? b->data + b->off : "";
}

/* Message-ID (first id) and the parent chain: References' ids (the last SORT_MAX_REFS), or
 * the first id of In-Reply-To when References has none. All from the parsed (cached) data. */
static int load_refs(struct imap_sort_msg *m, const struct msg_parsed *p,
		     const struct imap_env_keys *k)
{
	const char *id;
	size_t idlen, pos = 0;
	if (imap_msgid_next(bp(&k->message_id), buf_used(&k->message_id), &pos, &id, &idlen) &&
	    !(m->message_id = strndup(id, idlen)))
		return -ENOMEM;
	size_t tlen;
	const char *text = msg_parsed_references(p, &tlen);
	int r = imap_msgid_list(text, text ? tlen : 0, SORT_MAX_REFS, &m->refs, &m->nrefs);
	if (r == 0 && m->nrefs == 0) {
		/* no id in References: the first of In-Reply-To */
		text = bp(&k->in_reply_to);
		pos = 0;
		if (imap_msgid_next(text, buf_used(&k->in_reply_to), &pos, &id, &idlen))
			r = imap_msgid_list(text, pos, 1, &m->refs, &m->nrefs);
	}
	return r;
}

/* The keys NEED asks for of message M. A message gone meanwhile keeps empty keys. */
static int load_keys(struct imap_session *s, struct imap_sort_collect *c, struct imap_sort_msg *m)
{
	struct msg_parsed *p = NULL;
	int r = view_msg_parsed(s->view, m->seq, &p);
	if (r < 0)
		return r == -ENOMEM ? r : 0;
	size_t elen;
	const char *env = msg_parsed_envelope(p, &elen);
	struct imap_env_keys *k = &c->keys;
	r = imap_env_keys_parse(env, elen, k);
	if (r < 0) {
		msg_parsed_free(&p);
		return r == -ENOMEM ? r : 0;
	}
	int64_t t;
	if ((c->need & SORT_NEED_DATE) && buf_used(&k->date) &&
	    imap_sent_date_parse(bp(&k->date), buf_used(&k->date), &t))
		m->date = t;
	if (c->need & (1u << SORT_SUBJECT)) {
		struct buf base;
		buf_init(&base, 256 * 1024);
		r = imap_base_subject(bp(&k->subject), buf_used(&k->subject), &base, &m->reply);
		if (r == 0)
			r = casemap_dup(bp(&base), buf_used(&base), &m->str[SORT_SUBJECT]);
		buf_clear(&base);
	}
	static const struct {
		int str;
		int addr;
		bool display;
	} addr_keys[] = {
		{SORT_FROM, IMAP_ENV_FROM, false},   {SORT_TO, IMAP_ENV_TO, false},
		{SORT_CC, IMAP_ENV_CC, false},       {SORT_DISPLAYFROM, IMAP_ENV_FROM, true},
		{SORT_DISPLAYTO, IMAP_ENV_TO, true},
	};
	for (size_t i = 0; i < sizeof(addr_keys) / sizeof(addr_keys[0]) && r == 0; i++) {
		if (!(c->need & (1u << addr_keys[i].str)))
			continue;
		const struct buf *v = addr_keys[i].display ? &k->display[addr_keys[i].addr]
							   : &k->mailbox[addr_keys[i].addr];
		r = casemap_dup(bp(v), buf_used(v), &m->str[addr_keys[i].str]);
	}
	if (r == 0 && (c->need & SORT_NEED_REFS))
		r = load_refs(m, p, k);
	msg_parsed_free(&p);
	return r == -ENOBUFS ? 0 : r;
}

int imap_sort_collect_run(struct imap_cmd *cmd, struct imap_sort_collect *c)
{
	struct imap_session *s = cmd->s;
	if (c->search) {
		int r = imap_search_step(c->search, collect_match, c);
		if (r == 0)
			return 0;
		c->modseq = imap_search_has_modseq(c->search);
		imap_search_free(&c->search);
		if (r < 0) {
			imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
			return r;
		}
	}
	uint64_t start = uv_hrtime();
	bool progress = false;
	while (c->next < c->n) {
		if (progress && uv_hrtime() - start >= IMAP_SLICE_NS)
			return 0;
		progress = true;
		int r = load_keys(s, c, &c->msgs[c->next++]);
		if (r < 0) {
			log_warn("conn=%llu event=imap_sort_keys error=%d",
				 (unsigned long long)conn_id(s->conn), r);
			imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
			return r;
		}
	}
	/* The order (a sort or the threading: O(n log n), 200 ms for 50,000 messages) runs on
	 * the thread pool so the loop serves the other connections meanwhile (DESIGN.md). */
	if (c->order_state == 0 && c->order_fn) {
		uv_work_t *w = !imap_async_sort ? NULL : c->work ? c->work : calloc(1, sizeof(*w));
		c->work = w;
		c->order_state = 1;
		if (w) {
			w->data = c;
			if (uv_queue_work(conn_loop(s->conn), w, order_work, order_done) == 0)
				return 2;
		}
		c->order_fn(c); /* no pool: here, rather than not at all */
		c->order_state = 2;
	}
	if (c->order_state == 1)
		return 2;
	if (c->order_err < 0) {
		log_warn("conn=%llu event=imap_sort_order error=%d",
			 (unsigned long long)conn_id(s->conn), c->order_err);
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return c->order_err;
	}
	return 1;
}

/* ---- SORT ---- */

struct sort_crit {
	int key; /* SORT_* string index, or one of the numeric keys below */
	bool reverse;
};
enum { SORTK_ARRIVAL = SORT_NSTR, SORTK_DATE, SORTK_SIZE };

static const struct {
	const char *name;
	int key;
} sort_keys[] = {
	{"ARRIVAL", SORTK_ARRIVAL},
	{"CC", SORT_CC},
	{"DATE", SORTK_DATE},
	{"DISPLAYFROM", SORT_DISPLAYFROM},
	{"DISPLAYTO", SORT_DISPLAYTO},
	{"FROM", SORT_FROM},
	{"SIZE", SORTK_SIZE},
	{"SUBJECT", SORT_SUBJECT},
	{"TO", SORT_TO},
};

enum sort_ret {
	SRET_MIN = 1 << 0,
	SRET_MAX = 1 << 1,
	SRET_ALL = 1 << 2,
	SRET_COUNT = 1 << 3,
	SRET_SAVE = 1 << 4,
};

/* What the sort reads on the thread pool (owned by the collector). */
struct sort_order {
	struct sort_crit crit[SORT_MAX_CRITERIA];
	unsigned ncrit;
};

struct sort_cmd {
	struct imap_sort_collect *collect;
	struct sort_crit crit[SORT_MAX_CRITERIA];
	unsigned ncrit;
	unsigned ret;
	bool esearch;
};

static void sort_cmd_free(struct imap_cmd *cmd)
{
	struct sort_cmd *sc = cmd->ctx;
	if (sc) {
		imap_sort_collect_free(&sc->collect);
		free(sc);
	}
	cmd->ctx = NULL;
}

static int cmp_i64(int64_t a, int64_t b)
{
	return a < b ? -1 : a > b;
}

static int sort_cmp(const void *x, const void *y, void *arg)
{
	const struct sort_order *cmp_cmd = arg;
	const struct imap_sort_msg *a = x, *b = y;
	for (unsigned i = 0; i < cmp_cmd->ncrit; i++) {
		const struct sort_crit *k = &cmp_cmd->crit[i];
		int c;
		if (k->key == SORTK_ARRIVAL)
			c = cmp_i64(a->arrival, b->arrival);
		else if (k->key == SORTK_DATE)
			c = cmp_i64(a->date, b->date);
		else if (k->key == SORTK_SIZE)
			c = a->size < b->size ? -1 : a->size > b->size;
		else
			c = strcmp(a->str[k->key] ? a->str[k->key] : "",
				   b->str[k->key] ? b->str[k->key] : "");
		if (c)
			return k->reverse ? -c : c;
	}
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int put_num(struct buf *b, const char *pre, uint64_t v)
{
	char tmp[32];
	int n = snprintf(tmp, sizeof(tmp), "%s%llu", pre, (unsigned long long)v);
	return buf_append(b, tmp, (size_t)n);
}

/* On the thread pool: the matches in sort order. */
static void sort_order(struct imap_sort_collect *c)
{
	if (c->n > 1)
		qsort_r(c->msgs, c->n, sizeof(*c->msgs), sort_cmp, c->order_arg);
}

static enum cmd_result sort_finish(struct imap_cmd *cmd, struct sort_cmd *sc)
{
	struct imap_session *s = cmd->s;
	struct imap_sort_collect *c = sc->collect;
	struct buf out;
	buf_init(&out, c->n * 24 + 256);
	int r = 0;
	if (sc->ret & SRET_SAVE) {
		/* SEARCHRES (RFC 5182 §2.4): the set of UIDs (unordered); MIN or MAX alone save
		 * just those: the first and last in sort order (RFC 5267 §3.1) */
		imap_seqset_clear(&s->searchres);
		bool ends =
			(sc->ret & (SRET_MIN | SRET_MAX)) && !(sc->ret & (SRET_ALL | SRET_COUNT));
		for (size_t i = 0; i < c->n && r == 0; i++) {
			if (ends && !((sc->ret & SRET_MIN && i == 0) ||
				      (sc->ret & SRET_MAX && i == c->n - 1)))
				continue;
			r = imap_seqset_add(&s->searchres, c->msgs[i].uid, c->msgs[i].uid);
		}
		imap_seqset_normalize(&s->searchres);
	}
	if (!sc->esearch && !(sc->ret & SRET_SAVE)) {
		r = buf_append(&out, "* SORT", 6);
		for (size_t i = 0; i < c->n && r == 0; i++)
			r = put_num(&out, " ", cmd->uid ? c->msgs[i].uid : c->msgs[i].seq);
		if (r == 0 && c->modseq && c->n)
			r = put_num(&out, " (MODSEQ ", c->highest_modseq)
				    ?: buf_append(&out, ")", 1);
		if (r == 0)
			r = buf_append(&out, "\r\n", 2);
	} else if (sc->esearch) {
		char head[IMAP_TAG_MAX + 32];
		int hn = snprintf(head, sizeof(head), "* ESEARCH (TAG \"%s\")%s", cmd->tag,
				  cmd->uid ? " UID" : "");
		r = buf_append(&out, head, (size_t)hn);
		uint32_t first = 0, last = 0;
		if (c->n) {
			first = cmd->uid ? c->msgs[0].uid : c->msgs[0].seq;
			last = cmd->uid ? c->msgs[c->n - 1].uid : c->msgs[c->n - 1].seq;
		}
		if (r == 0 && (sc->ret & SRET_MIN) && c->n)
			r = put_num(&out, " MIN ", first);
		if (r == 0 && (sc->ret & SRET_MAX) && c->n)
			r = put_num(&out, " MAX ", last);
		if (r == 0 && (sc->ret & SRET_ALL) && c->n) {
			/* in sort order; runs of consecutive ascending numbers as ranges */
			r = buf_append(&out, " ALL ", 5);
			for (size_t i = 0; i < c->n && r == 0;) {
				uint32_t lo = cmd->uid ? c->msgs[i].uid : c->msgs[i].seq, hi = lo;
				size_t j = i + 1;
				while (j < c->n &&
				       (cmd->uid ? c->msgs[j].uid : c->msgs[j].seq) == hi + 1) {
					hi++;
					j++;
				}
				r = put_num(&out, i ? "," : "", lo);
				if (r == 0 && hi != lo)
					r = put_num(&out, ":", hi);
				i = j;
			}
		}
		if (r == 0 && (sc->ret & SRET_COUNT))
			r = put_num(&out, " COUNT ", c->n);
		if (r == 0 && c->modseq && c->n)
			r = put_num(&out, " MODSEQ ", c->highest_modseq);
		if (r == 0)
			r = buf_append(&out, "\r\n", 2);
	}
	if (r < 0) {
		buf_clear(&out);
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return CMD_DONE;
	}
	if (buf_used(&out))
		conn_write(s->conn, buf_peek(&out), buf_used(&out));
	buf_clear(&out);
	imap_cmd_reply(cmd, "OK", "Sort completed.");
	return CMD_DONE;
}

static enum cmd_result sort_run(struct imap_cmd *cmd, struct sort_cmd *sc)
{
	int r = imap_sort_collect_run(cmd, sc->collect);
	if (r < 0)
		return CMD_DONE;
	if (r == 0)
		return imap_cmd_yield(cmd);
	if (r == 2)
		return CMD_MORE; /* the order's end wakes the session */
	return sort_finish(cmd, sc);
}

enum cmd_result imap_cmd_sort(struct imap_cmd *cmd)
{
	if (cmd->ctx)
		return sort_run(cmd, cmd->ctx);
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	struct sort_cmd *sc = calloc(1, sizeof(*sc));
	if (!sc) {
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return CMD_DONE;
	}
	cmd->ctx = sc;
	cmd->ctx_free = sort_cmd_free;
	const struct imap_arg *a = args;
	if (imap_arg_is(a, "RETURN")) {
		/* ESORT (RFC 5267): the ESEARCH response; RETURN () means ALL */
		if (a[1].type != IMAP_ARG_LIST) {
			imap_sort_refuse(cmd, "BAD", "Invalid RETURN options.");
			return CMD_DONE;
		}
		for (unsigned i = 0; i < a[1].list_count; i++) {
			static const struct {
				const char *name;
				unsigned bit;
			} opts[] = {{"MIN", SRET_MIN},
				    {"MAX", SRET_MAX},
				    {"ALL", SRET_ALL},
				    {"COUNT", SRET_COUNT},
				    {"SAVE", SRET_SAVE}};
			unsigned bit = 0;
			for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]) && !bit; k++)
				if (imap_arg_is(&a[1].list[i], opts[k].name))
					bit = opts[k].bit;
			if (!bit) {
				imap_sort_refuse(cmd, "BAD", "Unknown RETURN option.");
				return CMD_DONE;
			}
			sc->ret |= bit;
		}
		if (sc->ret == 0)
			sc->ret = SRET_ALL;
		sc->esearch = sc->ret != SRET_SAVE; /* SAVE alone: no ESEARCH (RFC 5182 §2.4) */
		a += 2;
	}
	if (a->type != IMAP_ARG_LIST || a->list_count == 0) {
		imap_sort_refuse(cmd, "BAD", "SORT needs a list of sort criteria.");
		return CMD_DONE;
	}
	unsigned need = 0;
	bool reverse = false;
	for (unsigned i = 0; i < a->list_count; i++) {
		const struct imap_arg *k = &a->list[i];
		if (imap_arg_is(k, "REVERSE") && !reverse) {
			reverse = true;
			continue;
		}
		int key = -1;
		for (size_t j = 0; j < sizeof(sort_keys) / sizeof(sort_keys[0]) && key < 0; j++)
			if (imap_arg_is(k, sort_keys[j].name))
				key = sort_keys[j].key;
		if (key < 0 || sc->ncrit == SORT_MAX_CRITERIA) {
			imap_sort_refuse(cmd, "BAD", "Invalid sort criterion.");
			return CMD_DONE;
		}
		sc->crit[sc->ncrit++] = (struct sort_crit){key, reverse};
		reverse = false;
		if (key < SORT_NSTR)
			need |= 1u << key;
		else if (key == SORTK_DATE)
			need |= SORT_NEED_DATE;
	}
	if (reverse) {
		imap_sort_refuse(cmd, "BAD", "REVERSE needs a sort key after it.");
		return CMD_DONE;
	}
	if (imap_sort_collect_start(cmd, a + 1, need, &sc->collect) < 0)
		return CMD_DONE;
	struct sort_order *o = malloc(sizeof(*o));
	if (!o) {
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return CMD_DONE;
	}
	memcpy(o->crit, sc->crit, sizeof(o->crit));
	o->ncrit = sc->ncrit;
	imap_sort_collect_set_order(sc->collect, sort_order, o);
	return sort_run(cmd, sc);
}
