package journal

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
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

// A journal of schema 1 (no revocations), 2 or 3 is upgraded when opened;
// one of an unknown later schema is refused.
func TestSchemaUpgrade(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		version string
		ok      bool
	}{{"1", true}, {"2", true}, {"3", true}, {"5", false}} {
		path := filepath.Join(t.TempDir(), "journal.db")
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			return b.Put(keyVersion, []byte(c.version))
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		j, err := Open(path, time.Second)
		if !c.ok {
			if err == nil || !strings.Contains(err.Error(), "unsupported schema version") {
				t.Errorf("schema %s: %v", c.version, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("schema %s: %v", c.version, err)
		}
		if _, _, err := j.Revoke(ctx, Revocation{Owner: ownerA}); err != nil {
			t.Fatal(err)
		}
		j.Close()
		db, _ = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		db.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket(bucketMeta).Get(keyVersion); string(v) != schemaVersion {
				t.Errorf("after the upgrade: version %q", v)
			}
			return nil
		})
		db.Close()
	}
}

// Revocations come oldest first, whatever their keys' order.
func TestRevocationsByTime(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	late, early := strings.Repeat("a", 64), strings.Repeat("f", 64) // keys in the other order
	for owner, at := range map[string]time.Time{late: t0.Add(time.Hour), early: t0} {
		if _, _, err := j.Revoke(ctx, Revocation{Owner: owner, Revoked: at}); err != nil {
			t.Fatal(err)
		}
	}
	revs, err := j.Revocations(ctx)
	if err != nil || len(revs) != 2 || revs[0].Owner != early || revs[1].Owner != late {
		t.Fatalf("revocations %+v, %v; want the earlier first", revs, err)
	}
}

// A revoked token gets no new session, nor its open one back.
func TestCreateAfterRevoke(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	s := mustSession(t, j, ownerA, "app/a")
	if _, _, err := j.Revoke(ctx, Revocation{Owner: ownerA}); err != nil {
		t.Fatal(err)
	}
	for _, refs := range []string{"app/a", "app/b"} {
		_, _, err := j.CreateOrResume(ctx, Session{Owner: ownerA, Refs: []RefUpdate{{Ref: refs, New: commit(1)}}})
		if !errors.Is(err, ErrRevoked) {
			t.Errorf("session for %s after the revocation: %v", refs, err)
		}
	}
	if got := mustGet(t, j, s.ID); got.State != StateOpen {
		t.Errorf("the open session became %s", got.State)
	}
	if _, _, err := j.CreateOrResume(ctx, Session{Owner: ownerB, Refs: []RefUpdate{{Ref: "app/a", New: commit(1)}}}); err != nil {
		t.Errorf("another token: %v", err)
	}
}
