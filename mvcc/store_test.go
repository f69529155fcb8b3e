package mvcc

import (
	"errors"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// TestRevisionsPutDeleteReput walks one history and checks, after every
// step, the revision, the response header and create/mod/version of every
// key, then reads each past revision again.
func TestRevisionsPutDeleteReput(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	if got := ts.s.Rev(); got != 1 {
		t.Fatalf("fresh store Rev() = %d, want 1 (etcd starts at 1)", got)
	}
	type state map[string]*mvccpb.KeyValue
	steps := []struct {
		name    string
		req     *pb.InternalRaftRequest
		wantHdr int64
		wantRev int64
		want    state // full live state after the step
	}{
		{"put a", putReq("a", "1"), 2, 2, state{"a": kv("a", "1", 2, 2, 1, 0)}},
		{"put a again", putReq("a", "2"), 3, 3, state{"a": kv("a", "2", 2, 3, 2, 0)}},
		{"put same value bumps", putReq("a", "2"), 4, 4, state{"a": kv("a", "2", 2, 4, 3, 0)}},
		{"put b", putReq("b", "1"), 5, 5, state{"a": kv("a", "2", 2, 4, 3, 0), "b": kv("b", "1", 5, 5, 1, 0)}},
		{"delete a", delReq("a", ""), 6, 6, state{"b": kv("b", "1", 5, 5, 1, 0)}},
		{"delete missing a: no bump", delReq("a", ""), 6, 6, state{"b": kv("b", "1", 5, 5, 1, 0)}},
		{"re-put a: new generation", putReq("a", "3"), 7, 7, state{"a": kv("a", "3", 7, 7, 1, 0), "b": kv("b", "1", 5, 5, 1, 0)}},
		{"put c", putReq("c", ""), 8, 8, state{"a": kv("a", "3", 7, 7, 1, 0), "b": kv("b", "1", 5, 5, 1, 0), "c": kv("c", "", 8, 8, 1, 0)}},
		{"delete [a, c): one revision", delReq("a", "c"), 9, 9, state{"c": kv("c", "", 8, 8, 1, 0)}},
		{"delete from-key", delReq("a", "\x00"), 10, 10, state{}},
		{"delete empty range: no bump", delReq("a", "\x00"), 10, 10, state{}},
	}
	history := map[int64]state{1: {}}
	all := &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}
	check := func(t *testing.T, rev int64, want state) {
		t.Helper()
		q := proto.Clone(all).(*pb.RangeRequest)
		q.Revision = rev
		resp := ts.rng(q)
		if int(resp.Count) != len(want) || len(resp.Kvs) != len(want) {
			t.Fatalf("at rev %d: count %d, %d kvs, want %d", rev, resp.Count, len(resp.Kvs), len(want))
		}
		for _, got := range resp.Kvs {
			requireProtoEqual(t, "kv "+string(got.Key), got, want[string(got.Key)])
		}
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			m := ts.must(st.req)
			hdr := m.(interface{ GetHeader() *pb.ResponseHeader }).GetHeader()
			if hdr.GetRevision() != st.wantHdr {
				t.Errorf("header revision %d, want %d", hdr.GetRevision(), st.wantHdr)
			}
			if got := ts.s.Rev(); got != st.wantRev {
				t.Errorf("Rev() = %d, want %d", got, st.wantRev)
			}
			history[st.wantRev] = st.want
			check(t, 0, st.want)
		})
	}
	t.Run("history", func(t *testing.T) {
		for rev, want := range history {
			check(t, rev, want)
		}
	})
	t.Run("one revision for a range delete", func(t *testing.T) {
		// Both deletes of "delete [a, c)" share revision 9, sub 0 and 1.
		ws := ts.s.NewWatchStream()
		defer ws.Close()
		if _, _, err := ws.Watch(0, []byte("a"), []byte("c"), 9, WatchOptions{}); err != nil {
			t.Fatal(err)
		}
		evs := collectEvents(t, ws, 2)
		for i, want := range []string{"a", "b"} {
			if evs[i].Type != mvccpb.DELETE || string(evs[i].Kv.Key) != want || evs[i].Kv.ModRevision != 9 {
				t.Errorf("event %d = %v, want DELETE %s at 9", i, evs[i], want)
			}
		}
	})
}

