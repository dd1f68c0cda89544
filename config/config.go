// Package config reads the receive daemon's YAML configuration file
// (ostree-upload.yaml by default), which also holds the API tokens.
//
// The file stays compatible with the token file of lirios/ostree-upload:
//
//	tokens:
//	- token: 3q2+7w...==
//	  created: "2020-12-30T10:00:00Z"
//
// New tokens are stored as the SHA-256 of their secret only (see
// AppendToken); clear-text "token" entries are still accepted.
//
// It also reads ostree-push's ostree-receive.conf: the same publishing
// keys, root and repos (several repositories, see Repositories), YAML 1.1
// booleans (yes, no, on, off) and ostree-push's log levels. Find looks for
// either file when none is named.
//
// Loading is strict: unknown keys and bad values stop with an error that
// names the file, the line and the key. Error messages never contain
// secrets or their hashes.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ostree-upload/ostree-upload/auth"
	"gopkg.in/yaml.v3"
)

// DefaultFile is the configuration file's default name.
const DefaultFile = "ostree-upload.yaml"

// Defaults.
const (
	DefaultRepo                 = "repo"
	DefaultAddress              = ":8080"
	DefaultSessionTTL           = 24 * time.Hour
	DefaultMaxObjectsPerSession = 2000000
	DefaultMaxObjectSize        = 16 * GiB
	DefaultMaxPackSize          = 256 * MiB
	DefaultMaxSessionsPerToken  = 32
	DefaultMaxObjectsPerToken   = 4000000
	DefaultMaxConnections       = 4096
	DefaultMaxClientConnections = 256
	DefaultBodyTimeout          = time.Minute
	DefaultDrainTimeout         = 10 * time.Second
	DefaultCheckTimeout         = 10 * time.Minute
)

