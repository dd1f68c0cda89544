// Command ostree-upload publishes OSTree commits from a build machine to a
// production repository: "receive" runs the daemon in front of the
// production repo, "push" sends what it lacks, "gentoken" makes API tokens.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1  // a permanent failure
	exitUsage = 2  // bad command line
	exitRetry = 75 // EX_TEMPFAIL: rerunning the same command will resume
)

// command is one subcommand.
type command struct {
	name    string
	aliases []string
	summary string
	usage   string // after "ostree-upload NAME "
	example string
	flags   func(fs *pflag.FlagSet) func(args []string) error
}

var commands = []*command{gentokenCmd, receiveCmd, pushCmd, promoteCmd, sessionsCmd, tokensCmd, pruneCmd, sshServeCmd, shellCmd, versionCmd}

// usageError marks errors that are the caller's fault (exit 2).
type usageError struct{ error }

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	if strings.TrimPrefix(filepath.Base(os.Args[0]), "-") == shellName {
		os.Exit(runAsShell(os.Args[1:]))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		printUsage(stdout)
		return exitOK
	case "--version":
		args[0] = "version"
	}
	name := args[0] // the command's name or an alias, as typed
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(stderr, "ostree-upload: unknown command %q\n\n", name)
		printUsage(stderr)
		return exitUsage
	}
	fs := pflag.NewFlagSet("ostree-upload "+name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	action := cmd.flags(fs)
	fs.Usage = func() { printCommandUsage(stdout, cmd, name, fs) }
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "ostree-upload %s: %v\nRun 'ostree-upload %s --help' for usage.\n", name, err, name)
		return exitUsage
	}
	err := action(fs.Args())
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "ostree-upload %s: %v\n", name, err)
	var ue usageError
	var ee *exitError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ee):
		return ee.code
	}
	return exitFail
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
		for _, a := range c.aliases {
			if a == name {
				return c
			}
		}
	}
	return nil
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `ostree-upload publishes OSTree commits to a production repository over HTTP.

Usage:
  ostree-upload COMMAND [OPTIONS]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nRun 'ostree-upload COMMAND --help' for a command's options.\n")
}

// printCommandUsage prints the help of c, invoked as name (its name or
// an alias).
func printCommandUsage(w io.Writer, c *command, name string, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "%s\n\nUsage:\n  ostree-upload %s %s\n", c.summary, name, c.usage)
	switch {
	case name != c.name:
		fmt.Fprintf(w, "\n%s is an alias of %s.\n", name, c.name)
	case len(c.aliases) > 0:
		fmt.Fprintf(w, "\nAliases: %s\n", strings.Join(c.aliases, ", "))
	}
	if fs.HasFlags() {
		fmt.Fprintf(w, "\nOptions:\n%s", fs.FlagUsages())
	}
	if c.example != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", c.example)
	}
}

// noArgs wraps an action that takes no positional arguments.
func noArgs(name string, fn func() error) func([]string) error {
	return func(args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unexpected argument %q", args[0])}
		}
		return fn()
	}
}
