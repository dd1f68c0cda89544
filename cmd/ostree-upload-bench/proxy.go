package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/stream"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
)

// proxyOptions configures one TCP proxy process.
type proxyOptions struct {
	Listen    string        // host:port to accept on
	Upstream  string        // host:port to forward to
	Latency   time.Duration // added to each direction
	CutAfter  int64         // when > 0: close every connection once this many bytes went through CutStream
	CutStream string        // "upstream" (client to server) or "downstream"
	StatsPath string        // where the proxy writes its proxyStats when it stops
}

func (o proxyOptions) args() []string {
	a := []string{"proxy", "--listen", o.Listen, "--upstream", o.Upstream, "--stats", o.StatsPath}
	if o.Latency > 0 {
		a = append(a, "--latency", o.Latency.String())
	}
	if o.CutAfter > 0 {
		a = append(a, "--cut-after", fmt.Sprint(o.CutAfter), "--cut-stream", o.CutStream)
	}
	return a
}

// proxyStats is what a proxy saw.
type proxyStats struct {
	UpstreamBytes   int64   `json:"upstream_bytes"`   // client to server
	DownstreamBytes int64   `json:"downstream_bytes"` // server to client
	Cut             bool    `json:"cut"`
	CutAtSeconds    float64 `json:"cut_at_seconds,omitempty"` // since the proxy started
}

// The counting toxic's shared state: one proxy runs per process.
var (
	proxyCounters [stream.NumDirections]atomic.Int64
	proxyCut      struct {
		after int64
		dir   stream.Direction
		once  sync.Once
		fire  chan struct{}
	}
)

// countToxic passes data through unchanged, counting it per direction, and
// fires the cut when its direction reaches the configured byte count.
type countToxic struct {
	Dir int `json:"dir"`
}

func (t *countToxic) Pipe(stub *toxics.ToxicStub) {
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			n := proxyCounters[t.Dir].Add(int64(len(c.Data)))
			if proxyCut.after > 0 && stream.Direction(t.Dir) == proxyCut.dir && n >= proxyCut.after {
				proxyCut.once.Do(func() { close(proxyCut.fire) })
			}
			stub.Output <- c
		}
	}
}

func init() {
	toxics.Register("benchcount", new(countToxic))
}

// proxyMain is the proxy subcommand: a toxiproxy proxy run in-process, with
// latency toxics on both directions and an optional one-time cut of every
// connection. It stops on SIGTERM or SIGINT and then writes its stats.
func proxyMain(args []string) error {
	fs := pflag.NewFlagSet("proxy", pflag.ContinueOnError)
	var o proxyOptions
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:9000", "address to listen on")
	fs.StringVar(&o.Upstream, "upstream", "", "address to forward to")
	fs.DurationVar(&o.Latency, "latency", 0, "latency added to each direction")
	fs.Int64Var(&o.CutAfter, "cut-after", 0, "close every connection once after this many bytes in --cut-stream (0: never)")
	fs.StringVar(&o.CutStream, "cut-stream", "upstream", "direction counted for --cut-after: upstream or downstream")
	fs.StringVar(&o.StatsPath, "stats", "", "write statistics as JSON to this file on exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Upstream == "" {
		return fmt.Errorf("proxy: --upstream is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	cutDir, err := stream.ParseDirection(o.CutStream)
	if err != nil {
		return fmt.Errorf("proxy: --cut-stream: %w", err)
	}
	proxyCut.after, proxyCut.dir, proxyCut.fire = o.CutAfter, cutDir, make(chan struct{})

	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "bench", o.Listen, o.Upstream)
	for _, dir := range []string{"upstream", "downstream"} {
		d, _ := stream.ParseDirection(dir)
		spec := fmt.Sprintf(`{"name":"count_%s","type":"benchcount","stream":%q,"attributes":{"dir":%d}}`, dir, dir, d)
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(spec)); err != nil {
			return fmt.Errorf("proxy: add counter: %w", err)
		}
		if o.Latency > 0 {
			spec := fmt.Sprintf(`{"name":"latency_%s","type":"latency","stream":%q,"attributes":{"latency":%d}}`,
				dir, dir, o.Latency.Milliseconds())
			if _, err := p.Toxics.AddToxicJson(strings.NewReader(spec)); err != nil {
				return fmt.Errorf("proxy: add latency: %w", err)
			}
		}
	}
	if err := p.Start(); err != nil {
		return fmt.Errorf("proxy: listen on %s: %w", o.Listen, err)
	}
	started := time.Now()
	var st proxyStats
	select {
	case <-ctx.Done():
	case <-proxyCut.fire:
		// Disabling the proxy closes every connection, client and upstream
		// side; enabling it again accepts the client's reconnections.
		st.Cut, st.CutAtSeconds = true, time.Since(started).Seconds()
		p.Stop()
		if err := p.Start(); err != nil {
			return fmt.Errorf("proxy: listen again after the cut: %w", err)
		}
		slog.Info("proxy cut every connection", "after_bytes", proxyCounters[cutDir].Load())
		<-ctx.Done()
	}
	p.Stop()
	st.UpstreamBytes = proxyCounters[stream.Upstream].Load()
	st.DownstreamBytes = proxyCounters[stream.Downstream].Load()
	if o.StatsPath == "" {
		return nil
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return os.WriteFile(o.StatsPath, b, 0o644)
}

// readProxyStats reads what a stopped proxy wrote.
func readProxyStats(p string) (*proxyStats, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("proxy stats: %w", err)
	}
	var st proxyStats
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("proxy stats %s: %w", p, err)
	}
	return &st, nil
}
