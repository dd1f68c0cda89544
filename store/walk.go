package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/ostree-upload/ostree-upload/store/object"
)

// source is where a traversal reads metadata: one repo, or several layered.
type source interface {
	ReadCommit(ctx context.Context, sum object.Checksum) (*object.CommitInfo, error)
	ReadTree(ctx context.Context, sum object.Checksum) (*object.Tree, error)
	HasObject(ctx context.Context, name object.Name) (bool, error)
}

// layers reads from the first repo that has an object.
type layers []*Repo

func firstOf[T any](ctx context.Context, l layers, read func(*Repo) (T, error)) (T, error) {
	var zero T
	for _, r := range l {
		v, err := read(r)
		if err == nil || !errors.Is(err, ErrNotFound) {
			return v, err
		}
	}
	return zero, ErrNotFound
}

func (l layers) ReadCommit(ctx context.Context, sum object.Checksum) (*object.CommitInfo, error) {
	return firstOf(ctx, l, func(r *Repo) (*object.CommitInfo, error) { return r.ReadCommit(ctx, sum) })
}

func (l layers) ReadTree(ctx context.Context, sum object.Checksum) (*object.Tree, error) {
	return firstOf(ctx, l, func(r *Repo) (*object.Tree, error) { return r.ReadTree(ctx, sum) })
}

