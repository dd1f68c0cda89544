package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/ostree-upload/ostree-upload/api/client"
	"github.com/ostree-upload/ostree-upload/uploader"
)

var pushCmd = &command{
	name:    "push",
	aliases: []string{"upload"},
	summary: "Send commits of a local repository to a receive daemon",
	usage:   "[OPTIONS] [DESTINATION]",
	example: `  export OSTREE_UPLOAD_TOKEN=…        # safer than --token in CI
  ostree-upload push -r repo -a https://ostree.example.com -b app/org.example.App/x86_64/stable
  ostree-upload push -r repo -b main,testing --dry-run

  # Over ssh, as the account the host maps to repositories and refs (no
  # token): ssh://[user@]host[:port]/path or [user@]host:path
  ostree-upload push -r repo ssh://ostree@ostree.example.com/srv/repo -b app/org.example.App/x86_64/stable

  # Two-step release: CI uploads with an upload-only token, a release
  # manager publishes the session it printed:
  ostree-upload push -r repo -a https://ostree.example.com --token-file upload.token --no-publish
  ostree-upload sessions commit SESSION -a https://ostree.example.com --token-file release.token

  Exit codes: 0 done (or nothing to do); 75 interrupted for longer than
  --retry-timeout: rerun the same command, on any machine, to resume;
  1 refused (bad token, non-fast-forward, corrupt local object, the
  daemon's check…).`,
	flags: func(fs *pflag.FlagSet) func([]string) error {
		repo := fs.StringP("repo", "r", "repo", "local OSTree repository (archive, bare or bare-user)")
		addr := fs.StringP("address", "a", "http://localhost:8080", "URL of the receive daemon, or a repository over ssh (as DESTINATION)")
		sshCommand := fs.String("ssh-command", "", "over ssh: the ssh command, run by sh with ssh's arguments after it (default: $OSTREE_UPLOAD_SSH, or ssh)")
		remote := fs.String("command", "ostree-upload", "over ssh: the program to run on the host, when it is not on the host's PATH")
		token := fs.StringP("token", "t", "", "API token (default: $OSTREE_UPLOAD_TOKEN)")
		tokenFile := fs.String("token-file", "", "read the API token from this file")
		branches := fs.StringSliceP("branch", "b", nil, "ref to push; repeat or separate with commas (default: every local ref)")
		jobs := fs.IntP("jobs", "j", 4, "parallel uploads")
		force := fs.Bool("force", false, "allow refs to move backwards or to unrelated commits")
		dryRun := fs.Bool("dry-run", false, "ask the daemon to judge each ref as it would judge the push; send no object, change nothing")
		noPublish := fs.Bool("no-publish", false, "upload everything but leave the refs alone: a token with the publish scope commits the session later")
		prune := fs.Bool("prune", false, "prune the local repository before pushing")
		retry := fs.Duration("retry-timeout", 5*time.Minute, "how long to keep retrying a failing step before giving up with exit code 75")
		verbose := fs.BoolP("verbose", "v", false, "print debug messages")
		quiet := fs.BoolP("quiet", "q", false, "print errors only")
		cacert := fs.String("cacert", "", "trust the daemon's certificate when it is signed by this PEM CA (e.g. self-signed)")
		stats := fs.String("stats-json", "", "write figures of the push (phases, objects, bytes, retries) as JSON to this file")
		return func(args []string) error {
			if len(args) > 1 {
				return usageError{fmt.Errorf("unexpected argument %q: one destination at most", args[1])}
			}
			if len(args) == 1 {
				if fs.Changed("address") {
					return usageError{errors.New("give the destination once: as an argument or with --address")}
				}
				*addr = args[0]
			}
			if *jobs < 1 || *jobs > 64 {
				return usageError{fmt.Errorf("--jobs must be 1 to 64, not %d", *jobs)}
			}
			_, overSSH, err := client.ParseSSH(*addr)
			if err != nil {
				return usageError{err}
			}
			var tok string
			if overSSH {
				// The host knows who pushes from the ssh login: a token
				// in the environment is for HTTP pushes and stays unused.
				if *token != "" || *tokenFile != "" {
					return usageError{errors.New("no token over ssh, where the host knows the unix account: drop --token and --token-file")}
				}
				if *sshCommand == "" {
					*sshCommand = os.Getenv("OSTREE_UPLOAD_SSH")
				}
			} else if tok, err = readToken(*token, *tokenFile); err != nil {
				return err
			}
			opts := uploader.Options{
				Repo: *repo, Address: *addr, Token: tok, Refs: *branches, Jobs: *jobs,
				SSHCommand: *sshCommand, RemoteCommand: *remote,
				Force: *force, DryRun: *dryRun, NoPublish: *noPublish, Prune: *prune, RetryTimeout: *retry, CACert: *cacert,
				Log: newLogger(*verbose),
			}
			if !*quiet {
				opts.Progress = os.Stderr
				opts.Terminal = term(os.Stderr)
			}
			return push(opts, *quiet, *stats)
		}
	},
}

