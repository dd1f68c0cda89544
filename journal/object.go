package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/ostree-upload/ostree-upload/store/object"
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

// keyLen is the length of an object's key in a session's bucket: its
// 32-byte checksum, then its type (object.Type).
const keyLen = 33

// objKey is the key of a valid object name ("<64 hex>.<ext>").
func objKey(name string) ([]byte, error) {
	n, err := object.ParseName(name)
	if err != nil {
		return nil, err
	}
	return nameKey(n), nil
}

func nameKey(n object.Name) []byte {
	k := make([]byte, keyLen)
	copy(k, n.Sum[:])
	k[32] = byte(n.Type)
	return k
}

// keyName is the object name a key stands for.
func keyName(k []byte) string {
	var n object.Name
	copy(n.Sum[:], k)
	if len(k) == keyLen {
		n.Type = object.Type(k[32])
	}
	return n.String()
}

// isCommitMetaKey reports whether k is a commit's detached metadata.
func isCommitMetaKey(k []byte) bool {
	return len(k) == keyLen && object.Type(k[32]) == object.CommitMeta
}

// objRecord is an object's record in its session: the state, then for
// Verified the size (uvarint), for Rejected the reason.
type objRecord struct {
	state  ObjState
	size   int64
	reason string
}

func (r objRecord) encode() []byte {
	switch r.state {
	case ObjVerified:
		return binary.AppendUvarint([]byte{byte(r.state)}, uint64(r.size))
	case ObjRejected:
		return append([]byte{byte(r.state)}, r.reason...)
	}
	return []byte{byte(r.state)}
}

func decodeObj(v []byte) (objRecord, error) {
	if len(v) == 0 {
		return objRecord{}, fmt.Errorf("corrupt object record (empty)")
	}
	r := objRecord{state: ObjState(v[0])}
	switch r.state {
	case ObjVerified:
		size, n := binary.Uvarint(v[1:])
		if n <= 0 || 1+n != len(v) || size > 1<<62 {
			return objRecord{}, fmt.Errorf("corrupt object record (%d bytes)", len(v))
		}
		r.size = int64(size)
	case ObjRejected:
		r.reason = string(v[1:])
	}
	return r, nil
}

// getObj reads a session's record of an object; found is false if the
// session does not know it.
func getObj(objs *bolt.Bucket, key []byte) (rec objRecord, found bool, err error) {
	v := objs.Get(key)
	if v == nil {
		return rec, false, nil
	}
	if rec, err = decodeObj(v); err != nil {
		return rec, true, fmt.Errorf("object %s: %w", keyName(key), err)
	}
	return rec, true, nil
}

// verifiedIn returns the size of the object if one of the buckets has it
// Verified.
func verifiedIn(buckets []*bolt.Bucket, key []byte) (size int64, ok bool, err error) {
	for _, b := range buckets {
		rec, found, err := getObj(b, key)
		if err != nil {
			return 0, false, err
		}
		if found && rec.state == ObjVerified {
			return rec.size, true, nil
		}
	}
	return 0, false, nil
}

// sessionFillPercent is how full bbolt fills the pages it splits in a
// session's object bucket. Names arrive in random key order, so every
// page keeps receiving inserts: a page split half full fills up again and
// splits again, leaving pages between half and entirely full. Measured
// with TestBytesPerObject, bbolt's default (0.5) gives the smallest file;
// 0.7, 0.9 and 1.0 gave 7 %, 53 % and 65 % more. Set here so that the
// choice is seen.
const sessionFillPercent = bolt.DefaultFillPercent

// objectsBucket returns the session's object bucket, or nil if it has
// none. With create, a missing bucket is created, and the session entered
// in the holders index of its owner.
func objectsBucket(tx *bolt.Tx, owner, id string, create bool) (*bolt.Bucket, error) {
	top := tx.Bucket(bucketObjects)
	b := top.Bucket([]byte(id))
	if b == nil && create {
		var err error
		if b, err = top.CreateBucket([]byte(id)); err != nil {
			return nil, err
		}
		if err := tx.Bucket(bucketHolders).Put(ownerKey(owner, id), nil); err != nil {
			return nil, err
		}
	}
	if b != nil && tx.Writable() {
		b.FillPercent = sessionFillPercent
	}
	return b, nil
}

// holderBuckets returns the object buckets of the owner's sessions in the
// holders index (those whose release has not begun), but for the session
// except.
func holderBuckets(tx *bolt.Tx, owner, except string) []*bolt.Bucket {
	var out []*bolt.Bucket
	top := tx.Bucket(bucketObjects)
	prefix := []byte(owner + "/")
	c := tx.Bucket(bucketHolders).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		id := k[len(prefix):]
		if string(id) == except {
			continue
		}
		if b := top.Bucket(id); b != nil {
			out = append(out, b)
		}
	}
	return out
}

