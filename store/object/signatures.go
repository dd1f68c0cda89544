package object

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ostree-upload/ostree-upload/store/internal/gvariant"
)

// Signatures are the signature lists of a commit's detached metadata: the
// only part of it that a push may change.
type Signatures struct {
	GPG     [][]byte // ostree.gpgsigs: OpenPGP signature packets, one entry per signer
	Ed25519 [][]byte // ostree.sign.ed25519: 64-byte signatures
}

// Len is the number of signatures.
func (s Signatures) Len() int { return len(s.GPG) + len(s.Ed25519) }

// MetaLimitError reports detached metadata that a merge would take over a
// limit: more than MaxSignaturesPerKey entries under one key, or more than
// MaxCommitMetaSize bytes.
type MetaLimitError struct {
	Key   string // the signature list, or "" for the size
	Count int    // entries, or bytes
	Limit int
}

func (e *MetaLimitError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("detached metadata would be %d bytes, more than %d", e.Count, e.Limit)
	}
	return fmt.Sprintf("detached metadata would hold %d %s signatures, more than %d", e.Count, e.Key, e.Limit)
}

// validateCommitMeta checks detached metadata as it arrives: a normal-form
// a{sv} with distinct keys, whose signature lists hold well-formed
// signatures (see SignaturesOf) within the limits.
func validateCommitMeta(b []byte) error {
	v, err := viewMeta(typeCommitMeta, b, true)
	if err != nil {
		return fmt.Errorf("commitmeta: %w", err)
	}
	if n := v.Len(); n > maxCommitMetaEntries {
		return fmt.Errorf("commitmeta: %d keys, more than %d", n, maxCommitMetaEntries)
	}
	seen := make(map[string]bool, v.Len())
	for i := 0; i < v.Len(); i++ {
		e := v.Index(i)
		key := e.Field(0).Str()
		if seen[key] {
			return fmt.Errorf("commitmeta: key %q twice", key)
		}
		seen[key] = true
		if _, err := sigList(key, e.Field(1).Variant()); err != nil {
			return fmt.Errorf("commitmeta: %w", err)
		}
	}
	return nil
}

// CheckCommitMeta checks detached metadata as a repository may hold it: an
// "a{sv}" of at most MaxCommitMetaSize bytes (normal form not required).
func CheckCommitMeta(b []byte) error {
	if int64(len(b)) > MaxCommitMetaSize {
		return fmt.Errorf("commitmeta: %d bytes, more than %d", len(b), MaxCommitMetaSize)
	}
	if err := gvariant.ValidateLoose(typeCommitMeta, b); err != nil {
		return fmt.Errorf("commitmeta: %w", err)
	}
	return nil
}

// sigList checks the value of a signature key of detached metadata and
// returns its entries (views into the metadata's bytes); other keys give nil.
func sigList(key string, val gvariant.View) ([][]byte, error) {
	var check func([]byte) error
	switch key {
	case GPGMetaKey:
		check = checkGPGSignature
	case Ed25519MetaKey:
		check = func(sig []byte) error {
			if len(sig) != 64 {
				return fmt.Errorf("a signature of %d bytes, not 64", len(sig))
			}
			return nil
		}
	default:
		return nil, nil
	}
	if val.Type() == nil || val.Type().String() != "aay" {
		return nil, fmt.Errorf("%s holds a %s, not aay", key, typeName(val))
	}
	n := val.Len()
	if n > MaxSignaturesPerKey {
		return nil, fmt.Errorf("%s holds %d signatures, more than %d", key, n, MaxSignaturesPerKey)
	}
	out := make([][]byte, n)
	for i := range out {
		out[i] = val.Index(i).Raw()
		if err := check(out[i]); err != nil {
			return nil, fmt.Errorf("%s entry %d: %w", key, i, err)
		}
	}
	return out, nil
}

