/* mailkeep-bench — a load generator for IMAP and POP3 servers, run side by side.
 *
 *   mailkeep-bench --target NAME,imap=P,imaps=P,pop3=P,pop3s=P,pid=PID,mail=DIR/%u
 *                  [--target ...] [--password PW] [--scenarios idle,fetch,pop3,...] [options]
 *
 * One process, one libuv loop, many non-blocking connections, each with its own tiny IMAP or
 * POP3 client state machine; TLS through GnuTLS (no certificate check: loopback benches only).
 * It speaks to any server, so the same run measures mailkeep and Dovecot over copies of the
 * same Maildir. Every scenario runs against each target in turn (same client, same load),
 * then one table per scenario prints the targets side by side and the ratio first / second;
 * --json writes the same figures for later comparison.
 *
 * Users (the same names and password on every target):
 *   --fetch-user (bench)  the big INBOX (10,000 messages): fetch, SEARCH in fairness
 *   --pop-user (pop)      a copy of it for the POP3 scenario, which deletes everything at the end
 *   --user-prefix (u) --users (100)   u0..u99, small INBOXes: idle, mixed, logins, fairness
 *
 * The server's memory is the sum over the process tree rooted at pid= (every descendant, as
 * Dovecot forks one process per connection): VmRSS and Pss (smaps_rollup).
 *
 * Everything is bounded: counts are fixed, timed scenarios stop at their duration, every
 * scenario has a hard deadline after which its connections are closed and the run goes on.
 * Only 127.0.0.1-style hosts given by the caller are contacted. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

enum kind {
	K_GREET,
	K_LOGIN,
	K_LIST,
	K_SELECT,
	K_FETCH,
	K_FETCHBODY,
	K_STORE,
	K_APPEND,
	K_EXPUNGE,
	K_LOGOUT,
	K_NOOP,
	K_SEARCH,
	K_IDLE,
	K_USER,
	K_PASS,
	K_STAT,
	K_UIDL,
	K_PLIST,
	K_RETR,
	K_DELE,
	K_QUIT,
	K_N,
	K_IDLING = 100, /* IDLE's continuation came: not a completion */
	K_ERR = 101,    /* connection failed or closed under a pending command */
};
static const char *kind_name[K_N] = {
	"greeting", "LOGIN",   "LIST",   "SELECT", "FETCH",  "FETCH BODY", "STORE",
	"APPEND",   "EXPUNGE", "LOGOUT", "NOOP",   "SEARCH", "IDLE",       "USER",
	"PASS",     "STAT",    "UIDL",   "LIST",   "RETR",   "DELE",       "QUIT"};

#define MAX_TARGETS 2
#define QMAX        256
#define MAX_LINE    (16u << 20) /* an IMAP line (without literals) longer than this is an error */

struct target {
	char name[32];
	int imap, imaps, pop3, pop3s;
	long pid;
	char mail[512]; /* Maildir of user %u */
};

/* ---- options ---- */
static struct target targets[MAX_TARGETS];
static int ntargets;
static const char *host = "127.0.0.1";
static const char *password = "bench";
static const char *fetch_user = "bench";
static const char *pop_user = "pop";
static const char *user_prefix = "u";
static int nusers = 100;
static int idle_n = 1000;
static int idle_rounds = 3;
static double mixed_secs = 20, login_secs = 8, fair_secs = 20;
static bool drop_caches;
static const char *json_path;
static char scenarios[256] = "logins,fetch,idle,pop3,mixed,fairness";
static const char *search_text = "quarterly";
static const char *search_from = "user7@";

/* ---- results ---- */
struct metric {
	char scen[16];
	char name[64];
	char unit[12];
	int better; /* 1 higher is better, -1 lower is better, 0 neither */
	double v[MAX_TARGETS];
	bool has[MAX_TARGETS];
};
static struct metric metrics[512];
static int nmetrics;

static void metric(int ti, const char *scen, const char *name, const char *unit, int better,
		   double v)
{
	struct metric *m = NULL;
	for (int i = 0; i < nmetrics; i++)
		if (strcmp(metrics[i].scen, scen) == 0 && strcmp(metrics[i].name, name) == 0)
			m = &metrics[i];
	if (m == NULL) {
		if (nmetrics == (int)(sizeof(metrics) / sizeof(metrics[0])))
			return;
		m = &metrics[nmetrics++];
		memset(m, 0, sizeof(*m));
		snprintf(m->scen, sizeof(m->scen), "%s", scen);
		snprintf(m->name, sizeof(m->name), "%s", name);
		snprintf(m->unit, sizeof(m->unit), "%s", unit);
		m->better = better;
	}
	m->v[ti] = v;
	m->has[ti] = true;
}

static double load1(void)
{
	double l = -1;
	FILE *f = fopen("/proc/loadavg", "r");
	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = -1;
		fclose(f);
	}
	return l;
}

/* ---- latency samples ---- */
struct samples {
	double *v;
	size_t n, cap;
};

static void samples_add(struct samples *s, double x)
{
	if (s->n == s->cap) {
		if (s->cap >= (1u << 24))
			return; /* bound: 16 M samples */
		s->cap = s->cap ? s->cap * 2 : 1024;
		double *nv = realloc(s->v, s->cap * sizeof(double));
		if (nv == NULL)
			abort();
		s->v = nv;
	}
	s->v[s->n++] = x;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double samples_pct(struct samples *s, double p)
{
	if (s->n == 0)
		return -1;
	qsort(s->v, s->n, sizeof(double), cmp_double);
	size_t i = (size_t)(p / 100.0 * (double)(s->n - 1) + 0.5);
	return s->v[i < s->n ? i : s->n - 1];
}

static void samples_free(struct samples *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* ---- server memory: the process tree rooted at pid ---- */
struct memsum {
	double rss, pss; /* bytes */
	int procs;
};

static long read_kb_field(const char *path, const char *field)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	char line[256];
	size_t fl = strlen(field);
	long v = -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, fl) == 0) {
			v = strtol(line + fl, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static struct memsum server_mem(long root)
{
	struct memsum m = {0, 0, 0};
	static long pids[65536], ppids[65536];
	int n = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL && n < 65536) {
		if (!isdigit((unsigned char)e->d_name[0]))
			continue;
		char path[300], buf[512];
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		ssize_t r = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (r <= 0)
			continue;
		buf[r] = '\0';
		char *rp = strrchr(buf, ')');
		long ppid;
		char st;
		if (rp == NULL || sscanf(rp + 1, " %c %ld", &st, &ppid) != 2)
			continue;
		pids[n] = atol(e->d_name);
		ppids[n++] = ppid;
	}
	if (d)
		closedir(d);
	/* breadth-first over the tree: in[] marks members */
	static bool in[65536];
	memset(in, 0, sizeof(in));
	bool grew = true;
	for (int i = 0; i < n; i++)
		in[i] = pids[i] == root;
	while (grew) {
		grew = false;
		for (int i = 0; i < n; i++)
			if (!in[i])
				for (int j = 0; j < n; j++)
					if (in[j] && ppids[i] == pids[j]) {
						in[i] = grew = true;
						break;
					}
	}
	for (int i = 0; i < n; i++) {
		if (!in[i])
			continue;
		char path[64];
		snprintf(path, sizeof(path), "/proc/%ld/status", pids[i]);
		long rss = read_kb_field(path, "VmRSS:");
		snprintf(path, sizeof(path), "/proc/%ld/smaps_rollup", pids[i]);
		long pss = read_kb_field(path, "Pss:");
		if (rss > 0)
			m.rss += (double)rss * 1024;
		if (pss > 0)
			m.pss += (double)pss * 1024;
		m.procs++;
	}
	return m;
}

/* Scheduler time of every thread of a process tree (/proc/PID/task/TID/schedstat: time on a
 * CPU, time runnable but waiting for one), in seconds. ROOT 0: this process. During the push
 * rounds this tells whether the server (or the bench itself) was busy, or waited for a CPU
 * the machine's other load held. */
struct schedsum {
	double cpu, wait;
};

static void sched_add_proc(long pid, struct schedsum *s)
{
	char dir[64];
	snprintf(dir, sizeof(dir), "/proc/%ld/task", pid);
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL) {
		if (!isdigit((unsigned char)e->d_name[0]))
			continue;
		char path[400];
		snprintf(path, sizeof(path), "%s/%s/schedstat", dir, e->d_name);
		FILE *f = fopen(path, "r");
		unsigned long long run = 0, wait = 0;
		if (f != NULL && fscanf(f, "%llu %llu", &run, &wait) == 2) {
			s->cpu += (double)run / 1e9;
			s->wait += (double)wait / 1e9;
		}
		if (f != NULL)
			fclose(f);
	}
	if (d)
		closedir(d);
}