// TestPutOptions covers prev_kv, ignore_value and ignore_lease.
func TestPutOptions(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	ts.must(grantReq(7, 60))
	ts.must(putLeaseReq("k", "v1", 7)) // rev 2
	tests := []struct {
		name    string
		put     *pb.PutRequest
		wantErr error
		wantKV  *mvccpb.KeyValue // after the put
		wantPrv *mvccpb.KeyValue
	}{
		{"ignore_lease keeps lease 7", &pb.PutRequest{Key: []byte("k"), Value: []byte("v2"), IgnoreLease: true},
			nil, kv("k", "v2", 2, 3, 2, 7), nil},
		{"prev_kv, and a put without lease detaches", &pb.PutRequest{Key: []byte("k"), Value: []byte("v3"), PrevKv: true},
			nil, kv("k", "v3", 2, 4, 3, 0), kv("k", "v2", 2, 3, 2, 7)},
		{"re-attach lease", &pb.PutRequest{Key: []byte("k"), Value: []byte("v4"), Lease: 7},
			nil, kv("k", "v4", 2, 5, 4, 7), nil},
		{"ignore_value keeps value, lease 0 detaches", &pb.PutRequest{Key: []byte("k"), IgnoreValue: true, PrevKv: true},
			nil, kv("k", "v4", 2, 6, 5, 0), kv("k", "v4", 2, 5, 4, 7)},
		{"ignore_value on missing key", &pb.PutRequest{Key: []byte("nope"), IgnoreValue: true},
			ErrKeyNotFound, kv("k", "v4", 2, 6, 5, 0), nil},
		{"ignore_lease on missing key", &pb.PutRequest{Key: []byte("nope"), IgnoreLease: true},
			ErrKeyNotFound, kv("k", "v4", 2, 6, 5, 0), nil},
		{"unknown lease is checked before missing key", &pb.PutRequest{Key: []byte("nope"), IgnoreValue: true, Lease: 99},
			ErrLeaseNotFound, kv("k", "v4", 2, 6, 5, 0), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.s.Rev()
			m, err := ts.do(&pb.InternalRaftRequest{Put: tt.put})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if ts.s.Rev() != before {
					t.Fatalf("failed put changed revision %d -> %d", before, ts.s.Rev())
				}
			} else if err != nil {
				t.Fatal(err)
			} else {
				requireProtoEqual(t, "prev_kv", m.(*pb.PutResponse).PrevKv, tt.wantPrv)
			}
			requireProtoEqual(t, "kv", ts.get(string(tt.wantKV.Key)), tt.wantKV)
		})
	}
}

