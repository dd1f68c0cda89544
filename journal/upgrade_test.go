package journal

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// v3Session is a session of a schema 3 journal and its object records.
type v3Session struct {
	s    Session
	objs map[string]objRecord
}

// v3Sessions are the sessions of a schema 3 journal: two of owner A share
// an object, one of them has ended but is not released, a third of A was
// released; owner B has one of A's names in its own spool.
func v3Sessions() []v3Session {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	sess := func(id, owner string, st State, objects, verified int, bytes int64) Session {
		return Session{ID: id, Owner: owner, OwnerName: "tester", State: st, Created: t0, Updated: t0,
			Refs:    []RefUpdate{{Ref: "r-" + id[:4], New: commit(1)}},
			Objects: objects, Verified: verified, Bytes: bytes}
	}
	return []v3Session{
		{sess("a1000000000000000000000000000000", ownerA, StateOpen, 5, 2, 300), map[string]objRecord{
			obj(0): {state: ObjVerified, size: 100},
			obj(1): {state: ObjVerified, size: 200},
			obj(2): {state: ObjWanted},
			obj(3): {state: ObjRejected, reason: "bad checksum"},
			obj(4): {state: ObjReceived},
		}},
		{sess("a2000000000000000000000000000000", ownerA, StatePublished, 2, 2, 250), map[string]objRecord{
			obj(1): {state: ObjVerified, size: 200},
			obj(5): {state: ObjVerified, size: 50},
		}},
		{sess("a3000000000000000000000000000000", ownerA, StateAborted, 1, 1, 1), nil},
		{sess("b1000000000000000000000000000000", ownerB, StateOpen, 1, 1, 7), map[string]objRecord{
			obj(0): {state: ObjVerified, size: 7},
		}},
	}
}

// writeV3 writes a schema 3 journal at path, with the encodings of schema 3:
// object names as keys, records of state, 8-byte size and reason, and the
// per-owner spool index.
func writeV3(t *testing.T, path string, sessions []v3Session) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	type spoolEntry struct {
		Size    int64    `json:"size"`
		Holders []string `json:"holders"`
	}
	spool := map[string]map[string]*spoolEntry{}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketSessions, bucketLive, bucketOwners, bucketObjects, bucketSpool, bucketDue} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMeta).Put(keyVersion, []byte("3")); err != nil {
			return err
		}
		for _, vs := range sessions {
			s := vs.s
			if err := putSession(tx, &s); err != nil {
				return err
			}
			if s.State.Live() {
				if err := tx.Bucket(bucketLive).Put([]byte(s.ID), nil); err != nil {
					return err
				}
				if err := tx.Bucket(bucketOwners).Put(ownerKey(s.Owner, s.ID), nil); err != nil {
					return err
				}
			}
			if vs.objs == nil {
				continue
			}
			b, err := tx.Bucket(bucketObjects).CreateBucket([]byte(s.ID))
			if err != nil {
				return err
			}
			for name, r := range vs.objs {
				v := binary.BigEndian.AppendUint64([]byte{byte(r.state)}, uint64(r.size))
				if err := b.Put([]byte(name), append(v, r.reason...)); err != nil {
					return err
				}
				if r.state == ObjVerified {
					if spool[s.Owner] == nil {
						spool[s.Owner] = map[string]*spoolEntry{}
					}
					if spool[s.Owner][name] == nil {
						spool[s.Owner][name] = &spoolEntry{Size: r.size}
					}
					spool[s.Owner][name].Holders = append(spool[s.Owner][name].Holders, s.ID)
				}
			}
		}
		// An entry of the released session, whose records are gone.
		spool[ownerA][obj(9)] = &spoolEntry{Size: 1, Holders: []string{"a3000000000000000000000000000000"}}
		for owner, entries := range spool {
			b, err := tx.Bucket(bucketSpool).CreateBucket([]byte(owner))
			if err != nil {
				return err
			}
			for name, e := range entries {
				v, _ := json.Marshal(e)
				if err := b.Put([]byte(name), v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkUpgraded checks that the journal at path, written by writeV3 and
// opened, answers as the schema 3 journal did.
func checkUpgraded(t *testing.T, path string, sessions []v3Session) {
	t.Helper()
	ctx := context.Background()
	j, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	j.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyVersion); string(v) != schemaVersion {
			t.Errorf("version %q after the upgrade", v)
		}
		for _, name := range [][]byte{bucketSpool, bucketUpgrade} {
			if tx.Bucket(name) != nil {
				t.Errorf("bucket %s left after the upgrade", name)
			}
		}
		return nil
	})
	for _, vs := range sessions {
		got := mustGet(t, j, vs.s.ID)
		if got.State != vs.s.State || got.Objects != vs.s.Objects || got.Verified != vs.s.Verified || got.Bytes != vs.s.Bytes {
			t.Errorf("session %s = %+v, want %+v", vs.s.ID, got, vs.s)
		}
		entries, err := j.Objects(ctx, vs.s.ID, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		var want []ObjectEntry
		for name, r := range vs.objs {
			want = append(want, ObjectEntry{Name: name, State: r.state, Reason: r.reason})
		}
		slices.SortFunc(want, func(a, b ObjectEntry) int { return cmpStr(a.Name, b.Name) })
		if !slices.Equal(entries, want) {
			t.Errorf("objects of %s = %+v, want %+v", vs.s.ID, entries, want)
		}
	}
	for _, c := range []struct {
		owner string
		i     int
		has   bool
	}{{ownerA, 0, true}, {ownerA, 1, true}, {ownerA, 5, true}, {ownerA, 2, false}, {ownerA, 3, false}, {ownerA, 9, false},
		{ownerB, 0, true}, {ownerB, 1, false}} {
		if has, err := j.SpoolHas(ctx, c.owner, obj(c.i)); err != nil || has != c.has {
			t.Errorf("SpoolHas(%.4s, %d) = %v, %v; want %v", c.owner, c.i, has, err, c.has)
		}
	}
	a1, a2 := sessions[0].s.ID, sessions[1].s.ID
	if _, err := j.ReleaseSession(ctx, a1, ownerA); err == nil {
		t.Error("released the live session")
	}
	// The ended session shares obj(1) with the live one: only obj(5) goes.
	if freed, err := j.ReleaseSession(ctx, a2, ownerA); err != nil || !slices.Equal(freed, []string{obj(5)}) {
		t.Errorf("release of the ended session = %v, %v; want [%s]", freed, err, obj(5))
	}
	// A new session of A finds verified objects, with their sizes, in the
	// sessions whose release has not begun.
	s := mustSession(t, j, ownerA, "new")
	need, err := j.Need(ctx, s.ID, []string{obj(0), obj(1), obj(5)}, 0)
	if err != nil || !slices.Equal(need, []string{obj(5)}) {
		t.Errorf("Need = %v, %v; want [%s]", need, err, obj(5))
	}
	checkCounts(t, j, s.ID, 3, 2, 300)
	// The holders index was built: the ended session's records go with
	// its index entry, and then the live session alone holds obj(1).
	if err := j.DeleteSessionObjects(ctx, a2); err != nil {
		t.Fatal(err)
	}
	if err := j.SetState(ctx, a1, StateAborted, ""); err != nil {
		t.Fatal(err)
	}
	if err := j.SetState(ctx, s.ID, StateAborted, ""); err != nil {
		t.Fatal(err)
	}
	if err := j.DeleteSessionObjects(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if freed, err := j.ReleaseSession(ctx, a1, ownerA); err != nil || !slices.Equal(freed, objs(0, 2)) {
		t.Errorf("release of the last holder = %v, %v; want %v", freed, err, objs(0, 2))
	}
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// A schema 3 journal is converted when opened: every state, size, reason
// and counter is kept, and the spool index's answers (SpoolHas,
// ReleaseSession, Need's reuse) come from the sessions' records.
func TestUpgradeFromSchema3(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	sessions := v3Sessions()
	writeV3(t, path, sessions)
	checkUpgraded(t, path, sessions)
}

// An upgrade cut short (one session converted, another's copy half done,
// the version not yet written) is finished by the next Open; meanwhile
// the journal's version keeps binaries of schema 3 out.
func TestUpgradeInterrupted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	sessions := v3Sessions()
	writeV3(t, path, sessions)

	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	j := &Journal{db: db, batchSize: 1}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyVersion, []byte(versionUpgrading))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.upgradeSession(sessions[0].s.ID); err != nil {
		t.Fatal(err)
	}
	// A copy of the second session's records that a crash cut short.
	err = db.Update(func(tx *bolt.Tx) error {
		staging, err := tx.CreateBucketIfNotExists(bucketUpgrade)
		if err != nil {
			return err
		}
		b, err := staging.CreateBucket([]byte(sessions[1].s.ID))
		if err != nil {
			return err
		}
		key, _ := objKey(obj(1))
		return b.Put(key, objRecord{state: ObjVerified, size: 999}.encode())
	})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyVersion); string(v) == "3" || string(v) == schemaVersion {
			t.Errorf("version %q in the middle of the upgrade", v)
		}
		return nil
	})
	db.Close()

	checkUpgraded(t, path, sessions)
}

