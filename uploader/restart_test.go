package uploader_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/uploader"
)

// restartBytes pushes big (E: 33 objects, 29.7 MB, all in packs) cold
// through a link of 1 MB/s a connection with -j 4, stops the daemon with
// sig (0: never) when 40 % of the objects' bytes have crossed the link,
// restarts it on the same port and state dir, and finishes the push: in
// the same invocation, or (fresh) by killing the client too and rerunning
// it. It returns the link's bytes over the objects' bytes. (With main's
// many small objects as well, the packs' tar headers alone cost 2.5 %.)
func restartBytes(t *testing.T, sig syscall.Signal, fresh bool, packMax int64) float64 {
	e := daemontest.New(t)
	p := e.StartProcess(bin, "")
	// client → toxiproxy (1 MB/s a connection) → counter → daemon: the
	// counter sees what crossed the slow link (toxiproxy buffers what the
	// client wrote ahead of the link, and drops it with the connection).
	c := newCounter(t, strings.TrimPrefix(e.URL, "http://"))
	url := "http://" + daemontest.SlowLink(t, c.ln.Addr().String(), 1000).Listen
	repo := faultBuildRepo(fx.A, fx.E)
	var total int64
	seen := map[string]bool{}
	for _, commit := range []string{fx.E} {
		for _, n := range daemontest.Objects(t, repo, commit, "") {
			if seen[n.String()] {
				continue
			}
			seen[n.String()] = true
			fi, err := os.Stat(filepath.Join(repo, filepath.FromSlash(n.RelPath())))
			if err != nil {
				t.Fatal(err)
			}
			total += fi.Size()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stop := func() {
		if err := p.Cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		p.Wait()
		t.Logf("daemon stopped (%v) after %d of %d bytes", sig, c.up.Load(), total)
		p = e.StartProcess(bin, "")
	}
	if fresh {
		args := []string{"push", "-q", "-r", repo, "-a", url, "-b", "big", "-j", "4"}
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c.waitFor(t, total*4/10)
		cmd.Process.Kill()
		cmd.Wait()
		stop()
		rerun := exec.CommandContext(ctx, bin, args...)
		rerun.Env = cmd.Env
		if out, err := rerun.CombinedOutput(); err != nil {
			t.Fatalf("rerun: %v\n%s", err, out)
		}
	} else {
		o := opts(e, url, "big")
		o.Repo = repo
		o.PackMax = packMax
		o.RetryTimeout = time.Minute
		done := make(chan error, 1)
		go func() { _, err := uploader.Push(ctx, o); done <- err }()
		if sig != 0 {
			c.waitFor(t, total*4/10)
			stop()
		}
		if err := <-done; err != nil {
			t.Fatalf("push across the restart: %v", err)
		}
	}
	e.CheckPublished(map[string]string{"big": fx.E})
	ratio := float64(c.up.Load()) / float64(total)
	t.Logf("%d bytes on the link for %d bytes of objects: %.3fx", c.up.Load(), total, ratio)
	return ratio
}

// A daemon restart in the middle of a push costs little: what it had
// verified stays, so the link carries at most 1.10 times the objects'
// bytes across a kill -9 and 1.03 times across a SIGTERM, whether the same
// push rides the restart out or a fresh client reruns it.
func TestDaemonRestartCostsLittle(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sig     syscall.Signal
		fresh   bool
		packMax int64 // 0: the default (E's objects go in packs)
		bound   float64
	}{
		{"clean", 0, false, 0, 1.01}, // the protocol's own cost, for reference
		{"kill-same-push", syscall.SIGKILL, false, 0, 1.10},
		{"kill-fresh-client", syscall.SIGKILL, true, 0, 1.10},
		{"term-same-push", syscall.SIGTERM, false, 0, 1.03},
		{"term-fresh-client", syscall.SIGTERM, true, 0, 1.03},
		// E's objects as tus uploads of their own.
		{"kill-uploads", syscall.SIGKILL, false, 64 << 10, 1.10},
		{"term-uploads", syscall.SIGTERM, false, 64 << 10, 1.03},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if r := restartBytes(t, tc.sig, tc.fresh, tc.packMax); r > tc.bound {
				t.Errorf("%.3fx the objects' bytes on the link, bound %.2fx", r, tc.bound)
			}
		})
	}
}
