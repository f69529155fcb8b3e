package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics uses etcd's metric names so its dashboards and alerts work
// unchanged. Each server has its own registry: no global state.
type metrics struct {
	reg                *prometheus.Registry
	walFsync           prometheus.Histogram
	proposalsCommitted prometheus.Counter
	proposalsFailed    prometheus.Counter
	proposalsPending   prometheus.Gauge
	healthSuccess      prometheus.Counter
	healthFailures     prometheus.Counter
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.walFsync = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "etcd", Subsystem: "disk", Name: "wal_fsync_duration_seconds",
		Help:    "The latency distributions of fsync called by WAL.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	m.proposalsCommitted = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "etcd", Subsystem: "server", Name: "proposals_committed_total", Help: "The total number of consensus proposals committed."})
	m.proposalsFailed = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "etcd", Subsystem: "server", Name: "proposals_failed_total", Help: "The total number of failed proposals seen."})
	m.proposalsPending = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "etcd", Subsystem: "server", Name: "proposals_pending", Help: "The current number of pending proposals to commit."})
	m.healthSuccess = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "etcd", Subsystem: "server", Name: "health_success", Help: "The total number of successful health checks"})
	m.healthFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "etcd", Subsystem: "server", Name: "health_failures", Help: "The total number of failed health checks"})
	gauge := func(sub, name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: sub, Name: name, Help: help}, f)
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	m.reg.MustRegister(
		m.walFsync, m.proposalsCommitted, m.proposalsFailed, m.proposalsPending, m.healthSuccess, m.healthFailures,
		gauge("server", "has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", func() float64 { return b2f(s.node.Leader() != "") }),
		gauge("server", "is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.", func() float64 { return b2f(s.node.IsLeader()) }),
		gauge("server", "proposals_applied_total", "The total number of consensus proposals applied.", func() float64 { return float64(s.node.AppliedIndex()) }),
		gauge("mvcc", "db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.", func() float64 { return float64(s.kv.Size().Total) }),
		gauge("mvcc", "db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.", func() float64 { return float64(s.kv.Size().InUse) }),
		gauge("debugging", "mvcc_current_revision", "The current revision of store.", func() float64 { return float64(s.kv.Rev()) }),
		gauge("debugging", "mvcc_compact_revision", "The revision of the last compaction in store.", func() float64 { return float64(s.kv.CompactRev()) }),
		gauge("debugging", "auth_revision", "The current revision of auth store.", func() float64 { return float64(s.kv.Auth().Revision()) }),
		gauge("server", "quota_backend_bytes", "Current backend storage quota size in bytes.", func() float64 { return float64(s.cfg.QuotaBackendBytes) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}
