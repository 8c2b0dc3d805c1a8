/* imap_sortkey — a message's SORT/THREAD keys: base subject (RFC 5256 §2.1), sent date
 * (§2.2), Message-IDs, and the fields taken from the cached ENVELOPE string. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_sort.h"
#include "msg_parse.h"

/* ---- base subject ---- */

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* subj-blob = "[" *BLOBCHAR "]" *WSP at s[i]; returns its length or 0. */
static size_t match_blob(const char *s, size_t len, size_t i)
{
	if (i >= len || s[i] != '[')
		return 0;
	size_t j = i + 1;
	while (j < len && s[j] != '[' && s[j] != ']')
		j++;
	if (j >= len || s[j] != ']')
		return 0;
	j++;
	while (j < len && is_wsp(s[j]))
		j++;
	return j - i;
}

/* subj-leader = (*subj-blob subj-refwd) / WSP at the start; its length or 0. *refwd_r when it
 * was the refwd form. subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":" */
static size_t match_leader(const char *s, size_t len, bool *refwd_r)
{
	*refwd_r = false;
	if (len && is_wsp(s[0]))
		return 1;
	size_t i = 0, b;
	while ((b = match_blob(s, len, i)) > 0)
		i += b;
	if (i + 2 <= len && strncasecmp(s + i, "re", 2) == 0)
		i += 2;
	else if (i + 2 <= len && strncasecmp(s + i, "fw", 2) == 0) {
		i += 2;
		if (i < len && (s[i] == 'd' || s[i] == 'D'))
			i++;
	} else
		return 0;
	while (i < len && is_wsp(s[i]))
		i++;
	i += match_blob(s, len, i);
	if (i >= len || s[i] != ':')
		return 0;
	*refwd_r = true;
	return i + 1;
}

int imap_base_subject(const char *raw, size_t len, struct buf *out, bool *reply_r)
{
	bool reply = false;
	/* (1) encoded words to UTF-8; tabs and line ends to spaces, runs of spaces to one */
	struct buf dec;
	buf_init(&dec, len * 4 + 64);
	int r = msg_decode_words(raw, len, &dec);
	if (r < 0) {
		buf_clear(&dec);
		return r;
	}
	size_t n = buf_used(&dec), w = 0;
	char *s = n ? dec.data + dec.off : NULL;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '\t' || c == '\r' || c == '\n')
			c = ' ';
		if (c == ' ' && w > 0 && s[w - 1] == ' ')
			continue;
		s[w++] = c;
	}
	size_t lo = 0, hi = w; /* the subject is s[lo..hi) */
	for (;;) {
		/* (2) subj-trailer = "(fwd)" / WSP, removed from the end while it matches */
		for (;;) {
			if (hi > lo && is_wsp(s[hi - 1]))
				hi--;
			else if (hi - lo >= 5 && strncasecmp(s + hi - 5, "(fwd)", 5) == 0) {
				hi -= 5;
				reply = true;
			} else
				break;
		}
		/* (3) subj-leader and (4) a subj-blob that leaves a non-empty subj-base, repeated
		 * (5) until neither matches */
		bool changed = true;
		while (changed) {
			changed = false;
			bool refwd;
			size_t l = match_leader(s + lo, hi - lo, &refwd);
			if (l > 0) {
				lo += l;
				reply |= refwd;
				changed = true;
			}
			size_t b = match_blob(s + lo, hi - lo, 0);
			if (b > 0) {
				bool base = false;
				for (size_t i = lo + b; i < hi && !base; i++)
					base = !is_wsp(s[i]);
				if (base) {
					lo += b;
					changed = true;
				}
			}
		}
		/* (6) "[fwd:" subject "]": unwrap and start again at (2) */
		if (hi - lo >= 6 && strncasecmp(s + lo, "[fwd:", 5) == 0 && s[hi - 1] == ']') {
			lo += 5;
			hi--;
			reply = true;
			continue;
		}
		break;
	}
	r = hi > lo ? buf_append(out, s + lo, hi - lo) : 0;
	buf_clear(&dec);
	if (reply_r)
		*reply_r = reply;
	return r;
}

/* ---- sent date ---- */

