#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static bool log_to_stderr = true;
static enum log_level log_level_cur = LOG_LEVEL_INFO;
static char log_ident[32] = "mailkeep";

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_init(const char *ident, bool to_stderr)
{
	snprintf(log_ident, sizeof(log_ident), "%s", ident);
	log_to_stderr = to_stderr;
	if (!to_stderr)
		openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void log_set_level(enum log_level level)
{
	log_level_cur = level;
}

enum log_level log_get_level(void)
{
	return log_level_cur;
}

bool log_level_parse(const char *s, enum log_level *level_r)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*level_r = (enum log_level)i;
			return true;
		}
	}
	return false;
}

static void log_vwrite(enum log_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
static void log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
	static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
	char line[2048];

	if (level > log_level_cur)
		return;
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0)
		return;
	/* One line per event: a newline in a message would forge a second event. */
	for (char *p = line; *p; p++) {
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	}
	if (!log_to_stderr) {
		syslog(prio[level], "level=%s %s", level_names[level], line);
		return;
	}
	struct timespec ts;
	struct tm tm;
	char when[32];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ %s[%ld]: level=%s %s\n", when, ts.tv_nsec / 1000000, log_ident,
		(long)getpid(), level_names[level], line);
}

#define LOG_FN(name, level)                                                                        \
	void name(const char *fmt, ...)                                                            \
	{                                                                                          \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		log_vwrite(level, fmt, ap);                                                        \
		va_end(ap);                                                                        \
	}
LOG_FN(log_error, LOG_LEVEL_ERROR)
LOG_FN(log_warn, LOG_LEVEL_WARN)
LOG_FN(log_info, LOG_LEVEL_INFO)
LOG_FN(log_debug, LOG_LEVEL_DEBUG)

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, fmt, ap);
	va_end(ap);
	exit(1);
}

#define ESCAPE_RING 8
#define ESCAPE_MAX  200

const char *log_escape(const char *s, size_t len)
{
	static _Thread_local char ring[ESCAPE_RING][ESCAPE_MAX * 4 + 8];
	static _Thread_local unsigned next;
	char *out = ring[next++ % ESCAPE_RING];
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		if (i == ESCAPE_MAX) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\' && ch != ' ') {
			out[o++] = (char)ch;
		} else {
			static const char hex[] = "0123456789abcdef";
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		}
	}
	out[o] = '\0';
	return out;
}

const char *log_escape_str(const char *s)
{
	return s ? log_escape(s, strlen(s)) : "-";
}
