package repository

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/internal/failpoint"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/service"
	"github.com/ostree-upload/ostree-upload/spool"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// Commit publishes a session of the token, or a staged session it may
// publish; force agrees to another token's forced session (see
// service.Repository).
func (s *Service) Commit(ctx context.Context, id auth.Identity, sid string, force bool) (api.Session, error) {
	out, err := s.commit(ctx, id, sid, force)
	if e, ok := service.AsError(err); ok && e.Body.Code == api.CodeCheckFailed {
		e.Body.Error += "; the session stays open: push a fixed build, or commit again once the check passes"
	}
	return out, err
}

// commit is Commit, for Commit and Promote, which say what follows a
// refusal by check_hook.
func (s *Service) commit(ctx context.Context, id auth.Identity, sid string, force bool) (api.Session, error) {
	sess, unlock, err := s.lockedSession(ctx, id, sid, true)
	if err != nil {
		return api.Session{}, err
	}
	defer unlock()
	switch sess.State {
	case journal.StatePublished:
		// Idempotent: repeating a successful commit returns the same answer.
	case journal.StateOpen, journal.StatePublishing:
		for _, r := range sess.Refs {
			if !id.AllowsRef(r.Ref) {
				e := refuse(service.Forbidden, "token %s may not push ref %s", id.DisplayName(), r.Ref)
				e.Body.Ref = r.Ref
				return api.Session{}, e
			}
		}
		if sess.Owner != id.Hash {
			if sess.Force && !force {
				e := refuse(service.Conflict, "session %s of token %s was made with force: it may move refs backwards or to unrelated commits; commit with force to agree", sess.ID, sess.OwnerName)
				e.Body.Code = api.CodeForce
				return api.Session{}, e
			}
			s.log.Info("publishing another token's session", "session", sess.ID, "token", id.DisplayName(), "owner", sess.OwnerName)
		}
		if err := s.settleSession(ctx, sess.ID); err != nil {
			return api.Session{}, err
		}
		if err := s.publish(context.WithoutCancel(ctx), sess); err != nil {
			var he *service.Error
			if sess.Owner != id.Hash && errors.As(err, &he) && len(he.Body.Missing) > 0 {
				he.Body.Error += fmt.Sprintf("; only token %s can send them: rerun its push --no-publish, then commit again", sess.OwnerName)
			}
			return api.Session{}, err
		}
	default:
		return api.Session{}, refuse(service.Conflict, "session is %s: %s", sess.State, sess.Result)
	}
	if sess, err = s.journal.Get(ctx, sess.ID); err != nil {
		return api.Session{}, err
	}
	return s.sessionView(ctx, sess)
}

func updatesOf(sess journal.Session) ([]store.RefUpdate, error) {
	out := make([]store.RefUpdate, 0, len(sess.Refs))
	for _, r := range sess.Refs {
		u := store.RefUpdate{Ref: r.Ref}
		var err error
		if u.New, err = object.ParseChecksum(r.New); err != nil {
			return nil, err
		}
		if r.Old != "" {
			old, err := object.ParseChecksum(r.Old)
			if err != nil {
				return nil, err
			}
			u.Old = &old
		}
		out = append(out, u)
	}
	return out, nil
}

// commits is where the checks of a publish read the commits they judge
// and the detached metadata the push brings: the production repository
// and the token's spool; a check (a dry run) also reads the commits its
// client sent, which the daemon may not hold yet. Publish and check run
// the same checks over it.
type commits struct {
	repos []*store.Repo
	spool *store.Repo
	sent  map[object.Checksum]sentCommit
}

// sentCommit is a commit a check's client sent, verified against its name.
type sentCommit struct {
	info       *object.CommitInfo
	data, meta []byte
}

// publishCommits is what a publish of the token whose spool is sp reads.
func (s *Service) publishCommits(sp *spool.Spool) commits {
	return commits{repos: []*store.Repo{s.repo, sp.Repo()}, spool: sp.Repo()}
}

func (c commits) read(ctx context.Context, sum object.Checksum) (*object.CommitInfo, error) {
	if sc, ok := c.sent[sum]; ok {
		return sc.info, nil
	}
	return store.ReadCommitIn(ctx, sum, c.repos...)
}

// object returns the bytes of a commit, which signatures cover.
func (c commits) object(ctx context.Context, sum object.Checksum) ([]byte, error) {
	if sc, ok := c.sent[sum]; ok {
		return sc.data, nil
	}
	return commitObject(ctx, sum, c.repos...)
}

// pushedMeta returns the detached metadata the push brings for a commit:
// what the client sent, else the spool's copy; nil for none.
func (c commits) pushedMeta(ctx context.Context, sum object.Checksum) ([]byte, error) {
	if sc, ok := c.sent[sum]; ok && sc.meta != nil {
		return sc.meta, nil
	}
	if c.spool == nil {
		return nil, nil
	}
	return c.spool.CommitMeta(ctx, sum)
}

