package daemon_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

func TestHealthAndAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	want(t, e.do(token{}, "GET", "/healthz", nil, nil), 200)
	want(t, e.do(token{}, "GET", "/ping", nil, nil), 200)
	r := e.do(token{}, "GET", api.PathInfo, nil, nil)
	want(t, r, 401)
	if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("401 without WWW-Authenticate: %v", r.header)
	}
	want(t, e.do(token{Secret: "ou_wrong"}, "GET", api.PathInfo, nil, nil), 401)
	want(t, e.do(token{Secret: "ou_wrong"}, "POST", api.PathUploads+"/", nil, nil), 401)
	r = e.do(e.Tok, "GET", api.PathInfo, nil, nil)
	want(t, r, 200)
	var info api.Info
	r.json(t, &info)
	if info.Protocol != api.ProtocolVersion || info.Mode != "archive" {
		t.Fatalf("info %+v", info)
	}
	// A ref outside the token's globs is forbidden.
	r = e.doJSON(e.Narrow, "POST", api.PathSessions, api.SessionRequest{Refs: []api.RefUpdate{{Name: "main", New: fx.a}}})
	want(t, r, 403)
	m := e.do(token{}, "GET", "/metrics", nil, nil)
	want(t, m, 200)
	for _, s := range []string{"ostree_upload_auth_failures_total 3", "ostree_upload_tus_requests_total"} {
		if !strings.Contains(string(m.body), s) {
			t.Errorf("metrics lack %q", s)
		}
	}
}

func TestPushPublishesAndIsIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	r := e.push(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	want(t, r, 200)
	var s api.Session
	r.json(t, &s)
	if s.State != api.StatePublished {
		t.Fatalf("state %s", s.State)
	}
	// The spool files are freed after the answer; Settle waits for them.
	e.Settle()
	if left := spooled(e); len(left) > 0 {
		t.Fatalf("%d files left in the spool after the publish settled, e.g. %s", len(left), left[0])
	}
	e.CheckPublished(map[string]string{"main": fx.a})
	// Repeating the commit returns the same result.
	r2 := e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil)
	want(t, r2, 200)
	// Incremental push: only the diff is needed.
	s2 := e.session(e.Tok, []api.RefUpdate{{Name: "main", Old: fx.a, New: fx.b}}, false)
	needed := e.need(e.Tok, s2.ID, objectsOf(t, fx.b, ""))
	diff := objectsOf(t, fx.b, fx.a)
	if len(needed) > len(diff) {
		t.Fatalf("incremental push needs %d objects, the diff has %d", len(needed), len(diff))
	}
	if err := e.uploadAll(e.Tok, s2.ID, needed); err != nil {
		t.Fatal(err)
	}
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s2.ID+"/commit", nil), 200)
	e.CheckPublished(map[string]string{"main": fx.b})
}

// A graceful stop right after a publish's answer waits for the release of
// its spool files (within drain_timeout) rather than cut it short.
func TestStopAfterPublishFreesTheSpool(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	want(t, e.push(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}, {Name: "other", New: fx.c}}, false), 200)
	e.Stop()
	if left := spooled(e); len(left) > 0 {
		t.Fatalf("%d files left in the spool by a stop after the publish, e.g. %s", len(left), left[0])
	}
}

func TestTwoSessionsOnDifferentRefs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	s1 := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	s2 := e.session(e.Narrow, []api.RefUpdate{{Name: "other", New: fx.c}}, false)
	if s1.ID == s2.ID {
		t.Fatal("two tokens share a session")
	}
	for _, x := range []struct {
		tok    token
		id, co string
	}{{e.Tok, s1.ID, fx.a}, {e.Narrow, s2.ID, fx.c}} {
		if err := e.uploadAll(x.tok, x.id, e.need(x.tok, x.id, objectsOf(t, x.co, ""))); err != nil {
			t.Fatal(err)
		}
	}
	want(t, e.doJSON(e.Narrow, "POST", api.PathSessions+"/"+s2.ID+"/commit", nil), 200)
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s1.ID+"/commit", nil), 200)
	e.CheckPublished(map[string]string{"main": fx.a, "other": fx.c})
}

func TestResumeSameSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	u := []api.RefUpdate{{Name: "main", New: fx.a}}
	s1 := e.session(e.Tok, u, false)
	names := objectsOf(t, fx.a, "")
	needed := e.need(e.Tok, s1.ID, names)
	for _, n := range needed[:len(needed)/2] {
		name, _ := object.ParseName(n)
		want(t, e.upload(e.Tok, s1.ID, n, objectBytes(t, name)), 201)
	}
	e.Restart()
	s2 := e.session(e.Tok, u, false)
	if s2.ID != s1.ID || s2.Verified != len(needed)/2 {
		t.Fatalf("resumed session %s with %d verified, want %s with %d", s2.ID, s2.Verified, s1.ID, len(needed)/2)
	}
	if again := e.need(e.Tok, s2.ID, names); len(again) != len(needed)-len(needed)/2 {
		t.Fatalf("after resume %d objects needed, want %d", len(again), len(needed)-len(needed)/2)
	}
}

