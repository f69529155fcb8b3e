package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/ballast-kv/ballast/raftlog"
	"github.com/ballast-kv/ballast/store"
)

// identify settles this member's id and its cluster's id, and returns the
// initial Raft configuration when a new cluster is being bootstrapped.
//
//   - A data dir that was used before holds both ids in its `member` file;
//     as in etcd, the --initial-cluster flags no longer matter then (but a
//     new-cluster command line must still describe this member). So does a
//     data dir made by `ballast snapshot restore`, whose Raft log is empty.
//   - --initial-cluster-state=new derives every id from the peer URLs and
//     the cluster token, as etcd does, so all members agree without talking.
//   - --initial-cluster-state=existing asks the running members, which must
//     already list this member's peer URLs (MemberAdd first), as etcd does.
func (s *Server) identify() ([]raftlog.Server, error) {
	cfg := s.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(cfg.DataDir, "member")
	peers, err := cfg.peers()
	if err != nil {
		return nil, err
	}
	var bootstrap []raftlog.Server
	var id, cid uint64
	newCluster := cfg.InitialClusterState == "new" && !cfg.joiningByGossip()
	if newCluster {
		id, cid, bootstrap = newClusterIDs(cfg.Name, cfg.InitialClusterToken, peers)
	}

	got, err := os.ReadFile(path)
	switch {
	case err == nil:
		mid, mcid, err := parseMemberFile(got)
		if err != nil {
			return nil, fmt.Errorf("data dir %s: %w: replace the member (remove it, then add a new one with an empty data directory)", cfg.DataDir, err)
		}
		if newCluster && (mid != id || mcid != cid) {
			return nil, fmt.Errorf("data dir %s belongs to member %x of cluster %x, not to this member (%x of cluster %x): check --initial-cluster, --initial-advertise-peer-urls and --initial-cluster-token", cfg.DataDir, mid, mcid, id, cid)
		}
		s.id, s.clusterID = mid, mcid
		// Raft ignores the bootstrap configuration once it has state of its
		// own; a data dir made by `ballast snapshot restore` has none yet.
		// (A member whose Raft log was lost is refused by raftlog.Open: its
		// state has applied entries the log does not hold.)
		return bootstrap, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}

	if cfg.joiningByGossip() {
		if err := s.joinByGossip(); err != nil {
			return nil, err
		}
	} else if newCluster {
		s.id, s.clusterID = id, cid
		if err := s.checkNotBootstrapped(peers); err != nil {
			return nil, err
		}
	} else if err := s.joinExisting(peers); err != nil {
		return nil, err
	}
	if err := store.WriteFileAtomically(vfs.Default, path, memberFile(s.id, s.clusterID)); err != nil {
		return nil, err
	}
	return bootstrap, nil
}

// newClusterIDs derives every member's id and the cluster id from
// --initial-cluster and its token, as etcd does, so that all members agree
// without talking; it returns the named member's id and the initial Raft
// configuration.
func newClusterIDs(name, token string, peers []peer) (id, cid uint64, bootstrap []raftlog.Server) {
	var ids []uint64
	for _, p := range peers {
		pid := memberID(p.urls, token)
		ids = append(ids, pid)
		addr, _ := hostPort(p.urls[0])
		bootstrap = append(bootstrap, raftlog.Server{ID: hexID(pid), Address: addr})
		if p.name == name {
			id = pid
		}
	}
	return id, clusterID(ids), bootstrap
}

// The member file holds the member's and the cluster's ids, with a checksum
// so that a damaged file reads as damaged, not as some other member's.
const memberFileFormat = "member %016x cluster %016x crc %08x\n"

func memberFile(id, cid uint64) []byte {
	return fmt.Appendf(nil, memberFileFormat, id, cid, memberFileCRC(id, cid))
}

func memberFileCRC(id, cid uint64) uint32 {
	return crc32.ChecksumIEEE(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, id), cid))
}

// parseMemberFile accepts a file only if writing its ids back gives the same
// bytes, checksum included.
func parseMemberFile(b []byte) (id, cid uint64, err error) {
	var crc uint32
	if n, _ := fmt.Sscanf(string(b), memberFileFormat, &id, &cid, &crc); n != 3 || string(memberFile(id, cid)) != string(b) {
		return 0, 0, fmt.Errorf("%w: corrupted member file: %q", store.ErrDamaged, b)
	}
	return id, cid, nil
}

// checkNotBootstrapped refuses to bootstrap next to running members of
// another cluster: a wrong --initial-cluster-token or a member list that
// does not match is an error now, not a split cluster later. Members that
// do not answer (they are starting too) are fine.
func (s *Server) checkNotBootstrapped(peers []peer) error {
	for _, p := range peers {
		if p.name == s.cfg.Name {
			continue
		}
		addr, _ := hostPort(p.urls[0])
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var st pb.StatusResponse
		err := s.callPeer(ctx, addr, "Status", &pb.StatusRequest{}, &st)
		cancel()
		if err != nil {
			continue
		}
		if theirs := st.GetHeader().GetClusterId(); theirs != s.clusterID {
			return fmt.Errorf("member %s (%s) belongs to cluster %x, but --initial-cluster and --initial-cluster-token %q make cluster %x: check both flags, or use --initial-cluster-state=existing to join it", p.name, p.urls[0], theirs, s.cfg.InitialClusterToken, s.clusterID)
		}
	}
	return nil
}

// joinExisting learns this member's id and the cluster id from a running
// member that lists this member's peer URLs.
func (s *Server) joinExisting(peers []peer) error {
	var lastErr error
	for _, p := range peers {
		if p.name == s.cfg.Name {
			continue
		}
		addr, _ := hostPort(p.urls[0])
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var ml pb.MemberListResponse
		err := s.callPeer(ctx, addr, "MemberList", &pb.MemberListRequest{}, &ml)
		cancel()
		if err != nil {
			lastErr = fmt.Errorf("%s (%s): %v", p.name, p.urls[0], err)
			continue
		}
		want := slices.Sorted(slices.Values(s.peerURLs))
		for _, m := range ml.Members {
			if slices.Equal(slices.Sorted(slices.Values(m.PeerURLs)), want) {
				s.id, s.clusterID = m.ID, ml.Header.ClusterId
				s.log.Info("joining a running cluster", "member-id", hexID(s.id), "cluster-id", hexID(s.clusterID), "via", p.name)
				return nil
			}
		}
		return fmt.Errorf("the running cluster %x has no member with peer URLs %s: add this member with MemberAdd (etcdctl member add %s --peer-urls=%s) first", ml.Header.ClusterId, strings.Join(s.peerURLs, ","), s.cfg.Name, strings.Join(s.peerURLs, ","))
	}
	return fmt.Errorf("--initial-cluster-state=existing: no member of --initial-cluster answered: %v", lastErr)
}
