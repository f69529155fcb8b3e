package mvcc

import (
	"encoding/binary"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/ballast-kv/ballast/store"
)

// lessor tracks leases. Grants, revokes and checkpoints arrive through
// apply; expiry times exist only on the leader (primary), which alone
// decides that a lease expired and proposes its revoke.
type lessor struct {
	mu      sync.Mutex
	leases  map[int64]*lease
	minTTL  int64
	now     func() time.Time
	primary bool
}

type lease struct {
	id        int64
	ttl       int64 // granted TTL, seconds
	remaining int64 // checkpointed remaining TTL, seconds; 0 = none
	expiry    time.Time
}

// forever is the expiry of leases on a non-leader.
var forever = time.Unix(math.MaxInt64>>1, 0)

func encodeLease(ttl, remaining int64) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(ttl))
	return binary.BigEndian.AppendUint64(b, uint64(remaining))
}

func loadLessor(db *store.DB, cfg Config) (*lessor, error) {
	l := &lessor{leases: map[int64]*lease{}, minTTL: cfg.MinLeaseTTL, now: cfg.Now}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{store.PrefixLease}, UpperBound: []byte{store.PrefixLease + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		v := it.Value()
		if len(v) != 16 || len(it.Key()) != 9 {
			return nil, errCorrupt
		}
		id := int64(store.Uint64(it.Key()[1:]))
		l.leases[id] = &lease{id: id, ttl: max(int64(store.Uint64(v)), l.minTTL), remaining: int64(store.Uint64(v[8:])), expiry: forever}
	}
	return l, it.Error()
}

// replace takes over the leases of fresh (loaded after a snapshot restore),
// keeping this member's role: a leader starts their expiry at once.
func (l *lessor) replace(fresh *lessor) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leases = fresh.leases
	if !l.primary {
		return
	}
	now := l.now()
	for _, le := range l.leases {
		ttl := le.ttl
		if le.remaining > 0 {
			ttl = le.remaining
		}
		le.expiry = now.Add(time.Duration(ttl) * time.Second)
	}
}

func (l *lessor) exists(id int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.leases[id]
	return ok
}

func (w *writer) leaseGrant(g *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	l := w.s.leases
	if g.TTL > MaxLeaseTTL {
		return nil, ErrLeaseTTLTooBig
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.leases[g.ID]; ok {
		return nil, ErrLeaseExists
	}
	ttl := max(g.TTL, l.minTTL)
	le := &lease{id: g.ID, ttl: ttl, expiry: forever}
	if l.primary {
		le.expiry = l.now().Add(time.Duration(ttl) * time.Second)
	}
	l.leases[g.ID] = le
	w.b.Set(leaseKey(g.ID), encodeLease(ttl, 0), nil)
	return &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: w.rev}, ID: g.ID, TTL: ttl}, nil
}

func (w *writer) leaseRevoke(id int64) (*pb.LeaseRevokeResponse, error) {
	l := w.s.leases
	if !l.exists(id) {
		return nil, ErrLeaseNotFound
	}
	keys, err := leaseKeys(w.r, id)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := w.tombstone(k); err != nil {
			return nil, err
		}
	}
	w.b.Delete(leaseKey(id), nil)
	p := attachedPrefix(id)
	w.b.DeleteRange(p, store.PrefixEnd(p), nil)
	l.mu.Lock()
	delete(l.leases, id)
	l.mu.Unlock()
	return &pb.LeaseRevokeResponse{Header: &pb.ResponseHeader{Revision: w.cur()}}, nil
}

func (w *writer) leaseCheckpoint(c *pb.LeaseCheckpointRequest) (*pb.LeaseCheckpointResponse, error) {
	l := w.s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, cp := range c.Checkpoints {
		le, ok := l.leases[cp.ID]
		if !ok {
			continue
		}
		le.remaining = cp.Remaining_TTL
		w.b.Set(leaseKey(cp.ID), encodeLease(le.ttl, le.remaining), nil)
	}
	return &pb.LeaseCheckpointResponse{Header: &pb.ResponseHeader{Revision: w.rev}}, nil
}

