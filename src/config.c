/* config — see config.h. Hand-written rather than libinih: Debian's libinih is built without
 * line numbers for handlers (INI_HANDLER_LINENO 0) and with a 200-byte line limit, and every
 * error here must name its line. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define CONFIG_MAX_FILE (1024 * 1024)

enum setting_type {
	T_STRING,  /* any text */
	T_PATH,    /* absolute path */
	T_BOOL,    /* yes|no|true|false|on|off|1|0 */
	T_UINT,    /* decimal, within [min, max] */
	T_SIZE,    /* decimal with optional K, M or G suffix (powers of 1024), within [min, max] */
	T_SIZE64,  /* the same, stored as uint64_t */
	T_ENUM,    /* one of the names in values, stored as its index */
	T_ADDRESS, /* list of IPv4/IPv6 addresses or "*", comma or space separated */
	T_NAME,    /* a lower-case word (checked against the protocols built in: daemon.c) */
};

struct setting {
	const char *section; /* "server", "tls", "listener", "user" */
	const char *key;
	enum setting_type type;
	size_t offset; /* in struct config, struct config_listener for "listener", struct
			* config_user for "user" */
	const char *default_text;
	unsigned long long min, max;
	const char *const *values; /* T_ENUM, NULL-terminated */
	const char *doc;
};

static const char *const mail_format_values[] = {"maildir", "mbox", NULL};
static const char *const mbox_variant_values[] = {"mboxo", "mboxrd", NULL};
static const char *const pop3_delete_values[] = {"expunge", "hide", NULL};
static const char *const tls_values[] = {"none", "starttls", "implicit", NULL};

#define S(field) offsetof(struct config, field)
#define L(field) offsetof(struct config_listener, field)
#define U(field) offsetof(struct config_user, field)

