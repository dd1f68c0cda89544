package uploader_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
)

var budgetLeft = regexp.MustCompile(`budget (\S+) left`)

// A push that cannot start says why, soon: a stopped daemon within about
// ten seconds, an https:// address of a plain-HTTP daemon and a server that
// is not ostree-upload at once, none of them as "rerun to resume".
func TestUnreachableDaemonFailsFast(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	e.Start()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte("<html><body><h1>Not Found</h1></body></html>"))
	}))
	defer other.Close()
	stopped := "http://" + freeAddr(t)
	for _, tc := range []struct {
		name, url, says string
		within          time.Duration
	}{
		{"stopped daemon", stopped, "cannot reach the daemon at " + stopped, 15 * time.Second},
		{"https to plain HTTP", strings.Replace(e.URL, "http://", "https://", 1), "answers plain HTTP, not HTTPS", 5 * time.Second},
		{"another server", other.URL + "/prefix/path", "not an ostree-upload daemon at " + other.URL + "/prefix/path (GET " + other.URL + "/prefix/path/api/v1/info: 404)", 5 * time.Second},
	} {
		start := time.Now()
		cmd := exec.Command(bin, "push", "-r", fx.Build, "-a", tc.url, "-b", "main")
		cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
		out, err := cmd.CombinedOutput()
		took := time.Since(start)
		t.Logf("%s, %s:\n%s", tc.name, took.Round(time.Millisecond), out)
		if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 || !strings.Contains(string(out), tc.says) {
			t.Errorf("%s: exit %d, want 1 saying %q:\n%s", tc.name, code, tc.says, out)
		}
		if strings.Contains(string(out), "<html") || strings.Contains(string(out), "rerun") {
			t.Errorf("%s: %s", tc.name, out)
		}
		if took > tc.within {
			t.Errorf("%s took %s", tc.name, took)
		}
		// Each retry line tells the budget of this phase, not --retry-timeout's.
		for _, m := range budgetLeft.FindAllStringSubmatch(string(out), -1) {
			if d, err := time.ParseDuration(m[1]); err != nil || d > 10*time.Second {
				t.Errorf("%s: a retry line says %q left of a 10s budget", tc.name, m[0])
			}
		}
	}
}
