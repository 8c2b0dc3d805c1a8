/* pop3_settings — the POP3 settings, read from the config through this one accessor so that
 * the session never touches config fields for them directly.
 *
 * The keys ([server], src/config.c): pop3_delete = expunge | hide (default expunge),
 * pop3_retr_sets_seen (default yes), pop3_expire_days (default 0 = never), pop3_login_delay
 * (seconds, default 0 = not advertised).
 *
 * This accessor lives alone in pop3_settings.c so a test can link its own in its place.
 */
#ifndef MK_POP3_SETTINGS_H
#define MK_POP3_SETTINGS_H

#include <stdbool.h>

#include "storage.h"

struct config;

struct pop3_settings {
	enum pop3_delete_policy delete_policy; /* what QUIT does with DELE marks */
	bool retr_sets_seen;                   /* RETR adds \Seen through the mailbox */
	unsigned expire_days;                  /* CAPA EXPIRE; 0 = NEVER */
	unsigned login_delay;                  /* CAPA LOGIN-DELAY seconds; 0 = not advertised */
};

/* The settings in force for a connection accepted under CFG. */
void pop3_settings_get(const struct config *cfg, struct pop3_settings *set_r);

#endif
