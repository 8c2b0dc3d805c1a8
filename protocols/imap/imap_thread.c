/* imap_thread — THREAD and UID THREAD (RFC 5256 §3): ORDEREDSUBJECT and REFERENCES.
 *
 * The messages come from imap_sort.c's collector (the search, then each message's keys from
 * the cached ENVELOPE and the References field); imap_thread_build() is the pure algorithm.
 * No recursion anywhere: a reply chain of 100,000 messages is as deep as a tree gets, so every
 * walk uses an explicit stack sized by the node count.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_internal.h"
#include "imap_sort.h"
#include "log.h"

/* ---- the algorithms (pure) ---- */

struct tnode {
	struct tnode *parent, *child, *next; /* first child, next sibling */
	long msg;                            /* index in msgs; -1 for a dummy */
};

struct tmap_ent {
	const char *key;
	size_t len;
	struct tnode *node;
};

struct tctx {
	const struct imap_thread_msg *msgs;
	size_t n;
	struct tnode *nodes;
	size_t nnodes, cap;
	struct tnode *root;
	struct tmap_ent *map; /* open addressing, power-of-two size */
	size_t map_size;
};

static uint64_t hash_bytes(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static int map_init(struct tctx *t, size_t entries)
{
	size_t size = 16;
	while (size < entries * 2 + 1)
		size *= 2;
	t->map = calloc(size, sizeof(*t->map));
	t->map_size = size;
	return t->map ? 0 : -ENOMEM;
}

static struct tmap_ent *map_slot(struct tctx *t, const char *key, size_t len)
{
	size_t mask = t->map_size - 1, i = (size_t)hash_bytes(key, len) & mask;
	while (t->map[i].key && (t->map[i].len != len || memcmp(t->map[i].key, key, len) != 0))
		i = (i + 1) & mask;
	return &t->map[i];
}

static struct tnode *node_new(struct tctx *t, long msg)
{
	struct tnode *n = &t->nodes[t->nnodes++];
	memset(n, 0, sizeof(*n));
	n->msg = msg;
	return n;
}

static void node_unlink(struct tnode *c)
{
	struct tnode *p = c->parent;
	if (!p)
		return;
	struct tnode **pp = &p->child;
	while (*pp != c)
		pp = &(*pp)->next;
	*pp = c->next;
	c->next = NULL;
	c->parent = NULL;
}

static void node_link(struct tnode *p, struct tnode *c)
{
	c->parent = p;
	c->next = p->child;
	p->child = c;
}

/* Is A an ancestor of B, or B itself? */
static bool node_is_ancestor(const struct tnode *a, const struct tnode *b)
{
	for (; b; b = b->parent)
		if (a == b)
			return true;
	return false;
}

/* Would making C a child of P close a loop? Only when C is P or one of P's ancestors, which
 * needs C to have children: the common case (a new message) costs no walk. */
static bool node_would_loop(const struct tnode *c, const struct tnode *p)
{
	return c == p || (c->child && node_is_ancestor(c, p));
}

static bool node_dummy(const struct tnode *n)
{
	return n->msg < 0;
}

/* The message a node sorts by: its own, or a dummy's first child's (children sorted first). */
static const struct imap_thread_msg *node_msg(const struct tctx *t, const struct tnode *n)
{
	while (n && node_dummy(n))
		n = n->child;
	return n ? &t->msgs[n->msg] : NULL;
}

static long node_index(const struct tnode *n)
{
	while (n && n->msg < 0)
		n = n->child;
	return n ? n->msg : -1;
}

static int node_cmp(const void *x, const void *y, void *arg)
{
	const struct tctx *sort_tctx = arg;
	const struct tnode *a = *(struct tnode *const *)x, *b = *(struct tnode *const *)y;
	const struct imap_thread_msg *ma = node_msg(sort_tctx, a), *mb = node_msg(sort_tctx, b);
	if (ma->date != mb->date)
		return ma->date < mb->date ? -1 : 1;
	long ia = node_index(a), ib = node_index(b);
	return ia < ib ? -1 : ia > ib;
}

/* Sort P's children by sent date (ties: mailbox order). TMP holds at least the child count. */
static void sort_children(struct tctx *t, struct tnode *p, struct tnode **tmp)
{
	size_t k = 0;
	for (struct tnode *c = p->child; c; c = c->next)
		tmp[k++] = c;
	if (k < 2)
		return;
	qsort_r(tmp, k, sizeof(*tmp), node_cmp, t);
	p->child = tmp[0];
	for (size_t i = 0; i + 1 < k; i++)
		tmp[i]->next = tmp[i + 1];
	tmp[k - 1]->next = NULL;
}

/* Every node under ROOT with descendants before ancestors (reversed preorder) into OUT. */
static size_t postorder(struct tnode *root, struct tnode **out, struct tnode **stack)
{
	size_t k = 0, sp = 0;
	stack[sp++] = root;
	while (sp) {
		struct tnode *n = stack[--sp];
		out[k++] = n;
		for (struct tnode *c = n->child; c; c = c->next)
			stack[sp++] = c;
	}
	for (size_t i = 0; i < k / 2; i++) {
		struct tnode *x = out[i];
		out[i] = out[k - 1 - i];
		out[k - 1 - i] = x;
	}
	return k;
}

static struct tnode *id_node(struct tctx *t, const char *id, size_t len)
{
	struct tmap_ent *e = map_slot(t, id, len);
	if (!e->key) {
		e->key = id;
		e->len = len;
		e->node = node_new(t, -1);
	}
	return e->node;
}

static void references_link(struct tctx *t)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct imap_thread_msg *m = &t->msgs[i];
		struct tnode *c = NULL;
		if (m->message_id && m->message_id[0]) {
			size_t len = strlen(m->message_id);
			struct tmap_ent *e = map_slot(t, m->message_id, len);
			if (!e->key) {
				e->key = m->message_id;
				e->len = len;
				e->node = c = node_new(t, (long)i);
			} else if (node_dummy(e->node)) {
				c = e->node; /* referenced before: the message takes its place */
				c->msg = (long)i;
			}
			/* else a duplicate Message-ID: this one gets a unique (unnamed) node */
		}
		if (!c)
			c = node_new(t, (long)i);
		/* 1.A: link the references parent to child, keeping existing links, no loops */
		struct tnode *prev = NULL;
		for (size_t k = 0; k < m->nrefs; k++) {
			struct tnode *r = id_node(t, m->refs[k], strlen(m->refs[k]));
			if (prev && !r->parent && !node_would_loop(r, prev))
				node_link(prev, r);
			prev = r;
		}
		/* 1.B: the last reference is the parent: an existing link is broken first, then
		 * the new one made unless it would close a loop (then the message stays a root,
		 * as RFC 5256 reads and Dovecot does: a message whose References end with its own
		 * id, or with one of its descendants) */
		node_unlink(c);
		if (prev && !node_would_loop(c, prev))
			node_link(prev, c);
	}
}

