package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon"
)

var receiveCmd = &command{
	name:    "receive",
	summary: "Run the daemon that receives pushes into a production repository",
	usage:   "[OPTIONS]",
	example: `  ostree-upload gentoken -c /etc/ostree-upload.yaml --name ci
  ostree-upload receive -c /etc/ostree-upload.yaml -r /srv/ostree/repo -a 127.0.0.1:8080

  Without --tls-cert the daemon speaks plain HTTP: listen on loopback
  behind a TLS proxy (the default, :8080, is every interface).

  The state dir (journal, partial uploads, verified objects) defaults to
  .<repo name>.ostree-upload beside the repo and must be on its filesystem.
  SIGHUP reloads the tokens; SIGTERM and SIGINT stop gracefully.`,
	flags: func(fs *pflag.FlagSet) func([]string) error {
		cfgPath := fs.StringP("config", "c", "", "configuration file (default: the first found of ./ostree-upload.yaml, $OSTREE_UPLOAD_CONF, ~/.config/ostree-upload/ostree-upload.yaml, /etc/ostree-upload/ostree-upload.yaml, $OSTREE_RECEIVE_CONF, ~/.config/ostree/ostree-receive.conf, /etc/ostree/ostree-receive.conf)")
		repo := fs.StringP("repo", "r", "repo", "production OSTree repository (archive mode; created if missing)")
		addr := fs.StringP("address", "a", ":8080", "address to listen on")
		state := fs.String("state-dir", "", "directory for the journal, uploads and spool (default: beside the repo)")
		verbose := fs.BoolP("verbose", "v", false, "print debug messages (whatever log_level says)")
		tlsCert := fs.String("tls-cert", "", "serve HTTPS with this PEM certificate (chain); reloaded on SIGHUP")
		tlsKey := fs.String("tls-key", "", "the PEM private key of --tls-cert")
		pprofAddr := fs.String("pprof", "", "serve Go's profiling endpoints (/debug/pprof/) on this address, e.g. 127.0.0.1:6060; never expose it")
		return noArgs("receive", func() error {
			path, err := configPath(fs, *cfgPath)
			if err != nil {
				return err
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			if fs.Changed("repo") {
				cfg.Repo = *repo
			}
			if fs.Changed("address") {
				cfg.Address = *addr
			}
			if fs.Changed("state-dir") {
				cfg.StateDir = *state
			}
			if (*tlsCert == "") != (*tlsKey == "") {
				return usageError{errors.New("--tls-cert and --tls-key go together")}
			}
			if *pprofAddr != "" {
				if err := servePprof(*pprofAddr); err != nil {
					return err
				}
			}
			return receive(path, cfg, *verbose, *tlsCert, *tlsKey)
		})
	},
}

func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("configuration file %s not found: create it with a first token: ostree-upload gentoken -c %s", path, path)
	}
	if err != nil {
		return nil, err
	}
	if len(cfg.Tokens) == 0 && len(cfg.Accounts) == 0 {
		return nil, fmt.Errorf("%s has no tokens: add one with: ostree-upload gentoken -c %s (or, for pushes over ssh only, list the accounts that push)", path, path)
	}
	return cfg, nil
}

func newLogger(verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// receiveLogger is the daemon's logger, at the configuration's log_level
// or at debug with -v.
func receiveLogger(cfg *config.Config, verbose bool, w io.Writer) *slog.Logger {
	level := cfg.LogLevel
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

func receive(cfgPath string, cfg *config.Config, verbose bool, certFile, keyFile string) error {
	log := receiveLogger(cfg, verbose, os.Stderr)
	tuneGC(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The address and the certificate first: a mistake in either is
	// reported before anything is created on disk.
	var certs *certReloader
	if certFile != "" {
		var err error
		if certs, err = newCertReloader(certFile, keyFile); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return fmt.Errorf("cannot listen on %q (--address, or address in the configuration): %w", cfg.Address, err)
	}
	defer ln.Close()
	if certs != nil {
		ln = tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get})
	} else {
		warnPlainHTTP(log, ln.Addr())
	}
	recovered := extendStartup(20 * time.Second)
	srv, err := daemon.New(ctx, cfg, daemon.Options{Log: log, Version: version, Commit: buildCommit()})
	recovered()
	if err != nil {
		return err
	}
	defer srv.Close()
	srv.SetConfigFile(cfgPath) // tokens minted over the API are kept there
	for _, name := range srv.Names() {
		svc, _ := srv.Repository(name)
		log.Info("serving", "repository", name, "path", svc.Path(), "state_dir", svc.StateDir())
	}
	log.Info("listening", "address", ln.Addr().String(), "repositories", len(srv.Names()), "tokens", len(cfg.Tokens), "version", version)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			var c *config.Config
			err := srv.ReloadTokens(func() (*auth.Keyring, error) {
				var err error
				if c, err = loadConfig(cfgPath); err != nil {
					return nil, err
				}
				return c.Keyring(), nil
			})
			if err != nil {
				log.Error("reloading tokens failed; keeping the old ones", "err", err)
				continue
			}
			if certs != nil {
				if err := certs.reload(); err != nil {
					log.Error("reloading the TLS certificate failed; keeping the old one", "err", err)
				}
			}
			log.Info("tokens reloaded", "tokens", len(c.Tokens))
		}
	}()
	if err := sdNotify("READY=1\nSTATUS=listening on " + ln.Addr().String()); err != nil {
		log.Warn("cannot tell systemd the daemon is ready", "err", err)
	}
	defer sdNotify("STOPPING=1")
	return srv.Serve(ctx, ln)
}

// The daemon's garbage collection, unless GOGC or GOMEMLIMIT in its
// environment set it: the heap may grow to four times what is live
// (GOGC=300), and the runtime collects as often as it must to keep its
// memory under a soft limit (GOMEMLIMIT=48MiB). A push of many small
// objects makes garbage fast and keeps little of it (tar headers, names,
// the journal's pages): it then collects rarely, and a small daemon stays
// small. A daemon whose live heap nears the limit collects more often; a
// larger GOMEMLIMIT suits it.
const (
	daemonGCPercent   = 300
	daemonMemoryLimit = 48 << 20
)

// tuneGC applies the daemon's garbage collection settings that getenv
// leaves unset.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(daemonGCPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(daemonMemoryLimit)
	}
}

// servePprof serves net/http/pprof's handlers on their own listener, apart
// from the API.
func servePprof(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
	return nil
}

// certReloader serves a certificate that SIGHUP can replace (renewals).
type certReloader struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	return r, r.reload()
}

func (r *certReloader) reload() error {
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	r.cert.Store(&c)
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return r.cert.Load(), nil }
