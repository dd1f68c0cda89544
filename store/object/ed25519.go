package object

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ostree-upload/ostree-upload/store/internal/gvariant"
)

// Ed25519MetaKey is the key of ed25519 signatures in a commit's detached
// metadata and in summary.sig, as libostree writes them: an "aay" of 64-byte
// signatures, each over the commit object's bytes or the summary's bytes.
const Ed25519MetaKey = "ostree.sign.ed25519"

var typeSigs = gvariant.MustParseType("aay")

// maxKeyFile bounds a key file.
const maxKeyFile = 1 << 20

// LoadEd25519Keys reads secret keys in libostree's key file format: one
// base64 key per line (blank lines and lines starting with # ignored), each
// the 64 bytes of seed followed by public key, as libsodium keeps them.
func LoadEd25519Keys(path string) ([]ed25519.PrivateKey, error) {
	lines, err := keyLines(path)
	if err != nil {
		return nil, err
	}
	var keys []ed25519.PrivateKey
	for _, l := range lines {
		b, err := base64.StdEncoding.DecodeString(l.text)
		if err != nil || len(b) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("%s:%d: not a base64 ed25519 secret key (%d bytes of seed and public key)", path, l.n, ed25519.PrivateKeySize)
		}
		key := ed25519.NewKeyFromSeed(b[:ed25519.SeedSize])
		if !bytes.Equal(key[ed25519.SeedSize:], b[ed25519.SeedSize:]) {
			return nil, fmt.Errorf("%s:%d: the public half does not belong to the seed", path, l.n)
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no keys", path)
	}
	return keys, nil
}

// LoadEd25519PublicKeys reads trusted public keys: one base64 32-byte key
// per line (blank lines and lines starting with # ignored).
func LoadEd25519PublicKeys(path string) ([]ed25519.PublicKey, error) {
	lines, err := keyLines(path)
	if err != nil {
		return nil, err
	}
	var keys []ed25519.PublicKey
	for _, l := range lines {
		b, err := base64.StdEncoding.DecodeString(l.text)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%s:%d: not a base64 ed25519 public key (%d bytes)", path, l.n, ed25519.PublicKeySize)
		}
		keys = append(keys, ed25519.PublicKey(b))
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no keys", path)
	}
	return keys, nil
}

type keyLine struct {
	n    int
	text string
}

func keyLines(path string) ([]keyLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []keyLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, maxKeyFile)
	for n := 1; sc.Scan(); n++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		out = append(out, keyLine{n, t})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// SignEd25519 adds each key's signature of data to the "a{sv}" metadata
// meta (nil or empty: none yet) and returns the new metadata in normal
// form. Existing entries and signatures are kept; a signature already
// present is not added twice, so signing again changes nothing. The
// limits of pushed signatures do not apply: the keys are the signer's own.
func SignEd25519(meta, data []byte, keys []ed25519.PrivateKey) ([]byte, error) {
	var sigs Signatures
	for _, k := range keys {
		sigs.Ed25519 = append(sigs.Ed25519, ed25519.Sign(k, data))
	}
	return addSignatures(meta, sigs, nil)
}

// ErrNoValidSignature reports data without a valid signature by a trusted key.
var ErrNoValidSignature = errors.New("no valid ed25519 signature by a trusted key")

// VerifyEd25519 checks that meta holds at least one signature of data by
// one of trusted.
func VerifyEd25519(meta, data []byte, trusted []ed25519.PublicKey) error {
	lists, err := SignatureLists(meta)
	if err != nil {
		return err
	}
	if len(lists.Ed25519) == 0 {
		return fmt.Errorf("%w: not signed", ErrNoValidSignature)
	}
	if len(TrustedEd25519(lists.Ed25519, data, trusted)) > 0 {
		return nil
	}
	return fmt.Errorf("%w: %d signatures, none valid for the trusted keys", ErrNoValidSignature, len(lists.Ed25519))
}

// TrustedEd25519 returns the signatures of sigs that are valid signatures of
// data by one of trusted.
func TrustedEd25519(sigs [][]byte, data []byte, trusted []ed25519.PublicKey) [][]byte {
	var out [][]byte
	for _, sig := range sigs {
		for _, k := range trusted {
			if len(sig) == ed25519.SignatureSize && ed25519.Verify(k, data, sig) {
				out = append(out, sig)
				break
			}
		}
	}
	return out
}

// SignatureLists reads the signature lists of detached metadata as a
// repository holds it (normal form not required); other keys are ignored.
func SignatureLists(meta []byte) (Signatures, error) {
	var s Signatures
	if len(meta) == 0 {
		return s, nil
	}
	if err := gvariant.ValidateLoose(typeCommitMeta, meta); err != nil {
		return s, fmt.Errorf("detached metadata: %w", err)
	}
	v := gvariant.NewView(typeCommitMeta, meta)
	for i := 0; i < v.Len(); i++ {
		e := v.Index(i)
		key := e.Field(0).Str()
		if key != GPGMetaKey && key != Ed25519MetaKey {
			continue
		}
		val := e.Field(1).Variant()
		if val.Type() == nil || val.Type().String() != "aay" {
			return s, fmt.Errorf("detached metadata: %s holds a %s, not aay", key, typeName(val))
		}
		for j := 0; j < val.Len(); j++ {
			if key == GPGMetaKey {
				s.GPG = append(s.GPG, val.Index(j).Raw())
			} else {
				s.Ed25519 = append(s.Ed25519, val.Index(j).Raw())
			}
		}
	}
	return s, nil
}

// GPGMetaKey is the key of GPG signatures in detached metadata and in
// summary.sig: an "aay" of OpenPGP signature packets.
const GPGMetaKey = "ostree.gpgsigs"
