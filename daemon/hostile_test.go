package daemon_test

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
	"golang.org/x/sys/unix"
)

// newBuild makes an archive build repository with a commit of a small
// tree of n files under ref, bound to the refs binds (none: an orphan
// commit, bound to nothing). It returns the repository and the commit.
func newBuild(t *testing.T, ref string, n int, ts int64, binds ...string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	build := filepath.Join(dir, "build")
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+build)
	tree := filepath.Join(dir, "tree")
	for i := 0; i < n; i++ {
		p := filepath.Join(tree, fmt.Sprintf("d%d", i%5), fmt.Sprintf("f%04d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(fmt.Sprintf("%s %d %d", ref, i, ts)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"commit", "--repo=" + build, "--tree=dir=" + tree, fmt.Sprintf("--timestamp=@%d", ts), "-s", "test"}
	args = append(args, "--orphan")
	for _, b := range binds {
		args = append(args, "--bind-ref="+b)
	}
	c := storetest.MustOstree(t, args...)
	storetest.MustOstree(t, "refs", "--repo="+build, "--create="+ref, c)
	return build, c
}

// pushFrom publishes updates with objects of build: a session, one
// negotiation, one pack of what is needed and the commit, whose answer it
// returns.
func (e *env) pushFrom(build string, tok token, updates []api.RefUpdate, force bool) resp {
	e.t.Helper()
	s := e.session(tok, updates, force)
	e.packFrom(build, tok, s.ID, updates)
	return e.doJSON(tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil)
}

// packFrom negotiates the objects of updates from build and sends those
// needed in one pack.
func (e *env) packFrom(build string, tok token, sid string, updates []api.RefUpdate) {
	e.t.Helper()
	var names []object.Name
	for _, u := range updates {
		names = append(names, daemontest.Objects(e.t, build, u.New, "")...)
	}
	var entries []entry
	for _, n := range e.need(tok, sid, names) {
		b, err := os.ReadFile(filepath.Join(build, "objects", n[:2], n[2:]))
		if err != nil {
			e.t.Fatal(err)
		}
		entries = append(entries, entry{tar.Header{Name: "objects/" + n[:2] + "/" + n[2:], Size: int64(len(b)), Mode: 0o644, Typeflag: tar.TypeReg}, b})
	}
	if len(entries) > 0 {
		want(e.t, e.sendPack(tok, sid, pack(e.t, tar.FormatPAX, entries...)), 200)
	}
}

func commitMeta(t testing.TB, key, typ string, v any) []byte {
	t.Helper()
	b, err := storetest.CommitMeta(key, typ, v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func prodCommitMeta(t testing.TB, repo, commit string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "objects", commit[:2], commit[2:]+".commitmeta"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return b
}

// A token limited to beta/* publishes beta/x at the commit production
// publishes as main, and tries to change that commit's detached metadata
// every way there is: negotiation leaves it out, an upload or a pack of it
// is refused, and the commit publishes beta/x with production's metadata
// byte for byte, which a client verifying main's GPG signature accepts.
// Only signature entries of a push are taken, each well-formed.
func TestMetadataOfOtherRefsStaysPut(t *testing.T) {
	t.Parallel()
	key, other := storetest.NewGPGKey(t), storetest.NewGPGKey(t)
	e := newEnv(t)
	beta := daemontest.NewToken(t)
	e.ExtraTokens = []config.Token{{SHA256: beta.Hash, Name: "beta", Refs: []string{"beta/*"}}}
	e.Config.GPGSign, e.Config.GPGHomedir = []string{key.ID}, key.Home
	e.Start()
	// A commit bound to main and beta/x (GPG-verifying clients require a
	// binding): each token may publish it under its own ref.
	build, c1 := newBuild(t, "main", 20, 1700000000, "main", "beta/x")
	main := []api.RefUpdate{{Name: "main", New: c1}}
	want(t, e.pushFrom(build, e.Tok, main, false), 200)
	before := prodCommitMeta(t, e.Repo, c1)
	if len(before) == 0 {
		t.Fatal("the daemon did not sign main's commit")
	}

	sum, _ := object.ParseChecksum(c1)
	b, _ := store.OpenArchive(ctx, build)
	defer b.Close()
	data, _ := b.CommitObject(ctx, sum)
	signed, err := b.SignGPG(ctx, nil, data, []string{other.ID}, other.Home)
	if err != nil {
		t.Fatal(err)
	}
	junk := commitMeta(t, object.GPGMetaKey, "aay", []any{[]byte("junk")})
	metaName := c1 + ".commitmeta"

	s := e.session(beta, []api.RefUpdate{{Name: "beta/x", New: c1}}, true)
	if needed := e.need(beta, s.ID, []object.Name{{Sum: sum, Type: object.CommitMeta}}); len(needed) != 0 {
		t.Fatalf("negotiation asks for %v", needed)
	}
	for what, meta := range map[string][]byte{"a real signature": signed, "junk": junk} {
		r := e.upload(beta, s.ID, metaName, meta)
		if r.status != 403 || apiError(t, r).Code != api.CodeMetaScope {
			t.Errorf("upload of %s: %d %s", what, r.status, r.body)
		}
		r = e.sendPack(beta, s.ID, pack(t, tar.FormatPAX, entry{tar.Header{Name: "objects/" + c1[:2] + "/" + c1[2:] + ".commitmeta", Size: int64(len(meta)), Mode: 0o644, Typeflag: tar.TypeReg}, meta}))
		if r.status != 403 {
			t.Errorf("pack of %s: %d %s", what, r.status, r.body)
		}
	}
	want(t, e.doJSON(beta, "POST", api.PathSessions+"/"+s.ID+"/commit", nil), 200)
	if after := prodCommitMeta(t, e.Repo, c1); !bytes.Equal(after, before) {
		t.Fatalf("main's detached metadata changed: %d -> %d bytes", len(before), len(after))
	}
	if refs := e.Refs(); refs["main"] != c1 || refs["beta/x"] != c1 || len(refs) != 2 {
		t.Fatalf("refs %v", refs)
	}
	storetest.PullOverHTTPWith(t, e.Repo, "main", "--set=gpg-verify=true", "--gpg-import="+key.PublicArmor)

	// A token that may push main, for a commit of its own: junk signatures
	// are refused as they arrive, well-formed ones are merged; keys other
	// than signatures never reach production.
	build2, c2 := newBuild(t, "main", 5, 1700000100)
	sum2, _ := object.ParseChecksum(c2)
	s2 := e.session(e.Tok, []api.RefUpdate{{Name: "main", Old: c1, New: c2}}, true) // not a descendant of c1
	e.packFrom(build2, e.Tok, s2.ID, []api.RefUpdate{{Name: "main", New: c2}})
	name2 := c2 + ".commitmeta"
	e.need(e.Tok, s2.ID, []object.Name{{Sum: sum2, Type: object.CommitMeta}})
	r := e.upload(e.Tok, s2.ID, name2, commitMeta(t, object.GPGMetaKey, "aay", []any{[]byte("junk")}))
	if r.status != 422 || !strings.Contains(string(r.body), "OpenPGP") {
		t.Fatalf("junk signature: %d %s", r.status, r.body)
	}
	b2, _ := store.OpenArchive(ctx, build2)
	defer b2.Close()
	cdata2, _ := b2.CommitObject(ctx, sum2)
	good, err := b2.SignGPG(ctx, commitMeta(t, "xa.extra", "s", "not a signature"), cdata2, []string{other.ID}, other.Home)
	if err != nil {
		t.Fatal(err)
	}
	want(t, e.upload(e.Tok, s2.ID, name2, good), 201)
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s2.ID+"/commit", nil), 200)
	meta2 := prodCommitMeta(t, e.Repo, c2)
	if bytes.Contains(meta2, []byte("xa.extra")) {
		t.Error("a key other than signatures reached production")
	}
	for who, k := range map[string]*storetest.GPGKey{"builder": other, "daemon": key} {
		p, _ := store.OpenArchive(ctx, e.Repo)
		if err := p.VerifyGPG(ctx, meta2, cdata2, t.TempDir(), k.PublicRing); err != nil {
			t.Errorf("%s's signature missing: %v", who, err)
		}
		p.Close()
	}
}

// Where the repository trusts particular keys, a push keeps only the
// signatures that verify against them.
func TestOnlyTrustedSignaturesAreKept(t *testing.T) {
	t.Parallel()
	_, trusted, _ := ed25519.GenerateKey(nil)
	_, stranger, _ := ed25519.GenerateKey(nil)
	e := newEnv(t)
	e.Trust(trusted.Public().(ed25519.PublicKey))
	e.Start()
	build, c := newBuild(t, "main", 5, 1700000000)
	sum, _ := object.ParseChecksum(c)
	b, _ := store.OpenArchive(ctx, build)
	defer b.Close()
	data, _ := b.CommitObject(ctx, sum)
	meta, err := object.SignEd25519(nil, data, []ed25519.PrivateKey{trusted, stranger})
	if err != nil {
		t.Fatal(err)
	}
	updates := []api.RefUpdate{{Name: "main", New: c}}
	s := e.session(e.Tok, updates, false)
	e.packFrom(build, e.Tok, s.ID, updates)
	e.need(e.Tok, s.ID, []object.Name{{Sum: sum, Type: object.CommitMeta}})
	want(t, e.upload(e.Tok, s.ID, c+".commitmeta", meta), 201)
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil), 200)
	got, err := object.SignaturesOf(prodCommitMeta(t, e.Repo, c))
	if err != nil || len(got.Ed25519) != 1 || !ed25519.Verify(trusted.Public().(ed25519.PublicKey), data, got.Ed25519[0]) {
		t.Fatalf("published signatures: %d, %v", len(got.Ed25519), err)
	}
}