struct dlex {
	const char *p, *end;
};

/* Skip white space and comments (nested, with quoted-pairs). */
static void dlex_cfws(struct dlex *x)
{
	for (;;) {
		while (x->p < x->end && isspace((unsigned char)*x->p))
			x->p++;
		if (x->p >= x->end || *x->p != '(')
			return;
		unsigned depth = 0;
		while (x->p < x->end) {
			char c = *x->p++;
			if (c == '\\' && x->p < x->end)
				x->p++;
			else if (c == '(')
				depth++;
			else if (c == ')' && --depth == 0)
				break;
		}
	}
}

static bool dlex_num(struct dlex *x, unsigned min_digits, unsigned max_digits, int *v)
{
	dlex_cfws(x);
	unsigned d = 0;
	int n = 0;
	while (x->p < x->end && isdigit((unsigned char)*x->p) && d < max_digits) {
		n = n * 10 + (*x->p++ - '0');
		d++;
	}
	if (d < min_digits || (x->p < x->end && isdigit((unsigned char)*x->p)))
		return false;
	*v = n;
	return true;
}

static size_t dlex_word(struct dlex *x, char *w, size_t size)
{
	dlex_cfws(x);
	size_t n = 0;
	while (x->p < x->end && isalpha((unsigned char)*x->p)) {
		if (n + 1 < size)
			w[n] = *x->p;
		n++;
		x->p++;
	}
	w[n < size ? n : size - 1] = '\0';
	return n;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
	/* days since 1970-01-01 (m 1..12), proleptic Gregorian */
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

bool imap_sent_date_parse(const char *s, size_t len, int64_t *time_r)
{
	static const char *const months[] = {"jan", "feb", "mar", "apr", "may", "jun",
					     "jul", "aug", "sep", "oct", "nov", "dec"};
	struct dlex x = {s, s + len};
	char w[16];
	const char *save = x.p;
	/* [day-of-week ","] */
	if (dlex_word(&x, w, sizeof(w)) > 0) {
		dlex_cfws(&x);
		if (x.p < x.end && *x.p == ',')
			x.p++;
	} else
		x.p = save;
	int day, year, hour, min, sec = 0;
	if (!dlex_num(&x, 1, 2, &day) || dlex_word(&x, w, sizeof(w)) < 3)
		return false;
	int mon = 0;
	for (int i = 0; i < 12 && !mon; i++)
		if (strncasecmp(w, months[i], 3) == 0)
			mon = i + 1;
	if (!mon || !dlex_num(&x, 2, 4, &year) || !dlex_num(&x, 1, 2, &hour))
		return false;
	dlex_cfws(&x);
	if (x.p >= x.end || *x.p != ':')
		return false;
	x.p++;
	if (!dlex_num(&x, 1, 2, &min))
		return false;
	dlex_cfws(&x);
	if (x.p < x.end && *x.p == ':') {
		x.p++;
		if (!dlex_num(&x, 1, 2, &sec))
			return false;
	}
	/* two-digit years: 00-49 are 20xx, 50-99 19xx; three digits add 1900 (RFC 5322 §4.3) */
	if (year < 50)
		year += 2000;
	else if (year < 1000)
		year += 1900;
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
	if (day < 1 || day > mdays[mon - 1] + (mon == 2 && leap) || hour > 23 || min > 59 ||
	    sec > 60)
		return false;
	/* zone: +hhmm / -hhmm, or an obsolete name; none or unknown counts as +0000 */
	int64_t off = 0;
	dlex_cfws(&x);
	if (x.p < x.end && (*x.p == '+' || *x.p == '-')) {
		int sign = *x.p == '-' ? -1 : 1, z;
		x.p++;
		if (x.end - x.p >= 4 && dlex_num(&x, 4, 4, &z))
			off = sign * ((z / 100) * 3600 + (z % 100) * 60);
	} else if (dlex_word(&x, w, sizeof(w)) > 0) {
		static const struct {
			const char *name;
			int hours;
		} zones[] = {{"EST", -5}, {"EDT", -4}, {"CST", -6}, {"CDT", -5},
			     {"MST", -7}, {"MDT", -6}, {"PST", -8}, {"PDT", -7}};
		for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++)
			if (strcasecmp(w, zones[i].name) == 0)
				off = zones[i].hours * 3600;
	}
	*time_r = days_from_civil(year, mon, day) * 86400 + hour * 3600 + min * 60 + sec - off;
	return true;
}

