package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ostree-upload/ostree-upload/auth"
	"gopkg.in/yaml.v3"
)

// ErrDuplicateName is wrapped by AppendToken's error when the file already
// has a token of the same name.
var ErrDuplicateName = errors.New("token name already used")

// AppendToken adds t to the tokens list of the configuration file at path
// without rewriting any existing byte: other entries, keys, comments and
// formatting stay as they are. A missing file is created with mode 0600.
//
// Only the secret's SHA-256 is written, with the name, repository and ref
// globs, scopes, expiry (RFC 3339) and creation time (now, RFC 3339 UTC);
// if t carries a clear-text Token, its hash is stored instead. The file is replaced atomically,
// keeping its mode and owner, and only if the result loads and holds
// exactly the old tokens followed by t; otherwise it is left untouched.
func AppendToken(path string, t Token) error {
	if t.Token != "" {
		h := auth.Hash(t.Token)
		if t.SHA256 != "" && t.SHA256 != h {
			return errors.New("token and sha256 disagree")
		}
		t.SHA256, t.Token = h, ""
	}
	if !sha256Hex.MatchString(t.SHA256) {
		return errors.New("new token: sha256 must be 64 lower-case hexadecimal digits")
	}
	if t.MintedBy != "" && !sha256Hex.MatchString(t.MintedBy) {
		return errors.New("new token: minted_by must be 64 lower-case hexadecimal digits")
	}
	if err := auth.CheckName(t.Name); err != nil {
		return fmt.Errorf("new token: %w", err)
	}
	for _, g := range t.Repos {
		if err := checkRepoGlob(g); err != nil {
			return fmt.Errorf("new token: %w", err)
		}
	}
	for _, g := range t.Refs {
		if err := auth.CheckGlob(g); err != nil {
			return fmt.Errorf("new token: %w", err)
		}
	}
	if err := auth.CheckScopes(t.Scopes); err != nil {
		return fmt.Errorf("new token: scopes: %w", err)
	}
	if t.Expires != nil {
		exp := t.Expires.UTC().Truncate(time.Second)
		t.Expires = &exp
	}
	t.Repos = slices.Clone(t.Repos)
	t.Refs = slices.Clone(t.Refs)
	t.Scopes = slices.Clone(t.Scopes)
	t.Created = time.Now().UTC().Format(time.RFC3339)

	target := path
	var data []byte
	var info fs.FileInfo
	exists := true
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		exists = false
	} else if err != nil {
		return err
	} else {
		// Edit the file a symlink points to, not the link.
		if target, err = filepath.EvalSymlinks(path); err != nil {
			return err
		}
		if info, err = os.Stat(target); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", path)
		}
		if data, err = os.ReadFile(target); err != nil {
			return err
		}
	}

	old, root, err := parse(data, path)
	if err != nil {
		return err
	}
	if t.Name != "" {
		for i, o := range old.Tokens {
			if o.Name == t.Name {
				return fmt.Errorf("%s: tokens[%d] is already named %q: %w", path, i, t.Name, ErrDuplicateName)
			}
		}
	}

	out, err := insertToken(data, root, t)
	if err != nil {
		return fmt.Errorf("%s: cannot add a token: %w; add it by hand", path, err)
	}
	cfg, _, err := parse(out, path)
	if err != nil {
		return fmt.Errorf("%s: adding a token would make the file invalid (%w); add it by hand", path, err)
	}
	if !sameConfig(old, cfg) || len(cfg.Tokens) != len(old.Tokens)+1 ||
		!sameTokens(old.Tokens, cfg.Tokens[:len(old.Tokens)]) || !sameTokens([]Token{t}, cfg.Tokens[len(old.Tokens):]) {
		return fmt.Errorf("%s: cannot add a token without changing other settings; add it by hand", path)
	}

	mode := fs.FileMode(0o600)
	if exists {
		mode = info.Mode().Perm()
	}
	unchanged := func() error {
		now, err := os.ReadFile(target)
		switch {
		case !exists && errors.Is(err, fs.ErrNotExist):
			return nil
		case err != nil && !exists:
			return fmt.Errorf("%s appeared while adding the token; try again", path)
		case err != nil:
			return err
		case !exists || !bytes.Equal(now, data):
			return fmt.Errorf("%s changed while adding the token; try again", path)
		}
		return nil
	}
	return writeAtomic(target, out, mode, info, unchanged)
}