func edSigs(n, seed int) []any {
	var out []any
	for i := 0; i < n; i++ {
		out = append(out, bytes.Repeat([]byte{byte(seed), byte(i), byte(i >> 8)}, 22)[:64])
	}
	return out
}

// Detached metadata stays bounded: a push of more signatures than a list
// may hold is refused as it arrives, and two pushes that together would
// exceed it are refused at the second commit, before its intent: the
// session stays open, production is untouched, and nobody waits on it.
func TestSignatureMergeIsBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	second := daemontest.NewToken(t)
	e.ExtraTokens = []config.Token{{SHA256: second.Hash, Name: "second"}}
	e.Start()
	build, c := newBuild(t, "main", 5, 1700000000)
	sum, _ := object.ParseChecksum(c)
	name := c + ".commitmeta"

	s1 := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: c}}, false)
	e.packFrom(build, e.Tok, s1.ID, []api.RefUpdate{{Name: "main", New: c}})
	e.need(e.Tok, s1.ID, []object.Name{{Sum: sum, Type: object.CommitMeta}})
	huge := commitMeta(t, object.Ed25519MetaKey, "aay", edSigs(80000, 1))
	want(t, e.upload(e.Tok, s1.ID, name, huge), 413)
	r := e.upload(e.Tok, s1.ID, name, commitMeta(t, object.Ed25519MetaKey, "aay", edSigs(object.MaxSignaturesPerKey+1, 1)))
	if r.status != 422 || !strings.Contains(string(r.body), "more than") {
		t.Fatalf("%d signatures: %d %s", object.MaxSignaturesPerKey+1, r.status, r.body)
	}
	want(t, e.upload(e.Tok, s1.ID, name, commitMeta(t, object.Ed25519MetaKey, "aay", edSigs(40, 1))), 201)
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s1.ID+"/commit", nil), 200)
	before := prodCommitMeta(t, e.Repo, c)

	s2 := e.session(second, []api.RefUpdate{{Name: "stable", New: c}}, false)
	e.packFrom(build, second, s2.ID, []api.RefUpdate{{Name: "stable", New: c}})
	e.need(second, s2.ID, []object.Name{{Sum: sum, Type: object.CommitMeta}})
	want(t, e.upload(second, s2.ID, name, commitMeta(t, object.Ed25519MetaKey, "aay", edSigs(40, 2))), 201)
	start := time.Now()
	r = e.doJSON(second, "POST", api.PathSessions+"/"+s2.ID+"/commit", nil)
	took := time.Since(start)
	if r.status != 422 || apiError(t, r).Code != api.CodeMetaLimit {
		t.Fatalf("80 signatures in all: %d %s", r.status, r.body)
	}
	t.Logf("refused in %s", took.Round(time.Millisecond))
	var sv api.Session
	e.doJSON(second, "GET", api.PathSessions+"/"+s2.ID, nil).json(t, &sv)
	if sv.State != api.StateOpen {
		t.Fatalf("refused session is %s", sv.State)
	}
	if after := prodCommitMeta(t, e.Repo, c); !bytes.Equal(after, before) {
		t.Fatal("production's detached metadata changed")
	}
	if _, ok := e.Refs()["stable"]; ok {
		t.Fatal("stable was published")
	}
	// Another push goes through at once.
	want(t, e.push(e.Tok, []api.RefUpdate{{Name: "other", New: fx.c}}, false), 200)
}

