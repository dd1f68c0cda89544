package journal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	ownerA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	ownerB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// mustOpen opens a journal in a fresh temporary directory and closes it at
// the end of the test.
func mustOpen(tb testing.TB) (*Journal, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "journal.db")
	j, err := Open(path, time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = j.Close() })
	return j, path
}

func commit(i int) string { return fmt.Sprintf("%064x", i) }

func obj(i int) string { return fmt.Sprintf("%064x.filez", i) }

func objs(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, obj(i))
	}
	return out
}

func mustSession(tb testing.TB, j *Journal, owner string, refs ...string) Session {
	tb.Helper()
	s := Session{Owner: owner, OwnerName: "tester"}
	for i, r := range refs {
		s.Refs = append(s.Refs, RefUpdate{Ref: r, New: commit(i + 1)})
	}
	got, created, err := j.CreateOrResume(context.Background(), s)
	if err != nil {
		tb.Fatal(err)
	}
	if !created {
		tb.Fatalf("session for %v resumed, want created", refs)
	}
	return got
}

func mustGet(tb testing.TB, j *Journal, id string) Session {
	tb.Helper()
	s, err := j.Get(context.Background(), id)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func checkCounts(tb testing.TB, j *Journal, id string, objects, verified int, bytes int64) {
	tb.Helper()
	s := mustGet(tb, j, id)
	if s.Objects != objects || s.Verified != verified || s.Bytes != bytes {
		tb.Fatalf("counts = objects %d verified %d bytes %d, want %d %d %d",
			s.Objects, s.Verified, s.Bytes, objects, verified, bytes)
	}
}

func TestOpen_CreatesFile(t *testing.T) {
	_, path := mustOpen(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600", fi.Mode().Perm())
	}
}

func TestOpen_InUse(t *testing.T) {
	_, path := mustOpen(t)
	start := time.Now()
	j2, err := Open(path, 100*time.Millisecond)
	if err == nil {
		_ = j2.Close()
		t.Fatal("second Open succeeded")
	}
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("err = %v, want ErrInUse", err)
	}
	if !strings.Contains(err.Error(), "state dir in use") || !strings.Contains(err.Error(), path) {
		t.Fatalf("message %q should say %q and name %s", err, "state dir in use", path)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Open took %v", d)
	}
	// A zero timeout gives up at once instead of waiting forever.
	if _, err := Open(path, 0); !errors.Is(err, ErrInUse) {
		t.Fatalf("Open with zero timeout: err = %v, want ErrInUse", err)
	}
}

func TestOpen_AfterClose(t *testing.T) {
	j, path := mustOpen(t)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j2, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := j2.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCreateOrResume(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	refs := []RefUpdate{
		{Ref: "app/org.x/x86_64/stable", Old: commit(1), New: commit(2)},
		{Ref: "runtime/org.x/x86_64/stable", New: commit(3)},
	}
	s1, created, err := j.CreateOrResume(ctx, Session{Owner: ownerA, OwnerName: "alice", Repo: "main", Refs: refs})
	if err != nil || !created {
		t.Fatalf("create: created=%v err=%v", created, err)
	}
	if !isLowerHex(s1.ID, 32) || s1.State != StateOpen || s1.Created.IsZero() || !s1.Created.Equal(s1.Updated) {
		t.Fatalf("new session = %+v", s1)
	}
	if !slices.IsSortedFunc(s1.Refs, func(a, b RefUpdate) int { return strings.Compare(a.Ref, b.Ref) }) {
		t.Fatalf("refs not sorted: %v", s1.Refs)
	}

	// Same refs in another order resume.
	rev := []RefUpdate{refs[1], refs[0]}
	s2, created, err := j.CreateOrResume(ctx, Session{Owner: ownerA, Repo: "main", Refs: rev})
	if err != nil || created || s2.ID != s1.ID {
		t.Fatalf("resume: id=%s created=%v err=%v, want %s", s2.ID, created, err, s1.ID)
	}
	if s2.OwnerName != "alice" {
		t.Fatalf("resumed OwnerName = %q", s2.OwnerName)
	}

	// Anything else differing creates a new session.
	variants := map[string]Session{
		"force": {Owner: ownerA, Repo: "main", Refs: refs, Force: true},
		"owner": {Owner: ownerB, Repo: "main", Refs: refs},
		"repo":  {Owner: ownerA, Repo: "", Refs: refs},
		"refs":  {Owner: ownerA, Repo: "main", Refs: refs[:1]},
		"new":   {Owner: ownerA, Repo: "main", Refs: []RefUpdate{refs[0], {Ref: refs[1].Ref, New: commit(9)}}},
	}
	ids := map[string]bool{s1.ID: true}
	for name, v := range variants {
		s, created, err := j.CreateOrResume(ctx, v)
		if err != nil || !created || ids[s.ID] {
			t.Fatalf("%s: id=%s created=%v err=%v", name, s.ID, created, err)
		}
		ids[s.ID] = true
	}

	// Publishing is still live: resumes.
	if err := j.SetState(ctx, s1.ID, StatePublishing, ""); err != nil {
		t.Fatal(err)
	}
	if s, created, err := j.CreateOrResume(ctx, Session{Owner: ownerA, Repo: "main", Refs: refs}); err != nil || created || s.ID != s1.ID {
		t.Fatalf("resume while publishing: id=%s created=%v err=%v", s.ID, created, err)
	}

	// A terminal state frees the key.
	if err := j.SetState(ctx, s1.ID, StateFailed, "boom"); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, j, s1.ID)
	if got.State != StateFailed || got.Result != "boom" || got.State.Live() {
		t.Fatalf("after SetState: %+v", got)
	}
	s3, created, err := j.CreateOrResume(ctx, Session{Owner: ownerA, Repo: "main", Refs: rev})
	if err != nil || !created || s3.ID == s1.ID {
		t.Fatalf("after terminal state: id=%s created=%v err=%v", s3.ID, created, err)
	}
	// A terminal session cannot become live again.
	if err := j.SetState(ctx, s1.ID, StateOpen, ""); err == nil {
		t.Fatal("SetState(open) on a failed session succeeded")
	}
	// Leaving a terminal state for another keeps s3 resumable.
	if err := j.SetState(ctx, s1.ID, StateExpired, "late"); err != nil {
		t.Fatal(err)
	}
	if s, created, err := j.CreateOrResume(ctx, Session{Owner: ownerA, Repo: "main", Refs: refs}); err != nil || created || s.ID != s3.ID {
		t.Fatalf("resume s3: id=%s created=%v err=%v", s.ID, created, err)
	}

	list, err := j.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1+len(variants)+1 {
		t.Fatalf("List returned %d sessions", len(list))
	}
}

