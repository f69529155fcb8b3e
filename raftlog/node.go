package raftlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ballast-kv/ballast/store"
)

// Server is one voter of the initial configuration.
type Server struct {
	ID      string // member id in hex
	Address string // peer host:port
}

// Config configures a Node. DefaultConfig gives etcd's timing defaults.
type Config struct {
	ID        string // this member's id in hex
	Dir       string // holds raft/ (Pebble) and snap/
	BindAddr  string // peer listener host:port, when Stream is nil
	Advertise string // peer address others dial
	// Stream carries Raft's connections; nil binds a plain TCP listener
	// on BindAddr.
	Stream raft.StreamLayer
	// Bootstrap is the initial configuration, used only on a fresh data
	// dir; empty means this member joins a running cluster and waits for
	// its leader.
	Bootstrap []Server
	// RemoteReadIndex asks the leader for a read index when this member is
	// not the leader (see Node.ReadIndex); nil: followers refuse
	// linearizable reads with ErrNotLeader.
	RemoteReadIndex func(ctx context.Context) (uint64, error)
	// PeerTerm asks the member at a peer address for its current Raft
	// term: the leader's check of its leadership for a read index (see
	// confirmQuorum). nil: Raft's VerifyLeader, which is weaker.
	PeerTerm func(ctx context.Context, addr string) (uint64, error)
	// RestoreOnStart restores the latest snapshot at start: for a state
	// whose previous restore was interrupted.
	RestoreOnStart bool

	HeartbeatInterval time.Duration // etcd --heartbeat-interval
	ElectionTimeout   time.Duration // etcd --election-timeout
	SnapshotCount     uint64        // entries between snapshots (etcd --snapshot-count)
	ApplyTimeout      time.Duration // how long a proposal may wait to be committed

	Logger *slog.Logger
	// OnSync observes the duration of each synced log append.
	OnSync func(time.Duration)

	// commitTimeout overrides Raft's commit timeout (tests).
	commitTimeout time.Duration
}

// DefaultConfig returns etcd's defaults: 100ms heartbeat, 1s election timeout,
// a snapshot every 10,000 entries.
func DefaultConfig() Config {
	return Config{
		HeartbeatInterval: 100 * time.Millisecond,
		ElectionTimeout:   time.Second,
		SnapshotCount:     10000,
		ApplyTimeout:      7 * time.Second,
	}
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	switch {
	case c.ID == "":
		return errors.New("raftlog: member id is required")
	case c.Dir == "":
		return errors.New("raftlog: data dir is required")
	case c.BindAddr == "" && c.Stream == nil:
		return errors.New("raftlog: peer bind address is required")
	case c.HeartbeatInterval <= 0 || c.ElectionTimeout <= 0:
		return errors.New("raftlog: heartbeat interval and election timeout must be positive")
	case c.ElectionTimeout < 5*c.HeartbeatInterval:
		return fmt.Errorf("raftlog: election timeout %v must be at least 5 times the heartbeat interval %v", c.ElectionTimeout, c.HeartbeatInterval)
	case c.SnapshotCount == 0:
		return errors.New("raftlog: snapshot count must be positive")
	}
	return nil
}

// Errors a proposal or read can end with. ErrUnknownOutcome means the entry
// may or may not commit; callers must not report it as a failure.
var (
	ErrNotLeader      = errors.New("raftlog: not the leader")
	ErrNoLeader       = errors.New("raftlog: no leader")
	ErrUnknownOutcome = errors.New("raftlog: leadership lost, outcome unknown")
	ErrStopped        = errors.New("raftlog: node stopped")
	ErrTimeout        = errors.New("raftlog: request timed out")
)