// Refs are files under refs/heads: no session may create a ref that is a
// directory of another ref, in the session or in production, nor a ref
// with a part longer than a file name; both are refused before anything
// is journaled. Detached metadata of a wrong type is refused as it
// arrives. Bindings hold whatever force says.
func TestRefNamesAndTypesRefusedEarly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	want(t, e.push(e.Tok, []api.RefUpdate{{Name: "other", New: fx.c}}, false), 200)
	open := func(refs ...api.RefUpdate) resp {
		return e.doJSON(e.Tok, "POST", api.PathSessions, api.SessionRequest{Refs: refs})
	}
	for what, c := range map[string]struct {
		refs   []api.RefUpdate
		status int
	}{
		"x and x/y":           {[]api.RefUpdate{{Name: "x", New: fx.c}, {Name: "x/y", New: fx.c}}, 409},
		"under production's":  {[]api.RefUpdate{{Name: "other/y", New: fx.c}}, 409},
		"beside production's": {[]api.RefUpdate{{Name: "oth", New: fx.c}, {Name: "other", Old: fx.c, New: fx.c}}, 201},
		"a part of 256 bytes": {[]api.RefUpdate{{Name: "a/" + strings.Repeat("b", 256), New: fx.c}}, 400},
		"a part of 255 bytes": {[]api.RefUpdate{{Name: "a/" + strings.Repeat("b", 255), New: fx.c}}, 201},
	} {
		r := open(c.refs...)
		if r.status != c.status {
			t.Errorf("%s: %d %s", what, r.status, r.body)
		}
	}
	if n, err := e.Service().Sessions(ctx, true); err != nil || len(n) != 3 {
		t.Fatalf("sessions journaled: %d %v", len(n), err)
	}
	// A ref of production created under a session's ref after the session
	// opened: refused at commit, before the intent, the session open.
	s := e.session(e.Tok, []api.RefUpdate{{Name: "late", New: fx.c}}, false)
	e.uploadAll(e.Tok, s.ID, e.need(e.Tok, s.ID, objectsOf(t, fx.c, "")))
	storetest.MustOstree(t, "refs", "--repo="+e.Repo, "--create=late/sub", fx.c)
	r := e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil)
	if r.status != 409 || apiError(t, r).Code != api.CodeRefConflict {
		t.Fatalf("commit beside late/sub: %d %s", r.status, r.body)
	}
	if n, _ := e.Service().Sessions(ctx, false); len(n) != 3 {
		t.Fatalf("open sessions: %d", len(n))
	}

	// Wrong types in detached metadata.
	sa := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	sumA, _ := object.ParseChecksum(fx.a)
	e.need(e.Tok, sa.ID, []object.Name{{Sum: sumA, Type: object.CommitMeta}})
	for what, meta := range map[string][]byte{
		"ed25519 as a string": commitMeta(t, object.Ed25519MetaKey, "s", "x"),
		"ed25519 of 63 bytes": commitMeta(t, object.Ed25519MetaKey, "aay", []any{make([]byte, 63)}),
		"gpg as bytes":        commitMeta(t, object.GPGMetaKey, "ay", []byte{1, 2}),
	} {
		if r := e.upload(e.Tok, sa.ID, fx.a+".commitmeta", meta); r.status != 422 {
			t.Errorf("%s: %d %s", what, r.status, r.body)
		}
	}
	// A commit bound to main is refused for another ref, even forced.
	r = e.push(e.Tok, []api.RefUpdate{{Name: "forced", New: fx.a}}, true)
	if r.status != 409 || apiError(t, r).Code != api.CodeBinding || !strings.Contains(string(r.body), "--force") {
		t.Fatalf("binding under force: %d %s", r.status, r.body)
	}
}

