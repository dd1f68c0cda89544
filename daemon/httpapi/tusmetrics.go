package httpapi

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tus/tusd/v2/pkg/handler"
)

// tusCollector exports the counters tusd keeps for one repository's uploads
// (handler.Metrics) under the daemon's own names.
type tusCollector struct{ m handler.Metrics }

var (
	tusRequestsDesc = prometheus.NewDesc("ostree_upload_tus_requests_total",
		"tus requests that reached tusd, by method.", []string{"method"}, nil)
	tusErrorsDesc = prometheus.NewDesc("ostree_upload_tus_errors_total",
		"tus requests tusd answered with an error, by status and error code.", []string{"status", "code"}, nil)
	tusBytesDesc = prometheus.NewDesc("ostree_upload_tus_received_bytes_total",
		"Bytes received for tus uploads.", nil, nil)
	tusCreatedDesc = prometheus.NewDesc("ostree_upload_tus_uploads_created_total",
		"tus uploads created.", nil, nil)
	tusFinishedDesc = prometheus.NewDesc("ostree_upload_tus_uploads_finished_total",
		"tus uploads whose last byte arrived.", nil, nil)
	tusTerminatedDesc = prometheus.NewDesc("ostree_upload_tus_uploads_terminated_total",
		"tus uploads deleted by their client.", nil, nil)
)

func (tusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{tusRequestsDesc, tusErrorsDesc, tusBytesDesc, tusCreatedDesc, tusFinishedDesc, tusTerminatedDesc} {
		ch <- d
	}
}

func (c tusCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v *uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(atomic.LoadUint64(v)), labels...)
	}
	for method, v := range c.m.RequestsTotal {
		counter(tusRequestsDesc, v, method)
	}
	for e, v := range c.m.ErrorsTotal.Load() {
		counter(tusErrorsDesc, v, strconv.Itoa(e.StatusCode), e.ErrorCode)
	}
	counter(tusBytesDesc, c.m.BytesReceived)
	counter(tusCreatedDesc, c.m.UploadsCreated)
	counter(tusFinishedDesc, c.m.UploadsFinished)
	counter(tusTerminatedDesc, c.m.UploadsTerminated)
}
