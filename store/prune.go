package store

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/ostree-upload/ostree-upload/store/object"
)

// PruneOptions says what a prune keeps.
type PruneOptions struct {
	// Depth is how many parents below each ref's commit are kept (-1:
	// every ancestor, as ostree prune --depth=-1).
	Depth int
	// Commits are kept whole (without their parents) besides the refs':
	// the targets of the static deltas kept, for example.
	Commits []object.Checksum
	// Objects are kept whatever reaches them: those that sessions not yet
	// published count on finding in the repository.
	Objects []object.Name
	// DryRun counts what would go and removes nothing.
	DryRun bool
}

// PruneStats is what a prune found.
type PruneStats struct {
	Objects int    // objects in the repository before
	Pruned  int    // objects removed (or, in a dry run, that would be)
	Bytes   uint64 // their size
}

// Prune removes the objects of r that no ref reaches within opts.Depth
// parents and that opts does not keep otherwise. It takes libostree's
// exclusive repository lock before it reads the refs, so another process's
// commit (an ostree or flatpak command) finishes first or waits. Within
// this process the lock excludes nothing (threads sharing a repository
// share its lock): the caller keeps its own writers of r out meanwhile. As
// libostree's own prune, it also drops the static deltas whose target
// commit is gone, even in a dry run.
func (r *Repo) Prune(ctx context.Context, opts PruneOptions) (PruneStats, error) {
	var st PruneStats
	if opts.Depth < -1 {
		return st, fmt.Errorf("prune %s: depth %d: want -1 or more", r.path, opts.Depth)
	}
	commits := make([]*C.char, 0, len(opts.Commits)+1)
	for _, c := range opts.Commits {
		commits = append(commits, C.CString(c.String()))
	}
	commits = append(commits, nil)
	n := len(opts.Objects)
	csums := make([]*C.char, n+1)
	types := make([]C.int, n+1)
	for i, o := range opts.Objects {
		csums[i], types[i] = C.CString(o.Sum.String()), C.int(o.Type)
	}
	defer func() {
		for _, p := range append(commits, csums...) {
			C.free(unsafe.Pointer(p))
		}
	}()
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		var gerr *C.GError
		var total, pruned C.gint
		var bytes C.guint64
		cp := C.malloc(C.size_t(len(commits)) * C.size_t(unsafe.Sizeof(uintptr(0))))
		defer C.free(cp)
		copy(unsafe.Slice((**C.char)(cp), len(commits)), commits)
		sp := C.malloc(C.size_t(n+1) * C.size_t(unsafe.Sizeof(uintptr(0))))
		defer C.free(sp)
		copy(unsafe.Slice((**C.char)(sp), n+1), csums)
		tp := C.malloc(C.size_t(n+1) * C.size_t(unsafe.Sizeof(C.int(0))))
		defer C.free(tp)
		copy(unsafe.Slice((*C.int)(tp), n+1), types)
		noPrune := C.gboolean(0)
		if opts.DryRun {
			noPrune = 1
		}
		if C.ou_prune(p, C.int(opts.Depth), (**C.char)(cp), (**C.char)(sp), (*C.int)(tp), C.gsize(n), noPrune, &total, &pruned, &bytes, &gerr) == 0 {
			return takeError(gerr)
		}
		st = PruneStats{Objects: int(total), Pruned: int(pruned), Bytes: uint64(bytes)}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("prune %s: %w", r.path, err)
	}
	return st, nil
}

// HeldFor calls fn for each object reachable from commit, read through
// spool and then r, that r holds: what a session not yet published counts
// on finding in r. Objects neither holds are skipped.
func (r *Repo) HeldFor(ctx context.Context, spool *Repo, commit object.Checksum, fn func(object.Name) error) error {
	t := traversal{src: layers{spool, r}, onMissing: func(object.Name) error { return nil }}
	return t.walkCommit(ctx, commit, objectSet{}, func(n object.Name) error {
		ok, err := r.HasObject(ctx, n)
		if err != nil || !ok {
			return err
		}
		return fn(n)
	})
}
