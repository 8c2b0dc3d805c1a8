/* pop3_delay — LOGIN-DELAY (RFC 2449 §6.8): the minimum time between two POP3 logins of one
 * user, enforced with the time of each user's last login kept in memory (one process serves
 * every POP3 listener; a restart forgets, which only lets a client in early once).
 *
 * The table holds at most POP3_DELAY_MAX_USERS names; when full, entries whose delay has run
 * out are dropped, and if none has, the new login is let in without being recorded (a
 * warning is logged). Loop thread only.
 */
#ifndef MK_POP3_DELAY_H
#define MK_POP3_DELAY_H

#include <stdbool.h>
#include <stdint.h>

#define POP3_DELAY_MAX_USERS 65536

/* May USER log in at NOW (seconds, any monotonic clock) with DELAY seconds required between
 * logins? When not, *wait_r gets the seconds left. */
bool pop3_delay_allowed(const char *user, unsigned delay, uint64_t now, unsigned *wait_r);
/* USER logged in at NOW; entries older than DELAY may be dropped to make room. */
void pop3_delay_record(const char *user, unsigned delay, uint64_t now);
/* Forget everything (tests). */
void pop3_delay_clear(void);

#endif
