package repository

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/ostree-upload/ostree-upload/internal/failpoint"
	"github.com/ostree-upload/ostree-upload/journal"
)

// The appstream branches of a Flatpak repository (appstream/ARCH and
// appstream2/ARCH, the catalogue software centres read) are derived from
// its apps' refs. Regenerating them commits two branches and fsyncs every
// objects/ directory: most of the cost of `flatpak build-update-repo`. A
// publish therefore updates the summary (refs, xa.cache, summary.idx and
// signatures) before it answers, and leaves the appstream branches to a
// worker that runs after the answer, as a full run of the summary's group
// commit. Publishes that arrive while it works share its next run.
//
// The need for a run is journaled with the publish's intent (Intent.Deferred)
// and cleared only once a run succeeds, so a crash or a failed run leaves it
// to the next start or publish.

// deferredAppstream names the appstream update in the journal's deferred work.
const deferredAppstream = "appstream"

// appstreamTimeout bounds one run of the appstream update.
const appstreamTimeout = 10 * time.Minute

// touchesApps reports whether a publish moving refs changes what the
// appstream branches are made from: an app or runtime ref.
func touchesApps(refs []journal.RefUpdate) bool {
	return slices.ContainsFunc(refs, func(r journal.RefUpdate) bool {
		return strings.HasPrefix(r.Ref, "app/") || strings.HasPrefix(r.Ref, "runtime/")
	})
}

// appstreamDeferred reports whether a publish of sess leaves the appstream
// update for after its answer.
func (s *Service) appstreamDeferred(sess journal.Session) bool {
	return s.cfg.Update && len(s.cfg.UpdateHook) == 0 && touchesApps(sess.Refs)
}

// wakeAppstream asks the worker for a run, once the refs of the publish
// that asks have moved (one pending run serves every request made before
// it starts).
func (s *Service) wakeAppstream() {
	s.appstreamMu.Lock()
	s.appstreamGen++
	s.appstreamMu.Unlock()
	select {
	case s.appstreamDue <- struct{}{}:
	default:
	}
}

// appstreamWorker runs the appstream update whenever woken, until ctx
// ends. A run pending in the journal at start-up is woken at once.
func (s *Service) appstreamWorker(ctx context.Context) {
	if due, err := s.journal.Deferred(ctx); err != nil {
		s.log.Error("reading deferred work", "err", err)
	} else if slices.Contains(due, deferredAppstream) {
		s.wakeAppstream()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.appstreamDue:
		}
		if err := s.updateAppstream(ctx); err != nil && ctx.Err() == nil {
			s.metrics.appstreamFailures.Inc()
			s.log.Error("updating the appstream branches failed; the next publish or start retries", "err", err)
		}
	}
}

// updateAppstream runs the full `flatpak build-update-repo` (appstream
// branches, then the summary again, signed) as a run of the summary's group
// commit, and clears the journal's record when no publish asked for
// another run meanwhile: a request it may have missed keeps the record.
func (s *Service) updateAppstream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, appstreamTimeout)
	defer cancel()
	s.appstreamMu.Lock()
	gen := s.appstreamGen
	s.appstreamMu.Unlock()
	failpoint.Hit("before-appstream")
	start := time.Now()
	if err := s.summaries.do(ctx, true, func(full bool) error { return s.regenerate(ctx, full) }); err != nil {
		return err
	}
	s.appstreamMu.Lock()
	defer s.appstreamMu.Unlock()
	if s.appstreamGen != gen {
		return nil // woken again: the next run clears it
	}
	if err := s.journal.DoneDeferred(ctx, deferredAppstream); err != nil {
		return err
	}
	s.log.Info("appstream branches updated", "duration", time.Since(start).Round(time.Millisecond))
	return nil
}
