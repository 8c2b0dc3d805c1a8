/* msg_parse — MIME parsing of one message, and everything IMAP derives from it.
 *
 * A message is parsed once into a struct msg_parsed: the part tree (byte ranges, line counts,
 * content type, parameters, id, description, encoding, disposition, language, location, md5)
 * plus the ENVELOPE of every message (the top one and each message/rfc822 part). From it come
 * the IMAP ENVELOPE, BODY and BODYSTRUCTURE strings, the byte ranges of any BODY[section], the
 * header fields for HEADER.FIELDS / SEARCH HEADER / SORT, decoded content for BINARY[] and
 * BINARY.SIZE[], and UTF-8 text for SEARCH. The result serializes into a compact blob for the
 * store's per-folder cache (msg_parse_serialize/msg_parse_deserialize).
 *
 * Standards: RFC 5322 (header fields, unfolding, addresses), RFC 2045-2049 (MIME), RFC 2046
 * §5.1.1 boundaries (a delimiter is "--" boundary at the start of a line; the rest of the line
 * is ignored, the prefix rule; the CRLF before it belongs to the delimiter), RFC 2231
 * (parameter continuations), RFC 2047 (encoded words, decoded for SEARCH only), RFC 3501 /
 * RFC 9051 (IMAP syntax), RFC 3516 (BINARY). Where the RFCs leave room the answers are
 * Dovecot 2.3's (IMAP4rev1), so a client moving from Dovecot sees the same bytes; see
 * storage/README.md "Message parsing" for the list of those choices.
 *
 * Line ends: the bytes on disk may use CRLF or bare LF. Every size and offset this module
 * reports to IMAP ("virtual", or CRLF, sizes and offsets) counts a bare LF as two octets, as
 * if the message were stored CRLF (RFC 3501 §2.3.4); ranges also carry the physical offsets in
 * the source so a reader can find the bytes. msg_reader_* serves a range in CRLF form.
 *
 * Bounds: parsing uses memory proportional to the number of parts and to the header values
 * it keeps, never to the message size. Nesting deeper than limits.max_depth makes the
 * innermost multipart or message/rfc822 a leaf (described as application/octet-stream, its
 * bytes still served); after limits.max_parts parts further boundaries are ignored; header field
 * values are kept up to limits.max_header_value octets each and limits.max_header_keep per
 * header block (sizes and offsets stay exact: only the kept text is cut).
 *
 * Threads: a struct msg_parsed is immutable after parsing and may be read from several threads
 * at once; msg_parse_* may run on libuv's thread pool.
 */
#ifndef MK_MSG_PARSE_H
#define MK_MSG_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

struct msg_parsed;

/* Where a message's bytes are: a memory buffer, or an open file read with pread() in bounded
 * chunks (MSG_READ_CHUNK octets; the file is never mapped, so a file truncated under us gives
 * -EIO, never SIGBUS). The source is borrowed: it must outlive every call that takes it. */
struct msg_source {
	const char *mem; /* non-NULL: the message is mem[0..size) */
	int fd;          /* used when mem is NULL */
	uint64_t size;   /* physical size in octets */
};
#define MSG_READ_CHUNK (64 * 1024)

static inline struct msg_source msg_source_mem(const void *data, size_t size)
{
	struct msg_source s = {(const char *)data, -1, size};
	return s;
}
static inline struct msg_source msg_source_fd(int fd, uint64_t size)
{
	struct msg_source s = {NULL, fd, size};
	return s;
}

/* Nesting of multipart / message/rfc822 parts (default 100, at most 1000), parts in the whole
 * message (default 10000), kept octets of one header field value (default 64 KiB) and of all
 * fields of one header block (default 256 KiB). */
struct msg_parse_limits {
	unsigned max_depth;
	unsigned max_parts;
	size_t max_header_value;
	size_t max_header_keep;
};
/* The defaults above (Dovecot's message_max_nested_mime_parts / _total_mime_parts). */
void msg_parse_limits_default(struct msg_parse_limits *limits_r);

/* Parse the message in SRC. LIMITS may be NULL for the defaults. Every input parses: malformed
 * MIME gives a best-effort structure, never an error. Returns 0, -ENOMEM, or -errno from
 * reading the file (-EIO when it is shorter than src->size). */
int msg_parse(const struct msg_source *src, const struct msg_parse_limits *limits,
	      struct msg_parsed **msg_r);
void msg_parsed_free(struct msg_parsed **msgp);

/* RFC822.SIZE: the CRLF size of the whole message. */
uint64_t msg_parsed_size(const struct msg_parsed *msg);
/* Number of parts in the tree (the message itself counts). */
unsigned msg_parsed_part_count(const struct msg_parsed *msg);