static struct schedsum server_sched(long root)
{
	struct schedsum s = {0, 0};
	if (root == 0) {
		sched_add_proc((long)getpid(), &s);
		return s;
	}
	static long pids[65536], ppids[65536];
	static bool in[65536];
	int n = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL && n < 65536) {
		if (!isdigit((unsigned char)e->d_name[0]))
			continue;
		char path[300], buf[512];
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		ssize_t r = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (r <= 0)
			continue;
		buf[r] = '\0';
		char *rp = strrchr(buf, ')');
		long ppid;
		char st;
		if (rp == NULL || sscanf(rp + 1, " %c %ld", &st, &ppid) != 2)
			continue;
		pids[n] = atol(e->d_name);
		ppids[n++] = ppid;
	}
	if (d)
		closedir(d);
	for (int i = 0; i < n; i++)
		in[i] = pids[i] == root;
	for (bool grew = true; grew;) {
		grew = false;
		for (int i = 0; i < n; i++)
			if (!in[i])
				for (int j = 0; j < n; j++)
					if (in[j] && ppids[i] == pids[j]) {
						in[i] = grew = true;
						break;
					}
	}
	for (int i = 0; i < n; i++)
		if (in[i])
			sched_add_proc(pids[i], &s);
	return s;
}

/* The server's memory once its process tree stops changing (Dovecot's processes of closed
 * connections take a moment to exit): at most 10 s. */
static struct memsum server_mem_settled(long root)
{
	struct memsum m = server_mem(root);
	for (int i = 0; i < 40; i++) {
		usleep(250000);
		struct memsum prev = m;
		m = server_mem(root);
		double d = m.rss - prev.rss;
		if (m.procs == prev.procs && d < 256 * 1024 && d > -256 * 1024)
			break;
	}
	return m;
}

/* ---- connections ---- */
struct run;
struct cl;
typedef void (*step_fn)(struct cl *c, int kind, int status, double lat);

struct pend {
	uint64_t t0;
	uint8_t kind;
	bool ml;
};

struct cl {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_connect_t creq;
	struct run *run;
	struct cl *prev, *next;
	int id, role, handles;
	bool pop3, tls, closing, hs_done, in_resp, ml, idling;
	gnutls_session_t ts;
	char *in; /* plaintext not consumed yet */
	size_t in_len, in_cap;
	char *cin; /* ciphertext for GnuTLS */
	size_t cin_off, cin_len, cin_cap;
	size_t lit_left;
	int resp_class; /* 0 untagged, 1 tagged, 2 continuation */
	struct pend q[QMAX];
	unsigned qh, qn, tag;
	step_fn step;
	void (*on_exists)(struct cl *c, unsigned n);
	void (*on_mlline)(struct cl *c, const char *line, size_t len);
	uint64_t t_conn, t_mark, bytes;
	unsigned exists, fetches, hits;
	unsigned n_next, n_done, n_total, window, state, aux;
	char user[64];
	char last[256]; /* the last completion's line */
};

struct run {
	uv_loop_t *loop;
	struct target *t;
	struct cl *clients;
	int live;
	bool stop, finished;
	uint64_t t_start, t_stop;
	struct samples lat[K_N];
	struct samples extra;
	uint64_t count, errors, bytes;
	/* scenario parameters and state */
	int conc, port, spawned, target_n, ready, failed;
	bool tls, pop3;
	step_fn step;
	uv_timer_t stop_timer, hard_timer, aux_timer;
	uv_work_t work;
	unsigned round, round_got, round_expected, inuse;
	uint64_t round_t0;
	bool delivering, round_next;
	uint64_t *ut0; /* idle: per user, when this round's message was delivered */
	double f[16];
	struct schedsum sched_srv0, sched_cli0; /* idle: at the start of the push rounds */
};

static gnutls_certificate_credentials_t xcred;

static void cl_close(struct cl *c);

static void on_written(uv_write_t *w, int status)
{
	(void)status;
	free(w);
}

static void raw_write(struct cl *c, const void *data, size_t len)
{
	if (c->closing)
		return;
	uv_write_t *w = malloc(sizeof(*w) + len);
	if (w == NULL)
		abort();
	memcpy(w + 1, data, len);
	uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)len);
	if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0)
		free(w);
}

static ssize_t tls_push(gnutls_transport_ptr_t p, const void *data, size_t len)
{
	raw_write(p, data, len);
	return (ssize_t)len;
}

static ssize_t tls_pull(gnutls_transport_ptr_t p, void *data, size_t len)
{
	struct cl *c = p;
	if (c->cin_len == c->cin_off) {
		gnutls_transport_set_errno(c->ts, EAGAIN);
		return -1;
	}
	size_t k = c->cin_len - c->cin_off;
	if (k > len)
		k = len;
	memcpy(data, c->cin + c->cin_off, k);
	c->cin_off += k;
	if (c->cin_off == c->cin_len)
		c->cin_off = c->cin_len = 0;
	return (ssize_t)k;
}

static void cl_write(struct cl *c, const char *data, size_t len)
{
	if (c->closing)
		return;
	if (!c->tls) {
		raw_write(c, data, len);
		return;
	}
	size_t off = 0;
	while (off < len) {
		ssize_t r = gnutls_record_send(c->ts, data + off, len - off);
		if (r < 0 && r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED) {
			cl_close(c);
			return;
		}
		if (r > 0)
			off += (size_t)r;
	}
}

static void q_push(struct cl *c, int kind, bool ml)
{
	if (c->qn == QMAX) {
		fprintf(stderr, "bench: command queue overflow\n");
		abort();
	}
	struct pend *p = &c->q[(c->qh + c->qn) % QMAX];
	p->t0 = uv_hrtime();
	p->kind = (uint8_t)kind;
	p->ml = ml;
	c->qn++;
}

static void cl_imap(struct cl *c, int kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void cl_imap(struct cl *c, int kind, const char *fmt, ...)
{
	char buf[1024];
	int n = snprintf(buf, sizeof(buf), "a%u ", ++c->tag);
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 2, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 3)
		n = (int)sizeof(buf) - 3;
	buf[n++] = '\r';
	buf[n++] = '\n';
	q_push(c, kind, false);
	cl_write(c, buf, (size_t)n);
}

static void cl_pop(struct cl *c, int kind, bool ml, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void cl_pop(struct cl *c, int kind, bool ml, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 3)
		n = (int)sizeof(buf) - 3;
	buf[n++] = '\r';
	buf[n++] = '\n';
	q_push(c, kind, ml);
	cl_write(c, buf, (size_t)n);
}

/* Complete the oldest pending command. */
static void complete(struct cl *c, int status, const char *line, size_t len)
{
	if (c->qn == 0)
		return;
	struct pend p = c->q[c->qh];
	c->qh = (c->qh + 1) % QMAX;
	c->qn--;
	double lat = (double)(uv_hrtime() - p.t0) / 1e9;
	if (!c->run->stop)
		samples_add(&c->run->lat[p.kind], lat);
	if (len >= sizeof(c->last))
		len = sizeof(c->last) - 1;
	memcpy(c->last, line, len);
	c->last[len] = '\0';
	c->step(c, p.kind, status, lat);
}

static void imap_untagged(struct cl *c, const char *l, size_t len)
{
	if (len < 4)
		return;
	if (c->qn > 0 && c->q[c->qh].kind == K_GREET) {
		complete(c, strncmp(l, "* OK", 4) == 0 ? 0 : 1, l, len);
		return;
	}
	if (isdigit((unsigned char)l[2])) {
		char *e;
		unsigned long n = strtoul(l + 2, &e, 10);
		if (strncmp(e, " EXISTS", 7) == 0) {
			unsigned old = c->exists;
			c->exists = (unsigned)n;
			if (c->on_exists && n > old)
				c->on_exists(c, (unsigned)n);
		} else if (strncmp(e, " FETCH", 6) == 0) {
			c->fetches++;
		}
	} else if (strncmp(l, "* SEARCH", 8) == 0) {
		for (size_t i = 8; i < len; i++)
			if (l[i] == ' ' && i + 1 < len && isdigit((unsigned char)l[i + 1]))
				c->hits++;
	} else if (strncmp(l, "* ESEARCH", 9) == 0) {
		const char *cnt = memmem(l, len, "COUNT ", 6);
		if (cnt)
			c->hits += (unsigned)strtoul(cnt + 6, NULL, 10);
	}
}