// trap turns a real .filez into a corrupt one in a way libostree's own
// checks would accept.
func traps(t *testing.T) map[string]func() (string, []byte) {
	var reg, link object.Name
	for _, n := range objectsOf(t, fx.a, "") {
		if n.Type != object.File {
			continue
		}
		b := objectBytes(t, n)
		hlen := binary.BigEndian.Uint32(b)
		mode := binary.BigEndian.Uint32(b[8+16:])
		if mode&0o170000 == 0o120000 && link == (object.Name{}) {
			link = n
		} else if mode&0o170000 == 0o100000 && len(b) > 2000 && hlen < 64 && reg == (object.Name{}) {
			reg = n
		}
	}
	if reg == (object.Name{}) || link == (object.Name{}) {
		t.Fatal("fixture lacks a regular file or a symlink")
	}
	orig, lorig := objectBytes(t, reg), objectBytes(t, link)
	clone := func(b []byte) []byte { return append([]byte(nil), b...) }
	return map[string]func() (string, []byte){
		"flipped byte": func() (string, []byte) { b := clone(orig); b[len(b)-10] ^= 1; return reg.String(), b },
		"truncated":    func() (string, []byte) { return reg.String(), orig[:len(orig)-4] },
		"size field +5": func() (string, []byte) {
			b := clone(orig)
			binary.BigEndian.PutUint64(b[8:], binary.BigEndian.Uint64(b[8:])+5)
			return reg.String(), b
		},
		"trailing bytes":       func() (string, []byte) { return reg.String(), append(clone(orig), "tail"...) },
		"symlink with payload": func() (string, []byte) { return link.String(), append(clone(lorig), 0x03, 0x00) },
		"oversized header": func() (string, []byte) {
			b := make([]byte, 8+2<<20)
			binary.BigEndian.PutUint32(b, 2<<20)
			return reg.String(), b
		},
		"wrong name": func() (string, []byte) { return link.String(), orig },
		"device mode": func() (string, []byte) {
			b := clone(orig)
			binary.BigEndian.PutUint32(b[8+16:], 0o020644)
			return reg.String(), b
		},
	}
}

func TestCorruptUploadsAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))
	for what, mk := range traps(t) {
		obj, data := mk()
		r := e.upload(e.Tok, s.ID, obj, data)
		if r.status != 422 || !strings.Contains(string(r.body), obj) {
			t.Errorf("%s: %d %s, want 422 naming %s", what, r.status, r.body, obj)
		}
	}
	// Nothing reached production; the session still publishes once the
	// real bytes arrive.
	if n := objectFiles(t, e.Repo); n != 0 {
		t.Fatalf("%d objects in production after refused uploads", n)
	}
	if err := e.uploadAll(e.Tok, s.ID, e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))); err != nil {
		t.Fatal(err)
	}
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil), 200)
	e.CheckPublished(map[string]string{"main": fx.a})
}

func TestIsolationBetweenTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	s1 := e.session(e.Tok, []api.RefUpdate{{Name: "other", New: fx.c}}, false)
	s2 := e.session(e.Narrow, []api.RefUpdate{{Name: "other", New: fx.c}}, false)
	if s1.ID == s2.ID {
		t.Fatal("two tokens share a session")
	}
	names := objectsOf(t, fx.c, "")
	needed := e.need(e.Tok, s1.ID, names)
	e.need(e.Narrow, s2.ID, names)
	obj, _ := object.ParseName(needed[0])
	data := objectBytes(t, obj)
	// An upload of s1 left open halfway.
	r := e.do(e.Tok, "POST", api.PathUploads+"/", nil, map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Length": strconv.Itoa(len(data)),
		"Upload-Metadata": meta(api.MetaSession, s1.ID, api.MetaObject, needed[0])})
	want(t, r, 201)
	loc := r.header.Get("Location")
	path := loc[strings.Index(loc, api.PathUploads):]

	want(t, e.do(e.Narrow, "GET", api.PathSessions+"/"+s1.ID, nil, nil), 404)
	want(t, e.doJSON(e.Narrow, "POST", api.PathSessions+"/"+s1.ID+"/commit", nil), 404)
	want(t, e.do(e.Narrow, "DELETE", api.PathSessions+"/"+s1.ID, nil, nil), 404)
	want(t, e.upload(e.Narrow, s1.ID, needed[0], data), 404)
	tus := map[string]string{"Tus-Resumable": "1.0.0"}
	want(t, e.do(e.Narrow, "HEAD", path, nil, tus), 404)
	want(t, e.do(e.Narrow, "DELETE", path, nil, tus), 404)
	sid2, up1 := s2.ID, path[strings.LastIndex(path, "/")+1:]
	for _, p := range []string{
		api.PathUploads + "/" + sid2 + "/../" + s1.ID + "/" + up1,
		api.PathUploads + "/" + sid2 + "/..%2F" + s1.ID + "%2F" + up1,
		api.PathUploads + "/" + sid2 + "%2F..%2F" + s1.ID + "/" + up1,
		api.PathUploads + "/" + s1.ID + "%2F" + up1,
		api.PathUploads + "/" + strings.ToUpper(s1.ID) + "/" + up1,
		api.PathUploads + "/" + s1.ID + "/" + up1 + "/",
		api.PathUploads + "/" + s1.ID,
		api.PathUploads + "/../sessions",
	} {
		for _, tok := range []token{e.Narrow, e.Tok} {
			if r := e.do(tok, "HEAD", p, nil, tus); r.status == 200 {
				t.Errorf("HEAD %s answered 200", p)
			}
		}
	}
	// The owner still sees it.
	r = e.do(e.Tok, "HEAD", path, nil, tus)
	want(t, r, 200)
	if r.header.Get("Upload-Offset") != "0" {
		t.Fatalf("offset %q", r.header.Get("Upload-Offset"))
	}
	// A second upload of the same object: 409 naming the live one.
	r = e.upload(e.Tok, s1.ID, needed[0], data)
	if r.status != 409 || !strings.Contains(string(r.body), path) {
		t.Fatalf("second upload: %d %s", r.status, r.body)
	}
}

