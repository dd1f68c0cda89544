package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
	"golang.org/x/sys/unix"
)

// A state dir moved while the daemon is stopped keeps its partial
// uploads: they resume from their offset at the new place.
func TestMovedStateDir(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	needed := e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))
	var big object.Name
	var data []byte
	for _, n := range needed { // the largest object, to cut in two
		name, _ := object.ParseName(n)
		if b := objectBytes(t, name); len(b) > len(data) {
			big, data = name, b
		}
	}
	r := e.do(e.Tok, "POST", api.PathUploads+"/", bytes.NewReader(data[:len(data)/2]), map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Length": strconv.Itoa(len(data)), "Content-Type": "application/offset+octet-stream",
		"Upload-Metadata": meta(api.MetaSession, s.ID, api.MetaObject, big.String())})
	want(t, r, 201)
	e.Stop()
	moved := filepath.Join(filepath.Dir(e.State), "moved-state")
	if err := os.Rename(e.State, moved); err != nil {
		t.Fatal(err)
	}
	e.State = moved
	e.Start()

	var sv api.Session
	e.do(e.Tok, "GET", api.PathSessions+"/"+s.ID, nil, nil).json(t, &sv)
	if len(sv.Uploads) != 1 || sv.Uploads[0].Offset != int64(len(data)/2) {
		t.Fatalf("after the move: %+v", sv.Uploads)
	}
	tus := map[string]string{"Tus-Resumable": "1.0.0"}
	h := e.do(e.Tok, "HEAD", sv.Uploads[0].URL, nil, tus)
	want(t, h, 200)
	if h.header.Get("Upload-Offset") != strconv.Itoa(len(data)/2) {
		t.Fatalf("offset after the move: %q", h.header.Get("Upload-Offset"))
	}
	want(t, e.do(e.Tok, "PATCH", sv.Uploads[0].URL, bytes.NewReader(data[len(data)/2:]), map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Offset": strconv.Itoa(len(data) / 2), "Content-Type": "application/offset+octet-stream"}), 204)
	if err := e.uploadAll(e.Tok, s.ID, e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))); err != nil {
		t.Fatal(err)
	}
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil), 200)
	e.CheckPublished(map[string]string{"main": fx.a})
	left, _ := os.ReadDir(filepath.Join(moved, "uploads"))
	if len(left) != 0 {
		t.Errorf("uploads/ keeps %d entries after the publish", len(left))
	}
}

