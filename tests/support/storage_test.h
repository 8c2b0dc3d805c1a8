/* storage_test — helpers for the storage room's tests: temporary stores, files written
 * behind the store's back, waiting on the loop with a deadline, reading whole messages. */
#ifndef MK_STORAGE_TEST_H
#define MK_STORAGE_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "storage.h"

/* The back-end under test: MK_STORE_FORMAT=mbox in the environment (ctest registers each
 * back-end-independent storage test twice, NAME and NAME_mbox) selects mbox, anything else
 * Maildir. */
enum st_format {
	ST_MAILDIR,
	ST_MBOX,
};
enum st_format st_format(void);
/* Skip the running test (cmocka SKIPPED) unless the back-end under test is FORMAT: for the
 * assertions about one back-end's files (Maildir file names, the mbox file's headers). */
void st_only(enum st_format format);
/* Open the store whose user root is ROOT with the back-end under test: Maildir through
 * store_open_path, mbox through store_open with "mail_format = mbox", mail_root = the parent
 * of ROOT + "/%u" and the user = ROOT's last component (INBOX is then the file ROOT/inbox).
 * Returns what the store returns. */
int st_store_open(uv_loop_t *loop, const char *root, struct store **store_r);
/* The mbox file of FOLDER ("INBOX" = ROOT/inbox, "a.b" = ROOT/a/b) into out. */
void st_mbox_path(const char *root, const char *folder, char *out, size_t size);

/* An MTA delivering DATA (any line ends) into FOLDER behind the store's back, the way the
 * back-end under test expects it: Maildir = a new file in new/ (tmp/ then rename; the name
 * is unique); mbox = appended to the folder's file under dotlock + fcntl as Debian's MTAs
 * do (st_mbox_lock), as "From MAILER-DAEMON <date>" + the message with LF line ends and
 * "From " lines quoted as ">From " + an empty line, then fsync. */
void st_deliver(const char *root, const char *folder, const char *data);

/* The mbox locks of PATH as Debian's MTAs, procmail and mutt take them: first the dotlock
 * PATH.lock (made with link(2) from a unique name, holding our PID; a lock whose PID is
 * dead on this host, or that is older than 5 minutes, is stale and removed: liblockfile's
 * rules), waiting for its removal on inotify, then a write fcntl lock on the whole file
 * (F_SETLKW bounded by a timer). Both waits together are bounded by TIMEOUT_MS. Returns the
 * open fd (O_RDWR, created 0600 if missing) or -ETIMEDOUT / -errno. */
int st_mbox_lock(const char *path, unsigned timeout_ms);
/* Release both locks and close FD. */
void st_mbox_unlock(const char *path, int fd);

/* mutt editing an mbox file under the locks: message N (0-based, in file order) gets the
 * header lines Status: STATUS and X-Status: XSTATUS (each replaced, or added before the
 * header's end; an empty string removes the line), or is removed (st_mbox_remove); the file
 * is rewritten in place from the first changed byte, truncated and fsynced, as mutt does. */
void st_mbox_set_status(const char *path, unsigned n, const char *status, const char *xstatus);
void st_mbox_remove(const char *path, unsigned n);
/* The mbox back-end brings the file up to date "soon after" a change (its UID list is the
 * commit point; storage/README.md "mbox"): run LOOP until PRED(PATH, ARG) holds, looking
 * again at every change in PATH's directory (a uv_fs_event), at most TIMEOUT_MS. Returns
 * the last PRED. */
bool st_mbox_wait(uv_loop_t *loop, const char *path, bool (*pred)(const char *path, void *arg),
		  void *arg, unsigned timeout_ms);
/* Predicates for it: the file holds *(unsigned *)ARG messages; message n's header field has
 * the value (struct st_mbox_field). */
bool st_mbox_has_count(const char *path, void *arg);
struct st_mbox_field {
	unsigned n;
	const char *field, *value; /* value NULL: the field is absent */
};
bool st_mbox_has_field(const char *path, void *arg);

/* Messages in an mbox file ("From " lines at the start of the file or after an empty
 * line). */
unsigned st_mbox_count(const char *path);
/* The value of header FIELD of message N of an mbox file (the first occurrence, unfolded
 * not needed: our fields are one line) into out; false if the message has none. */
bool st_mbox_header(const char *path, unsigned n, const char *field, char *out, size_t size);

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
