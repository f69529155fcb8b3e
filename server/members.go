package server

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ballast-kv/ballast/mvcc"
	"github.com/ballast-kv/ballast/raftlog"
)

// Membership: Raft's configuration says who is a member and who votes; the
// replicated member table (mvcc) holds names and URLs. A member asked to
// join as a voter always joins as a non-voter and is promoted by the leader
// once it has caught up, so adding a member never weakens the quorum.

func hexID(id uint64) string { return strconv.FormatUint(id, 16) }

func parseID(s string) uint64 {
	id, _ := strconv.ParseUint(s, 16, 64)
	return id
}

// members joins Raft's configuration with the member table.
func (s *Server) members() ([]*pb.Member, error) {
	conf, _, err := s.node.Configuration()
	if err != nil {
		return nil, toGRPC(err)
	}
	records, err := s.kv.Members()
	if err != nil {
		return nil, toGRPC(err)
	}
	byID := map[uint64]*pb.Member{}
	for _, r := range records {
		byID[r.ID] = r
	}
	out := make([]*pb.Member, 0, len(conf))
	for _, c := range conf {
		id := parseID(c.ID)
		m := &pb.Member{ID: id, PeerURLs: []string{s.cfg.peerScheme() + "://" + c.Address}}
		if r := byID[id]; r != nil {
			m.Name, m.ClientURLs = r.Name, r.ClientURLs
			if len(r.PeerURLs) > 0 {
				m.PeerURLs = r.PeerURLs
			}
			// A member added as a voter is one to its clients even while
			// it catches up as a non-voter.
			m.IsLearner = !c.Voter && r.IsLearner
		} else {
			m.IsLearner = !c.Voter
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *pb.Member) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

func (s *Server) memberList(ctx context.Context, linearizable bool) (*pb.MemberListResponse, error) {
	if linearizable {
		if err := s.linearizable(ctx); err != nil {
			return nil, err
		}
	}
	ms, err := s.members()
	if err != nil {
		return nil, err
	}
	return &pb.MemberListResponse{Header: s.header(nil), Members: ms}, nil
}

func findMember(ms []*pb.Member, id uint64) *pb.Member {
	for _, m := range ms {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// checkPeerURLs validates URLs for MemberAdd/MemberUpdate and refuses any
// that another member (not except) already has, or of the wrong scheme:
// every peer of a cluster speaks TLS, or none does.
func checkPeerURLs(ms []*pb.Member, urls []string, except uint64, scheme string) error {
	if len(urls) == 0 {
		return rpctypes.ErrGRPCMemberBadURLs
	}
	for _, u := range urls {
		if _, err := hostPort(u); err != nil || !strings.HasPrefix(u, scheme+"://") {
			return rpctypes.ErrGRPCMemberBadURLs
		}
	}
	for _, m := range ms {
		if m.ID == except {
			continue
		}
		for _, u := range m.PeerURLs {
			if slices.Contains(urls, u) {
				return rpctypes.ErrGRPCPeerURLExist
			}
		}
	}
	return nil
}

// proposeMember replicates a member-table change.
func (s *Server) proposeMember(ctx context.Context, op mvcc.MemberOp, m *pb.Member) error {
	data, err := mvcc.EncodeMemberOp(op, m)
	if err != nil {
		return err
	}
	_, err = s.proposeData(ctx, data, func() proto.Message { return &pb.Member{} })
	return err
}

// maxLearners is etcd's default --max-learners.
const maxLearners = 1

func (s *Server) memberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	return onLeader(s, ctx, "MemberAdd", r, func() (*pb.MemberAddResponse, error) {
		return s.addMember(ctx, r, maxLearners)
	}, func() *pb.MemberAddResponse { return &pb.MemberAddResponse{} })
}

// addMember adds a member as a non-voter, refusing a learner beyond
// learnerLimit; on the leader.
func (s *Server) addMember(ctx context.Context, r *pb.MemberAddRequest, learnerLimit int) (*pb.MemberAddResponse, error) {
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	ms, err := s.members()
	if err != nil {
		return nil, err
	}
	if err := checkPeerURLs(ms, r.PeerURLs, 0, s.cfg.peerScheme()); err != nil {
		return nil, err
	}
	if r.IsLearner {
		n := 0
		for _, m := range ms {
			if m.IsLearner {
				n++
			}
		}
		if n >= learnerLimit {
			return nil, rpctypes.ErrGRPCTooManyLearners
		}
	}
	// etcd's id for a member added at run time: its peer URLs and the
	// time of the request.
	id := memberID(r.PeerURLs, strconv.FormatInt(time.Now().Unix(), 10))
	if findMember(ms, id) != nil {
		return nil, rpctypes.ErrGRPCMemberExist
	}
	m := &pb.Member{ID: id, PeerURLs: r.PeerURLs, IsLearner: r.IsLearner}
	if err := s.proposeMember(ctx, mvcc.MemberAdd, m); err != nil {
		return nil, err
	}
	addr, _ := hostPort(r.PeerURLs[0])
	if err := s.node.AddNonvoter(ctx, hexID(id), addr); err != nil {
		return nil, toGRPC(err)
	}
	s.log.Info("member added", "member-id", hexID(id), "peer-urls", r.PeerURLs, "learner", r.IsLearner)
	ms, err = s.members()
	if err != nil {
		return nil, err
	}
	return &pb.MemberAddResponse{Header: s.header(nil), Member: m, Members: ms}, nil
}

func (s *Server) memberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	return onLeader(s, ctx, "MemberRemove", r, func() (*pb.MemberRemoveResponse, error) {
		s.memberMu.Lock()
		defer s.memberMu.Unlock()
		conf, target, err := s.configMember(r.ID)
		if err != nil {
			return nil, err
		}
		if target.Voter && !s.quorumAfterRemoval(conf, r.ID) {
			return nil, rpctypes.ErrGRPCMemberNotEnoughStarted
		}
		if err := s.node.RemoveMember(ctx, target.ID); err != nil {
			return nil, toGRPC(err)
		}
		if r.ID == s.id {
			// The leader removed itself: it steps down now. Its record is
			// removed by the next leader (tidyMembers).
			ms, _ := s.members()
			return &pb.MemberRemoveResponse{Header: s.header(nil), Members: ms}, nil
		}
		if err := s.proposeMember(ctx, mvcc.MemberRemove, &pb.Member{ID: r.ID}); err != nil {
			return nil, err
		}
		s.log.Info("member removed", "member-id", hexID(r.ID))
		ms, err := s.members()
		if err != nil {
			return nil, err
		}
		return &pb.MemberRemoveResponse{Header: s.header(nil), Members: ms}, nil
	}, func() *pb.MemberRemoveResponse { return &pb.MemberRemoveResponse{} })
}

// configMember returns the Raft configuration and member id's entry in
// it, or etcd's "member not found".
func (s *Server) configMember(id uint64) ([]raftlog.Member, *raftlog.Member, error) {
	conf, _, err := s.node.Configuration()
	if err != nil {
		return nil, nil, toGRPC(err)
	}
	for i := range conf {
		if parseID(conf[i].ID) == id {
			return conf, &conf[i], nil
		}
	}
	return nil, nil, rpctypes.ErrGRPCMemberNotFound
}

// quorumAfterRemoval is etcd's strict reconfiguration check: removing the
// voter must leave a quorum of the remaining voters started (reachable).
func (s *Server) quorumAfterRemoval(conf []raftlog.Member, id uint64) bool {
	voters, up := 0, 0
	for _, m := range conf {
		mid := parseID(m.ID)
		if !m.Voter || mid == id {
			continue
		}
		voters++
		if mid == s.id || s.progress.recent(mid, 3*s.cfg.ElectionTimeout) {
			up++
		}
	}
	return voters == 0 || up >= voters/2+1
}

func (s *Server) memberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	return onLeader(s, ctx, "MemberUpdate", r, func() (*pb.MemberUpdateResponse, error) {
		s.memberMu.Lock()
		defer s.memberMu.Unlock()
		conf, _, err := s.node.Configuration()
		if err != nil {
			return nil, toGRPC(err)
		}
		ms, err := s.members()
		if err != nil {
			return nil, err
		}
		if findMember(ms, r.ID) == nil {
			return nil, rpctypes.ErrGRPCMemberNotFound
		}
		if err := checkPeerURLs(ms, r.PeerURLs, r.ID, s.cfg.peerScheme()); err != nil {
			return nil, err
		}
		if err := s.proposeMember(ctx, mvcc.MemberPeerURL, &pb.Member{ID: r.ID, PeerURLs: r.PeerURLs}); err != nil {
			return nil, err
		}
		addr, _ := hostPort(r.PeerURLs[0])
		for _, c := range conf {
			if parseID(c.ID) == r.ID && c.Address != addr {
				if err := s.node.UpdateAddress(ctx, c.ID, addr, c.Voter); err != nil {
					return nil, toGRPC(err)
				}
			}
		}
		ms, err = s.members()
		if err != nil {
			return nil, err
		}
		return &pb.MemberUpdateResponse{Header: s.header(nil), Members: ms}, nil
	}, func() *pb.MemberUpdateResponse { return &pb.MemberUpdateResponse{} })
}

// learnerReadyFraction is etcd's rule for MemberPromote: the learner has
// applied at least 90% of what the leader has.
const learnerReadyFraction = 0.9

func (s *Server) memberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	return onLeader(s, ctx, "MemberPromote", r, func() (*pb.MemberPromoteResponse, error) {
		s.memberMu.Lock()
		defer s.memberMu.Unlock()
		_, target, err := s.configMember(r.ID)
		if err != nil {
			return nil, err
		}
		if target.Voter {
			return nil, rpctypes.ErrGRPCMemberNotLearner
		}
		applied, ok := s.progress.applied(r.ID, 3*s.cfg.ElectionTimeout)
		if !ok || float64(applied) < learnerReadyFraction*float64(s.node.AppliedIndex()) {
			return nil, rpctypes.ErrGRPCLearnerNotReady
		}
		if err := s.node.PromoteVoter(ctx, target.ID, target.Address); err != nil {
			return nil, toGRPC(err)
		}
		if err := s.proposeMember(ctx, mvcc.MemberPromote, &pb.Member{ID: r.ID}); err != nil {
			return nil, err
		}
		s.log.Info("member promoted", "member-id", target.ID)
		ms, err := s.members()
		if err != nil {
			return nil, err
		}
		return &pb.MemberPromoteResponse{Header: s.header(nil), Members: ms}, nil
	}, func() *pb.MemberPromoteResponse { return &pb.MemberPromoteResponse{} })
}

