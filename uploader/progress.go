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
// terminal, a line every ten seconds otherwise (CI logs), and a summary.
type progress struct {
	con   *console
	start time.Time

	sent     atomic.Int64 // bytes read from local objects into requests
	done_    atomic.Int64 // objects finished
	total    atomic.Int64 // bytes to send
	objects  atomic.Int64 // objects to send
	skipped  atomic.Int64 // objects the daemon had
	once     sync.Once
	quit     chan struct{}
	finished chan struct{}
}

func newProgress(con *console) *progress {
	return &progress{con: con, start: time.Now(), quit: make(chan struct{}), finished: make(chan struct{})}
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// count wraps r so that its bytes are counted as sent.
func (p *progress) count(r io.Reader) io.Reader { return countingReader{r, &p.sent} }

// plan sets (or adds) the work of a round of uploads and starts reporting.
func (p *progress) plan(objects int, bytes int64, skipped int) {
	p.objects.Add(int64(objects))
	p.total.Add(bytes)
	p.skipped.Store(int64(skipped))
	p.once.Do(func() {
		if p.con.out == nil {
			close(p.finished)
			return
		}
		go p.report()
	})
}

func (p *progress) done() { p.done_.Add(1) }

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
			return
		case <-t.C:
			p.con.bar(p.line())
		}
	}
}

func (p *progress) line() string {
	sent, total := p.sent.Load(), p.total.Load()
	el := time.Since(p.start).Seconds()
	rate := float64(sent) / max(el, 0.001)
	frac := 1.0
	if total > 0 {
		frac = min(float64(sent)/float64(total), 1)
	}
	eta := "?"
	if rate > 0 && total > sent {
		eta = (time.Duration(float64(total-sent)/rate) * time.Second / time.Second * time.Second).String()
	}
	bar := ""
	if p.con.tty {
		w := 24
		fill := int(frac * float64(w))
		bar = "[" + strings.Repeat("=", fill) + strings.Repeat(" ", w-fill) + "] "
	}
	return fmt.Sprintf("%s%3.0f%% %s/%s  %d/%d objects  %s/s  ETA %s",
		bar, frac*100, human(sent), human(total), p.done_.Load(), p.objects.Load(), human(int64(rate)), eta)
}

// stop ends reporting, fills in the byte counts and prints the summary.
func (p *progress) stop(res *Result) {
	if p == nil {
		return
	}
	p.once.Do(func() { close(p.finished) })
	close(p.quit)
	<-p.finished
	res.BytesSent = p.sent.Load()
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
