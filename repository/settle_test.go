package repository

import (
	"io"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
)

// trickle hands out r's bytes a few at a time, every 20 ms, until stopped:
// a client sending a pack slowly but steadily. Once stopped it blocks, as a
// connection that went silent does, until closed.
type trickle struct {
	r      io.Reader
	stop   chan struct{}
	closed chan struct{}
}

func (t *trickle) Read(b []byte) (int, error) {
	select {
	case <-t.stop:
		<-t.closed
		return 0, io.ErrUnexpectedEOF
	case <-time.After(20 * time.Millisecond):
	}
	return t.r.Read(b[:min(len(b), 64)])
}

// A negotiation does not wait for the session's packs whose bytes are
// still arriving (the push's own pipeline sends them while it negotiates
// other names), but it does wait for, and flush, a pack whose client went
// silent: what arrived of it then counts.
func TestNegotiationWaitsOnlyForStalledPacks(t *testing.T) {
	t.Parallel()
	s, ci, _ := newService(t)
	sess, _, err := s.CreateSession(ctx, ci, api.SessionRequest{Refs: []api.RefUpdate{{Name: "main", New: fx.A}}})
	if err != nil {
		t.Fatal(err)
	}
	names := namesOf(t, fx.A)
	needed, err := s.Negotiate(ctx, ci, sess.ID, names)
	if err != nil {
		t.Fatal(err)
	}
	first, rest := needed[:len(needed)/2], needed[len(needed)/2:]
	tr := &trickle{r: packOf(t, first), stop: make(chan struct{}), closed: make(chan struct{})}
	done := make(chan error, 1)
	go func() { _, err := s.ReceivePack(ctx, ci, sess.ID, tr); done <- err }()
	time.Sleep(300 * time.Millisecond) // the pack is under way

	start := time.Now()
	if _, err := s.Negotiate(ctx, ci, sess.ID, rest); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Errorf("a negotiation waited %v for a pack whose bytes were arriving", waited)
	}

	close(tr.stop) // the client goes silent
	time.Sleep(2 * packActive)
	start = time.Now()
	still, err := s.Negotiate(ctx, ci, sess.ID, first)
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < packSettleWait/2 {
		t.Errorf("a negotiation waited %v for a silent pack, want about %v", waited, packSettleWait)
	}
	if len(still) >= len(first) && len(first) > 1 {
		t.Errorf("after settling the silent pack, %d of its %d objects are still needed: what arrived was not flushed", len(still), len(first))
	}
	close(tr.closed)
	<-done
}