/* The first segment of a logical IMAP response decides what it is. */
static void imap_segment(struct cl *c, const char *l, size_t len, bool first, bool last)
{
	if (first) {
		if (len >= 2 && l[0] == '*' && l[1] == ' ')
			c->resp_class = 0;
		else if (len >= 1 && l[0] == '+')
			c->resp_class = 2;
		else
			c->resp_class = 1;
		if (c->resp_class == 0)
			imap_untagged(c, l, len);
	}
	if (!last)
		return;
	if (c->resp_class == 2) {
		if (c->qn > 0 && c->q[(c->qh + c->qn - 1) % QMAX].kind == K_IDLE && !c->idling) {
			c->idling = true;
			c->step(c, K_IDLING, 0, 0);
		}
	} else if (c->resp_class == 1) {
		const char *sp = memchr(l, ' ', len);
		int st = 1;
		if (sp && (size_t)(sp - l) + 3 < len && strncmp(sp + 1, "OK", 2) == 0)
			st = 0;
		complete(c, st, l, len);
	}
}

static void imap_parse(struct cl *c)
{
	size_t p = 0;
	while (p < c->in_len && !c->closing) {
		if (c->lit_left) {
			size_t k = c->in_len - p < c->lit_left ? c->in_len - p : c->lit_left;
			c->lit_left -= k;
			c->bytes += k;
			p += k;
			continue;
		}
		char *l = c->in + p;
		char *nl = memchr(l, '\n', c->in_len - p);
		if (nl == NULL)
			break;
		size_t ll = (size_t)(nl - l) + 1;
		bool first = !c->in_resp;
		/* a literal announcement {N} or {N+} at the end of the line */
		size_t e = ll - 1;
		if (e > 0 && l[e - 1] == '\r')
			e--;
		bool lit = false;
		if (e > 2 && l[e - 1] == '}') {
			size_t b = e - 2;
			while (b > 0 && (isdigit((unsigned char)l[b]) || l[b] == '+'))
				b--;
			if (l[b] == '{') {
				c->lit_left = strtoul(l + b + 1, NULL, 10);
				lit = true;
			}
		}
		c->in_resp = lit;
		p += ll;
		imap_segment(c, l, ll, first, !lit);
	}
	if (c->closing)
		return;
	if (p > 0) {
		memmove(c->in, c->in + p, c->in_len - p);
		c->in_len -= p;
	}
	if (c->in_len > MAX_LINE) {
		fprintf(stderr, "bench: line longer than %u bytes\n", MAX_LINE);
		cl_close(c);
	}
}

static void pop3_parse(struct cl *c)
{
	size_t p = 0;
	while (p < c->in_len && !c->closing) {
		char *l = c->in + p;
		char *nl = memchr(l, '\n', c->in_len - p);
		if (nl == NULL)
			break;
		size_t ll = (size_t)(nl - l) + 1;
		p += ll;
		if (c->ml) {
			if (ll <= 3 && l[0] == '.' && (ll == 2 || l[1] == '\r')) {
				c->ml = false;
				complete(c, 0, ".", 1);
			} else {
				c->bytes += ll;
				if (c->on_mlline)
					c->on_mlline(c, l, ll);
			}
			continue;
		}
		if (c->qn == 0)
			continue;
		bool ok = ll >= 3 && strncmp(l, "+OK", 3) == 0;
		if (ok && c->q[c->qh].ml)
			c->ml = true;
		else
			complete(c, ok ? 0 : 1, l, ll);
	}
	if (c->closing)
		return;
	if (p > 0) {
		memmove(c->in, c->in + p, c->in_len - p);
		c->in_len -= p;
	}
	if (c->in_len > MAX_LINE)
		cl_close(c);
}

static void buf_append(char **b, size_t *len, size_t *cap, const char *data, size_t n)
{
	if (*len + n > *cap) {
		size_t nc = *cap ? *cap : 4096;
		while (nc < *len + n)
			nc *= 2;
		char *nb = realloc(*b, nc);
		if (nb == NULL)
			abort();
		*b = nb;
		*cap = nc;
	}
	memcpy(*b + *len, data, n);
	*len += n;
}

static void buf_release(char **b, size_t *len, size_t *cap)
{
	/* an idle connection keeps no buffer */
	if (*len == 0 && *cap > 0) {
		free(*b);
		*b = NULL;
		*cap = 0;
	}
}

static char readbuf[1 << 18];

static void on_alloc(uv_handle_t *h, size_t sug, uv_buf_t *b)
{
	(void)h;
	(void)sug;
	*b = uv_buf_init(readbuf, sizeof(readbuf));
}

static void cl_fail(struct cl *c)
{
	if (c->closing)
		return;
	c->run->errors++;
	step_fn s = c->step;
	cl_close(c);
	s(c, K_ERR, -1, 0);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct cl *c = s->data;
	if (c->closing)
		return;
	if (n < 0) {
		cl_fail(c);
		return;
	}
	if (n == 0)
		return;
	bool eof = false;
	if (!c->tls) {
		buf_append(&c->in, &c->in_len, &c->in_cap, b->base, (size_t)n);
	} else {
		buf_append(&c->cin, &c->cin_len, &c->cin_cap, b->base, (size_t)n);
		if (!c->hs_done) {
			int r = gnutls_handshake(c->ts);
			if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
				goto out;
			if (r < 0) {
				fprintf(stderr, "bench: TLS handshake: %s\n", gnutls_strerror(r));
				cl_fail(c);
				return;
			}
			c->hs_done = true;
		}
		for (;;) {
			char tmp[16384];
			ssize_t r = gnutls_record_recv(c->ts, tmp, sizeof(tmp));
			/* a post-handshake message (TLS 1.3 session ticket) is consumed with
			 * EAGAIN although records may follow in what was read */
			if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED ||
			    (r < 0 && !gnutls_error_is_fatal((int)r))) {
				if (c->cin_len > c->cin_off)
					continue;
				break;
			}
			if (r <= 0) {
				eof = true; /* parse what came before it first */
				break;
			}
			buf_append(&c->in, &c->in_len, &c->in_cap, tmp, (size_t)r);
		}
	}
	if (c->pop3)
		pop3_parse(c);
	else
		imap_parse(c);
	if (eof && !c->closing) {
		cl_fail(c);
		return;
	}
out:
	if (!c->closing) {
		buf_release(&c->in, &c->in_len, &c->in_cap);
		buf_release(&c->cin, &c->cin_len, &c->cin_cap);
	}
}

static void on_connect(uv_connect_t *req, int status)
{
	struct cl *c = req->data;
	if (c->closing)
		return;
	if (status < 0) {
		cl_fail(c);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	q_push(c, K_GREET, false);
	uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	if (c->tls) {
		gnutls_init(&c->ts, GNUTLS_CLIENT | GNUTLS_NONBLOCK);
		gnutls_set_default_priority(c->ts);
		gnutls_credentials_set(c->ts, GNUTLS_CRD_CERTIFICATE, xcred);
		gnutls_transport_set_ptr(c->ts, c);
		gnutls_transport_set_push_function(c->ts, tls_push);
		gnutls_transport_set_pull_function(c->ts, tls_pull);
		int r = gnutls_handshake(c->ts);
		if (r < 0 && r != GNUTLS_E_AGAIN) {
			cl_fail(c);
			return;
		}
	}
}

static void on_handle_closed(uv_handle_t *h)
{
	struct cl *c = h->data;
	if (--c->handles > 0)
		return;
	struct run *r = c->run;
	if (c->ts)
		gnutls_deinit(c->ts);
	free(c->in);
	free(c->cin);
	free(c);
	if (--r->live == 0 && r->stop)
		r->finished = true;
}

static void cl_close(struct cl *c)
{
	if (c->closing)
		return;
	c->closing = true;
	struct run *r = c->run;
	if (c->prev)
		c->prev->next = c->next;
	else
		r->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static struct cl *cl_new(struct run *r, bool pop3, bool tls, int port, step_fn step)
{
	struct cl *c = calloc(1, sizeof(*c));
	if (c == NULL)
		abort();
	c->run = r;
	c->pop3 = pop3;
	c->tls = tls;
	c->step = step;
	c->handles = 2;
	c->tcp.data = c->timer.data = c->creq.data = c;
	c->t_conn = uv_hrtime();
	uv_tcp_init(r->loop, &c->tcp);
	uv_timer_init(r->loop, &c->timer);
	c->next = r->clients;
	if (r->clients)
		r->clients->prev = c;
	r->clients = c;
	r->live++;
	struct sockaddr_storage sa;
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)&sa) != 0 &&
	    uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa) != 0) {
		fprintf(stderr, "bench: bad host %s\n", host);
		exit(2);
	}
	if (uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&sa, on_connect) < 0)
		cl_fail(c);
	return c;
}

