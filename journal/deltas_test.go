package journal

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// A publish whose intent asks for it records each ref's old and new commit
// among the ref's recent heads, in the intent's write, keeping the last
// Heads; a refused intent records nothing.
func TestHeadsRecordedWithTheIntent(t *testing.T) {
	ctx := context.Background()
	j, path := mustOpen(t)
	publish := func(ref, old, new string, keep int) error {
		s, _, err := j.CreateOrResume(ctx, Session{Owner: ownerA, OwnerName: "tester", Refs: []RefUpdate{{Ref: ref, Old: old, New: new}}})
		if err != nil {
			t.Fatal(err)
		}
		return j.SetPublishing(ctx, Intent{Session: s.ID, Refs: s.Refs, Heads: keep}, nil)
	}
	// A ref published before heads were kept: its old commit starts the record.
	if err := publish("app/a", "", commit(1), 0); err != nil {
		t.Fatal(err)
	}
	if err := publish("app/a", commit(1), commit(2), 3); err != nil {
		t.Fatal(err)
	}
	if err := publish("app/a", commit(2), commit(3), 3); err != nil {
		t.Fatal(err)
	}
	if err := publish("app/b", "", commit(7), 3); err != nil {
		t.Fatal(err)
	}
	if err := publish("app/c", "", commit(8), MaxHeads+1); err == nil {
		t.Fatal("more heads than MaxHeads accepted")
	}
	j.Close()
	j, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	heads, err := j.Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(heads["app/a"], []string{commit(1), commit(2), commit(3)}) || !slices.Equal(heads["app/b"], []string{commit(7)}) || heads["app/c"] != nil {
		t.Fatalf("heads after a restart: %v", heads)
	}
	// The fourth head pushes the first out; a ref moved behind the
	// daemon's back (old is not the last head) keeps both.
	if err := publish("app/a", commit(5), commit(6), 3); err != nil {
		t.Fatal(err)
	}
	if err := j.ForgetHeads(ctx, []string{"app/b", "app/missing"}); err != nil {
		t.Fatal(err)
	}
	heads, _ = j.Heads(ctx)
	if !slices.Equal(heads["app/a"], []string{commit(3), commit(5), commit(6)}) || len(heads) != 1 {
		t.Fatalf("heads: %v", heads)
	}
}

// When a static delta stopped being wanted is recorded durably, once: a
// restart and a second record keep the first time, so its grace period is
// neither reset nor skipped; a delta dropped from the record starts again.
func TestRetiringKeepsTheFirstTime(t *testing.T) {
	ctx := context.Background()
	j, path := mustOpen(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	if err := j.SetRetiring(ctx, []string{"a-b", "c"}, t0, nil); err != nil {
		t.Fatal(err)
	}
	j.Close()
	j, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if err := j.SetRetiring(ctx, []string{"a-b", "d"}, t0.Add(time.Hour), []string{"c"}); err != nil {
		t.Fatal(err)
	}
	got, err := j.Retiring(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got["a-b"].Equal(t0) || !got["d"].Equal(t0.Add(time.Hour)) {
		t.Fatalf("retiring: %v", got)
	}
	if err := j.SetRetiring(ctx, []string{strings.Repeat("x", maxDeltaName+1)}, t0, nil); err == nil {
		t.Fatal("an overlong delta name accepted")
	}
	// Deferred work recorded outside a publish.
	if err := j.Defer(ctx, "summary"); err != nil {
		t.Fatal(err)
	}
	if due, err := j.Deferred(ctx); err != nil || !slices.Equal(due, []string{"summary"}) {
		t.Fatalf("deferred %v, %v", due, err)
	}
}
