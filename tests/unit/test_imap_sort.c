/* imap_sort.h: base subject (RFC 5256 §2.1), sent dates (§2.2), Message-ID lists, the keys
 * taken from an ENVELOPE string, and both threading algorithms (§3), with exact answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_sort.h"

static const char *str_of(const struct buf *b)
{
	static char out[4096];
	size_t n = buf_used(b) < sizeof(out) - 1 ? buf_used(b) : sizeof(out) - 1;
	memcpy(out, b->data ? buf_peek(b) : "", n);
	out[n] = '\0';
	return out;
}

static bool last_reply;

static const char *base(const char *subject)
{
	struct buf b;
	buf_init(&b, 4096);
	assert_int_equal(imap_base_subject(subject, strlen(subject), &b, &last_reply), 0);
	const char *s = str_of(&b);
	buf_clear(&b);
	return s;
}

#define BASE(in, want, reply)                                                                      \
	do {                                                                                       \
		assert_string_equal(base(in), want);                                               \
		assert_int_equal(last_reply, reply);                                               \
	} while (0)

static void test_base_subject_leaders(void **state)
{
	BASE("hello", "hello", false);
	BASE("Re: hello", "hello", true);
	BASE("RE: Re: re[2]: hello", "hello", true);
	BASE("Fwd: hello", "hello", true);
	BASE("FW: hello", "hello", true);
	BASE("fw[x]: hello", "hello", true);
	BASE("Re :hello", "hello", true);
	BASE("Fwd:Re: [x] Re: a", "a", true);
	BASE("re hello", "re hello", false);
	BASE("Reply: hello", "Reply: hello", false);
	BASE("Re:", "", true);
	BASE("", "", false);
	BASE("   ", "", false);
}

static void test_base_subject_blobs(void **state)
{
	BASE("[list] Re: hello", "hello", true);
	BASE("[list] hello", "hello", false);
	BASE("[a][b] hello", "hello", false);
	BASE("[list]", "[list]", false);
	BASE("[list]   ", "[list]", false);
	BASE("Re: [list]", "[list]", true);
	BASE("[a] [b]", "[b]", false);
	BASE("[unclosed hello", "[unclosed hello", false);
}

static void test_base_subject_trailers(void **state)
{
	BASE("hello (fwd)", "hello", true);
	BASE("hello (FWD)  (fwd) ", "hello", true);
	BASE("hello(fwd)", "hello", true);
	BASE("(fwd)", "", true);
	BASE("hello (fwd) x", "hello (fwd) x", false);
}

static void test_base_subject_fwd_wrapper(void **state)
{
	BASE("[fwd: hello]", "hello", true);
	BASE("[FWD: hello]", "hello", true);
	BASE("Re: [fwd: Re: hello (fwd)]", "hello", true);
	BASE("[fwd: [fwd: hello]]", "hello", true); /* not a blob ('[' inside): unwrapped twice */
	BASE("[fwd: hello", "[fwd: hello", false);
}

static void test_base_subject_white_space_and_2047(void **state)
{
	BASE("  hello \t  world  ", "hello world", false);
	BASE("hello\r\n world", "hello world", false);
	BASE("=?utf-8?q?Re=3A_caf=C3=A9?=", "caf\xc3\xa9", true);
	BASE("=?ISO-8859-1?Q?Fwd:_=E9t=E9?= (fwd)", "\xc3\xa9t\xc3\xa9", true);
	BASE("Re: =?utf-8?b?w6l0w6k=?=", "\xc3\xa9t\xc3\xa9", true);
	/* two encoded words: the white space between them is dropped (RFC 2047 §6.2) */
	BASE("=?utf-8?q?a?= =?utf-8?q?b?=", "ab", false);
}

