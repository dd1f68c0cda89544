package store

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"unsafe"

	"github.com/ostree-upload/ostree-upload/store/object"
)

func cBytes(b []byte) (*C.guint8, C.gsize) {
	if len(b) == 0 {
		return nil, 0
	}
	return (*C.guint8)(unsafe.Pointer(&b[0])), C.gsize(len(b))
}

// SignGPG appends a GPG signature of data by each key (an id or fingerprint
// of a secret key in homedir; "" for GnuPG's default home) to the "a{sv}"
// metadata meta, through libostree and gpgme.
func (r *Repo) SignGPG(ctx context.Context, meta, data []byte, keys []string, homedir string) ([]byte, error) {
	if len(keys) == 0 {
		return meta, nil
	}
	ids := make([]*C.char, len(keys)+1)
	for i, k := range keys {
		ids[i] = C.CString(k)
		defer C.free(unsafe.Pointer(ids[i]))
	}
	var home *C.char
	if homedir != "" {
		home = C.CString(homedir)
		defer C.free(unsafe.Pointer(home))
	}
	// cgo may not pass Go memory holding Go pointers: copy the vector.
	cids := (**C.char)(C.malloc(C.size_t(len(ids)) * C.size_t(unsafe.Sizeof(ids[0]))))
	defer C.free(unsafe.Pointer(cids))
	copy(unsafe.Slice(cids, len(ids)), ids)
	var out []byte
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		d, dn := cBytes(data)
		o, on := cBytes(meta)
		var res *C.guint8
		var n C.gsize
		var gerr *C.GError
		if C.ou_gpg_sign_data(p, d, dn, o, on, cids, home, &res, &n, &gerr) == 0 {
			return takeError(gerr)
		}
		out = takeBytes(res, n)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gpg sign: %w", err)
	}
	return out, nil
}

// ErrNoValidGPGSignature reports data without a valid GPG signature by a
// trusted key.
var ErrNoValidGPGSignature = errors.New("no valid GPG signature by a trusted key")

// VerifyGPG checks that meta holds a valid GPG signature of data by a key
// of the keyrings (*.gpg) in keyringDir ("": libostree's system-wide trusted
// keyrings) or of the keyring file keyring ("": none).
func (r *Repo) VerifyGPG(ctx context.Context, meta, data []byte, keyringDir, keyring string) error {
	sigs, err := gpgSignatures(meta)
	if err != nil {
		return err
	}
	if len(sigs) == 0 {
		return fmt.Errorf("%w: not signed", ErrNoValidGPGSignature)
	}
	var kr, dir *C.char
	if keyring != "" {
		kr = C.CString(keyring)
		defer C.free(unsafe.Pointer(kr))
	}
	if keyringDir != "" {
		dir = C.CString(keyringDir)
		defer C.free(unsafe.Pointer(dir))
	}
	err = r.do(ctx, func(p *C.OstreeRepo) error {
		d, dn := cBytes(data)
		s, sn := cBytes(sigs)
		var gerr *C.GError
		if C.ou_gpg_verify_data(p, d, dn, s, sn, dir, kr, &gerr) == 0 {
			return takeError(gerr)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoValidGPGSignature, err)
	}
	return nil
}

// gpgSignatures concatenates the signature packets of meta's ostree.gpgsigs.
func gpgSignatures(meta []byte) ([]byte, error) {
	lists, err := object.SignatureLists(meta)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for _, s := range lists.GPG {
		out.Write(s)
	}
	return out.Bytes(), nil
}

// TrustedGPG returns the entries of sigs (each an OpenPGP signature) that
// hold a valid signature of data by a key of the keyrings in keyringDir
// ("": libostree's system-wide trusted keyrings) or of the keyring file
// keyring ("": none). Each entry is checked on its own.
func (r *Repo) TrustedGPG(ctx context.Context, sigs [][]byte, data []byte, keyringDir, keyring string) ([][]byte, error) {
	var out [][]byte
	for _, sig := range sigs {
		meta, err := object.AddSignatures(nil, object.Signatures{GPG: [][]byte{sig}})
		if err != nil {
			return nil, err
		}
		err = r.VerifyGPG(ctx, meta, data, keyringDir, keyring)
		if errors.Is(err, ErrNoValidGPGSignature) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, sig)
	}
	return out, nil
}

// SignSummaryGPG adds a GPG signature of r's summary by each key to its
// summary.sig (made if missing).
func (r *Repo) SignSummaryGPG(ctx context.Context, keys []string, homedir string) error {
	return r.signSummary(func(old, summary []byte) ([]byte, error) { return r.SignGPG(ctx, old, summary, keys, homedir) })
}
