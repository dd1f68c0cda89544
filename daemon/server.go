// Package daemon is the receive daemon: an HTTP API in front of a production
// OSTree repository that takes objects over tus resumable uploads, verifies
// each one before it can become visible, records everything in a journal,
// and publishes all refs of a push together.
package daemon

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/store"
)

// Options configure a Server.
type Options struct {
	RepoPath             string // production repo; created (archive mode) if missing
	StateDir             string // "" = beside the repo: <dir>/.<name>.ostree-upload
	Keyring              *auth.Keyring
	SessionTTL           time.Duration
	SessionRetention     time.Duration // ended sessions are forgotten after this; default max(7 days, 7 TTLs)
	MaxObjectsPerSession int
	MaxObjectSize        int64
	MaxPackSize          int64                // bytes of one pack request
	MaxSessionsPerToken  int                  // open sessions of one token
	MaxObjectsPerToken   int                  // objects in one token's open sessions
	MaxConnections       int                  // connections at once
	MaxClientConnections int                  // connections of one client address (requests, behind a trusted proxy)
	BodyTimeout          time.Duration        // a request body that sends nothing for this long is dropped; default 1 minute
	SignKeys             []ed25519.PrivateKey // sign every new commit and the summary with each
	TrustedKeys          []ed25519.PublicKey  // with SignVerify: a new commit needs a signature by one of these
	SignVerify           bool
	GPGSign              []string // key ids: sign every new commit and the summary with each
	GPGHomedir           string
	GPGVerify            bool           // a new commit needs a valid GPG signature by a trusted key
	GPGTrustedKeys       string         // keyring file trusted beside libostree's system-wide ones
	NoUpdate             bool           // leave the summary alone after a publish (then a session moves one ref)
	UpdateHook           []string       // run instead of the built-in summary update
	TrustedProxies       []netip.Prefix // peers whose X-Forwarded-* and Forwarded headers are believed
	Version              string
	Logger               *slog.Logger
}

// Server is a running receive daemon.
type Server struct {
	opts      Options
	log       *slog.Logger
	keyring   atomic.Pointer[auth.Keyring]
	revoked   atomic.Pointer[revokedSet] // replaced whole under revokedMu
	revokedMu sync.Mutex

	repo       *store.Repo // production
	spoolDir   string      // one spool (archive repo of verified objects) per token
	packs      livePacks
	gpgOwnDir  string       // keyring dir with the public halves of the gpg_sign keys
	spaceFloor uint64       // free bytes the repo's filesystem must keep (min-free-space)
	writers    atomic.Int64 // uploads receiving bytes now (see spaceReader)
	spoolsMu   sync.Mutex
	spools     map[string]*spool
	journal    *journal.Journal
	stateDir   string
	tusDir     string
	repoLock   *os.File

	tus     *handler.Handler
	echo    *echo.Echo
	metrics *metrics
	conns   *connLimiter

	publishMu sync.Mutex      // one publish at a time into the repo
	sessLocks [256]sync.Mutex // striped by session ID
	upLocks   [256]sync.Mutex // striped by upload ID (taken inside a session lock)
	verifying *fairShare      // bounds concurrent verifications, fairly between tokens

	life     context.Context // ends with Close: background work and verifications stop
	stop     context.CancelFunc
	bg       sync.WaitGroup
	closeMu  sync.Once
	closeErr error
}

// maxLiveUploads bounds the tus uploads of one session that are not judged
// yet; push keeps -j of them (8 by default) at once.
const maxLiveUploads = 256

// verifySlice is how long a verification keeps its slot while another
// waits: the most one token's work delays another's at each step.
const verifySlice = 100 * time.Millisecond

// journalFile is the journal's name in the state dir.
const journalFile = "journal.db"

// DefaultStateDir is where the state of a daemon for repoPath lives unless
// configured: beside the repo, on the same filesystem.
func DefaultStateDir(repoPath string) string {
	abs, err := filepath.Abs(repoPath)
	if err != nil {
		abs = repoPath
	}
	return filepath.Join(filepath.Dir(abs), "."+filepath.Base(abs)+".ostree-upload")
}

