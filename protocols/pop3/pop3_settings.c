#include "pop3_settings.h"

#include "config.h"

void pop3_settings_get(const struct config *cfg, struct pop3_settings *set_r)
{
	/* src/config.c has no POP3 keys yet: these are their documented defaults. When the
	 * keys land, each line reads its config field instead. */
	(void)cfg;
	set_r->delete_policy = POP3_DELETE_EXPUNGE;
	set_r->retr_sets_seen = true;
	set_r->expire_days = 0;
	set_r->login_delay = 0;
}
