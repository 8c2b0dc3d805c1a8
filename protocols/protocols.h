/* protocols — the table of protocols this build serves; main.c hands it to the server. */
#ifndef MK_PROTOCOLS_H
#define MK_PROTOCOLS_H

#include <stddef.h>

#include "proto.h"

struct auth_service;

extern const struct proto_ops *const protocols_table[];
extern const size_t protocols_count;

/* Hand every protocol the auth service logins go through (NULL when it stops). */
void protocols_set_auth_service(struct auth_service *svc);

#endif
