package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"

	"github.com/ballast-kv/ballast/cluster/gossip"
	"github.com/ballast-kv/ballast/mvcc"
	"github.com/ballast-kv/ballast/raftlog"
	"github.com/ballast-kv/ballast/store"
)

// Version is the etcd version Ballast reports: the 3.6 line, so that
// kube-apiserver enables watch progress requests and consistent reads.
const (
	Version        = "3.6.5"
	ClusterVersion = "3.6.0"
)

// Server is one Ballast member.
type Server struct {
	cfg       Config
	log       *slog.Logger
	id        uint64
	clusterID uint64
	peerURLs  []string
	reqIDs    *idGenerator

	stateDB *store.DB
	kv      *mvcc.Store
	node    *raftlog.Node
	metrics *metrics
	tokens  tokenProvider

	// TLS of the https client URLs and of the peer listener; nil: plain.
	clientTLS, peerTLS *tls.Config

	grpc      *grpc.Server
	http      *http.Server
	muxes     []*connMux
	listeners []net.Listener
	gossip    *gossip.Gossip // nil without --gossip-listen-addr
	placer    reconciler
	// metricsLns serve only HTTP: --listen-metrics-urls.
	metricsLns []net.Listener

	// The peer port: Raft, and the peer service followers use.
	peerGRPC  *grpc.Server
	peerMuxes []*peerListener
	peerRaft  *chanListener
	peerFwd   *chanListener
	peerCall  *chanListener
	peerRPC   *chanListener
	forwarder *forwarder // writes to the leader
	caller    *forwarder // peer service calls on the read path
	dialer    *peerDialer
	peers     *peerClients

	memberMu sync.Mutex // one membership change at a time
	progress progress
	removed  atomic.Bool
	// raftStarted is set once s.node exists: the peer service waits for it.
	raftStarted atomic.Bool
	leaveCh     chan struct{} // closed when this member must stop (removed)
	leave       sync.Once

	stopCh    chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// stateMachine adapts mvcc.Store to raftlog.StateMachine, timing applies
// and syncs for etcd's slow-apply and backend-commit metrics.
type stateMachine struct {
	kv *mvcc.Store
	m  *metrics
}

var _ raftlog.StateMachine = stateMachine{}

func (m stateMachine) Apply(entries []raftlog.Entry) []any {
	es := make([]mvcc.Entry, len(entries))
	for i, e := range entries {
		es[i] = mvcc.Entry{Index: e.Index, Data: e.Data}
	}
	start := time.Now()
	res := m.kv.Apply(es)
	if time.Since(start) > slowApply {
		m.m.slowApplies.Inc()
	}
	return res
}
func (m stateMachine) AppliedIndex() uint64 { return m.kv.AppliedIndex() }
func (m stateMachine) Sync() error {
	start := time.Now()
	err := m.kv.Sync()
	m.m.backendCommit.Observe(time.Since(start).Seconds())
	return err
}
func (m stateMachine) WriteSnapshot(w io.Writer) (uint64, error) { return m.kv.WriteSnapshot(w) }
func (m stateMachine) Restore(r io.Reader) error                 { return m.kv.Restore(r) }

// New opens the member's data and binds its listeners; Run serves.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.DataDir = cfg.dataDir()
	s := &Server{cfg: cfg, log: cfg.Logger, peerURLs: cfg.InitialAdvertisePeerURLs, stopCh: make(chan struct{}), leaveCh: make(chan struct{})}
	// Every certificate and key is read before anything is written to the
	// data dir: a member that cannot serve must not leave a member file
	// behind.
	var err error
	var peerDial *tls.Config
	if s.clientTLS, s.peerTLS, peerDial, err = cfg.loadTLS(); err != nil {
		return nil, err
	}
	// Tokens are served once the node runs (gRPC starts after it).
	if s.tokens, err = newTokenProvider(cfg.AuthToken, cfg.AuthTokenTTL, func(ctx context.Context, index uint64) error {
		return s.node.WaitApplied(ctx, index)
	}); err != nil {
		return nil, err
	}
	s.dialer = newPeerDialer(cfg.ListenPeerURLs[0], peerDial)
	s.dialer.opened, s.dialer.failed = s.countPeerConn, s.countPeerFailure
	s.peers = &peerClients{dialer: s.dialer}
	s.forwarder = &forwarder{magic: forwardMagic, dialer: s.dialer, clusterID: func() uint64 { return s.clusterID }}
	s.caller = &forwarder{magic: callMagic, dialer: s.dialer, clusterID: func() uint64 { return s.clusterID }}
	s.metrics = newMetrics(s)
	if err := s.startGossip(); err != nil {
		s.closePeers()
		return nil, err
	}
	bootstrap, err := s.identify()
	if err != nil {
		s.closePeers()
		return nil, err
	}
	if s.gossip != nil {
		s.gossip.SetMeta(s.gossipMeta()) // now with this member's id
	}
	s.reqIDs = newIDGenerator(s.id, time.Now())
	s.metrics.identified(s.id)

	// The synced Raft log is the state's write-ahead log: every apply is
	// replayed from it after a crash (raftlog.StateMachine), so the state
	// store keeps none of its own and is made durable by a flush before
	// Raft truncates its log (docs/benchmarks.md, session 16).
	s.stateDB, err = store.Open(store.Config{Dir: filepath.Join(cfg.DataDir, "state"), Logger: cfg.Logger, NoWAL: true, MemTableSize: store.SpreadMemTableSize(s.id)})
	if err != nil {
		s.closePeers()
		return nil, err
	}
	s.kv, err = mvcc.Open(s.stateDB, mvcc.Config{MinLeaseTTL: minLeaseTTL(cfg), Logger: cfg.Logger, Tokens: s.tokens})
	if err != nil {
		s.closePeers()
		s.stateDB.Close()
		return nil, err
	}
	if err := s.listenPeers(); err != nil {
		s.closePeers()
		s.kv.Close()
		s.stateDB.Close()
		return nil, err
	}
	advertise, _ := hostPort(s.peerURLs[0])
	advAddr, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		s.closePeers()
		s.kv.Close()
		s.stateDB.Close()
		return nil, fmt.Errorf("--initial-advertise-peer-urls: %w", err)
	}
	rc := raftlog.DefaultConfig()
	rc.ID = hexID(s.id)
	rc.Dir = cfg.DataDir
	rc.Advertise = advertise
	rc.Stream = &raftStream{ln: s.peerRaft, advertise: advAddr, dialer: s.dialer, clusterID: func() uint64 { return s.clusterID }}
	rc.Bootstrap = bootstrap
	rc.RemoteReadIndex = s.remoteReadIndex
	rc.PeerTerm = s.askTerm
	rc.RestoreOnStart = s.kv.Restoring()
	rc.HeartbeatInterval, rc.ElectionTimeout = cfg.HeartbeatInterval, cfg.ElectionTimeout
	rc.SnapshotCount = cfg.SnapshotCount
	rc.ApplyTimeout = 5*time.Second + 2*cfg.ElectionTimeout
	rc.Logger = cfg.Logger
	rc.OnSync = func(d time.Duration) { s.metrics.walFsync.Observe(d.Seconds()) }
	s.node, err = raftlog.Open(rc, stateMachine{s.kv, s.metrics})
	if err != nil {
		s.closePeers()
		s.kv.Close()
		s.stateDB.Close()
		return nil, err
	}
	s.raftStarted.Store(true)
	if err := s.listen(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// listenPeers binds the peer URLs; connections are routed at once, so
// Raft can reach this member as soon as it starts.
func (s *Server) listenPeers() error {
	s.peerRaft, s.peerFwd, s.peerCall, s.peerRPC = newChanListener(nil), newChanListener(nil), newChanListener(nil), newChanListener(nil)
	streams := map[byte]*chanListener{raftMagic: s.peerRaft, forwardMagic: s.peerFwd, callMagic: s.peerCall}
	for _, u := range s.cfg.ListenPeerURLs {
		addr, _ := hostPort(u)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			s.closePeers()
			return fmt.Errorf("listen on peer URL %s: %w", u, err)
		}
		if s.peerRaft.addr == nil {
			for _, l := range []*chanListener{s.peerRaft, s.peerFwd, s.peerCall, s.peerRPC} {
				l.addr = ln.Addr()
			}
		}
		pl := newPeerListener(ln, s.peerTLS, streams, s.peerRPC, func() uint64 { return s.clusterID }, s.refused)
		s.peerMuxes = append(s.peerMuxes, pl)
		go pl.serve()
	}
	s.peerGRPC = grpc.NewServer(grpc.MaxRecvMsgSize(math.MaxInt32), grpc.MaxSendMsgSize(math.MaxInt32))
	s.peerGRPC.RegisterService(&peerServiceDesc, s)
	go s.peerGRPC.Serve(s.peerRPC)
	go s.serveStreams(s.peerFwd, s.readForward)
	go s.serveStreams(s.peerCall, s.readCall)
	return nil
}

