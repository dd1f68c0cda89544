package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// UploadState is the state of one upload of an object.
type UploadState uint8

// Upload states. Open and received uploads are live: a session has at most
// one live upload per object.
const (
	UploadOpen     UploadState = 1
	UploadReceived UploadState = 2
	UploadVerified UploadState = 3
)

func (s UploadState) live() bool { return s == UploadOpen || s == UploadReceived }

func (s UploadState) valid() bool { return s >= UploadOpen && s <= UploadVerified }

// Upload is one transfer of an object's bytes within a session.
type Upload struct {
	ID      string // "<session>/<32hex>"
	Session string
	Object  string
	Size    int64
	State   UploadState
	Created time.Time
}

// liveKey is the key of the session's live-upload slot for object.
func liveKey(sessionID, object string) []byte {
	return []byte(sessionID + "/" + object)
}

// AddUpload records a new upload (State 0 means UploadOpen, a zero Created
// means now). If the session already has an open or received upload for the
// same Object, it returns a *LiveUploadError with that upload's ID and
// changes nothing; if it has as many live uploads as the limit
// (SetLimits), a *TooManyError. The session must exist and the ID must be new.
func (j *Journal) AddUpload(ctx context.Context, u Upload) error {
	sid, err := checkUploadID(u.ID)
	if err != nil {
		return fmt.Errorf("journal: add upload: %w", err)
	}
	if sid != u.Session {
		return fmt.Errorf("journal: add upload: id %q does not belong to session %q", u.ID, u.Session)
	}
	if _, err := checkName(u.Object); err != nil {
		return fmt.Errorf("journal: add upload: %w", err)
	}
	if u.Size < 0 {
		return fmt.Errorf("journal: add upload: negative size %d", u.Size)
	}
	if u.State == 0 {
		u.State = UploadOpen
	}
	if !u.State.valid() {
		return fmt.Errorf("journal: add upload: invalid state %d", u.State)
	}
	if u.Created.IsZero() {
		u.Created = now()
	}
	val, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("journal: add upload: %w", err)
	}
	return j.batch(ctx, "add upload", func(tx *bolt.Tx) error {
		sess, err := getSession(tx, u.Session)
		if err != nil {
			return err
		}
		if sess.State != StateOpen {
			// Expired or committed meanwhile: its files would never be
			// cleaned up.
			return fmt.Errorf("session %s is %s: %w", u.Session, sess.State, errNotLive)
		}
		uploads := tx.Bucket(bucketUploads)
		if uploads.Get([]byte(u.ID)) != nil {
			return fmt.Errorf("upload %s already exists", u.ID)
		}
		if u.State.live() {
			slots := tx.Bucket(bucketLiveUpload)
			key := liveKey(u.Session, u.Object)
			if other := slots.Get(key); other != nil {
				return &LiveUploadError{UploadID: string(other)}
			}
			if limit := j.limit().LiveUploadsPerSession; limit > 0 {
				n, prefix := 0, []byte(u.Session+"/")
				c := slots.Cursor()
				for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && n < limit; k, _ = c.Next() {
					n++
				}
				if n >= limit {
					return &TooManyError{What: "live uploads in the session", Have: n, Adds: 1, Limit: limit}
				}
			}
			if err := slots.Put(key, []byte(u.ID)); err != nil {
				return err
			}
		}
		return uploads.Put([]byte(u.ID), val)
	})
}

// GetUpload returns the upload with the given ID, or ErrNotFound.
func (j *Journal) GetUpload(ctx context.Context, id string) (Upload, error) {
	if _, err := checkUploadID(id); err != nil {
		return Upload{}, fmt.Errorf("journal: get upload: %w", err)
	}
	var u Upload
	err := j.view(ctx, "get upload", func(tx *bolt.Tx) error {
		var err error
		u, err = getUpload(tx, id)
		return err
	})
	return u, err
}

// SetUploadState sets the upload's state. Verified frees the object's
// live-upload slot; going back to a live state takes it again, or returns a
// *LiveUploadError if another upload holds it.
func (j *Journal) SetUploadState(ctx context.Context, id string, st UploadState) error {
	if _, err := checkUploadID(id); err != nil {
		return fmt.Errorf("journal: set upload state: %w", err)
	}
	if !st.valid() {
		return fmt.Errorf("journal: set upload state: invalid state %d", st)
	}
	return j.batch(ctx, "set upload state", func(tx *bolt.Tx) error {
		return setUploadState(tx, id, st)
	})
}

