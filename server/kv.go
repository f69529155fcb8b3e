package server

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ballast-kv/ballast/mvcc"
)

type kvServer struct {
	pb.UnimplementedKVServer
	s *Server
}

func (k *kvServer) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	k.s.metrics.ranges.Inc()
	if err := checkRange(r); err != nil {
		return nil, err
	}
	resp, err := k.s.rangeLocal(ctx, r)
	if err != nil {
		return nil, err
	}
	resp.Header = k.s.header(resp.Header)
	return resp, nil
}

func (s *Server) rangeLocal(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if !r.Serializable {
		if err := s.linearizable(ctx); err != nil {
			return nil, err
		}
	}
	resp, err := s.kv.Range(r)
	return resp, toGRPC(err)
}

func (k *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	k.s.metrics.puts.Inc()
	if err := checkPut(r); err != nil {
		return nil, err
	}
	resp, err := k.s.write(ctx, &pb.InternalRaftRequest{Put: r})
	if err != nil {
		return nil, err
	}
	return resp.(*pb.PutResponse), nil
}

func (k *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	k.s.metrics.deletes.Inc()
	if err := checkDelete(r); err != nil {
		return nil, err
	}
	resp, err := k.s.write(ctx, &pb.InternalRaftRequest{DeleteRange: r})
	if err != nil {
		return nil, err
	}
	return resp.(*pb.DeleteRangeResponse), nil
}

func (k *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	k.s.metrics.txns.Inc()
	if err := checkTxn(r, k.s.cfg.MaxTxnOps); err != nil {
		return nil, err
	}
	if isReadOnly(r) {
		if !isSerializableTxn(r) {
			if err := k.s.linearizable(ctx); err != nil {
				return nil, err
			}
		}
		resp, err := k.s.kv.ReadTxn(r)
		if err != nil {
			return nil, toGRPC(err)
		}
		resp.Header = k.s.header(resp.Header)
		return resp, nil
	}
	resp, err := k.s.write(ctx, &pb.InternalRaftRequest{Txn: r})
	if err != nil {
		return nil, err
	}
	return resp.(*pb.TxnResponse), nil
}

func (k *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	resp, err := k.s.propose(ctx, &pb.InternalRaftRequest{Compaction: r})
	if err != nil {
		return nil, err
	}
	if r.Physical {
		if err := k.s.kv.WaitCompacted(ctx, r.Revision); err != nil {
			return nil, toGRPC(err)
		}
	}
	cr := resp.(*pb.CompactionResponse)
	cr.Header = k.s.header(&pb.ResponseHeader{})
	return cr, nil
}

// write checks the quota, proposes r and fills the header.
func (s *Server) write(ctx context.Context, r *pb.InternalRaftRequest) (proto.Message, error) {
	if err := s.checkQuota(ctx, r); err != nil {
		return nil, err
	}
	resp, err := s.propose(ctx, r)
	if err != nil {
		return nil, err
	}
	type headed interface{ GetHeader() *pb.ResponseHeader }
	s.header(resp.(headed).GetHeader())
	return resp, nil
}

// checkQuota raises the NOSPACE alarm and refuses a request that would take
// the database past --quota-backend-bytes, as etcd does.
func (s *Server) checkQuota(ctx context.Context, r *pb.InternalRaftRequest) error {
	cost := quotaCost(r)
	if cost == 0 || s.cfg.QuotaBackendBytes < 0 {
		return nil
	}
	if s.kv.Size().InUse+cost < s.cfg.QuotaBackendBytes {
		return nil
	}
	s.propose(internal(ctx), &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: s.id, Alarm: pb.AlarmType_NOSPACE}})
	return toGRPC(errNoSpace)
}

// RangeStream serves a range in chunks that grow while they stay small, all
// at the revision of the first chunk; only the last carries the header,
// more and count (etcd 3.7).
func (k *kvServer) RangeStream(r *pb.RangeRequest, stream pb.KV_RangeStreamServer) error {
	if err := checkRange(r); err != nil {
		return err
	}
	if !mvcc.IsDefaultOrdering(r) {
		return status.Errorf(codes.Unimplemented, "RangeStream does not support custom sort orders")
	}
	if mvcc.HasRevisionFilters(r) {
		return status.Errorf(codes.Unimplemented, "RangeStream does not support revision filters")
	}
	ctx := stream.Context()
	if !r.Serializable {
		if err := k.s.linearizable(ctx); err != nil {
			return err
		}
	}
	req := proto.Clone(r).(*pb.RangeRequest)
	req.Serializable = true
	if r.CountOnly {
		resp, err := k.s.kv.Range(req)
		if err != nil {
			return toGRPC(err)
		}
		return stream.Send(&pb.RangeStreamResponse{RangeResponse: &pb.RangeResponse{Header: k.s.header(resp.Header), Count: resp.Count}})
	}
	total := r.Limit
	if total <= 0 {
		total = 1<<63 - 1
	}
	req.Limit = min(10, total)
	var count, headerRev int64
	target := k.s.cfg.MaxRequestBytes
	for {
		resp, err := k.s.kv.Range(req)
		if err != nil {
			return toGRPC(err)
		}
		if headerRev == 0 {
			headerRev = resp.Header.Revision
			if req.Revision == 0 {
				req.Revision = headerRev
			}
		}
		count += int64(len(resp.Kvs))
		out := &pb.RangeResponse{Kvs: resp.Kvs}
		done := !resp.More || count == total
		var next []byte
		if resp.More {
			next = append(append([]byte(nil), resp.Kvs[len(resp.Kvs)-1].Key...), 0)
		}
		if done {
			out.Header = k.s.header(&pb.ResponseHeader{Revision: headerRev})
			out.More = resp.More
			out.Count = count
			if resp.More {
				rest, err := k.s.kv.Range(&pb.RangeRequest{Key: next, RangeEnd: r.RangeEnd, Revision: req.Revision, CountOnly: true})
				if err != nil {
					return toGRPC(err)
				}
				out.Count += rest.Count
			}
		}
		if err := stream.Send(&pb.RangeStreamResponse{RangeResponse: out}); err != nil {
			return err
		}
		if done {
			return nil
		}
		size := proto.Size(resp)
		switch {
		case size < target/2:
			req.Limit *= 2
		case size > 2*target:
			req.Limit /= 2
		}
		req.Limit = max(1, min(req.Limit, total-count))
		req.Key = next
	}
}
