package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// ObjState is an object's state within a session.
type ObjState uint8

// Object states. Verified is final within a session.
const (
	ObjWanted   ObjState = 1
	ObjReceived ObjState = 2
	ObjVerified ObjState = 3
	ObjRejected ObjState = 4
)

// ObjectEntry is one object of a session, as listed by Objects.
type ObjectEntry struct {
	Name   string
	State  ObjState
	Reason string
}

// objRecord is the stored form of an object: state, size (set when
// verified), rejection reason.
type objRecord struct {
	state  ObjState
	size   int64
	reason string
}

func (r objRecord) encode() []byte {
	b := make([]byte, 9+len(r.reason))
	b[0] = byte(r.state)
	binary.BigEndian.PutUint64(b[1:9], uint64(r.size))
	copy(b[9:], r.reason)
	return b
}

func decodeObj(v []byte) (objRecord, error) {
	if len(v) < 9 {
		return objRecord{}, fmt.Errorf("corrupt object record (%d bytes)", len(v))
	}
	return objRecord{
		state:  ObjState(v[0]),
		size:   int64(binary.BigEndian.Uint64(v[1:9])),
		reason: string(v[9:]),
	}, nil
}

// spoolEntry is the stored form of an owner's spool index entry.
type spoolEntry struct {
	Size    int64    `json:"size"`
	Holders []string `json:"holders"`
}

// getObj reads a session's record of an object; found is false if the
// session does not know it.
func getObj(objs *bolt.Bucket, key []byte) (rec objRecord, found bool, err error) {
	v := objs.Get(key)
	if v == nil {
		return rec, false, nil
	}
	if rec, err = decodeObj(v); err != nil {
		return rec, true, fmt.Errorf("object %q: %w", key, err)
	}
	return rec, true, nil
}

func getSpool(b *bolt.Bucket, name []byte) (*spoolEntry, error) {
	if b == nil {
		return nil, nil
	}
	v := b.Get(name)
	if v == nil {
		return nil, nil
	}
	var e spoolEntry
	if err := json.Unmarshal(v, &e); err != nil {
		return nil, fmt.Errorf("spool entry %q: %w", name, err)
	}
	return &e, nil
}

func putSpool(b *bolt.Bucket, name []byte, e *spoolEntry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return b.Put(name, v)
}

// objectsBucket returns the session's object bucket, creating it if create.
func objectsBucket(tx *bolt.Tx, id string, create bool) (*bolt.Bucket, error) {
	top := tx.Bucket(bucketObjects)
	if create {
		return top.CreateBucketIfNotExists([]byte(id))
	}
	return top.Bucket([]byte(id)), nil
}

// Need registers names in the session and returns, in input order and without
// duplicates, those the client must still send (detached metadata,
// ".commitmeta", always):
//   - already Verified in the session: not needed;
//   - in the owner's spool index: marked Verified here (the session joins the
//     entry's holders, Verified++, Bytes += size) and not needed;
//   - otherwise registered as Wanted if new and returned as needed.
//
// If registering the new names would make Objects exceed max (max <= 0: no
// limit), or the objects of the owner's open sessions exceed the owner's
// limit (SetLimits), nothing changes and a *TooManyError is returned. The session must be
// live. Bumps Updated. One transaction per call.
func (j *Journal) Need(ctx context.Context, sessionID string, names []string, max int) ([]string, error) {
	if err := checkSessionID(sessionID); err != nil {
		return nil, fmt.Errorf("journal: need: %w", err)
	}
	for _, n := range names {
		if err := checkName(n); err != nil {
			return nil, fmt.Errorf("journal: need: %w", err)
		}
	}
	var needed []string
	err := j.update(ctx, "need", func(tx *bolt.Tx) error {
		needed = nil
		s, err := getLiveSession(tx, sessionID)
		if err != nil {
			return err
		}
		objs, err := objectsBucket(tx, sessionID, true)
		if err != nil {
			return err
		}
		seen := make(map[string]struct{}, len(names))
		uniq := make([]string, 0, len(names))
		fresh := 0
		for _, n := range names {
			if _, dup := seen[n]; dup {
				continue
			}
			seen[n] = struct{}{}
			uniq = append(uniq, n)
			if objs.Get([]byte(n)) == nil {
				fresh++
			}
		}
		if max > 0 && s.Objects+fresh > max {
			return &TooManyError{What: "objects in the session", Have: s.Objects, Adds: fresh, Limit: max}
		}
		if limit := j.limit().ObjectsPerOwner; limit > 0 && fresh > 0 {
			have := 0
			for _, id := range ownerSessions(tx, s.Owner) {
				o, err := getSession(tx, id)
				if err != nil {
					return err
				}
				have += o.Objects
			}
			if have+fresh > limit {
				return &TooManyError{What: "objects in the token's open sessions", Have: have, Adds: fresh, Limit: limit}
			}
		}
		spool := tx.Bucket(bucketSpool).Bucket([]byte(s.Owner))
		for _, n := range uniq {
			key := []byte(n)
			var rec objRecord
			v := objs.Get(key)
			if isCommitMeta(n) {
				// Named after its commit, not its content: whatever the
				// client has now is wanted, to be merged at publish.
				if v == nil {
					if err := objs.Put(key, objRecord{state: ObjWanted}.encode()); err != nil {
						return err
					}
					s.Objects++
				}
				needed = append(needed, n)
				continue
			}
			if v != nil {
				if rec, err = decodeObj(v); err != nil {
					return fmt.Errorf("object %q: %w", n, err)
				}
				if rec.state == ObjVerified {
					continue
				}
			}
			e, err := getSpool(spool, key)
			if err != nil {
				return err
			}
			if e != nil {
				if !slices.Contains(e.Holders, sessionID) {
					e.Holders = append(e.Holders, sessionID)
					if err := putSpool(spool, key, e); err != nil {
						return err
					}
				}
				if err := objs.Put(key, objRecord{state: ObjVerified, size: e.Size}.encode()); err != nil {
					return err
				}
				if v == nil {
					s.Objects++
				}
				s.Verified++
				s.Bytes += e.Size
				continue
			}
			if v == nil {
				if err := objs.Put(key, objRecord{state: ObjWanted}.encode()); err != nil {
					return err
				}
				s.Objects++
			}
			needed = append(needed, n)
		}
		s.Updated = now()
		return putSession(tx, &s)
	})
	if err != nil {
		return nil, err
	}
	return needed, nil
}

