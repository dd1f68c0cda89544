package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// smallPushEvery is how often another token pushes a small commit while a
// big push runs (see smallPusher).
const smallPushEvery = 5 * time.Second

// smallPushRef is the ref of those commits: a ref of its own in the same
// production repository.
const smallPushRef = "app/org.example.Small/x86_64/stable"

// smallPushFiles is the number of new files of each small commit.
const smallPushFiles = 10

// latencyFigures are the wall times of small pushes by another token: one
// to the idle daemon before the big push, and those made while it ran.
type latencyFigures struct {
	IdleSeconds   float64   `json:"idle_seconds"`
	DuringSeconds []float64 `json:"during_seconds"`
	Failed        int       `json:"failed,omitempty"` // pushes during that exited non-zero
}

// median and worst of the pushes during the big one (0 without any).
func (l *latencyFigures) median() float64 {
	if len(l.DuringSeconds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(l.DuringSeconds))
	return s[len(s)/2]
}

func (l *latencyFigures) worst() float64 {
	if len(l.DuringSeconds) == 0 {
		return 0
	}
	return slices.Max(l.DuringSeconds)
}

// smallPusher pushes a new commit of a few files with the second token,
// each a complete push (a session, a pack, a publish), as a CI job
// publishing a small app would.
type smallPusher struct {
	b      *bench
	ns     string
	url    string
	repo   string // its build repository
	tree   string
	logf   string
	n      int
	figure latencyFigures
}

func (b *bench) newSmallPusher(ctx context.Context, dir, ns, url string) (*smallPusher, error) {
	p := &smallPusher{b: b, ns: ns, url: url, repo: filepath.Join(dir, "small-build"),
		tree: filepath.Join(dir, "small-tree"), logf: filepath.Join(dir, "small-push.log")}
	if _, err := ostree(ctx, p.repo, "init", "--mode=archive"); err != nil {
		return nil, err
	}
	return p, os.MkdirAll(p.tree, 0o755)
}

// push commits smallPushFiles new files and pushes them, returning the
// push's wall time.
func (p *smallPusher) push(ctx context.Context) (usage, error) {
	p.n++
	for i := range smallPushFiles {
		name := filepath.Join(p.tree, fmt.Sprintf("f%02d", i))
		if err := os.WriteFile(name, []byte(fmt.Sprintf("small push %d, file %d\n", p.n, i)), 0o644); err != nil {
			return usage{}, err
		}
	}
	// A second apart: the update rule wants each commit newer.
	if _, err := commitTree(ctx, p.repo, smallPushRef, p.tree, fmt.Sprintf("small %d", p.n), time.Now().Unix()+int64(p.n)); err != nil {
		return usage{}, err
	}
	return runClient(ctx, p.ns, []string{"OSTREE_UPLOAD_TOKEN=" + p.b.smallToken}, p.logf,
		p.b.bin, "push", "-q", "-r", p.repo, "-b", smallPushRef, "-a", p.url)
}

// idle measures one small push to the idle daemon.
func (p *smallPusher) idle(ctx context.Context) error {
	u, err := p.push(ctx)
	if err != nil {
		return err
	}
	if u.ExitCode != 0 {
		return fmt.Errorf("small push to the idle daemon exited %d (see %s)", u.ExitCode, p.logf)
	}
	p.figure.IdleSeconds = u.WallSeconds
	return nil
}

// during pushes every smallPushEvery until the returned stop is called,
// which waits for the push under way and returns the figures.
func (p *smallPusher) during(ctx context.Context) (stop func() *latencyFigures) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(smallPushEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			u, err := p.push(ctx)
			switch {
			case err != nil:
				if ctx.Err() == nil {
					slog.Warn("small push", "err", err)
				}
				return
			case u.ExitCode != 0:
				p.figure.Failed++
			default:
				p.figure.DuringSeconds = append(p.figure.DuringSeconds, u.WallSeconds)
			}
		}
	}()
	return func() *latencyFigures {
		close(done)
		wg.Wait() // the push under way finishes
		cancel()
		return &p.figure
	}
}
