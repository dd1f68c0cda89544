package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// runTool runs a local command (no network) and returns its trimmed standard
// output; the error carries the command line and the end of its stderr.
func runTool(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, tail(errb.String(), 2000))
	}
	return strings.TrimSpace(out.String()), nil
}

// ostree runs the ostree CLI on repo with the given subcommand and arguments.
func ostree(ctx context.Context, repo, sub string, args ...string) (string, error) {
	return runTool(ctx, "ostree", append([]string{sub, "--repo=" + repo}, args...)...)
}

// initArchive creates an empty archive-mode repository.
func initArchive(ctx context.Context, repo string) error {
	_, err := ostree(ctx, repo, "init", "--mode=archive")
	return err
}

// copyCommit makes dst (created if needed) hold commit rev of src, without its
// parents, at ref.
func copyCommit(ctx context.Context, dst, src, rev, ref string) error {
	if _, err := os.Stat(filepath.Join(dst, "config")); err != nil {
		if err := initArchive(ctx, dst); err != nil {
			return err
		}
	}
	if _, err := ostree(ctx, dst, "pull-local", "--depth=0", src, rev); err != nil {
		return err
	}
	_, err := ostree(ctx, dst, "refs", "--create="+ref, rev)
	return err
}

// verifyRepo checks repo with ostree fsck and that ref resolves to want.
func verifyRepo(ctx context.Context, repo, ref, want string) error {
	if _, err := ostree(ctx, repo, "fsck", "--quiet"); err != nil {
		return fmt.Errorf("verify %s: %w", repo, err)
	}
	got, err := ostree(ctx, repo, "rev-parse", ref)
	if err != nil {
		return fmt.Errorf("verify %s: %w", repo, err)
	}
	if got != want {
		return fmt.Errorf("verify %s: %s is %s, want %s", repo, ref, got, want)
	}
	return nil
}

// objectStats counts the files under repo/objects, their apparent size and
// the disk space they use (as du counts it).
type objectStats struct {
	Objects   int   `json:"objects"`
	Bytes     int64 `json:"bytes"`
	DiskBytes int64 `json:"disk_bytes"`
}

func countObjects(repo string) (objectStats, error) {
	var s objectStats
	err := filepath.WalkDir(filepath.Join(repo, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		s.Objects++
		s.Bytes += info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			s.DiskBytes += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("count objects of %s: %w", repo, err)
	}
	return s, nil
}

// tail returns at most the last n bytes of s.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