// Node is this member's Raft participant.
type Node struct {
	cfg   Config
	raft  *raft.Raft
	fsm   *fsm
	db    *store.DB
	logs  *LogStore
	trans *commitTransport
	log   *slog.Logger
	solo  bool // sole voter: short timeouts

	// readyTerm is the term in which this node, as leader, has applied an
	// entry of its own term; only then is its commit index a valid read index.
	readyTerm atomic.Uint64
	// leaderChanges counts the leaders this node has seen (a metric).
	leaderChanges atomic.Uint64
	reads         readCoalescer

	stateIdxMu  sync.Mutex // caches lastStateIndex's last answer
	stateIdxFor uint64
	stateIdx    uint64

	// snapshotAt is the index of the latest snapshot (of any origin), or
	// the applied index one by count was asked at; snapshotKick wakes
	// snapshotByCount.
	snapshotAt   atomic.Uint64
	snapshotKick chan struct{}

	stopCh    chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Open starts Raft on cfg.Dir, bootstrapping a new cluster if the directory is
// fresh. sm must already reflect everything it durably applied.
func Open(cfg Config, sm StateMachine) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Advertise == "" {
		cfg.Advertise = cfg.BindAddr
	}
	log := cfg.Logger.With("component", "raft")
	db, err := store.Open(store.Config{Dir: filepath.Join(cfg.Dir, "raft"), CacheSize: 4 << 20, MemTableSize: 4 << 20, FullSizeWALs: true, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, db: db, fsm: newFSM(sm), log: log, snapshotKick: make(chan struct{}, 1), stopCh: make(chan struct{})}
	n.reads.n = n
	if n.logs, err = NewLogStore(db); err != nil {
		db.Close()
		return nil, err
	}
	n.logs.OnSync = cfg.OnSync
	if err := n.start(); err != nil {
		db.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) start() error {
	hl := newHCLog(n.cfg.Logger.With("component", "raft"))
	files, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(n.cfg.Dir, "snap"), 2, hl)
	if err != nil {
		return fmt.Errorf("raftlog: snapshot store: %w", err)
	}
	snaps := &snapshotStore{FileSnapshotStore: files, sm: n.fsm.sm, dir: filepath.Join(n.cfg.Dir, "snap"), log: n.log, onCreate: n.snapshotTaken}
	stream := n.cfg.Stream
	if stream == nil {
		addr, err := net.ResolveTCPAddr("tcp", n.cfg.Advertise)
		if err != nil {
			return fmt.Errorf("raftlog: advertise address %q: %w", n.cfg.Advertise, err)
		}
		ln, err := net.Listen("tcp", n.cfg.BindAddr)
		if err != nil {
			return fmt.Errorf("raftlog: peer listener %s: %w", n.cfg.BindAddr, err)
		}
		stream = &tcpStream{Listener: ln, advertise: addr}
	}
	n.trans = newCommitTransport(raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 4, Timeout: 10 * time.Second, Logger: hl,
	}), n.stopCh)
	n.fsm.onCommitted = n.trans.committedUpTo
	n.fsm.onApplied = n.appliedUpTo
	n.logs.BeforeSync = n.trans.sendEarly

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.ID)
	rc.Logger = hl
	// hashicorp/raft waits a random time between one and two of these
	// timeouts before campaigning: half of etcd's election timeout keeps
	// the wait within it. The leader heartbeats every tenth of it.
	rc.HeartbeatTimeout = n.cfg.ElectionTimeout / 2
	rc.ElectionTimeout = n.cfg.ElectionTimeout / 2
	rc.LeaderLeaseTimeout = n.cfg.ElectionTimeout / 2
	// Followers learn new commits from the commit notifier (commits.go) at
	// once; this is only Raft's own fallback.
	rc.CommitTimeout = max(n.cfg.HeartbeatInterval/2, time.Millisecond)
	if n.cfg.commitTimeout > 0 {
		rc.CommitTimeout = n.cfg.commitTimeout
	}
	rc.MaxAppendEntries = 512
	rc.BatchApplyCh = true
	rc.SnapshotThreshold = n.cfg.SnapshotCount
	rc.SnapshotInterval = 10 * time.Second
	rc.TrailingLogs = 5000 // like etcd, keep entries after a snapshot for slow followers
	rc.NoSnapshotRestoreOnStart = !n.cfg.RestoreOnStart
	rc.NoLegacyTelemetry = true

	existing, err := raft.HasExistingState(n.logs, n.logs, snaps)
	if err != nil {
		return err
	}
	// The latest snapshot, listed once for both checks (listing reads
	// every snapshot's meta file).
	var latest *raft.SnapshotMeta
	if metas, err := snaps.List(); err == nil && len(metas) > 0 {
		latest = metas[0]
	}
	if latest != nil {
		n.snapshotTaken(latest.Index)
	}
	if err := n.checkLogCoversApplied(latest); err != nil {
		return err
	}
	if err := n.checkLogContiguous(latest); err != nil {
		return err
	}
	if existing {
		n.solo = n.soleVoter(latest)
	} else {
		n.solo = len(n.cfg.Bootstrap) == 1 && n.cfg.Bootstrap[0].ID == n.cfg.ID
	}
	if n.solo {
		// Nobody can compete with a sole voter: waiting a full election
		// timeout after a restart would only delay service.
		t := max(3*n.cfg.HeartbeatInterval/2, 50*time.Millisecond)
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = t, t, t
	}
	if !existing && len(n.cfg.Bootstrap) > 0 {
		var servers []raft.Server
		for _, s := range n.cfg.Bootstrap {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Address)})
		}
		if err := raft.BootstrapCluster(rc, n.logs, n.logs, snaps, n.trans, raft.Configuration{Servers: servers}); err != nil {
			return fmt.Errorf("raftlog: bootstrap: %w", err)
		}
	}
	// Raft reads back the entries it just appended, to replicate them; the
	// cache serves those from memory instead of from Pebble. Every write
	// and delete of the log goes through it.
	cached, err := raft.NewLogCache(recentLogs, n.logs)
	if err != nil {
		return err
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, cached, n.logs, snaps, n.trans)
	if err != nil {
		n.trans.Close()
		return fmt.Errorf("raftlog: start: %w", err)
	}
	n.trans.start(n.raft, raft.RPCHeader{
		ProtocolVersion: rc.ProtocolVersion,
		ID:              []byte(rc.LocalID),
		Addr:            n.trans.EncodePeer(rc.LocalID, n.trans.LocalAddr()),
	})
	n.wg.Add(2)
	go n.watchLeadership()
	go n.snapshotByCount()
	return nil
}

