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
	if err := r.replace(n, path); err != nil {
		return fmt.Errorf("adopt %s: %w", n, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("adopt %s: %w", n, err)
	}
	return nil
}

// Staged is a verified object of a spool repository not yet committed:
// in a temporary file, or, for a file object the repository lacked, at its
// own name but held back from every reader (see Repo.settled).
type Staged struct {
	Info    object.Info
	repo    *Repo
	name    object.Name
	tmp     string // relative to the repository's directory
	inPlace bool   // tmp is the object's own name
}

// receiving is the file objects a spool repository is writing at their
// own names (see Stage), by the Staged that writes each: such a file is
// unverified until its Commit, and nothing links, imports or removes it
// meanwhile. A stripe's lock also orders every change to the names it
// covers, so that a check of the map and the change it allows are one
// step.
type receiving struct {
	used    atomic.Bool // an object was ever written at its name
	stripes [64]struct {
		mu sync.Mutex
		m  map[object.Name]*Staged
	}
}

// has reports whether n is being received (a look, not a hold: see
// Repo.settled).
func (rc *receiving) has(n object.Name) bool {
	if !rc.used.Load() {
		return false
	}
	m, unlock := rc.lock(n)
	defer unlock()
	return m[n] != nil
}

// lock locks the stripe of n and returns its map (created on first use)
// and the unlock.
func (rc *receiving) lock(n object.Name) (map[object.Name]*Staged, func()) {
	s := &rc.stripes[n.Sum[0]%byte(len(rc.stripes))]
	s.mu.Lock()
	if s.m == nil {
		s.m = map[object.Name]*Staged{}
	}
	return s.m, s.mu.Unlock
}

// settled runs fn while object n's name in r cannot change, unless r is
// receiving n (an unverified file at its name), and reports whether fn
// ran. Every call that takes a spool's file elsewhere, or deletes it, goes
// through it.
func (r *Repo) settled(n object.Name, fn func()) bool {
	m, unlock := r.recv.lock(n)
	defer unlock()
	if m[n] != nil {
		return false
	}
	fn()
	return true
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
	dir := path.Dir(n.RelPath())
	st := &Staged{repo: r, name: n}
	fd, err := r.createStaged(dir, st)
	if errors.Is(err, unix.ENOENT) {
		if err = os.MkdirAll(r.abs(dir), 0o755); err == nil {
			fd, err = r.createStaged(dir, st)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", n, err)
	}
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

// createStaged creates, exclusively, the file that st's object is written
// to, in dir (relative to r's directory), read-only for everyone when the
// umask allows it (see createdReadOnly), sets st.tmp and returns its
// descriptor. A file object r lacks is written at its own name (one
// change to the directory, where a temporary name and a rename make
// three), held back from readers until Commit (see receiving); any other
// object, or one r has or is receiving, goes to a temporary file named as
// TempPrefix says, beside its own name. Raw system calls: an *os.File
// would cost four more per object (its poller's), and a stage of a
// million small files makes a million of them.
func (r *Repo) createStaged(dir string, st *Staged) (int, error) {
	if st.name.Type == object.File {
		fd, err := r.createInPlace(st)
		if !errors.Is(err, unix.EEXIST) {
			return fd, err
		}
	}
	prefix := dir + "/" + TempPrefix + st.name.String() + "-"
	for range 100 {
		tmp := prefix + strconv.FormatUint(stageSeq.Add(1), 36)
		fd, err := r.create(tmp)
		if errors.Is(err, unix.EEXIST) {
			continue // left by an earlier run of the daemon
		}
		if err != nil {
			return -1, err
		}
		st.tmp = tmp
		return fd, nil
	}
	return -1, fmt.Errorf("create a temporary file in %s: %w", r.abs(dir), os.ErrExist)
}

// createInPlace creates st's object at its own name and records it as
// being received, both under its stripe's lock.
func (r *Repo) createInPlace(st *Staged) (int, error) {
	rel := st.name.RelPath()
	m, unlock := r.recv.lock(st.name)
	defer unlock()
	r.recv.used.Store(true) // before the file exists: see receiving.has
	fd, err := r.create(rel)
	if err != nil {
		return -1, err
	}
	m[st.name] = st
	st.tmp, st.inPlace = rel, true
	return fd, nil
}

// create creates the file rel (relative to r's directory) exclusively,
// with mode 0444, for writing.
func (r *Repo) create(rel string) (int, error) {
	var fd int
	err := r.at(func(dfd int) (err error) {
		for {
			fd, err = unix.Openat(dfd, rel, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o444)
			if err != unix.EINTR {
				return err
			}
		}
	})
	if err != nil {
		return -1, &os.PathError{Op: "create", Path: r.abs(rel), Err: err}
	}
	return fd, nil
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

// Commit puts the staged object in its repository's objects/: renamed
// there from its temporary file, or, written at its own name, no longer
// held back from readers. Nothing is synced: call the repository's Sync
// before recording it as durable.
func (st *Staged) Commit() error {
	r, n := st.repo, st.name
	m, unlock := r.recv.lock(n)
	defer unlock()
	if st.inPlace {
		// Verified where it is (or replaced by a verified copy meanwhile).
		if err := r.usable(); err != nil {
			return fmt.Errorf("commit %s: %w", n, err)
		}
		if m[n] == st {
			delete(m, n)
		}
		return nil
	}
	// renameat(2) itself: os.Rename first looks the destination up to
	// refuse a directory, a system call more per object of a pack, where
	// Linux refuses to rename a file over a directory anyway (EISDIR).
	dst := n.RelPath()
	err := r.at(func(dfd int) error { return unix.Renameat(dfd, st.tmp, dfd, dst) })
	if err != nil {
		return fmt.Errorf("commit %s: %w", n, &os.LinkError{Op: "rename", Old: r.abs(st.tmp), New: r.abs(dst), Err: err})
	}
	// A verified copy now stands where another stage may still write: that
	// one's file has left the name, and its Discard leaves this one.
	delete(m, n)
	return nil
}

// Discard deletes the staged object's file, if still there: its temporary
// file, or the file at its own name, unless another verified copy has
// replaced it.
func (st *Staged) Discard() {
	r := st.repo
	if !st.inPlace {
		r.at(func(dfd int) error { return unix.Unlinkat(dfd, st.tmp, 0) })
		return
	}
	m, unlock := r.recv.lock(st.name)
	defer unlock()
	if m[st.name] == st {
		r.at(func(dfd int) error { return unix.Unlinkat(dfd, st.tmp, 0) })
		delete(m, st.name)
	}
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
	if err := r.replace(n, path); err != nil {
		return fmt.Errorf("adopt %s: %w", n, err)
	}
	return nil
}

// replace renames the verified file at path to object n's name in r, over
// any file there: one still being received leaves the name (see
// Staged.Commit).
func (r *Repo) replace(n object.Name, path string) error {
	m, unlock := r.recv.lock(n)
	defer unlock()
	if err := os.Rename(path, r.ObjectPath(n)); err != nil {
		return err
	}
	delete(m, n)
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

// Remove deletes object n's loose file from r if present, but not one
// still being received (see Stage): that one is its stage's. For spool
// repositories only.
func (r *Repo) Remove(n object.Name) error {
	rel := n.RelPath()
	var err error
	r.settled(n, func() { err = r.at(func(dfd int) error { return unix.Unlinkat(dfd, rel, 0) }) })
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
	st := &Staged{repo: r, name: n, tmp: fmt.Sprintf("%s/%s%s-link-%d-%d", dir, TempPrefix, n, os.Getpid(), linkSeq.Add(1))}
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
