package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/spf13/pflag"
)

var gentokenCmd = &command{
	name:    "gentoken",
	summary: "Create an API token and add its hash to the token file",
	usage:   "[OPTIONS]",
	example: `  # A token for CI that may only push app refs and expires in 30 days:
  ostree-upload gentoken -c /etc/ostree-upload.yaml --name ci --ref 'app/*' --expires 720h

  # A daemon of several repositories (root and repos): a token for beta
  # and the repositories under team/ only:
  ostree-upload gentoken -c /etc/ostree-upload.yaml --name team --repo beta --repo 'team/*'

  # The secret is the last line of standard output, shown only once:
  OSTREE_UPLOAD_TOKEN=$(ostree-upload gentoken -c /etc/ostree-upload.yaml --name laptop | tail -n 1)

  # An admin token for the sessions and tokens commands, and an upload-only
  # token for CI whose sessions someone else publishes:
  ostree-upload gentoken -c /etc/ostree-upload.yaml --name ops --scope admin
  ostree-upload gentoken -c /etc/ostree-upload.yaml --name ci-build --scope upload

  Only the secret's SHA-256 is written to the file. Scopes: upload (send
  objects), publish (commit sessions), admin (sessions, tokens); the
  default is upload and publish. Without -c, the file is the one receive
  reads without -c: the first found of ./ostree-upload.yaml,
  $OSTREE_UPLOAD_CONF, ~/.config/ostree-upload/ostree-upload.yaml,
  /etc/ostree-upload/ostree-upload.yaml, $OSTREE_RECEIVE_CONF,
  ~/.config/ostree/ostree-receive.conf, /etc/ostree/ostree-receive.conf,
  else ./ostree-upload.yaml, created.`,
	flags: func(fs *pflag.FlagSet) func([]string) error {
		o := &gentokenOptions{}
		fs.StringVarP(&o.config, "config", "c", "", "configuration file holding the tokens (default: the one receive reads, "+config.DefaultFile+" if none exists)")
		fs.StringVar(&o.name, "name", "", "name of the token, for logs and revocation")
		fs.StringArrayVar(&o.repos, "repo", nil, "limit the token to repositories whose names match this glob (repeatable)")
		fs.StringArrayVar(&o.refs, "ref", nil, "limit the token to refs matching this glob (repeatable)")
		fs.StringSliceVar(&o.scopes, "scope", nil, "what the token may do: upload, publish, admin (repeatable or comma-separated; default upload,publish)")
		fs.DurationVar(&o.expires, "expires", 0, "make the token expire after this duration (e.g. 720h)")
		fs.BoolVarP(&o.verbose, "verbose", "v", false, "print debug messages")
		return noArgs("gentoken", func() error {
			var err error
			if o.config, err = configPath(fs, o.config); err != nil {
				return err
			}
			return gentoken(o, os.Stdout, fs.Output())
		})
	},
}

// configPath is the file of -c, or when -c is not given the first found
// of the configuration files (config.Find).
func configPath(fs *pflag.FlagSet, flag string) (string, error) {
	if fs.Changed("config") {
		return flag, nil
	}
	return config.Find()
}

type gentokenOptions struct {
	config  string
	name    string
	repos   []string
	refs    []string
	scopes  []string
	expires time.Duration
	verbose bool
}

// gentoken adds a new token to the configuration file; the secret goes
// alone to stdout, everything else to stderr.
func gentoken(o *gentokenOptions, stdout, stderr io.Writer) error {
	if err := auth.CheckName(o.name); err != nil {
		return usageError{fmt.Errorf("--name: %w", err)}
	}
	for _, g := range o.repos {
		if err := auth.CheckGlob(g); err != nil {
			return usageError{fmt.Errorf("--repo: %w", err)}
		}
	}
	for _, g := range o.refs {
		if err := auth.CheckGlob(g); err != nil {
			return usageError{fmt.Errorf("--ref: %w", err)}
		}
	}
	if err := auth.CheckScopes(o.scopes); err != nil {
		return usageError{fmt.Errorf("--scope: %w", err)}
	}
	if o.expires < 0 {
		return usageError{errors.New("--expires must not be negative (0 means never)")}
	}
	debugf := func(format string, args ...any) {
		if o.verbose {
			fmt.Fprintf(stderr, "debug: "+format+"\n", args...)
		}
	}

	_, statErr := os.Stat(o.config)
	isNew := errors.Is(statErr, fs.ErrNotExist)
	if isNew {
		debugf("%s does not exist; creating it", o.config)
	}

	secret, hash, err := auth.Generate()
	if err != nil {
		return fmt.Errorf("generating a token: %w", err)
	}
	tok := config.Token{SHA256: hash, Name: o.name, Repos: o.repos, Refs: o.refs, Scopes: o.scopes}
	if o.expires > 0 {
		exp := time.Now().Add(o.expires).UTC().Truncate(time.Second)
		tok.Expires = &exp
	}
	if err := config.AppendToken(o.config, tok); err != nil {
		if errors.Is(err, config.ErrDuplicateName) {
			return fmt.Errorf("%s already has a token named %q; choose another --name or remove that entry first", o.config, o.name)
		}
		return err
	}
	if cfg, err := config.Load(o.config); err == nil {
		debugf("%s now holds %d token(s)", o.config, len(cfg.Tokens))
	}

	id := auth.Identity{Hash: hash, Name: o.name}
	file := o.config
	if isNew {
		file += " (new file)"
	}
	fmt.Fprintf(stderr, "added token %s to %s; its secret is shown once below\n", id.DisplayName(), file)
	refs, repos := "all", "all"
	if len(o.refs) > 0 {
		refs = strings.Join(o.refs, " ")
	}
	if len(o.repos) > 0 {
		repos = strings.Join(o.repos, " ")
	}
	expires := "never expires"
	if tok.Expires != nil {
		expires = "expires " + tok.Expires.Format(time.RFC3339)
	}
	scopes := o.scopes
	if scopes == nil {
		scopes = auth.DefaultScopes
	}
	fmt.Fprintf(stderr, "  scopes %s; repositories %s; refs %s; %s\n", strings.Join(scopes, ","), repos, refs, expires)
	_, err = fmt.Fprintln(stdout, secret)
	return err
}
