// Package spool keeps each token's verified objects until a publish takes
// them: one archive repository per token, on the production repository's
// filesystem (so that publishing hard-links instead of copying), whose
// files the journal knows.
//
// The protocol that keeps the two in step, whatever instant a crash
// strikes:
//   - admitting: the bytes are made durable in the spool's objects/ first,
//     then journaled as verified, both under the spool's read lock (a pack's
//     file object is written at its own name as it arrives, and no reader
//     takes it until it is verified: see store.Repo.Stage);
//   - releasing: the journal names the files no other unreleased session
//     of the token holds, they are unlinked, then the session's records are
//     deleted, all under the write lock, so that no admission of the same
//     object and no other release of the token interleaves;
//   - sweeping, at start-up: a file the journal does not know is a crash's
//     leftover (renamed in but not journaled, or staged by a pack, whole
//     or not); when an open session of its token still wants the object
//     and the file verifies against its name, it is kept and journaled, as
//     on arrival; otherwise it goes.
package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/ostree-upload/ostree-upload/internal/failpoint"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// Set is the spools of every token, under one directory.
type Set struct {
	dir string
	j   *journal.Journal
	log *slog.Logger

	mu     sync.Mutex
	spools map[string]*Spool
}

// OpenSet opens (creating it if missing) the directory of the spools.
func OpenSet(dir string, j *journal.Journal, log *slog.Logger) (*Set, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spools: %w", err)
	}
	return &Set{dir: dir, j: j, log: log, spools: map[string]*Spool{}}, nil
}

var ownerRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// For returns the spool of a token (its identity hash), opening or
// creating it on first use.
func (s *Set) For(ctx context.Context, owner string) (*Spool, error) {
	if !ownerRE.MatchString(owner) {
		return nil, fmt.Errorf("bad spool owner %q", owner)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sp, ok := s.spools[owner]; ok {
		return sp, nil
	}
	path := filepath.Join(s.dir, owner)
	var r *store.Repo
	var err error
	if _, statErr := os.Stat(filepath.Join(path, "config")); errors.Is(statErr, os.ErrNotExist) {
		r, err = store.Create(ctx, path, store.ModeArchive)
	} else {
		r, err = store.OpenArchive(ctx, path)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := r.MakeObjectDirs(); err != nil {
		r.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	sp := &Spool{repo: r, owner: owner, j: s.j, log: s.log}
	s.spools[owner] = sp
	return sp, nil
}

// Close closes every open spool.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, sp := range s.spools {
		errs = append(errs, sp.repo.Close())
	}
	s.spools = map[string]*Spool{}
	return errors.Join(errs...)
}

// Wanted names the open sessions of owner that still want object n (see
// Sweep).
type Wanted func(ctx context.Context, owner string, n object.Name) (sessions []string)

// Sweep judges the spool files the journal does not know, left by a crash
// between a rename into the spool and its journal entry, or staged by a
// pack (whole or not): a content-addressed object that open sessions of the spool's
// token still want (want) and that verify accepts is renamed into place,
// made durable and journaled as verified in those sessions, so that its
// bytes need not cross the network again; every other such file is
// deleted. claimed names, as "<owner>/<object>", files that unjudged
// uploads may still claim. Call it only at start-up, before anything is
// admitted. It returns how many objects it kept.
func (s *Set) Sweep(ctx context.Context, claimed map[string]bool, want Wanted, verify func(n object.Name, path string) (object.Info, error)) (int, error) {
	owners, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, err
	}
	kept := 0
	for _, o := range owners {
		if !ownerRE.MatchString(o.Name()) {
			continue
		}
		n, err := s.sweepOwner(ctx, o.Name(), claimed, want, verify)
		kept += n
		if err != nil {
			return kept, err
		}
	}
	return kept, nil
}

func (s *Set) sweepOwner(ctx context.Context, owner string, claimed map[string]bool, want Wanted, verify func(object.Name, string) (object.Info, error)) (int, error) {
	root := filepath.Join(s.dir, owner)
	type found struct {
		name   object.Name
		path   string
		staged bool
	}
	var files []found
	err := filepath.WalkDir(filepath.Join(root, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if n, ok := store.StagedName(d.Name()); ok {
			files = append(files, found{n, p, true})
			return nil
		}
		if strings.HasPrefix(d.Name(), store.TempPrefix) {
			files = append(files, found{object.Name{}, p, true}) // no name: goes
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		n, err := object.ParsePath(filepath.ToSlash(rel))
		if err != nil {
			return nil
		}
		has, err := s.j.SpoolHas(ctx, owner, n.String())
		if err != nil || has || claimed[owner+"/"+n.String()] {
			return err
		}
		files = append(files, found{n, p, false})
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var sp *Spool
	keep := map[string][]journal.VerifiedObject{} // by session
	seen := map[object.Name]bool{}
	for _, f := range files {
		var sessions []string
		ok := f.name != (object.Name{}) && f.name.Type != object.CommitMeta && !seen[f.name]
		if ok && f.staged {
			// A staged copy of an object the spool already has adds nothing.
			if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(f.name.RelPath()))); err == nil {
				ok = false
			}
		}
		if ok {
			sessions = want(ctx, owner, f.name)
			ok = len(sessions) > 0
		}
		var info object.Info
		if ok {
			var err error
			if info, err = verify(f.name, f.path); err != nil {
				s.log.Info("deleting a spool object that does not verify", "object", f.name, "err", err)
				ok = false
			}
		}
		if ok && sp == nil {
			var err error
			if sp, err = s.For(ctx, owner); err != nil {
				return 0, err
			}
		}
		if ok && f.staged {
			if err := sp.repo.AdoptStaged(f.path, f.name); err != nil {
				return 0, err
			}
		}
		if !ok {
			if !f.staged {
				s.log.Info("deleting spool object unknown to the journal", "object", f.name)
			}
			if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return 0, err
			}
			continue
		}
		seen[f.name] = true
		for _, session := range sessions {
			keep[session] = append(keep[session], journal.VerifiedObject{Name: f.name.String(), Size: info.Size})
		}
	}
	if len(keep) == 0 {
		return 0, nil
	}
	if err := sp.repo.Sync(ctx); err != nil {
		return 0, err
	}
	kept := 0
	for session, vs := range keep {
		if err := s.j.MarkVerifiedMany(ctx, session, owner, vs); err != nil {
			return kept, err
		}
		kept += len(vs)
		s.log.Info("kept verified spool objects a crash left unjournaled", "session", session, "objects", len(vs))
	}
	return kept, nil
}

