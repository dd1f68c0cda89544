package repository

import (
	"context"
	"errors"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/service"
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
// session is made aborts it.
func (s *Service) Promote(ctx context.Context, id auth.Identity, from service.Repository, req api.PromoteRequest) (api.Session, error) {
	src, ok := from.(*Service)
	if !ok {
		return api.Session{}, errors.New("promote: the source is not a repository of this daemon")
	}
	if req.To == "" {
		req.To = req.Ref
	}
	if err := store.ValidateRef(req.Ref); err != nil {
		return api.Session{}, refuse(service.Invalid, "ref %q: %v", req.Ref, err)
	}
	if !id.AllowsRef(req.Ref) {
		e := refuse(service.Forbidden, "token %s may not use ref %s", id.DisplayName(), req.Ref)
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
	sess, _, err := s.CreateSession(ctx, id, api.SessionRequest{
		Refs: []api.RefUpdate{{Name: req.To, New: sum.String()}}, Force: req.Force, DryRun: req.DryRun})
	if err != nil || req.DryRun {
		return sess, err
	}
	out, err := s.promote(ctx, id, src, sess.ID, sum)
	if err != nil {
		if _, refused := service.AsError(err); refused {
			if aerr := s.Abort(ctx, id, sess.ID); aerr != nil {
				s.log.Warn("promote: cannot abort the refused session", "session", sess.ID, "err", aerr)
			}
		}
		return out, err
	}
	return out, nil
}

func (s *Service) promote(ctx context.Context, id auth.Identity, src *Service, sid string, sum object.Checksum) (api.Session, error) {
	// The names of the commit's objects, asked of the session in batches:
	// it answers those production lacks.
	var needed []string
	var names []string
	ask := func() error {
		n, err := s.Negotiate(ctx, id, sid, names)
		needed = append(needed, n...)
		names = names[:0]
		return err
	}
	err := src.repo.Walk(ctx, sum, func(n object.Name) error {
		if n.Type == object.CommitMeta {
			return nil
		}
		names = append(names, n.String())
		if len(names) == api.MaxNamesPerRequest {
			return ask()
		}
		return nil
	})
	if err != nil {
		return api.Session{}, err
	}
	if err := ask(); err != nil {
		return api.Session{}, err
	}
	sp, err := s.spools.For(ctx, id.Hash)
	if err != nil {
		return api.Session{}, err
	}
	var batch []*store.Staged
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := sp.AdmitStaged(ctx, sid, batch)
		batch = nil
		return err
	}
	for _, n := range needed {
		name, err := object.ParseName(n)
		if err != nil {
			return api.Session{}, err
		}
		st, err := sp.Repo().StageLink(ctx, name, src.repo)
		if err != nil {
			for _, b := range batch {
				b.Discard()
			}
			return api.Session{}, err
		}
		if batch = append(batch, st); len(batch) == promoteBatch {
			if err := flush(); err != nil {
				return api.Session{}, err
			}
		}
	}
	if err := flush(); err != nil {
		return api.Session{}, err
	}
	return s.Commit(ctx, id, sid, false)
}
