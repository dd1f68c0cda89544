// Package daemon is the receive daemon: the service of each production
// repository (package repository) behind the HTTP transport (package
// httpapi), built from the configuration.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon/httpapi"
	"github.com/ostree-upload/ostree-upload/repository"
	"github.com/ostree-upload/ostree-upload/service"
)

// Daemon is a receive daemon ready to serve.
type Daemon struct {
	repos   map[string]*repository.Service // by name on the wire
	names   []string                       // sorted
	catalog *service.Catalog
	http    *httpapi.Server
	tokens  *auth.Current
	mint    *minter
	log     *slog.Logger
	// drainTimeout bounds, at a graceful stop, the wait for spool releases
	// of publishes already answered.
	drainTimeout time.Duration
}

// Options is what New gets besides the configuration.
type Options struct {
	Log *slog.Logger // nil: slog.Default()
	// Version and Commit name the program's build: the version in the info
	// and both in the ostree_upload_build_info metric.
	Version, Commit string
	// Only, when set, picks the repositories to open by name; the others
	// stay closed (their state dirs unlocked). A push over ssh without a
	// running daemon opens its repository alone.
	Only func(name string) bool
}

// New opens the service of every repository cfg serves (see
// repository.Open and config.Repositories) and builds their HTTP
// transport. Two entries that are one repository are refused.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Daemon, error) {
	log, version := opts.Log, opts.Version
	if log == nil {
		log = slog.Default()
	}
	list, err := cfg.Repositories()
	if err != nil {
		return nil, err
	}
	if opts.Only != nil {
		list = slices.DeleteFunc(list, func(r config.Repository) bool { return !opts.Only(r.Name) })
		if len(list) == 0 {
			return nil, ErrNoSuchRepository
		}
	}
	tokens := &auth.Current{}
	tokens.Store(cfg.Keyring())
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo(opts))
	seen := map[string]string{}
	for _, r := range list {
		id := idOf(r.Config.Repo)
		if other, dup := seen[id]; dup {
			return nil, fmt.Errorf("repositories %q and %q are the same directory (%s): serve it once", other, r.Name, r.Config.Repo)
		}
		seen[id] = r.Name
	}
	if err := insideAnother(list); err != nil {
		return nil, err
	}
	d := &Daemon{repos: map[string]*repository.Service{}, tokens: tokens, log: log, drainTimeout: cfg.DrainTimeout.Duration}
	d.mint = &minter{d: d, log: log}
	for _, r := range list {
		svc, err := repository.Open(ctx, r.Config, repository.Env{Name: r.Name, Log: log, Tokens: tokens, Registry: reg, Version: version})
		if err != nil {
			d.Close()
			return nil, repoError(r.Name, err)
		}
		d.repos[r.Name] = svc
		d.names = append(d.names, r.Name)
	}
	services := map[string]service.Repository{}
	for name, svc := range d.repos {
		services[name] = svc
	}
	d.catalog = service.NewCatalog(services)
	d.http, err = httpapi.New(d.catalog, cfg, httpapi.Env{Log: log, Tokens: tokens, Registry: reg, Version: version, Minter: d.mint})
	if err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// buildInfo is the ostree_upload_build_info gauge: 1, labelled with the
// program's version, commit and Go version.
func buildInfo(opts Options) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "ostree_upload", Name: "build_info",
		Help:        "The daemon's build: always 1, labelled with its version, the commit it was built from and its Go version.",
		ConstLabels: prometheus.Labels{"version": opts.Version, "commit": opts.Commit, "goversion": runtime.Version()}})
	g.Set(1)
	return g
}

// insideAnother refuses a repository or state dir inside another
// repository's own directories (objects, refs, …), where libostree would
// take its files for objects or refs. Repositories beside each other's
// contents (a and a/b) are fine.
func insideAnother(list []config.Repository) error {
	own := []string{"objects", "refs", "state", "tmp", "extensions", "deltas", "delta-indexes", "config", "summary"}
	for _, outer := range list {
		base, err := filepath.Abs(outer.Config.Repo)
		if err != nil {
			return err
		}
		for _, inner := range list {
			for what, p := range map[string]string{"repository": inner.Config.Repo, "state dir": repository.StateDirOf(inner.Config)} {
				abs, err := filepath.Abs(p)
				if err != nil {
					return err
				}
				rel, err := filepath.Rel(base, abs)
				if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
					continue
				}
				first, _, _ := strings.Cut(rel, string(filepath.Separator))
				if slices.Contains(own, first) {
					return fmt.Errorf("the %s of %q (%s) is inside repository %q's %s/: move it out", what, inner.Name, p, outer.Name, first)
				}
			}
		}
	}
	return nil
}

// repoError names the repository in an error of a daemon of several.
func repoError(name string, err error) error {
	if name == "" {
		return err
	}
	return fmt.Errorf("repository %s: %w", name, err)
}

