// Package api holds the wire types and protocol constants shared by the
// receive daemon and the push client.
package api

import (
	"strings"
	"time"
)

// ProtocolVersion is bumped on incompatible changes; clients refuse a daemon
// with another version.
const ProtocolVersion = 1

// Paths.
const (
	PathInfo     = "/api/v1/info"
	PathSessions = "/api/v1/sessions"
	PathUploads  = "/api/v1/uploads"
	PathAdmin    = "/api/v1/admin" // needs a token with the admin scope
	PathPromote  = "/api/v1/promote"
	PathCheck    = "/api/v1/check" // judge a push without making it (push --dry-run)
)

// Token scopes.
const (
	ScopeUpload  = "upload"  // create sessions, upload, read and abort its own sessions
	ScopePublish = "publish" // commit its own sessions, and upload-only tokens' sessions of refs it may push
	ScopeAdmin   = "admin"   // the admin API
)

// RepoPath is an API path p (one of the Path constants, or a path under
// them) in the repository named name: "/name" + p, or p for the repository
// of a one-repository daemon (name ""). A client whose address already
// names the repository (https://host/beta) uses p alone.
func RepoPath(name, p string) string {
	if name == "" {
		return p
	}
	return "/" + name + p
}

// PacksPath is where a session's packs are posted: a tar of objects named as
// in an archive repository (objects/ab/cdef….filez).
func PacksPath(sessionID string) string { return PathSessions + "/" + sessionID + "/packs" }

// Upload-Metadata keys of tus uploads.
const (
	MetaSession = "session" // the session ID
	MetaObject  = "object"  // "<checksum>.<type>", e.g. "ab…12.filez"
)

// MaxNamesPerRequest is how many object names one objects request may carry.
const MaxNamesPerRequest = 10000

// Info answers GET /api/v1/info.
type Info struct {
	Protocol int               `json:"protocol"`
	Version  string            `json:"version"`
	Mode     string            `json:"mode"` // always "archive"
	Refs     map[string]string `json:"refs"` // ref name -> commit checksum
	Limits   Limits            `json:"limits"`
	Token    *Token            `json:"token,omitempty"` // the caller's token
	// Repository is the name of the repository answering ("" for the
	// repository of a one-repository daemon).
	Repository string `json:"repository,omitempty"`
	// Repositories lists the repositories the token may act on, by name:
	// each is reached at the daemon's address followed by "/" + its name.
	// A daemon of several repositories answers its unprefixed
	// /api/v1/info with this list and no refs.
	Repositories []string `json:"repositories,omitempty"`
	// DryRun says the repository judges every push of the caller as a dry
	// run and changes nothing (the dry_run of a push over ssh); Force that
	// it lets the caller's refs move anywhere (force).
	DryRun bool `json:"dry_run,omitempty"`
	Force  bool `json:"force,omitempty"`
}

// Token describes an API token: never its secret, nor the whole hash.
type Token struct {
	Name    string     `json:"name"`            // its name, or "token-" + ID when unnamed
	ID      string     `json:"id"`              // the first 12 hex digits of the secret's SHA-256
	Scopes  []string   `json:"scopes"`          // ScopeUpload, ScopePublish, ScopeAdmin
	Repos   []string   `json:"repos,omitempty"` // repository globs it may act on; empty = all
	Refs    []string   `json:"refs,omitempty"`  // ref globs it may push; empty = all
	Expires *time.Time `json:"expires,omitempty"`
	// Admin listings only.
	Configured   bool       `json:"configured"`           // in the daemon's configuration file
	Revoked      *time.Time `json:"revoked,omitempty"`    // when it was revoked
	RevokedBy    string     `json:"revoked_by,omitempty"` // by which token ("local": by a command on the server)
	OpenSessions int        `json:"open_sessions"`
	LastActivity *time.Time `json:"last_activity,omitempty"` // of its latest session
}

