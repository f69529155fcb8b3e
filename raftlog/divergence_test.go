package raftlog

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The pause-leader/3-members/seed-4 robustness failure: a leader that was
// stopped (SIGSTOP) while a new leader was elected wakes up with the new
// leader's heartbeat and client writes both waiting for it. hashicorp/raft
// handles a heartbeat on the transport's connection goroutine (its
// "heartbeat fast path"), and that heartbeat's newer term is written into
// currentTerm and the state is set to Follower there, beside the main
// goroutine. The main goroutine, still in its leader loop (it checks the
// state only between events), then takes the waiting write from applyCh and
// dispatchLogs stamps it with getCurrentTerm(): the NEW leader's term, at
// the index where the new leader has its own entry (its no-op). The two
// entries have the same index and term, so the AppendEntries that later
// brings the new leader's entry finds "a duplicate" and keeps the old
// leader's one ("clearing log suffix" is never logged), and once that index
// commits the old leader applies its own write, which nobody else has, in
// place of the new leader's entry: every later revision on it is shifted.
//
// The test builds that state deterministically: leader A (term T) is cut off
// (its connections stall, as a stopped process's do) while B and C elect a
// leader of term T+1; A, still leading in its own view, then gets exactly the
// heartbeat the new leader sends (same header, term, leader) and, right after,
// a write. Once the network heals, every member must hold the same log and
// have applied the same commands.
func TestStaleLeaderWakingToANewerHeartbeatDoesNotForkTheLog(t *testing.T) {
	g := newStallGate()
	var boot []Server
	lns := make([]net.Listener, 3)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
		boot = append(boot, Server{ID: fmt.Sprint(i + 1), Address: ln.Addr().String()})
	}
	nodes, sms := openTrio(t, boot, func(i int, cfg *Config) {
		addr := boot[i].Address
		cfg.Advertise = addr
		cfg.Stream = &stallStream{Listener: lns[i], g: g, self: addr}
		cfg.HeartbeatInterval = 50 * time.Millisecond
		if i == 0 {
			// A: its leader lease (half the election timeout) outlasts the
			// election B and C hold while it is cut off, as a stopped
			// process's does; its replication still reaches them every
			// commit timeout (25ms) while connected.
			cfg.ElectionTimeout = 10 * time.Second
		} else {
			cfg.ElectionTimeout = time.Second
		}
	})
	a := nodes[0]
	aAddr := boot[0].Address
	// Runs before the nodes close (cleanups run last-in first-out): a
	// stalled connection would keep Raft's shutdown waiting.
	t.Cleanup(func() { g.set(aAddr, false) })

	// Make A the leader of term T.
	first := trioLeader(t, nodes)
	if first != a {
		if err := first.raft.LeadershipTransferToServer(raft.ServerID(a.cfg.ID), raft.ServerAddress(aAddr)).Error(); err != nil {
			t.Fatalf("leadership transfer to A: %v", err)
		}
	}
	waitFor(t, 20*time.Second, "A to lead", func() bool { return a.IsLeader() && a.readyTerm.Load() == a.Term() })
	for i := range 3 {
		propose(t, a, fmt.Sprintf("before-%d", i))
	}
	termA := a.Term()

	// Stop A's traffic; B and C elect a leader of a later term.
	g.set(aAddr, true)
	var next *Node
	waitFor(t, 20*time.Second, "B or C to lead a later term", func() bool {
		for _, n := range nodes[1:] {
			if n.IsLeader() && n.Term() > termA && n.readyTerm.Load() == n.Term() {
				next = n
				return true
			}
		}
		return false
	})
	if !a.IsLeader() || a.Term() != termA {
		t.Fatalf("setup: A (term %d) stepped down before B or C led term %d; its lease should outlast the election", termA, next.Term())
	}
	lastA, _ := a.logs.LastIndex()

	// A wakes up: first the new leader's heartbeat, then a write.
	sendHeartbeat(t, next, aAddr, a.cfg.ID)
	proposed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _, err := a.Propose(ctx, []byte("stale"))
		proposed <- err
	}()
	select {
	case err := <-proposed:
		t.Logf("A's write after the newer heartbeat: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("A's write neither failed nor succeeded")
	}
	if last, _ := a.logs.LastIndex(); last > lastA {
		var l raft.Log
		if err := a.logs.GetLog(last, &l); err == nil && l.Term > termA {
			t.Errorf("A, which never led a term after %d, appended entry %d (%v %q) in term %d, the new leader's", termA, last, l.Type, l.Data, l.Term)
		}
	}

	// Heal, write through the new leader, and compare.
	g.set(aAddr, false)
	var index uint64
	for i := range 3 {
		index = propose(t, trioLeader(t, nodes), fmt.Sprintf("after-%d", i))
	}
	for j, n := range nodes {
		waitFor(t, 20*time.Second, fmt.Sprintf("member %d to apply index %d", j+1, index), func() bool { return n.AppliedIndex() >= index })
	}
	ref := next
	for i := uint64(1); i <= index; i++ {
		var got, want raft.Log
		errGot, errWant := a.logs.GetLog(i, &got), ref.logs.GetLog(i, &want)
		if errGot != nil || errWant != nil {
			t.Fatalf("entry %d: A: %v, new leader: %v", i, errGot, errWant)
		}
		if got.Term != want.Term || got.Type != want.Type || string(got.Data) != string(want.Data) {
			t.Errorf("entry %d differs: A has %v %q in term %d, the new leader %v %q in term %d", i, got.Type, got.Data, got.Term, want.Type, want.Data, want.Term)
		}
	}
	_, want, _ := sms[1].snapshot()
	for j, sm := range sms {
		if _, got, _ := sm.snapshot(); !slices.Equal(got, want) {
			t.Errorf("member %d applied %q, member 2 applied %q", j+1, got, want)
		}
	}
}

