package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/ballast-kv/ballast/cluster/gossip"
	"github.com/ballast-kv/ballast/cluster/placement"
	"github.com/ballast-kv/ballast/mvcc"
)

// The placement reconciler: on the leader of a gossiping cluster it gathers
// the facts (Raft configuration, replicated labels, gossip liveness and the
// members' progress), asks placement.Plan what to change, and applies the
// first change only; the next round plans again on fresh facts.

// reconciler keeps what the leader learned between rounds: when it first
// saw each member down, and what its last round saw and planned (for
// /placement).
type reconciler struct {
	mu        sync.Mutex
	downSince map[uint64]time.Time
	last      *placement.Status
}

func (s *Server) placementLoop() {
	defer s.wg.Done()
	if s.gossip == nil {
		return
	}
	s.every(max(s.cfg.ElectionTimeout, time.Second), s.placeOnce)
}

// placeOnce plans on the leader and applies the first change.
func (s *Server) placeOnce() {
	if !s.node.IsLeader() {
		s.placer.mu.Lock()
		s.placer.downSince, s.placer.last = nil, nil
		s.placer.mu.Unlock()
		s.metrics.clearPlacement()
		return
	}
	facts, gossiped, err := s.placementFacts()
	if err != nil {
		s.log.Debug("placement: facts", "err", err)
		return
	}
	policy := s.placementPolicy()
	plan := placement.Plan(facts, policy)
	s.metrics.observePlacement(facts)
	s.placer.record(facts, policy, plan)
	if len(plan) == 0 {
		return
	}
	c := plan[0]
	err = s.applyPlacement(c, gossiped[c.ID])
	outcome := "ok"
	if err != nil {
		outcome = "failed"
		s.log.Warn("placement change failed", "change", c.String(), "err", err)
	} else {
		s.log.Info("placement change", "change", c.String())
		s.placer.done()
	}
	s.metrics.placementActions.WithLabelValues(c.Kind.String(), outcome).Inc()
}

// record keeps the round's facts and plan for /placement.
func (r *reconciler) record(f placement.Facts, p placement.Policy, plan []placement.Change) {
	st := placement.PlannerStatus(f, p, plan)
	r.mu.Lock()
	r.last = &st
	r.mu.Unlock()
}

// done drops the first planned change, just made, from what /placement
// says is still wanted.
func (r *reconciler) done() {
	r.mu.Lock()
	if r.last != nil && len(r.last.Next) > 0 {
		next := r.last.Next[1:]
		last := *r.last
		last.Next = next
		r.last = &last
	}
	r.mu.Unlock()
}

func (s *Server) placementPolicy() placement.Policy {
	return placement.Policy{Voters: s.cfg.Voters, LeaderRegion: s.cfg.LeaderRegion, Stabilization: s.cfg.StabilizationWindow}
}

// placementFacts describes the cluster as this leader sees it. A member is
// alive when it answered the leader's progress poll recently or gossip
// says it is alive: it is down only when both have lost it. It also
// returns the members gossip knows, by id.
func (s *Server) placementFacts() (placement.Facts, map[uint64]gossip.Node, error) {
	conf, _, err := s.node.Configuration()
	if err != nil {
		return placement.Facts{}, nil, err
	}
	labels, err := s.kv.MemberLabels()
	if err != nil {
		return placement.Facts{}, nil, err
	}
	records, err := s.kv.Members()
	if err != nil {
		return placement.Facts{}, nil, err
	}
	names := map[uint64]string{}
	for _, r := range records {
		names[r.ID] = r.Name
	}
	gossiped := map[uint64]gossip.Node{}
	for _, n := range s.gossip.Nodes() {
		if n.ID != 0 {
			gossiped[n.ID] = n
		}
	}
	now := time.Now()
	s.placer.mu.Lock()
	defer s.placer.mu.Unlock()
	if s.placer.downSince == nil {
		s.placer.downSince = map[uint64]time.Time{}
	}
	f := placement.Facts{Leader: s.id, CommitIndex: s.node.CommitIndex()}
	inConf := map[uint64]bool{}
	for _, c := range conf {
		id := parseID(c.ID)
		inConf[id] = true
		m := placement.Member{ID: id, Name: names[id], Region: labels[id].Region, Zone: labels[id].Zone, Role: placement.NonVoter}
		if c.Voter {
			m.Role = placement.Voter
		}
		if g, ok := gossiped[id]; ok && m.Region == "" && m.Zone == "" {
			m.Region, m.Zone = g.Region, g.Zone // not published yet
		}
		if id == s.id {
			m.Alive, m.Applied = true, s.node.AppliedIndex()
		} else {
			applied, recent := s.progress.applied(id, 3*s.cfg.ElectionTimeout)
			m.Applied = applied
			m.Alive = recent || gossiped[id].Alive
		}
		f.Members = append(f.Members, s.placer.markDown(m, now))
	}
	// Members gossip knows that Raft does not: removed ones that came back.
	for id, g := range gossiped {
		if inConf[id] || !g.Alive {
			continue
		}
		f.Members = append(f.Members, placement.Member{ID: id, Name: g.Name, Region: g.Region, Zone: g.Zone, Role: placement.Absent, Alive: true})
	}
	return f, gossiped, nil
}

