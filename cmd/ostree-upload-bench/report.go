package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// summary holds the medians of one tool's runs in a scenario.
type summary struct {
	Runs             int     `json:"runs"`
	WallSeconds      float64 `json:"wall_seconds"`
	WireBytes        float64 `json:"wire_bytes"`
	ClientRSSKiB     float64 `json:"client_rss_kib"`
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	ServerRSSKiB     float64 `json:"server_rss_kib,omitempty"`
	ServerCPUSeconds float64 `json:"server_cpu_seconds,omitempty"`
	MaxAttempts      int     `json:"max_attempts"` // worst case of client invocations needed
	Cuts             int     `json:"cuts,omitempty"`
	NegotiateSeconds float64 `json:"negotiate_seconds,omitempty"` // from push --stats-json
}

// scenarioResult is everything measured in one scenario.
type scenarioResult struct {
	Scenario scenario           `json:"scenario"`
	Runs     []measurement      `json:"runs"`
	Median   map[string]summary `json:"median"`
	// WallRatio is the median push wall time over the median pull wall time.
	WallRatio float64 `json:"wall_ratio_push_over_pull,omitempty"`
	// Ratios are each tool's median wall time over the baseline's (pull,
	// or ostree-push in the ssh scenarios).
	Ratios map[string]float64 `json:"wall_ratio_over_baseline,omitempty"`
	// Skipped are the tools the scenario did not run, and why.
	Skipped map[string]string `json:"skipped,omitempty"`
}

// median returns the median of xs (the mean of the middle two for an even
// count), or 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// summarize computes per-tool medians and the wall time ratios. The server
// figures of a push over ssh are the daemon's and the remote command's
// (ssh-serve) together: CPU summed, the larger peak RSS.
func (r *scenarioResult) summarize() {
	r.Median = map[string]summary{}
	for _, tool := range r.Scenario.tools() {
		var wall, wire, crss, ccpu, srss, scpu, neg []float64
		var s summary
		for _, m := range r.Runs {
			if m.Tool != tool {
				continue
			}
			s.Runs++
			wall = append(wall, m.Client.WallSeconds)
			wire = append(wire, float64(m.WireBytes))
			crss = append(crss, float64(m.Client.MaxRSSKiB))
			ccpu = append(ccpu, m.Client.CPUSeconds)
			if m.Server != nil || m.Remote != nil {
				var rss int64
				var cpu float64
				for _, u := range []*usage{m.Server, m.Remote} {
					if u != nil {
						rss, cpu = max(rss, u.MaxRSSKiB), cpu+u.CPUSeconds
					}
				}
				srss = append(srss, float64(rss))
				scpu = append(scpu, cpu)
			}
			if v, ok := m.PushStats["negotiate_seconds"].(float64); ok {
				neg = append(neg, v)
			}
			s.MaxAttempts = max(s.MaxAttempts, m.attempts())
			if m.Proxy != nil && m.Proxy.Cut {
				s.Cuts++
			}
		}
		if s.Runs == 0 {
			continue
		}
		s.WallSeconds, s.WireBytes = median(wall), median(wire)
		s.ClientRSSKiB, s.ClientCPUSeconds = median(crss), median(ccpu)
		s.ServerRSSKiB, s.ServerCPUSeconds = median(srss), median(scpu)
		s.NegotiateSeconds = median(neg)
		r.Median[tool] = s
	}
	r.Ratios = nil
	if base := r.Median[r.Scenario.baseline()]; base.WallSeconds > 0 {
		for tool, s := range r.Median {
			if tool != r.Scenario.baseline() {
				if r.Ratios == nil {
					r.Ratios = map[string]float64{}
				}
				r.Ratios[tool] = s.WallSeconds / base.WallSeconds
			}
		}
	}
	if !r.Scenario.SSH {
		r.WallRatio = r.Ratios[toolPush]
	}
}

// humanBytes formats a byte count with a binary-prefixed unit.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func secs(v float64) string { return fmt.Sprintf("%.2f", v) }

// toolLabels name the tools in the tables.
var toolLabels = map[string]string{
	toolPush:       "ostree-upload",
	toolPull:       "ostree pull",
	toolPushSSH:    "ostree-upload ssh",
	toolOstreePush: "ostree-push",
}

