/* libFuzzer target: the configuration parser must never crash or leak on any input. */
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg = NULL;
	struct config_errors errs;
	log_set_level(LOG_LEVEL_ERROR);
	if (config_load_string("fuzz.conf", (const char *)data, size, &cfg, &errs) == 0) {
		static const char *const names[] = {"imap", "pop3"};
		struct config_errors perrs = {0};
		(void)config_check_protocols(cfg, names, 2, &perrs);
		config_errors_free(&perrs);
		config_unref(&cfg);
	}
	config_errors_free(&errs);
	return 0;
}
