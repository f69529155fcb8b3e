package server

import (
	"errors"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Builders, prefixed vt to stay out of the way of other tests in server.

func vtPut(k string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k)}}}
}

func vtDel(k, end string) *pb.RequestOp {
	d := &pb.DeleteRangeRequest{Key: []byte(k)}
	if end != "" {
		d.RangeEnd = []byte(end)
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}}
}

func vtRange(k string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(k)}}}
}

func vtTxn(success, failure []*pb.RequestOp) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: success, Failure: failure}}}
}

func vtOps(n int, op func(i int) *pb.RequestOp) []*pb.RequestOp {
	out := make([]*pb.RequestOp, n)
	for i := range out {
		out[i] = op(i)
	}
	return out
}

func vtCompares(n int) []*pb.Compare {
	out := make([]*pb.Compare, n)
	for i := range out {
		out[i] = &pb.Compare{Key: []byte(fmt.Sprint("c", i))}
	}
	return out
}

func ops(o ...*pb.RequestOp) []*pb.RequestOp { return o }

func TestValidateRange(t *testing.T) {
	tests := []struct {
		name string
		r    *pb.RangeRequest
		want error
	}{
		{"ok", &pb.RangeRequest{Key: []byte("a")}, nil},
		{"range end before key is accepted", &pb.RangeRequest{Key: []byte("b"), RangeEnd: []byte("a")}, nil},
		{"negative limit and revision are accepted", &pb.RangeRequest{Key: []byte("a"), Limit: -1, Revision: -5}, nil},
		{"empty key", &pb.RangeRequest{RangeEnd: []byte("b")}, rpctypes.ErrGRPCEmptyKey},
		{"all sort values", &pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_VALUE}, nil},
		{"unknown sort order", &pb.RangeRequest{Key: []byte("a"), SortOrder: 3}, rpctypes.ErrGRPCInvalidSortOption},
		{"negative sort order", &pb.RangeRequest{Key: []byte("a"), SortOrder: -1}, rpctypes.ErrGRPCInvalidSortOption},
		{"unknown sort target", &pb.RangeRequest{Key: []byte("a"), SortTarget: 5}, rpctypes.ErrGRPCInvalidSortOption},
		{"empty key checked first", &pb.RangeRequest{SortOrder: 9}, rpctypes.ErrGRPCEmptyKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkRange(tt.r); !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("checkRange = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestValidatePutDelete(t *testing.T) {
	tests := []struct {
		name string
		put  *pb.PutRequest
		want error
	}{
		{"ok", &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), Lease: 3}, nil},
		{"empty key", &pb.PutRequest{Value: []byte("v")}, rpctypes.ErrGRPCEmptyKey},
		{"ignore_value without value", &pb.PutRequest{Key: []byte("a"), IgnoreValue: true}, nil},
		{"ignore_value with value", &pb.PutRequest{Key: []byte("a"), IgnoreValue: true, Value: []byte("v")}, rpctypes.ErrGRPCValueProvided},
		{"ignore_lease with lease", &pb.PutRequest{Key: []byte("a"), IgnoreLease: true, Lease: 1}, rpctypes.ErrGRPCLeaseProvided},
		{"value checked before lease", &pb.PutRequest{Key: []byte("a"), IgnoreValue: true, Value: []byte("v"), IgnoreLease: true, Lease: 1}, rpctypes.ErrGRPCValueProvided},
		{"empty key checked first", &pb.PutRequest{IgnoreValue: true, Value: []byte("v")}, rpctypes.ErrGRPCEmptyKey},
	}
	for _, tt := range tests {
		t.Run("put/"+tt.name, func(t *testing.T) {
			if err := checkPut(tt.put); !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("checkPut = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("delete", func(t *testing.T) {
		if err := checkDelete(&pb.DeleteRangeRequest{RangeEnd: []byte("z")}); !errors.Is(err, rpctypes.ErrGRPCEmptyKey) {
			t.Fatalf("checkDelete(empty key) = %v", err)
		}
		if err := checkDelete(&pb.DeleteRangeRequest{Key: []byte("z"), RangeEnd: []byte("a")}); err != nil {
			t.Fatalf("checkDelete(inverted range) = %v, want nil (etcd accepts it)", err)
		}
	})
}

// TestValidateTxn follows etcd's checkTxnRequest and checkIntervals,
// including the quirks listed in /work/notes/etcd-semantics.md §1.
func TestValidateTxn(t *testing.T) {
	const maxOps = 128
	ranges := func(n int) []*pb.RequestOp {
		return vtOps(n, func(i int) *pb.RequestOp { return vtRange(fmt.Sprint("r", i)) })
	}
	tests := []struct {
		name string
		txn  *pb.TxnRequest
		want error
	}{
		{"empty", &pb.TxnRequest{}, nil},
		{"128 compares", &pb.TxnRequest{Compare: vtCompares(128)}, nil},
		{"129 compares", &pb.TxnRequest{Compare: vtCompares(129)}, rpctypes.ErrGRPCTooManyOps},
		{"129 success ops", &pb.TxnRequest{Success: ranges(129)}, rpctypes.ErrGRPCTooManyOps},
		{"129 failure ops", &pb.TxnRequest{Failure: ranges(129)}, rpctypes.ErrGRPCTooManyOps},
		{"the max, not the sum, counts", &pb.TxnRequest{Compare: vtCompares(128), Success: ranges(128), Failure: ranges(128)}, nil},
		{"nested budget is what the parent leaves", &pb.TxnRequest{Success: append(ranges(100), vtTxn(ranges(27), nil))}, nil},
		{"nested over budget", &pb.TxnRequest{Success: append(ranges(100), vtTxn(ranges(28), nil))}, rpctypes.ErrGRPCTooManyOps},
		{"nested budget from a wide parent branch", &pb.TxnRequest{Compare: vtCompares(120), Success: ops(vtTxn(nil, ranges(9)))}, rpctypes.ErrGRPCTooManyOps},
		{"compare with empty key", &pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("a")}, {}}}, rpctypes.ErrGRPCEmptyKey},
		{"compare range_end is not checked", &pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("b"), RangeEnd: []byte("a")}}}, nil},
		{"too many ops checked before empty compare key", &pb.TxnRequest{Compare: append(vtCompares(129), &pb.Compare{})}, rpctypes.ErrGRPCTooManyOps},
		{"empty op", &pb.TxnRequest{Success: ops(vtPut("a"), &pb.RequestOp{})}, rpctypes.ErrGRPCKeyNotFound},
		{"empty op in failure", &pb.TxnRequest{Failure: ops(&pb.RequestOp{})}, rpctypes.ErrGRPCKeyNotFound},
		{"empty op in nested txn", &pb.TxnRequest{Success: ops(vtTxn(nil, ops(&pb.RequestOp{})))}, rpctypes.ErrGRPCKeyNotFound},
		{"range with empty key", &pb.TxnRequest{Success: ops(vtRange(""))}, rpctypes.ErrGRPCEmptyKey},
		{"range with bad sort", &pb.TxnRequest{Failure: ops(&pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), SortTarget: 7}}})}, rpctypes.ErrGRPCInvalidSortOption},
		{"put with empty key", &pb.TxnRequest{Success: ops(vtPut(""))}, rpctypes.ErrGRPCEmptyKey},
		{"put with ignored value", &pb.TxnRequest{Success: ops(&pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("a"), IgnoreValue: true, Value: []byte("x")}}})}, rpctypes.ErrGRPCValueProvided},
		{"delete with empty key", &pb.TxnRequest{Success: ops(vtDel("", "z"))}, rpctypes.ErrGRPCEmptyKey},
		{"op errors come before duplicates", &pb.TxnRequest{Success: ops(vtPut("a"), vtPut("a")), Failure: ops(vtPut(""))}, rpctypes.ErrGRPCEmptyKey},

		{"two puts of one key", &pb.TxnRequest{Success: ops(vtPut("a"), vtPut("a"))}, rpctypes.ErrGRPCDuplicateKey},
		{"two puts in failure", &pb.TxnRequest{Failure: ops(vtPut("a"), vtRange("x"), vtPut("a"))}, rpctypes.ErrGRPCDuplicateKey},
		{"put and point delete", &pb.TxnRequest{Success: ops(vtDel("a", ""), vtPut("a"))}, rpctypes.ErrGRPCDuplicateKey},
		{"put inside a deleted range", &pb.TxnRequest{Success: ops(vtPut("b"), vtDel("a", "c"))}, rpctypes.ErrGRPCDuplicateKey},
		{"put at a range's end", &pb.TxnRequest{Success: ops(vtPut("c"), vtDel("a", "c"))}, nil},
		{"put at a range's start", &pb.TxnRequest{Success: ops(vtPut("a"), vtDel("a", "c"))}, rpctypes.ErrGRPCDuplicateKey},
		{"overlapping deletes are fine", &pb.TxnRequest{Success: ops(vtDel("a", "c"), vtDel("b", "d"), vtDel("b", ""))}, nil},
		{"from-key delete never conflicts", &pb.TxnRequest{Success: ops(vtDel("a", "\x00"), vtPut("a"), vtPut("b"))}, nil},
		{"inverted delete never conflicts", &pb.TxnRequest{Success: ops(vtDel("c", "a"), vtPut("b"), vtPut("c"))}, nil},
		{"ranges never conflict", &pb.TxnRequest{Success: ops(vtRange("a"), vtPut("a"), vtRange("a"))}, nil},
		{"compare keys never conflict", &pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("a")}}, Success: ops(vtPut("a"))}, nil},
		{"success and failure are independent", &pb.TxnRequest{Success: ops(vtPut("a"), vtDel("b", "")), Failure: ops(vtPut("a"), vtPut("b"))}, nil},
		{"then and else of one nested txn may share a key", &pb.TxnRequest{Success: ops(vtTxn(ops(vtPut("a")), ops(vtPut("a"))))}, nil},
		{"two nested txns put one key", &pb.TxnRequest{Success: ops(vtTxn(ops(vtPut("a")), nil), vtTxn(nil, ops(vtPut("a"))))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested put vs outer put", &pb.TxnRequest{Success: ops(vtPut("a"), vtTxn(nil, ops(vtPut("a"))))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested put vs outer delete", &pb.TxnRequest{Success: ops(vtDel("a", "b"), vtTxn(ops(vtPut("a")), nil))}, rpctypes.ErrGRPCDuplicateKey},
		{"outer put vs nested delete", &pb.TxnRequest{Success: ops(vtTxn(ops(vtDel("a", "")), nil), vtPut("a"))}, rpctypes.ErrGRPCDuplicateKey},
		{"outer put vs nested else delete", &pb.TxnRequest{Success: ops(vtPut("b"), vtTxn(nil, ops(vtDel("a", "c"))))}, rpctypes.ErrGRPCDuplicateKey},
		{"later sibling put vs earlier sibling delete", &pb.TxnRequest{Success: ops(vtTxn(ops(vtDel("a", "")), nil), vtTxn(ops(vtPut("a")), nil))}, rpctypes.ErrGRPCDuplicateKey},
		{"earlier sibling put vs later sibling delete", &pb.TxnRequest{Success: ops(vtTxn(ops(vtPut("a")), nil), vtTxn(ops(vtDel("a", "")), nil))}, nil},
		{"nested put vs delete in the same nested branch", &pb.TxnRequest{Success: ops(vtTxn(ops(vtPut("a"), vtDel("a", "")), nil))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested then put vs nested else delete", &pb.TxnRequest{Success: ops(vtTxn(ops(vtPut("a")), ops(vtDel("a", ""))))}, nil},
		{"deeply nested conflict", &pb.TxnRequest{Success: ops(vtPut("z"), vtTxn(ops(vtTxn(nil, ops(vtTxn(ops(vtPut("z")), nil)))), nil))}, rpctypes.ErrGRPCDuplicateKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkTxn(tt.txn, maxOps)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("checkTxn = %v, want %v", err, tt.want)
			}
			// The independent reference agrees on every case.
			if ref := refCheckTxn(tt.txn, maxOps); ref != tt.want {
				t.Fatalf("reference = %v, want %v (the reference is wrong)", ref, tt.want)
			}
		})
	}
}

