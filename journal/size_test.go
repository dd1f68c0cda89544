package journal

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// randomName is the i-th of a sequence of object names spread over the key
// space as real checksums are.
func randomName(i int) string {
	sum := sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(i)))
	return hex.EncodeToString(sum[:]) + ".filez"
}

// randomNames is the first n names of randomName's sequence.
func randomNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = randomName(i)
	}
	return names
}

// pageUse is the database's high-water mark in bytes, the bytes of its
// pages in use (neither on the free list nor pending), and the share of its
// pages that are free.
func pageUse(tb testing.TB, j *Journal) (size, used int64, free float64) {
	tb.Helper()
	if err := j.db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	st := j.db.Stats()
	ps := int64(j.db.Info().PageSize)
	freePages := int64(st.FreePageN + st.PendingPageN)
	return size, size - freePages*ps, float64(freePages) / float64(size/ps)
}

// pushNames registers names in the session as a push of tiny files does
// (Need in requests of 10,000), then marks them verified as its packs do
// (markInPacks, in an order unrelated to the names'), and returns how long
// the Need took.
func pushNames(t *testing.T, j *Journal, sid string, names []string) time.Duration {
	t.Helper()
	n := len(names)
	start := time.Now()
	needNames(t, j, sid, names)
	needTime := time.Since(start)
	order := make([]string, n)
	for k := range order {
		order[k] = names[(k*7919)%n]
	}
	markInPacks(t, j, sid, order)
	return needTime
}

// needNames registers names in the session in requests of 10,000, each of
// which must answer them all needed.
func needNames(tb testing.TB, j *Journal, sid string, names []string) {
	tb.Helper()
	for i := 0; i < len(names); i += 10_000 {
		batch := names[i:min(i+10_000, len(names))]
		if need, err := j.Need(context.Background(), sid, batch, 0); err != nil || len(need) != len(batch) {
			tb.Fatalf("need: %d of %d names, %v", len(need), len(batch), err)
		}
	}
}

// markInPacks marks names verified in their order, as packs of 1,024 do,
// four packs at once (push -j 4).
func markInPacks(tb testing.TB, j *Journal, sid string, names []string) {
	tb.Helper()
	packs := make(chan []VerifiedObject)
	var writers sync.WaitGroup
	for range 4 {
		writers.Go(func() {
			for vs := range packs {
				if err := j.MarkVerifiedMany(context.Background(), sid, ownerA, vs); err != nil {
					tb.Error(err)
				}
			}
		})
	}
	for i := 0; i < len(names); i += 1024 {
		vs := make([]VerifiedObject, 0, 1024)
		for k := i; k < min(i+1024, len(names)); k++ {
			vs = append(vs, VerifiedObject{Name: names[k], Size: int64(100 + k%4000)})
		}
		packs <- vs
	}
	close(packs)
	writers.Wait()
}

// BenchmarkVerdictsOfTinyFiles records the verdicts of a push of 200,000
// tiny files as its packs bring them, each negotiation's 10,000 names
// packed in the order of the client's walk (random in the journal's key
// order) or in name order, as the client packs them. Packs of neighbouring
// names rewrite fewer pages: less time, and a smaller high-water mark
// (reported in bytes per object).
func BenchmarkVerdictsOfTinyFiles(b *testing.B) {
	const n = 200_000
	names := randomNames(n)
	for _, sorted := range []bool{false, true} {
		b.Run(map[bool]string{false: "walk-order", true: "name-order"}[sorted], func(b *testing.B) {
			order := slices.Clone(names)
			for i := 0; sorted && i < n; i += 10_000 {
				slices.Sort(order[i:min(i+10_000, n)])
			}
			var perObject float64
			for range b.N {
				b.StopTimer()
				j, _ := mustOpen(b)
				s := mustSession(b, j, ownerA, "a")
				base, _, _ := pageUse(b, j)
				needNames(b, j, s.ID, names)
				b.StartTimer()
				markInPacks(b, j, s.ID, order)
				b.StopTimer()
				size, _, _ := pageUse(b, j)
				perObject = float64(size-base) / n
				j.Close()
			}
			b.ReportMetric(perObject, "B/object")
		})
	}
}

