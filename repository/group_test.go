package repository

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Callers that arrive while a run works share the next run; each returns
// only after a run that began after its call.
func TestGroupCommitSharesRuns(t *testing.T) {
	var g groupCommit
	var runs atomic.Int32
	var began sync.Map // run number → when it began
	release := make(chan struct{})
	fn := func(bool) error {
		n := runs.Add(1)
		began.Store(n, time.Now())
		if n == 1 {
			<-release
		}
		return nil
	}
	first := make(chan error)
	go func() { first <- g.do(context.Background(), false, fn) }()
	for runs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	calls := make([]time.Time, 20)
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			calls[i] = time.Now()
			if err := g.do(context.Background(), false, fn); err != nil {
				t.Error(err)
			}
		}()
	}
	for waiting := uint64(0); waiting < 21; { // all twenty wait behind the first run
		time.Sleep(time.Millisecond)
		g.mu.Lock()
		waiting = g.next
		g.mu.Unlock()
	}
	close(release)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if n := runs.Load(); n != 2 {
		t.Fatalf("%d runs for 21 callers arriving in two groups, want 2", n)
	}
	second, _ := began.Load(int32(2))
	for i, c := range calls {
		if second.(time.Time).Before(c) {
			t.Fatalf("caller %d called at %v, after the run that served it began", i, c)
		}
	}
}

// A failed run fails every caller it was to serve, and the next caller gets
// a run of its own; a full request is served by a full run only.
func TestGroupCommitErrorsAndFullRuns(t *testing.T) {
	var g groupCommit
	boom := errors.New("boom")
	if err := g.do(context.Background(), false, func(bool) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	var fulls []bool
	record := func(full bool) error { fulls = append(fulls, full); return nil }
	if err := g.do(context.Background(), false, record); err != nil {
		t.Fatal(err)
	}
	if err := g.do(context.Background(), true, record); err != nil {
		t.Fatal(err)
	}
	if len(fulls) != 2 || fulls[0] || !fulls[1] {
		t.Fatalf("runs %v, want a plain then a full one", fulls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	block, started := make(chan struct{}), make(chan struct{})
	go g.do(context.Background(), false, func(bool) error { close(started); <-block; return nil })
	<-started
	cancel()
	if err := g.do(ctx, false, record); !errors.Is(err, context.Canceled) {
		t.Fatalf("a canceled wait returned %v", err)
	}
	close(block)
}

// A run waits for the lock under which refs move, so that it never reads
// a publish half done, and serves every caller that asked before it got
// the lock.
func TestGroupCommitRunsUnderTheRefsLock(t *testing.T) {
	var refs sync.Mutex
	g := groupCommit{refs: &refs}
	var runs atomic.Int32
	fn := func(bool) error { runs.Add(1); return nil }
	refs.Lock() // a publish is moving its refs
	errs := make(chan error, 2)
	go func() { errs <- g.do(context.Background(), false, fn) }()
	for waiting := uint64(0); waiting < 1; {
		time.Sleep(time.Millisecond)
		g.mu.Lock()
		waiting = g.next
		g.mu.Unlock()
	}
	go func() { errs <- g.do(context.Background(), false, fn) }() // asks before the run has the lock
	for waiting := uint64(0); waiting < 2; {
		time.Sleep(time.Millisecond)
		g.mu.Lock()
		waiting = g.next
		g.mu.Unlock()
	}
	time.Sleep(20 * time.Millisecond)
	if n := runs.Load(); n != 0 {
		t.Fatalf("%d runs while refs were moving", n)
	}
	refs.Unlock()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("%d runs for two callers that asked before it began, want 1", n)
	}
}