// Config is the daemon's configuration.
//
// The yaml tag of a field is its key. A field tagged scope:"daemon" is a
// daemon-wide key; every other key may also be set for one repository in a
// repos entry (see Overrides).
type Config struct {
	Repo                 string   `yaml:"repo,omitempty" scope:"daemon"`             // production repository of a file without root; default "repo"
	Address              string   `yaml:"address" scope:"daemon"`                    // listen address; default ":8080"
	StateDir             string   `yaml:"state_dir,omitempty"`                       // default "" (the daemon derives it)
	SessionTTL           Duration `yaml:"session_ttl"`                               // default 24h
	SessionRetention     Duration `yaml:"session_retention,omitempty"`               // ended sessions are forgotten after it; default max(7 days, 7 TTLs)
	BodyTimeout          Duration `yaml:"body_timeout" scope:"daemon"`               // a request body that sends nothing this long is dropped; default 1m
	DrainTimeout         Duration `yaml:"drain_timeout" scope:"daemon"`              // at SIGTERM, how long pack entries and upload bytes in flight may take to land; default 10s
	MaxObjectsPerSession int      `yaml:"max_objects_per_session"`                   // default 2000000
	MaxObjectSize        Size     `yaml:"max_object_size"`                           // default 16 GiB
	MaxPackSize          Size     `yaml:"max_pack_size"`                             // default 256 MiB
	MaxSessionsPerToken  int      `yaml:"max_sessions_per_token"`                    // open sessions of one token; default 32
	MaxObjectsPerToken   int      `yaml:"max_objects_per_token"`                     // objects in one token's open sessions; default 4000000
	MaxConnections       int      `yaml:"max_connections" scope:"daemon"`            // connections at once; default 4096
	MaxClientConnections int      `yaml:"max_connections_per_client" scope:"daemon"` // connections of one client address; default 256
	// Signing, with ostree-push's receiver's names.
	GPGSign            []string `yaml:"gpg_sign,omitempty"`            // key ids: every new commit and the summary are signed with each
	GPGHomedir         string   `yaml:"gpg_homedir,omitempty"`         // GnuPG home of those keys; default GnuPG's
	GPGVerify          bool     `yaml:"gpg_verify"`                    // refuse commits without a valid GPG signature by a trusted key
	GPGTrustedKeys     string   `yaml:"gpg_trustedkeys,omitempty"`     // keyring trusted beside libostree's system-wide ones; Repositories fills in ostree-push's default
	SignType           string   `yaml:"sign_type,omitempty"`           // "ed25519" (the only type); default "ed25519"
	SignKeyfiles       []string `yaml:"sign_keyfiles,omitempty"`       // secret key files: every new commit and the summary are signed with each key
	SignVerify         bool     `yaml:"sign_verify"`                   // refuse commits without a valid signature by a trusted key
	SignTrustedKeyfile string   `yaml:"sign_trustedkeyfile,omitempty"` // public keys sign_verify trusts; Repositories fills in ostree-push's default
	Update             bool     `yaml:"update"`                        // regenerate the summary after a publish; default true
	RequireAncestry    bool     `yaml:"require_ancestry"`              // a ref moves only to a descendant of its commit (else: to any newer commit); default false
	PruneDepth         *int     `yaml:"prune_depth,omitempty"`         // parents `ostree-upload prune` keeps below each ref's commit (-1: all); default none (prune needs --depth)
	UpdateHook         Command  `yaml:"update_hook,omitempty"`         // run instead of the built-in update
	// ostree-push's receiver's options: they act on every push over ssh
	// (a push over HTTP asks for them itself: push --force, --dry-run).
	Force  bool `yaml:"force"`   // ssh pushes may move refs backwards or to unrelated commits
	DryRun bool `yaml:"dry_run"` // ssh pushes are judged, and nothing is received or changed
	// Static deltas, generated after a publish (see deltas.go).
	StaticDeltas           bool     `yaml:"static_deltas"`             // generate static deltas to the refs' new commits; default false
	StaticDeltaDepth       int      `yaml:"static_delta_depth"`        // earlier commits of a ref that get a delta to its head; default 2
	StaticDeltaFromEmpty   bool     `yaml:"static_delta_from_empty"`   // also a delta from nothing to each head; default false
	StaticDeltaTimeLimit   Duration `yaml:"static_delta_time_limit"`   // one generation is killed after it; default 1h
	StaticDeltaMemoryLimit Size     `yaml:"static_delta_memory_limit"` // address space of one generation; default 4GiB
	StaticDeltaGrace       Duration `yaml:"static_delta_grace"`        // an unwanted delta is deleted this long after it became so; default 24h
	// The check before a publish.
	CheckHook    Command  `yaml:"check_hook,omitempty"` // run before any ref moves; a failure refuses the publish
	CheckTimeout Duration `yaml:"check_timeout"`        // check_hook is killed and the publish refused after it; default 10m
	// TrustedProxies are the addresses (IPs or CIDRs) whose X-Forwarded-*
	// and Forwarded headers are believed; from anyone else they are dropped.
	TrustedProxies []netip.Prefix `yaml:"trusted_proxies,omitempty" scope:"daemon"`
	Tokens         []Token        `yaml:"tokens,omitempty" scope:"daemon"`
	// Accounts are the unix accounts that may push over ssh, with what
	// each may do; none means the daemon's own account, with the default
	// scopes on every repository and ref.
	Accounts []Account  `yaml:"accounts,omitempty" scope:"daemon"`
	LogLevel slog.Level `yaml:"log_level" scope:"daemon"` // the daemon's log level; default Info
	// Root is the directory the repositories' names are relative to; ""
	// for none (a file with the one repository Repo).
	Root string `yaml:"root,omitempty" scope:"daemon"`
	// Repos are the repos entries, keyed by the repository's path as
	// written (relative to Root, or absolute under it).
	Repos map[string]Overrides `yaml:"repos,omitempty" scope:"daemon"`
}