// A PATCH cut by the network keeps its bytes across a daemon restart, and
// the upload resumes from the offset HEAD reports.
func TestInterruptedPatchResumesAfterRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	needed := e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))
	var obj string
	var data []byte
	for _, n := range needed {
		name, _ := object.ParseName(n)
		if b := objectBytes(t, name); len(b) > 30000 {
			obj, data = n, b
			break
		}
	}
	if obj == "" {
		t.Fatal("no large object in the fixture")
	}
	r := e.do(e.Tok, "POST", api.PathUploads+"/", nil, map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Length": strconv.Itoa(len(data)),
		"Upload-Metadata": meta(api.MetaSession, s.ID, api.MetaObject, obj)})
	want(t, r, 201)
	loc := r.header.Get("Location")
	path := loc[strings.Index(loc, api.PathUploads):]

	// Send headers and half the body, then drop the connection.
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	half := len(data) / 2
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: %d\r\n\r\n", path, e.Tok.Secret, len(data))
	conn.Write(data[:half])
	time.Sleep(300 * time.Millisecond)
	conn.Close()
	time.Sleep(300 * time.Millisecond)

	e.Restart()
	tus := map[string]string{"Tus-Resumable": "1.0.0"}
	r = e.do(e.Tok, "HEAD", path, nil, tus)
	want(t, r, 200)
	off, _ := strconv.Atoi(r.header.Get("Upload-Offset"))
	if off <= 0 || off > half {
		t.Fatalf("offset after restart %d, want 1..%d", off, half)
	}
	var sv api.Session
	gr := e.do(e.Tok, "GET", api.PathSessions+"/"+s.ID, nil, nil)
	want(t, gr, 200)
	gr.json(t, &sv)
	if len(sv.Uploads) != 1 || sv.Uploads[0].Offset != int64(off) || sv.Uploads[0].URL != path {
		t.Fatalf("session uploads %+v, want one at offset %d", sv.Uploads, off)
	}
	r = e.do(e.Tok, "PATCH", path, strings.NewReader(string(data[off:])), map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Offset": strconv.Itoa(off), "Content-Type": "application/offset+octet-stream"})
	want(t, r, 204)
	// Verified: HEAD is answered from the journal.
	r = e.do(e.Tok, "HEAD", path, nil, tus)
	want(t, r, 200)
	if r.header.Get("Upload-Offset") != strconv.Itoa(len(data)) {
		t.Fatalf("offset of verified upload %q", r.header.Get("Upload-Offset"))
	}
}

func TestRefusalsChangeNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	want(t, e.push(e.Tok, []api.RefUpdate{{Name: "main", New: fx.b}}, false), 200)
	objs := objectFiles(t, e.Repo)

	// A session from a stale view of the ref is refused at creation.
	r := e.doJSON(e.Tok, "POST", api.PathSessions, api.SessionRequest{Refs: []api.RefUpdate{{Name: "main", Old: fx.a, New: fx.d}}})
	want(t, r, 409)
	// Compare-and-swap at commit: two sessions from the same view; the
	// second to commit loses.
	sA := e.session(e.Tok, []api.RefUpdate{{Name: "other", New: fx.c}}, false)
	sB := e.session(e.Tok, []api.RefUpdate{{Name: "other", New: fx.a}}, true)
	for _, x := range []struct{ id, c string }{{sA.ID, fx.c}, {sB.ID, fx.a}} {
		if err := e.uploadAll(e.Tok, x.id, e.need(e.Tok, x.id, objectsOf(t, x.c, ""))); err != nil {
			t.Fatal(err)
		}
	}
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+sA.ID+"/commit", nil), 200)
	before := e.Refs()
	r = e.doJSON(e.Tok, "POST", api.PathSessions+"/"+sB.ID+"/commit", nil)
	want(t, r, 409)
	if !strings.Contains(string(r.body), "moved") {
		t.Fatalf("CAS refusal says %s", r.body)
	}
	// Older than the ref's commit: B -> A (an ancestor). (B -> D, unrelated
	// and newer, would move: see TestUpdateRule.)
	for _, newc := range []string{fx.a} {
		s := e.session(e.Tok, []api.RefUpdate{{Name: "main", Old: fx.b, New: newc}}, false)
		if err := e.uploadAll(e.Tok, s.ID, e.need(e.Tok, s.ID, objectsOf(t, newc, ""))); err != nil {
			t.Fatal(err)
		}
		r = e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil)
		want(t, r, 409)
		if apiError(t, r).Code != api.CodeNotNewer || !strings.Contains(string(r.body), "--force") {
			t.Fatalf("refusal of an older commit says %s", r.body)
		}
	}
	if got := e.Refs(); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("refs changed: %v -> %v", before, got)
	}
	storetest.MustOstree(t, "fsck", "--repo="+e.Repo)
	if n := objectFiles(t, e.Repo); n < objs {
		t.Fatalf("objects shrank %d -> %d", objs, n)
	}
	// A commit bound to another ref is refused for main.
	r = e.push(e.Tok, []api.RefUpdate{{Name: "main", Old: fx.b, New: fx.c}}, false)
	want(t, r, 409)
	if !strings.Contains(string(r.body), "bound to refs [other]") {
		t.Fatalf("binding refusal says %s", r.body)
	}
	// force moves it.
	want(t, e.push(e.Tok, []api.RefUpdate{{Name: "main", Old: fx.b, New: fx.d}}, true), 200)
	e.CheckPublished(map[string]string{"main": fx.d, "other": fx.c})
}