// ObjectState returns the object's state in the session, or ErrNotFound if it
// is not registered.
func (j *Journal) ObjectState(ctx context.Context, sessionID, name string) (ObjState, error) {
	if err := checkSessionID(sessionID); err != nil {
		return 0, fmt.Errorf("journal: object state: %w", err)
	}
	if err := checkName(name); err != nil {
		return 0, fmt.Errorf("journal: object state: %w", err)
	}
	var st ObjState
	err := j.view(ctx, "object state", func(tx *bolt.Tx) error {
		objs, _ := objectsBucket(tx, sessionID, false)
		if objs == nil {
			return fmt.Errorf("object %q in session %s: %w", name, sessionID, ErrNotFound)
		}
		v := objs.Get([]byte(name))
		if v == nil {
			return fmt.Errorf("object %q in session %s: %w", name, sessionID, ErrNotFound)
		}
		rec, err := decodeObj(v)
		if err != nil {
			return fmt.Errorf("object %q: %w", name, err)
		}
		st = rec.state
		return nil
	})
	return st, err
}

// setObject is the common part of MarkReceived and MarkRejected: it registers
// the object if needed and sets its state, leaving Verified objects alone.
func (j *Journal) setObject(ctx context.Context, op, sessionID, name string, st ObjState, reason string) error {
	if len(reason) > maxReason {
		reason = reason[:maxReason] + "…"
	}
	if err := checkSessionID(sessionID); err != nil {
		return fmt.Errorf("journal: %s: %w", op, err)
	}
	if err := checkName(name); err != nil {
		return fmt.Errorf("journal: %s: %w", op, err)
	}
	return j.batch(ctx, op, func(tx *bolt.Tx) error {
		s, err := getSession(tx, sessionID)
		if err != nil {
			return err
		}
		objs, err := objectsBucket(tx, sessionID, true)
		if err != nil {
			return err
		}
		key := []byte(name)
		rec, found, err := getObj(objs, key)
		if err != nil {
			return err
		}
		if found && rec.state == ObjVerified {
			return nil
		}
		if !found {
			s.Objects++
		}
		if err := objs.Put(key, objRecord{state: st, reason: reason}.encode()); err != nil {
			return err
		}
		s.Updated = now()
		return putSession(tx, &s)
	})
}

// MarkReceived records that the object's bytes are complete and the verdict
// is pending (registering the object if needed). A Verified object stays
// Verified. Bumps Updated.
func (j *Journal) MarkReceived(ctx context.Context, sessionID, name string) error {
	return j.setObject(ctx, "mark received", sessionID, name, ObjReceived, "")
}

// maxReason bounds the reason kept for a rejected object.
const maxReason = 1024

// MarkRejected records that the object was refused, with the reason (its
// first 1,024 bytes; registering the object if needed). A Verified object stays Verified. Bumps Updated.
func (j *Journal) MarkRejected(ctx context.Context, sessionID, name, reason string) error {
	return j.setObject(ctx, "mark rejected", sessionID, name, ObjRejected, reason)
}

