package server

import (
	"context"
	"fmt"
	"slices"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// The corruption check: every --corrupt-check-time the leader asks each
// member for HashKV at the leader's current revision and raises a CORRUPT
// alarm against the members that disagree. With the alarm active every
// change is refused with "etcdserver: corrupt cluster" (reads are still
// served, as in etcd), so a member that silently diverged cannot spread its
// damage or answer clients with a history the others do not have.
//
// etcd runs this check only when --corrupt-check-time is set (its default
// is off) and blames the leader or one follower from the leader's view;
// Ballast runs it by default and blames whoever is outside the majority.

// memberHash is one member's HashKV answer.
type memberHash struct {
	hash       uint32
	compactRev int64
}

// corruptMembers returns the members whose hash differs from the
// majority's. Members compacted at another revision than the leader are
// left out: a compaction between the two answers changes the hash without
// any damage. When no hash holds a strict majority the culprit cannot be
// told and the answer is member 0, as etcd's compaction check does.
func corruptMembers(leader uint64, hashes map[uint64]memberHash) []uint64 {
	own, ok := hashes[leader]
	if !ok {
		return nil
	}
	votes := map[uint32]int{}
	compared := 0
	for _, h := range hashes {
		if h.compactRev == own.compactRev {
			votes[h.hash]++
			compared++
		}
	}
	if len(votes) <= 1 {
		return nil
	}
	for hash, n := range votes {
		if 2*n <= compared {
			continue
		}
		var bad []uint64
		for id, h := range hashes {
			if h.compactRev == own.compactRev && h.hash != hash {
				bad = append(bad, id)
			}
		}
		slices.Sort(bad)
		return bad
	}
	return []uint64{0}
}

// corruptCheckLoop runs the check on the leader.
func (s *Server) corruptCheckLoop() {
	defer s.wg.Done()
	if s.cfg.CorruptCheckTime <= 0 {
		return
	}
	s.every(s.cfg.CorruptCheckTime, func() {
		if !s.node.IsLeader() {
			return
		}
		if err := s.checkHashes(); err != nil {
			s.metrics.hashChecks.WithLabelValues("incomplete").Inc()
			s.log.Warn("corruption check", "err", err)
		}
	})
}

// checkHashes compares every configured member's HashKV at this member's
// current revision and raises the alarms.
func (s *Server) checkHashes() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*s.cfg.ElectionTimeout)
	defer cancel()
	conf, _, err := s.node.Configuration()
	if err != nil {
		return err
	}
	h, compactRev, rev, _, err := s.kv.HashKV(0)
	if err != nil {
		return err
	}
	hashes := map[uint64]memberHash{s.id: {h, compactRev}}
	var mu sync.Mutex
	s.eachPeer(conf, func(id uint64, addr string) {
		var resp pb.HashKVResponse
		if err := s.callPeer(ctx, addr, "HashKV", &pb.HashKVRequest{Revision: rev}, &resp); err != nil {
			s.log.Debug("corruption check: no hash", "member-id", hexID(id), "err", err)
			return
		}
		mu.Lock()
		hashes[id] = memberHash{resp.Hash, resp.CompactRevision}
		mu.Unlock()
	})
	bad := corruptMembers(s.id, hashes)
	if len(bad) == 0 {
		outcome := "ok"
		if len(hashes) < len(conf) {
			outcome = "incomplete"
		}
		s.metrics.hashChecks.WithLabelValues(outcome).Inc()
		return nil
	}
	s.metrics.hashChecks.WithLabelValues("mismatch").Inc()
	for _, id := range bad {
		s.log.Error("corruption check: hash mismatch; raising the CORRUPT alarm", "member-id", hexID(id), "revision", rev, "compact-revision", compactRev, "hashes", fmt.Sprint(hashes))
		a := &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: id, Alarm: pb.AlarmType_CORRUPT}
		if _, err := s.propose(internal(ctx), &pb.InternalRaftRequest{Alarm: a}); err != nil {
			return err
		}
	}
	return nil
}

// peerHashKV answers the leader's corruption check: HashKV at its revision,
// once this member has applied that far.
func (s *Server) peerHashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	if s.kv.Rev() < r.Revision {
		if err := s.linearizable(ctx); err != nil {
			return nil, err
		}
	}
	h, compactRev, hashRev, cur, err := s.kv.HashKV(r.Revision)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.HashKVResponse{Header: &pb.ResponseHeader{Revision: cur}, Hash: h, CompactRevision: compactRev, HashRevision: hashRev}, nil
}
