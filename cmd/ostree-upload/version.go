package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/pflag"
)

// Set at build time with -ldflags "-X main.version=… -X main.commit=…".
var (
	version = "dev"
	commit  = ""
)

func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return s.Value[:12]
			}
		}
	}
	return "unknown"
}

var versionCmd = &command{
	name:    "version",
	summary: "Print the version and the commit it was built from",
	example: `  ostree-upload version
  ostree-upload 1.2.0 (commit 77948e2d4c1a, go1.26.8)

  make build stamps both from git; a plain go build reports the commit
  from Go's build information, or "unknown".`,
	flags: func(fs *pflag.FlagSet) func([]string) error {
		return noArgs("version", func() error {
			fmt.Printf("ostree-upload %s (commit %s, %s)\n", version, buildCommit(), runtime.Version())
			return nil
		})
	},
}
