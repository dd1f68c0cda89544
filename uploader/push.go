// Package uploader is the push client: it finds what the daemon lacks,
// sends it in parallel (small objects in packs, large ones as resumable
// uploads), and commits.
package uploader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/api/client"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// Options configure a push.
type Options struct {
	Repo          string   // local repository, of any mode
	Address       string   // daemon URL, or a repository over ssh (ssh://[user@]host[:port]/path, [user@]host:path)
	Token         string   // API token; none over ssh, where the daemon knows the unix account
	SSHCommand    string   // over ssh: the local ssh invocation (see client.SSHOptions); "" for ssh
	RemoteCommand string   // over ssh: the program on the host; "" for ostree-upload
	Refs          []string // refs to push; empty = every local ref
	Jobs          int      // parallel uploads
	Force         bool     // allow non-fast-forward updates
	DryRun        bool     // show what would happen, change nothing
	NoPublish     bool     // upload everything, leave the session open for a publisher
	Prune         bool     // prune the local repository first
	RetryTimeout  time.Duration
	PackMax       int64     // objects up to this size travel in packs; 0 = 2 MiB, negative = none
	CACert        string    // PEM file of CAs trusted for the daemon's certificate, beside the system's
	Progress      io.Writer // where progress and the summary go; nil = nowhere
	Terminal      bool      // Progress is a terminal: draw a live bar
	Log           *slog.Logger

	batch, window int  // names per negotiation, batches waiting for it; 0 = api.MaxNamesPerRequest, pipelineWindow
	doubtAll      bool // every file is in doubt: sent after the pipeline (tests)
}

// RefResult is what happened to one ref.
type RefResult struct {
	Ref      string
	Old, New string // Old "" for a new ref
	// Status is "updated", "up to date", "up to date (same content)",
	// "uploaded" (NoPublish); for a dry run "would update", "would upload"
	// (NoPublish) or "refused".
	Status string
	Reason string // why a dry run's ref is refused: the daemon's answer
}

// Result summarizes a push.
type Result struct {
	DryRun        bool // a dry run: asked for, or the host's dry_run
	Refs          []RefResult
	GeneratedRefs []string // refs of the build repository left out without -b (see api.GeneratedRef)
	// Objects is how many objects were offered. A file that the filter of
	// names took for one met before, and that the daemon had, is not
	// counted (see the package's pipeline).
	Objects        int
	Sent           int   // objects uploaded (or resumed)
	Skipped        int   // objects the daemon already had
	ToSend         int   // objects the daemon needed (Sent of them were sent)
	BytesSent      int64 // bytes read from objects into requests: sent again after a retry, tar framing included
	BytesDone      int64 // bytes of the Sent objects
	BytesSkipped   int64
	BytesPlanned   int64 // dry run: bytes of the objects that would be offered
	Retries        int64
	Packs          int // pack requests made
	Uploads        int // objects sent as uploads of their own
	Duration       time.Duration
	Phases         Phases
	SessionID      string
	SessionResumed bool
	CanPublish     bool // the token has the publish scope (daemons that say)

	peakNames int64 // most names held at once between the walk and the end of their work
}

// Phases is how long each step of a push took. The walk, the negotiation
// and the uploads run at once (see the package's pipeline), so Plan,
// Negotiate and Upload overlap: their sum may exceed the push's duration.
type Phases struct {
	Plan      time.Duration // walking the local repository for the objects of the new commits
	Negotiate time.Duration // in requests asking the daemon which objects it needs
	Upload    time.Duration // from the start of the walk until the last upload ended
	Commit    time.Duration
}

// PermanentError is a refusal that a rerun will not change (bad token,
// non-fast-forward, corrupt local object…): exit code 1.
type PermanentError = client.PermanentError

// Temporary reports whether rerunning the same push may succeed (the daemon
// or the link was down for longer than the retry budget): exit code 75.
func Temporary(err error) bool { return client.Temporary(err) }

var permanent = client.Permanent