func (s *Server) closePeers() {
	for _, p := range s.peerMuxes {
		p.Close()
	}
	if s.peerRaft != nil {
		s.peerRaft.shut()
		s.peerFwd.shut()
		s.peerCall.shut()
	}
	// Close has stopped it gracefully already; New's failure paths have not.
	if s.peerGRPC != nil {
		s.peerGRPC.Stop()
	}
	s.peers.close()
	s.forwarder.close()
	s.caller.close()
	s.closeGossip()
}

// closeGossip leaves the gossip pool; it is idempotent.
func (s *Server) closeGossip() {
	if s.gossip != nil {
		s.gossip.Close()
	}
}

// stopGRPC lets a server's calls in flight finish for up to two seconds,
// then cuts the rest.
func stopGRPC(srv *grpc.Server) {
	if srv == nil {
		return
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		srv.Stop()
	}
}

// refused logs a peer of another cluster trying to reach this member.
func (s *Server) refused(remote net.Addr, theirs uint64) {
	s.log.Error("refused a peer connection from another cluster", "remote", remote.String(), "their-cluster-id", hexID(theirs), "cluster-id", hexID(s.clusterID))
}

// minLeaseTTL is etcd's rule: 1.5 election timeouts, rounded up to seconds.
func minLeaseTTL(cfg Config) int64 {
	ticks := int64(cfg.ElectionTimeout / cfg.HeartbeatInterval)
	min := time.Duration(3*ticks/2) * cfg.HeartbeatInterval
	return int64(math.Ceil(min.Seconds()))
}