// checkUpdates runs checkUpdate on each of updates. It returns the refs
// whose new commit has the content of the current one: they stay where
// they are while the others move, and when every ref is such, the publish
// is refused as up to date (same content).
func (s *Service) checkUpdates(ctx context.Context, src commits, force bool, updates []store.RefUpdate) (unchanged []string, err error) {
	var same error
	for _, u := range updates {
		err := s.checkUpdate(ctx, src, force, u)
		if e, ok := service.AsError(err); ok && e.Body.Code == api.CodeSameContent {
			unchanged, same = append(unchanged, u.Ref), err
			continue
		}
		if err != nil {
			return nil, err
		}
	}
	if len(unchanged) == len(updates) && same != nil {
		return nil, same
	}
	return unchanged, nil
}

// checkUpdate refuses what clients would refuse or what would lose
// history: a new commit the server does not hold, a commit bound to other
// refs or another collection (whatever force says: every libostree client
// would refuse to pull it), and, unless forced, a move the update rule
// refuses.
func (s *Service) checkUpdate(ctx context.Context, src commits, force bool, u store.RefUpdate) error {
	nc, err := src.read(ctx, u.New)
	if errors.Is(err, store.ErrNotFound) {
		e := refuse(service.Unprocessable, "commit %s of ref %s has not been uploaded", u.New, u.Ref)
		e.Body.Ref, e.Body.Missing = u.Ref, []string{u.New.String() + ".commit"}
		return e
	}
	if err != nil {
		return err
	}
	if len(nc.RefBindings) > 0 && !slices.Contains(nc.RefBindings, u.Ref) {
		e := refuse(service.Conflict, "commit %s is bound to refs %v, not %s: clients would refuse it under %s whatever --force says; commit it again bound to %s (ostree commit -b %s)", u.New, nc.RefBindings, u.Ref, u.Ref, u.Ref, u.Ref)
		e.Body.Ref, e.Body.Code = u.Ref, api.CodeBinding
		return e
	}
	if collection := s.repo.CollectionID(); nc.CollectionBinding != "" && collection != "" && nc.CollectionBinding != collection {
		e := refuse(service.Conflict, "commit %s is bound to collection %s, and this repository is collection %s: clients would refuse it whatever --force says", u.New, nc.CollectionBinding, collection)
		e.Body.Ref, e.Body.Code = u.Ref, api.CodeBinding
		return e
	}
	if force || u.Old == nil || *u.Old == u.New {
		return nil
	}
	oc, err := src.read(ctx, *u.Old)
	if err != nil {
		return err
	}
	return s.updateRule(ctx, src, u, nc, oc)
}

// updateRule judges an unforced move of a ref from the commit oc to nc
// (ostree-push's rule): nc must be newer than oc, whatever its parents
// (with require_ancestry, also a descendant of oc), and not the same
// content (same tree and metadata: a reproducible rebuild moves nothing).
// An older commit is refused because every libostree client refuses such
// a downgrade; --force publishes either anyway.
func (s *Service) updateRule(ctx context.Context, src commits, u store.RefUpdate, nc, oc *object.CommitInfo) error {
	if nc.SameContent(oc) {
		e := refuse(service.Conflict, "ref %s: commit %s has the tree and metadata of %s: up to date (same content); push with --force to publish it anyway", u.Ref, u.New, u.Old)
		e.Body.Ref, e.Body.Code = u.Ref, api.CodeSameContent
		return e
	}
	if s.cfg.RequireAncestry {
		ok, err := store.IsAncestor(ctx, *u.Old, u.New, src.read)
		if err != nil {
			return err
		}
		if !ok || nc.Timestamp.Before(oc.Timestamp) {
			e := refuse(service.Conflict, "ref %s: %s is not a fast-forward of %s, and this repository requires one (require_ancestry); push with --force to publish it anyway", u.Ref, u.New, u.Old)
			e.Body.Ref, e.Body.Code = u.Ref, api.CodeNotNewer
			return e
		}
		return nil
	}
	if !nc.Timestamp.After(oc.Timestamp) {
		e := refuse(service.Conflict, "ref %s: commit %s (%s) is not newer than %s (%s), and clients refuse a downgrade; push with --force to publish it anyway",
			u.Ref, u.New, nc.Timestamp.Format(time.RFC3339), u.Old, oc.Timestamp.Format(time.RFC3339))
		e.Body.Ref, e.Body.Code = u.Ref, api.CodeNotNewer
		return e
	}
	return nil
}

// publishPlan is what a publish does: the refs it leaves unchanged (see
// checkUpdates), and what it adds to each new commit's detached metadata:
// the pushed signatures it keeps.
type publishPlan struct {
	unchanged []string
	sigs      map[object.Checksum]object.Signatures
}