/* The IMAP strings, without the item name: ENVELOPE's "(date subject ... message-id)",
 * BODY's and BODYSTRUCTURE's parenthesized lists. Valid as long as MSG. Strings contain
 * literals ({n}CRLF...) where IMAP needs them, so use the length, not strlen. */
const char *msg_parsed_envelope(const struct msg_parsed *msg, size_t *len_r);
const char *msg_parsed_body(const struct msg_parsed *msg, size_t *len_r);
const char *msg_parsed_bodystructure(const struct msg_parsed *msg, size_t *len_r);

/* RFC 8970 PREVIEW: at most this many characters (not octets) of the message's text. */
#define MSG_PREVIEW_MAX_CHARS 256
/* The PREVIEW text, made while parsing (and kept in the cache blob): normalized UTF-8 from
 * the first text/plain part of the message, else its first text/html part without the markup
 * (storage/msg_preview.c says exactly how); "" when it has no such text. Not NUL-terminated
 * for the caller's purposes: use *len_r. Valid as long as MSG. */
const char *msg_parsed_preview(const struct msg_parsed *msg, size_t *len_r);

/* The top message's References field as written (the first one; folding kept, cut at
 * limits.max_header_value octets), kept in the cache blob so THREAD=REFERENCES need not open
 * the message. NULL when it has none. Not NUL-terminated: use *len_r. Valid as long as MSG. */
const char *msg_parsed_references(const struct msg_parsed *msg, size_t *len_r);

/* ---------------------------------------------------------------------------------------- */
/* Sections: BODY[section] / BINARY[section]                                                 */

#define MSG_SECTION_MAX_PATH   128 /* part numbers in one section spec */
#define MSG_SECTION_MAX_FIELDS 64  /* field names in HEADER.FIELDS (...) */

enum msg_section_kind {
	MSG_SECTION_ALL,               /* BODY[] or BODY[1.2]: the whole message or the part */
	MSG_SECTION_HEADER,            /* [HEADER], [1.2.HEADER] */
	MSG_SECTION_HEADER_FIELDS,     /* [HEADER.FIELDS (A B)] */
	MSG_SECTION_HEADER_FIELDS_NOT, /* [HEADER.FIELDS.NOT (A B)] */
	MSG_SECTION_TEXT,              /* [TEXT], [1.2.TEXT] */
	MSG_SECTION_MIME,              /* [1.2.MIME] (needs a part number) */
};

struct msg_section {
	enum msg_section_kind kind;
	unsigned npath;
	uint32_t path[MSG_SECTION_MAX_PATH]; /* part numbers, each >= 1 */
	unsigned nfields;
	char *fields[MSG_SECTION_MAX_FIELDS]; /* owned; free with msg_section_clear */
};

/* Parse the text between BODY[ and ] ("", "1.2", "1.2.MIME", "HEADER.FIELDS (FROM TO)", ...).
 * Field names are atoms or quoted strings, matched case-insensitively later. Returns 0 or
 * -EINVAL (the IMAP BAD case). On success call msg_section_clear when done. */
int msg_section_parse(const char *spec, size_t len, struct msg_section *sec_r);
void msg_section_clear(struct msg_section *sec);

/* A byte range of the message: offsets in the source (physical) and in the CRLF form. */
struct msg_range {
	uint64_t phys_off, phys_size; /* in the source bytes */
	uint64_t off, size;           /* in the CRLF form: what IMAP counts and sends */
};

/* Resolve SEC to the range to send. For HEADER.FIELDS[.NOT] this is the header block the
 * fields are taken from (use msg_section_fields to build the answer). Returns 0; -ENOENT
 * when the part does not exist (Dovecot answers an empty string then, with OK); -EINVAL when
 * the section makes no sense for that part (HEADER/TEXT of a part that is not
 * message/rfc822, MIME of the top message). */
int msg_section_resolve(const struct msg_parsed *msg, const struct msg_section *sec,
			struct msg_range *range_r);
/* Append to OUT the header fields selected by SEC (HEADER.FIELDS or .NOT) from the header
 * block RANGE of SRC, each field whole (with its continuation lines), CRLF line ends, in
 * message order, followed by the empty line. Returns 0, -ENOBUFS when OUT's bound is
 * reached, -EIO/-errno on read errors. */
int msg_section_fields(const struct msg_source *src, const struct msg_range *range,
		       const struct msg_section *sec, struct buf *out);

/* Reading a range in CRLF form (bounded memory: one MSG_READ_CHUNK buffer). */
struct msg_reader;
enum msg_reader_flags {
	MSG_READER_NUL_TO_80 = 1 << 0, /* NUL -> 0x80 (non-BINARY FETCH cannot send NUL) */
};
/* Open a reader on RANGE of SRC, positioned at CRLF offset SKIP within the range (partial
 * FETCH <skip.count>; SKIP past the end gives an empty reader). */
