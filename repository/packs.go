package repository

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/service"
	"github.com/ostree-upload/ostree-upload/spool"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// A pack's verified entries are made durable and journaled together, once
// one of these is reached, and when the pack ends or breaks off.
const (
	packFlushObjects = 1024
	packFlushBytes   = 16 << 20
	packFlushAge     = time.Second
	maxPackSkips     = 100 // skipped entries listed in a PackResult
)

// ReceivePack reads a tar of objects from body and verifies each entry as
// it arrives (see service.Repository). Verified entries are kept in
// batches: staged, renamed into the spool, synced with one syncfs and
// journaled in one transaction. A pack that breaks off loses at most the
// entries of the last batch still unread; one refused for a bad entry
// keeps those before it.
func (s *Service) ReceivePack(ctx context.Context, id auth.Identity, sid string, r io.Reader) (api.PackResult, error) {
	sess, err := s.ownedSession(ctx, id, sid, false)
	if err != nil {
		return api.PackResult{}, err
	}
	if e := openOrConflict(sess); e != nil {
		return api.PackResult{}, e
	}
	if s.Draining() {
		return api.PackResult{}, service.Restarting("nothing of this pack was read")
	}
	ctx = context.WithoutCancel(ctx) // flush what arrived
	sp, err := s.spoolFor(ctx, sess.Owner)
	if err != nil {
		return api.PackResult{}, err
	}
	p := &packReader{s: s, sess: sess, sp: sp, seen: map[string]bool{}, done: make(chan struct{}), work: s.verifying.worker(s.life, sess.Owner)}
	// Reading the network gives up the verification slot.
	body := &bodyReader{r: r, wait: p.work.Release}
	limited := &limitReader{r: body, n: int64(s.cfg.MaxPackSize)}
	s.packs.add(sess.ID, p)
	go p.flushOld(ctx)
	err = p.read(ctx, tar.NewReader(limited))
	if ferr := p.flush(ctx); ferr != nil {
		err = errors.Join(ferr, err)
	}
	close(p.done)
	s.packs.remove(sess.ID, p)
	s.metrics.packs.Inc()
	p.work.Release()
	if err != nil {
		var he *service.Error
		switch {
		case limited.over:
			he = refuse(service.TooLarge, "pack is over %d bytes", int64(s.cfg.MaxPackSize))
		case errors.As(err, &he):
		case object.IsCorrupt(err):
			he = refuse(service.Unprocessable, "%v", err)
		case body.err != nil:
			// The client went away or stalled: nobody reads an answer.
			s.log.Info("pack broke off", "session", sess.ID, "stored", p.stored(), "err", body.err)
			return api.PackResult{}, refuse(service.Invalid, "pack broke off: %v", body.err)
		case errors.As(err, new(*tarError)) || errors.Is(err, io.ErrUnexpectedEOF):
			he = refuse(service.Invalid, "pack is not a valid tar: %v", err)
		default:
			return api.PackResult{}, err
		}
		he.Body.Object, he.Body.Stored = p.bad, p.stored()
		return api.PackResult{}, he
	}
	io.Copy(io.Discard, io.LimitReader(body, 64<<10)) // tar's record padding
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.res, nil
}

// packReader is the state of one pack being read.
type packReader struct {
	s    *Service
	sess journal.Session
	sp   *spool.Spool
	bad  string          // the entry a refusal is about
	seen map[string]bool // names staged by this pack
	done chan struct{}   // closed once the pack is read and flushed
	work *worker         // the pack's share of the verification slots
	room int64           // bytes of entries it may stage before asking roomFor again

	mu         sync.Mutex // the reader adds to the batch, flushes come from anywhere
	res        api.PackResult
	batch      []*store.Staged
	batchBytes int64
	batchStart time.Time
	flushErr   error // of a flush from another goroutine
}

func (p *packReader) stored() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.res.Stored
}

// flushOld flushes a batch that has waited packFlushAge, even while the
// reader waits for bytes, so that what arrived is kept however the
// connection ends.
func (p *packReader) flushOld(ctx context.Context) {
	t := time.NewTicker(packFlushAge / 2)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
			p.mu.Lock()
			old := len(p.batch) > 0 && time.Since(p.batchStart) >= packFlushAge
			p.mu.Unlock()
			if old {
				if err := p.flush(ctx); err != nil {
					p.mu.Lock()
					p.flushErr = err
					p.mu.Unlock()
				}
			}
		}
	}
}

// livePacks tracks the packs being read, by session.
type livePacks struct {
	mu sync.Mutex
	m  map[string]map[*packReader]bool
}