// TokenRequest is the body of POST /api/v1/admin/tokens: a new token for a
// CI job, within the scope of the admin token that asks. Absent fields
// take the asking token's repositories and refs, the scopes upload and
// publish, and an hour.
type TokenRequest struct {
	Name      string   `json:"name,omitempty"`       // default "ci-" + its ID
	Repos     []string `json:"repos,omitempty"`      // repository names or globs
	Refs      []string `json:"refs,omitempty"`       // ref globs
	Scopes    []string `json:"scopes,omitempty"`     // upload and publish only
	ExpiresIn int64    `json:"expires_in,omitempty"` // seconds, at most MaxMintedLifetime
}

// MaxMintedLifetime bounds the lifetime of a token minted over the API, in
// seconds (7 days); DefaultMintedLifetime is its lifetime when the request
// names none (an hour).
const (
	MaxMintedLifetime     = 7 * 24 * 3600
	DefaultMintedLifetime = 3600
)

// MintedToken answers a TokenRequest: the token, and its secret, shown
// this once.
type MintedToken struct {
	Token
	Secret string `json:"secret"`
}

// AdminSession is a session as the admin API shows it: with its token.
type AdminSession struct {
	Session
	Token   string `json:"token"`    // the owner's name
	TokenID string `json:"token_id"` // the owner's ID
}

// MaxPruneDepth bounds the depth a prune is given.
const MaxPruneDepth = 100000

// PruneRequest is the body of POST /api/v1/admin/prune: remove the history
// of the repository beyond Depth parents below each ref's commit.
type PruneRequest struct {
	Depth  *int `json:"depth,omitempty"`   // -1 (keep every ancestor) to MaxPruneDepth; default the repository's prune_depth
	DryRun bool `json:"dry_run,omitempty"` // count only
}

// PruneResult is the answer to a prune.
type PruneResult struct {
	Depth   int    `json:"depth"`
	DryRun  bool   `json:"dry_run"`
	Objects int    `json:"objects"` // objects in the repository before
	Pruned  int    `json:"pruned"`  // removed (in a dry run: that would be)
	Bytes   uint64 `json:"bytes"`   // their size
	// Kept counts the objects beyond the depth that sessions not yet
	// published count on, kept for them.
	Kept int `json:"kept"`
}

// Limits are the daemon's configured limits.
type Limits struct {
	MaxObjectsPerSession int   `json:"max_objects_per_session"`
	MaxObjectSize        int64 `json:"max_object_size"`
	MaxNamesPerRequest   int   `json:"max_names_per_request"`
	MaxPackSize          int64 `json:"max_pack_size"`
}

// RefUpdate asks to move ref Name from Old ("" for a new ref) to New.
type RefUpdate struct {
	Name string `json:"name"`
	Old  string `json:"old,omitempty"`
	New  string `json:"new"`
}

// SessionRequest is the body of POST /api/v1/sessions: it creates a session,
// or resumes the open one with the same token and ref updates.
type SessionRequest struct {
	Refs   []RefUpdate `json:"refs"`
	Force  bool        `json:"force,omitempty"`   // allow non-fast-forward updates
	DryRun bool        `json:"dry_run,omitempty"` // check only; create nothing
	// Objects are names to negotiate with the session's creation, as a
	// first POST …/objects would (at most MaxNamesPerRequest): the answer's
	// Needed lists those the daemon lacks, saving a round trip.
	Objects []string `json:"objects,omitempty"`
}

// CheckRequest is the body of POST /api/v1/check: it asks how the daemon
// would answer a push of Refs, judging each ref on its own with the checks
// of a session's creation and, with Publish, of its commit. Nothing is
// created, uploaded or changed.
type CheckRequest struct {
	Refs  []RefUpdate `json:"refs"`
	Force bool        `json:"force,omitempty"` // as in SessionRequest
	// Publish says the push would commit its session: the check then
	// also judges the publish (the publish scope, the update rule,
	// bindings, required signatures).
	Publish bool `json:"publish,omitempty"`
	// Commits are the client's commit objects the publish checks read
	// (each ref's new commit, and for an existing ref the parents down to
	// its commit), with their detached metadata: at most MaxCheckCommits,
	// MaxCheckBytes together.
	Commits []CommitData `json:"commits,omitempty"`
}

