package repository

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/service"
	"github.com/ostree-upload/ostree-upload/spool"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// promoteBatch is how many objects are linked into the spool and journaled
// together.
const promoteBatch = 1024

// Promote publishes in this repository a commit that the repository from
// (this one, or another of the daemon's on the same filesystem) publishes
// under req.Ref: a session of the token, whose missing objects are hard
// links to from's, published like a push (the update rule, bindings,
// signing with this repository's keys, hooks, the atomic publish). The
// source's detached metadata (its signatures) stays in the source: each
// repository's commits carry its own signatures only. A refusal after the
// session is made, or a failure, aborts it.
func (s *Service) Promote(ctx context.Context, id auth.Identity, from service.Repository, req api.PromoteRequest) (api.Session, error) {
	src, ok := from.(*Service)
	if !ok {
		return api.Session{}, errors.New("promote: the source is not a repository of this daemon")
	}
	if req.To == "" {
		req.To = req.Ref
	}
	if err := store.ValidateRef(req.To); err != nil {
		return api.Session{}, refuse(service.Invalid, "ref %q: %v", req.To, err)
	}
	if !id.AllowsRef(req.To) {
		e := refuse(service.Forbidden, "%s may not push ref %s", id.Subject(), req.To)
		e.Body.Ref = req.To
		return api.Session{}, e
	}
	if err := store.ValidateRef(req.Ref); err != nil {
		return api.Session{}, refuse(service.Invalid, "ref %q: %v", req.Ref, err)
	}
	if !id.AllowsRef(req.Ref) {
		e := refuse(service.Forbidden, "%s may not use ref %s", id.Subject(), req.Ref)
		e.Body.Ref = req.Ref
		return api.Session{}, e
	}
	sum, found, err := src.repo.ResolveRef(ctx, req.Ref)
	if err != nil {
		return api.Session{}, err
	}
	if !found {
		e := refuse(service.NotFound, "no ref %s in the source repository", req.Ref)
		e.Body.Ref = req.Ref
		return api.Session{}, e
	}
	if req.Commit != "" && req.Commit != sum.String() {
		e := refuse(service.Conflict, "ref %s of the source points at %s, not %s", req.Ref, sum, req.Commit)
		e.Body.Ref = req.Ref
		return api.Session{}, e
	}
	// The destination's ref as it is now: the update rule and the
	// publish's compare-and-swap judge the move from it.
	update := api.RefUpdate{Name: req.To, New: sum.String()}
	cur, has, err := s.repo.ResolveRef(ctx, req.To)
	if err != nil {
		return api.Session{}, err
	}
	var old *object.Checksum
	if has {
		update.Old, old = cur.String(), &cur
	}
	if has && cur == sum {
		return api.Session{State: api.StatePublished, Refs: []api.RefUpdate{update},
			Result: fmt.Sprintf("up to date: %s already points at %s", req.To, sum)}, nil
	}
	req.Force, req.DryRun = s.accountOptions(id, req.Force, req.DryRun)
	sess, _, err := s.CreateSession(ctx, id, api.SessionRequest{Refs: []api.RefUpdate{update}, Force: req.Force, DryRun: req.DryRun})
	if err != nil || req.DryRun {
		return sess, err
	}
	out, err := s.promote(ctx, id, src, sess.ID, sum, old)
	if err != nil {
		if aerr := s.Abort(ctx, id, sess.ID); aerr != nil {
			s.log.Warn("promote: cannot abort the failed session", "session", sess.ID, "err", aerr)
		}
		if e, ok := service.AsError(err); ok && e.Body.Code == api.CodeCheckFailed {
			e.Body.Error += "; promote again once the check passes"
		}
		return out, err
	}
	return out, nil
}

// maxPromoteParents bounds the parent chain a promote links, as the client
// bounds the one it sends.
const maxPromoteParents = 10000

