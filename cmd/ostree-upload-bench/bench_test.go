package main

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := append([]float64(nil), tc.in...)
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Fatalf("median reordered its argument: %v", tc.in)
			}
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		5 * mib: "5.0 MiB", 3 << 30: "3.0 GiB",
	} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestSummarizeAndTable(t *testing.T) {
	r := &scenarioResult{Scenario: scenario{Name: "cold-loopback", Fixture: "small"}}
	for i, wall := range []float64{10, 30, 20} {
		r.Runs = append(r.Runs,
			measurement{Tool: toolPush, Run: i + 1, Client: usage{WallSeconds: wall, MaxRSSKiB: 1024}, WireBytes: 100 * mib,
				Server: &usage{MaxRSSKiB: 2048, CPUSeconds: 1}, ExitCodes: []int{0},
				PushStats: map[string]any{"negotiate_seconds": 0.5}},
			measurement{Tool: toolPull, Run: i + 1, Client: usage{WallSeconds: wall / 2, MaxRSSKiB: 512}, WireBytes: 90 * mib,
				ExitCodes: []int{1, 0}, Proxy: &proxyStats{Cut: true}})
	}
	r.summarize()
	push, pull := r.Median[toolPush], r.Median[toolPull]
	if push.Runs != 3 || push.WallSeconds != 20 || pull.WallSeconds != 10 || r.WallRatio != 2 {
		t.Fatalf("medians: push %+v pull %+v ratio %v", push, pull, r.WallRatio)
	}
	if push.NegotiateSeconds != 0.5 || push.ServerRSSKiB != 2048 || pull.ServerRSSKiB != 0 {
		t.Fatalf("medians: push %+v pull %+v", push, pull)
	}
	if pull.MaxAttempts != 2 || pull.Cuts != 3 || push.MaxAttempts != 1 {
		t.Fatalf("attempts: push %+v pull %+v", push, pull)
	}
	var out bytes.Buffer
	if err := writeTable(&out, []*scenarioResult{r}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("table has %d lines, want 3:\n%s", len(lines), out.String())
	}
	for _, want := range []string{"cold-loopback", "ostree-upload", "20.00", "2.00", "100.0 MiB", "2.0 MiB"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("push line lacks %q: %s", want, lines[1])
		}
	}
	for _, want := range []string{"ostree pull", "10.00", "2 (cut)"} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("pull line lacks %q: %s", want, lines[2])
		}
	}
	if strings.Contains(lines[2], "cold-loopback") {
		t.Errorf("scenario name repeated on the pull line: %s", lines[2])
	}
}

func TestPlanTreeDeterministicAndShaped(t *testing.T) {
	s := shapes["small"]
	a, b := planTree(s, 7), planTree(s, 7)
	if len(a.Files) != len(b.Files) {
		t.Fatal("same seed, different plans")
	}
	for i := range a.Files {
		if a.Files[i] != b.Files[i] {
			t.Fatalf("same seed, entry %d differs: %+v vs %+v", i, a.Files[i], b.Files[i])
		}
	}
	if c := planTree(s, 8); c.Files[0] == a.Files[0] && c.Files[1] == a.Files[1] {
		t.Error("different seeds, same plan")
	}
	want := s.Small + s.Medium + s.Large + s.Symlinks
	if len(a.Files) != want || len(a.Dirs) != s.Dirs {
		t.Fatalf("%d files in %d dirs, want %d in %d", len(a.Files), len(a.Dirs), want, s.Dirs)
	}
	paths := map[string]bool{}
	var links, large int
	for _, f := range a.Files {
		if paths[f.Path] {
			t.Fatalf("duplicate path %s", f.Path)
		}
		paths[f.Path] = true
		switch {
		case f.Link != "":
			links++
		case f.Size >= s.LargeMin:
			large++
			if f.Kind != contentRandom {
				t.Errorf("large file %s is %v, want random", f.Path, f.Kind)
			}
		case f.Size < s.SmallMin || f.Size > s.MedMax:
			t.Errorf("%s: size %d out of range", f.Path, f.Size)
		}
	}
	if links != s.Symlinks || large < s.Large {
		t.Errorf("%d symlinks, %d large files", links, large)
	}
}

