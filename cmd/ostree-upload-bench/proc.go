package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// usage is what the kernel accounted for a finished process.
type usage struct {
	WallSeconds float64 `json:"wall_seconds"`
	MaxRSSKiB   int64   `json:"max_rss_kib"`
	CPUSeconds  float64 `json:"cpu_seconds"` // user + system
	ExitCode    int     `json:"exit_code"`
}

func usageOf(ps *os.ProcessState, wall time.Duration) usage {
	u := usage{WallSeconds: wall.Seconds(), ExitCode: ps.ExitCode()}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		u.MaxRSSKiB = ru.Maxrss
		u.CPUSeconds = tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
	}
	return u
}

func tvSeconds(tv syscall.Timeval) float64 {
	return float64(tv.Sec) + float64(tv.Usec)/1e6
}

// nsCommand returns a command that runs argv inside namespace ns. ip netns
// exec replaces itself with argv, so the process, its id and its rusage are
// argv's own. The process gets its own process group (a terminal's ^C goes to
// the bench, which stops it in order) and is killed if the bench dies.
func nsCommand(ns string, env []string, argv ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// runClient runs argv in ns to completion and measures it. A non-zero exit is
// not an error: the exit code is in the result. Its output goes to logPath.
func runClient(ctx context.Context, ns string, env []string, logPath string, argv ...string) (usage, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return usage{}, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "$ %s\n", strings.Join(argv, " "))
	cmd := nsCommand(ns, env, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return usage{}, fmt.Errorf("start %s: %w", argv[0], err)
	}
	stop := context.AfterFunc(ctx, func() { killGroup(cmd.Process.Pid, syscall.SIGTERM) })
	err = cmd.Wait()
	wall := time.Since(start)
	stop()
	if ctx.Err() != nil {
		return usage{}, ctx.Err()
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return usage{}, fmt.Errorf("%s: %w", argv[0], err)
	}
	return usageOf(cmd.ProcessState, wall), nil
}

// server is a long-running process in a namespace.
type server struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	started time.Time
	done    chan struct{}
	waitErr error
}

// startServer starts argv in ns with its output in logPath.
func startServer(ns, name, logPath string, env []string, argv ...string) (*server, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := nsCommand(ns, env, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &server{name: name, cmd: cmd, logPath: logPath, started: time.Now(), done: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	return s, nil
}

// exited reports whether the server has stopped by itself.
func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then kills the process group, and
// returns the server's rusage (its wall time is its whole life).
func (s *server) stop(grace time.Duration) (usage, error) {
	if !s.exited() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(grace):
			killGroup(s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
			return usageOf(s.cmd.ProcessState, time.Since(s.started)), fmt.Errorf("%s did not stop within %s after SIGTERM", s.name, grace)
		}
	}
	killGroup(s.cmd.Process.Pid, syscall.SIGKILL) // children that outlived it (nginx workers)
	return usageOf(s.cmd.ProcessState, time.Since(s.started)), nil
}

// logTail returns the end of the server's log, for error messages.
func (s *server) logTail() string { return fileTail(s.logPath, 3000) }

func fileTail(p string, n int) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > int64(n) {
		_, _ = f.Seek(st.Size()-int64(n), io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return tail(string(b), n)
}

// killGroup signals the process group led by pid (one the bench started with
// Setpgid).
func killGroup(pid int, sig syscall.Signal) {
	if pid > 0 {
		_ = syscall.Kill(-pid, sig)
	}
}

// selfArgv returns the argv that re-runs this program with args.
func selfArgv(args ...string) ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	return append([]string{exe}, args...), nil
}

// waitReady runs this program's wait subcommand inside ns until target
// answers (an http:// URL with 200, or host:port accepting connections), or
// the server exits, or timeout passes.
func waitReady(ctx context.Context, ns, target string, s *server, timeout time.Duration) error {
	argv, err := selfArgv("wait", "--timeout", timeout.String(), target)
	if err != nil {
		return err
	}
	cmd := nsCommand(ns, nil, argv...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { killGroup(cmd.Process.Pid, syscall.SIGKILL) })
	err = cmd.Wait()
	stop()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if s != nil && s.exited() {
		return fmt.Errorf("%s exited before it was ready: %v\n%s", s.name, s.waitErr, s.logTail())
	}
	return fmt.Errorf("%s not ready at %s: %v: %s", filepath.Base(argv[0]), target, err, tail(out.String(), 500))
}
