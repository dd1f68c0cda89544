package main

import "github.com/spf13/pflag"

var pushCmd = &command{
	name:    "push",
	aliases: []string{"upload"},
	summary: "Send commits of a local archive repository to a receive daemon",
	usage:   "[OPTIONS]",
	example: "  OSTREE_UPLOAD_TOKEN=… ostree-upload push -r repo -a https://ostree.example.com -b app/org.example/x86_64/stable",
	flags: func(fs *pflag.FlagSet) func([]string) error {
		fs.StringP("repo", "r", "repo", "local OSTree repository (archive mode)")
		fs.StringP("address", "a", "http://localhost:8080", "URL of the receive daemon")
		fs.StringP("token", "t", "", "API token (default: $OSTREE_UPLOAD_TOKEN)")
		fs.StringSliceP("branch", "b", nil, "ref to push; repeat or separate with commas (default: every local ref)")
		fs.IntP("jobs", "j", 4, "parallel uploads")
		fs.Bool("force", false, "allow refs to move backwards or to unrelated commits")
		fs.Bool("dry-run", false, "show what would be sent and which refs would move; change nothing")
		fs.Bool("prune", false, "prune the local repository before pushing")
		fs.BoolP("verbose", "v", false, "print debug messages")
		fs.BoolP("quiet", "q", false, "print errors only")
		return noArgs("push", func() error { return errNotYet("push") })
	},
}