// Objects verified in a session that was refused (or aborted) count as
// present for the same token's next session, not for another token's.
func TestRefusedSessionLosesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	s1 := e.session(e.Tok, []api.RefUpdate{{Name: "other", New: fx.c}}, false)
	names := objectsOf(t, fx.c, "")
	needed := e.need(e.Tok, s1.ID, names)
	if err := e.uploadAll(e.Tok, s1.ID, needed); err != nil {
		t.Fatal(err)
	}
	want(t, e.do(e.Tok, "DELETE", api.PathSessions+"/"+s1.ID, nil, nil), 204)
	want(t, e.do(e.Tok, "DELETE", api.PathSessions+"/"+s1.ID, nil, nil), 409)
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s1.ID+"/commit", nil), 409)
	s2 := e.session(e.Tok, []api.RefUpdate{{Name: "other", New: fx.c}}, false)
	if s2.ID == s1.ID {
		t.Fatal("an aborted session was resumed")
	}
	if again := e.need(e.Tok, s2.ID, names); len(again) != 0 {
		t.Fatalf("%d of %d objects must be sent again after an abort", len(again), len(needed))
	}
	s3 := e.session(e.Narrow, []api.RefUpdate{{Name: "other", New: fx.c}}, false)
	if other := e.need(e.Narrow, s3.ID, names); len(other) != len(needed) {
		t.Fatalf("another token reuses %d verified objects", len(needed)-len(other))
	}
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s2.ID+"/commit", nil), 200)
	e.CheckPublished(map[string]string{"other": fx.c})
}

// Negotiation goes in batches, so a session may name far more objects than
// one request carries.
func TestNegotiationInBatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	names := make([]object.Name, 3*api.MaxNamesPerRequest+7)
	for i := range names {
		names[i].Type = object.File
		binary.BigEndian.PutUint64(names[i].Sum[:], uint64(i)+1)
	}
	if got := e.need(e.Tok, s.ID, names); len(got) != len(names) {
		t.Fatalf("%d of %d synthetic objects needed", len(got), len(names))
	}
	var sv api.Session
	r := e.do(e.Tok, "GET", api.PathSessions+"/"+s.ID, nil, nil)
	r.json(t, &sv)
	if sv.Objects != len(names) {
		t.Fatalf("session counts %d objects, want %d", sv.Objects, len(names))
	}
	big := make([]string, api.MaxNamesPerRequest+1)
	for i := range big {
		big[i] = names[0].String()
	}
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/objects", api.ObjectsRequest{Objects: big}), 413)
}

func TestMaxObjectsPerSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Config.MaxObjectsPerSession = 10
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	names := objectsOf(t, fx.a, "")
	var strs []string
	for _, n := range names[:11] {
		strs = append(strs, n.String())
	}
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/objects", api.ObjectsRequest{Objects: strs}), 413)
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/objects", api.ObjectsRequest{Objects: strs[:10]}), 200)
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/objects", api.ObjectsRequest{Objects: strs[10:]}), 413)
	for _, bad := range []string{"../../etc/passwd", strings.Repeat("A", 64) + ".filez", "x"} {
		want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/objects", api.ObjectsRequest{Objects: []string{bad}}), 400)
	}
}