// progress is the leader's view of how far each member has applied, from
// polling the members' status over the peer service.
type progress struct {
	mu   sync.Mutex
	seen map[uint64]memberProgress
}

type memberProgress struct {
	applied uint64
	at      time.Time
}

func (p *progress) record(id, applied uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = map[uint64]memberProgress{}
	}
	p.seen[id] = memberProgress{applied: applied, at: time.Now()}
}

// applied returns the member's applied index if it answered within maxAge.
func (p *progress) applied(id uint64, maxAge time.Duration) (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	mp, ok := p.seen[id]
	if !ok || time.Since(mp.at) > maxAge {
		return 0, false
	}
	return mp.applied, true
}

func (p *progress) recent(id uint64, maxAge time.Duration) bool {
	_, ok := p.applied(id, maxAge)
	return ok
}

// membershipLoop keeps the membership in order: every member publishes its
// name and client URLs, and leaves when it finds itself removed; the
// leader tracks the others' progress, promotes caught-up members that were
// added as voters, and drops records of members no longer configured.
func (s *Server) membershipLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.ElectionTimeout / 2)
	defer t.Stop()
	published := false
	wasMember := false
	var lastCommit uint64
	for {
		select {
		case <-s.stopCh:
			return
		case <-t.C:
		}
		conf, _, err := s.node.Configuration()
		if err != nil {
			continue
		}
		inConf := false
		for _, c := range conf {
			if parseID(c.ID) == s.id {
				inConf = true
			}
		}
		if inConf {
			wasMember = true
		} else if wasMember && len(conf) > 0 {
			s.log.Error("this member has been removed from the cluster; stopping")
			s.removed.Store(true)
			s.leave.Do(func() { close(s.leaveCh) })
			return
		}
		if !published && inConf {
			published = s.publish() == nil
		}
		if !s.node.IsLeader() {
			lastCommit = 0
			continue
		}
		s.pollProgress(conf)
		s.promoteCaughtUp(conf, lastCommit)
		s.tidyMembers()
		lastCommit = s.node.CommitIndex()
	}
}

