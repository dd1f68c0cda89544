package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nsPrefix starts the name of every namespace the bench creates; the owning
// process id follows, so that namespaces left by a killed bench are found.
const nsPrefix = "oubench-"

// netEnv is where one scenario's processes run. A loopback environment is a
// single namespace with only lo up. A WAN environment has a build side (the
// pushing client and nginx) and a prod side (the daemon and ostree pull),
// joined by a veth pair whose two ends are rate limited by tbf.
type netEnv struct {
	BuildNS, ProdNS string
	BuildIP, ProdIP string   // addresses the other side connects to
	counted         []ifRef  // interfaces whose tx bytes are the traffic
	owned           []string // namespaces to delete
}

// ifRef names an interface inside a namespace.
type ifRef struct{ NS, If string }

var nsSeq int

func newNSName() string {
	nsSeq++
	return fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), nsSeq)
}

// ipCmd runs ip(8) with args.
func ipCmd(ctx context.Context, args ...string) error {
	_, err := runTool(ctx, "ip", args...)
	return err
}

// addNamespace creates a namespace with lo up.
func addNamespace(ctx context.Context, name string) error {
	if err := ipCmd(ctx, "netns", "add", name); err != nil {
		return err
	}
	if err := ipCmd(ctx, "-n", name, "link", "set", "lo", "up"); err != nil {
		_ = ipCmd(context.Background(), "netns", "delete", name)
		return err
	}
	return nil
}

// newLoopbackEnv makes a namespace with only lo up; client and server talk
// over 127.0.0.1 inside it.
func newLoopbackEnv(ctx context.Context) (*netEnv, error) {
	ns := newNSName()
	if err := addNamespace(ctx, ns); err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	return &netEnv{BuildNS: ns, ProdNS: ns, BuildIP: "127.0.0.1", ProdIP: "127.0.0.1",
		counted: []ifRef{{ns, "lo"}}, owned: []string{ns}}, nil
}

// wanLink describes the emulated link of a WAN environment.
type wanLink struct {
	Rate    string // tbf rate, e.g. "100mbit"; empty: no tbf, the link unshaped
	Burst   string // tbf burst
	Latency string // tbf queueing limit in time
	Subnet  int    // third octet of 10.213.X.0/24
}

// newWANEnv makes two namespaces joined by a veth pair created directly
// inside them (it never appears in the host's namespace), with tbf on both
// ends so that all connections share the rate in each direction (none
// without a rate).
func newWANEnv(ctx context.Context, l wanLink) (env *netEnv, err error) {
	build, prod := newNSName(), newNSName()
	env = &netEnv{BuildNS: build, ProdNS: prod,
		BuildIP: fmt.Sprintf("10.213.%d.1", l.Subnet), ProdIP: fmt.Sprintf("10.213.%d.2", l.Subnet)}
	defer func() {
		if err != nil {
			env.close()
			env = nil
		}
	}()
	for _, ns := range []string{build, prod} {
		if err := addNamespace(ctx, ns); err != nil {
			return nil, fmt.Errorf("create namespace: %w", err)
		}
		env.owned = append(env.owned, ns)
	}
	vb, vp := fmt.Sprintf("oub%db", nsSeq), fmt.Sprintf("oub%dp", nsSeq)
	steps := [][]string{
		{"ip", "-n", build, "link", "add", vb, "type", "veth", "peer", "name", vp, "netns", prod},
		{"ip", "-n", build, "addr", "add", env.BuildIP + "/24", "dev", vb},
		{"ip", "-n", prod, "addr", "add", env.ProdIP + "/24", "dev", vp},
		{"ip", "-n", build, "link", "set", vb, "up"},
		{"ip", "-n", prod, "link", "set", vp, "up"},
	}
	if l.Rate != "" {
		steps = append(steps,
			[]string{"tc", "-n", build, "qdisc", "add", "dev", vb, "root", "tbf", "rate", l.Rate, "burst", l.Burst, "latency", l.Latency},
			[]string{"tc", "-n", prod, "qdisc", "add", "dev", vp, "root", "tbf", "rate", l.Rate, "burst", l.Burst, "latency", l.Latency})
	}
	for _, s := range steps {
		if _, err := runTool(ctx, s[0], s[1:]...); err != nil {
			return nil, fmt.Errorf("set up the WAN link: %w", err)
		}
	}
	env.counted = []ifRef{{build, vb}, {prod, vp}}
	return env, nil
}

// close deletes the environment's namespaces (and with them the veth pair).
func (e *netEnv) close() {
	for _, ns := range e.owned {
		if err := ipCmd(context.Background(), "netns", "delete", ns); err != nil {
			slog.Warn("delete namespace", "ns", ns, "err", err)
		}
	}
	e.owned = nil
}

// txBytes sums the tx byte counters of the environment's counted interfaces:
// on lo every byte sent is counted once; on the veth pair each end counts
// one direction.
func (e *netEnv) txBytes(ctx context.Context) (int64, error) {
	var total int64
	byNS := map[string][]string{}
	var order []string
	for _, r := range e.counted {
		if _, ok := byNS[r.NS]; !ok {
			order = append(order, r.NS)
		}
		byNS[r.NS] = append(byNS[r.NS], r.If)
	}
	for _, ns := range order {
		out, err := runTool(ctx, "ip", "-n", ns, "-s", "-j", "link", "show")
		if err != nil {
			return 0, err
		}
		counters, err := parseLinkStats([]byte(out))
		if err != nil {
			return 0, fmt.Errorf("ip -s -j link in %s: %w", ns, err)
		}
		for _, ifname := range byNS[ns] {
			v, ok := counters[ifname]
			if !ok {
				return 0, fmt.Errorf("no interface %s in namespace %s", ifname, ns)
			}
			total += v
		}
	}
	return total, nil
}

// parseLinkStats maps interface names to tx bytes from `ip -s -j link show`.
func parseLinkStats(b []byte) (map[string]int64, error) {
	var links []struct {
		IfName  string `json:"ifname"`
		Stats64 struct {
			TX struct {
				Bytes int64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(b, &links); err != nil {
		return nil, err
	}
	m := make(map[string]int64, len(links))
	for _, l := range links {
		m[l.IfName] = l.Stats64.TX.Bytes
	}
	return m, nil
}

// removeStaleNamespaces deletes namespaces left by benches that no longer
// run (killed before they could clean up).
func removeStaleNamespaces(ctx context.Context) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for line := range strings.Lines(string(out)) {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, nsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		slog.Info("removing namespace left by an earlier bench", "ns", name)
		_ = ipCmd(ctx, "netns", "delete", name)
	}
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// settle waits briefly so that counters of the namespace's last packets
// (FIN, final ACKs) are in before they are read.
func settle() { time.Sleep(100 * time.Millisecond) }
