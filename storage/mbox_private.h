/* mbox_private — the mbox back-end's pieces shared inside the storage room (mbox*.c and the
 * store's layout hooks). Protocols never include this; they see storage.h only.
 *
 * Layout (storage/README.md, "mbox"): folder "a.b" is the file ROOT/a/b (hierarchy as
 * directories, the wire separator stays '.'); INBOX is the spool named by `mbox_inbox`
 * (%u expanded) or ROOT/inbox. Everything of ours lives under ROOT/.mailkeep/: subscriptions,
 * mailkeep-defaults, and per folder ROOT/.mailkeep/box/<wire name>/ (UID list, index,
 * keywords, cache, POP3 record, spool of appends not yet in the file, rewrite backup,
 * special-use). Opening never writes the mbox file itself.
 */
#ifndef MK_MBOX_PRIVATE_H
#define MK_MBOX_PRIVATE_H

#include "mailbox_private.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MBOX_STATE_DIR "/.mailkeep"

/* The store's mbox settings (immutable while the store lives: safe on worker threads). */
struct mbox_opts {
	char *inbox;              /* INBOX file path, NULL = ROOT/inbox */
	unsigned lock_timeout_ms; /* longest wait for the mbox locks */
	bool mboxrd;              /* mboxrd quoting (else mboxo: bodies served as stored) */
};

/* NULL for a Maildir store. */
const struct mbox_opts *store_mbox_opts(const struct store *store);

/* Layout (mbox_store.c). NORM is a normalized wire name. */
int mbox_store_file_path(const struct store *store, const char *norm, char *buf, size_t size);
int mbox_store_state_path(const struct store *store, const char *norm, char *buf, size_t size);
int mbox_store_init(struct store *store);
/* Every selectable folder below the root (not INBOX), as wire names, via ADD. */
int mbox_store_list(struct store *store, int (*add)(void *ctx, const char *name), void *ctx);
bool mbox_store_exists(const struct store *store, const char *norm);
/* Create the empty folder NORM (its superior levels become directories). -EEXIST, -EPERM
 * (a superior level is a folder file: mbox folders hold messages or folders, not both). */
int mbox_store_create(struct store *store, const char *norm, unsigned special_use);
int mbox_store_delete(struct store *store, const char *norm);
/* Rename one folder's file and state directory (children are renamed by the caller). */
int mbox_store_rename_one(struct store *store, const char *from, const char *to);

/* The back-end (mbox.c). */
extern const struct mailbox_backend_ops mbox_backend_ops;
/* The folder was renamed: recompute its file path. */
void mbox_backend_renamed(struct mailbox *mbox);

#endif
