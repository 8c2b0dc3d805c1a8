#include "sasl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base64.h"

enum sasl_state {
	SASL_STATE_NEW,
	SASL_STATE_PLAIN_WAIT, /* sent an empty challenge, waiting for the PLAIN message */
	SASL_STATE_LOGIN_USER, /* sent "Username:" */
	SASL_STATE_LOGIN_PASS, /* sent "Password:" */
	SASL_STATE_FINISHED,
};

struct sasl {
	enum sasl_mech mech;
	enum sasl_state state;
	char user[AUTH_WIRE_MAX_USER + 1];
	char password[AUTH_WIRE_MAX_PASSWORD + 1];
	/* a decoded response: up to authzid NUL authcid NUL passwd */
	char decoded[AUTH_WIRE_MAX_USER * 2 + AUTH_WIRE_MAX_PASSWORD + 2 + 3];
};

/* base64 of "Username:" and "Password:" (the LOGIN mechanism's customary prompts). */
#define LOGIN_CHALLENGE_USER "VXNlcm5hbWU6"
#define LOGIN_CHALLENGE_PASS "UGFzc3dvcmQ6"

int sasl_mech_parse(const char *name, size_t len, enum sasl_mech *mech_r)
{
	if (len == 5 && strncasecmp(name, "PLAIN", 5) == 0) {
		*mech_r = SASL_MECH_PLAIN;
		return 0;
	}
	if (len == 5 && strncasecmp(name, "LOGIN", 5) == 0) {
		*mech_r = SASL_MECH_LOGIN;
		return 0;
	}
	return -ENOENT;
}

const char *sasl_mech_name(enum sasl_mech mech)
{
	return mech == SASL_MECH_PLAIN ? "PLAIN" : "LOGIN";
}

int sasl_new(enum sasl_mech mech, struct sasl **sasl_r)
{
	struct sasl *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->mech = mech;
	s->state = SASL_STATE_NEW;
	*sasl_r = s;
	return 0;
}

void sasl_free(struct sasl **sasl_p)
{
	struct sasl *s = *sasl_p;
	if (s == NULL)
		return;
	explicit_bzero(s, sizeof(*s));
	free(s);
	*sasl_p = NULL;
}

static enum sasl_status step_set(struct sasl_step *st, enum sasl_status status)
{
	memset(st, 0, sizeof(*st));
	st->status = status;
	return status;
}

static enum sasl_status step_error(struct sasl *s, struct sasl_step *st, const char *why)
{
	explicit_bzero(s->password, sizeof(s->password));
	explicit_bzero(s->decoded, sizeof(s->decoded));
	s->state = SASL_STATE_FINISHED;
	step_set(st, SASL_ERROR);
	st->error = why;
	return SASL_ERROR;
}

static enum sasl_status step_continue(struct sasl_step *st, const char *challenge)
{
	step_set(st, SASL_CONTINUE);
	st->challenge = challenge;
	return SASL_CONTINUE;
}

static enum sasl_status step_done(struct sasl *s, struct sasl_step *st)
{
	explicit_bzero(s->decoded, sizeof(s->decoded));
	s->state = SASL_STATE_FINISHED;
	step_set(st, SASL_DONE);
	st->user = s->user;
	st->password = s->password;
	return SASL_DONE;
}

/* Decode a response into s->decoded; returns the length or NULL-reason on error. */
static int response_decode(struct sasl *s, const char *in, size_t len, const char **why_r)
{
	if (len > SASL_MAX_RESPONSE) {
		*why_r = "response too long";
		return -1;
	}
	int n = base64_decode(in, len, s->decoded, sizeof(s->decoded) - 1);
	if (n == -ENOBUFS) {
		*why_r = "response too long";
		return -1;
	}
	if (n < 0) {
		*why_r = "invalid base64";
		return -1;
	}
	s->decoded[n] = '\0';
	return n;
}

/* A user name: 1..AUTH_WIRE_MAX_USER bytes, no control characters. */
static const char *user_check(const char *p, size_t n)
{
	if (n == 0)
		return "empty user name";
	if (n > AUTH_WIRE_MAX_USER)
		return "user name too long";
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c < 0x20 || c == 0x7f)
			return "invalid character in user name";
	}
	return NULL;
}

static const char *password_check(const char *p, size_t n)
{
	if (n == 0)
		return "empty password";
	if (n > AUTH_WIRE_MAX_PASSWORD)
		return "password too long";
	if (memchr(p, '\0', n) != NULL)
		return "invalid character in password";
	return NULL;
}

