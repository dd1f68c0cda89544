package journal

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A journal file grown past 64 MiB by one session and then mostly freed is
// compacted when opened: the file shrinks, everything else in it stays.
func TestOpenCompactsSparseFile(t *testing.T) {
	ctx := context.Background()
	j, path := mustOpen(t)
	keep := mustSession(t, j, ownerA, "keep")
	if _, err := j.Need(ctx, keep.ID, objs(0, 3), 0); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkVerified(ctx, keep.ID, ownerA, obj(1), 42); err != nil {
		t.Fatal(err)
	}
	big := mustSession(t, j, ownerB, "big")
	reason := objRecord{state: ObjRejected, reason: strings.Repeat("r", 1000)}.encode()
	for i := 0; i < 80_000; i += 10_000 {
		err := j.db.Update(func(tx *bolt.Tx) error {
			b, err := objectsBucket(tx, ownerB, big.ID, true)
			if err != nil {
				return err
			}
			for k := i; k < i+10_000; k++ {
				key, _ := objKey(randomName(k))
				if err := b.Put(key, reason); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := j.SetState(ctx, big.ID, StateAborted, ""); err != nil {
		t.Fatal(err)
	}
	if err := j.DeleteSessionObjects(ctx, big.ID); err != nil {
		t.Fatal(err)
	}
	j.Close()
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if before.Size() <= compactMin {
		t.Fatalf("the journal grew to %d bytes only", before.Size())
	}

	j, err = Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	c := j.Compaction()
	t.Logf("compacted from %d to %d bytes in %v", before.Size(), after.Size(), c.Took)
	if c.Err != nil || c.Before != before.Size() || c.After != after.Size() || after.Size() > 1<<20 {
		t.Fatalf("file %d bytes after reopening, compaction %+v", after.Size(), c)
	}
	if _, err := os.Stat(path + ".compact"); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
	checkCounts(t, j, keep.ID, 3, 1, 42)
	if st, err := j.ObjectState(ctx, keep.ID, obj(2)); err != nil || st != ObjWanted {
		t.Errorf("ObjectState = %v, %v", st, err)
	}
	if has, err := j.SpoolHas(ctx, ownerA, obj(1)); err != nil || !has {
		t.Errorf("SpoolHas = %v, %v", has, err)
	}
	if got := mustGet(t, j, big.ID); got.State != StateAborted {
		t.Errorf("big session = %+v", got)
	}
	// The journal goes on in the new file, and keeps it locked.
	if err := j.MarkVerified(ctx, keep.ID, ownerA, obj(2), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, 0); err == nil {
		t.Fatal("a second Open of the compacted journal succeeded")
	}
	j.Close()
	j2, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if c := j2.Compaction(); c.After != 0 {
		t.Errorf("compacted again: %+v", c)
	}
	checkCounts(t, j2, keep.ID, 3, 2, 43)
}