func sameConfig(a, b *Config) bool {
	x, y := *a, *b
	x.Tokens, y.Tokens = nil, nil
	return reflect.DeepEqual(x, y)
}

func sameTokens(a, b []Token) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Token != y.Token || x.SHA256 != y.SHA256 || x.Name != y.Name || x.Created != y.Created || x.MintedBy != y.MintedBy ||
			!slices.Equal(x.Repos, y.Repos) || !slices.Equal(x.Refs, y.Refs) || !slices.Equal(x.Scopes, y.Scopes) || (x.Scopes == nil) != (y.Scopes == nil) || (x.Expires == nil) != (y.Expires == nil) ||
			x.Expires != nil && !x.Expires.Equal(*y.Expires) {
			return false
		}
	}
	return true
}

// insertToken returns data with t added to the tokens list; root is the
// parsed top-level mapping (nil for an empty document).
func insertToken(data []byte, root *yaml.Node, t Token) ([]byte, error) {
	nl := "\n"
	if bytes.Contains(data, []byte("\r\n")) {
		nl = "\r\n"
	}
	lines := splitLines(data)

	// appendAfter inserts text after line n (1-based; 0 = at the start).
	appendAfter := func(n int, text string) []byte {
		var out bytes.Buffer
		for _, l := range lines[:n] {
			out.Write(l)
		}
		if n > 0 && !bytes.HasSuffix(lines[n-1], []byte("\n")) {
			out.WriteString(nl)
		}
		out.WriteString(text)
		for _, l := range lines[n:] {
			out.Write(l)
		}
		return out.Bytes()
	}

	if root == nil {
		return appendAfter(len(lines), "tokens:"+nl+entry(t, 0, 2, nl)), nil
	}
	if root.Style&yaml.FlowStyle != 0 {
		return nil, errors.New("the top level is a flow mapping ({...})")
	}
	var key, val, next *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "tokens" {
			key, val = root.Content[i], root.Content[i+1]
			if i+2 < len(root.Content) {
				next = root.Content[i+2]
			}
		}
	}
	indent := root.Column - 1
	if key == nil {
		return appendAfter(len(lines), strings.Repeat(" ", indent)+"tokens:"+nl+entry(t, indent, indent+2, nl)), nil
	}
	if val.Kind == yaml.AliasNode || val.Anchor != "" || val.Style&yaml.TaggedStyle != 0 {
		return nil, errors.New("tokens has an anchor, alias or tag")
	}
	if val.Kind == yaml.SequenceNode && len(val.Content) > 0 {
		if val.Style&yaml.FlowStyle != 0 {
			return nil, errors.New("tokens is a flow list ([...])")
		}
		dash := val.Column - 1
		inner := dash + 2
		if first := val.Content[0]; first.Kind == yaml.MappingNode && first.Style&yaml.FlowStyle == 0 && first.Line == val.Line {
			inner = first.Column - 1
		}
		// The list ends before the next top-level key, less the blank
		// lines and the comments no deeper than the dashes before it.
		end := len(lines)
		if next != nil {
			end = next.Line - 1
		}
		for end > val.Line {
			l := strings.TrimRight(string(lines[end-1]), "\r\n")
			trimmed := strings.TrimLeft(l, " \t")
			if trimmed == "" || strings.HasPrefix(trimmed, "#") && len(l)-len(trimmed) <= dash {
				end--
				continue
			}
			break
		}
		if end < maxLine(val) {
			return nil, errors.New("cannot find the end of the tokens list")
		}
		return appendAfter(end, entry(t, dash, inner, nl)), nil
	}
	// tokens: | tokens: ~ | tokens: [] → the block form, on the same line.
	empty := isNull(val) || val.Kind == yaml.SequenceNode && len(val.Content) == 0
	if !empty {
		return nil, errors.New("tokens is not a list")
	}
	if key.Line > len(lines) || key.Line < 1 {
		return nil, errors.New("cannot find the tokens key")
	}
	line := string(lines[key.Line-1])
	body := strings.TrimRight(line, "\r\n")
	eol := line[len(body):]
	if val.Value != "" || val.Kind == yaml.SequenceNode {
		if val.Line != key.Line {
			return nil, errors.New("the value of tokens is not on its line")
		}
		start := byteOffset(body, val.Column-1)
		stop := -1
		if val.Kind == yaml.SequenceNode {
			if start < len(body) && body[start] == '[' {
				rest := strings.TrimLeft(body[start+1:], " \t")
				if strings.HasPrefix(rest, "]") {
					stop = len(body) - len(rest) + 1
				}
			}
		} else if strings.HasPrefix(body[start:], val.Value) {
			stop = start + len(val.Value)
		}
		if stop < 0 {
			return nil, errors.New("cannot find the value of tokens")
		}
		body = body[:start] + body[stop:]
		if strings.TrimSpace(body[start:]) == "" {
			body = strings.TrimRight(body, " \t")
		}
	}
	if eol == "" {
		eol = nl
	}
	lines[key.Line-1] = []byte(body + eol)
	return appendAfter(key.Line, entry(t, key.Column-1, key.Column+1, nl)), nil
}

