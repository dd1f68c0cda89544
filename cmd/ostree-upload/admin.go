package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/api/client"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/repository"
	"github.com/ostree-upload/ostree-upload/uploader"
)

// adminAPI is what the admin commands ask: the running daemon over HTTP,
// or the state dir of a stopped one.
type adminAPI interface {
	Sessions(ctx context.Context, all bool) ([]api.AdminSession, error)
	Session(ctx context.Context, id string) (api.AdminSession, error)
	Abort(ctx context.Context, id string) (api.AdminSession, error)
	Fail(ctx context.Context, id string) (api.AdminSession, error)
	Tokens(ctx context.Context) ([]api.Token, error)
	Revoke(ctx context.Context, which string) (api.Token, error)
	Close() error
}

// localAdmin answers from the state dir, acting as "local".
type localAdmin struct{ *repository.Service }

func (l localAdmin) Session(ctx context.Context, id string) (api.AdminSession, error) {
	return l.Service.AdminSession(ctx, id)
}

func (l localAdmin) Abort(ctx context.Context, id string) (api.AdminSession, error) {
	return l.Service.AbortSession(ctx, id, repository.ByLocal)
}

func (l localAdmin) Fail(ctx context.Context, id string) (api.AdminSession, error) {
	return l.Service.FailSession(ctx, id, repository.ByLocal)
}

func (l localAdmin) Revoke(ctx context.Context, which string) (api.Token, error) {
	return l.Service.Revoke(ctx, which, repository.ByLocal)
}

// adminFlags are the flags of the admin commands: where to ask, and how to
// print.
type adminFlags struct {
	address, token, tokenFile, cacert string
	config, repo, stateDir            string
	json                              bool
	fs                                *pflag.FlagSet
}

func (o *adminFlags) add(fs *pflag.FlagSet) {
	o.fs = fs
	fs.StringVarP(&o.address, "address", "a", "http://localhost:8080", "URL of the running daemon")
	fs.StringVarP(&o.token, "token", "t", "", "API token (default: $OSTREE_UPLOAD_TOKEN)")
	fs.StringVar(&o.tokenFile, "token-file", "", "read the API token from this file")
	fs.StringVar(&o.cacert, "cacert", "", "trust the daemon's certificate when it is signed by this PEM CA")
	fs.StringVarP(&o.config, "config", "c", "", "with the daemon stopped: its configuration file; read its state dir instead of asking it")
	fs.StringVarP(&o.repo, "repo", "r", "", "with -c: the production repo, if receive got it with -r (locates the default state dir); with a configuration of several repositories, the name of one")
	fs.StringVar(&o.stateDir, "state-dir", "", "with -c: the daemon's state dir, if receive got it with --state-dir")
	fs.BoolVar(&o.json, "json", false, "print JSON")
}

// local reports whether the command reads a state dir instead of asking a
// daemon.
func (o *adminFlags) local() bool { return o.config != "" }

func (o *adminFlags) check() error {
	if !o.local() && (o.fs.Changed("state-dir") || o.fs.Changed("repo")) {
		return usageError{errors.New("--state-dir and --repo go with -c CONFIG (a stopped daemon's files)")}
	}
	if o.local() && (o.fs.Changed("address") || o.token != "" || o.tokenFile != "" || o.cacert != "") {
		return usageError{errors.New("-c reads a stopped daemon's state dir; -a, --token, --token-file and --cacert ask a running one: use one or the other")}
	}
	return nil
}

// readToken returns the token from --token, --token-file or the
// environment.
func readToken(flag, file string) (string, error) {
	if flag != "" && file != "" {
		return "", usageError{errors.New("--token and --token-file go alone: give one")}
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
			return "", fmt.Errorf("--token-file %s: want the token alone on one line", file)
		}
		return tok, nil
	}
	if flag != "" {
		return flag, nil
	}
	return os.Getenv("OSTREE_UPLOAD_TOKEN"), nil
}

// open returns the admin interface the flags name.
func (o *adminFlags) open(ctx context.Context) (adminAPI, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	if !o.local() {
		tok, err := readToken(o.token, o.tokenFile)
		if err != nil {
			return nil, err
		}
		return client.NewAdmin(o.address, tok, o.cacert, 30*time.Second)
	}
	cfg, err := config.Load(o.config)
	if err != nil {
		return nil, err
	}
	name := "" // the repository of a daemon of several: -r names it
	switch {
	case o.repo != "" && cfg.Root != "":
		name = o.repo
	case o.repo != "":
		cfg.Repo = o.repo
	}
	if o.stateDir != "" {
		cfg.StateDir = o.stateDir
	}
	a, err := daemon.OpenAdmin(ctx, cfg, name, nil)
	if errors.Is(err, journal.ErrInUse) {
		return nil, fmt.Errorf("the daemon is running (it holds %s): ask it instead, with -a URL and a token with the admin scope", repository.StateDirOf(cfg))
	}
	if err != nil {
		return nil, err
	}
	return localAdmin{a}, nil
}

func adminContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

// subcommand splits "VERB [ID]" arguments.
func subcommand(args []string, verbs map[string]bool) (verb, arg string, err error) {
	if len(args) == 0 {
		return "", "", usageError{errors.New("missing subcommand")}
	}
	verb = args[0]
	takesArg, ok := verbs[verb]
	switch {
	case !ok:
		return "", "", usageError{fmt.Errorf("unknown subcommand %q", verb)}
	case takesArg && len(args) != 2:
		return "", "", usageError{fmt.Errorf("%s takes one argument", verb)}
	case !takesArg && len(args) != 1:
		return "", "", usageError{fmt.Errorf("%s takes no argument", verb)}
	case takesArg:
		arg = args[1]
	}
	return verb, arg, nil
}

var sessionsCmd = &command{
	name:    "sessions",
	summary: "List, show, abort, fail or commit push sessions (admin)",
	usage:   "list | show ID | abort ID | fail ID | commit ID  [OPTIONS]",
	example: `  # On the daemon's host, with a token that has the admin scope:
  export OSTREE_UPLOAD_TOKEN=$(cat /etc/ostree-upload/admin.token)
  ostree-upload sessions list -a https://ostree.example.com
  ostree-upload sessions show 3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b -a https://ostree.example.com
  ostree-upload sessions abort 3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b -a https://ostree.example.com

  # Publish what an upload-only token sent (push --no-publish), with a
  # token that has the publish scope:
  ostree-upload sessions commit 3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b -a https://ostree.example.com --token-file release.token
  # A staged session made with push --force needs --force here too.

  # With the daemon stopped, from its files:
  ostree-upload sessions list --all -c /etc/ostree-upload/ostree-upload.yaml --state-dir /srv/ostree/.repo.ostree-upload

  list shows open and publishing sessions; --all adds the ended ones the
  daemon keeps (a week by default). abort deletes the session's partial
  uploads; its verified objects stay for the token's next push. fail ends
  a publishing session whose publish keeps failing (the daemon's log says
  why) and says which of its refs had moved.`,
	flags: func(fs *pflag.FlagSet) func([]string) error {
		o := &adminFlags{}
		all := fs.Bool("all", false, "list: ended sessions too")
		force := fs.Bool("force", false, "commit: agree to publish another token's session made with force (refs may move backwards)")
		o.add(fs)
		return func(args []string) error {
			verb, id, err := subcommand(args, map[string]bool{"list": false, "show": true, "abort": true, "fail": true, "commit": true})
			if err != nil {
				return err
			}
			if *all && verb != "list" {
				return usageError{errors.New("--all goes with list")}
			}
			if *force && verb != "commit" {
				return usageError{errors.New("--force goes with commit")}
			}
			ctx, stop := adminContext()
			defer stop()
			if verb == "commit" {
				return retryable(commitSession(ctx, o, id, *force, os.Stdout))
			}
			a, err := o.open(ctx)
			if err != nil {
				return err
			}
			defer a.Close()
			return retryable(sessions(ctx, a, verb, id, *all, o.json, os.Stdout))
		}
	},
}

func sessions(ctx context.Context, a adminAPI, verb, id string, all, asJSON bool, w io.Writer) error {
	switch verb {
	case "list":
		ss, err := a.Sessions(ctx, all)
		return answer(w, asJSON, ss, err, printSessions)
	case "show":
		s, err := a.Session(ctx, id)
		return answer(w, asJSON, s, err, printSession)
	case "fail":
		s, err := a.Fail(ctx, id)
		return answer(w, asJSON, s, err, func(w io.Writer, s api.AdminSession, _ time.Time) {
			fmt.Fprintf(w, "failed session %s of token %s (%s): %s\n", s.ID, s.Token, refNames(s.Refs), s.Result)
		})
	}
	s, err := a.Abort(ctx, id)
	return answer(w, asJSON, s, err, func(w io.Writer, s api.AdminSession, _ time.Time) {
		fmt.Fprintf(w, "aborted session %s of token %s (%s)\n", s.ID, s.Token, refNames(s.Refs))
	})
}

// answer prints what an admin command got: as JSON, or for people.
func answer[T any](w io.Writer, asJSON bool, v T, err error, human func(io.Writer, T, time.Time)) error {
	switch {
	case err != nil:
		return err
	case asJSON:
		return printJSON(w, v)
	}
	human(w, v, time.Now())
	return nil
}

