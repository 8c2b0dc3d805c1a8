/* mailkeep's entry point: the daemon with every protocol of this build and the PAM helper. */
#include "auth.h"
#include "daemon.h"
#include "protocols.h"
#include "storage.h"

#include <stdlib.h>

static struct auth_service *auth_service;

/* Forked while still root: PAM modules such as pam_unix need it (DESIGN.md "Process model"). */
static int main_before_drop(const struct config *cfg)
{
	return auth_service_start(cfg, &auth_service);
}

static int main_attach(uv_loop_t *loop)
{
	int r = auth_service_attach(auth_service, loop);
	if (r == 0)
		protocols_set_auth_service(auth_service);
	return r;
}

static void main_stop(void)
{
	protocols_set_auth_service(NULL);
	auth_service_free(&auth_service);
}

/* New quota limits reach users already logged in (their stores are open). */
static void main_reload(const struct config *cfg)
{
	store_config_apply(cfg);
}

int main(int argc, char **argv)
{
	static const struct daemon_hooks hooks = {
		.before_drop = main_before_drop,
		.attach = main_attach,
		.stop = main_stop,
		.reload = main_reload,
	};
	/* libuv's pool (4 threads by default) runs folder opens, SEARCH and the store's fsyncs
	 * (storage/mailbox_sync.c keeps up to 8 batches in flight, waiting on the disk): give
	 * it 16, unless the administrator set UV_THREADPOOL_SIZE. */
	setenv("UV_THREADPOOL_SIZE", "16", 0);
	return daemon_run(argc, argv, protocols_table, protocols_count, &hooks);
}
