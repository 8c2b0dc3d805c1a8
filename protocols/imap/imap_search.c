/* imap_search — SEARCH and UID SEARCH (RFC 9051 §6.4.4) with ESEARCH return options
 * (RFC 4731: MIN MAX ALL COUNT) and SEARCHRES (RFC 5182: SAVE, `$`).
 *
 * Keys: ALL, ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, RECENT, NEW, OLD, UN*, KEYWORD,
 * UNKEYWORD, LARGER, SMALLER, OLDER, YOUNGER (RFC 5032), MODSEQ (RFC 7162), BEFORE, ON, SINCE,
 * SENTBEFORE, SENTON, SENTSINCE, SAVEDBEFORE, SAVEDON, SAVEDSINCE, SAVEDATESUPPORTED (RFC 8514),
 * EMAILID, THREADID (RFC 8474), FROM, TO, CC, BCC, SUBJECT, HEADER, BODY, TEXT, UID, a sequence
 * set, NOT, OR and parenthesised lists. CHARSET UTF-8 and US-ASCII. String matches are substring
 * matches, ASCII case-insensitive, on decoded UTF-8 text (RFC 2047 words and transfer encodings
 * undone by the MIME parser).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "imap_internal.h"
#include "log.h"
#include "msg_parse.h"

enum skey {
	SK_ALL,
	SK_FLAG,    /* flag set (want) or unset */
	SK_KEYWORD, /* keyword idx set (want) or unset; idx -1: unknown keyword */
	SK_NEW,
	SK_OLD,
	SK_LARGER,
	SK_MODSEQ,  /* RFC 7162 §3.1.5: modseq >= num */
	SK_OLDER,   /* RFC 5032 WITHIN: internal date <= day (here: a time) */
	SK_YOUNGER, /* internal date > time */
	SK_SMALLER,
	SK_BEFORE,
	SK_ON,
	SK_SINCE,
	SK_SENTBEFORE,
	SK_SENTON,
	SK_SENTSINCE,
	SK_SAVEDBEFORE, /* RFC 8514: the save date */
	SK_SAVEDON,
	SK_SAVEDSINCE,
	SK_EMAILID,  /* RFC 8474 §6: num = the EMAILID (0: matches nothing) */
	SK_THREADID, /* RFC 8474 §6: no threads are kept, matches nothing */
	SK_HEADER,   /* field, str */
	SK_BODY,
	SK_TEXT,
	SK_UIDSET,
	SK_SEQSET,
	SK_NOT,
	SK_OR,
	SK_AND,
};

struct snode {
	enum skey key;
	bool want;
	unsigned flag;
	int kw;
	uint64_t num;
	int64_t day; /* days since the epoch */
	const char *field, *str;
	size_t str_len;
	struct imap_seqset set;
	struct snode *a, *b; /* NOT: a; OR: a b; AND: a list via next */
	struct snode *next;
};

#define SEARCH_MAX_NODES 1024

struct search_ctx {
	struct imap_session *s;
	struct snode nodes[SEARCH_MAX_NODES];
	unsigned n_nodes;
	const char *error;
	/* The current message. */
	uint32_t seq;
	struct mail_info info;
	struct mail_stream *stream;
	struct msg_source src;
	struct msg_parsed *parsed;
	int load_err;
	/* The command's progress (it yields the loop every IMAP_SLICE_NS). */
	struct snode *prog;
	unsigned ret;
	bool esearch;
	uint32_t next_seq, count;
	uint64_t matches;
	uint32_t min, max;
	bool modseq_key;        /* a MODSEQ key was used: the answer carries the highest modseq */
	uint64_t highest_match; /* of the matching messages */
	struct imap_seqset result, result_uids;
};

static struct snode *node_new(struct search_ctx *c, enum skey key)
{
	if (c->n_nodes >= SEARCH_MAX_NODES) {
		c->error = "Search program too large.";
		return NULL;
	}
	struct snode *n = &c->nodes[c->n_nodes++];
	memset(n, 0, sizeof(*n));
	n->key = key;
	n->want = true;
	imap_seqset_init(&n->set);
	return n;
}