// SignaturesOf returns the signatures of detached metadata that a push sent:
// only ostree.gpgsigs and ostree.sign.ed25519 are taken, every other key is
// left out. Each entry must be well-formed (an "aay"; ed25519 signatures of
// 64 bytes; OpenPGP signature packets that parse), within the limits.
func SignaturesOf(meta []byte) (Signatures, error) {
	var s Signatures
	if len(meta) == 0 {
		return s, nil
	}
	if int64(len(meta)) > MaxCommitMetaSize {
		return s, fmt.Errorf("commitmeta: %d bytes, more than %d", len(meta), MaxCommitMetaSize)
	}
	if err := validateCommitMeta(meta); err != nil {
		return s, err
	}
	v := gvariant.NewView(typeCommitMeta, meta)
	for i := 0; i < v.Len(); i++ {
		e := v.Index(i)
		key := e.Field(0).Str()
		list, _ := sigList(key, e.Field(1).Variant())
		for _, sig := range list {
			sig = append([]byte(nil), sig...)
			if key == GPGMetaKey {
				s.GPG = append(s.GPG, sig)
			} else {
				s.Ed25519 = append(s.Ed25519, sig)
			}
		}
	}
	return s, nil
}

// Room is what a merge of pushed signatures leaves free under the limits
// for signatures still to come: the daemon's own, added when it publishes.
type Room struct {
	GPG, Ed25519 int // entries
	Bytes        int
}

// AddSignatures returns detached metadata meta (nil: none) with sigs added:
// each signature list becomes the union of what meta has and what sigs
// brings, in that order, and every other entry of meta stays as it is. When
// nothing is new, meta itself is returned, byte for byte. A result over the
// limits is refused with a *MetaLimitError. The cost is linear in the
// number of signatures.
func AddSignatures(meta []byte, sigs Signatures) ([]byte, error) {
	return addSignatures(meta, sigs, &Room{})
}

// AddSignaturesLeaving is AddSignatures that also keeps room free under
// the limits.
func AddSignaturesLeaving(meta []byte, sigs Signatures, room Room) ([]byte, error) {
	return addSignatures(meta, sigs, &room)
}

// addSignatures merges; room nil means no limits (the daemon's own
// signatures, whose number its configuration bounds).
func addSignatures(meta []byte, sigs Signatures, room *Room) ([]byte, error) {
	if sigs.Len() == 0 {
		return meta, nil
	}
	var entries []any
	if len(meta) > 0 {
		if room != nil && int64(len(meta)) > MaxCommitMetaSize {
			return nil, &MetaLimitError{Count: len(meta), Limit: MaxCommitMetaSize}
		}
		v, err := gvariant.Decode(typeCommitMeta, meta)
		if err != nil {
			return nil, fmt.Errorf("detached metadata: %w", err)
		}
		entries = v.([]any)
	}
	changed := false
	for _, l := range []struct {
		key  string
		sigs [][]byte
		room int
	}{{GPGMetaKey, sigs.GPG, roomOf(room).GPG}, {Ed25519MetaKey, sigs.Ed25519, roomOf(room).Ed25519}} {
		if len(l.sigs) == 0 {
			continue
		}
		idx, list := -1, []any(nil)
		for i, e := range entries {
			kv := e.([]any)
			if kv[0].(string) != l.key {
				continue
			}
			v := kv[1].(gvariant.Variant)
			if v.Type.String() != "aay" {
				return nil, fmt.Errorf("detached metadata: %s holds a %s, not aay", l.key, v.Type)
			}
			idx, list = i, v.Value.([]any)
		}
		have := make(map[string]bool, len(list)+len(l.sigs))
		for _, s := range list {
			have[string(s.([]byte))] = true
		}
		added := false
		for _, s := range l.sigs {
			if !have[string(s)] {
				have[string(s)] = true
				list = append(list, s)
				added = true
			}
		}
		if !added {
			continue
		}
		if room != nil && len(list)+l.room > MaxSignaturesPerKey {
			return nil, &MetaLimitError{Key: l.key, Count: len(list) + l.room, Limit: MaxSignaturesPerKey}
		}
		entry := []any{l.key, gvariant.Variant{Type: typeSigs, Value: list}}
		if idx >= 0 {
			entries[idx] = entry
		} else {
			entries = append(entries, entry)
		}
		changed = true
	}
	if !changed {
		return meta, nil
	}
	out, err := gvariant.Encode(typeCommitMeta, entries)
	if err != nil {
		return nil, err
	}
	if room != nil && int64(len(out)+room.Bytes) > MaxCommitMetaSize {
		return nil, &MetaLimitError{Count: len(out) + room.Bytes, Limit: MaxCommitMetaSize}
	}
	return out, nil
}

func roomOf(r *Room) Room {
	if r == nil {
		return Room{}
	}
	return *r
}