func (l layers) HasObject(ctx context.Context, name object.Name) (bool, error) {
	for _, r := range l {
		if ok, err := r.HasObject(ctx, name); ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

type objectSet map[object.Name]struct{}

// add inserts n and reports whether it was new.
func (s objectSet) add(n object.Name) bool {
	if _, ok := s[n]; ok {
		return false
	}
	s[n] = struct{}{}
	return true
}

// NameSet decides which file objects a walk emits (see FileSet). Add
// records n and reports whether n is new: the walk emits n only then. A
// set may report false for a name it has not met (an approximate set, such
// as a Bloom filter): the walk then leaves that name to the set's owner.
type NameSet interface {
	Add(n object.Name) bool
}

// WalkOption changes how Walk, WalkInto and Diff go.
type WalkOption func(*traversal)

// FileSet makes a walk ask set which file objects to emit, instead of
// keeping an exact set of its own of every file it emitted (the default).
// Metadata objects (commits, dirtrees, dirmetas) keep the walk's exact set:
// a walk holds in memory at most its metadata then, not its files.
func FileSet(set NameSet) WalkOption {
	return func(t *traversal) { t.files = set }
}

func (t *traversal) with(opts []WalkOption) *traversal {
	for _, o := range opts {
		o(t)
	}
	return t
}

// newFile reports whether the walk meets file object n for the first time:
// by t.files when set, else by seen.
func (t *traversal) newFile(seen objectSet, n object.Name) bool {
	if t.files != nil {
		return t.files.Add(n)
	}
	return seen.add(n)
}

// ErrTreeLimit reports a commit whose directory tree is beyond what the
// store walks: deeper than MaxTreeDepth levels, or with more than
// maxPendingDirs directories waiting to be walked at once.
var ErrTreeLimit = errors.New("directory tree over the limits")

// maxPendingDirs bounds the directories a walk holds waiting at once: the
// sum, along one path from the root, of the subdirectories not walked yet.
// Real trees stay far below it; it keeps a hostile tree (each level a
// dirtree full of subdirectories) from costing gigabytes.
const maxPendingDirs = 1 << 20

// traversal walks commits through a source. When a metadata object cannot be
// read, onMissing (if set) is told and its subtree skipped; otherwise the
// walk fails. Walks keep their work on a stack of their own, never on the
// goroutine's: only the directories waiting to be walked stay in memory,
// not the trees above them.
type traversal struct {
	src       source
	onMissing func(object.Name) error
	noLimit   bool // old side of a diff: what production holds, however deep
	metaOnly  bool // emit no file objects
	// files, if set, decides which file objects are new (see FileSet);
	// otherwise the walk's own exact set does.
	files NameSet
	// enter, if set, says whether to walk below a dirtree (after emitting
	// it and its dirmeta); a tree not entered counts as a leaf.
	enter func(object.Checksum) bool
	// heights holds, for each dirtree walked to its end, how many levels
	// of directories it holds below itself: a tree met again deeper down
	// is checked against MaxTreeDepth without being walked again.
	heights map[object.Checksum]int
}

func (t *traversal) readTree(ctx context.Context, sum object.Checksum) (*object.Tree, error) {
	tree, err := t.src.ReadTree(ctx, sum)
	if err != nil && errors.Is(err, ErrNotFound) && t.onMissing != nil {
		return nil, t.onMissing(object.Name{Sum: sum, Type: object.DirTree})
	}
	return tree, err
}

func (t *traversal) readCommit(ctx context.Context, sum object.Checksum) (*object.CommitInfo, error) {
	c, err := t.src.ReadCommit(ctx, sum)
	if err != nil && errors.Is(err, ErrNotFound) && t.onMissing != nil {
		return nil, t.onMissing(object.Name{Sum: sum, Type: object.Commit})
	}
	return c, err
}

// commitObjects emits a commit and its detached metadata if present.
func (t *traversal) commitObjects(ctx context.Context, sum object.Checksum, seen objectSet, emit func(object.Name) error) error {
	if !seen.add(object.Name{Sum: sum, Type: object.Commit}) {
		return nil
	}
	if err := emit(object.Name{Sum: sum, Type: object.Commit}); err != nil {
		return err
	}
	cm := object.Name{Sum: sum, Type: object.CommitMeta}
	has, err := t.src.HasObject(ctx, cm)
	if err != nil || !has || !seen.add(cm) {
		return err
	}
	return emit(cm)
}

func (t *traversal) walkCommit(ctx context.Context, sum object.Checksum, seen objectSet, emit func(object.Name) error) error {
	c, err := t.readCommit(ctx, sum)
	if c == nil {
		return err
	}
	if err := t.commitObjects(ctx, sum, seen, emit); err != nil {
		return err
	}
	_, err = t.walkDir(ctx, c.RootTree, c.RootMeta, 0, seen, emit)
	return err
}

// dirFrame is a directory on a walk's stack: waiting to be entered, or
// (exit) entered, its subdirectories above it on the stack.
type dirFrame struct {
	tree, meta object.Checksum
	depth      int  // levels below the root of the walk's commit
	parent     int  // stack index of the parent's exit frame; -1 for the first
	exit       bool // the directory's subdirectories are all above
	below      int  // exit frames: levels of directories below, so far
}

func (t *traversal) tooDeep(depth int) error {
	if t.noLimit || depth <= object.MaxTreeDepth {
		return nil
	}
	return fmt.Errorf("%w: directories nest more than %d levels deep", ErrTreeLimit, object.MaxTreeDepth)
}

// walkDir emits a directory's dirmeta, dirtree and everything below it that
// seen does not hold yet, in preorder (parents before their children, each
// directory's files before its subdirectories), and returns how many levels
// of directories it holds below itself. depth is the directory's own depth
// in its commit; no directory may be deeper than MaxTreeDepth.
func (t *traversal) walkDir(ctx context.Context, tree, meta object.Checksum, depth int, seen objectSet, emit func(object.Name) error) (int, error) {
	if t.heights == nil {
		t.heights = map[object.Checksum]int{}
	}
	stack := []dirFrame{{tree: tree, meta: meta, depth: depth, parent: -1}}
	top := -1 // the height of the first directory
	done := func(parent, h int) {
		if parent < 0 {
			top = h
		} else {
			stack[parent].below = max(stack[parent].below, h+1)
		}
	}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if f.exit {
			t.heights[f.tree] = f.below
			done(f.parent, f.below)
			continue
		}
		if err := t.tooDeep(f.depth); err != nil {
			return 0, err
		}
		if m := (object.Name{Sum: f.meta, Type: object.DirMeta}); seen.add(m) {
			if err := emit(m); err != nil {
				return 0, err
			}
		}
		if h, ok := t.heights[f.tree]; ok {
			if err := t.tooDeep(f.depth + h); err != nil {
				return 0, err
			}
			done(f.parent, h)
			continue
		}
		dt := object.Name{Sum: f.tree, Type: object.DirTree}
		if seen.add(dt) {
			if err := emit(dt); err != nil {
				return 0, err
			}
		}
		if t.enter != nil && !t.enter(f.tree) {
			done(f.parent, 0)
			continue
		}
		tr, err := t.readTree(ctx, f.tree)
		if tr == nil {
			if err != nil {
				return 0, err
			}
			t.heights[f.tree] = 0 // missing: reported, nothing below
			done(f.parent, 0)
			continue
		}
		for _, file := range tr.Files {
			if n := (object.Name{Sum: file.Sum, Type: object.File}); !t.metaOnly && t.newFile(seen, n) {
				if err := emit(n); err != nil {
					return 0, err
				}
			}
		}
		stack = append(stack, dirFrame{tree: f.tree, depth: f.depth, parent: f.parent, exit: true})
		exit := len(stack) - 1
		pushed := make(map[object.Checksum]bool, len(tr.Dirs))
		for i := len(tr.Dirs) - 1; i >= 0; i-- {
			d := tr.Dirs[i]
			if pushed[d.Tree] {
				// A twin of a subdirectory pushed already: the same levels
				// below, at the same depth; only its dirmeta is its own.
				if m := (object.Name{Sum: d.Meta, Type: object.DirMeta}); seen.add(m) {
					if err := emit(m); err != nil {
						return 0, err
					}
				}
				continue
			}
			pushed[d.Tree] = true
			stack = append(stack, dirFrame{tree: d.Tree, meta: d.Meta, depth: f.depth + 1, parent: exit})
		}
		if len(stack) > maxPendingDirs {
			return 0, fmt.Errorf("%w: more than %d directories waiting to be walked", ErrTreeLimit, maxPendingDirs)
		}
	}
	return top, nil
}

// diff emits the objects reachable from newc that its side-by-side walk
// against oldc does not find on the old side. Subtrees whose (dirtree,
// dirmeta) pair is equal at the same path are skipped on both sides, so the
// cost follows the size of the change. Objects of the changed parts are
// subtracted from each other, so renames and moves cost nothing; an object
// that the new side adds to a changed part but that the old commit held only
// inside an unchanged subtree is still emitted (present on both sides,
// harmless to offer). The new side is held to MaxTreeDepth where it is
// walked; the old side, already published, is not.
func (t *traversal) diff(ctx context.Context, newc, oldc object.Checksum, emit func(object.Name) error) error {
	nc, err := t.readCommit(ctx, newc)
	if nc == nil {
		return err
	}
	oc, err := t.src.ReadCommit(ctx, oldc)
	if err != nil {
		return fmt.Errorf("diff base: %w", err)
	}
	newSide, oldSide := objectSet{}, objectSet{}
	var order []object.Name
	collect := func(n object.Name) error { order = append(order, n); return nil }
	oldSide.add(object.Name{Sum: oldc, Type: object.Commit})
	if err := t.commitObjects(ctx, newc, newSide, collect); err != nil {
		return err
	}
	d := &differ{t: t, old: &traversal{src: t.src, noLimit: true}, newSide: newSide, oldSide: oldSide, collect: collect}
	if err := d.run(ctx, pair{nc.RootTree, nc.RootMeta, oc.RootTree, oc.RootMeta, 0}); err != nil {
		return err
	}
	for _, n := range order {
		if _, ok := oldSide[n]; !ok {
			if err := emit(n); err != nil {
				return err
			}
		}
	}
	return nil
}

type differ struct {
	t, old           *traversal
	newSide, oldSide objectSet
	collect          func(object.Name) error
}

// pair is a directory present at the same path on both sides of a diff.
type pair struct {
	nt, nm, ot, om object.Checksum
	depth          int
}

func ignore(object.Name) error { return nil }

// run compares pairs of directories, from a stack of its own.
func (d *differ) run(ctx context.Context, first pair) error {
	stack := []pair{first}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		more, err := d.pair(ctx, p)
		if err != nil {
			return err
		}
		stack = append(stack, more...)
		if len(stack) > maxPendingDirs {
			return fmt.Errorf("%w: more than %d directories waiting to be compared", ErrTreeLimit, maxPendingDirs)
		}
	}
	return nil
}