// Account is one entry of accounts: a unix account that may push over ssh.
type Account struct {
	User   string   `yaml:"user"`
	Repos  []string `yaml:"repos,omitempty"`  // repository globs; empty = all
	Refs   []string `yaml:"refs,omitempty"`   // ref globs; empty = all refs
	Scopes []string `yaml:"scopes,omitempty"` // nil = upload and publish
}

// Token is one API token entry of the configuration file. Exactly one of
// Token and SHA256 is set.
type Token struct {
	Token    string     `yaml:"token,omitempty"`     // clear-text secret (lirios/ostree-upload format); accepted, never written by us
	SHA256   string     `yaml:"sha256,omitempty"`    // hex SHA-256 of the secret
	Name     string     `yaml:"name,omitempty"`      // for logs and revocation; unique when set
	Repos    []string   `yaml:"repos,omitempty"`     // globs of the repositories (names on the wire) it may act on; empty = all
	Refs     []string   `yaml:"refs,omitempty"`      // ref globs the token may push; empty = all refs
	Scopes   []string   `yaml:"scopes,omitempty"`    // what the token may do; nil = DefaultScopes
	Expires  *time.Time `yaml:"expires,omitempty"`   // nil = never
	MintedBy string     `yaml:"minted_by,omitempty"` // hex SHA-256 of the admin token that minted it over the API; refused wherever that token is revoked
	Created  string     `yaml:"created,omitempty"`   // kept as text (lirios wrote RFC3339)
}

// Keyring is the keyring of the tokens and accounts of the file.
func (c *Config) Keyring() *auth.Keyring { return NewKeyring(c.Tokens, c.Accounts) }

// NewKeyring is the keyring of token entries and accounts entries. Without
// accounts entries, the account the program runs as may push over ssh with
// the default scopes, as ostree-push lets whoever can log in push.
func NewKeyring(tokens []Token, accounts []Account) *auth.Keyring {
	toks := make([]auth.Token, len(tokens))
	for i, t := range tokens {
		toks[i] = auth.Token{SHA256: t.secretHash(), Name: t.Name, Repos: t.Repos, Refs: t.Refs, Scopes: t.Scopes, Expires: t.Expires, MintedBy: t.MintedBy}
	}
	var accs []auth.Account
	for _, a := range accounts {
		accs = append(accs, auth.Account{User: a.User, Repos: a.Repos, Refs: a.Refs, Scopes: a.Scopes})
	}
	if len(accounts) == 0 {
		if me, err := CurrentUser(); err == nil {
			accs = append(accs, auth.Account{User: me})
		}
	}
	return auth.NewKeyring(toks, accs...)
}

// CurrentUser is the login name of the account the program runs as.
func CurrentUser() (string, error) {
	u, err := user.Current()
	if err != nil {
		return "", fmt.Errorf("who am I: %w", err)
	}
	return u.Username, nil
}

// secretHash is the hex SHA-256 of the token's secret.
func (t *Token) secretHash() string {
	if t.Token != "" {
		return auth.Hash(t.Token)
	}
	return t.SHA256
}

// Retention is how long ended sessions are kept: session_retention, or
// max(7 days, 7 TTLs) when it is not set.
func (c *Config) Retention() time.Duration {
	if c.SessionRetention.Duration > 0 {
		return c.SessionRetention.Duration
	}
	return max(7*24*time.Hour, 7*c.SessionTTL.Duration)
}

// Default returns the configuration used for absent keys.
func Default() *Config {
	return &Config{
		Repo:                 DefaultRepo,
		Address:              DefaultAddress,
		SessionTTL:           Duration{DefaultSessionTTL},
		MaxObjectsPerSession: DefaultMaxObjectsPerSession,
		MaxObjectSize:        DefaultMaxObjectSize,
		MaxPackSize:          DefaultMaxPackSize,
		MaxSessionsPerToken:  DefaultMaxSessionsPerToken,
		MaxObjectsPerToken:   DefaultMaxObjectsPerToken,
		MaxConnections:       DefaultMaxConnections,
		MaxClientConnections: DefaultMaxClientConnections,
		BodyTimeout:          Duration{DefaultBodyTimeout},
		DrainTimeout:         Duration{DefaultDrainTimeout},
		SignType:             "ed25519",
		Update:               true,

		StaticDeltaDepth:       DefaultStaticDeltaDepth,
		StaticDeltaTimeLimit:   Duration{DefaultStaticDeltaTimeLimit},
		StaticDeltaMemoryLimit: DefaultStaticDeltaMemoryLimit,
		StaticDeltaGrace:       Duration{DefaultStaticDeltaGrace},
		CheckTimeout:           Duration{DefaultCheckTimeout},
	}
}

