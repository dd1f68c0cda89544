package journal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// State is a session's lifecycle state.
type State string

// Session states. Open and publishing are live; the others are terminal.
const (
	StateOpen       State = "open"
	StatePublishing State = "publishing"
	StatePublished  State = "published"
	StateAborted    State = "aborted"
	StateExpired    State = "expired"
	StateFailed     State = "failed"
)

// Live reports whether s is open or publishing.
func (s State) Live() bool { return s == StateOpen || s == StatePublishing }

func (s State) valid() bool {
	switch s {
	case StateOpen, StatePublishing, StatePublished, StateAborted, StateExpired, StateFailed:
		return true
	}
	return false
}

// RefUpdate is one ref a session moves from Old to New.
type RefUpdate struct {
	Ref string `json:"ref"`
	Old string `json:"old,omitempty"` // 64-hex commit or "" for a new ref
	New string `json:"new"`
}

// Session is one push session.
type Session struct {
	ID        string // 32 lower-case hex, random (crypto/rand)
	Owner     string // identifies the token (a hex hash); never a secret
	OwnerName string
	Repo      string // repository name, "" means the default one
	Refs      []RefUpdate
	Force     bool
	State     State
	Created   time.Time
	Updated   time.Time
	Objects   int    // objects registered in the session (any state)
	Verified  int    // objects in state Verified
	Bytes     int64  // sum of sizes passed to MarkVerified
	Result    string // free text set with SetState (e.g. why it failed)
	// Unchanged names the refs a publish leaves where they are (their new
	// commit has the content of the current one), set by SetPublishing.
	Unchanged []string `json:",omitempty"`
}

// CreateOrResume returns the live session with the same Owner, Repo, Refs
// (order-insensitive) and Force, bumping its Updated, or creates one (State
// open, Created=Updated=now, Refs sorted by Ref). created reports which. The
// ID, State, times, counters and Result of s are ignored. Refs must have
// distinct non-empty names, Old "" or 64 lower-case hex and New 64 lower-case hex.
func (j *Journal) CreateOrResume(ctx context.Context, s Session) (Session, bool, error) {
	if err := checkOwner(s.Owner); err != nil {
		return Session{}, false, fmt.Errorf("journal: create session: %w", err)
	}
	refs, err := canonicalRefs(s.Refs)
	if err != nil {
		return Session{}, false, fmt.Errorf("journal: create session: %w", err)
	}
	key := resumeKey(s.Owner, s.Repo, s.Force, refs)
	var (
		out     Session
		created bool
	)
	err = j.update(ctx, "create session", func(tx *bolt.Tx) error {
		created = false
		// In the same transaction as the write, so that no session of a
		// token slips past its revocation (Revoke, then a sweep).
		if tx.Bucket(bucketRevoked).Get([]byte(s.Owner)) != nil {
			return ErrRevoked
		}
		t := now()
		if id := tx.Bucket(bucketResume).Get(key); id != nil {
			old, err := getSession(tx, string(id))
			if err == nil && old.State.Live() {
				old.Updated = t
				out = old
				return putSession(tx, &old)
			}
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			// A stale key (should not happen): fall through and replace it.
		}
		if limit := j.limit().SessionsPerOwner; limit > 0 {
			if n := len(ownerSessions(tx, s.Owner)); n >= limit {
				return &TooManyError{What: "open sessions of the token", Have: n, Adds: 1, Limit: limit}
			}
		}
		sessions := tx.Bucket(bucketSessions)
		id := newHexID()
		for sessions.Get([]byte(id)) != nil {
			id = newHexID()
		}
		out = Session{
			ID:        id,
			Owner:     s.Owner,
			OwnerName: s.OwnerName,
			Repo:      s.Repo,
			Refs:      refs,
			Force:     s.Force,
			State:     StateOpen,
			Created:   t,
			Updated:   t,
		}
		if err := putSession(tx, &out); err != nil {
			return err
		}
		if err := tx.Bucket(bucketResume).Put(key, []byte(id)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketLive).Put([]byte(id), nil); err != nil {
			return err
		}
		if err := tx.Bucket(bucketOwners).Put(ownerKey(s.Owner, id), nil); err != nil {
			return err
		}
		created = true
		return nil
	})
	if err != nil {
		return Session{}, false, err
	}
	return out, created, nil
}