// listenOn binds the address of a URL of the kind named and keeps the
// listener for Close.
func (s *Server) listenOn(kind, u string) (net.Listener, error) {
	addr, _ := hostPort(u)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s URL %s: %w", kind, u, err)
	}
	s.listeners = append(s.listeners, ln)
	return ln, nil
}

func (s *Server) listen() error {
	s.grpc = grpc.NewServer(
		grpc.MaxRecvMsgSize(s.cfg.MaxRequestBytes+512*1024),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(math.MaxUint32),
		// Reused handler goroutines keep their grown stacks: no stack growth per request.
		grpc.NumStreamWorkers(uint32(4*runtime.GOMAXPROCS(0))),
		grpc.Creds(handshakenCreds{}), // TLS, if any, was done by the listener
		grpc.ChainUnaryInterceptor(s.metrics.grpc.UnaryServerInterceptor(), s.requireLeaderUnary, s.authUnary),
		grpc.ChainStreamInterceptor(s.metrics.grpc.StreamServerInterceptor(), s.requireLeaderStream, s.authStream),
	)
	pb.RegisterKVServer(s.grpc, &kvServer{s: s})
	pb.RegisterWatchServer(s.grpc, &watchServer{s: s})
	pb.RegisterLeaseServer(s.grpc, &leaseServer{s: s})
	pb.RegisterMaintenanceServer(s.grpc, &maintenanceServer{s: s})
	pb.RegisterClusterServer(s.grpc, &clusterServer{s: s})
	pb.RegisterAuthServer(s.grpc, &authServer{s: s})
	s.metrics.grpc.InitializeMetrics(s.grpc) // every method at zero, as etcd shows them
	s.http = &http.Server{Handler: s.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
	for _, u := range s.cfg.ListenClientURLs {
		ln, err := s.listenOn("client", u)
		if err != nil {
			return err
		}
		// Bytes on the client port, as etcd's client_grpc_*_bytes_total
		// (which also counts only what crosses the port).
		count := func(c net.Conn) net.Conn {
			return &countingConn{Conn: c, in: s.metrics.clientReceived, out: s.metrics.clientSent}
		}
		if isHTTPS(u) {
			s.muxes = append(s.muxes, newConnMux(ln, s.clientTLS, count))
		} else {
			s.muxes = append(s.muxes, newConnMux(ln, nil, count))
		}
	}
	for _, u := range s.cfg.ListenMetricsURLs {
		ln, err := s.listenOn("metrics", u)
		if err != nil {
			return err
		}
		if isHTTPS(u) {
			ln = tls.NewListener(ln, s.clientTLS)
		}
		s.metricsLns = append(s.metricsLns, ln)
	}
	return nil
}

// Run serves until ctx is cancelled or Close is called.
func (s *Server) Run(ctx context.Context) error {
	s.wg.Add(6)
	go s.sqlMirrorLoop()
	go s.leaseLoop()
	go s.autoCompactLoop()
	go s.membershipLoop()
	go s.corruptCheckLoop()
	go s.placementLoop()
	// As etcd does, serve clients only once this member's name and client
	// URLs are in the member table, so that every member a client can
	// reach is listed with them (clientv3's Sync, etcdctl --cluster).
	if s.awaitPublished(ctx) {
		for _, m := range s.muxes {
			go s.grpc.Serve(m.grpc)
			go s.http.Serve(m.http)
			go m.serve()
		}
		for _, ln := range s.metricsLns {
			go s.http.Serve(ln)
		}
	}
	s.log.Info("serving", "name", s.cfg.Name, "member-id", fmt.Sprintf("%x", s.id), "client-urls", s.cfg.ListenClientURLs, "peer-urls", s.cfg.ListenPeerURLs, "data-dir", s.cfg.DataDir)
	select {
	case <-ctx.Done():
	case <-s.stopCh:
	case <-s.leaveCh:
	}
	err := s.Close()
	if s.removed.Load() {
		return ErrRemoved
	}
	return err
}

// ErrRemoved ends Run on a member that was removed from its cluster.
var ErrRemoved = errors.New("the member has been permanently removed from the cluster")

// Close stops serving and closes the data; it is idempotent.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stopCh)
		s.closeGossip() // the others see this member gone at once
		for _, m := range s.muxes {
			m.Close()
		}
		stopGRPC(s.grpc)
		if s.http != nil {
			s.http.Close()
		}
		// Peers' requests (Status, reads) read the data too: stop serving
		// them before it is closed. Raft's own connections stay until the
		// node is closed.
		stopGRPC(s.peerGRPC)
		s.wg.Wait()
		// Closing the state store flushes it: everything applied is durable.
		err = errors.Join(s.node.Close(), s.kv.Close(), s.stateDB.Close())
		s.closePeers()
	})
	return err
}