func TestExpiryFreesDisk(t *testing.T) {
	e := newEnv(t)
	e.Config.SessionTTL = config.Duration{Duration: time.Second}
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	needed := e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))
	first, _ := object.ParseName(needed[0])
	want(t, e.upload(e.Tok, s.ID, needed[0], objectBytes(t, first)), 201)
	second, _ := object.ParseName(needed[1])
	data := objectBytes(t, second)
	want(t, e.do(e.Tok, "POST", api.PathUploads+"/", strings.NewReader(string(data[:len(data)/2])), map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Length": strconv.Itoa(len(data)), "Content-Type": "application/offset+octet-stream",
		"Upload-Metadata": meta(api.MetaSession, s.ID, api.MetaObject, needed[1])}), 201)
	spooled := filepath.Join(e.State, "spools", e.Tok.Hash, filepath.FromSlash(first.RelPath()))
	if _, err := os.Stat(spooled); err != nil {
		t.Fatalf("verified object not in the spool: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var sv api.Session
		r := e.do(e.Tok, "GET", api.PathSessions+"/"+s.ID, nil, nil)
		r.json(t, &sv)
		if sv.State == api.StateExpired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session still %s after the TTL", sv.State)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := os.Stat(spooled); !os.IsNotExist(err) {
		t.Fatalf("spool object survived expiry: %v", err)
	}
	left := 0
	filepath.Walk(filepath.Join(e.State, "uploads"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			left++
		}
		return nil
	})
	if left != 0 {
		t.Fatalf("%d upload files survived expiry", left)
	}
}

// One daemon per production repo and per state dir.
func TestSecondDaemonRefuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	for name, state := range map[string]string{"same state dir": e.State, "other state dir": e.State + "2"} {
		cfg := e.Effective()
		cfg.StateDir = state
		_, err := daemon.New(ctx, cfg, daemon.Options{Version: "test"})
		if err == nil || !strings.Contains(err.Error(), "in use") {
			t.Errorf("%s: second daemon: %v", name, err)
		}
	}
	cfg := newEnv(t).Effective()
	cfg.StateDir = filepath.Join(daemontest.SmallDisk(t, "16m"), "state")
	_, err := daemon.New(ctx, cfg, daemon.Options{Version: "test"})
	if err == nil || !strings.Contains(err.Error(), "not on the filesystem") {
		t.Errorf("state dir on another filesystem: %v", err)
	}
	if _, err := os.Stat(cfg.Repo); !os.IsNotExist(err) {
		t.Errorf("the repository was created before the state dir was refused: %v", err)
	}
}

// At start-up, upload files the journal does not know are deleted, and
// journal uploads whose bytes are gone are forgotten (the client re-sends).
func TestStartupReconciles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	needed := e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))
	tus := map[string]string{"Tus-Resumable": "1.0.0"}
	var paths []string
	for _, n := range needed[:2] {
		r := e.do(e.Tok, "POST", api.PathUploads+"/", nil, map[string]string{
			"Tus-Resumable": "1.0.0", "Upload-Length": "100", "Upload-Metadata": meta(api.MetaSession, s.ID, api.MetaObject, n)})
		want(t, r, 201)
		loc := r.header.Get("Location")
		paths = append(paths, loc[strings.Index(loc, api.PathUploads):])
	}
	e.Stop()
	uploads := filepath.Join(e.State, "uploads")
	stray := filepath.Join(uploads, s.ID, strings.Repeat("ab", 16))
	os.WriteFile(stray, []byte("left behind"), 0o600)
	os.WriteFile(stray+".info", []byte("{}"), 0o600)
	os.Remove(filepath.Join(uploads, filepath.FromSlash(strings.TrimPrefix(paths[0], api.PathUploads+"/"))))
	e.Start()
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Fatalf("stray upload file survived start-up: %v", err)
	}
	want(t, e.do(e.Tok, "HEAD", paths[0], nil, tus), 404)
	want(t, e.do(e.Tok, "HEAD", paths[1], nil, tus), 200)
}

// One token's verified uploads neither complete another token's commit nor
// disappear when the other token's session expires.
func TestTokensDoNotShareUploads(t *testing.T) {
	e := newEnv(t)
	e.Config.SessionTTL = config.Duration{Duration: time.Second}
	e.Start()
	names := objectsOf(t, fx.c, "")
	sA := e.session(e.Tok, []api.RefUpdate{{Name: "other", New: fx.c}}, false)
	if err := e.uploadAll(e.Tok, sA.ID, e.need(e.Tok, sA.ID, names)); err != nil {
		t.Fatal(err)
	}
	sB := e.session(e.Narrow, []api.RefUpdate{{Name: "other", New: fx.c}}, false)
	neededB := e.need(e.Narrow, sB.ID, names)
	if len(neededB) != len(names) {
		t.Fatalf("token B needs %d of %d objects another token uploaded", len(neededB), len(names))
	}
	r := e.doJSON(e.Narrow, "POST", api.PathSessions+"/"+sB.ID+"/commit", nil)
	if r.status != 422 {
		t.Fatalf("commit with another token's uploads only: %d %s", r.status, r.body)
	}
	if err := e.uploadAll(e.Narrow, sB.ID, neededB); err != nil {
		t.Fatal(err)
	}
	// A's session expires while B keeps its own alive.
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.need(e.Narrow, sB.ID, names[:1])
		var sv api.Session
		e.do(e.Tok, "GET", api.PathSessions+"/"+sA.ID, nil, nil).json(t, &sv)
		if sv.State == api.StateExpired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session A still %s", sv.State)
		}
		time.Sleep(200 * time.Millisecond)
	}
	want(t, e.doJSON(e.Narrow, "POST", api.PathSessions+"/"+sB.ID+"/commit", nil), 200)
	e.CheckPublished(map[string]string{"other": fx.c})
}

func TestUploadMisuseRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	needed := e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))
	var tree string
	for _, n := range needed {
		if strings.HasSuffix(n, ".dirtree") {
			tree = n
		}
	}
	hdr := func(obj string, length int64, extra ...string) map[string]string {
		h := map[string]string{"Tus-Resumable": "1.0.0", "Upload-Length": strconv.FormatInt(length, 10),
			"Upload-Metadata": meta(api.MetaSession, s.ID, api.MetaObject, obj)}
		for i := 0; i < len(extra); i += 2 {
			h[extra[i]] = extra[i+1]
		}
		return h
	}
	for name, c := range map[string]struct {
		h      map[string]string
		status int
	}{
		"concatenation final":    {hdr(tree, 10, "Upload-Concat", "final;"+api.PathUploads+"/"+s.ID+"/../x/y"), 0},
		"concatenation partial":  {hdr(tree, 10, "Upload-Concat", "partial"), 0},
		"metadata over its cap":  {hdr(tree, object.MaxMetadataSize+1), 413},
		"deferred length":        {map[string]string{"Tus-Resumable": "1.0.0", "Upload-Defer-Length": "1", "Upload-Metadata": meta(api.MetaSession, s.ID, api.MetaObject, tree)}, 0},
		"foreign commitmeta":     {hdr(fx.c+".commitmeta", 10), 0},
		"unnegotiated object":    {hdr(strings.Repeat("ab", 32)+".filez", 10), 409},
		"no session in metadata": {map[string]string{"Tus-Resumable": "1.0.0", "Upload-Length": "10", "Upload-Metadata": meta(api.MetaObject, tree)}, 400},
	} {
		r := e.do(e.Tok, "POST", api.PathUploads+"/", nil, c.h)
		if r.status < 400 || (c.status != 0 && r.status != c.status) {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	r := e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/objects", api.ObjectsRequest{Objects: []string{fx.c + ".commitmeta"}})
	want(t, r, 400)
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/objects", api.ObjectsRequest{Objects: []string{fx.a + ".commitmeta"}}), 200)
}

// Ended sessions are forgotten after the retention period.
func TestEndedSessionsAreForgotten(t *testing.T) {
	e := newEnv(t)
	e.Config.SessionTTL, e.Config.SessionRetention = config.Duration{Duration: time.Second}, config.Duration{Duration: 2 * time.Second}
	e.Start()
	want(t, e.push(e.Tok, []api.RefUpdate{{Name: "other", New: fx.c}}, false), 200)
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	want(t, e.do(e.Tok, "DELETE", api.PathSessions+"/"+s.ID, nil, nil), 204)
	deadline := time.Now().Add(15 * time.Second)
	for e.do(e.Tok, "GET", api.PathSessions+"/"+s.ID, nil, nil).status != 404 {
		if time.Now().After(deadline) {
			t.Fatal("ended session never forgotten")
		}
		time.Sleep(250 * time.Millisecond)
	}
	e.CheckPublished(map[string]string{"other": fx.c})
}

// The update rule (ostree-push's): a ref moves to any newer commit,
// whatever its parents (a CI build in a fresh repository has none); an
// older commit is refused unless forced; a commit with the ref's tree and
// metadata (a reproducible rebuild) is up to date unless forced, while the
// same tree with new metadata (an end-of-life republish) moves; with
// require_ancestry a newer commit must also descend from the ref's.
func TestUpdateRule(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	build := filepath.Join(dir, "build")
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+build)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(tree, 0o755)
	os.WriteFile(filepath.Join(tree, "f"), []byte("v1"), 0o644)
	commit := func(ts int64, extra ...string) string {
		args := append([]string{"commit", "--repo=" + build, "--orphan", "--tree=dir=" + tree, fmt.Sprintf("--timestamp=@%d", ts), "-s", "x", "--bind-ref=main"}, extra...)
		return strings.TrimSpace(storetest.MustOstree(t, args...))
	}
	first := commit(1700000000)
	rebuild := commit(1700000100)                                            // same tree and metadata, later
	eol := commit(1700000200, "--add-metadata-string=ostree.endoflife=gone") // same tree, new metadata
	os.WriteFile(filepath.Join(tree, "f"), []byte("v2"), 0o644)
	unrelatedNewer := commit(1700000300)
	os.WriteFile(filepath.Join(tree, "f"), []byte("v3"), 0o644)
	older := commit(1600000000)
	for _, c := range []string{first, rebuild, eol, unrelatedNewer, older} {
		storetest.MustOstree(t, "refs", "--repo="+build, "--create=c/"+c[:12], c)
	}

	for _, requireAncestry := range []bool{false, true} {
		e := newEnv(t)
		e.Config.RequireAncestry = requireAncestry
		e.Start()
		move := func(from, to string, force bool) resp {
			var old string
			if from != "" {
				old = from
			}
			return e.pushFrom(build, e.Tok, []api.RefUpdate{{Name: "main", Old: old, New: to}}, force)
		}
		want(t, move("", first, false), 200)
		r := move(first, rebuild, false)
		if r.status != 409 || apiError(t, r).Code != api.CodeSameContent {
			t.Fatalf("a reproducible rebuild: %d %s", r.status, r.body)
		}
		e.CheckPublished(map[string]string{"main": first})
		if requireAncestry {
			r = move(first, unrelatedNewer, false)
			if r.status != 409 || apiError(t, r).Code != api.CodeNotNewer || !strings.Contains(string(r.body), "require_ancestry") {
				t.Fatalf("require_ancestry, an unrelated newer commit: %d %s", r.status, r.body)
			}
			want(t, move(first, unrelatedNewer, true), 200)
			e.CheckPublished(map[string]string{"main": unrelatedNewer})
			continue
		}
		want(t, move(first, eol, false), 200) // same tree, new metadata
		want(t, move(eol, unrelatedNewer, false), 200)
		r = move(unrelatedNewer, older, false)
		if r.status != 409 || apiError(t, r).Code != api.CodeNotNewer || !strings.Contains(string(r.body), "--force") {
			t.Fatalf("an older commit: %d %s", r.status, r.body)
		}
		e.CheckPublished(map[string]string{"main": unrelatedNewer})
		want(t, move(unrelatedNewer, older, true), 200)
		e.CheckPublished(map[string]string{"main": older})
	}
}

