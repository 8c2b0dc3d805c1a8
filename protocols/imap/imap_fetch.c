/* imap_fetch — FETCH and UID FETCH (RFC 9051 §6.4.5, RFC 3501 §6.4.5).
 *
 * Items: UID, FLAGS, INTERNALDATE, RFC822.SIZE, ENVELOPE, BODY, BODYSTRUCTURE, MODSEQ,
 * EMAILID and THREADID (RFC 8474), SAVEDATE (RFC 8514), PREVIEW [(LAZY)] (RFC 8970),
 * BODY[section]<partial>, BODY.PEEK[...], RFC822, RFC822.HEADER, RFC822.TEXT, and the macros
 * ALL, FAST, FULL. Parsed message structure comes from the folder's cache or is parsed once
 * and cached. Body sections stream from the file in bounded chunks: when the connection's
 * output passes its high watermark the command returns CMD_MORE and resumes on drain, so no
 * reply is ever built whole in memory.
 *
 * A message another session expunged that this session has not been told about yet
 * (RFC 2180 §4.1): it is left out, the rest is sent, and the command ends with
 * NO [EXPUNGEISSUED].
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
#include "msg_imapstr.h"
#include "msg_parse.h"

#define FETCH_MAX_ITEMS  64
#define FETCH_CHUNK      (16 * 1024)
#define FETCH_FIELDS_MAX (1024 * 1024)

enum fetch_kind {
	FK_UID,
	FK_FLAGS,
	FK_INTERNALDATE,
	FK_SIZE,
	FK_ENVELOPE,
	FK_BODY,
	FK_BODYSTRUCTURE,
	FK_SECTION,
	FK_BINARY,      /* BINARY[part]<partial>, BINARY.PEEK (RFC 3516) */
	FK_BINARY_SIZE, /* BINARY.SIZE[part] */
	FK_MODSEQ,      /* MODSEQ (RFC 7162 §3.1.4) */
	FK_EMAILID,     /* EMAILID (RFC 8474 §5.1) */
	FK_THREADID,    /* THREADID (RFC 8474 §5.2): NIL, threads are not kept */
	FK_SAVEDATE,    /* SAVEDATE (RFC 8514) */
	FK_PREVIEW,     /* PREVIEW [(LAZY)] (RFC 8970) */
};

struct fetch_item {
	enum fetch_kind kind;
	bool peek;   /* BODY.PEEK / BINARY.PEEK; PREVIEW: LAZY */
	char *label; /* what the response names it ("BODY[1.MIME]", "RFC822.HEADER") */
	struct msg_section sec;
	bool partial;
	uint64_t p_off, p_len;
	uint32_t path[MSG_SECTION_MAX_PATH]; /* BINARY part number */
	unsigned npath;
};

enum fetch_phase {
	FP_NEXT_MSG, /* start the next message */
	FP_ITEMS,    /* writing items of the current message */
	FP_STREAM,   /* streaming a section's bytes */
};

struct fetch_ctx {
	struct fetch_item items[FETCH_MAX_ITEMS];
	unsigned n_items;
	bool need_parsed, need_source, sets_seen, has_flags;
	unsigned preview_asked; /* PREVIEW items parsed so far */
	bool has_modseq;
	bool changedsince_set; /* FETCH modifier CHANGEDSINCE (RFC 7162 §3.1.4.1) */
	uint64_t changedsince;
	uint32_t *uids;
	size_t n_uids, pos;
	bool expunged;
	const char *fail; /* a BINARY item could not be decoded: the tagged NO */
	enum fetch_phase phase;
	unsigned item;
	/* The current message. */
	uint32_t seq;
	struct mail_info info;
	bool add_flags; /* \Seen was set: send FLAGS at the end */
	struct mail_stream *stream;
	struct msg_source src;
	struct msg_parsed *parsed;
	struct msg_reader *reader;
	uint64_t stream_left;
	char chunk[FETCH_CHUNK];
};

static void fetch_msg_free(struct fetch_ctx *f)
{
	msg_reader_free(&f->reader);
	msg_parsed_free(&f->parsed);
	mail_stream_free(&f->stream);
	memset(&f->src, 0, sizeof(f->src));
}

static void fetch_ctx_free(struct imap_cmd *cmd)
{
	struct fetch_ctx *f = cmd->ctx;
	if (!f)
		return;
	fetch_msg_free(f);
	for (unsigned i = 0; i < f->n_items; i++) {
		free(f->items[i].label);
		if (f->items[i].kind == FK_SECTION)
			msg_section_clear(&f->items[i].sec);
	}
	free(f->uids);
	free(f);
	cmd->ctx = NULL;
}

