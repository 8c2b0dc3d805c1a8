/* log — one line per event, key=value fields, to stderr (foreground) or syslog.
 *
 * Callers write the fields; log adds the time (stderr only) and `level=`. Every line of a
 * connection carries `conn=ID` (the caller passes it). Client-supplied strings go through
 * log_escape() first. Passwords are never passed to any function here.
 */
#ifndef MK_LOG_H
#define MK_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level {
	LOG_LEVEL_ERROR,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

/* Start logging as IDENT; to stderr when to_stderr, else to syslog (LOG_MAIL). */
void log_init(const char *ident, bool to_stderr);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "error|warn|info|debug"; returns false on anything else. */
bool log_level_parse(const char *s, enum log_level *level_r);

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Log at error level and exit(1). */
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A client-supplied byte string made safe for one log field: printable ASCII other than space,
 * `"` and `\` kept, everything else as \xHH (so a field never splits), cut at 200 bytes with "...".
 * The result lives in a small per-thread ring of buffers: valid until the 8th next call on the same
 * thread. */
const char *log_escape(const char *s, size_t len);
/* log_escape of a NUL-terminated string (NULL gives "-"). */
const char *log_escape_str(const char *s);

#endif
