package journal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var (
	// ErrNotFound reports a missing session, object, upload or intent. Malformed
	// session and upload IDs also match it: nothing can exist under them.
	ErrNotFound = errors.New("not found")
	// ErrInUse reports that another process (or another Open in this process)
	// holds the database.
	ErrInUse = errors.New("state dir in use")
	// ErrRevoked reports that CreateOrResume was asked for by a revoked token.
	ErrRevoked = errors.New("token revoked")
	// ErrTooMany reports that Need would register more objects than allowed,
	// or CreateOrResume open more sessions than allowed (see TooManyError).
	ErrTooMany = errors.New("too many")
)

// TooManyError reports a limit that Need or CreateOrResume would exceed. It
// matches ErrTooMany.
type TooManyError struct {
	What  string // "objects in the session", "objects of the token's open sessions", "open sessions of the token"
	Have  int
	Adds  int
	Limit int
}

func (e *TooManyError) Error() string {
	return fmt.Sprintf("%d %s and %d more would exceed %d", e.Have, e.What, e.Adds, e.Limit)
}

// Is makes a *TooManyError match ErrTooMany.
func (e *TooManyError) Is(target error) bool { return target == ErrTooMany }

// errNotLive is returned by writes that would make a session that left the
// live states hold spool files again.
var errNotLive = errors.New("session is not live")

// errLive is returned by ReleaseSession for a session still live.
var errLive = errors.New("session is live")

// LiveUploadError reports that the session already has an open or received
// upload for the object (ErrLiveUpload).
type LiveUploadError struct{ UploadID string }

// Error implements error.
func (e *LiveUploadError) Error() string {
	return "journal: object already has a live upload " + e.UploadID
}

// schemaVersion 2 added the revoked bucket, 3 the owners index of live
// sessions and the due queue of ended ones, 4 binary object keys, one
// record per object (the per-owner spool index is gone) and the holders
// index. Older journals are upgraded when opened; binaries that know only
// older versions then refuse the journal rather than ignore what they do
// not know.
const schemaVersion = "4"

// versionUpgrading marks a journal whose upgrade to schema 4 has begun:
// binaries of schema 3 and older refuse it, and Open finishes the upgrade.
const versionUpgrading = "3+4"

var (
	bucketMeta       = []byte("meta")
	bucketSessions   = []byte("sessions")
	bucketResume     = []byte("resume")
	bucketLive       = []byte("live")
	bucketObjects    = []byte("objects")
	bucketUploads    = []byte("uploads")
	bucketLiveUpload = []byte("liveupload")
	bucketIntents    = []byte("intents")
	bucketRevoked    = []byte("revoked")
	bucketOwners     = []byte("owners")   // owner + "/" + session ID of each live session
	bucketHolders    = []byte("holders")  // owner + "/" + session ID of each session with an object bucket
	bucketDue        = []byte("due")      // ended sessions' work by time (see Due)
	bucketDeferred   = []byte("deferred") // work publishes left for after their answer (see Deferred)
	bucketHeads      = []byte("heads")    // ref → its recent heads (see Heads)
	bucketRetiring   = []byte("retiring") // static delta name → when it stopped being wanted (see Retiring)

	allBuckets = [][]byte{bucketMeta, bucketSessions, bucketResume, bucketLive,
		bucketObjects, bucketUploads, bucketLiveUpload, bucketIntents, bucketRevoked,
		bucketOwners, bucketHolders, bucketDue, bucketDeferred, bucketHeads, bucketRetiring}

	keyVersion = []byte("version")
)

// defaultBatchSize bounds the keys one transaction of ReleaseSession or
// of the upgrade to schema 4 touches.
const defaultBatchSize = 5000

// maxNameLen bounds owners so that they fit bbolt keys.
const maxNameLen = 4096

// Journal is an open journal database. It is safe for concurrent use.
type Journal struct {
	db        *bolt.DB
	batchSize int          // keys per transaction in ReleaseSession and the upgrade
	lastTrim  atomic.Int64 // UnixNano of the last trim of the memory map
	trimHeld  func()       // tests: called by trim before it lets go of the journal

	compaction Compaction // what Open did to shrink the file

	limits atomic.Pointer[Limits]
}

// Limits bound what one owner (token) may hold at once; 0 means no limit.
type Limits struct {
	SessionsPerOwner      int // open sessions (CreateOrResume)
	ObjectsPerOwner       int // objects registered in its open sessions (Need)
	LiveUploadsPerSession int // open and received uploads of one session (AddUpload)
}

// SetLimits sets the limits that CreateOrResume, Need and AddUpload apply.
func (j *Journal) SetLimits(l Limits) { j.limits.Store(&l) }

func (j *Journal) limit() Limits {
	if l := j.limits.Load(); l != nil {
		return *l
	}
	return Limits{}
}

