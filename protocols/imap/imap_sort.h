/* imap_sort — the parts of SORT and THREAD (RFC 5256, RFC 5267, RFC 5957) that need no session:
 * the sort keys of one message taken from its cached ENVELOPE, base-subject extraction, the
 * sent date, Message-ID lists, and the two threading algorithms. The commands are in
 * imap_sort.c (SORT, UID SORT, ESORT) and imap_thread.c (THREAD, UID THREAD); everything here
 * is pure, so tests/unit/test_imap_sort.c checks it directly.
 *
 * Strings are compared with i;unicode-casemap (storage/unicode_casemap.h): a key is stored in
 * its comparison form and compared octet by octet.
 */
#ifndef MK_IMAP_SORT_H
#define MK_IMAP_SORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Base subject (RFC 5256 §2.1) of a Subject field value as written in the message: RFC 2047
 * encoded words decoded to UTF-8, tabs and line ends made spaces, runs of spaces made one, then
 * the subj-trailer / subj-leader / subj-blob / "[fwd: ...]" rules applied until nothing
 * changes. The result (UTF-8, not casemapped) is appended to OUT. *reply_r (may be NULL) tells
 * whether a subj-refwd, a "(fwd)" trailer or a "[fwd: ...]" wrapper was removed: the message
 * is a reply or forward (RFC 5256 §2.1 note, REFERENCES step 5). Returns 0 or -ENOBUFS/-ENOMEM. */
int imap_base_subject(const char *raw, size_t len, struct buf *out, bool *reply_r);

/* An RFC 5322 date-time ("[Day,] 1 Feb 1994 12:00[:00] +0100", obsolete zones, two-digit
 * years, comments) as seconds since the epoch, UTC. false when it cannot be parsed (the caller
 * then uses the internal date, RFC 5256 §2.2). */
bool imap_sent_date_parse(const char *s, size_t len, int64_t *time_r);

/* The next msg-id "<...>" in S[*pos..len): *pos moves past it; *id_r and *id_len_r point at the
 * text between the angle brackets. An id must be non-empty, without white space, '<' or '>'
 * (comments and other text between ids are skipped). false when there is none left. */
bool imap_msgid_next(const char *s, size_t len, size_t *pos, const char **id_r, size_t *id_len_r);

/* The msg-ids of S[0..len) (imap_msgid_next's), only the last MAX of them, as one malloc'd
 * block the caller free()s: (*ids_r)[0..*n_r) point at NUL-terminated copies (without the
 * angle brackets) inside it, in order; the block holds only the ids kept, so a References
 * field of thousands of ids costs at most MAX of them. *ids_r NULL when there is none.
 * Returns 0 or -ENOMEM. */
int imap_msgid_list(const char *s, size_t len, size_t max, char ***ids_r, size_t *n_r);

/* What SORT and THREAD take from a message's ENVELOPE (msg_parsed_envelope's string). */
enum imap_env_addr { IMAP_ENV_FROM, IMAP_ENV_TO, IMAP_ENV_CC, IMAP_ENV_NADDR };
struct imap_env_keys {
	struct buf date;        /* the Date value as written; empty when NIL */
	struct buf subject;     /* the Subject value as written */
	struct buf in_reply_to; /* as written */
	struct buf message_id;  /* as written */
	/* Of the first address of From, To, Cc (a group's start counts, its mailbox being the
	 * group name, as in Dovecot): the addr-mailbox, and the display name (RFC 2047 decoded)
	 * or, when it has none, mailbox@host (RFC 5957; just the mailbox for a group). */
	struct buf mailbox[IMAP_ENV_NADDR];
	struct buf display[IMAP_ENV_NADDR];
};
void imap_env_keys_init(struct imap_env_keys *k);
void imap_env_keys_clear(struct imap_env_keys *k);
/* Parse ENV[0..len) ("(date subject from sender reply-to to cc bcc in-reply-to message-id)",
 * strings quoted or literal) into K (cleared first). Returns 0, -EINVAL when it is not an
 * envelope, -ENOBUFS/-ENOMEM. */
int imap_env_keys_parse(const char *env, size_t len, struct imap_env_keys *k);

/* ---- threading (RFC 5256 §3) ---- */

enum imap_thread_alg {
	IMAP_THREAD_ORDEREDSUBJECT,
	IMAP_THREAD_REFERENCES,
};