// TestTxnCompares evaluates every compare target and result against a fixed
// state, including missing keys and ranges (all keys must satisfy).
func TestTxnCompares(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	ts.must(grantReq(5, 60))
	ts.must(putReq("a", "1"))         // rev 2
	ts.must(putReq("b", "2"))         // rev 3
	ts.must(putLeaseReq("b", "3", 5)) // rev 4: b create 3, mod 4, version 2, lease 5
	ts.must(putReq("c", "1"))         // rev 5
	const (
		EQ = pb.Compare_EQUAL
		NE = pb.Compare_NOT_EQUAL
		GT = pb.Compare_GREATER
		LT = pb.Compare_LESS
	)
	rng := func(c *pb.Compare, end string) *pb.Compare { c.RangeEnd = []byte(end); return c }
	tests := []struct {
		name string
		cmps []*pb.Compare
		want bool
	}{
		{"no compares succeed", nil, true},
		{"value equal", []*pb.Compare{cmpValue("a", EQ, "1")}, true},
		{"value not equal", []*pb.Compare{cmpValue("a", NE, "1")}, false},
		{"value greater", []*pb.Compare{cmpValue("b", GT, "2")}, true},
		{"value less", []*pb.Compare{cmpValue("b", LT, "3")}, false},
		{"version", []*pb.Compare{cmpInt("b", pb.Compare_VERSION, EQ, 2)}, true},
		{"version greater", []*pb.Compare{cmpInt("b", pb.Compare_VERSION, GT, 1)}, true},
		{"create", []*pb.Compare{cmpInt("b", pb.Compare_CREATE, EQ, 3)}, true},
		{"create less", []*pb.Compare{cmpInt("b", pb.Compare_CREATE, LT, 3)}, false},
		{"mod", []*pb.Compare{cmpInt("b", pb.Compare_MOD, EQ, 4)}, true},
		{"mod not equal", []*pb.Compare{cmpInt("b", pb.Compare_MOD, NE, 4)}, false},
		{"lease", []*pb.Compare{cmpInt("b", pb.Compare_LEASE, EQ, 5)}, true},
		{"lease of key without lease", []*pb.Compare{cmpInt("a", pb.Compare_LEASE, EQ, 0)}, true},
		{"missing key: create == 0", []*pb.Compare{cmpInt("zz", pb.Compare_CREATE, EQ, 0)}, true},
		{"missing key: version == 0", []*pb.Compare{cmpInt("zz", pb.Compare_VERSION, EQ, 0)}, true},
		{"missing key: mod < 1", []*pb.Compare{cmpInt("zz", pb.Compare_MOD, LT, 1)}, true},
		{"missing key: value equal empty is false", []*pb.Compare{cmpValue("zz", EQ, "")}, false},
		{"missing key: value not equal is false", []*pb.Compare{cmpValue("zz", NE, "x")}, false},
		{"range: all keys satisfy", []*pb.Compare{rng(cmpInt("a", pb.Compare_VERSION, GT, 0), "d")}, true},
		{"range: one key fails", []*pb.Compare{rng(cmpValue("a", EQ, "1"), "d")}, false},
		{"range: value equal over a and c", []*pb.Compare{rng(cmpValue("a", EQ, "1"), "b")}, true},
		{"range from-key", []*pb.Compare{rng(cmpInt("b", pb.Compare_MOD, GT, 3), "\x00")}, true},
		{"empty range behaves like a missing key", []*pb.Compare{rng(cmpInt("x", pb.Compare_VERSION, EQ, 0), "z")}, true},
		{"empty range: value is false", []*pb.Compare{rng(cmpValue("x", NE, "q"), "z")}, false},
		{"compares are ANDed", []*pb.Compare{cmpValue("a", EQ, "1"), cmpValue("c", EQ, "2")}, false},
		{"target union of another kind compares as zero", []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VERSION, Result: GT, TargetUnion: &pb.Compare_Value{Value: []byte("9")}}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			txn := &pb.TxnRequest{
				Compare: tt.cmps,
				Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: []byte("a")})},
				Failure: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: []byte("b")}), opRange(&pb.RangeRequest{Key: []byte("c")})},
			}
			resp, err := ts.s.ReadTxn(txn)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Succeeded != tt.want {
				t.Fatalf("succeeded = %v, want %v", resp.Succeeded, tt.want)
			}
			wantOps := 1
			if !tt.want {
				wantOps = 2
			}
			if len(resp.Responses) != wantOps {
				t.Fatalf("%d responses, want %d (the chosen branch)", len(resp.Responses), wantOps)
			}
			// The same txn through Apply (with a write) decides the same way.
			wtxn := proto.Clone(txn).(*pb.TxnRequest)
			wtxn.Success = append(wtxn.Success, opPut("w", tt.name))
			wresp := ts.must(txnReq(wtxn)).(*pb.TxnResponse)
			if wresp.Succeeded != tt.want {
				t.Fatalf("applied txn succeeded = %v, want %v", wresp.Succeeded, tt.want)
			}
		})
	}
}

