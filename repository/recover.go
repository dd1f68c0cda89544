package repository

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tus/tusd/v2/pkg/filestore"

	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// recover brings the state dir back in line with the journal after a stop
// of any kind: uploads the journal forgot are deleted, journal uploads
// whose bytes are gone are forgotten (the client sends them again),
// complete uploads without a verdict are judged, and unfinished publishes
// are finished.
func (s *Service) recover(ctx context.Context) error {
	ups, err := s.journal.AllUploads(ctx)
	if err != nil {
		return err
	}
	known := make(map[string]bool, len(ups))
	for _, u := range ups {
		known[u.ID] = true
		switch {
		case u.State == journal.UploadVerified:
			s.removeUploadFiles(u.ID)
		case s.complete(ctx, u):
			if err := s.settle(ctx, u); err != nil && !object.IsCorrupt(err) && !errors.Is(err, errUploadLost) {
				return fmt.Errorf("verify upload %s: %w", u.ID, err)
			}
		default:
			// An incomplete upload resumes only with both of tusd's files
			// intact (a kill can fall between their creation, or before
			// the info file's JSON is written).
			_, errData := os.Stat(s.uploadPath(u.ID))
			info, errInfo := os.ReadFile(s.uploadPath(u.ID) + ".info")
			if errData != nil || errInfo != nil || !json.Valid(info) {
				s.log.Info("forgetting upload whose data is gone", "upload", u.ID)
				s.removeUploadFiles(u.ID)
				if err := s.journal.DeleteUpload(ctx, u.ID); err != nil {
					return err
				}
			} else if err := s.relocateUpload(u.ID, info); err != nil {
				return err
			}
		}
	}
	err = filepath.WalkDir(s.tusDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(s.tusDir, p)
		id := strings.TrimSuffix(filepath.ToSlash(rel), ".info")
		if !known[id] {
			s.log.Info("deleting upload unknown to the journal", "file", rel)
			return os.Remove(p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan uploads: %w", err)
	}
	if err := s.sweepSpools(ctx); err != nil {
		return fmt.Errorf("sweep spools: %w", err)
	}
	s.finishIntents(ctx)
	return nil
}

// relocateUpload points tusd's info file of an upload at where its files
// are now. tusd records absolute paths, which a move of the state dir
// leaves pointing at the old place.
func (s *Service) relocateUpload(id string, info []byte) error {
	var fi map[string]any
	dec := json.NewDecoder(bytes.NewReader(info))
	dec.UseNumber() // sizes and offsets come back as they were
	if err := dec.Decode(&fi); err != nil {
		return nil // not an object: tusd will say so; left as it is
	}
	storage, _ := fi["Storage"].(map[string]any)
	if storage == nil {
		return nil
	}
	bin := s.uploadPath(id)
	if storage[filestore.StorageKeyPath] == bin && storage[filestore.StorageKeyInfoPath] == bin+".info" {
		return nil
	}
	s.log.Info("upload files moved: updating their path", "upload", id, "was", storage[filestore.StorageKeyPath])
	storage[filestore.StorageKeyPath], storage[filestore.StorageKeyInfoPath] = bin, bin+".info"
	out, err := json.Marshal(fi)
	if err != nil {
		return fmt.Errorf("upload %s: %w", id, err)
	}
	tmp := bin + ".info.tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return fmt.Errorf("upload %s: %w", id, err)
	}
	if err := os.Rename(tmp, bin+".info"); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("upload %s: %w", id, err)
	}
	return nil
}

// receiving reports whether an upload of the session got bytes within d:
// a single large upload over a slow link keeps its session alive.
func (s *Service) receiving(ctx context.Context, sessionID string, d time.Duration) bool {
	ups, err := s.journal.SessionUploads(ctx, sessionID)
	if err != nil {
		return false
	}
	for _, u := range ups {
		if fi, err := os.Stat(s.uploadPath(u.ID)); err == nil && time.Since(fi.ModTime()) < d {
			return true
		}
	}
	return false
}