func (l *livePacks) add(sid string, p *packReader) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]map[*packReader]bool{}
	}
	if l.m[sid] == nil {
		l.m[sid] = map[*packReader]bool{}
	}
	l.m[sid][p] = true
}

func (l *livePacks) remove(sid string, p *packReader) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m[sid], p)
	if len(l.m[sid]) == 0 {
		delete(l.m, sid)
	}
}

// settle lets the session's packs in progress finish, for at most wait, and
// flushes those still running, so that a negotiation counts every object
// that has arrived: a client that lost a pack's connection (or was killed
// and rerun) is then not asked again for what the daemon was still reading.
func (l *livePacks) settle(ctx context.Context, sid string, wait time.Duration) {
	l.mu.Lock()
	var packs []*packReader
	for p := range l.m[sid] {
		packs = append(packs, p)
	}
	l.mu.Unlock()
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for _, p := range packs {
		select {
		case <-p.done:
			continue
		case <-timeout.C:
		}
		for _, p := range packs {
			p.flush(ctx)
		}
		return
	}
}

func (p *packReader) read(ctx context.Context, tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return &tarError{err}
		}
		if err := p.entry(ctx, hdr, tr); err != nil {
			return err
		}
		if p.s.Draining() {
			// After the entry in flight; what was read is flushed.
			return service.Restarting("the pack's entries read so far are kept")
		}
		p.mu.Lock()
		full := len(p.batch) >= packFlushObjects || p.batchBytes >= packFlushBytes
		err = p.flushErr
		p.mu.Unlock()
		if err != nil {
			return err
		}
		if full {
			if err := p.flush(ctx); err != nil {
				return err
			}
		}
	}
}

// entry handles one tar entry: directories are ignored, objects the session
// needs are staged, other well-formed objects are skipped, and anything else
// refuses the pack.
func (p *packReader) entry(ctx context.Context, hdr *tar.Header, r io.Reader) error {
	p.bad = hdr.Name
	clean, ok := packPath(hdr.Name)
	if !ok {
		return refuse(service.Invalid, "pack entry %q: not a relative path inside the pack", hdr.Name)
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		p.bad = ""
		return nil
	case tar.TypeReg, tar.TypeRegA:
	default:
		return refuse(service.Invalid, "pack entry %q: only regular files and directories are allowed, not type %q", hdr.Name, hdr.Typeflag)
	}
	for k := range hdr.PAXRecords {
		// A sparse file's holes would be read as zeros that never crossed
		// the network: a small pack could store gigabytes.
		if strings.HasPrefix(k, "GNU.sparse.") {
			return refuse(service.Invalid, "pack entry %q: sparse files are not allowed", hdr.Name)
		}
	}
	name, err := object.ParsePath(clean)
	if err != nil {
		return refuse(service.Invalid, "pack entry %q: %v", hdr.Name, err)
	}
	p.bad = name.String()
	if limit := p.s.sizeLimit(name.Type); hdr.Size > limit {
		return refuse(service.TooLarge, "pack entry %s: %s objects are at most %d bytes", name, name.Type.Ext(), limit)
	}
	if e := p.s.commitMetaAllowed(ctx, p.sess, name); e != nil {
		e.Body.Error = "pack entry " + name.String() + ": " + e.Body.Error
		return e
	}
	// Whether the session wants the entry is asked at the flush, for the
	// whole batch at once (see flush).
	if p.seen[name.String()] {
		p.skipped(name, "duplicate entry")
		return nil
	}
	if err := p.reserve(hdr.Size); err != nil {
		e := refuse(service.NoSpace, "%v", err)
		e.Body.Code = api.CodeSpace
		return e
	}
	// A verification slot is held only while the entry's bytes are
	// checked, never while the pack waits for the network: a slow client
	// does not hold up others, and a bomb shares the CPU fairly.
	st, err := p.sp.Stage(ctx, name, r, hdr.Size, p.s.verifyOptions(p.work))
	p.work.Release()
	if object.IsCorrupt(err) {
		// Only an entry the session wants refuses the pack.
		states, serr := p.s.journal.ObjectStates(ctx, p.sess.ID, []string{name.String()})
		if serr == nil {
			if reason := skipReason(name, states[0]); reason != "" {
				p.skipped(name, reason)
				return nil
			}
		}
		p.s.metrics.rejected.Inc()
		p.s.log.Warn("object rejected", "session", p.sess.ID, "object", name, "reason", err)
		return errors.Join(err, serr, p.s.journal.MarkRejected(ctx, p.sess.ID, name.String(), err.Error()))
	}
	if err != nil {
		return err
	}
	p.mu.Lock()
	if len(p.batch) == 0 {
		p.batchStart = time.Now()
	}
	p.batch = append(p.batch, st)
	p.batchBytes += hdr.Size
	p.mu.Unlock()
	p.seen[name.String()] = true
	p.bad = ""
	return nil
}

