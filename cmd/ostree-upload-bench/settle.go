package main

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// deletionAge is how long settle lets the bench's deletions age before a
// measurement. On ext4 without a journal, a new inode skips those freed in
// about the last minute (longer while their inode table block is not yet
// written back, hence the sync first), and each allocation checks every
// freed one it passes: creating 100,000 small files right after 400,000
// were deleted took about four times the CPU it took with no recent
// deletion. A measurement that followed a large deletion would pay for it,
// and the next one not.
const deletionAge = 65 * time.Second

// deleted records that the bench (or a daemon it ran) has just deleted
// many files.
func (b *bench) deleted() { b.lastDeletion = time.Now() }

// settle puts each measurement of the tiny-file scenarios (the push, the
// floor, the pull) on the same footing: the build repository they all
// read is in the page cache, as on the machine that just built it, and
// the file system carries no recent deletion (see deletionAge). Without
// it, the first measurement read the repository from disk for the others,
// and the later ones created their files after the deletion of the one
// before.
func (b *bench) settle(ctx context.Context, repo string) error {
	start := time.Now()
	files, err := readAll(ctx, repo)
	if err != nil {
		return err
	}
	read := time.Since(start)
	syscall.Sync()
	wait := time.Until(b.lastDeletion.Add(deletionAge))
	slog.Info("settling before the measurement", "read_files", files, "read_seconds", read.Round(time.Millisecond).Seconds(),
		"wait_seconds", max(wait, 0).Round(time.Second).Seconds())
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// readAll reads every regular file under root, a few directories at once,
// and returns how many it read.
func readAll(ctx context.Context, root string) (int, error) {
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	var files atomic.Int64
	err = parallel(ctx, 2*runtime.NumCPU(), len(dirs), func(i int) error {
		entries, err := os.ReadDir(dirs[i])
		if err != nil {
			return err
		}
		for _, e := range entries {
			if !e.Type().IsRegular() {
				continue
			}
			if err := readFile(filepath.Join(dirs[i], e.Name())); err != nil {
				return err
			}
			files.Add(1)
		}
		return nil
	})
	return int(files.Load()), err
}

func readFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}