/* ---- running a scenario ---- */
static void on_stop_timer(uv_timer_t *t)
{
	struct run *r = t->data;
	r->stop = true;
	r->t_stop = uv_hrtime();
	/* connections waiting on nothing (a paced client between commands) end now; the others
	 * end when their command completes */
	for (struct cl *c = r->clients, *n; c; c = n) {
		n = c->next;
		if (c->qn == 0)
			cl_close(c);
	}
	if (r->live == 0)
		r->finished = true;
}

static void close_all(struct run *r)
{
	r->stop = true;
	if (r->t_stop == 0)
		r->t_stop = uv_hrtime();
	while (r->clients)
		cl_close(r->clients);
	if (r->live == 0)
		r->finished = true;
}

static void on_hard_timer(uv_timer_t *t)
{
	struct run *r = t->data;
	fprintf(stderr, "bench: %s: hard deadline reached, closing %d connections\n", r->t->name,
		r->live);
	r->f[15] = 1;
	close_all(r);
}

static void noop_close(uv_handle_t *h)
{
	(void)h;
}

/* Run the loop until the scenario says it is finished, or the hard deadline. */
static void run_go(struct run *r, double fixed_secs, double hard_secs)
{
	uv_timer_init(r->loop, &r->stop_timer);
	uv_timer_init(r->loop, &r->hard_timer);
	r->stop_timer.data = r->hard_timer.data = r;
	if (fixed_secs > 0)
		uv_timer_start(&r->stop_timer, on_stop_timer, (uint64_t)(fixed_secs * 1000), 0);
	uv_timer_start(&r->hard_timer, on_hard_timer, (uint64_t)(hard_secs * 1000), 0);
	while (!r->finished)
		uv_run(r->loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&r->stop_timer, noop_close);
	uv_close((uv_handle_t *)&r->hard_timer, noop_close);
	uv_run(r->loop, UV_RUN_DEFAULT);
}

static void run_init(struct run *r, struct target *t, uv_loop_t *loop)
{
	memset(r, 0, sizeof(*r));
	r->loop = loop;
	r->t = t;
	r->t_start = uv_hrtime();
}

static void run_free(struct run *r)
{
	for (int i = 0; i < K_N; i++)
		samples_free(&r->lat[i]);
	samples_free(&r->extra);
}

static double run_secs(struct run *r)
{
	uint64_t end = r->t_stop ? r->t_stop : uv_hrtime();
	return (double)(end - r->t_start) / 1e9;
}

static void user_name(char *out, size_t len, int i)
{
	snprintf(out, len, "%s%d", user_prefix, i % nusers);
}

static void imap_login(struct cl *c)
{
	cl_imap(c, K_LOGIN, "LOGIN %s \"%s\"", c->user, password);
}

/* ---- scenario: logins ---- */
static void login_spawn(struct run *r);

static void login_step(struct cl *c, int kind, int st, double lat)
{
	(void)lat;
	struct run *r = c->run;
	if (st != 0) {
		if (st > 0)
			r->errors++;
		cl_close(c);
		if (r->errors > 1000) /* the server is not there: stop, do not spin */
			close_all(r);
		else if (!r->stop)
			login_spawn(r);
		return;
	}
	switch (kind) {
	case K_GREET:
		imap_login(c);
		break;
	case K_LOGIN:
		if (!r->stop) {
			r->count++;
			samples_add(&r->extra, (double)(uv_hrtime() - c->t_conn) / 1e9);
		}
		cl_imap(c, K_LOGOUT, "LOGOUT");
		break;
	default:
		cl_close(c);
		if (!r->stop)
			login_spawn(r);
	}
}

static void login_spawn(struct run *r)
{
	if (r->target_n > 0 && r->spawned >= r->target_n) { /* warm-up: every user once */
		r->stop = true;
		if (r->live == 0)
			r->finished = true;
		return;
	}
	struct cl *c = cl_new(r, false, r->tls, r->port, login_step);
	user_name(c->user, sizeof(c->user), r->spawned++);
}

static void scen_logins(int ti, uv_loop_t *loop)
{
	struct target *t = &targets[ti];
	/* every user's first login, not measured with the others: a server may create the
	 * user's folders then (mailkeep does) */
	struct run w;
	run_init(&w, t, loop);
	w.port = t->imap;
	w.target_n = nusers;
	for (int i = 0; i < 4; i++)
		login_spawn(&w);
	run_go(&w, 0, 600);
	metric(ti, "logins", "first login of each user, 4 clients: logins/s", "1/s", 1,
	       (double)nusers / run_secs(&w));
	run_free(&w);
	for (int tls = 0; tls < 2; tls++) {
		for (int ci = 0; ci < 2; ci++) {
			int conc = ci ? 32 : 4;
			struct run r;
			run_init(&r, t, loop);
			r.tls = tls;
			r.port = tls ? t->imaps : t->imap;
			if (r.port == 0)
				continue;
			for (int i = 0; i < conc; i++)
				login_spawn(&r);
			run_go(&r, login_secs, login_secs + 30);
			char name[64];
			const char *m = tls ? "TLS" : "plain";
			snprintf(name, sizeof(name), "%s, %d clients: logins/s", m, conc);
			metric(ti, "logins", name, "1/s", 1, (double)r.count / run_secs(&r));
			snprintf(name, sizeof(name), "%s, %d clients: connect->LOGIN OK p50", m,
				 conc);
			metric(ti, "logins", name, "ms", -1, samples_pct(&r.extra, 50) * 1000);
			snprintf(name, sizeof(name), "%s, %d clients: connect->LOGIN OK p99", m,
				 conc);
			metric(ti, "logins", name, "ms", -1, samples_pct(&r.extra, 99) * 1000);
			snprintf(name, sizeof(name), "%s, %d clients: errors", m, conc);
			metric(ti, "logins", name, "", -1, (double)r.errors);
			run_free(&r);
		}
	}
}

/* ---- scenario: fetch ---- */
static void fetch_step(struct cl *c, int kind, int st, double lat)
{
	struct run *r = c->run;
	if (st != 0) {
		fprintf(stderr, "bench: %s: fetch: %s failed: %s\n", r->t->name,
			kind < K_N ? kind_name[kind] : "connection", c->last);
		r->errors++;
		close_all(r);
		return;
	}
	if (kind == K_SELECT || kind == K_FETCH || kind == K_FETCHBODY || kind == K_SEARCH) {
		r->f[c->state] = lat;
		if (c->state == 2)
			r->f[12] = c->fetches;
		if (c->state == 4)
			r->f[13] = (double)c->bytes;
		if (c->state == 5)
			r->f[14] = c->hits;
		if (c->state == 7)
			r->f[11] = c->hits;
		c->state++;
	}
	c->fetches = c->hits = 0;
	c->bytes = 0;
	switch (kind) {
	case K_GREET:
		imap_login(c);
		break;
	case K_LOGIN:
		c->state = 1;
		cl_imap(c, K_SELECT, "SELECT INBOX");
		break;
	case K_SELECT:
	case K_FETCH:
		if (c->state <= 3)
			cl_imap(c, K_FETCH,
				"UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE)");
		else
			cl_imap(c, K_FETCHBODY, "FETCH 1:* BODY.PEEK[]");
		break;
	case K_FETCHBODY:
	case K_SEARCH:
		if (c->state <= 6)
			cl_imap(c, K_SEARCH, "SEARCH TEXT \"%s\"", search_text);
		else if (c->state == 7)
			cl_imap(c, K_SEARCH, "SEARCH FROM \"%s\"", search_from);
		else
			cl_imap(c, K_LOGOUT, "LOGOUT");
		break;
	default:
		close_all(r);
	}
}

static void scen_fetch(int ti, uv_loop_t *loop)
{
	struct target *t = &targets[ti];
	if (drop_caches) {
		sync();
		int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
		bool ok = fd >= 0 && write(fd, "3\n", 2) == 2;
		if (fd >= 0)
			close(fd);
		metric(ti, "fetch", "page cache dropped before cold run (1 = yes)", "", 0, ok);
	}
	struct run r;
	run_init(&r, t, loop);
	struct cl *c = cl_new(&r, false, false, t->imap, fetch_step);
	snprintf(c->user, sizeof(c->user), "%s", fetch_user);
	run_go(&r, 0, 900);
	if (r.f[15] == 0 && r.errors == 0) {
		metric(ti, "fetch", "messages", "", 0, r.f[12]);
		metric(ti, "fetch", "SELECT INBOX, cold", "s", -1, r.f[1]);
		metric(ti, "fetch", "UID FETCH 1:* metadata, cold", "s", -1, r.f[2]);
		metric(ti, "fetch", "UID FETCH 1:* metadata, warm", "s", -1, r.f[3]);
		metric(ti, "fetch", "FETCH 1:* BODY.PEEK[]", "s", -1, r.f[4]);
		metric(ti, "fetch", "FETCH 1:* BODY.PEEK[] throughput", "MB/s", 1,
		       r.f[13] / 1e6 / r.f[4]);
		metric(ti, "fetch", "SEARCH TEXT, first", "s", -1, r.f[5]);
		metric(ti, "fetch", "SEARCH TEXT, second", "s", -1, r.f[6]);
		metric(ti, "fetch", "SEARCH TEXT hits", "", 0, r.f[14]);
		metric(ti, "fetch", "SEARCH FROM", "s", -1, r.f[7]);
		metric(ti, "fetch", "SEARCH FROM hits", "", 0, r.f[11]);
	}
	run_free(&r);
}