static bool node_reply(const struct tctx *t, const struct tnode *n)
{
	return !node_dummy(n) && t->msgs[n->msg].reply;
}

static const char *node_subject(const struct tctx *t, const struct tnode *n)
{
	const struct imap_thread_msg *m = node_msg(t, n);
	return m && m->subject ? m->subject : "";
}

static int thread_references(struct tctx *t, struct tnode **a, struct tnode **b)
{
	references_link(t);
	/* 2: every parentless node under the root */
	struct tnode *root = t->root = node_new(t, -1);
	for (size_t i = 0; i + 1 < t->nnodes; i++)
		if (!t->nodes[i].parent)
			node_link(root, &t->nodes[i]);
	/* 3: prune dummies: none without children; children promoted, except to the root
	 * level where a dummy with several children stays */
	size_t k = postorder(root, a, b);
	for (size_t i = 0; i < k; i++) {
		struct tnode *d = a[i];
		if (d == root || !node_dummy(d))
			continue;
		struct tnode *p = d->parent;
		if (d->child && p == root && d->child->next)
			continue;
		while (d->child) {
			struct tnode *c = d->child;
			node_unlink(c);
			node_link(p, c);
		}
		node_unlink(d);
	}
	/* 4: sort the top level by sent date (a dummy by its first child) */
	for (struct tnode *c = root->child; c; c = c->next)
		if (node_dummy(c))
			sort_children(t, c, b);
	sort_children(t, root, b);
	/* 5: gather top-level threads with the same base subject */
	size_t ntop = 0;
	for (struct tnode *c = root->child; c; c = c->next)
		a[ntop++] = c;
	free(t->map);
	if (map_init(t, ntop) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < ntop; i++) {
		struct tnode *c = a[i];
		const char *subj = node_subject(t, c);
		if (!*subj)
			continue;
		struct tmap_ent *e = map_slot(t, subj, strlen(subj));
		if (!e->key) {
			e->key = subj;
			e->len = strlen(subj);
			e->node = c;
		} else if (!node_dummy(e->node) &&
			   (node_dummy(c) || (node_reply(t, e->node) && !node_reply(t, c)))) {
			e->node = c;
		}
	}
	for (size_t i = 0; i < ntop; i++) {
		struct tnode *c = a[i];
		if (c->parent != root)
			continue; /* already gathered */
		const char *subj = node_subject(t, c);
		if (!*subj)
			continue;
		struct tmap_ent *e = map_slot(t, subj, strlen(subj));
		struct tnode *m = e->node;
		if (m == c)
			continue;
		if (node_dummy(m) && node_dummy(c)) {
			while (c->child) {
				struct tnode *x = c->child;
				node_unlink(x);
				node_link(m, x);
			}
			node_unlink(c);
		} else if (node_dummy(m) || (node_reply(t, c) && !node_reply(t, m))) {
			node_unlink(c);
			node_link(m, c);
		} else {
			struct tnode *d = node_new(t, -1);
			node_link(root, d);
			node_unlink(m);
			node_unlink(c);
			node_link(d, m);
			node_link(d, c);
			e->node = d;
		}
	}
	/* 6: sort every set of siblings, deepest first */
	k = postorder(root, a, b);
	for (size_t i = 0; i < k; i++)
		if (a[i]->child)
			sort_children(t, a[i], b);
	return 0;
}

