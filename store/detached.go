package store

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ostree-upload/ostree-upload/store/object"
)

// CommitObject returns the bytes of a commit object of r, which signatures
// cover.
func (r *Repo) CommitObject(ctx context.Context, sum object.Checksum) ([]byte, error) {
	return r.loadMeta(ctx, object.Name{Sum: sum, Type: object.Commit})
}

// WriteCommitMeta replaces a commit's detached metadata in r, durably: a
// reader sees the old file or the new one.
func (r *Repo) WriteCommitMeta(sum object.Checksum, meta []byte) error {
	if err := object.CheckCommitMeta(meta); err != nil {
		return err
	}
	return writeFileAtomic(r.ObjectPath(object.Name{Sum: sum, Type: object.CommitMeta}), meta, 0o644)
}

// RemoveCommitMeta deletes a commit's detached metadata from r, durably.
func (r *Repo) RemoveCommitMeta(sum object.Checksum) error {
	path := r.ObjectPath(object.Name{Sum: sum, Type: object.CommitMeta})
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove detached metadata of %s: %w", sum, err)
	}
	return syncDir(filepath.Dir(path))
}

// SignSummaryEd25519 adds each key's signature of r's summary file to its
// summary.sig (made if missing), as libostree's ed25519 signer does.
func (r *Repo) SignSummaryEd25519(keys []ed25519.PrivateKey) error {
	return r.signSummary(func(old, summary []byte) ([]byte, error) { return object.SignEd25519(old, summary, keys) })
}

// signSummary replaces r's summary.sig with what sign makes of the current
// one (nil if missing) and the summary's bytes.
func (r *Repo) signSummary(sign func(old, summary []byte) ([]byte, error)) error {
	summary, err := readFileCapped(filepath.Join(r.path, "summary"), object.MaxMetadataSize)
	if err != nil {
		return fmt.Errorf("sign summary: %w", err)
	}
	sigPath := filepath.Join(r.path, "summary.sig")
	old, err := readFileCapped(sigPath, object.MaxCommitMetaSize)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sign summary: %w", err)
	}
	signed, err := sign(old, summary)
	if err != nil {
		return fmt.Errorf("sign summary: %w", err)
	}
	return writeFileAtomic(sigPath, signed, 0o644)
}

func readFileCapped(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("larger than %d bytes", limit)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it,
// renames it over path and syncs the directory.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, TempPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	err = errors.Join(err, f.Chmod(mode), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}
