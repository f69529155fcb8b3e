package server

import (
	"context"
	"crypto/sha256"
	"io"
	"strconv"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/ballast-kv/ballast/store"
)

type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer
	s *Server
}

func (m *maintenanceServer) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	return m.s.status(), nil
}

func (s *Server) status() *pb.StatusResponse {
	size := s.kv.Size()
	resp := &pb.StatusResponse{
		Header:           s.header(nil),
		Version:          Version,
		DbSize:           size.Total,
		DbSizeInUse:      size.InUse,
		RaftIndex:        s.node.CommitIndex(),
		RaftTerm:         s.node.Term(),
		RaftAppliedIndex: s.node.AppliedIndex(),
		DbSizeQuota:      s.cfg.QuotaBackendBytes,
		StorageVersion:   ClusterVersion,
		DowngradeInfo:    &pb.DowngradeInfo{},
	}
	if leader := s.node.Leader(); leader != "" {
		resp.Leader = parseID(leader)
	} else {
		resp.Errors = append(resp.Errors, "etcdserver: no leader")
	}
	if ms, err := s.members(); err == nil {
		if me := findMember(ms, s.id); me != nil {
			resp.IsLearner = me.IsLearner
		}
	}
	for _, a := range s.kv.Alarms() {
		resp.Errors = append(resp.Errors, "memberID:"+strconv.FormatUint(a.MemberID, 10)+" alarm:"+a.Alarm.String())
	}
	return resp
}

func (m *maintenanceServer) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	resp, err := m.s.propose(ctx, &pb.InternalRaftRequest{Alarm: r})
	if err != nil {
		return nil, err
	}
	ar := resp.(*pb.AlarmResponse)
	ar.Header = m.s.header(ar.Header)
	return ar, nil
}

func (m *maintenanceServer) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	h, compactRev, hashRev, cur, err := m.s.kv.HashKV(r.Revision)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.HashKVResponse{Header: m.s.header(&pb.ResponseHeader{Revision: cur}), Hash: h, CompactRevision: compactRev, HashRevision: hashRev}, nil
}

// Hash is HashKV at the current revision: Ballast's state has no bbolt file
// for etcd's whole-database hash to cover.
func (m *maintenanceServer) Hash(ctx context.Context, _ *pb.HashRequest) (*pb.HashResponse, error) {
	h, _, _, cur, err := m.s.kv.HashKV(0)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.HashResponse{Header: m.s.header(&pb.ResponseHeader{Revision: cur}), Hash: h}, nil
}

// Defragment compacts Pebble's files in the background of reads and writes:
// unlike etcd's defrag it never stops the world.
func (m *maintenanceServer) Defragment(ctx context.Context, _ *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if err := m.s.stateDB.Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil {
		return nil, toGRPC(err)
	}
	m.s.stateDB.RefreshSize() // the quota sees the space freed at once
	return &pb.DefragmentResponse{Header: m.s.header(nil)}, nil
}

type clusterServer struct {
	pb.UnimplementedClusterServer
	s *Server
}

func (c *clusterServer) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	return c.s.memberList(ctx, r.Linearizable)
}

func (c *clusterServer) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	resp, err := c.s.memberAdd(ctx, r)
	if err != nil {
		return nil, err
	}
	return resp, c.s.settle(ctx, &resp.Header)
}

func (c *clusterServer) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	resp, err := c.s.memberRemove(ctx, r)
	if err != nil {
		return nil, err
	}
	return resp, c.s.settle(ctx, &resp.Header)
}

func (c *clusterServer) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	resp, err := c.s.memberUpdate(ctx, r)
	if err != nil {
		return nil, err
	}
	return resp, c.s.settle(ctx, &resp.Header)
}

func (c *clusterServer) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	resp, err := c.s.memberPromote(ctx, r)
	if err != nil {
		return nil, err
	}
	return resp, c.s.settle(ctx, &resp.Header)
}

// settle makes a change done through the leader visible here before the
// answer (a MemberList on this member then shows it) and stamps this
// member's header.
func (s *Server) settle(ctx context.Context, h **pb.ResponseHeader) error {
	if !s.node.IsLeader() {
		if err := s.linearizable(ctx); err != nil {
			return err
		}
	}
	*h = s.header(&pb.ResponseHeader{})
	return nil
}

func (m *maintenanceServer) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	if err := m.s.moveLeader(ctx, r.TargetID); err != nil {
		return nil, err
	}
	return &pb.MoveLeaderResponse{Header: m.s.header(nil)}, nil
}

// snapshotChunk is the size of each message of a Snapshot stream.
const snapshotChunk = 1 << 20

// Snapshot streams a backup of the applied state in etcd's shape: the data
// in chunks that count down RemainingBytes, then a last message holding
// only the sha256 of everything sent, which `etcdctl snapshot save`
// expects. The backup is spooled to an unnamed file in the data dir first,
// so the stream knows its size and a slow client holds no Pebble snapshot
// open.
func (m *maintenanceServer) Snapshot(_ *pb.SnapshotRequest, srv pb.Maintenance_SnapshotServer) error {
	f, size, err := store.Spool(m.s.cfg.DataDir, func(w io.Writer) error {
		_, err := m.s.kv.WriteBackup(w)
		return err
	})
	if err != nil {
		return toGRPC(err)
	}
	defer f.Close()
	m.s.log.Info("sending a snapshot to a client", "bytes", size)
	body := size - sha256.Size
	for sent := int64(0); sent < body; {
		buf := make([]byte, min(snapshotChunk, body-sent)) // Send keeps the slice
		if _, err := io.ReadFull(f, buf); err != nil {
			return toGRPC(err)
		}
		sent += int64(len(buf))
		if err := srv.Send(&pb.SnapshotResponse{Header: m.s.header(nil), RemainingBytes: uint64(body - sent), Blob: buf, Version: ClusterVersion}); err != nil {
			return err
		}
	}
	sum := make([]byte, sha256.Size)
	if _, err := io.ReadFull(f, sum); err != nil {
		return toGRPC(err)
	}
	return srv.Send(&pb.SnapshotResponse{Header: m.s.header(nil), Blob: sum, Version: ClusterVersion})
}
