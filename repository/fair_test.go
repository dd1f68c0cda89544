package repository

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Slots go to waiting tokens in turn: one token holding every slot with
// long work gives one up within a time slice when another token waits.
func TestFairShareServesTokensInTurn(t *testing.T) {
	t.Parallel()
	f := newFairShare(2, 20*time.Millisecond)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ { // token a: three workers, more than the slots
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := f.worker(context.Background(), "a")
			defer w.Release()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := w.Work(1); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(time.Millisecond) // a step of work
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	w := f.worker(context.Background(), "b")
	if err := w.Work(1); err != nil {
		t.Fatal(err)
	}
	waited := time.Since(start)
	w.Release()
	close(stop)
	wg.Wait()
	if waited > 500*time.Millisecond {
		t.Fatalf("token b waited %s for a slot", waited)
	}
	// Everything was given back.
	if f.free != 2 || len(f.turns) != 0 {
		t.Fatalf("free %d, turns %v", f.free, f.turns)
	}
}

// A worker whose context ends stops waiting, and a slot granted as it
// ended is passed on.
func TestFairShareCancel(t *testing.T) {
	t.Parallel()
	f := newFairShare(1, time.Hour)
	hold := f.worker(context.Background(), "a")
	if err := hold.Work(1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := f.worker(ctx, "b").Work(1); err == nil {
		t.Fatal("a worker got a slot that was held")
	}
	hold.Release()
	w := f.worker(context.Background(), "c")
	if err := w.Work(1); err != nil {
		t.Fatal(err)
	}
	w.Release()
	if f.free != 1 {
		t.Fatalf("free %d", f.free)
	}
}
