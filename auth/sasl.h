/* sasl — the server side of the SASL mechanisms PLAIN (RFC 4616) and LOGIN
 * (draft-murchison-sasl-login), as a small step machine the protocols drive.
 *
 * The protocol owns the wire syntax ("AUTHENTICATE", "AUTH", "+ " continuation lines); this
 * module owns decoding, validation and the exchange state:
 *
 *     struct sasl *s;  struct sasl_step st;
 *     sasl_new(mech, &s);
 *     sasl_begin(s, initial_or_NULL, len, &st);       // after the command line
 *     while (st.status == SASL_CONTINUE) {
 *             send "+ " st.challenge CRLF, read one line;
 *             sasl_continue(s, line, len, &st);
 *     }
 *     DONE      -> auth_request_start(... st.user, st.password ...), then sasl_free(&s)
 *     CANCELLED -> IMAP "NO"/"BAD", POP3 "-ERR" (client sent "*")
 *     ERROR     -> IMAP "BAD"/"NO", POP3 "-ERR" with st.error; no login is attempted
 *
 * Every input is bounded: a response line longer than SASL_MAX_RESPONSE characters, a user
 * above AUTH_WIRE_MAX_USER or a password above AUTH_WIRE_MAX_PASSWORD bytes is an ERROR. The
 * password is wiped by sasl_free(). Nothing here logs.
 */
#ifndef MK_SASL_H
#define MK_SASL_H

#include <stdbool.h>
#include <stddef.h>

#include "auth_wire.h"

enum sasl_mech {
	SASL_MECH_PLAIN,
	SASL_MECH_LOGIN,
};

/* Longest base64 response accepted (enough for a PLAIN message at the field caps). */
#define SASL_MAX_RESPONSE (((AUTH_WIRE_MAX_USER * 2 + AUTH_WIRE_MAX_PASSWORD + 2) + 2) / 3 * 4)

/* Mechanism by name, case-insensitive ("plain", "LOGIN"). Returns 0 or -ENOENT. */
int sasl_mech_parse(const char *name, size_t len, enum sasl_mech *mech_r);
/* "PLAIN" or "LOGIN". */
const char *sasl_mech_name(enum sasl_mech mech);

enum sasl_status {
	SASL_CONTINUE,  /* send a continuation with .challenge, then feed the next line */
	SASL_DONE,      /* .user and .password are set */
	SASL_CANCELLED, /* the client answered "*" */
	SASL_ERROR,     /* .error says why; the exchange is over */
};

struct sasl_step {
	enum sasl_status status;
	/* CONTINUE: the challenge already base64-encoded, NUL-terminated; "" for an empty
	 * challenge (IMAP sends "+ ", POP3 "+ "). */
	const char *challenge;
	/* DONE: the authentication identity and password, NUL-terminated, borrowed from the
	 * sasl object until sasl_free(). */
	const char *user;
	const char *password;
	/* ERROR: a short English reason, safe to log and to show the client. */
	const char *error;
};

struct sasl;

/* A new exchange for mech. Returns 0 or -ENOMEM. */
int sasl_new(enum sasl_mech mech, struct sasl **sasl_r);

/* Start the exchange. initial is the initial response as it appeared on the command line
 * (IMAP SASL-IR, RFC 4959; POP3 AUTH, RFC 5034), base64, or NULL when the client sent none;
 * "=" stands for an empty initial response. For LOGIN an initial response is taken as the
 * user name. Returns step_r->status. */
enum sasl_status sasl_begin(struct sasl *s, const char *initial, size_t initial_len,
			    struct sasl_step *step_r);

/* Feed one client response line (terminator excluded): base64, or "*" to cancel. Call only
 * after a CONTINUE; otherwise the result is an ERROR. Returns step_r->status. */
enum sasl_status sasl_continue(struct sasl *s, const char *line, size_t len,
			       struct sasl_step *step_r);

/* Wipe the credentials, free, and set *sasl_p to NULL (NULL is fine). */
void sasl_free(struct sasl **sasl_p);

#endif