func (s *Service) promote(ctx context.Context, id auth.Identity, src *Service, sid string, sum object.Checksum, old *object.Checksum) (api.Session, error) {
	sp, err := s.spools.For(ctx, id.Hash)
	if err != nil {
		return api.Session{}, err
	}
	// The names of the commit's objects go to the session in batches; the
	// objects of each batch production lacks are linked at once, so that
	// memory does not grow with the commit.
	var names []string
	flush := func() error {
		needed, err := s.Negotiate(ctx, id, sid, api.ObjectsRequest{Objects: names, NoWait: true})
		names = names[:0]
		if err != nil {
			return err
		}
		return s.linkAll(ctx, id, sp, sid, src, needed)
	}
	add := func(n object.Name) error {
		names = append(names, n.String())
		if len(names) == api.MaxNamesPerRequest {
			return flush()
		}
		return nil
	}
	err = src.repo.Walk(ctx, sum, func(n object.Name) error {
		if n.Type == object.CommitMeta { // the source's signatures stay there
			return nil
		}
		return add(n)
	})
	if err != nil {
		return api.Session{}, err
	}
	// The parent chain down to the destination's commit, as a push sends
	// it, so that the update rule can see the history.
	c, err := src.repo.ReadCommit(ctx, sum)
	if err != nil {
		return api.Session{}, err
	}
	for i := 0; c.Parent != nil && (old == nil || *c.Parent != *old) && i < maxPromoteParents; i++ {
		p := *c.Parent
		if c, err = src.repo.ReadCommit(ctx, p); err != nil {
			break // the source does not have it: the history ends here
		}
		if err := add(object.Name{Sum: p, Type: object.Commit}); err != nil {
			return api.Session{}, err
		}
	}
	if err := flush(); err != nil {
		return api.Session{}, err
	}
	return s.commit(ctx, id, sid, false)
}

// linkAll stages the needed objects from src into the token's spool,
// verifying them on as many workers as there are verification slots (each
// taking its turn in them), and admits them in batches of promoteBatch.
func (s *Service) linkAll(ctx context.Context, id auth.Identity, sp *spool.Spool, sid string, src *Service, needed []string) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	names := make(chan string)
	staged := make(chan *store.Staged)
	var wg sync.WaitGroup
	for range s.verifying.slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := s.verifying.worker(ctx, id.Hash)
			defer w.Release()
			for n := range names {
				st, err := s.stageFrom(ctx, sp, src, n, w)
				if err != nil {
					cancel(err)
					return
				}
				select {
				case staged <- st:
				case <-ctx.Done():
					st.Discard()
					return
				}
			}
		}()
	}
	go func() {
		defer close(names)
		for _, n := range needed {
			select {
			case names <- n:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(staged) }()

	var batch []*store.Staged
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := sp.AdmitStaged(ctx, sid, batch) // discards what it does not admit
		batch = nil
		return err
	}
	for st := range staged {
		if context.Cause(ctx) != nil {
			st.Discard()
			continue
		}
		if batch = append(batch, st); len(batch) == promoteBatch {
			if err := flush(); err != nil {
				cancel(err)
			}
		}
	}
	if err := context.Cause(ctx); err != nil {
		for _, b := range batch {
			b.Discard()
		}
		return err
	}
	return flush()
}

// stageFrom stages one needed object of src, refusing a corrupt or
// missing one with what to do.
func (s *Service) stageFrom(ctx context.Context, sp *spool.Spool, src *Service, n string, w *worker) (*store.Staged, error) {
	name, err := object.ParseName(n)
	if err != nil {
		return nil, err
	}
	st, err := sp.Repo().StageLink(ctx, name, src.repo, s.verifyOptions(w))
	w.Release() // between objects, others may take the slot
	if err == nil {
		return st, nil
	}
	var ce *object.CorruptError
	switch {
	case errors.As(err, &ce):
		e := refuse(service.Unprocessable, "the source repository's %v: check it with ostree fsck", err)
		e.Body.Object = n
		return nil, e
	case errors.Is(err, store.ErrNotFound):
		e := refuse(service.Unprocessable, "the source repository lacks %s: check it with ostree fsck", n)
		e.Body.Object, e.Body.Missing = n, []string{n}
		return nil, e
	}
	return nil, err
}
