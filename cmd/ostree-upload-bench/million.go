package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

const (
	millionFilesPerDir = 1000
	millionFileSize    = 40
	// millionDiskPerFile is the free space a push of tiny files needs per
	// file: the build repo, the prod repo and the daemon's state, the
	// floor's copy of the objects and the pull's repo, all kept until the
	// scenario ends.
	millionDiskPerFile = 20_000
)

// millionResult is the outcome of a push of many tiny files: the
// million-object push, or the tiny-files one, which runs ostree pull of the
// same commit beside it.
type millionResult struct {
	Files            int          `json:"files"`
	Skipped          string       `json:"skipped,omitempty"`
	Fixture          *fixture     `json:"fixture,omitempty"`
	Objects          objectStats  `json:"objects"`
	Push             *measurement `json:"push,omitempty"`
	NegotiateSeconds float64      `json:"negotiate_seconds,omitempty"` // from push --stats-json
	VerifySeconds    float64      `json:"verify_seconds,omitempty"`    // daemon start and stop, ostree fsck, rev-parse
	// Split says the push ran as push --no-publish, then sessions commit
	// (whose figures Commit holds; Push's client figures include them), to
	// measure the journal before the publish.
	Split  bool   `json:"split,omitempty"`
	Commit *usage `json:"commit,omitempty"`
	// DaemonMem is the daemon's memory sampled from /proc/PID/status while
	// it ran; Push.Server.MaxRSSKiB is its exact peak RSS.
	DaemonMem *memPeak        `json:"daemon_mem,omitempty"`
	Journal   *journalFigures `json:"journal,omitempty"`
	// Floor is the same objects created durably without ostree-upload.
	Floor *floorResult `json:"floor,omitempty"`
	// Pull is ostree pull of the same commit from nginx into an empty
	// archive repository (the tiny-files push only), and PushOverPull the
	// ratio of their wall times.
	Pull         *measurement `json:"pull,omitempty"`
	PushOverPull float64      `json:"wall_ratio_push_over_pull,omitempty"`
	// Runs holds, for the tiny-files scenario run more than once
	// (--tiny-runs), the wall times of each run; the figures above are
	// the first run's. MedianPushOverPull is the ratio of the medians.
	Runs               []tinyRun `json:"runs,omitempty"`
	MedianPushOverPull float64   `json:"median_wall_ratio_push_over_pull,omitempty"`
	// SmallPushes are another token's small pushes to the same daemon,
	// idle and during the push.
	SmallPushes *latencyFigures `json:"small_pushes,omitempty"`
}

// runMillion pushes a commit of opt.MillionFiles distinct tiny files once to
// a fresh daemon over loopback.
func (b *bench) runMillion(ctx context.Context) (*millionResult, error) {
	return b.runTinyPush(ctx, "million", b.opt.MillionFiles, false, 1)
}

// tinyRun is one run of the tiny-files scenario: its push, floor and pull.
type tinyRun struct {
	PushSeconds  float64 `json:"push_seconds"`
	FloorSeconds float64 `json:"floor_seconds"`
	PullSeconds  float64 `json:"pull_seconds"`
}

// runTiny pushes a commit of opt.TinyFiles distinct tiny files and pulls it
// with ostree pull, opt.TinyRuns times one after the other: the pull's
// time varies from run to run far more than the push's, so that one run
// of each says little about their ratio.
func (b *bench) runTiny(ctx context.Context) (*millionResult, error) {
	var first *millionResult
	for i := 0; i < b.opt.TinyRuns; i++ {
		r, err := b.runTinyPush(ctx, "tiny", b.opt.TinyFiles, true, i+1)
		if err != nil {
			return first, err
		}
		if r.Skipped != "" {
			return r, nil
		}
		if first == nil {
			first = r
		}
		first.Runs = append(first.Runs, tinyRun{PushSeconds: r.Push.Client.WallSeconds, FloorSeconds: r.Floor.WallSeconds, PullSeconds: r.Pull.Client.WallSeconds})
		slog.Info("tiny-files run", "run", i+1, "of", b.opt.TinyRuns, "push", r.Push.Client.WallSeconds, "pull", r.Pull.Client.WallSeconds)
	}
	first.MedianPushOverPull = medianRatio(first.Runs)
	return first, nil
}