// Promote makes this member the one that expires leases: each lease gets
// its checkpointed remaining TTL (or its full TTL) plus extend, so a leader
// change neither expires a lease early nor loses its remaining time.
func (s *Store) Promote(extend time.Duration) {
	l := s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	l.primary = true
	now := l.now()
	for _, le := range l.leases {
		ttl := le.ttl
		if le.remaining > 0 {
			ttl = le.remaining
		}
		le.expiry = now.Add(time.Duration(ttl)*time.Second + extend)
	}
}

// Demote stops lease expiry on this member.
func (s *Store) Demote() {
	l := s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	l.primary = false
	for _, le := range l.leases {
		le.expiry = forever
	}
}

// LeaseRenew refreshes a lease on the leader and returns its TTL. clearCP
// says the lease had a checkpoint that a zero checkpoint must now clear.
func (s *Store) LeaseRenew(id int64) (ttl int64, clearCP bool, err error) {
	l := s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	le, ok := l.leases[id]
	if !ok || (l.primary && !l.now().Before(le.expiry)) {
		return 0, false, ErrLeaseNotFound
	}
	if l.primary {
		le.expiry = l.now().Add(time.Duration(le.ttl) * time.Second)
	}
	return le.ttl, le.remaining > 0, nil
}

// LeaseTimeToLive answers TimeToLive; an unknown lease gets TTL -1 as in etcd.
func (s *Store) LeaseTimeToLive(id int64, withKeys bool) (*pb.LeaseTimeToLiveResponse, error) {
	l := s.leases
	l.mu.Lock()
	le, ok := l.leases[id]
	var remaining, granted int64
	if ok {
		granted = le.ttl
		remaining = le.ttl
		if le.remaining > 0 {
			remaining = le.remaining
		}
		if l.primary {
			remaining = int64(le.expiry.Sub(l.now()) / time.Second)
			if remaining < 0 {
				remaining = 0
			}
		}
	}
	l.mu.Unlock()
	resp := &pb.LeaseTimeToLiveResponse{Header: &pb.ResponseHeader{Revision: s.Rev()}, ID: id, TTL: -1}
	if !ok {
		return resp, nil
	}
	resp.TTL, resp.GrantedTTL = remaining, granted
	if withKeys {
		v, release := s.readView()
		defer release()
		keys, err := leaseKeys(v.r, id)
		if err != nil {
			return nil, err
		}
		resp.Keys = keys
	}
	return resp, nil
}

// Leases lists lease ids, soonest expiry first.
func (s *Store) Leases() []int64 {
	l := s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	all := make([]*lease, 0, len(l.leases))
	for _, le := range l.leases {
		all = append(all, le)
	}
	sort.Slice(all, func(i, j int) bool {
		if !all[i].expiry.Equal(all[j].expiry) {
			return all[i].expiry.Before(all[j].expiry)
		}
		return all[i].id < all[j].id
	})
	ids := make([]int64, len(all))
	for i, le := range all {
		ids[i] = le.id
	}
	return ids
}

// ExpiredLeases returns up to max leases past their expiry (leader only).
func (s *Store) ExpiredLeases(limit int) []int64 {
	l := s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.primary {
		return nil
	}
	now := l.now()
	var ids []int64
	for id, le := range l.leases {
		if !now.Before(le.expiry) {
			ids = append(ids, id)
			if len(ids) >= limit {
				break
			}
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// LeaseCheckpoints returns the remaining TTL of every lease with more than
// minRemaining left, for the leader to persist through Raft.
func (s *Store) LeaseCheckpoints(minRemaining time.Duration) []*pb.LeaseCheckpoint {
	l := s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.primary {
		return nil
	}
	now := l.now()
	var cps []*pb.LeaseCheckpoint
	for id, le := range l.leases {
		left := le.expiry.Sub(now)
		if left > minRemaining {
			cps = append(cps, &pb.LeaseCheckpoint{ID: id, Remaining_TTL: int64(math.Ceil(left.Seconds()))})
		}
	}
	sort.Slice(cps, func(i, j int) bool { return cps[i].ID < cps[j].ID })
	return cps
}
