// Package repository is the service of one production repository: its
// sessions and their journal records, the spools of verified objects,
// verification, the publish (its lock, signing, hooks and update policy),
// the janitor and the administration. It implements service.Repository
// and answers in domain terms; transports turn that into protocols.
package repository

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/service"
	"github.com/ostree-upload/ostree-upload/spool"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// Env is what a Service gets besides its configuration.
type Env struct {
	// Name is the repository's name on the wire ("" for the repository of
	// a one-repository daemon): in its logs, its metrics' repo label and
	// its info.
	Name     string
	Log      *slog.Logger
	Tokens   *auth.Current         // the keyring in use; SetKeyring of the daemon replaces it
	Registry prometheus.Registerer // where its metrics go; nil: a registry of its own
	Version  string
	// Offline opens the state of a stopped daemon for the administration
	// commands: nothing is recovered, no background work runs, and no
	// object is taken.
	Offline bool
}

// Service is one repository's service.
type Service struct {
	name    string
	cfg     *config.Config
	log     *slog.Logger
	tokens  *auth.Current
	version string

	repo       *store.Repo // production
	repoLock   *os.File
	journal    *journal.Journal
	spools     *spool.Set
	stateDir   string
	tusDir     string
	spaceFloor uint64 // free bytes the repo's filesystem must keep (min-free-space)
	writers    atomic.Int64

	signKeys    []ed25519.PrivateKey // sign every new commit and the summary with each
	trustedKeys []ed25519.PublicKey  // with sign_verify: a new commit needs a signature by one of these
	gpgOwnDir   string               // keyring dir with the public halves of the gpg_sign keys

	revoked   atomic.Pointer[revokedSet] // replaced whole under revokedMu
	revokedMu sync.Mutex

	packs     livePacks
	metrics   *metrics
	publishMu sync.Mutex // one publish at a time moves refs in the repo
	// importMu is held shared by a publish from the import of its objects
	// until its refs moved, and alone by a prune, which must not delete
	// objects imported for refs not yet set. Taken before publishMu.
	importMu  sync.RWMutex
	summaries groupCommit // summary regenerations, shared by publishes that wait at once
	sessLocks keyedLocks  // by session ID
	upLocks   keyedLocks  // by upload ID (taken inside a session lock)
	verifying *fairShare  // bounds concurrent verifications, fairly between tokens

	deferred *deferredWork    // work left for after a publish's answer (see deferred.go)
	now      func() time.Time // the clock of static delta retirements
	// afterImport, if set (by tests), runs when a publish has imported its
	// objects, before it takes the publish lock.
	afterImport func()

	life context.Context // ends with Close (or Stop): background work and verifications stop
	// drained ends at Drain: upload verdicts stop (the uploads' bytes stay
	// and are judged at the next start), packs end after their entry in
	// flight.
	drained context.Context
	drain   context.CancelFunc
	stop    context.CancelFunc
	bg      sync.WaitGroup
	// bgMu orders the start of background work (releaseLater) before the
	// end of life, so that nothing joins bg once Close waits for it.
	bgMu      sync.Mutex
	releasing atomic.Int64 // releases running after their publish's answer
	closeMu   sync.Once
	closeErr  error
}

var _ service.Repository = (*Service)(nil)

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

// StateDirOf is the state dir cfg names, or the default one beside its
// repository.
func StateDirOf(cfg *config.Config) string {
	if cfg.StateDir != "" {
		return cfg.StateDir
	}
	return DefaultStateDir(cfg.Repo)
}

