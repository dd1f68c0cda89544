package repository

import (
	"context"
	"sync"
	"time"
)

// fairShare hands out a fixed number of slots for CPU-heavy work
// (verification) so that no token starves another: waiting tokens are served
// in turn, one slot at a time, and a holder gives its slot up after a time
// slice when anyone waits. A token that sends a decompression bomb (little
// to read, gigabytes to inflate and hash) thus costs every other token at
// most a time slice per step, however many slots it could otherwise fill.
type fairShare struct {
	slice time.Duration
	slots int // how many there are

	mu      sync.Mutex
	free    int
	waiting map[string][]chan struct{} // FIFO per token
	turns   []string                   // tokens with waiters, round-robin
}

func newFairShare(slots int, slice time.Duration) *fairShare {
	return &fairShare{slice: slice, slots: slots, free: slots, waiting: map[string][]chan struct{}{}}
}

// acquire takes a slot for owner, waiting for its turn.
func (f *fairShare) acquire(ctx context.Context, owner string) error {
	f.mu.Lock()
	if f.free > 0 && len(f.turns) == 0 {
		f.free--
		f.mu.Unlock()
		return nil
	}
	ch := make(chan struct{}, 1)
	if len(f.waiting[owner]) == 0 {
		f.turns = append(f.turns, owner)
	}
	f.waiting[owner] = append(f.waiting[owner], ch)
	f.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	f.mu.Lock()
	q := f.waiting[owner]
	for i, c := range q {
		if c == ch { // still waiting: leave the queue
			f.waiting[owner] = append(q[:i:i], q[i+1:]...)
			if len(f.waiting[owner]) == 0 {
				f.dropTurn(owner)
			}
			f.mu.Unlock()
			return ctx.Err()
		}
	}
	f.mu.Unlock()
	f.release() // granted as the context ended: pass it on
	return ctx.Err()
}

func (f *fairShare) dropTurn(owner string) {
	delete(f.waiting, owner)
	for i, o := range f.turns {
		if o == owner {
			f.turns = append(f.turns[:i], f.turns[i+1:]...)
			return
		}
	}
}

// release gives a slot back: to the first waiter of the next token in
// turn, or to the pool.
func (f *fairShare) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.turns) == 0 {
		f.free++
		return
	}
	owner := f.turns[0]
	q := f.waiting[owner]
	ch := q[0]
	f.turns = f.turns[1:]
	if len(q) > 1 {
		f.waiting[owner] = q[1:]
		f.turns = append(f.turns, owner)
	} else {
		delete(f.waiting, owner)
	}
	ch <- struct{}{}
}

// contended reports whether anyone waits for a slot.
func (f *fairShare) contended() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.turns) > 0
}

// worker is one verification's use of a fairShare, for one token.
type worker struct {
	f     *fairShare
	ctx   context.Context
	owner string
	held  bool
	since time.Time
}

func (f *fairShare) worker(ctx context.Context, owner string) *worker {
	return &worker{f: f, ctx: ctx, owner: owner}
}

// Work is object.VerifyOptions.Work: it holds a slot for the next step of
// work, taking one in turn, and gives it up first when its time slice is
// over and others wait.
func (w *worker) Work(int64) error {
	if err := w.ctx.Err(); err != nil {
		w.Release()
		return err
	}
	if w.held {
		if time.Since(w.since) < w.f.slice || !w.f.contended() {
			return nil
		}
		w.Release()
	}
	if err := w.f.acquire(w.ctx, w.owner); err != nil {
		return err
	}
	w.held, w.since = true, time.Now()
	return nil
}

// Release gives the slot up while the worker waits for input or is done.
func (w *worker) Release() {
	if w.held {
		w.held = false
		w.f.release()
	}
}