// retryable gives failures that may pass (the daemon unreachable or
// answering 5xx past the retry budget) exit code 75.
func retryable(err error) error {
	if err != nil && uploader.Temporary(err) {
		return &exitError{code: exitRetry, err: fmt.Errorf("%w\nthe daemon did not answer in time: run the command again", err)}
	}
	return err
}

func commitSession(ctx context.Context, o *adminFlags, id string, force bool, w io.Writer) error {
	if o.local() {
		return usageError{errors.New("commit asks the running daemon: give -a URL and a token with the publish scope, not -c")}
	}
	a, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer a.Close()
	s, err := a.(*client.Admin).Commit(ctx, id, force)
	return answer(w, o.json, s, err, func(w io.Writer, s api.Session, _ time.Time) {
		for _, r := range s.Refs {
			fmt.Fprintf(w, "%s: updated %s → %s\n", r.Name, short(r.Old), short(r.New))
		}
		if s.Result != "" && s.Result != "published" {
			fmt.Fprintf(w, "%s\n", s.Result)
		}
	})
}

var tokensCmd = &command{
	name:    "tokens",
	summary: "List, create or revoke API tokens (admin)",
	usage:   "list | create | revoke NAME|ID  [OPTIONS]",
	example: `  ostree-upload tokens list -a https://ostree.example.com --token-file admin.token
  ostree-upload tokens revoke ci-old -a https://ostree.example.com --token-file admin.token

  # A token for one CI job: one repository, its refs, an hour:
  export OSTREE_UPLOAD_TOKEN=$(ostree-upload tokens create -a https://ostree.example.com \
      --token-file admin.token --repo beta --ref 'app/org.example.App/*' --expires-in 1h)

  # With the daemon stopped:
  ostree-upload tokens revoke ci-old -c /etc/ostree-upload/ostree-upload.yaml --state-dir /srv/ostree/.repo.ostree-upload

  A revoked token is refused at once and for good, even while its entry
  stays in the configuration file, and its open sessions are aborted.
  Remove the entry when convenient; SIGHUP rereads the file. New tokens
  come from gentoken.`,
	flags: func(fs *pflag.FlagSet) func([]string) error {
		o := &adminFlags{}
		o.add(fs)
		m := &mintOptions{}
		m.add(fs)
		return func(args []string) error {
			verb, which, err := subcommand(args, map[string]bool{"list": false, "revoke": true, "create": false})
			if err != nil {
				return err
			}
			if verb == "create" {
				return mintToken(o, m, os.Stdout)
			}
			ctx, stop := adminContext()
			defer stop()
			a, err := o.open(ctx)
			if err != nil {
				return err
			}
			defer a.Close()
			return retryable(tokens(ctx, a, verb, which, o.json, os.Stdout))
		}
	},
}

