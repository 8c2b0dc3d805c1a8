/* daemon — the whole life of the mailkeep process: command line, configuration, listeners,
 * privilege drop and the loop. main.c calls it with the protocols built in; the test daemon
 * calls it with a test protocol. */
#ifndef MK_DAEMON_H
#define MK_DAEMON_H

#include <stddef.h>

struct proto_ops;

/* Returns the process exit status. */
int daemon_run(int argc, char **argv, const struct proto_ops *const *protos, size_t n_protos);

#endif
