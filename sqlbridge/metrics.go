package sqlbridge

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	lastMirrored prometheus.Gauge
	lag          prometheus.Gauge
	writer       prometheus.Gauge
	mirrored     prometheus.Counter
	errors       *prometheus.CounterVec // op: connect, write, compact, resync
	resyncs      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		lastMirrored: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "ballast", Subsystem: "sqlbridge", Name: "last_mirrored_revision",
			Help: "The last revision this member wrote to the SQL mirror."}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "ballast", Subsystem: "sqlbridge", Name: "lag_revisions",
			Help: "Revisions applied on this member and not yet in the SQL mirror (on the member that mirrors)."}),
		writer: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "ballast", Subsystem: "sqlbridge", Name: "writer",
			Help: "1 while this member holds the mirror's lock and writes to the database."}),
		mirrored: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ballast", Subsystem: "sqlbridge", Name: "mirrored_revisions_total",
			Help: "Revisions this member wrote to the SQL mirror."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ballast", Subsystem: "sqlbridge", Name: "errors_total",
			Help: "Failed attempts to reach or write the SQL mirror, by operation."}, []string{"op"}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ballast", Subsystem: "sqlbridge", Name: "resyncs_total",
			Help: "Times the mirror was rebuilt from a snapshot because compaction removed revisions it had not copied."}),
	}
	if reg != nil {
		reg.MustRegister(m.lastMirrored, m.lag, m.writer, m.mirrored, m.errors, m.resyncs)
	}
	return m
}
