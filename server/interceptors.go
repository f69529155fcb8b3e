package server

import (
	"context"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// requireLeader honours clientv3.WithRequireLeader: with the hasleader
// metadata, a member without a leader refuses the call.
func (s *Server) requireLeader(ctx context.Context) error {
	if wantsLeader(ctx) && s.node.Leader() == "" {
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
	if !wantsLeader(ss.Context()) {
		return h(srv, ss)
	}
	// As etcd does, a stream that requires a leader ends with "no leader"
	// once this member has been without one for three election timeouts,
	// so the client moves to a member that has one (kube-apiserver's
	// watches ask for this).
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	lost := make(chan struct{})
	go func() {
		t := time.NewTicker(s.cfg.ElectionTimeout)
		defer t.Stop()
		missed := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if s.node.Leader() != "" {
				missed = 0
				continue
			}
			if missed++; missed >= 3 {
				close(lost)
				cancel()
				return
			}
		}
	}()
	err := h(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	select {
	case <-lost:
		return rpctypes.ErrGRPCNoLeader
	default:
		return err
	}
}

func wantsLeader(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return false
	}
	v := md.Get(rpctypes.MetadataRequireLeaderKey)
	return len(v) > 0 && v[0] == rpctypes.MetadataHasLeader
}

// ctxStream is a server stream with its own (cancellable) context.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *ctxStream) Context() context.Context { return c.ctx }