// checkGPGSignature checks that sig is one or more OpenPGP signature packets
// (RFC 4880 and its successors: versions 3 to 6), as gpg writes a detached
// binary signature: each packet's framing must be exact and its body a
// signature packet whose fields fit. The signature itself is not checked.
func checkGPGSignature(sig []byte) error {
	if len(sig) == 0 {
		return errors.New("an empty OpenPGP signature")
	}
	if len(sig) > MaxGPGSignatureSize {
		return fmt.Errorf("an OpenPGP signature of %d bytes, more than %d", len(sig), MaxGPGSignatureSize)
	}
	for rest := sig; len(rest) > 0; {
		tag, body, next, err := openPGPPacket(rest)
		if err != nil {
			return err
		}
		if tag != 2 {
			return fmt.Errorf("an OpenPGP packet of tag %d, not a signature (2)", tag)
		}
		if err := checkSignaturePacket(body); err != nil {
			return err
		}
		rest = next
	}
	return nil
}

var errOpenPGPFraming = errors.New("not an OpenPGP packet: bad framing")

// openPGPPacket splits the first packet off b: its tag, its body and what
// follows. Partial and indeterminate lengths are refused: signatures never
// use them.
func openPGPPacket(b []byte) (tag int, body, rest []byte, err error) {
	if len(b) < 2 || b[0]&0x80 == 0 {
		return 0, nil, nil, errOpenPGPFraming
	}
	var n, hdr int
	if b[0]&0x40 != 0 { // new format
		tag = int(b[0] & 0x3f)
		switch l := b[1]; {
		case l < 192:
			n, hdr = int(l), 2
		case l < 224:
			if len(b) < 3 {
				return 0, nil, nil, errOpenPGPFraming
			}
			n, hdr = (int(l)-192)<<8+int(b[2])+192, 3
		case l == 255:
			if len(b) < 6 {
				return 0, nil, nil, errOpenPGPFraming
			}
			n, hdr = int(binary.BigEndian.Uint32(b[2:6])), 6
		default:
			return 0, nil, nil, errors.New("an OpenPGP packet of partial length")
		}
	} else { // old format
		tag = int(b[0]>>2) & 0x0f
		switch b[0] & 3 {
		case 0:
			n, hdr = int(b[1]), 2
		case 1:
			if len(b) < 3 {
				return 0, nil, nil, errOpenPGPFraming
			}
			n, hdr = int(binary.BigEndian.Uint16(b[1:3])), 3
		case 2:
			if len(b) < 5 {
				return 0, nil, nil, errOpenPGPFraming
			}
			n, hdr = int(binary.BigEndian.Uint32(b[1:5])), 5
		default:
			return 0, nil, nil, errors.New("an OpenPGP packet of indeterminate length")
		}
	}
	if n < 0 || n > len(b)-hdr {
		return 0, nil, nil, errOpenPGPFraming
	}
	return tag, b[hdr : hdr+n], b[hdr+n:], nil
}

// checkSignaturePacket checks the fields of a signature packet's body up to
// its algorithm-specific signature data, which must not be empty.
func checkSignaturePacket(b []byte) error {
	bad := errors.New("an OpenPGP signature packet whose fields do not fit")
	if len(b) == 0 {
		return bad
	}
	switch b[0] {
	case 3:
		// version, 5 (hashed length), type, time (4), key id (8), public
		// key and hash algorithms, 2 bytes of hash, then the MPIs.
		if len(b) < 20 || b[1] != 5 {
			return bad
		}
		return nil
	case 4, 5, 6:
		// version, type, public key and hash algorithms, then the hashed
		// and unhashed subpackets (2-byte lengths in v4, 4 in v5 and v6),
		// 2 bytes of hash, a salt in v6, then the signature data.
		p, w := 4, 2
		if b[0] != 4 {
			w = 4
		}
		for i := 0; i < 2; i++ {
			if len(b) < p+w {
				return bad
			}
			var n int
			if w == 2 {
				n = int(binary.BigEndian.Uint16(b[p:]))
			} else {
				n = int(binary.BigEndian.Uint32(b[p:]))
			}
			p += w
			if n < 0 || n > len(b)-p {
				return bad
			}
			p += n
		}
		p += 2
		if b[0] == 6 {
			if len(b) < p+1 {
				return bad
			}
			p += 1 + int(b[p])
		}
		if p >= len(b) {
			return bad
		}
		return nil
	}
	return fmt.Errorf("an OpenPGP signature packet of version %d", b[0])
}
