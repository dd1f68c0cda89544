package store

import (
	"context"
	"errors"
	"fmt"
)

// source is where a traversal reads metadata: one repo, or several layered.
type source interface {
	ReadCommit(ctx context.Context, sum Checksum) (*CommitInfo, error)
	ReadTree(ctx context.Context, sum Checksum) (*Tree, error)
	HasObject(ctx context.Context, name ObjectName) (bool, error)
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

func (l layers) ReadCommit(ctx context.Context, sum Checksum) (*CommitInfo, error) {
	return firstOf(ctx, l, func(r *Repo) (*CommitInfo, error) { return r.ReadCommit(ctx, sum) })
}

func (l layers) ReadTree(ctx context.Context, sum Checksum) (*Tree, error) {
	return firstOf(ctx, l, func(r *Repo) (*Tree, error) { return r.ReadTree(ctx, sum) })
}

func (l layers) HasObject(ctx context.Context, name ObjectName) (bool, error) {
	for _, r := range l {
		if ok, err := r.HasObject(ctx, name); ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

type objectSet map[ObjectName]struct{}

// add inserts n and reports whether it was new.
func (s objectSet) add(n ObjectName) bool {
	if _, ok := s[n]; ok {
		return false
	}
	s[n] = struct{}{}
	return true
}

// traversal walks commits through a source. When a metadata object cannot be
// read, onMissing (if set) is told and its subtree skipped; otherwise the
// walk fails.
type traversal struct {
	src       source
	onMissing func(ObjectName) error
}

func (t *traversal) readTree(ctx context.Context, sum Checksum) (*Tree, error) {
	tree, err := t.src.ReadTree(ctx, sum)
	if err != nil && errors.Is(err, ErrNotFound) && t.onMissing != nil {
		return nil, t.onMissing(ObjectName{Sum: sum, Type: DirTree})
	}
	return tree, err
}

func (t *traversal) readCommit(ctx context.Context, sum Checksum) (*CommitInfo, error) {
	c, err := t.src.ReadCommit(ctx, sum)
	if err != nil && errors.Is(err, ErrNotFound) && t.onMissing != nil {
		return nil, t.onMissing(ObjectName{Sum: sum, Type: Commit})
	}
	return c, err
}

// commitObjects emits a commit and its detached metadata if present.
func (t *traversal) commitObjects(ctx context.Context, sum Checksum, seen objectSet, emit func(ObjectName) error) error {
	if !seen.add(ObjectName{Sum: sum, Type: Commit}) {
		return nil
	}
	if err := emit(ObjectName{Sum: sum, Type: Commit}); err != nil {
		return err
	}
	cm := ObjectName{Sum: sum, Type: CommitMeta}
	has, err := t.src.HasObject(ctx, cm)
	if err != nil || !has || !seen.add(cm) {
		return err
	}
	return emit(cm)
}

func (t *traversal) walkCommit(ctx context.Context, sum Checksum, seen objectSet, emit func(ObjectName) error) error {
	c, err := t.readCommit(ctx, sum)
	if c == nil {
		return err
	}
	if err := t.commitObjects(ctx, sum, seen, emit); err != nil {
		return err
	}
	return t.walkDir(ctx, c.RootTree, c.RootMeta, seen, emit)
}

// walkDir emits a directory's dirmeta, dirtree and everything below it that
// seen does not hold yet.
func (t *traversal) walkDir(ctx context.Context, tree, meta Checksum, seen objectSet, emit func(ObjectName) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if m := (ObjectName{Sum: meta, Type: DirMeta}); seen.add(m) {
		if err := emit(m); err != nil {
			return err
		}
	}
	dt := ObjectName{Sum: tree, Type: DirTree}
	if !seen.add(dt) {
		return nil
	}
	if err := emit(dt); err != nil {
		return err
	}
	tr, err := t.readTree(ctx, tree)
	if tr == nil {
		return err
	}
	for _, f := range tr.Files {
		if n := (ObjectName{Sum: f.Sum, Type: File}); seen.add(n) {
			if err := emit(n); err != nil {
				return err
			}
		}
	}
	for _, d := range tr.Dirs {
		if err := t.walkDir(ctx, d.Tree, d.Meta, seen, emit); err != nil {
			return err
		}
	}
	return nil
}

// diff emits the objects reachable from newc that its side-by-side walk
// against oldc does not find on the old side. Subtrees whose (dirtree,
// dirmeta) pair is equal at the same path are skipped on both sides, so the
// cost follows the size of the change. Objects of the changed parts are
// subtracted from each other, so renames and moves cost nothing; an object
// that the new side adds to a changed part but that the old commit held only
// inside an unchanged subtree is still emitted (present on both sides,
// harmless to offer).
func (t *traversal) diff(ctx context.Context, newc, oldc Checksum, emit func(ObjectName) error) error {
	nc, err := t.readCommit(ctx, newc)
	if nc == nil {
		return err
	}
	oc, err := t.src.ReadCommit(ctx, oldc)
	if err != nil {
		return fmt.Errorf("diff base: %w", err)
	}
	newSide, oldSide := objectSet{}, objectSet{}
	var order []ObjectName
	collect := func(n ObjectName) error { order = append(order, n); return nil }
	ignore := func(ObjectName) error { return nil }
	oldSide.add(ObjectName{Sum: oldc, Type: Commit})
	if err := t.commitObjects(ctx, newc, newSide, collect); err != nil {
		return err
	}
	d := &differ{t: t, newSide: newSide, oldSide: oldSide, collect: collect, ignore: ignore}
	if err := d.pair(ctx, nc.RootTree, nc.RootMeta, oc.RootTree, oc.RootMeta); err != nil {
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
	t                *traversal
	newSide, oldSide objectSet
	collect, ignore  func(ObjectName) error
}

func (d *differ) pair(ctx context.Context, nt, nm, ot, om Checksum) error {
	if nt == ot && nm == om {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if nm != om {
		if n := (ObjectName{Sum: nm, Type: DirMeta}); d.newSide.add(n) {
			d.collect(n)
		}
		d.oldSide.add(ObjectName{Sum: om, Type: DirMeta})
	}
	if nt == ot {
		return nil
	}
	ntn := ObjectName{Sum: nt, Type: DirTree}
	if !d.newSide.add(ntn) {
		return nil // this new tree was already compared elsewhere
	}
	d.collect(ntn)
	d.oldSide.add(ObjectName{Sum: ot, Type: DirTree})
	ntree, err := d.t.readTree(ctx, nt)
	if ntree == nil {
		return err
	}
	otree, err := d.t.src.ReadTree(ctx, ot)
	if err != nil {
		return fmt.Errorf("diff base: %w", err)
	}
	oldFiles := make(map[string]Checksum, len(otree.Files))
	for _, f := range otree.Files {
		oldFiles[f.Name] = f.Sum
	}
	for _, f := range ntree.Files {
		if s, ok := oldFiles[f.Name]; ok && s == f.Sum {
			delete(oldFiles, f.Name)
			continue
		}
		if n := (ObjectName{Sum: f.Sum, Type: File}); d.newSide.add(n) {
			d.collect(n)
		}
	}
	for _, s := range oldFiles {
		d.oldSide.add(ObjectName{Sum: s, Type: File})
	}
	oldDirs := make(map[string]TreeDir, len(otree.Dirs))
	for _, od := range otree.Dirs {
		oldDirs[od.Name] = od
	}
	for _, nd := range ntree.Dirs {
		od, ok := oldDirs[nd.Name]
		if !ok {
			if err := d.t.walkDir(ctx, nd.Tree, nd.Meta, d.newSide, d.collect); err != nil {
				return err
			}
			continue
		}
		delete(oldDirs, nd.Name)
		if err := d.pair(ctx, nd.Tree, nd.Meta, od.Tree, od.Meta); err != nil {
			return err
		}
	}
	old := traversal{src: d.t.src}
	for _, od := range oldDirs {
		if err := old.walkDir(ctx, od.Tree, od.Meta, d.oldSide, d.ignore); err != nil {
			return fmt.Errorf("diff base: %w", err)
		}
	}
	return nil
}

// Walk calls fn once for every object reachable from commit: the commit, its
// detached metadata if present, then dirmetas, dirtrees and files top-down.
func (r *Repo) Walk(ctx context.Context, commit Checksum, fn func(ObjectName) error) error {
	t := traversal{src: r}
	return t.walkCommit(ctx, commit, objectSet{}, fn)
}

// Diff calls fn for the objects reachable from newc and not from oldc, as
// found by a side-by-side walk that skips equal subtrees (see traversal.diff).
// oldc must be complete in r.
func (r *Repo) Diff(ctx context.Context, newc, oldc Checksum, fn func(ObjectName) error) error {
	t := traversal{src: r}
	return t.diff(ctx, newc, oldc, fn)
}

// MissingError lists objects a commit needs that are absent.
type MissingError struct {
	Commit  Checksum
	Missing []ObjectName // the first few
	Count   int
}

const maxListedMissing = 20

func (e *MissingError) Error() string {
	return fmt.Sprintf("commit %s is incomplete: %d objects missing, first %s", e.Commit, e.Count, e.Missing[0])
}

// missing checks the closure of commit in src: every reachable object, or
// with base set every object of its diff against base (which must be
// complete in src), must be present. It returns a *MissingError otherwise.
func missing(ctx context.Context, src source, commit Checksum, base *Checksum, each func(ObjectName) error) error {
	me := &MissingError{Commit: commit}
	note := func(n ObjectName) error {
		if len(me.Missing) < maxListedMissing {
			me.Missing = append(me.Missing, n)
		}
		me.Count++
		return nil
	}
	t := traversal{src: src, onMissing: note}
	check := func(n ObjectName) error {
		if n.Type == DirTree || n.Type == Commit {
			// Present iff readable: a missing one reaches note via onMissing.
		} else if has, err := src.HasObject(ctx, n); err != nil {
			return err
		} else if !has {
			return note(n)
		}
		if each != nil {
			return each(n)
		}
		return nil
	}
	var err error
	if base != nil {
		err = t.diff(ctx, commit, *base, check)
	} else {
		err = t.walkCommit(ctx, commit, objectSet{}, check)
	}
	if err != nil {
		return err
	}
	if me.Count > 0 {
		return me
	}
	return nil
}

// Missing returns a *MissingError if any object reachable from commit is
// absent from every one of repos, nil if the commit is complete. With base
// set (a commit complete in repos), only its diff against base is checked.
func Missing(ctx context.Context, commit Checksum, base *Checksum, repos ...*Repo) error {
	return missing(ctx, layers(repos), commit, base, nil)
}