func short(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	if c == "" {
		return "(new)"
	}
	return c
}

func push(opts uploader.Options, quiet bool, statsFile string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := uploader.Push(ctx, opts)
	if res != nil && statsFile != "" {
		if werr := writeStats(statsFile, res, err); werr != nil {
			fmt.Fprintf(os.Stderr, "ostree-upload: %v\n", werr)
		}
	}
	if res != nil && !quiet {
		if n := len(res.GeneratedRefs); n > 0 {
			fmt.Fprintf(os.Stderr, "not pushing %d ref(s) the production side generates itself (%s); name them with -b to push them\n",
				n, strings.Join(res.GeneratedRefs, ", "))
		}
		for _, r := range res.Refs {
			switch r.Status {
			case "up to date":
				fmt.Printf("%s: up to date (%s)\n", r.Ref, short(r.New))
			case uploader.SameContent:
				fmt.Printf("%s: %s as %s; the rebuild %s is not published\n", r.Ref, r.Status, short(r.Old), short(r.New))
			case "":
				fmt.Printf("%s: not moved: %s → %s\n", r.Ref, short(r.Old), short(r.New))
			case "refused":
				fmt.Printf("%s: refused: %s\n", r.Ref, r.Reason)
			default:
				line := fmt.Sprintf("%s: %s %s → %s", r.Ref, r.Status, short(r.Old), short(r.New))
				if r.Reason != "" {
					line += " (" + r.Reason + ")"
				}
				fmt.Println(line)
			}
		}
		if res.DryRun {
			fmt.Fprintf(os.Stderr, "dry run: would offer %d objects (%s); nothing was sent or changed\n", res.Objects, humanBytes(res.BytesPlanned))
		} else if res.Objects > 0 {
			// Only objects the daemon verified count as sent; what went
			// on the wire also holds bytes sent again and tar framing.
			sent := fmt.Sprint(res.Sent)
			if res.Sent < res.ToSend {
				sent = fmt.Sprintf("%d of %d", res.Sent, res.ToSend)
			}
			fmt.Fprintf(os.Stderr, "sent %s objects (%s; %s on the wire), skipped %d already on the daemon, %d retries, in %s\n",
				sent, humanBytes(res.BytesDone), humanBytes(res.BytesSent), res.Skipped, res.Retries, res.Duration.Round(time.Millisecond))
		}
	}
	if err == nil && opts.NoPublish && res.SessionID != "" {
		// Printed even with --quiet: the next step needs it.
		if res.CanPublish {
			fmt.Printf("session %s is uploaded; publish it with this token: ostree-upload sessions commit %s -a %s\n", res.SessionID, res.SessionID, opts.Address)
		} else {
			fmt.Printf("session %s is uploaded and waits for a publisher: ostree-upload sessions commit %s -a %s\n", res.SessionID, res.SessionID, opts.Address)
		}
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		err = errors.New("stopped by a signal")
	}
	if uploader.Temporary(err) {
		return &exitError{code: exitRetry, err: fmt.Errorf("%w\ninterrupted: rerun the same command to resume", err)}
	}
	return err
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// pushStats is what --stats-json writes.
type pushStats struct {
	Seconds          float64 `json:"seconds"`
	PlanSeconds      float64 `json:"plan_seconds"`
	NegotiateSeconds float64 `json:"negotiate_seconds"`
	UploadSeconds    float64 `json:"upload_seconds"`
	CommitSeconds    float64 `json:"commit_seconds"`
	Objects          int     `json:"objects"`
	Sent             int     `json:"sent"`
	Skipped          int     `json:"skipped"`
	Bytes            int64   `json:"bytes"`          // read into requests: sent again after retries, tar framing included
	BytesVerified    int64   `json:"bytes_verified"` // of the objects sent
	Packs            int     `json:"packs"`
	Uploads          int     `json:"uploads"`
	Retries          int64   `json:"retries"`
	Session          string  `json:"session"`
	Error            string  `json:"error,omitempty"`
}

func writeStats(path string, res *uploader.Result, pushErr error) error {
	st := pushStats{
		Seconds: res.Duration.Seconds(), PlanSeconds: res.Phases.Plan.Seconds(),
		NegotiateSeconds: res.Phases.Negotiate.Seconds(), UploadSeconds: res.Phases.Upload.Seconds(),
		CommitSeconds: res.Phases.Commit.Seconds(), Objects: res.Objects, Sent: res.Sent, Skipped: res.Skipped,
		Bytes: res.BytesSent, BytesVerified: res.BytesDone, Packs: res.Packs, Uploads: res.Uploads, Retries: res.Retries, Session: res.SessionID,
	}
	if pushErr != nil {
		st.Error = pushErr.Error()
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--stats-json: %w", err)
	}
	return nil
}