// deepBuild makes a build repository whose commit nests levels directories.
func deepBuild(t *testing.T, levels int) (string, string) {
	t.Helper()
	return fileBuild(t, strings.Repeat("d/", levels)+"f", []byte("deep"))
}

// fileBuild commits a tree of one file, at rel, to a new archive
// repository and returns the repository and the commit.
func fileBuild(t *testing.T, rel string, content []byte) (string, string) {
	t.Helper()
	dir := t.TempDir()
	build := filepath.Join(dir, "build")
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+build)
	p := filepath.Join(dir, "tree", filepath.FromSlash(rel))
	os.MkdirAll(filepath.Dir(p), 0o755)
	os.WriteFile(p, content, 0o644)
	c := storetest.MustOstree(t, "commit", "--repo="+build, "--orphan", "--tree=dir="+filepath.Join(dir, "tree"), "-s", "one file")
	return build, c
}

// packAll negotiates every object of build's objects/ and sends them in
// one pack.
func (e *env) packAll(build string, tok token, sid string) {
	e.t.Helper()
	all := objectsIn(e.t, build)
	e.need(tok, sid, all)
	want(e.t, e.sendPack(tok, sid, pack(e.t, tar.FormatPAX, entriesIn(e.t, build, all)...)), 200)
}

// objectsIn lists the objects in build's objects/.
func objectsIn(t testing.TB, build string) []object.Name {
	t.Helper()
	var all []object.Name
	err := filepath.Walk(filepath.Join(build, "objects"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(build, p)
		if n, err := object.ParsePath(filepath.ToSlash(rel)); err == nil {
			all = append(all, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// entriesIn makes pack entries of objects of build.
func entriesIn(t testing.TB, build string, objs []object.Name) []entry {
	t.Helper()
	var entries []entry
	for _, n := range objs {
		b, err := os.ReadFile(filepath.Join(build, filepath.FromSlash(n.RelPath())))
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, entry{tar.Header{Name: n.RelPath(), Size: int64(len(b)), Mode: 0o644, Typeflag: tar.TypeReg}, b})
	}
	return entries
}

// A commit whose directories nest deeper than libostree's tools can follow
// is refused at commit with 422, before any intent; the session stays
// open and production does not change.
func TestDeepTreeRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	build, c := deepBuild(t, object.MaxTreeDepth+1)
	updates := []api.RefUpdate{{Name: "deep", New: c}}
	s := e.session(e.Tok, updates, false)
	// The client's own walk refuses the tree: send every object of the
	// build repository as a hostile client would.
	e.packAll(build, e.Tok, s.ID)
	objs := objectFiles(t, e.Repo)
	start := time.Now()
	r := e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil)
	if r.status != 422 || apiError(t, r).Code != api.CodeTreeLimit {
		t.Fatalf("commit: %d %s", r.status, r.body)
	}
	t.Logf("refused in %s", time.Since(start).Round(time.Millisecond))
	if len(e.Refs()) != 0 || objectFiles(t, e.Repo) != objs {
		t.Fatal("production changed")
	}
	var sv api.Session
	e.doJSON(e.Tok, "GET", api.PathSessions+"/"+s.ID, nil).json(t, &sv)
	if sv.State != api.StateOpen {
		t.Fatalf("session %s", sv.State)
	}
	// At the limit, it publishes.
	build, c = deepBuild(t, object.MaxTreeDepth)
	want(t, e.pushFrom(build, e.Tok, []api.RefUpdate{{Name: "deep", New: c}}, false), 200)
	storetest.MustOstree(t, "fsck", "--repo="+e.Repo)
}

// bomb is the .filez of a file of size zero bytes: little to send, much
// to inflate and hash.
func bomb(t testing.TB, size int64) (string, []byte) {
	t.Helper()
	name, data, err := storetest.ZeroFilez(size)
	if err != nil {
		t.Fatal(err)
	}
	return name, data
}

// A decompression bomb costs its sender, not the other tokens: a .filez
// declaring more content than max_object_size is refused before it is
// inflated, and while one token's bombs within the limit are verified,
// another token's small upload is judged at once.
func TestDecompressionBombsShareTheCPU(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Config.MaxObjectSize = config.Size(6 << 30)
	other := daemontest.NewToken(t)
	e.ExtraTokens = []config.Token{{SHA256: other.Hash, Name: "other"}}
	e.Start()
	// The name does not matter: the declared size is refused first.
	bigData, err := storetest.ZeroFilezData(7 << 30)
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("7", 64) + ".filez"
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	bigName, _ := object.ParseName(big)
	e.need(e.Tok, s.ID, []object.Name{bigName})
	start := time.Now()
	r := e.upload(e.Tok, s.ID, big, bigData)
	if r.status != 422 || !strings.Contains(string(r.body), "max_object_size") {
		t.Fatalf("bomb over max_object_size: %d %s", r.status, r.body)
	}
	t.Logf("%d-byte bomb declaring 7 GiB refused in %s", len(bigData), time.Since(start).Round(time.Millisecond))

	// Three bombs of 6 GiB (a few seconds each to verify, cut short at
	// the end), in three sessions: more than the verification slots.
	name, data := bomb(t, 6<<30)
	n, _ := object.ParseName(name)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bombsDone []time.Time
	for i := 0; i < 3; i++ {
		sb := e.session(e.Tok, []api.RefUpdate{{Name: fmt.Sprintf("bomb%d", i), New: fx.a}}, false)
		e.need(e.Tok, sb.ID, []object.Name{n})
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.send(e.Tok, "POST", api.PathUploads+"/", bytes.NewReader(data), map[string]string{
				"Tus-Resumable": "1.0.0", "Upload-Length": strconv.Itoa(len(data)),
				"Upload-Metadata": meta(api.MetaSession, sb.ID, api.MetaObject, name), "Content-Type": "application/offset+octet-stream"})
			if err == nil && r.status != 201 && r.status != 500 {
				t.Errorf("bomb within the limit: %d %s", r.status, r.body)
			}
			mu.Lock()
			bombsDone = append(bombsDone, time.Now())
			mu.Unlock()
		}()
	}
	time.Sleep(500 * time.Millisecond) // the bombs are being verified
	so := e.session(other, []api.RefUpdate{{Name: "other", New: fx.c}}, false)
	needed := e.need(other, so.ID, objectsOf(t, fx.c, ""))
	small, _ := object.ParseName(needed[len(needed)-1])
	start = time.Now()
	want(t, e.upload(other, so.ID, small.String(), objectBytes(t, small)), 201)
	took := time.Since(start)
	mu.Lock()
	finished := len(bombsDone)
	mu.Unlock()
	t.Logf("another token's upload judged in %s while %d of 3 bombs were still being verified", took.Round(time.Millisecond), 3-finished)
	if finished > 0 {
		t.Fatalf("the small upload waited for %d bombs to be verified (%s)", finished, took)
	}
	// A shutdown does not wait for the bombs: their verification stops,
	// and they are judged again at the next start.
	start = time.Now()
	e.Stop()
	wg.Wait()
	t.Logf("stopped in %s", time.Since(start).Round(time.Millisecond))
}

// One token cannot fill the disk or the journal: uploads receiving bytes
// together check the free-space floor every few megabytes, so whatever
// they declared they stop at it (507, keeping their bytes) and every other
// token still has the room the floor keeps; negotiation checks room for
// the journal; open sessions and their names are bounded per token.
func TestTokenCannotExhaustSpaceOrJournal(t *testing.T) {
	t.Parallel()
	disk := daemontest.SmallDisk(t, "64m")
	e := newEnv(t)
	e.Repo, e.State = filepath.Join(disk, "repo"), filepath.Join(disk, "state")
	e.Config.MaxSessionsPerToken, e.Config.MaxObjectsPerToken = 3, 2500
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	names := []object.Name{}
	for i := 0; i < 3; i++ {
		n, _ := object.ParseName(fmt.Sprintf("%064x.filez", i+1))
		names = append(names, n)
	}
	e.need(e.Tok, s.ID, names)
	var created []string
	for _, n := range names {
		r := e.do(e.Tok, "POST", api.PathUploads+"/", nil, map[string]string{"Tus-Resumable": "1.0.0",
			"Upload-Length": strconv.Itoa(25 << 20), "Upload-Metadata": meta(api.MetaSession, s.ID, api.MetaObject, n.String())})
		want(t, r, 201)
		created = append(created, r.header.Get("Location"))
	}
	// Three uploads of 25 MiB at once on a 64 MiB filesystem.
	var wg sync.WaitGroup
	statuses := make([]int, len(created))
	for i, loc := range created {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loc = loc[strings.Index(loc, api.PathUploads):]
			r, err := e.send(e.Tok, "PATCH", loc, bytes.NewReader(make([]byte, 25<<20)), map[string]string{"Tus-Resumable": "1.0.0",
				"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
			if err != nil {
				t.Error(err)
				return
			}
			statuses[i] = r.status
		}()
	}
	wg.Wait()
	refused := 0
	for _, st := range statuses {
		switch st {
		case 204, 422: // all bytes in (then judged: they are not the object)
		case 507:
			refused++
		default:
			t.Errorf("PATCH answered %d", st)
		}
	}
	var fs unix.Statfs_t
	unix.Statfs(disk, &fs)
	free := int64(fs.Bavail) * int64(fs.Bsize)
	floor := int64(fs.Blocks) * int64(fs.Bsize) * 3 / 100
	t.Logf("PATCHes: %v; %d MiB free, floor %d MiB", statuses, free>>20, floor>>20)
	if refused == 0 || free < floor {
		t.Fatalf("%d of 3 uploads stopped; %d bytes free, floor %d", refused, free, floor)
	}
	// Something else fills the filesystem: the next PATCH is refused and
	// keeps what it had.
	filler := filepath.Join(disk, "filler")
	exec.Command("fallocate", "-l", fmt.Sprint(free-floor), filler).Run()
	for i, loc := range created {
		if statuses[i] != 507 {
			continue
		}
		loc = loc[strings.Index(loc, api.PathUploads):]
		h := e.do(e.Tok, "HEAD", loc, nil, map[string]string{"Tus-Resumable": "1.0.0"})
		off := h.header.Get("Upload-Offset")
		r := e.do(e.Tok, "PATCH", loc, bytes.NewReader(make([]byte, 1<<20)), map[string]string{"Tus-Resumable": "1.0.0",
			"Upload-Offset": off, "Content-Type": "application/offset+octet-stream"})
		if r.status != 507 || apiError(t, r).Code != api.CodeSpace {
			t.Fatalf("PATCH onto a full filesystem: %d %s", r.status, r.body)
		}
		if h2 := e.do(e.Tok, "HEAD", loc, nil, map[string]string{"Tus-Resumable": "1.0.0"}); h2.header.Get("Upload-Offset") != off {
			t.Fatalf("offset %s became %s", off, h2.header.Get("Upload-Offset"))
		}
		break
	}
	// Names cost journal space too: a batch the filesystem cannot take is
	// refused before it is registered.
	many := make([]object.Name, api.MaxNamesPerRequest)
	for i := range many {
		many[i], _ = object.ParseName(fmt.Sprintf("%064x.dirmeta", i+100))
	}
	r := e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/objects", api.ObjectsRequest{Objects: names2(many)})
	if r.status != 507 {
		t.Fatalf("negotiation on a full filesystem: %d %s", r.status, r.body)
	}
	os.Remove(filler)

	// Open sessions per token.
	for _, ref := range []string{"b", "c"} {
		e.session(e.Tok, []api.RefUpdate{{Name: ref, New: fx.c}}, false)
	}
	r = e.doJSON(e.Tok, "POST", api.PathSessions, api.SessionRequest{Refs: []api.RefUpdate{{Name: "d", New: fx.c}}})
	if r.status != 429 || apiError(t, r).Code != api.CodeLimit {
		t.Fatalf("a fourth open session: %d %s", r.status, r.body)
	}
	// Names per token, across its sessions.
	r = e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/objects", api.ObjectsRequest{Objects: names2(many[:2000])})
	want(t, r, 200)
	sb := e.session(e.Tok, []api.RefUpdate{{Name: "b", New: fx.c}}, false)
	r = e.doJSON(e.Tok, "POST", api.PathSessions+"/"+sb.ID+"/objects", api.ObjectsRequest{Objects: names2(many[2000:2600])})
	if r.status != 413 || apiError(t, r).Code != api.CodeLimit {
		t.Fatalf("names over max_objects_per_token: %d %s", r.status, r.body)
	}
}

func names2(ns []object.Name) []string { return names(ns) }

// A flood of connections that send nothing cannot keep a client out: past
// max_connections the oldest idle connections make room. A request body
// that never comes is dropped after the body timeout. Behind a trusted
// proxy, each forwarded client has its own bound.
func TestConnectionFloodAndSlowBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Config.MaxConnections, e.Config.MaxClientConnections, e.Config.BodyTimeout = 500, 400, config.Duration{Duration: 2 * time.Second}
	e.Start()
	addr := strings.TrimPrefix(e.URL, "http://")
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for i := 0; i < 3000; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		flood = append(flood, c)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	req, _ := http.NewRequest("GET", e.URL+api.PathInfo, nil)
	req.Header.Set("Authorization", "Bearer "+e.Tok.Secret)
	start := time.Now()
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("info after 3,000 idle connections: %v", err)
	}
	res.Body.Close()
	t.Logf("info answered in %s after 3,000 idle connections", time.Since(start).Round(time.Millisecond))
	if res.StatusCode != 200 {
		t.Fatalf("info: %d", res.StatusCode)
	}
	m := e.do(token{}, "GET", "/metrics", nil, nil)
	if !regexp.MustCompile(`ostree_upload_connections_limited_total\{reason="evicted"\} [1-9]`).Match(m.body) {
		t.Fatal("no eviction counted")
	}

	// A JSON body announced and never sent.
	slow := func(hdr string) (string, time.Duration) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n%s\r\n{", api.PathSessions, e.Tok.Secret, hdr)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		b, _ := io.ReadAll(c)
		return string(b), time.Since(start)
	}
	out, took := slow("")
	// The body timeout, not the 30 s header timeout nor the test's own
	// deadline, ends it: the answer says so. A loaded machine may take
	// seconds more to get there.
	if !strings.HasPrefix(out, "HTTP/1.1 400 ") || !strings.Contains(out, "body_timeout") {
		t.Fatalf("a stalled body after %s: %q", took, out)
	}
	if took < e.Config.BodyTimeout.Duration || took > 15*time.Second {
		t.Fatalf("a stalled body held its connection %s (body_timeout %s)", took, e.Config.BodyTimeout.Duration)
	}
	t.Logf("stalled JSON body dropped after %s: %.40q", took.Round(time.Millisecond), out)
}

