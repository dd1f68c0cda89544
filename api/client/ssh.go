package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SSHDestination is a repository reached over ssh, as ostree-push names
// it: ssh://[user@]host[:port]/path or [user@]host:path.
type SSHDestination struct {
	User string // "" for ssh's default
	Host string
	Port int    // 0 for ssh's default
	Path string // the repository's path on the host, as given
}

func (d SSHDestination) String() string {
	s := d.Host
	if d.User != "" {
		s = d.User + "@" + s
	}
	if d.Port != 0 {
		return fmt.Sprintf("ssh://%s:%d/%s", s, d.Port, strings.TrimPrefix(d.Path, "/"))
	}
	return s + ":" + d.Path
}

var scpLikeRE = regexp.MustCompile(`^(?:([^@/:\s]+)@)?([^@/:\s\[\]]+|\[[0-9A-Fa-f:.]+\]):(.*)$`)

// ParseSSH parses a destination over ssh. It reports false for anything
// else (an http:// or https:// address); a destination that is meant for
// ssh but malformed is an error.
func ParseSSH(s string) (SSHDestination, bool, error) {
	var d SSHDestination
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		return d, false, nil
	}
	if strings.HasPrefix(s, "ssh://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || u.Hostname() == "" || u.RawQuery != "" || u.Fragment != "" {
			return d, true, fmt.Errorf("destination %q: want ssh://[user@]host[:port]/path/to/repo", s)
		}
		d.Host, d.Path = u.Hostname(), u.Path
		if u.User != nil {
			d.User = u.User.Username()
			if _, has := u.User.Password(); has {
				return d, true, fmt.Errorf("destination %q: no password in it: ssh authenticates with its keys or agent", s)
			}
		}
		if p := u.Port(); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				return d, true, fmt.Errorf("destination %q: bad port %q", s, p)
			}
			d.Port = n
		}
	} else {
		m := scpLikeRE.FindStringSubmatch(s)
		if m == nil {
			return d, false, nil
		}
		d.User, d.Host, d.Path = m[1], strings.Trim(m[2], "[]"), m[3]
		if _, err := strconv.Atoi(d.Path); err == nil {
			return d, true, fmt.Errorf("destination %q looks like HOST:PORT: a daemon's address is http://%s, a repository over ssh ssh://HOST/PATH or HOST:/PATH", s, s)
		}
	}
	switch {
	case d.Path == "" || d.Path == "/":
		return d, true, fmt.Errorf("destination %q names no repository path", s)
	case strings.HasPrefix(d.Host, "-") || strings.HasPrefix(d.User, "-"):
		return d, true, fmt.Errorf("destination %q: a host or user may not start with '-'", s)
	case strings.ContainsAny(d.Path, "\x00\n\r"):
		return d, true, fmt.Errorf("destination %q: control characters in the path", s)
	}
	return d, true, nil
}

// SSHOptions say how to reach a repository over ssh.
type SSHOptions struct {
	// Command is the local ssh invocation, run by sh with ssh's arguments
	// after it (as git runs GIT_SSH_COMMAND); "" for "ssh".
	Command string
	// Remote is the program to run on the host; "" for "ostree-upload".
	Remote string
	// Stderr receives ssh's and the remote program's messages; nil for
	// os.Stderr.
	Stderr io.Writer
}

// SSHGreeting starts what the remote program (ssh-serve) writes on its
// standard output before the HTTP/2 stream: the version of the exchange
// and the path of the repository's API ("/" or "/NAME/").
const SSHGreeting = "ostree-upload-ssh 1 "

// RemoteCommand is the command line run on the host for a push to path:
// the program, "ssh-serve" and the path, quoted for a POSIX shell.
func RemoteCommand(program, path string) string {
	if program == "" {
		program = "ostree-upload"
	}
	return ShellQuote(program) + " ssh-serve " + ShellQuote(path)
}

var shellSafeRE = regexp.MustCompile(`^[A-Za-z0-9_./:@%+=,-]+$`)

