#include <stdlib.h>
#include <string.h>
#include "shim.h"

/* GIO must not load gvfs or D-Bus modules: decide before the first GLib call,
 * as the ostree CLI does. Runs when the program is loaded. */
__attribute__((constructor)) static void
ou_init_env (void)
{
  setenv ("GIO_USE_VFS", "local", 0);
}

OstreeRepo *
ou_repo_open (const char *path, GError **error)
{
  g_autoptr(GFile) file = g_file_new_for_path (path);
  g_autoptr(OstreeRepo) repo = ostree_repo_new (file);
  if (!ostree_repo_open (repo, NULL, error))
    return NULL;
  return g_steal_pointer (&repo);
}

void
ou_unref (gpointer obj)
{
  g_object_unref (obj);
}

char **
ou_list_refs (OstreeRepo *repo, GError **error)
{
  g_autoptr(GHashTable) refs = NULL;
  if (!ostree_repo_list_refs (repo, NULL, &refs, NULL, error))
    return NULL;
  GPtrArray *out = g_ptr_array_new ();
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init (&it, refs);
  while (g_hash_table_iter_next (&it, &k, &v))
    {
      g_ptr_array_add (out, g_strdup (k));
      g_ptr_array_add (out, g_strdup (v));
    }
  g_ptr_array_add (out, NULL);
  return (char **) g_ptr_array_free (out, FALSE);
}

char **
ou_list_static_deltas (OstreeRepo *repo, GError **error)
{
  g_autoptr(GPtrArray) names = NULL;
  if (!ostree_repo_list_static_delta_names (repo, &names, NULL, error))
    return NULL;
  GPtrArray *out = g_ptr_array_new ();
  for (guint i = 0; i < names->len; i++)
    g_ptr_array_add (out, g_strdup (names->pdata[i]));
  g_ptr_array_add (out, NULL);
  return (char **) g_ptr_array_free (out, FALSE);
}

static void
copy_variant (GVariant *v, guint8 **out_data, gsize *out_len)
{
  gsize n = g_variant_get_size (v);
  *out_data = g_malloc (n > 0 ? n : 1);
  if (n > 0)
    memcpy (*out_data, g_variant_get_data (v), n);
  *out_len = n;
}

gboolean
ou_load_meta (OstreeRepo *repo, OstreeObjectType type, const char *csum,
              guint8 **out_data, gsize *out_len, GError **error)
{
  g_autoptr(GVariant) v = NULL;
  if (!ostree_repo_load_variant (repo, type, csum, &v, error))
    return FALSE;
  copy_variant (v, out_data, out_len);
  return TRUE;
}

gboolean
ou_load_commit (OstreeRepo *repo, const char *csum, guint8 **out_data,
                gsize *out_len, gboolean *out_partial, GError **error)
{
  g_autoptr(GVariant) v = NULL;
  OstreeRepoCommitState state = 0;
  if (!ostree_repo_load_commit (repo, csum, &v, &state, error))
    return FALSE;
  copy_variant (v, out_data, out_len);
  *out_partial = (state & OSTREE_REPO_COMMIT_STATE_PARTIAL) != 0;
  return TRUE;
}

gboolean
ou_read_commitmeta (OstreeRepo *repo, const char *csum, guint8 **out_data,
                    gsize *out_len, GError **error)
{
  g_autoptr(GVariant) v = NULL;
  *out_data = NULL;
  *out_len = 0;
  if (!ostree_repo_read_commit_detached_metadata (repo, csum, &v, NULL, error))
    return FALSE;
  if (v != NULL)
    copy_variant (v, out_data, out_len);
  return TRUE;
}

gboolean
ou_gpg_sign_data (OstreeRepo *repo, const guint8 *data, gsize len,
                  const guint8 *old, gsize old_len, const char **key_ids,
                  const char *homedir, guint8 **out_data, gsize *out_len,
                  GError **error)
{
  g_autoptr(GBytes) in = g_bytes_new (data, len);
  g_autoptr(GBytes) prev = old != NULL ? g_bytes_new (old, old_len) : NULL;
  g_autoptr(GBytes) out = NULL;
  if (!ostree_repo_gpg_sign_data (repo, in, prev, key_ids, homedir, &out, NULL, error))
    return FALSE;
  gsize n = 0;
  const guint8 *p = g_bytes_get_data (out, &n);
  *out_data = g_memdup2 (p, n);
  *out_len = n;
  return TRUE;
}

