package journal

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// An owner may hold a bounded number of open sessions and of objects in
// them; ended sessions stop counting.
func TestOwnerLimits(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	j.SetLimits(Limits{SessionsPerOwner: 2, ObjectsPerOwner: 100})
	s1 := mustSession(t, j, ownerA, "a")
	s2 := mustSession(t, j, ownerA, "b")
	_, _, err := j.CreateOrResume(ctx, Session{Owner: ownerA, Refs: []RefUpdate{{Ref: "c", New: commit(1)}}})
	var tm *TooManyError
	if !errors.As(err, &tm) || !errors.Is(err, ErrTooMany) || tm.Limit != 2 {
		t.Fatalf("third open session: %v", err)
	}
	// Resuming one is not opening one; another owner has its own count.
	if _, created, err := j.CreateOrResume(ctx, Session{Owner: ownerA, OwnerName: "tester", Refs: []RefUpdate{{Ref: "a", New: commit(1)}}}); err != nil || created {
		t.Fatalf("resume: %v %v", created, err)
	}
	mustSession(t, j, ownerB, "a")

	if _, err := j.Need(ctx, s1.ID, objs(0, 60), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Need(ctx, s2.ID, objs(100, 141), 0); !errors.As(err, &tm) || tm.Have != 60 {
		t.Fatalf("101 objects in the owner's sessions: %v", err)
	}
	if _, err := j.Need(ctx, s2.ID, objs(100, 140), 0); err != nil {
		t.Fatalf("100 objects: %v", err)
	}
	// Names already registered cost nothing more.
	if _, err := j.Need(ctx, s1.ID, objs(0, 60), 0); err != nil {
		t.Fatal(err)
	}
	if err := j.SetState(ctx, s1.ID, StateAborted, "test"); err != nil {
		t.Fatal(err)
	}
	mustSession(t, j, ownerA, "c")
	if _, err := j.Need(ctx, s2.ID, objs(200, 250), 0); err != nil {
		t.Fatalf("after the first session ended: %v", err)
	}
}

// Ended sessions queue their work by time; the queue costs what it
// returns, and work can be moved later or marked done.
func TestDueQueue(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	var ids []string
	for _, r := range []string{"a", "b", "c"} {
		s := mustSession(t, j, ownerA, r)
		if err := j.SetState(ctx, s.ID, StateFailed, "test"); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	mustSession(t, j, ownerA, "live")
	due, err := j.DueBefore(ctx, time.Now().Add(time.Second), 100)
	if err != nil || len(due) != 6 {
		t.Fatalf("due: %v %v", due, err)
	}
	if due[0].Session != ids[0] || !due[0].At.Before(due[5].At) && !due[0].At.Equal(due[5].At) {
		t.Fatalf("not in order: %+v", due)
	}
	if due, _ := j.DueBefore(ctx, time.Now().Add(time.Second), 2); len(due) != 2 {
		t.Fatalf("limit 2: %d", len(due))
	}
	later := time.Now().Add(time.Hour)
	for _, d := range due {
		if d.Session == ids[0] {
			if err := j.Reschedule(ctx, d, later); err != nil {
				t.Fatal(err)
			}
		} else if err := j.DoneDue(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	due, _ = j.DueBefore(ctx, time.Now().Add(time.Second), 100)
	if len(due) != 0 {
		t.Fatalf("left: %+v", due)
	}
	if due, _ = j.DueBefore(ctx, later.Add(time.Second), 100); len(due) != 2 || due[0].Session != ids[0] {
		t.Fatalf("rescheduled: %+v", due)
	}
}

// A journal of schema 2 is indexed when opened: its live sessions count
// against the owner's limits, its ended ones are due.
func TestUpgradeIndexesSessions(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal.db")
	j, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	live := mustSession(t, j, ownerA, "live")
	ended := mustSession(t, j, ownerA, "ended")
	if err := j.SetState(ctx, ended.ID, StatePublished, ""); err != nil {
		t.Fatal(err)
	}
	j.Close()
	// Back to schema 2: no owners index, no due queue.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		tx.DeleteBucket(bucketOwners)
		tx.DeleteBucket(bucketDue)
		return tx.Bucket(bucketMeta).Put(keyVersion, []byte("2"))
	})
	db.Close()
	if j, err = Open(path, time.Second); err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	j.SetLimits(Limits{SessionsPerOwner: 1})
	if _, _, err := j.CreateOrResume(ctx, Session{Owner: ownerA, Refs: []RefUpdate{{Ref: "x", New: commit(1)}}}); !errors.Is(err, ErrTooMany) {
		t.Fatalf("the live session of schema 2 does not count: %v", err)
	}
	due, err := j.DueBefore(ctx, time.Now().Add(time.Second), 10)
	if err != nil || len(due) != 2 || due[0].Session != ended.ID {
		t.Fatalf("due after the upgrade: %+v %v", due, err)
	}
	sessions, err := j.LiveSessions(ctx)
	if err != nil || len(sessions) != 1 || sessions[0].ID != live.ID {
		t.Fatalf("live: %+v %v", sessions, err)
	}
}

// A session holds a bounded number of live uploads; a judged one frees
// its place.
func TestLiveUploadsPerSession(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	j.SetLimits(Limits{LiveUploadsPerSession: 2})
	s := mustSession(t, j, ownerA, "a")
	id := func(i int) string { return s.ID + "/" + fmt.Sprintf("%032x", i) }
	for i := 0; i < 2; i++ {
		if err := j.AddUpload(ctx, Upload{ID: id(i), Session: s.ID, Object: obj(i), Size: 1}); err != nil {
			t.Fatal(err)
		}
	}
	err := j.AddUpload(ctx, Upload{ID: id(2), Session: s.ID, Object: obj(2), Size: 1})
	var tm *TooManyError
	if !errors.As(err, &tm) || tm.Limit != 2 {
		t.Fatalf("third live upload: %v", err)
	}
	if err := j.MarkUploadVerified(ctx, id(0), ownerA, 1); err != nil {
		t.Fatal(err)
	}
	if err := j.AddUpload(ctx, Upload{ID: id(2), Session: s.ID, Object: obj(2), Size: 1}); err != nil {
		t.Fatalf("after one was verified: %v", err)
	}
}