// Open opens or creates (mode 0600, with all buckets) the journal at path.
// It waits up to lockTimeout for the file lock (lockTimeout <= 0 tries once);
// if another holder keeps it, the error matches ErrInUse and names path.
// A journal of an older schema is upgraded (see upgrade), and one whose
// file is mostly free pages is compacted (see compactIfSparse).
func Open(path string, lockTimeout time.Duration) (*Journal, error) {
	db, err := openDB(path, lockTimeout)
	if err != nil {
		return nil, err
	}
	j := &Journal{db: db, batchSize: defaultBatchSize}
	if err := j.upgrade(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	if err := j.compactIfSparse(path); err != nil {
		_ = j.db.Close()
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	return j, nil
}

// allocStep is how much the journal's file grows beyond what its pages
// need when it must grow. bbolt's default, 16 MiB, added 17 bytes per
// object to the file of a session of a million; each step costs an
// ftruncate and an fsync.
const allocStep = 1 << 20

// openDB opens the bbolt file at path once it holds its lock. A holder
// that compacted the file (compactIfSparse) renamed a new file over the
// one a waiter opened: the waiter then holds the lock of a file that is
// gone, and opens the path again.
func openDB(path string, lockTimeout time.Duration) (*bolt.DB, error) {
	if lockTimeout <= 0 {
		// bbolt treats 0 as "wait forever"; anything below its 50ms retry
		// step gives up after the first attempt.
		lockTimeout = time.Nanosecond
	}
	for {
		var file *os.File
		opts := &bolt.Options{Timeout: lockTimeout, OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, mode)
			if file == nil {
				file = f // the database itself; later calls are copies
			}
			return f, err
		}}
		db, err := bolt.Open(path, 0o600, opts)
		if err != nil {
			if errors.Is(err, berrors.ErrTimeout) {
				return nil, fmt.Errorf("journal: open %s: %w (lock %w after %s)", path, ErrInUse, err, lockTimeout)
			}
			return nil, fmt.Errorf("journal: open %s: %w", path, err)
		}
		held, err1 := file.Stat()
		named, err2 := os.Stat(path)
		if err := errors.Join(err1, err2); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("journal: open %s: %w", path, err)
		}
		if !os.SameFile(held, named) {
			_ = db.Close()
			continue
		}
		// Concurrent verdicts share a commit; a lone writer waits at most this.
		db.MaxBatchDelay = 2 * time.Millisecond
		db.AllocSize = allocStep
		return db, nil
	}
}

// Close closes the database, waiting for running transactions.
func (j *Journal) Close() error {
	if err := j.db.Close(); err != nil {
		return fmt.Errorf("journal: close: %w", err)
	}
	return nil
}

// update runs fn in one read-write transaction.
func (j *Journal) update(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := j.db.Update(fn); err != nil {
		return wrap(op, err)
	}
	j.maybeTrim()
	return nil
}

// batch runs fn through bolt's Batch: fn may run more than once and must only
// have effects inside tx.
func (j *Journal) batch(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := j.db.Batch(fn); err != nil {
		return wrap(op, err)
	}
	j.maybeTrim()
	return nil
}

// view runs fn in one read-only transaction.
func (j *Journal) view(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := j.db.View(fn); err != nil {
		return wrap(op, err)
	}
	j.maybeTrim()
	return nil
}

func wrap(op string, err error) error {
	var lue *LiveUploadError
	if errors.As(err, &lue) {
		return err // already says "journal: …"
	}
	return fmt.Errorf("journal: %s: %w", op, err)
}

// now returns the current time in UTC without a monotonic reading, so that
// values survive a JSON round trip unchanged.
func now() time.Time { return time.Now().UTC() }

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func checkSessionID(id string) error {
	if !isLowerHex(id, 32) {
		return fmt.Errorf("invalid session id %q: %w", id, ErrNotFound)
	}
	return nil
}

// checkUploadID validates "<32hex>/<32hex>" and returns the session part.
func checkUploadID(id string) (string, error) {
	if len(id) != 65 || id[32] != '/' || !isLowerHex(id[:32], 32) || !isLowerHex(id[33:], 32) {
		return "", fmt.Errorf("invalid upload id %q: %w", id, ErrNotFound)
	}
	return id[:32], nil
}

// checkName validates an object name ("<64 hex>.<ext>") and returns its key.
func checkName(name string) ([]byte, error) {
	if name == "" {
		return nil, errors.New("empty object name")
	}
	return objKey(name)
}

func checkOwner(owner string) error {
	if owner == "" {
		return errors.New("empty owner")
	}
	if len(owner) > maxNameLen {
		return fmt.Errorf("owner too long (%d bytes)", len(owner))
	}
	return nil
}

func newHexID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	return hex.EncodeToString(b[:])
}
