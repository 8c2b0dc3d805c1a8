#include "auth_wire.h"

#include <errno.h>
#include <string.h>

const char *auth_result_name(enum auth_result result)
{
	switch (result) {
	case AUTH_RESULT_OK:
		return "ok";
	case AUTH_RESULT_PERMFAIL:
		return "permfail";
	case AUTH_RESULT_TEMPFAIL:
		return "tempfail";
	case AUTH_RESULT_EXPIRED:
		return "expired";
	}
	return "unknown";
}

/* Writer over a bounded output buffer; an overflow sticks. */
struct wire_out {
	uint8_t *p;
	size_t len;
	size_t cap;
	int err;
};

static void out_bytes(struct wire_out *o, const void *p, size_t n)
{
	if (o->err)
		return;
	if (o->cap - o->len < n) {
		o->err = -EMSGSIZE;
		return;
	}
	memcpy(o->p + o->len, p, n);
	o->len += n;
}

static void out_u8(struct wire_out *o, uint8_t v)
{
	out_bytes(o, &v, 1);
}

static void out_u16(struct wire_out *o, uint16_t v)
{
	uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	out_bytes(o, b, 2);
}

static void out_u32(struct wire_out *o, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
	out_bytes(o, b, 4);
}

/* s is a NUL-terminated field inside an array of cap+1 bytes. */
static void out_str(struct wire_out *o, const char *s, size_t cap)
{
	size_t n = strnlen(s, cap + 1);
	if (n > cap) {
		if (!o->err)
			o->err = -EMSGSIZE;
		return;
	}
	out_u16(o, (uint16_t)n);
	out_bytes(o, s, n);
}

static int out_finish(struct wire_out *o)
{
	if (o->err)
		return o->err;
	size_t body = o->len - AUTH_WIRE_HEADER;
	o->p[0] = (uint8_t)(body >> 24);
	o->p[1] = (uint8_t)(body >> 16);
	o->p[2] = (uint8_t)(body >> 8);
	o->p[3] = (uint8_t)body;
	return (int)o->len;
}

int auth_wire_request_encode(const struct auth_wire_request *req, uint8_t *out, size_t outlen)
{
	struct wire_out o = {.p = out, .cap = outlen};

	if (req->id == 0 || req->service[0] == '\0' || req->user[0] == '\0')
		return -EINVAL;
	out_u32(&o, 0);
	out_u8(&o, AUTH_WIRE_TYPE_REQUEST);
	out_u32(&o, req->id);
	out_u16(&o, req->local_port);
	out_u8(&o, req->tls ? 1 : 0);
	out_str(&o, req->service, AUTH_WIRE_MAX_SERVICE);
	out_str(&o, req->user, AUTH_WIRE_MAX_USER);
	out_str(&o, req->password, AUTH_WIRE_MAX_PASSWORD);
	out_str(&o, req->address, AUTH_WIRE_MAX_ADDRESS);
	return out_finish(&o);
}

int auth_wire_reply_encode(const struct auth_wire_reply *reply, uint8_t *out, size_t outlen)
{
	struct wire_out o = {.p = out, .cap = outlen};

	if (reply->id == 0 || (unsigned)reply->result > AUTH_RESULT_LAST)
		return -EINVAL;
	if ((reply->result == AUTH_RESULT_OK) != (reply->user[0] != '\0'))
		return -EINVAL;
	out_u32(&o, 0);
	out_u8(&o, AUTH_WIRE_TYPE_REPLY);
	out_u32(&o, reply->id);
	out_u8(&o, (uint8_t)reply->result);
	out_str(&o, reply->user, AUTH_WIRE_MAX_USER);
	out_str(&o, reply->reason, AUTH_WIRE_MAX_REASON);
	return out_finish(&o);
}

/* Reader over one complete body; any violation sticks. */
struct wire_in {
	const uint8_t *p;
	size_t len;
	size_t off;
	bool bad;
};

static const uint8_t *in_bytes(struct wire_in *in, size_t n)
{
	if (in->bad || in->len - in->off < n) {
		in->bad = true;
		return NULL;
	}
	const uint8_t *p = in->p + in->off;
	in->off += n;
	return p;
}

static uint8_t in_u8(struct wire_in *in)
{
	const uint8_t *p = in_bytes(in, 1);
	return p ? p[0] : 0;
}

static uint16_t in_u16(struct wire_in *in)
{
	const uint8_t *p = in_bytes(in, 2);
	return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}

static uint32_t in_u32(struct wire_in *in)
{
	const uint8_t *p = in_bytes(in, 4);
	return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}

/* Copy a string field into dst[cap+1]; refuses a length over cap and embedded NULs. */
static void in_str(struct wire_in *in, char *dst, size_t cap)
{
	dst[0] = '\0';
	uint16_t n = in_u16(in);
	if (in->bad)
		return;
	if (n > cap) {
		in->bad = true;
		return;
	}
	const uint8_t *p = in_bytes(in, n);
	if (p == NULL)
		return;
	if (memchr(p, '\0', n) != NULL) {
		in->bad = true;
		return;
	}
	memcpy(dst, p, n);
	dst[n] = '\0';
}

