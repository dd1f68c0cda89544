package uploader_test

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

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
	px := toxiproxy.NewProxy(toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop()),
		"daemon", "127.0.0.1:0", strings.TrimPrefix(e.URL, "http://"))
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	defer px.Stop()
	c := newCounter(t, px.Listen)
	// Some latency, so the push is still running when the link goes.
	if _, err := px.Toxics.AddToxicJson(strings.NewReader(`{"name":"lat","type":"latency","stream":"downstream","attributes":{"latency":5}}`)); err != nil {
		t.Fatal(err)
	}
	_, total := objectBytes(t, fx.E, "")
	cmd := exec.Command(bin, "push", "-r", fx.Build, "-a", c.url(), "-b", "big", "-j", "2", "--retry-timeout", "2m")
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, total/3)
	px.Stop()
	time.Sleep(500 * time.Millisecond)
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
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
