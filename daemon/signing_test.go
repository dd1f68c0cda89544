package daemon_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// commitUnsigned uploads everything of the new commits (A) but a signature
// and commits: it must get 422 not-signed naming the commit and reason,
// and no ref may move. It returns the session, still open.
func (e *env) commitUnsigned(updates []api.RefUpdate, reason string) api.Session {
	t := e.t
	t.Helper()
	s := e.session(e.Tok, updates, false)
	if err := e.uploadAll(e.Tok, s.ID, e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))); err != nil {
		t.Fatal(err)
	}
	r := e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil)
	var ae api.Error
	r.json(t, &ae)
	if r.status != 422 || ae.Code != api.CodeNotSigned || !strings.Contains(ae.Error, fx.a) || !strings.Contains(ae.Error, reason) {
		t.Fatalf("unsigned commit: %d %s", r.status, r.body)
	}
	if refs := e.Refs(); len(refs) != 0 {
		t.Fatalf("refs moved for an unsigned commit: %v", refs)
	}
	return s
}

// With sign_verify, an unsigned commit is refused and nothing moves; a
// commit signed by a trusted builder key is published with the daemon's
// own signature added, and the summary is signed.
func TestEd25519SignAndVerify(t *testing.T) {
	t.Parallel()
	builderPub, builder, _ := ed25519.GenerateKey(nil)
	serverPub, server, _ := ed25519.GenerateKey(nil)
	e := newEnv(t)
	e.SignWith(server)
	e.Trust(builderPub)
	e.Config.SignVerify = true
	e.Start()

	updates := []api.RefUpdate{{Name: "main", New: fx.a}}
	s := e.commitUnsigned(updates, "not signed")

	// A signature by an untrusted key does not do either.
	sum, _ := object.ParseChecksum(fx.a)
	commit, err := os.ReadFile(filepath.Join(fx.build, object.Name{Sum: sum, Type: object.Commit}.RelPath()))
	if err != nil {
		t.Fatal(err)
	}
	metaName := object.Name{Sum: sum, Type: object.CommitMeta}
	wrong, _ := object.SignEd25519(nil, commit, []ed25519.PrivateKey{server})
	e.need(e.Tok, s.ID, []object.Name{metaName})
	want(t, e.upload(e.Tok, s.ID, metaName.String(), wrong), 201)
	if r := e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil); r.status != 422 {
		t.Fatalf("commit signed by an untrusted key: %d %s", r.status, r.body)
	}

	// The builder signs it: the push goes through in a new session.
	signed, _ := object.SignEd25519(nil, commit, []ed25519.PrivateKey{builder})
	s2 := e.session(e.Tok, updates, false)
	e.need(e.Tok, s2.ID, append(objectsOf(t, fx.a, ""), metaName))
	if r := e.upload(e.Tok, s2.ID, metaName.String(), signed); r.status != 201 {
		t.Fatalf("upload the signed commitmeta: %d %s", r.status, r.body)
	}
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s2.ID+"/commit", nil), 200)
	e.CheckPublished(map[string]string{"main": fx.a})

	// Production holds the builder's signature and the daemon's.
	prod, err := store.OpenArchive(ctx, e.Repo)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	meta, err := prod.CommitMeta(ctx, sum)
	if err != nil {
		t.Fatal(err)
	}
	for who, pub := range map[string]ed25519.PublicKey{"builder": builderPub, "daemon": serverPub} {
		if err := object.VerifyEd25519(meta, commit, []ed25519.PublicKey{pub}); err != nil {
			t.Errorf("published commit lacks the %s's signature: %v", who, err)
		}
	}
	summary, err := os.ReadFile(filepath.Join(e.Repo, "summary"))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := os.ReadFile(filepath.Join(e.Repo, "summary.sig"))
	if err != nil {
		t.Fatal(err)
	}
	if err := object.VerifyEd25519(sig, summary, []ed25519.PublicKey{serverPub}); err != nil {
		t.Fatalf("summary.sig: %v", err)
	}
	// A repeated commit answers the same and changes nothing.
	r := e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s2.ID+"/commit", nil)
	var out api.Session
	if r.status != 200 || json.Unmarshal(r.body, &out) != nil || out.State != api.StatePublished {
		t.Fatalf("repeated commit: %d %s", r.status, r.body)
	}
	if again, _ := prod.CommitMeta(ctx, sum); string(again) != string(meta) {
		t.Error("a repeated commit changed the detached metadata")
	}
}

