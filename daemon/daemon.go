// Package daemon is the receive daemon: the service of a production
// repository (package repository) behind its HTTP transport (package
// httpapi), built from the configuration.
package daemon

import (
	"context"
	"log/slog"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon/httpapi"
	"github.com/ostree-upload/ostree-upload/repository"
)

// Daemon is a receive daemon ready to serve.
type Daemon struct {
	svc    *repository.Service
	http   *httpapi.Server
	tokens *auth.Current
}

// New opens the repository's service from cfg (see repository.Open) and
// builds its HTTP transport.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, version string) (*Daemon, error) {
	if log == nil {
		log = slog.Default()
	}
	tokens := &auth.Current{}
	tokens.Store(cfg.Keyring())
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	svc, err := repository.Open(ctx, cfg, repository.Env{Log: log, Tokens: tokens, Registry: reg, Version: version})
	if err != nil {
		return nil, err
	}
	h, err := httpapi.New(svc, cfg, httpapi.Env{Log: log, Tokens: tokens, Registry: reg})
	if err != nil {
		svc.Close()
		return nil, err
	}
	return &Daemon{svc: svc, http: h, tokens: tokens}, nil
}

// OpenAdmin opens the state dir of a stopped daemon for the administration
// commands. While the daemon runs, its journal is locked and the error
// matches journal.ErrInUse.
func OpenAdmin(ctx context.Context, cfg *config.Config, log *slog.Logger) (*repository.Service, error) {
	return repository.Open(ctx, cfg, repository.Env{Log: log, Offline: true})
}

// Serve answers requests on ln until ctx is done, then shuts down
// gracefully; verifications in progress stop at once.
func (d *Daemon) Serve(ctx context.Context, ln net.Listener) error {
	return d.http.Serve(ctx, ln, d.svc.Stop)
}

// Handler is the daemon's HTTP handler.
func (d *Daemon) Handler() http.Handler { return d.http.Handler() }

// Service is the repository's service.
func (d *Daemon) Service() *repository.Service { return d.svc }

// StateDir is the directory holding the journal, uploads and spools.
func (d *Daemon) StateDir() string { return d.svc.StateDir() }

// SetKeyring replaces the tokens (the configuration file changed).
func (d *Daemon) SetKeyring(k *auth.Keyring) {
	d.tokens.Store(k)
	d.svc.TokensChanged()
}

// Close releases the repository, the journal and their locks.
func (d *Daemon) Close() error { return d.svc.Close() }
