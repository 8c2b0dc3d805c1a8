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

/* What a program needs of a message beyond the store's record (flags, size, dates, UID). */
enum need {
	NEED_META = 0,   /* nothing */
	NEED_PARSED = 1, /* the parsed structure (ENVELOPE: FROM TO CC BCC SUBJECT SENT*) */
	NEED_FILE = 2,   /* the message's bytes (BODY, TEXT, HEADER) */
};

/* An ASCII lower-case copy of a needle, for ci_contains. */
struct needle {
	char low[1001];
	size_t len;
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
	enum need need; /* of this key and its sub-keys (node_need_set) */
	/* HEADER, BODY, TEXT: the string lower-cased and the field name, owned by the program
	 * (the command's arguments are freed with the session, batches may still run) */
	struct needle *nd;
	char *field_own;
};

#define SEARCH_MAX_NODES 1024

/* Tri-state result of evaluating a key without the message's content. */
enum tri {
	T_NO = 0,
	T_YES = 1,
	T_MAYBE = 2,
};

/* One message being evaluated (on the loop, or on the thread pool in a batch). */
struct smsg {
	uint32_t seq;
	struct mail_info info;
	struct imap_session *s;     /* on the loop: content is opened on demand through the view */
	struct mail_stream *stream; /* the open file (opened on the loop) */
	void *blob;                 /* a copy of the cached parsed blob (batches), or NULL */
	size_t blob_len;
	struct msg_source src;
	bool have_src;
	struct msg_parsed *parsed;
	bool parsed_fresh; /* parsed from the file here, not from the cache */
	struct buf fresh;  /* a batch's freshly parsed blob, for the cache (loop) */
	int load_err;
	bool match; /* a batch's answer */
};

struct search_batch;