static int put_id(struct buf *out, const char *pre, uint32_t id, const char *post)
{
	char tmp[32];
	int n = snprintf(tmp, sizeof(tmp), "%s%u%s", pre, id, post);
	return buf_append(out, tmp, (size_t)n);
}

enum { W_RENDER, W_SIBLINGS, W_CLOSE };
struct witem {
	int what;
	struct tnode *n;
};

/* "(" thread ")" for every top-level node: a message is its id, then " " and its only child,
 * or " " and "(child)" for each of several; a dummy is "(child)" for each child. */
static int write_threads(struct tctx *t, struct buf *out)
{
	struct witem *st = malloc((t->nnodes * 2 + 4) * sizeof(*st));
	if (!st)
		return -ENOMEM;
	int r = 0;
	for (struct tnode *top = t->root->child; top && r == 0; top = top->next) {
		size_t sp = 0;
		st[sp++] = (struct witem){W_CLOSE, NULL};
		st[sp++] = (struct witem){W_RENDER, top};
		r = buf_append(out, "(", 1);
		while (sp && r == 0) {
			struct witem w = st[--sp];
			if (w.what == W_CLOSE) {
				r = buf_append(out, ")", 1);
			} else if (w.what == W_SIBLINGS) {
				r = buf_append(out, "(", 1);
				if (w.n->next)
					st[sp++] = (struct witem){W_SIBLINGS, w.n->next};
				st[sp++] = (struct witem){W_CLOSE, NULL};
				st[sp++] = (struct witem){W_RENDER, w.n};
			} else if (node_dummy(w.n)) {
				st[sp++] = (struct witem){W_SIBLINGS, w.n->child};
			} else {
				const struct imap_thread_msg *m = &t->msgs[w.n->msg];
				r = put_id(out, "", m->id, w.n->child ? " " : "");
				if (w.n->child)
					st[sp++] = (struct witem){w.n->child->next ? W_SIBLINGS
										   : W_RENDER,
								  w.n->child};
			}
		}
	}
	free(st);
	return r;
}

static int subject_cmp(const void *x, const void *y)
{
	const struct imap_thread_msg *a = *(struct imap_thread_msg *const *)x,
				     *b = *(struct imap_thread_msg *const *)y;
	int c = strcmp(a->subject ? a->subject : "", b->subject ? b->subject : "");
	if (c)
		return c;
	if (a->date != b->date)
		return a->date < b->date ? -1 : 1;
	return a < b ? -1 : a > b;
}