// Spool is one token's verified objects.
type Spool struct {
	repo  *store.Repo
	owner string
	j     *journal.Journal
	log   *slog.Logger
	// mu keeps releases (journal, then unlink) from racing admissions
	// (rename, then journal) and publishes (import): admitting and
	// reading take it shared, releasing exclusively.
	mu sync.RWMutex
}

// Owner is the token the spool belongs to.
func (sp *Spool) Owner() string { return sp.owner }

// ObjectPath is where the spool keeps an object.
func (sp *Spool) ObjectPath(n object.Name) string { return sp.repo.ObjectPath(n) }

// Repo is the spool's repository, for reads that may race a release (an
// object released meanwhile reads as absent); Read holds releases off.
func (sp *Spool) Repo() *store.Repo { return sp.repo }

// Read runs fn on the spool's repository while no release can unlink its
// objects (a publish importing from it, a check reading it).
func (sp *Spool) Read(fn func(*store.Repo) error) error {
	sp.mu.RLock()
	defer sp.mu.RUnlock()
	return fn(sp.repo)
}

// Stage reads and verifies an object from src into a temporary file of the
// spool (see store.Repo.Stage); AdmitStaged admits it.
func (sp *Spool) Stage(ctx context.Context, n object.Name, src io.Reader, size int64, opts object.VerifyOptions) (*store.Staged, error) {
	return sp.repo.Stage(ctx, n, src, size, opts)
}

// AdmitFile admits the verified file at path (a finished upload of
// uploadID, on the spool's filesystem) as object n of a session: durable in
// the spool, then journaled as verified. A file already in the spool (a
// verdict cut short after the rename) is admitted where it is.
func (sp *Spool) AdmitFile(ctx context.Context, uploadID string, n object.Name, path string, size int64) error {
	sp.mu.RLock()
	defer sp.mu.RUnlock()
	if path != sp.repo.ObjectPath(n) {
		if err := sp.repo.Adopt(ctx, n, path); err != nil {
			return err
		}
	}
	failpoint.Hit("after-adopt")
	return sp.j.MarkUploadVerified(ctx, uploadID, sp.owner, size)
}

// AdmitStaged admits verified staged objects of a session: renamed into
// the spool, made durable with one sync, journaled together. Those not
// admitted are discarded.
func (sp *Spool) AdmitStaged(ctx context.Context, session string, staged []*store.Staged) (err error) {
	committed := 0
	defer func() {
		for _, st := range staged[committed:] {
			st.Discard()
		}
	}()
	sp.mu.RLock()
	defer sp.mu.RUnlock()
	vs := make([]journal.VerifiedObject, len(staged))
	for i, st := range staged {
		if err := st.Commit(); err != nil {
			return err
		}
		committed++
		vs[i] = journal.VerifiedObject{Name: st.Info.Name.String(), Size: st.Info.Size}
	}
	if err := sp.repo.Sync(ctx); err != nil {
		return err
	}
	return sp.j.MarkVerifiedMany(ctx, session, sp.owner, vs)
}

// Reject removes an object's file that was found corrupt.
func (sp *Spool) Reject(n object.Name) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.repo.Remove(n)
}

// releaseWorkers is how many goroutines a release unlinks files with.
const releaseWorkers = 4

// Release frees the spool files only this session held and deletes the
// session's object records. The session must have left the live states.
// Everything runs under the write lock, so that no admission of an object
// comes between the journal's answer and the unlink, and no other release
// of the token's sessions interleaves. An interrupted release is finished
// by the next one.
func (sp *Spool) Release(ctx context.Context, session string) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	err := sp.j.ReleaseSessionEach(ctx, session, sp.owner, func(freed []string) error {
		// Unlinks in different directories run in parallel in the
		// kernel: a publish of a million objects frees a million files.
		if len(freed) == 0 {
			return nil
		}
		var wg sync.WaitGroup
		for part := range slices.Chunk(freed, (len(freed)+releaseWorkers-1)/releaseWorkers) {
			wg.Go(func() {
				for _, n := range part {
					name, perr := object.ParseName(n)
					if perr != nil {
						continue
					}
					if rerr := sp.repo.Remove(name); rerr != nil {
						sp.log.Warn("cannot free spool object", "object", n, "err", rerr)
					}
				}
			})
		}
		wg.Wait()
		return nil
	})
	if err != nil {
		return err
	}
	return sp.j.DeleteSessionObjects(ctx, session)
}
