/* daemon — the whole life of the mailkeep process: command line, configuration, listeners,
 * privilege drop and the loop. main.c calls it with the protocols built in; the test daemon
 * calls it with a test protocol. */
#ifndef MK_DAEMON_H
#define MK_DAEMON_H

#include <stddef.h>

#include <uv.h>

struct config;
struct proto_ops;

/* What the binary adds around the server; every hook is optional. main.c starts the PAM helper
 * in before_drop (it must fork while still root) and connects to it in attach. */
struct daemon_hooks {
	/* Listeners are bound and the process has detached; still privileged. Returns 0 or
	 * -errno (start-up fails). */
	int (*before_drop)(const struct config *cfg);
	/* Privileges are dropped; the loop has not run yet. Returns 0 or -errno. */
	int (*attach)(uv_loop_t *loop);
	/* The server is stopping (SIGTERM): release what attach set up. */
	void (*stop)(void);
	/* A reload (SIGHUP) took effect with CFG: settings that apply to running sessions. */
	void (*reload)(const struct config *cfg);
};

/* Returns the process exit status. hooks may be NULL. */
int daemon_run(int argc, char **argv, const struct proto_ops *const *protos, size_t n_protos,
	       const struct daemon_hooks *hooks);

#endif
