// Package client calls a receive daemon's API: the JSON calls, tus uploads
// and packs of a push, and the administration calls, retrying what may pass.
// It imports only the wire types.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
)

// HTTPError is an error answer of the daemon.
type HTTPError struct {
	Method, Path string
	Status       int
	Body         api.Error
	RetryAfter   time.Duration // from a Retry-After header in seconds; 0 = none
}

func (e *HTTPError) Error() string {
	msg := e.Body.Error
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, msg)
}

// Retryable reports whether err may go away by retrying: network failures,
// timeouts and server-side errors. Refusals (4xx) are permanent.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var pe *PermanentError
	if errors.As(err, &pe) {
		return false // decided: whatever its words say
	}
	var he *HTTPError
	if errors.As(err, &he) {
		switch {
		case he.Status == http.StatusRequestTimeout, he.Status == http.StatusTooManyRequests, he.Status == http.StatusLocked:
			return true
		case he.Status == http.StatusBadRequest && strings.HasPrefix(he.Body.Error, "ERR_UPLOAD_INTERRUPTED"):
			// tusd ends a request when another one (a second client of
			// the same session) takes the upload over: resume.
			return true
		}
		return he.Status >= 500
	}
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	var cie x509.CertificateInvalidError
	var rhe tls.RecordHeaderError
	if errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &hne) || errors.As(err, &cie) || errors.As(err, &rhe) {
		return false // TLS set-up problems do not go away by waiting
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// Any other failure of the transport (refused, reset, closed,
		// timed out) may pass; cancellation returned above.
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, ErrStalled) {
		return true
	}
	// Failures of a connection that reach a request's body or answer
	// unwrapped: HTTP/2's connection closed, lost or going away (an ssh
	// connection that died) come as plain errors.
	msg := err.Error()
	for _, s := range []string{"connection reset", "connection refused", "broken pipe", "http2: client conn", "GOAWAY"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// Client talks to one daemon with one token.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
	// slow is http for calls whose answer waits for the daemon's hooks
	// (see slowAnswer).
	slow *http.Client
	// stall is how long a request may make no progress before it is cut.
	stall   time.Duration
	retries atomic.Int64
	log     *slog.Logger
	onRetry func(RetryEvent)
	closer  func() // ends what the client started (ssh processes); nil for none
}

// RetryEvent is a retry about to happen: what failed, the wait before the
// next attempt, and the retry budget left (the wait comes out of it).
type RetryEvent struct {
	Err   error
	Delay time.Duration
	Left  time.Duration
}

// OnRetry makes the client call fn before each wait of Retry and
// RetryProgress, from whichever goroutine retries. fn must not block.
func (c *Client) OnRetry(fn func(RetryEvent)) { c.onRetry = fn }

func New(address, token string, jobs int, caFile string) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(address, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("address %q: want http://host:port or https://host:port", address)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s: no PEM certificate in it", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	tr.MaxIdleConnsPerHost = jobs + 2
	tr.WriteBufferSize = WriteBufferSize
	tr.ResponseHeaderTimeout = 5 * time.Minute // the daemon verifies before it answers the last PATCH
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	slow := tr.Clone()
	slow.MaxIdleConnsPerHost = 1
	slow.ResponseHeaderTimeout = SlowAnswerTimeout
	return &Client{base: u, token: token, http: &http.Client{Transport: tr}, slow: &http.Client{Transport: slow}, stall: time.Minute}, nil
}

// WriteBufferSize is the client's buffer for a request and its body: the
// bytes reach the connection in writes of this size (net/http's default,
// 4 KiB, costs a pack of tiny objects one system call per 4 KiB).
const WriteBufferSize = 64 << 10

// SlowAnswerTimeout is how long a commit (or a promote) waits for the
// daemon's answer, which comes after the repository's check_hook (10
// minutes at most by default), the publish and its update_hook (30
// minutes at most).
const SlowAnswerTimeout = 45 * time.Minute

