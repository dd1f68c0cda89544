package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Ports inside the bench's namespaces (fresh ones, so fixed ports are free).
const (
	daemonPort      = 8080
	nginxPort       = 8081
	pushProxyPort   = 9080
	pullProxyPort   = 9081
	sshPort         = 2222
	remoteName      = "bench"
	maxFlakyAttempt = 2
)

// measurement is one timed client run.
type measurement struct {
	Tool   string `json:"tool"` // push, push-ssh (ostree-upload push), pull (ostree pull), ostree-push
	Run    int    `json:"run"`
	Client usage  `json:"client"`           // summed over attempts; RSS is the peak
	Server *usage `json:"server,omitempty"` // the daemon; nginx is not counted
	// Remote is the command sshd ran for the push (ssh-serve, or
	// ostree-receive and its children), summed over its invocations; sshd
	// itself is not counted.
	Remote    *usage         `json:"remote,omitempty"`
	WireBytes int64          `json:"wire_bytes"`
	ExitCodes []int          `json:"exit_codes"` // one per attempt
	Proxy     *proxyStats    `json:"proxy,omitempty"`
	PushStats map[string]any `json:"push_stats,omitempty"` // from --stats-json
	StartedAt time.Time      `json:"started_at"`
}

// attempts is how many invocations the client needed.
func (m *measurement) attempts() int { return len(m.ExitCodes) }

// endpoints says where a scenario's processes listen and connect.
type endpoints struct {
	daemon, nginx       string // host:port of the servers
	pushURL, pullURL    string // what the clients are given
	pushProxy, pullProx *proxyOptions
}

func (b *bench) endpoints(sc scenario, env *netEnv, fx *fixture, dir string) endpoints {
	e := endpoints{
		daemon: fmt.Sprintf("%s:%d", env.ProdIP, daemonPort),
		nginx:  fmt.Sprintf("%s:%d", env.BuildIP, nginxPort),
	}
	e.pushURL, e.pullURL = "http://"+e.daemon, "http://"+e.nginx+"/"
	if !sc.WAN && !sc.Flaky {
		return e
	}
	push := proxyOptions{Listen: fmt.Sprintf("127.0.0.1:%d", pushProxyPort), Upstream: e.daemon,
		StatsPath: filepath.Join(dir, "proxy-stats.json")}
	pull := proxyOptions{Listen: fmt.Sprintf("127.0.0.1:%d", pullProxyPort), Upstream: e.nginx,
		StatsPath: filepath.Join(dir, "proxy-stats.json")}
	if sc.WAN {
		push.Latency, pull.Latency = b.opt.RTT/2, b.opt.RTT/2
	}
	if sc.Flaky {
		cut := int64(float64(fx.CommitB.Bytes) * b.opt.CutFraction)
		push.CutAfter, push.CutStream = cut, "upstream" // push sends the objects
		pull.CutAfter, pull.CutStream = cut, "downstream"
	}
	e.pushProxy, e.pullProx = &push, &pull
	e.pushURL, e.pullURL = "http://"+push.Listen, "http://"+pull.Listen+"/"
	return e
}

// runScenario runs sc --runs times, the tools' order rotating each run (for
// push and pull: push first on odd runs, pull first on even ones), each on a
// fresh prod repo.
func (b *bench) runScenario(ctx context.Context, sc scenario) (*scenarioResult, error) {
	fx, err := b.fixture(ctx, sc.Fixture)
	if err != nil {
		return nil, err
	}
	var env *netEnv
	switch {
	case sc.WAN:
		env, err = newWANEnv(ctx, wanLink{Rate: b.opt.Rate, Burst: "256kbit", Latency: "400ms", Subnet: 1 + nsSeq%250})
	case sc.SSH:
		env, err = newWANEnv(ctx, wanLink{Subnet: 1 + nsSeq%250}) // no shaping: a plain link
	default:
		env, err = newLoopbackEnv(ctx)
	}
	if err != nil {
		return nil, err
	}
	defer env.close()

	res := &scenarioResult{Scenario: sc}
	tools := sc.tools()
	var sshd *sshServer
	if sc.SSH {
		if b.ostreePush.Skipped != "" {
			tools = slices.DeleteFunc(tools, func(t string) bool { return t == toolOstreePush })
			res.Skipped = map[string]string{toolOstreePush: b.ostreePush.Skipped}
		}
		if sshd, err = startSSHServer(ctx, env, filepath.Join(b.runDir, sc.Name, "sshd")); err != nil {
			return nil, err
		}
		defer sshd.stop()
	}
	for i := 1; i <= b.opt.Runs; i++ {
		for _, tool := range runOrder(tools, i) {
			dir := filepath.Join(b.runDir, sc.Name, fmt.Sprintf("run%d-%s", i, tool))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			var m *measurement
			switch tool {
			case toolPush:
				m, err = b.runPush(ctx, sc, env, fx, dir)
			case toolPull:
				m, err = b.runPull(ctx, sc, env, fx, dir)
			case toolPushSSH:
				m, err = b.runPushSSH(ctx, sc, env, sshd, fx, dir)
			case toolOstreePush:
				m, err = b.runOstreePush(ctx, sc, env, sshd, fx, dir)
			}
			if err != nil {
				return nil, fmt.Errorf("%s run %d %s: %w", sc.Name, i, tool, err)
			}
			m.Run = i
			logMeasurement(sc, m)
			res.Runs = append(res.Runs, *m)
			if !b.opt.Keep {
				if err := os.RemoveAll(dir); err != nil {
					return nil, err
				}
				b.deleted()
			}
		}
	}
	res.summarize()
	return res, nil
}

