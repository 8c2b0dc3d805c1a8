/* mime_private — the parsed message's layout, shared by the storage/mime*, msg_*, envelope*,
 * bodystruct* and charset* files only. Nothing outside those files may include this. */
#ifndef MK_MIME_PRIVATE_H
#define MK_MIME_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "msg_parse.h"

#define MIME_NONE UINT32_MAX

/* buf_peek that is defined for a buffer that never held data (NULL data pointer). */
static inline const char *mime_bp(const struct buf *b)
{
	return b->data ? b->data + b->off : "";
}

/* A string in the message's arena; off == MIME_NONE means NIL. */
struct mime_str {
	uint32_t off, len;
};

enum mime_part_flags {
	MIME_F_MULTIPART = 1 << 0, /* multipart/ *: children are its body parts */
	MIME_F_RFC822 = 1 << 1,    /* message/rfc822: its one child is the embedded message */
	MIME_F_TEXT = 1 << 2,      /* type "text": BODYSTRUCTURE has a line count */
	MIME_F_HAS_CT = 1 << 3,    /* a Content-Type field was present */
	MIME_F_OVERFLOW = 1 << 4,  /* multipart or message/rfc822 beyond the limits: a leaf */
	MIME_F_DIGEST = 1 << 5,    /* multipart/digest: children default to message/rfc822 */
	MIME_F_MESSAGE = 1 << 6,   /* a message (the top one or embedded): has an envelope */
};
#define MIME_F_ALL 0x7f

struct mime_part {
	uint32_t parent, first_child, next; /* indices, MIME_NONE for none; preorder */
	uint32_t flags;
	uint32_t lines;                /* LFs in the body (the delimiter's CRLF not counted) */
	uint64_t hdr_poff, hdr_voff;   /* header start: physical / CRLF offset */
	uint64_t body_poff, body_voff; /* body start (= header end) */
	uint64_t body_pend, body_vend; /* body end */
	struct mime_str type, subtype; /* as written; NIL when no Content-Type */
	struct mime_str params;        /* "name\0value\0..." ; NIL when none */
	uint32_t nparams;
	struct mime_str id, desc, enc, md5, loc;
	struct mime_str disp, disp_params; /* disposition type, its params like params */
	uint32_t ndisp_params;
	struct mime_str lang; /* "tag\0tag\0..." */
	uint32_t nlang;
	struct mime_str envelope; /* rendered ENVELOPE list (MIME_F_MESSAGE parts) */
	struct mime_str preview;  /* the top part only: its PREVIEW text (msg_preview.c) */
	/* the top part only: its References field as written, NIL when it has none (IMAP
	 * THREAD=REFERENCES; cache version 3) */
	struct mime_str references;
};

struct msg_parsed {
	struct mime_part *parts;
	uint32_t nparts;
	char *arena;
	uint32_t arena_len;
	uint64_t psize, vsize;
	struct buf body, bodystructure; /* rendered at the end of parsing or loaded from cache */
};

/* Arena writer used while parsing (bounded). */
struct mime_arena {
	struct buf b;
	bool full;
};
struct mime_str mime_arena_add(struct mime_arena *a, const char *s, size_t len);
static inline const char *mime_str_ptr(const struct msg_parsed *m, struct mime_str s)
{
	return s.off == MIME_NONE ? NULL : m->arena + s.off;
}

/* mime_fields.c: header field value parsers (Dovecot-compatible). */
struct mime_param_list {
	struct buf b; /* "name\0value\0" pairs */
	uint32_t count;
};
/* Content-Type: sets type/subtype (either may come back empty, see the .c) and params.
 * Returns true when the value was well-formed (so params were parsed). */
bool mime_parse_content_type(const char *v, size_t len, struct buf *type, struct buf *subtype,
			     struct mime_param_list *params);
/* Content-Disposition: type (possibly empty) and params. Returns false on an unclosed
 * comment before the parameters. */
bool mime_parse_disposition(const char *v, size_t len, struct buf *type,
			    struct mime_param_list *params);
/* Content-Language: a list of tags "a\0b\0". */
void mime_parse_language(const char *v, size_t len, struct mime_param_list *tags);
/* The MIME token that is a whole value (Content-Transfer-Encoding); nothing when the value
 * holds anything else. */
void mime_parse_token(const char *v, size_t len, struct buf *out);
/* Find a parameter (case-insensitive name) in a "name\0value\0" list. */
const char *mime_param_find(const char *list, size_t list_len, uint32_t count, const char *name,
			    size_t *len_r);
void mime_param_list_init(struct mime_param_list *l);
void mime_param_list_free(struct mime_param_list *l);

/* envelope.c: render "(date subject from sender reply-to to cc bcc in-reply-to message-id)"
 * from the raw header values collected while parsing. */