// CommitData is a commit object of the client's build repository, which
// the daemon may not hold yet, and its detached metadata as a push would
// send it.
type CommitData struct {
	Commit     []byte `json:"commit"`               // the commit object's bytes (base64 in JSON); their SHA-256 names it
	CommitMeta []byte `json:"commitmeta,omitempty"` // its .commitmeta, if it has one
}

// Limits of a CheckRequest: commit objects and detached metadata (before
// base64) together, and how many commits.
const (
	MaxCheckBytes   = 2 << 20
	MaxCheckCommits = 10000
)

// CheckResult answers a CheckRequest: a verdict for each ref, in the
// order asked.
type CheckResult struct {
	Refs []RefCheck `json:"refs"`
}

// RefCheck is the verdict on one ref update. Refusal is nil when the push
// would move the ref (or, without Publish, upload it); otherwise it is the
// answer the push would get, with its code (CodeSameContent: up to date).
type RefCheck struct {
	Name    string `json:"name"`
	Refusal *Error `json:"refusal,omitempty"`
}

// PromoteRequest is the body of POST /api/v1/promote in the destination
// repository: publish there a commit already published in a repository
// of the same daemon (or the same one), without sending its objects.
type PromoteRequest struct {
	From   string `json:"from,omitempty"`   // the source repository's name; "" = the destination itself
	Ref    string `json:"ref"`              // the source ref, whose commit is promoted
	Commit string `json:"commit,omitempty"` // the commit Ref must point at (refused if it moved); "" = whatever it points at
	To     string `json:"to,omitempty"`     // the destination ref; "" = Ref
	Force  bool   `json:"force,omitempty"`  // as a push's --force
	DryRun bool   `json:"dry_run,omitempty"`
}

// Session states.
const (
	StateOpen       = "open"
	StatePublishing = "publishing"
	StatePublished  = "published"
	StateAborted    = "aborted"
	StateExpired    = "expired"
	StateFailed     = "failed"
	StateDryRun     = "dry-run"
)

// Session describes a push session.
type Session struct {
	ID       string      `json:"id"`
	State    string      `json:"state"`
	Refs     []RefUpdate `json:"refs"`
	Force    bool        `json:"force,omitempty"`
	Created  time.Time   `json:"created"`
	Updated  time.Time   `json:"updated"`
	Objects  int         `json:"objects"`  // names registered by negotiation
	Verified int         `json:"verified"` // of those, verified
	Bytes    int64       `json:"bytes"`    // bytes of the verified ones
	Uploads  []Upload    `json:"uploads,omitempty"`
	Result   string      `json:"result,omitempty"`
	// Negotiated is how many names of the creating request's Objects the
	// daemon judged (all or none); Needed lists those it lacks.
	Negotiated int      `json:"negotiated,omitempty"`
	Needed     []string `json:"needed,omitempty"`
	// Unchanged names the refs a publish left where they were: their new
	// commit has the tree and metadata of the current one (a reproducible
	// rebuild), while the session's other refs moved.
	Unchanged []string `json:"unchanged,omitempty"`
}

// Upload is an upload of a session that is not verified yet.
type Upload struct {
	ID     string `json:"id"`
	URL    string `json:"url"` // path of the tus upload, relative to the daemon
	Object string `json:"object"`
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
	State  string `json:"state"` // "open" or "received" (complete, verdict pending)
}

// CommitRequest is the optional body of POST /api/v1/sessions/{id}/commit.
type CommitRequest struct {
	// Force confirms the force of another token's session: a staged
	// session created with force may move refs backwards, and its
	// publisher must say it agrees.
	Force bool `json:"force,omitempty"`
}

// ObjectsRequest is the body of POST /api/v1/sessions/{id}/objects.
type ObjectsRequest struct {
	Objects []string `json:"objects"`
	// NoWait answers at once. Without it, the daemon first lets the
	// session's packs in progress finish (a few seconds at most), so that
	// a client that lost a pack's connection, or a rerun of a killed one,
	// is not asked for objects the daemon is still reading. A client sets
	// it for names that none of its packs in flight holds: the later
	// batches of a push that negotiates while it uploads.
	NoWait bool `json:"no_wait,omitempty"`
}

