package repository

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// uploaded is a session of id for update with every object of its new
// commit uploaded.
func uploaded(t *testing.T, s *Service, id auth.Identity, update api.RefUpdate) api.Session {
	t.Helper()
	sess, _, err := s.CreateSession(ctx, id, api.SessionRequest{Refs: []api.RefUpdate{update}})
	if err != nil {
		t.Fatal(err)
	}
	needed, err := s.Negotiate(ctx, id, sess.ID, api.ObjectsRequest{Objects: namesOf(t, update.New)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReceivePack(ctx, id, sess.ID, packOf(t, needed)); err != nil {
		t.Fatal(err)
	}
	return sess
}

// A publish imports its objects before it takes the publish lock: while
// one has imported and not yet moved its refs, another token's publish of
// another ref goes through, and a prune waits until those refs moved, so
// that it cannot delete what went in before a ref names it.
func TestPublishImportsOutsideThePublishLock(t *testing.T) {
	t.Parallel()
	s, ci, narrow := newService(t)
	first := uploaded(t, s, ci, api.RefUpdate{Name: "main", New: fx.A})
	second := uploaded(t, s, narrow, api.RefUpdate{Name: "other", New: fx.C})

	imported, resume := make(chan struct{}), make(chan struct{})
	var paused atomic.Bool
	s.afterImport = func() {
		if paused.CompareAndSwap(false, true) {
			close(imported)
			<-resume
		}
	}
	firstDone := make(chan error, 1)
	go func() {
		_, err := s.Commit(ctx, ci, first.ID, false)
		firstDone <- err
	}()
	<-imported

	secondDone := make(chan error, 1)
	go func() {
		_, err := s.Commit(ctx, narrow, second.ID, false)
		secondDone <- err
	}()
	select {
	case err := <-secondDone:
		if err != nil {
			t.Fatalf("the other publish: %v", err)
		}
	case <-time.After(time.Minute):
		close(resume)
		t.Fatal("the other publish waited for the first one's import")
	}

	depth := 0
	pruned := make(chan error, 1)
	go func() {
		_, err := s.Prune(ctx, api.PruneRequest{Depth: &depth}, "test")
		pruned <- err
	}()
	select {
	case err := <-pruned:
		close(resume)
		t.Fatalf("a prune ran between an import and its refs (%v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	close(resume)
	if err := <-firstDone; err != nil {
		t.Fatalf("the first publish: %v", err)
	}
	if err := <-pruned; err != nil {
		t.Fatalf("prune: %v", err)
	}
	refs, _ := s.repo.ListRefs(ctx)
	if refs["main"].String() != fx.A || refs["other"].String() != fx.C {
		t.Fatalf("refs %v", refs)
	}
	storetest.MustOstree(t, "fsck", "--repo="+s.cfg.Repo)
}
