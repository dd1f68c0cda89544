// Package store is everything OSTree: repositories through libostree (cgo,
// hidden behind Go types), the strict object verifier, tree walks and diffs,
// and the publish transaction.
package store

/*
#cgo pkg-config: ostree-1
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostreedev/ostree-go/pkg/otbuiltin"
	"golang.org/x/sys/unix"
)

// Mode is a repository mode; the values are libostree's OstreeRepoMode.
type Mode int

// Repository modes.
const (
	ModeBare Mode = iota
	ModeArchive
	ModeBareUser
	ModeBareUserOnly
	ModeBareSplitXattrs
)

func (m Mode) String() string {
	switch m {
	case ModeBare:
		return "bare"
	case ModeArchive:
		return "archive"
	case ModeBareUser:
		return "bare-user"
	case ModeBareUserOnly:
		return "bare-user-only"
	case ModeBareSplitXattrs:
		return "bare-split-xattrs"
	}
	return fmt.Sprintf("mode%d", int(m))
}

// Errors callers can test with errors.Is.
var (
	ErrClosed     = errors.New("repository is closed")
	ErrNotFound   = errors.New("not found")
	ErrNotArchive = errors.New("not an archive-mode repository")
	// ErrLocked matches libostree's failure to take the repository's lock
	// within its lock-timeout-secs (another process, such as an ostree
	// prune, holds it).
	ErrLocked = errors.New("repository locked by another process")
)

// GError is an error reported by libostree or GLib.
type GError struct {
	Domain  string
	Code    int
	Message string
}

func (e *GError) Error() string { return e.Message }

// Is makes GIO's "not found" match ErrNotFound, and libostree's lock
// timeout ErrLocked.
func (e *GError) Is(target error) bool {
	if e.Domain != "g-io-error-quark" {
		return false
	}
	switch target {
	case ErrNotFound:
		return e.Code == C.G_IO_ERROR_NOT_FOUND
	case ErrLocked:
		return e.Code == C.G_IO_ERROR_WOULD_BLOCK && strings.HasPrefix(e.Message, "Locking repo")
	}
	return false
}

// takeError copies a GError into Go and frees it.
func takeError(e *C.GError) error {
	if e == nil {
		return errors.New("libostree failed without an error message")
	}
	ge := &GError{
		Domain:  C.GoString(C.g_quark_to_string(e.domain)),
		Code:    int(e.code),
		Message: C.GoString(e.message),
	}
	C.g_error_free(e)
	return ge
}

// pool bounds the number of goroutines blocked in libostree at once.
var pool = make(chan struct{}, max(4, 2*runtime.NumCPU()))

// Repo is an open OSTree repository. Its methods are safe for concurrent use;
// Close must be called when done.
type Repo struct {
	mu   sync.RWMutex // write-held only by Close
	ptr  *C.OstreeRepo
	path string
	mode Mode
	// looseOnly: an archive repository without a parent, whose objects
	// are its loose files alone (HasObject looks at them itself).
	looseOnly bool
	// dfd is the repository's directory, which libostree holds open
	// until Close (see at).
	dfd int
	// recv: a spool repository's objects being written at their names.
	recv receiving
}

// Open opens an existing repository.
func Open(ctx context.Context, path string) (*Repo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open repo %s: %w", path, err)
	}
	if _, err := os.Stat(filepath.Join(abs, "config")); err != nil {
		return nil, fmt.Errorf("open repo %s: not an OSTree repository: %w", path, err)
	}
	cpath := C.CString(abs)
	defer C.free(unsafe.Pointer(cpath))
	var gerr *C.GError
	ptr := C.ou_repo_open(cpath, &gerr)
	if ptr == nil {
		return nil, fmt.Errorf("open repo %s: %w", path, takeError(gerr))
	}
	mode := Mode(C.ostree_repo_get_mode(ptr))
	return &Repo{ptr: ptr, path: abs, mode: mode, looseOnly: mode == ModeArchive && C.ostree_repo_get_parent(ptr) == nil, dfd: int(C.ostree_repo_get_dfd(ptr))}, nil
}

// OpenArchive opens an existing repository and refuses any mode but archive:
// only archive repos hold the .filez objects that are pushed and served.
func OpenArchive(ctx context.Context, path string) (*Repo, error) {
	r, err := Open(ctx, path)
	if err != nil {
		return nil, err
	}
	if r.mode != ModeArchive {
		r.Close()
		return nil, fmt.Errorf("repo %s is in %s mode: %w (create one with 'ostree init --mode=archive')", path, r.mode, ErrNotArchive)
	}
	return r, nil
}

// Create makes a new repository of the given mode at path (the directory may
// exist but must not hold a repository) and opens it.
func Create(ctx context.Context, path string, mode Mode) (*Repo, error) {
	if _, err := os.Stat(filepath.Join(path, "config")); err == nil {
		return nil, fmt.Errorf("create repo %s: a repository already exists there", path)
	}
	opts := otbuiltin.NewInitOptions()
	opts.Mode = mode.String()
	if _, err := otbuiltin.Init(path, opts); err != nil {
		// ostree-go puts its source file and line before libostree's
		// message: keep the message.
		msg := err.Error()
		if _, after, ok := strings.Cut(msg, ".go:"); ok {
			if _, m, ok := strings.Cut(after, " - "); ok {
				msg = m
			}
		}
		return nil, fmt.Errorf("create repo %s: %s", path, msg)
	}
	return Open(ctx, path)
}

// Path is the repository's absolute path.
func (r *Repo) Path() string { return r.path }

// Mode is the repository's mode.
func (r *Repo) Mode() Mode { return r.mode }

// Close releases the repository. Calls after Close return ErrClosed.
func (r *Repo) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ptr != nil {
		C.ou_unref(C.gpointer(unsafe.Pointer(r.ptr)))
		r.ptr = nil
	}
	return nil
}

// do runs fn with the repository pointer, holding a pool slot.
func (r *Repo) do(ctx context.Context, fn func(*C.OstreeRepo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case pool <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-pool }()
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.ptr == nil {
		return ErrClosed
	}
	return fn(r.ptr)
}

// maxRefComponent bounds one "/"-separated part of a ref name: each is a
// file or directory name under refs/heads (NAME_MAX).
const maxRefComponent = 255

// ValidateRef checks that name is a valid OSTree ref name (no "..", no
// leading "/", no "^" or other revision syntax) of at most 1024 bytes,
// each "/"-separated part at most 255.
func ValidateRef(name string) error {
	if name == "" || len(name) > 1024 {
		return fmt.Errorf("invalid ref name %q: 1 to 1024 bytes", shorten(name))
	}
	for _, part := range strings.Split(name, "/") {
		if len(part) > maxRefComponent {
			return fmt.Errorf("invalid ref name %q: a part of %d bytes, more than %d", shorten(name), len(part), maxRefComponent)
		}
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var gerr *C.GError
	if C.ostree_validate_rev(cname, &gerr) == 0 {
		return fmt.Errorf("invalid ref name %q: %w", shorten(name), takeError(gerr))
	}
	return nil
}

// CollectionID is the repository's collection ID (core.collection-id), or
// "" when it has none.
func (r *Repo) CollectionID() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.ptr == nil {
		return ""
	}
	return C.GoString(C.ostree_repo_get_collection_id(r.ptr))
}

// RefConflict reports the first ref of refs that cannot live beside the
// others or beside existing: refs are files under refs/heads, so no ref may
// be a directory of another ("a" and "a/b"). It returns the two names, or
// ok false when there is none.
func RefConflict(refs []string, existing map[string]object.Checksum) (ref, other string, found bool) {
	all := make(map[string]bool, len(refs)+len(existing))
	for r := range existing {
		all[r] = true
	}
	for _, r := range refs {
		all[r] = true
	}
	sorted := make([]string, 0, len(all))
	for r := range all {
		sorted = append(sorted, r)
	}
	slices.Sort(sorted)
	for _, r := range refs {
		// A ref that is a directory of r: one of r's prefixes.
		for i := strings.IndexByte(r, '/'); i >= 0; i = nextSlash(r, i) {
			if all[r[:i]] {
				return r, r[:i], true
			}
		}
		// A ref below r: the first name after r+"/" in order.
		dir := r + "/"
		if i, _ := slices.BinarySearch(sorted, dir); i < len(sorted) && strings.HasPrefix(sorted[i], dir) {
			return r, sorted[i], true
		}
	}
	return "", "", false
}

func nextSlash(s string, after int) int {
	if j := strings.IndexByte(s[after+1:], '/'); j >= 0 {
		return after + 1 + j
	}
	return -1
}

// ListRefs returns every local ref and the commit it points at.
func (r *Repo) ListRefs(ctx context.Context) (map[string]object.Checksum, error) {
	out := make(map[string]object.Checksum)
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		var gerr *C.GError
		v := C.ou_list_refs(p, &gerr)
		if v == nil {
			return takeError(gerr)
		}
		defer C.g_strfreev(v)
		strs := unsafe.Slice(v, 1<<30)
		for i := 0; strs[i] != nil; i += 2 {
			sum, err := object.ParseChecksum(C.GoString(strs[i+1]))
			if err != nil {
				return err
			}
			out[C.GoString(strs[i])] = sum
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list refs of %s: %w", r.path, err)
	}
	return out, nil
}

// ResolveRef returns the commit a ref points at; ok is false when the ref
// does not exist.
func (r *Repo) ResolveRef(ctx context.Context, ref string) (sum object.Checksum, ok bool, err error) {
	if err := ValidateRef(ref); err != nil {
		return sum, false, err
	}
	cref := C.CString(ref)
	defer C.free(unsafe.Pointer(cref))
	err = r.do(ctx, func(p *C.OstreeRepo) error {
		var out *C.char
		var gerr *C.GError
		if C.ostree_repo_resolve_rev(p, cref, C.TRUE, &out, &gerr) == 0 {
			return takeError(gerr)
		}
		if out == nil {
			return nil
		}
		defer C.g_free(C.gpointer(unsafe.Pointer(out)))
		sum, err = object.ParseChecksum(C.GoString(out))
		ok = err == nil
		return err
	})
	if err != nil {
		return sum, false, fmt.Errorf("resolve ref %s: %w", ref, err)
	}
	return sum, ok, nil
}

// HasObject reports whether the repository (or its parent, if it has one)
// holds the object. A spool repository's object still being received (see
// Stage) is not held yet.
func (r *Repo) HasObject(ctx context.Context, name object.Name) (bool, error) {
	if r.recv.has(name) {
		if err := r.usable(); err != nil {
			return false, fmt.Errorf("has object %s: %w", name, err)
		}
		return false, nil
	}
	return r.hasObject(ctx, name)
}

// hasObject is HasObject without the look at the objects being received.
func (r *Repo) hasObject(ctx context.Context, name object.Name) (bool, error) {
	if r.looseOnly {
		// What libostree would do, without a call through cgo and GLib's
		// allocations: a publish of a million objects asks several
		// million times.
		if err := ctx.Err(); err != nil {
			return false, err
		}
		var st unix.Stat_t
		switch err := r.at(func(dfd int) error {
			return unix.Fstatat(dfd, name.RelPath(), &st, unix.AT_SYMLINK_NOFOLLOW)
		}); {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.ENOENT):
			return false, nil
		default:
			return false, fmt.Errorf("has object %s: %w", name, err)
		}
	}
	csum := C.CString(name.Sum.String())
	defer C.free(unsafe.Pointer(csum))
	var has C.gboolean
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		var gerr *C.GError
		if C.ostree_repo_has_object(p, C.OstreeObjectType(name.Type), csum, &has, nil, &gerr) == 0 {
			return takeError(gerr)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("has object %s: %w", name, err)
	}
	return has != 0, nil
}

// ObjectPath is where the object's loose file lives in the repository.
func (r *Repo) ObjectPath(name object.Name) string {
	// r.path is absolute and clean: no filepath.Join, which would clean
	// it again (a publish builds millions of these).
	b := make([]byte, 0, len(r.path)+1+object.MaxRelPathLen)
	b = append(append(b, r.path...), '/')
	b = name.AppendRelPath(b)
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// at runs fn with the descriptor of r's directory, which libostree keeps
// open until Close; after Close it returns ErrClosed. Relative to it, the
// kernel resolves an object's RelPath (objects/xx/name) in three steps,
// without walking r's own path again in each of the system calls made per
// object of a push (create, rename, link, unlink, stat, open).
func (r *Repo) at(fn func(dfd int) error) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.ptr == nil {
		return ErrClosed
	}
	return fn(r.dfd)
}

// usable is ErrClosed once r is closed, else nil.
func (r *Repo) usable() error { return r.at(func(int) error { return nil }) }

// abs is the absolute path of rel, a path relative to r's directory (for
// messages, and the few calls that take a path).
func (r *Repo) abs(rel string) string { return r.path + "/" + rel }

// ObjectSize is the size of the object's loose file (of an archive
// repository's, for a file object: see ArchiveSize for the others).
func (r *Repo) ObjectSize(name object.Name) (int64, error) {
	return r.statRel(name, name.RelPath(), 0)
}

// statRel is the size of the file at rel (in r's directory) that holds
// object name; flags are fstatat(2)'s.
func (r *Repo) statRel(name object.Name, rel string, flags int) (int64, error) {
	var st unix.Stat_t
	err := r.at(func(dfd int) error {
		return unix.Fstatat(dfd, rel, &st, flags)
	})
	if err != nil {
		return 0, objectErr(name, &os.PathError{Op: "stat", Path: r.abs(rel), Err: err})
	}
	return st.Size, nil
}

// takeBytes copies a g_malloc'd buffer into Go and frees it.
func takeBytes(data *C.guint8, n C.gsize) []byte {
	defer C.g_free(C.gpointer(unsafe.Pointer(data)))
	return C.GoBytes(unsafe.Pointer(data), C.int(n))
}

// loadMeta returns the bytes of a dirtree or dirmeta object.
func (r *Repo) loadMeta(ctx context.Context, name object.Name) ([]byte, error) {
	csum := C.CString(name.Sum.String())
	defer C.free(unsafe.Pointer(csum))
	var b []byte
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		var data *C.guint8
		var n C.gsize
		var gerr *C.GError
		if C.ou_load_meta(p, C.OstreeObjectType(name.Type), csum, &data, &n, &gerr) == 0 {
			return takeError(gerr)
		}
		b = takeBytes(data, n)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	return b, nil
}

// ReadTree loads and parses a dirtree object.
func (r *Repo) ReadTree(ctx context.Context, sum object.Checksum) (*object.Tree, error) {
	b, err := r.loadMeta(ctx, object.Name{Sum: sum, Type: object.DirTree})
	if err != nil {
		return nil, err
	}
	t, err := object.ParseDirTree(b, false)
	if err != nil {
		return nil, fmt.Errorf("dirtree %s in %s: %w", sum, r.path, err)
	}
	return t, nil
}

// ReadCommit loads and parses a commit object.
func (r *Repo) ReadCommit(ctx context.Context, sum object.Checksum) (*object.CommitInfo, error) {
	csum := C.CString(sum.String())
	defer C.free(unsafe.Pointer(csum))
	var b []byte
	var partial C.gboolean
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		var data *C.guint8
		var n C.gsize
		var gerr *C.GError
		if C.ou_load_commit(p, csum, &data, &n, &partial, &gerr) == 0 {
			return takeError(gerr)
		}
		b = takeBytes(data, n)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load commit %s: %w", sum, err)
	}
	c, err := object.ParseCommit(sum, b, false)
	if err != nil {
		return nil, fmt.Errorf("commit %s in %s: %w", sum, r.path, err)
	}
	c.Partial = partial != 0
	return c, nil
}

// CommitMeta returns a commit's detached metadata, or nil if it has none.
func (r *Repo) CommitMeta(ctx context.Context, sum object.Checksum) ([]byte, error) {
	csum := C.CString(sum.String())
	defer C.free(unsafe.Pointer(csum))
	var b []byte
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		var data *C.guint8
		var n C.gsize
		var gerr *C.GError
		if C.ou_read_commitmeta(p, csum, &data, &n, &gerr) == 0 {
			return takeError(gerr)
		}
		if data != nil {
			b = takeBytes(data, n)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read detached metadata of %s: %w", sum, err)
	}
	return b, nil
}

// RegenerateSummary rewrites the repository's summary file (which removes
// any summary signature: re-sign right after).
func (r *Repo) RegenerateSummary(ctx context.Context) error {
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		var gerr *C.GError
		if C.ostree_repo_regenerate_summary(p, nil, nil, &gerr) == 0 {
			return takeError(gerr)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("regenerate summary of %s: %w", r.path, err)
	}
	return nil
}

// shorten cuts a name for a message.
func shorten(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
