/* pop3 — the POP3 protocol handler (RFC 1939, RFC 2449 CAPA, RFC 5034 AUTH, RFC 2595 STLS,
 * RFC 3206 response codes) for listeners with `protocol = pop3`.
 *
 * The daemon sees only the descriptor below (STYLE.md rule 1); everything else in this folder
 * is internal. The maildrop is the user's INBOX, through a storage VIEW_POP3 snapshot.
 */
#ifndef MK_POP3_H
#define MK_POP3_H

#include "proto.h"

extern const struct proto_ops pop3_proto_ops;

struct auth_service;
/* The auth service logins go to (set once after auth_service_attach; NULL before, and then
 * every login answers -ERR [SYS/TEMP]). */
void pop3_auth_service_set(struct auth_service *svc);

#endif
