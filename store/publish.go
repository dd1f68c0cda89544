package store

/*
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
	"slices"
	"sync"
	"syscall"
	"unsafe"

	"github.com/ostree-upload/ostree-upload/internal/failpoint"
	"github.com/ostree-upload/ostree-upload/store/object"
	"golang.org/x/sys/unix"
)

// RefUpdate moves Ref from Old (nil: the ref must not exist) to New.
type RefUpdate struct {
	Ref string
	Old *object.Checksum
	New object.Checksum
}

// RefMovedError reports a ref that no longer equals the Old its update named.
type RefMovedError struct {
	Ref  string
	Want *object.Checksum
	Got  *object.Checksum
}

func (e *RefMovedError) Error() string {
	str := func(c *object.Checksum) string {
		if c == nil {
			return "absent"
		}
		return c.String()
	}
	return fmt.Sprintf("ref %s moved: expected %s, found %s", e.Ref, str(e.Want), str(e.Got))
}

// checkRefs fails with *RefMovedError unless every ref equals its Old or
// already its New (a publish finished by an earlier attempt).
func (r *Repo) checkRefs(ctx context.Context, updates []RefUpdate) error {
	for _, u := range updates {
		cur, ok, err := r.ResolveRef(ctx, u.Ref)
		if err != nil {
			return err
		}
		switch {
		case !ok && u.Old == nil:
		case ok && u.Old != nil && cur == *u.Old:
		case ok && cur == u.New:
		default:
			e := &RefMovedError{Ref: u.Ref, Want: u.Old}
			if ok {
				e.Got = &cur
			}
			return e
		}
	}
	return nil
}

// base returns the commit a ref update can be diffed against in r: its Old,
// when r holds that commit completely.
func (r *Repo) base(ctx context.Context, u RefUpdate) (*object.Checksum, error) {
	if u.Old == nil || *u.Old == u.New {
		return nil, nil
	}
	c, err := r.ReadCommit(ctx, *u.Old)
	if errors.Is(err, ErrNotFound) {
		return nil, nil // pruned meanwhile: check the whole commit
	}
	if err != nil {
		return nil, err
	}
	if c.Partial {
		return nil, nil
	}
	return u.Old, nil
}

// Check tells whether a Publish of updates from spool can succeed as things
// stand, without changing anything: every ref must still equal its Old (or
// already its New: a publish finished by an earlier attempt), else a
// *RefMovedError; each new commit must be complete in r and spool together,
// else a *MissingError; its directories must be within the tree limits,
// else an error matching ErrTreeLimit.
func (r *Repo) Check(ctx context.Context, spool *Repo, updates []RefUpdate) error {
	for _, u := range updates {
		if err := ValidateRef(u.Ref); err != nil {
			return err
		}
	}
	if err := r.checkRefs(ctx, updates); err != nil {
		return err
	}
	both := layers{r, spool}
	for _, u := range updates {
		b, err := r.base(ctx, u)
		if err != nil {
			return fmt.Errorf("publish %s: %w", u.Ref, err)
		}
		if err := missing(ctx, both, u.New, b, nil); err != nil {
			return fmt.Errorf("publish %s: %w", u.Ref, err)
		}
	}
	return nil
}

// Publish makes r's refs point at the new commits: it imports what r lacks
// from spool (trusted: the spool holds only verified objects; hard links
// when both share a filesystem), each object of each commit's closure
// found in r or checked there once imported, makes everything it wrote
// durable, re-checks that every ref still equals its Old and sets the refs,
// each durably. A commit found incomplete gives a *MissingError and a moved
// ref a *RefMovedError, with r's refs untouched. detached gives the
// detached metadata (nil: none) that the commits it names get, written
// after the commits; a new commit it does not name gets the spool's. The
// spool's copy never enters r otherwise, so that a crash cannot leave it
// there as if it were r's. Refs are set one by one (a crash may leave some
// moved: the caller's journaled intent finishes them). Call Check first to
// refuse what cannot succeed before anything is written; the caller
// serializes publishes to r. Publish is Import, then the Import's Publish.
func (r *Repo) Publish(ctx context.Context, spool *Repo, updates []RefUpdate, detached map[object.Checksum][]byte) error {
	if err := r.checkRefs(ctx, updates); err != nil {
		return err
	}
	im, err := r.Import(ctx, spool, updates)
	if err != nil {
		return err
	}
	defer im.Close()
	return im.Publish(ctx, spool, detached)
}

// An Import holds the objects it placed in a repository for the refs that
// its Publish then sets: the repository's shared lock keeps a concurrent
// prune from deleting them before a ref names them. Close lets it go.
type Import struct {
	r       *Repo
	updates []RefUpdate
	commits []object.Name // the new commits r lacks, linked by Publish
	unlock  func()
}

// Import places in r, from spool, every object of each update's new commit
// that r lacks but the commits themselves, and makes them durable: the
// first half of a publish, which needs no lock of the caller's (it changes
// nothing a reader of r's refs sees). A commit found incomplete gives a
// *MissingError, a tree beyond the limits an error matching ErrTreeLimit,
// and either way what was placed stays, unreferenced (prune removes it; a
// later Import finds it). Refs are not checked: Publish does.
func (r *Repo) Import(ctx context.Context, spool *Repo, updates []RefUpdate) (*Import, error) {
	for _, u := range updates {
		if err := ValidateRef(u.Ref); err != nil {
			return nil, err
		}
	}
	bases := make([]*object.Checksum, len(updates))
	for i, u := range updates {
		b, err := r.base(ctx, u)
		if err != nil {
			return nil, fmt.Errorf("publish %s: %w", u.Ref, err)
		}
		bases[i] = b
	}

	// No libostree transaction: objects are hard-linked straight into
	// objects/ (a transaction would stage them and rename them in
	// directory order at its commit), under the repository's shared lock.
	// A commit object is never in objects/ without its tree: every other
	// object goes in first, is checked and made durable (one syncfs), then
	// Publish adds the commits and their detached metadata, made durable,
	// then the refs. A crash in between leaves only unreferenced objects
	// (prune removes them; the publish's recovery links them again at no
	// cost).
	//
	// Durability is the publish's own (see syncWritten), where libostree
	// would fsync every directory of objects/ at a transaction's commit
	// and syncfs the whole filesystem, whatever the transaction wrote.
	unlock, err := r.lockShared(ctx)
	if err != nil {
		return nil, err
	}
	im := &Import{r: r, updates: updates, unlock: unlock}
	for i, u := range updates {
		lacking, err := r.importClosure(ctx, spool, u.New, bases[i])
		if err != nil {
			im.Close()
			return nil, fmt.Errorf("publish %s: import: %w", u.Ref, err)
		}
		for _, n := range lacking {
			if !slices.Contains(im.commits, n) {
				im.commits = append(im.commits, n)
			}
		}
	}
	// One syncfs, whatever this publish linked: it also makes durable what
	// an earlier attempt linked and never synced (this one found those
	// present), and the bytes of an object copied rather than linked.
	if err := r.Sync(ctx); err != nil {
		im.Close()
		return nil, err
	}
	failpoint.Hit("publish-between-transactions") // every object but the commits is in
	return im, nil
}

// Close releases the repository's shared lock. It may be called more than
// once.
func (im *Import) Close() {
	if im.unlock != nil {
		im.unlock()
		im.unlock = nil
	}
}

// Publish ends the publish that im began: it checks that every ref still
// equals its Old (or already its New), else a *RefMovedError with nothing
// changed; links the new commits from spool, the one im imported from,
// and writes their detached metadata (detached, as for Repo.Publish), all
// made durable; checks the refs again and sets them, each durably. The
// caller serializes publishes to the repository.
func (im *Import) Publish(ctx context.Context, spool *Repo, detached map[object.Checksum][]byte) error {
	r, updates := im.r, im.updates
	// The refs are checked before the commits and their detached metadata
	// go in: a ref moved meanwhile changes nothing.
	if err := r.checkRefs(ctx, updates); err != nil {
		return err
	}
	var written []object.Name
	for _, n := range im.commits {
		written = append(written, n)
		if err := r.linkCommit(ctx, spool, n); err != nil {
			return fmt.Errorf("publish: import: %w", err)
		}
		if has, err := r.HasObject(ctx, n); err != nil || !has {
			return fmt.Errorf("publish: %s not in the repository after its import: %w", n, errors.Join(err, ErrNotFound))
		}
	}
	failpoint.Hit("publish-commits-linked")
	// Detached metadata goes in last: the given one, else the spool's.
	for _, n := range im.commits {
		if _, given := detached[n.Sum]; given {
			continue
		}
		meta, err := spool.CommitMeta(ctx, n.Sum)
		if err != nil {
			return err
		}
		if meta != nil {
			written = append(written, object.Name{Sum: n.Sum, Type: object.CommitMeta})
			if err := r.writeCommitMeta(ctx, n.Sum, meta); err != nil {
				return err
			}
		}
	}
	for sum, meta := range detached {
		written = append(written, object.Name{Sum: sum, Type: object.CommitMeta})
		if err := r.writeCommitMeta(ctx, sum, meta); err != nil {
			return err
		}
	}
	// The commits and their metadata are durable before any ref names them.
	if err := r.syncWritten(ctx, written); err != nil {
		return err
	}
	if err := r.checkRefs(ctx, updates); err != nil {
		return err
	}
	failpoint.Hit("publish-before-refs")
	for _, u := range updates {
		if err := r.setRef(ctx, u.Ref, u.New); err != nil {
			return err
		}
	}
	return nil
}

// linkCommit hard-links commit object n of from into r. libostree's import
// would bring the commit's detached metadata of from along, and a crash
// before the publish writes its own would leave the pushed copy in r as if
// it were production's.
func (r *Repo) linkCommit(ctx context.Context, from *Repo, n object.Name) error {
	dst := r.ObjectPath(n)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	err := os.Link(from.ObjectPath(n), dst)
	switch {
	case err == nil, errors.Is(err, os.ErrExist):
		return nil
	case errors.Is(err, syscall.EXDEV), errors.Is(err, syscall.EMLINK), errors.Is(err, syscall.EPERM):
		// Not linkable here: copy, and drop the metadata the copy brings.
		if err := r.importObject(ctx, from, n); err != nil {
			return err
		}
		return r.writeCommitMeta(ctx, n.Sum, nil)
	}
	return fmt.Errorf("link %s: %w", n, err)
}

// importWorkers is how many objects a publish links at once.
const importWorkers = 4

// importClosure makes every object of commit's closure (of its diff against
// base, when set) present in r but the commits and their detached metadata:
// found there, or imported from spool, importWorkers at once. It returns the
// commits r lacks, or a *MissingError naming objects neither holds. Each
// object is known to be in r once placed: no second walk checks it.
func (r *Repo) importClosure(ctx context.Context, spool *Repo, commit object.Checksum, base *object.Checksum) ([]object.Name, error) {
	absent := &missingList{e: MissingError{Commit: commit}}
	t := traversal{src: layers{r, spool}, onMissing: absent.note}
	var commits []object.Name
	err := r.importAll(ctx, spool, absent.note, func(emit func(object.Name) error) error {
		return t.closure(ctx, commit, base, func(n object.Name) error {
			switch n.Type {
			case object.CommitMeta:
				// Never the pushed copy: the caller's detached metadata
				// is written after the commits.
				return nil
			case object.Commit:
				has, err := r.HasObject(ctx, n)
				if err == nil && !has {
					commits = append(commits, n)
				}
				return err
			}
			return emit(n)
		})
	})
	if err != nil {
		return nil, err
	}
	return commits, absent.err()
}

// importAll places into r from spool, with importWorkers goroutines, the
// objects walk emits (see place), and tells absent of each object neither
// holds but dirtrees (a walk reports those it cannot read itself).
func (r *Repo) importAll(ctx context.Context, spool *Repo, absent func(object.Name) error, walk func(emit func(object.Name) error) error) error {
	// The walk emits a file object once per directory holding it: one
	// already queued or being placed is not queued again (its placing
	// answers for both). At most the queue and the workers' objects are
	// held.
	var (
		mu       sync.Mutex
		inFlight = map[object.Name]bool{}
	)
	place := func(ctx context.Context, n object.Name) error {
		present, err := r.place(ctx, spool, n)
		if err == nil && !present && n.Type != object.DirTree {
			err = absent(n)
		}
		mu.Lock()
		delete(inFlight, n)
		mu.Unlock()
		return err
	}
	return fanOut(ctx, importWorkers, func() func(context.Context, object.Name) error { return place },
		func(emit func(object.Name) error) error {
			return walk(func(n object.Name) error {
				mu.Lock()
				dup := inFlight[n]
				inFlight[n] = true
				mu.Unlock()
				if dup {
					return nil
				}
				return emit(n)
			})
		})
}

// fanOut runs walk, handing the names it emits to workers goroutines, each
// with a handle of its own (from newHandle). It returns the first error of
// the walk or of a handle; after one, emit fails (the walk stops) and the
// names already queued are still handed over, with ctx cancelled.
func fanOut(ctx context.Context, workers int, newHandle func() func(context.Context, object.Name) error, walk func(emit func(object.Name) error) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan object.Name, 64)
	var wg sync.WaitGroup
	for range workers {
		handle := newHandle()
		wg.Go(func() {
			for n := range work {
				if err := handle(ctx, n); err != nil {
					cancel(err)
				}
			}
		})
	}
	err := walk(func(n object.Name) error {
		select {
		case work <- n:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	close(work)
	wg.Wait()
	if err == nil {
		err = context.Cause(ctx)
	}
	return err
}

// place makes object n present in r: found there, or imported from spool
// and checked there. It reports false when neither holds n; an object the
// spool is still receiving (see Repo.Stage) is not the spool's yet.
func (r *Repo) place(ctx context.Context, spool *Repo, n object.Name) (bool, error) {
	if r.looseOnly && spool.looseOnly {
		// One linkat answers for nearly every object: linked, or r had
		// it. Any other answer (no such object in the spool, no
		// directory for it in r, another filesystem) takes the way below.
		err := error(unix.ENOENT)
		spool.settled(n, func() { err = r.linkLoose(ctx, spool, n) })
		switch {
		case err == nil, errors.Is(err, unix.EEXIST):
			return true, nil
		case !errors.As(err, new(unix.Errno)):
			return false, err
		}
	}
	if has, err := r.HasObject(ctx, n); err != nil || has {
		return has, err
	}
	var has bool
	var err error
	spool.settled(n, func() {
		if has, err = spool.hasObject(ctx, n); err == nil && has {
			err = r.importObject(ctx, spool, n)
		}
	})
	if err != nil || !has {
		return false, err
	}
	if has, err := r.HasObject(ctx, n); err != nil || !has {
		return false, fmt.Errorf("%s not in the repository after its import: %w", n, errors.Join(err, ErrNotFound))
	}
	return true, nil
}

// syncfsOver is the number of directories over which a barrier syncs the
// whole filesystem rather than each directory.
const syncfsOver = 16

// syncWritten makes the objects written into r durable, with their
// directories and objects/ itself (which may have gained a directory): a
// few by fsyncs of each file and directory, more by one syncfs of the
// filesystem (each fsync flushes the disk's cache; one syncfs costs less
// than many). The bytes count too: an object is copied, not linked, when
// its inode has too many links.
func (r *Repo) syncWritten(ctx context.Context, written []object.Name) error {
	dirs := map[string]bool{}
	for _, n := range written {
		dirs[filepath.Dir(r.ObjectPath(n))] = true
	}
	switch {
	case len(dirs) == 0:
		return nil
	case len(dirs) > syncfsOver:
		return r.Sync(ctx)
	}
	for _, n := range written {
		if err := syncFile(r.ObjectPath(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sync %s: %w", n, err)
		}
	}
	for dir := range dirs {
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	return syncDir(filepath.Join(r.path, "objects"))
}

// setRef points ref at sum, durably: the ref's file and every directory
// from it up to refs/.
func (r *Repo) setRef(ctx context.Context, ref string, sum object.Checksum) error {
	cref := C.CString(ref)
	defer C.free(unsafe.Pointer(cref))
	csum := C.CString(sum.String())
	defer C.free(unsafe.Pointer(csum))
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		var gerr *C.GError
		if C.ostree_repo_set_ref_immediate(p, nil, cref, csum, nil, &gerr) == 0 {
			return takeError(gerr)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set ref %s: %w", ref, err)
	}
	path := filepath.Join(r.path, "refs", "heads", filepath.FromSlash(ref))
	if err := syncFile(path); err != nil {
		return fmt.Errorf("sync ref %s: %w", ref, err)
	}
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("sync ref %s: %w", ref, err)
		}
		if dir == filepath.Join(r.path, "refs") {
			return nil
		}
	}
}

// lockShared takes the repository's shared lock, as a transaction does: a
// prune (which takes it exclusively) waits until the returned func runs.
func (r *Repo) lockShared(ctx context.Context) (func(), error) {
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		var gerr *C.GError
		if C.ostree_repo_lock_push(p, C.OSTREE_REPO_LOCK_SHARED, nil, &gerr) == 0 {
			return takeError(gerr)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", r.path, err)
	}
	return func() {
		_ = r.do(context.Background(), func(p *C.OstreeRepo) error {
			var gerr *C.GError
			if C.ostree_repo_lock_pop(p, C.OSTREE_REPO_LOCK_SHARED, nil, &gerr) == 0 {
				return takeError(gerr)
			}
			return nil
		})
	}, nil
}

// importObject imports object n of from into r through libostree (a hard
// link, or a copy across filesystems; it creates a missing objects/
// directory), trusting it: from holds only verified objects. place tries
// the direct link first.
func (r *Repo) importObject(ctx context.Context, from *Repo, n object.Name) error {
	from.mu.RLock()
	defer from.mu.RUnlock()
	if from.ptr == nil {
		return ErrClosed
	}
	csum := C.CString(n.Sum.String())
	defer C.free(unsafe.Pointer(csum))
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		var gerr *C.GError
		if C.ostree_repo_import_object_from_with_trust(p, from.ptr, C.OstreeObjectType(n.Type), csum, C.TRUE, nil, &gerr) == 0 {
			return takeError(gerr)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("import %s: %w", n, err)
	}
	return nil
}

// linkLoose hard-links the loose file of object n of from into r (both
// loose-only). It returns the errno of linkat as is: EEXIST when r has n.
func (r *Repo) linkLoose(ctx context.Context, from *Repo, n object.Name) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rel := n.RelPath()
	return from.at(func(src int) error {
		return r.at(func(dst int) error {
			return unix.Linkat(src, rel, dst, rel, 0)
		})
	})
}

// writeCommitMeta writes the detached metadata of commit sum (nil: none).
func (r *Repo) writeCommitMeta(ctx context.Context, sum object.Checksum, meta []byte) error {
	if len(meta) > 0 {
		if err := object.CheckCommitMeta(meta); err != nil {
			return err
		}
	}
	csum := C.CString(sum.String())
	defer C.free(unsafe.Pointer(csum))
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		d, n := cBytes(meta)
		var gerr *C.GError
		if C.ou_write_commitmeta(p, csum, d, n, &gerr) == 0 {
			return takeError(gerr)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write detached metadata of %s: %w", sum, err)
	}
	return nil
}