// Open opens (or creates) the production repository and the state dir,
// takes their locks, finishes what a previous run left (uploads to judge,
// publishes to complete) and starts the janitor. Offline (see Env), it
// opens an existing state dir and does none of that.
func Open(ctx context.Context, cfg *config.Config, env Env) (*Service, error) {
	if env.Log == nil {
		env.Log = slog.New(slog.DiscardHandler)
	}
	if env.Tokens == nil {
		env.Tokens = &auth.Current{}
		env.Tokens.Store(cfg.Keyring())
	}
	if env.Name != "" {
		env.Log = env.Log.With("repo", env.Name)
		if env.Registry != nil {
			env.Registry = prometheus.WrapRegistererWith(prometheus.Labels{"repo": env.Name}, env.Registry)
		}
	}
	s := &Service{name: env.Name, cfg: cfg, log: env.Log, tokens: env.Tokens, version: env.Version, stateDir: StateDirOf(cfg),
		deferred: newDeferredWork(), now: time.Now}
	s.summaries.refs = &s.publishMu
	s.life, s.stop = context.WithCancel(context.Background())
	s.drained, s.drain = context.WithCancel(s.life)
	s.tusDir = filepath.Join(s.stateDir, "uploads")
	var err error
	if env.Offline {
		err = s.openOffline(ctx)
	} else {
		err = s.open(ctx, env.Registry)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Service) open(ctx context.Context, reg prometheus.Registerer) error {
	if err := s.loadKeys(); err != nil {
		return err
	}
	if err := s.checkDeltaTools(); err != nil {
		return err
	}
	if err := s.openRepo(ctx); err != nil {
		return err
	}
	var err error
	if s.spaceFloor, err = s.repo.FreeSpaceFloor(); err != nil {
		return fmt.Errorf("production repo: %w", err)
	}
	if s.repoLock, err = lockDir(ctx, s.repo.Path()); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			err = journal.ErrInUse
		}
		return fmt.Errorf("production repo %s is in use by another ostree-upload daemon or push: %w", s.repo.Path(), err)
	}
	if err := os.MkdirAll(s.stateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if err := sameFilesystemAndOwner(s.repo.Path(), s.stateDir); err != nil {
		return err
	}
	if s.journal, err = journal.Open(filepath.Join(s.stateDir, journalFile), time.Second); err != nil {
		return err
	}
	if c := s.journal.Compaction(); c.Err != nil {
		s.log.Warn("journal not compacted", "size", c.Before, "err", c.Err)
	} else if c.After > 0 {
		s.log.Info("journal compacted", "from", c.Before, "to", c.After, "took", c.Took)
	}
	// Once the journal is held: no other daemon uses this state dir.
	if err := s.removeChecks(); err != nil {
		return err
	}
	s.journal.SetLimits(journal.Limits{SessionsPerOwner: s.cfg.MaxSessionsPerToken,
		ObjectsPerOwner: s.cfg.MaxObjectsPerToken, LiveUploadsPerSession: maxLiveUploads})
	if err := s.loadRevoked(ctx); err != nil {
		return err
	}
	if s.spools, err = spool.OpenSet(filepath.Join(s.stateDir, "spools"), s.journal, s.log); err != nil {
		return err
	}
	s.verifying = newFairShare(max(2, runtime.NumCPU()), verifySlice)
	if err := os.MkdirAll(s.tusDir, 0o700); err != nil {
		return fmt.Errorf("uploads dir: %w", err)
	}
	s.metrics = newMetrics(reg)
	s.metrics.addGauges(func() (int, error) { return s.journal.LiveCount(context.Background()) }, s.repo.FreeSpace, s.log)
	if err := s.exportOwnGPGKeys(ctx); err != nil { // before recovery, which may sign
		return err
	}
	if err := s.recover(ctx); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	s.prepareSpools(ctx)
	s.bg.Add(2)
	go func() { defer s.bg.Done(); s.janitor(s.life) }()
	go func() { defer s.bg.Done(); s.deferredWorker(s.life) }()
	return nil
}

