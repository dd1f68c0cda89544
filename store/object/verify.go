package object

import (
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"sync"

	"github.com/ostree-upload/ostree-upload/store/internal/gvariant"
)

// maxSymlinkTarget bounds a symlink object's target (Linux's PATH_MAX).
const maxSymlinkTarget = 4096

// CorruptError reports bytes that are not a valid object of the given name.
type CorruptError struct {
	Name   Name
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("object %s is corrupt: %s", e.Name, e.Reason)
}

// IsCorrupt reports whether err says the object's bytes are invalid, as
// opposed to an I/O failure while reading them.
func IsCorrupt(err error) bool {
	var ce *CorruptError
	return errors.As(err, &ce)
}

// Info describes a verified object.
type Info struct {
	Name Name
	Size int64 // bytes of the object as stored in an archive repo
	// For File objects: the uncompressed content length and the st_mode.
	ContentSize uint64
	Mode        uint32
}

// VerifyOptions bound and pace one verification.
type VerifyOptions struct {
	// MaxContentSize bounds the content a file object's header declares
	// (its uncompressed size); 0: no bound beyond the format's.
	MaxContentSize int64
	// Work, when set, is called before each step of CPU work: inflating
	// and hashing the next piece of a file's content (at most 32 KiB), or
	// checking the bytes of a metadata object (n is then their size). It
	// may block (to share the CPU between clients), so it should be cheap
	// when it does not; an error from it ends the verification with that
	// error, which is not a *CorruptError.
	Work func(n int64) error
}

func (o *VerifyOptions) work(n int64) error {
	if o == nil || o.Work == nil {
		return nil
	}
	return o.Work(n)
}

// Verify reads the archive-repo form of an object from r and checks it
// strictly against name. It returns a *CorruptError for invalid bytes and
// any other error for a failure of r.
func Verify(name Name, r io.Reader) (Info, error) {
	return VerifyWith(name, r, VerifyOptions{})
}

// VerifyWith is Verify with limits and pacing.
func VerifyWith(name Name, r io.Reader, opts VerifyOptions) (Info, error) {
	src := &countingReader{r: r}
	info, err := verify(name, src, &opts)
	if src.err != nil {
		return Info{}, fmt.Errorf("read %s: %w", name, src.err)
	}
	var we *workError
	if errors.As(err, &we) {
		return Info{}, we.err
	}
	if err != nil {
		return Info{}, &CorruptError{Name: name, Reason: err.Error()}
	}
	info.Name, info.Size = name, src.n
	return info, nil
}

// VerifyFile verifies the object stored in the file at path. A metadata
// object is read whole only once opts.Work allows the step.
func VerifyFile(name Name, path string, opts VerifyOptions) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	if name.Type != File {
		fi, err := f.Stat()
		if err != nil {
			return Info{}, err
		}
		if limit := MaxSize(name.Type); fi.Size() > limit {
			return Info{}, &CorruptError{Name: name, Reason: fmt.Sprintf("larger than %d bytes", limit)}
		}
		if err := opts.work(fi.Size()); err != nil {
			return Info{}, err
		}
		opts.Work = nil // this was the one step
	}
	// Unbuffered: a content object is read through verifyFilez's pooled
	// buffer, and a metadata object is read whole at once; a buffer of
	// its own per call cost 64 KiB per staged dirtree.
	return VerifyWith(name, f, opts)
}

// workError carries an error of VerifyOptions.Work through the verifier.
type workError struct{ err error }

func (e *workError) Error() string { return e.err.Error() }

// countingReader counts bytes and remembers the first real read error, so
// that an I/O failure is never mistaken for corruption.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

func verify(name Name, r io.Reader, opts *VerifyOptions) (Info, error) {
	if name.Type == File {
		return verifyFilez(name.Sum, r, opts)
	}
	limit := MaxSize(name.Type)
	if limit == 0 {
		return Info{}, fmt.Errorf("cannot verify objects of type %d", name.Type)
	}
	b, err := readCapped(r, limit)
	if err != nil {
		return Info{}, err
	}
	if err := opts.work(int64(len(b))); err != nil {
		return Info{}, &workError{err}
	}
	return Info{}, verifyMeta(name, b)
}

// verifyMeta checks the bytes of a metadata object against its name.
func verifyMeta(name Name, b []byte) error {
	if name.Type == CommitMeta {
		return validateCommitMeta(b)
	}
	if sum := sha256.Sum256(b); sum != name.Sum {
		return fmt.Errorf("content hashes to %x", sum)
	}
	switch name.Type {
	case DirTree:
		_, err := parseDirTree(b, true, false)
		return err
	case DirMeta:
		return validateDirMeta(b)
	case Commit:
		_, err := ParseCommit(name.Sum, b, true)
		return err
	}
	return fmt.Errorf("cannot verify objects of type %d", name.Type)
}

func readCapped(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}

// Buffers and inflaters are reused across objects: most objects are small
// and these dominate their cost.
var (
	bufReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}
	inflaters  = sync.Pool{New: func() any { return flate.NewReader(bytes.NewReader(nil)) }}
	copyBufs   = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
)