func tokens(ctx context.Context, a adminAPI, verb, which string, asJSON bool, w io.Writer) error {
	if verb == "list" {
		ts, err := a.Tokens(ctx)
		return answer(w, asJSON, ts, err, printTokens)
	}
	t, err := a.Revoke(ctx, which)
	return answer(w, asJSON, t, err, func(w io.Writer, t api.Token, _ time.Time) {
		fmt.Fprintf(w, "revoked token %s (id %s) on %s by %s; it is refused from now on and its open sessions were aborted\n",
			t.Name, t.ID, t.Revoked.UTC().Format(time.RFC3339), t.RevokedBy)
	})
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func refNames(refs []api.RefUpdate) string {
	names := make([]string, len(refs))
	for i, r := range refs {
		names[i] = r.Name
	}
	return strings.Join(names, ",")
}

// ago says how long before now t was, coarsely.
func ago(t, now time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func printSessions(w io.Writer, ss []api.AdminSession, now time.Time) {
	if len(ss) == 0 {
		fmt.Fprintln(w, "no sessions")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tTOKEN\tSTATE\tREFS\tVERIFIED\tBYTES\tLAST ACTIVITY")
	for _, s := range ss {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", s.ID, s.Token, s.State, refNames(s.Refs),
			s.Verified, s.Objects, humanBytes(s.Bytes), ago(s.Updated, now))
	}
	tw.Flush()
}

func printSession(w io.Writer, s api.AdminSession, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "session\t%s\n", s.ID)
	fmt.Fprintf(tw, "token\t%s (id %s)\n", s.Token, s.TokenID)
	fmt.Fprintf(tw, "state\t%s\n", s.State)
	if s.Result != "" {
		fmt.Fprintf(tw, "result\t%s\n", s.Result)
	}
	fmt.Fprintf(tw, "created\t%s (%s)\n", s.Created.UTC().Format(time.RFC3339), ago(s.Created, now))
	fmt.Fprintf(tw, "last activity\t%s (%s)\n", s.Updated.UTC().Format(time.RFC3339), ago(s.Updated, now))
	force := ""
	if s.Force {
		force = " (forced)"
	}
	for i, r := range s.Refs {
		label := ""
		if i == 0 {
			label = "refs" + force
		}
		old := r.Old
		if old == "" {
			old = "(new)"
		}
		fmt.Fprintf(tw, "%s\t%s: %s → %s\n", label, r.Name, old, r.New)
	}
	fmt.Fprintf(tw, "objects\t%d of %d verified (%s)\n", s.Verified, s.Objects, humanBytes(s.Bytes))
	tw.Flush()
	if len(s.Uploads) > 0 {
		fmt.Fprintf(w, "unfinished uploads:\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, u := range s.Uploads {
			fmt.Fprintf(tw, "  %s\t%s of %s\t%s\t%s\n", u.Object, humanBytes(u.Offset), humanBytes(u.Size), u.State, u.URL)
		}
		tw.Flush()
	}
}

func printTokens(w io.Writer, ts []api.Token, now time.Time) {
	if len(ts) == 0 {
		fmt.Fprintln(w, "no tokens")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tSCOPES\tREFS\tSTATE\tOPEN SESSIONS\tLAST ACTIVITY")
	for _, t := range ts {
		refs := strings.Join(t.Refs, ",")
		if refs == "" {
			refs = "*"
		}
		scopes := strings.Join(t.Scopes, ",")
		if scopes == "" {
			scopes = "-"
		}
		state := "active"
		switch {
		case t.Revoked != nil:
			state = "revoked " + t.Revoked.UTC().Format("2006-01-02") + " by " + t.RevokedBy
			if !t.Configured {
				state += " (not configured)"
			}
		case t.Expires != nil && t.Expires.Before(now):
			state = "expired " + t.Expires.UTC().Format("2006-01-02")
		case t.Expires != nil:
			state = "expires " + t.Expires.UTC().Format("2006-01-02")
		}
		last := "-"
		if t.LastActivity != nil {
			last = ago(*t.LastActivity, now)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", t.Name, t.ID, scopes, refs, state, t.OpenSessions, last)
	}
	tw.Flush()
}

var pruneCmd = &command{
	name:    "prune",
	summary: "Remove the production repository's history beyond a depth (admin)",
	usage:   "[--depth N] [--dry-run]  [OPTIONS]",
	example: `  # What keeping each ref's commit and its 3 parents would free:
  ostree-upload prune --depth 3 --dry-run -a https://ostree.example.com --token-file admin.token
  # Then do it (or set prune_depth for the repository and leave --depth out):
  ostree-upload prune --depth 3 -a https://ostree.example.com --token-file admin.token

  The daemon prunes between publishes, as ostree prune --refs-only
  --depth=N would, and keeps what the sessions not yet published count on
  finding in the repository. --depth -1 keeps every ancestor of every ref
  and removes only what no ref reaches.`,
	flags: func(fs *pflag.FlagSet) func([]string) error {
		o := &adminFlags{}
		depth := fs.Int("depth", 0, "parents kept below each ref's commit (-1: all); default the repository's prune_depth")
		dryRun := fs.Bool("dry-run", false, "count what would go; remove nothing")
		o.add(fs)
		return func(args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("prune takes no argument, not %q", args[0])}
			}
			if o.local() {
				return usageError{errors.New("prune runs in the daemon: give -a URL and a token with the admin scope, not -c (with the daemon stopped, ostree prune does the same)")}
			}
			req := api.PruneRequest{DryRun: *dryRun}
			if fs.Changed("depth") {
				req.Depth = depth
			}
			ctx, stop := adminContext()
			defer stop()
			tok, err := readToken(o.token, o.tokenFile)
			if err != nil {
				return err
			}
			if err := o.check(); err != nil {
				return err
			}
			a, err := client.NewAdmin(o.address, tok, o.cacert, 30*time.Second)
			if err != nil {
				return err
			}
			defer a.Close()
			res, err := a.Prune(ctx, req)
			return retryable(answer(os.Stdout, o.json, res, err, printPrune))
		}
	},
}

func printPrune(w io.Writer, r api.PruneResult, _ time.Time) {
	verb := "removed"
	if r.DryRun {
		verb = "would remove"
	}
	fmt.Fprintf(w, "depth %d: %s %d of %d objects (%s)\n", r.Depth, verb, r.Pruned, r.Objects, humanBytes(int64(r.Bytes)))
	if r.Kept > 0 {
		fmt.Fprintf(w, "kept %d objects beyond the depth that sessions not yet published count on\n", r.Kept)
	}
}
