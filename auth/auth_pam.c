#include "auth_pam.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PAM_TTY: some modules (pam_access) want one; a name that cannot be a real terminal. */
#define AUTH_PAM_TTY "mailkeep"

static void memccpy_bounded(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static void responses_wipe(struct pam_response *resp, int n)
{
	for (int i = 0; i < n; i++) {
		if (resp[i].resp != NULL) {
			explicit_bzero(resp[i].resp, strlen(resp[i].resp));
			free(resp[i].resp);
		}
	}
	free(resp);
}

int auth_pam_conv(int num_msg, const struct pam_message **msg, struct pam_response **resp_r,
		  void *appdata_ptr)
{
	struct auth_pam_conv_data *data = appdata_ptr;

	*resp_r = NULL;
	if (num_msg <= 0 || num_msg > AUTH_PAM_MAX_MESSAGES)
		return PAM_CONV_ERR;
	/* calloc: PAM frees every resp[i].resp and the array with free() */
	struct pam_response *resp = calloc((size_t)num_msg, sizeof(*resp));
	if (resp == NULL)
		return PAM_BUF_ERR;
	for (int i = 0; i < num_msg; i++) {
		switch (msg[i]->msg_style) {
		case PAM_PROMPT_ECHO_OFF:
			resp[i].resp = strdup(data->password);
			if (resp[i].resp == NULL)
				goto fail;
			break;
		case PAM_PROMPT_ECHO_ON:
			resp[i].resp = strdup(data->user);
			if (resp[i].resp == NULL)
				goto fail;
			break;
		case PAM_ERROR_MSG:
		case PAM_TEXT_INFO:
			if (msg[i]->msg != NULL)
				memccpy_bounded(data->info, sizeof(data->info), msg[i]->msg);
			break;
		default:
			goto fail;
		}
	}
	*resp_r = resp;
	return PAM_SUCCESS;
fail:
	responses_wipe(resp, num_msg);
	return PAM_CONV_ERR;
}

enum auth_result auth_pam_map(int pam_rc)
{
	switch (pam_rc) {
	case PAM_SUCCESS:
		return AUTH_RESULT_OK;
	case PAM_SYSTEM_ERR:
	case PAM_ABORT:
	case PAM_AUTHINFO_UNAVAIL:
	case PAM_BUF_ERR:
	case PAM_CONV_ERR:
	case PAM_TRY_AGAIN:
		return AUTH_RESULT_TEMPFAIL;
	case PAM_NEW_AUTHTOK_REQD:
	case PAM_ACCT_EXPIRED:
	case PAM_AUTHTOK_EXPIRED:
		return AUTH_RESULT_EXPIRED;
	default:
		return AUTH_RESULT_PERMFAIL;
	}
}

/* The reason text, cut to the wire cap (vsnprintf truncates silently, by design). */
static void reason_set(char *reason, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reason_set(char *reason, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, AUTH_WIRE_MAX_REASON + 1, fmt, ap);
	va_end(ap);
}

static enum auth_result fail(pam_handle_t *h, int rc, const char *step,
			     const struct auth_pam_conv_data *conv, char *reason)
{
	const char *msg = pam_strerror(h, rc);
	if (conv->info[0] != '\0')
		reason_set(reason, "%s: %s (%s)", step, msg, conv->info);
	else
		reason_set(reason, "%s: %s", step, msg);
	return auth_pam_map(rc);
}

enum auth_result auth_pam_check(const struct auth_wire_request *req, const char *confdir,
				char *canonical, char *reason)
{
	struct auth_pam_conv_data conv_data = {.user = req->user, .password = req->password};
	struct pam_conv conv = {.conv = auth_pam_conv, .appdata_ptr = &conv_data};
	pam_handle_t *h = NULL;
	enum auth_result result;
	int rc;

	canonical[0] = '\0';
	reason[0] = '\0';
#ifdef HAVE_PAM_START_CONFDIR
	if (confdir != NULL)
		rc = pam_start_confdir(req->service, req->user, &conv, confdir, &h);
	else
		rc = pam_start(req->service, req->user, &conv, &h);
#else
	if (confdir != NULL) {
		snprintf(reason, AUTH_WIRE_MAX_REASON + 1,
			 "pam_confdir set but PAM lacks pam_start_confdir");
		return AUTH_RESULT_TEMPFAIL;
	}
	rc = pam_start(req->service, req->user, &conv, &h);
#endif
	if (rc != PAM_SUCCESS) {
		reason_set(reason, "pam_start: %s", pam_strerror(h, rc));
		if (h != NULL)
			pam_end(h, rc);
		return AUTH_RESULT_TEMPFAIL;
	}
	/* These do not fail on a valid handle; a module that needs one would then fail. */
	if (req->address[0] != '\0')
		(void)pam_set_item(h, PAM_RHOST, req->address);
	(void)pam_set_item(h, PAM_RUSER, req->user);
	(void)pam_set_item(h, PAM_TTY, AUTH_PAM_TTY);

	rc = pam_authenticate(h, PAM_SILENT);
	if (rc != PAM_SUCCESS) {
		result = fail(h, rc, "pam_authenticate", &conv_data, reason);
		goto out;
	}
	/* Required: expired and locked accounts pass pam_authenticate. */
	rc = pam_acct_mgmt(h, PAM_SILENT);
	if (rc != PAM_SUCCESS) {
		result = fail(h, rc, "pam_acct_mgmt", &conv_data, reason);
		goto out;
	}
	const void *item = NULL;
	rc = pam_get_item(h, PAM_USER, &item);
	const char *user = item;
	if (rc != PAM_SUCCESS || user == NULL || user[0] == '\0' ||
	    strlen(user) > AUTH_WIRE_MAX_USER) {
		reason_set(reason, "PAM_USER missing or too long");
		result = AUTH_RESULT_TEMPFAIL;
		goto out;
	}
	memcpy(canonical, user, strlen(user) + 1);
	result = AUTH_RESULT_OK;
out:
	pam_end(h, rc);
	explicit_bzero(&conv_data, sizeof(conv_data));
	return result;
}

static int probe_conv(int num_msg, const struct pam_message **msg, struct pam_response **resp_r,
		      void *appdata_ptr)
{
	*resp_r = NULL;
	return PAM_CONV_ERR;
}

int auth_pam_probe(const char *service, const char *confdir)
{
	struct pam_conv conv = {.conv = probe_conv};
	pam_handle_t *h = NULL;
	int rc;
#ifdef HAVE_PAM_START_CONFDIR
	if (confdir != NULL)
		rc = pam_start_confdir(service, NULL, &conv, confdir, &h);
	else
		rc = pam_start(service, NULL, &conv, &h);
#else
	if (confdir != NULL)
		return PAM_SYSTEM_ERR;
	rc = pam_start(service, NULL, &conv, &h);
#endif
	if (h != NULL)
		pam_end(h, rc);
	return rc;
}