static struct fetch_item *item_add(struct fetch_ctx *f, enum fetch_kind kind)
{
	if (f->n_items >= FETCH_MAX_ITEMS)
		return NULL;
	/* Simple items are sent once even when asked twice. */
	if (kind != FK_SECTION)
		for (unsigned i = 0; i < f->n_items; i++)
			if (f->items[i].kind == kind)
				return &f->items[i];
	struct fetch_item *it = &f->items[f->n_items++];
	memset(it, 0, sizeof(*it));
	it->kind = kind;
	if (kind == FK_ENVELOPE || kind == FK_BODY || kind == FK_BODYSTRUCTURE)
		f->need_parsed = true;
	if (kind == FK_FLAGS)
		f->has_flags = true;
	if (kind == FK_MODSEQ)
		f->has_modseq = true;
	return it;
}

/* A section item: spec is the text between [ and ], tail what follows ']' ("<0.100>"). */
static bool section_add(struct fetch_ctx *f, const char *prefix, bool peek, const char *spec,
			const char *tail, const char *label_override)
{
	struct fetch_item *it = item_add(f, FK_SECTION);
	if (!it)
		return false;
	if (msg_section_parse(spec, strlen(spec), &it->sec) < 0) {
		f->n_items--;
		return false;
	}
	it->peek = peek;
	if (tail[0] == '<') {
		char *end;
		errno = 0;
		unsigned long long off = strtoull(tail + 1, &end, 10);
		if (errno || end == tail + 1 || *end != '.')
			goto bad;
		const char *lp = end + 1;
		unsigned long long len = strtoull(lp, &end, 10);
		if (errno || end == lp || *end != '>' || end[1] != '\0' || len == 0)
			goto bad;
		it->partial = true;
		it->p_off = off;
		it->p_len = len;
	} else if (tail[0] != '\0') {
		goto bad;
	}
	size_t need = strlen(prefix) + strlen(spec) + 32;
	it->label = malloc(need);
	if (!it->label)
		goto bad;
	if (label_override)
		snprintf(it->label, need, "%s", label_override);
	else if (it->partial)
		snprintf(it->label, need, "%s[%s]<%llu>", prefix, spec,
			 (unsigned long long)it->p_off);
	else
		snprintf(it->label, need, "%s[%s]", prefix, spec);
	f->need_parsed = true;
	f->need_source = true;
	if (!peek)
		f->sets_seen = true;
	return true;
bad:
	msg_section_clear(&it->sec);
	f->n_items--;
	return false;
}

/* BINARY[1.2]<p>, BINARY.PEEK[...], BINARY.SIZE[...]: rest is the text after '['. */
static bool binary_add(struct fetch_ctx *f, enum fetch_kind kind, bool peek, const char *rest)
{
	const char *close = strchr(rest, ']');
	if (!close)
		return false;
	struct fetch_item it = {.kind = kind, .peek = peek};
	const char *p = rest;
	while (p < close) {
		char *end;
		errno = 0;
		unsigned long v = strtoul(p, &end, 10);
		if (errno || end == p || v == 0 || v > UINT32_MAX || *p < '1' || *p > '9' ||
		    it.npath >= MSG_SECTION_MAX_PATH)
			return false;
		it.path[it.npath++] = (uint32_t)v;
		p = end;
		if (p < close && *p++ != '.')
			return false;
		if (p == close && close[-1] == '.')
			return false;
	}
	const char *tail = close + 1;
	if (tail[0] == '<' && kind == FK_BINARY) {
		char *end;
		errno = 0;
		unsigned long long off = strtoull(tail + 1, &end, 10);
		if (errno || end == tail + 1 || *end != '.')
			return false;
		const char *lp = end + 1;
		unsigned long long len = strtoull(lp, &end, 10);
		if (errno || end == lp || *end != '>' || end[1] != '\0' || len == 0)
			return false;
		it.partial = true;
		it.p_off = off;
		it.p_len = len;
	} else if (tail[0] != '\0') {
		return false;
	}
	struct fetch_item *slot = item_add(f, FK_SECTION); /* never merged with another */
	if (!slot)
		return false;
	size_t need = (size_t)(close - rest) + 48;
	it.label = malloc(need);
	if (!it.label) {
		f->n_items--;
		return false;
	}
	const char *name = kind == FK_BINARY_SIZE ? "BINARY.SIZE" : "BINARY";
	int k = snprintf(it.label, need, "%s[%.*s]", name, (int)(close - rest), rest);
	if (it.partial)
		snprintf(it.label + k, need - (size_t)k, "<%llu>", (unsigned long long)it.p_off);
	*slot = it;
	f->need_parsed = true;
	f->need_source = true;
	if (kind == FK_BINARY && !peek)
		f->sets_seen = true;
	return true;
}