// finishIntents completes interrupted publishes. One that fails now (the
// repo locked by an admin's prune, a full disk) is logged and retried by
// the janitor; it does not keep the daemon from starting.
func (s *Service) finishIntents(ctx context.Context) {
	intents, err := s.journal.Intents(ctx)
	if err != nil {
		s.log.Error("reading publish intents", "err", err)
		return
	}
	for _, in := range intents {
		unlock := s.lockSession(in.Session)
		// The commit that wrote it may have finished while this waited.
		cur, err := s.journal.GetIntent(ctx, in.Session)
		if errors.Is(err, journal.ErrNotFound) {
			unlock()
			continue
		}
		if err == nil {
			err = s.finishIntent(ctx, cur)
		}
		unlock()
		if err != nil {
			s.log.Warn("interrupted publish not finished yet", "session", in.Session, "err", err)
		}
	}
}

func (s *Service) finishIntent(ctx context.Context, in journal.Intent) error {
	sess, err := s.journal.Get(ctx, in.Session)
	if err != nil {
		return err
	}
	s.log.Info("finishing interrupted publish", "session", sess.ID, "step", in.Step)
	switch sess.State {
	case journal.StatePublished:
		if err := s.recordPublished(ctx, sess, sess.Result); err != nil {
			return err
		}
		return s.releasePublished(ctx, sess)
	case journal.StatePublishing:
		return s.publish(ctx, sess)
	}
	return s.journal.DeleteIntent(ctx, sess.ID)
}

// sweepSpools judges the spool files the journal does not know (see
// spool.Set.Sweep): those an open session of their token still wants are
// verified again and kept, the others deleted, keeping those unjudged
// uploads may still claim.
func (s *Service) sweepSpools(ctx context.Context) error {
	claimed, err := s.claimedBySpoolOwner(ctx)
	if err != nil {
		s.log.Warn("not sweeping spools: cannot read uploads", "err", err)
		return nil // when in doubt, keep every file
	}
	live, err := s.journal.LiveSessions(ctx)
	if err != nil {
		return err
	}
	want := func(ctx context.Context, owner string, n object.Name) []string {
		var out []string
		for _, sess := range live {
			if sess.Owner != owner || sess.State != journal.StateOpen {
				continue
			}
			st, err := s.journal.ObjectState(ctx, sess.ID, n.String())
			if err == nil && (st == journal.ObjWanted || st == journal.ObjReceived) {
				out = append(out, sess.ID)
			}
		}
		return out
	}
	verify := func(n object.Name, path string) (object.Info, error) {
		return object.VerifyFile(n, path, object.VerifyOptions{MaxContentSize: int64(s.cfg.MaxObjectSize)})
	}
	kept, err := s.spools.Sweep(ctx, claimed, want, verify)
	if kept > 0 {
		s.metrics.verified.Add(float64(kept))
	}
	return err
}

// claimedBySpoolOwner lists, as "<owner>/<object>", the objects that
// unverified uploads are about to claim from a spool (a verdict cut short
// after the rename into the spool).
func (s *Service) claimedBySpoolOwner(ctx context.Context) (map[string]bool, error) {
	ups, err := s.journal.AllUploads(ctx)
	if err != nil {
		return nil, err
	}
	owners := map[string]string{} // session -> owner
	claimed := map[string]bool{}
	for _, u := range ups {
		if u.State == journal.UploadVerified {
			continue
		}
		owner, ok := owners[u.Session]
		if !ok {
			sess, err := s.journal.Get(ctx, u.Session)
			if err != nil {
				continue
			}
			owner, owners[u.Session] = sess.Owner, sess.Owner
		}
		claimed[owner+"/"+u.Object] = true
	}
	return claimed, nil
}