// classify turns permanent HTTP refusals into *PermanentError.
func classify(err error) error {
	var pe *PermanentError
	if err == nil || errors.As(err, &pe) || client.Retryable(err) || errors.Is(err, context.Canceled) {
		return err
	}
	var he *client.HTTPError
	if errors.As(err, &he) {
		switch he.Status {
		case http.StatusUnauthorized:
			return permanent("the daemon refused the token (%s): check --token or OSTREE_UPLOAD_TOKEN", he.Body.Error)
		case http.StatusForbidden:
			return permanent("refused: %s", he.Body.Error)
		case http.StatusConflict:
			return permanent("%s", he.Body.Error)
		}
	}
	return &PermanentError{Err: err}
}

type pusher struct {
	opts Options
	log  *slog.Logger
	repo *store.Repo
	c    *client.Client
	con  *console
	prog *progress
	res  Result
	sid  string
	mu   sync.Mutex
	// packTarget is the size of a pack: small enough for the daemon's limit.
	packTarget int64
}

// Push pushes refs of a local repository (archive, bare or bare-user) to the daemon and moves
// them there, all together, once every object is verified by the daemon.
// Rerunning a push after any interruption resumes it: nothing the daemon
// already verified is sent again, and partial uploads continue.
func Push(ctx context.Context, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Jobs <= 0 {
		opts.Jobs = 4
	}
	if opts.RetryTimeout <= 0 {
		opts.RetryTimeout = 5 * time.Minute
	}
	if opts.PackMax == 0 {
		opts.PackMax = packEntryMax
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c, err := newClient(ctx, opts)
	if err != nil {
		return nil, classify(err)
	}
	defer c.Close()
	repo, err := store.Open(ctx, opts.Repo)
	if err != nil {
		return nil, &PermanentError{Err: err}
	}
	defer repo.Close()
	c.SetLog(opts.Log)
	p := &pusher{opts: opts, log: opts.Log, repo: repo, c: c, con: &console{out: opts.Progress, tty: opts.Terminal}}
	c.OnRetry(func(ev client.RetryEvent) {
		p.con.println(fmt.Sprintf("retrying in %s (budget %s left): %v", ev.Delay.Round(100*time.Millisecond), ev.Left.Round(time.Second), ev.Err))
	})
	err = p.run(ctx)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err() // interrupted (SIGINT, SIGTERM): a rerun resumes
	}
	p.res.Retries = c.Retries()
	p.res.Duration = time.Since(start)
	if p.prog != nil {
		p.prog.stop(&p.res)
	}
	return &p.res, classify(err)
}

// newClient is the client of the daemon at opts.Address: over HTTP with
// the token, or over ssh.
func newClient(ctx context.Context, opts Options) (*client.Client, error) {
	dest, overSSH, err := client.ParseSSH(opts.Address)
	if err != nil {
		return nil, &PermanentError{Err: err}
	}
	if overSSH {
		if opts.Token != "" {
			return nil, permanent("a token does not go over ssh, where the host knows the unix account: drop --token, --token-file or OSTREE_UPLOAD_TOKEN")
		}
		return client.NewSSH(dest, client.SSHOptions{Command: opts.SSHCommand, Remote: opts.RemoteCommand, Stderr: opts.Progress}), nil
	}
	if opts.Token == "" {
		return nil, permanent("no token: pass --token, --token-file or set OSTREE_UPLOAD_TOKEN")
	}
	c, err := client.New(opts.Address, opts.Token, opts.Jobs, opts.CACert)
	if err != nil {
		return nil, &PermanentError{Err: err}
	}
	return c, nil
}