// preparePublish runs every check that can refuse a publish, before its
// intent is journaled and outside the publish lock, so that a refused
// publish costs no other push anything and an intent, once written, can
// always be finished: the refs still as the session saw them, no ref name
// under another, the update rule and bindings, each new commit complete and
// within the tree limits, its pushed signatures well-formed and within the
// limits once merged, and the signatures the repository requires present.
func (s *Service) preparePublish(ctx context.Context, sess journal.Session, sp *spool.Spool, updates []store.RefUpdate) (publishPlan, error) {
	plan := publishPlan{sigs: map[object.Checksum]object.Signatures{}}
	if err := s.checkRefNames(ctx, sess); err != nil {
		return plan, err
	}
	if err := s.repo.Check(ctx, sp.Repo(), updates); err != nil {
		return plan, err
	}
	src := s.publishCommits(sp)
	var err error
	if plan.unchanged, err = s.checkUpdates(ctx, src, sess.Force, updates); err != nil {
		return plan, err
	}
	for _, u := range updates {
		if slices.Contains(plan.unchanged, u.Ref) {
			continue
		}
		if _, ok := plan.sigs[u.New]; ok {
			continue
		}
		sigs, err := s.checkSignatures(ctx, src, sess.ID, sess.Owner, u)
		if err != nil {
			return plan, err
		}
		plan.sigs[u.New] = sigs
	}
	return plan, nil
}

// checkSignatures returns the signatures the push of owner (in session
// sid, for the log) may add to u's new commit, refusing detached metadata
// that is malformed or over the limits once merged with production's, and
// a commit without the signatures the repository requires.
func (s *Service) checkSignatures(ctx context.Context, src commits, sid, owner string, u store.RefUpdate) (object.Signatures, error) {
	sigs, err := s.pushedSignatures(ctx, src, sid, owner, u.New, true)
	if err != nil {
		e := refuse(service.Unprocessable, "detached metadata of commit %s: %v", u.New, err)
		e.Body.Ref, e.Body.Object = u.Ref, u.New.String()+".commitmeta"
		return sigs, e
	}
	meta, err := s.mergedMeta(ctx, u.New, sigs)
	if err != nil {
		return sigs, metaLimit(u, err)
	}
	if s.cfg.SignVerify || s.cfg.GPGVerify {
		if err := s.verifySigned(ctx, src, u.New, meta); err != nil {
			e := refuse(service.Unprocessable, "commit %s of ref %s: %v", u.New, u.Ref, err)
			e.Body.Ref, e.Body.Code = u.Ref, api.CodeNotSigned
			return sigs, e
		}
	}
	return sigs, nil
}

// checkLocked repeats, under the publish lock and just before the intent,
// the checks another publish may have changed the answer to: the refs, ref
// names, the scope of each commit's metadata and the merged metadata's
// limits. They cost a few milliseconds.
func (s *Service) checkLocked(ctx context.Context, sess journal.Session, sp *spool.Spool, updates []store.RefUpdate, plan *publishPlan) error {
	if err := s.checkRefNames(ctx, sess); err != nil {
		return err
	}
	refs, err := s.repo.ListRefs(ctx)
	if err != nil {
		return err
	}
	for _, u := range updates {
		cur, ok := refs[u.Ref]
		if !(ok && (cur == u.New || u.Old != nil && cur == *u.Old) || !ok && u.Old == nil) {
			e := &store.RefMovedError{Ref: u.Ref, Want: u.Old}
			if ok {
				e.Got = &cur
			}
			return e
		}
		sigs := plan.sigs[u.New]
		if sigs.Len() == 0 {
			continue
		}
		if ref := s.lockedMetaRef(ctx, sess.Owner, u.New, refs); ref != "" {
			s.log.Warn("pushed signatures left out: the commit is published under a ref the token may not push", "session", sess.ID, "commit", u.New, "ref", ref)
			plan.sigs[u.New] = object.Signatures{}
			continue
		}
		if _, err := s.mergedMeta(ctx, u.New, sigs); err != nil {
			return metaLimit(u, err)
		}
	}
	return nil
}

func metaLimit(u store.RefUpdate, err error) error {
	var le *object.MetaLimitError
	if !errors.As(err, &le) {
		return err
	}
	e := refuse(service.Unprocessable, "commit %s of ref %s: %v: push fewer signatures", u.New, u.Ref, err)
	e.Body.Ref, e.Body.Code = u.Ref, api.CodeMetaLimit
	return e
}

// checkRefNames refuses a session whose refs cannot exist beside each
// other or beside production's: refs are files under refs/heads, so no ref
// may be a directory of another.
func (s *Service) checkRefNames(ctx context.Context, sess journal.Session) error {
	refs, err := s.repo.ListRefs(ctx)
	if err != nil {
		return err
	}
	names := make([]string, len(sess.Refs))
	for i, r := range sess.Refs {
		names[i] = r.Ref
	}
	if e := refConflict(names, refs); e != nil {
		return e
	}
	return nil
}

// recoveryPlan is the plan of a publish whose intent is journaled already
// (finished at start-up, or a commit repeated after a failure): the pushed
// signatures checked again, without refusing anything; what no longer
// passes is left out, so that the publish always finishes.
func (s *Service) recoveryPlan(ctx context.Context, sess journal.Session, sp *spool.Spool, updates []store.RefUpdate) publishPlan {
	plan := publishPlan{sigs: map[object.Checksum]object.Signatures{}}
	src := s.publishCommits(sp)
	for _, u := range updates {
		sigs, err := s.pushedSignatures(ctx, src, sess.ID, sess.Owner, u.New, false)
		if err == nil {
			_, err = s.mergedMeta(ctx, u.New, sigs)
		}
		if err != nil {
			s.log.Warn("pushed signatures left out of an interrupted publish", "session", sess.ID, "commit", u.New, "err", err)
			sigs = object.Signatures{}
		}
		plan.sigs[u.New] = sigs
	}
	return plan
}

