/* Small C helpers for the store package: calls that are variadic, macros or
 * need GLib iteration, so the Go side only ever sees plain C types. */
#ifndef OSTREE_UPLOAD_SHIM_H
#define OSTREE_UPLOAD_SHIM_H

#include <ostree.h>

OstreeRepo *ou_repo_open (const char *path, GError **error);
void ou_unref (gpointer obj);

/* Returns a NULL-terminated vector "ref0, csum0, ref1, csum1, ...";
 * free with g_strfreev. */
char **ou_list_refs (OstreeRepo *repo, GError **error);

/* Returns the names of the repository's static deltas ("FROM-TO", or "TO"
 * for a delta from nothing), NULL-terminated; free with g_strfreev. */
char **ou_list_static_deltas (OstreeRepo *repo, GError **error);

/* Copies the serialised bytes of a metadata object into a g_malloc'd buffer. */
gboolean ou_load_meta (OstreeRepo *repo, OstreeObjectType type, const char *csum,
                       guint8 **out_data, gsize *out_len, GError **error);

/* Like ou_load_meta for a commit, also returning whether it is partial. */
gboolean ou_load_commit (OstreeRepo *repo, const char *csum, guint8 **out_data,
                         gsize *out_len, gboolean *out_partial, GError **error);

/* Reads detached metadata; *out_data is NULL when the commit has none. */
gboolean ou_read_commitmeta (OstreeRepo *repo, const char *csum, guint8 **out_data,
                             gsize *out_len, GError **error);

/* Appends a GPG signature of data by each key to the a{sv} metadata old
 * (NULL: none); the result goes to a g_malloc'd buffer. */
gboolean ou_gpg_sign_data (OstreeRepo *repo, const guint8 *data, gsize len,
                           const guint8 *old, gsize old_len, const char **key_ids,
                           const char *homedir, guint8 **out_data, gsize *out_len,
                           GError **error);

/* Checks that sigs (concatenated OpenPGP signatures) hold a valid signature
 * of data by a key of the keyrings in keyringdir (NULL: libostree's
 * system-wide ones) or of the keyring file keyring (NULL: none). */
gboolean ou_gpg_verify_data (OstreeRepo *repo, const guint8 *data, gsize len,
                             const guint8 *sigs, gsize sigs_len, const char *keyringdir,
                             const char *keyring, GError **error);

/* Writes a commit's detached metadata (data, len: an a{sv}; len 0: none),
 * into the open transaction's staging if there is one. */
gboolean ou_write_commitmeta (OstreeRepo *repo, const char *csum, const guint8 *data,
                              gsize len, GError **error);

/* Opens the archive form of file object csum (libostree's header, then the
 * content as raw deflate) of a repository of any mode, made as it is read. */
GInputStream *ou_open_filez (OstreeRepo *repo, const char *csum, GError **error);

/* Reads up to len bytes; returns the count, 0 at the end, -1 on error. */
gssize ou_stream_read (GInputStream *stream, void *buf, gsize len, GError **error);

/* Prunes what no ref (nor collection ref) reaches within depth parents
 * (-1: all), nor the commits keep_commits (NULL-terminated) reach whole, nor
 * the objects keep_objects ("csum", type, ... as parallel arrays of n);
 * with no_prune, only counts. libostree's own prune also drops static
 * deltas whose target commit it finds gone. */
gboolean ou_prune (OstreeRepo *repo, int depth, const char *const *keep_commits,
                   const char *const *keep_csums, const int *keep_types, gsize n_keep,
                   gboolean no_prune, gint *out_total, gint *out_pruned,
                   guint64 *out_bytes, GError **error);

#endif