// Behind a trusted proxy, one client's requests in flight are bounded by
// its forwarded address; other clients of the same proxy are not held up.
func TestForwardedClientsAreBoundedEach(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Config.MaxClientConnections, e.Config.BodyTimeout = 2, config.Duration{Duration: 3 * time.Second}
	e.Config.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	e.Start()
	addr := strings.TrimPrefix(e.URL, "http://")
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Length: 100\r\n\r\n", api.PathSessions, e.Tok.Secret)
	}
	time.Sleep(200 * time.Millisecond)
	r := e.do(e.Tok, "GET", api.PathInfo, nil, map[string]string{"X-Forwarded-For": "10.0.0.1"})
	if r.status != 429 {
		t.Fatalf("third request of one forwarded client: %d %s", r.status, r.body)
	}
	want(t, e.do(e.Tok, "GET", api.PathInfo, nil, map[string]string{"X-Forwarded-For": "10.0.0.2"}), 200)
}

// A publish that can never finish (here: a ref of production, made behind
// the daemon's back after the intent, under which the session's ref cannot
// exist) keeps its session publishing; an admin fails it, and it says no
// ref moved.
func TestAdminFailsStuckPublish(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	admin := daemontest.NewToken(t)
	e.ExtraTokens = []config.Token{{SHA256: admin.Hash, Name: "admin", Scopes: []string{auth.ScopeAdmin}}}
	p := e.StartProcess(fx.bin, "after-intent")
	build, c := newBuild(t, "x/y", 10, 1700000000, "x/y")
	updates := []api.RefUpdate{{Name: "x/y", New: c}}
	s0 := e.session(e.Tok, updates, false)
	e.packFrom(build, e.Tok, s0.ID, updates)
	if r := e.doJSONQuiet(e.Tok, "POST", api.PathSessions+"/"+s0.ID+"/commit", nil); r != nil {
		t.Fatalf("commit answered through the failpoint: %d %s", r.status, r.body)
	}
	waitKilled(t, p)
	storetest.MustOstree(t, "refs", "--repo="+e.Repo, "--create=x", fx.c)
	e.StartProcess(fx.bin, "")
	var list []api.AdminSession
	e.doJSON(admin, "GET", api.PathAdmin+"/sessions", nil).json(t, &list)
	if len(list) != 1 || list[0].State != api.StatePublishing {
		t.Fatalf("sessions after the restart: %+v", list)
	}
	id := list[0].ID
	r := e.do(admin, "DELETE", api.PathAdmin+"/sessions/"+id, nil, nil)
	if r.status != 409 || !strings.Contains(string(r.body), "sessions fail") {
		t.Fatalf("abort of a publishing session: %d %s", r.status, r.body)
	}
	r = e.do(admin, "POST", api.PathAdmin+"/sessions/"+id+"/fail", nil, nil)
	want(t, r, 200)
	var s api.AdminSession
	r.json(t, &s)
	if s.State != api.StateFailed || !strings.Contains(s.Result, "no ref had moved") {
		t.Fatalf("failed session: %s %q", s.State, s.Result)
	}
	want(t, e.do(admin, "POST", api.PathAdmin+"/sessions/"+id+"/fail", nil, nil), 409)
	if refs := e.Refs(); len(refs) != 1 || refs["x"] != fx.c {
		t.Fatalf("refs %v", refs)
	}
}