// In a push of several refs, a ref whose new commit is a reproducible
// rebuild stays where it is while the others move (a Flatpak app rebuilt
// with an unchanged .Locale), and the session names it; a daemon killed
// after the publish's intent finishes it the same way at start-up. When
// every ref is such a rebuild, nothing moves: 409 same-content.
func TestRebuiltRefStaysAmongMovedOnes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	build := filepath.Join(dir, "build")
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+build)
	commit := func(ref, content string, ts int64) string {
		tree := filepath.Join(dir, ref+content)
		os.MkdirAll(tree, 0o755)
		os.WriteFile(filepath.Join(tree, "f"), []byte(content), 0o644)
		return strings.TrimSpace(storetest.MustOstree(t, "commit", "--repo="+build, "--orphan", "--tree=dir="+tree,
			fmt.Sprintf("--timestamp=@%d", ts), "-s", "build", "--bind-ref="+ref))
	}
	app1, locale1 := commit("app", "v1", 1700000000), commit("app.Locale", "fr", 1700000000)
	app2, locale2 := commit("app", "v2", 1700000100), commit("app.Locale", "fr", 1700000100)
	app3, locale3 := commit("app", "v2", 1700000200), commit("app.Locale", "fr", 1700000200)
	second := []api.RefUpdate{{Name: "app", Old: app1, New: app2}, {Name: "app.Locale", Old: locale1, New: locale2}}

	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			p := e.StartProcess(fx.bin, "")
			want(t, e.pushFrom(build, e.Tok, []api.RefUpdate{{Name: "app", New: app1}, {Name: "app.Locale", New: locale1}}, false), 200)
			var s api.Session
			if !crash {
				r := e.pushFrom(build, e.Tok, second, false)
				want(t, r, 200)
				r.json(t, &s)
			} else {
				p.Kill()
				p = e.StartProcess(fx.bin, "after-intent")
				s = e.session(e.Tok, second, false)
				e.packFrom(build, e.Tok, s.ID, second)
				e.doJSONQuiet(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil)
				waitKilled(t, p)
				if refs := e.Refs(); refs["app"] != app1 || refs["app.Locale"] != locale1 {
					t.Fatalf("refs moved before the restart: %v", refs)
				}
				e.StartProcess(fx.bin, "")
				r := e.doJSON(e.Tok, "GET", api.PathSessions+"/"+s.ID, nil)
				want(t, r, 200)
				r.json(t, &s)
			}
			if s.State != "published" || !slices.Equal(s.Unchanged, []string{"app.Locale"}) {
				t.Fatalf("session %s, unchanged %v; want published, [app.Locale]", s.State, s.Unchanged)
			}
			e.CheckPublished(map[string]string{"app": app2, "app.Locale": locale1})

			r := e.pushFrom(build, e.Tok, []api.RefUpdate{{Name: "app", Old: app2, New: app3}, {Name: "app.Locale", Old: locale1, New: locale3}}, false)
			if r.status != 409 || apiError(t, r).Code != api.CodeSameContent {
				t.Fatalf("every ref a rebuild: %d %s", r.status, r.body)
			}
			e.CheckPublished(map[string]string{"app": app2, "app.Locale": locale1})
		})
	}
}

// Publishes committed at once share their summary regenerations (a group
// commit), and each is answered only once the summary lists its ref. In a
// Flatpak repository, where a regeneration costs more than moving a ref,
// twenty publishes need far fewer than twenty.
func TestConcurrentPublishesShareSummaries(t *testing.T) {
	t.Parallel()
	for name, prefix := range map[string]string{"plain": "", "flatpak": "app/org.example.App"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runs := concurrentPublishes(t, prefix)
			if prefix != "" && runs > 10 {
				t.Errorf("%v regenerations for 20 Flatpak publishes at once", runs)
			}
		})
	}
}