/* The table is the single source of truth for settings: parser, defaults, documentation. */
static const struct setting settings[] = {
	{"server", "mail_root", T_PATH, S(mail_root), "/var/lib/mailkeep/mail", 0, 0, NULL,
	 "Where mailboxes live. %u expands to the user name; without %u a user's mailbox is "
	 "mail_root/USER."},
	{"server", "mail_format", T_ENUM, S(mail_format), "maildir", 0, 0, mail_format_values,
	 "Store format: maildir (Maildir++) or mbox."},
	{"server", "mbox_inbox", T_PATH, S(mbox_inbox), "", 0, 0, NULL,
	 "mbox only: the INBOX file, %u expands to the user name (e.g. /var/mail/%u). Empty: "
	 "the file inbox in the user's mail directory."},
	{"server", "mbox_variant", T_ENUM, S(mbox_variant), "mboxo", 0, 0, mbox_variant_values,
	 "mbox only: mboxo (what Debian's MTAs write: bodies served as stored, From_ lines "
	 "quoted on APPEND) or mboxrd (>From quoting undone on reading)."},
	{"server", "mbox_lock_timeout", T_UINT, S(mbox_lock_timeout), "10", 0, 600, NULL,
	 "mbox only: seconds to wait for an mbox file's locks (dotlock, fcntl) before a "
	 "command is answered IMAP NO [INUSE] / POP3 -ERR [IN-USE]."},
	{"server", "mail_user", T_STRING, S(mail_user), "mailkeep", 0, 0, NULL,
	 "The unprivileged user the network process runs as when started as root."},
	{"server", "log_level", T_STRING, S(log_level), "info", 0, 0, NULL,
	 "error, warn, info or debug."},
	{"server", "max_connections", T_UINT, S(max_connections), "10000", 1, 1000000, NULL,
	 "Connections open at once over all listeners; more are refused with the protocol's "
	 "error."},
	{"server", "max_connections_per_address", T_UINT, S(max_connections_per_address), "500", 1,
	 1000000, NULL,
	 "Connections open at once from one client address (an office behind NAT is one "
	 "address)."},
	{"server", "shutdown_timeout", T_UINT, S(shutdown_timeout), "5", 0, 3600, NULL,
	 "Seconds SIGTERM waits for goodbyes to reach clients before closing anyway."},
	{"server", "output_high_watermark", T_SIZE, S(output_high_watermark), "128K", 4096,
	 1ULL << 30, NULL,
	 "Queued output per connection at which the server stops reading from it."},
	{"server", "output_low_watermark", T_SIZE, S(output_low_watermark), "32K", 1024, 1ULL << 30,
	 NULL, "Queued output below which it reads again."},
	{"server", "pam_service", T_STRING, S(pam_service), "mailkeep", 0, 0, NULL,
	 "PAM service name (/etc/pam.d/NAME)."},
	{"server", "pam_confdir", T_PATH, S(pam_confdir), "", 0, 0, NULL,
	 "A PAM configuration directory used instead of /etc/pam.d (pam_start_confdir); empty "
	 "for the system's."},
	{"server", "allow_plaintext_auth", T_BOOL, S(allow_plaintext_auth), "no", 0, 0, NULL,
	 "Allow plaintext logins on unencrypted connections from non-loopback clients."},
	{"server", "auth_workers", T_UINT, S(auth_workers), "4", 1, 64, NULL,
	 "PAM conversations run at once by the auth helper."},
	{"server", "auth_fail_delay_ms", T_UINT, S(auth_fail_delay_ms), "500", 0, 60000, NULL,
	 "Delay before answering a failed login; doubles with each failure from the same "
	 "address."},
	{"server", "auth_fail_delay_max_ms", T_UINT, S(auth_fail_delay_max_ms), "15000", 0, 600000,
	 NULL, "Upper bound of that delay."},
	{"server", "auth_max_failures", T_UINT, S(auth_max_failures), "5", 1, 1000, NULL,
	 "Failed logins on one connection before it is closed."},
	{"server", "pop3_delete", T_ENUM, S(pop3_delete), "expunge", 0, 0, pop3_delete_values,
	 "What a POP3 delete does at QUIT: expunge (gone for every client, IMAP sessions see "
	 "EXPUNGE) or hide (gone for POP3, kept for IMAP with the keyword $POP3Deleted)."},
	{"server", "pop3_retr_sets_seen", T_BOOL, S(pop3_retr_sets_seen), "yes", 0, 0, NULL,
	 "POP3 RETR marks the message \\Seen, so IMAP clients show it as read (TOP never does)."},
	{"server", "pop3_expire_days", T_UINT, S(pop3_expire_days), "0", 0, 36500, NULL,
	 "Days a message POP3 has downloaded is kept before the server removes it, advertised as "
	 "CAPA EXPIRE; 0 keeps mail forever (EXPIRE NEVER)."},
	{"server", "pop3_login_delay", T_UINT, S(pop3_login_delay), "0", 0, 86400, NULL,
	 "Seconds advertised as CAPA LOGIN-DELAY (how often a client may log in); 0 advertises "
	 "nothing."},
	{"server", "imap_idle_keepalive", T_UINT, S(imap_idle_keepalive), "0", 0, 3600, NULL,
	 "Seconds between keep-alive lines sent to IDLE clients; 0 sends none (phones pay for "
	 "every wake-up)."},
	{"server", "imap_literal_plus", T_BOOL, S(imap_literal_plus), "yes", 0, 0, NULL,
	 "IMAP non-synchronizing literals of any size (LITERAL+, RFC 7888); no advertises "
	 "LITERAL- instead and refuses such literals over 4096 octets with BAD [TOOBIG]."},
	{"server", "quota_storage", T_SIZE64, S(quota_storage), "0", 0, CONFIG_MAX_QUOTA_STORAGE,
	 NULL,
	 "Every user's quota: the sum of message sizes (RFC822.SIZE) over all their folders, "
	 "with K, M or G; 0 is no limit. [user NAME] sections override it."},
	{"server", "quota_messages", T_UINT, S(quota_messages), "0", 0, 4000000000U, NULL,
	 "Every user's quota: messages over all their folders; 0 is no limit. [user NAME] "
	 "sections override it."},
	{"tls", "cert", T_PATH, S(tls_cert), "", 0, 0, NULL,
	 "PEM certificate chain; required by any listener with tls = starttls or implicit."},
	{"tls", "key", T_PATH, S(tls_key), "", 0, 0, NULL, "PEM private key for cert."},
	{"tls", "priority", T_STRING, S(tls_priority), "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2",
	 0, 0, NULL, "GnuTLS priority string (default: GnuTLS's defaults, TLS 1.2 and 1.3 only)."},
	{"tls", "handshake_timeout", T_UINT, S(tls_handshake_timeout), "30", 1, 3600, NULL,
	 "Seconds a client has to finish the TLS handshake."},
	{"listener", "protocol", T_NAME, L(protocol), NULL, 0, 0, NULL, "imap or pop3 (required)."},
	{"listener", "address", T_ADDRESS, L(addresses), "*", 0, 0, NULL,
	 "Addresses to listen on, IPv4 or IPv6, comma separated; * is every IPv4 and IPv6 "
	 "address."},
	{"listener", "port", T_UINT, L(port), NULL, 1, 65535, NULL,
	 "TCP port; default 143/993 for imap and 110/995 for pop3 (implicit TLS)."},
	{"listener", "tls", T_ENUM, L(tls), "none", 0, 0, tls_values,
	 "none, starttls (STARTTLS/STLS offered) or implicit (TLS from the first byte)."},
	{"listener", "idle_timeout", T_UINT, L(idle_timeout), "0", 0, 86400, NULL,
	 "Seconds of silence before the connection is closed; 0 is the protocol's default (IMAP "
	 "1800, POP3 600)."},
	{"listener", "max_line", T_UINT, L(max_line), "0", 0, 1048576, NULL,
	 "Longest command line in bytes; 0 is the protocol's default (IMAP 65536; POP3 2052, of "
	 "which commands may use 255 and SASL responses the rest)."},
	{"listener", "max_bad_commands", T_UINT, L(max_bad_commands), "20", 1, 1000, NULL,
	 "Bad commands before the connection is closed."},
	{"user", "quota_storage", T_SIZE64, U(quota_storage), NULL, 0, CONFIG_MAX_QUOTA_STORAGE,
	 NULL, "This user's storage quota (as in [server]); unset: the [server] value."},
	{"user", "quota_messages", T_UINT, U(quota_messages), NULL, 0, 4000000000U, NULL,
	 "This user's message quota (as in [server]); unset: the [server] value."},
};
#undef S
#undef L
#undef U

