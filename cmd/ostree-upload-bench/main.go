// Command ostree-upload-bench compares `ostree-upload push` with `ostree pull`
// over HTTP (nginx) of the same commit into an empty or partly filled archive
// repository, side by side in the same run, over loopback, over an emulated
// WAN and through a connection cut; and, over ssh, with ostree-push. All traffic stays inside network
// namespaces it creates and deletes; it must run as root. It prints a table
// and writes every run and the medians as JSON. See docs/benchmarks.md.
//
//	ostree-upload-bench [run] [flags]   run the scenarios (default)
//	ostree-upload-bench fixture [flags] only generate (or find) the fixtures
//
// The proxy, wait and rusage subcommands are run by the bench itself inside
// its namespaces (rusage by sshd, as the remote command of a push over ssh).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

// options are the bench's flags (see flagSet).
type options struct {
	Work          string
	Fixture       string
	WANFixture    string
	Scenarios     []string
	Runs          int
	Jobs          int
	Seed          uint64
	Ref           string
	Bin           string
	JSON          string
	Keep          bool
	RTT           time.Duration
	Rate          string
	CutFraction   float64
	ClientTimeout time.Duration
	Million       bool
	MillionFiles  int
	TinyFiles     int
	TinyRuns      int
	OstreePush    string
	Python        string
	Verbose       bool
}

func flagSet(name string, o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&o.Work, "work", "/var/tmp/ostree-upload-bench", "work directory: fixture cache, binary, run directories, results")
	fs.StringVar(&o.Fixture, "fixture", "full", "fixture of the loopback and flaky scenarios: full or small")
	fs.StringVar(&o.WANFixture, "wan-fixture", "small", "fixture of the WAN scenarios: small or full")
	fs.StringSliceVar(&o.Scenarios, "scenarios", []string{"all"}, "scenarios to run, comma separated: "+strings.Join(allScenarios, ",")+", all or none")
	fs.IntVar(&o.Runs, "runs", 3, "runs of each tool per scenario (the median is reported)")
	fs.IntVarP(&o.Jobs, "jobs", "j", 4, "parallel uploads of ostree-upload push (-j)")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the generated fixtures")
	fs.StringVar(&o.Ref, "ref", "app/org.example.Bench/x86_64/stable", "ref of the generated commits")
	fs.StringVar(&o.Bin, "bin", "", "ostree-upload binary (default: go build it into the work directory)")
	fs.StringVar(&o.JSON, "json", "", "write the results here (default: WORK/results.json)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the run directories (repositories, logs)")
	fs.DurationVar(&o.RTT, "wan-rtt", 80*time.Millisecond, "round-trip time of the emulated WAN")
	fs.StringVar(&o.Rate, "wan-rate", "100mbit", "rate of the emulated WAN, shared by all connections, each direction (tc syntax)")
	fs.Float64Var(&o.CutFraction, "cut-at", 0.5, "flaky: cut every connection when this fraction of commit B's object bytes went through")
	fs.DurationVar(&o.ClientTimeout, "client-timeout", 30*time.Minute, "give up on a client run after this long")
	fs.BoolVar(&o.Million, "million", false, "also push a commit of --million-files tiny files once")
	fs.IntVar(&o.MillionFiles, "million-files", 1_000_000, "files of the --million commit")
	fs.IntVar(&o.TinyFiles, "tiny-files", 0, "also push a commit of N tiny files, and ostree pull it (0: not)")
	fs.IntVar(&o.TinyRuns, "tiny-runs", 1, "times the --tiny-files push, floor and pull run, one after the other (medians reported)")
	fs.StringVar(&o.OstreePush, "ostree-push", "", "a checkout of ostree-push (v1.2.0) for the ssh scenarios to compare with; without it they skip it")
	fs.StringVar(&o.Python, "python", "/usr/bin/python3", "the Python that runs ostree-push (with python3-gi, gir1.2-ostree-1.0, python3-yaml)")
	fs.BoolVarP(&o.Verbose, "verbose", "v", false, "debug messages")
	return fs
}

