package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ostree-upload/ostree-upload/store/object"
)

// MakeCheckRepo creates at dir (which must not exist) an archive repository
// in which the new commit of each update is complete, so that programs
// that read commits (ostree ls, checkout, show, fsck; flatpak's tools) can
// judge a publish before it happens, without touching r. Its config names
// r as its parent (core.parent: libostree reads there what the repository
// lacks); it holds hard links to the objects of the new commits that r
// lacks, taken from spool (copies where the kernel refuses a link), the
// detached metadata given for each commit (none for a commit it does not
// name), and refs/heads/REF at each new commit. It holds what a Publish of
// updates from spool would add to r, and nothing of r's own refs.
//
// The caller keeps spool's objects from being removed while it runs (the
// links then keep them alive) and deletes dir when done, also after an
// error. A commit incomplete in r and spool together gives a
// *MissingError.
func (r *Repo) MakeCheckRepo(ctx context.Context, dir string, spool *Repo, updates []RefUpdate, detached map[object.Checksum][]byte) error {
	for _, u := range updates {
		if err := ValidateRef(u.Ref); err != nil {
			return err
		}
	}
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("check repo %s: already exists", dir)
	}
	c, err := Create(ctx, dir, ModeArchive)
	if err != nil {
		return fmt.Errorf("check repo: %w", err)
	}
	c.Close()
	if err := setParent(filepath.Join(dir, "config"), r.path); err != nil {
		return fmt.Errorf("check repo: %w", err)
	}
	both := layers{r, spool}
	for _, u := range updates {
		b, err := r.base(ctx, u)
		if err != nil {
			return fmt.Errorf("check repo: %s: %w", u.Ref, err)
		}
		link := func(n object.Name) error {
			if n.Type == object.CommitMeta {
				return nil // the given one, below
			}
			if has, err := r.HasObject(ctx, n); err != nil || has {
				return err
			}
			err := fmt.Errorf("link %s: %w", n, ErrNotFound) // still being received
			spool.settled(n, func() { err = linkObject(spool.ObjectPath(n), objectPathIn(dir, n), n) })
			return err
		}
		if err := missing(ctx, both, u.New, b, link); err != nil {
			return fmt.Errorf("check repo: %s: %w", u.Ref, err)
		}
	}
	for sum, meta := range detached {
		if len(meta) == 0 {
			continue
		}
		if err := object.CheckCommitMeta(meta); err != nil {
			return fmt.Errorf("check repo: detached metadata of %s: %w", sum, err)
		}
		if err := os.WriteFile(objectPathIn(dir, object.Name{Sum: sum, Type: object.CommitMeta}), meta, 0o644); err != nil {
			return fmt.Errorf("check repo: %w", err)
		}
	}
	for _, u := range updates {
		path := filepath.Join(dir, "refs", "heads", filepath.FromSlash(u.Ref))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("check repo: ref %s: %w", u.Ref, err)
		}
		if err := os.WriteFile(path, []byte(u.New.String()+"\n"), 0o644); err != nil {
			return fmt.Errorf("check repo: ref %s: %w", u.Ref, err)
		}
	}
	return nil
}

// objectPathIn is where the repository at dir keeps object n.
func objectPathIn(dir string, n object.Name) string {
	return filepath.Join(dir, filepath.FromSlash(n.RelPath()))
}

// linkObject hard-links object n's file src to dst, or copies it where the
// kernel refuses the link. A file already at dst is left as it is.
func linkObject(src, dst string, n object.Name) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	err := os.Link(src, dst)
	if errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EMLINK) {
		err = copyFile(src, dst)
	}
	switch {
	case err == nil, errors.Is(err, os.ErrExist):
		return nil
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("link %s: %w", n, ErrNotFound)
	}
	return fmt.Errorf("link %s: %w", n, err)
}

// setParent adds core.parent = parent to the repository config file at
// path, which libostree's init wrote with its [core] group first.
func setParent(path, parent string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	text := string(b)
	rest, ok := strings.CutPrefix(text, "[core]\n")
	if !ok {
		return fmt.Errorf("%s does not start with its [core] group", path)
	}
	text = "[core]\nparent=" + keyFileValue(parent) + "\n" + rest
	return os.WriteFile(path, []byte(text), 0o644)
}

// keyFileValue escapes s as a GLib key file value.
func keyFileValue(s string) string {
	var b strings.Builder
	for i, c := range s {
		switch {
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == ' ' && i == 0:
			b.WriteString(`\s`)
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}
