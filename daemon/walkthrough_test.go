package daemon_test

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestCurlWalkthrough runs the shell blocks of docs/protocol.md's curl
// walk-through, as written, against a real daemon, so the doc cannot rot.
func TestCurlWalkthrough(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	_, walk, ok := strings.Cut(string(doc), "## Walk-through with curl")
	if !ok {
		t.Fatal("docs/protocol.md has no curl walk-through")
	}
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(walk, -1)
	if len(blocks) < 5 {
		t.Fatalf("walk-through has %d shell blocks", len(blocks))
	}
	script := "set -euo pipefail\n"
	for _, b := range blocks {
		script += b[1]
	}
	e := newEnv(t)
	e.Start()
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "SERVER="+e.URL, "TOKEN="+e.Tok.Secret)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walk-through failed: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`published main = ([0-9a-f]{64})`).FindSubmatch(out)
	if m == nil || !strings.Contains(string(out), "server has 100000 of") ||
		!regexp.MustCompile(`"stored":[1-9]`).Match(out) || !strings.Contains(string(out), `"code":"verified"`) {
		t.Fatalf("walk-through output:\n%s", out)
	}
	e.CheckPublished(map[string]string{"main": string(m[1])})
}