// medianRatio is the median push time of runs over their median pull time
// (0 without a pull).
func medianRatio(runs []tinyRun) float64 {
	push, _, pull := runColumns(runs)
	if p := median(pull); p > 0 {
		return median(push) / p
	}
	return 0
}

// runColumns is the push, floor and pull times of runs, in run order.
func runColumns(runs []tinyRun) (push, floor, pull []float64) {
	for _, r := range runs {
		push, floor, pull = append(push, r.PushSeconds), append(floor, r.FloorSeconds), append(pull, r.PullSeconds)
	}
	return push, floor, pull
}

// runTinyPush pushes a commit of n distinct tiny files once, cold, to a
// fresh daemon over loopback, sampling the daemon's memory and measuring
// its journal (see pushProbe); then copies the build repository's objects
// durably (the floor); then, with pull, runs ostree pull of the commit into
// an empty repository. run numbers the measurements in the log and the
// results.
func (b *bench) runTinyPush(ctx context.Context, name string, n int, pull bool, run int) (*millionResult, error) {
	res := &millionResult{Files: n}
	need := max(int64(n)*millionDiskPerFile, 1<<30)
	if free, err := freeBytes(b.opt.Work); err != nil {
		return nil, err
	} else if free < need {
		res.Skipped = fmt.Sprintf("%s free in %s, %s needed", humanBytes(free), b.opt.Work, humanBytes(need))
		slog.Warn("skipping the push of tiny files", "name", name, "reason", res.Skipped)
		return res, nil
	}
	fx, err := loadOrMakeMillion(ctx, b.opt.Work, n, b.opt.Seed, b.opt.Ref, b.deleted)
	if err != nil {
		return nil, err
	}
	res.Fixture, res.Objects = fx, fx.BuildRepo
	env, err := newLoopbackEnv(ctx)
	if err != nil {
		return nil, err
	}
	defer env.close()
	dir := filepath.Join(b.runDir, name)
	defer func() {
		if !b.opt.Keep {
			_ = os.RemoveAll(dir)
			b.deleted()
		}
	}()
	slog.Info("push of tiny files", "name", name, "files", n, "objects", fx.BuildRepo.Objects, "pull", pull)
	sc := scenario{Name: name, About: "a commit of many tiny files, empty prod, loopback", Fixture: "million"}
	old := b.opt.ClientTimeout
	b.opt.ClientTimeout = max(old, 4*time.Hour)
	defer func() { b.opt.ClientTimeout = old }()

	pushDir := filepath.Join(dir, "push")
	if err := os.MkdirAll(pushDir, 0o755); err != nil {
		return nil, err
	}
	probe := &pushProbe{split: b.pushNoPublish, smallPushes: true}
	if err := b.settle(ctx, fx.build()); err != nil {
		return nil, err
	}
	start := time.Now()
	m, err := b.push(ctx, sc, env, nil, fx, pushDir, probe)
	if err != nil {
		return nil, fmt.Errorf("%s push: %w", name, err)
	}
	m.Run = run
	res.Push = m
	res.Split, res.Commit, res.Journal = probe.split, probe.commit, probe.journal
	res.DaemonMem = &probe.mem
	res.SmallPushes = probe.latency
	if v, ok := m.PushStats["negotiate_seconds"].(float64); ok {
		res.NegotiateSeconds = v
	}
	res.VerifySeconds = time.Since(start).Seconds() - m.Client.WallSeconds
	logMeasurement(sc, m)
	// The daemon deleted its spool's files once it published.
	b.deleted()

	// Each measurement's files stay until the scenario ends (see settle).
	if err := b.settle(ctx, fx.build()); err != nil {
		return nil, err
	}
	slog.Info("floor: cp -a of the build repository's objects, then syncfs", "name", name)
	if res.Floor, err = measureFloor(ctx, filepath.Join(fx.build(), "objects"), filepath.Join(dir, "floor", "objects")); err != nil {
		return nil, err
	}
	slog.Info("floor", "name", name, "seconds", fmt.Sprintf("%.2f", res.Floor.WallSeconds))

	if pull {
		if err := b.settle(ctx, fx.build()); err != nil {
			return nil, err
		}
		pullDir := filepath.Join(dir, "pull")
		if err := os.MkdirAll(pullDir, 0o755); err != nil {
			return nil, err
		}
		p, err := b.runPull(ctx, sc, env, fx, pullDir)
		if err != nil {
			return nil, fmt.Errorf("%s pull: %w", name, err)
		}
		p.Run = run
		res.Pull = p
		if p.Client.WallSeconds > 0 {
			res.PushOverPull = m.Client.WallSeconds / p.Client.WallSeconds
		}
		logMeasurement(sc, p)
	}
	return res, nil
}