static void search_ctx_free(struct search_ctx *c)
{
	for (unsigned i = 0; i < c->n_nodes; i++)
		imap_seqset_free(&c->nodes[i].set);
	imap_seqset_free(&c->result);
	imap_seqset_free(&c->result_uids);
	msg_parsed_free(&c->parsed);
	mail_stream_free(&c->stream);
	free(c);
}

static int64_t days_from_civil(int y, int m, int d)
{
	/* Howard Hinnant's algorithm: days since 1970-01-01 (m 1..12). */
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int month_index(const char *m)
{
	static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	for (int i = 0; i < 12; i++)
		if (strncasecmp(m, mon[i], 3) == 0)
			return i + 1;
	return 0;
}

/* IMAP date "1-Feb-1994". */
static bool parse_date(const char *s, int64_t *day_r)
{
	int d, y, used = 0;
	char mon[4];
	if (sscanf(s, "%2d-%3[A-Za-z]-%4d%n", &d, mon, &y, &used) != 3 || s[used] != '\0')
		return false;
	int m = month_index(mon);
	if (!m || d < 1 || d > 31)
		return false;
	*day_r = days_from_civil(y, m, d);
	return true;
}

/* RFC 5322 Date: "[Day, ] 1 Feb 1994 ..." -> the day, as written (time zone ignored). */
static bool parse_header_date(const char *s, int64_t *day_r)
{
	const char *comma = strchr(s, ',');
	if (comma)
		s = comma + 1;
	int d, y;
	char mon[4];
	if (sscanf(s, " %2d %3[A-Za-z] %4d", &d, mon, &y) != 3)
		return false;
	int m = month_index(mon);
	if (!m || d < 1 || d > 31)
		return false;
	if (y < 100)
		y += y < 50 ? 2000 : 1900;
	*day_r = days_from_civil(y, m, d);
	return true;
}

static const struct {
	const char *name;
	unsigned flag;
	bool want;
} flag_keys[] = {
	{"ANSWERED", MAIL_ANSWERED, true},
	{"DELETED", MAIL_DELETED, true},
	{"DRAFT", MAIL_DRAFT, true},
	{"FLAGGED", MAIL_FLAGGED, true},
	{"SEEN", MAIL_SEEN, true},
	{"RECENT", MAIL_RECENT, true},
	{"UNANSWERED", MAIL_ANSWERED, false},
	{"UNDELETED", MAIL_DELETED, false},
	{"UNDRAFT", MAIL_DRAFT, false},
	{"UNFLAGGED", MAIL_FLAGGED, false},
	{"UNSEEN", MAIL_SEEN, false},
};

static const struct {
	const char *name;
	enum skey key;
} date_keys[] = {
	{"BEFORE", SK_BEFORE},           {"ON", SK_ON},           {"SINCE", SK_SINCE},
	{"SENTBEFORE", SK_SENTBEFORE},   {"SENTON", SK_SENTON},   {"SENTSINCE", SK_SENTSINCE},
	{"SAVEDBEFORE", SK_SAVEDBEFORE}, {"SAVEDON", SK_SAVEDON}, {"SAVEDSINCE", SK_SAVEDSINCE},
};

static const char *const header_keys[] = {"FROM", "TO", "CC", "BCC", "SUBJECT"};

static struct snode *parse_key(struct search_ctx *c, const struct imap_arg **ap, unsigned depth);

/* Keys until the end of the array: an AND node. */
static struct snode *parse_list(struct search_ctx *c, const struct imap_arg *args, unsigned depth)
{
	struct snode *and = node_new(c, SK_AND), *last = NULL;
	if (!and)
		return NULL;
	const struct imap_arg *a = args;
	if (a->type == IMAP_ARG_EOL) {
		c->error = "Missing search key.";
		return NULL;
	}
	while (a->type != IMAP_ARG_EOL) {
		struct snode *k = parse_key(c, &a, depth);
		if (!k)
			return NULL;
		if (last)
			last->next = k;
		else
			and->a = k;
		last = k;
	}
	return and;
}

static bool take_string(struct search_ctx *c, const struct imap_arg **ap, const char **s_r,
			size_t *len_r)
{
	if (!imap_arg_get_astring(*ap, s_r, len_r)) {
		c->error = "Missing search string.";
		return false;
	}
	(*ap)++;
	return true;
}

static struct snode *parse_key(struct search_ctx *c, const struct imap_arg **ap, unsigned depth)
{
	const struct imap_arg *a = *ap;
	if (depth > 32) {
		c->error = "Search program too deep.";
		return NULL;
	}
	if (a->type == IMAP_ARG_LIST) {
		*ap = a + 1;
		if (a->list_count == 0) {
			c->error = "Empty search list.";
			return NULL;
		}
		return parse_list(c, a->list, depth + 1);
	}
	const char *name;
	if (!imap_arg_get_atom(a, &name)) {
		c->error = "Invalid search key.";
		return NULL;
	}
	*ap = a + 1;
	struct snode *n;
	for (size_t i = 0; i < sizeof(flag_keys) / sizeof(flag_keys[0]); i++) {
		if (strcasecmp(name, flag_keys[i].name) == 0) {
			if (!(n = node_new(c, SK_FLAG)))
				return NULL;
			n->flag = flag_keys[i].flag;
			n->want = flag_keys[i].want;
			return n;
		}
	}
	for (size_t i = 0; i < sizeof(date_keys) / sizeof(date_keys[0]); i++) {
		if (strcasecmp(name, date_keys[i].name) == 0) {
			const char *d;
			size_t len;
			if (!(n = node_new(c, date_keys[i].key)) || !take_string(c, ap, &d, &len))
				return NULL;
			if (!parse_date(d, &n->day)) {
				c->error = "Invalid search date.";
				return NULL;
			}
			return n;
		}
	}
	for (size_t i = 0; i < sizeof(header_keys) / sizeof(header_keys[0]); i++) {
		if (strcasecmp(name, header_keys[i]) == 0) {
			if (!(n = node_new(c, SK_HEADER)))
				return NULL;
			n->field = header_keys[i];
			if (!take_string(c, ap, &n->str, &n->str_len))
				return NULL;
			return n;
		}
	}
	if (strcasecmp(name, "ALL") == 0)
		return node_new(c, SK_ALL);
	/* RFC 8514: every folder here keeps save dates */
	if (strcasecmp(name, "SAVEDATESUPPORTED") == 0)
		return node_new(c, SK_ALL);
	if (strcasecmp(name, "EMAILID") == 0 || strcasecmp(name, "THREADID") == 0) {
		/* objectid = 1*255(ALPHA / DIGIT / "_" / "-") */
		const char *id;
		size_t len;
		bool email = strcasecmp(name, "EMAILID") == 0;
		if (!(n = node_new(c, email ? SK_EMAILID : SK_THREADID)))
			return NULL;
		if (!imap_arg_get_astring(*ap, &id, &len) || len == 0 || len > 255 ||
		    strspn(id,
			   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
			    len) {
			c->error = "Invalid object id.";
			return NULL;
		}
		(*ap)++;
		n->num = 0;
		if (email && len == 17 && id[0] == 'M' && strspn(id + 1, "0123456789abcdef") == 16)
			n->num = strtoull(id + 1, NULL, 16);
		return n;
	}
	if (strcasecmp(name, "NEW") == 0)
		return node_new(c, SK_NEW);
	if (strcasecmp(name, "OLD") == 0)
		return node_new(c, SK_OLD);
	if (strcasecmp(name, "KEYWORD") == 0 || strcasecmp(name, "UNKEYWORD") == 0) {
		const char *kw;
		if (!(n = node_new(c, SK_KEYWORD)))
			return NULL;
		n->want = strcasecmp(name, "KEYWORD") == 0;
		if (!imap_arg_get_atom(*ap, &kw)) {
			c->error = "Missing keyword.";
			return NULL;
		}
		(*ap)++;
		unsigned idx;
		n->kw = mailbox_keyword_index(view_mailbox(c->s->view), kw, false, &idx) == 0
				? (int)idx
				: -1;
		return n;
	}
	if (strcasecmp(name, "OLDER") == 0 || strcasecmp(name, "YOUNGER") == 0) {
		/* interval: seconds, nz-number; compared with the internal date against the time
		 * the search starts */
		const char *num;
		bool older = strcasecmp(name, "OLDER") == 0;
		if (!(n = node_new(c, older ? SK_OLDER : SK_YOUNGER)))
			return NULL;
		if (!imap_arg_get_atom(*ap, &num) || num[0] < '1' || num[0] > '9' ||
		    (*ap)->len > 10) {
			c->error = "Invalid interval.";
			return NULL;
		}
		char *end;
		unsigned long long secs = strtoull(num, &end, 10);
		if (*end || secs > UINT32_MAX) {
			c->error = "Invalid interval.";
			return NULL;
		}
		(*ap)++;
		n->day = (int64_t)time(NULL) - (int64_t)secs; /* the boundary, in seconds */
		return n;
	}
	if (strcasecmp(name, "LARGER") == 0 || strcasecmp(name, "SMALLER") == 0) {
		const char *num;
		if (!(n = node_new(c, strcasecmp(name, "LARGER") == 0 ? SK_LARGER : SK_SMALLER)))
			return NULL;
		if (!imap_arg_get_atom(*ap, &num) || num[0] < '0' || num[0] > '9') {
			c->error = "Missing number.";
			return NULL;
		}
		(*ap)++;
		char *end;
		errno = 0;
		n->num = strtoull(num, &end, 10);
		if (errno || *end) {
			c->error = "Invalid number.";
			return NULL;
		}
		return n;
	}
	if (strcasecmp(name, "MODSEQ") == 0) {
		/* MODSEQ ["/flags/\\flag" priv|shared|all] modseq: one modseq per message here, so
		 * the entry is checked and the message's modseq compared */
		if (!(n = node_new(c, SK_MODSEQ)))
			return NULL;
		if ((*ap)->type == IMAP_ARG_STRING) {
			const char *entry, *type;
			size_t elen;
			if (!imap_arg_get_astring(*ap, &entry, &elen) ||
			    strncmp(entry, "/flags/", 7) || !imap_arg_get_atom(*ap + 1, &type) ||
			    (strcasecmp(type, "priv") && strcasecmp(type, "shared") &&
			     strcasecmp(type, "all"))) {
				c->error = "Invalid MODSEQ entry.";
				return NULL;
			}
			*ap += 2;
		}
		if (!imap_arg_modseq(*ap, true, &n->num)) {
			c->error = "Invalid MODSEQ value.";
			return NULL;
		}
		(*ap)++;
		c->modseq_key = true;
		return n;
	}
	if (strcasecmp(name, "HEADER") == 0) {
		if (!(n = node_new(c, SK_HEADER)))
			return NULL;
		size_t flen;
		if (!take_string(c, ap, &n->field, &flen) ||
		    !take_string(c, ap, &n->str, &n->str_len))
			return NULL;
		return n;
	}
	if (strcasecmp(name, "BODY") == 0 || strcasecmp(name, "TEXT") == 0) {
		if (!(n = node_new(c, strcasecmp(name, "BODY") == 0 ? SK_BODY : SK_TEXT)))
			return NULL;
		if (!take_string(c, ap, &n->str, &n->str_len))
			return NULL;
		return n;
	}
	if (strcasecmp(name, "NOT") == 0) {
		if (!(n = node_new(c, SK_NOT)) || (*ap)->type == IMAP_ARG_EOL)
			return c->error = c->error ? c->error : "Missing search key.", NULL;
		n->a = parse_key(c, ap, depth + 1);
		return n->a ? n : NULL;
	}
	if (strcasecmp(name, "OR") == 0) {
		if (!(n = node_new(c, SK_OR)) || (*ap)->type == IMAP_ARG_EOL)
			return c->error = c->error ? c->error : "Missing search key.", NULL;
		if (!(n->a = parse_key(c, ap, depth + 1)))
			return NULL;
		if ((*ap)->type == IMAP_ARG_EOL) {
			c->error = "Missing search key.";
			return NULL;
		}
		n->b = parse_key(c, ap, depth + 1);
		return n->b ? n : NULL;
	}
	bool uid = strcasecmp(name, "UID") == 0;
	const struct imap_arg *set_arg = a;
	if (uid) {
		set_arg = *ap;
		(*ap)++;
	}
	const char *set_str;
	if (!(n = node_new(c, uid ? SK_UIDSET : SK_SEQSET)))
		return NULL;
	if (!imap_arg_get_atom(set_arg, &set_str) ||
	    imap_seqset_parse(&n->set, set_str, set_arg->len) < 0) {
		c->error = "Unknown search key.";
		return NULL;
	}
	if (n->set.saved) {
		/* $: the saved result, as UIDs. */
		imap_seqset_copy(&n->set, &c->s->searchres);
		n->key = SK_UIDSET;
	} else {
		uint32_t count = view_count(c->s->view), max_uid = 0;
		if (count)
			view_seq_to_uid(c->s->view, count, &max_uid);
		imap_seqset_resolve(&n->set, uid ? max_uid : count);
	}
	return n;
}

/* ---- evaluation ---- */

static int load(struct search_ctx *c)
{
	if (c->parsed || c->load_err)
		return c->load_err;
	struct imap_session *s = c->s;
	int r = view_msg_open(s->view, c->seq, &c->stream);
	if (r == 0) {
		bool crlf;
		int fd = mail_stream_fd(c->stream, &crlf);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0)
			r = -EIO;
		else
			c->src = msg_source_fd(fd, (uint64_t)st.st_size);
	}
	if (r == 0) {
		const void *blob;
		size_t len;
		struct mailbox *mbox = view_mailbox(s->view);
		if (mailbox_cache_get(mbox, c->info.uid, &blob, &len) != 0 ||
		    msg_parse_deserialize(blob, len, c->info.size, &c->parsed) != 0)
			r = msg_parse(&c->src, NULL, &c->parsed);
	}
	c->load_err = r ? r : 0;
	return r;
}

/* ASCII case-insensitive substring search. */
static bool contains(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
	if (nlen == 0)
		return true;
	for (size_t i = 0; i + nlen <= hlen; i++)
		if (strncasecmp(hay + i, needle, nlen) == 0)
			return true;
	return false;
}

static bool header_match(struct search_ctx *c, const char *field, const char *str, size_t len)
{
	if (load(c) < 0)
		return false;
	struct buf b;
	buf_init(&b, 256 * 1024);
	bool found = false, any = false;
	for (unsigned i = 0; !found; i++) {
		buf_clear(&b);
		if (msg_header_get(&c->src, c->parsed, field, i, true, &b) < 0)
			break;
		any = true;
		found = contains(buf_peek(&b), buf_used(&b), str, len);
	}
	buf_clear(&b);
	return found || (any && len == 0);
}

struct text_match {
	const char *needle;
	size_t nlen;
	char tail[1024];
	size_t tail_len;
};

static int text_cb(void *ctx, const char *utf8, size_t len)
{
	struct text_match *t = ctx;
	/* Look across the chunk boundary: the last nlen-1 bytes of the previous chunk. */
	char joined[2048];
	size_t head = len < t->nlen ? len : t->nlen;
	if (t->tail_len + head <= sizeof(joined)) {
		memcpy(joined, t->tail, t->tail_len);
		memcpy(joined + t->tail_len, utf8, head);
		if (contains(joined, t->tail_len + head, t->needle, t->nlen))
			return 1;
	}
	if (contains(utf8, len, t->needle, t->nlen))
		return 1;
	size_t keep = t->nlen > 1 ? t->nlen - 1 : 0;
	if (keep > len)
		keep = len;
	memcpy(t->tail, utf8 + len - keep, keep);
	t->tail_len = keep;
	return 0;
}

static bool text_match(struct search_ctx *c, unsigned what, const char *str, size_t len)
{
	if (len == 0)
		return true;
	if (len > 1000 || load(c) < 0)
		return false;
	struct text_match t = {str, len, "", 0};
	return msg_text_foreach(&c->src, c->parsed, what, text_cb, &t) == 1;
}

static bool sent_day(struct search_ctx *c, int64_t *day_r)
{
	if (load(c) < 0)
		return false;
	struct buf b;
	buf_init(&b, 4096);
	bool ok = msg_header_get(&c->src, c->parsed, "Date", 0, false, &b) == 0 &&
		  buf_append(&b, "", 1) == 0 && parse_header_date(buf_peek(&b), day_r);
	buf_clear(&b);
	return ok;
}

static bool eval(struct search_ctx *c, const struct snode *n)
{
	const struct mail_info *in = &c->info;
	int64_t iday = in->internal_date >= 0 ? in->internal_date / 86400
					      : -((-in->internal_date + 86399) / 86400);
	int64_t save_day = in->save_date / 86400; /* never before the epoch */
	int64_t sday;
	switch (n->key) {
	case SK_ALL:
		return true;
	case SK_FLAG:
		return ((in->flags & n->flag) != 0) == n->want;
	case SK_KEYWORD:
		return (n->kw >= 0 && (in->keywords & (1u << n->kw))) == n->want;
	case SK_NEW:
		return (in->flags & MAIL_RECENT) && !(in->flags & MAIL_SEEN);
	case SK_OLD:
		return !(in->flags & MAIL_RECENT);
	case SK_LARGER:
		return in->size > n->num;
	case SK_MODSEQ:
		return in->modseq >= n->num;
	case SK_OLDER:
		return in->internal_date <= n->day;
	case SK_YOUNGER:
		return in->internal_date > n->day;
	case SK_SMALLER:
		return in->size < n->num;
	case SK_BEFORE:
		return iday < n->day;
	case SK_ON:
		return iday == n->day;
	case SK_SINCE:
		return iday >= n->day;
	case SK_SENTBEFORE:
		return sent_day(c, &sday) && sday < n->day;
	case SK_SENTON:
		return sent_day(c, &sday) && sday == n->day;
	case SK_SENTSINCE:
		return sent_day(c, &sday) && sday >= n->day;
	case SK_SAVEDBEFORE:
		return save_day < n->day;
	case SK_SAVEDON:
		return save_day == n->day;
	case SK_SAVEDSINCE:
		return save_day >= n->day;
	case SK_EMAILID:
		return n->num != 0 && in->email_id == n->num;
	case SK_THREADID:
		return false;
	case SK_HEADER:
		return header_match(c, n->field, n->str, n->str_len);
	case SK_BODY:
		return text_match(c, MSG_TEXT_BODIES, n->str, n->str_len);
	case SK_TEXT:
		return text_match(c, MSG_TEXT_HEADERS | MSG_TEXT_BODIES, n->str, n->str_len);
	case SK_UIDSET:
		return imap_seqset_contains(&n->set, in->uid);
	case SK_SEQSET:
		return imap_seqset_contains(&n->set, c->seq);
	case SK_NOT:
		return !eval(c, n->a);
	case SK_OR:
		return eval(c, n->a) || eval(c, n->b);
	case SK_AND:
		for (const struct snode *k = n->a; k; k = k->next)
			if (!eval(c, k))
				return false;
		return true;
	}
	return false;
}

enum ret_opts {
	RET_MIN = 1 << 0,
	RET_MAX = 1 << 1,
	RET_ALL = 1 << 2,
	RET_COUNT = 1 << 3,
	RET_SAVE = 1 << 4,
};

static void search_cmd_free(struct imap_cmd *cmd)
{
	if (cmd->ctx)
		search_ctx_free(cmd->ctx);
	cmd->ctx = NULL;
}

static enum cmd_result search_finish(struct imap_cmd *cmd, struct search_ctx *c)
{
	struct imap_session *s = cmd->s;
	unsigned ret = c->ret;
	imap_seqset_normalize(&c->result);
	imap_seqset_normalize(&c->result_uids);
	if (!c->esearch && !(ret & RET_SAVE)) {
		conn_write_str(s->conn, "* SEARCH");
		for (size_t i = 0; i < c->result.n; i++)
			for (uint64_t v = c->result.r[i].lo; v <= c->result.r[i].hi; v++)
				conn_printf(s->conn, " %llu", (unsigned long long)v);
		if (c->modseq_key && c->matches)
			conn_printf(s->conn, " (MODSEQ %llu)",
				    (unsigned long long)c->highest_match);
		conn_write_str(s->conn, "\r\n");
	}
	if (ret & RET_SAVE) {
		/* SAVE with MIN or MAX alone saves just those (RFC 5182 §2.4). */
		imap_seqset_clear(&s->searchres);
		if ((ret & (RET_MIN | RET_MAX)) && !(ret & (RET_ALL | RET_COUNT))) {
			uint32_t lo_uid = c->result_uids.n ? c->result_uids.r[0].lo : 0;
			uint32_t hi_uid = imap_seqset_max(&c->result_uids);
			if (ret & RET_MIN && lo_uid)
				imap_seqset_add(&s->searchres, lo_uid, lo_uid);
			if (ret & RET_MAX && hi_uid)
				imap_seqset_add(&s->searchres, hi_uid, hi_uid);
			imap_seqset_normalize(&s->searchres);
		} else {
			imap_seqset_copy(&s->searchres, &c->result_uids);
		}
	}
	if (c->esearch) {
		conn_printf(s->conn, "* ESEARCH (TAG \"%s\")%s", cmd->tag, cmd->uid ? " UID" : "");
		if ((ret & RET_MIN) && c->matches)
			conn_printf(s->conn, " MIN %u", c->min);
		if ((ret & RET_MAX) && c->matches)
			conn_printf(s->conn, " MAX %u", c->max);
		if ((ret & RET_ALL) && c->matches) {
			size_t need = imap_seqset_format(&c->result, NULL, 0);
			char *out = malloc(need + 1);
			if (out) {
				imap_seqset_format(&c->result, out, need + 1);
				conn_printf(s->conn, " ALL %s", out);
				free(out);
			}
		}
		if (ret & RET_COUNT)
			conn_printf(s->conn, " COUNT %llu", (unsigned long long)c->matches);
		if (c->modseq_key && c->matches)
			conn_printf(s->conn, " MODSEQ %llu", (unsigned long long)c->highest_match);
		conn_write_str(s->conn, "\r\n");
	}
	imap_cmd_reply(cmd, "OK", "Search completed.");
	return CMD_DONE;
}

/* Evaluate messages until done or the slice is used up. */
static enum cmd_result search_run(struct imap_cmd *cmd, struct search_ctx *c)
{
	struct imap_session *s = cmd->s;
	uint64_t start = uv_hrtime();
	bool progress = false;
	while (c->next_seq <= c->count) {
		if (progress && uv_hrtime() - start >= IMAP_SLICE_NS)
			return imap_cmd_yield(cmd);
		progress = true;
		uint32_t seq = c->next_seq++;
		c->seq = seq;
		if (view_msg_info(s->view, seq, &c->info) < 0)
			continue; /* expunged meanwhile: never matches */
		bool m = eval(c, c->prog);
		msg_parsed_free(&c->parsed);
		mail_stream_free(&c->stream);
		c->load_err = 0;
		if (!m)
			continue;
		uint32_t v = cmd->uid ? c->info.uid : seq;
		c->matches++;
		if (c->info.modseq > c->highest_match)
			c->highest_match = c->info.modseq;
		if (!c->min)
			c->min = v;
		c->max = v;
		if (imap_seqset_add(&c->result, v, v) < 0 ||
		    imap_seqset_add(&c->result_uids, c->info.uid, c->info.uid) < 0) {
			imap_cmd_reply(cmd, "NO", "[LIMIT] Too many results.");
			return CMD_DONE;
		}
		/* Keep the sets small: merge adjacent numbers as they come. */
		if (c->result.n >= 1024) {
			imap_seqset_normalize(&c->result);
			imap_seqset_normalize(&c->result_uids);
		}
	}
	return search_finish(cmd, c);
}

enum cmd_result imap_cmd_search(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	if (cmd->ctx)
		return search_run(cmd, cmd->ctx);
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	const struct imap_arg *a = args;
	unsigned ret = 0;
	bool esearch = false, had_return = false;
	if (imap_arg_is(a, "RETURN")) {
		had_return = true;
		if (a[1].type != IMAP_ARG_LIST) {
			imap_cmd_reply(cmd, "BAD", "Invalid RETURN options.");
			return CMD_DONE;
		}
		esearch = true;
		for (unsigned i = 0; i < a[1].list_count; i++) {
			const struct imap_arg *o = &a[1].list[i];
			if (imap_arg_is(o, "MIN"))
				ret |= RET_MIN;
			else if (imap_arg_is(o, "MAX"))
				ret |= RET_MAX;
			else if (imap_arg_is(o, "ALL"))
				ret |= RET_ALL;
			else if (imap_arg_is(o, "COUNT"))
				ret |= RET_COUNT;
			else if (imap_arg_is(o, "SAVE"))
				ret |= RET_SAVE;
			else {
				imap_cmd_reply(cmd, "BAD", "Unknown RETURN option.");
				return CMD_DONE;
			}
		}
		if (ret == 0)
			ret = RET_ALL; /* RETURN () means ALL (RFC 4731 §3.1) */
		if (ret == RET_SAVE)
			esearch = false; /* SAVE alone: no ESEARCH response (RFC 5182 §2.4) */
		a += 2;
	}
	if (!had_return && s->rev2) {
		/* IMAP4rev2 answers SEARCH with ESEARCH, ALL by default (RFC 9051 §6.4.4). */
		esearch = true;
		ret = RET_ALL;
	}
	if (imap_arg_is(a, "CHARSET")) {
		const char *cs;
		size_t len;
		if (!imap_arg_get_astring(&a[1], &cs, &len)) {
			imap_cmd_reply(cmd, "BAD", "Missing charset.");
			return CMD_DONE;
		}
		if (strcasecmp(cs, "UTF-8") != 0 && strcasecmp(cs, "US-ASCII") != 0) {
			imap_cmd_reply(cmd, "NO",
				       "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.");
			return CMD_DONE;
		}
		a += 2;
	}
	struct search_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return CMD_DONE;
	}
	c->s = s;
	imap_seqset_init(&c->result);
	imap_seqset_init(&c->result_uids);
	cmd->ctx = c;
	cmd->ctx_free = search_cmd_free;
	c->prog = parse_list(c, a, 0);
	if (!c->prog) {
		imap_cmd_reply(cmd, "BAD", "%s", c->error ? c->error : "Invalid search.");
		return CMD_DONE;
	}
	if (c->modseq_key)
		imap_condstore_enable(s); /* CONDSTORE-enabling (RFC 7162 §3.1) */
	c->ret = ret;
	c->esearch = esearch;
	c->next_seq = 1;
	c->count = view_count(s->view);
	return search_run(cmd, c);
}