// appliedUpTo wakes snapshotByCount once SnapshotCount entries were applied
// since the last snapshot.
func (n *Node) appliedUpTo(index uint64) {
	if n.snapshotDue(index) {
		kick(n.snapshotKick)
	}
}

// snapshotDue reports whether SnapshotCount entries were applied since the
// last snapshot (written to hold for any count, without overflow).
func (n *Node) snapshotDue(applied uint64) bool {
	at := n.snapshotAt.Load()
	return applied > at && applied-at >= n.cfg.SnapshotCount
}

// snapshotTaken records a snapshot at index, of any origin.
func (n *Node) snapshotTaken(index uint64) {
	for {
		at := n.snapshotAt.Load()
		if index <= at || n.snapshotAt.CompareAndSwap(at, index) {
			return
		}
	}
}

// snapshotByCount takes a snapshot, and so truncates the log to its
// trailing entries, every SnapshotCount applied entries, as etcd does.
// hashicorp/raft only looks at the count every SnapshotInterval, by which
// time a busy member can have logged far more: every one of them is read
// again at the next start (Raft scans the log for configurations and
// replays it to the state machine). A snapshot is cheap here: a sync of the
// state and a marker (fsm.Snapshot).
func (n *Node) snapshotByCount() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stopCh:
			return
		case <-n.snapshotKick:
		}
		applied := n.fsm.applied.Load()
		if !n.snapshotDue(applied) {
			continue
		}
		err := n.raft.Snapshot().Error()
		switch {
		case err == nil:
			// The snapshot store recorded its index (snapshotTaken).
		case errors.Is(err, raft.ErrNothingNewToSnapshot):
			n.snapshotTaken(applied)
		case errors.Is(err, raft.ErrRaftShutdown):
			return
		default:
			// Raft's periodic snapshot remains; an apply a second from
			// now tries again.
			n.log.Warn("snapshot by count failed", "applied-index", applied, "err", err)
			select {
			case <-n.stopCh:
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// ErrLogBehindState is returned by Open when the Raft log ends before the
// last entry the state machine applied: the log lost entries it had synced
// (a damaged or truncated file), which a member must never do silently,
// since it may have acknowledged them to a leader.
var ErrLogBehindState = errors.New("raftlog: the raft log lost entries the state had applied (damaged or truncated raft log)")

// checkLogCoversApplied compares the end of the log (or of the latest
// snapshot, when a snapshot replaced the log) with the state machine's
// applied index. The state applies only committed entries, which this
// member's log held, synced, before they were applied.
func (n *Node) checkLogCoversApplied(latest *raft.SnapshotMeta) error {
	applied := n.fsm.sm.AppliedIndex()
	last, err := n.logs.LastIndex()
	if err != nil {
		return err
	}
	end := last
	if latest != nil {
		end = max(end, latest.Index)
	}
	if applied > end {
		return fmt.Errorf("%w (%w): the log and snapshots end at index %d, the state applied up to %d", ErrLogBehindState, store.ErrDamaged, end, applied)
	}
	return nil
}

// recentLogs is how many of the latest entries Raft keeps in memory: a few
// of MaxAppendEntries' batches.
const recentLogs = 2048

// ErrLogGap is returned by Open when entries are missing between the latest
// snapshot and the end of the Raft log: a damaged store lost some
// (a truncated MANIFEST can make Pebble forget a table of them).
// hashicorp/raft would panic reading them.
var ErrLogGap = errors.New("raftlog: entries are missing from the raft log (damaged raft log)")

// checkLogContiguous shows that the log holds every entry after the latest
// snapshot (or from its first entry, without one) up to its last.
func (n *Node) checkLogContiguous(latest *raft.SnapshotMeta) error {
	first, _ := n.logs.FirstIndex()
	last, _ := n.logs.LastIndex()
	from := first
	if latest != nil {
		from = max(first, latest.Index+1)
		if first > latest.Index+1 && last > latest.Index {
			return fmt.Errorf("%w (%w): the snapshot ends at index %d, the log begins at %d", ErrLogGap, store.ErrDamaged, latest.Index, first)
		}
	}
	if last == 0 || from > last {
		return nil
	}
	missing, err := n.logs.firstMissing(from, last)
	if err != nil {
		return err
	}
	if missing != 0 {
		return fmt.Errorf("%w (%w): entry %d of %d..%d", ErrLogGap, store.ErrDamaged, missing, from, last)
	}
	return nil
}

// soleVoter reports whether the latest configuration in the log (or, if
// the log holds none, in the latest snapshot) has this member as its only
// server.
func (n *Node) soleVoter(latest *raft.SnapshotMeta) bool {
	first, _ := n.logs.FirstIndex()
	last, _ := n.logs.LastIndex()
	var l raft.Log
	for i := last; i >= first && i > 0; i-- {
		if err := n.logs.GetLog(i, &l); err != nil {
			break
		}
		if l.Type == raft.LogConfiguration {
			c := raft.DecodeConfiguration(l.Data)
			return len(c.Servers) == 1 && string(c.Servers[0].ID) == n.cfg.ID
		}
	}
	if latest != nil {
		c := latest.Configuration
		return len(c.Servers) == 1 && string(c.Servers[0].ID) == n.cfg.ID
	}
	return false
}

// tcpStream is a plain TCP raft.StreamLayer (tests, and a node without a
// shared peer listener).
type tcpStream struct {
	net.Listener
	advertise net.Addr
}

func (t *tcpStream) Addr() net.Addr { return t.advertise }

func (t *tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

// watchLeadership marks the node ready to serve read indexes once, as a new
// leader, it has applied everything committed before its term.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	obs := make(chan raft.Observation, 16)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.RaftState, raft.LeaderObservation:
			return true
		}
		return false
	})
	var lastLeader raft.ServerID
	n.raft.RegisterObserver(o)
	defer n.raft.DeregisterObserver(o)
	check := func() {
		if n.raft.State() != raft.Leader {
			return
		}
		term := n.Term()
		if n.readyTerm.Load() == term {
			return
		}
		if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil {
			return
		}
		if n.Term() == term && n.raft.State() == raft.Leader {
			n.readyTerm.Store(term)
			n.log.Info("leader ready", "term", term)
		}
	}
	check()
	tick := time.NewTicker(n.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-n.stopCh:
			return
		case ob := <-obs:
			if l, ok := ob.Data.(raft.LeaderObservation); ok && l.LeaderID != "" && l.LeaderID != lastLeader {
				lastLeader = l.LeaderID
				n.leaderChanges.Add(1)
			}
			check()
		case <-tick.C:
			check()
		}
	}
}

