package store

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ostree-upload/ostree-upload/store/object"
	"golang.org/x/sys/unix"
)

// Adopt moves the verified file at path into r as object n: the file is
// made read-only and synced, renamed into objects/, and the directory
// synced, so a nil return means the object is durable. path must be on r's
// filesystem. Adopt is for a spool repository, never for production: it
// trusts the caller to have verified the bytes.
func (r *Repo) Adopt(ctx context.Context, n object.Name, path string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dst := r.ObjectPath(n)
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("adopt %s: %w", n, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("adopt %s: %w", n, err)
	}
	err = errors.Join(f.Chmod(0o444), f.Sync(), f.Close())
	if err != nil {
		return fmt.Errorf("adopt %s: %w", n, err)
	}
	if err := os.Rename(path, dst); err != nil {
		return fmt.Errorf("adopt %s: %w", n, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("adopt %s: %w", n, err)
	}
	return nil
}

// Staged is a verified object in a temporary file of a spool repository,
// not yet in its objects/.
type Staged struct {
	Info object.Info
	repo *Repo
	tmp  string // relative to the repository's directory
}

// Stage reads an object of size bytes from src and verifies it strictly
// while writing it to a temporary file of r. It returns a *CorruptError for
// invalid bytes and any other error for a failure of src, of the filesystem
// or of opts.Work; either way nothing is kept. Exactly size bytes are read
// from src unless it fails. A metadata object is written out first and
// checked from the file in one step of opts.Work, so that its bytes are held
// in memory only while the step runs. For spool repositories only.
func (r *Repo) Stage(ctx context.Context, n object.Name, src io.Reader, size int64, opts object.VerifyOptions) (*Staged, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit := object.MaxSize(n.Type); limit > 0 && size > limit {
		return nil, &object.CorruptError{Name: n, Reason: fmt.Sprintf("%d bytes, more than %d", size, limit)}
	}
	// The temporary file lives beside its final name: the rename stays in
	// one directory, and the inode is allocated where it will stay.
	dir := path.Dir(n.RelPath())
	fd, tmp, err := r.createStaged(dir, n)
	if errors.Is(err, unix.ENOENT) {
		if err = os.MkdirAll(r.abs(dir), 0o755); err == nil {
			fd, tmp, err = r.createStaged(dir, n)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", n, err)
	}
	st := &Staged{repo: r, tmp: tmp}
	var info object.Info
	if n.Type == object.File {
		w := &writeErr{w: fdWriter(fd)}
		info, err = object.VerifyWith(n, io.TeeReader(io.LimitReader(src, size), w), opts)
		switch {
		case w.err != nil:
			err = fmt.Errorf("stage %s: %w", n, w.err)
		case err == nil && info.Size != size:
			err = fmt.Errorf("stage %s: %w", n, io.ErrUnexpectedEOF)
		}
	} else {
		var copied int64
		copied, err = io.Copy(fdWriter(fd), io.LimitReader(src, size))
		switch {
		case err != nil:
			err = fmt.Errorf("stage %s: %w", n, err)
		case copied != size:
			err = fmt.Errorf("stage %s: %w", n, io.ErrUnexpectedEOF)
		default:
			info, err = object.VerifyFile(n, r.abs(st.tmp), opts)
		}
	}
	if err == nil && !createdReadOnly() {
		if err = unix.Fchmod(fd, 0o444); err != nil {
			err = fmt.Errorf("stage %s: chmod: %w", n, err)
		}
	}
	if cerr := unix.Close(fd); cerr != nil && err == nil {
		err = fmt.Errorf("stage %s: close: %w", n, cerr)
	}
	if err != nil {
		st.Discard()
		return nil, err
	}
	st.Info = info
	return st, nil
}

// createStaged creates, exclusively, a temporary file for object n in dir
// (relative to r's directory), named as TempPrefix says, read-only for
// everyone when the umask allows it (see createdReadOnly), and returns its
// descriptor and its path relative to r's directory. Raw system calls: an
// *os.File would cost four more per object (its poller's), and a stage of
// a million small files makes a million of them.
func (r *Repo) createStaged(dir string, n object.Name) (int, string, error) {
	prefix := dir + "/" + TempPrefix + n.String() + "-"
	for range 100 {
		tmp := prefix + strconv.FormatUint(stageSeq.Add(1), 36)
		var fd int
		err := r.at(func(dfd int) (err error) {
			fd, err = unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o444)
			return err
		})
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EEXIST) {
			continue // EEXIST: left by an earlier run of the daemon
		}
		if err != nil {
			return -1, "", &os.PathError{Op: "create", Path: r.abs(tmp), Err: err}
		}
		return fd, tmp, nil
	}
	return -1, "", fmt.Errorf("create a temporary file in %s: %w", r.abs(dir), os.ErrExist)
}