// setUploadState is SetUploadState inside a transaction.
func setUploadState(tx *bolt.Tx, id string, st UploadState) error {
	u, err := getUpload(tx, id)
	if err != nil {
		return err
	}
	slots := tx.Bucket(bucketLiveUpload)
	key := liveKey(u.Session, u.Object)
	holder := slots.Get(key)
	switch {
	case st.live() && holder == nil:
		if err := slots.Put(key, []byte(id)); err != nil {
			return err
		}
	case st.live() && string(holder) != id:
		return &LiveUploadError{UploadID: string(holder)}
	case !st.live() && string(holder) == id:
		if err := slots.Delete(key); err != nil {
			return err
		}
	}
	u.State = st
	return putUpload(tx, &u)
}

// MarkUploadVerified records in one transaction that an upload's object is
// verified and durable in the owner's spool (MarkVerified) and that the
// upload is done (SetUploadState UploadVerified).
func (j *Journal) MarkUploadVerified(ctx context.Context, uploadID, owner string, size int64) error {
	sid, err := checkUploadID(uploadID)
	if err != nil {
		return fmt.Errorf("journal: mark upload verified: %w", err)
	}
	if err := checkOwner(owner); err != nil {
		return fmt.Errorf("journal: mark upload verified: %w", err)
	}
	return j.batch(ctx, "mark upload verified", func(tx *bolt.Tx) error {
		u, err := getUpload(tx, uploadID)
		if err != nil {
			return err
		}
		if err := markVerified(tx, sid, owner, u.Object, size); err != nil {
			return err
		}
		return setUploadState(tx, uploadID, UploadVerified)
	})
}

// DeleteUpload deletes the upload and frees the object's live-upload slot if
// it held it. Deleting a missing upload is not an error.
func (j *Journal) DeleteUpload(ctx context.Context, id string) error {
	if _, err := checkUploadID(id); err != nil {
		return fmt.Errorf("journal: delete upload: %w", err)
	}
	return j.update(ctx, "delete upload", func(tx *bolt.Tx) error {
		uploads := tx.Bucket(bucketUploads)
		v := uploads.Get([]byte(id))
		if v == nil {
			return nil
		}
		var u Upload
		if err := json.Unmarshal(v, &u); err != nil {
			return fmt.Errorf("upload %s: %w", id, err)
		}
		slots := tx.Bucket(bucketLiveUpload)
		key := liveKey(u.Session, u.Object)
		if string(slots.Get(key)) == id {
			if err := slots.Delete(key); err != nil {
				return err
			}
		}
		return uploads.Delete([]byte(id))
	})
}

// SessionUploads returns the session's uploads, oldest first. It loads every
// upload record the session has (the caller deletes finished ones).
func (j *Journal) SessionUploads(ctx context.Context, sessionID string) ([]Upload, error) {
	if err := checkSessionID(sessionID); err != nil {
		return nil, fmt.Errorf("journal: session uploads: %w", err)
	}
	return loadAll(j, ctx, "session uploads", bucketUploads, []byte(sessionID+"/"), "upload", sortUploads)
}

// AllUploads returns every upload, oldest first. It loads them all: it is meant
// for startup recovery and administration.
func (j *Journal) AllUploads(ctx context.Context) ([]Upload, error) {
	return loadAll(j, ctx, "all uploads", bucketUploads, nil, "upload", sortUploads)
}

func sortUploads(us []Upload) {
	sort.Slice(us, func(a, b int) bool {
		if !us[a].Created.Equal(us[b].Created) {
			return us[a].Created.Before(us[b].Created)
		}
		return us[a].ID < us[b].ID
	})
}

func getUpload(tx *bolt.Tx, id string) (Upload, error) {
	v := tx.Bucket(bucketUploads).Get([]byte(id))
	if v == nil {
		return Upload{}, fmt.Errorf("upload %s: %w", id, ErrNotFound)
	}
	var u Upload
	if err := json.Unmarshal(v, &u); err != nil {
		return Upload{}, fmt.Errorf("upload %s: %w", id, err)
	}
	return u, nil
}

func putUpload(tx *bolt.Tx, u *Upload) error {
	v, err := json.Marshal(u)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketUploads).Put([]byte(u.ID), v)
}

// loadAll decodes, in one read transaction, the JSON records of bucket
// whose keys start with prefix, and sorts them with sortFn.
func loadAll[T any](j *Journal, ctx context.Context, op string, bucket, prefix []byte, what string, sortFn func([]T)) ([]T, error) {
	var out []T
	err := j.view(ctx, op, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var x T
			if err := json.Unmarshal(v, &x); err != nil {
				return fmt.Errorf("%s %s: %w", what, k, err)
			}
			out = append(out, x)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortFn(out)
	return out, nil
}