func main() {
	args := os.Args[1:]
	sub := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	var err error
	switch sub {
	case "run", "fixture":
		err = benchMain(sub, args)
	case "proxy":
		err = proxyMain(args)
	case "wait":
		err = waitMain(args)
	case "rusage":
		err = rusageMain(args)
	default:
		err = fmt.Errorf("unknown subcommand %q (run, fixture)", sub)
	}
	var ec exitCode
	switch {
	case err == nil:
	case errors.Is(err, pflag.ErrHelp):
	case errors.As(err, &ec):
		os.Exit(int(ec))
	default:
		fmt.Fprintln(os.Stderr, "ostree-upload-bench:", err)
		if errors.Is(err, context.Canceled) {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

// exitCode ends the program with that status after everything is reported.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// bench holds what one bench run shares between scenarios.
type bench struct {
	opt           options
	bin           string
	config        string // token file of the daemons
	token         string
	smallToken    string // another token's, for the small pushes during a big one
	runDir        string
	pushStatsJSON bool // the binary's push knows --stats-json
	pushNoPublish bool // … and --no-publish, with sessions commit
	fixtures      map[string]*fixture
	flags         map[string]string // for the report
	ostreePush    *ostreePushInfo   // what the ssh scenarios compare with
	ostreePushSrc map[string]string // fixture name → the build repository ostree-push serves
	lastDeletion  time.Time         // see settle
}

func benchMain(sub string, args []string) error {
	var o options
	fs := flagSet("ostree-upload-bench "+sub, &o)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	level := slog.LevelInfo
	if o.Verbose {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	if o.JSON == "" {
		o.JSON = filepath.Join(o.Work, "results.json")
	}
	for _, f := range []string{o.Fixture, o.WANFixture} {
		if _, ok := shapes[f]; !ok {
			return fmt.Errorf("unknown fixture %q: full or small", f)
		}
	}
	if o.Runs < 1 {
		return fmt.Errorf("--runs must be at least 1")
	}
	if o.MillionFiles < 1 || o.TinyFiles < 0 || o.TinyRuns < 1 {
		return fmt.Errorf("--million-files and --tiny-runs must be at least 1, --tiny-files at least 0 (0: no tiny-files push)")
	}
	scenarios, err := selectScenarios(o.Scenarios, o.Fixture, o.WANFixture)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sigs:
			slog.Warn("interrupted: cleaning up (interrupt again to exit at once)", "signal", s)
			signal.Reset(syscall.SIGINT, syscall.SIGTERM) // a second signal kills
			cancel()
		case <-ctx.Done():
		}
	}()

	b := &bench{opt: o, fixtures: map[string]*fixture{}, flags: map[string]string{}, ostreePushSrc: map[string]string{}}
	fs.VisitAll(func(f *pflag.Flag) { b.flags[f.Name] = f.Value.String() })
	if sub == "fixture" {
		return b.makeFixtures(ctx, scenarios)
	}
	return b.run(ctx, scenarios)
}

// makeFixtures generates (or finds) every fixture the scenarios need.
func (b *bench) makeFixtures(ctx context.Context, scenarios []scenario) error {
	for _, sc := range scenarios {
		if _, err := b.fixture(ctx, sc.Fixture); err != nil {
			return err
		}
	}
	for _, t := range []struct {
		name string
		n    int
	}{{"million", b.opt.MillionFiles}, {"tiny", b.opt.TinyFiles}} {
		if t.name == "million" && !b.opt.Million || t.n == 0 {
			continue
		}
		fx, err := loadOrMakeMillion(ctx, b.opt.Work, t.n, b.opt.Seed, b.opt.Ref, b.deleted)
		if err != nil {
			return err
		}
		fmt.Printf("%s: %d files, %d objects, %s (%s on disk)\n", t.name, fx.Files, fx.BuildRepo.Objects,
			humanBytes(fx.BuildRepo.Bytes), humanBytes(fx.BuildRepo.DiskBytes))
	}
	return nil
}

// fixture returns the named fixture, generating it on first use.
func (b *bench) fixture(ctx context.Context, name string) (*fixture, error) {
	if f, ok := b.fixtures[name]; ok {
		return f, nil
	}
	f, err := loadOrMakeFixture(ctx, b.opt.Work, shapes[name], b.opt.Seed, b.opt.Ref)
	if err != nil {
		return nil, err
	}
	f.logSummary()
	fmt.Printf("fixture %s: %d files (%d changed from A to B); build repo (A+B): %d objects, %s (%s on disk); B alone: %d objects, %s (%s on disk)\n",
		f.Name, f.Files, f.Changed, f.BuildRepo.Objects, humanBytes(f.BuildRepo.Bytes), humanBytes(f.BuildRepo.DiskBytes),
		f.CommitB.Objects, humanBytes(f.CommitB.Bytes), humanBytes(f.CommitB.DiskBytes))
	b.fixtures[name] = f
	return f, nil
}

// run runs the scenarios, the tiny-files and the million-object pushes, prints the table and
// writes the JSON report.
func (b *bench) run(ctx context.Context, scenarios []scenario) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (network namespaces)")
	}
	for _, tool := range []string{"ostree", "ip", "tc", "nginx"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: install it (make bench-deps)", tool)
		}
	}
	removeStaleNamespaces(ctx)
	rep := &report{Started: time.Now(), Options: b.flags, Fixtures: map[string]*fixture{}, Host: readHostInfo()}
	if err := b.prepare(ctx); err != nil {
		return err
	}
	defer func() {
		if !b.opt.Keep {
			if rmErr := os.RemoveAll(b.runDir); rmErr != nil && err == nil {
				err = rmErr
			}
		} else {
			slog.Info("kept the run directory", "dir", b.runDir)
		}
	}()
	rep.Binary = b.bin
	rep.Version, _ = runTool(ctx, b.bin, "version")
	if v, err := runTool(ctx, "ostree", "--version"); err == nil {
		rep.Ostree = firstVersionLine(v)
	}

	if slices.ContainsFunc(scenarios, func(sc scenario) bool { return sc.SSH }) {
		b.ostreePush = findOstreePush(ctx, b.opt.OstreePush, b.opt.Python)
		rep.OstreePush = b.ostreePush
		if b.ostreePush.Skipped != "" {
			slog.Warn("the ssh scenarios skip ostree-push", "reason", b.ostreePush.Skipped)
		} else {
			slog.Info("ostree-push", "version", b.ostreePush.Version, "dir", b.ostreePush.Dir)
		}
	}
	var runErr error
	for _, sc := range scenarios {
		slog.Info("scenario", "name", sc.Name, "about", sc.About, "fixture", sc.Fixture, "runs", b.opt.Runs)
		res, err := b.runScenario(ctx, sc)
		if err != nil {
			runErr = err
			break
		}
		rep.Results = append(rep.Results, res)
		rep.Failures = append(rep.Failures, checkExpectations(res)...)
		// Write after every scenario so that an interrupted bench keeps what it measured.
		b.fillFixtures(rep)
		if err := writeJSON(b.opt.JSON, rep); err != nil {
			return err
		}
	}
	if runErr == nil && b.opt.TinyFiles > 0 {
		rep.Tiny, runErr = b.runTiny(ctx)
		if runErr == nil {
			if err := writeJSON(b.opt.JSON, rep); err != nil {
				return err
			}
		}
	}
	if runErr == nil && b.opt.Million {
		rep.Million, runErr = b.runMillion(ctx)
	}
	rep.Finished = time.Now()
	b.fillFixtures(rep)
	if len(rep.Results) > 0 || rep.Million != nil || rep.Tiny != nil { // an interrupted bench keeps the previous results
		if err := writeJSON(b.opt.JSON, rep); err != nil {
			return err
		}
	}
	if len(rep.Results) > 0 {
		fmt.Println()
		if err := writeTable(os.Stdout, rep.Results); err != nil {
			return err
		}
	}
	writeMillion(os.Stdout, "tiny-files push", rep.Tiny)
	writeMillion(os.Stdout, "million-object push", rep.Million)
	if len(rep.Results) > 0 || rep.Million != nil || rep.Tiny != nil {
		fmt.Printf("\nresults: %s (%.0f s)\n", b.opt.JSON, rep.Finished.Sub(rep.Started).Seconds())
	}
	if runErr != nil {
		return runErr
	}
	for _, f := range rep.Failures {
		fmt.Fprintln(os.Stderr, "FAILED:", f)
	}
	if len(rep.Failures) > 0 {
		return exitCode(1)
	}
	return nil
}