// pushedSignatures returns what the push of owner (in session sid, for the
// log) may add to a commit's detached metadata: the signatures of the
// pushed .commitmeta (nothing else of it), each well-formed, and, where the
// repository trusts particular keys, only those that verify against them.
// Nothing at all when production already publishes the commit under a ref
// the owner may not push (see lockedMetaRef). strict refuses malformed
// metadata; otherwise it is left out.
func (s *Service) pushedSignatures(ctx context.Context, src commits, sid, owner string, sum object.Checksum, strict bool) (object.Signatures, error) {
	var none object.Signatures
	pushed, err := src.pushedMeta(ctx, sum)
	if err != nil || len(pushed) == 0 {
		return none, err
	}
	sigs, err := object.SignaturesOf(pushed)
	if err != nil {
		if strict {
			return none, err
		}
		return none, nil
	}
	if sigs.Len() == 0 {
		return none, nil
	}
	refs, err := s.repo.ListRefs(ctx)
	if err != nil {
		return none, err
	}
	if ref := s.lockedMetaRef(ctx, owner, sum, refs); ref != "" {
		s.log.Warn("pushed signatures left out: the commit is published under a ref the token may not push", "session", sid, "commit", sum, "ref", ref)
		return none, nil
	}
	data, err := src.object(ctx, sum)
	if err != nil {
		return none, err
	}
	if len(s.trustedKeys) > 0 {
		sigs.Ed25519 = object.TrustedEd25519(sigs.Ed25519, data, s.trustedKeys)
	}
	if len(sigs.GPG) > 0 && (s.cfg.GPGVerify || s.cfg.GPGTrustedKeys != "") {
		if sigs.GPG, err = s.repo.TrustedGPG(ctx, sigs.GPG, data, "", s.cfg.GPGTrustedKeys); err != nil {
			return none, err
		}
	}
	return sigs, nil
}

// lockedMetaRef returns a ref of production that points at commit sum and
// that the token owner may not push, or "": the detached metadata of a
// commit production publishes may be changed only by a token whose refs
// cover every ref that points at it, since every client of those refs
// verifies it.
func (s *Service) lockedMetaRef(ctx context.Context, owner string, sum object.Checksum, refs map[string]object.Checksum) string {
	id, ok := s.tokens.Load().Lookup(owner)
	for ref, c := range refs {
		if c == sum && (!ok || !id.AllowsRef(ref)) {
			return ref
		}
	}
	return ""
}

// mergedMeta is a commit's detached metadata as a publish would write it
// before signing: production's, with sigs added, leaving room under the
// limits for the daemon's own signatures.
func (s *Service) mergedMeta(ctx context.Context, sum object.Checksum, sigs object.Signatures) ([]byte, error) {
	prod, err := s.repo.CommitMeta(ctx, sum)
	if err != nil {
		return nil, err
	}
	return object.AddSignaturesLeaving(prod, sigs, s.signRoom())
}

