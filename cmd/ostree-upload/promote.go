package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/api/client"
)

var promoteCmd = &command{
	name:    "promote",
	summary: "Publish a commit of one repository in another of the same daemon, without uploading it",
	usage:   "REF --from REPOSITORY -a URL/DESTINATION [OPTIONS]",
	example: `  # beta's app/org.example.App/x86_64/master becomes stable's:
  ostree-upload promote app/org.example.App/x86_64/master --from beta -a https://ostree.example.com/stable

  The daemon hard-links the commit's objects that the destination lacks and
  publishes them like a push: the update rule, ref bindings, signing with
  the destination's keys, hooks and the atomic publish all apply. The token
  needs the upload and publish scopes, both repositories and the refs.`,
	flags: func(fs *pflag.FlagSet) func([]string) error {
		var address, token, tokenFile, cacert, from, to, commit string
		var force, dryRun, asJSON bool
		fs.StringVarP(&address, "address", "a", "http://localhost:8080", "URL of the destination repository (the daemon's address, then /NAME for a daemon of several)")
		fs.StringVarP(&token, "token", "t", "", "API token (default: $OSTREE_UPLOAD_TOKEN)")
		fs.StringVar(&tokenFile, "token-file", "", "read the API token from this file")
		fs.StringVar(&cacert, "cacert", "", "trust the daemon's certificate when it is signed by this PEM CA")
		fs.StringVar(&from, "from", "", "the source repository's name (default: the destination itself)")
		fs.StringVar(&to, "to-ref", "", "the destination ref (default: REF)")
		fs.StringVar(&commit, "commit", "", "refuse unless REF points at this commit in the source")
		fs.BoolVarP(&force, "force", "f", false, "allow an older commit or a same-content republish, as push --force")
		fs.BoolVarP(&dryRun, "dry-run", "n", false, "check only; publish nothing")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		return func(args []string) error {
			if len(args) != 1 {
				return usageError{errors.New("promote takes one REF")}
			}
			tok, err := readToken(token, tokenFile)
			if err != nil {
				return err
			}
			a, err := client.NewAdmin(address, tok, cacert, 30*time.Second)
			if err != nil {
				return err
			}
			defer a.Close()
			ctx, stop := adminContext()
			defer stop()
			start := time.Now()
			req := api.PromoteRequest{From: from, Ref: args[0], To: to, Commit: commit, Force: force, DryRun: dryRun}
			s, err := a.Promote(ctx, req)
			return retryable(answer(os.Stdout, asJSON, s, err, func(w io.Writer, s api.Session, _ time.Time) {
				printPromoted(w, req, s, time.Since(start))
			}))
		}
	},
}

func printPromoted(w io.Writer, req api.PromoteRequest, s api.Session, took time.Duration) {
	src := req.From
	if src == "" {
		src = "this repository"
	}
	if strings.HasPrefix(s.Result, "up to date") {
		fmt.Fprintln(w, s.Result)
		return
	}
	for _, r := range s.Refs {
		verb := "promoted"
		if req.DryRun {
			verb = "would promote"
		}
		fmt.Fprintf(w, "%s %s of %s to %s: %s (%d objects linked, %s)\n", verb, req.Ref, src, r.Name, r.New, s.Verified, took.Round(time.Millisecond))
	}
}

// mintOptions are the options of tokens create.
type mintOptions struct {
	name    string
	refs    []string
	scopes  []string
	expires time.Duration
}

func (m *mintOptions) add(fs *pflag.FlagSet) {
	fs.StringVar(&m.name, "name", "", "create: the new token's name (default ci-ID)")
	fs.StringSliceVar(&m.refs, "ref", nil, "create: a ref glob the new token may push (repeatable; default the admin token's)")
	fs.StringSliceVar(&m.scopes, "scope", nil, "create: upload or publish (repeatable; default both)")
	fs.DurationVar(&m.expires, "expires-in", time.Hour, "create: the new token's lifetime, at most 168h")
}

// mintToken asks the running daemon for a token for a CI job and prints
// its secret (alone on its line, for $(...)) or the JSON answer.
func mintToken(o *adminFlags, m *mintOptions, w io.Writer) error {
	if o.local() {
		return usageError{errors.New("tokens create asks a running daemon (-a URL); with the daemon stopped, gentoken adds a token to its configuration file")}
	}
	tok, err := readToken(o.token, o.tokenFile)
	if err != nil {
		return err
	}
	a, err := client.NewAdmin(o.address, tok, o.cacert, 30*time.Second)
	if err != nil {
		return err
	}
	defer a.Close()
	ctx, stop := adminContext()
	defer stop()
	req := api.TokenRequest{Name: m.name, Repos: splitList(o.repo), Refs: m.refs, Scopes: m.scopes, ExpiresIn: int64(m.expires / time.Second)}
	t, err := a.Mint(ctx, req)
	return retryable(answer(w, o.json, t, err, func(w io.Writer, t api.MintedToken, _ time.Time) {
		fmt.Fprintln(w, t.Secret)
		fmt.Fprintf(os.Stderr, "token %s (id %s), scopes %s, repositories %s, refs %s, expires %s\n", t.Name, t.ID,
			strings.Join(t.Scopes, ","), orAll(t.Repos), orAll(t.Refs), t.Expires.UTC().Format(time.RFC3339))
	}))
}

func orAll(globs []string) string {
	if len(globs) == 0 {
		return "all"
	}
	return strings.Join(globs, ",")
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