/* ---- Message-IDs ---- */

bool imap_msgid_next(const char *s, size_t len, size_t *pos, const char **id_r, size_t *id_len_r)
{
	size_t i = *pos;
	while (i < len) {
		if (s[i] != '<') {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < len && s[j] != '>' && s[j] != '<' && !isspace((unsigned char)s[j]))
			j++;
		if (j < len && s[j] == '>' && j > i + 1) {
			*id_r = s + i + 1;
			*id_len_r = j - i - 1;
			*pos = j + 1;
			return true;
		}
		i = j;
	}
	*pos = len;
	return false;
}

int imap_msgid_list(const char *s, size_t len, size_t max, char ***ids_r, size_t *n_r)
{
	*ids_r = NULL;
	*n_r = 0;
	const char *id;
	size_t idlen, pos = 0, n = 0;
	while (imap_msgid_next(s, len, &pos, &id, &idlen))
		n++;
	size_t skip = n > max ? n - max : 0, bytes = 0;
	pos = 0;
	for (size_t i = 0; imap_msgid_next(s, len, &pos, &id, &idlen); i++)
		if (i >= skip)
			bytes += idlen + 1; /* only the ids kept take room */
	n -= skip;
	if (n == 0)
		return 0;
	char **ids = malloc(n * sizeof(char *) + bytes);
	if (!ids)
		return -ENOMEM;
	char *dst = (char *)(ids + n);
	size_t k = 0;
	pos = 0;
	for (size_t i = 0; imap_msgid_next(s, len, &pos, &id, &idlen); i++) {
		if (i < skip)
			continue;
		memcpy(dst, id, idlen);
		dst[idlen] = '\0';
		ids[k++] = dst;
		dst += idlen + 1;
	}
	*ids_r = ids;
	*n_r = k;
	return 0;
}

/* ---- ENVELOPE ---- */

/* The content of B, "" for a buffer that never held data. */
static const char *bp(const struct buf *b)
{
	return b->data ? b->data + b->off : "";
}

struct elex {
	const char *p, *end;
};

static void elex_sp(struct elex *x)
{
	while (x->p < x->end && *x->p == ' ')
		x->p++;
}

static bool elex_char(struct elex *x, char c)
{
	elex_sp(x);
	if (x->p < x->end && *x->p == c) {
		x->p++;
		return true;
	}
	return false;
}

static bool elex_nil(struct elex *x)
{
	elex_sp(x);
	if (x->end - x->p >= 3 && (x->p[0] | 0x20) == 'n' && (x->p[1] | 0x20) == 'i' &&
	    (x->p[2] | 0x20) == 'l') {
		x->p += 3;
		return true;
	}
	return false;
}

/* nstring into OUT (when not NULL; cleared first). 1: a string, 0: NIL, <0: error. */
static int elex_nstring(struct elex *x, struct buf *out)
{
	if (out)
		buf_clear(out);
	if (elex_nil(x))
		return 0;
	elex_sp(x);
	if (x->p >= x->end)
		return -EINVAL;
	if (*x->p == '"') {
		x->p++;
		while (x->p < x->end && *x->p != '"') {
			/* a run up to the next quote or backslash, then the escaped octet */
			const char *run = x->p;
			while (x->p < x->end && *x->p != '"' && *x->p != '\\')
				x->p++;
			int r = out ? buf_append(out, run, (size_t)(x->p - run)) : 0;
			if (r == 0 && x->p < x->end && *x->p == '\\') {
				if (x->p + 1 >= x->end)
					return -EINVAL;
				r = out ? buf_append(out, x->p + 1, 1) : 0;
				x->p += 2;
			}
			if (r < 0)
				return r;
		}
		if (x->p >= x->end)
			return -EINVAL;
		x->p++;
		return 1;
	}
	if (*x->p == '{') {
		char *e;
		unsigned long long n = strtoull(x->p + 1, &e, 10);
		if (e >= x->end || *e != '}' || x->end - e < 3 || e[1] != '\r' || e[2] != '\n' ||
		    n > (unsigned long long)(x->end - (e + 3)))
			return -EINVAL;
		x->p = e + 3;
		if (out) {
			int r = buf_append(out, x->p, (size_t)n);
			if (r < 0)
				return r;
		}
		x->p += n;
		return 1;
	}
	return -EINVAL;
}

