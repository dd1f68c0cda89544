package main

import "github.com/spf13/pflag"

var gentokenCmd = &command{
	name:    "gentoken",
	summary: "Create an API token and add its hash to the token file",
	usage:   "[OPTIONS]",
	example: "  ostree-upload gentoken -c /etc/ostree-upload.yaml --name ci --ref 'app/*'",
	flags: func(fs *pflag.FlagSet) func([]string) error {
		fs.StringP("config", "c", "ostree-upload.yaml", "configuration file holding the tokens")
		fs.String("name", "", "name of the token, for logs and revocation")
		fs.StringArray("ref", nil, "limit the token to refs matching this glob (repeatable)")
		fs.Duration("expires", 0, "make the token expire after this duration (e.g. 720h)")
		fs.BoolP("verbose", "v", false, "print debug messages")
		return noArgs("gentoken", func() error { return errNotYet("gentoken") })
	},
}