func TestPlanChange(t *testing.T) {
	a := planTree(shapes["small"], 1)
	b, changes := planChange(a, 2, 1)
	count := map[string]int{}
	for _, c := range changes {
		count[c.Change]++
	}
	total := len(a.Files) / 100
	if len(changes) != total || count["modify"] != total/2 || count["add"] != total/4 ||
		count["remove"] != total-total/2-total/4 {
		t.Fatalf("changes %v, want %d in all", count, total)
	}
	if len(b.Files) != len(a.Files)+count["add"]-count["remove"] {
		t.Fatalf("%d files after the change, from %d", len(b.Files), len(a.Files))
	}
	if a.Files[0].Change != "" {
		t.Error("planChange modified its input")
	}
}

func TestWriteContent(t *testing.T) {
	for _, kind := range []contentKind{contentText, contentRandom, contentMixed} {
		f := fileSpec{Kind: kind, Size: 100_001, Seed: 42}
		var x, y bytes.Buffer
		if err := writeContent(&x, f); err != nil {
			t.Fatal(err)
		}
		_ = writeContent(&y, f)
		if int64(x.Len()) != f.Size || !bytes.Equal(x.Bytes(), y.Bytes()) {
			t.Fatalf("%v: %d bytes, deterministic %v", kind, x.Len(), bytes.Equal(x.Bytes(), y.Bytes()))
		}
		var z bytes.Buffer
		zw := zlib.NewWriter(&z)
		_, _ = zw.Write(x.Bytes())
		_ = zw.Close()
		ratio := float64(z.Len()) / float64(x.Len())
		switch kind {
		case contentText:
			if ratio > 0.5 {
				t.Errorf("text compresses to %.2f, want at most 0.5", ratio)
			}
		case contentRandom:
			if ratio < 0.99 {
				t.Errorf("random compresses to %.2f", ratio)
			}
		}
	}
}

func TestRelTarget(t *testing.T) {
	for _, tc := range [][3]string{
		{"a/b", "a/c/f", "../c/f"},
		{"", "a/f", "a/f"},
		{"a", "f", "../f"},
	} {
		if got := relTarget(tc[0], tc[1]); got != tc[2] {
			t.Errorf("relTarget(%q, %q) = %q, want %q", tc[0], tc[1], got, tc[2])
		}
	}
}