func logMeasurement(sc scenario, m *measurement) {
	args := []any{"scenario", sc.Name, "run", m.Run, "tool", m.Tool,
		"wall", fmt.Sprintf("%.2fs", m.Client.WallSeconds), "wire", humanBytes(m.WireBytes),
		"client_rss", humanBytes(m.Client.MaxRSSKiB * 1024), "client_cpu", fmt.Sprintf("%.2fs", m.Client.CPUSeconds)}
	if m.Server != nil {
		args = append(args, "daemon_rss", humanBytes(m.Server.MaxRSSKiB*1024), "daemon_cpu", fmt.Sprintf("%.2fs", m.Server.CPUSeconds))
	}
	if m.Remote != nil {
		args = append(args, "remote_rss", humanBytes(m.Remote.MaxRSSKiB*1024), "remote_cpu", fmt.Sprintf("%.2fs", m.Remote.CPUSeconds))
	}
	if m.attempts() > 1 || m.Proxy != nil && m.Proxy.Cut {
		args = append(args, "exit_codes", m.ExitCodes)
	}
	slog.Info("run", args...)
}

// runPush measures `ostree-upload push` of B into a fresh daemon over HTTP.
func (b *bench) runPush(ctx context.Context, sc scenario, env *netEnv, fx *fixture, dir string) (*measurement, error) {
	return b.push(ctx, sc, env, nil, fx, dir, nil)
}

// runPushSSH measures `ostree-upload push` of B over ssh: sshd runs
// `ostree-upload ssh-serve PROD`, which relays the push to a fresh daemon's
// socket.
func (b *bench) runPushSSH(ctx context.Context, sc scenario, env *netEnv, sshd *sshServer, fx *fixture, dir string) (*measurement, error) {
	return b.push(ctx, sc, env, sshd, fx, dir, nil)
}

// pushProbe asks push (over HTTP) for the tiny-file pushes' extra figures:
// the daemon's memory sampled while it runs and, when split, the journal's
// size with every object uploaded but nothing published yet, which takes
// `push --no-publish` followed by `sessions commit`.
type pushProbe struct {
	split bool
	// smallPushes: another token pushes a small commit to the idle daemon,
	// then every smallPushEvery while the push (and its commit) runs.
	smallPushes bool
	// Filled in by push.
	mem     memPeak
	journal *journalFigures
	commit  *usage          // the sessions commit client, when split
	latency *latencyFigures // the small pushes' wall times
}

// journalFigures are the daemon's journal before the publish (when the push
// is split), right after it, and once the daemon has stopped.
type journalFigures struct {
	Path          string       `json:"path"`
	Uploaded      *journalSize `json:"uploaded,omitempty"` // every object uploaded, not yet published
	Committed     *journalSize `json:"committed,omitempty"`
	Stopped       *journalSize `json:"stopped,omitempty"`
	Objects       int          `json:"objects"`                         // objects the push sent
	BytesPerObj   float64      `json:"bytes_per_object,omitempty"`      // Uploaded's file size over Objects
	HighWaterPObj float64      `json:"high_water_per_object,omitempty"` // Uploaded's high-water mark over Objects
}

