package mvcc

import (
	"errors"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func alarmReq(action pb.AlarmRequest_AlarmAction, member uint64, a pb.AlarmType) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: action, MemberID: member, Alarm: a}}
}

// TestAlarms: alarm bookkeeping (notes §9) and the capped applier that a
// NOSPACE alarm turns on (notes §10), across a restart.
func TestAlarms(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	ts.must(grantReq(1, 60))
	ts.must(putReq("a", "1"))
	nospace := &pb.AlarmMember{MemberID: 1, Alarm: pb.AlarmType_NOSPACE}
	corrupt := &pb.AlarmMember{MemberID: 2, Alarm: pb.AlarmType_CORRUPT}
	alarms := func(ms ...*pb.AlarmMember) *pb.AlarmResponse {
		return &pb.AlarmResponse{Header: &pb.ResponseHeader{Revision: ts.s.Rev()}, Alarms: ms}
	}
	steps := []struct {
		name string
		req  *pb.InternalRaftRequest
		want func() *pb.AlarmResponse
	}{
		{"get none", alarmReq(pb.AlarmRequest_GET, 0, pb.AlarmType_NONE), func() *pb.AlarmResponse { return alarms() }},
		{"activate", alarmReq(pb.AlarmRequest_ACTIVATE, 1, pb.AlarmType_NOSPACE), func() *pb.AlarmResponse { return alarms(nospace) }},
		{"activate again returns it", alarmReq(pb.AlarmRequest_ACTIVATE, 1, pb.AlarmType_NOSPACE), func() *pb.AlarmResponse { return alarms(nospace) }},
		{"activate NONE", alarmReq(pb.AlarmRequest_ACTIVATE, 1, pb.AlarmType_NONE), func() *pb.AlarmResponse { return alarms() }},
		{"activate corrupt", alarmReq(pb.AlarmRequest_ACTIVATE, 2, pb.AlarmType_CORRUPT), func() *pb.AlarmResponse { return alarms(corrupt) }},
		{"get all", alarmReq(pb.AlarmRequest_GET, 9, pb.AlarmType_NONE), func() *pb.AlarmResponse { return alarms(nospace, corrupt) }},
		{"get by type", alarmReq(pb.AlarmRequest_GET, 0, pb.AlarmType_CORRUPT), func() *pb.AlarmResponse { return alarms(corrupt) }},
		{"deactivate unknown", alarmReq(pb.AlarmRequest_DEACTIVATE, 3, pb.AlarmType_NOSPACE), func() *pb.AlarmResponse { return alarms() }},
		{"deactivate corrupt", alarmReq(pb.AlarmRequest_DEACTIVATE, 2, pb.AlarmType_CORRUPT), func() *pb.AlarmResponse { return alarms(corrupt) }},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			requireProtoEqual(t, "alarm response", ts.must(st.req), st.want())
		})
	}

	capped := []struct {
		name    string
		req     *pb.InternalRaftRequest
		wantErr error
	}{
		{"put", putReq("b", "1"), ErrNoSpace},
		{"txn with a put in a nested failure branch", txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opPut("b", "1")}})}}), ErrNoSpace},
		{"lease grant", grantReq(2, 60), ErrNoSpace},
		{"txn without puts", txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: []byte("a")})}}), nil},
		{"delete", delReq("zz", ""), nil},
		{"compaction", compactReq(1), nil},
		{"revoke", revokeReq(1), nil},
	}
	check := func(t *testing.T) {
		for _, c := range capped {
			t.Run(c.name, func(t *testing.T) {
				_, err := ts.do(c.req)
				if !errors.Is(err, c.wantErr) || (err == nil) != (c.wantErr == nil) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
			})
		}
	}
	t.Run("capped", check)
	t.Run("capped after restart", func(t *testing.T) {
		ts.reopen(Config{})
		if got := ts.s.Alarms(); len(got) != 1 || got[0].Alarm != pb.AlarmType_NOSPACE {
			t.Fatalf("Alarms() after restart = %v", got)
		}
		capped = capped[:4] // the rest already happened
		check(t)
	})
	t.Run("disarm", func(t *testing.T) {
		requireProtoEqual(t, "deactivate", ts.must(alarmReq(pb.AlarmRequest_DEACTIVATE, 1, pb.AlarmType_NOSPACE)), alarms(nospace))
		if _, err := ts.do(putReq("b", "1")); err != nil {
			t.Fatalf("put after disarm: %v", err)
		}
	})
}

// TestCorruptAlarmRefusesChanges: with a CORRUPT alarm active every change
// to keys, compaction and lease grants and revokes fail with
// ErrCorruptCluster, as etcd's corrupt applier does; reads, alarms and
// lease checkpoints still work, and disarming restores writes.
func TestCorruptAlarmRefusesChanges(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	ts.must(grantReq(1, 60))
	ts.must(putReq("a", "1"))
	ts.must(alarmReq(pb.AlarmRequest_ACTIVATE, 7, pb.AlarmType_CORRUPT))
	rev := ts.s.Rev()
	refused := map[string]*pb.InternalRaftRequest{
		"put":          putReq("b", "1"),
		"delete":       delReq("a", ""),
		"txn":          txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: []byte("a")})}}),
		"compaction":   compactReq(1),
		"lease grant":  grantReq(2, 60),
		"lease revoke": revokeReq(1),
	}
	check := func(t *testing.T) {
		for name, req := range refused {
			if _, err := ts.do(req); !errors.Is(err, ErrCorruptCluster) {
				t.Errorf("%s with CORRUPT active: err = %v, want %v", name, err, ErrCorruptCluster)
			}
		}
		if got := ts.s.Rev(); got != rev {
			t.Fatalf("revision moved from %d to %d while CORRUPT was active", rev, got)
		}
		resp, err := ts.s.Range(&pb.RangeRequest{Key: []byte("a")})
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "1" {
			t.Fatalf("range with CORRUPT active = %v, %v; want a=1", resp, err)
		}
	}
	t.Run("refused", check)
	t.Run("refused after restart", func(t *testing.T) {
		ts.reopen(Config{})
		check(t)
	})
	t.Run("disarm", func(t *testing.T) {
		ts.must(alarmReq(pb.AlarmRequest_DEACTIVATE, 7, pb.AlarmType_CORRUPT))
		if _, err := ts.do(putReq("b", "1")); err != nil {
			t.Fatalf("put after disarm: %v", err)
		}
	})
}
