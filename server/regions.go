package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/ballast-kv/ballast/cluster/gossip"
	"github.com/ballast-kv/ballast/mvcc"
)

// Regions: with --gossip-listen-addr every member gossips its identity and
// labels (cluster/gossip); a member started with --join and no
// --initial-cluster asks a running member to admit it; and the leader
// places voters (placement.go). Without gossip a cluster is etcd's: static
// membership changed only by the Cluster API.

// startGossip joins the gossip pool, before the member knows its id when
// it is joining.
func (s *Server) startGossip() error {
	if s.cfg.GossipListenAddr == "" {
		return nil
	}
	var key []byte
	if s.cfg.GossipKeyFile != "" {
		var err error
		if key, err = gossip.LoadKey(s.cfg.GossipKeyFile); err != nil {
			return err
		}
	}
	g, err := gossip.Start(gossip.Config{ListenAddr: s.cfg.GossipListenAddr, Join: s.cfg.Join, Key: key, Meta: s.gossipMeta(), Logger: s.log})
	if err != nil {
		return err
	}
	s.gossip = g
	return nil
}

func (s *Server) gossipMeta() gossip.Meta {
	return gossip.Meta{ID: s.id, Name: s.cfg.Name, Cluster: s.cfg.InitialClusterToken, Region: s.cfg.Region, Zone: s.cfg.Zone,
		PeerURLs: s.peerURLs, ClientURLs: s.cfg.AdvertiseClientURLs, Version: Version}
}

// joiningByGossip: a new member with --join and no --initial-cluster.
func (c *Config) joiningByGossip() bool { return len(c.Join) > 0 && c.InitialCluster == "" }

// joinByGossip asks the members gossip shows (of the same cluster token) to
// admit this member as a non-voter, and takes the id it is given. A member
// that was admitted before but stopped before writing its member file
// finds itself in the member list instead.
func (s *Server) joinByGossip() error {
	deadline := time.Now().Add(time.Minute)
	lastErr := errors.New("no member of the cluster seen by gossip yet")
	for time.Now().Before(deadline) {
		for _, n := range s.gossip.Nodes() {
			if n.ID == 0 || !n.Alive || len(n.PeerURLs) == 0 {
				continue
			}
			addr, _ := hostPort(n.PeerURLs[0])
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var resp pb.MemberAddResponse
			err := s.callPeer(ctx, addr, "Join", &pb.MemberAddRequest{PeerURLs: s.peerURLs, IsLearner: true}, &resp)
			cancel()
			switch {
			case err == nil:
				s.id, s.clusterID = resp.Member.ID, resp.Header.ClusterId
				s.log.Info("admitted to a running cluster", "member-id", hexID(s.id), "cluster-id", hexID(s.clusterID), "via", n.Name)
				return nil
			case errors.Is(fromPeer(err), rpctypes.ErrGRPCPeerURLExist):
				return s.joinExisting([]peer{{name: n.Name, urls: n.PeerURLs}})
			}
			lastErr = fmt.Errorf("%s: %v", n.Name, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("--join: not admitted to a cluster with token %q within a minute: %v", s.cfg.InitialClusterToken, lastErr)
}

// peerJoin admits a member that asked through gossip: a non-voter that
// placement may promote. Only a cluster that gossips admits this way.
func (s *Server) peerJoin(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	if s.gossip == nil {
		return nil, errors.New("this cluster does not run gossip: add the member with MemberAdd")
	}
	return onLeader(s, ctx, "Join", r, func() (*pb.MemberAddResponse, error) {
		return s.addMember(ctx, &pb.MemberAddRequest{PeerURLs: r.PeerURLs, IsLearner: true}, math.MaxInt)
	}, func() *pb.MemberAddResponse { return &pb.MemberAddResponse{} })
}

// publishLabels records this member's region and zone in the replicated
// member labels when they changed.
func (s *Server) publishLabels(ctx context.Context) error {
	want := mvcc.Labels{ID: s.id, Region: s.cfg.Region, Zone: s.cfg.Zone}
	have, err := s.kv.MemberLabels()
	if err != nil {
		return err
	}
	if have[s.id] == want || (want.Region == "" && want.Zone == "") {
		return nil
	}
	data, err := mvcc.EncodeMemberLabels(want)
	if err != nil {
		return err
	}
	_, err = s.proposeData(ctx, data, func() proto.Message { return &pb.Member{} })
	return err
}