// MaxPruneDepth bounds prune_depth (as api.MaxPruneDepth bounds a prune's).
const MaxPruneDepth = 100000

// Error is a problem found in a configuration file.
type Error struct {
	File string // as given to Load
	Line int    // 1-based; 0 when unknown
	Key  string // e.g. "session_ttl" or "tokens[2].sha256"; may be empty
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads and validates the configuration file at path. A missing file
// gives an error wrapping fs.ErrNotExist; an empty file is a valid
// configuration with no tokens. Absent keys get their defaults.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, _, err := parse(data, path)
	return cfg, err
}

// Validate checks a configuration built or changed in code; Load already
// does the same with line numbers.
func (c *Config) Validate() error {
	switch {
	case c.Repo == "" && c.Root == "":
		return errors.New("repo must not be empty")
	case c.Address == "":
		return errors.New("address must not be empty")
	case c.SessionTTL.Duration <= 0:
		return errors.New("session_ttl must be positive")
	case c.SessionRetention.Duration < 0:
		return errors.New("session_retention must not be negative")
	case c.BodyTimeout.Duration <= 0:
		return errors.New("body_timeout must be positive")
	case c.DrainTimeout.Duration <= 0:
		return errors.New("drain_timeout must be positive")
	case c.CheckTimeout.Duration <= 0:
		return errors.New("check_timeout must be positive")
	case c.MaxObjectsPerSession <= 0:
		return errors.New("max_objects_per_session must be positive")
	case c.MaxObjectSize <= 0:
		return errors.New("max_object_size must be positive")
	case c.MaxPackSize <= 0:
		return errors.New("max_pack_size must be positive")
	case c.MaxSessionsPerToken <= 0:
		return errors.New("max_sessions_per_token must be positive")
	case c.MaxObjectsPerToken <= 0:
		return errors.New("max_objects_per_token must be positive")
	case c.MaxConnections <= 0:
		return errors.New("max_connections must be positive")
	case c.MaxClientConnections <= 0:
		return errors.New("max_connections_per_client must be positive")
	case c.SignType != "" && c.SignType != "ed25519":
		return fmt.Errorf("sign_type %q: only ed25519 is supported", c.SignType)
	case c.Root == "" && len(c.Repos) > 0:
		return errors.New("repos needs root, the directory the repositories' names are relative to")
	case c.Root != "" && c.Repo != DefaultRepo && c.Repo != "":
		return fmt.Errorf("repo %s and root %s: root serves the repositories under it, repo the one repository of a file without root; use one or the other", c.Repo, c.Root)
	}
	if err := c.validateStaticDeltas(); err != nil {
		return err
	}
	// sign_verify without sign_trustedkeyfile is checked by Repositories,
	// once ostree-push's default keyfiles are looked for.
	if c.Root != "" {
		if _, err := c.listed(); err != nil {
			return err
		}
	}
	names := map[string]int{}
	secrets := map[string]int{}
	for i, t := range c.Tokens {
		if field, msg := checkToken(&t); msg != "" {
			return fmt.Errorf("tokens[%d]%s: %s", i, field, msg)
		}
		if j, dup := secrets[t.secretHash()]; dup {
			return fmt.Errorf("tokens[%d]: has the same secret as tokens[%d]", i, j)
		}
		secrets[t.secretHash()] = i
		if t.Name != "" {
			if j, dup := names[t.Name]; dup {
				return fmt.Errorf("tokens[%d].name: %q is already used by tokens[%d]", i, t.Name, j)
			}
			names[t.Name] = i
		}
	}
	return nil
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// checkToken validates one entry; field is "" or ".key".
func checkToken(t *Token) (field, msg string) {
	switch {
	case t.Token != "" && t.SHA256 != "":
		return "", "has both token and sha256; keep only one"
	case t.Token == "" && t.SHA256 == "":
		return "", "needs a token or a sha256 key"
	case t.SHA256 != "" && !sha256Hex.MatchString(t.SHA256):
		return ".sha256", "must be 64 lower-case hexadecimal digits"
	case t.MintedBy != "" && !sha256Hex.MatchString(t.MintedBy):
		return ".minted_by", "must be 64 lower-case hexadecimal digits"
	}
	if err := auth.CheckName(t.Name); err != nil {
		return ".name", err.Error()
	}
	for i, g := range t.Repos {
		if err := checkRepoGlob(g); err != nil {
			return fmt.Sprintf(".repos[%d]", i), err.Error()
		}
	}
	for i, g := range t.Refs {
		if err := auth.CheckGlob(g); err != nil {
			return fmt.Sprintf(".refs[%d]", i), err.Error()
		}
	}
	if err := auth.CheckScopes(t.Scopes); err != nil {
		return ".scopes", err.Error()
	}
	return "", ""
}

// checkRepoGlob checks a glob of repository names: the syntax of ref
// globs.
func checkRepoGlob(g string) error {
	if err := auth.CheckGlob(g); err != nil {
		return errors.New(strings.Replace(err.Error(), "ref glob", "repository glob", 1))
	}
	return nil
}

// parse decodes and validates data; root is the top-level mapping, or nil
// when the document is empty.
func parse(data []byte, file string) (*Config, *yaml.Node, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return cfg, nil, nil
		}
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", file, err)
		}
		return nil, nil, &Error{File: file, Line: extra.Line, Msg: "only one YAML document is allowed"}
	}
	p := &parser{file: file}
	if len(doc.Content) == 0 {
		return cfg, nil, nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.AliasNode || root.Anchor != "" {
		return nil, nil, p.errorf(root, "", "anchors and aliases are not supported at the top level")
	}
	if isNull(root) {
		return cfg, nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, nil, p.errorf(root, "", "the top level must be a mapping of keys to values")
	}
	if err := p.config(root, cfg); err != nil {
		return nil, nil, err
	}
	if err := p.checkRepos(root, cfg); err != nil {
		return nil, nil, err
	}
	return cfg, root, nil
}

