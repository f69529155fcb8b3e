package mvcc

import (
	"encoding/binary"
	"encoding/json"
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
	MemberLabels  MemberOp = 6 // region and zone, published by the member itself (JSON Labels)
)

// Labels place a member: its region and zone. They are Ballast's own, so
// they live beside etcd's member record rather than in it.
type Labels struct {
	ID     uint64 `json:"id"`
	Region string `json:"region,omitempty"`
	Zone   string `json:"zone,omitempty"`
}

// EncodeMemberLabels makes the log entry that sets a member's labels.
func EncodeMemberLabels(l Labels) ([]byte, error) {
	b, err := json.Marshal(l)
	if err != nil {
		return nil, err
	}
	return append([]byte{0, byte(MemberLabels)}, b...), nil
}

func labelsKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{store.PrefixLabels}, id)
}

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
	if op == MemberLabels {
		var l Labels
		if err := json.Unmarshal(data[2:], &l); err != nil {
			return nil, fmt.Errorf("mvcc: undecodable member labels: %w", err)
		}
		w.b.Set(labelsKey(l.ID), data[2:], nil)
		return &pb.Member{ID: l.ID}, nil
	}
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
		w.b.Delete(labelsKey(in.ID), nil)
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

// MemberLabels returns every member's labels by id.
func (s *Store) MemberLabels() (map[uint64]Labels, error) {
	v, release := s.readView()
	defer release()
	it, err := v.r.NewIter(&pebble.IterOptions{LowerBound: []byte{store.PrefixLabels}, UpperBound: []byte{store.PrefixLabels + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := map[uint64]Labels{}
	for ok := it.First(); ok; ok = it.Next() {
		var l Labels
		if err := json.Unmarshal(it.Value(), &l); err != nil {
			return nil, fmt.Errorf("mvcc: member labels: %w", err)
		}
		out[l.ID] = l
	}
	return out, it.Error()
}