// publish moves a session's refs. Every check that can refuse it runs
// first (preparePublish, check_hook, checkLocked; the session's objects
// are imported between the last two, outside the publish lock); then a
// journaled intent makes the publish survive a crash at any point:
// recovery (or the client's retry) runs this again, and every step is
// idempotent.
func (s *Service) publish(ctx context.Context, sess journal.Session) (err error) {
	defer func() {
		var he *service.Error
		switch {
		case err == nil || errors.As(err, &he):
		case errors.Is(err, store.ErrLocked):
			s.metrics.publishErrors.Inc()
			s.log.Warn("publish waits: the repository is locked by another process", "session", sess.ID, "err", err)
			e := refuse(service.Unavailable, "the production repository is locked by another process (an ostree prune?); the commit is safe to repeat: retry later")
			e.RetryAfter = time.Second * 30
			err = e
		default:
			s.metrics.publishErrors.Inc()
		}
	}()
	updates, err := updatesOf(sess)
	if err != nil {
		return err
	}
	// Only the session's own token's verified objects may complete it.
	sp, err := s.spoolFor(ctx, sess.Owner)
	if err != nil {
		return err
	}
	var plan publishPlan
	steps := stepTimer{last: time.Now()}
	if sess.State == journal.StateOpen {
		if plan, err = s.preparePublish(ctx, sess, sp, updates); err != nil {
			return s.refused(ctx, sess, err)
		}
		sess.Unchanged = plan.unchanged
		steps.done("prepare")
	}
	// From here on, sess.Refs and updates are what moves.
	sess.Refs = slices.DeleteFunc(slices.Clone(sess.Refs), func(r journal.RefUpdate) bool { return slices.Contains(sess.Unchanged, r.Ref) })
	updates = slices.DeleteFunc(updates, func(u store.RefUpdate) bool { return slices.Contains(sess.Unchanged, u.Ref) })
	if sess.State == journal.StateOpen && len(s.cfg.CheckHook) > 0 {
		// Outside the publish lock: a slow check holds up no other
		// publish, and checkLocked below sees refs moved meanwhile.
		if err := s.runCheck(ctx, sess, sp, updates, plan); err != nil {
			return s.refused(ctx, sess, err)
		}
		steps.done("check_hook")
	}
	var im *store.Import
	if sess.State == journal.StateOpen {
		if im, err = s.importObjects(ctx, sp, updates); err != nil {
			return s.refused(ctx, sess, err)
		}
		steps.done("import")
		failpoint.Hit("after-import")
		if s.afterImport != nil {
			s.afterImport()
		}
	}
	start, err := s.moveRefs(ctx, sess, sp, updates, plan, im, &steps)
	s.endImport(im)
	if err != nil {
		return err
	}
	steps.done("refs")
	failpoint.Hit("after-refs")
	result, err := s.updateMetadata(ctx, sess)
	if err != nil {
		return err
	}
	steps.done("metadata")
	failpoint.Hit("after-summary")
	s.metrics.publishSeconds.Observe(time.Since(start).Seconds())
	// Work left for after the answer starts now (deferred.go), while the
	// intent still keeps its journal record: a run that began before the
	// refs moved cannot clear it.
	s.wake(s.deferredOf(sess)...)
	if err := s.recordPublished(ctx, sess, result); err != nil {
		return err
	}
	s.releaseLater(sess)
	steps.done("finish")
	s.metrics.published.Inc()
	s.metrics.lastPublish.SetToCurrentTime()
	log := []any{"token", sess.OwnerName, "refs", refMoves(sess), "session", sess.ID, "duration", time.Since(start).Round(time.Millisecond), "steps", steps.String()}
	if len(sess.Unchanged) > 0 {
		log = append(log, "same_content", strings.Join(sess.Unchanged, ", "))
	}
	s.log.Info("published", log...)
	return nil
}

// importObjects imports into production the objects of the new commits
// of updates but the commits themselves (store.Repo.Import), outside the
// publish lock: a million objects go in while other publishes move their
// refs. preparePublish found the commits complete: only what changes
// meanwhile can still refuse the publish (checkLocked's refs, ref names
// and merged signatures; the repository locked by another process),
// leaving what went in unreferenced for a repeated commit to find. Until endImport, it holds importMu shared, so
// that a prune waits rather than delete what went in before a ref names
// it.
func (s *Service) importObjects(ctx context.Context, sp *spool.Spool, updates []store.RefUpdate) (*store.Import, error) {
	s.importMu.RLock()
	var im *store.Import
	err := sp.Read(func(r *store.Repo) error {
		var err error
		im, err = s.repo.Import(ctx, r, updates)
		return err
	})
	if err != nil {
		s.importMu.RUnlock()
		return nil, err
	}
	return im, nil
}

// endImport lets go of what importObjects holds (nothing for nil).
func (s *Service) endImport(im *store.Import) {
	if im != nil {
		im.Close()
		s.importMu.RUnlock()
	}
}

// moveRefs runs the part of a publish that holds the publish lock: the
// checks that need it, the intent (for an open session), the signatures,
// and the commits and refs into production, after the objects that im
// imported (nil: a recovery, which imports them itself). It returns when
// the refs moved (start: when the intent was written or found).
func (s *Service) moveRefs(ctx context.Context, sess journal.Session, sp *spool.Spool, updates []store.RefUpdate, plan publishPlan, im *store.Import, steps *stepTimer) (time.Time, error) {
	s.publishMu.Lock()
	defer s.publishMu.Unlock()
	if sess.State == journal.StateOpen {
		if err := s.checkLocked(ctx, sess, sp, updates, &plan); err != nil {
			return time.Time{}, s.refused(ctx, sess, err)
		}
		steps.done("check")
		in := journal.Intent{Session: sess.ID, Refs: sess.Refs, Step: "refs", Created: time.Now(), Deferred: s.deferredOf(sess)}
		if s.deltasDeferred(sess) {
			in.Heads = s.headsToKeep()
		}
		if err := s.journal.SetPublishing(ctx, in, sess.Unchanged); err != nil {
			return time.Time{}, err
		}
		steps.done("intent")
	} else {
		plan = s.recoveryPlan(ctx, sess, sp, updates)
	}
	failpoint.Hit("after-intent")
	start := time.Now()
	// Signatures go in with the refs' transaction, over whatever the
	// spool's copy of a commit's detached metadata says.
	detached := map[object.Checksum][]byte{}
	for _, u := range updates {
		meta, err := s.finalMeta(ctx, u.New, sp, plan.sigs[u.New])
		if err != nil {
			return time.Time{}, fmt.Errorf("publish session %s: %w", sess.ID, err)
		}
		detached[u.New] = meta
	}
	failpoint.Hit("after-sign")
	// The session's objects stay in the spool until imported.
	err := sp.Read(func(r *store.Repo) error {
		if im != nil {
			return im.Publish(ctx, r, detached)
		}
		return s.repo.Publish(ctx, r, updates, detached)
	})
	var moved *store.RefMovedError
	var missing *store.MissingError
	switch {
	case errors.As(err, &moved), errors.As(err, &missing):
		if err := s.journal.DeleteIntent(ctx, sess.ID); err != nil {
			return time.Time{}, err
		}
		if errors.As(err, &missing) {
			// Back to open, so that the missing objects can be sent.
			if err := s.journal.SetState(ctx, sess.ID, journal.StateOpen, err.Error()); err != nil {
				return time.Time{}, err
			}
		}
		sess.State = journal.StatePublishing
		return time.Time{}, s.refused(ctx, sess, err)
	case err != nil:
		return time.Time{}, fmt.Errorf("publish session %s: %w", sess.ID, err)
	}
	return start, nil
}