func (p *pusher) run(ctx context.Context) error {
	if p.opts.Prune && !p.opts.DryRun {
		st, err := p.repo.Prune(ctx, store.PruneOptions{Depth: -1})
		if err != nil {
			return &PermanentError{Err: err}
		}
		p.log.Info("pruned the local repository", "objects", st.Pruned)
	}
	info, err := p.info(ctx)
	if err != nil {
		return err
	}
	if info.Protocol != api.ProtocolVersion {
		return permanent("the daemon speaks protocol %d, this client %d: use matching versions of ostree-upload", info.Protocol, api.ProtocolVersion)
	}
	if err := p.checkScopes(info.Token); err != nil {
		return err
	}
	p.res.CanPublish = info.Token == nil || slices.Contains(info.Token.Scopes, api.ScopePublish)
	if info.DryRun && !p.opts.DryRun {
		p.con.println("the host judges this account's pushes as dry runs (dry_run in its configuration): nothing is sent or changed")
		p.opts.DryRun = true
	}
	p.opts.Force = p.opts.Force || info.Force
	updates, err := p.refUpdates(ctx, info)
	if err != nil || len(updates) == 0 {
		return err
	}
	if p.opts.DryRun {
		p.res.DryRun = true
		return p.dryRun(ctx, updates)
	}
	p.packTarget = packTarget
	if l := info.Limits.MaxPackSize; l > 0 && l/2 < packTarget {
		p.packTarget = l / 2
	}
	p.prog = newProgress(p.con)
	var sess api.Session
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			// The uploads of the session's last answer are stale.
			if err := p.c.Retry(ctx, p.opts.RetryTimeout, func() error {
				var err error
				sess, err = p.c.Session(ctx, p.sid)
				return err
			}); err != nil {
				return err
			}
		}
		// After the first round, what the daemon holds of a directory may
		// be less than all of it (objects of an interrupted publish,
		// another push's spool): every ref offers its whole commit.
		pl := p.newPipeline(updates, attempt > 0, sess.Uploads)
		pl.files.always = p.opts.doubtAll
		err := pl.run(ctx)
		if attempt == 0 {
			sess = pl.sess
			p.res.Skipped = pl.offered - pl.needed
		}
		p.res.Objects = pl.offered
		p.res.Phases.Plan += pl.walking
		p.res.Phases.Negotiate += pl.negotiating
		p.res.Phases.Upload += pl.uploading
		p.res.peakNames = max(p.res.peakNames, pl.peak.Load())
		// A session that is not open any more was committed by a
		// concurrent run of the same push (or aborted): the commit says.
		if err != nil && !errors.Is(err, client.ErrSessionNotOpen) {
			return err
		}
		if p.opts.NoPublish {
			done, err := p.uploaded(ctx)
			if err != nil {
				return err
			}
			if !done && attempt < 3 {
				continue
			}
			if !done {
				return permanent("session %s still lacks objects after %d rounds of uploads", p.sid, attempt+1)
			}
			break
		}
		t := time.Now()
		err = p.c.Retry(ctx, p.opts.RetryTimeout, func() error {
			var err error
			sess, err = p.c.Commit(ctx, p.sid, false)
			return err
		})
		p.res.Phases.Commit += time.Since(t)
		var he *client.HTTPError
		if errors.As(err, &he) && he.Status == http.StatusConflict && he.Body.Code == api.CodeSameContent {
			return p.sameContent(ctx)
		}
		if errors.As(err, &he) && he.Body.Code == api.CodeCheckFailed {
			// Nothing moved and the session stays open: a rerun would
			// meet the same check.
			return permanent("%s", client.CheckRefusal(he.Body))
		}
		if errors.As(err, &he) && he.Body.Code == api.CodeNotSigned {
			return permanent("the daemon refused to publish: %s (sign the commit with a key it trusts)", he.Body.Error)
		}
		if errors.As(err, &he) && he.Status == http.StatusUnprocessableEntity && attempt < 3 {
			// Something the daemon counted as present went away (expired
			// meanwhile): negotiate again and send it.
			p.log.Warn("commit found objects missing; sending them", "missing", he.Body.Missing)
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	status := "updated"
	if p.opts.NoPublish {
		status = "uploaded"
	}
	for i := range p.res.Refs {
		r := &p.res.Refs[i]
		switch {
		case r.Status != "":
		case slices.Contains(sess.Unchanged, r.Ref):
			r.Status = SameContent
		default:
			r.Status = status
		}
	}
	return nil
}

// SameContent is the status of a ref whose new commit has the tree and
// metadata of the daemon's (a reproducible rebuild): it does not move.
const SameContent = "up to date (same content)"

// sameContent handles a commit refused because the new commit of every
// ref has the tree and metadata of the daemon's (a reproducible rebuild):
// nothing moves, the session is aborted, and the refs are up to date. (In a
// session where only some refs are such, the others move: see run.)
func (p *pusher) sameContent(ctx context.Context) error {
	if err := p.c.Retry(ctx, p.opts.RetryTimeout, func() error { return p.c.Abort(ctx, p.sid) }); err != nil {
		p.log.Warn("cannot abort the session", "session", p.sid, "err", err)
	}
	for i := range p.res.Refs {
		if p.res.Refs[i].Status == "" {
			p.res.Refs[i].Status = SameContent
		}
	}
	return nil
}