// byKey returns the indices of keys in key order: writes in key order
// touch each page once and append to it rather than split it anywhere.
func byKey(keys [][]byte) []int {
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return bytes.Compare(keys[a], keys[b]) })
	return order
}

// Need registers names in the session and returns, in input order and without
// duplicates, those the client must still send (detached metadata,
// ".commitmeta", always):
//   - already Verified in the session: not needed;
//   - Verified in another session of the owner whose release has not begun
//     (its file is in the owner's spool; an ended session keeps its files
//     until it is released, a TTL after an abort): marked Verified here with
//     that size (Verified++, Bytes += size) and not needed;
//   - otherwise registered as Wanted if new and returned as needed.
//
// If registering the new names would make Objects exceed max (max <= 0: no
// limit), or the objects of the owner's open sessions exceed the owner's
// limit (SetLimits), nothing changes and a *TooManyError is returned. The
// session must be live. Bumps Updated. The names are registered in key
// order, in transactions of at most needChunk names: a failure part-way
// (or a concurrent request of the owner taking the room that was checked
// first) leaves the chunks before it registered, as a retry would.
func (j *Journal) Need(ctx context.Context, sessionID string, names []string, max int) ([]string, error) {
	if err := checkSessionID(sessionID); err != nil {
		return nil, fmt.Errorf("journal: need: %w", err)
	}
	seen := make(map[string]struct{}, len(names))
	uniq := make([]string, 0, len(names))
	keys := make([][]byte, 0, len(names))
	for _, n := range names {
		k, err := checkName(n)
		if err != nil {
			return nil, fmt.Errorf("journal: need: %w", err)
		}
		if _, dup := seen[n]; dup {
			continue
		}
		seen[n] = struct{}{}
		uniq = append(uniq, n)
		keys = append(keys, k)
	}
	order := byKey(keys)
	// The limits first, for the whole request, so that a refusal changes
	// nothing; each chunk checks them again against concurrent requests.
	// Counting the names the session lacks costs a lookup each, so it is
	// done only if the request would not fit were they all new.
	if err := j.view(ctx, "need", func(tx *bolt.Tx) error {
		s, err := getLiveSession(tx, sessionID)
		if err != nil {
			return err
		}
		if j.needRoom(tx, s, len(keys), max) == nil {
			return nil
		}
		fresh := 0
		if objs := tx.Bucket(bucketObjects).Bucket([]byte(sessionID)); objs != nil {
			for _, k := range keys {
				if objs.Get(k) == nil {
					fresh++
				}
			}
		} else {
			fresh = len(keys)
		}
		return j.needRoom(tx, s, fresh, max)
	}); err != nil {
		return nil, err
	}
	need := make([]bool, len(keys))
	for start := 0; start < len(order); start += needChunk {
		chunk := order[start:min(start+needChunk, len(order))]
		err := j.update(ctx, "need", func(tx *bolt.Tx) error {
			for _, i := range chunk {
				need[i] = false
			}
			s, err := getLiveSession(tx, sessionID)
			if err != nil {
				return err
			}
			objs, err := objectsBucket(tx, s.Owner, sessionID, true)
			if err != nil {
				return err
			}
			recs := make([]objRecord, len(chunk))
			known := make([]bool, len(chunk))
			fresh := 0
			for x, i := range chunk {
				if recs[x], known[x], err = getObj(objs, keys[i]); err != nil {
					return err
				}
				if !known[x] {
					fresh++
				}
			}
			if err := j.needRoom(tx, s, fresh, max); err != nil {
				return err
			}
			sources := holderBuckets(tx, s.Owner, sessionID)
			for x, i := range chunk {
				key, rec, found := keys[i], recs[x], known[x]
				if isCommitMetaKey(key) {
					// Named after its commit, not its content: whatever the
					// client has now is wanted, to be merged at publish.
					if !found {
						if err := objs.Put(key, objRecord{state: ObjWanted}.encode()); err != nil {
							return err
						}
						s.Objects++
					}
					need[i] = true
					continue
				}
				if found && rec.state == ObjVerified {
					continue
				}
				size, ok, err := verifiedIn(sources, key)
				if err != nil {
					return err
				}
				if ok {
					if err := objs.Put(key, objRecord{state: ObjVerified, size: size}.encode()); err != nil {
						return err
					}
					if !found {
						s.Objects++
					}
					s.Verified++
					s.Bytes += size
					continue
				}
				if !found {
					if err := objs.Put(key, objRecord{state: ObjWanted}.encode()); err != nil {
						return err
					}
					s.Objects++
				}
				need[i] = true
			}
			s.Updated = now()
			return putSession(tx, &s)
		})
		if err != nil {
			return nil, err
		}
	}
	var needed []string
	for i, n := range uniq {
		if need[i] {
			needed = append(needed, n)
		}
	}
	return needed, nil
}

