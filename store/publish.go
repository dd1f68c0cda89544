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
	"unsafe"

	"github.com/ostree-upload/ostree-upload/internal/failpoint"
	"github.com/ostree-upload/ostree-upload/store/object"
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
// when both share a filesystem), re-checks each commit's closure in r
// alone, makes everything it wrote durable, re-checks that every ref still
// equals its Old and sets the refs, each durably. A commit found
// incomplete gives a *MissingError and a moved ref a *RefMovedError, with
// r's refs untouched. detached gives the detached metadata (nil: none)
// that the commits it names get, written after the imports, so that what
// an import copied from the spool never stays. Refs are set one by one (a
// crash may leave some moved: the caller's journaled intent finishes
// them). Call Check first to refuse what cannot succeed before any
// transaction; the caller serializes publishes to r.
func (r *Repo) Publish(ctx context.Context, spool *Repo, updates []RefUpdate, detached map[object.Checksum][]byte) error {
	for _, u := range updates {
		if err := ValidateRef(u.Ref); err != nil {
			return err
		}
	}
	if err := r.checkRefs(ctx, updates); err != nil {
		return err
	}
	both := layers{r, spool}
	bases := make([]*object.Checksum, len(updates))
	for i, u := range updates {
		b, err := r.base(ctx, u)
		if err != nil {
			return fmt.Errorf("publish %s: %w", u.Ref, err)
		}
		bases[i] = b
	}

	// Two transactions, so that a commit object is never in objects/
	// without its tree: libostree stages a transaction's objects and
	// renames them into objects/ at its commit in directory order, so the
	// first transaction brings every other object, and the second the
	// commit objects and their detached metadata. A crash in between
	// leaves only unreferenced objects (prune removes them; the publish's
	// recovery imports them again at no cost).
	//
	// Durability is the publish's own (see syncWritten): each barrier
	// fsyncs only the directories written, where libostree would fsync
	// every directory of objects/ at each transaction's commit and syncfs
	// the whole filesystem, whatever the transaction wrote.
	var commits []object.Name
	txn, err := r.begin(ctx)
	if err != nil {
		return err
	}
	defer txn.abort()
	var written writtenSet
	for i, u := range updates {
		importMissing := func(n object.Name) error {
			has, err := r.HasObject(ctx, n)
			if err != nil || has {
				return err
			}
			if n.Type == object.Commit {
				commits = append(commits, n)
				return nil
			}
			written.add(n)
			return txn.importFrom(ctx, spool, n)
		}
		if err := missing(ctx, both, u.New, bases[i], importMissing); err != nil {
			return fmt.Errorf("publish %s: import: %w", u.Ref, err)
		}
	}
	if len(written) > 0 {
		if err := txn.commit(ctx); err != nil {
			return err
		}
		if err := r.syncWritten(written, false); err != nil {
			return err
		}
		failpoint.Hit("publish-between-transactions")
		if txn, err = r.begin(ctx); err != nil {
			return err
		}
		defer txn.abort()
	}
	written = nil
	for _, n := range commits {
		written.add(n)
		if err := txn.importFrom(ctx, spool, n); err != nil {
			return fmt.Errorf("publish: import: %w", err)
		}
	}
	// Detached metadata goes into the transaction last, over whatever an
	// import copied along with its commit.
	for sum, meta := range detached {
		written.add(object.Name{Sum: sum, Type: object.CommitMeta})
		if err := txn.writeCommitMeta(ctx, sum, meta); err != nil {
			return err
		}
	}
	for i, u := range updates {
		if err := missing(ctx, r, u.New, bases[i], nil); err != nil {
			return fmt.Errorf("publish %s: after import: %w", u.Ref, err)
		}
	}
	if err := txn.commit(ctx); err != nil {
		return err
	}
	// The commits and their metadata are durable before any ref names them.
	if err := r.syncWritten(written, true); err != nil {
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

// writtenSet holds objects a publish wrote into objects/ (few: a publish
// imports only what production lacks).
type writtenSet []object.Name

func (w *writtenSet) add(n object.Name) { *w = append(*w, n) }

// syncWritten makes objects written into r durable: the directories of
// objects/ that received them and objects/ itself (which may have gained
// a directory), and with data, the objects' own bytes (those written
// rather than hard-linked from an already durable spool).
func (r *Repo) syncWritten(written writtenSet, data bool) error {
	dirs := map[string]bool{}
	for _, n := range written {
		path := r.ObjectPath(n)
		if data {
			if err := syncFile(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("sync %s: %w", n, err)
			}
		}
		dirs[filepath.Dir(path)] = true
	}
	for dir := range dirs {
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	if len(dirs) > 0 {
		return syncDir(filepath.Join(r.path, "objects"))
	}
	return nil
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

// txn is an open libostree transaction on a Repo.
type txn struct {
	r        *Repo
	done     bool
	fsyncOff bool // the repository's own setting, restored at the end
}

func (t *txn) restoreFsync(p *C.OstreeRepo) {
	if !t.fsyncOff {
		C.ostree_repo_set_disable_fsync(p, C.FALSE)
	}
}

// begin opens a transaction in which libostree neither fsyncs nor calls
// syncfs: the caller makes what it writes durable (see syncWritten).
func (r *Repo) begin(ctx context.Context) (*txn, error) {
	r.txnMu.Lock()
	t := &txn{r: r}
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		t.fsyncOff = C.ostree_repo_get_disable_fsync(p) != 0
		C.ostree_repo_set_disable_fsync(p, C.TRUE)
		var gerr *C.GError
		if C.ostree_repo_prepare_transaction(p, nil, nil, &gerr) == 0 {
			t.restoreFsync(p)
			return takeError(gerr)
		}
		return nil
	})
	if err != nil {
		r.txnMu.Unlock()
		return nil, fmt.Errorf("begin transaction in %s: %w", r.path, err)
	}
	return t, nil
}

func (t *txn) importFrom(ctx context.Context, from *Repo, n object.Name) error {
	csum := C.CString(n.Sum.String())
	defer C.free(unsafe.Pointer(csum))
	from.mu.RLock()
	defer from.mu.RUnlock()
	if from.ptr == nil {
		return ErrClosed
	}
	err := t.r.do(ctx, func(p *C.OstreeRepo) error {
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

func (t *txn) writeCommitMeta(ctx context.Context, sum object.Checksum, meta []byte) error {
	if len(meta) > 0 {
		if err := object.CheckCommitMeta(meta); err != nil {
			return err
		}
	}
	csum := C.CString(sum.String())
	defer C.free(unsafe.Pointer(csum))
	err := t.r.do(ctx, func(p *C.OstreeRepo) error {
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

func (t *txn) commit(ctx context.Context) error {
	err := t.r.do(context.WithoutCancel(ctx), func(p *C.OstreeRepo) error {
		var gerr *C.GError
		if C.ostree_repo_commit_transaction(p, nil, nil, &gerr) == 0 {
			return takeError(gerr)
		}
		t.restoreFsync(p)
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit transaction in %s: %w", t.r.path, err)
	}
	t.done = true
	t.r.txnMu.Unlock()
	return nil
}

// abort ends the transaction unless it was committed; safe to defer.
func (t *txn) abort() {
	if t.done {
		return
	}
	t.done = true
	_ = t.r.do(context.Background(), func(p *C.OstreeRepo) error {
		defer t.restoreFsync(p)
		var gerr *C.GError
		if C.ostree_repo_abort_transaction(p, nil, &gerr) == 0 {
			return takeError(gerr)
		}
		return nil
	})
	t.r.txnMu.Unlock()
}
