package mvcc

import (
	"bytes"
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// IsDefaultOrdering reports whether a range needs no sort beyond key order.
func IsDefaultOrdering(r *pb.RangeRequest) bool {
	return r.SortOrder == pb.RangeRequest_NONE ||
		(r.SortTarget == pb.RangeRequest_KEY && r.SortOrder == pb.RangeRequest_ASCEND)
}

// HasRevisionFilters reports whether min/max mod/create revision are set.
func HasRevisionFilters(r *pb.RangeRequest) bool {
	return r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0
}

// rangeRequest is etcd's Range: limit pushed down when no sort or filter
// needs every key, revision filters after the read, then sort and limit.
// Count is taken before filters and regardless of limit, as etcd does.
// pages, when not nil, remembers and supplies the counts of paged lists.
func (v *view) rangeRequest(r *pb.RangeRequest, pages *pageCounts) (*pb.RangeResponse, error) {
	limit := r.Limit
	if !IsDefaultOrdering(r) || HasRevisionFilters(r) {
		limit = 0
	}
	if limit > 0 {
		limit++ // one more to learn whether there are more
	}
	// A page of a list: in key order, limited, unfiltered, over a range.
	paged := pages != nil && limit > 0 && !r.CountOnly && len(r.RangeEnd) > 0
	var rev, known int64
	var counted bool
	if paged {
		var err error
		if rev, err = v.checkRev(r.Revision); err != nil {
			return nil, err
		}
		known, counted = pages.get(r.Key, r.RangeEnd, rev)
	}
	rr, err := v.Range(r.Key, gteEnd(r.RangeEnd), RangeOptions{
		Rev:       r.Revision,
		Limit:     limit,
		CountOnly: r.CountOnly,
		KeysOnly:  r.KeysOnly && r.SortTarget != pb.RangeRequest_VALUE,
		SkipCount: counted,
	})
	if err != nil {
		return nil, err
	}
	if counted {
		rr.Count = known
	}
	kvs := rr.KVs
	if HasRevisionFilters(r) {
		kvs = filterKVs(kvs, r)
	}
	order := r.SortOrder
	if r.SortTarget != pb.RangeRequest_KEY && order == pb.RangeRequest_NONE {
		order = pb.RangeRequest_ASCEND
	}
	if !(order == pb.RangeRequest_NONE || (r.SortTarget == pb.RangeRequest_KEY && order == pb.RangeRequest_ASCEND)) {
		sortKVs(kvs, r.SortTarget, order)
	}
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: rr.Rev}, Count: rr.Count}
	if r.Limit > 0 && int64(len(kvs)) > r.Limit {
		kvs = kvs[:r.Limit]
		resp.More = true
		if paged {
			next := append(append([]byte(nil), kvs[len(kvs)-1].Key...), 0)
			pages.put(next, r.RangeEnd, rev, rr.Count-r.Limit)
		}
	}
	if r.KeysOnly {
		for _, kv := range kvs {
			kv.Value = nil
		}
	}
	resp.Kvs = kvs
	return resp, nil
}

func filterKVs(kvs []*mvccpb.KeyValue, r *pb.RangeRequest) []*mvccpb.KeyValue {
	out := kvs[:0]
	for _, kv := range kvs {
		switch {
		case r.MaxModRevision != 0 && kv.ModRevision > r.MaxModRevision:
		case r.MinModRevision != 0 && kv.ModRevision < r.MinModRevision:
		case r.MaxCreateRevision != 0 && kv.CreateRevision > r.MaxCreateRevision:
		case r.MinCreateRevision != 0 && kv.CreateRevision < r.MinCreateRevision:
		default:
			out = append(out, kv)
		}
	}
	return out
}

// sortKVs uses sort.Sort with etcd's comparators, so ties come out in the
// same order as etcd's.
func sortKVs(kvs []*mvccpb.KeyValue, target pb.RangeRequest_SortTarget, order pb.RangeRequest_SortOrder) {
	var s sort.Interface
	switch target {
	case pb.RangeRequest_KEY:
		s = kvSort{kvs, func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Key, b.Key) < 0 }}
	case pb.RangeRequest_VERSION:
		s = kvSort{kvs, func(a, b *mvccpb.KeyValue) bool { return a.Version < b.Version }}
	case pb.RangeRequest_CREATE:
		s = kvSort{kvs, func(a, b *mvccpb.KeyValue) bool { return a.CreateRevision < b.CreateRevision }}
	case pb.RangeRequest_MOD:
		s = kvSort{kvs, func(a, b *mvccpb.KeyValue) bool { return a.ModRevision < b.ModRevision }}
	case pb.RangeRequest_VALUE:
		s = kvSort{kvs, func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Value, b.Value) < 0 }}
	default:
		return
	}
	switch order {
	case pb.RangeRequest_ASCEND:
		sort.Sort(s)
	case pb.RangeRequest_DESCEND:
		sort.Sort(sort.Reverse(s))
	}
}

type kvSort struct {
	kvs  []*mvccpb.KeyValue
	less func(a, b *mvccpb.KeyValue) bool
}

func (s kvSort) Len() int           { return len(s.kvs) }
func (s kvSort) Swap(i, j int)      { s.kvs[i], s.kvs[j] = s.kvs[j], s.kvs[i] }
func (s kvSort) Less(i, j int) bool { return s.less(s.kvs[i], s.kvs[j]) }
