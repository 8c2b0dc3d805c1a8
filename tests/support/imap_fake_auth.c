#include "imap_fake_auth.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"

struct auth_service {
	int unused;
};

struct auth_request {
	auth_done_fn *done;
	void *ctx;
};

static struct auth_service the_service;
static struct auth_request *pending;
static char last_user[256], last_password[256], last_mech[32];
static unsigned cancelled;

struct auth_service *fake_auth_service(void)
{
	return &the_service;
}

bool fake_auth_pending(void)
{
	return pending != NULL;
}

const char *fake_auth_last_user(void)
{
	return last_user;
}

const char *fake_auth_last_password(void)
{
	return last_password;
}

const char *fake_auth_last_mechanism(void)
{
	return last_mech;
}

unsigned fake_auth_cancelled(void)
{
	return cancelled;
}

void fake_auth_answer(enum auth_result result, const char *canonical_user)
{
	assert_non_null(pending);
	struct auth_request *r = pending;
	pending = NULL;
	r->done(r->ctx, result, result == AUTH_RESULT_OK ? canonical_user : NULL, "test");
	free(r);
}

struct auth_request *auth_request_start(struct auth_service *svc,
					const struct auth_request_info *info, auth_done_fn *done,
					void *ctx)
{
	assert_ptr_equal(svc, &the_service);
	assert_null(pending);
	snprintf(last_user, sizeof(last_user), "%s", info->user);
	snprintf(last_password, sizeof(last_password), "%s", info->password);
	snprintf(last_mech, sizeof(last_mech), "%s", info->mechanism);
	pending = calloc(1, sizeof(*pending));
	pending->done = done;
	pending->ctx = ctx;
	return pending;
}

void auth_request_cancel(struct auth_request **req_p)
{
	if (!*req_p)
		return;
	assert_ptr_equal(*req_p, pending);
	free(pending);
	pending = NULL;
	cancelled++;
	*req_p = NULL;
}

bool auth_plaintext_allowed(const struct config *cfg, bool tls, bool peer_is_loopback)
{
	return tls || peer_is_loopback || (cfg && cfg->allow_plaintext_auth);
}

bool auth_failures_exceeded(const struct config *cfg, unsigned failures)
{
	return cfg->auth_max_failures && failures >= cfg->auth_max_failures;
}