// LeaderChanges is how many times this node has seen a new leader.
func (n *Node) LeaderChanges() uint64 { return n.leaderChanges.Load() }

// Term is the current Raft term.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's member id, or "" when there is none.
func (n *Node) Leader() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// CommitIndex and AppliedIndex report Raft's view of the log.
func (n *Node) CommitIndex() uint64  { return n.raft.CommitIndex() }
func (n *Node) AppliedIndex() uint64 { return n.fsm.applied.Load() }

// Propose replicates data on the leader and waits until it is applied here,
// returning what the state machine's Apply returned for it and the entry's
// index. Cancelling ctx abandons the wait, not the write.
func (n *Node) Propose(ctx context.Context, data []byte) (any, uint64, error) {
	f := n.raft.Apply(data, n.cfg.ApplyTimeout)
	if err := n.wait(ctx, f); err != nil {
		return nil, 0, err
	}
	return f.Response(), f.Index(), nil
}

// wait waits for a Raft future and translates its error.
func (n *Node) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopCh:
		return ErrStopped
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrUnknownOutcome
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return ErrTimeout
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrStopped
	}
	return err
}

// WaitApplied blocks until the state machine has applied index.
func (n *Node) WaitApplied(ctx context.Context, index uint64) error {
	for {
		ch, applied := n.fsm.wait()
		if applied >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stopCh:
			return ErrStopped
		}
	}
}