gboolean
ou_gpg_verify_data (OstreeRepo *repo, const guint8 *data, gsize len,
                    const guint8 *sigs, gsize sigs_len, const char *keyringdir,
                    const char *keyring, GError **error)
{
  g_autoptr(GBytes) in = g_bytes_new (data, len);
  g_autoptr(GBytes) signatures = g_bytes_new (sigs, sigs_len);
  g_autoptr(GFile) dir = keyringdir != NULL ? g_file_new_for_path (keyringdir) : NULL;
  g_autoptr(GFile) extra = keyring != NULL ? g_file_new_for_path (keyring) : NULL;
  g_autoptr(OstreeGpgVerifyResult) result =
    ostree_repo_gpg_verify_data (repo, NULL, in, signatures, dir, extra, NULL, error);
  if (result == NULL)
    return FALSE;
  return ostree_gpg_verify_result_require_valid_signature (result, error);
}

gboolean
ou_write_commitmeta (OstreeRepo *repo, const char *csum, const guint8 *data,
                     gsize len, GError **error)
{
  g_autoptr(GVariant) v = NULL;
  if (len > 0)
    {
      g_autoptr(GBytes) b = g_bytes_new (data, len);
      v = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE ("a{sv}"), b, FALSE));
    }
  return ostree_repo_write_commit_detached_metadata (repo, csum, v, NULL, error);
}

GInputStream *
ou_open_filez (OstreeRepo *repo, const char *csum, GError **error)
{
  g_autoptr(GInputStream) content = NULL;
  g_autoptr(GFileInfo) info = NULL;
  g_autoptr(GVariant) xattrs = NULL;
  GInputStream *out = NULL;
  if (!ostree_repo_load_file (repo, csum, &content, &info, &xattrs, NULL, error))
    return NULL;
  if (!ostree_raw_file_to_archive_z2_stream (content, info, xattrs, &out, NULL, error))
    return NULL;
  return out;
}

gssize
ou_stream_read (GInputStream *stream, void *buf, gsize len, GError **error)
{
  return g_input_stream_read (stream, buf, len, NULL, error);
}

gboolean
ou_prune (OstreeRepo *repo, int depth, const char *const *keep_commits,
          const char *const *keep_csums, const int *keep_types, gsize n_keep,
          gboolean no_prune, gint *out_total, gint *out_pruned,
          guint64 *out_bytes, GError **error)
{
  /* Exclusive before the refs are read, as ostree_repo_prune does: a commit
   * another process writes between the walk and the prune would go. */
  g_autoptr(OstreeRepoAutoLock) lock
      = ostree_repo_auto_lock_push (repo, OSTREE_REPO_LOCK_EXCLUSIVE, NULL, error);
  if (!lock)
    return FALSE;
  g_autoptr(GHashTable) reachable = ostree_repo_traverse_new_reachable ();
  g_autoptr(GHashTable) refs = NULL;
  if (!ostree_repo_list_refs_ext (repo, NULL, &refs, OSTREE_REPO_LIST_REFS_EXT_NONE, NULL, error))
    return FALSE;
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init (&it, refs);
  while (g_hash_table_iter_next (&it, &k, &v))
    if (!ostree_repo_traverse_commit_union (repo, v, depth, reachable, NULL, error))
      return FALSE;
  g_autoptr(GHashTable) crefs = NULL;
  if (!ostree_repo_list_collection_refs (repo, NULL, &crefs, OSTREE_REPO_LIST_REFS_EXT_NONE, NULL, error))
    return FALSE;
  g_hash_table_iter_init (&it, crefs);
  while (g_hash_table_iter_next (&it, &k, &v))
    if (!ostree_repo_traverse_commit_union (repo, v, depth, reachable, NULL, error))
      return FALSE;
  for (const char *const *c = keep_commits; c && *c; c++)
    if (!ostree_repo_traverse_commit_union (repo, *c, 0, reachable, NULL, error))
      return FALSE;
  for (gsize i = 0; i < n_keep; i++)
    g_hash_table_add (reachable, g_variant_ref_sink (ostree_object_name_serialize (keep_csums[i], keep_types[i])));
  OstreeRepoPruneOptions opts = {
    .flags = OSTREE_REPO_PRUNE_FLAGS_REFS_ONLY | (no_prune ? OSTREE_REPO_PRUNE_FLAGS_NO_PRUNE : 0),
    .reachable = reachable,
  };
  return ostree_repo_prune_from_reachable (repo, &opts, out_total, out_pruned, out_bytes, NULL, error);
}