/* ---- scenario: idle ---- */
static void idle_spawn(struct run *r);
static void idle_round(struct run *r);

static void idle_on_exists(struct cl *c, unsigned n)
{
	(void)n;
	struct run *r = c->run;
	if (!c->idling || r->round_t0 == 0)
		return;
	uint64_t t0 = __atomic_load_n(&r->ut0[c->id % nusers], __ATOMIC_ACQUIRE);
	if (t0 == 0)
		return;
	samples_add(&r->extra, (double)(uv_hrtime() - t0) / 1e9);
	if (++r->round_got == r->round_expected) {
		uv_timer_stop(&r->aux_timer);
		idle_round(r);
	}
}

static void idle_measured(uv_timer_t *t)
{
	struct run *r = t->data;
	struct memsum m = server_mem(r->t->pid);
	r->f[2] = m.rss;
	r->f[3] = m.pss;
	r->f[4] = m.procs;
	r->sched_srv0 = server_sched(r->t->pid);
	r->sched_cli0 = server_sched(0);
	idle_round(r);
}

static void idle_round_timeout(uv_timer_t *t)
{
	struct run *r = t->data;
	r->f[5] += r->round_expected - r->round_got; /* pushes that never came */
	idle_round(r);
}

static int user_index(const char *user)
{
	return atoi(user + strlen(user_prefix)) % nusers;
}

static void deliver(struct run *r, const char *user, unsigned seq)
{
	char m[sizeof(r->t->mail) + 128], dir[sizeof(m) + 8], tmp[sizeof(m) + 128],
		dst[sizeof(m) + 128];
	const char *pu = strstr(r->t->mail, "%u");
	if (pu == NULL)
		snprintf(m, sizeof(m), "%s/%s", r->t->mail, user);
	else
		snprintf(m, sizeof(m), "%.*s%s%s", (int)(pu - r->t->mail), r->t->mail, user,
			 pu + 2);
	snprintf(dir, sizeof(dir), "%s/new", m);
	struct stat st;
	if (stat(dir, &st) < 0) {
		perror(dir);
		return;
	}
	unsigned long stamp = (unsigned long)time(NULL);
	snprintf(tmp, sizeof(tmp), "%s/tmp/%lu.M%uP%d.bench", m, stamp, seq, (int)getpid());
	snprintf(dst, sizeof(dst), "%s/new/%lu.M%uP%d.bench", m, stamp, seq, (int)getpid());
	char msg[512];
	int n = snprintf(msg, sizeof(msg),
			 "From: Push Bench <push@example.org>\nTo: %s@example.com\nSubject: push "
			 "%u\nDate: Mon, 4 Mar 2024 10:00:00 +0100\nMessage-ID: "
			 "<push%u.%lu@example.org>\n\nA new message for an idle phone.\n",
			 user, seq, seq, stamp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || write(fd, msg, (size_t)n) != n || fchown(fd, st.st_uid, st.st_gid) < 0) {
		perror(tmp);
		if (fd >= 0)
			close(fd);
		return;
	}
	fsync(fd);
	close(fd);
	__atomic_store_n(&r->ut0[user_index(user)], uv_hrtime(), __ATOMIC_RELEASE);
	if (rename(tmp, dst) < 0)
		perror(dst);
}

static void idle_deliver_work(uv_work_t *w)
{
	struct run *r = w->data;
	int users = nusers < r->target_n ? nusers : r->target_n;
	for (int u = 0; u < users; u++) {
		char name[64];
		user_name(name, sizeof(name), u);
		deliver(r, name, r->round * 100000u + (unsigned)u);
	}
}

static void idle_deliver_done(uv_work_t *w, int status)
{
	(void)status;
	struct run *r = w->data;
	r->delivering = false;
	if (r->round_next) {
		r->round_next = false;
		idle_round(r);
	}
}

static void idle_round(struct run *r)
{
	if (r->delivering) {
		r->round_next =
			true; /* the next round starts once this one's deliveries are done */
		return;
	}
	if (r->round == (unsigned)idle_rounds || r->stop) {
		struct schedsum srv = server_sched(r->t->pid), cli = server_sched(0);
		r->f[8] = srv.cpu - r->sched_srv0.cpu;
		r->f[9] = srv.wait - r->sched_srv0.wait;
		r->f[10] = cli.cpu - r->sched_cli0.cpu;
		r->f[11] = cli.wait - r->sched_cli0.wait;
		close_all(r);
		return;
	}
	r->round++;
	r->round_got = 0;
	r->round_expected = (unsigned)r->ready;
	r->round_t0 = uv_hrtime();
	for (int u = 0; u < nusers; u++)
		r->ut0[u] = 0;
	/* the deliveries (each fsynced) run on the thread pool, so this loop keeps reading the
	 * EXISTS they cause meanwhile: a delivery's clock starts just before its rename */
	r->work.data = r;
	r->delivering = true;
	uv_queue_work(r->loop, &r->work, idle_deliver_work, idle_deliver_done);
	uv_timer_start(&r->aux_timer, idle_round_timeout, 30000, 0);
}

static void idle_step(struct cl *c, int kind, int st, double lat)
{
	(void)lat;
	struct run *r = c->run;
	if (st != 0) {
		if (kind != K_ERR || !c->idling) {
			r->failed++;
			if (r->failed <= 3)
				fprintf(stderr, "bench: %s: idle connection %d: %s failed: %s\n",
					r->t->name, c->id,
					kind < K_N ? kind_name[kind] : "connection", c->last);
		}
		if (kind != K_ERR)
			cl_close(c);
		idle_spawn(r);
		return;
	}
	switch (kind) {
	case K_GREET:
		imap_login(c);
		break;
	case K_LOGIN:
		cl_imap(c, K_SELECT, "SELECT INBOX");
		break;
	case K_SELECT:
		c->on_exists = idle_on_exists;
		cl_imap(c, K_IDLE, "IDLE");
		break;
	case K_IDLING:
		r->ready++;
		idle_spawn(r);
		break;
	default:
		break;
	}
}

static void idle_spawn(struct run *r)
{
	if (r->spawned < r->target_n) {
		struct cl *c = cl_new(r, false, r->tls, r->port, idle_step);
		c->id = r->spawned;
		user_name(c->user, sizeof(c->user), r->spawned++);
		return;
	}
	if (r->ready + r->failed == r->target_n && r->f[6] == 0) {
		r->f[6] = 1;
		r->f[7] = run_secs(r);
		/* let the server settle (processes finish forking, buffers shrink) */
		uv_timer_start(&r->aux_timer, idle_measured, 1000, 0);
	}
}

