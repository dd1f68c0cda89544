package repository

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ostree-upload/ostree-upload/internal/failpoint"
	"github.com/ostree-upload/ostree-upload/journal"
)

// Work that a publish leaves for after its answer: the appstream branches
// of a Flatpak repository (appstream.go) and static deltas (deltas.go).
// The need for it is journaled with the publish's intent (Intent.Deferred)
// and cleared only once a run succeeds, so a crash or a failed run leaves
// it to the next start or publish. One worker does it all, one piece at a
// time, each run ending with a summary regenerated through the summary's
// group commit.

// Names of deferred work in the journal.
const (
	deferredAppstream = "appstream" // the appstream branches, then the summary
	deferredDeltas    = "deltas"    // the missing static deltas, then the summary
	// deferredSummary is a summary regeneration that background work owes
	// since it changed the static deltas: recorded before their files
	// change, cleared by a regeneration that began after.
	deferredSummary = "summary"
)

// summaryTimeout bounds one summary regeneration of the deferred work.
const summaryTimeout = 10 * time.Minute

// deferredWork wakes the worker and tells it which work is due.
type deferredWork struct {
	due  chan struct{} // a wake-up pending
	mu   sync.Mutex    // guards gen and the clearing of the journal's records
	gen  map[string]uint64
	done map[string]uint64 // gen served by the last successful run of each (the worker's alone)
	// tried is the gen of each work the last run began with, successful
	// or not (under mu): Settle waits for it to catch up with gen.
	tried map[string]uint64
	// deltaMu makes static delta passes, retirements and their summary
	// regenerations one at a time (the worker and RetireStaticDeltas).
	deltaMu     sync.Mutex
	deltaFailed map[string]bool // generations that failed since the start, by delta name (under deltaMu)
	retireTimer *time.Timer     // wakes the worker when the next retired delta is due (under deltaMu)
}

func newDeferredWork() *deferredWork {
	return &deferredWork{due: make(chan struct{}, 1), gen: map[string]uint64{}, done: map[string]uint64{}, tried: map[string]uint64{}, deltaFailed: map[string]bool{}}
}

// deferredOf is the work a publish of sess leaves for after its answer.
func (s *Service) deferredOf(sess journal.Session) []string {
	var names []string
	if s.appstreamDeferred(sess) {
		names = append(names, deferredAppstream)
	}
	if s.deltasDeferred(sess) {
		names = append(names, deferredDeltas)
	}
	return names
}

// wake asks the worker for a run of each named work, once the refs of the
// publish that asks have moved (one pending run serves every request made
// before it starts).
func (s *Service) wake(names ...string) {
	if len(names) == 0 {
		return
	}
	w := s.deferred
	w.mu.Lock()
	for _, n := range names {
		w.gen[n]++
	}
	w.mu.Unlock()
	select {
	case w.due <- struct{}{}:
	default:
	}
}

// deferredWorker does the deferred work whenever woken, until ctx ends.
// Work pending in the journal at start-up is woken at once, and so is a
// static delta pass where deltas are on (it generates what a failed run
// left, and arms the retirements' timer).
func (s *Service) deferredWorker(ctx context.Context) {
	if due, err := s.journal.Deferred(ctx); err != nil {
		s.log.Error("reading deferred work", "err", err)
	} else {
		s.wake(due...)
	}
	if s.cfg.StaticDeltas {
		s.wake(deferredDeltas)
	}
	defer func() {
		s.deferred.deltaMu.Lock()
		if t := s.deferred.retireTimer; t != nil {
			t.Stop()
		}
		s.deferred.deltaMu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.deferred.due:
		}
		s.deferredRun(ctx)
	}
}

// deferredRun does, once, the work due when it starts: the appstream
// branches with the summary (and a summary that background work owes),
// then the static deltas, each followed by the summary. Each piece of work
// is cleared from the journal once done, unless woken again meanwhile: a
// request it may have missed keeps the record.
func (s *Service) deferredRun(ctx context.Context) {
	w := s.deferred
	w.deltaMu.Lock()
	defer w.deltaMu.Unlock()
	w.mu.Lock()
	gen := maps.Clone(w.gen)
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		maps.Copy(w.tried, gen)
		w.mu.Unlock()
	}()
	var due []string
	for name, g := range gen {
		if g != w.done[name] {
			due = append(due, name)
		}
	}
	appstream, summary := slices.Contains(due, deferredAppstream), slices.Contains(due, deferredSummary)
	if appstream || summary {
		rctx, cancel := context.WithTimeout(ctx, summaryTimeout)
		if appstream {
			failpoint.Hit("before-appstream")
		}
		start := time.Now()
		err := s.summaries.do(rctx, appstream, s.regenerateShared)
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			if appstream {
				s.metrics.appstreamFailures.Inc()
			}
			s.log.Error("updating the summary after a publish failed; the next publish or start retries", "appstream", appstream, "err", err)
		default:
			if appstream {
				s.log.Info("appstream branches updated", "duration", time.Since(start).Round(time.Millisecond))
			}
			s.deferredDone(ctx, gen, deferredAppstream, deferredSummary)
		}
	}
	if slices.Contains(due, deferredDeltas) {
		if err := s.deltaPass(ctx); err != nil {
			if ctx.Err() == nil {
				s.log.Error("static deltas: the pass failed; the next publish or start retries", "err", err)
			}
			return
		}
		s.deferredDone(ctx, gen, deferredDeltas)
	}
}

// WaitReleases waits until the spool releases that publishes left for
// after their answers (see releaseLater) have ended, or until ctx ends.
func (s *Service) WaitReleases(ctx context.Context) error {
	for s.releasing.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// Settle waits until every run of deferred work asked for so far has been
// made (successful or not) and the spool releases of published sessions
// have ended (see releaseLater), or until ctx ends.
func (s *Service) Settle(ctx context.Context) error {
	w := s.deferred
	if w == nil {
		return nil // offline
	}
	for {
		w.mu.Lock()
		idle := s.releasing.Load() == 0
		for name, g := range w.gen {
			if w.tried[name] != g {
				idle = false
			}
		}
		w.mu.Unlock()
		if idle {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// deferredDone records that a run served the wakes gen of the named work,
// and clears each from the journal unless it was woken again meanwhile.
func (s *Service) deferredDone(ctx context.Context, gen map[string]uint64, names ...string) {
	w := s.deferred
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, name := range names {
		if gen[name] == w.done[name] {
			continue // not due in this run
		}
		w.done[name] = gen[name]
		if w.gen[name] != gen[name] {
			continue // woken again: the next run clears it
		}
		if err := s.journal.DoneDeferred(ctx, name); err != nil && ctx.Err() == nil {
			s.log.Error("clearing deferred work", "work", name, "err", err)
		}
	}
}