// A trim of the memory map held up for a while (a loaded machine) does not
// keep the pages that writes free meanwhile from being used again: the
// journal of a push of tiny files stays within 100 bytes per object while
// trims run back to back throughout.
func TestSlowTrimsDoNotGrowTheJournal(t *testing.T) {
	const n = 100_000
	j, _ := mustOpen(t)
	s := mustSession(t, j, ownerA, "a")
	names := randomNames(n)
	base, _, _ := pageUse(t, j)
	j.trimHeld = func() { time.Sleep(20 * time.Millisecond) }
	stop := make(chan struct{})
	var trims sync.WaitGroup
	trims.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				j.trim()
			}
		}
	})
	pushNames(t, j, s.ID, names)
	close(stop)
	trims.Wait()
	size, _, _ := pageUse(t, j)
	t.Logf("%d objects, trims held %v back to back: high-water mark %.1f bytes per object", n, 20*time.Millisecond, float64(size-base)/n)
	if perObject := float64(size-base) / n; perObject > 100 {
		t.Errorf("high-water mark of %.1f bytes per object with slow trims, want at most 100", perObject)
	}
}

// A push of many tiny files costs the journal at most 100 bytes of records
// per object of the open session (names registered by Need in requests of
// 10,000, verified by packs of 1,024), and all of it is free again once the
// session is released.
func TestBytesPerObject(t *testing.T) {
	const n = 100_000
	ctx := context.Background()
	j, path := mustOpen(t)
	s := mustSession(t, j, ownerA, "a")
	names := randomNames(n)
	base, _, _ := pageUse(t, j)

	start := time.Now()
	needTime := pushNames(t, j, s.ID, names)
	total := time.Since(start)
	checkCounts(t, j, s.ID, n, n, mustGet(t, j, s.ID).Bytes)

	size, used, _ := pageUse(t, j)
	perObject, usedPerObject := float64(size-base)/n, float64(used-base)/n
	// On disk, the file is at most one allocation step larger.
	if fi, err := os.Stat(path); err != nil {
		t.Fatal(err)
	} else if fi.Size() > size+allocStep {
		t.Errorf("the file takes %d bytes for %d of pages (%.1f bytes per object)", fi.Size(), size, float64(fi.Size()-base)/n)
	}
	t.Logf("%d objects: Need %v, Need+MarkVerifiedMany %v; high-water mark %d bytes (%.1f bytes per object), in use %d (%.1f per object)",
		n, needTime.Round(time.Millisecond), total.Round(time.Millisecond), size, perObject, used, usedPerObject)
	// The records take at most 100 bytes per object. bbolt copies the pages
	// a transaction changes and frees the old ones at a later commit, so
	// the file also holds the pages a transaction replaced: Need registers
	// at most needChunk names per transaction and a pack's batch is
	// recorded verifiedChunk names at a time, in name order, each chunk in
	// one range of the bucket. Four packs' batches in one transaction
	// rewrote the whole bucket at once, 146 bytes per object here; each
	// batch of 1,024 in one transaction of its own, 111.
	if usedPerObject > 100 {
		t.Errorf("%.1f bytes in use per object, want at most 100", usedPerObject)
	}
	if perObject > 100 {
		t.Errorf("high-water mark of %.1f bytes per object, want at most 100", perObject)
	}

	if err := j.SetState(ctx, s.ID, StateAborted, "test"); err != nil {
		t.Fatal(err)
	}
	freed, err := j.ReleaseSession(ctx, s.ID, ownerA)
	if err != nil || len(freed) != n {
		t.Fatalf("release: %d freed, %v", len(freed), err)
	}
	if err := j.DeleteSessionObjects(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	after, _, free := pageUse(t, j)
	t.Logf("after the release: %d bytes, %.1f%% of the pages free", after, 100*free)
	if free < 0.9 {
		t.Errorf("%.1f%% of the pages free after the release, want at least 90%%", 100*free)
	}
}

// A release hands over the names to free a batch at a time, so that a
// session of any size is released in bounded memory, and stops at the
// caller's error.
func TestReleaseSessionEachBatch(t *testing.T) {
	ctx := context.Background()
	j, _ := mustOpen(t)
	j.batchSize = 10
	s := mustSession(t, j, ownerA, "a")
	var vs []VerifiedObject
	for i := range 25 {
		vs = append(vs, VerifiedObject{Name: randomName(i), Size: 1})
	}
	if _, err := j.Need(ctx, s.ID, namesOf(vs), 0); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkVerifiedMany(ctx, s.ID, ownerA, vs); err != nil {
		t.Fatal(err)
	}
	if err := j.SetState(ctx, s.ID, StateAborted, "test"); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	calls := 0
	if err := j.ReleaseSessionEach(ctx, s.ID, ownerA, func([]string) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("an error from each: %v after %d calls, want it returned after 1", err, calls)
	}
	var got []string
	if err := j.ReleaseSessionEach(ctx, s.ID, ownerA, func(names []string) error {
		if len(names) > 10 {
			t.Errorf("a batch of %d names, want at most 10", len(names))
		}
		got = append(got, names...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := namesOf(vs)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("freed %d names, want the session's 25", len(got))
	}
}

func namesOf(vs []VerifiedObject) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.Name
	}
	return out
}
