package server

import (
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The internal peer service: what a follower needs from the leader (or any
// member from another) that Raft does not carry. Requests and responses are
// etcd's own messages where one fits. It is served on the peer port only.
const peerService = "ballast.peer.v1.Peer"

// peerMethod builds one unary method of the peer service.
func peerMethod[Req, Resp proto.Message](name string, newReq func() Req, h func(s *Server, ctx context.Context, r Req) (Resp, error)) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			req := newReq()
			if err := dec(req); err != nil {
				return nil, err
			}
			s := srv.(*Server)
			if !s.raftStarted.Load() {
				return nil, errPeerStarting
			}
			return h(s, ctx, req)
		},
	}
}

var peerServiceDesc = grpc.ServiceDesc{
	ServiceName: peerService,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		peerMethod("ReadIndex", func() *emptypb.Empty { return &emptypb.Empty{} }, (*Server).peerReadIndex),
		peerMethod("Term", func() *emptypb.Empty { return &emptypb.Empty{} }, (*Server).peerTerm),
		peerMethod("Status", func() *pb.StatusRequest { return &pb.StatusRequest{} }, (*Server).peerStatus),
		peerMethod("MemberList", func() *pb.MemberListRequest { return &pb.MemberListRequest{} }, (*Server).peerMemberList),
		peerMethod("LeaseKeepAlive", func() *pb.LeaseKeepAliveRequest { return &pb.LeaseKeepAliveRequest{} }, (*Server).peerLeaseKeepAlive),
		peerMethod("LeaseTimeToLive", func() *pb.LeaseTimeToLiveRequest { return &pb.LeaseTimeToLiveRequest{} }, (*Server).peerLeaseTimeToLive),
		peerMethod("HashKV", func() *pb.HashKVRequest { return &pb.HashKVRequest{} }, (*Server).peerHashKV),
		peerMethod("Join", func() *pb.MemberAddRequest { return &pb.MemberAddRequest{} }, (*Server).peerJoin),
		peerMethod("MemberAdd", func() *pb.MemberAddRequest { return &pb.MemberAddRequest{} }, (*Server).memberAdd),
		peerMethod("MemberRemove", func() *pb.MemberRemoveRequest { return &pb.MemberRemoveRequest{} }, (*Server).memberRemove),
		peerMethod("MemberUpdate", func() *pb.MemberUpdateRequest { return &pb.MemberUpdateRequest{} }, (*Server).memberUpdate),
		peerMethod("MemberPromote", func() *pb.MemberPromoteRequest { return &pb.MemberPromoteRequest{} }, (*Server).memberPromote),
	},
}

// errPeerStarting answers peers while Raft is not running yet.
var errPeerStarting = status.Error(codes.Unavailable, "ballast: member is starting")

func (s *Server) peerReadIndex(ctx context.Context, _ *emptypb.Empty) (*wrapperspb.UInt64Value, error) {
	index, err := s.node.ReadIndex(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	return wrapperspb.UInt64(index), nil
}

// peerTerm tells the leader checking its leadership this member's Raft term.
func (s *Server) peerTerm(context.Context, *emptypb.Empty) (*wrapperspb.UInt64Value, error) {
	return wrapperspb.UInt64(s.node.Term()), nil
}

func (s *Server) peerStatus(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	return s.status(), nil
}

func (s *Server) peerMemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	return s.memberList(ctx, false)
}

func (s *Server) peerLeaseKeepAlive(ctx context.Context, r *pb.LeaseKeepAliveRequest) (*pb.LeaseKeepAliveResponse, error) {
	if !s.node.IsLeader() {
		return nil, rpctypes.ErrGRPCNotLeader
	}
	ttl, err := s.renew(ctx, r.ID)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.LeaseKeepAliveResponse{ID: r.ID, TTL: ttl}, nil
}

func (s *Server) peerLeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if !s.node.IsLeader() {
		return nil, rpctypes.ErrGRPCNotLeader
	}
	return s.leaseTimeToLive(ctx, r)
}

// errPeerNotLeader reports whether a peer refused because it no longer leads.
func errPeerNotLeader(err error) bool {
	return errors.Is(rpctypes.Error(err), rpctypes.ErrNotLeader)
}
