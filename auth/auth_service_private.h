/* auth_service_private — for tests of auth_client.c only: a service over descriptors the test
 * holds, playing the supervisor and the dispatcher itself (a fake helper). */
#ifndef MK_AUTH_SERVICE_PRIVATE_H
#define MK_AUTH_SERVICE_PRIVATE_H

#include "auth.h"

/* Like auth_service_start, but starts no process: ctl_fd is the service's end of the control
 * socket (the test sends struct authd_ctl_msg + fd on the other end), chan_fd its end of the
 * first channel, helper_pid what auth_service_helper_pid reports. request_timeout_ms replaces
 * the loop side's bound on one request (0: the default). Takes both descriptors. */
int auth_service_start_fds(const struct config *cfg, int ctl_fd, int chan_fd, pid_t helper_pid,
			   unsigned request_timeout_ms, struct auth_service **svc_r);

#endif
