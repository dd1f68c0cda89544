package sshtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one process as /proc shows it.
type proc struct {
	pid, ppid int
	zombie    bool
	uids      [4]int // real, effective, saved, filesystem
}

// procs reads the process table. Processes that end while it reads are
// left out.
func procs() (map[int]proc, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("reading the process table: %w", err)
	}
	tbl := make(map[int]proc, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			tbl[pid] = p
		}
	}
	return tbl, nil
}

func readProc(pid int) (proc, bool) {
	p := proc{pid: pid}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, false
	}
	// pid (comm) state ppid …; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return p, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return p, false
	}
	p.zombie = f[0] == "Z" || f[0] == "X"
	if p.ppid, err = strconv.Atoi(f[1]); err != nil {
		return p, false
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, false
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			for j, s := range strings.Fields(rest) {
				if j < len(p.uids) {
					p.uids[j], _ = strconv.Atoi(s)
				}
			}
		}
	}
	return p, true
}

// descendants are the processes below pid in tbl, pid excluded.
func descendants(tbl map[int]proc, pid int) map[int]bool {
	children := map[int][]int{}
	for _, p := range tbl {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	out := map[int]bool{}
	stack := []int{pid}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, c := range children[n] {
			if !out[c] {
				out[c] = true
				stack = append(stack, c)
			}
		}
	}
	return out
}

// killBottomUp kills with SIGKILL every live process that match selects in
// the current process table, again and again until none is left or timeout
// passes. It kills a process only once it has no children left, so that
// each one is reaped by its parent: a process killed before its children
// would leave them to PID 1, which reaps late or never on some machines (a
// container's init often does not reap). A process that still has children
// after half the timeout is killed anyway. Zombies are dead already and do
// not count: some are sshd's own orphans, left to PID 1 at the end of every
// session (the privileged monitor exits without reaping the session's
// process). The error lists what is left.
func killBottomUp(match func(tbl map[int]proc) map[int]bool, timeout time.Duration) error {
	start := time.Now()
	for {
		tbl, err := procs()
		if err != nil {
			return err
		}
		sel := match(tbl)
		for pid := range sel {
			if tbl[pid].zombie {
				delete(sel, pid)
			}
		}
		if len(sel) == 0 {
			return nil
		}
		if time.Since(start) > timeout {
			var left []string
			for pid := range sel {
				p := tbl[pid]
				left = append(left, fmt.Sprintf("%d (parent %d, uids %v)", pid, p.ppid, p.uids))
			}
			return fmt.Errorf("processes still there after %v: %s", timeout, strings.Join(left, ", "))
		}
		hasChild := map[int]bool{}
		for _, p := range tbl {
			hasChild[p.ppid] = true
		}
		force := time.Since(start) > timeout/2
		for pid := range sel {
			if force || !hasChild[pid] {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
					return fmt.Errorf("killing process %d: %w", pid, err)
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}