// TestTxnSemantics covers nested txns, read-your-writes inside a txn,
// response headers, sub-revisions and all-or-nothing failure.
func TestTxnSemantics(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	ts.must(putReq("a", "old")) // rev 2
	ts.must(putReq("d", "x"))   // rev 3
	ts.must(grantReq(1, 60))

	t.Run("nested compares see the state before the txn", func(t *testing.T) {
		txn := &pb.TxnRequest{
			Success: []*pb.RequestOp{
				opPut("a", "new"),
				opRange(&pb.RangeRequest{Key: []byte("a")}),
				opTxn(&pb.TxnRequest{
					Compare: []*pb.Compare{cmpValue("a", pb.Compare_EQUAL, "old")},
					Success: []*pb.RequestOp{opPut("b", "then"), opDel("d", "")},
					Failure: []*pb.RequestOp{opPut("b", "else")},
				}),
				opPut("c", "3"),
			},
		}
		resp := ts.must(txnReq(txn)).(*pb.TxnResponse)
		want := &pb.TxnResponse{
			Header:    &pb.ResponseHeader{Revision: 4},
			Succeeded: true,
			Responses: []*pb.ResponseOp{
				{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 4}}}},
				{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{
					Header: &pb.ResponseHeader{Revision: 4}, Count: 1, Kvs: []*mvccpb.KeyValue{kv("a", "new", 2, 4, 2, 0)}}}},
				{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: &pb.TxnResponse{
					Header: &pb.ResponseHeader{}, Succeeded: true,
					Responses: []*pb.ResponseOp{
						{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 4}}}},
						{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: &pb.DeleteRangeResponse{Header: &pb.ResponseHeader{Revision: 4}, Deleted: 1}}},
					}}}},
				{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 4}}}},
			},
		}
		requireProtoEqual(t, "txn response", resp, want)
		if ts.s.Rev() != 4 {
			t.Fatalf("Rev() = %d, want 4: one revision per txn", ts.s.Rev())
		}
		// Every change has its own sub-revision in execution order: the
		// event log holds all four, none overwritten.
		ws := ts.s.NewWatchStream()
		defer ws.Close()
		if _, _, err := ws.Watch(0, []byte{0}, []byte{}, 4, WatchOptions{}); err != nil {
			t.Fatal(err)
		}
		evs := collectEvents(t, ws, 4)
		for i, want := range []string{"PUT a", "PUT b", "DELETE d", "PUT c"} {
			if got := evs[i].Type.String() + " " + string(evs[i].Kv.Key); got != want || evs[i].Kv.ModRevision != 4 {
				t.Errorf("event %d = %s at %d, want %s at 4", i, got, evs[i].Kv.ModRevision, want)
			}
		}
		subs := countPrefix(t, ts.db, revKey(Rev{Main: 4})[:9])
		if subs != 4 {
			t.Errorf("event log has %d entries at revision 4, want 4", subs)
		}
	})

	t.Run("read-only txn does not bump", func(t *testing.T) {
		resp := ts.must(txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: []byte("a")}), opDel("missing", "")}})).(*pb.TxnResponse)
		if resp.Header.Revision != 4 || ts.s.Rev() != 4 {
			t.Fatalf("header %d, Rev() %d, want 4 for a txn that changed nothing", resp.Header.Revision, ts.s.Rev())
		}
	})

	failing := []struct {
		name    string
		txn     *pb.TxnRequest
		wantErr error
	}{
		{"unknown lease in chosen branch", &pb.TxnRequest{Success: []*pb.RequestOp{
			opPut("e", "1"),
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("f"), Lease: 42}}},
		}}, ErrLeaseNotFound},
		{"unknown lease in nested chosen branch", &pb.TxnRequest{Success: []*pb.RequestOp{
			opPut("e", "1"),
			opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("f"), Lease: 42}}}},
				Compare: []*pb.Compare{cmpValue("a", pb.Compare_EQUAL, "nope")}}),
		}}, ErrLeaseNotFound},
		{"ignore_value on missing key", &pb.TxnRequest{Success: []*pb.RequestOp{
			opPut("e", "1"),
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("zz"), IgnoreValue: true}}},
		}}, ErrKeyNotFound},
		{"range at a future revision", &pb.TxnRequest{Success: []*pb.RequestOp{
			opPut("e", "1"), opRange(&pb.RangeRequest{Key: []byte("a"), Revision: 5}),
		}}, ErrFutureRev},
	}
	for _, tt := range failing {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.hash(0)
			_, err := ts.do(txnReq(tt.txn))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if ts.s.Rev() != 4 || ts.get("e") != nil || ts.hash(0) != before {
				t.Fatalf("failed txn changed the store (rev %d, e=%v)", ts.s.Rev(), ts.get("e"))
			}
		})
	}

	t.Run("errors in the branch not taken are ignored", func(t *testing.T) {
		txn := &pb.TxnRequest{
			Compare: []*pb.Compare{cmpValue("a", pb.Compare_EQUAL, "new")},
			Success: []*pb.RequestOp{opPut("e", "1")},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("f"), Lease: 42}}}},
		}
		resp := ts.must(txnReq(txn)).(*pb.TxnResponse)
		if !resp.Succeeded || resp.Header.Revision != 5 {
			t.Fatalf("got succeeded=%v rev=%d, want true, 5", resp.Succeeded, resp.Header.Revision)
		}
	})

	t.Run("range after compaction", func(t *testing.T) {
		ts.must(compactReq(4))
		_, err := ts.do(txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("g", "1"), opRange(&pb.RangeRequest{Key: []byte("a"), Revision: 3})}}))
		if !errors.Is(err, ErrCompacted) {
			t.Fatalf("err = %v, want ErrCompacted", err)
		}
		resp := ts.must(txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("g", "1"), opRange(&pb.RangeRequest{Key: []byte("a"), Revision: 4})}})).(*pb.TxnResponse)
		rr := resp.Responses[1].GetResponseRange()
		requireProtoEqual(t, "range at compact revision", rr, &pb.RangeResponse{
			Header: &pb.ResponseHeader{Revision: 6}, Count: 1, Kvs: []*mvccpb.KeyValue{kv("a", "new", 2, 4, 2, 0)}})
	})
}

