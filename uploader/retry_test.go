package uploader_test

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
)

// retryLine is what push prints on stderr for each retry, without -v.
var retryLine = regexp.MustCompile(`(?m)^retrying in [0-9.]+m?s \(budget (?:[0-9]+m)?[0-9]+s left\): \S.*$`)

// A push whose link goes down for a moment says on stderr, for each retry,
// what failed, when it tries again and how much of --retry-timeout is
// left, and completes.
func TestRetriesAreShown(t *testing.T) {
	e := daemontest.New(t)
	e.Start()
	c := newFlappyLink(t, e.URL)
	cmd := exec.Command(bin, "push", "-r", fx.Build, "-a", c.url(), "-b", "big", "-j", "2", "--retry-timeout", "2m")
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.flapAfterAThird(t)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("push across a link flap: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	lines := retryLine.FindAllString(stderr.String(), -1)
	if len(lines) == 0 {
		t.Fatalf("no retry shown on stderr:\n%s", stderr.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, c.url()[len("http://"):]) && !strings.Contains(l, "/api/v1/") {
			t.Errorf("retry line does not say what failed: %s", l)
		}
	}
	t.Logf("%d retries shown, the first: %s", len(lines), lines[0])
	if !strings.Contains(stdout.String(), "big: updated") {
		t.Fatalf("stdout: %s", stdout.String())
	}
	e.CheckPublished(map[string]string{"big": fx.E})
}