// awaitPublished retries publish until it succeeds; false if the server
// stops first.
func (s *Server) awaitPublished(ctx context.Context) bool {
	for {
		err := s.publish()
		if err == nil {
			return true
		}
		s.log.Debug("publishing member attributes", "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-s.stopCh:
			return false
		case <-s.leaveCh:
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// publish records this member's name, URLs and labels in the member table.
func (s *Server) publish() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.cfg.ElectionTimeout)
	defer cancel()
	recs, err := s.kv.Members()
	if err != nil {
		return err
	}
	if err := s.publishLabels(ctx); err != nil {
		return err
	}
	for _, r := range recs {
		if r.ID == s.id && r.Name == s.cfg.Name && slices.Equal(r.ClientURLs, s.cfg.AdvertiseClientURLs) {
			return nil
		}
	}
	return s.proposeMember(ctx, mvcc.MemberAttrs, &pb.Member{ID: s.id, Name: s.cfg.Name, PeerURLs: s.peerURLs, ClientURLs: s.cfg.AdvertiseClientURLs})
}

// pollProgress asks every other member how far it has applied.
func (s *Server) pollProgress(conf []raftlog.Member) {
	s.eachPeer(conf, func(id uint64, addr string) {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ElectionTimeout/2)
		defer cancel()
		var st pb.StatusResponse
		start := time.Now()
		if err := s.callPeer(ctx, addr, "Status", &pb.StatusRequest{}, &st); err == nil {
			s.metrics.peerRoundTrip.WithLabelValues(hexID(id)).Observe(time.Since(start).Seconds())
			s.progress.record(id, st.RaftAppliedIndex)
		}
	})
}