// pair compares one pair of directories and returns the pairs of
// subdirectories still to compare. Both trees' entries are sorted by name
// (libostree writes them so, and the verifier requires it), so one pass
// over each finds the entries of both; an old tree out of order only makes
// the diff larger, never wrong.
func (d *differ) pair(ctx context.Context, p pair) ([]pair, error) {
	if p.nt == p.ot && p.nm == p.om {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := d.t.tooDeep(p.depth); err != nil {
		return nil, err
	}
	if p.nm != p.om {
		if n := (object.Name{Sum: p.nm, Type: object.DirMeta}); d.newSide.add(n) {
			d.collect(n)
		}
		d.oldSide.add(object.Name{Sum: p.om, Type: object.DirMeta})
	}
	if p.nt == p.ot {
		return nil, nil
	}
	ntn := object.Name{Sum: p.nt, Type: object.DirTree}
	if !d.newSide.add(ntn) {
		// This new tree was already compared elsewhere, maybe at a
		// shallower place: only its depth here is still to check.
		again := traversal{src: d.t.src, onMissing: func(object.Name) error { return nil }, heights: d.t.heights}
		_, err := again.walkDir(ctx, p.nt, p.nm, p.depth, objectSet{}, ignore)
		return nil, err
	}
	d.collect(ntn)
	d.oldSide.add(object.Name{Sum: p.ot, Type: object.DirTree})
	ntree, err := d.t.readTree(ctx, p.nt)
	if ntree == nil {
		return nil, err
	}
	otree, err := d.t.src.ReadTree(ctx, p.ot)
	if err != nil {
		return nil, fmt.Errorf("diff base: %w", err)
	}
	nf, of := ntree.Files, otree.Files
	for i, j := 0, 0; i < len(nf) || j < len(of); {
		switch {
		case j == len(of) || i < len(nf) && nf[i].Name < of[j].Name:
			if n := (object.Name{Sum: nf[i].Sum, Type: object.File}); d.t.newFile(d.newSide, n) {
				d.collect(n)
			}
			i++
		case i == len(nf) || nf[i].Name > of[j].Name:
			d.oldSide.add(object.Name{Sum: of[j].Sum, Type: object.File})
			j++
		default:
			if nf[i].Sum != of[j].Sum {
				if n := (object.Name{Sum: nf[i].Sum, Type: object.File}); d.t.newFile(d.newSide, n) {
					d.collect(n)
				}
				d.oldSide.add(object.Name{Sum: of[j].Sum, Type: object.File})
			}
			i++
			j++
		}
	}
	var more []pair
	nd, od := ntree.Dirs, otree.Dirs
	for i, j := 0, 0; i < len(nd) || j < len(od); {
		switch {
		case j == len(od) || i < len(nd) && nd[i].Name < od[j].Name:
			if _, err := d.t.walkDir(ctx, nd[i].Tree, nd[i].Meta, p.depth+1, d.newSide, d.collect); err != nil {
				return nil, err
			}
			i++
		case i == len(nd) || nd[i].Name > od[j].Name:
			if _, err := d.old.walkDir(ctx, od[j].Tree, od[j].Meta, 0, d.oldSide, ignore); err != nil {
				return nil, fmt.Errorf("diff base: %w", err)
			}
			j++
		default:
			more = append(more, pair{nd[i].Tree, nd[i].Meta, od[j].Tree, od[j].Meta, p.depth + 1})
			i++
			j++
		}
	}
	// Popped last first: keep the order of the names.
	slices.Reverse(more)
	return more, nil
}

// Walk calls fn once for every object reachable from commit: the commit, its
// detached metadata if present, then dirmetas, dirtrees and files top-down.
// With FileSet, the files emitted are those the set reports new.
func (r *Repo) Walk(ctx context.Context, commit object.Checksum, fn func(object.Name) error, opts ...WalkOption) error {
	t := (&traversal{src: r}).with(opts)
	return t.walkCommit(ctx, commit, objectSet{}, fn)
}

// WalkMeta calls fn for the metadata objects reachable from commit: the
// commit, its detached metadata if present, and every dirtree and dirmeta,
// parents before children.
func (r *Repo) WalkMeta(ctx context.Context, commit object.Checksum, fn func(object.Name) error) error {
	t := traversal{src: r, metaOnly: true}
	return t.walkCommit(ctx, commit, objectSet{}, fn)
}

// WalkInto calls fn for the objects reachable from commit (as Walk does)
// but walks below a directory only when enter reports true for its
// dirtree, the root's included: the subtrees a receiver already holds are
// skipped whole. Every object it emits lies in a directory entered.
func (r *Repo) WalkInto(ctx context.Context, commit object.Checksum, enter func(object.Checksum) bool, fn func(object.Name) error, opts ...WalkOption) error {
	t := (&traversal{src: r, enter: enter}).with(opts)
	return t.walkCommit(ctx, commit, objectSet{}, fn)
}

// Diff calls fn for the objects reachable from newc and not from oldc, as
// found by a side-by-side walk that skips equal subtrees (see traversal.diff).
// oldc must be complete in r. With FileSet, the files of the new side are
// those the set reports new (the set meets them before the old side is
// subtracted: it may record a file that is not emitted).
func (r *Repo) Diff(ctx context.Context, newc, oldc object.Checksum, fn func(object.Name) error, opts ...WalkOption) error {
	t := (&traversal{src: r}).with(opts)
	return t.diff(ctx, newc, oldc, fn)
}

// MissingError lists objects a commit needs that are absent.
type MissingError struct {
	Commit  object.Checksum
	Missing []object.Name // the first few
	Count   int
}

const maxListedMissing = 20

func (e *MissingError) Error() string {
	return fmt.Sprintf("commit %s is incomplete: %d objects missing, first %s", e.Commit, e.Count, e.Missing[0])
}

// missing checks the closure of commit in src: every reachable object, or
// with base set every object of its diff against base (which must be
// complete in src), must be present. It returns a *MissingError otherwise.
// each, if set, is called (from checkWorkers goroutines at once) for every
// object found present. A walk of a whole commit keeps no set of its files
// (memory would grow with the commit): a file object found in several
// directories is checked, passed to each and counted as missing once per
// place. (A diff holds the changed part in memory, deduplicated, as it
// must to subtract the old side.)
func missing(ctx context.Context, src source, commit object.Checksum, base *object.Checksum, each func(object.Name) error) error {
	absent := &missingList{e: MissingError{Commit: commit}}
	t := traversal{src: src, onMissing: absent.note}
	// The walk reads the metadata; workers look the objects up, each
	// asking first the repo that held its last one (see lastFirst).
	check := func() func(context.Context, object.Name) error {
		look := src
		if l, ok := src.(layers); ok {
			look = &lastFirst{layers: l}
		}
		return func(ctx context.Context, n object.Name) error { return checkPresent(ctx, look, n, absent, each) }
	}
	if err := fanOut(ctx, checkWorkers, check, func(emit func(object.Name) error) error {
		return t.closure(ctx, commit, base, emit)
	}); err != nil {
		return err
	}
	return absent.err()
}

// checkWorkers is how many objects a closure check looks up at once.
const checkWorkers = 4

// checkPresent notes n in absent if src lacks it, and passes it to each
// (if set) otherwise. Dirtrees and commits are present iff readable: the
// walk notes a missing one itself.
func checkPresent(ctx context.Context, src source, n object.Name, absent *missingList, each func(object.Name) error) error {
	if n.Type != object.DirTree && n.Type != object.Commit {
		has, err := src.HasObject(ctx, n)
		if err != nil {
			return err
		}
		if !has {
			return absent.note(n)
		}
	}
	if each != nil {
		return each(n)
	}
	return nil
}

// closure emits every object reachable from commit, or with base set every
// object of its diff against base, through t.src.
func (t *traversal) closure(ctx context.Context, commit object.Checksum, base *object.Checksum, emit func(object.Name) error) error {
	if base != nil {
		return t.diff(ctx, commit, *base, emit)
	}
	t.files = everyFile{}
	return t.walkCommit(ctx, commit, objectSet{}, emit)
}

// missingList gathers a *MissingError, from several goroutines.
type missingList struct {
	mu sync.Mutex
	e  MissingError
}

// note counts n as missing (its error is for a traversal's onMissing).
func (m *missingList) note(n object.Name) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.e.Missing) < maxListedMissing {
		m.e.Missing = append(m.e.Missing, n)
	}
	m.e.Count++
	return nil
}

// err is the *MissingError, nil if nothing was noted.
func (m *missingList) err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e.Count == 0 {
		return nil
	}
	e := m.e
	return &e
}

// lastFirst is layers that asks first for an object the repo that held
// the one asked before: a walk meets long runs of objects from one repo
// (those a push brought in the spool, those production had), and each
// run then costs one lookup per object, not one per repo tried.
type lastFirst struct {
	layers
	first int
}

func (l *lastFirst) HasObject(ctx context.Context, name object.Name) (bool, error) {
	for i := range l.layers {
		j := (l.first + i) % len(l.layers)
		if ok, err := l.layers[j].HasObject(ctx, name); ok || err != nil {
			l.first = j
			return ok, err
		}
	}
	return false, nil
}

// everyFile is the NameSet of a walk that emits a file object wherever it
// appears: it holds nothing.
type everyFile struct{}

func (everyFile) Add(object.Name) bool { return true }

// Missing returns a *MissingError if any object reachable from commit is
// absent from every one of repos, nil if the commit is complete. With base
// set (a commit complete in repos), only its diff against base is checked.
func Missing(ctx context.Context, commit object.Checksum, base *object.Checksum, repos ...*Repo) error {
	return missing(ctx, layers(repos), commit, base, nil)
}