/* ---- the search program for SORT and THREAD (imap_sort.c) ---- */

int imap_search_parse(struct imap_session *s, const struct imap_arg *args,
		      struct search_ctx **search_r, const char **error_r)
{
	struct search_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		*error_r = "[SERVERBUG] Out of memory.";
		return -ENOMEM;
	}
	c->s = s;
	imap_seqset_init(&c->result);
	imap_seqset_init(&c->result_uids);
	c->prog = parse_list(c, args, 0);
	if (!c->prog) {
		*error_r = c->error ? c->error : "Invalid search.";
		search_ctx_free(c);
		return -EINVAL;
	}
	if (c->modseq_key)
		imap_condstore_enable(s);
	c->next_seq = 1;
	c->count = view_count(s->view);
	*search_r = c;
	return 0;
}

bool imap_search_has_modseq(const struct search_ctx *c)
{
	return c->modseq_key;
}

int imap_search_step(struct search_ctx *c, imap_search_match_fn *match, void *ctx)
{
	uint64_t start = uv_hrtime();
	bool progress = false;
	while (c->next_seq <= c->count) {
		if (progress && uv_hrtime() - start >= IMAP_SLICE_NS)
			return 0;
		progress = true;
		uint32_t seq = c->next_seq++;
		c->seq = seq;
		if (view_msg_info(c->s->view, seq, &c->info) < 0)
			continue; /* expunged meanwhile: never matches */
		bool m = eval(c, c->prog);
		msg_parsed_free(&c->parsed);
		mail_stream_free(&c->stream);
		c->load_err = 0;
		if (m) {
			int r = match(ctx, seq, &c->info);
			if (r < 0)
				return r;
		}
	}
	return 1;
}

void imap_search_free(struct search_ctx **cp)
{
	if (*cp)
		search_ctx_free(*cp);
	*cp = NULL;
}