func (b *bench) fillFixtures(rep *report) {
	for k, v := range b.fixtures {
		rep.Fixtures[k] = v
	}
}

// prepare makes the run directory, the binary and a token.
func (b *bench) prepare(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(b.opt.Work, "runs"), 0o755); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(filepath.Join(b.opt.Work, "runs"), time.Now().Format("20060102-150405-"))
	if err != nil {
		return err
	}
	b.runDir = dir
	// Whatever ran before the bench may have deleted files (an earlier run
	// of it, say): settle counts from the start.
	b.deleted()
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	b.bin = b.opt.Bin
	if b.bin == "" {
		b.bin = filepath.Join(b.opt.Work, "bin", "ostree-upload")
		slog.Info("building ostree-upload", "out", b.bin)
		if _, err := runTool(ctx, "go", "build", "-o", b.bin, "github.com/ostree-upload/ostree-upload/cmd/ostree-upload"); err != nil {
			return fmt.Errorf("build ostree-upload (run from the source tree or pass --bin): %w", err)
		}
	}
	if b.bin, err = filepath.Abs(b.bin); err != nil {
		return err
	}
	help, _ := exec.CommandContext(ctx, b.bin, "push", "--help").CombinedOutput()
	b.pushStatsJSON = strings.Contains(string(help), "--stats-json")
	b.pushNoPublish = b.pushStatsJSON && strings.Contains(string(help), "--no-publish")
	b.config = filepath.Join(dir, "ostree-upload.yaml")
	out, err := runTool(ctx, b.bin, "gentoken", "-c", b.config, "--name", "bench")
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	b.token = strings.TrimSpace(lines[len(lines)-1])
	if b.token == "" {
		return errors.New("gentoken printed no token")
	}
	// Another token's small pushes during the pushes of tiny files.
	if out, err = runTool(ctx, b.bin, "gentoken", "-c", b.config, "--name", "bench-small"); err != nil {
		return err
	}
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if b.smallToken = strings.TrimSpace(lines[len(lines)-1]); b.smallToken == "" {
		return errors.New("gentoken printed no token")
	}
	// A stop right after a publish waits for its spool release (a million
	// files take longer than the default 10 s), so that the journal
	// measured after the stop is the one a running daemon keeps.
	return appendFile(b.config, "\ndrain_timeout: 2m\n")
}

