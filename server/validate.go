package server

import (
	"bytes"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Request validation, in etcd's order and with etcd's errors: it runs before
// anything is proposed, so invalid input never reaches the log.

func checkRange(r *pb.RangeRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.SortOrder)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(r.SortTarget)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

func checkPut(r *pb.PutRequest) error {
	switch {
	case len(r.Key) == 0:
		return rpctypes.ErrGRPCEmptyKey
	case r.IgnoreValue && len(r.Value) != 0:
		return rpctypes.ErrGRPCValueProvided
	case r.IgnoreLease && r.Lease != 0:
		return rpctypes.ErrGRPCLeaseProvided
	}
	return nil
}

func checkDelete(r *pb.DeleteRangeRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	return nil
}

// checkTxn validates op counts (the larger of compares, success and failure,
// with nested txns sharing the budget) and every op, then rejects a key
// written twice on one path.
func checkTxn(r *pb.TxnRequest, maxOps int) error {
	if err := checkTxnOps(r, maxOps); err != nil {
		return err
	}
	if _, _, err := checkIntervals(r.Success); err != nil {
		return err
	}
	_, _, err := checkIntervals(r.Failure)
	return err
}

func checkTxnOps(r *pb.TxnRequest, maxOps int) error {
	opc := max(len(r.Compare), len(r.Success), len(r.Failure))
	if opc > maxOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.Compare {
		if len(c.Key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if err := checkOp(op, maxOps-opc); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkOp(op *pb.RequestOp, maxOps int) error {
	switch {
	case op.GetRequestRange() != nil:
		return checkRange(op.GetRequestRange())
	case op.GetRequestPut() != nil:
		return checkPut(op.GetRequestPut())
	case op.GetRequestDeleteRange() != nil:
		return checkDelete(op.GetRequestDeleteRange())
	case op.GetRequestTxn() != nil:
		return checkTxnOps(op.GetRequestTxn(), maxOps)
	}
	return rpctypes.ErrGRPCKeyNotFound // an empty op, as etcd answers it
}

// interval is a deleted key range; end nil means the single key.
type interval struct{ key, end []byte }

func (iv interval) contains(k []byte) bool {
	if iv.end == nil {
		return bytes.Equal(iv.key, k)
	}
	// etcd treats end "\x00" literally here, so a from-key delete (and any
	// delete with end <= key) overlaps no put: reproduced for compatibility.
	return bytes.Compare(k, iv.key) >= 0 && bytes.Compare(k, iv.end) < 0
}

func anyContains(dels []interval, k []byte) bool {
	for _, d := range dels {
		if d.contains(k) {
			return true
		}
	}
	return false
}

// checkIntervals is etcd's duplicate-key rule: a key may be put once per
// path and not both put and deleted; overlapping deletes are fine.
func checkIntervals(ops []*pb.RequestOp) (map[string]bool, []interval, error) {
	var dels []interval
	for _, op := range ops {
		if d := op.GetRequestDeleteRange(); d != nil {
			iv := interval{key: d.Key}
			if len(d.RangeEnd) > 0 {
				iv.end = d.RangeEnd
			}
			dels = append(dels, iv)
		}
	}
	puts := map[string]bool{}
	for _, op := range ops {
		t := op.GetRequestTxn()
		if t == nil {
			continue
		}
		putsThen, delsThen, err := checkIntervals(t.Success)
		if err != nil {
			return nil, nil, err
		}
		putsElse, delsElse, err := checkIntervals(t.Failure)
		if err != nil {
			return nil, nil, err
		}
		for k := range putsThen {
			if puts[k] || anyContains(dels, []byte(k)) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = true
		}
		for k := range putsElse {
			if (puts[k] && !putsThen[k]) || anyContains(dels, []byte(k)) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = true
		}
		dels = append(append(dels, delsThen...), delsElse...)
	}
	for _, op := range ops {
		p := op.GetRequestPut()
		if p == nil {
			continue
		}
		if puts[string(p.Key)] || anyContains(dels, p.Key) {
			return nil, nil, rpctypes.ErrGRPCDuplicateKey
		}
		puts[string(p.Key)] = true
	}
	return puts, dels, nil
}

// isReadOnly reports whether a txn only reads (a nested txn counts as a write).
func isReadOnly(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if op.GetRequestRange() == nil {
				return false
			}
		}
	}
	return true
}

func isSerializableTxn(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if rr := op.GetRequestRange(); rr == nil || !rr.Serializable {
				return false
			}
		}
	}
	return true
}

// quotaCost is etcd's estimate of what a request adds to the database.
func quotaCost(r *pb.InternalRaftRequest) int64 {
	switch {
	case r.Put != nil:
		return putCost(r.Put)
	case r.Txn != nil:
		return txnCost(r.Txn)
	case r.LeaseGrant != nil:
		return 64
	}
	return 0
}

func putCost(p *pb.PutRequest) int64 { return int64(256 + len(p.Key) + len(p.Value)) }

func txnCost(t *pb.TxnRequest) int64 {
	var best int64
	for _, ops := range [][]*pb.RequestOp{t.Success, t.Failure} {
		var sum int64
		for _, op := range ops {
			if p := op.GetRequestPut(); p != nil {
				sum += putCost(p)
			} else if n := op.GetRequestTxn(); n != nil {
				sum += txnCost(n)
			}
		}
		best = max(best, sum)
	}
	return best
}
