package store

import (
	"errors"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/storetest"
)

func TestGPGSignAndVerify(t *testing.T) {
	key := storetest.NewGPGKey(t)
	other := storetest.NewGPGKey(t)
	r := newArchive(t)
	data := []byte("commit object bytes")
	existing, _ := MergeCommitMeta(nil, mustEncodeMeta(t, "xa.note", "s", "kept"))
	meta, err := r.SignGPG(ctx, existing, data, []string{key.ID}, key.Home)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.VerifyGPG(ctx, meta, data, "", key.PublicRing); err != nil {
		t.Fatalf("verify: %v", err)
	}
	// The other entries stay; ed25519 signatures can join the same metadata.
	if merged, err := MergeCommitMeta(meta, existing); err != nil || string(merged) != string(meta) {
		t.Errorf("signing dropped an entry: %v", err)
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
