package raftlog

import (
	"sync"

	"github.com/hashicorp/raft"
)

// hashicorp/raft tells a follower the commit index only with the next
// AppendEntries it sends: when writes pause, that is CommitTimeout later,
// or never before the next write's own round trip. A follower that
// forwarded a write answers once it has applied it, and a linearizable
// read or a watch on a follower waits for its apply too, so every one of
// them would wait for that next message. etcd's leader sends the new commit
// index to the followers as soon as it advances; commitTransport does the
// same beside hashicorp/raft.
//
// It wraps the network transport, and from the AppendEntries exchanges of
// the leader's own replication learns, per follower, the last entry the
// follower acknowledged storing and the highest commit index Raft already
// sent it. When the leader applies (so has committed) new entries, every
// follower that stores them but has not been told gets an AppendEntries
// with no entries whose previous entry is the committed one itself:
// PrevLogEntry = LeaderCommitIndex = c, PrevLogTerm = the term of entry c.
// The follower accepts it only if its entry c has that term, which by Raft's
// log matching means its log equals the leader's through c, so it commits
// and applies exactly the leader's committed prefix and nothing else.
//
// It also sends new entries early. hashicorp/raft's leader makes an append
// durable in its own log first and only then replicates it, so a write waits
// for two fsyncs one after the other; etcd's leader writes its log and sends
// to the followers at the same time. Just before the leader syncs an append
// (LogStore.BeforeSync), every follower that has acknowledged everything
// before it gets the entries in an AppendEntries of its own, so it stores
// them while the leader does. Raft's own AppendEntries for them then finds
// them stored and is answered without another sync. Nothing else changes:
// the leader counts a follower only from Raft's own exchange, and itself
// only once its sync returned, so an entry still commits only once it is
// durable on a quorum.

// commitTransport is the network transport plus the commit notifier.
type commitTransport struct {
	*raft.NetworkTransport
	stopCh <-chan struct{}

	mu      sync.Mutex
	raft    *raft.Raft // set once Raft runs; nil until then
	header  raft.RPCHeader
	applied entryID // the leader's last applied entry
	peers   map[raft.ServerID]*peerCommits
}

// entryID names a log entry.
type entryID struct{ index, term uint64 }

// peerCommits is what the leader knows of one follower's log.
type peerCommits struct {
	id    raft.ServerID
	addr  raft.ServerAddress
	term  uint64                     // the leader term match and told belong to
	match entryID                    // last entry it acknowledged storing
	told  uint64                     // highest commit index sent to it
	early *raft.AppendEntriesRequest // entries to send early, if any
	kick  chan struct{}
}

func newCommitTransport(t *raft.NetworkTransport, stopCh <-chan struct{}) *commitTransport {
	return &commitTransport{NetworkTransport: t, stopCh: stopCh, peers: map[raft.ServerID]*peerCommits{}}
}

// start begins notifying once Raft runs; header identifies this member as
// the sender, as Raft's own messages do.
func (t *commitTransport) start(r *raft.Raft, header raft.RPCHeader) {
	t.mu.Lock()
	t.raft, t.header = r, header
	t.mu.Unlock()
}