static int thread_orderedsubject(struct tctx *t)
{
	/* Sort by (base subject, sent date, mailbox order); each run of one subject is a thread
	 * whose first message is the parent of all the others; threads by their first's date. */
	const struct imap_thread_msg **v = malloc((t->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < t->n; i++)
		v[i] = &t->msgs[i];
	qsort(v, t->n, sizeof(*v), subject_cmp);
	struct tnode *root = t->root = node_new(t, -1);
	struct tnode *parent = NULL;
	for (size_t i = 0; i < t->n; i++) {
		struct tnode *c = node_new(t, (long)(v[i] - t->msgs));
		if (i > 0 && strcmp(v[i - 1]->subject ? v[i - 1]->subject : "",
				    v[i]->subject ? v[i]->subject : "") == 0)
			node_link(parent, c);
		else
			node_link(root, parent = c);
	}
	free(v);
	return 0;
}

int imap_thread_build(enum imap_thread_alg alg, const struct imap_thread_msg *msgs, size_t n,
		      struct buf *out)
{
	size_t refs = 0;
	for (size_t i = 0; i < n; i++)
		refs += msgs[i].nrefs;
	struct tctx t = {.msgs = msgs, .n = n};
	/* messages + referenced ids + step 5's dummies (at most one per message) + the root */
	t.cap = 2 * n + refs + 1;
	t.nodes = malloc(t.cap * sizeof(*t.nodes));
	struct tnode **a = malloc(t.cap * sizeof(*a)), **b = malloc(t.cap * sizeof(*b));
	int r = t.nodes && a && b ? map_init(&t, n + refs) : -ENOMEM;
	if (r == 0 && alg == IMAP_THREAD_REFERENCES)
		r = thread_references(&t, a, b);
	else if (r == 0) {
		r = thread_orderedsubject(&t);
		if (r == 0) {
			size_t k = postorder(t.root, a, b);
			for (size_t i = 0; i < k; i++)
				if (a[i]->child)
					sort_children(&t, a[i], b);
		}
	}
	if (r == 0)
		r = write_threads(&t, out);
	free(t.map);
	free(t.nodes);
	free(a);
	free(b);
	return r;
}

/* ---- THREAD / UID THREAD ---- */

struct thread_cmd {
	struct imap_sort_collect *collect;
	enum imap_thread_alg alg;
};

static void thread_cmd_free(struct imap_cmd *cmd)
{
	struct thread_cmd *tc = cmd->ctx;
	if (tc) {
		imap_sort_collect_free(&tc->collect);
		free(tc);
	}
	cmd->ctx = NULL;
}

/* What the threading reads on the thread pool (owned by the collector). */
struct thread_order {
	enum imap_thread_alg alg;
	bool uid;
};

/* On the thread pool: the whole "* THREAD ..." line into C->out. */
static void thread_order(struct imap_sort_collect *c)
{
	const struct thread_order *o = c->order_arg;
	struct imap_thread_msg *v = calloc(c->n + 1, sizeof(*v));
	buf_clear(&c->out);
	buf_init(&c->out, c->n * 32 + 64);
	int r = v ? buf_append(&c->out, "* THREAD ", 9) : -ENOMEM;
	for (size_t i = 0; i < c->n && r == 0; i++) {
		const struct imap_sort_msg *m = &c->msgs[i];
		v[i] = (struct imap_thread_msg){
			.id = o->uid ? m->uid : m->seq,
			.date = m->date,
			.subject = m->str[SORT_SUBJECT] ? m->str[SORT_SUBJECT] : "",
			.reply = m->reply,
			.message_id = m->message_id,
			.refs = (const char *const *)m->refs,
			.nrefs = m->nrefs,
		};
	}
	if (r == 0)
		r = imap_thread_build(o->alg, v, c->n, &c->out);
	if (r == 0 && c->n == 0)
		c->out.len--; /* "* THREAD" without the space for no messages */
	if (r == 0)
		r = buf_append(&c->out, "\r\n", 2);
	free(v);
	c->order_err = r;
}

static enum cmd_result thread_finish(struct imap_cmd *cmd, struct thread_cmd *tc)
{
	struct imap_sort_collect *c = tc->collect;
	conn_write(cmd->s->conn, buf_peek(&c->out), buf_used(&c->out));
	buf_clear(&c->out);
	imap_cmd_reply(cmd, "OK", "Thread completed.");
	return CMD_DONE;
}

static enum cmd_result thread_run(struct imap_cmd *cmd, struct thread_cmd *tc)
{
	int r = imap_sort_collect_run(cmd, tc->collect);
	if (r < 0)
		return CMD_DONE;
	if (r == 0)
		return imap_cmd_yield(cmd);
	if (r == 2)
		return CMD_MORE; /* the threading's end wakes the session */
	return thread_finish(cmd, tc);
}

enum cmd_result imap_cmd_thread(struct imap_cmd *cmd)
{
	if (cmd->ctx)
		return thread_run(cmd, cmd->ctx);
	const struct imap_arg *args;
	int r = imap_cmd_read_args(cmd, &args);
	if (r <= 0)
		return r == 0 ? CMD_MORE : CMD_DONE;
	enum imap_thread_alg alg;
	unsigned need = SORT_NEED_DATE | (1u << SORT_SUBJECT);
	if (imap_arg_is(&args[0], "ORDEREDSUBJECT"))
		alg = IMAP_THREAD_ORDEREDSUBJECT;
	else if (imap_arg_is(&args[0], "REFERENCES")) {
		alg = IMAP_THREAD_REFERENCES;
		need |= SORT_NEED_REFS;
	} else {
		imap_sort_refuse(cmd, "BAD", "Unknown threading algorithm.");
		return CMD_DONE;
	}
	struct thread_cmd *tc = calloc(1, sizeof(*tc));
	if (!tc) {
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return CMD_DONE;
	}
	tc->alg = alg;
	cmd->ctx = tc;
	cmd->ctx_free = thread_cmd_free;
	if (imap_sort_collect_start(cmd, args + 1, need, &tc->collect) < 0)
		return CMD_DONE;
	struct thread_order *o = malloc(sizeof(*o));
	if (!o) {
		imap_cmd_reply(cmd, "NO", "[SERVERBUG] Out of memory.");
		return CMD_DONE;
	}
	*o = (struct thread_order){alg, cmd->uid};
	imap_sort_collect_set_order(tc->collect, thread_order, o);
	return thread_run(cmd, tc);
}