// janitor expires idle sessions until ctx is done.
func (s *Service) janitor(ctx context.Context) {
	every := min(max(s.cfg.SessionTTL.Duration/4, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.expire(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("expiring sessions", "err", err)
			}
			s.finishIntents(ctx)
		}
	}
}

// expire ends live sessions idle for longer than the TTL and frees their
// uploads and spool entries.
func (s *Service) expire(ctx context.Context) error {
	idle, err := s.journal.Idle(ctx, time.Now().Add(-s.cfg.SessionTTL.Duration))
	if err != nil {
		return err
	}
	for _, sess := range idle {
		unlock := s.lockSession(sess.ID)
		cur, err := s.journal.Get(ctx, sess.ID)
		if err == nil && cur.State == journal.StateOpen && time.Since(cur.Updated) > s.cfg.SessionTTL.Duration {
			if s.receiving(ctx, cur.ID, s.cfg.SessionTTL.Duration) {
				err = s.journal.Touch(ctx, cur.ID)
			} else {
				err = s.dropSession(ctx, cur, journal.StateExpired, "idle for more than "+s.cfg.SessionTTL.Duration.String(), true)
				s.metrics.expired.Inc()
			}
		}
		unlock()
		if err != nil {
			return err
		}
	}
	// Revoked behind the daemon's back (in the journal of a stopped daemon)
	// without its sessions being swept.
	live, err := s.journal.LiveSessions(ctx)
	if err != nil {
		return err
	}
	for _, sess := range live {
		if sess.State == journal.StateOpen && s.Revoked(sess.Owner) {
			if err := s.abortIfOpen(ctx, sess.ID, "token revoked"); err != nil {
				return err
			}
		}
	}
	return s.doDue(ctx)
}

// doDue does the work due on ended sessions, taken from the journal's queue
// by time, so that its cost follows what is due and not the history the
// journal keeps: a TTL after a session ended unpublished, its verified
// objects (kept for the token's next push) are freed (at once for the
// others, which freed them already unless a crash cut that short); after the
// retention period, the session is forgotten.
func (s *Service) doDue(ctx context.Context) error {
	const batch = 256
	for {
		due, err := s.journal.DueBefore(ctx, time.Now(), batch)
		if err != nil {
			return err
		}
		for _, d := range due {
			if err := s.doOneDue(ctx, d); err != nil {
				return err
			}
		}
		if len(due) < batch {
			return nil
		}
	}
}

func (s *Service) doOneDue(ctx context.Context, d journal.Due) error {
	sess, err := s.journal.Get(ctx, d.Session)
	if errors.Is(err, journal.ErrNotFound) || err == nil && sess.State.Live() {
		return s.journal.DoneDue(ctx, d)
	}
	if err != nil {
		return err
	}
	at := sess.Updated
	switch {
	case d.Kind == journal.DueForget:
		at = at.Add(s.cfg.Retention())
	case sess.State == journal.StateFailed || sess.State == journal.StateAborted:
		at = at.Add(s.cfg.SessionTTL.Duration)
	}
	if time.Now().Before(at) {
		return s.journal.Reschedule(ctx, d, at)
	}
	if d.Kind == journal.DueForget {
		if err := s.forget(ctx, sess); err != nil {
			return err
		}
	} else if objs, err := s.journal.Objects(ctx, sess.ID, "", 1); err == nil && len(objs) > 0 {
		if err := s.releaseSpool(ctx, sess); err != nil {
			return err
		}
	}
	return s.journal.DoneDue(ctx, d)
}

// forget deletes an ended session from the journal, after freeing whatever
// it still holds.
func (s *Service) forget(ctx context.Context, sess journal.Session) error {
	unlock := s.lockSession(sess.ID)
	defer unlock()
	if err := s.dropSession(ctx, sess, sess.State, sess.Result, true); err != nil {
		return err
	}
	return s.journal.DeleteSession(ctx, sess.ID)
}
