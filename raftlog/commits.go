package raftlog

import (
	"sync"
	"sync/atomic"
	"time"

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
// sent it. As soon as the leader's Raft hands committed entries to its state
// machine (before it applies them, so that the followers apply them while
// it does), every follower that stores them but has not been told gets an
// AppendEntries with no entries whose previous entry is the committed one:
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
// them while the leader does, and acknowledges them once they are durable.
//
// Raft's own AppendEntries for entries a follower has acknowledged that way
// is not sent again: the pipeline answers it with the follower's
// acknowledgment (waiting for it if the early send is still out), so each
// entry crosses to a caught-up follower once, as in etcd. That answer is
// the follower's own, given in this leader's term after it made the entries
// durable; Raft counts it exactly as it would the same answer to its own
// message, which could as well have arrived late. An early send that fails
// answers Raft's message with a failure (or the follower's newer term), and
// Raft restarts replication to that follower from what it acknowledged.
// Raft takes such an answer for contact with the follower when it reads it,
// a write's duration after the acknowledgment at most; reads confirm
// leadership by asking for the peers' terms (Node.confirmQuorum), not from
// that contact.
// The leader counts itself only once its own sync returned, so an entry
// still commits only once it is durable on a quorum.

// commitTransport is the network transport plus the commit notifier.
type commitTransport struct {
	*raft.NetworkTransport
	stopCh <-chan struct{}

	mu     sync.Mutex
	raft   *raft.Raft // set once Raft runs; nil until then
	header raft.RPCHeader
	// committed is the last entry this member's Raft handed to its state
	// machine: committed, and maybe not applied yet.
	committed entryID
	peers     map[raft.ServerID]*peerCommits

	// appendsSent counts the AppendEntries with entries sent to
	// followers, early or by Raft.
	appendsSent atomic.Uint64
}

// entryID names a log entry.
type entryID struct{ index, term uint64 }

// peerCommits is what the leader knows of one follower's log.
type peerCommits struct {
	id    raft.ServerID
	addr  raft.ServerAddress
	term  uint64     // the leader term match and told belong to
	match entryID    // last entry it acknowledged storing
	told  uint64     // highest commit index sent to it
	early *earlySend // entries sent early, queued or in flight; nil if none
	acked *earlySend // the last early send the follower acknowledged
	kick  chan struct{}
}

// earlySend is one AppendEntries sent ahead of Raft's own; done is closed
// once resp and err hold the follower's answer.
type earlySend struct {
	req  *raft.AppendEntriesRequest
	resp raft.AppendEntriesResponse
	err  error
	done chan struct{}
}

// last is the index of the last entry it carries.
func (e *earlySend) last() uint64 { return e.req.Entries[len(e.req.Entries)-1].Index }

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

// committedUpTo records that this member's Raft committed through e; as
// leader, its followers are told.
func (t *commitTransport) committedUpTo(e entryID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.index <= t.committed.index {
		return
	}
	t.committed = e
	for _, p := range t.peers {
		// Only a commit index this follower has and was not told of is
		// worth a wake-up (early entries kick on their own).
		if p.told < min(p.match.index, e.index) {
			kick(p.kick)
		}
	}
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
		p.term, p.match, p.told, p.acked = term, entryID{}, 0, nil
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
	if r == nil || r.State() != raft.Leader || r.CurrentTerm() != term || t.stopped() {
		return
	}
	for _, p := range t.peers {
		if p.term != term || p.match != prev || p.early != nil {
			continue
		}

		p.early = &earlySend{req: &raft.AppendEntriesRequest{
			RPCHeader:         t.header,
			Term:              term,
			PrevLogEntry:      prev.index,
			PrevLogTerm:       prev.term,
			Entries:           logs,
			LeaderCommitIndex: min(t.committed.index, prev.index),
		}, done: make(chan struct{})}
		kick(p.kick)
	}
}

// stopped reports whether the member is closing.
func (t *commitTransport) stopped() bool {
	select {
	case <-t.stopCh:
		return true
	default:
		return false
	}
}

// sent records an AppendEntries Raft sends.
func (t *commitTransport) sent(id raft.ServerID, addr raft.ServerAddress, args *raft.AppendEntriesRequest) {
	if len(args.Entries) > 0 {
		t.appendsSent.Add(1)
	}
	t.mu.Lock()
	p := t.peer(id, addr, args.Term)
	if args.Term == p.term && args.LeaderCommitIndex > p.told {
		p.told = args.LeaderCommitIndex
	}
	t.mu.Unlock()
}

// answered records the follower's answer to one of Raft's AppendEntries.
func (t *commitTransport) answered(id raft.ServerID, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.peers[id]
	if p == nil || args.Term != p.term {
		return
	}
	if !resp.Success {
		return
	}
	last := entryID{args.PrevLogEntry, args.PrevLogTerm}
	if n := len(args.Entries); n > 0 {
		last = entryID{args.Entries[n-1].Index, args.Entries[n-1].Term}
	}
	if last.index > p.match.index {
		p.match = last
		if p.told < min(last.index, t.committed.index) {
			kick(p.kick)
		}
	}
}

// notify sends one follower early entries and its commit index whenever
// it is behind, one message at a time.
func (t *commitTransport) notify(p *peerCommits) {
	for {
		select {
		case <-t.stopCh:
			// Raft may still be waiting for an early send's answer; sendEarly
			// queues no more once stopCh is closed.
			t.mu.Lock()
			if e := p.early; e != nil {
				e.err = raft.ErrTransportShutdown
				close(e.done)
				p.early = nil
			}
			t.mu.Unlock()
			return
		case <-p.kick:
		}
		t.mu.Lock()
		early, addr := p.early, p.addr
		t.mu.Unlock()
		if early != nil {
			t.appendsSent.Add(1)
			early.err = t.NetworkTransport.AppendEntries(p.id, addr, early.req, &early.resp)
			if early.err == nil {
				t.answered(p.id, early.req, &early.resp)
			}
			close(early.done)
			t.mu.Lock()
			p.early = nil
			if early.err == nil && early.resp.Success {
				p.acked = early
			}
			t.mu.Unlock()
		}
		t.mu.Lock()
		r, hdr, term := t.raft, t.header, p.term
		addr = p.addr
		c := p.match
		if t.committed.index < c.index {
			c = t.committed
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

// acknowledged returns the answer to Raft's AppendEntries args when the
// follower already acknowledged, or an early send now out will acknowledge,
// every entry in it; nil when args must be sent. The answer is complete
// once its done channel is closed.
func (t *commitTransport) acknowledged(id raft.ServerID, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) *ackedFuture {
	n := len(args.Entries)
	if n == 0 {
		// It carries only the commit index, for the follower to learn.
		return nil
	}
	last := args.Entries[n-1].Index
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.peers[id]
	if p == nil || p.term != args.Term {
		return nil
	}
	e := p.early
	if e == nil {
		e = p.acked
	}
	if e == nil || e.req.Term != args.Term || e.last() < last {
		return nil
	}
	// A successful answer to e shows that the follower's log equals the
	// leader's through e's last entry: it matched e's previous entry, and
	// this leader only appends. So it stores every entry of args.
	return &ackedFuture{start: time.Now(), req: args, resp: resp, early: e, done: make(chan struct{})}
}

// ackedFuture is Raft's AppendEntries answered by the follower's answer to
// an early send.
type ackedFuture struct {
	start time.Time
	req   *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	early *earlySend    // the answer to wait for
	done  chan struct{} // closed when resp is set
}

// wait fills the answer from the early send once it returns, and reports
// false if the pipeline closed first.
func (f *ackedFuture) wait(closeCh <-chan struct{}) bool {
	select {
	case <-f.early.done:
	case <-closeCh:
		return false
	}
	if f.early.err == nil {
		// Success, or the failure Raft must see: a newer term makes the
		// leader step down, anything else restarts this follower's
		// replication from what it acknowledged.
		*f.resp = f.early.resp
	} else {
		*f.resp = raft.AppendEntriesResponse{}
	}
	close(f.done)
	return true
}

func (f *ackedFuture) Error() error {
	<-f.done
	return nil
}
func (f *ackedFuture) Start() time.Time                      { return f.start }
func (f *ackedFuture) Request() *raft.AppendEntriesRequest   { return f.req }
func (f *ackedFuture) Response() *raft.AppendEntriesResponse { <-f.done; return f.resp }

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
	p := &commitPipeline{
		t: t, id: id, addr: target, inner: inner,
		order:   make(chan *ackedFuture, 2*pipelineDepth),
		doneCh:  make(chan raft.AppendFuture, pipelineDepth),
		closeCh: make(chan struct{}),
	}
	go p.relay()
	return p, nil
}

// pipelineDepth bounds the answers queued for Raft; NetworkTransport itself
// keeps at most MaxRPCsInFlight appends in flight (2 by default).
const pipelineDepth = 128

// commitPipeline sends Raft's appends that the follower has not
// acknowledged yet, and relays every answer to Raft in the order Raft
// sent them, noting them on the way.
type commitPipeline struct {
	t     *commitTransport
	id    raft.ServerID
	addr  raft.ServerAddress
	inner raft.AppendPipeline
	// early is the early send the last answer waited for, which may still
	// be out; only Raft's sending goroutine uses it.
	early *earlySend
	// order holds one item per append in the order Raft gave them: the
	// answer already acknowledged, or nil for the inner pipeline's next.
	order   chan *ackedFuture
	doneCh  chan raft.AppendFuture
	closeCh chan struct{}
	once    sync.Once
}

func (p *commitPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	var future raft.AppendFuture
	acked := p.t.acknowledged(p.id, args, resp)
	if acked != nil {
		future = acked
		p.early = acked.early
	} else {
		if e := p.early; e != nil {
			// The early send travels on another connection: this append,
			// whose previous entry it carries, must not reach the follower
			// first, or the follower refuses it and Raft restarts the
			// pipeline.
			select {
			case <-e.done:
			case <-p.closeCh:
				return nil, raft.ErrPipelineShutdown
			case <-p.t.stopCh:
				return nil, raft.ErrPipelineShutdown
			}
			p.early = nil
		}
		p.t.sent(p.id, p.addr, args)
		f, err := p.inner.AppendEntries(args, resp)
		if err != nil {
			return nil, err
		}
		future = f
	}
	select {
	case p.order <- acked:
		return future, nil
	case <-p.closeCh:
		return nil, raft.ErrPipelineShutdown
	}
}

func (p *commitPipeline) Consumer() <-chan raft.AppendFuture { return p.doneCh }

func (p *commitPipeline) Close() error {
	p.once.Do(func() { close(p.closeCh) })
	return p.inner.Close()
}

func (p *commitPipeline) relay() {
	in := p.inner.Consumer()
	for {
		var acked *ackedFuture
		select {
		case <-p.closeCh:
			return
		case acked = <-p.order:
		}
		var f raft.AppendFuture
		if acked != nil {
			if !acked.wait(p.closeCh) {
				return
			}
			f = acked
		} else {
			select {
			case <-p.closeCh:
				return
			case f = <-in:
			}
			if f.Error() == nil {
				p.t.answered(p.id, f.Request(), f.Response())
			}
		}
		select {
		case p.doneCh <- f:
		case <-p.closeCh:
			return
		}
	}
}
