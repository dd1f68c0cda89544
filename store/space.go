package store

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FreeSpaceFloor is the free space, in bytes, that r's filesystem must keep,
// as libostree reads it from the repository's config: min-free-space-size
// (e.g. "500MB") if set, else min-free-space-percent of the filesystem
// (default 3). libostree enforces it only for objects it writes itself;
// callers that write into the filesystem beside it check it here.
func (r *Repo) FreeSpaceFloor() (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(r.path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", r.path, err)
	}
	size, percent := "", "3"
	f, err := os.Open(filepath.Join(r.path, "config"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	section := ""
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section != "[core]" {
			continue
		}
		switch strings.TrimSpace(k) {
		case "min-free-space-size":
			size = strings.TrimSpace(v)
		case "min-free-space-percent":
			percent = strings.TrimSpace(v)
		}
	}
	if size != "" {
		return parseSpaceSize(size)
	}
	p, err := strconv.ParseUint(percent, 10, 8)
	if err != nil || p > 99 {
		return 0, fmt.Errorf("%s: bad min-free-space-percent %q", r.path, percent)
	}
	return uint64(st.Blocks) * uint64(st.Bsize) * p / 100, nil
}

// parseSpaceSize reads libostree's sizes: a number and MB, GB or TB.
func parseSpaceSize(s string) (uint64, error) {
	units := map[string]uint64{"MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
	for u, m := range units {
		if n, ok := strings.CutSuffix(s, u); ok {
			v, err := strconv.ParseUint(strings.TrimSpace(n), 10, 64)
			if err != nil {
				break
			}
			return v * m, nil
		}
	}
	return 0, fmt.Errorf("bad min-free-space-size %q (want e.g. 500MB)", s)
}

// FreeSpace is the space left to unprivileged writers on r's filesystem.
func (r *Repo) FreeSpace() (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(r.path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", r.path, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