/* An address list; its first address goes to MAILBOX/DISPLAY. A group's start counts as an
 * address (its mailbox is the group name, it has no host), as Dovecot does. */
static int elex_addresses(struct elex *x, struct buf *mailbox, struct buf *display)
{
	if (elex_nil(x))
		return 0;
	if (!elex_char(x, '('))
		return -EINVAL;
	struct buf f[4];
	for (int i = 0; i < 4; i++)
		buf_init(&f[i], 64 * 1024);
	bool done = !mailbox;
	int r = 0;
	while (r >= 0 && !elex_char(x, ')')) {
		if (!elex_char(x, '(')) {
			r = -EINVAL;
			break;
		}
		int has[4];
		for (int i = 0; i < 4 && r >= 0; i++)
			r = has[i] = elex_nstring(x, done ? NULL : &f[i]);
		if (r >= 0 && !elex_char(x, ')'))
			r = -EINVAL;
		if (r < 0 || done || !has[2])
			continue; /* a group's end (no mailbox) */
		done = true;
		r = buf_append(mailbox, bp(&f[2]), buf_used(&f[2]));
		if (r == 0 && buf_used(&f[0]))
			r = msg_decode_words(bp(&f[0]), buf_used(&f[0]), display);
		if (r == 0 && buf_used(display) == 0) {
			r = buf_append(display, bp(&f[2]), buf_used(&f[2]));
			if (r == 0 && has[3])
				r = buf_append(display, "@", 1);
			if (r == 0)
				r = buf_append(display, bp(&f[3]), buf_used(&f[3]));
		}
	}
	for (int i = 0; i < 4; i++)
		buf_clear(&f[i]);
	return r < 0 ? r : 0;
}

void imap_env_keys_init(struct imap_env_keys *k)
{
	buf_init(&k->date, 64 * 1024);
	buf_init(&k->subject, 64 * 1024);
	buf_init(&k->in_reply_to, 64 * 1024);
	buf_init(&k->message_id, 64 * 1024);
	for (int i = 0; i < IMAP_ENV_NADDR; i++) {
		buf_init(&k->mailbox[i], 64 * 1024);
		buf_init(&k->display[i], 256 * 1024);
	}
}

void imap_env_keys_clear(struct imap_env_keys *k)
{
	buf_clear(&k->date);
	buf_clear(&k->subject);
	buf_clear(&k->in_reply_to);
	buf_clear(&k->message_id);
	for (int i = 0; i < IMAP_ENV_NADDR; i++) {
		buf_clear(&k->mailbox[i]);
		buf_clear(&k->display[i]);
	}
}

int imap_env_keys_parse(const char *env, size_t len, struct imap_env_keys *k)
{
	imap_env_keys_clear(k);
	struct elex x = {env, env + len};
	if (!elex_char(&x, '('))
		return -EINVAL;
	int r = elex_nstring(&x, &k->date);
	if (r >= 0)
		r = elex_nstring(&x, &k->subject);
	/* from sender reply-to to cc bcc */
	static const int slot[6] = {IMAP_ENV_FROM, -1, -1, IMAP_ENV_TO, IMAP_ENV_CC, -1};
	for (int i = 0; i < 6 && r >= 0; i++)
		r = elex_addresses(&x, slot[i] >= 0 ? &k->mailbox[slot[i]] : NULL,
				   slot[i] >= 0 ? &k->display[slot[i]] : NULL);
	if (r >= 0)
		r = elex_nstring(&x, &k->in_reply_to);
	if (r >= 0)
		r = elex_nstring(&x, &k->message_id);
	if (r >= 0 && !elex_char(&x, ')'))
		r = -EINVAL;
	return r < 0 ? r : 0;
}