// LinearizableBarrier returns once this node's state reflects every write
// acknowledged before the call: a read index confirmed by a heartbeat round
// of the leader (shared by concurrent callers; a follower asks the leader
// through cfg.RemoteReadIndex), then a wait until it is applied here.
func (n *Node) LinearizableBarrier(ctx context.Context) error {
	index, err := n.reads.readIndex(ctx)
	if err != nil {
		return err
	}
	return n.WaitApplied(ctx, index)
}

// ReadIndex is the leader's side of a follower's linearizable read: the
// index of the last state-machine entry committed when the call arrived,
// confirmed by a heartbeat round. Only the leader answers.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	if !n.IsLeader() {
		return 0, n.notLeader()
	}
	return n.reads.readIndex(ctx)
}

func (n *Node) notLeader() error {
	if n.Leader() == "" {
		return ErrNoLeader
	}
	return ErrNotLeader
}

// roundIndex is one read-index round for the coalescer: here on the
// leader, or at the leader for a follower.
func (n *Node) roundIndex() (uint64, error) {
	if n.IsLeader() || n.cfg.RemoteReadIndex == nil {
		index, err := n.confirmLeadership()
		if err != nil {
			return 0, err
		}
		return n.lastStateIndex(index), nil
	}
	if n.Leader() == "" {
		return 0, ErrNoLeader
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	return n.cfg.RemoteReadIndex(ctx)
}

// lastStateIndex returns the index of the last entry at or below index that
// the state machine sees. Raft's own entries (the no-op a new leader
// commits, barriers) never reach the FSM, so waiting for them would wait
// forever.
func (n *Node) lastStateIndex(index uint64) uint64 {
	// Committed entries never change, so the answer for an index can be
	// reused: a read-only load asks about the same index round after round.
	n.stateIdxMu.Lock()
	if n.stateIdxFor == index {
		res := n.stateIdx
		n.stateIdxMu.Unlock()
		return res
	}
	n.stateIdxMu.Unlock()
	res := n.findStateIndex(index)
	n.stateIdxMu.Lock()
	n.stateIdxFor, n.stateIdx = index, res
	n.stateIdxMu.Unlock()
	return res
}

func (n *Node) findStateIndex(index uint64) uint64 {
	var l raft.Log
	for i := index; i > n.fsm.applied.Load(); i-- {
		if err := n.logs.GetLog(i, &l); err != nil {
			// Truncated: it is below a snapshot, which the state machine
			// had applied and synced before the truncation.
			return n.fsm.applied.Load()
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return i
		}
	}
	return n.fsm.applied.Load()
}

// readCoalescer lets concurrent readers share one leadership check. A reader
// joins the round that starts after it arrived, never one already in flight,
// so the confirmed commit index is never older than the read.
type readCoalescer struct {
	n        *Node
	mu       sync.Mutex
	next     *readRound
	inFlight bool
}

type readRound struct {
	done  chan struct{}
	index uint64
	err   error
}

func (c *readCoalescer) readIndex(ctx context.Context) (uint64, error) {
	c.mu.Lock()
	if c.next == nil {
		c.next = &readRound{done: make(chan struct{})}
	}
	r := c.next
	if !c.inFlight {
		c.inFlight = true
		go c.run()
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (c *readCoalescer) run() {
	for {
		c.mu.Lock()
		r := c.next
		c.next = nil
		if r == nil {
			c.inFlight = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		r.index, r.err = c.n.roundIndex()
		close(r.done)
	}
}

// confirmLeadership returns the commit index once a heartbeat round has shown
// this node is still the leader.
func (n *Node) confirmLeadership() (uint64, error) {
	if n.raft.State() != raft.Leader {
		return 0, n.notLeader()
	}
	term := n.Term()
	if n.readyTerm.Load() != term {
		// A new leader's commit index may lag the previous leader's; wait
		// until it has applied an entry of its own term.
		if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil {
			return 0, ErrNoLeader
		}
		n.readyTerm.Store(term)
	}
	index := n.raft.CommitIndex()
	if err := n.confirmQuorum(term); err != nil {
		return 0, err
	}
	return index, nil
}

// confirmQuorum shows that this leader of term still leads: a quorum of the
// voters, itself included, says after the call began that its term is not
// past term. A later leader needs the votes of a quorum, and a member's term
// passes term when it votes in a later one, so no later leader was elected
// before the call, and nothing was committed that this leader lacks.
//
// Raft's VerifyLeader is not enough: it counts the answer to a heartbeat
// that was already in flight when it was called, sent before the read
// arrived. A leader paused with such a heartbeat out (a stop, a long GC)
// would on waking take the old answer for proof and serve a read that
// misses writes a newer leader acknowledged meanwhile.
func (n *Node) confirmQuorum(term uint64) error {
	if n.cfg.PeerTerm == nil {
		if err := n.raft.VerifyLeader().Error(); err != nil {
			return ErrNoLeader
		}
		return nil
	}
	conf, _, err := n.Configuration()
	if err != nil {
		return ErrNoLeader
	}
	voters := 0
	var others []string
	for _, m := range conf {
		if m.Voter {
			voters++
			if m.ID != n.cfg.ID {
				others = append(others, m.Address)
			}
		}
	}
	need := voters/2 + 1 - 1 // this leader's own vote counts
	if need > 0 {
		// A leader that cannot hear from a quorum within an election
		// timeout has most likely been replaced.
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ElectionTimeout)
		defer cancel()
		answers := make(chan bool, len(others))
		for _, addr := range others {
			go func() {
				t, err := n.cfg.PeerTerm(ctx, addr)
				answers <- err == nil && t <= term
			}()
		}
		yes, no := 0, 0
		for yes < need && len(others)-no >= need {
			if <-answers {
				yes++
			} else {
				no++
			}
		}
		if yes < need {
			return ErrNoLeader
		}
	}
	if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
		return n.notLeader()
	}
	return nil
}

// Snapshot asks Raft for a snapshot now (tests and operators).
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Close stops Raft and closes the log. It is idempotent.
func (n *Node) Close() error {
	var err error
	n.closeOnce.Do(func() {
		close(n.stopCh)
		err = n.raft.Shutdown().Error()
		n.wg.Wait()
		n.trans.Close()
		if cerr := n.db.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// LeaderAddr returns the leader's peer address, or "" when there is none.
func (n *Node) LeaderAddr() string {
	addr, _ := n.raft.LeaderWithID()
	return string(addr)
}