type slowAnswerKey struct{}

// slowAnswer marks a call whose answer waits for the daemon's hooks: it
// waits SlowAnswerTimeout for the answer rather than 5 minutes.
func slowAnswer(ctx context.Context) context.Context {
	return context.WithValue(ctx, slowAnswerKey{}, true)
}

// CloseIdleConnections closes the client's idle connections.
func (c *Client) CloseIdleConnections() {
	c.http.CloseIdleConnections()
	c.slow.CloseIdleConnections()
}

// Close ends the client's connections and what carries them (the ssh
// processes of a client made by NewSSH).
func (c *Client) Close() {
	c.CloseIdleConnections()
	if c.closer != nil {
		c.closer()
	}
}

// url is the daemon's address (with any path prefix) followed by an API path.
func (c *Client) URL(p string) string { return c.base.String() + p }

var uploadPathRE = regexp.MustCompile(`/api/v1/uploads/[0-9a-f]{32}/[0-9a-f]{32}$`)

// uploadPath turns an upload URL the daemon answered (a Location header, or
// a path in a 409) into an upload path on the configured address. Only the
// upload's own part of the path is kept: the daemon builds absolute URLs
// from the Host and scheme it saw and the repository's name, which behind a
// proxy may name plain HTTP, another host or lack the proxy's path prefix,
// and the token must only ever go to the configured address (which names
// the repository).
func (c *Client) UploadPath(loc string) (string, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return "", &PermanentError{Err: fmt.Errorf("daemon answered a bad upload URL %q", loc)}
	}
	p := uploadPathRE.FindString(u.Path)
	if p == "" {
		return "", &PermanentError{Err: fmt.Errorf("daemon answered an unexpected upload URL %q", loc)}
	}
	return p, nil
}

var ErrStalled = errors.New("no progress on the connection")

// maxRetryAfter caps how long a Retry-After makes the client wait.
const maxRetryAfter = time.Minute

// maxAnswer bounds what is read of one answer of the daemon.
const maxAnswer = 64 << 20

// send makes one request; body is read at most once. Non-2xx answers become
// *HTTPError. The request is cut when its body stalls for c.stall.
func (c *Client) send(ctx context.Context, method, path string, body io.Reader, size int64, hdr map[string]string) (*http.Response, []byte, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wd *watchdog
	if body != nil {
		wd = &watchdog{r: body}
		body = wd
		go wd.watch(ctx, c.stall, cancel)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL(path), body)
	if err != nil {
		return nil, nil, err
	}
	if body != nil {
		req.ContentLength = size
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	hc := c.http
	if ctx.Value(slowAnswerKey{}) != nil {
		hc = c.slow
	}
	res, err := hc.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, ErrStalled) {
			err = fmt.Errorf("%s %s: %w", method, path, cause)
		}
		return nil, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer+1))
	if err != nil {
		return nil, nil, err
	}
	if len(b) > maxAnswer {
		return nil, nil, &PermanentError{Err: fmt.Errorf("%s %s: answer larger than %d bytes", method, path, maxAnswer)}
	}
	if res.StatusCode >= 300 {
		he := &HTTPError{Method: method, Path: path, Status: res.StatusCode}
		if secs, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && secs > 0 {
			he.RetryAfter = min(time.Duration(secs)*time.Second, maxRetryAfter)
		}
		if json.Unmarshal(b, &he.Body) != nil || he.Body.Error == "" {
			he.Body.Error = strings.TrimSpace(string(b[:min(len(b), 512)])) // e.g. a proxy's HTML page
		}
		return res, b, he
	}
	return res, b, nil
}

// watchdog cancels a request whose body makes no progress.
type watchdog struct {
	r    io.Reader
	last atomic.Int64
}

func (w *watchdog) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err == io.EOF {
		w.last.Store(-1) // body sent: the response timeout governs from here
	} else {
		w.last.Store(time.Now().UnixNano())
	}
	return n, err
}