static int decode_request(const uint8_t *body, size_t len, struct auth_wire_request *req)
{
	struct wire_in in = {.p = body, .len = len};

	memset(req, 0, sizeof(*req));
	if (in_u8(&in) != AUTH_WIRE_TYPE_REQUEST)
		return -EBADMSG;
	req->id = in_u32(&in);
	req->local_port = in_u16(&in);
	uint8_t tls = in_u8(&in);
	req->tls = tls == 1;
	in_str(&in, req->service, AUTH_WIRE_MAX_SERVICE);
	in_str(&in, req->user, AUTH_WIRE_MAX_USER);
	in_str(&in, req->password, AUTH_WIRE_MAX_PASSWORD);
	in_str(&in, req->address, AUTH_WIRE_MAX_ADDRESS);
	if (in.bad || in.off != in.len || req->id == 0 || tls > 1 || req->service[0] == '\0' ||
	    req->user[0] == '\0') {
		explicit_bzero(req, sizeof(*req));
		return -EBADMSG;
	}
	return 1;
}

static int decode_reply(const uint8_t *body, size_t len, struct auth_wire_reply *reply)
{
	struct wire_in in = {.p = body, .len = len};

	memset(reply, 0, sizeof(*reply));
	if (in_u8(&in) != AUTH_WIRE_TYPE_REPLY)
		return -EBADMSG;
	reply->id = in_u32(&in);
	uint8_t result = in_u8(&in);
	in_str(&in, reply->user, AUTH_WIRE_MAX_USER);
	in_str(&in, reply->reason, AUTH_WIRE_MAX_REASON);
	if (in.bad || in.off != in.len || reply->id == 0 || result > AUTH_RESULT_LAST)
		return -EBADMSG;
	reply->result = (enum auth_result)result;
	if ((reply->result == AUTH_RESULT_OK) != (reply->user[0] != '\0'))
		return -EBADMSG;
	return 1;
}

void auth_wire_decoder_init(struct auth_wire_decoder *d, uint8_t type)
{
	d->type = type;
	d->have = 0;
	d->need = 0;
}

bool auth_wire_decoder_idle(const struct auth_wire_decoder *d)
{
	return d->have == 0;
}

void auth_wire_decoder_wipe(struct auth_wire_decoder *d)
{
	explicit_bzero(d->buf, sizeof(d->buf));
	d->have = 0;
	d->need = 0;
}

/* Buffer bytes until a frame is complete: returns 1 (frame in d->buf[0..need)), 0 or
 * -EBADMSG. */
static int decoder_collect(struct auth_wire_decoder *d, const uint8_t *data, size_t len,
			   size_t *used_r)
{
	size_t used = 0;

	*used_r = 0;
	if (d->have < AUTH_WIRE_HEADER) {
		size_t n = AUTH_WIRE_HEADER - d->have;
		if (n > len)
			n = len;
		memcpy(d->buf + d->have, data, n);
		d->have += n;
		used += n;
		if (d->have < AUTH_WIRE_HEADER) {
			*used_r = used;
			return 0;
		}
		uint32_t body = (uint32_t)d->buf[0] << 24 | (uint32_t)d->buf[1] << 16 |
				(uint32_t)d->buf[2] << 8 | d->buf[3];
		size_t min = d->type == AUTH_WIRE_TYPE_REQUEST ? AUTH_WIRE_MIN_REQUEST_BODY
							       : AUTH_WIRE_MIN_REPLY_BODY;
		size_t max = d->type == AUTH_WIRE_TYPE_REQUEST ? AUTH_WIRE_MAX_REQUEST_BODY
							       : AUTH_WIRE_MAX_REPLY_BODY;
		*used_r = used;
		if (body < min || body > max)
			return -EBADMSG;
		d->need = AUTH_WIRE_HEADER + body;
	}
	size_t n = d->need - d->have;
	if (n > len - used)
		n = len - used;
	memcpy(d->buf + d->have, data + used, n);
	d->have += n;
	used += n;
	*used_r = used;
	return d->have == d->need ? 1 : 0;
}

int auth_wire_decoder_feed_request(struct auth_wire_decoder *d, const void *data, size_t len,
				   size_t *used_r, struct auth_wire_request *req_r)
{
	if (d->type != AUTH_WIRE_TYPE_REQUEST)
		return -EBADMSG;
	int r = decoder_collect(d, data, len, used_r);
	if (r <= 0)
		return r;
	r = decode_request(d->buf + AUTH_WIRE_HEADER, d->need - AUTH_WIRE_HEADER, req_r);
	auth_wire_decoder_wipe(d);
	return r;
}

int auth_wire_decoder_feed_reply(struct auth_wire_decoder *d, const void *data, size_t len,
				 size_t *used_r, struct auth_wire_reply *reply_r)
{
	if (d->type != AUTH_WIRE_TYPE_REPLY)
		return -EBADMSG;
	int r = decoder_collect(d, data, len, used_r);
	if (r <= 0)
		return r;
	r = decode_reply(d->buf + AUTH_WIRE_HEADER, d->need - AUTH_WIRE_HEADER, reply_r);
	auth_wire_decoder_wipe(d);
	return r;
}