func TestCreateOrResume_Invalid(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	bad := map[string]Session{
		"no owner":  {Refs: []RefUpdate{{Ref: "a", New: commit(1)}}},
		"empty ref": {Owner: ownerA, Refs: []RefUpdate{{Ref: "", New: commit(1)}}},
		"dup ref":   {Owner: ownerA, Refs: []RefUpdate{{Ref: "a", New: commit(1)}, {Ref: "a", New: commit(2)}}},
		"bad old":   {Owner: ownerA, Refs: []RefUpdate{{Ref: "a", Old: "xyz", New: commit(1)}}},
		"bad new":   {Owner: ownerA, Refs: []RefUpdate{{Ref: "a", New: strings.ToUpper(commit(10))}}},
	}
	for name, s := range bad {
		if _, _, err := j.CreateOrResume(ctx, s); err == nil || !strings.HasPrefix(err.Error(), "journal: ") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if _, err := j.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(malformed) = %v, want ErrNotFound", err)
	}
	if _, err := j.Get(ctx, strings.Repeat("0", 32)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(missing) = %v, want ErrNotFound", err)
	}
	if err := j.Touch(ctx, strings.Repeat("0", 32)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Touch(missing) = %v, want ErrNotFound", err)
	}
	s := mustSession(t, j, ownerA, "r")
	if err := j.SetState(ctx, s.ID, "bogus", ""); err == nil {
		t.Error("SetState(bogus) succeeded")
	}
	if _, err := j.Need(ctx, s.ID, []string{obj(1), ""}, 0); err == nil {
		t.Error("Need with an empty name succeeded")
	}
	if err := j.MarkVerified(ctx, s.ID, ownerA, obj(1), -1); err == nil {
		t.Error("MarkVerified with a negative size succeeded")
	}
}

func TestContextDone(t *testing.T) {
	j, _ := mustOpen(t)
	s := mustSession(t, j, ownerA, "r")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	checks := map[string]error{
		"Get":          func() error { _, err := j.Get(ctx, s.ID); return err }(),
		"List":         func() error { _, err := j.List(ctx); return err }(),
		"Touch":        j.Touch(ctx, s.ID),
		"Need":         func() error { _, err := j.Need(ctx, s.ID, []string{obj(1)}, 0); return err }(),
		"MarkVerified": j.MarkVerified(ctx, s.ID, ownerA, obj(1), 1),
		"Release":      func() error { _, err := j.ReleaseSession(ctx, s.ID, ownerA); return err }(),
		"Delete":       j.DeleteSessionObjects(ctx, s.ID),
		"PutIntent":    j.PutIntent(ctx, Intent{Session: s.ID}),
	}
	for name, err := range checks {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: err = %v, want context.Canceled", name, err)
		}
	}
	checkCounts(t, j, s.ID, 0, 0, 0)
}