// eachPeer calls f for every other member of conf, all at once, and waits.
func (s *Server) eachPeer(conf []raftlog.Member, f func(id uint64, addr string)) {
	var wg sync.WaitGroup
	for _, c := range conf {
		if id := parseID(c.ID); id != s.id {
			wg.Go(func() { f(id, c.Address) })
		}
	}
	wg.Wait()
}

// promoteCaughtUp promotes non-voters that were added as voters once they
// have applied what the leader had committed one round earlier: they keep
// up with the log, so adding their vote does not stall writes.
func (s *Server) promoteCaughtUp(conf []raftlog.Member, lastCommit uint64) {
	if lastCommit == 0 {
		return
	}
	recs, err := s.kv.Members()
	if err != nil {
		return
	}
	for _, c := range conf {
		id := parseID(c.ID)
		if c.Voter {
			continue
		}
		var rec *pb.Member
		for _, r := range recs {
			if r.ID == id {
				rec = r
			}
		}
		if rec == nil || rec.IsLearner {
			continue // an etcd learner waits for MemberPromote
		}
		applied, ok := s.progress.applied(id, s.cfg.ElectionTimeout)
		if !ok || applied < lastCommit {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*s.cfg.ElectionTimeout)
		s.memberMu.Lock()
		err := s.node.PromoteVoter(ctx, c.ID, c.Address)
		s.memberMu.Unlock()
		cancel()
		if err != nil {
			s.log.Warn("promoting a caught-up member failed", "member-id", c.ID, "err", err)
			continue
		}
		s.log.Info("member caught up and promoted to voter", "member-id", c.ID, "applied-index", applied)
	}
}

// errLeaderTransferTimeout is etcd's error for a transfer that did not
// finish in time.
var errLeaderTransferTimeout = status.Error(codes.Unavailable, "etcdserver: request timed out, leader transfer took too long")

// moveLeader is Maintenance.MoveLeader: only the leader transfers, and only
// to a voter, as in etcd.
func (s *Server) moveLeader(ctx context.Context, target uint64) error {
	if !s.node.IsLeader() {
		return rpctypes.ErrGRPCNotLeader
	}
	if target == s.id {
		return nil
	}
	conf, _, err := s.node.Configuration()
	if err != nil {
		return toGRPC(err)
	}
	for _, c := range conf {
		if parseID(c.ID) == target {
			if !c.Voter {
				return rpctypes.ErrGRPCBadLeaderTransferee
			}
			ctx, cancel := context.WithTimeout(ctx, 5*s.cfg.ElectionTimeout)
			defer cancel()
			if err := s.node.TransferLeadership(ctx, c.ID, c.Address); err != nil {
				s.log.Warn("leadership transfer failed", "to", c.ID, "err", err)
				return errLeaderTransferTimeout
			}
			return nil
		}
	}
	return rpctypes.ErrGRPCBadLeaderTransferee
}

// tidyMembers drops records of members no longer in the configuration (a
// leader that removed itself, a failed MemberAdd).
func (s *Server) tidyMembers() {
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	conf, _, err := s.node.Configuration()
	if err != nil {
		return
	}
	recs, err := s.kv.Members()
	if err != nil {
		return
	}
	for _, r := range recs {
		if !slices.ContainsFunc(conf, func(c raftlog.Member) bool { return parseID(c.ID) == r.ID }) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*s.cfg.ElectionTimeout)
			s.proposeMember(ctx, mvcc.MemberRemove, &pb.Member{ID: r.ID})
			cancel()
		}
	}
}