/* Field names of HEADER.FIELDS as msg_section_parse reads them. */
static bool append_fields(char *out, size_t size, const struct imap_arg *list)
{
	size_t o = strlen(out);
	o += (size_t)snprintf(out + o, o < size ? size - o : 0, " (");
	for (unsigned i = 0; i < list->list_count; i++) {
		const char *name;
		size_t len;
		if (!imap_arg_get_astring(&list->list[i], &name, &len) || len == 0)
			return false;
		for (size_t k = 0; k < len; k++)
			if ((unsigned char)name[k] <= ' ' || name[k] == ':' || name[k] == '"' ||
			    name[k] == '\\' || name[k] == '(' || name[k] == ')' ||
			    (unsigned char)name[k] >= 0x7f)
				return false;
		o += (size_t)snprintf(out + o, o < size ? size - o : 0, "%s%s", i ? " " : "", name);
	}
	o += (size_t)snprintf(out + o, o < size ? size - o : 0, ")");
	return o < size;
}

/* Parse one item at args[*i] (it may span three args for HEADER.FIELDS). */
static bool parse_item(struct fetch_ctx *f, const struct imap_arg *args, unsigned n, unsigned *i)
{
	const char *atom;
	if (!imap_arg_get_atom(&args[*i], &atom))
		return false;
	static const struct {
		const char *name;
		enum fetch_kind kind;
	} simple[] = {
		{"UID", FK_UID},
		{"FLAGS", FK_FLAGS},
		{"INTERNALDATE", FK_INTERNALDATE},
		{"RFC822.SIZE", FK_SIZE},
		{"ENVELOPE", FK_ENVELOPE},
		{"BODY", FK_BODY},
		{"BODYSTRUCTURE", FK_BODYSTRUCTURE},
		{"MODSEQ", FK_MODSEQ},
		{"EMAILID", FK_EMAILID},
		{"THREADID", FK_THREADID},
		{"SAVEDATE", FK_SAVEDATE},
	};
	for (size_t k = 0; k < sizeof(simple) / sizeof(simple[0]); k++) {
		if (strcasecmp(atom, simple[k].name) == 0) {
			(*i)++;
			return item_add(f, simple[k].kind) != NULL;
		}
	}
	if (strcasecmp(atom, "PREVIEW") == 0) {
		/* RFC 8970: PREVIEW [(LAZY ...)] */
		(*i)++;
		bool lazy = false;
		if (*i < n && args[*i].type == IMAP_ARG_LIST) {
			const struct imap_arg *mods = &args[*i];
			if (mods->list_count == 0)
				return false;
			for (unsigned k = 0; k < mods->list_count; k++)
				if (!imap_arg_is(&mods->list[k], "LAZY"))
					return false;
			lazy = true;
			(*i)++;
		}
		struct fetch_item *it = item_add(f, FK_PREVIEW);
		if (it == NULL)
			return false;
		/* asked both ways: the non-lazy one wins */
		it->peek = f->preview_asked++ == 0 ? lazy : it->peek && lazy;
		return true;
	}
	if (strcasecmp(atom, "RFC822") == 0) {
		(*i)++;
		return section_add(f, "BODY", false, "", "", "RFC822");
	}
	if (strcasecmp(atom, "RFC822.HEADER") == 0) {
		(*i)++;
		return section_add(f, "BODY", true, "HEADER", "", "RFC822.HEADER");
	}
	if (strcasecmp(atom, "RFC822.TEXT") == 0) {
		(*i)++;
		return section_add(f, "BODY", false, "TEXT", "", "RFC822.TEXT");
	}
	bool peek;
	const char *rest;
	if (strncasecmp(atom, "BINARY[", 7) == 0) {
		(*i)++;
		return binary_add(f, FK_BINARY, false, atom + 7);
	}
	if (strncasecmp(atom, "BINARY.PEEK[", 12) == 0) {
		(*i)++;
		return binary_add(f, FK_BINARY, true, atom + 12);
	}
	if (strncasecmp(atom, "BINARY.SIZE[", 12) == 0) {
		(*i)++;
		return binary_add(f, FK_BINARY_SIZE, true, atom + 12);
	}
	if (strncasecmp(atom, "BODY[", 5) == 0) {
		peek = false;
		rest = atom + 5;
	} else if (strncasecmp(atom, "BODY.PEEK[", 10) == 0) {
		peek = true;
		rest = atom + 10;
	} else {
		return false;
	}
	char spec[1024];
	const char *close = strchr(rest, ']');
	if (close) {
		size_t len = (size_t)(close - rest);
		if (len >= sizeof(spec))
			return false;
		memcpy(spec, rest, len);
		spec[len] = '\0';
		(*i)++;
		return section_add(f, "BODY", peek, spec, close + 1, NULL);
	}
	/* BODY[HEADER.FIELDS (A B)]<p>: the atom, a list, then "]..." */
	if (*i + 2 >= n || args[*i + 1].type != IMAP_ARG_LIST ||
	    args[*i + 2].type != IMAP_ARG_ATOM || args[*i + 2].str[0] != ']')
		return false;
	if (strlen(rest) >= sizeof(spec) / 2)
		return false;
	snprintf(spec, sizeof(spec), "%s", rest);
	if (!append_fields(spec, sizeof(spec), &args[*i + 1]))
		return false;
	const char *tail = args[*i + 2].str + 1;
	*i += 3;
	return section_add(f, "BODY", peek, spec, tail, NULL);
}