#define N_SETTINGS (sizeof(settings) / sizeof(settings[0]))

size_t config_setting_count(void)
{
	return N_SETTINGS;
}

const struct config_setting_doc *config_setting_get(size_t i)
{
	static struct config_setting_doc doc;
	if (i >= N_SETTINGS)
		return NULL;
	doc.section = settings[i].section;
	doc.key = settings[i].key;
	doc.default_text = settings[i].default_text ? settings[i].default_text : "";
	doc.doc = settings[i].doc;
	return &doc;
}

/* Parsing state */
struct parser {
	const char *file;
	struct config *cfg;
	struct config_errors *errors;
	int section; /* 0 none, 1 server, 2 tls, 3 listener, 4 user */
	struct config_listener *listener;
	struct config_user *user;
	/* line where each setting was set, per section instance, for duplicate and later checks */
	unsigned set_line[N_SETTINGS];
	unsigned listener_lines[CONFIG_MAX_LISTENERS][N_SETTINGS];
	unsigned (*user_lines)[N_SETTINGS]; /* one row per [user NAME], as cfg->users */
	size_t cap_users;
	bool seen_server, seen_tls;
};

static void add_error(struct config_errors *errors, const char *file, unsigned line,
		      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void add_error(struct config_errors *errors, const char *file, unsigned line,
		      const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	struct config_error *items = realloc(errors->items, (errors->n + 1) * sizeof(*items));
	if (!items)
		return;
	errors->items = items;
	items[errors->n].file = strdup(file);
	items[errors->n].line = line;
	items[errors->n].message = strdup(msg);
	errors->n++;
}

void config_errors_free(struct config_errors *errors)
{
	for (size_t i = 0; i < errors->n; i++) {
		free(errors->items[i].file);
		free(errors->items[i].message);
	}
	free(errors->items);
	errors->items = NULL;
	errors->n = 0;
}

static bool parse_bool(const char *v, bool *r)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*r = true;
			return true;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*r = false;
			return true;
		}
	}
	return false;
}

static bool parse_number(const char *v, bool size_suffix, unsigned long long *r)
{
	if (!isdigit((unsigned char)v[0]))
		return false;
	errno = 0;
	char *end;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno)
		return false;
	if (size_suffix && *end) {
		unsigned shift = 0;
		switch (toupper((unsigned char)*end)) {
		case 'K':
			shift = 10;
			break;
		case 'M':
			shift = 20;
			break;
		case 'G':
			shift = 30;
			break;
		default:
			return false;
		}
		end++;
		if (toupper((unsigned char)*end) == 'B' || toupper((unsigned char)*end) == 'I')
			end += toupper((unsigned char)*end) == 'I' &&
					       toupper((unsigned char)end[1]) == 'B'
				       ? 2
				       : 1;
		if (n > (ULLONG_MAX >> shift))
			return false;
		n <<= shift;
	}
	if (*end)
		return false;
	*r = n;
	return true;
}

