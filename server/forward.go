package server

import (
	"context"
	"errors"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ballast-kv/ballast/mvcc"
	"github.com/ballast-kv/ballast/raftlog"
)

// Any member accepts every request: what only the leader can do (propose,
// renew a lease, change the membership, confirm a read index) a follower
// asks of the leader over the peer service, then waits until its own state
// has caught up with the answer, so that a client reads its own writes on
// the member it wrote through.

// maxLeaderRetries bounds how often a request follows a leadership change.
const maxLeaderRetries = 5

// leader returns the leader's peer address, or self when this member
// leads. Without a leader it waits up to two election timeouts for one.
func (s *Server) leader(ctx context.Context) (addr string, self bool, err error) {
	deadline := time.Now().Add(2 * s.cfg.ElectionTimeout)
	for {
		if s.node.IsLeader() {
			return "", true, nil
		}
		if addr := s.node.LeaderAddr(); addr != "" {
			return addr, false, nil
		}
		if time.Now().After(deadline) {
			return "", false, rpctypes.ErrGRPCNoLeader
		}
		select {
		case <-ctx.Done():
			return "", false, toGRPC(ctx.Err())
		case <-s.stopCh:
			return "", false, rpctypes.ErrGRPCStopped
		case <-time.After(s.cfg.HeartbeatInterval / 2):
		}
	}
}

// backoff waits a little before following a leadership change.
func (s *Server) backoff(ctx context.Context, attempt int) error {
	select {
	case <-ctx.Done():
		return toGRPC(ctx.Err())
	case <-s.stopCh:
		return rpctypes.ErrGRPCStopped
	case <-time.After(time.Duration(attempt+1) * s.cfg.HeartbeatInterval):
		return nil
	}
}

// propose replicates a request and returns the state machine's response.
func (s *Server) propose(ctx context.Context, r *pb.InternalRaftRequest) (proto.Message, error) {
	r.ID = s.reqIDs.Next()
	if ai := authInfoFrom(ctx); ai != nil {
		// A client's request: apply checks it again against the auth
		// state it meets.
		r.Header = &pb.RequestHeader{ID: r.ID, Username: ai.User, AuthRevision: ai.Revision}
	}
	data, err := proto.Marshal(r)
	if err != nil {
		return nil, err
	}
	if len(data) > s.cfg.MaxRequestBytes {
		return nil, rpctypes.ErrGRPCRequestTooLarge
	}
	return s.proposeData(ctx, data, func() proto.Message { return responseFor(r) })
}

// proposeData replicates an entry through the leader, wherever it is.
func (s *Server) proposeData(ctx context.Context, data []byte, newResp func() proto.Message) (proto.Message, error) {
	s.metrics.proposalsPending.Inc()
	defer s.metrics.proposalsPending.Dec()
	for attempt := 0; ; attempt++ {
		addr, self, err := s.leader(ctx)
		if err != nil {
			s.metrics.proposalsFailed.Inc()
			return nil, err
		}
		if self {
			res, _, err := s.proposeHere(ctx, data)
			if errors.Is(err, raftlog.ErrNotLeader) && attempt < maxLeaderRetries {
				// Refused before it reached the log: safe to send again.
				if err := s.backoff(ctx, attempt); err != nil {
					return nil, err
				}
				continue
			}
			return res, toGRPC(err)
		}
		index, body, err := s.forwarder.propose(ctx, addr, data)
		if (errPeerNotLeader(err) || errors.Is(err, errForwardUnsent)) && attempt < maxLeaderRetries {
			if err := s.backoff(ctx, attempt); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			s.metrics.proposalsFailed.Inc()
			return nil, fromPeer(err)
		}
		resp := newResp()
		if err := proto.Unmarshal(body, resp); err != nil {
			return nil, err
		}
		if err := s.node.WaitApplied(ctx, index); err != nil {
			return nil, toGRPC(err)
		}
		return resp, nil
	}
}

// proposeHere proposes on this member, the leader, and returns the state
// machine's response and the entry's index.
func (s *Server) proposeHere(ctx context.Context, data []byte) (proto.Message, uint64, error) {
	res, index, err := s.node.Propose(ctx, data)
	if err != nil {
		if !errors.Is(err, raftlog.ErrNotLeader) {
			s.metrics.proposalsFailed.Inc()
		}
		return nil, 0, err
	}
	s.metrics.proposalsCommitted.Inc()
	switch r := res.(type) {
	case error:
		return nil, index, toGRPC(r)
	case proto.Message:
		return r, index, nil
	}
	// Only an entry replayed after a restart has no result, and nobody
	// waits for those.
	return nil, index, rpctypes.ErrGRPCTimeout
}