// idOf identifies a directory whatever path reaches it (symbolic links,
// bind mounts): its device and inode, or its absolute path while it does
// not exist yet.
func idOf(path string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err == nil {
		return fmt.Sprintf("inode %d:%d", st.Dev, st.Ino)
	}
	abs, _ := filepath.Abs(path)
	return "path " + abs
}

// ErrNoSuchRepository is OpenAdmin's answer for a name the configuration
// does not serve.
var ErrNoSuchRepository = errors.New("no such repository")

// OpenAdmin opens the state dir of a stopped daemon's repository for the
// administration commands: the repository named name, or, when name is a
// path, the one at that path; "" is the only repository of a daemon that
// serves one. While the daemon runs, its journal is locked and the error
// matches journal.ErrInUse.
func OpenAdmin(ctx context.Context, cfg *config.Config, name string, log *slog.Logger) (*repository.Service, error) {
	list, err := cfg.Repositories()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, r := range list {
		names = append(names, r.Name)
		if r.Name == name || (name == "" && len(list) == 1) || samePath(r.Config.Repo, name) {
			return repository.Open(ctx, r.Config, repository.Env{Name: r.Name, Log: log, Offline: true})
		}
	}
	if name == "" {
		return nil, fmt.Errorf("the configuration serves %d repositories (%s): name one with --repo", len(list), strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("%w %q: the configuration serves %s", ErrNoSuchRepository, name, strings.Join(names, ", "))
}

func samePath(repo, path string) bool {
	if path == "" || !strings.ContainsRune(path, os.PathSeparator) && !strings.HasPrefix(path, ".") {
		return false
	}
	a, err1 := filepath.Abs(repo)
	b, err2 := filepath.Abs(path)
	return err1 == nil && err2 == nil && a == b
}

// Serve answers requests on ln, and on the push socket of each
// repository's state dir (see SocketName), until ctx is done, then drains
// (see httpapi.Server.Serve): packs end after their entry in flight and
// upload bodies stop, within drain_timeout; verifications left then stop.
func (d *Daemon) Serve(ctx context.Context, ln net.Listener) error {
	socks, err := d.openSockets()
	if err != nil {
		ln.Close()
		return err
	}
	return d.http.Serve(ctx, []net.Listener{ln}, socks, d.drain, d.stop)
}

// ServeLocal serves ln alone, a listener of AccountConn connections (the
// standard streams of ssh-serve), without the push sockets. When ctx is
// done it drains as Serve does, then waits up to settle for the work that
// publishes left for after their answer (appstream branches, static deltas
// and their summaries) before it stops; what is not done by then is done
// at the next start.
func (d *Daemon) ServeLocal(ctx context.Context, ln net.Listener, settle time.Duration) error {
	return d.http.Serve(ctx, nil, []net.Listener{ln}, d.drain, func() {
		sctx, cancel := context.WithTimeout(context.Background(), settle)
		defer cancel()
		for _, svc := range d.repos {
			if err := svc.Settle(sctx); err != nil {
				d.log.Warn("the work left after a publish goes on at the next start", "path", svc.Path(), "err", err)
			}
		}
		d.stop()
	})
}

func (d *Daemon) drain() {
	for _, svc := range d.repos {
		svc.Drain()
	}
}

// stop ends the repositories' background work, once the spool releases of
// publishes already answered have ended (within drain_timeout; what is
// left is finished at the next start).
func (d *Daemon) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), d.drainTimeout)
	defer cancel()
	for _, svc := range d.repos {
		if err := svc.WaitReleases(ctx); err != nil {
			d.log.Warn("freeing published sessions' spool files goes on at the next start", "path", svc.Path(), "err", err)
		}
	}
	for _, svc := range d.repos {
		svc.Stop()
	}
}

// Handler is the daemon's HTTP handler.
func (d *Daemon) Handler() http.Handler { return d.http.Handler() }

// Names lists the repositories' names, sorted ("" alone for a daemon of
// one repository).
func (d *Daemon) Names() []string { return d.names }

// Repository is the service of the repository named name.
func (d *Daemon) Repository(name string) (*repository.Service, bool) {
	svc, ok := d.repos[name]
	return svc, ok
}

// Service is the service of the first repository (the only one of a daemon
// of one repository).
func (d *Daemon) Service() *repository.Service { return d.repos[d.names[0]] }

// StateDir is the state dir of the first repository.
func (d *Daemon) StateDir() string { return d.Service().StateDir() }

// SetKeyring replaces the tokens (the configuration file changed); see
// ReloadTokens, which also keeps a reload and a mint from crossing.
func (d *Daemon) SetKeyring(k *auth.Keyring) {
	d.mint.mu.Lock()
	defer d.mint.mu.Unlock()
	d.setKeyring(k)
}

func (d *Daemon) setKeyring(k *auth.Keyring) {
	d.tokens.Store(k)
	for _, svc := range d.repos {
		svc.TokensChanged()
	}
}

// Close releases the repositories, the journals and their locks.
func (d *Daemon) Close() error {
	var errs []error
	for _, svc := range d.repos {
		errs = append(errs, svc.Close())
	}
	return errors.Join(errs...)
}