// refCheckTxn is an independent transcription of etcd v3.7.3's
// checkTxnRequest and checkIntervals (server/etcdserver/api/v3rpc/key.go),
// with a list standing in for adt.IntervalTree and its affine string
// intervals ("" as an end means +infinity).
func refCheckTxn(r *pb.TxnRequest, maxTxnOps int) error {
	if err := refCheckTxnRequest(r, maxTxnOps); err != nil {
		return err
	}
	if _, _, err := refCheckIntervals(r.Success); err != nil {
		return err
	}
	_, _, err := refCheckIntervals(r.Failure)
	return err
}

func refCheckRange(r *pb.RangeRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if r.SortOrder < 0 || r.SortOrder > 2 || r.SortTarget < 0 || r.SortTarget > 4 {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

func refCheckPut(r *pb.PutRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if r.IgnoreValue && len(r.Value) != 0 {
		return rpctypes.ErrGRPCValueProvided
	}
	if r.IgnoreLease && r.Lease != 0 {
		return rpctypes.ErrGRPCLeaseProvided
	}
	return nil
}

func refCheckTxnRequest(r *pb.TxnRequest, maxTxnOps int) error {
	opc := len(r.Compare)
	if opc < len(r.Success) {
		opc = len(r.Success)
	}
	if opc < len(r.Failure) {
		opc = len(r.Failure)
	}
	if opc > maxTxnOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.Compare {
		if len(c.Key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, u := range append(append([]*pb.RequestOp(nil), r.Success...), r.Failure...) {
		var err error
		switch uv := u.Request.(type) {
		case *pb.RequestOp_RequestRange:
			err = refCheckRange(uv.RequestRange)
		case *pb.RequestOp_RequestPut:
			err = refCheckPut(uv.RequestPut)
		case *pb.RequestOp_RequestDeleteRange:
			if len(uv.RequestDeleteRange.Key) == 0 {
				err = rpctypes.ErrGRPCEmptyKey
			}
		case *pb.RequestOp_RequestTxn:
			err = refCheckTxnRequest(uv.RequestTxn, maxTxnOps-opc)
		default:
			err = rpctypes.ErrGRPCKeyNotFound
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// refAffineLess compares affine strings, where "" is +infinity.
func refAffineLess(a, b string) bool {
	switch {
	case a == "":
		return false
	case b == "":
		return true
	}
	return a < b
}

type refIvl struct{ begin, end string }

func (iv refIvl) overlaps(o refIvl) bool {
	return refAffineLess(iv.begin, o.end) && refAffineLess(o.begin, iv.end)
}

func refPoint(k string) refIvl { return refIvl{k, k + "\x00"} }

type refTree []refIvl

func (t refTree) intersects(iv refIvl) bool {
	for _, x := range t {
		if x.overlaps(iv) {
			return true
		}
	}
	return false
}

// union adds the intervals of in that overlap iv, as adt's Union does.
func (t *refTree) union(in refTree, iv refIvl) {
	for _, x := range in {
		if x.overlaps(iv) {
			*t = append(*t, x)
		}
	}
}

func refCheckIntervals(reqs []*pb.RequestOp) (map[string]struct{}, refTree, error) {
	var dels refTree
	for _, req := range reqs {
		tv, ok := req.Request.(*pb.RequestOp_RequestDeleteRange)
		if !ok || tv.RequestDeleteRange == nil {
			continue
		}
		d := tv.RequestDeleteRange
		if len(d.RangeEnd) != 0 {
			dels = append(dels, refIvl{string(d.Key), string(d.RangeEnd)})
		} else {
			dels = append(dels, refPoint(string(d.Key)))
		}
	}
	puts := map[string]struct{}{}
	for _, req := range reqs {
		tv, ok := req.Request.(*pb.RequestOp_RequestTxn)
		if !ok {
			continue
		}
		putsThen, delsThen, err := refCheckIntervals(tv.RequestTxn.Success)
		if err != nil {
			return nil, dels, err
		}
		putsElse, delsElse, err := refCheckIntervals(tv.RequestTxn.Failure)
		if err != nil {
			return nil, dels, err
		}
		for k := range putsThen {
			if _, ok := puts[k]; ok || dels.intersects(refPoint(k)) {
				return nil, dels, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = struct{}{}
		}
		for k := range putsElse {
			if _, ok := puts[k]; ok {
				if _, safe := putsThen[k]; !safe {
					return nil, dels, rpctypes.ErrGRPCDuplicateKey
				}
			}
			if dels.intersects(refPoint(k)) {
				return nil, dels, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = struct{}{}
		}
		dels.union(delsThen, refIvl{"\x00", ""})
		dels.union(delsElse, refIvl{"\x00", ""})
	}
	for _, req := range reqs {
		tv, ok := req.Request.(*pb.RequestOp_RequestPut)
		if !ok || tv.RequestPut == nil {
			continue
		}
		k := string(tv.RequestPut.Key)
		if _, ok := puts[k]; ok || dels.intersects(refPoint(k)) {
			return nil, dels, rpctypes.ErrGRPCDuplicateKey
		}
		puts[k] = struct{}{}
	}
	return puts, dels, nil
}

// vtBuild turns fuzz bytes into a txn over a tiny key space, so that
// duplicates, overlaps, nesting and budget limits are common.
func vtBuild(data []byte) *pb.TxnRequest {
	keys := []string{"", "a", "b", "c", "a\x00", "\x00", "\xff"}
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	key := func() []byte { return []byte(keys[int(next())%len(keys)]) }
	var build func(depth int) *pb.TxnRequest
	build = func(depth int) *pb.TxnRequest {
		t := &pb.TxnRequest{}
		for range int(next() % 3) {
			t.Compare = append(t.Compare, &pb.Compare{Key: key(), RangeEnd: key()})
		}
		for _, br := range []*[]*pb.RequestOp{&t.Success, &t.Failure} {
			for range int(next() % 5) {
				op := &pb.RequestOp{}
				switch c := next(); c % 6 {
				case 0:
					op.Request = &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key(), IgnoreValue: c&0x40 != 0, IgnoreLease: c&0x80 != 0}}
				case 1:
					op.Request = &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: key(), RangeEnd: key()}}
				case 2:
					op.Request = &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: key(), SortOrder: pb.RangeRequest_SortOrder(c >> 6)}}
				case 3, 4:
					if depth < 4 {
						op.Request = &pb.RequestOp_RequestTxn{RequestTxn: build(depth + 1)}
					}
				}
				// case 5 (and deep txns) leave the op empty.
				*br = append(*br, op)
			}
		}
		return t
	}
	return build(0)
}

func TestValidateTxnAgainstReference(t *testing.T) {
	// A deterministic sweep of built txns, complementing the fuzz targets.
	rejected := map[error]int{}
	for i := range 20000 {
		data := make([]byte, 48)
		x := uint64(i)*0x9E3779B97F4A7C15 + 1
		for j := range data {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			data[j] = byte(x)
		}
		txn := vtBuild(data)
		maxOps := 1 + int(data[0]%8)
		got, want := checkTxn(txn, maxOps), refCheckTxn(txn, maxOps)
		if got != want {
			t.Fatalf("checkTxn = %v, etcd reference = %v for %v (maxOps %d)", got, want, txn, maxOps)
		}
		rejected[want]++
	}
	for _, e := range []error{nil, rpctypes.ErrGRPCDuplicateKey, rpctypes.ErrGRPCTooManyOps, rpctypes.ErrGRPCEmptyKey, rpctypes.ErrGRPCKeyNotFound} {
		if rejected[e] < 50 {
			t.Errorf("sweep produced only %d txns with outcome %v", rejected[e], e)
		}
	}
}