// A session whose only activity is one long upload receiving bytes does
// not expire; once the bytes stop, it does.
func TestLongUploadKeepsSession(t *testing.T) {
	e := newEnv(t)
	e.Config.SessionTTL = config.Duration{Duration: time.Second}
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	needed := e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))
	name, _ := object.ParseName(needed[0])
	data := objectBytes(t, name)
	r := e.do(e.Tok, "POST", api.PathUploads+"/", nil, map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Length": strconv.Itoa(len(data)),
		"Upload-Metadata": meta(api.MetaSession, s.ID, api.MetaObject, needed[0])})
	want(t, r, 201)
	loc := r.header.Get("Location")
	up := loc[strings.Index(loc, api.PathUploads):]
	state := func() string {
		var sv api.Session
		e.do(e.Tok, "GET", api.PathSessions+"/"+s.ID, nil, nil).json(t, &sv)
		return sv.State
	}
	// One byte every 300 ms for four TTLs: a slow link.
	for off := 0; off < 13 && off < len(data)-1; off++ {
		want(t, e.do(e.Tok, "PATCH", up, bytes.NewReader(data[off:off+1]), map[string]string{
			"Tus-Resumable": "1.0.0", "Upload-Offset": strconv.Itoa(off), "Content-Type": "application/offset+octet-stream"}), 204)
		time.Sleep(300 * time.Millisecond)
	}
	if st := state(); st != api.StateOpen {
		t.Fatalf("a session receiving bytes became %s", st)
	}
	deadline := time.Now().Add(10 * time.Second)
	for state() != api.StateExpired {
		if time.Now().After(deadline) {
			t.Fatal("a session whose upload stopped did not expire")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A commit while another process holds the repository's lock (an admin's
// ostree prune) gets 503 with Retry-After, moves nothing, and succeeds
// once the lock is gone.
func TestCommitWhileRepoLocked(t *testing.T) {
	e := newEnv(t)
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+e.Repo)
	storetest.MustOstree(t, "config", "--repo="+e.Repo, "set", "core.lock-timeout-secs", "1")
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	if err := e.uploadAll(e.Tok, s.ID, e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))); err != nil {
		t.Fatal(err)
	}
	// A partial upload of the commit's detached metadata (which may be
	// sent again until the publish).
	cm := e.need(e.Tok, s.ID, []object.Name{{Sum: mustSum(t, fx.a), Type: object.CommitMeta}})
	if len(cm) != 1 {
		t.Fatalf("detached metadata not needed: %v", cm)
	}
	r := e.do(e.Tok, "POST", api.PathUploads+"/", strings.NewReader("0123456789"), map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Length": "100", "Content-Type": "application/offset+octet-stream",
		"Upload-Metadata": meta(api.MetaSession, s.ID, api.MetaObject, cm[0])})
	want(t, r, 201)
	loc := r.header.Get("Location")
	up := loc[strings.Index(loc, api.PathUploads):]
	lock, err := os.OpenFile(filepath.Join(e.Repo, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	// libostree locks with open file description locks, as ostree prune
	// holds them: exclusive.
	if err := unix.FcntlFlock(lock.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}); err != nil {
		t.Fatal(err)
	}
	r = e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil)
	if r.status != 503 || r.header.Get("Retry-After") != "30" || !strings.Contains(string(r.body), "locked by another process") {
		t.Fatalf("commit under the lock: %d %v %s", r.status, r.header, r.body)
	}
	if refs := e.Refs(); len(refs) != 0 {
		t.Fatalf("refs moved under the lock: %v", refs)
	}
	// The lock stopped the import of the objects, before the publish
	// journaled anything: the session is still open, its upload still
	// live, and the commit is for the client to repeat.
	var sv api.Session
	e.do(e.Tok, "GET", api.PathSessions+"/"+s.ID, nil, nil).json(t, &sv)
	if sv.State != api.StateOpen {
		t.Fatalf("session %s after the 503", sv.State)
	}
	want(t, e.do(e.Tok, "HEAD", up, nil, map[string]string{"Tus-Resumable": "1.0.0"}), 200)
	if m := e.do(token{}, "GET", "/metrics", nil, nil); !strings.Contains(string(m.body), "ostree_upload_publish_errors_total 1") {
		t.Error("the failed publish is not counted")
	}
	if err := unix.FcntlFlock(lock.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_UNLCK}); err != nil {
		t.Fatal(err)
	}
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil), 200)
	e.CheckPublished(map[string]string{"main": fx.a})
}

