package mvcc

import (
	"errors"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

func leaseKeysOf(t *testing.T, s *Store, id int64) []string {
	t.Helper()
	resp, err := s.LeaseTimeToLive(id, true)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, k := range resp.Keys {
		keys = append(keys, string(k))
	}
	slices.Sort(keys)
	return keys
}

func TestLeaseGrantRevoke(t *testing.T) {
	ts := openTestStore(t, nil, Config{MinLeaseTTL: 5})
	steps := []struct {
		name    string
		req     *pb.InternalRaftRequest
		wantErr error
		want    proto.Message
	}{
		{"ttl below minimum is raised", grantReq(1, 1), nil, &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: 1}, ID: 1, TTL: 5}},
		{"negative ttl is raised", grantReq(4, -5), nil, &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: 1}, ID: 4, TTL: 5}},
		{"ttl just above minimum", grantReq(5, 6), nil, &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: 1}, ID: 5, TTL: 6}},
		{"ttl kept", grantReq(2, 100), nil, &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: 1}, ID: 2, TTL: 100}},
		{"existing id", grantReq(1, 10), ErrLeaseExists, nil},
		{"ttl too large", grantReq(3, MaxLeaseTTL+1), ErrLeaseTTLTooBig, nil},
		{"too large is checked before existence", grantReq(1, MaxLeaseTTL+1), ErrLeaseTTLTooBig, nil},
		{"max ttl", grantReq(3, MaxLeaseTTL), nil, &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: 1}, ID: 3, TTL: MaxLeaseTTL}},
		{"put with unknown lease", putLeaseReq("x", "1", 99), ErrLeaseNotFound, nil},
		{"put a on 1", putLeaseReq("a", "1", 1), nil, &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 2}}},
		{"put b on 1", putLeaseReq("b", "1", 1), nil, &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 3}}},
		{"put c on 1", putLeaseReq("c", "1", 1), nil, &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 4}}},
		{"put d on 2", putLeaseReq("d", "1", 2), nil, &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 5}}},
		{"move b to 2", putLeaseReq("b", "2", 2), nil, &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 6}}},
		{"put e on 2", putLeaseReq("e", "1", 2), nil, &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 7}}},
		{"delete e detaches it", delReq("e", ""), nil, &pb.DeleteRangeResponse{Header: &pb.ResponseHeader{Revision: 8}, Deleted: 1}},
		{"revoke 1 deletes a and c in one revision", revokeReq(1), nil, &pb.LeaseRevokeResponse{Header: &pb.ResponseHeader{Revision: 9}}},
		{"revoke 1 again", revokeReq(1), ErrLeaseNotFound, nil},
		{"put on revoked lease", putLeaseReq("a", "1", 1), ErrLeaseNotFound, nil},
		{"revoke without keys: no bump", revokeReq(4), nil, &pb.LeaseRevokeResponse{Header: &pb.ResponseHeader{Revision: 9}}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := ts.s.Rev()
			got, err := ts.do(st.req)
			if st.wantErr != nil {
				if !errors.Is(err, st.wantErr) {
					t.Fatalf("err = %v, want %v", err, st.wantErr)
				}
				if ts.s.Rev() != before {
					t.Fatalf("failed request moved the revision %d -> %d", before, ts.s.Rev())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			requireProtoEqual(t, "response", got, st.want)
		})
	}
	t.Run("state after revoke", func(t *testing.T) {
		resp := ts.rng(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z")})
		var keys []string
		for _, kv := range resp.Kvs {
			keys = append(keys, string(kv.Key))
		}
		if !slices.Equal(keys, []string{"b", "d"}) {
			t.Fatalf("live keys %q, want [b d]", keys)
		}
		if got := leaseKeysOf(t, ts.s, 2); !slices.Equal(got, []string{"b", "d"}) {
			t.Fatalf("lease 2 keys %q, want [b d]", got)
		}
		ttl, err := ts.s.LeaseTimeToLive(1, true)
		if err != nil || ttl.TTL != -1 || len(ttl.Keys) != 0 {
			t.Fatalf("TimeToLive of revoked lease = %v, %v; want TTL -1", ttl, err)
		}
		// The revoke's deletes share revision 9, in key order.
		ws := ts.s.NewWatchStream()
		defer ws.Close()
		if _, _, err := ws.Watch(0, []byte("a"), []byte{}, 9, WatchOptions{}); err != nil {
			t.Fatal(err)
		}
		requireEvents(t, collectEvents(t, ws, 2), []*mvccpb.Event{
			{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("a"), ModRevision: 9}},
			{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("c"), ModRevision: 9}},
		})
	})
	t.Run("survives restart", func(t *testing.T) {
		ts.reopen(Config{MinLeaseTTL: 7})
		ttl, err := ts.s.LeaseTimeToLive(5, false)
		if err != nil || ttl.GrantedTTL != 7 {
			t.Fatalf("lease 5 after restart with a larger minimum: %v, %v; want granted TTL 7", ttl, err)
		}
		if got := ts.s.Leases(); !slices.Equal(sortedIDs(got), []int64{2, 3, 5}) {
			t.Fatalf("Leases() = %v, want 2, 3, 5", got)
		}
		resp := ts.must(revokeReq(2)).(*pb.LeaseRevokeResponse)
		if resp.Header.Revision != 10 || ts.get("b") != nil || ts.get("d") != nil {
			t.Fatalf("revoke after restart: rev %d, b=%v d=%v", resp.Header.Revision, ts.get("b"), ts.get("d"))
		}
	})
}