// stepTimer measures the steps of a publish for its log line; each step
// begins when the one before ended (the first when the timer was made).
type stepTimer struct {
	last  time.Time
	steps []string
}

// done ends the step named name.
func (t *stepTimer) done(name string) {
	now := time.Now()
	t.steps = append(t.steps, fmt.Sprintf("%s %s", name, now.Sub(t.last).Round(100*time.Microsecond)))
	t.last = now
}

func (t *stepTimer) String() string { return strings.Join(t.steps, ", ") }

// refMoves is a session's ref updates for a log line: "ref old → new"
// each, with short checksums ("(new)" for a new ref).
func refMoves(sess journal.Session) string {
	short := func(c string) string {
		if c == "" {
			return "(new)"
		}
		return c[:min(12, len(c))]
	}
	out := make([]string, len(sess.Refs))
	for i, r := range sess.Refs {
		out[i] = r.Ref + " " + short(r.Old) + " → " + short(r.New)
	}
	return strings.Join(out, ", ")
}

// refused turns what refused a publish into its answer: a ref that moved
// ends the session (it can never publish) with 409; missing objects leave
// it open with 422 listing them; a tree over the limits is 422.
func (s *Service) refused(ctx context.Context, sess journal.Session, err error) error {
	if e, ok := service.AsError(err); ok {
		s.log.Info("publish refused", "token", sess.OwnerName, "refs", refMoves(sess), "session", sess.ID, "reason", e.Body.Error)
	}
	var moved *store.RefMovedError
	var missing *store.MissingError
	switch {
	case errors.As(err, &moved):
		s.log.Warn("publish refused", "session", sess.ID, "err", err)
		if err := s.dropSession(ctx, sess, journal.StateFailed, err.Error(), false); err != nil {
			return err
		}
		e := refuse(service.Conflict, "%v: create a new session from the current state", err)
		e.Body.Ref = moved.Ref
		return e
	case errors.As(err, &missing):
		e := refuse(service.Unprocessable, "%v: upload the missing objects and commit again", err)
		for _, n := range missing.Missing {
			e.Body.Missing = append(e.Body.Missing, n.String())
		}
		return e
	case errors.Is(err, store.ErrTreeLimit):
		e := refuse(service.Unprocessable, "%v: libostree's tools cannot handle such a commit; the session stays open", err)
		e.Body.Code = api.CodeTreeLimit
		return e
	}
	return err
}

// recordPublished records a publish's success and deletes the session's
// uploads. Its spool objects (now in the repo, or not needed) are freed by
// releasePublished, which ends the intent.
func (s *Service) recordPublished(ctx context.Context, sess journal.Session, result string) error {
	if err := s.journal.SetState(ctx, sess.ID, journal.StatePublished, result); err != nil {
		return err
	}
	return s.deleteUploads(ctx, sess.ID)
}

// releasePublished frees a published session's spool objects, then
// deletes its intent: until then, a crash leaves the release to the next
// start (or the janitor), which runs this again.
func (s *Service) releasePublished(ctx context.Context, sess journal.Session) error {
	if err := s.releaseSpool(ctx, sess); err != nil {
		return err
	}
	failpoint.Hit("before-intent-done")
	return s.journal.DeleteIntent(ctx, sess.ID)
}

// releaseLater runs releasePublished after the answer to the publish of
// sess, which holds the session's lock until then: freeing a million spool
// files takes seconds that the client need not wait for. A release that
// Close (or Stop) cuts short, or that fails, is finished by the janitor or
// the next start, as the intent is still there. Settle waits for it.
func (s *Service) releaseLater(sess journal.Session) {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.life.Err() != nil {
		return // stopping: the next start finishes the intent
	}
	s.releasing.Add(1)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer s.releasing.Add(-1)
		unlock := s.lockSession(sess.ID)
		defer unlock()
		start := time.Now()
		if err := s.releasePublished(s.life, sess); err != nil {
			if s.life.Err() == nil {
				s.log.Warn("freeing a published session's spool files failed; the janitor retries", "session", sess.ID, "err", err)
			}
			return
		}
		s.log.Info("published session's spool files freed", "session", sess.ID, "duration", time.Since(start).Round(time.Millisecond))
	}()
}

