package uploader

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/api/client"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// A round of a push's uploads is a pipeline: the walk of the local
// repository lists the objects to offer, a batch of names at a time; each
// batch is negotiated (the first with the session's creation); the objects
// the daemon needs of it are packed and sent by the -j workers while the
// walk goes on. At most window batches wait between the walk and the
// negotiation, one negotiated batch waits for the feeder, which hands the
// work of the batch before to the workers one unit at a time: the names in
// memory are bounded by the window and the workers' units, not by the size
// of the push.
//
// Files are deduplicated by a Bloom filter of fixed size (fileFilter), not
// by a set of every name: a name the filter has not met is new; one it may
// have met (a file held by several directories, or a false positive) is
// put in doubt. Once the pipeline's uploads are done, the names in doubt
// are negotiated again (the daemon answers only what it still lacks: a
// duplicate sent meanwhile is verified) and what the daemon answers is
// sent. Metadata (commits, dirtrees, dirmetas) are few beside files and
// keep an exact set.

// pipelineWindow is how many batches of names wait for their negotiation.
const pipelineWindow = 2

// batch is names listed by the walk, negotiated together. done, if set, is
// closed once the batch (so every batch before it) is negotiated.
type batch struct {
	names []object.Name
	done  chan struct{}
}

// pipeline is one round of uploads of a push.
type pipeline struct {
	p       *pusher
	updates []api.RefUpdate
	full    bool // refs without a local base offer their whole commit, not top-down
	size    int  // names per batch
	window  int  // batches waiting for their negotiation

	meta  map[object.Name]struct{} // metadata names listed
	files *fileFilter              // file names listed
	doubt map[object.Name]struct{} // file names the filter may have met before

	mu    sync.Mutex
	lacks map[object.Checksum]bool // dirtrees the daemon answered it needs

	sess api.Session       // the session's creation, when this round made it
	live map[string]string // the session's unfinished uploads: object name → URL

	cur     []object.Name // the batch being listed
	listed  int           // names put in batches
	batches chan batch
	ready   chan []work // a negotiated batch's work, waiting for the feeder
	queue   chan work

	// Written by the negotiator, read once the round is over.
	negotiated      bool // a negotiation of this round was asked
	offered, needed int
	negotiating     time.Duration // in negotiations
	walking         time.Duration // from the start of the walk to its end
	uploading       time.Duration // from the start of the walk until the last upload ended

	held, peak atomic.Int64 // names between the walk and the end of their work
}

func (p *pusher) newPipeline(updates []api.RefUpdate, full bool, uploads []api.Upload) *pipeline {
	pl := &pipeline{
		p: p, updates: updates, full: full,
		size: api.MaxNamesPerRequest, window: pipelineWindow,
		meta: map[object.Name]struct{}{}, files: newFileFilter(), doubt: map[object.Name]struct{}{},
		lacks: map[object.Checksum]bool{}, live: map[string]string{},
	}
	if p.opts.batch > 0 {
		pl.size = p.opts.batch
	}
	if p.opts.window > 0 {
		pl.window = p.opts.window
	}
	pl.files.onDoubt = func(n object.Name) { pl.doubt[n] = struct{}{} }
	for _, u := range uploads {
		pl.live[u.Object] = u.URL
	}
	return pl
}

// run lists, negotiates and sends the objects of the push, then the names
// in doubt. It creates the session with the first batch if the push has
// none yet. A session found not open any more ends the round early with
// client.ErrSessionNotOpen.
func (pl *pipeline) run(ctx context.Context) error {
	start := time.Now()
	defer func() { pl.uploading = time.Since(start) }()
	defer pl.files.close()
	if err := pl.stage(ctx, pl.walk, false); err != nil {
		return err
	}
	if len(pl.doubt) == 0 {
		return nil
	}
	// The doubt holds each name once: duplicates met again add nothing.
	doubt := slices.Collect(maps.Keys(pl.doubt))
	pl.doubt = nil
	pl.p.log.Debug("negotiating the files met more than once or taken for such", "names", len(doubt))
	return pl.stage(ctx, func(ctx context.Context) error {
		for _, n := range doubt {
			if err := pl.push(ctx, n); err != nil {
				return err
			}
		}
		return pl.flush(ctx)
	}, true)
}