static bool address_valid(const char *a)
{
	unsigned char tmp[16];
	return strcmp(a, "*") == 0 || inet_pton(AF_INET, a, tmp) == 1 ||
	       inet_pton(AF_INET6, a, tmp) == 1;
}

/* Store value v for setting st into base. Returns NULL or a message. */
static const char *setting_apply(const struct setting *st, void *base, const char *v, char *msg,
				 size_t msglen)
{
	char *field = (char *)base + st->offset;
	switch (st->type) {
	case T_PATH:
		if (v[0] && v[0] != '/') {
			snprintf(msg, msglen, "%s must be an absolute path, not '%s'", st->key,
				 log_escape_str(v));
			return msg;
		}
		/* fall through */
	case T_STRING: {
		char **sp = (char **)field;
		free(*sp);
		*sp = v[0] ? strdup(v) : NULL;
		return NULL;
	}
	case T_BOOL:
		if (!parse_bool(v, (bool *)field)) {
			snprintf(msg, msglen, "%s must be yes or no, not '%s'", st->key,
				 log_escape_str(v));
			return msg;
		}
		return NULL;
	case T_UINT:
	case T_SIZE:
	case T_SIZE64: {
		unsigned long long n;
		bool size = st->type == T_SIZE || st->type == T_SIZE64;
		if (!parse_number(v, size, &n)) {
			snprintf(msg, msglen, "%s must be a %s, not '%s'", st->key,
				 size ? "size (like 64K or 1M)" : "whole number",
				 log_escape_str(v));
			return msg;
		}
		if (n < st->min || n > st->max) {
			snprintf(msg, msglen, "%s must be between %llu and %llu, not %llu", st->key,
				 st->min, st->max, n);
			return msg;
		}
		if (st->type == T_SIZE64)
			*(uint64_t *)field = (uint64_t)n;
		else if (st->type == T_SIZE)
			*(size_t *)field = (size_t)n;
		else
			*(unsigned *)field = (unsigned)n;
		return NULL;
	}
	case T_NAME: {
		size_t n = strlen(v);
		if (n == 0 || n > 32 || strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789") != n) {
			snprintf(msg, msglen, "%s must be a lower-case name like imap, not '%s'",
				 st->key, log_escape_str(v));
			return msg;
		}
		char **sp = (char **)field;
		free(*sp);
		*sp = strdup(v);
		return NULL;
	}
	case T_ENUM:
		for (size_t i = 0; st->values[i]; i++) {
			if (strcasecmp(v, st->values[i]) == 0) {
				*(int *)field = (int)i;
				return NULL;
			}
		}
		{
			size_t o = (size_t)snprintf(msg, msglen, "%s must be one of", st->key);
			for (size_t i = 0; st->values[i] && o < msglen; i++)
				o += (size_t)snprintf(msg + o, msglen - o, "%s %s", i ? "," : "",
						      st->values[i]);
			if (o < msglen)
				snprintf(msg + o, msglen - o, ", not '%s'", log_escape_str(v));
		}
		return msg;
	case T_ADDRESS: {
		struct config_listener *l = base;
		char copy[1024];
		snprintf(copy, sizeof(copy), "%s", v);
		for (size_t i = 0; i < l->n_addresses; i++)
			free(l->addresses[i]);
		l->n_addresses = 0;
		char *save = NULL;
		for (char *tok = strtok_r(copy, ", \t", &save); tok;
		     tok = strtok_r(NULL, ", \t", &save)) {
			if (tok[0] == '[' && tok[strlen(tok) - 1] == ']') {
				tok[strlen(tok) - 1] = '\0';
				tok++;
			}
			if (!address_valid(tok)) {
				snprintf(msg, msglen, "address '%s' is not an IPv4 or IPv6 address",
					 log_escape_str(tok));
				return msg;
			}
			if (l->n_addresses == CONFIG_MAX_ADDRESSES) {
				snprintf(msg, msglen, "more than %d addresses",
					 CONFIG_MAX_ADDRESSES);
				return msg;
			}
			l->addresses[l->n_addresses++] = strdup(tok);
		}
		if (l->n_addresses == 0) {
			snprintf(msg, msglen, "address is empty");
			return msg;
		}
		return NULL;
	}
	}
	return "unknown setting type";
}