func TestPersistence(t *testing.T) {
	ctx := context.Background()
	j, path := mustOpen(t)
	s := mustSession(t, j, ownerA, "app/a", "app/b")
	if _, err := j.Need(ctx, s.ID, objs(0, 3), 0); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkVerified(ctx, s.ID, ownerA, obj(0), 100); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkRejected(ctx, s.ID, obj(1), "bad checksum"); err != nil {
		t.Fatal(err)
	}
	up := Upload{ID: s.ID + "/" + strings.Repeat("1", 32), Session: s.ID, Object: obj(2), Size: 7}
	if err := j.AddUpload(ctx, up); err != nil {
		t.Fatal(err)
	}
	in := Intent{Session: s.ID, Refs: s.Refs, Step: "refs"}
	if err := j.PutIntent(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	j, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	got := mustGet(t, j, s.ID)
	if got.Owner != ownerA || got.OwnerName != "tester" || !slices.Equal(got.Refs, s.Refs) ||
		!got.Created.Equal(s.Created) || got.State != StateOpen {
		t.Fatalf("reopened session = %+v, want %+v", got, s)
	}
	checkCounts(t, j, s.ID, 3, 1, 100)
	if has, err := j.SpoolHas(ctx, ownerA, obj(0)); err != nil || !has {
		t.Fatalf("SpoolHas = %v, %v", has, err)
	}
	entries, err := j.Objects(ctx, s.ID, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []ObjectEntry{{obj(0), ObjVerified, ""}, {obj(1), ObjRejected, "bad checksum"}, {obj(2), ObjWanted, ""}}
	if !slices.Equal(entries, want) {
		t.Fatalf("Objects = %v, want %v", entries, want)
	}
	gu, err := j.GetUpload(ctx, up.ID)
	if err != nil || gu.Object != up.Object || gu.Size != 7 || gu.State != UploadOpen || gu.Created.IsZero() {
		t.Fatalf("GetUpload = %+v, %v", gu, err)
	}
	gi, err := j.GetIntent(ctx, s.ID)
	if err != nil || gi.Step != "refs" || !slices.Equal(gi.Refs, s.Refs) {
		t.Fatalf("GetIntent = %+v, %v", gi, err)
	}
	// The resume key survived too.
	r, created, err := j.CreateOrResume(ctx, Session{Owner: ownerA, Refs: []RefUpdate{s.Refs[1], s.Refs[0]}})
	if err != nil || created || r.ID != s.ID {
		t.Fatalf("resume after reopen: id=%s created=%v err=%v", r.ID, created, err)
	}
}

func TestNeed(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	s := mustSession(t, j, ownerA, "r")
	before := mustGet(t, j, s.ID).Updated

	need, err := j.Need(ctx, s.ID, []string{obj(0), obj(1), obj(0), obj(2)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := objs(0, 3); !slices.Equal(need, want) {
		t.Fatalf("Need = %v, want %v", need, want)
	}
	checkCounts(t, j, s.ID, 3, 0, 0)
	if got := mustGet(t, j, s.ID).Updated; got.Before(before) {
		t.Fatalf("Updated went back: %v < %v", got, before)
	}

	if err := j.MarkVerified(ctx, s.ID, ownerA, obj(0), 10); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkReceived(ctx, s.ID, obj(1)); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkRejected(ctx, s.ID, obj(2), "truncated"); err != nil {
		t.Fatal(err)
	}
	// Verified is not needed; received and rejected still are; new ones too.
	need, err = j.Need(ctx, s.ID, objs(0, 4), 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := objs(1, 4); !slices.Equal(need, want) {
		t.Fatalf("Need = %v, want %v", need, want)
	}
	checkCounts(t, j, s.ID, 4, 1, 10)
	for i, want := range []ObjState{ObjVerified, ObjReceived, ObjRejected, ObjWanted} {
		if st, err := j.ObjectState(ctx, s.ID, obj(i)); err != nil || st != want {
			t.Fatalf("ObjectState(%d) = %v, %v; want %v", i, st, err, want)
		}
	}
	if _, err := j.ObjectState(ctx, s.ID, obj(99)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ObjectState(unregistered) = %v, want ErrNotFound", err)
	}
	// ObjectStates answers a batch in its order, 0 for what is unregistered.
	batch := []string{obj(3), obj(99), obj(0), obj(2), obj(1)}
	if got, err := j.ObjectStates(ctx, s.ID, batch); err != nil || !slices.Equal(got, []ObjState{ObjWanted, 0, ObjVerified, ObjRejected, ObjReceived}) {
		t.Fatalf("ObjectStates(%v) = %v, %v", batch, got, err)
	}
	if _, err := j.ObjectStates(ctx, s.ID, []string{"not an object"}); err == nil {
		t.Fatal("ObjectStates of a malformed name: no error")
	}
	if _, err := j.Need(ctx, strings.Repeat("0", 32), objs(0, 1), 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Need on a missing session = %v, want ErrNotFound", err)
	}
}

func TestNeed_SpoolReuse(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	s1 := mustSession(t, j, ownerA, "one")
	s2 := mustSession(t, j, ownerA, "two")
	sb := mustSession(t, j, ownerB, "one")

	if _, err := j.Need(ctx, s1.ID, objs(0, 2), 0); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkVerified(ctx, s1.ID, ownerA, obj(0), 100); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkVerified(ctx, s1.ID, ownerA, obj(1), 200); err != nil {
		t.Fatal(err)
	}

	// Another session of the same owner reuses the spool.
	need, err := j.Need(ctx, s2.ID, objs(0, 3), 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := objs(2, 3); !slices.Equal(need, want) {
		t.Fatalf("same owner: Need = %v, want %v", need, want)
	}
	checkCounts(t, j, s2.ID, 3, 2, 300)
	if st, _ := j.ObjectState(ctx, s2.ID, obj(1)); st != ObjVerified {
		t.Fatalf("reused object state = %v", st)
	}
	// Asking again changes nothing.
	if need, err := j.Need(ctx, s2.ID, objs(0, 2), 0); err != nil || len(need) != 0 {
		t.Fatalf("second Need = %v, %v", need, err)
	}
	checkCounts(t, j, s2.ID, 3, 2, 300)

	// Another owner does not.
	need, err = j.Need(ctx, sb.ID, objs(0, 3), 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := objs(0, 3); !slices.Equal(need, want) {
		t.Fatalf("other owner: Need = %v, want %v", need, want)
	}
	checkCounts(t, j, sb.ID, 3, 0, 0)
	if has, _ := j.SpoolHas(ctx, ownerB, obj(0)); has {
		t.Fatal("owner B's spool has owner A's object")
	}
	if err := j.MarkVerified(ctx, sb.ID, ownerA, obj(0), 1); err == nil {
		t.Fatal("MarkVerified with another session's owner succeeded")
	}
}

func TestNeed_TooMany(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	s := mustSession(t, j, ownerA, "r")
	if _, err := j.Need(ctx, s.ID, objs(0, 8), 10); err != nil {
		t.Fatal(err)
	}
	before := mustGet(t, j, s.ID)
	_, err := j.Need(ctx, s.ID, objs(5, 11), 10) // 3 new → 11 > 10
	if !errors.Is(err, ErrTooMany) {
		t.Fatalf("err = %v, want ErrTooMany", err)
	}
	after := mustGet(t, j, s.ID)
	if after.Objects != 8 || !after.Updated.Equal(before.Updated) {
		t.Fatalf("after ErrTooMany: objects %d updated %v (was %v)", after.Objects, after.Updated, before.Updated)
	}
	if _, err := j.ObjectState(ctx, s.ID, obj(8)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("object from refused call registered: %v", err)
	}
	// Exactly max is fine, and known names do not count.
	need, err := j.Need(ctx, s.ID, objs(0, 10), 10)
	if err != nil || len(need) != 10 {
		t.Fatalf("Need up to max = %d names, %v", len(need), err)
	}
	checkCounts(t, j, s.ID, 10, 0, 0)
}

func TestMarkVerified_CountedOnce(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	s := mustSession(t, j, ownerA, "r")
	for i := 0; i < 3; i++ {
		if err := j.MarkVerified(ctx, s.ID, ownerA, obj(0), 50); err != nil {
			t.Fatal(err)
		}
	}
	checkCounts(t, j, s.ID, 1, 1, 50)
	// Verified is final.
	if err := j.MarkReceived(ctx, s.ID, obj(0)); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkRejected(ctx, s.ID, obj(0), "late duplicate"); err != nil {
		t.Fatal(err)
	}
	if st, err := j.ObjectState(ctx, s.ID, obj(0)); err != nil || st != ObjVerified {
		t.Fatalf("state = %v, %v", st, err)
	}
	checkCounts(t, j, s.ID, 1, 1, 50)
	// Received then verified registers once.
	if err := j.MarkReceived(ctx, s.ID, obj(1)); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkVerified(ctx, s.ID, ownerA, obj(1), 5); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, j, s.ID, 2, 2, 55)

	// A session that left the live states cannot hold spool entries again.
	if err := j.SetState(ctx, s.ID, StateAborted, ""); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkVerified(ctx, s.ID, ownerA, obj(2), 5); err == nil {
		t.Fatal("MarkVerified on an aborted session succeeded")
	}
	if _, err := j.Need(ctx, s.ID, objs(0, 3), 0); err == nil {
		t.Fatal("Need on an aborted session succeeded")
	}
	checkCounts(t, j, s.ID, 2, 2, 55)
}

func TestMarkVerifiedMany(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	s := mustSession(t, j, ownerA, "r")
	if _, err := j.Need(ctx, s.ID, objs(0, 3), 0); err != nil {
		t.Fatal(err)
	}
	// An empty name anywhere refuses the whole batch.
	bad := []VerifiedObject{{obj(0), 10}, {"", 1}}
	if err := j.MarkVerifiedMany(ctx, s.ID, ownerA, bad); err == nil {
		t.Fatal("MarkVerifiedMany with a bad name succeeded")
	}
	checkCounts(t, j, s.ID, 3, 0, 0)
	// Another owner's spool is refused as a whole too.
	if err := j.MarkVerifiedMany(ctx, s.ID, ownerB, []VerifiedObject{{obj(0), 10}}); err == nil {
		t.Fatal("MarkVerifiedMany for another owner succeeded")
	}
	// Duplicates within and across batches count once; unregistered names
	// are registered.
	vs := []VerifiedObject{{obj(0), 10}, {obj(1), 20}, {obj(0), 10}, {obj(7), 5}}
	if err := j.MarkVerifiedMany(ctx, s.ID, ownerA, vs); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkVerifiedMany(ctx, s.ID, ownerA, vs[:2]); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, j, s.ID, 4, 3, 35)
	for _, n := range []string{obj(0), obj(1), obj(7)} {
		if ok, err := j.SpoolHas(ctx, ownerA, n); err != nil || !ok {
			t.Errorf("spool lacks %s: %v %v", n, ok, err)
		}
	}
	need, err := j.Need(ctx, s.ID, objs(0, 3), 0)
	if err != nil || len(need) != 1 || need[0] != obj(2) {
		t.Fatalf("Need after MarkVerifiedMany = %v, %v; want only %s", need, err, obj(2))
	}
}

// A batch of more than one transaction's objects is recorded whole, in
// any order and with duplicates across its chunks counted once; a bad
// name anywhere in it refuses all of it before anything is written.
func TestMarkVerifiedManyInChunks(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	s := mustSession(t, j, ownerA, "r")
	n := 2*verifiedChunk + verifiedChunk/2
	var vs []VerifiedObject
	for i := n - 1; i >= 0; i-- {
		vs = append(vs, VerifiedObject{obj(i), int64(i)})
	}
	// The first chunk (in name order) ends with obj(verifiedChunk-1); its
	// duplicate at the end of the batch lands in the second.
	vs = append(vs, VerifiedObject{obj(verifiedChunk - 1), int64(verifiedChunk - 1)})
	bad := append(slices.Clone(vs), VerifiedObject{"bad", 1})
	if err := j.MarkVerifiedMany(ctx, s.ID, ownerA, bad); err == nil {
		t.Fatal("MarkVerifiedMany with a bad name succeeded")
	}
	checkCounts(t, j, s.ID, 0, 0, 0)
	if err := j.MarkVerifiedMany(ctx, s.ID, ownerA, vs); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, j, s.ID, n, n, int64(n*(n-1)/2))
	if need, err := j.Need(ctx, s.ID, objs(0, n+1), 0); err != nil || len(need) != 1 || need[0] != obj(n) {
		t.Fatalf("Need after MarkVerifiedMany = %d names, %v; want only %s", len(need), err, obj(n))
	}
}

func TestMarkVerified_Concurrent(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	s := mustSession(t, j, ownerA, "r")
	const workers = 200
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Every worker verifies one object of its own and one of 50
			// shared ones (each shared one by 4 workers).
			if err := j.MarkVerified(ctx, s.ID, ownerA, obj(1000+w), int64(w)); err != nil {
				errs <- err
				return
			}
			if err := j.MarkVerified(ctx, s.ID, ownerA, obj(w%50), 1); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var bytes int64 = 50
	for w := 0; w < workers; w++ {
		bytes += int64(w)
	}
	checkCounts(t, j, s.ID, workers+50, workers+50, bytes)
	entries, err := j.Objects(ctx, s.ID, "", 1000)
	if err != nil || len(entries) != workers+50 {
		t.Fatalf("Objects = %d entries, %v", len(entries), err)
	}
}

func TestLiveUpload(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	s := mustSession(t, j, ownerA, "r")
	uid := func(i int) string { return fmt.Sprintf("%s/%032x", s.ID, i) }

	u1 := Upload{ID: uid(1), Session: s.ID, Object: obj(0), Size: 10}
	if err := j.AddUpload(ctx, u1); err != nil {
		t.Fatal(err)
	}
	// A second live upload of the same object is refused, naming the first.
	err := j.AddUpload(ctx, Upload{ID: uid(2), Session: s.ID, Object: obj(0), Size: 10})
	var lue *LiveUploadError
	if !errors.As(err, &lue) || lue.UploadID != u1.ID {
		t.Fatalf("err = %v, want LiveUploadError for %s", err, u1.ID)
	}
	if _, err := j.GetUpload(ctx, uid(2)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refused upload was stored: %v", err)
	}
	// Another object is fine.
	if err := j.AddUpload(ctx, Upload{ID: uid(3), Session: s.ID, Object: obj(1)}); err != nil {
		t.Fatal(err)
	}
	// Received is still live.
	if err := j.SetUploadState(ctx, u1.ID, UploadReceived); err != nil {
		t.Fatal(err)
	}
	if err := j.AddUpload(ctx, Upload{ID: uid(2), Session: s.ID, Object: obj(0)}); !errors.As(err, &lue) {
		t.Fatalf("err = %v, want LiveUploadError", err)
	}
	// Verified frees the slot.
	if err := j.SetUploadState(ctx, u1.ID, UploadVerified); err != nil {
		t.Fatal(err)
	}
	if err := j.AddUpload(ctx, Upload{ID: uid(2), Session: s.ID, Object: obj(0)}); err != nil {
		t.Fatalf("after verified: %v", err)
	}
	// The verified upload cannot go live again while uid(2) is.
	if err := j.SetUploadState(ctx, u1.ID, UploadOpen); !errors.As(err, &lue) || lue.UploadID != uid(2) {
		t.Fatalf("reopen: err = %v", err)
	}
	// Deleting frees the slot.
	if err := j.DeleteUpload(ctx, uid(2)); err != nil {
		t.Fatal(err)
	}
	if err := j.DeleteUpload(ctx, uid(2)); err != nil {
		t.Fatalf("deleting a missing upload: %v", err)
	}
	if err := j.AddUpload(ctx, Upload{ID: uid(4), Session: s.ID, Object: obj(0)}); err != nil {
		t.Fatalf("after delete: %v", err)
	}
	// Deleting an upload that does not hold the slot leaves it taken.
	if err := j.DeleteUpload(ctx, u1.ID); err != nil {
		t.Fatal(err)
	}
	if err := j.AddUpload(ctx, Upload{ID: uid(5), Session: s.ID, Object: obj(0)}); !errors.As(err, &lue) || lue.UploadID != uid(4) {
		t.Fatalf("err = %v, want LiveUploadError for %s", err, uid(4))
	}

	// Another session has its own slots.
	s2 := mustSession(t, j, ownerA, "other")
	if err := j.AddUpload(ctx, Upload{ID: s2.ID + "/" + strings.Repeat("9", 32), Session: s2.ID, Object: obj(0)}); err != nil {
		t.Fatal(err)
	}

	ups, err := j.SessionUploads(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range ups {
		ids = append(ids, u.ID)
	}
	slices.Sort(ids)
	if want := []string{uid(3), uid(4)}; !slices.Equal(ids, want) {
		t.Fatalf("SessionUploads = %v, want %v", ids, want)
	}
	all, err := j.AllUploads(ctx)
	if err != nil || len(all) != 3 {
		t.Fatalf("AllUploads = %d, %v", len(all), err)
	}

	// Validation.
	bad := []Upload{
		{ID: "x", Session: s.ID, Object: obj(0)},
		{ID: s2.ID + "/" + strings.Repeat("7", 32), Session: s.ID, Object: obj(0)},
		{ID: uid(6), Session: s.ID, Object: ""},
		{ID: uid(6), Session: s.ID, Object: obj(6), State: 9},
		{ID: uid(3), Session: s.ID, Object: obj(7)}, // duplicate ID
	}
	for _, u := range bad {
		if err := j.AddUpload(ctx, u); err == nil {
			t.Errorf("AddUpload(%+v) succeeded", u)
		}
	}
	missing := strings.Repeat("0", 32)
	if err := j.AddUpload(ctx, Upload{ID: missing + "/" + missing, Session: missing, Object: obj(0)}); !errors.Is(err, ErrNotFound) {
		t.Errorf("AddUpload on a missing session = %v, want ErrNotFound", err)
	}
	if err := j.SetUploadState(ctx, uid(99), UploadVerified); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetUploadState(missing) = %v, want ErrNotFound", err)
	}
}

func TestReleaseSession(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	j.batchSize = 3 // several transactions per release
	s1 := mustSession(t, j, ownerA, "one")
	s2 := mustSession(t, j, ownerA, "two")
	sb := mustSession(t, j, ownerB, "one")

	// s1 verifies 0..9; s2 reuses 0..4 through the spool and verifies 20.
	for i := 0; i < 10; i++ {
		if err := j.MarkVerified(ctx, s1.ID, ownerA, obj(i), 1); err != nil {
			t.Fatal(err)
		}
	}
	need, err := j.Need(ctx, s2.ID, append(objs(0, 5), obj(20)), 0)
	if err != nil || !slices.Equal(need, []string{obj(20)}) {
		t.Fatalf("Need = %v, %v", need, err)
	}
	if err := j.MarkVerified(ctx, s2.ID, ownerA, obj(20), 1); err != nil {
		t.Fatal(err)
	}
	// Owner B verifies the same names in its own spool.
	for i := 0; i < 10; i++ {
		if err := j.MarkVerified(ctx, sb.ID, ownerB, obj(i), 1); err != nil {
			t.Fatal(err)
		}
	}
	// Objects of s1 that are not verified hold nothing.
	if err := j.MarkRejected(ctx, s1.ID, obj(30), "bad"); err != nil {
		t.Fatal(err)
	}

	if _, err := j.ReleaseSession(ctx, s1.ID, ownerA); err == nil {
		t.Fatal("released a live session")
	}
	if err := j.SetState(ctx, s1.ID, StatePublished, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := j.ReleaseSession(ctx, s1.ID, ownerB); err == nil {
		t.Fatal("release with the wrong owner succeeded")
	}
	// An ended session's files serve the owner's next sessions until its
	// release begins.
	s3 := mustSession(t, j, ownerA, "three")
	if need, err := j.Need(ctx, s3.ID, objs(8, 10), 0); err != nil || len(need) != 0 {
		t.Fatalf("Need from an ended session = %v, %v", need, err)
	}
	freed, err := j.ReleaseSession(ctx, s1.ID, ownerA)
	if err != nil {
		t.Fatal(err)
	}
	if want := objs(5, 8); !slices.Equal(freed, want) {
		t.Fatalf("freed = %v, want %v", freed, want)
	}
	// Once it began, the session is no source, and releasing it again
	// (after a crash, say) frees the same names.
	if need, err := j.Need(ctx, s3.ID, objs(7, 8), 0); err != nil || len(need) != 1 {
		t.Fatalf("Need from a session being released = %v, %v", need, err)
	}
	if again, err := j.ReleaseSession(ctx, s1.ID, ownerA); err != nil || !slices.Equal(again, freed) {
		t.Fatalf("second release = %v, %v; want %v", again, err, freed)
	}
	if err := j.DeleteSessionObjects(ctx, s1.ID); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		has, err := j.SpoolHas(ctx, ownerA, obj(i))
		if err != nil || has != (i < 5 || i >= 8) {
			t.Fatalf("SpoolHas(A, %d) = %v, %v", i, has, err)
		}
		if has, _ := j.SpoolHas(ctx, ownerB, obj(i)); !has {
			t.Fatalf("owner B lost %d", i)
		}
	}
	if entries, err := j.Objects(ctx, s1.ID, "", 100); err != nil || len(entries) != 0 {
		t.Fatalf("Objects after delete = %v, %v", entries, err)
	}
	if err := j.DeleteSessionObjects(ctx, s1.ID); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	checkCounts(t, j, s1.ID, 11, 10, 10) // counters are history

	if err := j.SetState(ctx, s2.ID, StateAborted, "client gone"); err != nil {
		t.Fatal(err)
	}
	freed, err = j.ReleaseSession(ctx, s2.ID, ownerA)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(objs(0, 5), obj(20)); !slices.Equal(freed, want) {
		t.Fatalf("freed = %v, want %v", freed, want)
	}
	// A live session that verified a name meanwhile keeps its file.
	if err := j.MarkVerified(ctx, s3.ID, ownerA, obj(0), 1); err != nil {
		t.Fatal(err)
	}
	freed, err = j.ReleaseSession(ctx, s2.ID, ownerA)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(objs(1, 5), obj(20)); !slices.Equal(freed, want) {
		t.Fatalf("freed with s3 holding %s = %v, want %v", obj(0), freed, want)
	}
}

func TestObjects_Paging(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	s := mustSession(t, j, ownerA, "r")
	// Register in reverse order; pages come back in name order.
	names := objs(0, 25)
	slices.Reverse(names)
	if _, err := j.Need(ctx, s.ID, names, 0); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkRejected(ctx, s.ID, obj(7), "why"); err != nil {
		t.Fatal(err)
	}
	var got []ObjectEntry
	after := ""
	pages := 0
	for {
		page, err := j.Objects(ctx, s.ID, after, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 10 {
			t.Fatalf("page of %d", len(page))
		}
		pages++
		got = append(got, page...)
		after = page[len(page)-1].Name
	}
	if pages != 3 || len(got) != 25 {
		t.Fatalf("%d pages, %d entries", pages, len(got))
	}
	for i, e := range got {
		want := ObjectEntry{Name: obj(i), State: ObjWanted}
		if i == 7 {
			want = ObjectEntry{Name: obj(7), State: ObjRejected, Reason: "why"}
		}
		if e != want {
			t.Fatalf("entry %d = %+v, want %+v", i, e, want)
		}
	}
	// "after" need not be a registered name.
	page, err := j.Objects(ctx, s.ID, fmt.Sprintf("%064x.dirtree", 3), 2)
	if err != nil || len(page) != 2 || page[0].Name != obj(4) {
		t.Fatalf("Objects after a gap = %v, %v", page, err)
	}
	if _, err := j.Objects(ctx, s.ID, "", 0); err == nil {
		t.Fatal("limit 0 accepted")
	}
	if _, err := j.Objects(ctx, strings.Repeat("0", 32), "", 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Objects on a missing session = %v", err)
	}
}

func TestIdle(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	old := mustSession(t, j, ownerA, "old")
	oldDone := mustSession(t, j, ownerA, "done")
	if err := j.SetState(ctx, oldDone.ID, StateAborted, ""); err != nil {
		t.Fatal(err)
	}
	touched := mustSession(t, j, ownerA, "touched")
	time.Sleep(5 * time.Millisecond)
	cut := time.Now()
	time.Sleep(5 * time.Millisecond)
	if err := j.Touch(ctx, touched.ID); err != nil {
		t.Fatal(err)
	}
	fresh := mustSession(t, j, ownerA, "fresh")

	idle, err := j.Idle(ctx, cut)
	if err != nil {
		t.Fatal(err)
	}
	if len(idle) != 1 || idle[0].ID != old.ID {
		t.Fatalf("Idle = %v, want only %s", idle, old.ID)
	}
	idle, err = j.Idle(ctx, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range idle {
		ids = append(ids, s.ID)
	}
	if want := []string{old.ID, touched.ID, fresh.ID}; !slices.Equal(ids, want) {
		t.Fatalf("Idle = %v, want %v", ids, want)
	}
	// Publishing sessions are live and can be idle.
	if err := j.SetState(ctx, old.ID, StatePublishing, ""); err != nil {
		t.Fatal(err)
	}
	if idle, _ := j.Idle(ctx, time.Now().Add(time.Minute)); len(idle) != 3 {
		t.Fatalf("Idle with a publishing session = %d", len(idle))
	}
}

func TestIntents(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	s1 := mustSession(t, j, ownerA, "a", "b")
	s2 := mustSession(t, j, ownerA, "c")
	if _, err := j.GetIntent(ctx, s1.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetIntent before put = %v", err)
	}
	in1 := Intent{Session: s1.ID, Refs: s1.Refs, Step: "refs", Created: time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)}
	if err := j.PutIntent(ctx, in1); err != nil {
		t.Fatal(err)
	}
	got, err := j.GetIntent(ctx, s1.ID)
	if err != nil || got.Session != s1.ID || got.Step != "refs" || !slices.Equal(got.Refs, s1.Refs) || !got.Created.Equal(in1.Created) {
		t.Fatalf("GetIntent = %+v, %v", got, err)
	}
	in1.Step = "summary"
	if err := j.PutIntent(ctx, in1); err != nil {
		t.Fatal(err)
	}
	if err := j.PutIntent(ctx, Intent{Session: s2.ID, Refs: s2.Refs, Step: "refs"}); err != nil {
		t.Fatal(err)
	}
	all, err := j.Intents(ctx)
	if err != nil || len(all) != 2 || all[0].Session != s1.ID || all[0].Step != "summary" || all[1].Created.IsZero() {
		t.Fatalf("Intents = %+v, %v", all, err)
	}
	if err := j.DeleteIntent(ctx, s1.ID); err != nil {
		t.Fatal(err)
	}
	if err := j.DeleteIntent(ctx, s1.ID); err != nil {
		t.Fatalf("deleting a missing intent: %v", err)
	}
	if _, err := j.GetIntent(ctx, s1.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetIntent after delete = %v", err)
	}
	if all, _ := j.Intents(ctx); len(all) != 1 || all[0].Session != s2.ID {
		t.Fatalf("Intents after delete = %+v", all)
	}
	if err := j.PutIntent(ctx, Intent{Session: "bad"}); err == nil {
		t.Fatal("PutIntent with a bad session id succeeded")
	}
}

// BenchmarkMarkVerifiedParallel shows that concurrent MarkVerified calls share
// commits: ns/op falls well below one fsync as parallelism grows.
func BenchmarkMarkVerifiedParallel(b *testing.B) {
	ctx := context.Background()
	j, _ := mustOpen(b)
	s := mustSession(b, j, ownerA, "bench")
	var n atomic.Int64
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(n.Add(1))
			if err := j.MarkVerified(ctx, s.ID, ownerA, obj(i), 1); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if got := mustGet(b, j, s.ID).Verified; got != int(n.Load()) {
		b.Fatalf("verified %d, want %d", got, n.Load())
	}
}

// BenchmarkMarkVerifiedSerial is the one-writer baseline: one commit per call.
func BenchmarkMarkVerifiedSerial(b *testing.B) {
	ctx := context.Background()
	j, _ := mustOpen(b)
	s := mustSession(b, j, ownerA, "bench")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := j.MarkVerified(ctx, s.ID, ownerA, obj(i), 1); err != nil {
			b.Fatal(err)
		}
	}
}

// MarkUploadVerified is MarkVerified and SetUploadState(UploadVerified) in
// one transaction: the object counts once, the upload is done, its
// live-upload slot is free and the owner's spool index holds the object.
func TestMarkUploadVerified(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	s := mustSession(t, j, ownerA, "main")
	if _, err := j.Need(ctx, s.ID, objs(0, 2), 0); err != nil {
		t.Fatal(err)
	}
	up := Upload{ID: s.ID + "/" + strings.Repeat("c", 32), Session: s.ID, Object: obj(0), Size: 42}
	if err := j.AddUpload(ctx, up); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // idempotent
		if err := j.MarkUploadVerified(ctx, up.ID, ownerA, 42); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := j.ObjectState(ctx, s.ID, obj(0)); err != nil || st != ObjVerified {
		t.Fatalf("object state %v %v", st, err)
	}
	if u, err := j.GetUpload(ctx, up.ID); err != nil || u.State != UploadVerified {
		t.Fatalf("upload %+v %v", u, err)
	}
	if got, _ := j.Get(ctx, s.ID); got.Verified != 1 || got.Bytes != 42 {
		t.Fatalf("session counts %d verified, %d bytes", got.Verified, got.Bytes)
	}
	if has, _ := j.SpoolHas(ctx, ownerA, obj(0)); !has {
		t.Fatal("spool index lacks the object")
	}
	if err := j.MarkUploadVerified(ctx, up.ID, ownerB, 42); err == nil {
		t.Fatal("another owner marked the upload verified")
	}
}

func TestDeleteSession(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	s := mustSession(t, j, ownerA, "main")
	if err := j.DeleteSession(ctx, s.ID); err == nil {
		t.Fatal("deleted a live session")
	}
	if _, err := j.Need(ctx, s.ID, objs(0, 3), 0); err != nil {
		t.Fatal(err)
	}
	if err := j.SetState(ctx, s.ID, StateAborted, ""); err != nil {
		t.Fatal(err)
	}
	if err := j.DeleteSession(ctx, s.ID); err == nil {
		t.Fatal("deleted a session that still has object records")
	}
	if _, err := j.ReleaseSession(ctx, s.ID, ownerA); err != nil {
		t.Fatal(err)
	}
	if err := j.DeleteSessionObjects(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if err := j.DeleteSession(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Get(ctx, s.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after delete: %v", err)
	}
	if all, _ := j.List(ctx); len(all) != 0 {
		t.Fatalf("%d sessions listed after delete", len(all))
	}
}

// Detached metadata is named after its commit, not its content: it is
// always needed, never taken from the spool index.
func TestNeed_CommitMetaAlwaysNeeded(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	s := mustSession(t, j, ownerA, "r")
	cm := fmt.Sprintf("%064x.commitmeta", 1)
	for i := 0; i < 2; i++ {
		need, err := j.Need(ctx, s.ID, []string{cm, obj(1)}, 0)
		if err != nil || len(need) == 0 || need[0] != cm {
			t.Fatalf("round %d: need = %v, %v", i, need, err)
		}
		if err := j.MarkVerifiedMany(ctx, s.ID, ownerA, []VerifiedObject{{cm, 10}, {obj(1), 5}}); err != nil {
			t.Fatal(err)
		}
	}
	checkCounts(t, j, s.ID, 2, 2, 15)
	// Another session of the token gets it asked for too.
	s2 := mustSession(t, j, ownerA, "other")
	if need, err := j.Need(ctx, s2.ID, []string{cm, obj(1)}, 0); err != nil || len(need) != 1 || need[0] != cm {
		t.Fatalf("second session: need = %v, %v", need, err)
	}
}

// SetPublishing records the publish intent and which refs the publish
// leaves unchanged, in one write, only for an open session and only refs
// of the session, and keeps them across a reopen (a publish finished at
// start-up reads them).
func TestSetPublishing(t *testing.T) {
	ctx := context.Background()
	j, path := mustOpen(t)
	s := mustSession(t, j, ownerA, "app", "app.Locale")
	in := Intent{Session: s.ID, Refs: s.Refs[:1], Step: "refs"}
	if err := j.SetPublishing(ctx, in, []string{"nope"}); err == nil {
		t.Fatal("a ref the session does not have was accepted")
	}
	if got := mustGet(t, j, s.ID); got.State != StateOpen {
		t.Fatalf("state %s after a refused SetPublishing", got.State)
	}
	if _, err := j.GetIntent(ctx, s.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused SetPublishing left an intent: %v", err)
	}
	if err := j.SetPublishing(ctx, in, []string{"app.Locale"}); err != nil {
		t.Fatal(err)
	}
	if err := j.SetPublishing(ctx, in, nil); err == nil {
		t.Fatal("a publishing session was set publishing again")
	}
	j.Close()
	j, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	got := mustGet(t, j, s.ID)
	if got.State != StatePublishing || !slices.Equal(got.Unchanged, []string{"app.Locale"}) {
		t.Fatalf("after reopening: state %s, unchanged %v", got.State, got.Unchanged)
	}
	if gi, err := j.GetIntent(ctx, s.ID); err != nil || !slices.Equal(gi.Refs, in.Refs) {
		t.Fatalf("after reopening: intent %+v, %v", gi, err)
	}
}

// Work a publish defers past its answer is recorded in the same write that
// starts the publish, survives a restart, is recorded once however many
// publishes ask for it, and goes only when done.
func TestDeferredWork(t *testing.T) {
	ctx := context.Background()
	j, path := mustOpen(t)
	a := mustSession(t, j, ownerA, "app/a")
	b := mustSession(t, j, ownerA, "app/b")
	bad := Intent{Session: a.ID, Refs: a.Refs, Deferred: []string{strings.Repeat("x", maxDeferredName+1)}}
	if err := j.SetPublishing(ctx, bad, nil); err == nil {
		t.Fatal("an overlong deferred name was accepted")
	}
	if got := mustGet(t, j, a.ID); got.State != StateOpen {
		t.Fatalf("state %s after a refused SetPublishing", got.State)
	}
	for _, s := range []Session{a, b} {
		if err := j.SetPublishing(ctx, Intent{Session: s.ID, Refs: s.Refs, Deferred: []string{"appstream"}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	j, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if got, err := j.Deferred(ctx); err != nil || !slices.Equal(got, []string{"appstream"}) {
		t.Fatalf("after two publishes and a restart: deferred %v, %v", got, err)
	}
	if gi, err := j.GetIntent(ctx, b.ID); err != nil || !slices.Equal(gi.Deferred, []string{"appstream"}) {
		t.Fatalf("intent %+v, %v", gi, err)
	}
	// While a publish that asked for it is under way (its intent), the
	// work may have begun before its refs moved: the record stays.
	if err := j.DoneDeferred(ctx, "appstream"); err != nil {
		t.Fatal(err)
	}
	if got, err := j.Deferred(ctx); err != nil || !slices.Equal(got, []string{"appstream"}) {
		t.Fatalf("done while intents still name it: deferred %v, %v", got, err)
	}
	for _, s := range []Session{a, b} {
		if err := j.DeleteIntent(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.DoneDeferred(ctx, "appstream"); err != nil {
		t.Fatal(err)
	}
	if err := j.DoneDeferred(ctx, "appstream"); err != nil {
		t.Fatalf("done twice: %v", err)
	}
	if got, err := j.Deferred(ctx); err != nil || len(got) != 0 {
		t.Fatalf("after DoneDeferred: %v, %v", got, err)
	}
}