// vmHWM is a process's peak resident memory (VmHWM), in bytes.
func vmHWM(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no VmHWM")
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

// While one token sends the worst inputs these tests know, all at once,
// the daemon's peak memory stays under 256 MiB: the largest valid
// dirtrees over tus and in packs, a hostile dirtree, decompression bombs,
// detached metadata at its limit, a tree too deep to publish, name
// batches, sessions past the cap and thousands of idle connections.
func TestHostileClientMemoryBound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Config.MaxObjectSize = config.DefaultMaxObjectSize
	p := e.StartProcess(fx.bin, "")
	pid := p.Cmd.Process.Pid
	var sids []string
	for i := 0; len(sids) < 40; i++ {
		r := e.doJSON(e.Tok, "POST", api.PathSessions, api.SessionRequest{Refs: []api.RefUpdate{{Name: fmt.Sprintf("h%02d", i), New: fx.a}}})
		if r.status == 429 {
			break
		}
		want(t, r, 201)
		var s api.Session
		r.json(t, &s)
		sids = append(sids, s.ID)
	}
	if len(sids) < 12 {
		t.Fatalf("%d sessions", len(sids))
	}
	type blob struct {
		name string
		data []byte
	}
	var trees []blob
	for i := 0; i < 6; i++ {
		name, data, err := storetest.DirTree(227000, byte(i))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) > object.MaxMetadataSize {
			t.Fatalf("dirtree of %d bytes", len(data))
		}
		trees = append(trees, blob{name, data})
	}
	junk := bytes.Repeat([]byte{0xff, 0, 0, 0}, int(object.MaxMetadataSize/4))
	junkName := fmt.Sprintf("%x.dirtree", sha256Sum(junk))
	bombName, bombData := bomb(t, 512<<20)
	metaSigs := make([]any, object.MaxSignaturesPerKey)
	for i := range metaSigs {
		metaSigs[i] = bytes.Repeat([]byte{byte(i)}, 16000)
	}
	bigMeta := commitMeta(t, object.GPGMetaKey, "aay", metaSigs)

	var wg sync.WaitGroup
	run := func(what string, f func() resp, status ...int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := f()
			if !slices.Contains(status, r.status) {
				t.Errorf("%s: %d %.200s", what, r.status, r.body)
			}
		}()
	}
	for i, tr := range trees {
		sid := sids[i]
		n, _ := object.ParseName(tr.name)
		e.need(e.Tok, sid, []object.Name{n})
		if i%2 == 0 {
			run("dirtree upload", func() resp { return e.upload(e.Tok, sid, tr.name, tr.data) }, 201)
		} else {
			run("dirtree pack", func() resp {
				return e.sendPack(e.Tok, sid, pack(t, tar.FormatPAX, entry{tar.Header{Name: n.RelPath(), Size: int64(len(tr.data)), Mode: 0o644, Typeflag: tar.TypeReg}, tr.data}))
			}, 200)
		}
	}
	jn, _ := object.ParseName(junkName)
	e.need(e.Tok, sids[12], []object.Name{jn})
	run("hostile dirtree", func() resp { return e.upload(e.Tok, sids[12], junkName, junk) }, 422)
	// (sessions 6 to 11 stay free)
	bn, _ := object.ParseName(bombName)
	for i := 13; i < 16; i++ {
		sid := sids[i]
		e.need(e.Tok, sid, []object.Name{bn})
		run("bomb", func() resp { return e.upload(e.Tok, sid, bombName, bombData) }, 201)
	}
	sumA, _ := object.ParseChecksum(fx.a)
	e.need(e.Tok, sids[16], []object.Name{{Sum: sumA, Type: object.CommitMeta}})
	run("detached metadata at its size limit", func() resp { return e.upload(e.Tok, sids[16], fx.a+".commitmeta", bigMeta) }, 413, 422)
	for i := 17; i < 22; i++ {
		sid := sids[i]
		run("names", func() resp {
			many := make([]string, api.MaxNamesPerRequest)
			for j := range many {
				many[j] = fmt.Sprintf("%062x%02x.filez", j, i)
			}
			return e.doJSON(e.Tok, "POST", api.PathSessions+"/"+sid+"/objects", api.ObjectsRequest{Objects: many})
		}, 200)
	}
	// Idle connections from another address of the same host (from the
	// client's own, they would take the place of its requests' connections).
	var conns []net.Conn
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	for i := 0; i < 2000; i++ {
		if c, err := d.Dial("tcp", strings.TrimPrefix(e.URL, "http://")); err == nil {
			conns = append(conns, c)
		}
	}
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	// The deep tree, published last (its walk is the publish's).
	build, c := deepBuild(t, object.MaxTreeDepth+1)
	want(t, e.do(e.Tok, "DELETE", api.PathSessions+"/"+sids[len(sids)-1], nil, nil), 204)
	ds := e.session(e.Tok, []api.RefUpdate{{Name: "deep", New: c}}, true)
	e.packAll(build, e.Tok, ds.ID)
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+ds.ID+"/commit", nil), 422)

	hwm := vmHWM(t, pid)
	t.Logf("daemon peak RSS %d MiB", hwm>>20)
	if hwm > 256<<20 {
		t.Fatalf("daemon peak RSS %d MiB, over 256 MiB", hwm>>20)
	}
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// The daemon's own signatures always fit: pushed signatures are refused
// before the intent when they leave no room for them, so that a publish,
// once it starts, finishes.
func TestDaemonSignaturesHaveRoom(t *testing.T) {
	t.Parallel()
	_, key, _ := ed25519.GenerateKey(nil)
	e := newEnv(t)
	e.SignWith(key)
	e.Start()
	build, c := newBuild(t, "main", 5, 1700000000)
	sum, _ := object.ParseChecksum(c)
	updates := []api.RefUpdate{{Name: "main", New: c}}
	s := e.session(e.Tok, updates, false)
	e.packFrom(build, e.Tok, s.ID, updates)
	e.need(e.Tok, s.ID, []object.Name{{Sum: sum, Type: object.CommitMeta}})
	want(t, e.upload(e.Tok, s.ID, c+".commitmeta", commitMeta(t, object.Ed25519MetaKey, "aay", edSigs(object.MaxSignaturesPerKey, 3))), 201)
	r := e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil)
	if r.status != 422 || apiError(t, r).Code != api.CodeMetaLimit {
		t.Fatalf("64 pushed signatures and the daemon's: %d %s", r.status, r.body)
	}
	want(t, e.upload(e.Tok, s.ID, c+".commitmeta", commitMeta(t, object.Ed25519MetaKey, "aay", edSigs(object.MaxSignaturesPerKey-1, 3))), 201)
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil), 200)
	sigs, err := object.SignaturesOf(prodCommitMeta(t, e.Repo, c))
	if err != nil || len(sigs.Ed25519) != object.MaxSignaturesPerKey {
		t.Fatalf("published: %d signatures, %v", len(sigs.Ed25519), err)
	}
}