func TestParseLinkStats(t *testing.T) {
	in := `[{"ifindex":1,"ifname":"lo","stats64":{"rx":{"bytes":10},"tx":{"bytes":1234}}},
		{"ifindex":2,"ifname":"oub2b","stats64":{"rx":{"bytes":5},"tx":{"bytes":99}}}]`
	m, err := parseLinkStats([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if m["lo"] != 1234 || m["oub2b"] != 99 {
		t.Fatalf("got %v", m)
	}
}

func TestSelectScenarios(t *testing.T) {
	all, err := selectScenarios([]string{"all"}, "full", "small")
	if err != nil || len(all) != len(allScenarios) {
		t.Fatalf("all: %v %v", all, err)
	}
	for _, s := range all {
		if s.WAN != (s.Fixture == "small") {
			t.Errorf("%s uses fixture %s", s.Name, s.Fixture)
		}
	}
	if none, err := selectScenarios([]string{"none"}, "full", "small"); err != nil || len(none) != 0 {
		t.Fatalf("none: %v %v", none, err)
	}
	if _, err := selectScenarios([]string{"bogus"}, "full", "small"); err == nil {
		t.Fatal("unknown scenario accepted")
	}
	fresh, _ := selectScenarios([]string{"warm-fresh-ci", "warm-fresh-ci"}, "small", "small")
	if len(fresh) != 1 || !fresh[0].Warm || !fresh[0].FreshCI {
		t.Fatalf("warm-fresh-ci: %+v", fresh)
	}
}

func TestProxyArgs(t *testing.T) {
	o := proxyOptions{Listen: "127.0.0.1:1", Upstream: "10.0.0.2:2", StatsPath: "/s", CutAfter: 5, CutStream: "downstream"}
	got := strings.Join(o.args(), " ")
	want := "proxy --listen 127.0.0.1:1 --upstream 10.0.0.2:2 --stats /s --cut-after 5 --cut-stream downstream"
	if got != want {
		t.Fatalf("args %q, want %q", got, want)
	}
}

func TestRunOrderRotates(t *testing.T) {
	two := []string{toolPush, toolPull}
	if got := strings.Join(runOrder(two, 1), ","); got != "push,pull" {
		t.Errorf("run 1: %s", got)
	}
	if got := strings.Join(runOrder(two, 2), ","); got != "pull,push" {
		t.Errorf("run 2: %s", got)
	}
	three := scenario{SSH: true}.tools()
	for i, want := range []string{"push-ssh,push,ostree-push", "push,ostree-push,push-ssh", "ostree-push,push-ssh,push", "push-ssh,push,ostree-push"} {
		if got := strings.Join(runOrder(three, i+1), ","); got != want {
			t.Errorf("run %d: %s, want %s", i+1, got, want)
		}
	}
	if three[0] != toolPushSSH {
		t.Fatal("runOrder changed its argument")
	}
}

func TestSelectSSHScenarios(t *testing.T) {
	got, err := selectScenarios([]string{"ssh-cold", "ssh-warm"}, "full", "small")
	if err != nil || len(got) != 2 {
		t.Fatalf("%v %v", got, err)
	}
	if !got[0].SSH || got[0].Warm || !got[1].SSH || !got[1].Warm || got[0].Fixture != "full" {
		t.Fatalf("ssh scenarios: %+v", got)
	}
	if got[0].baseline() != toolOstreePush || strings.Join(got[0].tools(), ",") != "push-ssh,push,ostree-push" {
		t.Fatalf("tools %v, baseline %s", got[0].tools(), got[0].baseline())
	}
}

func TestParseRemoteUsage(t *testing.T) {
	in := `{"wall_seconds":1,"max_rss_kib":100,"cpu_seconds":0.5,"exit_code":75}

{"wall_seconds":2,"max_rss_kib":50,"cpu_seconds":0.25,"exit_code":0}
`
	u, err := parseRemoteUsage(bufio.NewScanner(strings.NewReader(in)), "usage")
	if err != nil {
		t.Fatal(err)
	}
	if u.WallSeconds != 3 || u.CPUSeconds != 0.75 || u.MaxRSSKiB != 100 || u.ExitCode != 0 {
		t.Fatalf("got %+v", u)
	}
	if _, err := parseRemoteUsage(bufio.NewScanner(strings.NewReader("\n")), "usage"); err == nil || !strings.Contains(err.Error(), "never finished") {
		t.Fatalf("empty file: %v", err)
	}
	if _, err := parseRemoteUsage(bufio.NewScanner(strings.NewReader("{\"wall_seconds\":")), "usage"); err == nil {
		t.Fatal("a cut line was accepted")
	}
}

// The rusage subcommand runs its command, appends the command's usage and
// exits with its status.
func TestRusageSubcommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "usage.jsonl")
	if err := rusageMain([]string{"--out", out, "--", "/bin/sh", "-c", "exit 0"}); err != nil {
		t.Fatal(err)
	}
	err := rusageMain([]string{"--out", out, "--", "/bin/sh", "-c", "exit 3"})
	var ec exitCode
	if !errors.As(err, &ec) || ec != 3 {
		t.Fatalf("exit 3 gave %v", err)
	}
	u, err := readRemoteUsage(out)
	if err != nil {
		t.Fatal(err)
	}
	if u.ExitCode != 3 || u.MaxRSSKiB <= 0 || u.WallSeconds <= 0 {
		t.Fatalf("usage %+v", u)
	}
	raw, _ := os.ReadFile(out)
	if n := strings.Count(string(raw), "\n"); n != 2 {
		t.Fatalf("%d lines, want 2:\n%s", n, raw)
	}
	if _, err := readRemoteUsage(out + ".missing"); err == nil {
		t.Fatal("a missing usage file was accepted")
	}
}