// openOffline opens the journal of a stopped daemon: while the daemon
// runs, it holds the journal, and the error matches journal.ErrInUse.
// openRepo opens the production repository, or creates it where nothing
// is yet: in a missing or empty directory, once the state dir is known to
// be usable beside it. A directory that holds something else is refused,
// untouched.
func (s *Service) openRepo(ctx context.Context) error {
	path := s.cfg.Repo
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("production repo: %w", err)
	}
	if err := canCreateRepoIn(abs); err != nil {
		if !errors.Is(err, errRepoExists) {
			return err
		}
		if s.repo, err = store.OpenArchive(ctx, path); err != nil {
			return fmt.Errorf("production repo: %w", err)
		}
		return nil
	}
	if err := stateDirBeside(s.stateDir, abs); err != nil {
		return err
	}
	s.log.Warn("the production repository does not exist: creating it", "path", abs, "mode", "archive")
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return fmt.Errorf("production repo: %w", err)
	}
	if s.repo, err = store.Create(ctx, path, store.ModeArchive); err != nil {
		return fmt.Errorf("production repo: %w", err)
	}
	return nil
}

// errRepoExists is canCreateRepoIn's answer for a directory that holds a
// repository (a config file).
var errRepoExists = errors.New("a repository exists")

// canCreateRepoIn tells whether a new repository may be created at path
// (absolute): nothing is there, or an empty directory. It answers
// errRepoExists where a repository is, and refuses anything else.
func canCreateRepoIn(path string) error {
	const what = "give the path of an OSTree repository, or of a missing or empty directory to create one in"
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("production repo: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("production repo %s is not a directory: %s", path, what)
	}
	if _, err := os.Lstat(filepath.Join(path, "config")); err == nil {
		return errRepoExists
	}
	d, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("production repo: %w", err)
	}
	defer d.Close()
	if names, _ := d.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("production repo %s is not an OSTree repository (it has no config file) and is not empty: %s", path, what)
	}
	return nil
}

// stateDirBeside makes the state dir and checks, before a repository is
// created at repo (absolute), what sameFilesystemAndOwner will require of
// both: one filesystem, and one owner (the daemon's user, who will own
// the new repository).
func stateDirBeside(state, repo string) error {
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	parent := filepath.Dir(repo) // the nearest directory that exists: the repository's filesystem
	for {
		if _, err := os.Stat(parent); err == nil || parent == filepath.Dir(parent) {
			break
		}
		parent = filepath.Dir(parent)
	}
	var p, st syscall.Stat_t
	if err := syscall.Stat(parent, &p); err != nil {
		return fmt.Errorf("production repo: stat %s: %w", parent, err)
	}
	if err := syscall.Stat(state, &st); err != nil {
		return fmt.Errorf("state dir: stat %s: %w", state, err)
	}
	if p.Dev != st.Dev {
		return fmt.Errorf("state dir %s is not on the filesystem of the repo %s: put it beside the repo (--state-dir)", state, repo)
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return fmt.Errorf("state dir %s is owned by uid %d, the repo %s would be by uid %d: both must belong to the same user", state, st.Uid, repo, uid)
	}
	return nil
}

func (s *Service) openOffline(ctx context.Context) error {
	path := filepath.Join(s.stateDir, journalFile)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no journal in %s (is it the daemon's state dir?): %w", s.stateDir, err)
	}
	var err error
	if s.journal, err = journal.Open(path, 200*time.Millisecond); err != nil {
		return err
	}
	s.metrics = newMetrics(nil)
	return s.loadRevoked(ctx)
}

// loadKeys reads the ed25519 key files the configuration names.
func (s *Service) loadKeys() error {
	for _, f := range s.cfg.SignKeyfiles {
		keys, err := object.LoadEd25519Keys(f)
		if err != nil {
			return fmt.Errorf("sign_keyfiles: %w", err)
		}
		s.signKeys = append(s.signKeys, keys...)
	}
	if s.cfg.SignTrustedKeyfile != "" {
		var err error
		if s.trustedKeys, err = object.LoadEd25519PublicKeys(s.cfg.SignTrustedKeyfile); err != nil {
			return fmt.Errorf("sign_trustedkeyfile: %w", err)
		}
	}
	return nil
}