// reachBudget is how long a push that has not started retries a daemon it
// cannot reach: waiting minutes would only hide a wrong address or a
// stopped daemon.
const reachBudget = 10 * time.Second

// info asks the daemon for its info, before anything else. A daemon that
// cannot be reached is retried for at most reachBudget, unless it answers
// 503 with a Retry-After (a graceful restart), which is waited for within
// --retry-timeout; a scheme mismatch and a server that is not ostree-upload
// are refused at once, saying what to check.
func (p *pusher) info(ctx context.Context) (api.Info, error) {
	var info api.Info
	ask := func() error {
		var err error
		info, err = p.c.Info(ctx)
		if err == nil {
			return nil
		}
		where := p.c.URL(api.PathInfo)
		var he *client.HTTPError
		switch {
		case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
			return permanent("%s answers plain HTTP, not HTTPS: use an http:// address (or serve TLS: receive --tls-cert)", p.opts.Address)
		case errors.As(err, &he) && he.Status == http.StatusBadRequest && strings.Contains(he.Body.Error, "HTTP request to an HTTPS server"):
			return permanent("%s speaks HTTPS: use an https:// address", p.opts.Address)
		case errors.As(err, &he) && he.Status != http.StatusUnauthorized && he.Status != http.StatusForbidden &&
			he.Body.Code == "" && !client.Retryable(err):
			// The daemon always has an info; another server's page is not shown.
			return permanent("not an ostree-upload daemon at %s (GET %s: %d)", p.opts.Address, where, he.Status)
		}
		return err
	}
	first := min(reachBudget, p.opts.RetryTimeout)
	err := p.c.Retry(ctx, first, ask)
	var he *client.HTTPError
	if rest := p.opts.RetryTimeout - first; rest > 0 && errors.As(err, &he) && he.Status == http.StatusServiceUnavailable && he.RetryAfter > 0 {
		// A graceful restart: worth the whole budget.
		err = p.c.Retry(ctx, rest, ask)
	}
	// Unreachable for reachBudget: a wrong address or a stopped daemon,
	// not a flaky link. A shorter --retry-timeout is a budget like any.
	if err != nil && client.Retryable(err) && ctx.Err() == nil && first == reachBudget {
		cause := err
		var ue *url.Error
		if errors.As(err, &ue) {
			cause = ue.Err
		}
		return info, permanent("cannot reach the daemon at %s after %s: %v; check that it runs and the address (host, port, http or https)",
			p.opts.Address, first, cause)
	}
	return info, err
}

// checkScopes stops a push that its token could not finish before it
// sends anything. Daemons that do not report the token pass.
func (p *pusher) checkScopes(t *api.Token) error {
	if t == nil || p.opts.DryRun {
		return nil
	}
	switch {
	case !slices.Contains(t.Scopes, api.ScopeUpload):
		return permanent("token %s may not upload (its scopes: %s)", t.Name, strings.Join(t.Scopes, ", "))
	case !p.opts.NoPublish && !slices.Contains(t.Scopes, api.ScopePublish):
		return permanent("token %s may upload but not publish: pass --no-publish to upload and leave the session to a token with the publish scope (ostree-upload sessions commit ID)", t.Name)
	}
	return nil
}