func (w *watchdog) watch(ctx context.Context, limit time.Duration, cancel context.CancelCauseFunc) {
	w.last.Store(time.Now().UnixNano())
	t := time.NewTicker(limit / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			last := w.last.Load()
			if last == -1 {
				return
			}
			if time.Since(time.Unix(0, last)) > limit {
				cancel(ErrStalled)
				return
			}
		}
	}
}

// json makes an API call with a JSON body (nil for none) and decodes the answer.
func (c *Client) JSON(ctx context.Context, method, path string, in, out any) error {
	if in == nil {
		return c.Call(ctx, method, path, nil, 0, "", out)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.Call(ctx, method, path, bytes.NewReader(b), int64(len(b)), "application/json", out)
}

// call makes an API call with a body of size bytes of contentType and
// decodes the JSON answer into out (unless nil).
func (c *Client) Call(ctx context.Context, method, path string, body io.Reader, size int64, contentType string, out any) error {
	hdr := map[string]string{}
	if contentType != "" {
		hdr["Content-Type"] = contentType
	}
	_, b, err := c.send(ctx, method, path, body, size, hdr)
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
		}
	}
	return nil
}

// retry runs fn until it succeeds, fails permanently, or keeps failing
// temporarily for longer than budget after its first failure; waits grow
// exponentially with jitter.
func (c *Client) Retry(ctx context.Context, budget time.Duration, fn func() error) error {
	return c.RetryProgress(ctx, budget, func(func()) error { return fn() })
}