// stageSeq numbers temporary files, from a random start so that those a
// crashed daemon left are rarely met.
var stageSeq = func() *atomic.Uint64 {
	var a atomic.Uint64
	a.Store(rand.Uint64() >> 8)
	return &a
}()

// createdReadOnly reports whether files created with mode 0444 get that
// mode, which the process's umask decides (read once, from
// /proc/self/status): when it clears a read bit, Stage sets the mode
// itself.
var createdReadOnly = sync.OnceValue(func() bool {
	b, err := os.ReadFile("/proc/self/status")
	return err == nil && umaskKeepsRead(string(b))
})

// umaskKeepsRead reports whether the Umask line of a /proc/PID/status
// text clears none of the read bits (false without one).
func umaskKeepsRead(status string) bool {
	for line := range strings.Lines(status) {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			return err == nil && mask&0o444 == 0
		}
	}
	return false
}

// fdWriter writes to a file descriptor, all of each buffer or an error.
type fdWriter int

func (w fdWriter) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := unix.Write(int(w), b[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

// Commit renames the staged object into its repository's objects/. Nothing
// is synced: call the repository's Sync before recording it as durable.
func (st *Staged) Commit() error {
	r, dst := st.repo, st.Info.Name.RelPath()
	// renameat(2) itself: os.Rename first looks the destination up to
	// refuse a directory, a system call more per object of a pack, where
	// Linux refuses to rename a file over a directory anyway (EISDIR).
	err := r.at(func(dfd int) error { return unix.Renameat(dfd, st.tmp, dfd, dst) })
	if err != nil {
		return fmt.Errorf("commit %s: %w", st.Info.Name, &os.LinkError{Op: "rename", Old: r.abs(st.tmp), New: r.abs(dst), Err: err})
	}
	return nil
}

// Discard deletes the staged object's temporary file, if still there.
func (st *Staged) Discard() {
	st.repo.at(func(dfd int) error { return unix.Unlinkat(dfd, st.tmp, 0) })
}

// TempPrefix starts the names of Stage's temporary files, which live in the
// objects/xx/ directory of their object and are named TempPrefix, the
// object's name, "-" and a random part (see StagedName): one left by a
// crash may be verified again and kept, or deleted, while nothing is
// staged.
const TempPrefix = "put-"

// StagedName is the object a file name of Stage's (or StageLink's) names.
func StagedName(file string) (object.Name, bool) {
	rest, ok := strings.CutPrefix(file, TempPrefix)
	if !ok {
		return object.Name{}, false
	}
	name, _, ok := strings.Cut(rest, "-")
	if !ok {
		return object.Name{}, false
	}
	n, err := object.ParseName(name)
	return n, err == nil
}

// AdoptStaged renames a staged file (see StagedName) left by a crash into its
// object's place in r; like Staged.Commit, nothing is synced.
func (r *Repo) AdoptStaged(path string, n object.Name) error {
	// A crash may have come before Stage made the file read-only.
	if err := os.Chmod(path, 0o444); err != nil {
		return fmt.Errorf("adopt %s: %w", n, err)
	}
	if err := os.Rename(path, r.ObjectPath(n)); err != nil {
		return fmt.Errorf("adopt %s: %w", n, err)
	}
	return nil
}

// writeErr passes writes to w and remembers the first failure, so that a
// full disk is not mistaken for a corrupt object.
type writeErr struct {
	w   io.Writer
	err error
}

func (w *writeErr) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.w.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// Sync makes every change to r's filesystem durable (syncfs), among them
// every object staged and committed so far.
func (r *Repo) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// The descriptor libostree keeps open, not one opened per call:
	// syncfs(2) reports the write-back errors seen since that descriptor's
	// last syncfs, and a fresh one would miss those from before its open.
	if err := r.at(unix.Syncfs); err != nil {
		return fmt.Errorf("sync %s: %w", r.path, err)
	}
	return nil
}

// MakeObjectDirs creates the 256 directories of objects/ ahead of use, so
// that the first objects written pay nothing for them.
func (r *Repo) MakeObjectDirs() error {
	for i := 0; i < 256; i++ {
		if err := os.MkdirAll(filepath.Join(r.path, "objects", fmt.Sprintf("%02x", i)), 0o755); err != nil {
			return fmt.Errorf("%s: %w", r.path, err)
		}
	}
	return nil
}

// Remove deletes object n's loose file from r if present. For spool
// repositories only.
func (r *Repo) Remove(n object.Name) error {
	rel := n.RelPath()
	err := r.at(func(dfd int) error { return unix.Unlinkat(dfd, rel, 0) })
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", n, &os.PathError{Op: "remove", Path: r.abs(rel), Err: err})
	}
	return nil
}