static bool parse_items(struct fetch_ctx *f, const struct imap_arg *arg)
{
	if (arg->type == IMAP_ARG_ATOM) {
		if (imap_arg_is(arg, "ALL") || imap_arg_is(arg, "FAST") ||
		    imap_arg_is(arg, "FULL")) {
			item_add(f, FK_FLAGS);
			item_add(f, FK_INTERNALDATE);
			item_add(f, FK_SIZE);
			if (!imap_arg_is(arg, "FAST"))
				item_add(f, FK_ENVELOPE);
			if (imap_arg_is(arg, "FULL"))
				item_add(f, FK_BODY);
			return true;
		}
		unsigned i = 0;
		return parse_item(f, arg, 1, &i) && i == 1;
	}
	if (arg->type != IMAP_ARG_LIST || arg->list_count == 0)
		return false;
	unsigned i = 0;
	while (i < arg->list_count)
		if (!parse_item(f, arg->list, arg->list_count, &i))
			return false;
	return true;
}

static int open_source(struct imap_session *s, struct fetch_ctx *f)
{
	if (f->stream)
		return 0;
	int r = view_msg_open(s->view, f->seq, &f->stream);
	if (r < 0)
		return r;
	bool needs_crlf;
	int fd = mail_stream_fd(f->stream, &needs_crlf);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return -EIO;
	f->src = msg_source_fd(fd, (uint64_t)st.st_size);
	return 0;
}

static int load_parsed(struct imap_session *s, struct fetch_ctx *f)
{
	if (f->parsed)
		return 0;
	struct mailbox *mbox = view_mailbox(s->view);
	const void *blob;
	size_t len;
	if (mailbox_cache_get(mbox, f->info.uid, &blob, &len) == 0 &&
	    msg_parse_deserialize(blob, len, f->info.size, &f->parsed) == 0)
		return 0;
	int r = open_source(s, f);
	if (r < 0)
		return r;
	r = msg_parse(&f->src, NULL, &f->parsed);
	if (r < 0)
		return r;
	struct buf b;
	buf_init(&b, 1024 * 1024);
	if (msg_parse_serialize(f->parsed, &b) == 0)
		(void)mailbox_cache_put(mbox, f->info.uid, buf_peek(&b), buf_used(&b));
	buf_clear(&b);
	return 0;
}

/* PREVIEW (RFC 8970): the text kept with the parsed message (msg_parsed_preview). LAZY: only
 * when that is at hand without parsing (this FETCH parsed it already, or the folder's cache
 * has it), else NIL; the client asks again without LAZY when it wants it. */
static int write_preview(struct imap_session *s, struct fetch_ctx *f, bool lazy)
{
	if (lazy && !f->parsed) {
		const void *blob;
		size_t len;
		struct mailbox *mbox = view_mailbox(s->view);
		if (mailbox_cache_get(mbox, f->info.uid, &blob, &len) != 0 ||
		    msg_parse_deserialize(blob, len, f->info.size, &f->parsed) != 0) {
			conn_write_str(s->conn, "PREVIEW NIL");
			return 0;
		}
	}
	int r = load_parsed(s, f);
	if (r < 0)
		return r;
	size_t len;
	const char *text = msg_parsed_preview(f->parsed, &len);
	struct buf b;
	buf_init(&b, MSG_PREVIEW_MAX_CHARS * 4 + 64);
	r = msg_imapstr_string(&b, text, len);
	if (r == 0) {
		conn_write_str(s->conn, "PREVIEW ");
		conn_write(s->conn, buf_peek(&b), buf_used(&b));
	}
	buf_clear(&b);
	return r;
}

