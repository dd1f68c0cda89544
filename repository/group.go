package repository

import (
	"context"
	"sync"
)

// groupCommit runs a repository-wide update (the summary's regeneration) on
// behalf of many callers at once: a caller is served by the first run that
// begins after its call, and while one run works, every caller that
// arrives waits for the next one, which serves them all. Callers that
// arrive together therefore share one run, and each still returns only
// after a run that began after its call ended (so one that regenerates
// the summary after moving its refs sees them in it).
type groupCommit struct {
	runMu    sync.Mutex // held by a run, and by whoever holds off runs (exclude)
	mu       sync.Mutex
	next     uint64 // tickets handed out
	served   uint64 // the highest ticket a successful run served
	wantFull bool   // a caller waiting asked for the full update
	running  *groupRun
}

// groupRun is one run: it serves the tickets up to upTo.
type groupRun struct {
	upTo uint64
	full bool
	done chan struct{}
	err  error
}

// do returns once a run of fn that began after this call has ended, with
// that run's error; full asks for a run with full set. The caller that
// finds no run in progress runs fn itself; fn must not depend on that
// caller's context, which bounds only the wait (fn serves every caller of
// its run).
func (g *groupCommit) do(ctx context.Context, full bool, fn func(full bool) error) error {
	g.mu.Lock()
	g.next++
	me := g.next
	g.wantFull = g.wantFull || full
	for {
		if g.served >= me {
			g.mu.Unlock()
			return nil
		}
		if r := g.running; r != nil {
			g.mu.Unlock()
			select {
			case <-r.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if r.upTo >= me {
				return r.err
			}
			g.mu.Lock()
			continue
		}
		r := &groupRun{upTo: g.next, full: g.wantFull, done: make(chan struct{})}
		g.wantFull, g.running = false, r
		g.mu.Unlock()
		g.runMu.Lock()
		r.err = fn(r.full)
		g.runMu.Unlock()
		g.mu.Lock()
		if r.err == nil {
			g.served = max(g.served, r.upTo)
		}
		g.running = nil
		close(r.done)
		g.mu.Unlock()
		return r.err
	}
}

// exclude waits for the run in progress to end and holds off the next
// until release is called; callers meanwhile wait as for a run.
func (g *groupCommit) exclude() (release func()) {
	g.runMu.Lock()
	return g.runMu.Unlock
}