static void scen_idle(int ti, uv_loop_t *loop)
{
	struct target *t = &targets[ti];
	for (int tls = 0; tls < 2; tls++) {
		struct run r;
		run_init(&r, t, loop);
		r.tls = tls;
		r.port = tls ? t->imaps : t->imap;
		if (r.port == 0)
			continue;
		r.target_n = idle_n;
		r.ut0 = calloc((size_t)nusers, sizeof(uint64_t));
		if (r.ut0 == NULL)
			abort();
		uv_timer_init(loop, &r.aux_timer);
		r.aux_timer.data = &r;
		struct memsum before = server_mem_settled(t->pid);
		for (int i = 0; i < 64 && i < idle_n; i++)
			idle_spawn(&r);
		run_go(&r, 0, 600);
		uv_timer_stop(&r.aux_timer);
		uv_close((uv_handle_t *)&r.aux_timer, noop_close);
		uv_run(loop, UV_RUN_DEFAULT);
		const char *m = tls ? "TLS" : "plain";
		char name[80];
		int nn = r.ready;
		snprintf(name, sizeof(name), "%s: connections idling", m);
		metric(ti, "idle", name, "", 1, nn);
		snprintf(name, sizeof(name), "%s: time to set them up", m);
		metric(ti, "idle", name, "s", -1, r.f[7]);
		snprintf(name, sizeof(name), "%s: server processes", m);
		metric(ti, "idle", name, "", 0, r.f[4]);
		snprintf(name, sizeof(name), "%s: server RSS before", m);
		metric(ti, "idle", name, "MiB", -1, before.rss / 1048576);
		snprintf(name, sizeof(name), "%s: server RSS with idlers", m);
		metric(ti, "idle", name, "MiB", -1, r.f[2] / 1048576);
		snprintf(name, sizeof(name), "%s: RSS per connection", m);
		metric(ti, "idle", name, "KiB", -1, nn ? (r.f[2] - before.rss) / nn / 1024 : -1);
		snprintf(name, sizeof(name), "%s: PSS per connection", m);
		metric(ti, "idle", name, "KiB", -1, nn ? (r.f[3] - before.pss) / nn / 1024 : -1);
		snprintf(name, sizeof(name), "%s: push samples (%d rounds)", m, idle_rounds);
		metric(ti, "idle", name, "", 0, (double)r.extra.n);
		snprintf(name, sizeof(name), "%s: pushes missed (30 s)", m);
		metric(ti, "idle", name, "", -1, r.f[5]);
		snprintf(name, sizeof(name), "%s: push latency p50", m);
		metric(ti, "idle", name, "ms", -1, samples_pct(&r.extra, 50) * 1000);
		snprintf(name, sizeof(name), "%s: push latency p99", m);
		metric(ti, "idle", name, "ms", -1, samples_pct(&r.extra, 99) * 1000);
		snprintf(name, sizeof(name), "%s: push latency max", m);
		metric(ti, "idle", name, "ms", -1, samples_pct(&r.extra, 100) * 1000);
		/* where the rounds' time went: on a CPU, or runnable and waiting for one */
		snprintf(name, sizeof(name), "%s: pushes: server on CPU", m);
		metric(ti, "idle", name, "s", 0, r.f[8]);
		snprintf(name, sizeof(name), "%s: pushes: server waiting for CPU", m);
		metric(ti, "idle", name, "s", 0, r.f[9]);
		snprintf(name, sizeof(name), "%s: pushes: bench client on CPU", m);
		metric(ti, "idle", name, "s", 0, r.f[10]);
		snprintf(name, sizeof(name), "%s: pushes: bench client waiting", m);
		metric(ti, "idle", name, "s", 0, r.f[11]);
		free(r.ut0);
		run_free(&r);
	}
}

/* ---- scenario: pop3 ---- */
enum { P_SERIAL, P_PIPE, P_DELE };

static void pop_send_next(struct cl *c)
{
	while (c->n_next <= c->n_total && c->qn < c->window)
		if (c->state == P_DELE)
			cl_pop(c, K_DELE, false, "DELE %u", c->n_next++);
		else
			cl_pop(c, K_RETR, true, "RETR %u", c->n_next++);
}

static void pop_step(struct cl *c, int kind, int st, double lat)
{
	struct run *r = c->run;
	if (st != 0) {
		if (kind == K_PASS && strstr(c->last, "IN-USE"))
			r->inuse = 1;
		else
			fprintf(stderr, "bench: %s: pop3: %s failed: %s\n", r->t->name,
				kind < K_N ? kind_name[kind] : "connection", c->last);
		r->errors++;
		close_all(r);
		return;
	}
	switch (kind) {
	case K_GREET:
		cl_pop(c, K_USER, false, "USER %s", c->user);
		break;
	case K_USER:
		cl_pop(c, K_PASS, false, "PASS %s", password);
		break;
	case K_PASS:
		cl_pop(c, K_STAT, false, "STAT");
		break;
	case K_STAT:
		r->f[0] = lat;
		c->n_total = (unsigned)strtoul(c->last + 3, NULL, 10);
		r->f[6] = c->n_total;
		if (c->state == P_SERIAL) {
			cl_pop(c, K_UIDL, true, "UIDL");
			break;
		}
		/* fall through */
	case K_UIDL:
		if (kind == K_UIDL)
			r->f[1] = lat;
		c->t_mark = uv_hrtime();
		c->n_next = 1;
		c->bytes = 0;
		if (c->n_total == 0)
			cl_pop(c, K_QUIT, false, "QUIT");
		else
			pop_send_next(c);
		break;
	case K_RETR:
	case K_DELE:
		if (++c->n_done == c->n_total) {
			r->f[2] = (double)(uv_hrtime() - c->t_mark) / 1e9;
			r->f[3] = (double)c->bytes;
			c->t_mark = uv_hrtime();
			cl_pop(c, K_QUIT, false, "QUIT");
		} else {
			pop_send_next(c);
		}
		break;
	case K_QUIT:
		r->f[4] = (double)(uv_hrtime() - c->t_mark) / 1e9;
		close_all(r);
		break;
	default:
		close_all(r);
	}
}

static void pop_session(int ti, uv_loop_t *loop, bool tls, int mode, unsigned window)
{
	struct target *t = &targets[ti];
	int port = tls ? t->pop3s : t->pop3;
	if (port == 0)
		return;
	struct run r;
	for (int tries = 0; tries < 100; tries++) {
		run_init(&r, t, loop);
		struct cl *c = cl_new(&r, true, tls, port, pop_step);
		snprintf(c->user, sizeof(c->user), "%s", pop_user);
		c->state = (unsigned)mode;
		c->window = window;
		run_go(&r, 0, 900);
		if (!r.inuse)
			break;
		run_free(&r);
		usleep(100000); /* the previous session's lock is released after its QUIT */
	}
	const char *m = tls ? "TLS" : "plain";
	char name[80];
	if (r.errors || r.f[15]) {
		snprintf(name, sizeof(name), "%s %s: FAILED", m,
			 mode == P_DELE ? "DELE"
			 : window > 1   ? "pipelined"
					: "serial");
		metric(ti, "pop3", name, "", 0, 1);
		run_free(&r);
		return;
	}
	if (mode == P_SERIAL) {
		snprintf(name, sizeof(name), "messages");
		metric(ti, "pop3", name, "", 0, r.f[6]);
		snprintf(name, sizeof(name), "%s: STAT", m);
		metric(ti, "pop3", name, "ms", -1, r.f[0] * 1000);
		snprintf(name, sizeof(name), "%s: UIDL", m);
		metric(ti, "pop3", name, "ms", -1, r.f[1] * 1000);
	}
	if (mode == P_DELE) {
		metric(ti, "pop3", "DELE all (pipelined 64)", "s", -1, r.f[2]);
		metric(ti, "pop3", "QUIT after DELE all", "s", -1, r.f[4]);
		metric(ti, "pop3", "DELE all + QUIT", "s", -1, r.f[2] + r.f[4]);
	} else {
		const char *w = window > 1 ? "pipelined 64" : "serial";
		snprintf(name, sizeof(name), "%s: RETR all, %s", m, w);
		metric(ti, "pop3", name, "s", -1, r.f[2]);
		snprintf(name, sizeof(name), "%s: RETR all, %s, throughput", m, w);
		metric(ti, "pop3", name, "MB/s", 1, r.f[3] / 1e6 / r.f[2]);
		snprintf(name, sizeof(name), "%s: RETR all, %s, per message", m, w);
		metric(ti, "pop3", name, "us", -1, r.f[6] > 0 ? r.f[2] / r.f[6] * 1e6 : -1);
	}
	run_free(&r);
}

static void scen_pop3(int ti, uv_loop_t *loop)
{
	pop_session(ti, loop, false, P_SERIAL, 1);
	pop_session(ti, loop, false, P_PIPE, 64);
	pop_session(ti, loop, true, P_SERIAL, 1);
	pop_session(ti, loop, true, P_PIPE, 64);
	pop_session(ti, loop, false, P_DELE, 64);
}

/* ---- scenario: mixed ---- */
static void mixed_spawn(struct run *r, int i);

static const char mixed_msg[] = "From: Mixed Bench <mixed@example.org>\r\n"
				"To: someone@example.com\r\n"
				"Subject: appended by the mixed workload\r\n"
				"Date: Mon, 4 Mar 2024 10:00:00 +0100\r\n"
				"Message-ID: <mixed@example.org>\r\n"
				"\r\n"
				"A short draft, appended, flagged deleted and expunged again.\r\n";