func TestSummaryLists(t *testing.T) {
	const c1 = "293cc1bcd6f231074c15137816556baccf7baaa67db2cfb2d4b2ce0b609647f4"
	const c2 = "578648a28cd8c0e9e97c0d1aebbd5bfa7224bcb54e816be7c88e83ede7bf2470"
	view := `* app/x/y/z
    Latest Commit (126 bytes):
      ` + c1 + `
    Timestamp (ostree.commit.timestamp): 2026-12-04T00:22:30+00

* appstream/x86_64
    Latest Commit (300 bytes):
      ` + c2 + `

Repository Mode (ostree.summary.mode): archive-z2
Last-Modified (ostree.summary.last-modified): 2026-12-04T00:22:30+00
`
	if !summaryLists(view, "app/x/y/z", c1) {
		t.Error("the ref at its commit not found")
	}
	if summaryLists(view, "app/x/y/z", c2) {
		t.Error("another ref's commit taken for the ref's")
	}
	if summaryLists(view, "app/other", c1) {
		t.Error("a ref not in the summary found")
	}
}

func TestParseStatPPID(t *testing.T) {
	if pp, ok := parseStatPPID("4242 (a (b) c) S 17 4242 4242 0 -1"); !ok || pp != 17 {
		t.Fatalf("got %d %v", pp, ok)
	}
	if _, ok := parseStatPPID("4242 (trunc"); ok {
		t.Fatal("a line without the command's end parsed")
	}
}

func TestFindOstreePushSkips(t *testing.T) {
	if op := findOstreePush(context.Background(), "", "/usr/bin/python3"); !strings.Contains(op.Skipped, "--ostree-push") {
		t.Errorf("no flag: %+v", op)
	}
	dir := t.TempDir()
	if op := findOstreePush(context.Background(), dir, "/usr/bin/python3"); !strings.Contains(op.Skipped, "no otpush/push.py") {
		t.Errorf("empty dir: %+v", op)
	}
}

func TestSSHTable(t *testing.T) {
	r := &scenarioResult{Scenario: scenario{Name: "ssh-cold", Fixture: "full", SSH: true}}
	for i := range 3 {
		r.Runs = append(r.Runs,
			measurement{Tool: toolPushSSH, Run: i + 1, Client: usage{WallSeconds: 5}, ExitCodes: []int{0},
				Server: &usage{MaxRSSKiB: 1024, CPUSeconds: 2}, Remote: &usage{MaxRSSKiB: 4096, CPUSeconds: 0.5}},
			measurement{Tool: toolPush, Run: i + 1, Client: usage{WallSeconds: 4}, ExitCodes: []int{0}, Server: &usage{MaxRSSKiB: 1024, CPUSeconds: 2}},
			measurement{Tool: toolOstreePush, Run: i + 1, Client: usage{WallSeconds: 20}, ExitCodes: []int{0}, Remote: &usage{MaxRSSKiB: 2048, CPUSeconds: 9}})
	}
	r.summarize()
	if s := r.Median[toolPushSSH]; s.ServerCPUSeconds != 2.5 || s.ServerRSSKiB != 4096 {
		t.Fatalf("push over ssh: the server is the daemon and ssh-serve together: %+v", s)
	}
	if r.Ratios[toolPushSSH] != 0.25 || r.Ratios[toolPush] != 0.2 || r.WallRatio != 0 {
		t.Fatalf("ratios %v, push/pull %v", r.Ratios, r.WallRatio)
	}
	warm := &scenarioResult{Scenario: scenario{Name: "ssh-warm", Fixture: "full", SSH: true, Warm: true},
		Runs:    []measurement{{Tool: toolPushSSH, Run: 1, Client: usage{WallSeconds: 1}, ExitCodes: []int{0}}},
		Skipped: map[string]string{toolOstreePush: "no --ostree-push DIR given"}}
	warm.summarize()
	var out bytes.Buffer
	if err := writeTable(&out, []*scenarioResult{r, warm}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d lines, want a header, 3 cold, 1 warm, 1 note:\n%s", len(lines), out.String())
	}
	for i, want := range [][]string{
		{"/ostree-push", "server RSS"},
		{"ssh-cold", "ostree-upload ssh", "5.00", "0.25", "4.0 MiB", "2.50"},
		{"ostree-upload http", "4.00", "0.20"},
		{"ostree-push", "20.00", "9.00"},
		{"ssh-warm", "ostree-upload ssh", "1.00"},
		{"ostree-push skipped: no --ostree-push DIR given"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d lacks %q: %s", i, w, lines[i])
			}
		}
	}
}
