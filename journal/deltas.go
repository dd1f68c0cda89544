package journal

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// MaxHeads bounds Intent.Heads: the recent heads kept for each ref.
const MaxHeads = 64

// maxDeltaName bounds the name of a static delta: two checksums and a dash.
const maxDeltaName = 2*64 + 1

// putHeads records, for each ref of the intent, its old commit (unless
// the record already ends with it) and its new one, keeping the last
// in.Heads of them.
func putHeads(tx *bolt.Tx, in Intent) error {
	if in.Heads == 0 {
		return nil
	}
	if in.Heads < 0 || in.Heads > MaxHeads {
		return fmt.Errorf("heads to keep: %d is not from 0 to %d", in.Heads, MaxHeads)
	}
	b := tx.Bucket(bucketHeads)
	for _, r := range in.Refs {
		var heads []string
		if v := b.Get([]byte(r.Ref)); v != nil {
			if err := json.Unmarshal(v, &heads); err != nil {
				return fmt.Errorf("heads of %s: %w", r.Ref, err)
			}
		}
		for _, c := range []string{r.Old, r.New} {
			if c != "" && (len(heads) == 0 || heads[len(heads)-1] != c) {
				heads = append(heads, c)
			}
		}
		heads = heads[max(0, len(heads)-in.Heads):]
		v, err := json.Marshal(heads)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(r.Ref), v); err != nil {
			return err
		}
	}
	return nil
}

// Heads returns the recent heads of each ref recorded by publishes whose
// intent asked for it (Intent.Heads), oldest first: the ref's commit
// before a publish, then the one it moved to. A publish whose intent was
// written but which was then refused (a ref moved behind the daemon's
// back) leaves its commit in the record too.
func (j *Journal) Heads(ctx context.Context) (map[string][]string, error) {
	out := map[string][]string{}
	err := j.view(ctx, "heads", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHeads).ForEach(func(k, v []byte) error {
			var heads []string
			if err := json.Unmarshal(v, &heads); err != nil {
				return fmt.Errorf("heads of %s: %w", k, err)
			}
			out[string(k)] = heads
			return nil
		})
	})
	return out, err
}

// ForgetHeads deletes the heads recorded for refs (refs that no longer
// exist). Refs without a record are not an error.
func (j *Journal) ForgetHeads(ctx context.Context, refs []string) error {
	if len(refs) == 0 {
		return nil
	}
	return j.update(ctx, "forget heads", func(tx *bolt.Tx) error {
		for _, r := range refs {
			if err := tx.Bucket(bucketHeads).Delete([]byte(r)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Retiring returns the static deltas recorded as no longer wanted, each
// with the time it was first recorded (see SetRetiring).
func (j *Journal) Retiring(ctx context.Context) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := j.view(ctx, "retiring deltas", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRetiring).ForEach(func(k, v []byte) error {
			var t time.Time
			if err := t.UnmarshalText(v); err != nil {
				return fmt.Errorf("retiring delta %s: %w", k, err)
			}
			out[string(k)] = t
			return nil
		})
	})
	return out, err
}

// SetRetiring records, in one write, the static deltas add as no longer
// wanted since at (a delta recorded already keeps its time, so that
// repeating the record neither resets nor shortens its wait), and forgets
// the deltas drop (wanted again, or deleted).
func (j *Journal) SetRetiring(ctx context.Context, add []string, at time.Time, drop []string) error {
	if len(add) == 0 && len(drop) == 0 {
		return nil
	}
	for _, name := range slices.Concat(add, drop) {
		if name == "" || len(name) > maxDeltaName {
			return fmt.Errorf("journal: set retiring: delta name %q: empty or longer than %d bytes", name, maxDeltaName)
		}
	}
	v, err := at.UTC().MarshalText()
	if err != nil {
		return fmt.Errorf("journal: set retiring: %w", err)
	}
	return j.update(ctx, "set retiring", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRetiring)
		for _, name := range drop {
			if err := b.Delete([]byte(name)); err != nil {
				return err
			}
		}
		for _, name := range add {
			if b.Get([]byte(name)) != nil {
				continue
			}
			if err := b.Put([]byte(name), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Defer records deferred work (see Deferred) outside a publish: work that
// background work leaves due until it is done.
func (j *Journal) Defer(ctx context.Context, names ...string) error {
	return j.update(ctx, "defer", func(tx *bolt.Tx) error {
		return putDeferred(tx, Intent{Deferred: names})
	})
}