// ObjectsResponse lists the objects of the request the daemon still needs.
type ObjectsResponse struct {
	Needed []string `json:"needed"`
}

// PackResult answers a pack that was read to its end.
type PackResult struct {
	Stored  int        `json:"stored"`          // objects verified and kept
	Bytes   int64      `json:"bytes"`           // their bytes
	Skipped int        `json:"skipped"`         // well-formed entries not needed
	Skips   []PackSkip `json:"skips,omitempty"` // the first of those, with the reason
}

// PackSkip is an entry of a pack that was not needed.
type PackSkip struct {
	Object string `json:"object"`
	Reason string `json:"reason"`
}

// Error codes that let clients act on a refusal without parsing its text.
const (
	CodeVerified       = "verified"         // the object is already verified in this session
	CodeSessionNotOpen = "session-not-open" // the session is publishing, published, aborted, expired or failed
	CodeLiveUpload     = "live-upload"      // the object has an upload in progress: resume Upload
	CodeNotSigned      = "not-signed"       // a new commit lacks a valid signature by a key the daemon trusts
	CodeScope          = "scope"            // the token lacks the scope the request needs (403)
	CodeForce          = "force"            // another token's session forces a ref: commit with force to agree (409)
	CodeBinding        = "binding"          // the commit is bound to other refs or another collection: clients would refuse it (409)
	CodeRefConflict    = "ref-conflict"     // a ref would be a directory of another ref, or the other way round (409)
	CodeMetaLimit      = "commitmeta-limit" // the merged detached metadata would exceed its limits (422)
	CodeTreeLimit      = "tree-limit"       // the commit's directories nest too deeply (422)
	CodeLimit          = "limit"            // a limit of the token (open sessions, objects) is reached (429 or 413)
	CodeSpace          = "space"            // the repository's filesystem is at its free-space floor (507)
	CodeMetaScope      = "commitmeta-scope" // detached metadata of a commit published under a ref the token may not push (403)
	CodeNoRepository   = "no-repository"    // no such repository, or not one the token may use (404)
	CodeNotNewer       = "not-newer"        // the new commit is not newer than the ref's (or, with require_ancestry, not a descendant): --force publishes it (409)
	CodeSameContent    = "same-content"     // the new commit has the ref's tree and metadata: up to date; --force publishes it (409)
	CodeCheckFailed    = "check-failed"     // the repository's check_hook refused the publish, or timed out; Output has its last lines (422)
)

// The bounds of Error.Output: the last lines of a check's output, at most
// this many, of at most this many bytes together.
const (
	MaxCheckOutputLines = 20
	MaxCheckOutputBytes = 4096
)

// Error is the body of every error response of the API.
type Error struct {
	Error   string   `json:"error"`
	Code    string   `json:"code,omitempty"`
	Ref     string   `json:"ref,omitempty"`     // the ref a 403 or 409 is about
	Object  string   `json:"object,omitempty"`  // the object a 4xx is about
	Upload  string   `json:"upload,omitempty"`  // URL of the live upload (409 on upload creation)
	Missing []string `json:"missing,omitempty"` // first missing objects (422 on commit)
	Stored  int      `json:"stored,omitempty"`  // objects of a refused pack kept before the refusal
	// Output is the end of the check's output (422 check-failed), one
	// line each, control characters replaced: at most MaxCheckOutputLines
	// lines of MaxCheckOutputBytes bytes together.
	Output []string `json:"output,omitempty"`
}

// GeneratedRef reports whether ref is one that flatpak build-update-repo
// makes from a repository's other refs (the appstream branches) or that
// collection-based repositories keep for their metadata: a production
// repository makes its own, so push leaves them out unless named, and they
// get no static deltas.
func GeneratedRef(ref string) bool {
	return strings.HasPrefix(ref, "appstream/") || strings.HasPrefix(ref, "appstream2/") || ref == "ostree-metadata"
}

// FlatpakRef reports whether ref is a Flatpak app's or runtime's: a
// repository holding one is updated as Flatpak clients need.
func FlatpakRef(ref string) bool {
	return strings.HasPrefix(ref, "app/") || strings.HasPrefix(ref, "runtime/")
}
