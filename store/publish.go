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

// Publish makes r's refs point at the new commits, all together or not at
// all: in one libostree transaction, it imports what r lacks from spool
// (trusted: the spool holds only verified objects; hard links when both
// share a filesystem), re-checks each commit's closure in r alone,
// re-checks that every ref still equals its Old and sets the refs. A commit
// found incomplete gives a *MissingError and a moved ref a *RefMovedError,
// with r's refs untouched. detached gives the detached metadata (nil: none)
// that the commits it names get, written in the same transaction after
// the imports, so that what an import copied from the spool never stays.
// Call Check first to refuse what cannot succeed before any transaction;
// the caller serializes publishes to r.
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
	// commit objects, their detached metadata and the refs. A crash in
	// between leaves only unreferenced objects (prune removes them; the
	// publish's recovery imports them again at no cost).
	var commits []object.Name
	txn, err := r.begin(ctx)
	if err != nil {
		return err
	}
	defer txn.abort()
	imported := 0
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
			imported++
			return txn.importFrom(ctx, spool, n)
		}
		if err := missing(ctx, both, u.New, bases[i], importMissing); err != nil {
			return fmt.Errorf("publish %s: import: %w", u.Ref, err)
		}
	}
	if imported > 0 {
		if err := txn.commit(ctx); err != nil {
			return err
		}
		failpoint.Hit("publish-between-transactions")
		if txn, err = r.begin(ctx); err != nil {
			return err
		}
		defer txn.abort()
	}
	for _, n := range commits {
		if err := txn.importFrom(ctx, spool, n); err != nil {
			return fmt.Errorf("publish: import: %w", err)
		}
	}
	for i, u := range updates {
		if err := missing(ctx, r, u.New, bases[i], nil); err != nil {
			return fmt.Errorf("publish %s: after import: %w", u.Ref, err)
		}
	}
	// Detached metadata goes into the transaction last, over whatever an
	// import copied along with its commit.
	for sum, meta := range detached {
		if err := txn.writeCommitMeta(ctx, sum, meta); err != nil {
			return err
		}
	}
	if err := r.checkRefs(ctx, updates); err != nil {
		return err
	}
	for _, u := range updates {
		txn.setRef(u.Ref, u.New)
	}
	failpoint.Hit("publish-before-refs")
	return txn.commit(ctx)
}

// txn is an open libostree transaction on a Repo.
type txn struct {
	r    *Repo
	done bool
}

func (r *Repo) begin(ctx context.Context) (*txn, error) {
	r.txnMu.Lock()
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		var gerr *C.GError
		if C.ostree_repo_prepare_transaction(p, nil, nil, &gerr) == 0 {
			return takeError(gerr)
		}
		return nil
	})
	if err != nil {
		r.txnMu.Unlock()
		return nil, fmt.Errorf("begin transaction in %s: %w", r.path, err)
	}
	return &txn{r: r}, nil
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

func (t *txn) setRef(ref string, sum object.Checksum) {
	cref := C.CString(ref)
	defer C.free(unsafe.Pointer(cref))
	csum := C.CString(sum.String())
	defer C.free(unsafe.Pointer(csum))
	t.r.mu.RLock()
	defer t.r.mu.RUnlock()
	if t.r.ptr != nil {
		C.ostree_repo_transaction_set_ref(t.r.ptr, nil, cref, csum)
	}
}

func (t *txn) commit(ctx context.Context) error {
	err := t.r.do(context.WithoutCancel(ctx), func(p *C.OstreeRepo) error {
		var gerr *C.GError
		if C.ostree_repo_commit_transaction(p, nil, nil, &gerr) == 0 {
			return takeError(gerr)
		}
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
		var gerr *C.GError
		if C.ostree_repo_abort_transaction(p, nil, &gerr) == 0 {
			return takeError(gerr)
		}
		return nil
	})
	t.r.txnMu.Unlock()
}
