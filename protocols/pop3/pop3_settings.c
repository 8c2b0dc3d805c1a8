#include "pop3_settings.h"

#include "config.h"

void pop3_settings_get(const struct config *cfg, struct pop3_settings *set_r)
{
	set_r->delete_policy = cfg->pop3_delete == CONFIG_POP3_DELETE_HIDE ? POP3_DELETE_HIDE
									   : POP3_DELETE_EXPUNGE;
	set_r->retr_sets_seen = cfg->pop3_retr_sets_seen;
	set_r->expire_days = cfg->pop3_expire_days;
	set_r->login_delay = cfg->pop3_login_delay;
}
