package uploader

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// console serializes what a push writes for its user: the progress bar,
// which a terminal redraws in place, and lines of their own (retries),
// which a terminal shows above it.
type console struct {
	mu  sync.Mutex
	out io.Writer // nil: nowhere
	tty bool
}

// bar shows the progress line: in place on a terminal, as a line
// otherwise.
func (c *console) bar(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tty {
		fmt.Fprint(c.out, "\r\033[K"+s)
	} else {
		fmt.Fprintln(c.out, s)
	}
}

// clearBar removes the progress line from a terminal.
func (c *console) clearBar() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tty {
		fmt.Fprint(c.out, "\r\033[K")
	}
}

// println writes a line of its own.
func (c *console) println(s string) {
	if c == nil || c.out == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tty {
		s = "\r\033[K" + s // over the bar, which the next tick draws again
	}
	fmt.Fprintln(c.out, s)
}

// progress counts what a push sends and shows it: a live bar on a
// terminal, a line every ten seconds otherwise (CI logs), and the final
// state when it stops.
//
// The bar counts the bytes of the objects to send, each unit of work (an
// upload, a pack) up to the furthest point it reached: bytes sent again
// after a retry, or held by the daemon from an earlier run, count once,
// so the bar never passes the total. What was read into requests, resent
// bytes and tar framing included, is counted apart (wire).
type progress struct {
	con   *console
	start time.Time

	moved     atomic.Int64 // bytes of the objects' progress: each unit's furthest point
	wire      atomic.Int64 // bytes read from local objects into requests
	doneObjs  atomic.Int64 // objects the daemon verified
	doneBytes atomic.Int64 // their bytes
	total     atomic.Int64 // bytes to send
	objects   atomic.Int64 // objects to send
	skipped   atomic.Int64 // objects the daemon had
	listing   atomic.Bool  // the walk is still listing objects: the totals grow
	listed    atomic.Int64 // names the walk listed so far
	once      sync.Once
	quit      chan struct{}
	finished  chan struct{}
}

func newProgress(con *console) *progress {
	return &progress{con: con, start: time.Now(), quit: make(chan struct{}), finished: make(chan struct{})}
}

// meter is the progress of one unit of work, an upload or a pack of
// objects of size bytes: it only moves forward, and never past size.
type meter struct {
	p    *progress
	size int64
	at   atomic.Int64
}

// meter starts the progress of a unit of work of size bytes of objects.
func (p *progress) meter(size int64) *meter { return &meter{p: p, size: size} }

// reach moves m to n bytes, unless it is there already.
func (m *meter) reach(n int64) {
	n = min(n, m.size)
	for {
		at := m.at.Load()
		if n <= at {
			return
		}
		if m.at.CompareAndSwap(at, n) {
			m.p.moved.Add(n - at)
			return
		}
	}
}

// count wraps r, whose bytes go into a request from the point from of
// m's unit, so that they are counted on the wire and move m; each byte
// read stands for num/den bytes of objects (1 for an upload; a pack's
// bytes also hold tar framing).
func (m *meter) count(r io.Reader, from, num, den int64) io.Reader {
	return &meterReader{r: r, m: m, from: from, num: num, den: max(den, 1)}
}

type meterReader struct {
	r              io.Reader
	m              *meter
	from, num, den int64
	read           int64
}

func (c *meterReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.m.p.wire.Add(int64(n))
	c.read += int64(n)
	c.m.reach(c.from + c.read*c.num/c.den)
	return n, err
}

// plan adds the work of a batch of names negotiated and starts reporting.
func (p *progress) plan(objects int, bytes int64, skipped int) {
	p.objects.Add(int64(objects))
	p.total.Add(bytes)
	p.skipped.Add(int64(skipped))
	p.once.Do(func() {
		if p.con.out == nil {
			close(p.finished)
			return
		}
		go p.report()
	})
}

// done counts objects the daemon verified, of bytes bytes.
func (p *progress) done(objects int, bytes int64) {
	p.doneObjs.Add(int64(objects))
	p.doneBytes.Add(bytes)
}

func (p *progress) report() {
	defer close(p.finished)
	every := 10 * time.Second
	if p.con.tty {
		every = 200 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.quit:
			p.con.clearBar()
			if p.objects.Load() > 0 {
				p.con.println(p.line()) // where it ended
			}
			return
		case <-t.C:
			p.con.bar(p.line())
		}
	}
}

func (p *progress) line() string {
	sent, total := p.moved.Load(), p.total.Load()
	el := time.Since(p.start).Seconds()
	rate := float64(sent) / max(el, 0.001)
	frac := 1.0
	if total > 0 {
		frac = min(float64(sent)/float64(total), 1)
	}
	eta, listing := "?", p.listing.Load()
	if listing {
		// The totals are what the daemon needs of the names listed so
		// far: no end to foresee yet.
	} else if total <= sent {
		eta = "0s"
	} else if rate > 0 {
		eta = (time.Duration(float64(total-sent)/rate) * time.Second / time.Second * time.Second).String()
	}
	bar := ""
	if p.con.tty {
		w := 24
		fill := int(frac * float64(w))
		bar = "[" + strings.Repeat("=", fill) + strings.Repeat(" ", w-fill) + "] "
	}
	line := fmt.Sprintf("%s%3.0f%% %s/%s  %d/%d objects  %s/s  ETA %s",
		bar, frac*100, human(sent), human(total), p.doneObjs.Load(), p.objects.Load(), human(int64(rate)), eta)
	if listing {
		line += fmt.Sprintf("  (listing: %d objects so far)", p.listed.Load())
	}
	return line
}

// stop ends reporting, showing where the push ended, and fills in the
// counts of res.
func (p *progress) stop(res *Result) {
	if p == nil {
		return
	}
	p.once.Do(func() { close(p.finished) })
	close(p.quit)
	<-p.finished
	res.BytesSent, res.BytesDone, res.ToSend = p.wire.Load(), p.doneBytes.Load(), int(p.objects.Load())
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