func syncDir(dir string) error { return syncFile(dir) }

// syncFile makes the file (or directory) at path durable.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}

// ReadCommitIn reads a commit from the first of repos that has it.
func ReadCommitIn(ctx context.Context, sum object.Checksum, repos ...*Repo) (*object.CommitInfo, error) {
	return layers(repos).ReadCommit(ctx, sum)
}

// maxAncestry bounds how far IsAncestor follows parents.
const maxAncestry = 100000

// IsAncestor reports whether ancestor is descendant or is reachable from it
// through parent links of the commits read returns. A commit read does not
// find (ErrNotFound) ends the search with false.
func IsAncestor(ctx context.Context, ancestor, descendant object.Checksum, read func(context.Context, object.Checksum) (*object.CommitInfo, error)) (bool, error) {
	cur := descendant
	for i := 0; i < maxAncestry; i++ {
		if cur == ancestor {
			return true, nil
		}
		c, err := read(ctx, cur)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if c.Parent == nil {
			return false, nil
		}
		cur = *c.Parent
	}
	return false, nil
}

// StageLink stages object n of the repository from into r by a hard link
// (a copy when the link is refused: another filesystem, or files of
// another user under protected_hardlinks), for AdmitStaged, and verifies
// it with opts like an arriving object: from may have been written by
// anyone. A corrupt object gives a *object.CorruptError; a missing one an
// error matching ErrNotFound.
func (r *Repo) StageLink(ctx context.Context, n object.Name, from *Repo, opts object.VerifyOptions) (*Staged, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	src := from.ObjectPath(n)
	if _, err := os.Lstat(src); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("stage %s from %s: %w", n, from.Path(), ErrNotFound)
	}
	dir := path.Dir(n.RelPath())
	if err := os.MkdirAll(r.abs(dir), 0o755); err != nil {
		return nil, fmt.Errorf("stage %s: %w", n, err)
	}
	st := &Staged{repo: r, tmp: fmt.Sprintf("%s/%s%s-link-%d-%d", dir, TempPrefix, n, os.Getpid(), linkSeq.Add(1))}
	tmp := r.abs(st.tmp)
	err := os.Link(src, tmp)
	if errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EPERM) {
		err = copyFile(src, tmp)
	}
	if err != nil {
		return nil, fmt.Errorf("stage %s from %s: %w", n, from.Path(), err)
	}
	info, err := object.VerifyFile(n, tmp, opts)
	if err != nil {
		st.Discard()
		return nil, err
	}
	st.Info = info
	return st, nil
}

var linkSeq atomic.Int64

// copyFile copies src to a new file dst, read-only, synced.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err = errors.Join(err, out.Sync(), out.Close()); err != nil {
		os.Remove(dst)
	}
	return err
}