// packRoomStep is the room a pack asks for at a time (or its entry's
// size, if larger): the free space is looked at once per step, not once
// per small object.
const packRoomStep = 1 << 20

// reserve takes room for an entry of size bytes (see roomFor).
func (p *packReader) reserve(size int64) error {
	if size >= 0 && size <= p.room {
		p.room -= size
		return nil
	}
	step := max(size, packRoomStep)
	if err := p.s.roomFor(step); err != nil {
		return err
	}
	p.room = step - size
	return nil
}

// packPath cleans a pack entry's name ("./" and a trailing "/" dropped) and
// says whether it is a plain relative path: not absolute, no "..", nothing
// that cleaning would change.
func packPath(name string) (string, bool) {
	n := strings.TrimSuffix(strings.TrimPrefix(name, "./"), "/")
	if n == "" || n == "." {
		return ".", true
	}
	if strings.HasPrefix(n, "/") || path.Clean(n) != n || n == ".." || strings.HasPrefix(n, "../") {
		return "", false
	}
	return n, true
}

// skipReason says why a pack's entry is not needed by a session where its
// state is st (0: not registered), or "" if it is.
func skipReason(name object.Name, st journal.ObjState) string {
	switch {
	case st == 0:
		return "not requested in this session"
	case settled(name, st):
		return "already verified"
	}
	return ""
}

// skipped records that the reader skipped the entry it is on.
func (p *packReader) skipped(name object.Name, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.skippedLocked(name, reason)
	p.bad = ""
}

func (p *packReader) skippedLocked(name object.Name, reason string) {
	p.res.Skipped++
	if len(p.res.Skips) < maxPackSkips {
		p.res.Skips = append(p.res.Skips, api.PackSkip{Object: name.String(), Reason: reason})
	}
}

// flush makes the staged objects durable in the spool and journals them as
// verified (see spool.Spool.AdmitStaged).
func (p *packReader) flush(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	batch := p.batch
	p.batch, p.batchBytes = nil, 0
	if len(batch) == 0 {
		return nil
	}
	// One lookup for the batch, not a transaction per entry: entries the
	// session did not ask for, or has verified since, are dropped here.
	names := make([]string, len(batch))
	for i, st := range batch {
		names[i] = st.Info.Name.String()
	}
	states, err := p.s.journal.ObjectStates(ctx, p.sess.ID, names)
	if err != nil {
		for _, st := range batch {
			st.Discard()
		}
		return err
	}
	wanted := batch[:0]
	for i, st := range batch {
		if reason := skipReason(st.Info.Name, states[i]); reason != "" {
			st.Discard()
			p.skippedLocked(st.Info.Name, reason)
			continue
		}
		wanted = append(wanted, st)
	}
	batch = wanted
	if len(batch) == 0 {
		return nil
	}
	if err := p.sp.AdmitStaged(ctx, p.sess.ID, batch); err != nil {
		return err
	}
	var bytes int64
	for _, st := range batch {
		bytes += st.Info.Size
	}
	p.res.Stored += len(batch)
	p.res.Bytes += bytes
	p.s.metrics.verified.Add(float64(len(batch)))
	p.s.metrics.verifiedBytes.Add(float64(bytes))
	return nil
}

// tarError is a pack that is not a tar archive, or is cut short.
type tarError struct{ err error }

func (e *tarError) Error() string { return e.err.Error() }
func (e *tarError) Unwrap() error { return e.err }

// bodyReader reads a pack's body, giving up the verification slot before
// each read (which may wait for the client), and remembers the first read
// error: the body's own failure, not the pack's.
type bodyReader struct {
	r    io.Reader
	wait func()
	err  error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	b.wait()
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// limitReader fails once more than n bytes are read, and says so.
type limitReader struct {
	r    io.Reader
	n    int64
	over bool
}

var errPackTooLarge = errors.New("pack too large")

func (l *limitReader) Read(b []byte) (int, error) {
	if l.n <= 0 {
		var one [1]byte
		k, err := l.r.Read(one[:])
		if k > 0 {
			l.over = true
			return 0, errPackTooLarge
		}
		return 0, err
	}
	if int64(len(b)) > l.n {
		b = b[:l.n]
	}
	n, err := l.r.Read(b)
	l.n -= int64(n)
	return n, err
}

// packSettleWait bounds how long a negotiation waits for the session's packs
// in progress.
const packSettleWait = 2 * time.Second
