package server

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

func vtSeedTxns() []*pb.TxnRequest {
	return []*pb.TxnRequest{
		{},
		{Compare: []*pb.Compare{{Key: []byte("a"), RangeEnd: []byte("\x00")}}, Success: ops(vtPut("a"), vtDel("b", "c")), Failure: ops(vtRange("a"))},
		{Success: ops(vtPut("a"), vtPut("a"))},
		{Success: ops(vtTxn(ops(vtDel("a", "")), nil), vtTxn(ops(vtPut("a")), nil))},
		{Success: ops(vtTxn(ops(vtPut("a")), ops(vtPut("a"))), vtDel("a", "\x00"))},
		{Success: ops(&pb.RequestOp{}, vtPut(""))},
		{Success: ops(vtTxn(ops(vtTxn(nil, ops(vtPut("x")))), nil), vtPut("x"))},
	}
}

// FuzzValidateTxnProto decodes arbitrary bytes as a TxnRequest, as the
// gRPC server would: validation must never panic and must decide exactly as
// etcd's checkTxnRequest + checkIntervals (the reference) do.
func FuzzValidateTxnProto(f *testing.F) {
	for _, txn := range vtSeedTxns() {
		b, err := proto.Marshal(txn)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(128))
		f.Add(b, uint8(1))
	}
	f.Add([]byte{0x12, 0x00}, uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, maxOps uint8) {
		txn := &pb.TxnRequest{}
		if err := proto.Unmarshal(data, txn); err != nil {
			return
		}
		got, want := checkTxn(txn, int(maxOps)), refCheckTxn(txn, int(maxOps))
		if got != want {
			t.Fatalf("checkTxn = %v, etcd reference = %v for %v", got, want, txn)
		}
		if got2 := checkTxn(txn, int(maxOps)); got2 != got {
			t.Fatalf("checkTxn is not deterministic: %v then %v", got, got2)
		}
	})
}

// FuzzValidateTxnBuilt builds txns from fuzz bytes over a tiny key space
// (many duplicates, overlaps, nested txns, empty ops and small budgets).
func FuzzValidateTxnBuilt(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	f.Add([]byte{0, 4, 0, 1, 0, 1, 3, 0, 2, 4, 0, 1, 1, 1, 0, 0, 0})
	f.Add([]byte{7, 2, 1, 2, 3, 3, 1, 3, 0, 2, 1, 6, 1, 2, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		maxOps := 1
		if len(data) > 0 {
			maxOps += int(data[0] % 8)
		}
		txn := vtBuild(data)
		got, want := checkTxn(txn, maxOps), refCheckTxn(txn, maxOps)
		if got != want {
			t.Fatalf("checkTxn = %v, etcd reference = %v for %v (maxOps %d)", got, want, txn, maxOps)
		}
	})
}

// FuzzValidateRequests decodes the same bytes as a Range, Put and
// DeleteRange request.
func FuzzValidateRequests(f *testing.F) {
	for _, m := range []proto.Message{
		&pb.RangeRequest{Key: []byte("a"), SortOrder: 2, SortTarget: 4},
		&pb.RangeRequest{Key: []byte("a"), SortOrder: 3},
		&pb.PutRequest{Key: []byte("a"), IgnoreValue: true, Value: []byte("v")},
		&pb.PutRequest{Key: []byte("a"), IgnoreLease: true, Lease: 5},
		&pb.DeleteRangeRequest{RangeEnd: []byte("z")},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &pb.RangeRequest{}
		if proto.Unmarshal(data, r) == nil {
			if got, want := checkRange(r), refCheckRange(r); got != want {
				t.Fatalf("checkRange(%v) = %v, want %v", r, got, want)
			}
		}
		p := &pb.PutRequest{}
		if proto.Unmarshal(data, p) == nil {
			if got, want := checkPut(p), refCheckPut(p); got != want {
				t.Fatalf("checkPut(%v) = %v, want %v", p, got, want)
			}
		}
		d := &pb.DeleteRangeRequest{}
		if proto.Unmarshal(data, d) == nil {
			if err := checkDelete(d); (err == nil) != (len(d.Key) != 0) {
				t.Fatalf("checkDelete(%v) = %v", d, err)
			}
		}
	})
}