// appendFile appends text to the file at path.
func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return fmt.Errorf("append to %s: %w", path, err)
	}
	return f.Close()
}

// checkExpectations lists what a scenario's runs should have shown but did
// not: in the flaky scenario the proxy must have cut, and push must have
// finished in a single invocation.
func checkExpectations(r *scenarioResult) []string {
	if !r.Scenario.Flaky {
		return nil
	}
	var out []string
	for _, m := range r.Runs {
		if m.Proxy == nil || !m.Proxy.Cut {
			out = append(out, fmt.Sprintf("%s run %d %s: the proxy never cut (threshold not reached)", r.Scenario.Name, m.Run, m.Tool))
		}
		if m.Tool == toolPush && m.attempts() > 1 {
			out = append(out, fmt.Sprintf("%s run %d: ostree-upload push needed %d invocations (exit codes %v)", r.Scenario.Name, m.Run, m.attempts(), m.ExitCodes))
		}
	}
	return out
}

func readHostInfo() hostInfo {
	h := hostInfo{CPUs: runtime.NumCPU()}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		h.Kernel = utsString(u.Release[:])
	}
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) == nil {
		h.MemKiB = int64(si.Totalram) * int64(si.Unit) / 1024
	}
	return h
}

func utsString(b []int8) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		s.WriteByte(byte(c))
	}
	return s.String()
}

func firstVersionLine(v string) string {
	for line := range strings.Lines(v) {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "Version:"); ok {
			return strings.Trim(strings.TrimSpace(s), "'")
		}
	}
	return strings.TrimSpace(v)
}