// stage runs list, the negotiator and the workers together until list has
// listed everything and the workers have sent what the daemon needs of it.
// The names of a doubt stage count as offered only when the daemon needs
// them (see Result.Objects).
func (pl *pipeline) stage(ctx context.Context, list func(context.Context) error, doubt bool) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pl.batches = make(chan batch, pl.window)
	pl.ready = make(chan []work, 1)
	pl.queue = make(chan work)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(pl.batches)
		if err := list(ctx); err != nil {
			cancel(err)
		}
	})
	wg.Go(func() {
		defer close(pl.ready)
		if err := pl.negotiator(ctx, doubt); err != nil {
			cancel(err)
		}
	})
	// The feeder hands the work out one unit at a time, so that the
	// negotiator can ask for the next batch while the workers go on with
	// the work of the batch before.
	wg.Go(func() {
		defer close(pl.queue)
		for items := range pl.ready {
			for _, w := range items {
				select {
				case pl.queue <- w:
				case <-ctx.Done():
					return
				}
			}
		}
	})
	for i := 0; i < pl.p.opts.Jobs; i++ {
		wg.Go(func() {
			for w := range pl.queue {
				var err error
				if w.pack != nil {
					err = pl.p.sendPack(ctx, w.pack, w.sizes, w.bytes)
				} else {
					err = pl.p.upload(ctx, w.obj, pl.live[w.obj.String()])
				}
				if err != nil {
					cancel(err)
					return
				}
				pl.release(max(len(w.pack), 1))
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// walk lists the objects to offer the daemon. A ref whose daemon commit the
// build repository holds offers the diff against it; another (a fresh CI
// build repository that lacks the daemon's commit, or a new ref) offers
// its metadata first, then, once the daemon has answered for them, the
// files of the directories whose dirtree it lacks: the daemon holds every
// other directory whole. With full, every ref without a local base offers
// its whole commit instead. Each ref also offers its commit chain down to
// the daemon's commit, so that the daemon can see the fast-forward
// (pointless when forcing).
func (pl *pipeline) walk(ctx context.Context) error {
	p := pl.p
	start := time.Now()
	p.prog.listing.Store(true)
	defer func() {
		p.prog.listing.Store(false)
		pl.walking = time.Since(start)
	}()
	list := func(n object.Name) error { return pl.add(ctx, n) }
	fail := func(what string, err error) error {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return &PermanentError{Err: fmt.Errorf("read %s from %s: %w", what, p.opts.Repo, err)}
	}
	var topDown []object.Checksum
	for _, u := range pl.updates {
		newc, _ := object.ParseChecksum(u.New)
		base, haveBase := p.localBase(ctx, u.Old)
		var err error
		switch {
		case haveBase:
			err = p.repo.Diff(ctx, newc, base, list, store.FileSet(pl.files))
		case pl.full:
			err = p.repo.Walk(ctx, newc, list, store.FileSet(pl.files))
		default:
			err = p.repo.WalkMeta(ctx, newc, list)
			topDown = append(topDown, newc)
		}
		if err != nil {
			return fail(u.Name, err)
		}
		if err := p.parents(ctx, u, newc, func(n object.Name) error { return pl.add(ctx, n) }); err != nil {
			return err
		}
	}
	if len(topDown) > 0 {
		if err := pl.fence(ctx); err != nil {
			return err
		}
		files := func(n object.Name) error {
			if n.Type != object.File {
				return nil // listed with the metadata
			}
			return pl.add(ctx, n)
		}
		for _, c := range topDown {
			if err := p.repo.WalkInto(ctx, c, pl.lacking, files, store.FileSet(pl.files)); err != nil {
				return fail(c.String(), err)
			}
		}
	}
	return pl.flush(ctx)
}

// lacking reports whether the daemon answered that it needs dirtree sum.
func (pl *pipeline) lacking(sum object.Checksum) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.lacks[sum]
}

// add lists n unless it is metadata listed already (files come deduplicated
// by the walk's FileSet).
func (pl *pipeline) add(ctx context.Context, n object.Name) error {
	if n.Type != object.File {
		if _, ok := pl.meta[n]; ok {
			return nil
		}
		pl.meta[n] = struct{}{}
	}
	return pl.push(ctx, n)
}

// push puts n in the current batch, and the batch on its way when full.
func (pl *pipeline) push(ctx context.Context, n object.Name) error {
	if pl.cur == nil {
		pl.cur = make([]object.Name, 0, pl.size)
	}
	pl.cur = append(pl.cur, n)
	if len(pl.cur) < pl.size {
		return nil
	}
	return pl.flush(ctx)
}

// flush puts the current batch, if any, on its way.
func (pl *pipeline) flush(ctx context.Context) error {
	if len(pl.cur) == 0 {
		return nil
	}
	return pl.send(ctx, batch{names: pl.cur})
}

// fence puts the current batch on its way and waits until it is
// negotiated: the daemon has then answered for every name listed so far.
func (pl *pipeline) fence(ctx context.Context) error {
	done := make(chan struct{})
	if err := pl.send(ctx, batch{names: pl.cur, done: done}); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (pl *pipeline) send(ctx context.Context, b batch) error {
	pl.cur = nil
	pl.hold(len(b.names))
	pl.listed += len(b.names)
	pl.p.prog.listed.Store(int64(pl.listed))
	select {
	case pl.batches <- b:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (pl *pipeline) hold(n int) {
	h := pl.held.Add(int64(n))
	for {
		m := pl.peak.Load()
		if h <= m || pl.peak.CompareAndSwap(m, h) {
			return
		}
	}
}

func (pl *pipeline) release(n int) { pl.held.Add(-int64(n)) }

// negotiator asks the daemon which names of each batch it needs and hands
// the work of sending them to the feeder, largest first within the batch.
func (pl *pipeline) negotiator(ctx context.Context, doubt bool) error {
	for b := range pl.batches {
		t := time.Now()
		needed, err := pl.negotiate(ctx, b.names)
		pl.negotiating += time.Since(t)
		if err != nil {
			return err
		}
		pl.mu.Lock()
		for _, n := range needed {
			if n.Type == object.DirTree {
				pl.lacks[n.Sum] = true
			}
		}
		pl.mu.Unlock()
		if b.done != nil {
			close(b.done)
		}
		skipped := len(b.names) - len(needed)
		if doubt {
			skipped = 0 // met before, or already held
			pl.offered += len(needed)
		} else {
			pl.offered += len(b.names)
		}
		pl.needed += len(needed)
		pl.release(len(b.names) - len(needed))
		items, bytes, err := pl.p.works(needed, pl.live)
		if err != nil {
			return err
		}
		pl.p.prog.plan(len(needed), bytes, skipped)
		if len(items) == 0 {
			continue
		}
		select {
		case pl.ready <- items:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	if pl.p.sid == "" { // nothing was listed: the session still carries the refs
		_, err := pl.negotiate(ctx, nil)
		return err
	}
	return nil
}

// negotiate asks the daemon which of names it needs: with the session's
// creation when the push has none yet. The round's first negotiation lets
// the session's packs in progress finish (those of an earlier round, or of
// a run this one resumes); the later ones do not wait for the packs in
// flight, which hold the names of earlier batches only.
func (pl *pipeline) negotiate(ctx context.Context, names []object.Name) ([]object.Name, error) {
	p := pl.p
	noWait := pl.negotiated
	pl.negotiated = true
	if p.sid != "" {
		return p.negotiate(ctx, names, noWait)
	}
	req := api.SessionRequest{Refs: pl.updates, Force: p.opts.Force, Objects: make([]string, len(names))}
	for i, n := range names {
		req.Objects[i] = n.String()
	}
	var sess api.Session
	if err := p.c.Retry(ctx, p.opts.RetryTimeout, func() error {
		var err error
		sess, err = p.c.CreateSession(ctx, req)
		return err
	}); err != nil {
		return nil, err
	}
	p.sid, p.res.SessionID, p.res.SessionResumed = sess.ID, sess.ID, sess.Verified > 0
	p.log.Debug("session", "id", sess.ID, "verified", sess.Verified)
	pl.sess = sess
	for _, u := range sess.Uploads {
		pl.live[u.Object] = u.URL
	}
	if sess.Negotiated == len(names) && len(names) > 0 {
		return parseNames(sess.Needed)
	}
	// A daemon that does not negotiate with the creation.
	return p.negotiate(ctx, names, false)
}

// works is the work of sending needed: objects over Options.PackMax (or
// over smallObject with a partial upload to resume, live) as uploads of
// their own, the rest in packs, the largest first so that small packs
// fill the streams at the end; and their bytes. It sorts needed by name:
// a pack's objects then lie close together in the daemon's journal, which
// records the pack's verdicts in fewer page writes than for names spread
// over its whole key space.
func (p *pusher) works(needed []object.Name, live map[string]string) ([]work, int64, error) {
	slices.SortFunc(needed, object.Name.Compare)
	var total int64
	var items []work
	var small []object.Name
	var smallSizes []int64
	for _, n := range needed {
		s, err := p.size(n)
		if err != nil {
			return nil, 0, err
		}
		total += s
		if s > p.opts.PackMax || (s > smallObject && live[n.String()] != "") {
			items = append(items, work{obj: n, bytes: s})
		} else {
			small, smallSizes = append(small, n), append(smallSizes, s)
		}
	}
	items = append(items, packWork(small, smallSizes, p.packTarget)...)
	slices.SortStableFunc(items, func(a, b work) int { return cmp.Compare(b.bytes, a.bytes) })
	return items, total, nil
}

// fileFilter is a Bloom filter of file object names, of fixed size: a
// name it has not met is new for sure; one it may have met is reported to
// onDoubt. Its hashes are words of the object's checksum, which is
// uniformly random already. Its bits lie outside Go's heap (an anonymous
// mapping, when the system gives one): they do not raise the heap's
// collection target, and only the pages a push touches are resident.
type fileFilter struct {
	bits    []byte
	mapped  bool
	onDoubt func(object.Name)
	always  bool // every name is in doubt (tests)
}

const (
	filterBits   = 1 << 26 // 8 MiB
	filterHashes = 8       // at a million names, about one false positive in 40 million
)

func newFileFilter() *fileFilter {
	b, err := syscall.Mmap(-1, 0, filterBits/8, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return &fileFilter{bits: make([]byte, filterBits/8)}
	}
	return &fileFilter{bits: b, mapped: true}
}

// Add implements store.NameSet.
func (f *fileFilter) Add(n object.Name) bool {
	seen := true
	for i := 0; i < filterHashes; i++ {
		h := binary.LittleEndian.Uint32(n.Sum[4*i:]) % filterBits
		w, b := h/8, byte(1)<<(h%8)
		if f.bits[w]&b == 0 {
			seen = false
			f.bits[w] |= b
		}
	}
	if seen || f.always {
		if f.onDoubt != nil {
			f.onDoubt(n)
		}
		return false
	}
	return true
}

// close gives the filter's memory back.
func (f *fileFilter) close() {
	if f.mapped {
		syscall.Munmap(f.bits)
	}
	f.bits, f.mapped = nil, false
}

// errNotOpen turns the daemon's answer that the session is not open any
// more into client.ErrSessionNotOpen.
func errNotOpen(err error) error {
	var he *client.HTTPError
	if errors.As(err, &he) && he.Status == 409 && he.Body.Code == api.CodeSessionNotOpen {
		return client.ErrSessionNotOpen
	}
	return err
}
