package store

import (
	"errors"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/internal/gvariant"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

func TestGPGSignAndVerify(t *testing.T) {
	t.Parallel()
	key := storetest.NewGPGKey(t)
	other := storetest.NewGPGKey(t)
	r := newArchive(t)
	data := []byte("commit object bytes")
	existing, err := storetest.CommitMeta("xa.note", "s", "kept")
	if err != nil {
		t.Fatal(err)
	}
	meta, err := r.SignGPG(ctx, existing, data, []string{key.ID}, key.Home)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.VerifyGPG(ctx, meta, data, "", key.PublicRing); err != nil {
		t.Fatalf("verify: %v", err)
	}
	// The other entries stay.
	if v, err := gvariant.Decode(gvariant.MustParseType("a{sv}"), meta); err != nil || len(v.([]any)) != 2 {
		t.Errorf("signing dropped an entry: %v", err)
	}
	// A real signature is a well-formed OpenPGP signature; each entry is
	// judged on its own against the trusted keys.
	sigs, err := object.SignaturesOf(meta)
	if err != nil || len(sigs.GPG) != 1 {
		t.Fatalf("signatures of signed metadata: %+v, %v", sigs, err)
	}
	other2, err := r.SignGPG(ctx, nil, data, []string{other.ID}, other.Home)
	if err != nil {
		t.Fatal(err)
	}
	sigs2, _ := object.SignaturesOf(other2)
	trusted, err := r.TrustedGPG(ctx, append(sigs.GPG, sigs2.GPG...), data, "", key.PublicRing)
	if err != nil || len(trusted) != 1 || string(trusted[0]) != string(sigs.GPG[0]) {
		t.Errorf("trusted entries: %d, %v", len(trusted), err)
	}
	for what, c := range map[string]struct {
		meta, data []byte
		ring       string
	}{
		"untrusted key": {meta, data, other.PublicRing},
		"other data":    {meta, []byte("another commit"), key.PublicRing},
		"unsigned":      {existing, data, key.PublicRing},
	} {
		if err := r.VerifyGPG(ctx, c.meta, c.data, "", c.ring); !errors.Is(err, ErrNoValidGPGSignature) {
			t.Errorf("%s: err = %v, want ErrNoValidGPGSignature", what, err)
		}
	}
	if _, err := r.SignGPG(ctx, nil, data, []string{"0000000000000000DEADBEEF"}, key.Home); err == nil {
		t.Error("signing with a key the home lacks succeeded")
	}
}
