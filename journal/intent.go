package journal

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Intent records that a session's publish is under way, so that a restart
// can finish or undo it.
type Intent struct {
	Session string
	Refs    []RefUpdate
	Step    string // free text set by the caller ("refs", "summary", …)
	Created time.Time
	// Deferred names work the publish leaves for after its answer;
	// SetPublishing records each name until DoneDeferred (see Deferred).
	Deferred []string `json:",omitempty"`
	// Heads, when positive, makes SetPublishing record each ref's old and
	// new commit among its recent heads, keeping the last Heads of them
	// (at most MaxHeads; see Heads).
	Heads int `json:",omitempty"`
}

// PutIntent creates or replaces the session's intent (a zero Created means
// now).
func (j *Journal) PutIntent(ctx context.Context, in Intent) error {
	v, err := encodeIntent(in)
	if err != nil {
		return fmt.Errorf("journal: put intent: %w", err)
	}
	return j.update(ctx, "put intent", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketIntents).Put([]byte(in.Session), v)
	})
}

// encodeIntent checks an intent and encodes it as stored (a zero Created
// means now).
func encodeIntent(in Intent) ([]byte, error) {
	if err := checkSessionID(in.Session); err != nil {
		return nil, err
	}
	if in.Created.IsZero() {
		in.Created = now()
	}
	return json.Marshal(in)
}

// GetIntent returns the session's intent, or ErrNotFound.
func (j *Journal) GetIntent(ctx context.Context, sessionID string) (Intent, error) {
	if err := checkSessionID(sessionID); err != nil {
		return Intent{}, fmt.Errorf("journal: get intent: %w", err)
	}
	var in Intent
	err := j.view(ctx, "get intent", func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketIntents).Get([]byte(sessionID))
		if v == nil {
			return fmt.Errorf("intent %s: %w", sessionID, ErrNotFound)
		}
		return json.Unmarshal(v, &in)
	})
	return in, err
}

// Intents returns every intent, oldest first. It loads them all: it is meant
// for startup recovery.
func (j *Journal) Intents(ctx context.Context) ([]Intent, error) {
	return loadAll(j, ctx, "intents", bucketIntents, nil, "intent", func(out []Intent) {
		sort.Slice(out, func(a, b int) bool {
			if !out[a].Created.Equal(out[b].Created) {
				return out[a].Created.Before(out[b].Created)
			}
			return out[a].Session < out[b].Session
		})
	})
}

// DeleteIntent deletes the session's intent. Deleting a missing one is not an
// error.
func (j *Journal) DeleteIntent(ctx context.Context, sessionID string) error {
	if err := checkSessionID(sessionID); err != nil {
		return fmt.Errorf("journal: delete intent: %w", err)
	}
	return j.update(ctx, "delete intent", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketIntents).Delete([]byte(sessionID))
	})
}

// maxDeferredName bounds the name of a piece of deferred work.
const maxDeferredName = 64

// Deferred returns the names of the work that publishes left for after
// their answer (Intent.Deferred) and that is not done yet, sorted. A name
// stays until DoneDeferred, whatever the number of publishes that asked
// for it: a crash between the answer and the work leaves it to do at the
// next start.
func (j *Journal) Deferred(ctx context.Context) ([]string, error) {
	var out []string
	err := j.view(ctx, "deferred", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDeferred).ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out, err
}

// DoneDeferred records that the deferred work name is done. The record
// stays while an intent still names the work: that publish may not have
// moved its refs when the work began, and a crash before it asks again
// must find the record. Done work that is not recorded is not an error.
func (j *Journal) DoneDeferred(ctx context.Context, name string) error {
	return j.update(ctx, "done deferred", func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketIntents).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var in Intent
			if err := json.Unmarshal(v, &in); err != nil {
				return fmt.Errorf("intent %s: %w", k, err)
			}
			if slices.Contains(in.Deferred, name) {
				return nil
			}
		}
		return tx.Bucket(bucketDeferred).Delete([]byte(name))
	})
}

// putDeferred records the intent's deferred work in tx.
func putDeferred(tx *bolt.Tx, in Intent) error {
	for _, name := range in.Deferred {
		if name == "" || len(name) > maxDeferredName {
			return fmt.Errorf("deferred work %q: empty or longer than %d bytes", name, maxDeferredName)
		}
		if err := tx.Bucket(bucketDeferred).Put([]byte(name), nil); err != nil {
			return err
		}
	}
	return nil
}
