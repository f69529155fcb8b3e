package server

import (
	"net"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/ballast-kv/ballast/cluster/placement"
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
	slowApplies        prometheus.Counter
	backendCommit      prometheus.Histogram
	peerRoundTrip      *prometheus.HistogramVec // To: member ID
	peerSent           *prometheus.CounterVec   // To: member ID
	peerReceived       *prometheus.CounterVec   // From: member ID
	peerSentFailures   *prometheus.CounterVec   // To: member ID
	clientSent         prometheus.Counter
	clientReceived     prometheus.Counter
	puts, ranges       prometheus.Counter
	deletes, txns      prometheus.Counter
	watchStreams       prometheus.Gauge
	hashChecks         *prometheus.CounterVec // outcome: ok, mismatch, incomplete
	placementActions   *prometheus.CounterVec // kind, outcome
	votersPerRegion    *prometheus.GaugeVec   // region
	tolerance          *prometheus.GaugeVec   // domain: region, zone, node
	grpc               *grpcprom.ServerMetrics
}

// slowApply is etcd's threshold for a slow apply.
const slowApply = 100 * time.Millisecond

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
	counter := func(sub, name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "etcd", Subsystem: sub, Name: name, Help: help})
	}
	m.slowApplies = counter("server", "slow_apply_total", "The total number of slow apply requests (likely overloaded from slow disk).")
	m.backendCommit = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "etcd", Subsystem: "disk", Name: "backend_commit_duration_seconds",
		Help:    "The latency distributions of commit called by backend.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	m.peerRoundTrip = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "etcd", Subsystem: "network", Name: "peer_round_trip_time_seconds",
		Help:    "Round-Trip-Time histogram between peers",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	}, []string{"To"})
	m.peerSent = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "network", Name: "peer_sent_bytes_total", Help: "The total number of bytes sent to peers."}, []string{"To"})
	m.peerReceived = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "network", Name: "peer_received_bytes_total", Help: "The total number of bytes received from peers."}, []string{"From"})
	m.peerSentFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "network", Name: "peer_sent_failures_total", Help: "The total number of send failures from peers."}, []string{"To"})
	m.clientSent = counter("network", "client_grpc_sent_bytes_total", "The total number of bytes sent to grpc clients.")
	m.clientReceived = counter("network", "client_grpc_received_bytes_total", "The total number of bytes received from grpc clients.")
	m.puts = counter("mvcc", "put_total", "Total number of puts seen by this member.")
	m.ranges = counter("mvcc", "range_total", "Total number of ranges seen by this member.")
	m.deletes = counter("mvcc", "delete_total", "Total number of deletes seen by this member.")
	m.txns = counter("mvcc", "txn_total", "Total number of txns seen by this member.")
	m.watchStreams = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: "debugging", Name: "mvcc_watch_stream_total", Help: "Total number of watch streams."})
	m.hashChecks = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ballast", Subsystem: "server", Name: "corruption_checks_total",
		Help: "Corruption checks run by this member as leader, by outcome: ok, mismatch (a CORRUPT alarm was raised) or incomplete (a member did not answer)."}, []string{"outcome"})
	// Every outcome is exported from the start, at zero, so that a rate or
	// an increase over the first checks is seen (a series that appears only
	// at its first increment hides that increment from both).
	for _, outcome := range []string{"ok", "mismatch", "incomplete"} {
		m.hashChecks.WithLabelValues(outcome)
	}
	m.placementActions = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ballast", Subsystem: "placement", Name: "actions_total",
		Help: "Membership changes placement made on this member as leader, by kind and outcome (ok, failed)."}, []string{"kind", "outcome"})
	m.votersPerRegion = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "ballast", Subsystem: "placement", Name: "voters",
		Help: "Voters per region, as the leader sees them (only the leader reports)."}, []string{"region"})
	m.tolerance = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "ballast", Subsystem: "placement", Name: "failure_tolerance",
		Help: "How many whole regions, zones or nodes the cluster can lose, worst case, and keep a quorum of voters (only the leader reports)."}, []string{"domain"})
	m.grpc = grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
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
		m.slowApplies, m.backendCommit, m.peerRoundTrip, m.peerSent, m.peerReceived, m.peerSentFailures,
		m.clientSent, m.clientReceived, m.puts, m.ranges, m.deletes, m.txns, m.watchStreams, m.hashChecks, m.grpc,
		m.placementActions, m.votersPerRegion, m.tolerance,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "server", Name: "leader_changes_seen_total", Help: "The number of leader changes seen."},
			func() float64 { return float64(s.node.LeaderChanges()) }),
		gauge("debugging", "mvcc_watcher_total", "Total number of watchers.", func() float64 { return float64(s.kv.Watchers()) }),
		gauge("debugging", "mvcc_slow_watcher_total", "Total number of unsynced slow watchers.", func() float64 { return float64(s.kv.SlowWatchers()) }),
		gauge("debugging", "mvcc_keys_total", "Total number of keys.", func() float64 {
			resp, err := s.kv.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true})
			if err != nil {
				return 0
			}
			return float64(resp.Count)
		}),
		info("server", "version", "Which version is running. 1 for 'server_version' label with current version.", "server_version", Version),
		info("cluster", "version", "Which version is running. 1 for 'cluster_version' label with current cluster version", "cluster_version", ClusterVersion[:3]),
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

