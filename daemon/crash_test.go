package daemon_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// tryPush runs a push without failing on transport errors (the daemon may
// die under it); it returns the commit's status or 0.
func (e *env) tryPush(tok token, updates []api.RefUpdate) int {
	defer func() { recover() }()
	r := e.doJSONQuiet(tok, "POST", api.PathSessions, api.SessionRequest{Refs: updates})
	if r == nil {
		e.t.Logf("push stopped: session request failed")
		return 0
	}
	var s api.Session
	r.json(e.t, &s)
	var names []string
	for _, u := range updates {
		for _, n := range objectsOf(e.t, u.New, "") {
			names = append(names, n.String())
		}
	}
	r = e.doJSONQuiet(tok, "POST", api.PathSessions+"/"+s.ID+"/objects", api.ObjectsRequest{Objects: names})
	if r == nil {
		return 0
	}
	var or api.ObjectsResponse
	r.json(e.t, &or)
	if err := e.uploadAll(tok, s.ID, or.Needed); err != nil {
		e.t.Logf("push stopped: %v", err)
		return 0
	}
	r = e.doJSONQuiet(tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil)
	if r == nil {
		return 0
	}
	return r.status
}

// waitKilled waits for a daemon armed with a failpoint to die by SIGKILL.
func waitKilled(t testing.TB, p *daemontest.Proc) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- p.Wait() }()
	select {
	case err := <-errc:
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != -1 {
			t.Fatalf("daemon ended with %v, want SIGKILL", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("failpoint never reached")
	}
}

// spooled lists the files in the objects of the token's spool.
func spooled(e *env) []string {
	var files []string
	filepath.WalkDir(filepath.Join(e.State, "spools", e.Tok.Hash, "objects"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	return files
}

// waitSpoolEmpty waits until the token's spool holds no object (a publish
// frees it after its answer).
func waitSpoolEmpty(t *testing.T, e *env) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := spooled(e)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d files still in the spool, e.g. %s", len(left), left[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestKill9AtEveryStep(t *testing.T) {
	t.Parallel()
	updates := []api.RefUpdate{{Name: "main", New: fx.a}, {Name: "other", New: fx.c}}
	// Before the intent, a restart publishes nothing by itself: the
	// client's repeated commit does.
	beforeIntent := []string{"before-verdict", "after-adopt", "publish-between-transactions", "after-import"}
	for _, fp := range append(beforeIntent, "after-intent", "publish-commits-linked", "publish-before-refs", "after-refs", "after-summary", "before-intent-done") {
		t.Run(fp, func(t *testing.T) {
			e := newEnv(t)
			p := e.StartProcess(fx.bin, fp)
			// The spool is released after the answer: a push stopped
			// there has succeeded.
			if st := e.tryPush(e.Tok, updates); st == 200 && fp != "before-intent-done" {
				t.Fatalf("push succeeded through failpoint %s", fp)
			}
			waitKilled(t, p)
			// Never half: both refs old (absent) or both new, and no
			// commit object without its tree, before any restart.
			if _, err := os.Stat(filepath.Join(e.Repo, "config")); err == nil {
				if fp == "publish-between-transactions" {
					// The first transaction is committed: the trees are
					// in objects/, the commits are not.
					trees, _ := filepath.Glob(filepath.Join(e.Repo, "objects", "*", "*.dirtree"))
					commits, _ := filepath.Glob(filepath.Join(e.Repo, "objects", "*", "*.commit"))
					if len(trees) == 0 || len(commits) != 0 {
						t.Fatalf("between the transactions: %d dirtrees, %d commits in objects/", len(trees), len(commits))
					}
				}
				storetest.MustOstree(t, "fsck", "--repo="+e.Repo)
				refs := e.Refs()
				if !(len(refs) == 0 || refs["main"] == fx.a && refs["other"] == fx.c) {
					t.Fatalf("after kill at %s refs are %v", fp, refs)
				}
			}
			e.StartProcess(fx.bin, "")
			if !slices.Contains(beforeIntent, fp) {
				// The commit was acknowledged by nobody, yet the daemon
				// finishes the publish by itself when it starts.
				if refs := e.Refs(); refs["main"] != fx.a || refs["other"] != fx.c {
					t.Fatalf("restart after %s did not finish the publish: %v", fp, refs)
				}
				sum := storetest.MustOstree(t, "summary", "--view", "--repo="+e.Repo)
				if !strings.Contains(sum, fx.a) || !strings.Contains(sum, fx.c) {
					t.Fatalf("restart after %s left a summary without the new refs:\n%s", fp, sum)
				}
				// Published: the spool is freed.
				waitSpoolEmpty(t, e)
			}
			if st := e.tryPush(e.Tok, updates); st != 200 {
				log, _ := os.ReadFile(filepath.Join(filepath.Dir(e.Repo), "daemon.log"))
				t.Fatalf("push after restart: %d\n%s", st, log)
			}
			e.CheckPublished(map[string]string{"main": fx.a, "other": fx.c})
		})
	}
}

// Objects a crash left verified in a token's spool but not journaled (a
// rename before its journal entry, or a pack's staged entry) are evidence,
// not garbage: at the next start, those an open session still wants and
// that verify against their names are kept and count as received; a staged
// file that does not verify goes.
func TestRestartKeepsVerifiedSpoolObjects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	all := objectsOf(t, fx.a, "")
	needed := e.need(e.Tok, s.ID, all)
	var files []object.Name
	for _, n := range needed {
		if name, _ := object.ParseName(n); name.Type == object.File && len(files) < 3 {
			files = append(files, name)
		}
	}
	if len(files) < 3 {
		t.Fatalf("%d file objects needed", len(files))
	}
	e.Stop()
	spool := filepath.Join(e.State, "spools", e.Tok.Hash)
	put := func(n object.Name, file string, data []byte) {
		p := filepath.Join(spool, filepath.Dir(filepath.FromSlash(n.RelPath())), file)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	renamed, staged, corrupt := files[0], files[1], files[2]
	put(renamed, filepath.Base(renamed.RelPath()), objectBytes(t, renamed))
	put(staged, store.TempPrefix+staged.String()+"-123", objectBytes(t, staged))
	// A crash before Stage made the file read-only: it is adopted 0444.
	os.Chmod(filepath.Join(spool, filepath.Dir(filepath.FromSlash(staged.RelPath())), store.TempPrefix+staged.String()+"-123"), 0o600)
	put(corrupt, store.TempPrefix+corrupt.String()+"-456", append(objectBytes(t, corrupt), "junk"...))
	// Nobody wants an object of another commit, nor detached metadata.
	var other object.Name
	for _, n := range objectsOf(t, fx.c, "") {
		if n.Type == object.File && !slices.Contains(all, n) {
			other = n
			break
		}
	}
	put(other, store.TempPrefix+other.String()+"-789", objectBytes(t, other))
	sumA, _ := object.ParseChecksum(fx.a)
	meta := object.Name{Sum: sumA, Type: object.CommitMeta}
	put(meta, store.TempPrefix+meta.String()+"-1", commitMeta(t, object.Ed25519MetaKey, "aay", edSigs(1, 1)))
	e.Start()
	still := e.need(e.Tok, s.ID, all)
	for _, kept := range []object.Name{renamed, staged} {
		if slices.Contains(still, kept.String()) {
			t.Errorf("%s asked for again after the restart", kept)
		}
	}
	if !slices.Contains(still, corrupt.String()) {
		t.Errorf("the corrupt staged %s was kept", corrupt)
	}
	if len(still) != len(needed)-2 {
		t.Errorf("%d objects still needed of %d", len(still), len(needed))
	}
	left, _ := filepath.Glob(filepath.Join(spool, "objects", "*", store.TempPrefix+"*"))
	if len(left) != 0 {
		t.Errorf("staged files left: %v", left)
	}
	if fi, err := os.Stat(filepath.Join(spool, filepath.FromSlash(staged.RelPath()))); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("adopted %s: %v %v", staged, fi.Mode(), err)
	}
	for _, gone := range []object.Name{other, meta} {
		if _, err := os.Stat(filepath.Join(spool, filepath.FromSlash(gone.RelPath()))); err == nil {
			t.Errorf("%s was kept", gone)
		}
	}
	if err := e.uploadAll(e.Tok, s.ID, still); err != nil {
		t.Fatal(err)
	}
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil), 200)
	e.CheckPublished(map[string]string{"main": fx.a})
}
