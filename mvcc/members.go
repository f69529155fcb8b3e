package mvcc

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/ballast-kv/ballast/store"
)

// The member table: what etcd's MemberList shows about each member (name,
// peer and client URLs, whether it was added as a learner). Raft's own
// configuration says who votes; this table is the rest, replicated through
// the log so that every member answers MemberList alike.
//
// Member changes are Ballast's own log entries, told apart from etcd's
// InternalRaftRequest by a first byte of 0, which no protobuf message
// begins with (field number 0 does not exist).

// MemberOp is a change to the member table.
type MemberOp byte

const (
	MemberAdd     MemberOp = 1 // the whole record
	MemberPeerURL MemberOp = 2 // peer URLs only (etcd's MemberUpdate)
	MemberAttrs   MemberOp = 3 // name and client URLs, published by the member itself
	MemberPromote MemberOp = 4 // no longer a learner
	MemberRemove  MemberOp = 5
)

// EncodeMemberOp makes the log entry for a member change.
func EncodeMemberOp(op MemberOp, m *pb.Member) ([]byte, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return append([]byte{0, byte(op)}, b...), nil
}

func isMemberOp(data []byte) bool { return len(data) >= 2 && data[0] == 0 }

func memberKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{store.PrefixMember}, id)
}

// applyMemberOp returns the member's record after the change (only the id
// after a removal), or an error for an unknown member.
func (w *writer) applyMemberOp(data []byte) (*pb.Member, error) {
	op := MemberOp(data[1])
	in := &pb.Member{}
	if err := proto.Unmarshal(data[2:], in); err != nil {
		return nil, fmt.Errorf("mvcc: undecodable member change: %w", err)
	}
	cur, err := getMember(w.r, in.ID)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		if op != MemberAdd && op != MemberAttrs {
			return nil, ErrMemberNotFound
		}
		cur = &pb.Member{ID: in.ID}
	}
	switch op {
	case MemberAdd:
		cur = in
	case MemberPeerURL:
		cur.PeerURLs = in.PeerURLs
	case MemberAttrs:
		cur.Name, cur.ClientURLs = in.Name, in.ClientURLs
	case MemberPromote:
		cur.IsLearner = false
	case MemberRemove:
		w.b.Delete(memberKey(in.ID), nil)
		return &pb.Member{ID: in.ID}, nil
	default:
		return nil, fmt.Errorf("mvcc: unknown member change %d", op)
	}
	b, err := proto.Marshal(cur)
	if err != nil {
		return nil, err
	}
	w.b.Set(memberKey(cur.ID), b, nil)
	return cur, nil
}

func getMember(r pebble.Reader, id uint64) (*pb.Member, error) {
	b, err := store.GetCopy(r, memberKey(id))
	if err == store.ErrNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m := &pb.Member{}
	return m, proto.Unmarshal(b, m)
}

// Members returns the member table ordered by id.
func (s *Store) Members() ([]*pb.Member, error) {
	v, release := s.readView()
	defer release()
	it, err := v.r.NewIter(&pebble.IterOptions{LowerBound: []byte{store.PrefixMember}, UpperBound: []byte{store.PrefixMember + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []*pb.Member
	for ok := it.First(); ok; ok = it.Next() {
		m := &pb.Member{}
		if err := proto.Unmarshal(it.Value(), m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, it.Error() // big-endian ids: already in id order
}