// New opens (or creates) the production repo and the state dir, takes their
// locks, finishes what a previous run left (uploads to verify, publishes to
// complete) and returns a Server ready to serve.
func New(ctx context.Context, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Keyring == nil {
		return nil, errors.New("daemon: no tokens configured")
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 24 * time.Hour
	}
	if opts.SessionRetention <= 0 {
		opts.SessionRetention = max(7*24*time.Hour, 7*opts.SessionTTL)
	}
	if opts.MaxObjectsPerSession <= 0 {
		opts.MaxObjectsPerSession = 2_000_000
	}
	if opts.MaxObjectSize <= 0 {
		opts.MaxObjectSize = 16 << 30
	}
	if opts.MaxPackSize <= 0 {
		opts.MaxPackSize = 256 << 20
	}
	if opts.MaxSessionsPerToken <= 0 {
		opts.MaxSessionsPerToken = config.DefaultMaxSessionsPerToken
	}
	if opts.MaxObjectsPerToken <= 0 {
		opts.MaxObjectsPerToken = config.DefaultMaxObjectsPerToken
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = config.DefaultMaxConnections
	}
	if opts.MaxClientConnections <= 0 {
		opts.MaxClientConnections = config.DefaultMaxClientConnections
	}
	if opts.BodyTimeout <= 0 {
		opts.BodyTimeout = time.Minute
	}
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir(opts.RepoPath)
	}
	s := &Server{opts: opts, log: opts.Logger, stateDir: opts.StateDir}
	s.life, s.stop = context.WithCancel(context.Background())
	s.keyring.Store(opts.Keyring)
	if err := s.open(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) open(ctx context.Context) error {
	var err error
	if _, statErr := os.Stat(filepath.Join(s.opts.RepoPath, "config")); errors.Is(statErr, os.ErrNotExist) {
		s.log.Info("creating production repository", "repo", s.opts.RepoPath, "mode", "archive")
		s.repo, err = store.Create(ctx, s.opts.RepoPath, store.ModeArchive)
	} else {
		s.repo, err = store.OpenArchive(ctx, s.opts.RepoPath)
	}
	if err != nil {
		return fmt.Errorf("production repo: %w", err)
	}
	if s.spaceFloor, err = s.repo.FreeSpaceFloor(); err != nil {
		return fmt.Errorf("production repo: %w", err)
	}
	if s.repoLock, err = lockDir(s.repo.Path()); err != nil {
		return fmt.Errorf("production repo %s is in use by another ostree-upload daemon: %w", s.repo.Path(), err)
	}
	if err := os.MkdirAll(s.stateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if err := sameFilesystemAndOwner(s.repo.Path(), s.stateDir); err != nil {
		return err
	}
	s.journal, err = journal.Open(filepath.Join(s.stateDir, journalFile), time.Second)
	if err != nil {
		return err
	}
	s.journal.SetLimits(journal.Limits{SessionsPerOwner: s.opts.MaxSessionsPerToken,
		ObjectsPerOwner: s.opts.MaxObjectsPerToken, LiveUploadsPerSession: maxLiveUploads})
	if err := s.loadRevoked(ctx); err != nil {
		return err
	}
	s.spoolDir = filepath.Join(s.stateDir, "spools")
	if err := os.MkdirAll(s.spoolDir, 0o700); err != nil {
		return fmt.Errorf("spools dir: %w", err)
	}
	s.spools = map[string]*spool{}
	s.verifying = newFairShare(max(2, runtime.NumCPU()), verifySlice)
	s.tusDir = filepath.Join(s.stateDir, "uploads")
	if err := os.MkdirAll(s.tusDir, 0o700); err != nil {
		return fmt.Errorf("uploads dir: %w", err)
	}
	s.metrics = newMetrics()
	s.conns = newConnLimiter(s.opts.MaxConnections, s.opts.MaxClientConnections, s.trustedAddr, s.log, s.metrics.connsLimited)
	s.metrics.addGauges(func() (int, error) { return s.journal.LiveCount(context.Background()) }, s.repo.FreeSpace, s.log)
	if err := s.setupTus(); err != nil {
		return err
	}
	s.setupRoutes()
	if err := s.exportOwnGPGKeys(ctx); err != nil { // before recovery, which may sign
		return err
	}
	if err := s.recover(ctx); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	s.prepareSpools(ctx)
	s.bg.Add(1)
	go func() { defer s.bg.Done(); s.janitor(s.life) }()
	return nil
}

// lockDir takes an exclusive flock on a directory, failing at once if held.
func lockDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// sameFilesystemAndOwner refuses a state dir from which libostree could not
// hard-link into the repo (it would silently copy every object instead).
func sameFilesystemAndOwner(repo, state string) error {
	var a, b syscall.Stat_t
	if err := syscall.Stat(repo, &a); err != nil {
		return err
	}
	if err := syscall.Stat(state, &b); err != nil {
		return err
	}
	if a.Dev != b.Dev {
		return fmt.Errorf("state dir %s is not on the filesystem of the repo %s: put it beside the repo (--state-dir)", state, repo)
	}
	if a.Uid != b.Uid {
		return fmt.Errorf("state dir %s is owned by uid %d, the repo %s by uid %d: both must belong to the same user", state, b.Uid, repo, a.Uid)
	}
	// One filesystem seen through two mounts (bind mounts) has one device
	// number, but links between the mounts fail: try one.
	f, err := os.CreateTemp(state, ".link-probe-")
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	f.Close()
	defer os.Remove(f.Name())
	dst := filepath.Join(repo, "tmp", filepath.Base(f.Name()))
	if err := os.Link(f.Name(), dst); err != nil {
		if errors.Is(err, syscall.EXDEV) {
			return fmt.Errorf("state dir %s and the repo %s are on different mounts, so objects could not be hard-linked into the repo: put both under one mount", state, repo)
		}
		return fmt.Errorf("state dir: hard link into the repo: %w", err)
	}
	os.Remove(dst)
	return nil
}

// StateDir is the directory holding the journal, uploads and spool.
func (s *Server) StateDir() string { return s.stateDir }

// SetKeyring replaces the tokens (e.g. after the token file changed).
func (s *Server) SetKeyring(k *auth.Keyring) {
	s.keyring.Store(k)
	s.prepareSpools(context.Background())
}

// Handler is the daemon's HTTP handler.
func (s *Server) Handler() http.Handler { return s.echo }

// Serve answers requests on ln until ctx is done, then shuts down
// gracefully: new requests are refused and in-flight ones get a few seconds.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Read and write timeouts stay 0: uploads run long; tusd manages
		// per-read deadlines itself, the other routes have theirs.
		ErrorLog:  slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnState: s.conns.state,
	}
	ln = s.conns.listener(ln)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	// Verifications in progress stop now (their uploads keep their bytes
	// and are judged at the next start) rather than hold the shutdown.
	s.stop()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops background work and releases the journal, repos and locks.
