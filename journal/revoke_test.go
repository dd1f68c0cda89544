package journal

import (
	"context"
	"testing"
	"time"
)

func TestRevoke(t *testing.T) {
	ctx := context.Background()
	j, path := mustOpen(t)
	first, already, err := j.Revoke(ctx, Revocation{Owner: ownerA, Name: "ci", By: "ops"})
	if err != nil || already || first.Revoked.IsZero() {
		t.Fatalf("first revoke: %+v, %v, %v", first, already, err)
	}
	again, already, err := j.Revoke(ctx, Revocation{Owner: ownerA, Name: "renamed", By: "local"})
	if err != nil || !already || again.Name != "ci" || again.By != "ops" || !again.Revoked.Equal(first.Revoked) {
		t.Fatalf("second revoke: %+v, %v, %v; want the first record", again, already, err)
	}
	if _, _, err := j.Revoke(ctx, Revocation{}); err == nil {
		t.Error("revoking an empty owner succeeded")
	}
	if _, _, err := j.Revoke(ctx, Revocation{Owner: ownerB, Revoked: first.Revoked.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j, err = Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	revs, err := j.Revocations(ctx)
	if err != nil || len(revs) != 2 || revs[0].Owner != ownerA || revs[1].Owner != ownerB {
		t.Fatalf("after reopening: %+v, %v", revs, err)
	}
}
