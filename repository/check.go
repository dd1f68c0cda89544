package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"strings"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/service"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// Check judges a push without making it (see service.Repository): each
// ref on its own, with the checks a session's creation runs and, with
// req.Publish, those its commit runs before anything is journaled (the
// publish scope, bindings, the update rule, pushed and required
// signatures), over the commits the client sent. Only what needs the
// pushed objects themselves (a complete commit, the tree limits) is left
// to the push. It creates, journals and writes nothing.
func (s *Service) Check(ctx context.Context, id auth.Identity, req api.CheckRequest) (api.CheckResult, error) {
	var none api.CheckResult
	req.Force, _ = s.accountOptions(id, req.Force, false)
	if err := s.checkRefCount(len(req.Refs)); err != nil {
		return none, err
	}
	sent, err := sentCommits(req.Commits)
	if err != nil {
		return none, err
	}
	prod, err := s.repo.ListRefs(ctx)
	if err != nil {
		return none, err
	}
	out := api.CheckResult{Refs: make([]api.RefCheck, len(req.Refs))}
	refuseRef := func(i int, e *service.Error) { out.Refs[i].Refusal = &e.Body }
	seen := map[string]bool{}
	var ok []int // the refs not refused so far, by index
	for i, r := range req.Refs {
		out.Refs[i].Name = r.Name
		if e := checkRefUpdate(id, r, prod, seen); e != nil {
			refuseRef(i, e)
			continue
		}
		ok = append(ok, i)
	}
	// Each ref that would be a directory of another is named, one at a
	// time, until the rest can live together.
	for {
		names := make([]string, len(ok))
		for j, i := range ok {
			names[j] = req.Refs[i].Name
		}
		e := refConflict(names, prod)
		if e == nil {
			break
		}
		for j, i := range ok {
			if req.Refs[i].Name == e.Body.Ref {
				refuseRef(i, e)
				ok = append(ok[:j], ok[j+1:]...)
				break
			}
		}
	}
	if !req.Publish {
		return out, nil
	}
	sp, err := s.spoolFor(ctx, id.Hash)
	if err != nil {
		return none, err
	}
	src := s.publishCommits(sp)
	src.sent = sent
	for _, i := range ok {
		r := req.Refs[i]
		if !id.Can(auth.ScopePublish) {
			e := refuse(service.Forbidden, "token %s may upload but not publish (its scopes: %s): push with --no-publish and have a token with the publish scope commit the session (ostree-upload sessions commit ID)",
				id.DisplayName(), strings.Join(id.Scopes, ", "))
			e.Body.Ref, e.Body.Code = r.Name, api.CodeScope
			refuseRef(i, e)
			continue
		}
		u := store.RefUpdate{Ref: r.Name}
		u.New, _ = object.ParseChecksum(r.New) // checked by checkRefUpdate
		if r.Old != "" {
			old, _ := object.ParseChecksum(r.Old)
			u.Old = &old
		}
		err := s.checkUpdate(ctx, src, req.Force, u)
		if err == nil {
			_, err = s.checkSignatures(ctx, src, "", id.Hash, u)
		}
		if e, refused := service.AsError(err); refused {
			refuseRef(i, e)
		} else if err != nil {
			return none, err
		}
	}
	return out, nil
}

// sentCommits verifies the commits of a check as strictly as uploaded
// ones, within the limits of a check, and indexes them by checksum.
func sentCommits(in []api.CommitData) (map[object.Checksum]sentCommit, error) {
	if len(in) > api.MaxCheckCommits {
		return nil, refuse(service.TooLarge, "%d commits in one check, at most %d", len(in), api.MaxCheckCommits)
	}
	total := 0
	for _, c := range in {
		total += len(c.Commit) + len(c.CommitMeta)
	}
	if total > api.MaxCheckBytes {
		return nil, refuse(service.TooLarge, "the commits of a check hold %d bytes, more than %d: send fewer", total, api.MaxCheckBytes)
	}
	out := make(map[object.Checksum]sentCommit, len(in))
	for i, c := range in {
		sum := object.Checksum(sha256.Sum256(c.Commit))
		if _, err := object.Verify(object.Name{Sum: sum, Type: object.Commit}, bytes.NewReader(c.Commit)); err != nil {
			return nil, refuse(service.Invalid, "commits[%d]: %v", i, err)
		}
		info, err := object.ParseCommit(sum, c.Commit, true)
		if err != nil {
			return nil, refuse(service.Invalid, "commits[%d]: %v", i, err)
		}
		sc := sentCommit{info: info, data: c.Commit}
		if len(c.CommitMeta) > 0 {
			if _, err := object.Verify(object.Name{Sum: sum, Type: object.CommitMeta}, bytes.NewReader(c.CommitMeta)); err != nil {
				return nil, refuse(service.Invalid, "commits[%d]: %v", i, err)
			}
			sc.meta = c.CommitMeta
		}
		out[sum] = sc
	}
	return out, nil
}
