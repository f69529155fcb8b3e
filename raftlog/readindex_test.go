package raftlog

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The leader confirms a read index by asking the voters for their terms
// after the read arrived (Config.PeerTerm), not by a heartbeat that may
// have left before it: a read waits for fresh answers from a quorum, fails
// when a quorum reports a later term, and fails when no quorum answers.
func TestReadIndexAsksAQuorumAfterTheRead(t *testing.T) {
	var (
		mu     sync.Mutex
		byAddr = map[string]*Node{}
		mode   atomic.Value // "true", "later-term" or "silent"
		asked  atomic.Int64
	)
	mode.Store("true")
	peerTerm := func(ctx context.Context, addr string) (uint64, error) {
		asked.Add(1)
		mu.Lock()
		n := byAddr[addr]
		mu.Unlock()
		switch mode.Load() {
		case "later-term":
			return n.Term() + 1, nil
		case "silent":
			<-ctx.Done()
			return 0, ctx.Err()
		}
		return n.Term(), nil
	}
	nodes, _ := startTrio(t, 0, func(c *Config) { c.PeerTerm = peerTerm })
	mu.Lock()
	for _, n := range nodes {
		byAddr[n.cfg.BindAddr] = n
	}
	mu.Unlock()
	leader := trioLeader(t, nodes)
	index := propose(t, leader, "x")

	before := asked.Load()
	got, err := leader.ReadIndex(t.Context())
	if err != nil || got < index {
		t.Fatalf("ReadIndex = %d, %v; want at least %d", got, err, index)
	}
	if asked.Load()-before < 1 {
		t.Errorf("the read index was confirmed without asking any voter after the read arrived")
	}

	mode.Store("later-term")
	if _, err := leader.ReadIndex(t.Context()); !errors.Is(err, ErrNoLeader) {
		t.Errorf("with every voter past the leader's term: ReadIndex error %v, want %v", err, ErrNoLeader)
	}

	mode.Store("silent")
	start := time.Now()
	if _, err := leader.ReadIndex(t.Context()); !errors.Is(err, ErrNoLeader) {
		t.Errorf("with no voter answering: ReadIndex error %v, want %v", err, ErrNoLeader)
	}
	if waited := time.Since(start); waited < leader.cfg.ElectionTimeout/2 {
		t.Errorf("with no voter answering the read failed after %v, before an election timeout could pass", waited)
	}

	mode.Store("true")
	if _, err := leader.ReadIndex(t.Context()); err != nil {
		t.Errorf("answers again: ReadIndex: %v", err)
	}
}
