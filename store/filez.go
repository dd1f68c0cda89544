package store

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"github.com/ostree-upload/ostree-upload/store/object"
	"golang.org/x/sys/unix"
)

// What is pushed is always an object's archive form, the bytes an archive
// repository holds: a bare or bare-user repository's file objects are
// converted as they are read, never copied to disk first. The checksum does
// not depend on the form, so the receiving side verifies converted objects
// like any other.

// Converts reports whether n's archive form is made as it is read (a file
// object of a repository that is not in archive mode) rather than read from
// its file; its size is then known only by reading it (ArchiveSize).
func (r *Repo) Converts(n object.Name) bool {
	return r.mode != ModeArchive && n.Type == object.File
}

// OpenObject opens the archive form of object n. For a converted object
// (see Converts) that is libostree's file header followed by the content
// compressed with raw deflate, the same bytes at every read with the same
// libostree and zlib. Any other object is read from its file, and the
// reader is an io.ReaderAt too.
func (r *Repo) OpenObject(ctx context.Context, n object.Name) (io.ReadCloser, error) {
	if !r.Converts(n) {
		rel := n.RelPath()
		for {
			var fd int
			err := r.at(func(dfd int) (err error) {
				fd, err = unix.Openat(dfd, rel, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				return err
			})
			if errors.Is(err, unix.EINTR) {
				continue
			}
			path := r.abs(rel)
			if err != nil {
				return nil, objectErr(n, &os.PathError{Op: "open", Path: path, Err: err})
			}
			return &looseFile{fd: fd, path: path}, nil
		}
	}
	csum := C.CString(n.Sum.String())
	defer C.free(unsafe.Pointer(csum))
	var s *C.GInputStream
	err := r.do(ctx, func(p *C.OstreeRepo) error {
		var gerr *C.GError
		if s = C.ou_open_filez(p, csum, &gerr); s == nil {
			return takeError(gerr)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("object %s: %w", n, err)
	}
	return &filezReader{r: r, ctx: ctx, name: n, s: s}, nil
}

// looseFile reads an object's file, by raw system calls: an *os.File costs
// five more per object (its poller's), and a push of a million small files
// opens a million. It is an io.ReaderAt too. Like an *os.File, it may be
// closed while another goroutine reads it (net/http may still be reading a
// request's body when its answer came): Close waits for reads under way,
// so that the descriptor is never reused under them, and later reads fail.
type looseFile struct {
	mu   sync.RWMutex
	fd   int // -1 once closed
	path string
}

func (f *looseFile) Read(b []byte) (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.fd < 0 {
		return 0, os.ErrClosed
	}
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Read(f.fd, b)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 0, &os.PathError{Op: "read", Path: f.path, Err: err}
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// ReadAt reads len(b) bytes from off, or fewer with an error (io.EOF at
// the end of the file).
func (f *looseFile) ReadAt(b []byte, off int64) (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.fd < 0 {
		return 0, os.ErrClosed
	}
	n := 0
	for n < len(b) {
		k, err := unix.Pread(f.fd, b[n:], off+int64(n))
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return n, &os.PathError{Op: "read", Path: f.path, Err: err}
		case k == 0:
			return n, io.EOF
		}
		n += k
	}
	return n, nil
}

func (f *looseFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fd < 0 {
		return os.ErrClosed
	}
	err := unix.Close(f.fd)
	f.fd = -1
	if err != nil {
		return &os.PathError{Op: "close", Path: f.path, Err: err}
	}
	return nil
}

// filezReader reads a GInputStream made by ou_open_filez.
type filezReader struct {
	r    *Repo
	ctx  context.Context
	name object.Name
	s    *C.GInputStream
	buf  unsafe.Pointer // C memory: a Go buffer may not be held by C across calls
}

const filezChunk = 64 << 10

func (f *filezReader) Read(b []byte) (int, error) {
	if f.s == nil {
		return 0, os.ErrClosed
	}
	if len(b) == 0 {
		return 0, nil
	}
	if f.buf == nil {
		f.buf = C.malloc(filezChunk)
	}
	var n C.gssize
	err := f.r.do(f.ctx, func(*C.OstreeRepo) error {
		var gerr *C.GError
		if n = C.ou_stream_read(f.s, f.buf, C.gsize(min(len(b), filezChunk)), &gerr); n < 0 {
			return takeError(gerr)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read object %s: %w", f.name, err)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return copy(b, unsafe.Slice((*byte)(f.buf), int(n))), nil
}

func (f *filezReader) Close() error {
	if f.s == nil {
		return nil
	}
	C.ou_unref(C.gpointer(unsafe.Pointer(f.s)))
	f.s = nil
	if f.buf != nil {
		C.free(f.buf)
		f.buf = nil
	}
	return nil
}

// ArchiveSize is the exact size of n's archive form. For a converted object
// it reads the whole form, which costs what compressing the content costs.
func (r *Repo) ArchiveSize(ctx context.Context, n object.Name) (int64, error) {
	if !r.Converts(n) {
		return r.ObjectSize(n)
	}
	rc, err := r.OpenObject(ctx, n)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	size, err := io.Copy(io.Discard, rc)
	if err != nil {
		return 0, err
	}
	return size, nil
}

// filezAllowance is what SizeEstimate adds to a converted object's content
// size for its header and deflate's framing.
const filezAllowance = 64

// SizeEstimate is a cheap estimate of the size of n's archive form, to plan
// and show progress with: its exact size when it is read from its file, else
// the size of its content (compression usually shrinks it).
func (r *Repo) SizeEstimate(n object.Name) (int64, error) {
	if !r.Converts(n) {
		return r.ObjectSize(n)
	}
	s := n.Sum.String()
	size, err := r.statRel(n, "objects/"+s[:2]+"/"+s[2:]+".file", unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return 0, err
	}
	return size + filezAllowance, nil
}

func objectErr(n object.Name, err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("object %s: %w", n, ErrNotFound)
	}
	return fmt.Errorf("object %s: %w", n, err)
}
