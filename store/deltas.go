package store

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"strings"
	"unsafe"

	"github.com/ostree-upload/ostree-upload/store/object"
)

// Delta names a static delta: the files under deltas/ with which a client
// holding commit From updates to commit To by fetching one delta instead
// of the objects To adds. A zero From is a delta from nothing: To whole.
type Delta struct {
	From, To object.Checksum
}

// FromEmpty reports whether the delta is from nothing.
func (d Delta) FromEmpty() bool { return d.From == object.Checksum{} }

// String is the delta's name as libostree writes it: "FROM-TO", or "TO"
// for a delta from nothing.
func (d Delta) String() string {
	if d.FromEmpty() {
		return d.To.String()
	}
	return d.From.String() + "-" + d.To.String()
}

// ParseDelta parses a delta's name (see Delta.String).
func ParseDelta(name string) (Delta, error) {
	var d Delta
	from, to, ok := strings.Cut(name, "-")
	if !ok {
		from, to = "", from
	}
	var err error
	if d.To, err = object.ParseChecksum(to); err != nil {
		return d, fmt.Errorf("static delta %q: %w", shorten(name), err)
	}
	if ok {
		if d.From, err = object.ParseChecksum(from); err != nil {
			return d, fmt.Errorf("static delta %q: %w", shorten(name), err)
		}
		if d.FromEmpty() {
			return d, fmt.Errorf("static delta %q: from the zero checksum", shorten(name))
		}
	}
	return d, nil
}

// ListDeltas returns the repository's static deltas: those with a
// superblock, which libostree writes last, so a generation cut off before
// it finished is not one.
func (r *Repo) ListDeltas(ctx context.Context) ([]Delta, error) {
	var out []Delta
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		var gerr *C.GError
		v := C.ou_list_static_deltas(p, &gerr)
		if v == nil {
			return takeError(gerr)
		}
		defer C.g_strfreev(v)
		strs := unsafe.Slice(v, 1<<30)
		for i := 0; strs[i] != nil; i++ {
			d, err := ParseDelta(C.GoString(strs[i]))
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list static deltas of %s: %w", r.path, err)
	}
	return out, nil
}