// Get returns the session with the given ID, or ErrNotFound.
func (j *Journal) Get(ctx context.Context, id string) (Session, error) {
	if err := checkSessionID(id); err != nil {
		return Session{}, fmt.Errorf("journal: get session: %w", err)
	}
	var s Session
	err := j.view(ctx, "get session", func(tx *bolt.Tx) error {
		var err error
		s, err = getSession(tx, id)
		return err
	})
	return s, err
}

// List returns every session, oldest first. It loads them all: it is meant for
// administration and startup.
func (j *Journal) List(ctx context.Context) ([]Session, error) {
	return loadAll(j, ctx, "list sessions", bucketSessions, nil, "session", sortSessions)
}

// SetState sets state and result and bumps Updated. Leaving a live state frees
// the resume key, so the next CreateOrResume with the same refs creates a new
// session. A session that left the live states cannot become live again.
func (j *Journal) SetState(ctx context.Context, id string, st State, result string) error {
	if err := checkSessionID(id); err != nil {
		return fmt.Errorf("journal: set state: %w", err)
	}
	if !st.valid() {
		return fmt.Errorf("journal: set state: invalid state %q", st)
	}
	return j.update(ctx, "set state", func(tx *bolt.Tx) error {
		t := now()
		s, err := getSession(tx, id)
		if err != nil {
			return err
		}
		if !s.State.Live() && st.Live() {
			return fmt.Errorf("session %s is %s and cannot become %s", id, s.State, st)
		}
		if s.State.Live() && !st.Live() {
			key := resumeKey(s.Owner, s.Repo, s.Force, s.Refs)
			resume := tx.Bucket(bucketResume)
			if string(resume.Get(key)) == id {
				if err := resume.Delete(key); err != nil {
					return err
				}
			}
			if err := tx.Bucket(bucketLive).Delete([]byte(id)); err != nil {
				return err
			}
			if err := tx.Bucket(bucketOwners).Delete(ownerKey(s.Owner, id)); err != nil {
				return err
			}
		}
		if s.State.Live() && !st.Live() {
			for _, k := range []DueKind{DueRelease, DueForget} {
				if err := tx.Bucket(bucketDue).Put(dueKey(t, k, id), nil); err != nil {
					return err
				}
			}
		}
		s.State = st
		s.Result = result
		s.Updated = t
		return putSession(tx, &s)
	})
}

// SetPublishing moves an open session to publishing and records its
// publish intent, in one write: the refs the publish leaves unchanged
// (names of its Refs) go into the session.
func (j *Journal) SetPublishing(ctx context.Context, in Intent, unchanged []string) error {
	v, err := encodeIntent(in)
	if err != nil {
		return fmt.Errorf("journal: set publishing: %w", err)
	}
	return j.update(ctx, "set publishing", func(tx *bolt.Tx) error {
		s, err := getSession(tx, in.Session)
		if err != nil {
			return err
		}
		if s.State != StateOpen {
			return fmt.Errorf("session %s is %s, not open", in.Session, s.State)
		}
		for _, ref := range unchanged {
			if !slices.ContainsFunc(s.Refs, func(r RefUpdate) bool { return r.Ref == ref }) {
				return fmt.Errorf("session %s has no ref %q", in.Session, ref)
			}
		}
		s.State, s.Result, s.Unchanged, s.Updated = StatePublishing, "", unchanged, now()
		if err := putSession(tx, &s); err != nil {
			return err
		}
		if err := putDeferred(tx, in); err != nil {
			return err
		}
		if err := putHeads(tx, in); err != nil {
			return err
		}
		return tx.Bucket(bucketIntents).Put([]byte(in.Session), v)
	})
}

// Touch bumps the session's Updated.
func (j *Journal) Touch(ctx context.Context, id string) error {
	if err := checkSessionID(id); err != nil {
		return fmt.Errorf("journal: touch: %w", err)
	}
	return j.update(ctx, "touch", func(tx *bolt.Tx) error {
		s, err := getSession(tx, id)
		if err != nil {
			return err
		}
		s.Updated = now()
		return putSession(tx, &s)
	})
}