func sortedIDs(ids []int64) []int64 {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return ids
}

// TestLeaseExpiry drives expiry with an injected clock: only a promoted
// member expires leases, renewals push expiry, checkpoints carry remaining
// TTL across a leader change.
func TestLeaseExpiry(t *testing.T) {
	clock := newFakeClock()
	ts := openTestStore(t, nil, Config{MinLeaseTTL: 2, Now: clock.Now})
	ts.must(grantReq(1, 10))
	ts.must(grantReq(2, 20))
	ts.must(putLeaseReq("k1", "v", 1))
	ts.must(putLeaseReq("k2", "v", 2))

	expired := func(t *testing.T, want ...int64) {
		t.Helper()
		if got := ts.s.ExpiredLeases(100); !slices.Equal(got, want) {
			t.Fatalf("ExpiredLeases at +%v = %v, want %v", clock.Now().Sub(time.Unix(1_700_000_000, 0)), got, want)
		}
	}

	t.Run("follower never expires", func(t *testing.T) {
		clock.Advance(time.Hour)
		expired(t)
		if ttl, _, err := ts.s.LeaseRenew(1); err != nil || ttl != 10 {
			t.Fatalf("LeaseRenew on follower = %d, %v", ttl, err)
		}
	})

	t.Run("leader", func(t *testing.T) {
		t0 := clock.Now()
		ts.s.Promote(time.Second) // 1 expires at t0+11s, 2 at t0+21s
		at := func(d time.Duration) { clock.Advance(t0.Add(d).Sub(clock.Now())) }

		at(5 * time.Second)
		if ttl, err := ts.s.LeaseTimeToLive(2, false); err != nil || ttl.TTL != 16 || ttl.GrantedTTL != 20 {
			t.Fatalf("TimeToLive(2) = %v, %v; want TTL 16 granted 20", ttl, err)
		}
		at(11*time.Second - time.Millisecond)
		expired(t)
		at(11 * time.Second)
		expired(t, 1)
		if _, _, err := ts.s.LeaseRenew(1); !errors.Is(err, ErrLeaseNotFound) {
			t.Fatalf("renewing an expired lease: %v, want ErrLeaseNotFound", err)
		}
		if ttl, _, err := ts.s.LeaseRenew(2); err != nil || ttl != 20 {
			t.Fatalf("LeaseRenew(2) = %d, %v", ttl, err)
		} // 2 now expires at t0+31s
		at(21 * time.Second)
		expired(t, 1)
		at(31*time.Second - time.Millisecond)
		expired(t, 1)
		if got := ts.s.ExpiredLeases(1); len(got) != 1 {
			t.Fatalf("ExpiredLeases(1) returned %d ids", len(got))
		}
		at(31 * time.Second)
		expired(t, 1, 2)

		// The leader revokes what expired, through apply.
		for _, id := range ts.s.ExpiredLeases(100) {
			ts.must(revokeReq(id))
		}
		expired(t)
		if ts.get("k1") != nil || ts.get("k2") != nil {
			t.Fatal("keys of expired leases survived their revoke")
		}
	})

	t.Run("checkpoint survives leader change", func(t *testing.T) {
		ts.must(grantReq(3, 60))
		ts.must(grantReq(4, 10))
		ts.must(&pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{Checkpoints: []*pb.LeaseCheckpoint{{ID: 3, Remaining_TTL: 3}, {ID: 77, Remaining_TTL: 1}}}})
		ts.s.Demote()
		clock.Advance(time.Hour)
		expired(t)
		ts.s.Promote(0)
		if got := ts.s.Leases(); !slices.Equal(got, []int64{3, 4}) {
			t.Fatalf("Leases() = %v, want soonest expiry first [3 4]", got)
		}
		clock.Advance(3 * time.Second)
		expired(t, 3)
		// The checkpoint is durable.
		ts.reopen(Config{MinLeaseTTL: 2, Now: clock.Now})
		ts.s.Promote(0)
		clock.Advance(3 * time.Second)
		expired(t, 3)
	})
}