func (s *Server) Close() error {
	s.closeMu.Do(func() {
		if s.stop != nil {
			s.stop()
		}
		s.bg.Wait()
		var errs []error
		if s.journal != nil {
			errs = append(errs, s.journal.Close())
		}
		for _, sp := range s.spools {
			errs = append(errs, sp.repo.Close())
		}
		if s.repo != nil {
			errs = append(errs, s.repo.Close())
		}
		if s.repoLock != nil {
			errs = append(errs, s.repoLock.Close())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// lockSession serializes work on one session (commit, abort, expiry);
// unrelated sessions may share a stripe, so no code holds two.
func (s *Server) lockSession(id string) func() { return lockStripe(&s.sessLocks, id) }

// lockUpload serializes the verdict on one upload. It may be taken while a
// session lock is held, never the other way round.
func (s *Server) lockUpload(id string) func() { return lockStripe(&s.upLocks, id) }

func lockStripe(locks *[256]sync.Mutex, id string) func() {
	h := fnv.New32a()
	h.Write([]byte(id))
	mu := &locks[h.Sum32()%uint32(len(locks))]
	mu.Lock()
	return mu.Unlock
}

// spool holds one token's verified objects until they are published. Its
// lock keeps releases (journal, then unlink) from racing adoptions (rename,
// then journal): adopting takes it shared, releasing exclusively.
type spool struct {
	repo *store.Repo
	mu   sync.RWMutex
}

var ownerRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// spoolFor opens (creating on first use) the spool of a token.
func (s *Server) spoolFor(ctx context.Context, owner string) (*spool, error) {
	if !ownerRE.MatchString(owner) {
		return nil, fmt.Errorf("bad spool owner %q", owner)
	}
	s.spoolsMu.Lock()
	defer s.spoolsMu.Unlock()
	if sp, ok := s.spools[owner]; ok {
		return sp, nil
	}
	path := filepath.Join(s.spoolDir, owner)
	var r *store.Repo
	var err error
	if _, statErr := os.Stat(filepath.Join(path, "config")); errors.Is(statErr, os.ErrNotExist) {
		r, err = store.Create(ctx, path, store.ModeArchive)
	} else {
		r, err = store.OpenArchive(ctx, path)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := r.MakeObjectDirs(); err != nil {
		r.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	sp := &spool{repo: r}
	s.spools[owner] = sp
	return sp, nil
}

// prepareSpools opens (creating if needed) the spool of every configured
// token, so that a token's first push does not pay for making it.
func (s *Server) prepareSpools(ctx context.Context) {
	for _, owner := range s.keyring.Load().Owners() {
		if _, err := s.spoolFor(ctx, owner); err != nil {
			s.log.Warn("cannot prepare a token's spool", "err", err)
		}
	}
}
