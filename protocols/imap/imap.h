/* imap — the IMAP protocol (RFC 3501 IMAP4rev1, RFC 9051 IMAP4rev2) for listeners with
 * `protocol = imap`. The only public symbol is the descriptor the server serves it through;
 * everything else in this folder is internal (imap_internal.h). */
#ifndef MK_IMAP_H
#define MK_IMAP_H

#include "proto.h"

extern const struct proto_ops imap_proto_ops;

struct auth_service;
/* The auth service logins go to (set once after auth_service_attach; NULL before, and then
 * every login answers NO [UNAVAILABLE]). */
void imap_auth_service_set(struct auth_service *svc);

#endif