// MarkVerified records that the object is verified and durable in the spool:
// it becomes Verified (registered if needed), and on that transition only
// Verified++ and Bytes += size; the session joins the holders of the owner's
// spool index entry for name (created with size if missing). owner must be the
// session's Owner and the session must be live. Bumps Updated.
func (j *Journal) MarkVerified(ctx context.Context, sessionID, owner, name string, size int64) error {
	return j.MarkVerifiedMany(ctx, sessionID, owner, []VerifiedObject{{Name: name, Size: size}})
}

// markVerified is MarkVerified inside a transaction.
func markVerified(tx *bolt.Tx, sessionID, owner, name string, size int64) error {
	return markVerifiedMany(tx, sessionID, owner, []VerifiedObject{{Name: name, Size: size}})
}

// VerifiedObject names an object verified and durable in a spool, with its
// size as stored.
type VerifiedObject struct {
	Name string
	Size int64
}

// MarkVerifiedMany is MarkVerified for several objects of one session, in one
// transaction: either all are recorded or none.
func (j *Journal) MarkVerifiedMany(ctx context.Context, sessionID, owner string, objs []VerifiedObject) error {
	if err := checkSessionID(sessionID); err != nil {
		return fmt.Errorf("journal: mark verified: %w", err)
	}
	if err := checkOwner(owner); err != nil {
		return fmt.Errorf("journal: mark verified: %w", err)
	}
	for _, o := range objs {
		if err := checkName(o.Name); err != nil {
			return fmt.Errorf("journal: mark verified: %w", err)
		}
		if o.Size < 0 {
			return fmt.Errorf("journal: mark verified: negative size %d", o.Size)
		}
	}
	if len(objs) == 0 {
		return nil
	}
	return j.batch(ctx, "mark verified", func(tx *bolt.Tx) error {
		return markVerifiedMany(tx, sessionID, owner, objs)
	})
}

func markVerifiedMany(tx *bolt.Tx, sessionID, owner string, vs []VerifiedObject) error {
	s, err := getLiveSession(tx, sessionID)
	if err != nil {
		return err
	}
	if s.Owner != owner {
		return fmt.Errorf("session %s belongs to another owner", sessionID)
	}
	objs, err := objectsBucket(tx, sessionID, true)
	if err != nil {
		return err
	}
	spool, err := tx.Bucket(bucketSpool).CreateBucketIfNotExists([]byte(owner))
	if err != nil {
		return err
	}
	changed := false
	for _, v := range vs {
		key := []byte(v.Name)
		rec, found, err := getObj(objs, key)
		if err != nil {
			return err
		}
		if found && rec.state == ObjVerified {
			// Already counted; make sure the holder is there all the same.
			if err := joinSpool(spool, key, sessionID, rec.size); err != nil {
				return err
			}
			continue
		}
		if !found {
			s.Objects++
		}
		if err := objs.Put(key, objRecord{state: ObjVerified, size: v.Size}.encode()); err != nil {
			return err
		}
		if err := joinSpool(spool, key, sessionID, v.Size); err != nil {
			return err
		}
		s.Verified++
		s.Bytes += v.Size
		changed = true
	}
	if !changed {
		return nil
	}
	s.Updated = now()
	return putSession(tx, &s)
}

// joinSpool adds sessionID to the holders of name, creating the entry with
// size if it is missing.
func joinSpool(spool *bolt.Bucket, name []byte, sessionID string, size int64) error {
	e, err := getSpool(spool, name)
	if err != nil {
		return err
	}
	if e == nil {
		e = &spoolEntry{Size: size}
	} else if slices.Contains(e.Holders, sessionID) {
		return nil
	}
	e.Holders = append(e.Holders, sessionID)
	return putSpool(spool, name, e)
}

// SpoolHas reports whether the owner's spool index holds name.
func (j *Journal) SpoolHas(ctx context.Context, owner, name string) (bool, error) {
	if err := checkOwner(owner); err != nil {
		return false, fmt.Errorf("journal: spool has: %w", err)
	}
	if err := checkName(name); err != nil {
		return false, fmt.Errorf("journal: spool has: %w", err)
	}
	var has bool
	err := j.view(ctx, "spool has", func(tx *bolt.Tx) error {
		spool := tx.Bucket(bucketSpool).Bucket([]byte(owner))
		has = spool != nil && spool.Get([]byte(name)) != nil
		return nil
	})
	return has, err
}