// placementStatus is what /placement serves: the leader's last round, or
// on another member (or before the leader's first round) the replicated
// labels.
func (s *Server) placementStatus() (placement.Status, error) {
	s.placer.mu.Lock()
	last := s.placer.last
	s.placer.mu.Unlock()
	if last != nil && s.node.IsLeader() {
		return *last, nil
	}
	labels, err := s.kv.MemberLabels()
	if err != nil {
		return placement.Status{}, err
	}
	records, err := s.kv.Members()
	if err != nil {
		return placement.Status{}, err
	}
	regions, zones, names := map[uint64]string{}, map[uint64]string{}, map[uint64]string{}
	for _, r := range records {
		names[r.ID] = r.Name
		regions[r.ID], zones[r.ID] = labels[r.ID].Region, labels[r.ID].Zone
	}
	return placement.LabelStatus(s.gossip != nil, regions, zones, names), nil
}

// markDown fills DownFor from when the member was first seen down.
func (r *reconciler) markDown(m placement.Member, now time.Time) placement.Member {
	if m.Alive {
		delete(r.downSince, m.ID)
		return m
	}
	since, ok := r.downSince[m.ID]
	if !ok {
		since = now
		r.downSince[m.ID] = now
	}
	m.DownFor = now.Sub(since)
	return m
}

// applyPlacement makes one change: the Raft configuration and the member
// table together, as the Cluster API does. g is what gossip knows of the
// member.
func (s *Server) applyPlacement(c placement.Change, g gossip.Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*s.cfg.ElectionTimeout+5*time.Second)
	defer cancel()
	if c.Kind == placement.TransferLeader {
		return s.moveLeader(ctx, c.ID)
	}
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	_, target, err := s.configMember(c.ID)
	switch c.Kind {
	case placement.AddNonVoter:
		if len(g.PeerURLs) == 0 {
			return fmt.Errorf("member %x: gossip has no peer URLs for it", c.ID)
		}
		if err := s.proposeMember(ctx, mvcc.MemberAdd, &pb.Member{ID: c.ID, Name: g.Name, PeerURLs: g.PeerURLs, ClientURLs: g.ClientURLs, IsLearner: true}); err != nil {
			return err
		}
		addr, _ := hostPort(g.PeerURLs[0])
		return s.node.AddNonvoter(ctx, hexID(c.ID), addr)
	}
	if err != nil {
		return err
	}
	switch c.Kind {
	case placement.Promote:
		if err := s.node.PromoteVoter(ctx, target.ID, target.Address); err != nil {
			return err
		}
		return s.proposeMember(ctx, mvcc.MemberPromote, &pb.Member{ID: c.ID})
	case placement.Demote:
		if err := s.node.DemoteVoter(ctx, target.ID); err != nil {
			return err
		}
		ms, err := s.kv.Members()
		if err != nil {
			return err
		}
		if m := findMember(ms, c.ID); m != nil {
			m.IsLearner = true
			return s.proposeMember(ctx, mvcc.MemberAdd, m)
		}
		return nil
	case placement.Remove:
		if err := s.node.RemoveMember(ctx, target.ID); err != nil {
			return err
		}
		return s.proposeMember(ctx, mvcc.MemberRemove, &pb.Member{ID: c.ID})
	}
	return fmt.Errorf("unknown placement change %v", c.Kind)
}
