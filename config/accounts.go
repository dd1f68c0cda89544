package config

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/ostree-upload/ostree-upload/auth"
)

// accounts parses the accounts list: the unix accounts that may push over
// ssh, each with repos, refs and scopes as a token has them.
func (p *parser) accounts(v *yaml.Node, cfg *Config) error {
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.SequenceNode {
		return p.errorf(v, "accounts", "must be a list of entries with a user key")
	}
	seen := map[string]int{} // user → line
	for i, item := range v.Content {
		for item.Kind == yaml.AliasNode && item.Alias != nil {
			item = item.Alias
		}
		prefix := fmt.Sprintf("accounts[%d]", i)
		if item.Kind != yaml.MappingNode {
			return p.errorf(item, prefix, "must be a mapping with a user key")
		}
		var a Account
		var userNode *yaml.Node
		err := p.pairs(item, prefix+".", func(key string, k, v *yaml.Node) error {
			full := prefix + "." + key
			switch key {
			case "user":
				s, _, err := p.str(v, full)
				if err != nil {
					return err
				}
				if err := auth.CheckUser(s); err != nil {
					return p.errorf(v, full, "%v", err)
				}
				a.User, userNode = s, v
			case "refs", "repos", "scopes":
				return p.grant(key, v, full, &a.Repos, &a.Refs, &a.Scopes)
			default:
				return p.errorf(k, prefix+"."+showKey(key), "unknown key")
			}
			return nil
		})
		if err != nil {
			return err
		}
		if userNode == nil {
			return p.errorf(item, prefix, "needs a user key: the unix account's name")
		}
		if first, dup := seen[a.User]; dup {
			return p.errorf(userNode, prefix+".user", "%q already has the entry on line %d", a.User, first)
		}
		seen[a.User] = userNode.Line
		t := Token{SHA256: strings.Repeat("0", 64), Repos: a.Repos, Refs: a.Refs, Scopes: a.Scopes}
		if field, msg := checkToken(&t); msg != "" {
			return p.errorf(item, prefix+field, "%s", msg)
		}
		cfg.Accounts = append(cfg.Accounts, a)
	}
	return nil
}

// grant parses what a token or an account may act on: key is repos, refs
// (lists of globs) or scopes.
func (p *parser) grant(key string, v *yaml.Node, full string, repos, refs, scopes *[]string) error {
	if isNull(v) {
		return nil
	}
	if key == "scopes" {
		if v.Kind != yaml.SequenceNode {
			return p.errorf(v, full, "must be a list of scopes (%s)", strings.Join(auth.AllScopes, ", "))
		}
		*scopes = []string{}
		for j, r := range v.Content {
			s, _, err := p.str(r, fmt.Sprintf("%s[%d]", full, j))
			if err != nil {
				return err
			}
			*scopes = append(*scopes, s)
		}
		return nil
	}
	what, list := "ref", refs
	if key == "repos" {
		what, list = "repository", repos
	}
	if v.Kind != yaml.SequenceNode {
		return p.errorf(v, full, "must be a list of %s globs", what)
	}
	*list = []string{}
	for j, r := range v.Content {
		for r.Kind == yaml.AliasNode && r.Alias != nil {
			r = r.Alias
		}
		s, ok, err := p.str(r, fmt.Sprintf("%s[%d]", full, j))
		if err != nil {
			return err
		}
		if !ok {
			return p.errorf(r, fmt.Sprintf("%s[%d]", full, j), "must not be empty")
		}
		*list = append(*list, s)
	}
	return nil
}
