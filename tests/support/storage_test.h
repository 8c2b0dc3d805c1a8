/* storage_test — helpers for the storage room's tests: temporary stores, files written
 * behind the store's back, waiting on the loop with a deadline, reading whole messages. */
#ifndef MK_STORAGE_TEST_H
#define MK_STORAGE_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "storage.h"

/* A fresh directory under $TMPDIR (or /tmp); path is malloc'd. */
char *st_tmpdir(void);
/* rm -rf and free. */
void st_rmdir(char **path_p);
/* Write DATA to DIR/SUB/NAME (an MTA or mutt acting behind the store's back): via a temporary
 * file and rename, as a Maildir writer does. */
void st_write_file(const char *dir, const char *sub, const char *name, const char *data);
/* Number of regular files in DIR/SUB. */
size_t st_count_files(const char *dir, const char *sub);
/* The only file in DIR/SUB whose name starts with PREFIX, into out (name only); false if
 * none or several. */
bool st_find_file(const char *dir, const char *sub, const char *prefix, char *out, size_t size);
/* Run LOOP until *flag is true or TIMEOUT_MS passed (a uv timer as the deadline). Returns
 * the flag. */
bool st_run_until(uv_loop_t *loop, const bool *flag, unsigned timeout_ms);
/* Run the loop until every handle is closed, then close it. */
void st_loop_close(uv_loop_t *loop);
/* The CRLF bytes of message SEQ of VIEW, malloc'd; *len_r its length. NULL if it fails. */
char *st_read_msg(struct view *view, uint32_t seq, size_t *len_r);
/* Append DATA with FLAGS; returns the UID (asserts success). */
uint32_t st_append(struct mailbox *mbox, const char *data, unsigned flags);

/* Records view_sync announcements as text: "E3 " (expunge seq 3), "X5 " (exists 5),
 * "R1 " (recent 1), "F2=S " (seq 2 flags: letters DFRST + keyword indexes). */
struct st_sync_log {
	char text[4096];
};
extern const struct view_sync_handler st_sync_handler;
/* view_sync into LOG (cleared first); returns log->text. */
const char *st_sync(struct view *view, unsigned flags, struct st_sync_log *log);

#endif