type parser struct {
	file   string
	prefix string // the key of the mapping being parsed, e.g. "repos.beta"; "" at the top level
}

func (p *parser) errorf(n *yaml.Node, key, format string, args ...any) error {
	return &Error{File: p.file, Line: n.Line, Key: p.key(key), Msg: fmt.Sprintf(format, args...)}
}

// key is key inside the mapping being parsed, e.g. "repos.beta.update".
func (p *parser) key(key string) string {
	switch {
	case p.prefix == "":
		return key
	case key == "":
		return p.prefix
	}
	return p.prefix + "." + key
}

// pairs walks a mapping, rejecting odd keys and duplicates; fn gets the
// key's text, the key node and the (alias-resolved) value node.
func (p *parser) pairs(m *yaml.Node, prefix string, fn func(key string, k, v *yaml.Node) error) error {
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			return p.errorf(k, prefix, "keys must be plain names")
		}
		if first, dup := seen[k.Value]; dup {
			return p.errorf(k, prefix+showKey(k.Value), "duplicate key (first on line %d)", first)
		}
		seen[k.Value] = k.Line
		for v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if err := fn(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

// showKey returns an unknown key for a message, unless it might be
// something pasted by mistake (such as a secret).
func showKey(k string) string {
	ok := len(k) > 0 && len(k) <= 32
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			ok = false
		}
	}
	if !ok {
		return "(key not shown)"
	}
	return k
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// str returns a scalar's text; null gives ok=false.
func (p *parser) str(n *yaml.Node, key string) (s string, ok bool, err error) {
	if isNull(n) {
		return "", false, nil
	}
	if n.Kind != yaml.ScalarNode {
		return "", false, p.errorf(n, key, "must be a single value, not a %s", kindName(n))
	}
	return n.Value, true, nil
}

