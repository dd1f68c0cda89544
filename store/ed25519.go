package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
// present is not added twice, so signing again changes nothing.
func SignEd25519(meta, data []byte, keys []ed25519.PrivateKey) ([]byte, error) {
	entries, err := decodeSignedMeta(meta)
	if err != nil {
		return nil, err
	}
	idx := -1
	var sigs []any
	if err := eachSigList(entries, Ed25519MetaKey, func(i int, s []any) { idx, sigs = i, s }); err != nil {
		return nil, err
	}
	for _, k := range keys {
		sigs = addSig(sigs, ed25519.Sign(k, data))
	}
	entry := []any{Ed25519MetaKey, gvariant.Variant{Type: typeSigs, Value: sigs}}
	if idx >= 0 {
		entries[idx] = entry
	} else {
		entries = append(entries, entry)
	}
	return gvariant.Encode(typeCommitMeta, entries)
}

// eachSigList calls fn with the index and the signatures of every entry of
// entries (decoded "a{sv}") under key, which must hold an "aay".
func eachSigList(entries []any, key string, fn func(i int, sigs []any)) error {
	for i, e := range entries {
		kv := e.([]any)
		if kv[0].(string) != key {
			continue
		}
		v := kv[1].(gvariant.Variant)
		if v.Type.String() != "aay" {
			return fmt.Errorf("%s holds a %s, not aay", key, v.Type)
		}
		fn(i, v.Value.([]any))
	}
	return nil
}

// addSig appends sig to sigs unless it is there already.
func addSig(sigs []any, sig []byte) []any {
	if slices.ContainsFunc(sigs, func(x any) bool { return bytes.Equal(x.([]byte), sig) }) {
		return sigs
	}
	return append(sigs, sig)
}

// ErrNoValidSignature reports data without a valid signature by a trusted key.
var ErrNoValidSignature = errors.New("no valid ed25519 signature by a trusted key")

// VerifyEd25519 checks that meta holds at least one signature of data by
// one of trusted.
func VerifyEd25519(meta, data []byte, trusted []ed25519.PublicKey) error {
	entries, err := decodeSignedMeta(meta)
	if err != nil {
		return err
	}
	var sigs []any
	if err := eachSigList(entries, Ed25519MetaKey, func(_ int, s []any) { sigs = append(sigs, s...) }); err != nil {
		return err
	}
	for _, s := range sigs {
		sig := s.([]byte)
		for _, k := range trusted {
			if len(sig) == ed25519.SignatureSize && ed25519.Verify(k, data, sig) {
				return nil
			}
		}
	}
	if len(sigs) == 0 {
		return fmt.Errorf("%w: not signed", ErrNoValidSignature)
	}
	return fmt.Errorf("%w: %d signatures, none valid for the trusted keys", ErrNoValidSignature, len(sigs))
}

func decodeSignedMeta(meta []byte) ([]any, error) {
	if len(meta) == 0 {
		return nil, nil
	}
	v, err := gvariant.Decode(typeCommitMeta, meta)
	if err != nil {
		return nil, fmt.Errorf("detached metadata: %w", err)
	}
	return v.([]any), nil
}

// MergeCommitMeta merges two "a{sv}" detached metadata: a's entries first,
// then b's entries whose keys a lacks; signature lists ("aay" under the
// same key in both) become the union of both. Either may be empty.
func MergeCommitMeta(a, b []byte) ([]byte, error) {
	ea, err := decodeSignedMeta(a)
	if err != nil {
		return nil, err
	}
	eb, err := decodeSignedMeta(b)
	if err != nil {
		return nil, err
	}
	if len(eb) == 0 {
		if len(ea) == 0 {
			return nil, nil
		}
		return gvariant.Encode(typeCommitMeta, ea)
	}
	at := map[string]int{}
	for i, e := range ea {
		at[e.([]any)[0].(string)] = i
	}
	for _, e := range eb {
		kv := e.([]any)
		i, ok := at[kv[0].(string)]
		if !ok {
			at[kv[0].(string)] = len(ea)
			ea = append(ea, e)
			continue
		}
		va, vb := ea[i].([]any)[1].(gvariant.Variant), kv[1].(gvariant.Variant)
		if va.Type.String() != "aay" || vb.Type.String() != "aay" {
			continue // not a signature list: the first one stays
		}
		list := va.Value.([]any)
		for _, s := range vb.Value.([]any) {
			list = addSig(list, s.([]byte))
		}
		ea[i] = []any{kv[0], gvariant.Variant{Type: typeSigs, Value: list}}
	}
	return gvariant.Encode(typeCommitMeta, ea)
}

// CommitObject returns the bytes of a commit object of r, which signatures
// cover.
func (r *Repo) CommitObject(ctx context.Context, sum Checksum) ([]byte, error) {
	return r.loadMeta(ctx, ObjectName{Sum: sum, Type: Commit})
}

// WriteCommitMeta replaces a commit's detached metadata in r, durably: a
// reader sees the old file or the new one.
func (r *Repo) WriteCommitMeta(sum Checksum, meta []byte) error {
	if err := validateCommitMeta(meta); err != nil {
		return err
	}
	return writeFileAtomic(r.ObjectPath(ObjectName{Sum: sum, Type: CommitMeta}), meta, 0o644)
}

// SignSummaryEd25519 adds each key's signature of r's summary file to its
// summary.sig (made if missing), as libostree's ed25519 signer does.
func (r *Repo) SignSummaryEd25519(keys []ed25519.PrivateKey) error {
	return r.signSummary(func(old, summary []byte) ([]byte, error) { return SignEd25519(old, summary, keys) })
}

// signSummary replaces r's summary.sig with what sign makes of the current
// one (nil if missing) and the summary's bytes.
func (r *Repo) signSummary(sign func(old, summary []byte) ([]byte, error)) error {
	summary, err := readFileCapped(filepath.Join(r.path, "summary"), MaxMetadataSize)
	if err != nil {
		return fmt.Errorf("sign summary: %w", err)
	}
	sigPath := filepath.Join(r.path, "summary.sig")
	old, err := readFileCapped(sigPath, MaxCommitMetaSize)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sign summary: %w", err)
	}
	signed, err := sign(old, summary)
	if err != nil {
		return fmt.Errorf("sign summary: %w", err)
	}
	return writeFileAtomic(sigPath, signed, 0o644)
}

func readFileCapped(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := readCapped(f, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it,
// renames it over path and syncs the directory.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, TempPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	err = errors.Join(err, f.Chmod(mode), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}