static void apply_defaults(const char *section, void *base)
{
	char msg[256];
	for (size_t i = 0; i < N_SETTINGS; i++) {
		if (strcmp(settings[i].section, section) == 0 && settings[i].default_text)
			(void)setting_apply(&settings[i], base, settings[i].default_text, msg,
					    sizeof(msg));
	}
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* [user NAME]: NAME as the store accepts a user (1..255 bytes, no '/', no control
 * character, not starting with '.'). */
static void parse_user_section(struct parser *p, unsigned lineno, const char *arg)
{
	if (!arg || !*arg) {
		add_error(p->errors, p->file, lineno, "[user] needs a name, as in [user alice]");
		return;
	}
	size_t len = strlen(arg);
	bool ok = len <= 255 && arg[0] != '.';
	for (size_t i = 0; ok && i < len; i++)
		ok = arg[i] != '/' && (unsigned char)arg[i] >= 0x20 && arg[i] != 0x7f;
	if (!ok) {
		add_error(
			p->errors, p->file, lineno,
			"user name '%s' must be 1 to 255 bytes without '/' or control characters, "
			"not starting with '.'",
			log_escape_str(arg));
		return;
	}
	const struct config_user *dup = config_user_find(p->cfg, arg);
	if (dup) {
		add_error(p->errors, p->file, lineno, "user '%s' is defined twice (line %u)",
			  log_escape_str(arg), dup->line);
		return;
	}
	if (p->cfg->n_users == CONFIG_MAX_USERS) {
		add_error(p->errors, p->file, lineno, "more than %d [user NAME] sections",
			  CONFIG_MAX_USERS);
		return;
	}
	if (p->cfg->n_users == p->cap_users) {
		size_t cap = p->cap_users ? p->cap_users * 2 : 16;
		struct config_user *u = realloc(p->cfg->users, cap * sizeof(*u));
		if (u)
			p->cfg->users = u;
		unsigned(*l)[N_SETTINGS] = u ? realloc(p->user_lines, cap * sizeof(*l)) : NULL;
		if (!l) {
			add_error(p->errors, p->file, lineno, "out of memory");
			return;
		}
		p->user_lines = l;
		p->cap_users = cap;
	}
	struct config_user *u = &p->cfg->users[p->cfg->n_users];
	memset(u, 0, sizeof(*u));
	memset(p->user_lines[p->cfg->n_users], 0, sizeof(p->user_lines[0]));
	u->name = strdup(arg);
	if (!u->name) {
		add_error(p->errors, p->file, lineno, "out of memory");
		return;
	}
	u->line = lineno;
	p->cfg->n_users++;
	p->user = u;
	p->section = 4;
}

static void parse_section(struct parser *p, unsigned lineno, char *name)
{
	p->section = 0;
	p->listener = NULL;
	p->user = NULL;
	char *sp = strpbrk(name, " \t");
	char *arg = NULL;
	if (sp) {
		*sp = '\0';
		arg = trim(sp + 1);
	}
	if (strcasecmp(name, "server") == 0 || strcasecmp(name, "tls") == 0) {
		bool is_server = strcasecmp(name, "server") == 0;
		if (arg && *arg) {
			add_error(p->errors, p->file, lineno, "section [%s] takes no name", name);
			return;
		}
		bool *seen = is_server ? &p->seen_server : &p->seen_tls;
		if (*seen)
			add_error(p->errors, p->file, lineno, "section [%s] appears twice", name);
		*seen = true;
		p->section = is_server ? 1 : 2;
		return;
	}
	if (strcasecmp(name, "listener") == 0) {
		if (!arg || !*arg) {
			add_error(p->errors, p->file, lineno,
				  "[listener] needs a name, as in [listener imap]");
			return;
		}
		for (const char *c = arg; *c; c++) {
			if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_' && *c != '.') {
				add_error(p->errors, p->file, lineno,
					  "listener name '%s' may only hold letters, digits, '-', "
					  "'_' and '.'",
					  log_escape_str(arg));
				return;
			}
		}
		if (config_listener_find(p->cfg, arg)) {
			add_error(p->errors, p->file, lineno, "listener '%s' is defined twice",
				  arg);
			return;
		}
		if (p->cfg->n_listeners == CONFIG_MAX_LISTENERS) {
			add_error(p->errors, p->file, lineno, "more than %d listeners",
				  CONFIG_MAX_LISTENERS);
			return;
		}
		struct config_listener *l = &p->cfg->listeners[p->cfg->n_listeners++];
		memset(l, 0, sizeof(*l));
		l->name = strdup(arg);
		l->line = lineno;
		apply_defaults("listener", l);
		p->listener = l;
		p->section = 3;
		return;
	}
	if (strcasecmp(name, "user") == 0) {
		parse_user_section(p, lineno, arg);
		return;
	}
	add_error(p->errors, p->file, lineno,
		  "unknown section [%s] (expected [server], [tls], [listener NAME] or [user NAME])",
		  log_escape_str(name));
}

