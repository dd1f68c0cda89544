package uploader_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/uploader"
)

// A push stopped in the middle of an upload, rerun by a fresh client (no
// state of the first run), continues that upload from the daemon's offset:
// the rerun sends what the daemon lacks and no more.
func TestFreshClientResumesUpload(t *testing.T) {
	e := daemontest.New(t)
	e.Start()
	px := daemontest.SlowLink(t, strings.TrimPrefix(e.URL, "http://"), 2000) // so that an upload is caught halfway
	o := opts(e, "http://"+px.Listen, "big")
	o.Jobs, o.PackMax = 1, 256<<10 // the fixture's large files go as uploads of their own
	first, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := uploader.Push(first, o); done <- err }()

	session := func() api.Session { return sessionNow(t, e.URL, e.Tok, "big", fx.E) }
	for deadline := time.Now().Add(30 * time.Second); !uploadHalfway(session(), 256<<10, 128<<10); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no upload was caught halfway")
		}
	}
	stop()
	px.Stop() // and the bytes the proxy still holds are lost, as with a killed machine
	<-done
	time.Sleep(1500 * time.Millisecond) // the daemon settles what it got
	s := session()
	_, total := objectBytes(t, fx.E, "")
	var partial int64
	for _, u := range s.Uploads {
		partial += u.Offset
	}
	if partial < 256<<10 {
		t.Fatalf("only %d bytes of partial uploads to resume: %+v", partial, s.Uploads)
	}
	lacks := total - s.Bytes - partial

	c := newCounter(t, strings.TrimPrefix(e.URL, "http://"))
	fresh := opts(e, c.url(), "big")
	fresh.Jobs, fresh.PackMax = 1, 256<<10
	push(t, fresh)
	// Requests, headers and tar framing cost a little; a partial upload
	// sent again from its start would cost its offset.
	if sent := c.up.Load(); sent > lacks+partial/2 {
		t.Fatalf("the rerun sent %d bytes; the daemon lacked %d (%d of them in partial uploads' rest)", sent, lacks, partial)
	}
	t.Logf("rerun sent %d bytes; the daemon lacked %d, had %d in partial uploads", c.up.Load(), lacks, partial)
	e.CheckPublished(map[string]string{"big": fx.E})
}

// sessionNow is the token's session moving ref to commit as the daemon has
// it (POST resumes it and answers it), with its unverified uploads.
func sessionNow(t testing.TB, url string, tok daemontest.Token, ref, commit string) api.Session {
	t.Helper()
	body, _ := json.Marshal(api.SessionRequest{Refs: []api.RefUpdate{{Name: ref, New: commit}}})
	req, _ := http.NewRequest("POST", url+api.PathSessions, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok.Secret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var s api.Session
	json.NewDecoder(res.Body).Decode(&s)
	return s
}

// uploadHalfway reports whether s has an open upload with at least from
// bytes received and more than left still to come.
func uploadHalfway(s api.Session, from, left int64) bool {
	for _, u := range s.Uploads {
		if u.State == "open" && u.Offset >= from && u.Offset < u.Size-left {
			return true
		}
	}
	return false
}