static void test_sent_date(void **state)
{
	int64_t t;
	assert_true(imap_sent_date_parse("Wed, 01 Jan 2020 12:00:00 +0200", 31, &t));
	assert_int_equal(t, 1577872800);
	const char *d = "1 Jan 2020 12:00 -0500";
	assert_true(imap_sent_date_parse(d, strlen(d), &t));
	assert_int_equal(t, 1577898000);
	d = "Wed, 1 Jan 20 12:00:00 GMT";
	assert_true(imap_sent_date_parse(d, strlen(d), &t));
	assert_int_equal(t, 1577880000);
	d = "Thu, 1 Jan 70 00:00:00 EST";
	assert_true(imap_sent_date_parse(d, strlen(d), &t));
	assert_int_equal(t, 5 * 3600);
	d = "Wed, 01 Jan 2020 12:00:00 +0000 (UTC)";
	assert_true(imap_sent_date_parse(d, strlen(d), &t));
	assert_int_equal(t, 1577880000);
	d = "(comment) 29 Feb 2000 23:59:59 +1400";
	assert_true(imap_sent_date_parse(d, strlen(d), &t));
	assert_int_equal(t, 951868799 - 14 * 3600);
	d = "01 Jan 1960 00:00:00 +0000";
	assert_true(imap_sent_date_parse(d, strlen(d), &t));
	assert_int_equal(t, -315619200);
	static const char *const bad[] = {"", "garbage", "32 Jan 2020 10:00", "1 Foo 2020 10:00",
					  "1 Jan 2020", "1 Jan 2020 25:00", "1 Jan 2020 10",
					  /* a day the month does not have is no date (the internal
					   * date counts, as in Dovecot), not the 3rd of March */
					  "Sun, 31 Feb 2021 10:00:00 +0000", "29 Feb 2100 10:00",
					  "31 Apr 2021 10:00"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(imap_sent_date_parse(bad[i], strlen(bad[i]), &t));
}

static void test_msgid(void **state)
{
	const char *s = " <a@b> (c) <x y> <> <c@d><e@f>junk<g";
	size_t pos = 0, len;
	const char *id;
	char got[256] = "";
	while (imap_msgid_next(s, strlen(s), &pos, &id, &len)) {
		strncat(got, id, len);
		strcat(got, "|");
	}
	assert_string_equal(got, "a@b|c@d|e@f|");
	assert_int_equal(pos, strlen(s));
}

/* A References field of 1,000 ids keeps the last 256, and its block holds only those: a
 * hostile 64 KB References costs a THREAD 256 ids, not 64 KB, per message. */
static void test_msgid_list(void **state)
{
	static char refs[80 * 1000];
	size_t len = 0;
	for (int i = 0; i < 1000; i++)
		len += (size_t)snprintf(
			refs + len, sizeof(refs) - len,
			"<%03d.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx@example.org>\r\n ", i);
	char **ids;
	size_t n;
	assert_int_equal(imap_msgid_list(refs, len, 256, &ids, &n), 0);
	assert_int_equal(n, 256);
	assert_string_equal(ids[0], "744.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx@example.org");
	assert_string_equal(ids[255], "999.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx@example.org");
	/* the last id ends the block: pointers, then exactly the 256 kept strings */
	size_t block = 256 * sizeof(char *) + 256 * (strlen(ids[0]) + 1);
	assert_ptr_equal(ids[255] + strlen(ids[255]) + 1, (char *)ids + block);
	assert_true(malloc_usable_size(ids) < block + 64);
	free(ids);
	/* fewer than MAX: all of them; none: NULL */
	assert_int_equal(imap_msgid_list(" <a@b> x <c@d>", 14, 256, &ids, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(ids[0], "a@b");
	assert_string_equal(ids[1], "c@d");
	free(ids);
	assert_int_equal(imap_msgid_list("no ids", 6, 256, &ids, &n), 0);
	assert_int_equal(n, 0);
	assert_null(ids);
}

static void test_envelope_keys(void **state)
{
	const char *env =
		"(\"Wed, 01 Jan 2020 12:00:00 +0200\" {8}\r\nRe: \"hi\" "
		"((\"=?utf-8?q?Z=C3=A9d?=\" NIL \"zed\" \"x.org\")(NIL NIL \"b\" \"y.org\")) "
		"NIL NIL ((NIL NIL \"team\" NIL)(NIL NIL \"t\" \"y.org\")(NIL NIL NIL NIL)) "
		"((\"\" NIL \"cc\" \"z.org\")) NIL \"<p@x>\" \"<m@x>\")";
	struct imap_env_keys k;
	imap_env_keys_init(&k);
	assert_int_equal(imap_env_keys_parse(env, strlen(env), &k), 0);
	assert_string_equal(str_of(&k.date), "Wed, 01 Jan 2020 12:00:00 +0200");
	assert_string_equal(str_of(&k.subject), "Re: \"hi\"");
	assert_string_equal(str_of(&k.mailbox[IMAP_ENV_FROM]), "zed");
	assert_string_equal(str_of(&k.display[IMAP_ENV_FROM]), "Z\xc3\xa9"
							       "d");
	/* a group's start is the first address: its name is the mailbox */
	assert_string_equal(str_of(&k.mailbox[IMAP_ENV_TO]), "team");
	assert_string_equal(str_of(&k.display[IMAP_ENV_TO]), "team");
	/* an empty display name falls back to the address */
	assert_string_equal(str_of(&k.display[IMAP_ENV_CC]), "cc@z.org");
	assert_string_equal(str_of(&k.in_reply_to), "<p@x>");
	assert_string_equal(str_of(&k.message_id), "<m@x>");

	const char *nil = "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)";
	assert_int_equal(imap_env_keys_parse(nil, strlen(nil), &k), 0);
	assert_int_equal(buf_used(&k.subject), 0);
	assert_int_equal(buf_used(&k.mailbox[IMAP_ENV_FROM]), 0);
	/* quoted-specials escaped; nil in any case */
	const char *esc = "(NIL \"a\\\"b\\\\c\" NIL NIL NIL NIL NIL NIL NIL nil)";
	assert_int_equal(imap_env_keys_parse(esc, strlen(esc), &k), 0);
	assert_string_equal(str_of(&k.subject), "a\"b\\c");
	static const char *const bad[] = {"",
					  "(",
					  "(NIL NIL",
					  "(\"x",
					  "(NIL \"x\\",
					  "({5}\r\nab NIL)",
					  "(NIL NIL (NIL) NIL NIL NIL NIL NIL NIL NIL)"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(imap_env_keys_parse(bad[i], strlen(bad[i]), &k), -EINVAL);
	imap_env_keys_clear(&k);
}

/* ---- threads ---- */

struct tm_spec {
	int64_t date;
	const char *subject; /* comparison form */
	bool reply;
	const char *id;
	const char *refs[4];
};

static const char *thread(enum imap_thread_alg alg, const struct tm_spec *spec, size_t n)
{
	static char out[4096];
	struct imap_thread_msg msgs[32];
	assert_true(n <= 32);
	for (size_t i = 0; i < n; i++) {
		size_t nrefs = 0;
		while (nrefs < 4 && spec[i].refs[nrefs])
			nrefs++;
		msgs[i] = (struct imap_thread_msg){
			.id = (uint32_t)i + 1,
			.date = spec[i].date,
			.subject = spec[i].subject,
			.reply = spec[i].reply,
			.message_id = spec[i].id,
			.refs = spec[i].refs,
			.nrefs = nrefs,
		};
	}
	struct buf b;
	buf_init(&b, sizeof(out) - 1);
	assert_int_equal(imap_thread_build(alg, msgs, n, &b), 0);
	snprintf(out, sizeof(out), "%s", str_of(&b));
	buf_clear(&b);
	return out;
}

#define REF(...)                                                                                   \
	thread(IMAP_THREAD_REFERENCES, (const struct tm_spec[]){__VA_ARGS__},                      \
	       sizeof((const struct tm_spec[]){__VA_ARGS__}) / sizeof(struct tm_spec))
#define OSUBJ(...)                                                                                 \
	thread(IMAP_THREAD_ORDEREDSUBJECT, (const struct tm_spec[]){__VA_ARGS__},                  \
	       sizeof((const struct tm_spec[]){__VA_ARGS__}) / sizeof(struct tm_spec))

static void test_thread_empty(void **state)
{
	struct buf b;
	buf_init(&b, 16);
	assert_int_equal(imap_thread_build(IMAP_THREAD_REFERENCES, NULL, 0, &b), 0);
	assert_int_equal(imap_thread_build(IMAP_THREAD_ORDEREDSUBJECT, NULL, 0, &b), 0);
	assert_int_equal(buf_used(&b), 0);
	buf_clear(&b);
}

static void test_references_chains(void **state)
{
	/* a chain: only children, no parentheses inside */
	assert_string_equal(REF({10, "A", false, "a", {NULL}}, {20, "A", true, "b", {"a"}},
				{30, "A", true, "c", {"a", "b"}}),
			    "(1 2 3)");
	/* two replies to one message, by date; then a separate thread sorted by date */
	assert_string_equal(REF({10, "A", false, "a", {NULL}}, {40, "A", true, "b", {"a"}},
				{30, "A", true, "c", {"a"}}, {20, "B", false, "d", {NULL}}),
			    "(1 (3)(2))(4)");
	/* the RFC's shape: (2)(3 6 (4 23)(44 7 96)) with ids 1..8 */
	assert_string_equal(REF({1, "X", false, "m2", {NULL}}, {2, "Y", false, "m3", {NULL}},
				{3, "Y", true, "m6", {"m3"}}, {4, "Y", true, "m4", {"m3", "m6"}},
				{5, "Y", true, "m23", {"m3", "m6", "m4"}},
				{6, "Y", true, "m44", {"m3", "m6"}},
				{7, "Y", true, "m7", {"m3", "m6", "m44"}},
				{8, "Y", true, "m96", {"m6", "m44", "m7"}}),
			    "(1)(2 3 (4 5)(6 7 8))");
	/* In-Reply-To stands in for References (the collector passes its first id as refs) */
	assert_string_equal(REF({10, "A", false, "a", {NULL}}, {20, "A", true, "b", {"a"}}),
			    "(1 2)");
}

static void test_references_missing_parents(void **state)
{
	/* two replies to a message we do not have: a dummy parent with both, kept at the top */
	assert_string_equal(REF({10, "A", true, "b", {"x"}}, {20, "A", true, "c", {"x"}}),
			    "((1)(2))");
	/* a dummy with one child at the top is replaced by the child */
	assert_string_equal(REF({10, "A", true, "b", {"x"}}), "(1)");
	/* a dummy inside a thread: its children move up to its parent */
	assert_string_equal(REF({10, "A", false, "a", {NULL}}, {20, "A", true, "b", {"a", "x"}},
				{30, "A", true, "c", {"a", "x"}}),
			    "(1 (2)(3))");
	/* a top-level dummy sorts by its first child's date */
	assert_string_equal(REF({50, "A", true, "b", {"x"}}, {15, "A", true, "c", {"x"}},
				{20, "B", false, "d", {NULL}}),
			    "((2)(1))(3)");
	/* dummies nested in dummies */
	assert_string_equal(REF({10, "A", true, "b", {"x", "y"}}, {20, "A", true, "c", {"x", "z"}}),
			    "((1)(2))");
}

static void test_references_links(void **state)
{
	/* 1.A keeps an existing link: b's parent stays a although c's References say x b */
	assert_string_equal(REF({10, "A", false, "a", {NULL}}, {20, "A", true, "b", {"a"}},
				{30, "A", true, "c", {"x", "b"}}),
			    "(1 2 3)");
	/* 1.B replaces the parent a message got from others' References by its own */
	assert_string_equal(REF({20, "A", true, "a", {"x", "c"}}, {10, "A", true, "c", {"y"}}),
			    "(2 1)");
	/* no References: a message referenced under another parent becomes a root itself */
	assert_string_equal(REF({20, "A", true, "a", {"x", "c"}}, {10, "B", false, "c", {NULL}},
				{30, "C", false, "d", {NULL}}),
			    "(2 1)(3)");
}

static void test_references_loops_and_duplicates(void **state)
{
	/* mutual References: the second link would close a loop and is not made */
	assert_string_equal(REF({10, "A", false, "a", {"b"}}, {20, "B", false, "b", {"a"}}),
			    "(2 1)");
	/* a message that references itself */
	assert_string_equal(REF({10, "A", false, "a", {"a"}}), "(1)");
	/* References ending with the message's own id: the link 1.A made to it is broken in
	 * 1.B and none made (RFC 5256 §3 1.B; Dovecot answers the same) */
	assert_string_equal(REF({10, "A", false, "x", {NULL}}, {20, "B", false, "y", {"x", "y"}}),
			    "(1)(2)");
	/* a message whose last reference is its own descendant becomes a root: b1 under b2
	 * (1.A of the first) is undone, b2 goes under b1, b3 under b2 */
	assert_string_equal(REF({10, "A", false, "b1", {"b2", "b1"}},
				{20, "B", false, "b2", {"b1"}},
				{30, "C", false, "b3", {"b1", "b3", "b2"}}),
			    "(1 2 3)");
	/* a loop inside one References list: a b a */
	assert_string_equal(REF({10, "A", false, "c", {"a", "b", "a"}}), "(1)");
	/* duplicate Message-IDs: the second is a message of its own; references go to the first */
	assert_string_equal(REF({10, "A", false, "a", {NULL}}, {20, "B", false, "a", {NULL}},
				{30, "A", true, "c", {"a"}}),
			    "(1 3)(2)");
	/* messages without a Message-ID are threads of their own */
	assert_string_equal(REF({10, "A", false, NULL, {NULL}}, {20, "B", false, NULL, {NULL}}),
			    "(1)(2)");
}

static void test_references_subjects(void **state)
{
	/* step 5: a reply with the same base subject goes under the original */
	assert_string_equal(
		REF({10, "HELLO", false, "a", {NULL}}, {20, "HELLO", true, "b", {NULL}}), "(1 2)");
	/* ... also when the reply is older */
	assert_string_equal(
		REF({20, "HELLO", false, "a", {NULL}}, {10, "HELLO", true, "b", {NULL}}), "(1 2)");
	/* two originals with one subject: a new dummy holds both */
	assert_string_equal(
		REF({10, "HELLO", false, "a", {NULL}}, {20, "HELLO", false, "b", {NULL}}),
		"((1)(2))");
	/* two replies: the same */
	assert_string_equal(REF({10, "HELLO", true, "a", {NULL}}, {20, "HELLO", true, "b", {NULL}}),
			    "((1)(2))");
	/* a dummy in the table takes the other message as a child */
	assert_string_equal(REF({10, "HELLO", true, "b", {"x"}}, {20, "HELLO", true, "c", {"x"}},
				{5, "HELLO", false, "d", {NULL}}),
			    "((3)(1)(2))");
	/* two dummies with one subject: their children are merged */
	assert_string_equal(REF({10, "S", true, "b", {"x"}}, {20, "S", true, "c", {"x"}},
				{30, "S", true, "d", {"y"}}, {40, "S", true, "e", {"y"}}),
			    "((1)(2)(3)(4))");
	/* empty subjects are never gathered */
	assert_string_equal(REF({10, "", false, "a", {NULL}}, {20, "", false, "b", {NULL}}),
			    "(1)(2)");
	/* threads with replies are gathered as wholes */
	assert_string_equal(REF({10, "T", false, "a", {NULL}}, {20, "T", true, "b", {"a"}},
				{30, "T", true, "c", {NULL}}),
			    "(1 (2)(3))");
}

static void test_references_date_ties(void **state)
{
	/* equal dates keep mailbox order */
	assert_string_equal(REF({10, "A", false, "a", {NULL}}, {10, "A", true, "b", {"a"}},
				{10, "A", true, "c", {"a"}}, {10, "B", false, "d", {NULL}}),
			    "(1 (2)(3))(4)");
}

static void test_orderedsubject(void **state)
{
	assert_string_equal(OSUBJ({10, "A", false, NULL, {NULL}}), "(1)");
	/* by subject, then date; the first of a subject is the parent of the rest; threads by
	 * their first message's date */
	assert_string_equal(OSUBJ({30, "B", false, NULL, {NULL}}, {10, "A", false, NULL, {NULL}},
				  {40, "B", true, NULL, {NULL}}, {20, "A", true, NULL, {NULL}},
				  {25, "A", true, NULL, {NULL}}, {5, "C", false, NULL, {NULL}}),
			    "(6)(2 (4)(5))(1 3)");
	/* equal dates: mailbox order, also between threads */
	assert_string_equal(OSUBJ({10, "B", false, NULL, {NULL}}, {10, "A", false, NULL, {NULL}},
				  {10, "B", false, NULL, {NULL}}),
			    "(1 3)(2)");
	/* empty subjects are one thread */
	assert_string_equal(OSUBJ({10, "", false, NULL, {NULL}}, {20, "", false, NULL, {NULL}}),
			    "(1 2)");
}

static void test_thread_deep_chain(void **state)
{
	/* 20,000 messages each replying to the previous: no recursion, exact answer */
	enum { N = 20000 };
	static struct imap_thread_msg msgs[N];
	static char ids[N][12];
	static const char *refs[N];
	for (int i = 0; i < N; i++) {
		snprintf(ids[i], sizeof(ids[i]), "%d", i);
		refs[i] = ids[i];
		msgs[i] = (struct imap_thread_msg){.id = (uint32_t)i + 1,
						   .date = i,
						   .subject = "S",
						   .reply = i > 0,
						   .message_id = ids[i],
						   .refs = i ? &refs[i - 1] : NULL,
						   .nrefs = i ? 1 : 0};
	}
	struct buf b;
	buf_init(&b, N * 8);
	assert_int_equal(imap_thread_build(IMAP_THREAD_REFERENCES, msgs, N, &b), 0);
	assert_int_equal(buf_peek(&b)[0], '(');
	assert_memory_equal(buf_peek(&b) + 1, "1 2 3 ", 6);
	assert_memory_equal(buf_peek(&b) + buf_used(&b) - 7, " 20000)", 7);
	buf_clear(&b);
	/* a bound too small for the answer */
	buf_init(&b, 100);
	assert_int_equal(imap_thread_build(IMAP_THREAD_REFERENCES, msgs, N, &b), -ENOBUFS);
	buf_clear(&b);
}

/* Check a THREAD answer's shape: balanced, every id 1..n exactly once, no empty list, a
 * list right after '(' only at the top (a dummy), and at most MAX_DEPTH deep. */
static void check_shape(const char *s, size_t n, int max_depth)
{
	static unsigned char seen[512];
	memset(seen, 0, sizeof(seen));
	int depth = 0;
	char prev = ' ';
	for (const char *p = s; *p;) {
		if (*p == '(') {
			if (prev == '(' && depth != 1)
				fail_msg("nested dummy in %s", s);
			if (depth == 0 && prev != ' ' && prev != ')')
				fail_msg("bad top level in %s", s);
			depth++;
			if (depth > max_depth)
				fail_msg("too deep in %s", s);
			prev = *p++;
		} else if (*p == ')') {
			if (prev == '(' || depth == 0)
				fail_msg("empty or unbalanced in %s", s);
			depth--;
			prev = *p++;
		} else if (*p == ' ') {
			if (depth == 0 || prev == ' ' || prev == '(')
				fail_msg("stray space in %s", s);
			prev = *p++;
		} else {
			char *end;
			unsigned long id = strtoul(p, &end, 10);
			if (end == p || id < 1 || id > n || seen[id]++)
				fail_msg("id %lu wrong or twice in %s", id, s);
			p = end;
			prev = '1';
		}
	}
	assert_int_equal(depth, 0);
	for (size_t i = 1; i <= n; i++)
		if (!seen[i])
			fail_msg("id %zu missing in %s", i, s);
}

/* Random folders (a fixed seed): References full of loops, self-references, missing and
 * duplicate ids, equal dates and subjects. Every answer has the right shape and the same
 * input gives the same answer. */
static void test_thread_random(void **state)
{
	enum { N = 300 };
	static struct imap_thread_msg msgs[N];
	static char pool[2 * N][8];
	static const char *refs[N][6];
	static const char *const subjects[] = {"", "A", "B", "C"};
	for (int i = 0; i < 2 * N; i++)
		snprintf(pool[i], sizeof(pool[i]), "%d", i);
	uint64_t x = 88172645463325252ULL;
#define RND(m) ((x ^= x << 13, x ^= x >> 7, x ^= x << 17), (size_t)(x % (m)))
	for (int round = 0; round < 300; round++) {
		size_t n = 1 + RND(N), ids = n + n / 2 + 1;
		for (size_t i = 0; i < n; i++) {
			/* ids from a pool half again as large as the folder: duplicates, and
			 * references to ids no message has; the message's own id among them */
			size_t nrefs = RND(6);
			for (size_t k = 0; k < nrefs; k++)
				refs[i][k] = pool[RND(ids)];
			msgs[i] = (struct imap_thread_msg){
				.id = (uint32_t)i + 1,
				.date = (int64_t)RND(50),
				.subject = subjects[RND(4)],
				.reply = RND(2),
				.message_id = RND(10) ? pool[RND(ids)] : NULL,
				.refs = refs[i],
				.nrefs = nrefs,
			};
		}
		for (int alg = 0; alg < 2; alg++) {
			struct buf a, b;
			buf_init(&a, 1 << 20);
			buf_init(&b, 1 << 20);
			assert_int_equal(imap_thread_build(alg, msgs, n, &a), 0);
			assert_int_equal(imap_thread_build(alg, msgs, n, &b), 0);
			assert_int_equal(buf_used(&a), buf_used(&b));
			assert_memory_equal(buf_peek(&a), buf_peek(&b), buf_used(&a));
			assert_int_equal(buf_append(&a, "", 1), 0);
			check_shape(buf_peek(&a), n,
				    alg == IMAP_THREAD_ORDEREDSUBJECT ? 2 : 1 << 20);
			buf_clear(&a);
			buf_clear(&b);
		}
	}
#undef RND
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base_subject_leaders),
		cmocka_unit_test(test_base_subject_blobs),
		cmocka_unit_test(test_base_subject_trailers),
		cmocka_unit_test(test_base_subject_fwd_wrapper),
		cmocka_unit_test(test_base_subject_white_space_and_2047),
		cmocka_unit_test(test_sent_date),
		cmocka_unit_test(test_msgid),
		cmocka_unit_test(test_msgid_list),
		cmocka_unit_test(test_envelope_keys),
		cmocka_unit_test(test_thread_empty),
		cmocka_unit_test(test_references_chains),
		cmocka_unit_test(test_references_missing_parents),
		cmocka_unit_test(test_references_links),
		cmocka_unit_test(test_references_loops_and_duplicates),
		cmocka_unit_test(test_references_subjects),
		cmocka_unit_test(test_references_date_ties),
		cmocka_unit_test(test_orderedsubject),
		cmocka_unit_test(test_thread_deep_chain),
		cmocka_unit_test(test_thread_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