// needChunk bounds the names one transaction of Need registers: a
// transaction rewrites every page it touches, and holds the new copies in
// memory until it commits, so that a request of random names into a
// session of a million objects would otherwise copy most of its bucket at
// once (memory, and the file's high-water mark). In key order, a chunk
// touches one range of the bucket.
const needChunk = 1024

// needRoom returns a *TooManyError if registering fresh names new to the
// session s would exceed max or the owner's limit.
func (j *Journal) needRoom(tx *bolt.Tx, s Session, fresh, max int) error {
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
	return nil
}

// ObjectState returns the object's state in the session, or ErrNotFound if it
// is not registered.
func (j *Journal) ObjectState(ctx context.Context, sessionID, name string) (ObjState, error) {
	if err := checkSessionID(sessionID); err != nil {
		return 0, fmt.Errorf("journal: object state: %w", err)
	}
	key, err := checkName(name)
	if err != nil {
		return 0, fmt.Errorf("journal: object state: %w", err)
	}
	var st ObjState
	err = j.view(ctx, "object state", func(tx *bolt.Tx) error {
		objs := tx.Bucket(bucketObjects).Bucket([]byte(sessionID))
		if objs == nil {
			return fmt.Errorf("object %q in session %s: %w", name, sessionID, ErrNotFound)
		}
		rec, found, err := getObj(objs, key)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("object %q in session %s: %w", name, sessionID, ErrNotFound)
		}
		st = rec.state
		return nil
	})
	return st, err
}

