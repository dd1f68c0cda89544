package config

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Repository is one repository the daemon serves.
type Repository struct {
	Name   string  // its name on the wire: its path under root, slash-separated; "" for the one repository of a file without root
	Config *Config // the whole configuration with the repository's overrides applied; Repo is the repository's path, Root and Repos are cleared
}

// Overrides are the keys a repos entry sets for its repository, each with
// its value as the Config field of the same key holds it (a bool, a
// []string, a Duration, a Size, a Command, …). A nil value stands for the
// key's default (the entry says null). Daemon-wide keys have no place here.
type Overrides map[string]any

// MaxDepth is how deep under root Repositories looks for repositories: a
// repository found at root/a/b/c/d is 4 levels deep.
const MaxDepth = 4

// field is what the parser and Overrides know of a key.
type field struct {
	index  int  // in Config
	daemon bool // daemon-wide
}

// keyFields maps each key that is a field of Config to that field;
// keyOrder lists those keys in the struct's order.
var keyFields, keyOrder = func() (map[string]field, []string) {
	m := map[string]field{}
	var order []string
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		m[name] = field{index: i, daemon: f.Tag.Get("scope") == "daemon"}
		order = append(order, name)
	}
	return m, order
}()

// repos parses the repos mapping: each entry's path as written, with its
// overrides. Paths become names in checkRepos, once root is known.
func (p *parser) repos(v *yaml.Node, cfg *Config) error {
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.MappingNode {
		return p.errorf(v, "repos", "must be a mapping of repository paths to their settings")
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, e := v.Content[i], v.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			return p.errorf(k, "repos", "keys must be the repositories' paths")
		}
		key := k.Value
		if first, dup := seen[key]; dup {
			return p.errorf(k, "repos."+showPath(key), "duplicate key (first on line %d)", first)
		}
		seen[key] = k.Line
		for e.Kind == yaml.AliasNode && e.Alias != nil {
			e = e.Alias
		}
		o, err := p.overrides(e, "repos."+showPath(key))
		if err != nil {
			return err
		}
		if cfg.Repos == nil {
			cfg.Repos = map[string]Overrides{}
		}
		cfg.Repos[key] = o
	}
	return nil
}

// overrides parses one repos entry with the parser of the top level, one
// key at a time, keeping the keys set.
func (p *parser) overrides(e *yaml.Node, prefix string) (Overrides, error) {
	saved := p.prefix
	p.prefix = prefix
	defer func() { p.prefix = saved }()
	if isNull(e) {
		return nil, nil
	}
	if e.Kind != yaml.MappingNode {
		return nil, p.errorf(e, "", "must be a mapping of keys to values ({} for none)")
	}
	var o Overrides
	scratch := Default()
	err := p.pairs(e, "", func(key string, k, v *yaml.Node) error {
		f, isField := keyFields[key]
		if isField && f.daemon {
			return p.errorf(k, key, "is daemon-wide: set it at the top level, not for one repository")
		}
		one := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: e.Line, Column: e.Column, Content: []*yaml.Node{k, v}}
		if err := p.config(one, scratch); err != nil {
			return err
		}
		if o == nil {
			o = Overrides{}
		}
		if isNull(v) {
			o[key] = nil
		} else {
			o[key] = cloneValue(reflect.ValueOf(scratch).Elem().Field(f.index)).Interface()
		}
		return nil
	})
	return o, err
}

// checkRepos checks root, repo and repos against each other and turns
// the paths of repos into names, with the lines of the file.
func (p *parser) checkRepos(root *yaml.Node, cfg *Config) error {
	keys := map[string]*yaml.Node{}
	var repos *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		for v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		keys[k.Value] = k
		if k.Value == "repos" {
			repos = v
		}
	}
	if cfg.Root != "" && keys["repo"] != nil {
		return p.errorf(keys["root"], "root", "and repo (line %d) together: root serves the repositories under it, repo the one repository of a file without root; use one or the other", keys["repo"].Line)
	}
	if len(cfg.Repos) == 0 {
		return nil
	}
	if keys["repo"] != nil {
		return p.errorf(keys["repos"], "repos", "and repo (line %d) together: repos lists repositories under root, repo names the one repository of a file without root; use one or the other", keys["repo"].Line)
	}
	if cfg.Root == "" {
		return p.errorf(keys["repos"], "repos", "needs root, the directory the repositories' names are relative to")
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(repos.Content); i += 2 {
		k := repos.Content[i]
		name, err := repoName(cfg.Root, k.Value)
		if err != nil {
			return p.errorf(k, "repos."+showPath(k.Value), "%v", err)
		}
		if first, dup := seen[name]; dup {
			return p.errorf(k, "repos."+showPath(k.Value), "is the repository %q again (line %d)", name, first.Line)
		}
		seen[name] = k
	}
	return nil
}

