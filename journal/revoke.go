package journal

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Revocation records that a token may no longer be used. It outlives the
// token's entry in the configuration file.
type Revocation struct {
	Owner   string    // the token's identity hash
	Name    string    // its display name when it was revoked
	Revoked time.Time //
	By      string    // who revoked it (a token's display name, or "local")
}

// Revoke records rev (a zero Revoked means now). Revoking a token again
// keeps the first record and returns it with already set.
func (j *Journal) Revoke(ctx context.Context, rev Revocation) (got Revocation, already bool, err error) {
	if err := checkOwner(rev.Owner); err != nil {
		return rev, false, fmt.Errorf("journal: revoke: %w", err)
	}
	if rev.Revoked.IsZero() {
		rev.Revoked = now()
	}
	err = j.update(ctx, "revoke", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRevoked)
		if v := b.Get([]byte(rev.Owner)); v != nil {
			already = true
			return json.Unmarshal(v, &got)
		}
		v, err := json.Marshal(rev)
		if err != nil {
			return err
		}
		got = rev
		return b.Put([]byte(rev.Owner), v)
	})
	return got, already, err
}

// Revocations returns every revocation, oldest first.
func (j *Journal) Revocations(ctx context.Context) ([]Revocation, error) {
	return loadAll(j, ctx, "revocations", bucketRevoked, nil, "revocation", func(out []Revocation) {
		sort.Slice(out, func(a, b int) bool { return out[a].Revoked.Before(out[b].Revoked) })
	})
}