// responseFor returns an empty response of the type a request's apply
// produces.
func responseFor(r *pb.InternalRaftRequest) proto.Message {
	switch {
	case r.Put != nil:
		return &pb.PutResponse{}
	case r.DeleteRange != nil:
		return &pb.DeleteRangeResponse{}
	case r.Txn != nil:
		return &pb.TxnResponse{}
	case r.Compaction != nil:
		return &pb.CompactionResponse{}
	case r.LeaseGrant != nil:
		return &pb.LeaseGrantResponse{}
	case r.LeaseRevoke != nil:
		return &pb.LeaseRevokeResponse{}
	case r.LeaseCheckpoint != nil:
		return &pb.LeaseCheckpointResponse{}
	case r.Alarm != nil:
		return &pb.AlarmResponse{}
	case r.AuthEnable != nil:
		return &pb.AuthEnableResponse{}
	case r.AuthDisable != nil:
		return &pb.AuthDisableResponse{}
	case r.Authenticate != nil:
		return &pb.AuthenticateResponse{}
	case r.AuthUserAdd != nil:
		return &pb.AuthUserAddResponse{}
	case r.AuthUserDelete != nil:
		return &pb.AuthUserDeleteResponse{}
	case r.AuthUserChangePassword != nil:
		return &pb.AuthUserChangePasswordResponse{}
	case r.AuthUserGrantRole != nil:
		return &pb.AuthUserGrantRoleResponse{}
	case r.AuthUserRevokeRole != nil:
		return &pb.AuthUserRevokeRoleResponse{}
	case r.AuthRoleAdd != nil:
		return &pb.AuthRoleAddResponse{}
	case r.AuthRoleDelete != nil:
		return &pb.AuthRoleDeleteResponse{}
	case r.AuthRoleGrantPermission != nil:
		return &pb.AuthRoleGrantPermissionResponse{}
	case r.AuthRoleRevokePermission != nil:
		return &pb.AuthRoleRevokePermissionResponse{}
	}
	return &pb.ResponseHeader{}
}

// fromPeer passes on the etcd error a peer answered with; a failure to
// reach the leader leaves a write's outcome unknown, which etcd reports as
// a timeout.
func fromPeer(err error) error {
	if _, ok := rpctypes.Error(err).(rpctypes.EtcdError); ok {
		return err
	}
	switch status.Code(err) {
	case codes.Canceled:
		return rpctypes.ErrGRPCCanceled
	case codes.DeadlineExceeded:
		return rpctypes.ErrGRPCDeadlineExceeded
	}
	return rpctypes.ErrGRPCTimeout
}

// remoteReadIndex asks the leader for a read index (raftlog's hook).
func (s *Server) remoteReadIndex(ctx context.Context) (uint64, error) {
	addr := s.node.LeaderAddr()
	if addr == "" {
		return 0, raftlog.ErrNoLeader
	}
	var out wrapperspb.UInt64Value
	if err := s.callPeer(ctx, addr, "ReadIndex", &emptypb.Empty{}, &out); err != nil {
		if errPeerNotLeader(err) {
			return 0, raftlog.ErrNotLeader
		}
		return 0, fromPeer(err)
	}
	return out.Value, nil
}

// askTerm asks the member at a peer address for its Raft term (raftlog's
// hook for the leader's read-index check).
func (s *Server) askTerm(ctx context.Context, addr string) (uint64, error) {
	var out wrapperspb.UInt64Value
	if err := s.callPeer(ctx, addr, "Term", &emptypb.Empty{}, &out); err != nil {
		return 0, err
	}
	return out.Value, nil
}

// renew refreshes a lease on the leader, through it when this member
// follows; an unknown lease is mvcc.ErrLeaseNotFound either way.
func (s *Server) renew(ctx context.Context, id int64) (int64, error) {
	resp, err := onLeader(s, ctx, "LeaseKeepAlive", &pb.LeaseKeepAliveRequest{ID: id}, func() (*pb.LeaseKeepAliveResponse, error) {
		ttl, clearCP, err := s.kv.LeaseRenew(id)
		if err == nil && clearCP {
			// The lease restarts its full TTL: drop the old checkpoint so a
			// new leader does not resume from it.
			_, err = s.propose(ctx, &pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{
				Checkpoints: []*pb.LeaseCheckpoint{{ID: id, Remaining_TTL: 0}},
			}})
		}
		return &pb.LeaseKeepAliveResponse{ID: id, TTL: ttl}, err
	}, func() *pb.LeaseKeepAliveResponse { return &pb.LeaseKeepAliveResponse{} })
	if errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseNotFound) {
		return 0, mvcc.ErrLeaseNotFound
	}
	return resp.TTL, err
}

// onLeader runs call on the leader: here, or through the peer service.
func onLeader[Resp proto.Message](s *Server, ctx context.Context, method string, req proto.Message, here func() (Resp, error), newResp func() Resp) (Resp, error) {
	for attempt := 0; ; attempt++ {
		addr, self, err := s.leader(ctx)
		if err != nil {
			return newResp(), err
		}
		if self {
			return here()
		}
		out := newResp()
		err = s.callPeer(ctx, addr, method, req, out)
		if errPeerNotLeader(err) && attempt < maxLeaderRetries {
			if err := s.backoff(ctx, attempt); err != nil {
				return out, err
			}
			continue
		}
		if err != nil {
			return out, fromPeer(err)
		}
		return out, nil
	}
}