// yaml11Bools are YAML 1.1's booleans, which ostree-push's files use.
var yaml11Bools = map[string]bool{
	"y": true, "Y": true, "yes": true, "Yes": true, "YES": true,
	"n": false, "N": false, "no": false, "No": false, "NO": false,
	"true": true, "True": true, "TRUE": true,
	"false": false, "False": false, "FALSE": false,
	"on": true, "On": true, "ON": true,
	"off": false, "Off": false, "OFF": false,
}

// boolean sets *b from a true or false (or a YAML 1.1 yes, no, on, off,
// y, n, unquoted); null leaves it alone.
func (p *parser) boolean(n *yaml.Node, key string, b *bool) error {
	if isNull(n) {
		return nil
	}
	plain := n.Style&(yaml.TaggedStyle|yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0
	v, ok := yaml11Bools[n.Value]
	if n.Kind != yaml.ScalarNode || !ok || !plain && n.ShortTag() != "!!bool" {
		return p.errorf(n, key, "must be true or false (or yes/no)")
	}
	*b = v
	return nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "value"
}

func (p *parser) config(root *yaml.Node, cfg *Config) error {
	return p.pairs(root, "", func(key string, k, v *yaml.Node) error {
		switch key {
		case "repo", "address", "state_dir":
			s, ok, err := p.str(v, key)
			if err != nil || !ok {
				return err
			}
			if s == "" && key != "state_dir" {
				return p.errorf(v, key, "must not be empty")
			}
			switch key {
			case "repo":
				cfg.Repo = s
			case "address":
				cfg.Address = s
			default:
				cfg.StateDir = s
			}
		case "session_ttl", "session_retention", "body_timeout", "drain_timeout", "check_timeout":
			if isNull(v) {
				return nil
			}
			d := map[string]*Duration{"session_ttl": &cfg.SessionTTL, "session_retention": &cfg.SessionRetention, "body_timeout": &cfg.BodyTimeout,
				"drain_timeout": &cfg.DrainTimeout, "check_timeout": &cfg.CheckTimeout}[key]
			if err := d.UnmarshalYAML(v); err != nil {
				return p.errorf(v, key, "%v", err)
			}
		case "max_objects_per_session", "max_sessions_per_token", "max_objects_per_token", "max_connections", "max_connections_per_client":
			if isNull(v) {
				return nil
			}
			var n int
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&n) != nil {
				return p.errorf(v, key, "must be a whole number")
			}
			if n <= 0 {
				return p.errorf(v, key, "must be positive")
			}
			*map[string]*int{
				"max_objects_per_session":    &cfg.MaxObjectsPerSession,
				"max_sessions_per_token":     &cfg.MaxSessionsPerToken,
				"max_objects_per_token":      &cfg.MaxObjectsPerToken,
				"max_connections":            &cfg.MaxConnections,
				"max_connections_per_client": &cfg.MaxClientConnections,
			}[key] = n
		case "max_object_size":
			if isNull(v) {
				return nil
			}
			if err := cfg.MaxObjectSize.UnmarshalYAML(v); err != nil {
				return p.errorf(v, key, "%v", err)
			}
			if cfg.MaxObjectSize <= 0 {
				return p.errorf(v, key, "must be positive")
			}
		case "max_pack_size":
			if isNull(v) {
				return nil
			}
			if err := cfg.MaxPackSize.UnmarshalYAML(v); err != nil {
				return p.errorf(v, key, "%v", err)
			}
			if cfg.MaxPackSize <= 0 {
				return p.errorf(v, key, "must be positive")
			}
		case "sign_type", "sign_trustedkeyfile":
			s, ok, err := p.str(v, key)
			if err != nil || !ok {
				return err
			}
			if key == "sign_type" {
				if s != "ed25519" {
					return p.errorf(v, key, "only ed25519 is supported, not %q", s)
				}
				cfg.SignType = s
			} else {
				cfg.SignTrustedKeyfile = s
			}
		case "gpg_homedir", "gpg_trustedkeys":
			s, ok, err := p.str(v, key)
			if err != nil || !ok {
				return err
			}
			if key == "gpg_homedir" {
				cfg.GPGHomedir = s
			} else {
				cfg.GPGTrustedKeys = s
			}
		case "gpg_sign":
			if isNull(v) {
				return nil
			}
			var list []string
			if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!str" {
				list = []string{v.Value} // one key id, as ostree-push also takes it
			} else if v.Kind != yaml.SequenceNode || v.Decode(&list) != nil {
				return p.errorf(v, key, "must be a list of key ids")
			}
			for _, id := range list {
				if id == "" || strings.ContainsAny(id, " \t\n") {
					return p.errorf(v, key, "bad key id %q", id)
				}
			}
			cfg.GPGSign = nil // [] is none
			if len(list) > 0 {
				cfg.GPGSign = list
			}
		case "gpg_verify":
			return p.boolean(v, key, &cfg.GPGVerify)
		case "sign_keyfiles":
			if isNull(v) {
				return nil
			}
			var list []string
			if v.Kind != yaml.SequenceNode || v.Decode(&list) != nil {
				return p.errorf(v, key, "must be a list of file names")
			}
			for _, f := range list {
				if f == "" {
					return p.errorf(v, key, "empty file name")
				}
			}
			cfg.SignKeyfiles = nil // [] is none
			if len(list) > 0 {
				cfg.SignKeyfiles = list
			}
		case "update":
			return p.boolean(v, key, &cfg.Update)
		case "update_hook", "check_hook":
			s, ok, err := p.str(v, key)
			if err != nil || !ok {
				return err
			}
			argv, err := SplitCommand(s)
			if err != nil {
				return p.errorf(v, key, "%v", err)
			}
			if key == "update_hook" {
				cfg.UpdateHook = argv
			} else {
				cfg.CheckHook = argv
			}
		case "sign_verify":
			return p.boolean(v, key, &cfg.SignVerify)
		case "require_ancestry":
			return p.boolean(v, key, &cfg.RequireAncestry)
		case "prune_depth":
			if isNull(v) {
				return nil
			}
			var n int
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&n) != nil {
				return p.errorf(v, key, "must be a whole number")
			}
			if n < -1 || n > MaxPruneDepth {
				return p.errorf(v, key, "must be -1 (every ancestor) to %d", MaxPruneDepth)
			}
			cfg.PruneDepth = &n
		case "static_deltas", "static_delta_depth", "static_delta_from_empty", "static_delta_time_limit", "static_delta_memory_limit", "static_delta_grace":
			return p.staticDeltas(key, v, cfg)
		case "trusted_proxies":
			if isNull(v) {
				return nil
			}
			var list []string
			if v.Kind != yaml.SequenceNode || v.Decode(&list) != nil {
				return p.errorf(v, key, "must be a list of IP addresses or CIDR ranges")
			}
			for _, a := range list {
				prefix, err := ParsePrefix(a)
				if err != nil {
					return p.errorf(v, key, "%v", err)
				}
				cfg.TrustedProxies = append(cfg.TrustedProxies, prefix)
			}
		case "tokens":
			return p.tokens(v, cfg)
		case "log_level":
			s, ok, err := p.str(v, key)
			if err != nil || !ok {
				return err
			}
			if cfg.LogLevel, err = parseLogLevel(s); err != nil {
				return p.errorf(v, key, "%v", err)
			}
		case "force":
			return p.boolean(v, key, &cfg.Force)
		case "dry_run":
			return p.boolean(v, key, &cfg.DryRun)
		case "accounts":
			return p.accounts(v, cfg)
		case "root":
			s, _, err := p.str(v, key)
			if err != nil {
				return err
			}
			cfg.Root = s // null or "" = none
		case "repos":
			return p.repos(v, cfg)
		default:
			return p.errorf(k, showKey(key), "unknown key")
		}
		return nil
	})
}

