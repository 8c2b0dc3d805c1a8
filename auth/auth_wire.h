/* auth_wire — the framing between the network process and the auth helper (authd).
 *
 * Every message is a frame: a 4-byte big-endian body length, then the body. A body starts
 * with a type byte and a 32-bit id; strings are a 2-byte big-endian length and that many
 * bytes, never containing NUL, each with its own cap below.
 *
 *   request (network -> helper): type=1, id u32, local_port u16, tls u8 (0|1),
 *                                service, user, password, address
 *   reply   (helper -> network): type=2, id u32, result u8, user, reason
 *
 * Both sides check everything: a declared length above the largest possible body of the
 * expected type is refused before the body is read, so a peer can never make the decoder
 * buffer more than AUTH_WIRE_MAX_FRAME bytes. The decoder wipes its buffer after each frame
 * (requests carry passwords).
 */
#ifndef MK_AUTH_WIRE_H
#define MK_AUTH_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Field caps in bytes (the terminating NUL of the structs below is extra). */
#define AUTH_WIRE_MAX_SERVICE  64
#define AUTH_WIRE_MAX_USER     256
#define AUTH_WIRE_MAX_PASSWORD 1024
#define AUTH_WIRE_MAX_ADDRESS  64
#define AUTH_WIRE_MAX_REASON   256

#define AUTH_WIRE_TYPE_REQUEST 1
#define AUTH_WIRE_TYPE_REPLY   2

#define AUTH_WIRE_HEADER 4
#define AUTH_WIRE_MAX_REQUEST_BODY                                                                 \
	(1 + 4 + 2 + 1 + 2 + AUTH_WIRE_MAX_SERVICE + 2 + AUTH_WIRE_MAX_USER + 2 +                  \
	 AUTH_WIRE_MAX_PASSWORD + 2 + AUTH_WIRE_MAX_ADDRESS)
#define AUTH_WIRE_MAX_REPLY_BODY   (1 + 4 + 1 + 2 + AUTH_WIRE_MAX_USER + 2 + AUTH_WIRE_MAX_REASON)
#define AUTH_WIRE_MIN_REQUEST_BODY (1 + 4 + 2 + 1 + 2 * 4)
#define AUTH_WIRE_MIN_REPLY_BODY   (1 + 4 + 1 + 2 * 2)
/* The largest frame of either type, header included. */
#define AUTH_WIRE_MAX_FRAME (AUTH_WIRE_HEADER + AUTH_WIRE_MAX_REQUEST_BODY)

/* The outcome of a login, as the helper reports it and auth.h passes it on. */
enum auth_result {
	AUTH_RESULT_OK = 0,   /* password right and account usable; canonical user set */
	AUTH_RESULT_PERMFAIL, /* wrong user or password, account refused: IMAP NO
				 [AUTHENTICATIONFAILED], POP3 -ERR [AUTH] */
	AUTH_RESULT_TEMPFAIL, /* PAM or the helper unavailable: IMAP NO [UNAVAILABLE], POP3 -ERR
				 [SYS/TEMP] */
	AUTH_RESULT_EXPIRED,  /* password right but expired / must change: IMAP NO [EXPIRED],
				 POP3 -ERR [AUTH] */
};
#define AUTH_RESULT_LAST AUTH_RESULT_EXPIRED

/* "ok", "permfail", "tempfail", "expired" (for logs). */
const char *auth_result_name(enum auth_result result);

struct auth_wire_request {
	uint32_t id; /* never 0 */
	uint16_t local_port;
	bool tls;
	char service[AUTH_WIRE_MAX_SERVICE + 1];   /* PAM service name, non-empty */
	char user[AUTH_WIRE_MAX_USER + 1];         /* non-empty */
	char password[AUTH_WIRE_MAX_PASSWORD + 1]; /* may be empty */
	char address[AUTH_WIRE_MAX_ADDRESS + 1];   /* client address text, may be empty */
};

struct auth_wire_reply {
	uint32_t id;
	enum auth_result result;
	char user[AUTH_WIRE_MAX_USER + 1];     /* canonical user; non-empty iff result is OK */
	char reason[AUTH_WIRE_MAX_REASON + 1]; /* for the log, may be empty */
};

/* Encode into out[0..outlen). Returns the frame length, -EMSGSIZE when a field passes its cap
 * (or outlen is too small), -EINVAL when the message is not valid as described above. */
int auth_wire_request_encode(const struct auth_wire_request *req, uint8_t *out, size_t outlen);
int auth_wire_reply_encode(const struct auth_wire_reply *reply, uint8_t *out, size_t outlen);

/* Incremental decoder for one direction. The struct is public so that owners can embed it;
 * use it only through these functions. */
struct auth_wire_decoder {
	uint8_t type; /* AUTH_WIRE_TYPE_REQUEST or _REPLY: what this side expects */
	size_t have;  /* bytes of the current frame buffered */
	size_t need;  /* frame length once the header is complete, else 0 */
	uint8_t buf[AUTH_WIRE_MAX_FRAME];
};

void auth_wire_decoder_init(struct auth_wire_decoder *d, uint8_t type);
/* Feed bytes, in any split. Consumes bytes until one frame is complete or data is used up;
 * *used_r says how many were consumed (call again with the rest).
 * Returns 1 when a message was decoded into *req_r / *reply_r, 0 when all of data was
 * consumed and more is needed, -EBADMSG when the input is malformed (the decoder must then be
 * discarded: the stream cannot be resynchronised). */
int auth_wire_decoder_feed_request(struct auth_wire_decoder *d, const void *data, size_t len,
				   size_t *used_r, struct auth_wire_request *req_r);
int auth_wire_decoder_feed_reply(struct auth_wire_decoder *d, const void *data, size_t len,
				 size_t *used_r, struct auth_wire_reply *reply_r);
/* True when no partial frame is buffered. */
bool auth_wire_decoder_idle(const struct auth_wire_decoder *d);
/* Wipe the buffer (it may hold part of a password). */
void auth_wire_decoder_wipe(struct auth_wire_decoder *d);

#endif