// verifyFilez checks an archive content object: BE32 header length, four
// zero bytes, a normal-form (tuuuusa(ayay)) header, then (for regular files
// only) one raw deflate stream that inflates to exactly the header's size and
// ends at EOF. The checksum covers the canonical header and the content.
func verifyFilez(want Checksum, r io.Reader, opts *VerifyOptions) (Info, error) {
	// bufio.Reader is an io.ByteReader, so flate reads no byte past its stream.
	br := bufReaders.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() { br.Reset(nil); bufReaders.Put(br) }()
	var pre [8]byte
	if _, err := io.ReadFull(br, pre[:]); err != nil {
		return Info{}, fmt.Errorf("truncated before header: %w", err)
	}
	hlen := binary.BigEndian.Uint32(pre[:4])
	if !bytes.Equal(pre[4:], []byte{0, 0, 0, 0}) {
		return Info{}, fmt.Errorf("non-zero header padding")
	}
	if hlen == 0 || hlen > MaxFileHeaderSize {
		return Info{}, fmt.Errorf("header length %d out of range (1..%d)", hlen, MaxFileHeaderSize)
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return Info{}, fmt.Errorf("truncated header: %w", err)
	}
	v, err := gvariant.DecodeNormal(typeFileHeader, hdr)
	if err != nil {
		return Info{}, fmt.Errorf("header: %w", err)
	}
	f := v.([]any)
	// Integers are stored big-endian inside the little-endian GVariant.
	size := bits.ReverseBytes64(f[0].(uint64))
	mode := bits.ReverseBytes32(f[3].(uint32))
	rdev := f[4].(uint32)
	target := f[5].(string)
	if rdev != 0 {
		return Info{}, fmt.Errorf("rdev %d is not zero", bits.ReverseBytes32(rdev))
	}
	if mode&^(modeTypeMask|modePerms) != 0 {
		return Info{}, fmt.Errorf("mode %#o has unknown bits", mode)
	}
	if opts.MaxContentSize > 0 && size > uint64(opts.MaxContentSize) {
		return Info{}, fmt.Errorf("header declares %d bytes of content, more than %d (max_object_size)", size, opts.MaxContentSize)
	}
	switch mode & modeTypeMask {
	case modeReg:
		if target != "" {
			return Info{}, fmt.Errorf("regular file with a symlink target")
		}
	case modeLink:
		if target == "" || len(target) > maxSymlinkTarget {
			return Info{}, fmt.Errorf("symlink target of %d bytes", len(target))
		}
		if size != 0 {
			return Info{}, fmt.Errorf("symlink with size %d", size)
		}
	default:
		return Info{}, fmt.Errorf("mode %#o is neither a regular file nor a symlink", mode)
	}
	canon, err := gvariant.Encode(typeFileCanon, []any{f[1], f[2], f[3], rdev, target, f[6]})
	if err != nil {
		return Info{}, fmt.Errorf("canonical header: %w", err)
	}
	h := sha256.New()
	var canonPre [8]byte
	binary.BigEndian.PutUint32(canonPre[:4], uint32(len(canon)))
	h.Write(canonPre[:])
	h.Write(canon)

	if mode&modeTypeMask == modeReg {
		fr := inflaters.Get().(io.ReadCloser)
		fr.(flate.Resetter).Reset(br, nil)
		buf := copyBufs.Get().(*[]byte)
		var dst io.Writer = h
		if opts.Work != nil {
			dst = &pacedWriter{w: h, work: opts.Work}
		}
		n, err := io.CopyBuffer(dst, io.LimitReader(fr, int64(min(size, 1<<62))+1), *buf)
		copyBufs.Put(buf)
		inflaters.Put(fr)
		var we *workError
		if errors.As(err, &we) {
			return Info{}, we
		}
		if err != nil {
			return Info{}, fmt.Errorf("deflate stream: %w", err)
		}
		if uint64(n) != size {
			return Info{}, fmt.Errorf("content inflates to %d+ bytes, header says %d", n, size)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if err != nil {
			return Info{}, err
		}
		return Info{}, fmt.Errorf("trailing bytes after the content")
	}
	var got Checksum
	h.Sum(got[:0])
	if got != want {
		return Info{}, fmt.Errorf("content hashes to %s", got)
	}
	return Info{ContentSize: size, Mode: mode}, nil
}

// Verifier checks an object incrementally as its bytes arrive: write the
// bytes, then Close for the verdict. A Write fails as soon as the bytes so far
// are known to be invalid.
type Verifier struct {
	pw   *io.PipeWriter
	done chan struct{}
	info Info
	err  error
}

// NewVerifier starts verifying an object named name. The caller must Close it.
func NewVerifier(name Name) *Verifier {
	pr, pw := io.Pipe()
	v := &Verifier{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(v.done)
		// Verify succeeds only after reading EOF, that is after Close.
		v.info, v.err = Verify(name, pr)
		pr.CloseWithError(v.err)
	}()
	return v
}

// Write feeds the next bytes of the object.
func (v *Verifier) Write(p []byte) (int, error) {
	n, err := v.pw.Write(p)
	if err != nil {
		<-v.done
		if v.err != nil {
			return n, v.err
		}
	}
	return n, err
}

// Close ends the object and returns the verdict.
func (v *Verifier) Close() (Info, error) {
	v.pw.Close()
	<-v.done
	return v.info, v.err
}

// pacedWriter calls work before every write through it, so that no
// inflating and hashing happens outside a step Work allowed.
type pacedWriter struct {
	w    io.Writer
	work func(int64) error
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	if err := p.work(int64(len(b))); err != nil {
		return 0, &workError{err}
	}
	return p.w.Write(b)
}