struct mime_env_fields {
	struct buf date, subject, message_id, in_reply_to; /* last field wins */
	bool has_date, has_subject, has_message_id, has_in_reply_to;
	struct buf references; /* not in ENVELOPE: kept for the top part (first field wins) */
	bool has_references;
	struct buf addr[6]; /* from sender reply-to to cc bcc: values joined with '\0' */
	bool has_addr[6];
};
enum { MIME_ENV_FROM, MIME_ENV_SENDER, MIME_ENV_REPLY_TO, MIME_ENV_TO, MIME_ENV_CC, MIME_ENV_BCC };
int mime_envelope_render(const struct mime_env_fields *f, struct buf *out);
/* One address list value to IMAP "((name adl mailbox host)...)" or NIL when empty. */
int mime_address_render(const char *const *values, const size_t *lens, unsigned n, struct buf *out);

/* bodystruct.c */
int mime_bodystructure_render(const struct msg_parsed *m, uint32_t part, bool extended,
			      struct buf *out);

/* The parser's read window for file sources (MSG_READ_CHUNK). Only the fuzzer and tests
 * change it, before parsing, to exercise lines split across windows; never below 256. */
extern size_t mime_read_window;

/* mime_parse.c helpers used by msg_section.c / msg_decode.c */
/* Read physical bytes [off, off+len) of SRC into dst. Returns 0 or -errno (-EIO when short). */
int mime_source_pread(const struct msg_source *src, void *dst, size_t len, uint64_t off);
/* Find the part addressed by PATH (see msg_section_resolve). MIME_NONE when none. */
uint32_t mime_part_find(const struct msg_parsed *m, const uint32_t *path, unsigned npath);
/* Does a header field name (len octets) equal NAME, case-insensitively? */
bool mime_name_eq(const char *s, size_t len, const char *name);

/* charset.c: convert LEN octets in CHARSET to UTF-8 appended to OUT (stateless, whole input;
 * invalid sequences become U+FFFD). Returns 0 or -ENOBUFS/-ENOMEM. */
int charset_to_utf8(const char *charset, size_t charset_len, const char *s, size_t len,
		    struct buf *out);
/* Streaming conversion for body text. */
struct charset_conv;
int charset_conv_open(const char *charset, size_t charset_len, struct charset_conv **conv_r);
/* Convert; incomplete trailing sequences are kept for the next call (FINAL flushes them as
 * U+FFFD). Output appended to OUT. */
int charset_conv_feed(struct charset_conv *conv, const char *s, size_t len, bool final,
		      struct buf *out);
void charset_conv_free(struct charset_conv **convp);

/* msg_decode.c: transfer decoding state machine. */
enum mime_cte { MIME_CTE_IDENTITY, MIME_CTE_BASE64, MIME_CTE_QP, MIME_CTE_UNKNOWN };
enum mime_cte mime_cte_from_name(const char *s, size_t len);
/* The transfer encoding of a part (identity for 7bit/8bit/binary/none). */
enum mime_cte mime_part_cte(const struct msg_parsed *m, const struct mime_part *p);
/* Streaming transfer decoder. feed() decodes n input octets into out (room for at least
 * n + MIME_DECODER_SLACK octets) and sets *outlen_r; final flushes what is held back.
 * Returns 0, or -EBADMSG for data that cannot be decoded: base64 with a character outside
 * the alphabet, data after '=' padding or a lone trailing sextet (always), quoted-printable
 * with '=' not followed by two hex digits or a line end, a CR without LF, or more than 76
 * octets of white space inside a line (only when STRICT; otherwise such input is passed
 * through as it is, as Dovecot's decoder does). */
#define MIME_DECODER_SLACK 2048
struct mime_decoder;
int mime_decoder_new(enum mime_cte cte, bool strict, struct mime_decoder **dec_r);
int mime_decoder_feed(struct mime_decoder *dec, const char *in, size_t n, bool final, char *out,
		      size_t *outlen_r);
void mime_decoder_free(struct mime_decoder **decp);
/* Stream part P's body as UTF-8 text (transfer decoded, charset converted) to CB, as
 * msg_text_foreach does for each text part. */
int mime_text_body(const struct msg_source *src, const struct msg_parsed *m,
		   const struct mime_part *p, msg_text_cb *cb, void *ctx);
/* msg_preview.c: append the PREVIEW text of M to OUT (room for MSG_PREVIEW_MAX_CHARS * 4
 * octets). Returns 0 or -errno. */
int msg_preview_build(const struct msg_source *src, const struct msg_parsed *m, struct buf *out);
/* msg_section.c: open a CRLF reader that decodes with CTE (identity: plain); STRICT as for
 * mime_decoder_new. */
int mime_reader_open_decoded(const struct msg_source *src, const struct msg_range *range,
			     enum mime_cte cte, bool strict, struct msg_reader **reader_r);
/* The body range of part IDX. */
void mime_part_body_range(const struct mime_part *p, struct msg_range *r);

#endif
