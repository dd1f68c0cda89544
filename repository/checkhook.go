package repository

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/service"
	"github.com/ostree-upload/ostree-upload/spool"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// checksDir is the directory of the state dir that holds the check
// repositories of the checks running; whatever is in it at start-up was
// left by a crash and goes.
const checksDir = "checks"

// removeChecks deletes what a crash left in the checks directory.
func (s *Service) removeChecks() error {
	if err := removeTree(filepath.Join(s.stateDir, checksDir)); err != nil {
		return fmt.Errorf("removing the check repositories a crash left: %w", err)
	}
	return nil
}

// runCheck runs check_hook, if the repository has one, on a publish whose
// checks passed (preparePublish): before anything is journaled and outside
// the publish lock, under the session's lock. updates are the refs that
// move, and sess.Refs the same. The hook gets a check repository in which
// the new commits are complete, removed when it ends. Exit status 0 lets
// the publish go on; anything else (a failure, check_timeout passed, a hook
// that cannot run) refuses it with api.CodeCheckFailed and the end of its
// output, and nothing changes (the session stays open; Commit and Promote
// say what to do next). A daemon that drains
// meanwhile stops the hook and answers that it is restarting.
func (s *Service) runCheck(ctx context.Context, sess journal.Session, sp *spool.Spool, updates []store.RefUpdate, plan publishPlan) error {
	if len(s.cfg.CheckHook) == 0 {
		return nil
	}
	dir, err := filepath.Abs(filepath.Join(s.stateDir, checksDir, sess.ID))
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if err := removeTree(dir); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	defer func() {
		if err := removeTree(dir); err != nil {
			s.log.Warn("cannot remove a check repository (the next start removes it)", "session", sess.ID, "err", err)
		}
	}()
	detached := map[object.Checksum][]byte{}
	for _, u := range updates {
		meta, err := s.mergedMeta(ctx, u.New, plan.sigs[u.New])
		if err != nil {
			return metaLimit(u, err)
		}
		detached[u.New] = meta
	}
	// The links keep the objects once made: the spool may release them
	// while the hook runs.
	if err := sp.Read(func(r *store.Repo) error { return s.repo.MakeCheckRepo(ctx, dir, r, updates, detached) }); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	env, err := s.checkEnv(sess, dir)
	if err != nil {
		return err
	}
	hctx, cancel := context.WithTimeout(ctx, s.cfg.CheckTimeout.Duration)
	defer cancel()
	defer context.AfterFunc(s.drained, cancel)()
	run := runHook(hctx, env, s.cfg.CheckHook)
	log := []any{"token", sess.OwnerName, "refs", refMoves(sess), "session", sess.ID, "duration", run.took.Round(time.Millisecond)}
	if s.drained.Err() != nil && run.killed {
		s.log.Warn("check_hook stopped: the daemon is stopping", log...)
		return service.Restarting("the publish's check was stopped before it ended, and nothing was published")
	}
	s.metrics.checkSeconds.Observe(run.took.Seconds())
	var why string
	outcome := checkFailed
	switch {
	case run.killed:
		outcome = checkTimeout
		why = fmt.Sprintf("check_hook did not end within check_timeout (%s) and was killed with its processes", s.cfg.CheckTimeout.Duration)
	case run.err == nil:
		outcome = checkPassed
	default:
		why = describeExit(run.err)
	}
	s.metrics.checkRuns.WithLabelValues(outcome).Inc()
	if outcome == checkPassed {
		s.log.Info("check_hook passed", log...)
		return nil
	}
	lines := checkOutput(run.output)
	s.log.Warn("check_hook refused the publish", append(log, "outcome", outcome, "reason", why, "output", strings.Join(lines, "\n"))...)
	e := refuse(service.Unprocessable, "%s: nothing was published", why)
	e.Body.Code, e.Body.Output = api.CodeCheckFailed, lines
	return e
}