// concurrentPublishes commits twenty one-ref sessions at once, checks
// each answer and returns how many summary regenerations they took.
func concurrentPublishes(t *testing.T, prefix string) float64 {
	e := newEnv(t)
	e.Start()
	const n = 20
	build := filepath.Join(t.TempDir(), "build")
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+build)
	sids := make([]string, n)
	want := map[string]string{}
	refs := make([]string, n)
	for i := range sids {
		refs[i] = fmt.Sprintf("%sr%02d", prefix, i)
		if prefix != "" {
			refs[i] = fmt.Sprintf("%s%02d/x86_64/stable", prefix, i)
		}
		tree := t.TempDir()
		os.WriteFile(filepath.Join(tree, "f"), []byte(refs[i]), 0o644)
		c, err := storetest.CommitTree(build, refs[i], tree, 1700000000)
		if err != nil {
			t.Fatal(err)
		}
		u := []api.RefUpdate{{Name: refs[i], New: strings.TrimSpace(c)}}
		s := e.session(e.Tok, u, false)
		e.packFrom(build, e.Tok, s.ID, u)
		sids[i], want[refs[i]] = s.ID, u[0].New
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i, sid := range sids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.send(e.Tok, "POST", api.PathSessions+"/"+sid+"/commit", nil, nil)
			if err != nil || r.status != 200 {
				t.Errorf("commit %d: %v %d %s", i, err, r.status, r.body)
				return
			}
			sum, err := storetest.Ostree("summary", "--view", "--repo="+e.Repo)
			if err != nil || !strings.Contains(sum, "* "+refs[i]+"\n") {
				t.Errorf("answered before the summary listed %s: %v\n%s", refs[i], err, sum)
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	res, err := http.Get(e.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(res.Body)
	res.Body.Close()
	runs, _ := sample(text, "ostree_upload_metadata_update_seconds_count")
	t.Logf("%d one-ref publishes at once: %s, %v summary regenerations", n, wall.Round(time.Millisecond), runs)
	if runs < 1 || runs > n {
		t.Errorf("%v summary regenerations for %d publishes", runs, n)
	}
	e.CheckPublished(want)
	return runs
}

// The summary is where a publish's refs appear together: while twenty
// two-ref publishes land at once, no summary a client can read shows one
// ref of a session moved and the other not. (The moment between a
// session's two refs is short: this catches a regeneration that reads
// refs while they move only now and then; TestGroupCommitRunsUnderTheRefsLock
// in package repository holds the mechanism itself.)
func TestSummaryShowsPublishesWhole(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	const n = 20
	build := filepath.Join(t.TempDir(), "build")
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+build)
	sids := make([]string, n)
	want := map[string]string{}
	for i := range sids {
		var u []api.RefUpdate
		// Flatpak refs: each regeneration runs flatpak build-update-repo,
		// long beside the moment between a session's two refs.
		for _, ref := range []string{fmt.Sprintf("app/org.example.A%02d/x86_64/stable", i), fmt.Sprintf("app/org.example.A%02d.Locale/x86_64/stable", i)} {
			tree := t.TempDir()
			os.WriteFile(filepath.Join(tree, "f"), []byte(ref), 0o644)
			c, err := storetest.CommitTree(build, ref, tree, 1700000000)
			if err != nil {
				t.Fatal(err)
			}
			u = append(u, api.RefUpdate{Name: ref, New: strings.TrimSpace(c)})
			want[ref] = u[len(u)-1].New
		}
		s := e.session(e.Tok, u, false)
		e.packFrom(build, e.Tok, s.ID, u)
		sids[i] = s.ID
	}
	stop := make(chan struct{})
	watched := make(chan int)
	go func() {
		views := 0
		defer func() { watched <- views }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// The summary is replaced by a rename: each read is one
			// whole summary, its ref names NUL-terminated strings.
			sum, err := os.ReadFile(filepath.Join(e.Repo, "summary"))
			if err != nil {
				continue // none yet
			}
			views++
			for i := range n {
				a := bytes.Contains(sum, fmt.Appendf(nil, "app/org.example.A%02d/x86_64/stable\x00", i))
				b := bytes.Contains(sum, fmt.Appendf(nil, "app/org.example.A%02d.Locale/x86_64/stable\x00", i))
				if a != b {
					t.Errorf("a summary shows one ref of session %d's two (app: %v, locale: %v)", i, a, b)
					return
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for i, sid := range sids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, err := e.send(e.Tok, "POST", api.PathSessions+"/"+sid+"/commit", nil, nil); err != nil || r.status != 200 {
				t.Errorf("commit %d: %v %d %s", i, err, r.status, r.body)
			}
		}()
	}
	wg.Wait()
	close(stop)
	t.Logf("%d summaries read while the publishes landed", <-watched)
	e.CheckPublished(want)
}