// TestApplySkipsAppliedEntries: entries at or below the applied index are
// skipped, also across a restart, and a batch straddling it applies only the
// new part.
func TestApplySkipsAppliedEntries(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	first := makeEntries(t, 1, putReq("a", "1"), putReq("b", "1"), grantReq(1, 10), delReq("a", ""), putReq("c", "1"))
	for _, r := range ts.s.Apply(first) {
		if err, ok := r.(error); ok {
			t.Fatal(err)
		}
	}
	ts.index = 5
	rev, hash := ts.s.Rev(), ts.hash(0)

	check := func(t *testing.T, wantRev int64, wantApplied uint64) {
		t.Helper()
		if ts.s.Rev() != wantRev || ts.s.AppliedIndex() != wantApplied {
			t.Fatalf("Rev %d applied %d, want %d, %d", ts.s.Rev(), ts.s.AppliedIndex(), wantRev, wantApplied)
		}
	}
	t.Run("same batch again", func(t *testing.T) {
		for i, r := range ts.s.Apply(first) {
			if r != nil {
				t.Fatalf("entry %d: result %v, want nil", i+1, r)
			}
		}
		check(t, rev, 5)
		if ts.hash(0) != hash {
			t.Fatal("re-applying changed HashKV")
		}
	})
	t.Run("straddling batch", func(t *testing.T) {
		es := append(first[3:], makeEntries(t, 6, putReq("d", "1"), grantReq(1, 10))...)
		res := ts.s.Apply(es)
		if res[0] != nil || res[1] != nil {
			t.Fatalf("old entries returned %v, %v", res[0], res[1])
		}
		if _, ok := res[2].(*pb.PutResponse); !ok {
			t.Fatalf("new put returned %v", res[2])
		}
		if !errors.Is(res[3].(error), ErrLeaseExists) {
			t.Fatalf("lease grant of existing id returned %v", res[3])
		}
		check(t, rev+1, 7)
	})
	t.Run("after restart", func(t *testing.T) {
		hash := ts.hash(0)
		ts.reopen(Config{})
		check(t, rev+1, 7)
		all := append(first, makeEntries(t, 6, putReq("d", "1"), grantReq(1, 10))...)
		for i, r := range ts.s.Apply(all) {
			if r != nil {
				t.Fatalf("entry %d: result %v after restart, want nil", i+1, r)
			}
		}
		check(t, rev+1, 7)
		if ts.hash(0) != hash {
			t.Fatal("replay after restart changed HashKV")
		}
	})
}

// TestRangeRevisionErrors checks future and compacted revisions, and that
// the compaction revision itself stays readable.
func TestRangeRevisionErrors(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	for i := range 5 {
		ts.must(putReq("k", string(rune('a'+i)))) // revs 2..6
	}
	ts.must(compactReq(4))
	tests := []struct {
		rev     int64
		wantErr error
		wantVal string
	}{
		{0, nil, "e"}, {-1, nil, "e"}, {6, nil, "e"}, {7, ErrFutureRev, ""},
		{5, nil, "d"}, {4, nil, "c"}, {3, ErrCompacted, ""}, {1, ErrCompacted, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("rev=%d", tt.rev), func(t *testing.T) {
			resp, err := ts.s.Range(&pb.RangeRequest{Key: []byte("k"), Revision: tt.rev})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("rev %d: err %v, want %v", tt.rev, err, tt.wantErr)
			}
			if err == nil && (len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != tt.wantVal || resp.Header.Revision != 6) {
				t.Fatalf("rev %d: %v, want value %q with header 6", tt.rev, resp, tt.wantVal)
			}
		})
	}
}