/* RFC 4616: message = [authzid] NUL authcid NUL passwd. */
static enum sasl_status plain_message(struct sasl *s, const char *in, size_t len,
				      struct sasl_step *st)
{
	const char *why = NULL;
	int n = response_decode(s, in, len, &why);
	if (n < 0)
		return step_error(s, st, why);
	const char *msg = s->decoded;
	const char *nul1 = memchr(msg, '\0', (size_t)n);
	if (nul1 == NULL)
		return step_error(s, st, "malformed PLAIN message");
	const char *authcid = nul1 + 1;
	size_t rest = (size_t)n - (size_t)(authcid - msg);
	const char *nul2 = memchr(authcid, '\0', rest);
	if (nul2 == NULL)
		return step_error(s, st, "malformed PLAIN message");
	size_t authzid_len = (size_t)(nul1 - msg);
	size_t authcid_len = (size_t)(nul2 - authcid);
	const char *passwd = nul2 + 1;
	size_t passwd_len = (size_t)n - (size_t)(passwd - msg);

	if ((why = user_check(authcid, authcid_len)) != NULL)
		return step_error(s, st, why);
	if (authzid_len > 0 &&
	    (authzid_len != authcid_len || memcmp(msg, authcid, authcid_len) != 0))
		return step_error(s, st, "authorization identity differs from user name");
	if ((why = password_check(passwd, passwd_len)) != NULL)
		return step_error(s, st, why);
	memcpy(s->user, authcid, authcid_len);
	s->user[authcid_len] = '\0';
	memcpy(s->password, passwd, passwd_len);
	s->password[passwd_len] = '\0';
	return step_done(s, st);
}

static enum sasl_status login_user(struct sasl *s, const char *in, size_t len, struct sasl_step *st)
{
	const char *why = NULL;
	int n = response_decode(s, in, len, &why);
	if (n < 0)
		return step_error(s, st, why);
	if ((why = user_check(s->decoded, (size_t)n)) != NULL)
		return step_error(s, st, why);
	memcpy(s->user, s->decoded, (size_t)n + 1);
	explicit_bzero(s->decoded, sizeof(s->decoded));
	s->state = SASL_STATE_LOGIN_PASS;
	return step_continue(st, LOGIN_CHALLENGE_PASS);
}

static enum sasl_status login_password(struct sasl *s, const char *in, size_t len,
				       struct sasl_step *st)
{
	const char *why = NULL;
	int n = response_decode(s, in, len, &why);
	if (n < 0)
		return step_error(s, st, why);
	if ((why = password_check(s->decoded, (size_t)n)) != NULL)
		return step_error(s, st, why);
	memcpy(s->password, s->decoded, (size_t)n + 1);
	return step_done(s, st);
}

enum sasl_status sasl_begin(struct sasl *s, const char *initial, size_t initial_len,
			    struct sasl_step *step_r)
{
	if (s->state != SASL_STATE_NEW)
		return step_error(s, step_r, "exchange already started");
	/* "=" is an empty initial response (RFC 4959 §3, RFC 5034 §4). */
	if (initial != NULL && initial_len == 1 && initial[0] == '=')
		initial_len = 0;
	switch (s->mech) {
	case SASL_MECH_PLAIN:
		if (initial == NULL) {
			s->state = SASL_STATE_PLAIN_WAIT;
			return step_continue(step_r, "");
		}
		return plain_message(s, initial, initial_len, step_r);
	case SASL_MECH_LOGIN:
		if (initial == NULL) {
			s->state = SASL_STATE_LOGIN_USER;
			return step_continue(step_r, LOGIN_CHALLENGE_USER);
		}
		return login_user(s, initial, initial_len, step_r);
	}
	return step_error(s, step_r, "unknown mechanism");
}

enum sasl_status sasl_continue(struct sasl *s, const char *line, size_t len,
			       struct sasl_step *step_r)
{
	if (s->state == SASL_STATE_NEW || s->state == SASL_STATE_FINISHED)
		return step_error(s, step_r, "no exchange in progress");
	if (len == 1 && line[0] == '*') {
		explicit_bzero(s->password, sizeof(s->password));
		s->state = SASL_STATE_FINISHED;
		return step_set(step_r, SASL_CANCELLED);
	}
	switch (s->state) {
	case SASL_STATE_PLAIN_WAIT:
		return plain_message(s, line, len, step_r);
	case SASL_STATE_LOGIN_USER:
		return login_user(s, line, len, step_r);
	case SASL_STATE_LOGIN_PASS:
		return login_password(s, line, len, step_r);
	case SASL_STATE_NEW:
	case SASL_STATE_FINISHED:
		break;
	}
	return step_error(s, step_r, "no exchange in progress");
}