struct search_ctx {
	struct imap_session *s; /* NULL once the command is gone (batches still running) */
	struct snode nodes[SEARCH_MAX_NODES];
	unsigned n_nodes;
	const char *error;
	/* The command's progress (it yields the loop every IMAP_SLICE_NS). */
	struct snode *prog;
	enum need need;
	unsigned ret;
	bool esearch;
	uint32_t next_seq, count;
	uint8_t *hits;   /* bit seq-1: matched (checked against its UID when the answer is built) */
	bool modseq_key; /* a MODSEQ key was used: the answer carries the highest modseq */
	/* Batches on the thread pool: the one being filled, how many run, the wait list. */
	struct search_batch *fill;
	unsigned inflight;
	bool waiting; /* on the wait list for a pool slot */
	bool active;  /* counted in searches_active */
	struct search_ctx *wait_next;
	int batch_err;
	/* imap_search_step (SORT, THREAD): the message being evaluated on the loop */
	struct smsg cur;
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

static void smsg_clear(struct smsg *m);
static void batch_free(struct search_batch *b);
static void wait_list_remove(struct search_ctx *c);

static void search_set_active(struct search_ctx *c, bool on);

static void search_ctx_free(struct search_ctx *c)
{
	wait_list_remove(c);
	search_set_active(c, false);
	batch_free(c->fill);
	c->fill = NULL;
	smsg_clear(&c->cur);
	if (c->inflight > 0) {
		/* batches still run on the pool and read the program: the last one frees it */
		c->s = NULL;
		return;
	}
	for (unsigned i = 0; i < c->n_nodes; i++) {
		imap_seqset_free(&c->nodes[i].set);
		free(c->nodes[i].nd);
		free(c->nodes[i].field_own);
	}
	free(c->hits);
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

/* The strings of HEADER, BODY and TEXT keys copied into the program (lower-cased needles,
 * field names), so that it no longer points into the command's arguments. */
static void needle_init(struct needle *nd, const char *s, size_t len);

static int prog_own_strings(struct search_ctx *c)
{
	for (unsigned i = 0; i < c->n_nodes; i++) {
		struct snode *n = &c->nodes[i];
		if (n->key != SK_HEADER && n->key != SK_BODY && n->key != SK_TEXT)
			continue;
		if ((n->nd = malloc(sizeof(*n->nd))) == NULL)
			return -ENOMEM;
		needle_init(n->nd, n->str, n->str_len);
		n->str = NULL; /* the arguments' copy: n->nd from here on */
		bool fixed = false;
		for (size_t k = 0; k < sizeof(header_keys) / sizeof(header_keys[0]); k++)
			fixed = fixed || n->field == header_keys[k];
		if (n->key == SK_HEADER && !fixed) {
			if ((n->field_own = strdup(n->field)) == NULL)
				return -ENOMEM;
			n->field = n->field_own;
		}
	}
	return 0;
}

/* What evaluating N needs of a message; stored in every node of the program. */
static enum need node_need_set(struct snode *n)
{
	enum need need = NEED_META, k;
	switch (n->key) {
	case SK_SENTBEFORE:
	case SK_SENTON:
	case SK_SENTSINCE:
		need = NEED_PARSED;
		break;
	case SK_HEADER:
		/* the address and subject keys are answered from the ENVELOPE (the parsed cache);
		 * any other field, and the empty string (does the field exist?), read the header */
		need = NEED_FILE;
		for (size_t i = 0; i < sizeof(header_keys) / sizeof(header_keys[0]); i++)
			if (n->field == header_keys[i] && n->str_len > 0)
				need = NEED_PARSED;
		break;
	case SK_BODY:
	case SK_TEXT:
		need = n->str_len > 0 ? NEED_FILE : NEED_META;
		break;
	case SK_NOT:
		need = node_need_set(n->a);
		break;
	case SK_OR:
		need = node_need_set(n->a);
		if ((k = node_need_set(n->b)) > need)
			need = k;
		break;
	case SK_AND:
		for (struct snode *x = n->a; x; x = x->next)
			if ((k = node_need_set(x)) > need)
				need = k;
		break;
	default:
		break;
	}
	n->need = need;
	return need;
}

static void smsg_clear(struct smsg *m)
{
	msg_parsed_free(&m->parsed);
	mail_stream_free(&m->stream);
	free(m->blob);
	m->blob = NULL;
	m->blob_len = 0;
	buf_clear(&m->fresh);
	m->have_src = false;
	m->parsed_fresh = false;
	m->load_err = 0;
}

/* The message's content: its file (when opened, or openable on the loop) and its parsed
 * structure (from the cache blob, else parsed from the file). Safe on the thread pool when
 * m->s is NULL: then only what the loop prepared is used. */
static int smsg_load(struct smsg *m, bool want_file)
{
	if (m->load_err)
		return m->load_err;
	int r = 0;
	if (!m->have_src && m->stream == NULL && m->s != NULL && (want_file || m->parsed == NULL)) {
		r = view_msg_open(m->s->view, m->seq, &m->stream);
		if (r < 0)
			m->stream = NULL;
	}
	if (r == 0 && !m->have_src && m->stream != NULL) {
		bool crlf;
		int fd = mail_stream_fd(m->stream, &crlf);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0) {
			r = -EIO;
		} else {
			m->src = msg_source_fd(fd, (uint64_t)st.st_size);
			m->have_src = true;
		}
	}
	if (r == 0 && m->parsed == NULL) {
		const void *blob = m->blob;
		size_t len = m->blob_len;
		if (blob == NULL && m->s != NULL &&
		    mailbox_cache_get(view_mailbox(m->s->view), m->info.uid, &blob, &len) != 0)
			blob = NULL;
		if (blob == NULL ||
		    msg_parse_deserialize(blob, len, m->info.size, &m->parsed) != 0) {
			if (!m->have_src)
				r = -ENOENT;
			else if ((r = msg_parse(&m->src, NULL, &m->parsed)) == 0)
				m->parsed_fresh = true;
		}
	}
	if (r == 0 && want_file && !m->have_src)
		r = -ENOENT;
	if (r < 0)
		m->load_err = r;
	return r;
}

static void needle_init(struct needle *nd, const char *s, size_t len)
{
	nd->len = len < sizeof(nd->low) - 1 ? len : sizeof(nd->low) - 1;
	for (size_t i = 0; i < nd->len; i++) {
		unsigned char ch = (unsigned char)s[i];
		nd->low[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
	}
	nd->low[nd->len] = '\0';
}

static inline unsigned char ascii_lower(unsigned char ch)
{
	return ch >= 'A' && ch <= 'Z' ? (unsigned char)(ch + 32) : ch;
}

/* ASCII case-insensitive substring search: memchr for the needle's first octet in either
 * case, then a compare (strncasecmp at every position cost a third of SEARCH TEXT). */
static bool ci_contains(const char *hay, size_t hlen, const struct needle *nd)
{
	size_t n = nd->len;
	if (n == 0)
		return true;
	if (hlen < n)
		return false;
	unsigned char lo = (unsigned char)nd->low[0];
	unsigned char up = lo >= 'a' && lo <= 'z' ? (unsigned char)(lo - 32) : lo;
	const char *p = hay, *last = hay + (hlen - n); /* last possible start */
	while (p <= last) {
		size_t span = (size_t)(last - p) + 1;
		const char *a = memchr(p, lo, span);
		const char *b = up != lo ? memchr(p, up, a ? (size_t)(a - p) : span) : NULL;
		const char *q = b ? b : a;
		if (q == NULL)
			return false;
		size_t i = 1;
		while (i < n && ascii_lower((unsigned char)q[i]) == (unsigned char)nd->low[i])
			i++;
		if (i == n)
			return true;
		p = q + 1;
	}
	return false;
}

/* SEARCH HEADER field (any field): the decoded values of every such field of the header. */
static bool header_match(struct smsg *m, const char *field, const struct needle *nd)
{
	if (smsg_load(m, true) < 0)
		return false;
	struct buf b;
	buf_init(&b, 256 * 1024);
	bool found = false, any = false;
	for (unsigned i = 0; !found; i++) {
		buf_clear(&b);
		if (msg_header_get(&m->src, m->parsed, field, i, true, &b) < 0)
			break;
		any = true;
		found = ci_contains(buf_peek(&b), buf_used(&b), nd);
	}
	buf_clear(&b);
	return found || (any && nd->len == 0);
}

/* ---- the ENVELOPE as the source of FROM, TO, CC, BCC, SUBJECT and the Date ---- */

struct env_reader {
	const char *p, *end;
};

static void env_skip_sp(struct env_reader *r)
{
	while (r->p < r->end && *r->p == ' ')
		r->p++;
}

/* One nstring of the ENVELOPE: NIL (returns 0), a quoted string or a literal (returns 1 with
 * the unescaped bytes appended to OUT when OUT is not NULL); -1 on anything else. */
static int env_nstring(struct env_reader *r, struct buf *out)
{
	env_skip_sp(r);
	if (r->end - r->p >= 3 && memcmp(r->p, "NIL", 3) == 0) {
		r->p += 3;
		return 0;
	}
	if (r->p < r->end && *r->p == '"') {
		r->p++;
		while (r->p < r->end && *r->p != '"') {
			if (*r->p == '\\' && r->p + 1 < r->end)
				r->p++;
			if (out && buf_append(out, r->p, 1) < 0)
				return -1;
			r->p++;
		}
		if (r->p >= r->end)
			return -1;
		r->p++;
		return 1;
	}
	if (r->p < r->end && *r->p == '{') {
		char *e;
		unsigned long long n = strtoull(r->p + 1, &e, 10);
		if (e >= r->end || *e != '}' || r->end - e < 3 || e[1] != '\r' || e[2] != '\n' ||
		    n > (unsigned long long)(r->end - (e + 3)))
			return -1;
		if (out && buf_append(out, e + 3, (size_t)n) < 0)
			return -1;
		r->p = e + 3 + n;
		return 1;
	}
	return -1;
}

/* Skip a parenthesised list (or NIL). */
static int env_skip_list(struct env_reader *r)
{
	env_skip_sp(r);
	if (r->end - r->p >= 3 && memcmp(r->p, "NIL", 3) == 0) {
		r->p += 3;
		return 0;
	}
	if (r->p >= r->end || *r->p != '(')
		return -1;
	r->p++;
	for (;;) {
		env_skip_sp(r);
		if (r->p >= r->end)
			return -1;
		if (*r->p == ')') {
			r->p++;
			return 1;
		}
		if (*r->p == '(') {
			if (env_skip_list(r) < 0)
				return -1;
		} else if (env_nstring(r, NULL) < 0) {
			return -1;
		}
	}
}

/* An address list of the ENVELOPE written the way Dovecot matches SEARCH FROM/TO/CC/BCC:
 * `name <mailbox@host>` (the name's encoded words decoded), `mailbox@host` without a name,
 * `group: ...;` for groups, ", " between addresses. Returns 1, 0 for NIL, -1. */
static int env_addresses(struct env_reader *r, struct buf *out)
{
	env_skip_sp(r);
	if (r->end - r->p >= 3 && memcmp(r->p, "NIL", 3) == 0) {
		r->p += 3;
		return 0;
	}
	if (r->p >= r->end || *r->p != '(')
		return -1;
	r->p++;
	bool first = true;
	struct buf name, mbox, host;
	buf_init(&name, 64 * 1024);
	buf_init(&mbox, 64 * 1024);
	buf_init(&host, 64 * 1024);
	int ret = -1;
	for (;;) {
		env_skip_sp(r);
		if (r->p >= r->end)
			break;
		if (*r->p == ')') {
			r->p++;
			ret = 1;
			break;
		}
		if (*r->p != '(')
			break;
		r->p++;
		buf_clear(&name);
		buf_clear(&mbox);
		buf_clear(&host);
		int hn = env_nstring(r, &name);
		int ha = env_nstring(r, NULL);
		int hm = env_nstring(r, &mbox);
		int hh = env_nstring(r, &host);
		env_skip_sp(r);
		if (hn < 0 || ha < 0 || hm < 0 || hh < 0 || r->p >= r->end || *r->p != ')')
			break;
		r->p++;
		int e = 0;
		if (hh == 0 && hm == 0) { /* end of a group */
			e = buf_append(out, ";", 1);
			continue;
		}
		if (!first)
			e = buf_append(out, ", ", 2);
		first = false;
		if (hh == 0) { /* start of a group: its name */
			if (e == 0)
				e = buf_append(out, buf_peek(&mbox), buf_used(&mbox));
			if (e == 0)
				e = buf_append(out, ": ", 2);
			first = true;
		} else {
			if (hn == 1 && buf_used(&name) > 0) {
				e = msg_decode_words(buf_peek(&name), buf_used(&name), out);
				if (e == 0)
					e = buf_append(out, " <", 2);
			}
			if (e == 0)
				e = buf_append(out, buf_peek(&mbox), buf_used(&mbox));
			if (e == 0 && buf_used(&host) > 0) {
				e = buf_append(out, "@", 1);
				if (e == 0)
					e = buf_append(out, buf_peek(&host), buf_used(&host));
			}
			if (e == 0 && hn == 1 && buf_used(&name) > 0)
				e = buf_append(out, ">", 1);
		}
		if (e < 0)
			break;
	}
	buf_clear(&name);
	buf_clear(&mbox);
	buf_clear(&host);
	return ret;
}

/* ENVELOPE item IDX (0 date, 1 subject, 2 from, 3 sender, 4 reply-to, 5 to, 6 cc, 7 bcc) of
 * the top message, as text into OUT (the subject decoded, addresses as env_addresses).
 * Returns 1, 0 when NIL, -1 when the envelope cannot be read. */
static int env_item(const struct msg_parsed *parsed, unsigned idx, struct buf *out)
{
	size_t len;
	const char *env = msg_parsed_envelope(parsed, &len);
	struct env_reader r = {env, env + len};
	if (len == 0 || *r.p != '(')
		return -1;
	r.p++;
	for (unsigned i = 0; i < idx; i++)
		if ((i < 2 ? env_nstring(&r, NULL) : env_skip_list(&r)) < 0)
			return -1;
	if (idx >= 2)
		return env_addresses(&r, out);
	if (idx == 0)
		return env_nstring(&r, out);
	struct buf raw;
	buf_init(&raw, 256 * 1024);
	int ret = env_nstring(&r, &raw);
	if (ret == 1 &&
	    msg_decode_words(buf_used(&raw) ? buf_peek(&raw) : "", buf_used(&raw), out) < 0)
		ret = -1;
	buf_clear(&raw);
	return ret;
}

/* FROM, TO, CC, BCC, SUBJECT with a non-empty string: from the ENVELOPE. */
static bool envelope_match(struct smsg *m, const char *field, const struct needle *nd)
{
	static const struct {
		const char *name;
		unsigned idx;
	} items[] = {{"FROM", 2}, {"TO", 5}, {"CC", 6}, {"BCC", 7}, {"SUBJECT", 1}};
	unsigned idx = 0;
	for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++)
		if (field == header_keys[i])
			idx = items[i].idx;
	if (idx == 0 || smsg_load(m, false) < 0)
		return false;
	struct buf b;
	buf_init(&b, 256 * 1024);
	bool found = env_item(m->parsed, idx, &b) == 1 &&
		     ci_contains(buf_used(&b) ? buf_peek(&b) : "", buf_used(&b), nd);
	buf_clear(&b);
	return found;
}

struct text_match {
	const struct needle *nd;
	char tail[1024];
	size_t tail_len;
};

static int text_cb(void *ctx, const char *utf8, size_t len)
{
	struct text_match *t = ctx;
	size_t nlen = t->nd->len;
	/* Look across the chunk boundary: the last nlen-1 bytes of the previous chunk. */
	char joined[2048];
	size_t head = len < nlen ? len : nlen;
	if (t->tail_len > 0 && t->tail_len + head <= sizeof(joined)) {
		memcpy(joined, t->tail, t->tail_len);
		memcpy(joined + t->tail_len, utf8, head);
		if (ci_contains(joined, t->tail_len + head, t->nd))
			return 1;
	}
	if (ci_contains(utf8, len, t->nd))
		return 1;
	size_t keep = nlen > 1 ? nlen - 1 : 0;
	if (keep > len)
		keep = len;
	memcpy(t->tail, utf8 + len - keep, keep);
	t->tail_len = keep;
	return 0;
}

static bool text_match(struct smsg *m, unsigned what, const struct snode *n)
{
	if (n->str_len == 0)
		return true;
	if (n->str_len > 1000 || smsg_load(m, true) < 0)
		return false;
	struct text_match t = {n->nd, "", 0};
	return msg_text_foreach(&m->src, m->parsed, what, text_cb, &t) == 1;
}

static bool sent_day(struct smsg *m, int64_t *day_r)
{
	if (smsg_load(m, false) < 0)
		return false;
	struct buf b;
	buf_init(&b, 4096);
	bool ok = env_item(m->parsed, 0, &b) == 1 && buf_append(&b, "", 1) == 0 &&
		  parse_header_date(buf_peek(&b), day_r);
	buf_clear(&b);
	return ok;
}

/* Evaluate N for M. CONTENT false: keys that need the message's content answer T_MAYBE
 * (the loop's first pass); true: they are evaluated (loading the content as needed). */
static enum tri eval(const struct snode *n, struct smsg *m, bool content)
{
	const struct mail_info *in = &m->info;
	int64_t iday = in->internal_date >= 0 ? in->internal_date / 86400
					      : -((-in->internal_date + 86399) / 86400);
	int64_t save_day = in->save_date / 86400; /* never before the epoch */
	int64_t sday;
	enum tri a, b;
	if (!content && n->need != NEED_META && n->key != SK_NOT && n->key != SK_OR &&
	    n->key != SK_AND)
		return T_MAYBE;
	switch (n->key) {
	case SK_ALL:
		return T_YES;
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
		return sent_day(m, &sday) && sday < n->day;
	case SK_SENTON:
		return sent_day(m, &sday) && sday == n->day;
	case SK_SENTSINCE:
		return sent_day(m, &sday) && sday >= n->day;
	case SK_SAVEDBEFORE:
		return save_day < n->day;
	case SK_SAVEDON:
		return save_day == n->day;
	case SK_SAVEDSINCE:
		return save_day >= n->day;
	case SK_EMAILID:
		return n->num != 0 && in->email_id == n->num;
	case SK_THREADID:
		return T_NO;
	case SK_HEADER:
		if (n->need == NEED_PARSED)
			return envelope_match(m, n->field, n->nd);
		return n->str_len <= 1000 && header_match(m, n->field, n->nd);
	case SK_BODY:
		return text_match(m, MSG_TEXT_BODIES, n);
	case SK_TEXT:
		return text_match(m, MSG_TEXT_HEADERS | MSG_TEXT_BODIES, n);
	case SK_UIDSET:
		return imap_seqset_contains(&n->set, in->uid);
	case SK_SEQSET:
		return imap_seqset_contains(&n->set, m->seq);
	case SK_NOT:
		a = eval(n->a, m, content);
		return a == T_MAYBE ? T_MAYBE : (a == T_YES ? T_NO : T_YES);
	case SK_OR:
		if ((a = eval(n->a, m, content)) == T_YES)
			return T_YES;
		if ((b = eval(n->b, m, content)) == T_YES)
			return T_YES;
		return a == T_MAYBE || b == T_MAYBE ? T_MAYBE : T_NO;
	case SK_AND:
		a = T_YES;
		for (const struct snode *k = n->a; k; k = k->next) {
			if ((b = eval(k, m, content)) == T_NO)
				return T_NO;
			if (b == T_MAYBE)
				a = T_MAYBE;
		}
		return a;
	}
	return T_NO;
}

/* ---- batches on the thread pool ---- */

/* DESIGN.md: SEARCH over bodies runs on libuv's thread pool and its result is applied on the
 * loop thread. The loop evaluates what the store's records answer (flags, sizes, dates, UIDs,
 * sequence numbers); a message the program still needs content for goes into a batch with
 * its file opened (on the loop, where the store lives) and a copy of its cached parsed blob.
 * A pool thread evaluates the batch; the loop applies its matches by UID: a message expunged
 * meanwhile (the view still shows its number until it may announce the EXPUNGE) never
 * matches. A search running alone may have SEARCH_POOL_SLOTS batches on the pool (one per
 * core: its answer comes soonest); while several search, all of them together have one (the
 * loop keeps a core for every other session: measured, NOOP p99 under 10 searching clients
 * 35-53 ms with two, 18 ms with one). The pool's other threads stay free for SELECT's opens
 * and the store's fsyncs. A search finding no slot waits in a FIFO. */
#define SEARCH_BATCH      64
#define SEARCH_POOL_SLOTS 2
#define SEARCH_PER_CMD    2

bool imap_async_search = true;

struct search_batch {
	uv_work_t work;
	struct search_ctx *c;
	uint32_t n;
	struct smsg m[SEARCH_BATCH];
};

static unsigned pool_busy;
static unsigned searches_active; /* searches with content to evaluate on the pool */
static struct search_ctx *wait_head, *wait_tail;

static unsigned pool_slots(void)
{
	return searches_active > 1 ? 1 : SEARCH_POOL_SLOTS;
}

static void search_set_active(struct search_ctx *c, bool on)
{
	if (c->active == on)
		return;
	c->active = on;
	if (on)
		searches_active++;
	else
		searches_active--;
}

static void batch_free(struct search_batch *b)
{
	if (b == NULL)
		return;
	for (uint32_t i = 0; i < b->n; i++)
		smsg_clear(&b->m[i]);
	free(b);
}

static void wait_list_add(struct search_ctx *c)
{
	if (c->waiting)
		return;
	c->waiting = true;
	c->wait_next = NULL;
	if (wait_tail)
		wait_tail->wait_next = c;
	else
		wait_head = c;
	wait_tail = c;
}

static void wait_list_remove(struct search_ctx *c)
{
	if (!c->waiting)
		return;
	struct search_ctx **pp = &wait_head, *prev = NULL;
	while (*pp && *pp != c) {
		prev = *pp;
		pp = &(*pp)->wait_next;
	}
	if (*pp == c) {
		*pp = c->wait_next;
		if (wait_tail == c)
			wait_tail = prev;
	}
	c->waiting = false;
	c->wait_next = NULL;
}

/* Pool slots freed: the searches waiting for one go on, oldest first. */
static void wake_waiters(void)
{
	while (pool_busy < pool_slots() && wait_head) {
		struct search_ctx *w = wait_head;
		wait_list_remove(w);
		if (w->s)
			imap_session_wakeup(w->s);
	}
}

static void batch_work(uv_work_t *w)
{
	struct search_batch *b = w->data;
	for (uint32_t i = 0; i < b->n; i++) {
		struct smsg *m = &b->m[i];
		m->match = eval(b->c->prog, m, true) == T_YES;
		if (m->parsed_fresh) {
			/* parsed here for the first time: the loop puts it into the cache */
			buf_init(&m->fresh, 1u << 20);
			if (msg_parse_serialize(m->parsed, &m->fresh) < 0)
				buf_clear(&m->fresh);
		}
		msg_parsed_free(&m->parsed);
	}
}

static void batch_done(uv_work_t *w, int status)
{
	struct search_batch *b = w->data;
	struct search_ctx *c = b->c;
	pool_busy--;
	c->inflight--;
	struct imap_session *s = c->s;
	if (s == NULL || s->view == NULL) {
		batch_free(b);
		if (s == NULL && c->inflight == 0)
			search_ctx_free(c);
		wake_waiters();
		return;
	}
	for (uint32_t i = 0; i < b->n; i++) {
		struct smsg *m = &b->m[i];
		if (buf_used(&m->fresh) > 0)
			mailbox_cache_put(view_mailbox(s->view), m->info.uid, buf_peek(&m->fresh),
					  buf_used(&m->fresh));
		struct mail_info now;
		if (status == 0 && m->match && view_msg_info(s->view, m->seq, &now) == 0 &&
		    now.uid == m->info.uid)
			c->hits[(m->seq - 1) / 8] |= (uint8_t)(1u << ((m->seq - 1) % 8));
	}
	if (status < 0)
		c->batch_err = status;
	batch_free(b);
	wake_waiters();
	imap_session_wakeup(s); /* may finish the command and free c */
}

/* Put message M (the loop could not decide it) into the batch being filled. */
static int batch_add(struct search_ctx *c, const struct smsg *m)
{
	if (c->fill == NULL) {
		c->fill = calloc(1, sizeof(*c->fill));
		if (c->fill == NULL)
			return -ENOMEM;
		c->fill->c = c;
		c->fill->work.data = c->fill;
	}
	struct smsg *bm = &c->fill->m[c->fill->n++];
	bm->seq = m->seq;
	bm->info = m->info;
	struct view *v = c->s->view;
	const void *blob;
	size_t len;
	if (mailbox_cache_get(view_mailbox(v), m->info.uid, &blob, &len) == 0 &&
	    (bm->blob = malloc(len)) != NULL) {
		memcpy(bm->blob, blob, len);
		bm->blob_len = len;
	}
	if (c->need == NEED_FILE || bm->blob == NULL) {
		/* the file, opened here; its size is taken on the pool */
		if (view_msg_open(v, m->seq, &bm->stream) < 0) {
			bm->stream = NULL;
			bm->load_err = -ENOENT;
		}
	}
	return 0;
}

/* Hand the filled batch to the pool. False when no slot is free (the search waits). */
static bool batch_queue(struct search_ctx *c)
{
	if (c->inflight >= SEARCH_PER_CMD)
		return false; /* its own batch_done wakes it */
	if (pool_busy >= pool_slots()) {
		wait_list_add(c);
		return false;
	}
	struct search_batch *b = c->fill;
	if (uv_queue_work(conn_loop(c->s->conn), &b->work, batch_work, batch_done) < 0) {
		/* cannot happen with a valid loop; evaluate here rather than lose the messages */
		for (uint32_t i = 0; i < b->n; i++) {
			struct smsg *m = &b->m[i];
			if (eval(c->prog, m, true) == T_YES)
				c->hits[(m->seq - 1) / 8] |= (uint8_t)(1u << ((m->seq - 1) % 8));
		}
		batch_free(b);
		c->fill = NULL;
		return true;
	}
	c->fill = NULL;
	wait_list_remove(c); /* it had waited, and got a slot by its own wake-up */
	pool_busy++;
	c->inflight++;
	return true;
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
	if (c->batch_err < 0) {
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Search failed.");
		return CMD_DONE;
	}
	/* The matches in sequence order; one expunged since it was evaluated never matches. */
	uint64_t matches = 0, highest_match = 0;
	uint32_t min = 0, max = 0;
	struct imap_seqset result, result_uids;
	imap_seqset_init(&result);
	imap_seqset_init(&result_uids);
	for (uint32_t seq = 1; seq <= c->count; seq++) {
		if (!(c->hits[(seq - 1) / 8] & (1u << ((seq - 1) % 8))))
			continue;
		struct mail_info info;
		if (view_msg_info(s->view, seq, &info) < 0)
			continue;
		uint32_t v = cmd->uid ? info.uid : seq;
		matches++;
		if (info.modseq > highest_match)
			highest_match = info.modseq;
		if (!min)
			min = v;
		max = v;
		if (imap_seqset_add(&result, v, v) < 0 ||
		    imap_seqset_add(&result_uids, info.uid, info.uid) < 0) {
			imap_seqset_free(&result);
			imap_seqset_free(&result_uids);
			imap_cmd_reply(cmd, "NO", "[LIMIT] Too many results.");
			return CMD_DONE;
		}
		/* Keep the sets small: merge adjacent numbers as they come. */
		if (result.n >= 1024) {
			imap_seqset_normalize(&result);
			imap_seqset_normalize(&result_uids);
		}
	}
	imap_seqset_normalize(&result);
	imap_seqset_normalize(&result_uids);
	if (!c->esearch && !(ret & RET_SAVE)) {
		conn_write_str(s->conn, "* SEARCH");
		for (size_t i = 0; i < result.n; i++)
			for (uint64_t v = result.r[i].lo; v <= result.r[i].hi; v++)
				conn_printf(s->conn, " %llu", (unsigned long long)v);
		if (c->modseq_key && matches)
			conn_printf(s->conn, " (MODSEQ %llu)", (unsigned long long)highest_match);
		conn_write_str(s->conn, "\r\n");
	}
	if (ret & RET_SAVE) {
		/* SAVE with MIN or MAX alone saves just those (RFC 5182 §2.4). */
		imap_seqset_clear(&s->searchres);
		if ((ret & (RET_MIN | RET_MAX)) && !(ret & (RET_ALL | RET_COUNT))) {
			uint32_t lo_uid = result_uids.n ? result_uids.r[0].lo : 0;
			uint32_t hi_uid = imap_seqset_max(&result_uids);
			if (ret & RET_MIN && lo_uid)
				imap_seqset_add(&s->searchres, lo_uid, lo_uid);
			if (ret & RET_MAX && hi_uid)
				imap_seqset_add(&s->searchres, hi_uid, hi_uid);
			imap_seqset_normalize(&s->searchres);
		} else {
			imap_seqset_copy(&s->searchres, &result_uids);
		}
	}
	if (c->esearch) {
		conn_printf(s->conn, "* ESEARCH (TAG \"%s\")%s", cmd->tag, cmd->uid ? " UID" : "");
		if ((ret & RET_MIN) && matches)
			conn_printf(s->conn, " MIN %u", min);
		if ((ret & RET_MAX) && matches)
			conn_printf(s->conn, " MAX %u", max);
		if ((ret & RET_ALL) && matches) {
			size_t need = imap_seqset_format(&result, NULL, 0);
			char *out = malloc(need + 1);
			if (out) {
				imap_seqset_format(&result, out, need + 1);
				conn_printf(s->conn, " ALL %s", out);
				free(out);
			}
		}
		if (ret & RET_COUNT)
			conn_printf(s->conn, " COUNT %llu", (unsigned long long)matches);
		if (c->modseq_key && matches)
			conn_printf(s->conn, " MODSEQ %llu", (unsigned long long)highest_match);
		conn_write_str(s->conn, "\r\n");
	}
	imap_seqset_free(&result);
	imap_seqset_free(&result_uids);
	imap_cmd_reply(cmd, "OK", "Search completed.");
	return CMD_DONE;
}

/* Evaluate messages until done or the slice is used up: on the loop what the records
 * answer, the rest in batches on the pool (imap_async_search), or here, content and all. */
static enum cmd_result search_run(struct imap_cmd *cmd, struct search_ctx *c)
{
	struct imap_session *s = cmd->s;
	bool async = imap_async_search && c->need != NEED_META;
	if (async && c->next_seq <= c->count)
		search_set_active(c, true);
	uint64_t start = uv_hrtime();
	bool progress = false;
	for (;;) {
		if (c->fill && (c->fill->n == SEARCH_BATCH || c->next_seq > c->count) &&
		    !batch_queue(c))
			return CMD_MORE; /* a finished batch or a freed slot wakes it */
		if (c->next_seq > c->count)
			break;
		if (progress && uv_hrtime() - start >= IMAP_SLICE_NS)
			return imap_cmd_yield(cmd);
		progress = true;
		struct smsg m;
		memset(&m, 0, sizeof(m));
		m.seq = c->next_seq++;
		m.s = s;
		if (view_msg_info(s->view, m.seq, &m.info) < 0)
			continue; /* expunged meanwhile: never matches */
		enum tri t = eval(c->prog, &m, !async);
		smsg_clear(&m);
		if (t == T_YES)
			c->hits[(m.seq - 1) / 8] |= (uint8_t)(1u << ((m.seq - 1) % 8));
		else if (t == T_MAYBE && batch_add(c, &m) < 0)
			c->batch_err = -ENOMEM;
	}
	if (c->inflight > 0)
		return CMD_MORE;
	search_set_active(c, false);
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
	if (imap_arg_is(a, "CHARSET") && s->utf8) {
		/* RFC 6855 §3 (erratum 4029): strings are UTF-8 now, a label conflicts */
		imap_cmd_reply(cmd, "BAD", "No CHARSET after ENABLE UTF8=ACCEPT.");
		return CMD_DONE;
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
	cmd->ctx = c;
	cmd->ctx_free = search_cmd_free;
	c->prog = parse_list(c, a, 0);
	if (!c->prog) {
		imap_cmd_reply(cmd, "BAD", "%s", c->error ? c->error : "Invalid search.");
		return CMD_DONE;
	}
	if (c->modseq_key)
		imap_condstore_enable(s); /* CONDSTORE-enabling (RFC 7162 §3.1) */
	c->need = node_need_set(c->prog);
	if (prog_own_strings(c) < 0) {
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return CMD_DONE;
	}
	c->ret = ret;
	c->esearch = esearch;
	c->next_seq = 1;
	c->count = view_count(s->view);
	c->hits = calloc((size_t)c->count / 8 + 1, 1);
	if (!c->hits) {
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return CMD_DONE;
	}
	return search_run(cmd, c);
}

/* ---- the search program for SORT and THREAD ---- */

int imap_search_parse(struct imap_session *s, const struct imap_arg *args,
		      struct search_ctx **search_r, const char **error_r)
{
	struct search_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		*error_r = "[SERVERBUG] Out of memory.";
		return -ENOMEM;
	}
	c->s = s;
	c->prog = parse_list(c, args, 0);
	if (!c->prog) {
		*error_r = c->error ? c->error : "Invalid search.";
		search_ctx_free(c);
		return -EINVAL;
	}
	if (c->modseq_key)
		imap_condstore_enable(s);
	c->need = node_need_set(c->prog);
	if (prog_own_strings(c) < 0) {
		*error_r = "[SERVERBUG] Out of memory.";
		search_ctx_free(c);
		return -ENOMEM;
	}
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
		struct smsg *m = &c->cur;
		smsg_clear(m);
		m->seq = c->next_seq++;
		m->s = c->s;
		if (view_msg_info(c->s->view, m->seq, &m->info) < 0)
			continue; /* expunged meanwhile: never matches */
		bool hit = eval(c->prog, m, true) == T_YES;
		smsg_clear(m);
		if (hit) {
			int r = match(ctx, m->seq, &m->info);
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
