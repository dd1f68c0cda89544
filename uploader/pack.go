package uploader

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/api/client"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// By default objects up to packEntryMax bytes travel in packs of about
// packTarget bytes; larger ones as resumable uploads of their own. A pack
// that breaks off loses at most the entry in flight, so packEntryMax bounds
// what a cut costs per stream.
const (
	packEntryMax = 2 << 20
	packTarget   = 8 << 20
	packMaxObjs  = 4096
)

// tarBlock is the unit of a tar archive: a header is one block, data is
// padded to whole blocks, and two zero blocks end the archive.
const tarBlock = 512

// packSize is the exact length of the pack tar writes for objects of sizes.
func packSize(sizes []int64) int64 {
	total := int64(2 * tarBlock)
	for _, s := range sizes {
		total += tarBlock + (s+tarBlock-1)/tarBlock*tarBlock
	}
	return total
}

// work is one unit for an upload stream: a large object or a pack.
type work struct {
	obj   object.Name // when pack is nil
	pack  []object.Name
	sizes []int64 // of pack's objects, as planned
	bytes int64
}

// packWork groups small objects (of the given sizes) into packs of about
// target bytes each.
func packWork(objs []object.Name, sizes []int64, target int64) []work {
	var out []work
	var cur work
	for i, n := range objs {
		s := sizes[i]
		if len(cur.pack) > 0 && (cur.bytes+s > target || len(cur.pack) >= packMaxObjs) {
			out = append(out, cur)
			cur = work{}
		}
		cur.pack = append(cur.pack, n)
		cur.sizes = append(cur.sizes, s)
		cur.bytes += s
	}
	if len(cur.pack) > 0 {
		out = append(out, cur)
	}
	return out
}

