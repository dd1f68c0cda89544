package journal

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var (
	// bucketSpool is schema 3's per-owner spool index (owner → bucket:
	// object name → JSON {size, holders}); schema 4 finds the same
	// answers in the sessions' Verified records.
	bucketSpool = []byte("spool")
	// bucketUpgrade holds the object buckets being rewritten by the
	// upgrade to schema 4.
	bucketUpgrade = []byte("upgrade")
)

// upgrade brings a journal of an older schema to the current one. Schemas
// 1 and 2 get the owners index and the due queue (schema 3) in one
// transaction. Schema 3 is then converted to 4 in transactions of bounded
// size (upgradeObjects): versionUpgrading is written first, so that
// binaries that know only schema 3 refuse a journal half converted, and
// schemaVersion last, so that a crash in between leaves work that the next
// Open takes up again. An unknown version is refused.
func (j *Journal) upgrade() error {
	var v string
	err := j.db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v = string(meta.Get(keyVersion)); v {
		case schemaVersion, versionUpgrading:
			return nil
		case "", "1", "2":
			if err := indexSessions(tx); err != nil {
				return fmt.Errorf("upgrade from schema %q: %w", v, err)
			}
			fallthrough
		case "3":
			v = versionUpgrading
			return meta.Put(keyVersion, []byte(versionUpgrading))
		}
		return fmt.Errorf("unsupported schema version %q (want %q)", v, schemaVersion)
	})
	if err != nil || v == schemaVersion {
		return err
	}
	if err := j.upgradeObjects(); err != nil {
		return fmt.Errorf("upgrade to schema %s: %w", schemaVersion, err)
	}
	return nil
}

// upgradeObjects converts the per-object records to schema 4: every
// session's object bucket gets binary keys (upgradeSession), the spool
// index is dropped (a file its entries knew but no session's Verified
// record does is judged by the spool's start-up sweep), the holders index
// is built from the object buckets (but for sessions whose release schema
// 3 had begun, see releaseBegunV3), and the version is written. Each step
// can run again after a crash.
func (j *Journal) upgradeObjects() error {
	var ids []string
	err := j.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketObjects).ForEachBucket(func(k []byte) error {
			ids = append(ids, string(k))
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := j.upgradeSession(id); err != nil {
			return fmt.Errorf("objects of session %s: %w", id, err)
		}
	}
	return j.db.Update(func(tx *bolt.Tx) error {
		top := tx.Bucket(bucketObjects)
		var orphans, holding [][]byte
		err := top.ForEachBucket(func(k []byte) error {
			s, err := getSession(tx, string(k))
			if errors.Is(err, ErrNotFound) {
				orphans = append(orphans, k) // no owner to hold its files
				return nil
			}
			if err != nil {
				return err
			}
			begun, err := releaseBegunV3(tx, s, top.Bucket(k))
			if err != nil || begun {
				return err
			}
			holding = append(holding, ownerKey(s.Owner, s.ID))
			return nil
		})
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketSpool, bucketUpgrade, bucketHolders} {
			if err := tx.DeleteBucket(name); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
				return err
			}
		}
		holders, err := tx.CreateBucket(bucketHolders)
		if err != nil {
			return err
		}
		for _, k := range holding {
			if err := holders.Put(k, nil); err != nil {
				return err
			}
		}
		for _, k := range orphans {
			if err := top.DeleteBucket(k); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keyVersion, []byte(schemaVersion))
	})
}

// releaseBegunV3 reports whether schema 3 had begun to release the session
// whose (converted) object bucket is objs: one of its Verified objects is
// missing from the holders of the owner's spool index entry. Schema 3 gave
// the entries up first and unlinked the files it freed, then deleted the
// records: a release cut short left Verified records whose files may be
// gone. Such a session is kept out of the holders index, so that no other
// session takes those records for files in the spool; its release is
// finished as any begun in schema 4 (the due queue still has it).
func releaseBegunV3(tx *bolt.Tx, s Session, objs *bolt.Bucket) (bool, error) {
	spool := tx.Bucket(bucketSpool)
	if spool == nil {
		return false, nil
	}
	entries := spool.Bucket([]byte(s.Owner))
	c := objs.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		rec, err := decodeObj(v)
		if err != nil {
			return false, fmt.Errorf("session %s: object %s: %w", s.ID, keyName(k), err)
		}
		if rec.state != ObjVerified {
			continue
		}
		if entries == nil {
			return true, nil
		}
		raw := entries.Get([]byte(keyName(k)))
		if raw == nil {
			return true, nil
		}
		var e struct {
			Holders []string `json:"holders"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			return false, fmt.Errorf("spool entry %s of %s: %w", keyName(k), s.Owner, err)
		}
		if !slices.Contains(e.Holders, s.ID) {
			return true, nil
		}
	}
	return false, nil
}

// upgradeSession rewrites a session's object bucket with binary keys and
// schema 4 records. The new bucket is built beside the old one (in
// bucketUpgrade) in transactions of bounded size, and takes its place in
// one, so that a session's bucket is wholly of one schema; a copy a crash
// cut short is started again. Names that do not parse as object names
// (none of the daemon's) are dropped.
func (j *Journal) upgradeSession(id string) error {
	var after []byte
	for first, copied := true, false; !copied; first = false {
		skip := false
		err := j.db.Update(func(tx *bolt.Tx) error {
			old := tx.Bucket(bucketObjects).Bucket([]byte(id))
			if old == nil || upgraded(old) {
				skip = true
				return nil
			}
			staging, err := tx.CreateBucketIfNotExists(bucketUpgrade)
			if err != nil {
				return err
			}
			if first && staging.Bucket([]byte(id)) != nil {
				if err := staging.DeleteBucket([]byte(id)); err != nil {
					return err
				}
			}
			nb, err := staging.CreateBucketIfNotExists([]byte(id))
			if err != nil {
				return err
			}
			// The old keys come in checksum order: fill the pages.
			nb.FillPercent = 1
			c := old.Cursor()
			k, v := seekAfter(c, after)
			for n := 0; k != nil && n < j.batchSize; n++ {
				if key, err := objKey(string(k)); err == nil {
					rec, err := decodeObjV3(v)
					if err != nil {
						return fmt.Errorf("object %q: %w", k, err)
					}
					if err := nb.Put(key, rec.encode()); err != nil {
						return err
					}
				}
				after = append(after[:0], k...)
				k, v = c.Next()
			}
			copied = k == nil
			return nil
		})
		if err != nil || skip {
			return err
		}
	}
	// In a transaction of its own: bbolt moves a bucket as last committed.
	return j.db.Update(func(tx *bolt.Tx) error {
		top := tx.Bucket(bucketObjects)
		if err := top.DeleteBucket([]byte(id)); err != nil {
			return err
		}
		return tx.Bucket(bucketUpgrade).MoveBucket([]byte(id), top)
	})
}

// upgraded reports whether an object bucket has schema 4 keys (an empty
// one needs nothing).
func upgraded(b *bolt.Bucket) bool {
	k, _ := b.Cursor().First()
	return k == nil || len(k) == keyLen
}

// decodeObjV3 reads a schema 3 object record: state, size (8 bytes, big
// endian), rejection reason.
func decodeObjV3(v []byte) (objRecord, error) {
	if len(v) < 9 {
		return objRecord{}, fmt.Errorf("corrupt object record (%d bytes)", len(v))
	}
	r := objRecord{state: ObjState(v[0]), size: int64(binary.BigEndian.Uint64(v[1:9]))}
	if r.state == ObjRejected {
		r.reason = string(v[9:])
	}
	return r, nil
}