// sendHeartbeat delivers to the member at addr the heartbeat leader's Raft
// sends (hashicorp/raft's heartbeat(): the RPC header, the term, the leader
// address, nothing else).
func sendHeartbeat(t *testing.T, leader *Node, addr, id string) {
	t.Helper()
	tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 5*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	from := leader.cfg.Advertise
	req := raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(leader.cfg.ID), Addr: []byte(from)},
		Term:      leader.Term(),
		Leader:    []byte(from),
	}
	var resp raft.AppendEntriesResponse
	if err := tr.AppendEntries(raft.ServerID(id), raft.ServerAddress(addr), &req, &resp); err != nil {
		t.Fatalf("heartbeat to %s: %v", addr, err)
	}
}

// stallGate stalls, without failing them, the connections of members that
// are cut off: their reads and writes wait until the member is reconnected,
// as a stopped process's would.
type stallGate struct {
	mu      sync.Mutex
	cut     map[string]bool
	changed chan struct{}
}

func newStallGate() *stallGate {
	return &stallGate{cut: map[string]bool{}, changed: make(chan struct{})}
}

func (g *stallGate) set(addr string, cut bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cut[addr] = cut
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *stallGate) wait(a, b string, closed <-chan struct{}) error {
	for {
		g.mu.Lock()
		stalled, ch := g.cut[a] || g.cut[b], g.changed
		g.mu.Unlock()
		if !stalled {
			return nil
		}
		select {
		case <-ch:
		case <-closed:
			return net.ErrClosed
		}
	}
}

// stallStream is a member's raft.StreamLayer. Every connection a member
// dials passes through the gate, so traffic between two members stalls
// while either is cut off, whichever side sends; a connection from outside
// (sendHeartbeat's) does not.
type stallStream struct {
	net.Listener
	g    *stallGate
	self string
}

func (s *stallStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	return &stallConn{Conn: c, g: s.g, a: s.self, b: string(addr), closed: make(chan struct{})}, nil
}

type stallConn struct {
	net.Conn
	g      *stallGate
	a, b   string
	once   sync.Once
	closed chan struct{}
}

func (c *stallConn) Read(p []byte) (int, error) {
	if err := c.g.wait(c.a, c.b, c.closed); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *stallConn) Write(p []byte) (int, error) {
	if err := c.g.wait(c.a, c.b, c.closed); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *stallConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}