// writePack writes objs of the local repository, of the given sizes, to w
// as a ustar archive named as in an archive repository. Objects the local
// repository converts (see store.Repo.Converts) are made in memory one at a
// time, their sizes being known only then. The archive reaches w in writes
// of packWriteSize bytes, not one per header, content and padding of each
// entry.
func (p *pusher) writePack(ctx context.Context, w io.Writer, objs []object.Name, sizes []int64) error {
	bw := bufio.NewWriterSize(w, packWriteSize)
	tw := tar.NewWriter(bw)
	for i, n := range objs {
		if err := p.writeEntry(ctx, tw, n, sizes[i]); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// packWriteSize is the size of the writes a pack's archive is made in, and
// of the client's buffer for a request's body (see client.New): a pack of
// tiny objects would otherwise cross the pipe to the request, and reach
// the socket, a few hundred bytes at a time.
const packWriteSize = client.WriteBufferSize

var packTime = time.Unix(0, 0)

func (p *pusher) writeEntry(ctx context.Context, tw *tar.Writer, n object.Name, size int64) error {
	rc, err := p.repo.OpenObject(ctx, n)
	if err != nil {
		return &PermanentError{Err: fmt.Errorf("local object %s: %w", n, err)}
	}
	defer rc.Close()
	var src io.Reader = rc
	if p.repo.Converts(n) {
		b, err := io.ReadAll(io.LimitReader(rc, maxConverted+1))
		switch {
		case err != nil:
			return &PermanentError{Err: fmt.Errorf("local object %s: %w", n, err)}
		case len(b) > maxConverted:
			return permanent("local object %s grew past %d bytes when compressed (run ostree fsck on %s)", n, maxConverted, p.opts.Repo)
		}
		src, size = bytes.NewReader(b), int64(len(b))
	}
	hdr := &tar.Header{Name: n.RelPath(), Size: size, Mode: 0o644, ModTime: packTime, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	if k, err := copyObject(tw, src, size, *buf); err != nil || k != size {
		if err == nil || errors.Is(err, tar.ErrWriteTooLong) {
			return permanent("local object %s changed size during the push (run ostree fsck on %s)", n, p.opts.Repo)
		}
		return err
	}
	return nil
}

// copyObject copies src, which should hold size bytes, to w through buf,
// and returns how many it copied: more than size if src holds more. An
// object smaller than buf is read in one read of up to size+1 bytes, as a
// file read returns all it has: a million small files are not read a
// second time each to find their end.
func copyObject(w io.Writer, src io.Reader, size int64, buf []byte) (int64, error) {
	if size >= int64(len(buf)) {
		return io.CopyBuffer(w, src, buf)
	}
	n, err := io.ReadAtLeast(src, buf[:size+1], int(size))
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return int64(n), err
	}
	if int64(n) != size {
		return int64(n), nil
	}
	k, err := w.Write(buf[:n])
	return int64(k), err
}

// copyBuffers hold the buffers that copy objects into packs: a push of a
// million small files would otherwise allocate a million of them.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// maxConverted bounds the archive form of a converted object sent in a pack:
// packs carry objects of at most packEntryMax content bytes, which deflate
// and the header grow by far less than this.
const maxConverted = 2*packEntryMax + 1<<20

// sendPack sends objs, of the given sizes (size bytes together), in packs
// until the daemon holds every one of them. After a failure it asks the
// daemon which objects it still needs and sends only those.
func (p *pusher) sendPack(ctx context.Context, objs []object.Name, sizes []int64, size int64) error {
	pending, left := objs, size // left: the bytes of pending
	m := p.prog.meter(size)
	first := true
	err := p.c.RetryProgress(ctx, p.opts.RetryTimeout, func(progress func()) error {
		if !first {
			// Waits for the daemon to finish reading what the last
			// attempt sent.
			still, err := p.negotiate(ctx, pending, false)
			if err != nil {
				return err
			}
			stillSizes, stillBytes, err := p.sizesOf(still, pending, sizes)
			if err != nil {
				return err
			}
			if len(still) < len(pending) {
				progress()
				p.countSent(len(pending)-len(still), left-stillBytes)
				left = stillBytes
				m.reach(size - left)
			}
			pending, sizes = still, stillSizes
		}
		first = false
		if len(pending) == 0 {
			return nil
		}
		res, err := p.postPack(ctx, pending, sizes, m.count, size-left)
		if err != nil {
			var he *client.HTTPError
			if errors.As(err, &he) && he.Body.Stored > 0 {
				progress()
			}
			return err
		}
		if res.Stored+res.Skipped < len(pending) {
			// The next attempt's negotiation counts what was stored.
			return fmt.Errorf("daemon read %d of %d pack entries", res.Stored+res.Skipped, len(pending))
		}
		p.countSent(res.Stored, res.Bytes)
		m.reach(size)
		pending = nil
		return nil
	})
	var he *client.HTTPError
	switch {
	case errors.As(err, &he) && he.Status == http.StatusUnprocessableEntity:
		return permanent("the daemon refused local object %s as corrupt (%s): run 'ostree fsck' on %s", he.Body.Object, he.Body.Error, p.opts.Repo)
	case errors.As(err, &he) && he.Status == http.StatusConflict && he.Body.Code == api.CodeSessionNotOpen:
		return client.ErrSessionNotOpen
	case err != nil:
		return fmt.Errorf("pack of %d objects: %w", len(pending), err)
	}
	return nil
}

// countSent counts n objects of bytes bytes that the daemon verified.
func (p *pusher) countSent(n int, bytes int64) {
	p.mu.Lock()
	p.res.Sent += n
	p.mu.Unlock()
	p.prog.done(n, bytes)
}

// sizesOf returns the sizes of still, names of objs (of the given sizes)
// that the daemon still needs, and their total; a name not in objs has its
// size looked up.
func (p *pusher) sizesOf(still, objs []object.Name, sizes []int64) ([]int64, int64, error) {
	of := make(map[object.Name]int64, len(objs))
	for i, n := range objs {
		of[n] = sizes[i]
	}
	out := make([]int64, len(still))
	var total int64
	for i, n := range still {
		s, ok := of[n]
		if !ok {
			var err error
			if s, err = p.size(n); err != nil {
				return nil, 0, err
			}
		}
		out[i] = s
		total += s
	}
	return out, total, nil
}

// postPack streams one pack of objs, of the given sizes, to the daemon;
// count wraps the pack's bytes to show them as the progress of its unit of
// work from the point from on (see meter.count).
func (p *pusher) postPack(ctx context.Context, objs []object.Name, sizes []int64, count func(r io.Reader, from, num, den int64) io.Reader, from int64) (api.PackResult, error) {
	converts := false
	for _, n := range objs {
		converts = converts || p.repo.Converts(n)
	}
	tarBytes := packSize(sizes)
	length := tarBytes
	if converts {
		length = -1 // known only once sent: chunked
	}
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		err := p.writePack(ctx, pw, objs, sizes)
		pw.CloseWithError(err)
		werr <- err
	}()
	var objBytes int64
	for _, s := range sizes {
		objBytes += s
	}
	res, err := p.c.SendPack(ctx, p.sid, count(pr, from, objBytes, tarBytes), length)
	pr.CloseWithError(errors.New("request ended"))
	if wErr := <-werr; wErr != nil {
		var pe *PermanentError
		if errors.As(wErr, &pe) {
			return res, wErr
		}
	}
	p.mu.Lock()
	p.res.Packs++
	p.mu.Unlock()
	return res, err
}