// ObjectStates returns the states of objects in the session, in one read
// transaction: 0 for a name the session has not registered.
func (j *Journal) ObjectStates(ctx context.Context, sessionID string, names []string) ([]ObjState, error) {
	if err := checkSessionID(sessionID); err != nil {
		return nil, fmt.Errorf("journal: object states: %w", err)
	}
	keys := make([][]byte, len(names))
	for i, n := range names {
		var err error
		if keys[i], err = checkName(n); err != nil {
			return nil, fmt.Errorf("journal: object states: %w", err)
		}
	}
	states := make([]ObjState, len(names))
	err := j.view(ctx, "object states", func(tx *bolt.Tx) error {
		objs := tx.Bucket(bucketObjects).Bucket([]byte(sessionID))
		if objs == nil {
			return nil
		}
		for _, i := range byKey(keys) {
			rec, found, err := getObj(objs, keys[i])
			if err != nil {
				return err
			}
			if found {
				states[i] = rec.state
			}
		}
		return nil
	})
	return states, err
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
	key, err := checkName(name)
	if err != nil {
		return fmt.Errorf("journal: %s: %w", op, err)
	}
	return j.batch(ctx, op, func(tx *bolt.Tx) error {
		s, err := getSession(tx, sessionID)
		if err != nil {
			return err
		}
		objs, err := objectsBucket(tx, s.Owner, sessionID, true)
		if err != nil {
			return err
		}
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

// MarkVerified records that the object is verified and durable in the
// owner's spool: it becomes Verified (registered if needed), and on that
// transition only Verified++ and Bytes += size. From then on the session
// holds the spool file until it is released. owner must be the session's
// Owner and the session must be live. Bumps Updated.
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

// MarkVerifiedMany is MarkVerified for several objects of one session.
// Fewer than soloVerified share a transaction (and its fsync) with
// concurrent writes, all or none. More are recorded in name order, in
// transactions of their own of at most verifiedChunk objects: a failure
// part-way leaves the chunks before it recorded, which is true of them,
// since every object given is durable already. Bad names or another owner
// refuse the whole call before anything is written.
func (j *Journal) MarkVerifiedMany(ctx context.Context, sessionID, owner string, objs []VerifiedObject) error {
	if err := checkSessionID(sessionID); err != nil {
		return fmt.Errorf("journal: mark verified: %w", err)
	}
	if err := checkOwner(owner); err != nil {
		return fmt.Errorf("journal: mark verified: %w", err)
	}
	for _, o := range objs {
		if _, err := checkName(o.Name); err != nil {
			return fmt.Errorf("journal: mark verified: %w", err)
		}
		if o.Size < 0 {
			return fmt.Errorf("journal: mark verified: negative size %d", o.Size)
		}
	}
	if len(objs) == 0 {
		return nil
	}
	if len(objs) < soloVerified {
		return j.batch(ctx, "mark verified", func(tx *bolt.Tx) error { return markVerifiedMany(tx, sessionID, owner, objs) })
	}
	// Names sort as their keys do: each chunk touches one range of the
	// session's bucket.
	sorted := slices.SortedFunc(slices.Values(objs), func(a, b VerifiedObject) int { return strings.Compare(a.Name, b.Name) })
	for part := range slices.Chunk(sorted, verifiedChunk) {
		if err := j.update(ctx, "mark verified", func(tx *bolt.Tx) error { return markVerifiedMany(tx, sessionID, owner, part) }); err != nil {
			return err
		}
	}
	return nil
}

// soloVerified is the size from which MarkVerifiedMany commits in
// transactions of its own rather than share one (and its fsync) with
// concurrent writes, and verifiedChunk the most objects each of them
// records. bbolt copies every page a transaction changes and frees the
// old ones only at a later commit, so the file's high-water mark grows by
// the pages a transaction touches; a pack's batch of random names touches
// hundreds of pages of a large session's bucket. Measured on pushes of
// 200,000 tiny files: four packs' batches of 1,024 sharing transactions,
// 127 bytes per object; each batch in its own transaction, 111 to 115; in
// transactions of 512 (with Need's of 1,024), 89 to 95. An upload's
// verdict, one object, still shares.
const (
	soloVerified  = 64
	verifiedChunk = 512
)

func markVerifiedMany(tx *bolt.Tx, sessionID, owner string, vs []VerifiedObject) error {
	s, err := getLiveSession(tx, sessionID)
	if err != nil {
		return err
	}
	if s.Owner != owner {
		return fmt.Errorf("session %s belongs to another owner", sessionID)
	}
	objs, err := objectsBucket(tx, owner, sessionID, true)
	if err != nil {
		return err
	}
	keys := make([][]byte, len(vs))
	for i, v := range vs {
		if keys[i], err = checkName(v.Name); err != nil {
			return err
		}
	}
	changed := false
	for _, i := range byKey(keys) {
		key, v := keys[i], vs[i]
		rec, found, err := getObj(objs, key)
		if err != nil {
			return err
		}
		if found && rec.state == ObjVerified {
			continue // already counted
		}
		if !found {
			s.Objects++
		}
		if err := objs.Put(key, objRecord{state: ObjVerified, size: v.Size}.encode()); err != nil {
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

// SpoolHas reports whether a session of the owner whose release has not
// begun (see ReleaseSessionEach) has the object Verified: its spool file is
// known and kept.
func (j *Journal) SpoolHas(ctx context.Context, owner, name string) (bool, error) {
	if err := checkOwner(owner); err != nil {
		return false, fmt.Errorf("journal: spool has: %w", err)
	}
	key, err := checkName(name)
	if err != nil {
		return false, fmt.Errorf("journal: spool has: %w", err)
	}
	var has bool
	err = j.view(ctx, "spool has", func(tx *bolt.Tx) error {
		var err error
		_, has, err = verifiedIn(holderBuckets(tx, owner, ""), key)
		return err
	})
	return has, err
}

// ReleaseSessionEach begins the release of a session: it leaves the holders
// index, so that Need no longer copies its Verified records and SpoolHas
// and other releases no longer count it, and it hands each the objects it
// holds Verified that no other session of the owner in the index holds
// Verified. The caller deletes their spool files, then the session's
// records (DeleteSessionObjects). Run again after a crash anywhere before
// DeleteSessionObjects, it hands over the same names, or fewer only where
// another session has verified the object since (its file is then kept).
//
// The session must have left the live states (so that nothing marks its
// objects Verified any more), and nothing may admit objects into the
// owner's spool between ReleaseSessionEach and the unlinks (the spool's write
// lock keeps admissions out). owner must be the session's Owner. It walks
// the session's objects in read transactions of bounded size; the names
// come a batch at a time (at most the journal's batch size, in
// key order), so that a session of a million objects is released in
// bounded memory. An error from each stops the walk and is returned.
func (j *Journal) ReleaseSessionEach(ctx context.Context, sessionID, owner string, each func(names []string) error) error {
	if err := checkSessionID(sessionID); err != nil {
		return fmt.Errorf("journal: release session: %w", err)
	}
	if err := checkOwner(owner); err != nil {
		return fmt.Errorf("journal: release session: %w", err)
	}
	err := j.update(ctx, "release session", func(tx *bolt.Tx) error {
		s, err := getSession(tx, sessionID)
		if err != nil {
			return err
		}
		if s.Owner != owner {
			return fmt.Errorf("session %s belongs to another owner", sessionID)
		}
		if s.State.Live() {
			return fmt.Errorf("session %s is %s: %w", sessionID, s.State, errLive)
		}
		return tx.Bucket(bucketHolders).Delete(ownerKey(owner, sessionID))
	})
	if err != nil {
		return err
	}
	var after []byte
	for {
		var (
			batchFreed []string
			last       []byte
			done       bool
		)
		err := j.view(ctx, "release session", func(tx *bolt.Tx) error {
			batchFreed, last, done = nil, nil, false
			objs := tx.Bucket(bucketObjects).Bucket([]byte(sessionID))
			if objs == nil {
				done = true
				return nil
			}
			others := holderBuckets(tx, owner, sessionID)
			c := objs.Cursor()
			k, v := seekAfter(c, after)
			for n := 0; k != nil && n < j.batchSize; n++ {
				rec, err := decodeObj(v)
				if err != nil {
					return fmt.Errorf("object %s: %w", keyName(k), err)
				}
				if rec.state == ObjVerified {
					_, held, err := verifiedIn(others, k)
					if err != nil {
						return err
					}
					if !held {
						batchFreed = append(batchFreed, keyName(k))
					}
				}
				last = bytes.Clone(k)
				k, v = c.Next()
			}
			done = k == nil
			return nil
		})
		if err != nil {
			return err
		}
		if len(batchFreed) > 0 {
			if err := each(batchFreed); err != nil {
				return err
			}
		}
		if done {
			return nil
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

// Objects pages through a session's objects in key order (checksum, then
// type), after the given name ("" = from the start), at most limit (> 0)
// entries. ErrNotFound if the session does not exist.
func (j *Journal) Objects(ctx context.Context, sessionID, after string, limit int) ([]ObjectEntry, error) {
	if err := checkSessionID(sessionID); err != nil {
		return nil, fmt.Errorf("journal: objects: %w", err)
	}
	if limit <= 0 {
		return nil, fmt.Errorf("journal: objects: limit %d is not positive", limit)
	}
	var from []byte
	if after != "" {
		var err error
		if from, err = checkName(after); err != nil {
			return nil, fmt.Errorf("journal: objects: %w", err)
		}
	}
	var out []ObjectEntry
	err := j.view(ctx, "objects", func(tx *bolt.Tx) error {
		out = nil
		if _, err := getSession(tx, sessionID); err != nil {
			return err
		}
		objs := tx.Bucket(bucketObjects).Bucket([]byte(sessionID))
		if objs == nil {
			return nil
		}
		c := objs.Cursor()
		for k, v := seekAfter(c, from); k != nil && len(out) < limit; k, v = c.Next() {
			rec, err := decodeObj(v)
			if err != nil {
				return fmt.Errorf("object %s: %w", keyName(k), err)
			}
			out = append(out, ObjectEntry{Name: keyName(k), State: rec.state, Reason: rec.reason})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteSessionObjects drops a session's per-object records, in one
// transaction whatever their number (bbolt frees a bucket's pages
// wholesale), and its entry in the holders index if it still has one: this
// completes ReleaseSessionEach. The
// session's counters are kept. Deleting a session without objects is not
// an error.
func (j *Journal) DeleteSessionObjects(ctx context.Context, sessionID string) error {
	if err := checkSessionID(sessionID); err != nil {
		return fmt.Errorf("journal: delete session objects: %w", err)
	}
	return j.update(ctx, "delete session objects", func(tx *bolt.Tx) error {
		return dropObjects(tx, sessionID)
	})
}

// dropObjects deletes the session's object bucket and its holders entry.
func dropObjects(tx *bolt.Tx, id string) error {
	top := tx.Bucket(bucketObjects)
	if top.Bucket([]byte(id)) != nil {
		if err := top.DeleteBucket([]byte(id)); err != nil {
			return err
		}
	}
	// The owner is in the session's record; the index is small enough to
	// look through when the record is gone.
	holders := tx.Bucket(bucketHolders)
	if s, err := getSession(tx, id); err == nil {
		return holders.Delete(ownerKey(s.Owner, id))
	}
	suffix := []byte("/" + id)
	var stale [][]byte
	c := holders.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if bytes.HasSuffix(k, suffix) {
			stale = append(stale, bytes.Clone(k))
		}
	}
	for _, k := range stale {
		if err := holders.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
