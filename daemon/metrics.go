package daemon

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/prometheuscollector"
)

// metrics are the daemon's Prometheus metrics, tusd's included.
type metrics struct {
	registry       *prometheus.Registry
	sessions       prometheus.Counter
	published      prometheus.Counter
	expired        prometheus.Counter
	verified       prometheus.Counter
	verifiedBytes  prometheus.Counter
	rejected       prometheus.Counter
	packs          prometheus.Counter
	hookFailures   prometheus.Counter
	authFailures   prometheus.Counter
	verifySeconds  prometheus.Histogram
	publishSeconds prometheus.Histogram
}

func newMetrics() *metrics {
	r := prometheus.NewRegistry()
	f := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ostree_upload", Name: name, Help: help})
		r.MustRegister(c)
		return c
	}
	h := func(name, help string, buckets []float64) prometheus.Histogram {
		x := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "ostree_upload", Name: name, Help: help, Buckets: buckets})
		r.MustRegister(x)
		return x
	}
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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
		authFailures:   f("auth_failures_total", "Requests with a missing, unknown or expired token."),
		verifySeconds:  h("verify_seconds", "Time to verify one object.", prometheus.ExponentialBuckets(0.0001, 4, 10)),
		publishSeconds: h("publish_seconds", "Time to publish one session.", prometheus.ExponentialBuckets(0.01, 3, 10)),
	}
}

func (m *metrics) addTus(h *handler.Handler) {
	m.registry.MustRegister(prometheuscollector.New(h.Metrics))
}