// checkEnv is what check_hook finds in its environment besides the
// daemon's: update_hook's variables, and the old commits, the token's
// name, the repository's name (on a daemon of several) and the check
// repository.
func (s *Service) checkEnv(sess journal.Session, dir string) ([]string, error) {
	repo, err := filepath.Abs(s.repo.Path())
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	var refs, commits, olds []string
	for _, r := range sess.Refs {
		refs = append(refs, r.Ref)
		commits = append(commits, r.Ref+"="+r.New)
		olds = append(olds, r.Ref+"="+r.Old)
	}
	env := []string{
		"OSTREE_RECEIVE_REPO=" + repo,
		"OSTREE_RECEIVE_REFS=" + strings.Join(refs, " "),
		"OSTREE_UPLOAD_SESSION=" + sess.ID,
		"OSTREE_UPLOAD_COMMITS=" + strings.Join(commits, " "),
		"OSTREE_UPLOAD_OLD_COMMITS=" + strings.Join(olds, " "),
		"OSTREE_UPLOAD_TOKEN_NAME=" + sess.OwnerName,
		"OSTREE_UPLOAD_CHECK_REPO=" + dir,
	}
	if s.name != "" {
		env = append(env, "OSTREE_UPLOAD_REPO_NAME="+s.name)
	}
	return env, nil
}

// hookRun is how a run of a hook ended.
type hookRun struct {
	err    error  // nil: exit status 0
	killed bool   // its context ended first: it was killed
	output string // the end of its output (stdout and stderr together)
	took   time.Duration
}

// maxHookOutput is how much of a hook's output is kept, from its end.
const maxHookOutput = 16 << 10

// runHook runs argv with env added to the daemon's environment, in a
// process group of its own, until it exits or ctx ends; then every process
// left in its group is killed (those a hook started in the background
// too), so that none outlives the run. The hook also dies with the daemon.
func runHook(ctx context.Context, env []string, argv []string) hookRun {
	start := time.Now()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	pr, pw, err := os.Pipe()
	if err != nil {
		return hookRun{err: err, took: time.Since(start)}
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		return hookRun{err: err, took: time.Since(start)}
	}
	out := &tailBuffer{max: maxHookOutput}
	copied := make(chan struct{})
	go func() { io.Copy(out, pr); close(copied) }()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	group := -cmd.Process.Pid
	run := hookRun{}
	select {
	case run.err = <-exited:
	case <-ctx.Done():
		syscall.Kill(group, syscall.SIGKILL)
		run.err, run.killed = <-exited, true
	}
	run.took = time.Since(start)
	syscall.Kill(group, syscall.SIGKILL) // what it left behind
	select {
	case <-copied:
	case <-time.After(time.Second): // a process that left the group holds the pipe
	}
	pr.Close()
	<-copied
	run.output = out.String()
	return run
}

// describeExit says how a hook that did not succeed ended.
func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Sprintf("check_hook ended on signal %d (%v)", int(ws.Signal()), ws.Signal())
		}
		return fmt.Sprintf("check_hook exited with status %d", ee.ExitCode())
	}
	return fmt.Sprintf("check_hook could not run: %v", err)
}

// checkOutput is the end of a check's output as its client gets it: the
// last api.MaxCheckOutputLines lines, of api.MaxCheckOutputBytes bytes
// together at most (a longer last line keeps its end), in valid UTF-8, with
// every control character but the tab replaced, so that a terminal that
// prints them does nothing but print.
func checkOutput(out string) []string {
	out = strings.TrimSpace(out)
	if out == "" {
		return nil
	}
	lines := strings.Split(out, "\n")
	if n := len(lines); n > api.MaxCheckOutputLines {
		lines = lines[n-api.MaxCheckOutputLines:]
	}
	for i, l := range lines {
		lines[i] = strings.Map(func(r rune) rune {
			if r != '\t' && unicode.IsControl(r) {
				return utf8.RuneError
			}
			return r
		}, strings.ToValidUTF8(strings.TrimRight(l, "\r"), string(utf8.RuneError)))
	}
	total := 0
	for i := len(lines) - 1; i >= 0; i-- {
		if total+len(lines[i]) <= api.MaxCheckOutputBytes {
			total += len(lines[i])
			continue
		}
		if i == len(lines)-1 {
			l := lines[i][len(lines[i])-api.MaxCheckOutputBytes:]
			for len(l) > 0 && !utf8.RuneStart(l[0]) {
				l = l[1:]
			}
			return []string{l}
		}
		return lines[i+1:]
	}
	return lines
}

// removeTree deletes dir and everything in it, also where a hook took the
// write permission of a directory away.
func removeTree(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
