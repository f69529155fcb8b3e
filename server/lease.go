package server

import (
	"context"
	"errors"
	"io"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/ballast-kv/ballast/mvcc"
)

type leaseServer struct {
	pb.UnimplementedLeaseServer
	s *Server
}

func (l *leaseServer) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	for r.ID == 0 {
		r.ID = int64(l.s.reqIDs.Next() & (1<<63 - 1))
	}
	resp, err := l.s.write(ctx, &pb.InternalRaftRequest{LeaseGrant: r})
	if err != nil {
		return nil, err
	}
	return resp.(*pb.LeaseGrantResponse), nil
}

func (l *leaseServer) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	resp, err := l.s.write(ctx, &pb.InternalRaftRequest{LeaseRevoke: r})
	if err != nil {
		return nil, err
	}
	return resp.(*pb.LeaseRevokeResponse), nil
}

func (l *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	// Only the leader knows a lease's remaining time.
	resp, err := onLeader(l.s, ctx, "LeaseTimeToLive", r, func() (*pb.LeaseTimeToLiveResponse, error) {
		return l.s.leaseTimeToLive(ctx, r)
	}, func() *pb.LeaseTimeToLiveResponse { return &pb.LeaseTimeToLiveResponse{} })
	if err != nil {
		return nil, err
	}
	resp.Header = l.s.header(&pb.ResponseHeader{Revision: resp.GetHeader().GetRevision()})
	return resp, nil
}

func (s *Server) leaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if err := s.linearizable(ctx); err != nil {
		return nil, err
	}
	resp, err := s.kv.LeaseTimeToLive(r.ID, r.Keys)
	if err != nil {
		return nil, toGRPC(err)
	}
	resp.Header = s.header(resp.Header)
	return resp, nil
}

func (l *leaseServer) LeaseLeases(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	if err := l.s.linearizable(ctx); err != nil {
		return nil, err
	}
	resp := &pb.LeaseLeasesResponse{Header: l.s.header(nil)}
	for _, id := range l.s.kv.Leases() {
		resp.Leases = append(resp.Leases, &pb.LeaseStatus{ID: id})
	}
	return resp, nil
}

// LeaseKeepAlive renews on the leader; an unknown lease gets TTL 0 and the
// stream goes on, as in etcd.
func (l *leaseServer) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if stream.Context().Err() != nil {
				return rpctypes.ErrGRPCCanceled
			}
			return err
		}
		resp := &pb.LeaseKeepAliveResponse{Header: l.s.header(nil), ID: req.ID}
		ttl, err := l.s.renew(stream.Context(), req.ID)
		switch {
		case errors.Is(err, mvcc.ErrLeaseNotFound):
		case err != nil:
			return toGRPC(err)
		default:
			resp.TTL = ttl
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}
