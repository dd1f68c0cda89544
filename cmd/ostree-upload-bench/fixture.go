package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// fixtureVersion changes whenever the generator changes what it makes, so
// that stale caches are not reused.
const fixtureVersion = 2

// Commit timestamps of the two generated commits.
const (
	timestampA = 1_700_000_000
	timestampB = timestampA + 3600
)

// fixture is a generated pair of commits: A, and B on top of it with about 1%
// of the files changed. Build holds both; CI holds only B, as a fresh CI
// machine that built B without having A would.
type fixture struct {
	Name        string      `json:"name"`
	Seed        uint64      `json:"seed"`
	Ref         string      `json:"ref"`
	A           string      `json:"commit_a"`
	B           string      `json:"commit_b"`
	Files       int         `json:"files"`         // entries of tree B
	Changed     int         `json:"changed"`       // entries modified, added or removed from A to B
	BuildRepo   objectStats `json:"build_repo"`    // A and B
	CommitB     objectStats `json:"commit_b_only"` // the objects of B alone
	GenSeconds  float64     `json:"generate_seconds"`
	Dir         string      `json:"dir"`
	FixtureVers int         `json:"version"`
}

func (f *fixture) build() string { return filepath.Join(f.Dir, "build") }
func (f *fixture) ci() string    { return filepath.Join(f.Dir, "ci") }