static void parse_setting(struct parser *p, unsigned lineno, char *key, char *value)
{
	static const char *const names[] = {NULL, "server", "tls", "listener", "user"};
	if (p->section == 0) {
		/* Either outside any section or inside a broken one (already reported). */
		if (p->errors->n == 0 || p->errors->items[p->errors->n - 1].line == 0)
			add_error(p->errors, p->file, lineno, "'%s' is outside any section",
				  log_escape_str(key));
		return;
	}
	const char *section = names[p->section];
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const struct setting *st = &settings[i];
		if (strcmp(st->section, section) != 0 || strcasecmp(st->key, key) != 0)
			continue;
		unsigned *set_line =
			p->section == 3   ? &p->listener_lines[p->listener - p->cfg->listeners][i]
			: p->section == 4 ? &p->user_lines[p->user - p->cfg->users][i]
					  : &p->set_line[i];
		if (*set_line) {
			add_error(p->errors, p->file, lineno, "%s is already set on line %u",
				  st->key, *set_line);
			return;
		}
		*set_line = lineno;
		char msg[512];
		void *base = p->section == 3   ? (void *)p->listener
			     : p->section == 4 ? (void *)p->user
					       : (void *)p->cfg;
		const char *err = setting_apply(st, base, value, msg, sizeof(msg));
		if (err)
			add_error(p->errors, p->file, lineno, "%s", err);
		return;
	}
	add_error(p->errors, p->file, lineno, "unknown setting '%s' in [%s]", log_escape_str(key),
		  section);
}

static void parse_line(struct parser *p, unsigned lineno, char *line)
{
	char *s = trim(line);
	if (*s == '\0' || *s == ';' || *s == '#')
		return;
	if (*s == '[') {
		char *end = strchr(s, ']');
		if (!end || trim(end + 1)[0] != '\0') {
			char *rest = end ? trim(end + 1) : NULL;
			if (!end || (*rest != ';' && *rest != '#')) {
				add_error(p->errors, p->file, lineno,
					  "a section header must look like [name]");
				p->section = 0;
				return;
			}
		}
		*end = '\0';
		parse_section(p, lineno, trim(s + 1));
		return;
	}
	char *eq = strchr(s, '=');
	if (!eq) {
		add_error(p->errors, p->file, lineno, "expected 'key = value', got '%s'",
			  log_escape_str(s));
		return;
	}
	*eq = '\0';
	char *key = trim(s);
	char *value = trim(eq + 1);
	if (*key == '\0') {
		add_error(p->errors, p->file, lineno, "a setting needs a name before '='");
		return;
	}
	if (*value == '"') {
		char *close = strchr(value + 1, '"');
		if (!close) {
			add_error(p->errors, p->file, lineno, "unterminated quoted value");
			return;
		}
		char *rest = trim(close + 1);
		if (*rest && *rest != ';' && *rest != '#') {
			add_error(p->errors, p->file, lineno, "text after a quoted value");
			return;
		}
		*close = '\0';
		value++;
	} else {
		/* An inline comment starts at ';' or '#' after white space. */
		for (char *c = value; *c; c++) {
			if ((*c == ';' || *c == '#') && c > value &&
			    isspace((unsigned char)c[-1])) {
				*c = '\0';
				value = trim(value);
				break;
			}
		}
	}
	parse_setting(p, lineno, key, value);
}

static bool addresses_overlap(const struct config_listener *a, const struct config_listener *b)
{
	for (size_t i = 0; i < a->n_addresses; i++) {
		for (size_t j = 0; j < b->n_addresses; j++) {
			const char *x = a->addresses[i], *y = b->addresses[j];
			if (strcmp(x, "*") == 0 || strcmp(y, "*") == 0 || strcmp(x, y) == 0)
				return true;
			bool x6 = strchr(x, ':') != NULL, y6 = strchr(y, ':') != NULL;
			if (x6 == y6 && (strcmp(x, x6 ? "::" : "0.0.0.0") == 0 ||
					 strcmp(y, y6 ? "::" : "0.0.0.0") == 0))
				return true;
		}
	}
	return false;
}