// info is etcd's form for a fact: a gauge of 1 carrying it in a label.
func info(sub, name, help, label, value string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: sub, Name: name, Help: help, ConstLabels: prometheus.Labels{label: value}})
	g.Set(1)
	return g
}

// identified registers what is known once the member has its ID.
func (m *metrics) identified(id uint64) {
	m.reg.MustRegister(info("server", "id", "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.", "server_id", hexID(id)))
}

// countingConn counts the bytes of a connection into two counters.
type countingConn struct {
	net.Conn
	in, out prometheus.Counter
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(float64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(float64(n))
	return n, err
}

// peerLabel names the member at a peer address, for the peer metrics; an
// address not in the configuration (yet) is labelled by itself.
func (s *Server) peerLabel(addr string) string {
	if s.raftStarted.Load() {
		if conf, _, err := s.node.Configuration(); err == nil {
			for _, c := range conf {
				if c.Address == addr {
					return c.ID // raftlog's ids are hex already
				}
			}
		}
	}
	return addr
}

// countPeerConn counts the bytes of a connection this member opened to a
// peer, both ways. Connections peers open to this member are counted by
// them: each peer byte is counted once, by the member that dialed.
func (s *Server) countPeerConn(addr string, c net.Conn) net.Conn {
	id := s.peerLabel(addr)
	return &countingConn{Conn: c, in: s.metrics.peerReceived.WithLabelValues(id), out: s.metrics.peerSent.WithLabelValues(id)}
}

// countPeerFailure counts a failed dial to a member; the probes a member
// makes while it starts are not sends to members.
func (s *Server) countPeerFailure(addr string) {
	if s.raftStarted.Load() {
		s.metrics.peerSentFailures.WithLabelValues(s.peerLabel(addr)).Inc()
	}
}

// observePlacement reports the voters per region and the failure tolerance
// the leader computed.
func (m *metrics) observePlacement(f placement.Facts) {
	m.votersPerRegion.Reset()
	for _, mem := range f.Members {
		if mem.Role == placement.Voter {
			m.votersPerRegion.WithLabelValues(mem.Region).Inc()
		}
	}
	regions, zones, nodes := placement.Tolerance(f.Members)
	m.tolerance.WithLabelValues("region").Set(float64(regions))
	m.tolerance.WithLabelValues("zone").Set(float64(zones))
	m.tolerance.WithLabelValues("node").Set(float64(nodes))
}

// clearPlacement drops the leader-only series on a member that is not the
// leader.
func (m *metrics) clearPlacement() {
	m.votersPerRegion.Reset()
	m.tolerance.Reset()
}