static void mixed_step(struct cl *c, int kind, int st, double lat)
{
	(void)lat;
	struct run *r = c->run;
	if (st != 0 || r->stop) {
		if (st > 0 && !r->stop) {
			r->errors++;
			if (r->errors <= 3)
				fprintf(stderr, "bench: %s: mixed: %s failed: %s\n", r->t->name,
					kind < K_N ? kind_name[kind] : "?", c->last);
		}
		if (kind != K_ERR)
			cl_close(c);
		if (r->errors > 1000)
			close_all(r);
		else if (!r->stop)
			mixed_spawn(r, c->id);
		return;
	}
	unsigned n = c->exists ? c->exists : 1;
	switch (kind) {
	case K_GREET:
		imap_login(c);
		break;
	case K_LOGIN:
		cl_imap(c, K_LIST, "LIST \"\" \"*\"");
		break;
	case K_LIST:
		cl_imap(c, K_SELECT, "SELECT INBOX");
		break;
	case K_SELECT: {
		unsigned a = 1 + (unsigned)rand() % n;
		unsigned b = a + 9 > n ? n : a + 9;
		cl_imap(c, K_FETCH, "FETCH %u:%u (UID FLAGS RFC822.SIZE ENVELOPE)", a, b);
		break;
	}
	case K_FETCH:
		cl_imap(c, K_FETCHBODY, "FETCH %u BODY.PEEK[]", 1 + (unsigned)rand() % n);
		break;
	case K_FETCHBODY:
		c->state = 0;
		cl_imap(c, K_STORE, "STORE %u %cFLAGS (\\Flagged)", 1 + (unsigned)rand() % n,
			rand() % 2 ? '+' : '-');
		break;
	case K_STORE:
		if (c->state == 0) {
			char cmd[128];
			int len = snprintf(cmd, sizeof(cmd), "a%u APPEND INBOX (\\Seen) {%zu+}\r\n",
					   ++c->tag, sizeof(mixed_msg) - 1);
			q_push(c, K_APPEND, false);
			cl_write(c, cmd, (size_t)len);
			cl_write(c, mixed_msg, sizeof(mixed_msg) - 1);
			cl_write(c, "\r\n", 2);
		} else {
			cl_imap(c, K_EXPUNGE, "EXPUNGE");
		}
		break;
	case K_APPEND: {
		const char *au = strstr(c->last, "[APPENDUID ");
		unsigned long uv = 0, uid = 0;
		c->state = 1;
		if (au && sscanf(au + 11, "%lu %lu", &uv, &uid) == 2)
			cl_imap(c, K_STORE, "UID STORE %lu +FLAGS.SILENT (\\Deleted)", uid);
		else
			cl_imap(c, K_EXPUNGE, "EXPUNGE"); /* without UIDPLUS: expunge nothing */
		break;
	}
	case K_EXPUNGE:
		cl_imap(c, K_LOGOUT, "LOGOUT");
		break;
	case K_LOGOUT:
		cl_close(c);
		r->count++;
		mixed_spawn(r, c->id);
		break;
	default:
		break;
	}
}

static void mixed_spawn(struct run *r, int i)
{
	if (r->stop)
		return;
	struct cl *c = cl_new(r, false, false, r->port, mixed_step);
	c->id = i;
	user_name(c->user, sizeof(c->user), i);
}

static void scen_mixed(int ti, uv_loop_t *loop)
{
	struct target *t = &targets[ti];
	static const int clients[] = {10, 100};
	for (int k = 0; k < 2; k++) {
		struct run r;
		run_init(&r, t, loop);
		r.port = t->imap;
		for (int i = 0; i < clients[k]; i++)
			mixed_spawn(&r, i);
		run_go(&r, mixed_secs, mixed_secs + 60);
		double secs = (double)(r.t_stop - r.t_start) / 1e9;
		static const int kinds[] = {K_LOGIN, K_LIST,   K_SELECT,  K_FETCH, K_FETCHBODY,
					    K_STORE, K_APPEND, K_EXPUNGE, K_LOGOUT};
		char name[96];
		double total = 0;
		for (size_t j = 0; j < sizeof(kinds) / sizeof(kinds[0]); j++) {
			struct samples *s = &r.lat[kinds[j]];
			total += (double)s->n;
			snprintf(name, sizeof(name), "%d clients: %s ops/s", clients[k],
				 kind_name[kinds[j]]);
			metric(ti, "mixed", name, "1/s", 1, (double)s->n / secs);
			snprintf(name, sizeof(name), "%d clients: %s p50", clients[k],
				 kind_name[kinds[j]]);
			metric(ti, "mixed", name, "ms", -1, samples_pct(s, 50) * 1000);
			snprintf(name, sizeof(name), "%d clients: %s p99", clients[k],
				 kind_name[kinds[j]]);
			metric(ti, "mixed", name, "ms", -1, samples_pct(s, 99) * 1000);
		}
		snprintf(name, sizeof(name), "%d clients: all commands ops/s", clients[k]);
		metric(ti, "mixed", name, "1/s", 1, total / secs);
		snprintf(name, sizeof(name), "%d clients: sessions/s", clients[k]);
		metric(ti, "mixed", name, "1/s", 1, (double)r.count / secs);
		snprintf(name, sizeof(name), "%d clients: errors", clients[k]);
		metric(ti, "mixed", name, "", -1, (double)r.errors);
		run_free(&r);
	}
}

/* ---- scenario: fairness ---- */
enum { R_NOOP, R_SEARCH, R_RETR };

static void fair_noop_timer(uv_timer_t *t)
{
	struct cl *c = t->data;
	if (!c->closing && !c->run->stop)
		cl_imap(c, K_NOOP, "NOOP");
}

static void fair_mlline(struct cl *c, const char *l, size_t len)
{
	(void)len;
	unsigned long num, size;
	if (sscanf(l, "%lu %lu", &num, &size) == 2 && size > c->aux) {
		c->aux = (unsigned)size;
		c->n_total = (unsigned)num;
	}
}

static void fair_step(struct cl *c, int kind, int st, double lat)
{
	struct run *r = c->run;
	if (st != 0 || r->stop) {
		if (st > 0 && !r->stop) {
			r->errors++;
			fprintf(stderr, "bench: %s: fairness: %s failed: %s\n", r->t->name,
				kind < K_N ? kind_name[kind] : "?", c->last);
		}
		if (kind != K_ERR)
			cl_close(c);
		return;
	}
	switch (kind) {
	case K_GREET:
		if (c->pop3)
			cl_pop(c, K_USER, false, "USER %s", c->user);
		else
			imap_login(c);
		break;
	case K_LOGIN:
		cl_imap(c, K_SELECT, "SELECT INBOX");
		break;
	case K_SELECT:
	case K_SEARCH:
		if (c->role == R_SEARCH)
			cl_imap(c, K_SEARCH, "SEARCH TEXT \"%s\"", search_text);
		else
			cl_imap(c, K_NOOP, "NOOP");
		break;
	case K_NOOP:
		samples_add(&r->extra, lat);
		uv_timer_start(&c->timer, fair_noop_timer, 10, 0);
		break;
	case K_USER:
		cl_pop(c, K_PASS, false, "PASS %s", password);
		break;
	case K_PASS:
		c->on_mlline = fair_mlline;
		cl_pop(c, K_PLIST, true, "LIST");
		break;
	case K_PLIST:
		c->on_mlline = NULL;
		c->bytes = 0;
		/* fall through */
	case K_RETR:
		if (kind == K_RETR)
			r->bytes += c->bytes;
		c->bytes = 0;
		cl_pop(c, K_RETR, true, "RETR %u", c->n_total ? c->n_total : 1);
		break;
	default:
		break;
	}
}

static void scen_fairness(int ti, uv_loop_t *loop)
{
	struct target *t = &targets[ti];
	struct run r;
	run_init(&r, t, loop);
	for (int i = 0; i < 30; i++) {
		int role = i % 3;
		struct cl *c = cl_new(&r, role == R_RETR, false, role == R_RETR ? t->pop3 : t->imap,
				      fair_step);
		c->role = role;
		if (role == R_SEARCH)
			snprintf(c->user, sizeof(c->user), "%s", fetch_user);
		else
			user_name(c->user, sizeof(c->user), role == R_NOOP ? 10 + i : 40 + i);
	}
	run_go(&r, fair_secs, fair_secs + 120);
	double secs = (double)(r.t_stop - r.t_start) / 1e9;
	metric(ti, "fairness", "NOOP (10 clients, 10 ms apart) count", "", 1, (double)r.extra.n);
	metric(ti, "fairness", "NOOP p50", "ms", -1, samples_pct(&r.extra, 50) * 1000);
	metric(ti, "fairness", "NOOP p99", "ms", -1, samples_pct(&r.extra, 99) * 1000);
	metric(ti, "fairness", "NOOP max", "ms", -1, samples_pct(&r.extra, 100) * 1000);
	metric(ti, "fairness", "SEARCH TEXT (10 clients) completed/s", "1/s", 1,
	       (double)r.lat[K_SEARCH].n / secs);
	metric(ti, "fairness", "SEARCH TEXT p50", "ms", -1,
	       samples_pct(&r.lat[K_SEARCH], 50) * 1000);
	metric(ti, "fairness", "RETR largest (10 POP3 clients) throughput", "MB/s", 1,
	       (double)r.bytes / 1e6 / secs);
	metric(ti, "fairness", "errors", "", -1, (double)r.errors);
	run_free(&r);
}