// A state dir on the repository's filesystem but under another mount (a
// bind mount) is refused: links into the repository would fail and every
// object would be copied.
func TestStateDirOnAnotherMount(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
	base := t.TempDir()
	src, mnt := filepath.Join(base, "src"), filepath.Join(base, "mnt")
	for _, d := range []string{src, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount(src, mnt, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	e := newEnv(t)
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+e.Repo)
	cfg := e.Effective()
	cfg.StateDir = filepath.Join(mnt, "state")
	_, err := daemon.New(context.Background(), cfg, daemon.Options{Version: "test"})
	if err == nil || !strings.Contains(err.Error(), "different mounts") {
		t.Fatalf("state dir behind a bind mount: %v", err)
	}
	left, _ := os.ReadDir(filepath.Join(mnt, "state"))
	for _, f := range left {
		if strings.HasPrefix(f.Name(), ".link-probe-") {
			t.Errorf("probe file %s left behind", f.Name())
		}
	}
}

// The operator's log has one line per publish naming the token, each ref
// old → new and the session, and one per refused publish with its reason.
func TestPublishLogLines(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.StartProcess(fx.bin, "")
	want(t, e.pushFrom(fx.build, e.Tok, []api.RefUpdate{{Name: "main", New: fx.b}}, false), 200)
	r := e.pushFrom(fx.build, e.Tok, []api.RefUpdate{{Name: "main", Old: fx.b, New: fx.a}}, false)
	if r.status != 409 {
		t.Fatalf("an older commit: %d %s", r.status, r.body)
	}
	log, err := os.ReadFile(filepath.Join(filepath.Dir(e.Repo), "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		`msg=published token=ci refs="main (new) → ` + fx.b[:12] + `" session=`,
		`msg="publish refused" token=ci refs="main ` + fx.b[:12] + ` → ` + fx.a[:12] + `" session=`,
	} {
		if !strings.Contains(string(log), line) {
			t.Errorf("the daemon's log lacks %s:\n%s", line, log)
		}
	}
}

// A client whose connection ends in the middle of an upload's body is no
// fault of the daemon: it is logged as a warning, not an error, and the
// upload resumes from the bytes that arrived.
func TestCutUploadIsAWarning(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	logs := &syncBuffer{}
	e.Logger = slog.New(slog.NewTextHandler(logs, nil))
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	var big object.Name
	var data []byte
	for _, n := range e.need(e.Tok, s.ID, objectsOf(t, fx.a, "")) {
		name, _ := object.ParseName(n)
		if b := objectBytes(t, name); len(b) > len(data) {
			big, data = name, b
		}
	}
	r := e.do(e.Tok, "POST", api.PathUploads+"/", nil, map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Length": strconv.Itoa(len(data)),
		"Upload-Metadata": meta(api.MetaSession, s.ID, api.MetaObject, big.String())})
	want(t, r, 201)
	loc := r.header.Get("Location")
	up := loc[strings.Index(loc, api.PathUploads):]

	// A PATCH that announces the whole body, sends half of it and closes
	// its connection.
	half := len(data) / 2
	c, err := net.Dial("tcp", strings.TrimPrefix(e.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "PATCH %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"+
		"Content-Type: application/offset+octet-stream\r\nContent-Length: %d\r\n\r\n", up, strings.TrimPrefix(e.URL, "http://"), e.Tok.Secret, len(data))
	if _, err := c.Write(data[:half]); err != nil {
		t.Fatal(err)
	}
	c.Close()

	tus := map[string]string{"Tus-Resumable": "1.0.0"}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "status=400") { // the cut request's line
		if time.Now().After(deadline) {
			t.Fatalf("the cut request was not logged:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	h := e.do(e.Tok, "HEAD", up, nil, tus)
	want(t, h, 200)
	if h.header.Get("Upload-Offset") != strconv.Itoa(half) {
		t.Fatalf("offset after the cut: %q, want %d", h.header.Get("Upload-Offset"), half)
	}
	want(t, e.do(e.Tok, "PATCH", up, bytes.NewReader(data[half:]), map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Offset": strconv.Itoa(half), "Content-Type": "application/offset+octet-stream"}), 204)
	var sv api.Session
	e.do(e.Tok, "GET", api.PathSessions+"/"+s.ID, nil, nil).json(t, &sv)
	if len(sv.Uploads) != 0 {
		t.Errorf("the resumed upload is still live: %+v", sv.Uploads)
	}

	log := logs.String()
	if strings.Contains(log, "level=ERROR") {
		t.Errorf("a client's cut connection is logged as an error:\n%s", log)
	}
	if !regexp.MustCompile(`level=WARN msg="upload cut: [^\n]* id=` + regexp.QuoteMeta(strings.TrimPrefix(up, api.PathUploads+"/")) + ` error=`).MatchString(log) {
		t.Errorf("no warning names the cut upload:\n%s", log)
	}
}
