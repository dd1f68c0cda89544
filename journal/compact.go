package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// compactMin is the file size up to which the journal is never compacted.
const compactMin = 64 << 20

// compactTxSize bounds the bytes of keys and values one transaction of a
// compaction copies.
const compactTxSize = 16 << 20

// Compaction is what Open did to shrink the journal's file.
type Compaction struct {
	Before, After int64         // file sizes; 0 if Open did not compact
	Took          time.Duration // time spent copying
	Err           error         // why a compaction was given up (the old file stays in use)
}

// Compaction reports what Open did to shrink the journal's file.
func (j *Journal) Compaction() Compaction { return j.compaction }

// compactIfSparse shrinks the journal's file when it is over compactMin and
// more than half of it is free (bbolt reuses freed pages but never gives
// them back): the live data are copied into a new file beside it, which is
// made durable, renamed over the old one (the directory is synced too), and
// used from then on. It runs in Open, whose lock keeps every other user out;
// the new file is locked before the old one is let go, and a process that
// waited on the old file's lock notices the rename (openDB). A copy that
// fails (a full disk, say) leaves the old file in use and is reported by
// Compaction; an error is returned only once the old file is gone.
func (j *Journal) compactIfSparse(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Size() <= compactMin {
		return nil
	}
	var used int64
	if err := j.db.View(func(tx *bolt.Tx) error {
		used = tx.Size()
		return nil
	}); err != nil {
		return err
	}
	st := j.db.Stats()
	free := int64(st.FreePageN+st.PendingPageN)*int64(j.db.Info().PageSize) + max(0, fi.Size()-used)
	if free <= fi.Size()/2 {
		return nil
	}
	start := time.Now()
	tmp := path + ".compact"
	dst, err := j.compactInto(tmp)
	if err != nil {
		j.compaction = Compaction{Before: fi.Size(), Err: err}
		return nil
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = dst.Close()
		_ = os.Remove(tmp)
		j.compaction = Compaction{Before: fi.Size(), Err: err}
		return nil
	}
	old := j.db
	j.db = dst
	if err := syncDir(filepath.Dir(path)); err != nil {
		_ = old.Close()
		return fmt.Errorf("compact: %w", err)
	}
	if err := old.Close(); err != nil {
		return fmt.Errorf("compact: close the old file: %w", err)
	}
	after, err := os.Stat(path)
	if err != nil {
		return err
	}
	j.compaction = Compaction{Before: fi.Size(), After: after.Size(), Took: time.Since(start)}
	return nil
}

// compactInto copies the journal into a new, locked bbolt file at tmp and
// makes it durable.
func (j *Journal) compactInto(tmp string) (*bolt.DB, error) {
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Nanosecond})
	if err != nil {
		return nil, err
	}
	err = bolt.Compact(dst, j.db, compactTxSize)
	if err == nil {
		err = dst.Sync()
	}
	if err != nil {
		_ = dst.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("compact: %w", err)
	}
	dst.MaxBatchDelay = j.db.MaxBatchDelay
	return dst, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