static void write_date(struct conn *c, const char *label, int64_t t)
{
	static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	conn_printf(c, "%s \"%2d-%s-%04d %02d:%02d:%02d +0000\"", label, tm.tm_mday, mon[tm.tm_mon],
		    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Start a section item: write its label and literal header, open the reader. Returns 1 when
 * bytes must be streamed, 0 when the item is complete, -errno on failure. */
static int section_start(struct imap_session *s, struct fetch_ctx *f, struct fetch_item *it)
{
	int r = open_source(s, f);
	if (r == 0)
		r = load_parsed(s, f);
	if (r < 0)
		return r;
	struct msg_range range;
	r = msg_section_resolve(f->parsed, &it->sec, &range);
	if (r == -ENOENT) {
		conn_printf(s->conn, "%s \"\"", it->label);
		return 0;
	}
	if (r < 0) {
		conn_printf(s->conn, "%s NIL", it->label);
		return 0;
	}
	if (it->sec.kind == MSG_SECTION_HEADER_FIELDS ||
	    it->sec.kind == MSG_SECTION_HEADER_FIELDS_NOT) {
		struct buf b;
		buf_init(&b, FETCH_FIELDS_MAX);
		r = msg_section_fields(&f->src, &range, &it->sec, &b);
		if (r < 0) {
			buf_clear(&b);
			return r;
		}
		size_t off = 0, len = buf_used(&b);
		if (it->partial) {
			off = it->p_off < len ? (size_t)it->p_off : len;
			len = len - off < it->p_len ? len - off : (size_t)it->p_len;
		}
		conn_printf(s->conn, "%s {%zu}\r\n", it->label, len);
		conn_write(s->conn, buf_peek(&b) + off, len);
		buf_clear(&b);
		return 0;
	}
	uint64_t skip = 0, len = range.size;
	if (it->partial) {
		skip = it->p_off < range.size ? it->p_off : range.size;
		len = range.size - skip < it->p_len ? range.size - skip : it->p_len;
	}
	conn_printf(s->conn, "%s {%llu}\r\n", it->label, (unsigned long long)len);
	if (len == 0)
		return 0;
	r = msg_reader_open(&f->src, &range, skip, MSG_READER_NUL_TO_80, &f->reader);
	if (r < 0)
		return r;
	f->stream_left = len;
	return 1;
}

/* A reader of the decoded content of it's part (the whole message for BINARY[]). */
static int binary_open(struct fetch_ctx *f, const struct fetch_item *it, struct msg_reader **r_r)
{
	if (it->npath > 0)
		return msg_binary_open(&f->src, f->parsed, it->path, it->npath, r_r);
	struct msg_section all = {.kind = MSG_SECTION_ALL};
	struct msg_range range;
	int r = msg_section_resolve(f->parsed, &all, &range);
	if (r < 0)
		return r;
	return msg_reader_open(&f->src, &range, 0, 0, r_r);
}

/* Decode once to learn the size and whether bytes [from, to) hold NUL (then a literal8 is
 * needed). */
static int binary_measure(struct fetch_ctx *f, const struct fetch_item *it, uint64_t from,
			  uint64_t to, uint64_t *size_r, bool *nul_r)
{
	struct msg_reader *rd;
	int r = binary_open(f, it, &rd);
	if (r < 0)
		return r;
	uint64_t n = 0;
	bool nul = false;
	ssize_t k;
	while ((k = msg_reader_read(rd, f->chunk, sizeof(f->chunk))) > 0) {
		uint64_t lo = from > n ? from - n : 0;
		uint64_t hi = to > n ? to - n : 0;
		if (hi > (uint64_t)k)
			hi = (uint64_t)k;
		if (!nul && lo < hi && memchr(f->chunk + lo, '\0', (size_t)(hi - lo)))
			nul = true;
		n += (uint64_t)k;
	}
	msg_reader_free(&rd);
	if (k < 0)
		return (int)k;
	*size_r = n;
	*nul_r = nul;
	return 0;
}

static const char *binary_error(int err)
{
	switch (err) {
	case -EOPNOTSUPP:
		return "[UNKNOWN-CTE] Unknown Content-Transfer-Encoding.";
	case -EBADMSG:
		return "[PARSE] Invalid encoded content.";
	default:
		return "[CANNOT] This part cannot be decoded.";
	}
}

/* Start a BINARY or BINARY.SIZE item: 1 when bytes must be streamed, 0 done, -errno. */
static int binary_start(struct imap_session *s, struct fetch_ctx *f, struct fetch_item *it)
{
	int r = open_source(s, f);
	if (r == 0)
		r = load_parsed(s, f);
	if (r < 0)
		return r;
	uint64_t size = 0; /* set by binary_measure on success; -O2 cannot see it */
	bool nul = false;
	uint64_t from = it->partial ? it->p_off : 0;
	uint64_t to = it->partial ? (it->p_off + it->p_len < it->p_off ? UINT64_MAX
								       : it->p_off + it->p_len)
				  : UINT64_MAX;
	r = binary_measure(f, it, from, to, &size, &nul);
	if (r < 0) {
		/* The part does not exist or cannot be decoded: NIL, and NO at the end. */
		if (r != -ENOENT)
			f->fail = binary_error(r);
		conn_printf(s->conn, "%s NIL", it->label);
		return 0;
	}
	if (it->kind == FK_BINARY_SIZE) {
		conn_printf(s->conn, "%s %llu", it->label, (unsigned long long)size);
		return 0;
	}
	uint64_t skip = 0, len = size;
	if (it->partial) {
		skip = it->p_off < size ? it->p_off : size;
		len = size - skip < it->p_len ? size - skip : it->p_len;
	}
	conn_printf(s->conn, "%s %s{%llu}\r\n", it->label, nul ? "~" : "", (unsigned long long)len);
	if (len == 0)
		return 0;
	r = binary_open(f, it, &f->reader);
	if (r < 0)
		return r;
	while (skip > 0) {
		size_t want = skip < sizeof(f->chunk) ? (size_t)skip : sizeof(f->chunk);
		ssize_t k = msg_reader_read(f->reader, f->chunk, want);
		if (k <= 0)
			return k < 0 ? (int)k : -EIO;
		skip -= (uint64_t)k;
	}
	f->stream_left = len;
	return 1;
}

/* Stream the current section. Returns 1 when done, 0 when output is full, -errno. */
static int section_stream(struct imap_session *s, struct fetch_ctx *f)
{
	while (f->stream_left > 0) {
		if (conn_output_blocked(s->conn))
			return 0;
		size_t want = f->stream_left < FETCH_CHUNK ? (size_t)f->stream_left : FETCH_CHUNK;
		ssize_t n = msg_reader_read(f->reader, f->chunk, want);
		if (n <= 0)
			return n < 0 ? (int)n : -EIO; /* shorter than announced */
		conn_write(s->conn, f->chunk, (size_t)n);
		f->stream_left -= (uint64_t)n;
	}
	msg_reader_free(&f->reader);
	return 1;
}

/* Start message f->uids[f->pos]. Returns 1 to write it, 0 to skip it. */
static int msg_start(struct imap_cmd *cmd, struct fetch_ctx *f)
{
	struct imap_session *s = cmd->s;
	uint32_t uid = f->uids[f->pos];
	if (view_uid_to_seq(s->view, uid, &f->seq) < 0)
		return 0;
	int r = view_msg_info(s->view, f->seq, &f->info);
	if (r == -ENOENT) {
		f->expunged = true;
		return 0;
	}
	if (r < 0)
		return 0;
	if (f->changedsince_set && f->info.modseq <= f->changedsince)
		return 0;
	f->add_flags = false;
	if (f->sets_seen && !s->readonly && !(f->info.flags & MAIL_SEEN)) {
		r = mailbox_store_flags(view_mailbox(s->view), s->view, &uid, 1, FLAG_OP_ADD,
					MAIL_SEEN, 0);
		if (r == 0) {
			f->info.flags |= MAIL_SEEN;
			f->add_flags = !f->has_flags;
			struct mail_info now;
			if (view_msg_info(s->view, f->seq, &now) == 0)
				f->info.modseq = now.modseq; /* the change has its own modseq */
		}
	}
	conn_printf(s->conn, "* %u FETCH (", f->seq);
	f->item = 0;
	return 1;
}

static int write_item(struct imap_cmd *cmd, struct fetch_ctx *f, struct fetch_item *it)
{
	struct imap_session *s = cmd->s;
	struct conn *c = s->conn;
	const char *str;
	size_t len;
	int r;
	switch (it->kind) {
	case FK_UID:
		conn_printf(c, "UID %u", f->info.uid);
		return 0;
	case FK_MODSEQ:
		conn_printf(c, "MODSEQ (%llu)", (unsigned long long)f->info.modseq);
		return 0;
	case FK_FLAGS: {
		char flags[2048];
		imap_format_flags(view_mailbox(s->view), f->info.flags, f->info.keywords, !s->rev2,
				  flags, sizeof(flags));
		conn_printf(c, "FLAGS (%s)", flags);
		return 0;
	}
	case FK_INTERNALDATE:
		write_date(c, "INTERNALDATE", f->info.internal_date);
		return 0;
	case FK_SAVEDATE:
		write_date(c, "SAVEDATE", f->info.save_date);
		return 0;
	case FK_EMAILID:
		conn_printf(c, "EMAILID (M%016llx)", (unsigned long long)f->info.email_id);
		return 0;
	case FK_THREADID:
		conn_write_str(c, "THREADID NIL");
		return 0;
	case FK_PREVIEW:
		return write_preview(s, f, it->peek);
	case FK_SIZE:
		conn_printf(c, "RFC822.SIZE %llu", (unsigned long long)f->info.size);
		return 0;
	case FK_ENVELOPE:
	case FK_BODY:
	case FK_BODYSTRUCTURE:
		r = load_parsed(s, f);
		if (r < 0)
			return r;
		if (it->kind == FK_ENVELOPE) {
			str = msg_parsed_envelope(f->parsed, &len);
			conn_write_str(c, "ENVELOPE ");
		} else if (it->kind == FK_BODY) {
			str = msg_parsed_body(f->parsed, &len);
			conn_write_str(c, "BODY ");
		} else {
			str = msg_parsed_bodystructure(f->parsed, &len);
			conn_write_str(c, "BODYSTRUCTURE ");
		}
		conn_write(c, str, len);
		return 0;
	case FK_SECTION:
		return section_start(s, f, it);
	case FK_BINARY:
	case FK_BINARY_SIZE:
		return binary_start(s, f, it);
	}
	return 0;
}

static enum cmd_result fetch_run(struct imap_cmd *cmd, struct fetch_ctx *f)
{
	struct imap_session *s = cmd->s;
	uint64_t start = uv_hrtime();
	bool progress = false;
	for (;;) {
		if (conn_is_closing(s->conn))
			return CMD_DONE;
		if (conn_output_blocked(s->conn))
			return CMD_MORE;
		switch (f->phase) {
		case FP_NEXT_MSG:
			if (f->pos >= f->n_uids) {
				if (f->fail)
					imap_cmd_reply(cmd, "NO", "%s", f->fail);
				else if (f->expunged)
					imap_cmd_reply(
						cmd, "NO",
						"[EXPUNGEISSUED] Some messages were expunged "
						"meanwhile.");
				else
					imap_cmd_reply(cmd, "OK", "Fetch completed.");
				return CMD_DONE;
			}
			/* Parsing cold messages takes time: let other sessions in between. */
			if (progress && uv_hrtime() - start >= IMAP_SLICE_NS)
				return imap_cmd_yield(cmd);
			progress = true;
			if (msg_start(cmd, f) == 0) {
				f->pos++;
				continue;
			}
			f->phase = FP_ITEMS;
			continue;
		case FP_ITEMS: {
			if (f->item >= f->n_items) {
				if (f->add_flags) {
					char flags[2048];
					imap_format_flags(view_mailbox(s->view), f->info.flags,
							  f->info.keywords, !s->rev2, flags,
							  sizeof(flags));
					conn_printf(s->conn, " FLAGS (%s)", flags);
					if (s->condstore && !f->has_modseq)
						conn_printf(s->conn, " MODSEQ (%llu)",
							    (unsigned long long)f->info.modseq);
				}
				conn_write_str(s->conn, ")\r\n");
				fetch_msg_free(f);
				f->pos++;
				f->phase = FP_NEXT_MSG;
				continue;
			}
			struct fetch_item *it = &f->items[f->item++];
			if (f->item > 1)
				conn_write_str(s->conn, " ");
			int r = write_item(cmd, f, it);
			if (r < 0)
				goto failed;
			if (r == 1)
				f->phase = FP_STREAM;
			continue;
		}
		case FP_STREAM: {
			int r = section_stream(s, f);
			if (r < 0)
				goto failed;
			if (r == 0)
				return CMD_MORE;
			f->phase = FP_ITEMS;
			continue;
		}
		}
	}
failed:
	/* Part of a response is out already: the stream cannot be repaired. */
	log_warn("conn=%llu event=imap_fetch_failed uid=%u", (unsigned long long)conn_id(s->conn),
		 f->info.uid);
	imap_session_bye(s, "Internal error while reading a message.");
	return CMD_DONE;
}

/* (CHANGEDSINCE modseq [VANISHED]): NULL, or the BAD text. */
static const char *parse_modifiers(struct imap_session *s, struct imap_cmd *cmd,
				   struct fetch_ctx *f, const struct imap_arg *list,
				   bool *vanished_r)
{
	*vanished_r = false;
	if (list->list_count == 0)
		return "Invalid FETCH modifiers.";
	for (unsigned i = 0; i < list->list_count; i++) {
		const struct imap_arg *a = &list->list[i];
		if (imap_arg_is(a, "CHANGEDSINCE") && !f->changedsince_set &&
		    i + 1 < list->list_count &&
		    imap_arg_modseq(&list->list[i + 1], true, &f->changedsince)) {
			/* CHANGEDSINCE 0 is taken as "everything" (iOS sends it) */
			f->changedsince_set = true;
			i++;
		} else if (imap_arg_is(a, "VANISHED") && !*vanished_r) {
			*vanished_r = true;
		} else {
			return "Invalid FETCH modifiers.";
		}
	}
	if (*vanished_r) {
		if (!cmd->uid || !s->qresync)
			return "VANISHED needs UID FETCH with QRESYNC enabled.";
		if (!f->changedsince_set)
			return "VANISHED needs CHANGEDSINCE.";
	}
	return NULL;
}

enum cmd_result imap_cmd_fetch(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	if (cmd->ctx)
		return fetch_run(cmd, cmd->ctx);
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	if (args[0].type == IMAP_ARG_EOL || args[1].type == IMAP_ARG_EOL) {
		imap_cmd_reply(cmd, "BAD", "FETCH needs a sequence set and items.");
		return CMD_DONE;
	}
	struct fetch_ctx *f = calloc(1, sizeof(*f));
	if (!f) {
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return CMD_DONE;
	}
	cmd->ctx = f;
	cmd->ctx_free = fetch_ctx_free;
	if (cmd->uid || s->qresync)
		item_add(f, FK_UID); /* with QRESYNC every FETCH names its UID (RFC 7162 §3.2.4) */
	/* One item without parentheses may span several args: BODY[HEADER.FIELDS (A)]. */
	unsigned n_items = 0;
	while (args[1 + n_items].type != IMAP_ARG_EOL)
		n_items++;
	/* FETCH modifiers (RFC 4466 §2.4): a list after the items. */
	bool vanished = false;
	if (n_items >= 2 && args[n_items].type == IMAP_ARG_LIST) {
		const char *bad = parse_modifiers(s, cmd, f, &args[n_items], &vanished);
		if (bad) {
			imap_cmd_reply(cmd, "BAD", "%s", bad);
			return CMD_DONE;
		}
		n_items--;
	}
	bool parsed;
	if (n_items == 1) {
		parsed = parse_items(f, &args[1]);
	} else {
		unsigned i = 0;
		parsed = args[1].type == IMAP_ARG_ATOM && parse_item(f, &args[1], n_items, &i) &&
			 i == n_items;
	}
	if (!parsed) {
		imap_cmd_reply(cmd, "BAD", "Invalid FETCH items.");
		return CMD_DONE;
	}
	if (f->has_modseq || f->changedsince_set)
		imap_condstore_enable(s); /* CONDSTORE-enabling (RFC 7162 §3.1) */
	if (f->changedsince_set)
		item_add(f, FK_MODSEQ);
	else if (s->condstore && f->has_flags)
		item_add(f, FK_MODSEQ); /* flags are reported with their modseq */
	struct imap_seqset set;
	imap_seqset_init(&set);
	if (!imap_arg_seqset(cmd, &args[0], &set)) {
		imap_seqset_free(&set);
		return CMD_DONE;
	}
	if (vanished) {
		/* RFC 7162 §3.2.6: expunged UIDs of the set first; `*` reaches UIDNEXT-1 */
		struct imap_seqset known;
		imap_seqset_init(&known);
		r = imap_seqset_copy(&known, &set);
		if (r == 0) {
			imap_seqset_resolve(&known, mailbox_uidnext(view_mailbox(s->view)) - 1);
			r = imap_vanished_earlier(s, f->changedsince, &known);
		}
		imap_seqset_free(&known);
		if (r < 0) {
			imap_seqset_free(&set);
			imap_cmd_reply_error(cmd, r);
			return CMD_DONE;
		}
	}
	r = imap_seqset_to_uids(s, &set, cmd->uid, &f->uids, &f->n_uids);
	imap_seqset_free(&set);
	if (r == -EINVAL) {
		imap_cmd_reply(cmd, "BAD", "Invalid message sequence number.");
		return CMD_DONE;
	}
	if (r < 0) {
		imap_cmd_reply_error(cmd, r);
		return CMD_DONE;
	}
	return fetch_run(cmd, f);
}