// appliedUpTo records that this member applied through e; as leader, its
// followers are told.
func (t *commitTransport) appliedUpTo(e entryID) {
	t.mu.Lock()
	if e.index > t.applied.index {
		t.applied = e
	}
	for _, p := range t.peers {
		// Only a commit index this follower has and was not told of is
		// worth a wake-up (early entries kick on their own).
		if p.told < min(p.match.index, t.applied.index) {
			kick(p.kick)
		}
	}
	t.mu.Unlock()
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// peer returns the follower's record, creating it and its notifier the
// first time. Callers hold t.mu.
func (t *commitTransport) peer(id raft.ServerID, addr raft.ServerAddress, term uint64) *peerCommits {
	p := t.peers[id]
	if p == nil {
		p = &peerCommits{id: id, kick: make(chan struct{}, 1)}
		t.peers[id] = p
		go t.notify(p)
	}
	p.addr = addr
	if term > p.term {
		// A new leadership of this member: what an earlier one learned may
		// have been overwritten since.
		p.term, p.match, p.told = term, entryID{}, 0
	}
	return p
}

// sendEarly queues entries the leader is about to sync for every follower
// that has everything before them (LogStore.BeforeSync).
func (t *commitTransport) sendEarly(prev entryID, logs []*raft.Log) {
	if prev.index == 0 {
		return
	}
	term := logs[len(logs)-1].Term
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.raft
	if r == nil || r.State() != raft.Leader || r.CurrentTerm() != term {
		return
	}
	for _, p := range t.peers {
		if p.term != term || p.match != prev || p.early != nil {
			continue
		}

		p.early = &raft.AppendEntriesRequest{
			RPCHeader:         t.header,
			Term:              term,
			PrevLogEntry:      prev.index,
			PrevLogTerm:       prev.term,
			Entries:           logs,
			LeaderCommitIndex: min(t.applied.index, prev.index),
		}
		kick(p.kick)
	}
}

// sent records an AppendEntries Raft sends.
func (t *commitTransport) sent(id raft.ServerID, addr raft.ServerAddress, args *raft.AppendEntriesRequest) {
	t.mu.Lock()
	p := t.peer(id, addr, args.Term)
	if args.Term == p.term && args.LeaderCommitIndex > p.told {
		p.told = args.LeaderCommitIndex
	}
	t.mu.Unlock()
}

// answered records the follower's answer to one of Raft's AppendEntries.
func (t *commitTransport) answered(id raft.ServerID, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) {
	if !resp.Success {
		return
	}
	last := entryID{args.PrevLogEntry, args.PrevLogTerm}
	if n := len(args.Entries); n > 0 {
		last = entryID{args.Entries[n-1].Index, args.Entries[n-1].Term}
	}
	t.mu.Lock()
	if p := t.peers[id]; p != nil && args.Term == p.term && last.index > p.match.index {
		p.match = last
		if p.told < min(last.index, t.applied.index) {
			kick(p.kick)
		}
	}
	t.mu.Unlock()
}

// notify sends one follower early entries and its commit index whenever
// it is behind, one message at a time.
func (t *commitTransport) notify(p *peerCommits) {
	for {
		select {
		case <-t.stopCh:
			return
		case <-p.kick:
		}
		t.mu.Lock()
		early, addr := p.early, p.addr
		t.mu.Unlock()
		if early != nil {
			var resp raft.AppendEntriesResponse
			if err := t.NetworkTransport.AppendEntries(p.id, addr, early, &resp); err == nil {
				t.answered(p.id, early, &resp)
			}
			t.mu.Lock()
			p.early = nil
			t.mu.Unlock()
		}
		t.mu.Lock()
		r, hdr, term := t.raft, t.header, p.term
		addr = p.addr
		c := p.match
		if t.applied.index < c.index {
			c = t.applied
		}
		stale := r == nil || c.index <= p.told || c.index == 0
		if !stale {
			p.told = c.index
		}
		t.mu.Unlock()
		if stale || r.State() != raft.Leader || r.CurrentTerm() != term {
			continue
		}
		req := raft.AppendEntriesRequest{
			RPCHeader:         hdr,
			Term:              term,
			PrevLogEntry:      c.index,
			PrevLogTerm:       c.term,
			LeaderCommitIndex: c.index,
		}
		var resp raft.AppendEntriesResponse
		if err := t.NetworkTransport.AppendEntries(p.id, addr, &req, &resp); err != nil || !resp.Success {
			// Raft's own replication tells it later.
			t.mu.Lock()
			if p.term == term && p.told == c.index {
				p.told = 0
			}
			t.mu.Unlock()
		}
	}
}

// SetHeartbeatHandler turns down hashicorp/raft's heartbeat fast path, so
// that every AppendEntries, heartbeats included, is handled by Raft's main
// goroutine.
//
// On the fast path NetworkTransport hands a heartbeat to Raft's
// appendEntries on the connection's own goroutine, and a heartbeat of a newer
// term sets currentTerm and the Follower state there, beside the main
// goroutine. A leader whose main goroutine is waiting in its leader loop (it
// looks at its state only between events) then takes a write from applyCh
// and dispatchLogs stamps it with the NEW term, at an index where the new
// leader has an entry of its own: same index, same term, different entry.
// The new leader's AppendEntries takes its entry for one the old leader
// already has, never replaces it, and once the index commits the old leader
// applies its write, which no other member has, and numbers every later
// revision one off (hashicorp/raft#695). A leader paused (SIGSTOP, a long GC
// or I/O stall) while another was elected wakes up with exactly that: the new
// leader's heartbeat and client writes queued together.
//
// The cost: a heartbeat waits behind what the main goroutine is doing (a
// follower's log append), as etcd's do; the election timeout is far longer
// than an append.
func (t *commitTransport) SetHeartbeatHandler(func(raft.RPC)) {}

// AppendEntries is Raft's synchronous replication.
func (t *commitTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	t.sent(id, target, args)
	err := t.NetworkTransport.AppendEntries(id, target, args, resp)
	if err == nil {
		t.answered(id, args, resp)
	}
	return err
}

// AppendEntriesPipeline is Raft's pipelined replication.
func (t *commitTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	inner, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	p := &commitPipeline{t: t, id: id, addr: target, inner: inner, doneCh: make(chan raft.AppendFuture, 128), closeCh: make(chan struct{})}
	go p.relay()
	return p, nil
}

// commitPipeline relays a pipeline's answers to Raft, noting them on the
// way.
type commitPipeline struct {
	t       *commitTransport
	id      raft.ServerID
	addr    raft.ServerAddress
	inner   raft.AppendPipeline
	doneCh  chan raft.AppendFuture
	closeCh chan struct{}
	once    sync.Once
}

func (p *commitPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	p.t.sent(p.id, p.addr, args)
	return p.inner.AppendEntries(args, resp)
}

func (p *commitPipeline) Consumer() <-chan raft.AppendFuture { return p.doneCh }

func (p *commitPipeline) Close() error {
	p.once.Do(func() { close(p.closeCh) })
	return p.inner.Close()
}

func (p *commitPipeline) relay() {
	in := p.inner.Consumer()
	for {
		select {
		case <-p.closeCh:
			return
		case f := <-in:
			if f.Error() == nil {
				p.t.answered(p.id, f.Request(), f.Response())
			}
			select {
			case p.doneCh <- f:
			case <-p.closeCh:
				return
			}
		}
	}
}
