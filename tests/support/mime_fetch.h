/* mime_fetch — test support for the MIME parser: a small FETCH response builder over the
 * msg_parse API (what the IMAP FETCH code does), and file helpers for the fixtures. */
#ifndef MK_TEST_MIME_FETCH_H
#define MK_TEST_MIME_FETCH_H

#include <stddef.h>

#include "buf.h"
#include "msg_parse.h"

/* Read a whole file (malloc'd, NUL-terminated for convenience). Returns 0 or -errno. */
int mime_test_read_file(const char *path, char **data_r, size_t *len_r);
/* The fixture folder: $MK_FIXTURES/mime, else the source tree's ../shared/fixtures/mime. */
const char *mime_test_fixture_dir(void);

/* Build the untagged "* 1 FETCH (...)\r\n" response for the item list ITEMS (the text inside
 * the parentheses of a FETCH command, e.g. "RFC822.SIZE BODY.PEEK[HEADER] BINARY.SIZE[1]")
 * as Dovecot answers it. Returns 0 on success with the status "OK"; on a failing item
 * returns the item's -errno after building what Dovecot sends before its NO (the other
 * items' data, or "* 1 FETCH (UID 1)\r\n" when nothing else was asked). */
int mime_test_fetch(const struct msg_source *src, const struct msg_parsed *msg, const char *items,
		    struct buf *out);

#endif