// showPath returns a repository path for a message: as written when it is
// printable ASCII, else a placeholder.
func showPath(s string) string {
	if s == "" || len(s) > 256 {
		return "(path not shown)"
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return "(path not shown)"
		}
	}
	return s
}

var nameComponent = regexp.MustCompile(`^[A-Za-z0-9_+-][A-Za-z0-9._+-]*$`)

// CheckRepoName reports whether name can be a repository's name on the
// wire: slash-separated components of letters, digits and . _ - +, none
// empty or starting with '.', and without the components "api/v1" in a
// row (the API of repository NAME lives under NAME/api/v1/).
func CheckRepoName(name string) error {
	parts := strings.Split(name, "/")
	for i, c := range parts {
		switch {
		case c == "":
			return fmt.Errorf("repository name %q has an empty component", name)
		case c == "." || c == "..":
			return fmt.Errorf("repository name %q has a component %q", name, c)
		case c[0] == '.':
			return fmt.Errorf("repository name %q has a component starting with '.'", name)
		case c[0] == '-':
			return fmt.Errorf("repository name %q has a component starting with '-' (programs run on the repository would take it for an option)", name)
		case !nameComponent.MatchString(c):
			return fmt.Errorf("repository name %q may only hold letters, digits and . _ - + in each component", name)
		case c == "api" && i+1 < len(parts) && parts[i+1] == "v1":
			return fmt.Errorf("repository name %q contains api/v1, where the API's paths start", name)
		}
	}
	return nil
}

// repoName is the name of the repository at key (relative to root, or
// absolute under it), after filepath.Clean.
func repoName(root, key string) (string, error) {
	if key == "" {
		return "", errors.New("the repository's path must not be empty")
	}
	rel := filepath.Clean(key)
	if filepath.IsAbs(rel) {
		absRoot, err := filepath.Abs(filepath.Clean(root))
		if err != nil {
			return "", err
		}
		if rel, err = filepath.Rel(absRoot, rel); err != nil {
			return "", fmt.Errorf("%s is not under root %s", key, root)
		}
	}
	switch {
	case rel == "..", strings.HasPrefix(rel, ".."+string(filepath.Separator)):
		return "", fmt.Errorf("%s is not under root %s", key, root)
	case rel == ".":
		return "", fmt.Errorf("%s is root itself, not a repository under it", key)
	}
	name := filepath.ToSlash(rel)
	return name, CheckRepoName(name)
}

// listed returns the names of the repos entries and the key each comes
// from.
func (c *Config) listed() (map[string]string, error) {
	names := map[string]string{}
	for _, key := range slices.Sorted(maps.Keys(c.Repos)) {
		name, err := repoName(c.Root, key)
		if err != nil {
			return nil, fmt.Errorf("repos.%s: %w", showPath(key), err)
		}
		if other, dup := names[name]; dup {
			return nil, fmt.Errorf("repos.%s: is the repository %q again (repos.%s)", showPath(key), name, showPath(other))
		}
		if err := c.Repos[key].apply(c.clone()); err != nil {
			return nil, fmt.Errorf("repos.%s.%w", showPath(key), err)
		}
		names[name] = key
	}
	return names, nil
}

// apply sets the keys of o in c, copying slices.
func (o Overrides) apply(c *Config) error {
	dst := reflect.ValueOf(c).Elem()
	def := reflect.ValueOf(Default()).Elem()
	for _, key := range slices.Sorted(maps.Keys(o)) {
		f, ok := keyFields[key]
		switch {
		case !ok:
			return fmt.Errorf("%s: not a key that a repository may set", key)
		case f.daemon:
			return fmt.Errorf("%s: is daemon-wide: set it at the top level, not for one repository", key)
		}
		to := dst.Field(f.index)
		if o[key] == nil {
			to.Set(cloneValue(def.Field(f.index)))
			continue
		}
		v := reflect.ValueOf(o[key])
		if !v.Type().AssignableTo(to.Type()) {
			return fmt.Errorf("%s: must be a %s, not a %s", key, to.Type(), v.Type())
		}
		to.Set(cloneValue(v))
	}
	return nil
}