// uploaded reports whether the daemon holds every object of the session
// verified. Verdicts of the last packs may land a moment after their
// answer, so it asks a few times before saying no.
func (p *pusher) uploaded(ctx context.Context) (bool, error) {
	var sess api.Session
	for i := 0; ; i++ {
		if err := p.c.Retry(ctx, p.opts.RetryTimeout, func() error {
			var err error
			sess, err = p.c.Session(ctx, p.sid)
			return err
		}); err != nil {
			return false, err
		}
		switch {
		case sess.State != api.StateOpen:
			return false, permanent("session %s is %s: %s", p.sid, sess.State, sess.Result)
		case sess.Verified >= sess.Objects:
			return true, nil
		case i == 10:
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// refUpdates decides which refs move, from what the daemon reports.
func (p *pusher) refUpdates(ctx context.Context, info api.Info) ([]api.RefUpdate, error) {
	local, err := p.repo.ListRefs(ctx)
	if err != nil {
		return nil, &PermanentError{Err: err}
	}
	refs := p.opts.Refs
	if len(refs) == 0 {
		for r := range local {
			if api.GeneratedRef(r) {
				p.res.GeneratedRefs = append(p.res.GeneratedRefs, r)
				continue
			}
			refs = append(refs, r)
		}
		sort.Strings(refs)
		sort.Strings(p.res.GeneratedRefs)
		if len(refs) == 0 {
			return nil, permanent("repository %s has no refs to push", p.opts.Repo)
		}
	}
	var updates []api.RefUpdate
	seen := map[string]bool{}
	for _, ref := range refs {
		if seen[ref] {
			continue
		}
		seen[ref] = true
		c, ok := local[ref]
		if !ok {
			return nil, permanent("ref %s does not exist in %s (it has: %s)", ref, p.opts.Repo, refList(local))
		}
		old := info.Refs[ref]
		r := RefResult{Ref: ref, Old: old, New: c.String()}
		if old == c.String() {
			r.Status = "up to date"
		} else {
			updates = append(updates, api.RefUpdate{Name: ref, Old: old, New: c.String()})
		}
		p.res.Refs = append(p.res.Refs, r)
	}
	return updates, nil
}

func refList(m map[string]object.Checksum) string {
	var names []string
	for r := range m {
		names = append(names, r)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "no refs"
	}
	return fmt.Sprint(names)
}

// plan lists the objects a dry run counts: those a push offers (see
// pipeline.walk), each ref without a local base offering its whole commit
// (with full; otherwise only its metadata, its commit listed in topDown).
func (p *pusher) plan(ctx context.Context, updates []api.RefUpdate, full bool) (names []object.Name, topDown []object.Checksum, err error) {
	seen := map[object.Name]bool{}
	add := func(n object.Name) error {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
		return nil
	}
	for _, u := range updates {
		newc, _ := object.ParseChecksum(u.New)
		base, haveBase := p.localBase(ctx, u.Old)
		switch {
		case haveBase:
			err = p.repo.Diff(ctx, newc, base, add)
		case full:
			err = p.repo.Walk(ctx, newc, add)
		default:
			err = p.repo.WalkMeta(ctx, newc, add)
			topDown = append(topDown, newc)
		}
		if err != nil {
			return nil, nil, &PermanentError{Err: fmt.Errorf("read %s from %s: %w", u.Name, p.opts.Repo, err)}
		}
		if err := p.parents(ctx, u, newc, add); err != nil {
			return nil, nil, err
		}
	}
	return names, topDown, nil
}

func (p *pusher) localBase(ctx context.Context, old string) (object.Checksum, bool) {
	if old == "" {
		return object.Checksum{}, false
	}
	c, err := object.ParseChecksum(old)
	if err != nil {
		return c, false
	}
	info, err := p.repo.ReadCommit(ctx, c)
	return c, err == nil && !info.Partial
}

// negotiate asks the daemon which objects it still needs, in batches. With
// noWait, the daemon answers without letting the session's packs in
// progress finish: none of them holds these names.
func (p *pusher) negotiate(ctx context.Context, names []object.Name, noWait bool) ([]object.Name, error) {
	var needed []object.Name
	for i := 0; i < len(names); i += api.MaxNamesPerRequest {
		batch := names[i:min(i+api.MaxNamesPerRequest, len(names))]
		req := api.ObjectsRequest{Objects: make([]string, len(batch)), NoWait: noWait}
		for j, n := range batch {
			req.Objects[j] = n.String()
		}
		var res api.ObjectsResponse
		if err := p.c.Retry(ctx, p.opts.RetryTimeout, func() error {
			var err error
			res.Needed, err = p.c.Negotiate(ctx, p.sid, req)
			return err
		}); err != nil {
			return nil, errNotOpen(err)
		}
		got, err := parseNames(res.Needed)
		if err != nil {
			return nil, err
		}
		needed = append(needed, got...)
	}
	return needed, nil
}

// parseNames parses the object names a daemon answered.
func parseNames(names []string) ([]object.Name, error) {
	out := make([]object.Name, 0, len(names))
	for _, s := range names {
		n, err := object.ParseName(s)
		if err != nil {
			return nil, fmt.Errorf("daemon answered a bad object name: %w", err)
		}
		out = append(out, n)
	}
	return out, nil
}

// size is the size of a local object's archive form (an estimate for one
// the repository converts: see store.Repo.SizeEstimate). It is not cached: a million sizes
// would cost more memory than the stat calls cost time.
func (p *pusher) size(n object.Name) (int64, error) {
	s, err := p.repo.SizeEstimate(n)
	if err != nil {
		return 0, &PermanentError{Err: fmt.Errorf("local object %s: %w (run ostree fsck on %s)", n, err, p.opts.Repo)}
	}
	return s, nil
}

// smallObject is the size up to which an object goes in the request that
// creates its upload; larger ones are created first and then appended, so a
// cut leaves a resumable upload whose URL the client knows.
const smallObject = 1 << 20

// upload sends one object, resuming from the daemon's offset after any
// failure, until it is verified or fails permanently.
func (p *pusher) upload(ctx context.Context, n object.Name, url string) error {
	size, err := p.size(n)
	if err != nil {
		return err
	}
	// The progress counts the size planned; a converted object's bytes
	// stand for it in proportion (see store.Repo.SizeEstimate).
	m, planned := p.prog.meter(size), size
	if p.repo.Converts(n) {
		if size, err = p.repo.ArchiveSize(ctx, n); err != nil {
			return &PermanentError{Err: fmt.Errorf("local object %s: %w", n, err)}
		}
	}
	f, err := p.openObject(ctx, n)
	if err != nil {
		return err
	}
	defer f.Close()
	lastOffset := int64(-1)
	err = p.c.RetryProgress(ctx, p.opts.RetryTimeout, func(progress func()) error {
		if url == "" {
			var body io.Reader
			if size <= smallObject {
				if body, err = f.from(ctx, 0, size); err != nil {
					return err
				}
				body = m.count(body, 0, planned, size)
			}
			u, err := p.c.CreateUpload(ctx, p.sid, n.String(), size, body)
			switch {
			case err == nil && body != nil, errors.Is(err, client.ErrVerified):
				return nil // all bytes arrived and were verified
			case err == nil, errors.Is(err, client.ErrLiveUpload), errors.Is(err, client.ErrNotComplete):
				url = u
			default:
				return err
			}
		}
		off, err := p.c.Offset(ctx, url)
		if err == nil {
			m.reach(off) // what the daemon holds, perhaps from an earlier run
		}
		if err == nil && off > lastOffset {
			if lastOffset >= 0 {
				progress()
			}
			lastOffset = off
		}
		if errors.Is(err, client.ErrUploadGone) {
			url = ""
			return &client.HTTPError{Status: http.StatusServiceUnavailable, Body: api.Error{Error: "upload vanished; creating it again"}}
		}
		if err != nil || off == size {
			return err
		}
		body, err := f.from(ctx, off, size)
		if err != nil {
			return err
		}
		err = p.c.Patch(ctx, url, off, m.count(body, off*planned/max(size, 1), planned, size), size-off)
		if errors.Is(err, client.ErrUploadGone) {
			url = ""
			return &client.HTTPError{Status: http.StatusServiceUnavailable, Body: api.Error{Error: "upload vanished; creating it again"}}
		}
		return err
	})
	var he *client.HTTPError
	if errors.As(err, &he) && he.Status == http.StatusUnprocessableEntity {
		return permanent("the daemon refused local object %s as corrupt (%s): run 'ostree fsck' on %s", n, he.Body.Error, p.opts.Repo)
	}
	if errors.Is(err, client.ErrSessionNotOpen) {
		return err
	}
	if err != nil {
		return fmt.Errorf("upload %s: %w", n, err)
	}
	p.mu.Lock()
	p.res.Uploads++
	p.mu.Unlock()
	m.reach(size)
	p.countSent(1, size)
	return nil
}

// objectSource gives the archive form of one local object from any offset:
// from its file, or for a converted object by making the form again and
// skipping to the offset (the form is the same at every read).
type objectSource struct {
	p    *pusher
	n    object.Name
	file fileObject    // an object read from its file
	open io.ReadCloser // the current stream of a converted object
}

// fileObject is what store.Repo.OpenObject opens for an object it does
// not convert: its file.
type fileObject interface {
	io.ReaderAt
	io.Closer
}

func (p *pusher) openObject(ctx context.Context, n object.Name) (*objectSource, error) {
	src := &objectSource{p: p, n: n}
	if !p.repo.Converts(n) {
		f, err := p.repo.OpenObject(ctx, n)
		if err != nil {
			return nil, &PermanentError{Err: fmt.Errorf("local object %s: %w", n, err)}
		}
		src.file = f.(fileObject)
	}
	return src, nil
}

// from returns the bytes from off to size.
func (s *objectSource) from(ctx context.Context, off, size int64) (io.Reader, error) {
	if s.file != nil {
		return io.NewSectionReader(s.file, off, size-off), nil
	}
	if s.open != nil {
		s.open.Close()
	}
	rc, err := s.p.repo.OpenObject(ctx, s.n)
	if err != nil {
		return nil, &PermanentError{Err: fmt.Errorf("local object %s: %w", s.n, err)}
	}
	s.open = rc
	if _, err := io.CopyN(io.Discard, rc, off); err != nil {
		return nil, &PermanentError{Err: fmt.Errorf("local object %s: %w", s.n, err)}
	}
	return io.LimitReader(rc, size-off), nil
}

func (s *objectSource) Close() error {
	if s.open != nil {
		s.open.Close()
	}
	if s.file != nil {
		return s.file.Close()
	}
	return nil
}

// dryRun asks the daemon to judge each ref update as it would judge the
// push (the session and, unless NoPublish, the publish), sending the
// commits it reads but none of their objects, and reports a verdict per
// ref. A ref the daemon would refuse makes the dry run fail as the push
// would: a permanent error.
func (p *pusher) dryRun(ctx context.Context, updates []api.RefUpdate) error {
	req := api.CheckRequest{Refs: updates, Force: p.opts.Force, Publish: !p.opts.NoPublish}
	var cut map[string]int
	var err error
	if req.Publish {
		if req.Commits, cut, err = p.checkCommits(ctx, updates); err != nil {
			return err
		}
	}
	var res api.CheckResult
	err = p.c.Retry(ctx, p.opts.RetryTimeout, func() error {
		var err error
		res, err = p.c.Check(ctx, req)
		return err
	})
	var he *client.HTTPError
	switch {
	case errors.As(err, &he) && he.Status == http.StatusNotFound && he.Body.Code == "":
		// A daemon from before checks: it judges the session only.
		return p.sessionDryRun(ctx, updates)
	case errors.As(err, &he) && !client.Retryable(err) && he.Status != http.StatusUnauthorized:
		// The whole push is refused (a token without the upload scope,
		// too many refs…): so is each ref.
		res.Refs = make([]api.RefCheck, len(updates))
		for i, u := range updates {
			res.Refs[i] = api.RefCheck{Name: u.Name, Refusal: &he.Body}
		}
	case err != nil:
		return err
	}
	if len(res.Refs) != len(updates) {
		return fmt.Errorf("daemon judged %d refs of %d", len(res.Refs), len(updates))
	}
	verdicts := map[string]*api.Error{}
	for _, v := range res.Refs {
		verdicts[v.Name] = v.Refusal
	}
	var refused, same, moving []string
	for i := range p.res.Refs {
		r := &p.res.Refs[i]
		if r.Status != "" {
			continue
		}
		e := verdicts[r.Ref]
		switch {
		case e == nil && p.opts.NoPublish:
			r.Status = "would upload"
		case e == nil:
			r.Status = "would update"
		case e.Code == api.CodeSameContent:
			r.Status = "up to date (same content)"
			same = append(same, r.Ref)
			continue
		case len(e.Missing) > 0:
			// The daemon lacks the new commit: this repository could not
			// send it within the check's limits.
			r.Status = "would update"
			r.Reason = "not judged: its commit is larger than a dry run carries"
		default:
			r.Status, r.Reason = "refused", e.Error
			if n, ok := cut[r.Ref]; ok && e.Code == api.CodeNotNewer {
				r.Reason += fmt.Sprintf(" (judged from %d commits of its history: a dry run carries at most %d bytes of commits; the push sends more)", n, api.MaxCheckBytes)
			}
			refused = append(refused, r.Ref)
			continue
		}
		moving = append(moving, r.Ref)
	}
	if err := p.planned(ctx, updates); err != nil {
		return err
	}
	switch {
	case len(refused) > 0:
		return permanent("the daemon would refuse %s: nothing was sent or changed", strings.Join(refused, ", "))
	case len(same) > 0 && len(moving) > 0:
		return permanent("%s: up to date (same content), so the push would publish nothing; push %s without it (or with --force to publish the rebuild anyway)",
			strings.Join(same, ", "), strings.Join(moving, ","))
	}
	return nil
}

// checkCommits are the commits a check needs from this repository: each
// update's new commit with its detached metadata, then, for a ref the
// daemon has (unless forced), the parents down to the daemon's commit, as
// the push sends them (the update rule may ask whether the new commit
// descends from it), as many as the check's limits allow. cut maps the
// refs whose parents did not all fit to how many commits of their history
// went.
func (p *pusher) checkCommits(ctx context.Context, updates []api.RefUpdate) (out []api.CommitData, cut map[string]int, err error) {
	seen := map[object.Checksum]bool{}
	size := 0
	add := func(sum object.Checksum, meta bool) (bool, error) {
		if seen[sum] {
			return true, nil
		}
		d := api.CommitData{}
		var err error
		if d.Commit, err = p.repo.CommitObject(ctx, sum); err != nil {
			return false, err
		}
		if meta {
			if d.CommitMeta, err = p.repo.CommitMeta(ctx, sum); err != nil {
				return false, err
			}
		}
		if n := len(d.Commit) + len(d.CommitMeta); size+n > api.MaxCheckBytes || len(out) == api.MaxCheckCommits {
			return false, nil
		} else {
			size += n
		}
		seen[sum] = true
		out = append(out, d)
		return true, nil
	}
	for _, u := range updates {
		sum, _ := object.ParseChecksum(u.New)
		if _, err := add(sum, true); err != nil {
			return nil, nil, &PermanentError{Err: fmt.Errorf("read %s from %s: %w", u.Name, p.opts.Repo, err)}
		}
	}
	cut = map[string]int{}
	for _, u := range updates {
		if u.Old == "" || p.opts.Force {
			continue
		}
		cur, _ := object.ParseChecksum(u.New)
		for i := 0; i < 10000; i++ { // as plan
			c, err := p.repo.ReadCommit(ctx, cur)
			if err != nil || c.Parent == nil || c.Parent.String() == u.Old {
				break
			}
			cur = *c.Parent
			if fits, err := add(cur, false); err != nil {
				break // this repository ends here: so does what a push sends
			} else if !fits {
				cut[u.Name] = i + 1
				break
			}
		}
	}
	return out, cut, nil
}

// sessionDryRun is the dry run of a daemon without checks: it judges the
// session (ref names, the token's refs, the refs' state) and nothing of
// the publish.
func (p *pusher) sessionDryRun(ctx context.Context, updates []api.RefUpdate) error {
	if err := p.c.Retry(ctx, p.opts.RetryTimeout, func() error {
		_, err := p.c.CreateSession(ctx, api.SessionRequest{Refs: updates, Force: p.opts.Force, DryRun: true})
		return err
	}); err != nil {
		return err
	}
	for i := range p.res.Refs {
		if r := &p.res.Refs[i]; r.Status == "" {
			r.Status = "would update"
			r.Reason = "not judged: the daemon is too old to judge a publish"
		}
	}
	return p.planned(ctx, updates)
}

// planned counts the objects and bytes a push of updates would offer.
func (p *pusher) planned(ctx context.Context, updates []api.RefUpdate) error {
	names, _, err := p.plan(ctx, updates, true)
	if err != nil {
		return err
	}
	p.res.Objects = len(names)
	for _, n := range names {
		s, err := p.size(n)
		if err != nil {
			return err
		}
		p.res.BytesPlanned += s
	}
	return nil
}

// parents calls add for the commits between newc and the daemon's commit
// u.Old (both left out), so that the daemon can see the fast-forward: none
// when forcing, at most 10,000, and as far as the build repository holds
// them.
func (p *pusher) parents(ctx context.Context, u api.RefUpdate, newc object.Checksum, add func(object.Name) error) error {
	cur := newc
	for i := 0; i < 10000 && u.Old != "" && !p.opts.Force; i++ {
		c, err := p.repo.ReadCommit(ctx, cur)
		if err != nil || c.Parent == nil || c.Parent.String() == u.Old {
			return nil
		}
		cur = *c.Parent
		if err := add(object.Name{Sum: cur, Type: object.Commit}); err != nil {
			return err
		}
	}
	return nil
}