static size_t setting_index(const char *section, const char *key)
{
	for (size_t i = 0; i < N_SETTINGS; i++)
		if (strcmp(settings[i].section, section) == 0 && strcmp(settings[i].key, key) == 0)
			return i;
	return 0;
}

static void validate(struct parser *p)
{
	struct config *cfg = p->cfg;
	size_t i_proto = setting_index("listener", "protocol");
	size_t i_port = setting_index("listener", "port");
	size_t i_tls = setting_index("listener", "tls");
	size_t i_level = setting_index("server", "log_level");
	size_t i_low = setting_index("server", "output_low_watermark");
	enum log_level lvl;

	if (cfg->log_level && !log_level_parse(cfg->log_level, &lvl))
		add_error(p->errors, p->file, p->set_line[i_level],
			  "log_level must be error, warn, info or debug, not '%s'",
			  log_escape_str(cfg->log_level));
	if (cfg->output_low_watermark >= cfg->output_high_watermark)
		add_error(p->errors, p->file, p->set_line[i_low],
			  "output_low_watermark must be below output_high_watermark");
	/* a [user NAME] key left unset takes the [server] value, wherever [server] is */
	size_t i_ustorage = setting_index("user", "quota_storage");
	size_t i_umessages = setting_index("user", "quota_messages");
	for (size_t n = 0; n < cfg->n_users; n++) {
		if (!p->user_lines[n][i_ustorage])
			cfg->users[n].quota_storage = cfg->quota_storage;
		if (!p->user_lines[n][i_umessages])
			cfg->users[n].quota_messages = cfg->quota_messages;
	}
	if (cfg->n_listeners == 0 && p->errors->n == 0) /* else a broken section said why */
		add_error(p->errors, p->file, 0, "no [listener NAME] section: nothing to serve");

	for (size_t n = 0; n < cfg->n_listeners; n++) {
		struct config_listener *l = &cfg->listeners[n];
		unsigned *lines = p->listener_lines[n];
		if (!l->protocol) {
			if (lines[i_proto])
				continue; /* set but invalid: already reported on its line */
			add_error(p->errors, p->file, l->line,
				  "listener '%s' needs protocol = imap or pop3", l->name);
			continue;
		}
		l->protocol_line = lines[i_proto];
		if (!lines[i_port]) {
			bool imap = strcmp(l->protocol, "imap") == 0;
			bool implicit = l->tls == LISTENER_TLS_IMPLICIT;
			l->port = imap ? (implicit ? 993 : 143) : (implicit ? 995 : 110);
		}
		if (l->tls != LISTENER_TLS_NONE && (!cfg->tls_cert || !cfg->tls_key))
			add_error(p->errors, p->file, lines[i_tls] ? lines[i_tls] : l->line,
				  "listener '%s' uses TLS but [tls] has no %s", l->name,
				  !cfg->tls_cert ? "cert" : "key");
		for (size_t m = 0; m < n; m++) {
			struct config_listener *o = &cfg->listeners[m];
			if (o->protocol && o->port == l->port && addresses_overlap(o, l)) {
				add_error(p->errors, p->file,
					  lines[i_port] ? lines[i_port] : l->line,
					  "listener '%s' uses port %u, already used by listener "
					  "'%s' (line %u)",
					  l->name, l->port, o->name, o->line);
				break;
			}
		}
	}
}

static void config_free(struct config *cfg)
{
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const struct setting *st = &settings[i];
		bool is_str = st->type == T_STRING || st->type == T_PATH || st->type == T_NAME;
		if (!is_str)
			continue;
		if (strcmp(st->section, "listener") == 0) {
			for (size_t n = 0; n < cfg->n_listeners; n++)
				free(*(char **)((char *)&cfg->listeners[n] + st->offset));
		} else {
			free(*(char **)((char *)cfg + st->offset));
		}
	}
	for (size_t n = 0; n < cfg->n_listeners; n++) {
		free(cfg->listeners[n].name);
		for (size_t a = 0; a < cfg->listeners[n].n_addresses; a++)
			free(cfg->listeners[n].addresses[a]);
	}
	for (size_t n = 0; n < cfg->n_users; n++)
		free(cfg->users[n].name);
	free(cfg->users);
	free(cfg->path);
	free(cfg);
}

