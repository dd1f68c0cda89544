package main

import "github.com/spf13/pflag"

var receiveCmd = &command{
	name:    "receive",
	summary: "Run the daemon that receives pushes into a production repository",
	usage:   "[OPTIONS]",
	example: "  ostree-upload receive -c /etc/ostree-upload.yaml -r /srv/repo -a :8080",
	flags: func(fs *pflag.FlagSet) func([]string) error {
		fs.StringP("config", "c", "ostree-upload.yaml", "configuration file")
		fs.StringP("repo", "r", "repo", "production OSTree repository (archive mode)")
		fs.StringP("address", "a", ":8080", "address to listen on")
		fs.String("state-dir", "", "directory for the journal, uploads and spool (on the repo's filesystem)")
		fs.BoolP("verbose", "v", false, "print debug messages")
		return noArgs("receive", func() error { return errNotYet("receive") })
	},
}
