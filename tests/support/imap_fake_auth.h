/* imap_fake_auth — stands in for auth/auth_client.c in IMAP unit tests: requests wait until
 * the test answers them with fake_auth_answer(), as the helper would, from outside any hook.
 * The policy functions (plaintext, failure count, user names) are the real rules. */
#ifndef MK_IMAP_FAKE_AUTH_H
#define MK_IMAP_FAKE_AUTH_H

#include <stdbool.h>

#include "auth.h"

/* A service object to hand to imap_auth_service_set(). */
struct auth_service *fake_auth_service(void);
/* Is a request waiting? Its user and password (copied when it was started). */
bool fake_auth_pending(void);
const char *fake_auth_last_user(void);
const char *fake_auth_last_password(void);
const char *fake_auth_last_mechanism(void);
/* Answer the waiting request (canonical user for OK). */
void fake_auth_answer(enum auth_result result, const char *canonical_user);
/* Requests cancelled so far. */
unsigned fake_auth_cancelled(void);

#endif
