package repository

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's Prometheus metrics.
type metrics struct {
	registry       prometheus.Registerer
	sessions       prometheus.Counter
	published      prometheus.Counter
	expired        prometheus.Counter
	verified       prometheus.Counter
	verifiedBytes  prometheus.Counter
	rejected       prometheus.Counter
	packs          prometheus.Counter
	hookFailures   prometheus.Counter
	publishErrors  prometheus.Counter
	noSpace        prometheus.Counter
	verifySeconds  prometheus.Histogram
	publishSeconds prometheus.Histogram
	summarySeconds prometheus.Histogram
	hookSeconds    prometheus.Histogram
	lastPublish    prometheus.Gauge

	appstreamSeconds  prometheus.Histogram
	appstreamFailures prometheus.Counter

	deltaGenerations prometheus.Counter
	deltaFailures    prometheus.Counter
	deltaSeconds     prometheus.Histogram
	deltasRetired    prometheus.Counter
	checkRuns        *prometheus.CounterVec // by outcome: checkPassed, checkFailed, checkTimeout
	checkSeconds     prometheus.Histogram
}

// Outcomes of a run of check_hook, the values of check_hook_runs_total's
// outcome label.
const (
	checkPassed  = "passed"
	checkFailed  = "failed"
	checkTimeout = "timeout"
)

// newMetrics registers the service's metrics in r (nil: a registry of
// their own).
func newMetrics(r prometheus.Registerer) *metrics {
	if r == nil {
		r = prometheus.NewRegistry()
	}
	f := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ostree_upload", Name: name, Help: help})
		r.MustRegister(c)
		return c
	}
	g := func(name, help string) prometheus.Gauge {
		x := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "ostree_upload", Name: name, Help: help})
		r.MustRegister(x)
		return x
	}
	h := func(name, help string, buckets []float64) prometheus.Histogram {
		x := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "ostree_upload", Name: name, Help: help, Buckets: buckets})
		r.MustRegister(x)
		return x
	}
	checkRuns := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ostree_upload", Name: "check_hook_runs_total",
		Help: "Runs of check_hook by outcome: passed (the publish went on), failed (refused), timeout (killed after check_timeout, refused)."}, []string{"outcome"})
	r.MustRegister(checkRuns)
	for _, o := range []string{checkPassed, checkFailed, checkTimeout} {
		checkRuns.WithLabelValues(o)
	}
	return &metrics{
		registry:       r,
		sessions:       f("sessions_created_total", "Push sessions created."),
		published:      f("sessions_published_total", "Push sessions published."),
		expired:        f("sessions_expired_total", "Push sessions expired after the TTL."),
		verified:       f("objects_verified_total", "Objects verified and kept."),
		verifiedBytes:  f("objects_verified_bytes_total", "Bytes of verified objects."),
		rejected:       f("objects_rejected_total", "Uploads refused as corrupt."),
		packs:          f("packs_total", "Packs received, read to their end or not."),
		hookFailures:   f("update_hook_failures_total", "Runs of update_hook that failed (the refs stayed published)."),
		publishErrors:  f("publish_errors_total", "Publishes that failed on the daemon's side (repository locked, I/O, signing); refusals of the client's request are not counted."),
		noSpace:        f("space_refusals_total", "Uploads and packs refused with 507: the repository's filesystem is at its free-space floor."),
		verifySeconds:  h("verify_seconds", "Time to verify one object.", prometheus.ExponentialBuckets(0.0001, 4, 10)),
		publishSeconds: h("publish_seconds", "Time to publish one session.", prometheus.ExponentialBuckets(0.01, 3, 10)),
		summarySeconds: h("metadata_update_seconds", "Time one regeneration of the summary took (regenerated and signed, or flatpak build-update-repo); publishes that wait at once share one.", prometheus.ExponentialBuckets(0.01, 3, 10)),
		hookSeconds:    h("update_hook_seconds", "Time one run of update_hook took, failed or not.", prometheus.ExponentialBuckets(0.1, 3, 10)),
		lastPublish:    g("last_publish_timestamp_seconds", "When the last publish finished (Unix time; 0 = none since the start)."),

		appstreamSeconds:  h("appstream_update_seconds", "Time one update of a Flatpak repository's appstream branches took, after the publishes it serves were answered.", prometheus.ExponentialBuckets(0.01, 3, 10)),
		appstreamFailures: f("appstream_update_failures_total", "Updates of the appstream branches that failed (retried at the next publish or start)."),

		deltaGenerations: f("static_delta_generations_total", "Static deltas generated after the publishes that wanted them were answered."),
		deltaFailures:    f("static_delta_generation_failures_total", "Static delta generations that failed or were killed at static_delta_time_limit (tried again at the next start)."),
		deltaSeconds:     h("static_delta_generation_seconds", "Time one static delta generation took, successful or not.", prometheus.ExponentialBuckets(0.1, 3, 10)),
		deltasRetired:    f("static_deltas_retired_total", "Static deltas deleted static_delta_grace after they stopped being wanted."),
		checkRuns:        checkRuns,
		checkSeconds:     h("check_hook_seconds", "Time one run of check_hook took, whatever its outcome.", prometheus.ExponentialBuckets(0.1, 3, 10)),
	}
}

// addGauges registers the gauges read from the daemon's state at scrape
// time: live sessions and the repository's free space.
// A gauge that cannot be read reports -1 and logs why.
func (m *metrics) addGauges(live func() (int, error), free func() (uint64, error), log *slog.Logger) {
	add := func(name, help string, read func() (float64, error)) {
		m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "ostree_upload", Name: name, Help: help},
			func() float64 {
				v, err := read()
				if err != nil {
					log.Warn("metrics: cannot read a gauge", "gauge", name, "err", err)
					return -1
				}
				return v
			}))
	}
	add("sessions_open", "Open and publishing push sessions.", func() (float64, error) { n, err := live(); return float64(n), err })
	add("repo_free_bytes", "Free bytes of the production repository's filesystem, for unprivileged users.",
		func() (float64, error) { n, err := free(); return float64(n), err })
}
