package daemon_test

import (
	"bufio"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// The daemon's /metrics, scraped from the real binary after real pushes,
// passes `promtool check metrics` (Prometheus' own linter: counters end in
// _total, no reserved suffixes, units in base form) and says what operators
// need: the build it runs, and per repository the time its publishes, its
// summary updates, its check_hook and its update_hook took, and tusd's upload counters
// under the daemon's names.
func TestMetricsPassPromtool(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian's prometheus package (make test does)")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "srv")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	tok := daemontest.NewToken(t)
	cfgFile := filepath.Join(dir, "ostree-upload.yaml")
	yaml := fmt.Sprintf(`root: %s
repos:
  plain: {}
  hooked:
    update_hook: sleep 0.2
    check_hook: sleep 0.1
  deltas:
    static_deltas: yes
    static_delta_depth: 0
    static_delta_from_empty: yes
tokens:
- sha256: %s
  name: ci
`, root, tok.Hash)
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	url := startBinary(t, fx.bin, dir, "receive", "-c", cfgFile)

	// One object over 2 MiB, so that push sends it as a tus upload, and
	// small ones for a pack.
	build := bigBuild(t, "app/main")
	for _, repo := range []string{"plain", "hooked", "deltas"} {
		cmd := exec.Command(fx.bin, "push", "-a", url+"/"+repo, "-r", build, "-b", "app/main")
		cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+tok.Secret)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("push to %s: %v\n%s", repo, err, out)
		}
	}

	// The delta from nothing to the pushed commit comes after the answer,
	// from a generator under nice 19: on a loaded machine, it waits.
	for i := 0; metricValue(t, url, `ostree_upload_static_delta_generations_total{repo="deltas"}`) == 0; i++ {
		failed := metricValue(t, url, `ostree_upload_static_delta_generation_failures_total{repo="deltas"}`) > 0
		if failed || i == 900 {
			log, _ := os.ReadFile(filepath.Join(dir, "daemon.log"))
			t.Fatalf("no static delta generated within 90 s (failed: %v); the daemon's log:\n%s", failed, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %v", res.StatusCode, err)
	}
	lint := exec.Command(promtool, "check", "metrics")
	lint.Stdin = strings.NewReader(string(text))
	if out, err := lint.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	if strings.Contains(string(text), "tusd_") {
		t.Errorf("tusd's own metric names are still exported:\n%s", grepLines(text, "tusd_"))
	}

	// build_info names what `ostree-upload version` prints.
	v, err := exec.Command(fx.bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^ostree-upload (\S+) \(commit (\S+), (\S+)\)\n$`).FindStringSubmatch(string(v))
	if m == nil {
		t.Fatalf("version prints %q", v)
	}
	info := fmt.Sprintf(`ostree_upload_build_info{commit=%q,goversion=%q,version=%q}`, m[2], m[3], m[1])
	if got, ok := sample(text, info); !ok || got != 1 {
		t.Errorf("%s = %v (present: %v), want 1", info, got, ok)
	}
	series := map[string]float64{ // series: the least value it must have
		`ostree_upload_publish_seconds_count{repo="plain"}`:                   1,
		`ostree_upload_publish_seconds_count{repo="hooked"}`:                  1,
		`ostree_upload_metadata_update_seconds_count{repo="plain"}`:           1,
		`ostree_upload_metadata_update_seconds_sum{repo="plain"}`:             1e-9,
		`ostree_upload_update_hook_seconds_count{repo="hooked"}`:              1,
		`ostree_upload_update_hook_seconds_sum{repo="hooked"}`:                0.2,
		`ostree_upload_check_hook_runs_total{outcome="passed",repo="hooked"}`: 1,
		`ostree_upload_check_hook_seconds_count{repo="hooked"}`:               1,
		`ostree_upload_check_hook_seconds_sum{repo="hooked"}`:                 0.1,
		`ostree_upload_tus_requests_total{method="POST",repo="plain"}`:        1,
		`ostree_upload_tus_uploads_created_total{repo="plain"}`:               1,
		`ostree_upload_tus_uploads_finished_total{repo="hooked"}`:             1,
		`ostree_upload_tus_received_bytes_total{repo="plain"}`:                2 << 20,
		`ostree_upload_tus_uploads_terminated_total{repo="plain"}`:            0,
		`ostree_upload_static_delta_generations_total{repo="deltas"}`:         1,
		`ostree_upload_static_delta_generation_seconds_count{repo="deltas"}`:  1,
		`ostree_upload_static_delta_generation_failures_total{repo="deltas"}`: 0,
		`ostree_upload_static_deltas_retired_total{repo="deltas"}`:            0,
	}
	for s, least := range series {
		got, ok := sample(text, s)
		if !ok || got < least {
			t.Errorf("%s = %v (present: %v), want at least %v", s, got, ok, least)
		}
	}
	// Neither repository runs the other's metadata update; only the one
	// with static deltas has any.
	for _, s := range []string{`ostree_upload_metadata_update_seconds_count{repo="hooked"}`, `ostree_upload_update_hook_seconds_count{repo="plain"}`,
		`ostree_upload_static_delta_generations_total{repo="plain"}`,
		`ostree_upload_check_hook_seconds_count{repo="plain"}`, `ostree_upload_check_hook_runs_total{outcome="failed",repo="hooked"}`} {
		if got, _ := sample(text, s); got != 0 {
			t.Errorf("%s = %v, want 0", s, got)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", grepLines(text, "ostree_upload_"))
	}
}

// sample is the value of one series (name{labels}, labels sorted) in a
// Prometheus text exposition.
func sample(text []byte, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(string(text)))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			return v, err == nil
		}
	}
	return 0, false
}

func grepLines(text []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(text), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// bigBuild is a build repository whose ref holds a 3 MiB file of random
// bytes and a few small ones.
func bigBuild(t *testing.T, ref string) string {
	t.Helper()
	dir := t.TempDir()
	build, tree := filepath.Join(dir, "build"), filepath.Join(dir, "tree")
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+build)
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 3<<20)
	rand.New(rand.NewSource(7)).Read(big)
	files := map[string][]byte{"big": big}
	for i := range 10 {
		files[fmt.Sprintf("small%d", i)] = []byte(fmt.Sprintf("small file %d", i))
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(tree, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := storetest.MustOstree(t, "commit", "--repo="+build, "--tree=dir="+tree, "--timestamp=@1700000000", "-s", "big", "--orphan")
	storetest.MustOstree(t, "refs", "--repo="+build, "--create="+ref, strings.TrimSpace(c))
	return build
}

// startBinary runs the daemon binary bin with args and a free port of
// 127.0.0.1 (-a), logging to dir/daemon.log, and returns its URL once it
// answers; the test's end kills it.
func startBinary(t *testing.T, bin, dir string, args ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logPath := filepath.Join(dir, "daemon.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append(args, "-a", addr)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	url := "http://" + addr
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := http.Get(url + "/healthz")
		if err == nil {
			res.Body.Close()
			return url
		}
		select {
		case err := <-done:
			done <- err
			b, _ := os.ReadFile(logPath)
			t.Fatalf("daemon exited: %v\n%s", err, b)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("daemon did not start")
		}
	}
}