// With gpg_verify, an unsigned commit is refused; a commit signed by a
// trusted builder key is published signed by the daemon's key, with a signed
// summary, and a client that requires both pulls it over HTTP.
func TestGPGSignAndVerify(t *testing.T) {
	t.Parallel()
	builder, server := storetest.NewGPGKey(t), storetest.NewGPGKey(t)
	e := newEnv(t)
	e.Config.GPGSign, e.Config.GPGHomedir, e.Config.GPGVerify, e.Config.GPGTrustedKeys = []string{server.ID}, server.Home, true, builder.PublicRing
	e.Start()
	updates := []api.RefUpdate{{Name: "main", New: fx.a}}
	s := e.commitUnsigned(updates, "GPG")

	// The builder signs the commit (as `ostree gpg-sign` would) and sends
	// its detached metadata again.
	sum, _ := object.ParseChecksum(fx.a)
	build, err := store.OpenArchive(ctx, fx.build)
	if err != nil {
		t.Fatal(err)
	}
	defer build.Close()
	commit, err := build.CommitObject(ctx, sum)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := build.SignGPG(ctx, nil, commit, []string{builder.ID}, builder.Home)
	if err != nil {
		t.Fatal(err)
	}
	metaName := object.Name{Sum: sum, Type: object.CommitMeta}
	e.need(e.Tok, s.ID, []object.Name{metaName})
	want(t, e.upload(e.Tok, s.ID, metaName.String(), signed), 201)
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil), 200)

	// Production carries both signatures; the summary is signed.
	prod, err := store.OpenArchive(ctx, e.Repo)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	meta, _ := prod.CommitMeta(ctx, sum)
	for who, k := range map[string]*storetest.GPGKey{"builder": builder, "daemon": server} {
		if err := prod.VerifyGPG(ctx, meta, commit, t.TempDir(), k.PublicRing); err != nil {
			t.Errorf("published commit lacks the %s's signature: %v", who, err)
		}
	}
	storetest.PullOverHTTPWith(t, e.Repo, "main", "--set=gpg-verify=true", "--set=gpg-verify-summary=true", "--gpg-import="+server.PublicArmor)
}

// A daemon killed at any step of a signed publish finishes it when it
// starts again: refs, commit signatures (each key's once) and a signed
// summary that a verifying client accepts.
func TestKill9DuringSignedPublish(t *testing.T) {
	t.Parallel()
	key := storetest.NewGPGKey(t)
	_, ed, _ := ed25519.GenerateKey(nil)
	keyfile := filepath.Join(t.TempDir(), "ed25519.key")
	os.WriteFile(keyfile, []byte(base64.StdEncoding.EncodeToString(ed)+"\n"), 0o600)
	updates := []api.RefUpdate{{Name: "main", New: fx.a}}
	sum, _ := object.ParseChecksum(fx.a)
	for _, fp := range []string{"after-intent", "after-sign", "after-refs", "after-summary", "before-summary-signature"} {
		t.Run(fp, func(t *testing.T) {
			e := newEnv(t)
			e.Config.GPGSign, e.Config.GPGHomedir, e.Config.SignKeyfiles = []string{key.ID}, key.Home, []string{keyfile}
			p := e.StartProcess(fx.bin, fp)
			if st := e.tryPush(e.Tok, updates); st == 200 {
				t.Fatalf("push succeeded through failpoint %s", fp)
			}
			waitKilled(t, p)
			e.StartProcess(fx.bin, "")
			if e.Refs()["main"] != fx.a {
				t.Fatalf("restart after %s did not finish the publish: %v", fp, e.Refs())
			}
			prod, err := store.OpenArchive(ctx, e.Repo)
			if err != nil {
				t.Fatal(err)
			}
			defer prod.Close()
			// (ostree show prints a signature ending in a zero byte as a
			// bytestring: count them from the metadata itself.)
			meta, err := prod.CommitMeta(ctx, sum)
			if err != nil {
				t.Fatal(err)
			}
			sigs, err := object.SignaturesOf(meta)
			if err != nil || len(sigs.GPG) != 1 || len(sigs.Ed25519) != 1 {
				t.Fatalf("after %s: %d GPG and %d ed25519 signatures, want one each (%v)", fp, len(sigs.GPG), len(sigs.Ed25519), err)
			}
			summary, _ := os.ReadFile(filepath.Join(e.Repo, "summary"))
			sig, _ := os.ReadFile(filepath.Join(e.Repo, "summary.sig"))
			if err := object.VerifyEd25519(sig, summary, []ed25519.PublicKey{ed.Public().(ed25519.PublicKey)}); err != nil {
				t.Fatalf("summary.sig after %s: %v", fp, err)
			}
			if meta, _ := prod.CommitMeta(ctx, sum); meta == nil {
				t.Fatal("no detached metadata")
			}
			storetest.PullOverHTTPWith(t, e.Repo, "main", "--set=gpg-verify=true", "--set=gpg-verify-summary=true", "--gpg-import="+key.PublicArmor)
		})
	}
}