int config_load_string(const char *name, const char *text, size_t len, struct config **config_r,
		       struct config_errors *errors)
{
	memset(errors, 0, sizeof(*errors));
	struct parser *p = calloc(1, sizeof(*p));
	struct config *cfg = calloc(1, sizeof(*cfg));
	if (!p || !cfg) {
		free(p);
		free(cfg);
		return -ENOMEM;
	}
	static unsigned long generations;
	cfg->refs = 1;
	cfg->generation = ++generations;
	cfg->path = strdup(name);
	apply_defaults("server", cfg);
	apply_defaults("tls", cfg);
	p->file = name;
	p->cfg = cfg;
	p->errors = errors;

	unsigned lineno = 0;
	size_t pos = 0;
	char line[4096];
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
		lineno++;
		if (memchr(text + pos, '\0', n)) {
			add_error(errors, name, lineno, "a NUL byte in the line");
		} else if (n >= sizeof(line)) {
			add_error(errors, name, lineno, "line longer than %zu bytes",
				  sizeof(line) - 1);
		} else {
			memcpy(line, text + pos, n);
			line[n] = '\0';
			if (lineno == 1 && (unsigned char)line[0] == 0xEF &&
			    (unsigned char)line[1] == 0xBB && (unsigned char)line[2] == 0xBF)
				memmove(line, line + 3, n - 2); /* UTF-8 byte order mark */
			parse_line(p, lineno, line);
		}
		pos += n + (nl ? 1 : 0);
	}
	validate(p);
	free(p->user_lines);
	free(p);
	if (errors->n) {
		config_free(cfg);
		return -EINVAL;
	}
	*config_r = cfg;
	return 0;
}

int config_load(const char *path, struct config **config_r, struct config_errors *errors)
{
	memset(errors, 0, sizeof(*errors));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int err = errno;
		add_error(errors, path, 0, "cannot open: %s", strerror(err));
		return -err;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > CONFIG_MAX_FILE) {
		close(fd);
		add_error(errors, path, 0, "not a regular file of at most %d bytes",
			  CONFIG_MAX_FILE);
		return -EINVAL;
	}
	char *text = malloc((size_t)st.st_size + 1);
	if (!text) {
		close(fd);
		return -ENOMEM;
	}
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, text + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	int ret = config_load_string(path, text, got, config_r, errors);
	free(text);
	return ret;
}

struct config *config_ref(struct config *config)
{
	config->refs++;
	return config;
}

void config_unref(struct config **config_p)
{
	struct config *cfg = *config_p;
	if (!cfg)
		return;
	*config_p = NULL;
	if (--cfg->refs == 0)
		config_free(cfg);
}

const struct config_listener *config_listener_find(const struct config *config, const char *name)
{
	for (size_t i = 0; i < config->n_listeners; i++)
		if (strcmp(config->listeners[i].name, name) == 0)
			return &config->listeners[i];
	return NULL;
}

const struct config_user *config_user_find(const struct config *config, const char *user)
{
	for (size_t i = 0; i < config->n_users; i++)
		if (strcmp(config->users[i].name, user) == 0)
			return &config->users[i];
	return NULL;
}

void config_user_quota(const struct config *config, const char *user, uint64_t *storage_r,
		       unsigned *messages_r)
{
	const struct config_user *u = user ? config_user_find(config, user) : NULL;
	*storage_r = u ? u->quota_storage : config->quota_storage;
	*messages_r = u ? u->quota_messages : config->quota_messages;
}

int config_check_protocols(const struct config *config, const char *const *names, size_t n,
			   struct config_errors *errors)
{
	int ret = 0;
	for (size_t i = 0; i < config->n_listeners; i++) {
		const struct config_listener *l = &config->listeners[i];
		bool found = false;
		for (size_t k = 0; k < n && !found; k++)
			found = strcmp(names[k], l->protocol) == 0;
		if (found)
			continue;
		char known[256] = "";
		size_t o = 0;
		for (size_t k = 0; k < n && o < sizeof(known); k++)
			o += (size_t)snprintf(known + o, sizeof(known) - o, "%s%s", k ? ", " : "",
					      names[k]);
		add_error(errors, config->path, l->protocol_line ? l->protocol_line : l->line,
			  "protocol %s is not served by this build (it serves: %s)", l->protocol,
			  n ? known : "nothing yet");
		ret = -EINVAL;
	}
	return ret;
}
