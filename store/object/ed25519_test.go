package object

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/internal/gvariant"
)

// RFC 8032, section 7.1, test 1.
var (
	rfcSeed, _   = hex.DecodeString("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	rfcPublic, _ = hex.DecodeString("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
	rfcSig, _    = hex.DecodeString("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
)

func writeKeyFile(t *testing.T, lines ...string) string {
	p := filepath.Join(t.TempDir(), "keys")
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEd25519KnownVector(t *testing.T) {
	t.Parallel()
	secret := base64.StdEncoding.EncodeToString(append(append([]byte(nil), rfcSeed...), rfcPublic...))
	keys, err := LoadEd25519Keys(writeKeyFile(t, "# release key", "", secret))
	if err != nil || len(keys) != 1 {
		t.Fatalf("load: %v %v", keys, err)
	}
	meta, err := SignEd25519(nil, nil, keys)
	if err != nil {
		t.Fatal(err)
	}
	// {'ostree.sign.ed25519': <[@ay sig]>} in GVariant's serialisation,
	// written out by hand: the key and its nul, padding to 8, the variant
	// (the aay: one 64-byte element and its 1-byte end offset; a nul; the
	// type), the key's end offset, then the array's one element end offset.
	var want []byte
	want = append(want, Ed25519MetaKey+"\x00"...)
	want = append(want, 0, 0, 0, 0)
	want = append(want, rfcSig...)
	want = append(want, 64, 0)
	want = append(want, "aay"...)
	want = append(want, 20, 94)
	if !bytes.Equal(meta, want) {
		t.Fatalf("signed metadata\n got %x\nwant %x", meta, want)
	}
	pubs, err := LoadEd25519PublicKeys(writeKeyFile(t, base64.StdEncoding.EncodeToString(rfcPublic)))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyEd25519(meta, nil, pubs); err != nil {
		t.Fatal(err)
	}
}

func TestEd25519Keys(t *testing.T) {
	t.Parallel()
	bad := append(append([]byte(nil), rfcSeed...), rfcPublic...)
	bad[40] ^= 1
	for what, line := range map[string]string{
		"public half of another seed": base64.StdEncoding.EncodeToString(bad),
		"a public key":                base64.StdEncoding.EncodeToString(rfcPublic),
		"not base64":                  "!!!",
	} {
		if _, err := LoadEd25519Keys(writeKeyFile(t, line)); err == nil {
			t.Errorf("%s accepted as a secret key", what)
		}
	}
	if _, err := LoadEd25519Keys(writeKeyFile(t, "# only a comment")); err == nil {
		t.Error("a key file without keys accepted")
	}
	if _, err := LoadEd25519PublicKeys(writeKeyFile(t, base64.StdEncoding.EncodeToString(rfcSeed[:31]))); err == nil {
		t.Error("a 31-byte public key accepted")
	}
}

func TestEd25519SignMergesAndVerifies(t *testing.T) {
	t.Parallel()
	_, k1, _ := ed25519.GenerateKey(nil)
	_, k2, _ := ed25519.GenerateKey(nil)
	other, _, _ := ed25519.GenerateKey(nil)
	data := []byte("commit object bytes")
	// Existing detached metadata (a GPG signature, say) is kept.
	existing, err := gvariant.Encode(typeCommitMeta, []any{
		[]any{"ostree.gpgsigs", gvariant.Variant{Type: typeSigs, Value: []any{[]byte("gpg")}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	meta, err := SignEd25519(existing, data, []ed25519.PrivateKey{k1})
	if err != nil {
		t.Fatal(err)
	}
	again, err := SignEd25519(meta, data, []ed25519.PrivateKey{k1, k2})
	if err != nil {
		t.Fatal(err)
	}
	if same, _ := SignEd25519(again, data, []ed25519.PrivateKey{k2, k1}); !bytes.Equal(same, again) {
		t.Error("signing again with the same keys changed the metadata")
	}
	v, err := gvariant.DecodeNormal(typeCommitMeta, again)
	if err != nil {
		t.Fatalf("not in normal form: %v", err)
	}
	entries := v.([]any)
	if len(entries) != 2 || entries[0].([]any)[0] != "ostree.gpgsigs" ||
		len(entries[1].([]any)[1].(gvariant.Variant).Value.([]any)) != 2 {
		t.Fatalf("merged metadata: %v", entries)
	}
	for _, pub := range []ed25519.PublicKey{k1.Public().(ed25519.PublicKey), k2.Public().(ed25519.PublicKey)} {
		if err := VerifyEd25519(again, data, []ed25519.PublicKey{other, pub}); err != nil {
			t.Errorf("verify: %v", err)
		}
	}
	for what, c := range map[string]struct {
		meta, data []byte
		keys       []ed25519.PublicKey
	}{
		"untrusted key": {again, data, []ed25519.PublicKey{other}},
		"other data":    {again, []byte("another commit"), []ed25519.PublicKey{k1.Public().(ed25519.PublicKey)}},
		"unsigned":      {existing, data, []ed25519.PublicKey{k1.Public().(ed25519.PublicKey)}},
		"no metadata":   {nil, data, []ed25519.PublicKey{k1.Public().(ed25519.PublicKey)}},
	} {
		if err := VerifyEd25519(c.meta, c.data, c.keys); !errors.Is(err, ErrNoValidSignature) {
			t.Errorf("%s: err = %v, want ErrNoValidSignature", what, err)
		}
	}
	if err := VerifyEd25519([]byte("garbage"), data, nil); err == nil || errors.Is(err, ErrNoValidSignature) {
		t.Errorf("garbage metadata: err = %v", err)
	}
}

// Production's detached metadata keeps every entry; a push adds only
// signatures, each list a set, and the result stays within the limits.
func TestAddSignatures(t *testing.T) {
	t.Parallel()
	_, k1, _ := ed25519.GenerateKey(nil)
	_, k2, _ := ed25519.GenerateKey(nil)
	data := []byte("commit")
	prod, _ := SignEd25519(mustEncodeMeta(t, "xa.note", "s", "production's"), data, []ed25519.PrivateKey{k1})
	pushed, _ := SignEd25519(mustEncodeMeta(t, "xa.evil", "s", "from the build"), data, []ed25519.PrivateKey{k1, k2})
	sigs, err := SignaturesOf(pushed)
	if err != nil || len(sigs.Ed25519) != 2 || len(sigs.GPG) != 0 {
		t.Fatalf("signatures of the push: %+v, %v", sigs, err)
	}
	m, err := AddSignatures(prod, sigs)
	if err != nil {
		t.Fatal(err)
	}
	v, err := gvariant.DecodeNormal(typeCommitMeta, m)
	if err != nil {
		t.Fatal(err)
	}
	entries := v.([]any)
	if len(entries) != 2 || entries[0].([]any)[0] != "xa.note" || len(entries[1].([]any)[1].(gvariant.Variant).Value.([]any)) != 2 {
		t.Fatalf("merged: %v", entries)
	}
	for _, k := range []ed25519.PrivateKey{k1, k2} {
		if err := VerifyEd25519(m, data, []ed25519.PublicKey{k.Public().(ed25519.PublicKey)}); err != nil {
			t.Error(err)
		}
	}
	if same, _ := AddSignatures(m, sigs); !bytes.Equal(same, m) {
		t.Error("adding signatures already there changed the metadata")
	}
	if none, err := AddSignatures(nil, Signatures{}); none != nil || err != nil {
		t.Errorf("adding nothing: %x %v", none, err)
	}
	// Over the limit: refused, whatever production already holds.
	var many Signatures
	for i := 0; i < MaxSignaturesPerKey; i++ {
		many.Ed25519 = append(many.Ed25519, bytes.Repeat([]byte{byte(i)}, 64))
	}
	var le *MetaLimitError
	if _, err := AddSignatures(m, many); !errors.As(err, &le) || le.Key != Ed25519MetaKey {
		t.Fatalf("%d signatures: %v", MaxSignaturesPerKey+2, err)
	}
}

// Merging is linear: the 64 signatures of the limit against the same
// number in production, many times over, take milliseconds.
func TestAddSignaturesIsLinear(t *testing.T) {
	var a, b Signatures
	for i := 0; i < MaxSignaturesPerKey/2; i++ {
		a.Ed25519 = append(a.Ed25519, bytes.Repeat([]byte{byte(i)}, 64))
		b.Ed25519 = append(b.Ed25519, bytes.Repeat([]byte{byte(i + 100)}, 64))
	}
	prod, err := AddSignatures(nil, a)
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := AddSignatures(prod, b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2000 {
		t.Fatalf("%v allocations to merge 32 signatures into 32", allocs)
	}
}

// Pushed detached metadata is checked as it arrives: only well-formed
// signature lists within the limits.
func TestSignaturesOfRefuses(t *testing.T) {
	t.Parallel()
	sigs := func(key string, entries ...[]byte) []byte {
		var l []any
		for _, e := range entries {
			l = append(l, e)
		}
		return mustEncodeMeta(t, key, "aay", l)
	}
	var tooMany [][]byte
	for i := 0; i <= MaxSignaturesPerKey; i++ {
		tooMany = append(tooMany, bytes.Repeat([]byte{byte(i)}, 64))
	}
	for what, meta := range map[string][]byte{
		"junk gpg":          sigs(GPGMetaKey, []byte("junk")),
		"gpg literal data":  sigs(GPGMetaKey, []byte{0xcb, 3, 'b', 0, 0}),
		"gpg cut short":     sigs(GPGMetaKey, []byte{0x88, 40, 4, 0}),
		"empty gpg entry":   sigs(GPGMetaKey, nil),
		"short ed25519":     sigs(Ed25519MetaKey, make([]byte, 63)),
		"too many":          sigs(Ed25519MetaKey, tooMany...),
		"ed25519 of type s": mustEncodeMeta(t, Ed25519MetaKey, "s", "x"),
		"gpg of type ay":    mustEncodeMeta(t, GPGMetaKey, "ay", []byte{1}),
		"not a{sv}":         []byte("garbage"),
	} {
		if _, err := SignaturesOf(meta); err == nil {
			t.Errorf("%s: accepted", what)
		}
		if _, err := Verify(Name{Type: CommitMeta}, bytes.NewReader(meta)); !IsCorrupt(err) {
			t.Errorf("%s: Verify says %v", what, err)
		}
	}
}

func mustEncodeMeta(t *testing.T, key, typ string, v any) []byte {
	b, err := gvariant.Encode(typeCommitMeta, []any{[]any{key, gvariant.Variant{Type: gvariant.MustParseType(typ), Value: v}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