// MarshalYAML implements yaml.Marshaler: the keys in the order of the
// configuration's keys, null for a default.
func (o Overrides) MarshalYAML() (any, error) {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for key := range o {
		if _, ok := keyFields[key]; !ok {
			return nil, fmt.Errorf("repos: %q is not a key", key)
		}
	}
	for _, key := range keyOrder {
		val, ok := o[key]
		if !ok {
			continue
		}
		v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
		if val != nil {
			if err := v.Encode(val); err != nil {
				return nil, fmt.Errorf("repos: %s: %w", key, err)
			}
		}
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	}
	if len(n.Content) == 0 {
		n.Style = yaml.FlowStyle
	}
	return n, nil
}

// cloneValue copies a slice; other values are returned as they are.
func cloneValue(v reflect.Value) reflect.Value {
	if v.Kind() != reflect.Slice || v.IsNil() {
		return v
	}
	c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
	reflect.Copy(c, v)
	return c
}

// clone is a deep copy of c.
func (c *Config) clone() *Config {
	d := *c
	d.GPGSign = slices.Clone(c.GPGSign)
	d.SignKeyfiles = slices.Clone(c.SignKeyfiles)
	d.UpdateHook = slices.Clone(c.UpdateHook)
	d.CheckHook = slices.Clone(c.CheckHook)
	d.TrustedProxies = slices.Clone(c.TrustedProxies)
	if c.Accounts != nil {
		d.Accounts = make([]Account, len(c.Accounts))
		for i, a := range c.Accounts {
			a.Repos, a.Refs, a.Scopes = slices.Clone(a.Repos), slices.Clone(a.Refs), slices.Clone(a.Scopes)
			d.Accounts[i] = a
		}
	}
	if c.Tokens != nil {
		d.Tokens = make([]Token, len(c.Tokens))
		for i, t := range c.Tokens {
			t.Repos, t.Refs, t.Scopes = slices.Clone(t.Repos), slices.Clone(t.Refs), slices.Clone(t.Scopes)
			if t.Expires != nil {
				e := *t.Expires
				t.Expires = &e
			}
			d.Tokens[i] = t
		}
	}
	if c.Repos != nil {
		d.Repos = make(map[string]Overrides, len(c.Repos))
		for k, o := range c.Repos {
			if o == nil {
				d.Repos[k] = nil
				continue
			}
			d.Repos[k] = Overrides{}
			for key, v := range o {
				if v != nil {
					v = cloneValue(reflect.ValueOf(v)).Interface()
				}
				d.Repos[k][key] = v
			}
		}
	}
	return &d
}