func commitObject(ctx context.Context, sum object.Checksum, repos ...*store.Repo) ([]byte, error) {
	for _, r := range repos {
		b, err := r.CommitObject(ctx, sum)
		if !errors.Is(err, store.ErrNotFound) {
			return b, err
		}
	}
	return nil, fmt.Errorf("commit %s: %w", sum, store.ErrNotFound)
}

// verifySigned checks that meta, a new commit's detached metadata as it
// would be published, carries a valid signature by a trusted key.
func (s *Service) verifySigned(ctx context.Context, src commits, sum object.Checksum, meta []byte) error {
	data, err := src.object(ctx, sum)
	if err != nil {
		return err
	}
	if s.cfg.GPGVerify {
		if err := s.repo.VerifyGPG(ctx, meta, data, "", s.cfg.GPGTrustedKeys); err != nil {
			return err
		}
	}
	if s.cfg.SignVerify {
		return object.VerifyEd25519(meta, data, s.trustedKeys)
	}
	return nil
}

// finalMeta is a new commit's detached metadata as a publish writes it:
// production's, with the push's signatures sigs added, signed with every
// configured key. Computing it again after a crash signs nothing twice.
func (s *Service) finalMeta(ctx context.Context, sum object.Checksum, sp *spool.Spool, sigs object.Signatures) ([]byte, error) {
	meta, err := s.repo.CommitMeta(ctx, sum)
	if err != nil {
		return nil, err
	}
	if m, err := object.AddSignaturesLeaving(meta, sigs, s.signRoom()); err == nil {
		meta = m
	} else {
		// Production's changed behind the daemon's back since the checks:
		// the pushed signatures are left out rather than the publish.
		s.log.Warn("pushed signatures left out", "commit", sum, "err", err)
	}
	if len(s.signKeys) > 0 || len(s.cfg.GPGSign) > 0 {
		data, err := commitObject(ctx, sum, s.repo, sp.Repo())
		if err != nil {
			return nil, err
		}
		if len(s.cfg.GPGSign) > 0 && !s.gpgSigned(ctx, meta, data) {
			if meta, err = s.repo.SignGPG(ctx, meta, data, s.cfg.GPGSign, s.cfg.GPGHomedir); err != nil {
				return nil, err
			}
		}
		if meta, err = object.SignEd25519(meta, data, s.signKeys); err != nil {
			return nil, err
		}
	}
	return meta, nil
}

// signRoom is the room a merge of pushed signatures leaves for the
// daemon's own: an entry per key, and bytes for GPG signatures.
func (s *Service) signRoom() object.Room {
	return object.Room{GPG: len(s.cfg.GPGSign), Ed25519: len(s.signKeys), Bytes: len(s.cfg.GPGSign)*2048 + len(s.signKeys)*80}
}

// updateMetadata runs after the refs moved: the built-in update (the
// summary, regenerated and signed, shared with the publishes that wait for
// one at the same time) or, as ostree-push's receiver does, the configured
// update_hook instead, one run per publish, or nothing with update off. A
// failing hook is logged and reported in the session's result; it does not
// undo the publish. Every branch may run again after a crash.
func (s *Service) updateMetadata(ctx context.Context, sess journal.Session) (string, error) {
	switch {
	case !s.cfg.Update:
		return "", nil
	case len(s.cfg.UpdateHook) > 0:
		// Under the publish lock, as a summary run: the hook reads the
		// refs of no publish half moved.
		s.publishMu.Lock()
		defer s.publishMu.Unlock()
		failpoint.Hit("before-hook")
		start := time.Now()
		err := s.runUpdateHook(ctx, sess)
		s.metrics.hookSeconds.Observe(time.Since(start).Seconds())
		if err != nil {
			s.metrics.hookFailures.Inc()
			s.log.Error("update_hook failed; the refs are published", "session", sess.ID, "err", err)
			return "published; update_hook failed: " + err.Error(), nil
		}
		return "", nil
	}
	if err := s.summaries.do(ctx, false, s.regenerateShared); err != nil {
		return "", err
	}
	return "", nil
}

// regenerateShared is regenerate as a run of the summary's group commit:
// bounded by summaryTimeout, whoever's request started it.
func (s *Service) regenerateShared(full bool) error {
	ctx, cancel := context.WithTimeout(s.life, summaryTimeout)
	defer cancel()
	return s.regenerate(ctx, full)
}

// regenerate updates the summary from the refs as they are now and signs
// it: flatpak build-update-repo for a Flatpak repository (full: with its
// appstream branches; see appstream.go), else libostree's.
func (s *Service) regenerate(ctx context.Context, full bool) error {
	start := time.Now()
	flatpak, err := s.isFlatpakRepo(ctx)
	if err != nil {
		return err
	}
	if flatpak {
		// Flatpak clients also need xa.cache and summary.idx, which only
		// flatpak writes; it signs with the GPG keys itself.
		if err := s.flatpakUpdateRepo(ctx, full); err != nil {
			return err
		}
	} else {
		if err := s.repo.RegenerateSummary(ctx); err != nil {
			return err
		}
		failpoint.Hit("before-summary-signature")
		if len(s.cfg.GPGSign) > 0 {
			if err := s.repo.SignSummaryGPG(ctx, s.cfg.GPGSign, s.cfg.GPGHomedir); err != nil {
				return err
			}
		}
	}
	if len(s.signKeys) > 0 {
		if err := s.repo.SignSummaryEd25519(s.signKeys); err != nil {
			return err
		}
	}
	if full {
		s.metrics.appstreamSeconds.Observe(time.Since(start).Seconds())
	} else {
		s.metrics.summarySeconds.Observe(time.Since(start).Seconds())
	}
	return nil
}