// ReleaseSession removes sessionID from the holders of every spool entry of
// owner that it holds, and returns the names whose holder list became empty:
// those entries are deleted and the caller must delete the spool files. It
// walks the session's objects in transactions of bounded size; if it fails
// part-way it returns the names freed by the batches already committed
// together with the error, and a later call resumes the work. Call it after
// the session left the live states. owner must be the session's Owner.
func (j *Journal) ReleaseSession(ctx context.Context, sessionID, owner string) ([]string, error) {
	if err := checkSessionID(sessionID); err != nil {
		return nil, fmt.Errorf("journal: release session: %w", err)
	}
	if err := checkOwner(owner); err != nil {
		return nil, fmt.Errorf("journal: release session: %w", err)
	}
	var (
		freed []string
		after []byte
	)
	for {
		var (
			batchFreed []string
			last       []byte
			done       bool
		)
		err := j.update(ctx, "release session", func(tx *bolt.Tx) error {
			batchFreed, last, done = nil, nil, false
			s, err := getSession(tx, sessionID)
			if err != nil {
				return err
			}
			if s.Owner != owner {
				return fmt.Errorf("session %s belongs to another owner", sessionID)
			}
			objs, _ := objectsBucket(tx, sessionID, false)
			spool := tx.Bucket(bucketSpool).Bucket([]byte(owner))
			if objs == nil || spool == nil {
				done = true
				return nil
			}
			c := objs.Cursor()
			k, _ := seekAfter(c, after)
			for n := 0; k != nil && n < j.batchSize; n++ {
				e, err := getSpool(spool, k)
				if err != nil {
					return err
				}
				if e != nil {
					if i := slices.Index(e.Holders, sessionID); i >= 0 {
						e.Holders = slices.Delete(e.Holders, i, i+1)
						if len(e.Holders) == 0 {
							err = spool.Delete(k)
							batchFreed = append(batchFreed, string(k))
						} else {
							err = putSpool(spool, k, e)
						}
						if err != nil {
							return err
						}
					}
				}
				last = bytes.Clone(k)
				k, _ = c.Next()
			}
			done = k == nil
			return nil
		})
		if err != nil {
			return freed, err
		}
		freed = append(freed, batchFreed...)
		if done {
			return freed, nil
		}
		after = last
	}
}

// seekAfter positions c on the first key after the given one (the first key
// if after is empty).
func seekAfter(c *bolt.Cursor, after []byte) ([]byte, []byte) {
	if len(after) == 0 {
		return c.First()
	}
	k, v := c.Seek(after)
	if k != nil && bytes.Equal(k, after) {
		k, v = c.Next()
	}
	return k, v
}

// Objects pages through a session's objects in name order, after the given
// name ("" = from the start), at most limit (> 0) entries. ErrNotFound if the
// session does not exist.
func (j *Journal) Objects(ctx context.Context, sessionID, after string, limit int) ([]ObjectEntry, error) {
	if err := checkSessionID(sessionID); err != nil {
		return nil, fmt.Errorf("journal: objects: %w", err)
	}
	if limit <= 0 {
		return nil, fmt.Errorf("journal: objects: limit %d is not positive", limit)
	}
	var out []ObjectEntry
	err := j.view(ctx, "objects", func(tx *bolt.Tx) error {
		out = nil
		if _, err := getSession(tx, sessionID); err != nil {
			return err
		}
		objs, _ := objectsBucket(tx, sessionID, false)
		if objs == nil {
			return nil
		}
		c := objs.Cursor()
		for k, v := seekAfter(c, []byte(after)); k != nil && len(out) < limit; k, v = c.Next() {
			rec, err := decodeObj(v)
			if err != nil {
				return fmt.Errorf("object %q: %w", k, err)
			}
			out = append(out, ObjectEntry{Name: string(k), State: rec.state, Reason: rec.reason})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteSessionObjects removes a session's per-object records (call it after
// ReleaseSession), in transactions of bounded size. The session's counters
// are kept. Deleting a session without objects is not an error.
func (j *Journal) DeleteSessionObjects(ctx context.Context, sessionID string) error {
	if err := checkSessionID(sessionID); err != nil {
		return fmt.Errorf("journal: delete session objects: %w", err)
	}
	for {
		done := false
		err := j.update(ctx, "delete session objects", func(tx *bolt.Tx) error {
			done = false
			objs, _ := objectsBucket(tx, sessionID, false)
			if objs == nil {
				done = true
				return nil
			}
			keys := make([][]byte, 0, min(j.batchSize, 1024))
			c := objs.Cursor()
			for k, _ := c.First(); k != nil && len(keys) < j.batchSize; k, _ = c.Next() {
				keys = append(keys, bytes.Clone(k))
			}
			if len(keys) == 0 {
				done = true
				return tx.Bucket(bucketObjects).DeleteBucket([]byte(sessionID))
			}
			for _, k := range keys {
				if err := objs.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// isCommitMeta reports whether name is a commit's detached metadata.
func isCommitMeta(name string) bool { return strings.HasSuffix(name, ".commitmeta") }
