package journal

import (
	"context"
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

// A journal of schema 1 (no revocations) is upgraded when opened; one of
// an unknown later schema is refused.
func TestSchemaUpgrade(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		version string
		ok      bool
	}{{"1", true}, {"3", false}} {
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