// loadOrMakeMillion returns the cached million-file fixture (a build repo
// whose only commit is B), generating it first when needed; it calls
// deleted once it has deleted the tree the commit was made of.
func loadOrMakeMillion(ctx context.Context, work string, n int, seed uint64, ref string, deleted func()) (*fixture, error) {
	dir := filepath.Join(work, "fixtures", fmt.Sprintf("million-%d-seed%d-v%d", n, seed, fixtureVersion))
	if f, err := readFixture(dir); err == nil && f.Ref == ref {
		slog.Info("fixture cached", "name", "million", "dir", dir)
		return f, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	start := time.Now()
	f := &fixture{Name: "million", Seed: seed, Ref: ref, Dir: dir, FixtureVers: fixtureVersion, Files: n}
	tree := filepath.Join(dir, "tree")
	slog.Info("writing tiny files", "files", n, "dir", tree)
	if err := writeTinyFiles(ctx, tree, n, seed); err != nil {
		return nil, fmt.Errorf("write the million-file tree: %w", err)
	}
	if err := initArchive(ctx, f.build()); err != nil {
		return nil, err
	}
	var err error
	if f.B, err = commitTree(ctx, f.build(), ref, tree, "many tiny files", timestampB); err != nil {
		return nil, err
	}
	f.A = "none"
	if err := os.RemoveAll(tree); err != nil {
		return nil, err
	}
	deleted()
	if f.BuildRepo, err = countObjects(f.build()); err != nil {
		return nil, err
	}
	f.CommitB = f.BuildRepo
	f.GenSeconds = time.Since(start).Seconds()
	slog.Info("million fixture", "objects", f.BuildRepo.Objects, "disk", humanBytes(f.BuildRepo.DiskBytes),
		"seconds", fmt.Sprintf("%.0f", f.GenSeconds))
	return f, writeMarker(dir, f)
}

// writeTinyFiles writes n files of millionFileSize bytes, millionFilesPerDir
// to a directory; each starts with its index, so no two are equal.
func writeTinyFiles(ctx context.Context, root string, n int, seed uint64) error {
	dirs := (n + millionFilesPerDir - 1) / millionFilesPerDir
	return parallel(ctx, runtime.NumCPU()*2, dirs, func(d int) error {
		buf := make([]byte, millionFileSize)
		r := rand.New(rand.NewPCG(seed, uint64(d)))
		dp := filepath.Join(root, fmt.Sprintf("d%04d", d))
		if err := os.MkdirAll(dp, 0o755); err != nil {
			return err
		}
		for i := d * millionFilesPerDir; i < min(n, (d+1)*millionFilesPerDir); i++ {
			binary.LittleEndian.PutUint64(buf, uint64(i))
			fillRandom(r, buf[8:])
			if err := os.WriteFile(filepath.Join(dp, fmt.Sprintf("f%07d", i)), buf, 0o644); err != nil {
				return err
			}
		}
		return nil
	})
}

// freeBytes is the space available to unprivileged users on p's filesystem.
func freeBytes(p string) (int64, error) {
	if err := os.MkdirAll(p, 0o755); err != nil {
		return 0, err
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(p, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", p, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}