/* ---- output ---- */
static void print_tables(FILE *out)
{
	const char *prev = "";
	for (int i = 0; i < nmetrics; i++) {
		struct metric *m = &metrics[i];
		if (strcmp(m->scen, prev) != 0) {
			fprintf(out, "\n== %s\n%-52s", m->scen, "");
			for (int t = 0; t < ntargets; t++)
				fprintf(out, " %14s", targets[t].name);
			if (ntargets == 2)
				fprintf(out, " %10s/%s", targets[0].name, targets[1].name);
			fprintf(out, "\n");
			prev = m->scen;
		}
		char label[80];
		snprintf(label, sizeof(label), "%s%s%s%s", m->name, m->unit[0] ? " (" : "", m->unit,
			 m->unit[0] ? ")" : "");
		fprintf(out, "%-52s", label);
		for (int t = 0; t < ntargets; t++) {
			if (!m->has[t])
				fprintf(out, " %14s", "-");
			else if (m->v[t] != 0 && (m->v[t] < 0.01 && m->v[t] > -0.01))
				fprintf(out, " %14.6f", m->v[t]);
			else
				fprintf(out, " %14.3f", m->v[t]);
		}
		if (ntargets == 2 && m->has[0] && m->has[1] && m->v[1] != 0 && m->v[0] >= 0 &&
		    m->v[1] > 0)
			fprintf(out, " %14.3f", m->v[0] / m->v[1]);
		fprintf(out, "\n");
	}
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void write_json(const char *path)
{
	FILE *f = fopen(path, "w");
	if (f == NULL) {
		perror(path);
		return;
	}
	fprintf(f, "{\"targets\": [");
	for (int t = 0; t < ntargets; t++) {
		fprintf(f, "%s", t ? ", " : "");
		json_str(f, targets[t].name);
	}
	fprintf(f, "],\n \"time\": %ld,\n \"metrics\": [\n", (long)time(NULL));
	for (int i = 0; i < nmetrics; i++) {
		struct metric *m = &metrics[i];
		fprintf(f, "  {\"scenario\": ");
		json_str(f, m->scen);
		fprintf(f, ", \"name\": ");
		json_str(f, m->name);
		fprintf(f, ", \"unit\": ");
		json_str(f, m->unit);
		fprintf(f, ", \"better\": \"%s\", \"values\": {",
			m->better > 0   ? "higher"
			: m->better < 0 ? "lower"
					: "none");
		bool first = true;
		for (int t = 0; t < ntargets; t++) {
			if (!m->has[t])
				continue;
			fprintf(f, "%s", first ? "" : ", ");
			json_str(f, targets[t].name);
			fprintf(f, ": %.9g", m->v[t]);
			first = false;
		}
		fprintf(f, "}");
		if (ntargets == 2 && m->has[0] && m->has[1] && m->v[1] > 0 && m->v[0] >= 0)
			fprintf(f, ", \"ratio\": %.6g", m->v[0] / m->v[1]);
		fprintf(f, "}%s\n", i + 1 < nmetrics ? "," : "");
	}
	fprintf(f, " ]\n}\n");
	fclose(f);
}

/* ---- command line ---- */
static void usage(void)
{
	fprintf(stderr,
		"usage: mailkeep-bench --target NAME,imap=P[,imaps=P][,pop3=P][,pop3s=P],pid=PID,"
		"mail=DIR/%%u [--target ...]\n"
		"  [--host 127.0.0.1] [--password PW] [--fetch-user bench] [--pop-user pop]\n"
		"  [--user-prefix u] [--users 100] [--scenarios logins,fetch,idle,pop3,mixed,"
		"fairness]\n"
		"  [--idle-n 1000] [--idle-rounds 3] [--mixed-secs 20] [--login-secs 8]\n"
		"  [--fair-secs 20] [--search-text WORD] [--search-from STR] [--drop-caches]\n"
		"  [--json FILE]\n");
	exit(2);
}

static void parse_target(char *spec)
{
	if (ntargets == MAX_TARGETS) {
		fprintf(stderr, "at most %d targets\n", MAX_TARGETS);
		exit(2);
	}
	struct target *t = &targets[ntargets++];
	char *save = NULL;
	char *tok = strtok_r(spec, ",", &save);
	if (tok == NULL)
		usage();
	snprintf(t->name, sizeof(t->name), "%s", tok);
	while ((tok = strtok_r(NULL, ",", &save)) != NULL) {
		char *eq = strchr(tok, '=');
		if (eq == NULL)
			usage();
		*eq++ = '\0';
		if (strcmp(tok, "imap") == 0)
			t->imap = atoi(eq);
		else if (strcmp(tok, "imaps") == 0)
			t->imaps = atoi(eq);
		else if (strcmp(tok, "pop3") == 0)
			t->pop3 = atoi(eq);
		else if (strcmp(tok, "pop3s") == 0)
			t->pop3s = atoi(eq);
		else if (strcmp(tok, "pid") == 0)
			t->pid = atol(eq);
		else if (strcmp(tok, "mail") == 0)
			snprintf(t->mail, sizeof(t->mail), "%s", eq);
		else
			usage();
	}
}

static bool want(const char *s)
{
	char list[sizeof(scenarios) + 4];
	snprintf(list, sizeof(list), ",%s,", scenarios);
	char pat[40];
	snprintf(pat, sizeof(pat), ",%s,", s);
	return strstr(list, pat) != NULL;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--drop-caches") == 0) {
			drop_caches = true;
			continue;
		}
		if (v == NULL)
			usage();
		i++;
		if (strcmp(a, "--target") == 0)
			parse_target(argv[i]);
		else if (strcmp(a, "--host") == 0)
			host = v;
		else if (strcmp(a, "--password") == 0)
			password = v;
		else if (strcmp(a, "--fetch-user") == 0)
			fetch_user = v;
		else if (strcmp(a, "--pop-user") == 0)
			pop_user = v;
		else if (strcmp(a, "--user-prefix") == 0)
			user_prefix = v;
		else if (strcmp(a, "--users") == 0)
			nusers = atoi(v);
		else if (strcmp(a, "--scenarios") == 0)
			snprintf(scenarios, sizeof(scenarios), "%s", v);
		else if (strcmp(a, "--idle-n") == 0)
			idle_n = atoi(v);
		else if (strcmp(a, "--idle-rounds") == 0)
			idle_rounds = atoi(v);
		else if (strcmp(a, "--mixed-secs") == 0)
			mixed_secs = atof(v);
		else if (strcmp(a, "--login-secs") == 0)
			login_secs = atof(v);
		else if (strcmp(a, "--fair-secs") == 0)
			fair_secs = atof(v);
		else if (strcmp(a, "--search-text") == 0)
			search_text = v;
		else if (strcmp(a, "--search-from") == 0)
			search_from = v;
		else if (strcmp(a, "--json") == 0)
			json_path = v;
		else
			usage();
	}
	if (ntargets == 0 || nusers < 1 || idle_n < 1 || idle_rounds < 0 || mixed_secs <= 0 ||
	    login_secs <= 0 || fair_secs <= 0 || mixed_secs > 3600 || login_secs > 3600 ||
	    fair_secs > 3600 || idle_n > 60000 || idle_rounds > 100)
		usage();
	if (strcmp(host, "127.0.0.1") != 0 && strcmp(host, "::1") != 0 &&
	    strcmp(host, "localhost") != 0) {
		fprintf(stderr, "bench: loopback targets only\n");
		return 2;
	}
	if (strcmp(host, "localhost") == 0)
		host = "127.0.0.1";
	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	srand(1);
	gnutls_global_init();
	gnutls_certificate_allocate_credentials(&xcred);
	uv_loop_t *loop = uv_default_loop();
	static const struct {
		const char *name;
		void (*fn)(int ti, uv_loop_t *loop);
	} scens[] = {{"logins", scen_logins}, {"fetch", scen_fetch}, {"idle", scen_idle},
		     {"pop3", scen_pop3},     {"mixed", scen_mixed}, {"fairness", scen_fairness}};
	for (size_t s = 0; s < sizeof(scens) / sizeof(scens[0]); s++) {
		if (!want(scens[s].name))
			continue;
		for (int t = 0; t < ntargets; t++) {
			double l = load1();
			fprintf(stderr, "bench: %s on %s (load %.2f)\n", scens[s].name,
				targets[t].name, l);
			metric(t, scens[s].name, "load average (1 min) at start", "", 0, l);
			scens[s].fn(t, loop);
		}
	}
	print_tables(stdout);
	if (json_path)
		write_json(json_path);
	gnutls_certificate_free_credentials(xcred);
	gnutls_global_deinit();
	uv_loop_close(loop);
	return 0;
}
