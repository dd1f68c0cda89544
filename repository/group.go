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
	// refs, if set, is the lock under which refs move: a run holds it, so
	// that what it reads shows every publish whole (the summary is the
	// point where a publish's refs appear together), and serves the callers
	// that asked before it got it.
	refs     sync.Locker
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
		r := &groupRun{done: make(chan struct{})}
		g.running = r
		g.mu.Unlock()
		if g.refs != nil {
			g.refs.Lock()
		}
		g.mu.Lock()
		r.upTo, r.full, g.wantFull = g.next, g.wantFull, false
		g.mu.Unlock()
		r.err = fn(r.full)
		if g.refs != nil {
			g.refs.Unlock()
		}
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