// retryProgress is retry for work that can report progress: an attempt
// that calls progress (e.g. the daemon's offset grew) starts the budget
// and the backoff afresh, so a long upload over a link that drops now and
// then keeps going.
func (c *Client) RetryProgress(ctx context.Context, budget time.Duration, fn func(progress func()) error) error {
	var firstFailure time.Time
	wait := 200 * time.Millisecond
	for {
		progressed := false
		err := fn(func() { progressed = true })
		if progressed {
			firstFailure, wait = time.Time{}, 200*time.Millisecond
		}
		if err == nil || !Retryable(err) || ctx.Err() != nil {
			return err
		}
		if firstFailure.IsZero() {
			firstFailure = time.Now()
		}
		if time.Since(firstFailure) > budget {
			return fmt.Errorf("gave up after %s: %w", budget, err)
		}
		c.retries.Add(1)
		d := wait/2 + rand.N(wait)
		var he *HTTPError
		if errors.As(err, &he) && he.RetryAfter > 0 {
			// The daemon said when (a restart, a limit); the jitter keeps
			// streams and clients from coming back all at once.
			d = he.RetryAfter + rand.N(wait)
		}
		left := max(budget-time.Since(firstFailure), 0)
		if d > left {
			d = left // one last try at the end of the budget
		}
		if c.log != nil {
			c.log.Debug("retrying", "after", d.Round(time.Millisecond), "err", err)
		}
		if c.onRetry != nil {
			c.onRetry(RetryEvent{Err: err, Delay: d, Left: left})
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
		wait = min(wait*2, 10*time.Second)
	}
}

var (
	ErrVerified       = errors.New("object already verified")
	ErrSessionNotOpen = errors.New("session is not open any more")
	ErrLiveUpload     = errors.New("object already has a live upload")
	ErrUploadGone     = errors.New("upload no longer exists")
	ErrNotComplete    = errors.New("upload not complete")
)

func tusMeta(session, object string) string {
	return api.MetaSession + " " + base64.StdEncoding.EncodeToString([]byte(session)) + "," +
		api.MetaObject + " " + base64.StdEncoding.EncodeToString([]byte(object))
}

// create starts an upload; with a body, it sends all bytes in the same
// request. It returns the upload's path, or the live upload's path with
// ErrLiveUpload.
func (c *Client) CreateUpload(ctx context.Context, session, object string, size int64, body io.Reader) (string, error) {
	hdr := map[string]string{
		"Tus-Resumable":   "1.0.0",
		"Upload-Length":   strconv.FormatInt(size, 10),
		"Upload-Metadata": tusMeta(session, object),
	}
	if body != nil {
		hdr["Content-Type"] = "application/offset+octet-stream"
	}
	res, _, err := c.send(ctx, http.MethodPost, api.PathUploads+"/", body, size, hdr)
	var he *HTTPError
	if errors.As(err, &he) && he.Status == http.StatusConflict {
		switch {
		case he.Body.Code == api.CodeVerified:
			return "", ErrVerified // e.g. the answer to an earlier try was lost
		case he.Body.Code == api.CodeSessionNotOpen:
			return "", ErrSessionNotOpen
		case he.Body.Upload != "":
			p, perr := c.UploadPath(he.Body.Upload)
			if perr != nil {
				return "", perr
			}
			return p, ErrLiveUpload
		}
	}
	if err != nil {
		return "", err
	}
	loc, err := c.UploadPath(res.Header.Get("Location"))
	if err != nil {
		return "", err
	}
	if body != nil && res.Header.Get("Upload-Offset") != strconv.FormatInt(size, 10) {
		return loc, ErrNotComplete
	}
	return loc, nil
}

// offset asks how many bytes of an upload the daemon holds.
func (c *Client) Offset(ctx context.Context, upload string) (int64, error) {
	res, _, err := c.send(ctx, http.MethodHead, upload, nil, 0, map[string]string{"Tus-Resumable": "1.0.0"})
	var he *HTTPError
	if errors.As(err, &he) && (he.Status == http.StatusNotFound || he.Status == http.StatusGone) {
		return 0, ErrUploadGone
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(res.Header.Get("Upload-Offset"), 10, 64)
}

// patch appends n bytes of r at offset.
func (c *Client) Patch(ctx context.Context, upload string, offset int64, r io.Reader, n int64) error {
	_, _, err := c.send(ctx, http.MethodPatch, upload, r, n, map[string]string{
		"Tus-Resumable": "1.0.0",
		"Upload-Offset": strconv.FormatInt(offset, 10),
		"Content-Type":  "application/offset+octet-stream",
	})
	var he *HTTPError
	if errors.As(err, &he) {
		switch {
		case he.Status == http.StatusNotFound, he.Status == http.StatusGone:
			return ErrUploadGone
		case he.Status == http.StatusConflict && he.Body.Code == api.CodeSessionNotOpen:
			return ErrSessionNotOpen
		case he.Status == http.StatusConflict && he.Body.Code == api.CodeVerified:
			return nil
		case he.Status == http.StatusConflict:
			// Offset mismatch (e.g. bytes landed before a cut): ask again.
			return &HTTPError{Method: he.Method, Path: he.Path, Status: http.StatusServiceUnavailable, Body: he.Body}
		}
	}
	return err
}

// PermanentError is a refusal that a rerun will not change (bad token,
// non-fast-forward, corrupt local object…).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Temporary reports whether running the same work again may succeed: err
// is not a *PermanentError.
func Temporary(err error) bool {
	var pe *PermanentError
	return err != nil && !errors.As(err, &pe)
}

// Permanent is a *PermanentError with a message.
func Permanent(format string, args ...any) error {
	return &PermanentError{Err: fmt.Errorf(format, args...)}
}

// CheckRefusal is the message of a publish that the daemon's check refused
// (api.CodeCheckFailed): a sentence, then the check's last lines of
// output, each under a bar.
func CheckRefusal(body api.Error) string {
	var b strings.Builder
	b.WriteString("the daemon's check refused the publish: ")
	b.WriteString(body.Error)
	for _, l := range body.Output {
		b.WriteString("\n  | ")
		b.WriteString(l)
	}
	return b.String()
}

// SetLog makes the client log its retries.
func (c *Client) SetLog(log *slog.Logger) { c.log = log }

// Retries is how many times the client retried a call.
func (c *Client) Retries() int64 { return c.retries.Load() }