int msg_reader_open(const struct msg_source *src, const struct msg_range *range, uint64_t skip,
		    unsigned flags, struct msg_reader **reader_r);
/* Read up to LEN octets. Returns the count, 0 at the end, or -errno. */
ssize_t msg_reader_read(struct msg_reader *reader, void *dst, size_t len);
void msg_reader_free(struct msg_reader **readerp);

/* ---------------------------------------------------------------------------------------- */
/* BINARY (RFC 3516): transfer-decoded content of a single part                              */

/* Open a reader of the decoded body of the part PATH[0..npath) (npath 0: the top message's
 * body; a multipart or message/rfc822 part gives its body as it is). Returns 0, -ENOENT
 * (no such part), -EOPNOTSUPP (unknown Content-Transfer-Encoding: IMAP [UNKNOWN-CTE]).
 * Corrupt data makes msg_reader_read return -EBADMSG (IMAP "NO [PARSE]") where Dovecot's
 * decoders fail: base64 with a character outside the alphabet or data after '=' padding;
 * quoted-printable with '=' not followed by two hex digits or a line end (also at the very
 * end of the part), a CR without LF, or more than 76 octets of white space in a line. */
int msg_binary_open(const struct msg_source *src, const struct msg_parsed *msg,
		    const uint32_t *path, unsigned npath, struct msg_reader **reader_r);
/* BINARY.SIZE: decode the part and count. Same errors, plus -EBADMSG for corrupt data. */
int msg_binary_size(const struct msg_source *src, const struct msg_parsed *msg,
		    const uint32_t *path, unsigned npath, uint64_t *size_r);

/* ---------------------------------------------------------------------------------------- */
/* Header fields (SEARCH HEADER, SORT) and decoded text (SEARCH BODY/TEXT)                   */

/* Append to OUT the unfolded value (CR/LF of folding removed, leading white space dropped) of
 * the INDEX-th (0-based) field NAME in the top message's header. DECODE: RFC 2047 encoded
 * words decoded and the result converted to UTF-8. Returns 0, -ENOENT (fewer fields),
 * -ENOBUFS, -errno. */
int msg_header_get(const struct msg_source *src, const struct msg_parsed *msg, const char *name,
		   unsigned index, bool decode, struct buf *out);

/* Callback for msg_text_foreach: LEN octets of UTF-8. Return 0 to go on, non-zero to stop
 * (that value is returned by msg_text_foreach). */
typedef int msg_text_cb(void *ctx, const char *utf8, size_t len);
enum msg_text_what {
	MSG_TEXT_HEADERS = 1 << 0, /* every header field of every message, encoded words decoded */
	MSG_TEXT_BODIES = 1 << 1,  /* every text leaf part, decoded to UTF-8 */
};
/* Stream the message's searchable text as UTF-8, in bounded chunks: transfer encodings
 * (base64, quoted-printable) are undone and each part's charset is converted with iconv
 * (unknown charsets and undecodable octets become U+FFFD). Returns 0, the callback's stop
 * value, -ENOMEM or -errno. */
int msg_text_foreach(const struct msg_source *src, const struct msg_parsed *msg, unsigned what,
		     msg_text_cb *cb, void *ctx);
/* Decode RFC 2047 encoded words in S to UTF-8 (other octets are taken as UTF-8 when valid,
 * else as ISO-8859-1), appending to OUT. Returns 0 or -ENOBUFS/-ENOMEM. */
int msg_decode_words(const char *s, size_t len, struct buf *out);

/* ---------------------------------------------------------------------------------------- */
/* Cache                                                                                     */

#define MSG_PARSE_CACHE_VERSION 3
/* Append a self-contained blob of MSG (part tree, strings, ENVELOPE/BODY/BODYSTRUCTURE) to OUT.
 * Little-endian, versioned, checksummed. Returns 0, -ENOBUFS, -ENOMEM. */
int msg_parse_serialize(const struct msg_parsed *msg, struct buf *out);
/* Rebuild a msg_parsed from a blob. Every offset, index, count and string is checked against
 * the blob: a corrupt, truncated, foreign-version or mismatched (msg size != EXPECT_SIZE when
 * EXPECT_SIZE is not 0) blob gives -EBADMSG and no result, never a trusted bad value.
 * Returns 0, -EBADMSG or -ENOMEM. */
int msg_parse_deserialize(const void *data, size_t len, uint64_t expect_size,
			  struct msg_parsed **msg_r);

#endif
