package repository

import (
	"context"
	"fmt"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/service"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// Prune removes the repository's history beyond a depth: every object that
// no ref reaches within depth parents below its commit (ostree prune
// --refs-only --depth), except those that sessions not yet published count
// on finding in production (negotiation answered that production holds
// them). It holds the publish lock, so no publish moves refs meanwhile,
// and libostree's exclusive repository lock. With static deltas, the
// deltas retired for good go first, and the targets of the others stay:
// libostree's prune would delete a delta with its target, before its grace
// period ends. by says who asks, for the log.
func (s *Service) Prune(ctx context.Context, req api.PruneRequest, by string) (api.PruneResult, error) {
	var res api.PruneResult
	if s.repo == nil || s.spools == nil {
		return res, refuse(service.Conflict, "prune runs in the daemon: start it and ask it (-a URL), or stop it and use ostree prune")
	}
	depth := s.cfg.PruneDepth
	if req.Depth != nil {
		depth = req.Depth
	}
	switch {
	case depth == nil:
		return res, refuse(service.Invalid, "no depth: pass one (prune --depth N) or set prune_depth for the repository")
	case *depth < -1 || *depth > api.MaxPruneDepth:
		return res, refuse(service.Invalid, "depth %d: want -1 (every ancestor) to %d", *depth, api.MaxPruneDepth)
	}
	if s.cfg.StaticDeltas && !req.DryRun {
		// Deltas whose grace period has passed go first (this waits for a
		// generation in progress, so before the publish lock).
		if _, err := s.RetireStaticDeltas(ctx); err != nil {
			return res, err
		}
	}
	st, opts, err := s.pruneExclusive(ctx, *depth, req.DryRun)
	if err != nil {
		return res, err
	}
	res = api.PruneResult{Depth: *depth, DryRun: req.DryRun, Objects: st.Objects, Pruned: st.Pruned, Bytes: st.Bytes}
	if kept, err := s.keptBeyond(ctx, opts, st); err == nil {
		res.Kept = kept
	}
	s.log.Info("pruned", "by", by, "depth", *depth, "dry_run", req.DryRun, "objects", st.Objects, "pruned", st.Pruned, "bytes", st.Bytes, "kept_for_sessions", res.Kept)
	return res, nil
}

// pruneExclusive prunes while none of the daemon's own writers of the
// repository runs: no static delta pass, no publish importing objects or
// moving refs, no summary regeneration, appstream update (which commits
// branches) or update_hook (they hold the publish lock). It returns the
// options it pruned with. The locks go in the order the deferred worker
// and publishes take them.
func (s *Service) pruneExclusive(ctx context.Context, depth int, dryRun bool) (store.PruneStats, store.PruneOptions, error) {
	s.deferred.deltaMu.Lock()
	defer s.deferred.deltaMu.Unlock()
	s.importMu.Lock()
	defer s.importMu.Unlock()
	s.publishMu.Lock()
	defer s.publishMu.Unlock()
	opts := store.PruneOptions{Depth: depth, DryRun: dryRun}
	var err error
	if opts.Objects, err = s.heldForSessions(ctx); err != nil {
		return store.PruneStats{}, opts, err
	}
	if opts.Commits, err = s.deltaTargets(ctx); err != nil {
		return store.PruneStats{}, opts, err
	}
	st, err := s.repo.Prune(ctx, opts)
	return st, opts, err
}

// heldForSessions lists the production objects that the open and
// publishing sessions' new commits reach: negotiation told their clients
// production holds them, so a prune must keep them.
func (s *Service) heldForSessions(ctx context.Context) ([]object.Name, error) {
	live, err := s.journal.LiveSessions(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[object.Name]bool{}
	var out []object.Name
	for _, sess := range live {
		if sess.State != journal.StateOpen && sess.State != journal.StatePublishing {
			continue
		}
		sp, err := s.spoolFor(ctx, sess.Owner)
		if err != nil {
			return nil, err
		}
		for _, r := range sess.Refs {
			c, err := object.ParseChecksum(r.New)
			if err != nil {
				return nil, fmt.Errorf("session %s: %w", sess.ID, err)
			}
			err = sp.Read(func(spool *store.Repo) error {
				return s.repo.HeldFor(ctx, spool, c, func(n object.Name) error {
					if !seen[n] {
						seen[n] = true
						out = append(out, n)
					}
					return nil
				})
			})
			if err != nil {
				return nil, fmt.Errorf("objects session %s counts on: %w", sess.ID, err)
			}
		}
	}
	return out, nil
}

// keptBeyond counts the objects that the prune done with opts (st) kept
// only because sessions count on them (opts.Objects). One dry run without
// them tells: after a prune, it counts those objects alone; beside a dry
// run, it counts them with the st.Pruned others.
func (s *Service) keptBeyond(ctx context.Context, opts store.PruneOptions, st store.PruneStats) (int, error) {
	if len(opts.Objects) == 0 {
		return 0, nil
	}
	without := opts
	without.Objects, without.DryRun = nil, true
	all, err := s.repo.Prune(ctx, without)
	if err != nil {
		return 0, err
	}
	if opts.DryRun {
		return all.Pruned - st.Pruned, nil
	}
	return all.Pruned, nil
}

// deltaTargets lists, with static deltas on, the target commits of the
// repository's deltas: a prune keeps them whole, so that a delta waiting
// for its retirement stays usable.
func (s *Service) deltaTargets(ctx context.Context) ([]object.Checksum, error) {
	if !s.cfg.StaticDeltas {
		return nil, nil
	}
	deltas, err := s.repo.ListDeltas(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[object.Checksum]bool{}
	var out []object.Checksum
	for _, d := range deltas {
		if !seen[d.To] {
			seen[d.To] = true
			out = append(out, d.To)
		}
	}
	return out, nil
}
