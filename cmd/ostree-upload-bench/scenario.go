package main

import (
	"fmt"
	"slices"
	"strings"
)

// scenario is one comparison of `ostree-upload push` with `ostree pull` (or,
// over ssh, with ostree-push) of commit B into a fresh production repository.
type scenario struct {
	Name    string `json:"name"`
	About   string `json:"about"`
	Fixture string `json:"fixture"`  // shape name
	Warm    bool   `json:"warm"`     // prod already holds A
	FreshCI bool   `json:"fresh_ci"` // the client's repo (and nginx's) holds only B
	WAN     bool   `json:"wan"`      // two namespaces, latency and a shared rate limit
	Flaky   bool   `json:"flaky"`    // every connection is cut once halfway
	// BareUser pushes from a bare-user copy of the build repository, whose
	// file objects the client compresses as it sends them (the pull side
	// is the same as cold-loopback's: ostree pulls only from archive repos).
	BareUser bool `json:"bare_user"`
	// SSH compares ostree-upload push over ssh (relayed to a receive
	// daemon's socket), ostree-upload push over HTTP and ostree-push, in two
	// namespaces joined by an unshaped veth pair, the server side (sshd, the
	// daemon) in the prod one.
	SSH bool `json:"ssh"`
}

// Tools measured side by side: ostree-upload push over HTTP and over ssh,
// ostree pull from nginx, and ostree-push.
const (
	toolPush       = "push"
	toolPushSSH    = "push-ssh"
	toolPull       = "pull"
	toolOstreePush = "ostree-push"
)

// tools are the tools sc compares, in the order of its odd runs.
func (sc scenario) tools() []string {
	if sc.SSH {
		return []string{toolPushSSH, toolPush, toolOstreePush}
	}
	return []string{toolPush, toolPull}
}

// baseline is the tool the others' wall times are divided by.
func (sc scenario) baseline() string {
	if sc.SSH {
		return toolOstreePush
	}
	return toolPull
}

// runOrder is the order of the tools in run i (from 1): rotated by one
// each run, so that no tool always runs first (for two tools: push first
// in odd runs, pull first in even ones).
func runOrder(tools []string, i int) []string {
	if len(tools) == 0 {
		return nil
	}
	k := (i - 1) % len(tools)
	return append(slices.Clone(tools[k:]), tools[:k]...)
}

// allScenarios lists the scenarios in the order they run.
var allScenarios = []string{"cold-loopback", "cold-bare-user", "warm-loopback", "warm-fresh-ci", "cold-wan", "warm-wan", "flaky", "ssh-cold", "ssh-warm"}

// selectScenarios turns the --scenarios list into scenarios using the given
// fixture names for the loopback, WAN and flaky cases.
func selectScenarios(names []string, fixture, wanFixture string) ([]scenario, error) {
	if len(names) == 1 && (names[0] == "none" || names[0] == "") {
		return nil, nil
	}
	if len(names) == 1 && names[0] == "all" {
		names = allScenarios
	}
	var out []scenario
	for _, n := range names {
		s := scenario{Name: n, Fixture: fixture}
		switch n {
		case "cold-loopback":
			s.About = "empty prod, loopback"
		case "cold-bare-user":
			s.About, s.BareUser = "empty prod, loopback, pushed from a bare-user build repo", true
		case "warm-loopback":
			s.About, s.Warm = "prod holds A, loopback", true
		case "warm-fresh-ci":
			s.About, s.Warm, s.FreshCI = "prod holds A, the client's repo lacks A, loopback", true, true
		case "cold-wan":
			s.About, s.WAN, s.Fixture = "empty prod, emulated WAN", true, wanFixture
		case "warm-wan":
			s.About, s.Warm, s.WAN, s.Fixture = "prod holds A, emulated WAN", true, true, wanFixture
		case "flaky":
			s.About, s.Flaky = "empty prod, loopback, every connection cut once halfway", true
		case "ssh-cold":
			s.About, s.SSH = "empty prod; push over ssh, push over HTTP, ostree-push; two namespaces joined by a veth", true
		case "ssh-warm":
			s.About, s.Warm, s.SSH = "prod holds A; push over ssh, push over HTTP, ostree-push; two namespaces joined by a veth", true, true
		default:
			return nil, fmt.Errorf("unknown scenario %q (known: %s, all, none)", n, strings.Join(allScenarios, ", "))
		}
		if slices.ContainsFunc(out, func(o scenario) bool { return o.Name == n }) {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}