// bareUser returns a bare-user repository holding B at Ref, made from the
// build repository the first time it is asked for.
func (f *fixture) bareUser(ctx context.Context) (string, error) {
	dir := filepath.Join(f.Dir, "bare-user")
	done := filepath.Join(dir, ".complete")
	if _, err := os.Stat(done); err == nil {
		return dir, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if _, err := ostree(ctx, dir, "init", "--mode=bare-user"); err != nil {
		return "", err
	}
	if err := copyCommit(ctx, dir, f.build(), f.B, f.Ref); err != nil {
		return "", fmt.Errorf("bare-user copy of the build repository: %w", err)
	}
	return dir, os.WriteFile(done, nil, 0o644)
}

const markerName = "fixture.json"

// loadOrMakeFixture returns the cached fixture of shape s and seed below
// work, generating it first when its completion marker is missing.
func loadOrMakeFixture(ctx context.Context, work string, s shape, seed uint64, ref string) (*fixture, error) {
	dir := filepath.Join(work, "fixtures", fmt.Sprintf("%s-seed%d-v%d", s.Name, seed, fixtureVersion))
	if f, err := readFixture(dir); err == nil && f.Ref == ref {
		slog.Info("fixture cached", "name", s.Name, "dir", dir)
		return f, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("remove incomplete fixture: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	slog.Info("generating fixture", "name", s.Name, "seed", seed, "dir", dir)
	f, err := makeFixture(ctx, dir, s, seed, ref)
	if err != nil {
		return nil, fmt.Errorf("generate fixture %s: %w", s.Name, err)
	}
	return f, nil
}

func readFixture(dir string) (*fixture, error) {
	b, err := os.ReadFile(filepath.Join(dir, markerName))
	if err != nil {
		return nil, err
	}
	var f fixture
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if f.FixtureVers != fixtureVersion || f.A == "" || f.B == "" {
		return nil, errors.New("stale fixture")
	}
	f.Dir = dir
	return &f, nil
}

func makeFixture(ctx context.Context, dir string, s shape, seed uint64, ref string) (*fixture, error) {
	start := time.Now()
	f := &fixture{Name: s.Name, Seed: seed, Ref: ref, Dir: dir, FixtureVers: fixtureVersion}
	tree := filepath.Join(dir, "tree")
	planA := planTree(s, seed)
	if err := writeTree(ctx, tree, planA.Dirs, planA.Files); err != nil {
		return nil, err
	}
	if err := initArchive(ctx, f.build()); err != nil {
		return nil, err
	}
	var err error
	if f.A, err = commitTree(ctx, f.build(), ref, tree, "A", timestampA); err != nil {
		return nil, err
	}
	planB, changes := planChange(planA, seed+1, 1)
	f.Files, f.Changed = len(planB.Files), len(changes)
	var rewrite []fileSpec
	for _, c := range changes {
		if c.Change == "remove" {
			if err := os.Remove(filepath.Join(tree, filepath.FromSlash(c.Path))); err != nil {
				return nil, err
			}
			continue
		}
		rewrite = append(rewrite, c)
	}
	if err := writeTree(ctx, tree, nil, rewrite); err != nil {
		return nil, err
	}
	if f.B, err = commitTree(ctx, f.build(), ref, tree, "B", timestampB); err != nil {
		return nil, err
	}
	if parent, err := ostree(ctx, f.build(), "rev-parse", f.B+"^"); err != nil || parent != f.A {
		return nil, fmt.Errorf("commit B's parent is %q, want A %s (%v)", parent, f.A, err)
	}
	if err := os.RemoveAll(tree); err != nil {
		return nil, err
	}
	if err := copyCommit(ctx, f.ci(), f.build(), f.B, ref); err != nil {
		return nil, fmt.Errorf("make the repository holding only B: %w", err)
	}
	if f.BuildRepo, err = countObjects(f.build()); err != nil {
		return nil, err
	}
	if f.CommitB, err = countObjects(f.ci()); err != nil {
		return nil, err
	}
	f.GenSeconds = time.Since(start).Seconds()
	return f, writeMarker(dir, f)
}

func writeMarker(dir string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, markerName+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, markerName))
}

// commitTree commits the directory tree on ref of the archive repo and
// returns the new commit's checksum.
//
// On a Flatpak ref (app/…, runtime/…) the commit carries the metadata
// `flatpak build-export` writes (xa.metadata, xa.installed-size,
// xa.download-size), as every commit that flatpak-builder makes does:
// without the sizes, `flatpak build-update-repo` reads every file of the
// commit at each publish to compute them.
func commitTree(ctx context.Context, repo, ref, tree, subject string, timestamp int64) (string, error) {
	slog.Info("ostree commit", "repo", repo, "subject", subject)
	args := []string{"--branch=" + ref, "--tree=dir=" + tree, "--subject=" + subject,
		fmt.Sprintf("--timestamp=@%d", timestamp), "--owner-uid=0", "--owner-gid=0", "--no-xattrs", "--fsync=false"}
	if kind, name, ok := flatpakRef(ref); ok {
		size, err := treeBytes(tree)
		if err != nil {
			return "", err
		}
		// flatpak stores the sizes big-endian in a native uint64.
		be := bits.ReverseBytes64(uint64(size))
		args = append(args,
			fmt.Sprintf("--add-metadata-string=xa.metadata=[%s]\nname=%s\n", map[string]string{"app": "Application", "runtime": "Runtime"}[kind], name),
			fmt.Sprintf("--add-metadata=xa.installed-size=uint64 %d", be),
			fmt.Sprintf("--add-metadata=xa.download-size=uint64 %d", be))
	}
	return ostree(ctx, repo, "commit", args...)
}

// flatpakRef splits a Flatpak ref (app/NAME/ARCH/BRANCH or runtime/…).
func flatpakRef(ref string) (kind, name string, ok bool) {
	parts := strings.Split(ref, "/")
	if len(parts) != 4 || parts[0] != "app" && parts[0] != "runtime" {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// treeBytes is the size of the regular files below root.
func treeBytes(root string) (int64, error) {
	var total int64
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			total += fi.Size()
		}
		return err
	})
	return total, err
}

// writeTree creates dirs and files below root with one writer per CPU.
func writeTree(ctx context.Context, root string, dirs []string, files []fileSpec) error {
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, filepath.FromSlash(d)), 0o755); err != nil {
			return err
		}
	}
	return parallel(ctx, runtime.NumCPU(), len(files), func(i int) error { return writeEntry(root, files[i]) })
}

// parallel runs fn(0) … fn(n-1) on workers goroutines and returns the first
// error, after which no new call starts; ctx ends it likewise.
func parallel(ctx context.Context, workers, n int, fn func(i int) error) error {
	work := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range work {
				if err := fn(i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	var err error
feed:
	for i := range n {
		select {
		case work <- i:
		case err = <-errs:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

func (f *fixture) logSummary() {
	slog.Info("fixture", "name", f.Name, "files", f.Files, "changed", f.Changed,
		"build_objects", f.BuildRepo.Objects, "build_disk", humanBytes(f.BuildRepo.DiskBytes),
		"commit_b_objects", f.CommitB.Objects, "commit_b_bytes", humanBytes(f.CommitB.Bytes),
		"commit_b_disk", humanBytes(f.CommitB.DiskBytes))
}
