/* config — the one configuration file: [server], [tls], any number of [listener NAME] and
 * any number of [user NAME] (per-user overrides of the quota limits).
 *
 * The file is INI-like: `key = value`, `;` or `#` starts a comment (at the start of a line, or
 * after white space), section names in brackets. Every setting is a row of the table in
 * config.c, with its type, default and one line of documentation; config_setting_*() expose
 * that table so the man page and --help can never drift from the parser.
 *
 * A loaded config is immutable and reference-counted: a connection keeps the config it was
 * accepted under, and SIGHUP swaps in a new one for new connections.
 */
#ifndef MK_CONFIG_H
#define MK_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_ADDRESSES 8
#define CONFIG_MAX_LISTENERS 64
#define CONFIG_MAX_USERS     65536
/* Largest quota_storage accepted (16 TiB). */
#define CONFIG_MAX_QUOTA_STORAGE (1ULL << 44)

enum listener_tls {
	LISTENER_TLS_NONE,
	LISTENER_TLS_STARTTLS,
	LISTENER_TLS_IMPLICIT,
};

enum config_pop3_delete {
	CONFIG_POP3_DELETE_EXPUNGE, /* a committed POP3 delete removes the message */
	CONFIG_POP3_DELETE_HIDE,    /* it hides it from POP3 and keeps it for IMAP */
};

enum mail_format {
	MAIL_FORMAT_MAILDIR,
	MAIL_FORMAT_MBOX,
};

enum mbox_variant {
	MBOX_VARIANT_MBOXO,  /* From_ quoting not reversible: bodies served as stored */
	MBOX_VARIANT_MBOXRD, /* one '>' of >*From lines removed on reading */
};

struct config_listener {
	char *name;     /* from [listener NAME] */
	char *protocol; /* "imap" or "pop3": checked against the build by config_check_protocols */
	unsigned protocol_line;
	char *addresses[CONFIG_MAX_ADDRESSES];
	size_t n_addresses;
	unsigned port;
	enum listener_tls tls;
	unsigned idle_timeout;     /* seconds; 0 = the protocol's default */
	unsigned max_line;         /* longest command line in bytes; 0 = the protocol's default */
	unsigned max_bad_commands; /* bad commands before the connection is closed */
	unsigned line;             /* line of the section header, for messages */
};

/* A [user NAME] section: the quota limits of one user. A key the section does not set has the
 * [server] value. */
struct config_user {
	char *name;              /* the canonical user name (what PAM answers), exact match */
	uint64_t quota_storage;  /* bytes of RFC822.SIZE over all folders; 0 = unlimited */
	unsigned quota_messages; /* messages over all folders; 0 = unlimited */
	unsigned line;           /* line of the section header, for messages */
};

struct config {
	unsigned refs;
	char *path;
	/* Increases with every config loaded in this process: the newer of two configs has the
	 * higher generation (the store keeps the limits of the newest one it was given). */
	unsigned long generation;

	/* [server] */
	char *mail_root; /* %u expands to the user */
	enum mail_format mail_format;
	char *mbox_inbox; /* mbox: INBOX file (%u expands), "" = ROOT/inbox */
	enum mbox_variant mbox_variant;
	unsigned mbox_lock_timeout; /* seconds */
	char *mail_user;
	char *log_level;
	unsigned max_connections;
	unsigned max_connections_per_address;
	unsigned shutdown_timeout;    /* seconds to wait for goodbyes to flush on SIGTERM */
	size_t output_high_watermark; /* stop reading from a connection above this much output */
	size_t output_low_watermark;  /* resume below this */
	char *pam_service;            /* PAM service name */
	char *pam_confdir;            /* optional PAM configuration directory */
	bool allow_plaintext_auth;    /* plaintext logins without TLS from non-loopback clients */
	unsigned auth_workers;        /* PAM requests served at once */
	unsigned auth_fail_delay_ms;  /* first delay after a failed login, doubles per failure */
	unsigned auth_fail_delay_max_ms;
	unsigned auth_max_failures; /* failed logins before the connection is closed */
	enum config_pop3_delete pop3_delete;
	bool pop3_retr_sets_seen;     /* RETR marks the message seen; TOP never does */
	unsigned pop3_expire_days;    /* retention advertised as CAPA EXPIRE; 0 = never */
	unsigned pop3_login_delay;    /* seconds advertised as CAPA LOGIN-DELAY; 0 = none */
	unsigned imap_idle_keepalive; /* seconds between keep-alives during IDLE; 0 = none */
	bool imap_literal_plus;       /* LITERAL+ (yes) or LITERAL- (no), RFC 7888 */
	uint64_t quota_storage;       /* every user's default limit in bytes; 0 = unlimited */
	unsigned quota_messages;      /* every user's default message limit; 0 = unlimited */

	/* [tls] */
	char *tls_cert;
	char *tls_key;
	char *tls_priority;
	unsigned tls_handshake_timeout; /* seconds */

	struct config_listener listeners[CONFIG_MAX_LISTENERS];
	size_t n_listeners;

	/* [user NAME] sections, in file order (names unique) */
	struct config_user *users;
	size_t n_users;
};

/* One error: the file, line (0 for the file as a whole) and what is wrong. */
struct config_error {
	char *file;
	unsigned line;
	char *message;
};

struct config_errors {
	struct config_error *items;
	size_t n;
};

/* Parse PATH. On success returns 0 and a config with one reference. On failure returns
 * -EINVAL (or -errno if the file cannot be read) and fills errors (every error found, in file
 * order); free them with config_errors_free. */
int config_load(const char *path, struct config **config_r, struct config_errors *errors);
/* The same from a string (tests, fuzzing); name is used in messages. */
int config_load_string(const char *name, const char *text, size_t len, struct config **config_r,
		       struct config_errors *errors);
void config_errors_free(struct config_errors *errors);

struct config *config_ref(struct config *config);
/* Drop a reference; frees at zero and sets *config_p to NULL. */
void config_unref(struct config **config_p);

const struct config_listener *config_listener_find(const struct config *config, const char *name);
/* The [user NAME] section of USER, or NULL. */
const struct config_user *config_user_find(const struct config *config, const char *user);
/* USER's quota limits: their [user NAME] section's, else the [server] defaults (0 = none). */
void config_user_quota(const struct config *config, const char *user, uint64_t *storage_r,
		       unsigned *messages_r);

/* Check every listener's protocol against the names this build serves; adds one error per
 * listener whose protocol is not among them. Returns 0 or -EINVAL. */
int config_check_protocols(const struct config *config, const char *const *names, size_t n,
			   struct config_errors *errors);

/* The settings table, for documentation and man-page checks. */
struct config_setting_doc {
	const char *section; /* "server", "tls", "listener" or "user" */
	const char *key;
	const char *default_text;
	const char *doc;
};
size_t config_setting_count(void);
const struct config_setting_doc *config_setting_get(size_t i);

#endif