// gpgSigned reports whether meta already holds a valid GPG signature of data
// by the daemon's own keys (a publish run again after a crash), judged with
// their public keys alone.
func (s *Service) gpgSigned(ctx context.Context, meta, data []byte) bool {
	if s.gpgOwnDir == "" {
		return false
	}
	return s.repo.VerifyGPG(ctx, meta, data, s.gpgOwnDir, "") == nil
}

// exportOwnGPGKeys writes the public halves of the gpg_sign keys into a
// keyring directory of the state dir, which also proves at start-up that
// gpg_homedir holds them.
func (s *Service) exportOwnGPGKeys(ctx context.Context) error {
	if len(s.cfg.GPGSign) == 0 {
		return nil
	}
	args := []string{"--batch", "--export"}
	if s.cfg.GPGHomedir != "" {
		args = append([]string{"--homedir", s.cfg.GPGHomedir}, args...)
	}
	out, err := exec.CommandContext(ctx, "gpg", append(args, s.cfg.GPGSign...)...).Output()
	if err != nil {
		return fmt.Errorf("gpg_sign: exporting the public keys with gpg: %w", err)
	}
	if len(out) == 0 {
		return fmt.Errorf("gpg_sign: gpg_homedir %q holds none of the keys %v", s.cfg.GPGHomedir, s.cfg.GPGSign)
	}
	dir := filepath.Join(s.stateDir, "gpg-own")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "own.gpg"), out, 0o600); err != nil {
		return err
	}
	s.gpgOwnDir = dir
	return nil
}

// updateHookTimeout bounds one run of update_hook.
const updateHookTimeout = 30 * time.Minute

// runUpdateHook runs update_hook with OSTREE_RECEIVE_REPO (the repository's
// absolute path) and OSTREE_RECEIVE_REFS (the refs, space-separated), as
// ostree-push's receiver sets them, plus OSTREE_UPLOAD_SESSION and
// OSTREE_UPLOAD_COMMITS (ref=commit pairs).
func (s *Service) runUpdateHook(ctx context.Context, sess journal.Session) error {
	repo, err := filepath.Abs(s.repo.Path())
	if err != nil {
		return err
	}
	var refs, commits []string
	for _, r := range sess.Refs {
		refs = append(refs, r.Ref)
		commits = append(commits, r.Ref+"="+r.New)
	}
	start := time.Now()
	out, err := runCommand(ctx, []string{
		"OSTREE_RECEIVE_REPO=" + repo,
		"OSTREE_RECEIVE_REFS=" + strings.Join(refs, " "),
		"OSTREE_UPLOAD_SESSION=" + sess.ID,
		"OSTREE_UPLOAD_COMMITS=" + strings.Join(commits, " ")}, s.cfg.UpdateHook...)
	s.log.Info("update_hook ran", "session", sess.ID, "duration", time.Since(start).Round(time.Millisecond), "err", err, "output", out)
	if err != nil {
		return fmt.Errorf("%s: %w", s.cfg.UpdateHook[0], err)
	}
	return nil
}

// runCommand runs argv with env added to the daemon's environment, for at
// most updateHookTimeout, and returns the last 16 KiB of its output.
func runCommand(ctx context.Context, env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, updateHookTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	out := &tailBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	return out.String(), err
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return strings.TrimSpace(string(t.b)) }

// isFlatpakRepo reports whether the repository holds Flatpak refs.
func (s *Service) isFlatpakRepo(ctx context.Context) (bool, error) {
	refs, err := s.repo.ListRefs(ctx)
	if err != nil {
		return false, err
	}
	for r := range refs {
		if api.FlatpakRef(r) {
			return true, nil
		}
	}
	return false, nil
}

// flatpakUpdateRepo runs `flatpak build-update-repo` on the repository, with
// the GPG signing options, as ostree-push's receiver does; without
// appstream, it leaves the appstream branches as they are.
func (s *Service) flatpakUpdateRepo(ctx context.Context, appstream bool) error {
	argv := []string{"flatpak", "build-update-repo"}
	if !appstream {
		argv = append(argv, "--no-update-appstream")
	}
	for _, k := range s.cfg.GPGSign {
		argv = append(argv, "--gpg-sign="+k)
	}
	if len(s.cfg.GPGSign) > 0 && s.cfg.GPGHomedir != "" {
		argv = append(argv, "--gpg-homedir="+s.cfg.GPGHomedir)
	}
	if out, err := runCommand(ctx, nil, append(argv, s.repo.Path())...); err != nil {
		return fmt.Errorf("flatpak build-update-repo: %w: %s", err, out)
	}
	return nil
}