func (p *parser) tokens(v *yaml.Node, cfg *Config) error {
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.SequenceNode {
		return p.errorf(v, "tokens", "must be a list of token entries")
	}
	names := map[string]int{}   // name → line
	secrets := map[string]int{} // hash of the secret → line
	for i, item := range v.Content {
		for item.Kind == yaml.AliasNode && item.Alias != nil {
			item = item.Alias
		}
		key := fmt.Sprintf("tokens[%d]", i)
		if item.Kind != yaml.MappingNode {
			return p.errorf(item, key, "must be a mapping with a token or sha256 key")
		}
		t, lines, err := p.token(item, key)
		if err != nil {
			return err
		}
		if field, msg := checkToken(&t); msg != "" {
			line := item
			if n := lines[strings.TrimPrefix(field, ".")]; n != nil {
				line = n
			}
			if list, idx, ok := strings.Cut(strings.TrimPrefix(field, "."), "["); ok && lines[list] != nil {
				line = lines[list]
				if i, _ := strconv.Atoi(strings.TrimSuffix(idx, "]")); i < len(line.Content) {
					line = line.Content[i]
				}
			}
			return p.errorf(line, key+field, "%s", msg)
		}
		if t.Name != "" {
			if first, dup := names[t.Name]; dup {
				return p.errorf(lines["name"], key+".name", "%q is already used by the token on line %d", t.Name, first)
			}
			names[t.Name] = lines["name"].Line
		}
		if first, dup := secrets[t.secretHash()]; dup {
			return p.errorf(item, key, "has the same secret as the token on line %d", first)
		}
		secrets[t.secretHash()] = item.Line
		cfg.Tokens = append(cfg.Tokens, t)
	}
	return nil
}