// ShellQuote quotes s for a POSIX shell.
func ShellQuote(s string) string {
	if shellSafeRE.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// NewSSH is a client of the repository at dest: each connection is an ssh
// process running the remote program, and the client's requests are
// HTTP/2 streams over it, in parallel. The first request starts the first
// connection and reads where the repository's API is; an ssh that fails to
// connect (exit status 255) is retried as a connection refused is.
func NewSSH(dest SSHDestination, opts SSHOptions) *Client {
	d := &sshDialer{dest: dest, opts: opts}
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	h2 := &http.Transport{
		Protocols:   protocols,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return d.next(ctx) },
		// One connection carries every call, the commit's too.
		ResponseHeaderTimeout: SlowAnswerTimeout,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout:           30 * time.Second, // a silent ssh channel is probed,
			PingTimeout:               30 * time.Second, // and dropped when the probe goes unanswered
			MaxReceiveBufferPerStream: 4 << 20,
		},
	}
	hc := &http.Client{Transport: &sshTransport{d: d, h2: h2}}
	return &Client{base: &url.URL{Scheme: "http", Host: "ssh"}, http: hc, slow: hc, stall: time.Minute,
		closer: func() { h2.CloseIdleConnections(); d.close() }}
}

// sshTransport sends a request over the ssh connections, under the path
// the remote program announced.
type sshTransport struct {
	d  *sshDialer
	h2 *http.Transport
}

func (t *sshTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base, err := t.d.baseFor(req.Context())
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	r := req.Clone(req.Context())
	r.URL.Path, r.URL.RawPath = strings.TrimSuffix(base, "/")+req.URL.Path, ""
	return t.h2.RoundTrip(r)
}

// sshDialer starts ssh processes.
type sshDialer struct {
	dest SSHDestination
	opts SSHOptions

	first sync.Mutex // held while the first connection is made
	mu    sync.Mutex
	base  string   // the API's path the first connection announced; "" before
	spare net.Conn // the first connection, until the transport asks for it
	conns []*sshConn
}

// baseFor is the API's path on the host, from the first connection, which
// it makes if there is none yet.
func (d *sshDialer) baseFor(ctx context.Context) (string, error) {
	d.first.Lock()
	defer d.first.Unlock()
	d.mu.Lock()
	base := d.base
	d.mu.Unlock()
	if base != "" {
		return base, nil
	}
	c, base, err := d.dial(ctx)
	if err != nil {
		return "", err
	}
	d.mu.Lock()
	d.base, d.spare = base, c
	d.mu.Unlock()
	return base, nil
}

// next is a connection for the transport: the first one, then new ones
// (after the first broke: a rerun's resume, within one process).
func (d *sshDialer) next(ctx context.Context) (net.Conn, error) {
	d.mu.Lock()
	if c := d.spare; c != nil {
		d.spare = nil
		d.mu.Unlock()
		return c, nil
	}
	want := d.base
	d.mu.Unlock()
	c, base, err := d.dial(ctx)
	if err != nil {
		return nil, err
	}
	if base != want {
		c.Close()
		return nil, &PermanentError{Err: fmt.Errorf("ssh %s: the repository's API moved from %s to %s between two connections", d.dest, d.base, base)}
	}
	return c, nil
}

func (d *sshDialer) close() {
	d.mu.Lock()
	conns := d.conns
	d.conns = nil
	d.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// argv is the local command line of one connection.
func (d *sshDialer) argv() []string {
	args := []string{"-T"}
	if d.dest.Port != 0 {
		args = append(args, "-p", strconv.Itoa(d.dest.Port))
	}
	host := d.dest.Host
	if d.dest.User != "" {
		host = d.dest.User + "@" + host
	}
	args = append(args, "--", host, RemoteCommand(d.opts.Remote, d.dest.Path))
	cmd := d.opts.Command
	if cmd == "" {
		return append([]string{"ssh"}, args...)
	}
	// exec: the ssh process is the one the client ends, not a shell
	// waiting for it.
	return append([]string{"sh", "-c", "exec " + cmd + ` "$@"`, "ssh"}, args...)
}

// dial starts ssh and reads the remote program's greeting.
func (d *sshDialer) dial(ctx context.Context) (*sshConn, string, error) {
	argv := d.argv()
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, "", err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, "", err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout = inR, outW
	// Children of ssh (a ProxyCommand) may keep its stderr open after it
	// exits: stop copying it then.
	cmd.WaitDelay = 2 * time.Second
	cmd.Stderr = d.opts.Stderr
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		for _, f := range []*os.File{inR, inW, outR, outW} {
			f.Close()
		}
		return nil, "", &PermanentError{Err: fmt.Errorf("start %s: %w (name the ssh command with --ssh-command or $OSTREE_UPLOAD_SSH)", argv[0], err)}
	}
	inR.Close()
	outW.Close()
	c := &sshConn{cmd: cmd, in: inW, out: outR, r: bufio.NewReader(outR), exited: make(chan struct{})}
	go func() { c.waitErr = cmd.Wait(); close(c.exited) }()
	base, err := c.greeting(ctx, d.dest)
	if err != nil {
		c.closeWithin(0) // not ours to wait for
		return nil, "", err
	}
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	return c, base, nil
}

