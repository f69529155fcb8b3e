package raftlog

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// startTrio starts three voters on loopback whose Raft sends a commit index
// on its own only every commitTimeout; configure, if given, adjusts each
// member's Config before it opens.
func startTrio(t *testing.T, commitTimeout time.Duration, configure ...func(*Config)) ([]*Node, []*memSM) {
	t.Helper()
	var boot []Server
	for i := range 3 {
		boot = append(boot, Server{ID: fmt.Sprint(i + 1), Address: freeAddr(t)})
	}
	return openTrio(t, boot, func(_ int, cfg *Config) {
		cfg.commitTimeout = commitTimeout
		for _, f := range configure {
			f(cfg)
		}
	})
}

// openTrio opens the three voters of boot, each one's Config adjusted by
// configure (given the member's index) before it opens.
func openTrio(t *testing.T, boot []Server, configure func(i int, cfg *Config)) ([]*Node, []*memSM) {
	t.Helper()
	nodes := make([]*Node, 3)
	sms := make([]*memSM, 3)
	for i := range nodes {
		cfg := testNodeConfig(t, t.TempDir(), boot[i].Address)
		cfg.ID, cfg.Bootstrap = boot[i].ID, boot
		configure(i, &cfg)
		sms[i] = &memSM{}
		n, err := Open(cfg, sms[i])
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		t.Cleanup(func() { n.Close() })
		nodes[i] = n
	}
	return nodes, sms
}

func trioLeader(t *testing.T, nodes []*Node) *Node {
	t.Helper()
	var leader *Node
	waitFor(t, 20*time.Second, "a ready leader", func() bool {
		for _, n := range nodes {
			if n.IsLeader() && n.readyTerm.Load() == n.Term() {
				leader = n
				return true
			}
		}
		return false
	})
	return leader
}

// A follower applies an entry as soon as the leader commits it, without
// waiting for a later write or Raft's commit timeout to carry the commit
// index (the timeout here is a minute): a write through a follower, a
// linearizable read on it and its watchers all wait for that apply. The
// entries a follower applies are the leader's, in order.
func TestFollowersLearnEachCommitAtOnce(t *testing.T) {
	nodes, sms := startTrio(t, time.Minute)
	leader := trioLeader(t, nodes)
	for i := range 30 {
		index := propose(t, leader, fmt.Sprintf("c%d", i))
		for j, n := range nodes {
			waitFor(t, 10*time.Second, fmt.Sprintf("member %d to apply write %d (index %d)", j+1, i, index),
				func() bool { return n.AppliedIndex() >= index })
		}
	}
	_, want, _ := sms[0].snapshot()
	for j := range sms[1:] {
		if _, got, _ := sms[j+1].snapshot(); !slices.Equal(got, want) {
			t.Fatalf("member %d applied %v, member 1 applied %v", j+2, got, want)
		}
	}
}

// Each entry crosses to a caught-up follower once: the leader sends it
// early, while it syncs its own log, and Raft's own AppendEntries for it is
// answered with the follower's acknowledgment instead of being sent again.
// Writes one at a time keep both followers caught up, so 200 of them take
// about 400 appends (621 before); whatever the count, every member applies
// the same entries.
func TestEachEntryCrossesToAFollowerOnce(t *testing.T) {
	nodes, sms := startTrio(t, time.Minute)
	leader := trioLeader(t, nodes)
	propose(t, leader, "warm-up") // every follower caught up in this term
	before := leader.trans.appendsSent.Load()
	const writes = 200
	var index uint64
	for i := range writes {
		index = propose(t, leader, fmt.Sprintf("w%d", i))
	}
	sent := leader.trans.appendsSent.Load() - before
	for j, n := range nodes {
		waitFor(t, 10*time.Second, fmt.Sprintf("member %d to apply index %d", j+1, index),
			func() bool { return n.AppliedIndex() >= index })
	}
	_, want, _ := sms[0].snapshot()
	for j := range sms[1:] {
		if _, got, _ := sms[j+1].snapshot(); !slices.Equal(got, want) {
			t.Fatalf("member %d applied %v, member 1 applied %v", j+2, got, want)
		}
	}
	// A few writes may find a follower's acknowledgment of the previous one
	// still out and go by Raft's own message alone: allow a tenth.
	if limit := uint64(2 * writes * 11 / 10); sent > limit {
		t.Fatalf("%d writes sent %d appends with entries to the 2 followers; want at most %d (one per follower and write, plus a tenth)", writes, sent, limit)
	}
	t.Logf("%d writes, %d appends with entries", writes, sent)
}