/* One message, in mailbox order (its index breaks ties of equal dates, RFC 5256 §2.2). */
struct imap_thread_msg {
	uint32_t id;         /* what the answer shows: the sequence number or the UID */
	int64_t date;        /* sent date, UTC (the internal date when there is none) */
	const char *subject; /* base subject in comparison form (NUL-terminated, "" for none) */
	bool reply;          /* imap_base_subject's *reply_r */
	/* REFERENCES only: the Message-ID (without <>; NULL when none or invalid) and the
	 * parent chain, oldest first: the ids of References, or when it has no valid id the
	 * first valid id of In-Reply-To (§3 step 1). */
	const char *message_id;
	const char *const *refs;
	size_t nrefs;
};

/* Thread MSGS[0..n) and append the THREAD response's data ("(1 2)(3 (4)(5))", nothing for no
 * messages) to OUT. Time O(n log n) plus the loop checks along parent chains; memory O(n +
 * references). Returns 0, -ENOBUFS (OUT's bound) or -ENOMEM. */
int imap_thread_build(enum imap_thread_alg alg, const struct imap_thread_msg *msgs, size_t n,
		      struct buf *out);

/* ---- the collector SORT and THREAD share (imap_sort.c) ---- */

struct imap_cmd;
struct imap_arg;
struct search_ctx;

/* String keys, in comparison form (NULL for the empty string). */
enum imap_sort_str {
	SORT_SUBJECT, /* base subject */
	SORT_FROM,
	SORT_TO,
	SORT_CC,
	SORT_DISPLAYFROM,
	SORT_DISPLAYTO,
	SORT_NSTR,
};
/* What to load: 1 << enum imap_sort_str, and these. */
#define SORT_NEED_DATE (1u << SORT_NSTR)
#define SORT_NEED_REFS (1u << (SORT_NSTR + 1)) /* Message-ID and the parent chain */

struct imap_sort_msg {
	uint32_t seq, uid;
	uint64_t size;
	int64_t arrival, date; /* internal date; sent date (SORT_NEED_DATE, else internal) */
	bool reply;            /* with SORT_SUBJECT: imap_base_subject's *reply_r */
	char *str[SORT_NSTR];
	char *message_id; /* SORT_NEED_REFS: without <>, NULL when none */
	char **refs;      /* SORT_NEED_REFS: the parent chain, oldest first (one allocation) */
	size_t nrefs;
};

struct imap_session;
struct imap_sort_collect;
/* The ordering phase (SORT's sort, THREAD's threading): reads C->msgs and C->order_arg only,
 * writes C->msgs' order, C->out and C->order_err. It runs on libuv's thread pool. */
typedef void imap_sort_order_fn(struct imap_sort_collect *c);

struct imap_sort_collect {
	struct search_ctx *search; /* until the search is done */
	unsigned need;
	struct imap_sort_msg *msgs; /* the matches, in mailbox order */
	size_t n, cap, next;
	bool modseq; /* the search had a MODSEQ key */
	uint64_t highest_modseq;
	struct imap_env_keys keys; /* scratch */
	/* The ordering phase on the thread pool (imap_sort_collect_run): everything it reads is
	 * the collector's own, so a command that goes away meanwhile leaves the collector to
	 * be freed when the work ends. */
	imap_sort_order_fn *order_fn;
	void *order_arg;        /* the command's settings the order reads (free()d with C) */
	struct buf out;         /* the order's output, if it writes one */
	int order_err;          /* set by the order */
	int order_state;        /* 0 not queued, 1 on the pool, 2 done */
	struct imap_session *s; /* woken when the order is done; NULL once the command is gone */
	void *work;             /* the uv_work_t */
};

/* ARGS: charset and search keys. Answers BAD/NO itself and returns <0 on a bad charset or
 * search program. */
int imap_sort_collect_start(struct imap_cmd *cmd, const struct imap_arg *args, unsigned need,
			    struct imap_sort_collect **c_r);
/* The ordering phase FN with ARG (malloc'd; the collector owns it from here). */
void imap_sort_collect_set_order(struct imap_sort_collect *c, imap_sort_order_fn *fn, void *arg);
/* Search, load keys, then the order on the thread pool: 1 when done, 0 when the slice is used
 * up (yield and call again), 2 while the order runs on the pool (return CMD_MORE: the end of
 * the work wakes the session), <0 when the command was answered (NO). */
int imap_sort_collect_run(struct imap_cmd *cmd, struct imap_sort_collect *c);
void imap_sort_collect_free(struct imap_sort_collect **cp);
/* Answer a refused SORT/THREAD (BAD, or NO with a code) and log why. */
void imap_sort_refuse(struct imap_cmd *cmd, const char *status, const char *text);

#endif
