package server

import (
	"context"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// requireLeader honours clientv3.WithRequireLeader: with the hasleader
// metadata, a member without a leader refuses the call.
func (s *Server) requireLeader(ctx context.Context) error {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return nil
	}
	if v := md.Get(rpctypes.MetadataRequireLeaderKey); len(v) > 0 && v[0] == rpctypes.MetadataHasLeader && s.node.Leader() == "" {
		return rpctypes.ErrGRPCNoLeader
	}
	return nil
}

func (s *Server) requireLeaderUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.requireLeader(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) requireLeaderStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.requireLeader(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}