// push measures `ostree-upload push` of B into a fresh daemon, over HTTP,
// or over ssh through sshd when it is not nil.
func (b *bench) push(ctx context.Context, sc scenario, env *netEnv, sshd *sshServer, fx *fixture, dir string, probe *pushProbe) (m *measurement, err error) {
	ep := b.endpoints(sc, env, fx, dir)
	prod := filepath.Join(dir, "prod")
	if err := seedProd(ctx, sc, fx, prod, false); err != nil {
		return nil, err
	}
	daemon, err := b.startDaemon(ctx, env.ProdNS, dir, prod, ep.daemon)
	if err != nil {
		return nil, err
	}
	var stopSampling func() memPeak
	if probe != nil {
		stopSampling = sampleMem(daemon.cmd.Process.Pid, memSampleEvery)
	}
	defer func() {
		if stopSampling != nil {
			stopSampling()
		}
		if daemon != nil {
			_, _ = daemon.stop(stopGrace)
		}
	}()
	var proxy *server
	if ep.pushProxy != nil {
		if proxy, err = startProxy(ctx, env.BuildNS, dir, *ep.pushProxy); err != nil {
			return nil, err
		}
		defer func() {
			if proxy != nil {
				_, _ = proxy.stop(stopGrace)
			}
		}()
	}
	src := fx.build()
	switch {
	case sc.FreshCI:
		src = fx.ci()
	case sc.BareUser:
		if src, err = fx.bareUser(ctx); err != nil {
			return nil, err
		}
	}
	statsPath := filepath.Join(dir, "push-stats.json")
	argv := []string{b.bin, "push", "-q", "-r", src, "-b", fx.Ref, "-j", fmt.Sprint(b.opt.Jobs)}
	env2 := []string{"OSTREE_UPLOAD_TOKEN=" + b.token}
	var remoteUsage string
	if sshd != nil {
		// The remote command: ssh-serve with the daemon's configuration, its
		// resource usage recorded.
		remoteUsage = filepath.Join(dir, "remote-usage.jsonl")
		remote, err := b.remoteWrapper(dir, "ostree-upload", remoteUsage, []string{"OSTREE_UPLOAD_CONF=" + b.config}, b.bin)
		if err != nil {
			return nil, err
		}
		argv = append(argv, "--ssh-command", sshd.sshWrapper, "--command", remote, sshd.dest(prod))
		env2 = []string{"OSTREE_UPLOAD_TOKEN="}
	} else {
		argv = append(argv, "-a", ep.pushURL)
	}
	if b.pushStatsJSON {
		argv = append(argv, "--stats-json", statsPath)
	}
	if probe != nil && probe.split {
		argv = append(argv, "--no-publish")
	}
	var stopSmall func() *latencyFigures
	if probe != nil && probe.smallPushes {
		sp, err := b.newSmallPusher(ctx, dir, env.BuildNS, ep.pushURL)
		if err != nil {
			return nil, err
		}
		if err := sp.idle(ctx); err != nil {
			return nil, err
		}
		stopSmall = sp.during(ctx)
		defer func() {
			if stopSmall != nil {
				stopSmall()
			}
		}()
	}
	m, err = b.measureClient(ctx, sc, env, env.BuildNS, env2, filepath.Join(dir, "push.log"), argv)
	if err != nil {
		return nil, err
	}
	m.Tool = toolPush
	if sshd != nil {
		m.Tool = toolPushSSH
		if m.Remote, err = readRemoteUsage(remoteUsage); err != nil {
			return nil, err
		}
	}
	if proxy != nil {
		_, _ = proxy.stop(stopGrace)
		proxy = nil
		if m.Proxy, err = readProxyStats(ep.pushProxy.StatsPath); err != nil {
			return nil, err
		}
	}
	if b.pushStatsJSON {
		if raw, err := os.ReadFile(statsPath); err == nil {
			if err := json.Unmarshal(raw, &m.PushStats); err != nil {
				slog.Warn("unreadable --stats-json output", "file", statsPath, "err", err)
			}
		}
	}
	if probe != nil && m.ExitCodes[len(m.ExitCodes)-1] == 0 {
		if err := b.probeJournal(ctx, env, ep, prod, dir, m, probe); err != nil {
			return nil, err
		}
	}
	if stopSmall != nil {
		probe.latency = stopSmall()
		stopSmall = nil
	}
	if stopSampling != nil {
		probe.mem = stopSampling()
		stopSampling = nil
	}
	du, stopErr := daemon.stop(stopGrace)
	daemon = nil
	m.Server = &du
	if stopErr != nil {
		return nil, stopErr
	}
	if probe != nil && probe.journal != nil {
		if js, err := statJournal(probe.journal.Path); err != nil {
			slog.Warn("journal after the daemon stopped", "err", err)
		} else {
			if js.FreeBytes, err = readJournalFree(probe.journal.Path); err != nil {
				slog.Warn("journal's free pages", "err", err)
			}
			probe.journal.Stopped = &js
		}
	}
	if last := m.ExitCodes[len(m.ExitCodes)-1]; last != 0 {
		return nil, fmt.Errorf("ostree-upload push exited %d (attempts: %v):\n%s\ndaemon log:\n%s",
			last, m.ExitCodes, fileTail(filepath.Join(dir, "push.log"), 3000), fileTail(filepath.Join(dir, "daemon.log"), 3000))
	}
	if err := verifyRepo(ctx, prod, fx.Ref, fx.B); err != nil {
		return nil, err
	}
	if sc.SSH {
		if err := verifySummary(ctx, prod, fx.Ref, fx.B); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// seedProd prepares a scenario's production repository at prod: created
// first with create (else the daemon creates it), holding A when warm.
func seedProd(ctx context.Context, sc scenario, fx *fixture, prod string, create bool) error {
	if create {
		if err := initArchive(ctx, prod); err != nil {
			return err
		}
	}
	if sc.Warm {
		if err := copyCommit(ctx, prod, fx.build(), fx.A, fx.Ref); err != nil {
			return fmt.Errorf("seed prod with A: %w", err)
		}
	}
	return nil
}

// runPull measures `ostree pull` of B from nginx into a fresh repository.
func (b *bench) runPull(ctx context.Context, sc scenario, env *netEnv, fx *fixture, dir string) (m *measurement, err error) {
	ep := b.endpoints(sc, env, fx, dir)
	prod := filepath.Join(dir, "prod")
	if err := seedProd(ctx, sc, fx, prod, true); err != nil {
		return nil, err
	}
	if _, err := ostree(ctx, prod, "remote", "add", "--no-gpg-verify", remoteName, ep.pullURL); err != nil {
		return nil, err
	}
	served := fx.build()
	if sc.FreshCI {
		served = fx.ci()
	}
	nginx, err := startNginx(ctx, env.BuildNS, dir, served, ep.nginx)
	if err != nil {
		return nil, err
	}
	defer func() { _, _ = nginx.stop(stopGrace) }()
	var proxy *server
	if ep.pullProx != nil {
		if proxy, err = startProxy(ctx, env.ProdNS, dir, *ep.pullProx); err != nil {
			return nil, err
		}
		defer func() {
			if proxy != nil {
				_, _ = proxy.stop(stopGrace)
			}
		}()
	}
	argv := []string{"ostree", "pull", "--repo=" + prod, remoteName, fx.Ref}
	m, err = b.measureClient(ctx, sc, env, env.ProdNS, nil, filepath.Join(dir, "pull.log"), argv)
	if err != nil {
		return nil, err
	}
	m.Tool = toolPull
	if proxy != nil {
		_, _ = proxy.stop(stopGrace)
		proxy = nil
		if m.Proxy, err = readProxyStats(ep.pullProx.StatsPath); err != nil {
			return nil, err
		}
	}
	if last := m.ExitCodes[len(m.ExitCodes)-1]; last != 0 {
		return nil, fmt.Errorf("ostree pull exited %d (attempts: %v):\n%s",
			last, m.ExitCodes, fileTail(filepath.Join(dir, "pull.log"), 3000))
	}
	if err := verifyRepo(ctx, prod, remoteName+":"+fx.Ref, fx.B); err != nil {
		return nil, err
	}
	return m, nil
}

// measureClient runs the client argv in ns, reading the wire counters
// before and after. In the flaky scenario a failed client is run a second
// time, as a person would, and both attempts are recorded.
func (b *bench) measureClient(ctx context.Context, sc scenario, env *netEnv, ns string, envv []string, logPath string, argv []string) (*measurement, error) {
	// Write back what seeding and start-up left dirty, so that neither tool
	// pays in its own syncfs for the other's or the set-up's writes.
	syscall.Sync()
	m := &measurement{StartedAt: time.Now()}
	before, err := env.txBytes(ctx)
	if err != nil {
		return nil, err
	}
	attempts := 1
	if sc.Flaky {
		attempts = maxFlakyAttempt
	}
	for range attempts {
		cctx, cancel := context.WithTimeout(ctx, b.opt.ClientTimeout)
		u, err := runClient(cctx, ns, envv, logPath, argv...)
		timedOut := errors.Is(cctx.Err(), context.DeadlineExceeded)
		cancel()
		if timedOut {
			return nil, fmt.Errorf("%s did not finish within %s:\n%s", argv[0], b.opt.ClientTimeout, fileTail(logPath, 3000))
		}
		if err != nil {
			return nil, err
		}
		m.ExitCodes = append(m.ExitCodes, u.ExitCode)
		m.Client.WallSeconds += u.WallSeconds
		m.Client.CPUSeconds += u.CPUSeconds
		m.Client.MaxRSSKiB = max(m.Client.MaxRSSKiB, u.MaxRSSKiB)
		m.Client.ExitCode = u.ExitCode
		if u.ExitCode == 0 {
			break
		}
		slog.Warn("client failed", "scenario", sc.Name, "cmd", strings.Join(argv[:2], " "), "exit", u.ExitCode)
	}
	settle()
	after, err := env.txBytes(ctx)
	if err != nil {
		return nil, err
	}
	m.WireBytes = after - before
	return m, nil
}