// Idle returns live sessions whose Updated is before the given time, oldest
// first. It reads only live sessions.
func (j *Journal) Idle(ctx context.Context, before time.Time) ([]Session, error) {
	var out []Session
	err := j.view(ctx, "idle sessions", func(tx *bolt.Tx) error {
		out = nil
		return tx.Bucket(bucketLive).ForEach(func(k, _ []byte) error {
			s, err := getSession(tx, string(k))
			if err != nil {
				return err
			}
			if s.State.Live() && s.Updated.Before(before) {
				out = append(out, s)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sortSessions(out)
	return out, nil
}

func sortSessions(ss []Session) {
	sort.Slice(ss, func(a, b int) bool {
		if !ss[a].Created.Equal(ss[b].Created) {
			return ss[a].Created.Before(ss[b].Created)
		}
		return ss[a].ID < ss[b].ID
	})
}

// canonicalRefs validates refs and returns a copy sorted by Ref.
func canonicalRefs(in []RefUpdate) ([]RefUpdate, error) {
	refs := append([]RefUpdate(nil), in...)
	sort.Slice(refs, func(a, b int) bool { return refs[a].Ref < refs[b].Ref })
	for i, r := range refs {
		if r.Ref == "" {
			return nil, errors.New("empty ref name")
		}
		if i > 0 && refs[i-1].Ref == r.Ref {
			return nil, fmt.Errorf("ref %q listed twice", r.Ref)
		}
		if r.Old != "" && !isLowerHex(r.Old, 64) {
			return nil, fmt.Errorf("ref %q: old commit %q is not 64 lower-case hex", r.Ref, r.Old)
		}
		if !isLowerHex(r.New, 64) {
			return nil, fmt.Errorf("ref %q: new commit %q is not 64 lower-case hex", r.Ref, r.New)
		}
	}
	return refs, nil
}

// resumeKey identifies the live session a CreateOrResume may resume. refs must
// be sorted.
func resumeKey(owner, repo string, force bool, refs []RefUpdate) []byte {
	b, _ := json.Marshal(struct {
		Owner string      `json:"o"`
		Repo  string      `json:"r"`
		Force bool        `json:"f"`
		Refs  []RefUpdate `json:"u"`
	}{owner, repo, force, refs})
	sum := sha256.Sum256(b)
	return sum[:]
}

func getSession(tx *bolt.Tx, id string) (Session, error) {
	v := tx.Bucket(bucketSessions).Get([]byte(id))
	if v == nil {
		return Session{}, fmt.Errorf("session %s: %w", id, ErrNotFound)
	}
	var s Session
	if err := json.Unmarshal(v, &s); err != nil {
		return Session{}, fmt.Errorf("session %s: %w", id, err)
	}
	return s, nil
}

// getLiveSession is getSession that also refuses sessions not live.
func getLiveSession(tx *bolt.Tx, id string) (Session, error) {
	s, err := getSession(tx, id)
	if err != nil {
		return s, err
	}
	if !s.State.Live() {
		return s, fmt.Errorf("session %s is %s: %w", id, s.State, errNotLive)
	}
	return s, nil
}

func putSession(tx *bolt.Tx, s *Session) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketSessions).Put([]byte(s.ID), b)
}

// DeleteSession forgets an ended session. It refuses a live session and one
// that still has object records (release its spool entries and delete its
// objects first), uploads or a publish intent.
func (j *Journal) DeleteSession(ctx context.Context, id string) error {
	if err := checkSessionID(id); err != nil {
		return fmt.Errorf("journal: delete session: %w", err)
	}
	return j.update(ctx, "delete session", func(tx *bolt.Tx) error {
		s, err := getSession(tx, id)
		if err != nil {
			return err
		}
		switch {
		case s.State.Live():
			return fmt.Errorf("session %s is %s", id, s.State)
		case tx.Bucket(bucketIntents).Get([]byte(id)) != nil:
			return fmt.Errorf("session %s has a publish intent", id)
		}
		if b := tx.Bucket(bucketObjects).Bucket([]byte(id)); b != nil {
			if k, _ := b.Cursor().First(); k != nil {
				return fmt.Errorf("session %s still has object records", id)
			}
		}
		if err := dropObjects(tx, id); err != nil {
			return err
		}
		prefix := []byte(id + "/")
		if k, _ := tx.Bucket(bucketUploads).Cursor().Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
			return fmt.Errorf("session %s still has uploads", id)
		}
		return tx.Bucket(bucketSessions).Delete([]byte(id))
	})
}

// LiveCount is the number of open and publishing sessions.
func (j *Journal) LiveCount(ctx context.Context) (int, error) {
	n := 0
	err := j.view(ctx, "count live sessions", func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketLive).Stats().KeyN
		return nil
	})
	return n, err
}