// header fills a response header; a zero revision becomes the current one.
func (s *Server) header(h *pb.ResponseHeader) *pb.ResponseHeader {
	if h == nil {
		h = &pb.ResponseHeader{}
	}
	h.ClusterId, h.MemberId, h.RaftTerm = s.clusterID, s.id, s.node.Term()
	if h.Revision == 0 {
		h.Revision = s.kv.Rev()
	}
	return h
}

// linearizable waits until this member's state reflects every write
// acknowledged before the call.
func (s *Server) linearizable(ctx context.Context) error {
	return toGRPC(s.node.LinearizableBarrier(ctx))
}

// every calls f every d until the server stops.
func (s *Server) every(d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-s.stopCh:
			return
		case <-t.C:
		}
		f()
	}
}

// leaseLoop runs lease expiry and checkpoints while this member leads.
func (s *Server) leaseLoop() {
	defer s.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	leading := false
	lastCheckpoint := time.Now()
	for {
		select {
		case <-s.stopCh:
			return
		case <-t.C:
		}
		if isLeader := s.node.IsLeader(); isLeader != leading {
			leading = isLeader
			if leading {
				ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ElectionTimeout*5)
				err := s.node.LinearizableBarrier(ctx)
				cancel()
				if err != nil {
					leading = false
					continue
				}
				s.kv.Promote(s.cfg.ElectionTimeout)
			} else {
				s.kv.Demote()
			}
		}
		if !leading {
			continue
		}
		for _, id := range s.kv.ExpiredLeases(500) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := s.propose(ctx, &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}})
			cancel()
			if err != nil && !errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) {
				s.log.Warn("lease revoke failed", "lease", id, "err", err)
			}
		}
		if time.Since(lastCheckpoint) >= leaseCheckpointInterval {
			lastCheckpoint = time.Now()
			if cps := s.kv.LeaseCheckpoints(leaseCheckpointInterval); len(cps) > 0 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				s.propose(ctx, &pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{Checkpoints: cps}})
				cancel()
			}
		}
	}
}

// leaseCheckpointInterval is how often the leader persists remaining TTLs,
// so a new leader continues them instead of granting full TTLs again.
const leaseCheckpointInterval = time.Minute

// autoCompactLoop implements --auto-compaction-mode/retention on the leader.
func (s *Server) autoCompactLoop() {
	defer s.wg.Done()
	ret, _ := s.cfg.autoCompaction()
	if ret == nil {
		return
	}
	interval := 5 * time.Minute
	if d, ok := ret.(time.Duration); ok {
		interval = max(min(d, time.Hour)/10, time.Second)
	}
	type sample struct {
		at  time.Time
		rev int64
	}
	var samples []sample
	s.every(interval, func() {
		now, rev := time.Now(), s.kv.Rev()
		var target int64
		switch r := ret.(type) {
		case time.Duration:
			samples = append(samples, sample{now, rev})
			for len(samples) > 1 && now.Sub(samples[1].at) >= r {
				samples = samples[1:]
			}
			if now.Sub(samples[0].at) >= r {
				target = samples[0].rev
			}
		case int64:
			target = rev - r
		}
		if target <= s.kv.CompactRev() || target <= 0 || !s.node.IsLeader() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := s.propose(ctx, &pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: target}})
		cancel()
		if err != nil {
			s.log.Warn("auto compaction failed", "revision", target, "err", err)
		} else {
			s.log.Info("auto compacted", "revision", target)
		}
	})
}