func (p *parser) token(m *yaml.Node, prefix string) (Token, map[string]*yaml.Node, error) {
	var t Token
	lines := map[string]*yaml.Node{}
	err := p.pairs(m, prefix+".", func(key string, k, v *yaml.Node) error {
		full := prefix + "." + key
		lines[key] = v
		switch key {
		case "token", "sha256", "name", "created", "minted_by":
			s, _, err := p.str(v, full)
			if err != nil {
				return err
			}
			if key == "token" && s == "" && !isNull(v) {
				return p.errorf(v, full, "must not be empty")
			}
			switch key {
			case "token":
				t.Token = s
			case "sha256":
				t.SHA256 = s
			case "name":
				t.Name = s
			case "minted_by":
				t.MintedBy = s
			default:
				t.Created = s
			}
		case "refs", "repos", "scopes":
			return p.grant(key, v, full, &t.Repos, &t.Refs, &t.Scopes)
		case "expires":
			s, ok, err := p.str(v, full)
			if err != nil || !ok {
				return err
			}
			e, err := parseTime(s)
			if err != nil {
				return p.errorf(v, full, "%v", err)
			}
			t.Expires = &e
		default:
			return p.errorf(k, prefix+"."+showKey(key), "unknown key")
		}
		return nil
	})
	return t, lines, err
}

// parseTime accepts RFC 3339 times and plain dates (midnight UTC).
func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time like 2026-01-02T15:04:05Z", s)
}

// ParsePrefix parses an entry of trusted_proxies: an IP address (a
// single-address range) or a CIDR range.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR range", s)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 { // peers are compared unmapped
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR range", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
