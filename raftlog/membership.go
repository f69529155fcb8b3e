package raftlog

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
)

// Member is one server of the Raft configuration.
type Member struct {
	ID      string // member id in hex
	Address string // peer host:port
	Voter   bool   // false: a non-voter (etcd's learner)
}

// Configuration returns the latest Raft configuration this member knows
// (committed or not) and its log index.
func (n *Node) Configuration() ([]Member, uint64, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, 0, err
	}
	var out []Member
	for _, s := range f.Configuration().Servers {
		out = append(out, Member{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, f.Index(), nil
}

// AddNonvoter adds a member that receives the log but does not vote. Every
// member joins this way; PromoteVoter makes it a voter once it caught up.
func (n *Node) AddNonvoter(ctx context.Context, id, addr string) error {
	return n.wait(ctx, n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.cfg.ApplyTimeout))
}

// PromoteVoter makes a non-voter a voter.
func (n *Node) PromoteVoter(ctx context.Context, id, addr string) error {
	if err := n.wait(ctx, n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.cfg.ApplyTimeout)); err != nil {
		return err
	}
	n.leaveSolo()
	return nil
}

// DemoteVoter makes a voter a non-voter that keeps receiving the log.
func (n *Node) DemoteVoter(ctx context.Context, id string) error {
	return n.wait(ctx, n.raft.DemoteVoter(raft.ServerID(id), 0, n.cfg.ApplyTimeout))
}

// RemoveMember removes a member from the configuration.
func (n *Node) RemoveMember(ctx context.Context, id string) error {
	return n.wait(ctx, n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.ApplyTimeout))
}

// UpdateAddress changes the peer address of a member (etcd's MemberUpdate).
// Raft has no such change: the member is re-added with its suffrage.
func (n *Node) UpdateAddress(ctx context.Context, id, addr string, voter bool) error {
	if voter {
		return n.wait(ctx, n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.cfg.ApplyTimeout))
	}
	return n.AddNonvoter(ctx, id, addr)
}

// TransferLeadership hands leadership to the voter id and waits until it
// has taken over.
func (n *Node) TransferLeadership(ctx context.Context, id, addr string) error {
	if err := n.wait(ctx, n.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))); err != nil {
		return err
	}
	for n.Leader() != id {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stopCh:
			return ErrStopped
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// leaveSolo restores the configured timeouts once a sole voter gains a
// second voter. Raft cannot reload its leader lease timeout, which stays
// short until the member restarts.
func (n *Node) leaveSolo() {
	if !n.solo {
		return
	}
	n.solo = false
	err := n.raft.ReloadConfig(raft.ReloadableConfig{
		TrailingLogs:      5000,
		SnapshotInterval:  10 * time.Second,
		SnapshotThreshold: n.cfg.SnapshotCount,
		HeartbeatTimeout:  n.cfg.ElectionTimeout / 2,
		ElectionTimeout:   n.cfg.ElectionTimeout / 2,
	})
	if err != nil {
		n.log.Warn("cannot restore election timeouts after the cluster grew; restart this member", "err", err)
		return
	}
	n.log.Warn("the cluster grew from a single voter: restart this member to restore its leader lease timeout")
}