// Repositories lists the repositories the configuration serves, sorted by name.
//
// Without root, that is the one repository Repo, named "". With root, it
// is every repos entry and every OSTree repository found under root now
// (a directory holding a config file and an objects directory, at most
// MaxDepth levels deep, not inside another repository, hidden directories
// and state dirs skipped).
//
// Each repository's Config is a deep copy of c with the repository's
// overrides applied, ostree-push's default keyrings filled in where
// gpg_trustedkeys or sign_trustedkeyfile are unset, and checked.
func (c *Config) Repositories() ([]Repository, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var repos []Repository
	if c.Root == "" {
		r := c.clone()
		r.Root, r.Repos = "", nil
		repos = []Repository{{Name: "", Config: r}}
	} else {
		listed, err := c.listed()
		if err != nil {
			return nil, err
		}
		found, err := discover(c.Root, c.stateDirs())
		if err != nil {
			return nil, err
		}
		names := slices.Collect(maps.Keys(listed))
		for _, n := range found {
			if _, ok := listed[n]; !ok {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			if isRepo(c.Root) {
				return nil, fmt.Errorf("root %s is itself an OSTree repository: serve it with repo (and no root), or make root the directory above it", c.Root)
			}
			return nil, fmt.Errorf("root %s: no OSTree repository found under it (%d levels deep) and repos lists none", c.Root, MaxDepth)
		}
		slices.Sort(names)
		for _, name := range names {
			r := c.clone()
			if key, ok := listed[name]; ok {
				if err := c.Repos[key].apply(r); err != nil {
					return nil, fmt.Errorf("repos.%s.%w", showPath(key), err)
				}
			}
			r.Repo = filepath.Join(c.Root, filepath.FromSlash(name))
			r.Root, r.Repos = "", nil
			repos = append(repos, Repository{Name: name, Config: r})
		}
	}
	stateDirs := map[string]string{}
	for _, r := range repos {
		what := "the repository"
		if r.Name != "" {
			what = fmt.Sprintf("repository %q", r.Name)
		}
		if err := r.Config.defaultKeyrings(); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if err := r.Config.Validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if r.Config.StateDir != "" {
			dir := filepath.Clean(r.Config.StateDir)
			if other, dup := stateDirs[dir]; dup {
				return nil, fmt.Errorf("repositories %q and %q have the same state_dir %s: give each its own in its repos entry, or leave state_dir unset (each then gets .NAME.ostree-upload beside it)", other, r.Name, r.Config.StateDir)
			}
			stateDirs[dir] = r.Name
		}
	}
	return repos, nil
}

// stateDirs are the state dirs the file names, absolute: discovery does
// not look into them (a token's spool is a repository).
func (c *Config) stateDirs() map[string]bool {
	dirs := map[string]bool{}
	add := func(d string) {
		if d == "" {
			return
		}
		if abs, err := filepath.Abs(d); err == nil {
			dirs[abs] = true
		}
	}
	add(c.StateDir)
	for _, o := range c.Repos {
		if d, ok := o["state_dir"].(string); ok {
			add(d)
		}
	}
	return dirs
}

// discover returns the names of the repositories under root.
func discover(root string, skip map[string]bool) ([]string, error) {
	var names []string
	var walk func(dir, name string, depth int) error
	walk = func(dir, name string, depth int) error {
		entries, err := os.ReadDir(dir)
		if err != nil {
			if depth == 0 {
				return fmt.Errorf("root %s: %w", root, err)
			}
			return nil // not readable: nothing to serve there
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			// Only real directories: a symbolic link could lead out of
			// root (list such a repository in repos: to serve it).
			if !e.IsDir() || e.Type()&fs.ModeSymlink != 0 {
				continue
			}
			p := filepath.Join(dir, e.Name())
			if abs, err := filepath.Abs(p); err == nil && skip[abs] {
				continue
			}
			n := path.Join(name, e.Name())
			if isRepo(p) {
				if err := CheckRepoName(n); err != nil {
					return fmt.Errorf("root %s: the repository %s cannot be served: %w; rename it or move it out of root", root, p, err)
				}
				names = append(names, n)
				continue
			}
			if depth+1 < MaxDepth {
				if err := walk(p, n, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(root, "", 0); err != nil {
		return nil, err
	}
	return names, nil
}

// isRepo reports whether dir looks like an OSTree repository.
func isRepo(dir string) bool {
	c, err := os.Stat(filepath.Join(dir, "config"))
	if err != nil || !c.Mode().IsRegular() {
		return false
	}
	o, err := os.Stat(filepath.Join(dir, "objects"))
	return err == nil && o.IsDir()
}

// Where ostree-push's and this program's files are looked for; variables
// for tests.
var (
	sysconfDir = "/etc"
	homeDir    = os.UserHomeDir
)

// configDirs are the directories of sub's files: in $XDG_CONFIG_HOME
// (default ~/.config), then in /etc.
func configDirs(sub string) []string {
	var dirs []string
	home := os.Getenv("XDG_CONFIG_HOME")
	if !filepath.IsAbs(home) {
		home = ""
		if h, err := homeDir(); err == nil && h != "" {
			home = filepath.Join(h, ".config")
		}
	}
	if home != "" {
		dirs = append(dirs, filepath.Join(home, sub))
	}
	return append(dirs, filepath.Join(sysconfDir, sub))
}

// exists reports whether path names something (that may still not be
// readable).
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil || !errors.Is(err, fs.ErrNotExist)
}

// defaultKeyrings fills in ostree-push's default keyrings where
// gpg_trustedkeys and sign_trustedkeyfile are unset, then checks that
// sign_verify has its keys.
func (c *Config) defaultKeyrings() error {
	signType := c.SignType
	if signType == "" {
		signType = "ed25519"
	}
	var looked []string
	first := func(base string) string {
		for _, dir := range configDirs("ostree") {
			p := filepath.Join(dir, base)
			if _, err := os.Stat(p); err == nil {
				return p
			}
			looked = append(looked, p)
		}
		return ""
	}
	if c.GPGTrustedKeys == "" {
		c.GPGTrustedKeys = first("ostree-receive-trustedkeys.gpg")
	}
	looked = nil
	if c.SignTrustedKeyfile == "" {
		c.SignTrustedKeyfile = first("ostree-receive-trustedkeyfile." + signType)
		if c.SignVerify && c.SignTrustedKeyfile == "" {
			return fmt.Errorf("sign_verify needs sign_trustedkeyfile, the public keys to trust: it is not set, and none of %s exists", strings.Join(looked, ", "))
		}
	}
	return nil
}

// parseLogLevel reads a log level: ostree-push's names (Python's) in any
// case, WARN, and slog's own text such as ERROR+4.
func parseLogLevel(s string) (slog.Level, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "WARNING":
		return slog.LevelWarn, nil
	case "CRITICAL":
		return slog.LevelError + 4, nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q is not a log level: DEBUG, INFO, WARNING, ERROR or CRITICAL", s)
	}
	return l, nil
}
