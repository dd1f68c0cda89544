package repository

import (
	"sync"
	"testing"
	"time"
)

// Work on one key never waits for another key's holder, excludes work on
// the same key, and leaves nothing behind once every holder is gone.
func TestKeyedLocks(t *testing.T) {
	var k keyedLocks
	unlockA := k.lock("a")
	done := make(chan struct{})
	go func() { k.lock("b")(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("key b waited for key a's holder")
	}
	got := make(chan struct{})
	go func() { unlock := k.lock("a"); close(got); unlock() }()
	select {
	case <-got:
		t.Fatal("a second holder of key a while the first holds it")
	case <-time.After(50 * time.Millisecond):
	}
	unlockA()
	<-got
	var wg sync.WaitGroup
	n := 0
	for range 100 {
		wg.Add(1)
		go func() { defer wg.Done(); unlock := k.lock("c"); n++; unlock() }()
	}
	wg.Wait()
	if n != 100 {
		t.Errorf("%d increments under the lock, want 100", n)
	}
	k.mu.Lock()
	left := len(k.m)
	k.mu.Unlock()
	if left != 0 {
		t.Errorf("%d locks left after every holder is gone", left)
	}
}
