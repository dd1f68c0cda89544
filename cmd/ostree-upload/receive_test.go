package main

import (
	"bufio"
	"context"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
)

var binary struct {
	once      sync.Once
	dir, path string
	err       error
}

// builtBinary builds the ostree-upload command once for the package's
// tests that run it as a process.
func builtBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		if binary.dir, binary.err = os.MkdirTemp("", "ostree-upload-bin-"); binary.err == nil {
			binary.path, binary.err = daemontest.BuildBinary(binary.dir)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

// receiveDir is a directory with a configuration file of one token, where
// receive runs.
func receiveDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	tok := daemontest.NewToken(t)
	if err := os.WriteFile(filepath.Join(dir, "ostree-upload.yaml"), []byte("tokens:\n- sha256: "+tok.Hash+"\n  name: ci\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// goNames are what an error message must not show: Go module paths, Go
// source positions and Go type names (package.Type).
var goNames = regexp.MustCompile(`github\.com/|golang\.org/|\.go:\d|\*?\b[a-z][a-z0-9]*\.[A-Z][A-Za-z0-9]*\b`)

// A receive that cannot start says why in words and leaves the disk as it
// was: a directory that holds something else than a repository is not
// turned into one, and the address, the certificate and the state dir are
// checked before a missing repository is created.
func TestReceiveRefusesBeforeCreating(t *testing.T) {
	t.Parallel()
	bin := builtBinary(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	cases := []struct {
		name string
		args []string // after receive -c ostree-upload.yaml; -r new unless given
		want string   // in the error
	}{
		{"non-empty directory", []string{"-r", "docs", "-a", "127.0.0.1:0"}, "production repo DIR/docs is not an OSTree repository (it has no config file) and is not empty: give the path of an OSTree repository, or of a missing or empty directory to create one in"},
		{"a file", []string{"-r", "docs/notes.txt", "-a", "127.0.0.1:0"}, "production repo DIR/docs/notes.txt is not a directory"},
		{"port out of range", []string{"-a", "127.0.0.1:99999"}, `cannot listen on "127.0.0.1:99999" (--address, or address in the configuration)`},
		{"address without port", []string{"-a", "127.0.0.1"}, `cannot listen on "127.0.0.1"`},
		{"address in use", []string{"-a", busy.Addr().String()}, "cannot listen on " + `"` + busy.Addr().String() + `"`},
		{"missing certificate", []string{"-a", "127.0.0.1:0", "--tls-cert", "cert.pem", "--tls-key", "key.pem"}, "--tls-cert/--tls-key: open cert.pem: no such file or directory"},
		{"state dir under a file", []string{"-a", "127.0.0.1:0", "--state-dir", "docs/notes.txt/state"}, "state dir: mkdir docs/notes.txt: not a directory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := receiveDir(t)
			docs := filepath.Join(dir, "docs")
			if err := os.Mkdir(docs, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(docs, "notes.txt"), []byte("not a repository\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"receive", "-c", "ostree-upload.yaml"}, c.args...)
			if !strings.Contains(strings.Join(c.args, " "), "-r ") {
				args = append(args, "-r", "new")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitFail {
				t.Fatalf("receive %v: %v, want exit %d\n%s", c.args, err, exitFail, out)
			}
			want := "ostree-upload receive: " + strings.ReplaceAll(c.want, "DIR", dir)
			if !strings.Contains(string(out), want) {
				t.Errorf("receive %v says\n%s\nwant\n%s", c.args, out, want)
			}
			for _, line := range strings.Split(string(out), "\n") {
				// The temporary directory's random name may look like
				// pkg.Type: it is the test's, not the message's.
				words := strings.ReplaceAll(line, os.TempDir(), "TMPDIR")
				if strings.HasPrefix(line, "ostree-upload receive: ") && goNames.MatchString(words) {
					t.Errorf("the error shows Go names (%q): %s", goNames.FindString(words), line)
				}
			}
			entries, _ := os.ReadDir(dir)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if strings.Join(names, " ") != "docs ostree-upload.yaml" {
				t.Errorf("receive %v left %v behind", c.args, names)
			}
			if inDocs, _ := os.ReadDir(docs); len(inDocs) != 1 {
				t.Errorf("receive %v changed docs/: %v", c.args, inDocs)
			}
		})
	}
}

// A missing repository is created, and the log says so at WARN with its
// absolute path: a typo in -r shows up in the log's warnings.
func TestReceiveWarnsWhenCreatingTheRepository(t *testing.T) {
	t.Parallel()
	bin := builtBinary(t)
	dir := receiveDir(t)
	cmd := exec.Command(bin, "receive", "-c", "ostree-upload.yaml", "-r", "srv/repo", "-a", "127.0.0.1:0")
	cmd.Dir = dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	var log []string
	lines := bufio.NewScanner(stderr)
	for lines.Scan() && !strings.Contains(lines.Text(), "msg=listening") {
		log = append(log, lines.Text())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	repo := filepath.Join(dir, "srv", "repo")
	want := `level=WARN msg="the production repository does not exist: creating it" path=` + repo + " mode=archive"
	if !strings.Contains(strings.Join(log, "\n"), want) {
		t.Errorf("start-up log\n%s\nlacks\n%s", strings.Join(log, "\n"), want)
	}
	if _, err := os.Stat(filepath.Join(repo, "config")); err != nil {
		t.Errorf("no repository created: %v", err)
	}
}

// Unless its environment sets them, the daemon lets the heap grow to four
// times what is live, under a soft limit of 48 MiB; GOGC and GOMEMLIMIT
// each keep their own setting (the runtime applied it at start-up).
func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	for _, tc := range []struct {
		env     map[string]string
		percent int
		limit   int64
	}{
		{env: nil, percent: 300, limit: 48 << 20},
		{env: map[string]string{"GOGC": "80"}, percent: 100, limit: 48 << 20},
		{env: map[string]string{"GOMEMLIMIT": "1GiB"}, percent: 300, limit: math.MaxInt64},
		{env: map[string]string{"GOGC": "off", "GOMEMLIMIT": "1GiB"}, percent: 100, limit: math.MaxInt64},
	} {
		debug.SetGCPercent(100) // what the runtime would have set from the environment
		debug.SetMemoryLimit(math.MaxInt64)
		tuneGC(func(k string) string { return tc.env[k] })
		percent, limit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
		if percent != tc.percent || limit != tc.limit {
			t.Errorf("environment %v: GOGC %d, memory limit %d; want %d, %d", tc.env, percent, limit, tc.percent, tc.limit)
		}
	}
}
