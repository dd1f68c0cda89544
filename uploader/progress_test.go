package uploader_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/uploader"
)

// progressLine matches what the progress shows: a percentage, the bytes
// of objects sent of the total, and objects.
var progressLine = regexp.MustCompile(`(\d+)% ([0-9.]+ [KMGTPE]?i?B)/([0-9.]+ [KMGTPE]?i?B)  (\d+)/(\d+) objects`)

// frame is one showing of the progress.
type frame struct {
	pct                int
	sent, total        float64 // bytes, as shown (rounded)
	objects, ofObjects int
}

func parseBytes(t *testing.T, s string) float64 {
	num, unit, _ := strings.Cut(s, " ")
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		t.Fatalf("bytes %q: %v", s, err)
	}
	if i := strings.IndexByte("KMGTPE", unit[0]); i >= 0 {
		for range i + 1 {
			f *= 1024
		}
	}
	return f
}

func frames(t *testing.T, out string) []frame {
	var fs []frame
	for _, m := range progressLine.FindAllStringSubmatch(out, -1) {
		pct, _ := strconv.Atoi(m[1])
		o, _ := strconv.Atoi(m[4])
		of, _ := strconv.Atoi(m[5])
		fs = append(fs, frame{pct, parseBytes(t, m[2]), parseBytes(t, m[3]), o, of})
	}
	return fs
}

// checkFrames fails unless every showing of the progress stays within
// its totals, and returns the last.
func checkFrames(t *testing.T, out string) frame {
	t.Helper()
	fs := frames(t, out)
	if len(fs) == 0 {
		t.Fatalf("no progress shown:\n%q", out)
	}
	for _, f := range fs {
		if f.pct > 100 || f.sent > f.total || f.objects > f.ofObjects {
			t.Fatalf("progress past its total: %+v\n%q", f, out)
		}
	}
	return fs[len(fs)-1]
}

// A push whose uploads are cut halfway and resumed (the link drops while
// an upload is halfway; the same run resumes it from the daemon's offset)
// shows progress that never passes 100 % nor the total, ends at 100 %,
// and counts the bytes of the objects once however often they went.
func TestProgressOfAResumedPush(t *testing.T) {
	e := daemontest.New(t)
	e.Start()
	px := daemontest.SlowLink(t, strings.TrimPrefix(e.URL, "http://"), 2000)
	var out bytes.Buffer
	o := opts(e, "http://"+px.Listen, "big")
	o.Jobs, o.PackMax = 2, 512<<10 // uploads of their own and packs
	o.Progress, o.Terminal = &out, true
	type result struct {
		res *uploader.Result
		err error
	}
	done := make(chan result, 1)
	go func() { res, err := uploader.Push(ctx, o); done <- result{res, err} }()
	for deadline := time.Now().Add(30 * time.Second); !uploadHalfway(sessionNow(t, e.URL, e.Tok, "big", fx.E), 256<<10, 128<<10); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no upload was caught halfway")
		}
	}
	px.Stop() // the bytes the proxy holds are lost: sent again
	time.Sleep(300 * time.Millisecond)
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("push: %v", r.err)
	}
	last := checkFrames(t, out.String())
	n, total := objectBytes(t, fx.E, "")
	if last.pct != 100 || last.sent != last.total || last.objects != n || last.ofObjects != n {
		t.Fatalf("the progress ended at %+v, want 100 %% of %d objects", last, n)
	}
	if r.res.Retries == 0 || r.res.Sent != n || r.res.ToSend != n || r.res.BytesDone != total || r.res.BytesSent <= total {
		t.Fatalf("%d retries; sent %d of %d objects (%d needed), %d bytes of objects (want %d), %d on the wire",
			r.res.Retries, r.res.Sent, r.res.ToSend, n, r.res.BytesDone, total, r.res.BytesSent)
	}
	t.Logf("last progress: %+v; %d bytes of objects, %d read into requests", last, r.res.BytesDone, r.res.BytesSent)
	e.CheckPublished(map[string]string{"big": fx.E})
}

// SIGINT in the middle of a push over a slow link: the command counts as
// sent only objects the daemon verified (and their bytes), ends with the line that says
// to rerun (exit 75), and the rerun completes, its progress ending at
// 100 % of what was left.
func TestInterruptedPushSaysRerun(t *testing.T) {
	e := daemontest.New(t)
	e.Start()
	px := daemontest.SlowLink(t, strings.TrimPrefix(e.URL, "http://"), 2000)
	args := []string{"push", "-r", fx.Build, "-a", "http://" + px.Listen, "-b", "big", "-j", "2"}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Some objects are verified, more are on their way.
	for deadline := time.Now().Add(30 * time.Second); sessionNow(t, e.URL, e.Tok, "big", fx.E).Verified < 10; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the daemon verified no object")
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 75 {
		t.Fatalf("interrupted push: %v, want exit 75\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if last := lines[len(lines)-1]; last != "interrupted: rerun the same command to resume" {
		t.Fatalf("the interrupted push ends with %q:\n%s", last, stderr.String())
	}
	m := regexp.MustCompile(`sent (\d+) of (\d+) objects \(([^;]+); ([^)]+) on the wire\)`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no summary of what was sent:\n%s", stderr.String())
	}
	sent, _ := strconv.Atoi(m[1])
	time.Sleep(time.Second) // the daemon settles what it got
	s := sessionNow(t, e.URL, e.Tok, "big", fx.E)
	// Objects count once verified; the daemon may have verified more than
	// the client heard of (a pack's answer comes at its end).
	if done := parseBytes(t, m[3]); sent > s.Verified || done > 1.01*float64(s.Bytes) || done > parseBytes(t, m[4]) {
		t.Fatalf("the summary says %s; the daemon verified %d objects", m[0], s.Verified)
	}
	t.Logf("interrupted: %s (the daemon verified %d); stderr ends:\n%s", m[0], s.Verified, strings.Join(lines[max(0, len(lines)-3):], "\n"))

	rerun := exec.CommandContext(context.Background(), bin, args...)
	rerun.Env = cmd.Env
	var rerr strings.Builder
	rerun.Stderr = &rerr
	if err := rerun.Run(); err != nil {
		t.Fatalf("rerun: %v\n%s", err, rerr.String())
	}
	if last := checkFrames(t, rerr.String()); last.pct != 100 || last.sent != last.total {
		t.Fatalf("the rerun's progress ended at %+v", last)
	}
	e.CheckPublished(map[string]string{"big": fx.E})
}
