package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/ostree-upload/ostree-upload/api/client"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon"
	"github.com/ostree-upload/ostree-upload/internal/unixsock"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/repository"
)

var sshServeCmd = &command{
	name:    "ssh-serve",
	summary: "Serve one push over ssh on the standard streams (sshd runs it for push ssh://…)",
	usage:   "[OPTIONS] REPO",
	example: `  What 'ostree-upload push -r build ssh://ostree@host/srv/repo' runs on the
  host, as the account that logged in:
    ostree-upload ssh-serve /srv/repo
  It relays the push to the receive daemon serving the repository through
  the daemon's socket, or, when none runs, serves the push itself. Not
  for interactive use.`,
	flags: func(fs *pflag.FlagSet) func([]string) error {
		cfgPath := fs.StringP("config", "c", "", "configuration file (default: looked for as receive does)")
		verbose := fs.BoolP("verbose", "v", false, "log every request (to the pushing client's terminal)")
		return func(args []string) error {
			if len(args) != 1 {
				return usageError{errors.New("want one argument: the repository's path")}
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			return sshServe(ctx, *cfgPath, args[0], *verbose)
		}
	},
}

// sshLockWait bounds how long a push over ssh without a daemon waits for
// another one to the same repository.
const sshLockWait = 10 * time.Minute

// sshSettleWait bounds how long a push over ssh without a daemon goes on
// with the work its publish left (appstream branches, static deltas) once
// the client is done; what is left then is done by the next push or daemon
// start.
const sshSettleWait = 2 * time.Minute

func sshServe(ctx context.Context, cfgPath, arg string, verbose bool) error {
	if term(os.Stdin) || term(os.Stdout) {
		return errors.New("this is the remote end of a push over ssh (ostree-upload push … ssh://HOST/PATH), not an interactive command")
	}
	me, err := config.CurrentUser()
	if err != nil {
		return err
	}
	cfg, err := sshConfig(cfgPath, arg)
	if err != nil {
		return err
	}
	repo, err := pickRepository(cfg, arg)
	if err != nil {
		return err
	}
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	// The greeting first: the client's requests then wait, with their
	// own timeouts, for whichever serves them.
	if err := greet(repo.Name); err != nil {
		return err
	}
	sock := daemon.SocketOf(repository.StateDirOf(repo.Config))
	deadline := time.Now().Add(sshLockWait)
	waiting := false
	for {
		c, err := unixsock.Dial(ctx, sock)
		if err == nil {
			return relay(c)
		}
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("the receive daemon's socket %s does not let account %s in: give the account the state dir's group (see docs/ssh.md)", sock, me)
		}
		d, err := daemon.New(ctx, cfg, daemon.Options{Log: log, Version: version, Commit: buildCommit(),
			Only: func(name string) bool { return name == repo.Name }})
		if err == nil {
			return serveStdio(ctx, d, me)
		}
		if !errors.Is(err, journal.ErrInUse) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("another push to %s still holds its state dir after %s: try again later", repo.Config.Repo, sshLockWait)
		}
		if !waiting {
			fmt.Fprintf(os.Stderr, "ostree-upload: another push to %s is running; waiting for it (at most %s)\n", repo.Config.Repo, sshLockWait)
			waiting = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// term reports whether f is a terminal.
func term(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// sshConfig is the configuration a push over ssh follows: the file named,
// or found as receive finds it; with none, ostree-push's defaults for the
// repository at arg.
func sshConfig(path, arg string) (*config.Config, error) {
	if path == "" {
		var err error
		if path, err = config.Find(); err != nil {
			return nil, err
		}
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			cfg := config.Default()
			cfg.Repo = arg
			return cfg, nil
		}
	}
	return config.Load(path)
}

// pickRepository is the repository of the configuration that arg names: a
// path (relative ones from the account's home), or with root a name under
// it. Without root, any repository the account reaches is served with the
// file's settings, as ostree-push serves it.
func pickRepository(cfg *config.Config, arg string) (config.Repository, error) {
	abs, err := filepath.Abs(arg)
	if err != nil {
		return config.Repository{}, err
	}
	if cfg.Root == "" && !sameDir(cfg.Repo, abs) {
		cfg.Repo, cfg.StateDir = abs, "" // the state dir configured is the other repository's
	}
	list, err := cfg.Repositories()
	if err != nil {
		return config.Repository{}, err
	}
	for _, r := range list {
		if sameDir(r.Config.Repo, abs) || cfg.Root != "" && !filepath.IsAbs(arg) && r.Name == filepath.ToSlash(filepath.Clean(arg)) {
			if _, err := os.Stat(filepath.Join(r.Config.Repo, "config")); err != nil {
				return config.Repository{}, fmt.Errorf("no OSTree repository at %s", r.Config.Repo)
			}
			return r, nil
		}
	}
	return config.Repository{}, fmt.Errorf("%s is not a repository this host serves", arg)
}

// sameDir reports whether a and b are one directory, or the same path
// while they do not exist.
func sameDir(a, b string) bool {
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(sa, sb)
	}
	absA, _ := filepath.Abs(a)
	absB, _ := filepath.Abs(b)
	return absA == absB
}

// greet tells the client where the repository's API is.
func greet(name string) error {
	base := "/"
	if name != "" {
		base = "/" + name + "/"
	}
	_, err := fmt.Fprintf(os.Stdout, "%s%s\n", client.SSHGreeting, base)
	return err
}

// relay copies the push between the standard streams and the daemon's
// socket, until either side ends.
func relay(c net.Conn) error {
	defer c.Close()
	go func() {
		io.Copy(c, os.Stdin)
		c.(*net.UnixConn).CloseWrite()
	}()
	_, err := io.Copy(os.Stdout, c)
	return err
}

// serveStdio serves the push on the standard streams with the repository
// opened here, as the account me, then goes on with what the publish left
// (within sshSettleWait).
func serveStdio(ctx context.Context, d *daemon.Daemon, me string) error {
	defer d.Close()
	conn, err := stdioConn()
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ln := &oneConn{c: daemon.NewAccountConn(&closeNotify{Conn: conn, closed: cancel}, me), closed: make(chan struct{})}
	return d.ServeLocal(sctx, ln, sshSettleWait)
}

// stdioConn is the standard streams as a connection, with deadlines.
func stdioConn() (net.Conn, error) {
	var files [2]*os.File
	for i, name := range []string{"stdin", "stdout"} {
		if err := unix.SetNonblock(i, true); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		files[i] = os.NewFile(uintptr(i), name)
	}
	return &pipeConn{in: files[0], out: files[1]}, nil
}

// pipeConn is a net.Conn of two files.
type pipeConn struct{ in, out *os.File }

func (c *pipeConn) Read(b []byte) (int, error)  { return c.in.Read(b) }
func (c *pipeConn) Write(b []byte) (int, error) { return c.out.Write(b) }
func (c *pipeConn) Close() error                { return errors.Join(c.in.Close(), c.out.Close()) }
func (c *pipeConn) LocalAddr() net.Addr         { return stdioAddr{} }
func (c *pipeConn) RemoteAddr() net.Addr        { return stdioAddr{} }
func (c *pipeConn) SetDeadline(t time.Time) error {
	return errors.Join(c.in.SetReadDeadline(t), c.out.SetWriteDeadline(t))
}
func (c *pipeConn) SetReadDeadline(t time.Time) error  { return c.in.SetReadDeadline(t) }
func (c *pipeConn) SetWriteDeadline(t time.Time) error { return c.out.SetWriteDeadline(t) }

type stdioAddr struct{}

func (stdioAddr) Network() string { return "ssh" }
func (stdioAddr) String() string  { return "ssh" }

// closeNotify calls closed when the connection is closed: the push is over.
type closeNotify struct {
	net.Conn
	once   sync.Once
	closed func()
}

func (c *closeNotify) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.closed)
	return err
}

// oneConn is a listener that accepts c once, then nothing until closed.
type oneConn struct {
	mu     sync.Mutex
	c      net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *oneConn) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.c
	l.c = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConn) Addr() net.Addr { return stdioAddr{} }
