package uploader_test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
)

// A warm incremental push (the daemon holds the ref's previous commit,
// the change fits one pack) costs four requests, one after the other:
// the daemon's info, the session's creation with the negotiation of its
// objects, the pack, and the commit.
func TestWarmPushRoundTrips(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	e.Start()
	o := opts(e, e.URL, "main")
	o.Repo = partialRepo(t, fx.A)
	push(t, o)

	target, _ := url.Parse(e.URL)
	var mu sync.Mutex
	var requests []string
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests = append(requests, r.Method+" "+r.URL.Path)
		mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	defer srv.Close()
	res := push(t, opts(e, srv.URL, "main"))
	if res.Packs != 1 || res.Uploads != 0 {
		t.Fatalf("the change went in %d packs and %d uploads; the test wants one pack", res.Packs, res.Uploads)
	}
	if len(requests) > 4 {
		t.Fatalf("a warm push made %d requests, want at most 4:\n%s", len(requests), strings.Join(requests, "\n"))
	}
	t.Logf("requests:\n%s", strings.Join(requests, "\n"))
	e.CheckPublished(map[string]string{"main": fx.B})
}