// splitLines splits data after each '\n'.
func splitLines(data []byte) [][]byte {
	var lines [][]byte
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n') + 1
		if i == 0 {
			i = len(data)
		}
		lines = append(lines, data[:i])
		data = data[i:]
	}
	return lines
}

// byteOffset converts a 0-based column in characters to a byte offset.
func byteOffset(s string, col int) int {
	off := 0
	for i := 0; i < col && off < len(s); i++ {
		_, size := utf8.DecodeRuneInString(s[off:])
		off += size
	}
	return off
}

func maxLine(n *yaml.Node) int {
	m := n.Line
	for _, c := range n.Content {
		m = max(m, maxLine(c))
	}
	return m
}

// entry formats t as a block list item with its dash at column dash and
// its keys at column inner.
func entry(t Token, dash, inner int, nl string) string {
	if inner <= dash {
		inner = dash + 2
	}
	pad := strings.Repeat(" ", inner)
	var b strings.Builder
	b.WriteString(strings.Repeat(" ", dash) + "-" + strings.Repeat(" ", inner-dash-1))
	b.WriteString("sha256: " + strconv.Quote(t.SHA256) + nl)
	if t.Name != "" {
		b.WriteString(pad + "name: " + strconv.Quote(t.Name) + nl)
	}
	if len(t.Repos) > 0 {
		b.WriteString(pad + "repos:" + nl)
		for _, r := range t.Repos {
			b.WriteString(pad + "  - " + strconv.Quote(r) + nl)
		}
	}
	if len(t.Refs) > 0 {
		b.WriteString(pad + "refs:" + nl)
		for _, r := range t.Refs {
			b.WriteString(pad + "  - " + strconv.Quote(r) + nl)
		}
	}
	if t.Scopes != nil {
		b.WriteString(pad + "scopes: [" + strings.Join(t.Scopes, ", ") + "]" + nl)
	}
	if t.Expires != nil {
		b.WriteString(pad + "expires: " + strconv.Quote(t.Expires.UTC().Format(time.RFC3339)) + nl)
	}
	if t.MintedBy != "" {
		b.WriteString(pad + "minted_by: " + strconv.Quote(t.MintedBy) + nl)
	}
	b.WriteString(pad + "created: " + strconv.Quote(t.Created) + nl)
	return b.String()
}

// writeAtomic replaces path with data through a synced temporary file in
// the same directory, with the given mode and, when orig is set, orig's
// owner. check runs just before the rename.
func writeAtomic(path string, data []byte, mode fs.FileMode, orig fs.FileInfo, check func() error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(mode); err != nil {
		return err
	}
	if orig != nil {
		if err = keepOwner(f, orig); err != nil {
			return fmt.Errorf("cannot give the new %s the owner of the old one: %w", path, err)
		}
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = check(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