// greetingTimeout bounds the wait for ssh to connect and the remote
// program to greet (ssh's own ConnectTimeout may be longer).
const greetingTimeout = 2 * time.Minute

func (c *sshConn) greeting(ctx context.Context, dest SSHDestination) (string, error) {
	c.out.SetReadDeadline(time.Now().Add(greetingTimeout))
	stop := context.AfterFunc(ctx, func() { c.out.SetReadDeadline(time.Now()) })
	b, err := c.r.ReadSlice('\n') // at most the reader's 4 KiB
	line := string(b)
	stop()
	c.out.SetReadDeadline(time.Time{})
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return "", &sshFailure{fmt.Sprintf("ssh %s: no answer within %s", dest, greetingTimeout)}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", &PermanentError{Err: fmt.Errorf("ssh %s: the remote command is not ostree-upload ssh-serve (its first line is longer than %d bytes): is ostree-upload on the host's PATH? name it with --command", dest, len(b))}
		}
		<-c.exited
		var ee *exec.ExitError
		if errors.As(c.waitErr, &ee) && ee.ExitCode() == 255 {
			// ssh's own failure: the host, the network, the login.
			return "", &sshFailure{fmt.Sprintf("ssh %s failed (exit status 255; its message is above)", dest)}
		}
		return "", &PermanentError{Err: fmt.Errorf("ssh %s: the remote command ended without serving the push (%v; its message is above)", dest, c.waitErr)}
	}
	base, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), SSHGreeting)
	if !ok || !strings.HasPrefix(base, "/") || !strings.HasSuffix(base, "/") {
		return "", &PermanentError{Err: fmt.Errorf("ssh %s: the remote command is not ostree-upload ssh-serve (it printed %q): is ostree-upload on the host's PATH? name it with --command", dest, strings.TrimSpace(line))}
	}
	return base, nil
}

// sshFailure is ssh's own failure to connect: a net.Error, retried as a
// connection refused is.
type sshFailure struct{ msg string }

func (e *sshFailure) Error() string   { return e.msg }
func (e *sshFailure) Timeout() bool   { return false }
func (e *sshFailure) Temporary() bool { return true }

// closeWait is how long closing a connection waits for ssh to end: the
// remote program may go on with what the publish left (see ssh-serve)
// before it exits.
const closeWait = 3 * time.Minute

// sshConn is one ssh process as a net.Conn: writes go to its standard
// input, reads come from its standard output.
type sshConn struct {
	cmd     *exec.Cmd
	in      *os.File
	out     *os.File
	r       *bufio.Reader
	exited  chan struct{}
	waitErr error
	once    sync.Once
}

func (c *sshConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *sshConn) Write(b []byte) (int, error) { return c.in.Write(b) }

// Close ends the stream: ssh sees the end of its input and exits once the
// remote program has; one that does not within closeWait is killed.
func (c *sshConn) Close() error {
	c.closeWithin(closeWait)
	return nil
}

// closeWithin ends the stream, killing ssh if it has not exited within
// wait.
func (c *sshConn) closeWithin(wait time.Duration) {
	c.once.Do(func() {
		c.in.Close()
		select {
		case <-c.exited:
		case <-time.After(wait):
			c.cmd.Process.Kill()
			<-c.exited
		}
		c.out.Close()
	})
}

type sshAddr string

func (a sshAddr) Network() string { return "ssh" }
func (a sshAddr) String() string  { return string(a) }

func (c *sshConn) LocalAddr() net.Addr  { return sshAddr("local") }
func (c *sshConn) RemoteAddr() net.Addr { return sshAddr("ssh") }
func (c *sshConn) SetDeadline(t time.Time) error {
	return errors.Join(c.in.SetWriteDeadline(t), c.out.SetReadDeadline(t))
}
func (c *sshConn) SetReadDeadline(t time.Time) error  { return c.out.SetReadDeadline(t) }
func (c *sshConn) SetWriteDeadline(t time.Time) error { return c.in.SetWriteDeadline(t) }