// A session whose release schema 3 had begun (its spool entries given up,
// their files unlinked, its records not yet deleted) is no source of files
// after the upgrade: a new session of the token is asked for the object
// again, and the session's own release still names it.
func TestUpgradeReleaseBegun(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal.db")
	sessions := v3Sessions()
	const a4 = "a4000000000000000000000000000000"
	t0 := sessions[0].s.Created
	sessions = append(sessions, v3Session{Session{ID: a4, Owner: ownerA, OwnerName: "tester", State: StateExpired,
		Created: t0, Updated: t0, Refs: []RefUpdate{{Ref: "r-a4", New: commit(1)}}, Objects: 2, Verified: 2, Bytes: 70},
		map[string]objRecord{obj(6): {state: ObjVerified, size: 60}, obj(7): {state: ObjVerified, size: 10}}})
	writeV3(t, path, sessions)
	// The release's first batch: obj(6)'s entry freed, obj(7)'s not yet.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSpool).Bucket([]byte(ownerA)).Delete([]byte(obj(6)))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	j, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for _, i := range []int{6, 7} {
		if has, err := j.SpoolHas(ctx, ownerA, obj(i)); err != nil || has {
			t.Errorf("SpoolHas(obj(%d)) = %v, %v after the upgrade; want false", i, has, err)
		}
	}
	s := mustSession(t, j, ownerA, "new")
	if need, err := j.Need(ctx, s.ID, []string{obj(6), obj(0)}, 0); err != nil || !slices.Equal(need, []string{obj(6)}) {
		t.Errorf("Need = %v, %v; want [%s]", need, err, obj(6))
	}
	if freed, err := j.ReleaseSession(ctx, a4, ownerA); err != nil || !slices.Equal(freed, objs(6, 8)) {
		t.Errorf("release of the session = %v, %v; want %v", freed, err, objs(6, 8))
	}
	// The other sessions hold their files as before.
	if has, err := j.SpoolHas(ctx, ownerA, obj(5)); err != nil || !has {
		t.Errorf("SpoolHas(obj(5)) = %v, %v; want true", has, err)
	}
}