// lockWait is how long a starting daemon waits for the repository's lock.
// A predecessor that is exiting (a restart), or a child process of this one
// between fork and exec (which briefly shares every descriptor), holds it
// for a moment; another live daemon holds it for good.
const lockWait = 3 * time.Second

// lockDir takes an exclusive flock on a directory, waiting up to lockWait
// while it is held.
func lockDir(ctx context.Context, dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(lockWait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
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

// StateDir is the directory holding the journal, uploads and spools.
func (s *Service) StateDir() string { return s.stateDir }

// Path is the production repository's path.
func (s *Service) Path() string { return s.cfg.Repo }

// MaxUploadSize is the largest upload the repository accepts.
func (s *Service) MaxUploadSize() int64 { return int64(s.cfg.MaxObjectSize) }

// UploadDir is where the tus store keeps the uploads' files.
func (s *Service) UploadDir() string { return s.tusDir }

// TokensChanged tells the service the keyring was replaced: spools of new
// tokens are made ready.
func (s *Service) TokensChanged() { s.prepareSpools(context.Background()) }

// Stop ends background work and verifications in progress (their uploads
// keep their bytes and are judged at the next start), so that a shutdown
// does not wait for them.
func (s *Service) Stop() { s.endLife() }

// endLife ends background work (see bgMu).
func (s *Service) endLife() {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	s.stop()
}

// Drain begins a graceful stop: packs end after the entry in flight, with
// what they stored journaled, and a refusal to come back (Unavailable,
// with a Retry-After); bodies bringing upload bytes stop being read, the
// bytes received staying in their uploads; upload verdicts in progress
// stop. Stop then ends what is left.
func (s *Service) Drain() { s.drain() }

// Draining reports whether Drain (or Stop) was called.
func (s *Service) Draining() bool { return s.drained.Err() != nil }

// Close stops background work and releases the journal, repos and locks.
func (s *Service) Close() error {
	s.closeMu.Do(func() {
		s.endLife()
		s.bg.Wait()
		var errs []error
		if s.journal != nil {
			errs = append(errs, s.journal.Close())
		}
		if s.spools != nil {
			errs = append(errs, s.spools.Close())
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

// lockSession serializes work on one session (commit, abort, expiry).
func (s *Service) lockSession(id string) func() { return s.sessLocks.lock(id) }

// lockUpload serializes the verdict on one upload. It may be taken while a
// session lock is held, never the other way round.
func (s *Service) lockUpload(id string) func() { return s.upLocks.lock(id) }

// keyedLocks are mutexes by key, made on demand and forgotten when free:
// work on one key never waits for work on another (a verdict that takes
// a decompression bomb's time holds its upload alone).
type keyedLocks struct {
	mu sync.Mutex
	m  map[string]*keyedLock
}

type keyedLock struct {
	sync.Mutex
	users int // holders and waiters, under keyedLocks.mu
}

// lock takes key's mutex and returns its unlock.
func (k *keyedLocks) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyedLock{}
		k.m[key] = l
	}
	l.users++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// spoolFor opens (creating on first use) the spool of a token.
func (s *Service) spoolFor(ctx context.Context, owner string) (*spool.Spool, error) {
	if s.spools == nil {
		return nil, errors.New("no spools: the state dir is open offline")
	}
	return s.spools.For(ctx, owner)
}

// prepareSpools opens (creating if needed) the spool of every configured
// token, so that a token's first push does not pay for making it.
func (s *Service) prepareSpools(ctx context.Context) {
	if s.spools == nil {
		return
	}
	for _, owner := range s.tokens.Load().Owners() {
		if _, err := s.spools.For(ctx, owner); err != nil {
			s.log.Warn("cannot prepare a token's spool", "err", err)
		}
	}
}

// refuse is a refusal of kind.
func refuse(kind service.Kind, format string, args ...any) *service.Error {
	return service.Refuse(kind, format, args...)
}
