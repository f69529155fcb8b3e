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