// ownerKey is a session's key in the owners and holders indexes.
func ownerKey(owner, id string) []byte { return []byte(owner + "/" + id) }

// ownerSessions lists the IDs of an owner's live sessions.
func ownerSessions(tx *bolt.Tx, owner string) []string {
	var ids []string
	prefix := []byte(owner + "/")
	c := tx.Bucket(bucketOwners).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		ids = append(ids, string(k[len(prefix):]))
	}
	return ids
}

// LiveSessions returns the open and publishing sessions, oldest first.
// Its cost follows the number of live sessions, not of the sessions the
// journal keeps.
func (j *Journal) LiveSessions(ctx context.Context) ([]Session, error) {
	var out []Session
	err := j.view(ctx, "live sessions", func(tx *bolt.Tx) error {
		out = nil
		return tx.Bucket(bucketLive).ForEach(func(k, _ []byte) error {
			s, err := getSession(tx, string(k))
			if err != nil {
				return err
			}
			out = append(out, s)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sortSessions(out)
	return out, nil
}

// DueKind is the work due on an ended session.
type DueKind byte

// Kinds of due work. Both are scheduled when a session ends, at its end.
const (
	DueRelease DueKind = 'r' // free its spool entries
	DueForget  DueKind = 'f' // delete it from the journal
)

// Due is one piece of work due on an ended session at a time.
type Due struct {
	At      time.Time
	Kind    DueKind
	Session string
}

func dueKey(at time.Time, k DueKind, id string) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(at.UnixNano()))
	return append(append(b, byte(k)), id...)
}

func parseDue(k []byte) (Due, bool) {
	if len(k) != 8+1+32 {
		return Due{}, false
	}
	return Due{At: time.Unix(0, int64(binary.BigEndian.Uint64(k))).UTC(), Kind: DueKind(k[8]), Session: string(k[9:])}, true
}

// DueBefore returns up to limit pieces of work due before t, earliest
// first. Its cost follows what it returns, not the journal's history.
func (j *Journal) DueBefore(ctx context.Context, t time.Time, limit int) ([]Due, error) {
	var out []Due
	end := binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano()))
	err := j.view(ctx, "due", func(tx *bolt.Tx) error {
		out = nil
		c := tx.Bucket(bucketDue).Cursor()
		for k, _ := c.First(); k != nil && bytes.Compare(k[:min(8, len(k))], end) < 0 && len(out) < limit; k, _ = c.Next() {
			if d, ok := parseDue(k); ok {
				out = append(out, d)
			}
		}
		return nil
	})
	return out, err
}

// Reschedule moves due work to another time.
func (j *Journal) Reschedule(ctx context.Context, d Due, at time.Time) error {
	return j.update(ctx, "reschedule", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDue)
		if err := b.Delete(dueKey(d.At, d.Kind, d.Session)); err != nil {
			return err
		}
		return b.Put(dueKey(at, d.Kind, d.Session), nil)
	})
}

// DoneDue removes due work once done.
func (j *Journal) DoneDue(ctx context.Context, d Due) error {
	return j.update(ctx, "done due", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDue).Delete(dueKey(d.At, d.Kind, d.Session))
	})
}

// indexSessions builds the owners index and the due queue of a journal of
// an older schema: live sessions are indexed by owner, and ended ones get
// their due work at the time they ended.
func indexSessions(tx *bolt.Tx) error {
	return tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
		var s Session
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("session %s: %w", k, err)
		}
		if s.State.Live() {
			return tx.Bucket(bucketOwners).Put(ownerKey(s.Owner, s.ID), nil)
		}
		for _, kind := range []DueKind{DueRelease, DueForget} {
			if err := tx.Bucket(bucketDue).Put(dueKey(s.Updated, kind, s.ID), nil); err != nil {
				return err
			}
		}
		return nil
	})
}