// writeTable prints one line per scenario and tool: medians of wall time,
// bytes on the wire, client and server peak RSS and CPU, the wall time ratio
// over the scenario's baseline and the client invocations needed. The push
// vs pull scenarios come first, then the ssh ones in a table of their own
// (baseline ostree-push, where ostree-upload's HTTP push is labelled http).
func writeTable(w io.Writer, results []*scenarioResult) error {
	var pull, ssh []*scenarioResult
	for _, r := range results {
		if r.Scenario.SSH {
			ssh = append(ssh, r)
		} else {
			pull = append(pull, r)
		}
	}
	if len(pull) > 0 {
		if err := writeTableOf(w, pull, "push/pull", "daemon", nil); err != nil {
			return err
		}
		for _, r := range pull {
			if r.Scenario.Flaky {
				if _, err := fmt.Fprintln(w, "flaky: the traffic crosses lo twice (client to proxy, proxy to server), so its wire bytes count every byte twice."); err != nil {
					return err
				}
				break
			}
		}
	}
	if len(ssh) > 0 {
		if len(pull) > 0 {
			fmt.Fprintln(w)
		}
		if err := writeTableOf(w, ssh, "/ostree-push", "server", map[string]string{toolPush: "ostree-upload http"}); err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, r := range ssh {
			for _, tool := range r.Scenario.tools() {
				if why, ok := r.Skipped[tool]; ok && !seen[tool+why] {
					seen[tool+why] = true
					if _, err := fmt.Fprintf(w, "%s skipped: %s\n", toolLabels[tool], why); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

func writeTableOf(w io.Writer, results []*scenarioResult, ratioHeader, serverHeader string, labels map[string]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\tfixture\ttool\truns\twall s\t%s\twire\tclient RSS\tclient CPU s\t%s RSS\t%s CPU s\tattempts\t\n", ratioHeader, serverHeader, serverHeader)
	for _, r := range results {
		first := true
		for _, tool := range r.Scenario.tools() {
			s, ok := r.Median[tool]
			if !ok {
				continue
			}
			name, fixture, ratio := r.Scenario.Name, r.Scenario.Fixture, ""
			if !first {
				name, fixture = "", ""
			}
			first = false
			if v, ok := r.Ratios[tool]; ok {
				ratio = fmt.Sprintf("%.2f", v)
			}
			srss, scpu := "-", "-"
			if s.ServerRSSKiB > 0 {
				srss, scpu = humanBytes(int64(s.ServerRSSKiB)*1024), secs(s.ServerCPUSeconds)
			}
			label := toolLabels[tool]
			if l, ok := labels[tool]; ok {
				label = l
			}
			attempts := fmt.Sprint(s.MaxAttempts)
			if s.Cuts > 0 {
				attempts += " (cut)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
				name, fixture, label, s.Runs, secs(s.WallSeconds), ratio, humanBytes(int64(s.WireBytes)),
				humanBytes(int64(s.ClientRSSKiB)*1024), secs(s.ClientCPUSeconds), srss, scpu, attempts)
		}
	}
	return tw.Flush()
}

// report is the JSON document the bench writes.
type report struct {
	Started  time.Time           `json:"started"`
	Finished time.Time           `json:"finished"`
	Host     hostInfo            `json:"host"`
	Options  map[string]string   `json:"options"` // every flag, as given or defaulted
	Binary   string              `json:"binary"`
	Version  string              `json:"ostree_upload_version"`
	Ostree   string              `json:"ostree_version"`
	Fixtures map[string]*fixture `json:"fixtures"`
	Results  []*scenarioResult   `json:"scenarios"`
	Million  *millionResult      `json:"million,omitempty"`
	Tiny     *millionResult      `json:"tiny,omitempty"` // the tiny-files push and pull
	// OstreePush is the ostree-push the ssh scenarios ran, or why they
	// skipped it.
	OstreePush *ostreePushInfo `json:"ostree_push,omitempty"`
	Failures   []string        `json:"failures,omitempty"`
}

type hostInfo struct {
	CPUs   int    `json:"cpus"`
	Kernel string `json:"kernel"`
	MemKiB int64  `json:"mem_kib"`
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// writeMillion prints the result of a push of tiny files under title: the
// push's figures, the daemon's anonymous memory, the journal, the floor and,
// for the tiny-files push, ostree pull's figures.
func writeMillion(w io.Writer, title string, m *millionResult) {
	if m == nil {
		return
	}
	if m.Skipped != "" {
		fmt.Fprintf(w, "\n%s: skipped: %s\n", title, m.Skipped)
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s: %d files, %d objects, %s in the build repo\n", title, m.Files, m.Objects.Objects, humanBytes(m.Objects.DiskBytes))
	fmt.Fprintf(&b, "  total %.1f s", m.Push.Client.WallSeconds)
	if m.Commit != nil {
		fmt.Fprintf(&b, " (push --no-publish, then sessions commit: %.1f s)", m.Commit.WallSeconds)
	}
	if m.NegotiateSeconds > 0 {
		fmt.Fprintf(&b, ", negotiation %.1f s", m.NegotiateSeconds)
	}
	fmt.Fprintf(&b, ", wire %s\n", humanBytes(m.Push.WireBytes))
	if m.Floor != nil {
		fmt.Fprintf(&b, "  floor (cp -a of the objects, syncfs) %.1f s (copy %.1f s, sync %.1f s)", m.Floor.WallSeconds, m.Floor.CopySeconds, m.Floor.SyncSeconds)
		if m.Floor.WallSeconds > 0 {
			fmt.Fprintf(&b, "; push/floor %.2f", m.Push.Client.WallSeconds/m.Floor.WallSeconds)
		}
		if !m.Floor.SameFilesystem {
			b.WriteString(" (copied to another filesystem)")
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "  client peak RSS %s, CPU %.1f s\n", humanBytes(m.Push.Client.MaxRSSKiB*1024), m.Push.Client.CPUSeconds)
	if m.Push.Server != nil {
		fmt.Fprintf(&b, "  daemon peak RSS %s", humanBytes(m.Push.Server.MaxRSSKiB*1024))
		if d := m.DaemonMem; d != nil && d.Samples > 0 {
			fmt.Fprintf(&b, " (sampled every %d ms: RssAnon %s, RssFile %s)", d.IntervalMillis, humanBytes(d.RssAnonKiB*1024), humanBytes(d.RssFileKiB*1024))
		}
		fmt.Fprintf(&b, ", CPU %.1f s\n", m.Push.Server.CPUSeconds)
	}
	if j := m.Journal; j != nil {
		b.WriteString("  journal")
		if j.Uploaded != nil {
			fmt.Fprintf(&b, " uploaded %s", journalLine(j.Uploaded))
			if j.Objects > 0 {
				fmt.Fprintf(&b, " = %.0f B/object (high-water %.0f B/object over %d objects)", j.BytesPerObj, j.HighWaterPObj, j.Objects)
			}
			b.WriteString(";")
		}
		if j.Committed != nil {
			fmt.Fprintf(&b, " published %s;", journalLine(j.Committed))
		}
		if j.Stopped != nil {
			fmt.Fprintf(&b, " stopped %s, %s free", journalLine(j.Stopped), humanBytes(j.Stopped.FreeBytes))
		}
		b.WriteString("\n")
	}
	if l := m.SmallPushes; l != nil {
		fmt.Fprintf(&b, "  another token's push of %d small files: %.2f s to the idle daemon; during this push %d of them, median %.2f s, worst %.2f s",
			smallPushFiles, l.IdleSeconds, len(l.DuringSeconds), l.median(), l.worst())
		if l.Failed > 0 {
			fmt.Fprintf(&b, ", %d failed", l.Failed)
		}
		b.WriteString("\n")
	}
	if m.Pull != nil {
		fmt.Fprintf(&b, "  ostree pull %.1f s, wire %s, client peak RSS %s, CPU %.1f s; push/pull %.2f\n",
			m.Pull.Client.WallSeconds, humanBytes(m.Pull.WireBytes), humanBytes(m.Pull.Client.MaxRSSKiB*1024), m.Pull.Client.CPUSeconds, m.PushOverPull)
	}
	if len(m.Runs) > 1 {
		push, floor, pull := runColumns(m.Runs)
		fmt.Fprintf(&b, "  %d runs (the figures above are the first's): push %s s (median %.1f), floor %s s (median %.1f), ostree pull %s s (median %.1f); push/pull of the medians %.2f\n",
			len(m.Runs), secondsList(push), median(push), secondsList(floor), median(floor), secondsList(pull), median(pull), m.MedianPushOverPull)
	}
	io.WriteString(w, b.String())
}

func journalLine(j *journalSize) string {
	return fmt.Sprintf("%s (high-water %s)", humanBytes(j.FileBytes), humanBytes(j.HighWaterBytes))
}

// secondsList prints durations in seconds, in run order.
func secondsList(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.1f", x)
	}
	return strings.Join(parts, ", ")
}
