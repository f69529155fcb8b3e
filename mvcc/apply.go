package mvcc

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/ballast-kv/ballast/store"
)

// writer applies one request at a time into the batch of an applying Raft
// batch. Within a request, every change shares main revision rev+1 and takes
// the next sub revision. A read-only writer (s == nil) serves read-only txns.
type writer struct {
	*view
	s     *Store
	b     *pebble.Batch
	sub   int64 // changes made by the current request
	evs   []*mvccpb.Event
	prevs []*mvccpb.KeyValue // each event's previous version when cached, else nil

	index uint64     // Raft index of the entry being applied
	auth  *AuthState // the batch's auth state once a request changed it

	// keepPrev: some watcher asks for prev_kv, so puts keep their versions
	// in the meta cache and events carry their cached previous versions.
	keepPrev bool
}

// revEvents are the events of one revision, for the watch hub.
type revEvents struct {
	rev    int64
	events []*mvccpb.Event
	prevs  []*mvccpb.KeyValue // parallel to events: the previous version if known
}

func (w *writer) begin() { w.sub, w.evs, w.prevs = 0, nil, nil }

// end closes the current request, advancing the revision if it changed
// anything.
func (w *writer) end() revEvents {
	if w.sub == 0 {
		return revEvents{}
	}
	w.rev++
	return revEvents{rev: w.rev, events: w.evs, prevs: w.prevs}
}

// cur is the revision reads inside the current request see.
func (w *writer) cur() int64 {
	if w.sub > 0 {
		return w.rev + 1
	}
	return w.rev
}

func (w *writer) apply(r *pb.InternalRaftRequest) (proto.Message, error) {
	if err := w.authCheck(r); err != nil {
		return nil, err
	}
	if resp, ok, err := w.applyAuth(r); ok {
		return resp, err
	}
	if w.s.hasAlarm(pb.AlarmType_CORRUPT) && refusedWhenCorrupt(r) {
		return nil, ErrCorruptCluster
	}
	noSpace := w.s.hasAlarm(pb.AlarmType_NOSPACE)
	switch {
	case r.Put != nil:
		if noSpace {
			return nil, ErrNoSpace
		}
		if err := w.checkPut(r.Put); err != nil {
			return nil, err
		}
		return w.put(r.Put)
	case r.DeleteRange != nil:
		return w.deleteRange(r.DeleteRange)
	case r.Txn != nil:
		if noSpace && txnHasPut(r.Txn) {
			return nil, ErrNoSpace
		}
		return w.txn(r.Txn)
	case r.Compaction != nil:
		return w.compact(r.Compaction)
	case r.LeaseGrant != nil:
		if noSpace {
			return nil, ErrNoSpace
		}
		return w.leaseGrant(r.LeaseGrant)
	case r.LeaseRevoke != nil:
		return w.leaseRevoke(r.LeaseRevoke.ID)
	case r.LeaseCheckpoint != nil:
		return w.leaseCheckpoint(r.LeaseCheckpoint)
	case r.Alarm != nil:
		return w.alarm(r.Alarm)
	}
	return nil, fmt.Errorf("mvcc: unsupported request %v", r)
}

func (w *writer) nextRev() Rev {
	r := Rev{Main: w.rev + 1, Sub: w.sub}
	w.sub++
	return r
}

func (w *writer) checkPut(p *pb.PutRequest) error {
	if p.Lease != 0 && !w.s.leases.exists(p.Lease) {
		return ErrLeaseNotFound
	}
	if p.IgnoreValue || p.IgnoreLease {
		if _, ok, err := w.meta(p.Key); err != nil {
			return err
		} else if !ok {
			return ErrKeyNotFound
		}
	}
	return nil
}

func (w *writer) put(p *pb.PutRequest) (*pb.PutResponse, error) {
	old, exists, err := w.meta(p.Key)
	if err != nil {
		return nil, err
	}
	resp := &pb.PutResponse{}
	var prev *mvccpb.KeyValue
	if exists && (w.keepPrev || p.PrevKv || p.IgnoreValue) {
		prev = w.cachedKV(p.Key, old)
	}
	var oldValue []byte
	if exists && (p.PrevKv || p.IgnoreValue) {
		if prev == nil {
			if prev, err = w.kvFromMeta(p.Key, old, false); err != nil {
				return nil, err
			}
		}
		oldValue = prev.Value
		if p.PrevKv {
			resp.PrevKv = prev
		}
	}
	value, lease := p.Value, p.Lease
	if p.IgnoreValue {
		value = oldValue
	}
	if p.IgnoreLease {
		lease = old.Lease
	}
	rev := w.nextRev()
	m := meta{Create: rev.Main, Mod: rev, Version: 1, Lease: lease}
	if exists {
		m.Create, m.Version = old.Create, old.Version+1
		if old.Lease != 0 && old.Lease != lease {
			w.b.Delete(attachedKey(old.Lease, p.Key), nil)
		}
	}
	if lease != 0 && (!exists || old.Lease != lease) {
		w.b.Set(attachedKey(lease, p.Key), nil, nil)
	}
	kv := &mvccpb.KeyValue{Key: p.Key, CreateRevision: m.Create, ModRevision: rev.Main, Version: m.Version, Value: value, Lease: lease}
	w.b.Set(latestKey(p.Key), m.encode(), nil)
	if w.keepPrev {
		w.s.metas.setKV(p.Key, m, true, kv)
	} else {
		w.s.metas.set(p.Key, m, true) // no watcher wants it as prev_kv: spare the memory
	}
	w.b.Set(versionKey(p.Key, rev), []byte{versionPut}, nil)
	rec := record{Kind: kindPut, Key: p.Key, Create: m.Create, Version: m.Version, Lease: lease, Value: value}
	w.b.Set(revKey(rev), rec.encode(), nil)
	w.evs = append(w.evs, &mvccpb.Event{Type: mvccpb.PUT, Kv: kv})
	w.prevs = append(w.prevs, prev)
	resp.Header = &pb.ResponseHeader{Revision: rev.Main}
	return resp, nil
}

func (w *writer) deleteRange(d *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	end := gteEnd(d.RangeEnd)
	cur := &view{r: w.r, rev: w.cur(), compactRev: w.compactRev}
	rr, err := cur.Range(d.Key, end, RangeOptions{KeysOnly: !d.PrevKv})
	if err != nil {
		return nil, err
	}
	resp := &pb.DeleteRangeResponse{Deleted: int64(len(rr.KVs))}
	if d.PrevKv {
		resp.PrevKvs = rr.KVs
	}
	for _, kv := range rr.KVs {
		if err := w.tombstone(kv.Key); err != nil {
			return nil, err
		}
	}
	resp.Header = &pb.ResponseHeader{Revision: w.cur()}
	return resp, nil
}

func (w *writer) tombstone(key []byte) error {
	old, exists, err := w.meta(key)
	if err != nil || !exists {
		return err
	}
	if old.Lease != 0 {
		w.b.Delete(attachedKey(old.Lease, key), nil)
	}
	var prev *mvccpb.KeyValue
	if w.keepPrev {
		prev = w.cachedKV(key, old)
	}
	rev := w.nextRev()
	w.b.Delete(latestKey(key), nil)
	w.s.metas.set(key, meta{}, false)
	w.b.Set(versionKey(key, rev), []byte{versionTombstone}, nil)
	rec := record{Kind: kindDelete, Key: key}
	w.b.Set(revKey(rev), rec.encode(), nil)
	w.evs = append(w.evs, &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: key, ModRevision: rev.Main}})
	w.prevs = append(w.prevs, prev)
	return nil
}

// txn follows etcd: every compare on the chosen path is evaluated against
// the state before the txn, the chosen ops are checked, then executed.
func (w *writer) txn(r *pb.TxnRequest) (*pb.TxnResponse, error) {
	path := w.comparePath(r, nil)
	if err := w.checkTxn(r, path); err != nil {
		return nil, err
	}
	resp, _, err := w.execTxn(r, path)
	if err != nil {
		return nil, err
	}
	resp.Header = &pb.ResponseHeader{Revision: w.cur()}
	return resp, nil
}

func (w *writer) comparePath(r *pb.TxnRequest, path []bool) []bool {
	ok := true
	for _, c := range r.Compare {
		if !w.compare(c) {
			ok = false
			break
		}
	}
	path = append(path, ok)
	for _, op := range branch(r, ok) {
		if t := op.GetRequestTxn(); t != nil {
			path = w.comparePath(t, path)
		}
	}
	return path
}

func branch(r *pb.TxnRequest, ok bool) []*pb.RequestOp {
	if ok {
		return r.Success
	}
	return r.Failure
}

func (w *writer) compare(c *pb.Compare) bool {
	if len(c.RangeEnd) == 0 && c.Target != pb.Compare_VALUE {
		// Revisions, version and lease are in the key's meta: no need to
		// read its value (Kubernetes' every write compares a revision).
		m, ok, err := w.meta(c.Key)
		if err != nil {
			return false
		}
		kv := &mvccpb.KeyValue{}
		if ok {
			kv = &mvccpb.KeyValue{Key: c.Key, CreateRevision: m.Create, ModRevision: m.Mod.Main, Version: m.Version, Lease: m.Lease}
		}
		return compareKV(c, kv)
	}
	rr, err := w.Range(c.Key, gteEnd(c.RangeEnd), RangeOptions{})
	if err != nil {
		return false
	}
	if len(rr.KVs) == 0 {
		if c.Target == pb.Compare_VALUE {
			return false // a missing key has no value to compare
		}
		return compareKV(c, &mvccpb.KeyValue{})
	}
	for _, kv := range rr.KVs {
		if !compareKV(c, kv) {
			return false
		}
	}
	return true
}

func compareKV(c *pb.Compare, kv *mvccpb.KeyValue) bool {
	var res int
	cmp := func(a, b int64) int {
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	}
	switch c.Target {
	case pb.Compare_VALUE:
		res = bytes.Compare(kv.Value, c.GetValue())
	case pb.Compare_CREATE:
		res = cmp(kv.CreateRevision, c.GetCreateRevision())
	case pb.Compare_MOD:
		res = cmp(kv.ModRevision, c.GetModRevision())
	case pb.Compare_VERSION:
		res = cmp(kv.Version, c.GetVersion())
	case pb.Compare_LEASE:
		res = cmp(kv.Lease, c.GetLease())
	}
	switch c.Result {
	case pb.Compare_EQUAL:
		return res == 0
	case pb.Compare_NOT_EQUAL:
		return res != 0
	case pb.Compare_GREATER:
		return res > 0
	case pb.Compare_LESS:
		return res < 0
	}
	return true
}

// checkTxn validates the ops on the chosen path before any executes, so a
// failing txn changes nothing.
func (w *writer) checkTxn(r *pb.TxnRequest, path []bool) error {
	_, err := w.checkOps(r, path)
	return err
}

func (w *writer) checkOps(r *pb.TxnRequest, path []bool) ([]bool, error) {
	ok := path[0]
	path = path[1:]
	for _, op := range branch(r, ok) {
		switch {
		case op.GetRequestRange() != nil:
			rev := op.GetRequestRange().Revision
			if rev > w.rev {
				return nil, ErrFutureRev
			}
			if rev != 0 && rev < w.compactRev {
				return nil, ErrCompacted
			}
		case op.GetRequestPut() != nil:
			if err := w.checkPut(op.GetRequestPut()); err != nil {
				return nil, err
			}
		case op.GetRequestTxn() != nil:
			var err error
			if path, err = w.checkOps(op.GetRequestTxn(), path); err != nil {
				return nil, err
			}
		}
	}
	return path, nil
}

func (w *writer) execTxn(r *pb.TxnRequest, path []bool) (*pb.TxnResponse, []bool, error) {
	ok := path[0]
	path = path[1:]
	ops := branch(r, ok)
	resp := &pb.TxnResponse{Succeeded: ok, Responses: make([]*pb.ResponseOp, len(ops))}
	for i, op := range ops {
		switch {
		case op.GetRequestRange() != nil:
			v := &view{r: w.r, rev: w.cur(), compactRev: w.compactRev}
			rr, err := v.rangeRequest(op.GetRequestRange(), nil)
			if err != nil {
				return nil, nil, err
			}
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: rr}}
		case op.GetRequestPut() != nil:
			pr, err := w.put(op.GetRequestPut())
			if err != nil {
				return nil, nil, err
			}
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: pr}}
		case op.GetRequestDeleteRange() != nil:
			dr, err := w.deleteRange(op.GetRequestDeleteRange())
			if err != nil {
				return nil, nil, err
			}
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: dr}}
		case op.GetRequestTxn() != nil:
			tr, rest, err := w.execTxn(op.GetRequestTxn(), path)
			if err != nil {
				return nil, nil, err
			}
			path = rest
			tr.Header = &pb.ResponseHeader{}
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: tr}}
		}
	}
	return resp, path, nil
}

func txnHasPut(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if op.GetRequestPut() != nil || (op.GetRequestTxn() != nil && txnHasPut(op.GetRequestTxn())) {
				return true
			}
		}
	}
	return false
}

func (w *writer) compact(c *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if c.Revision <= w.compactRev {
		return nil, ErrCompacted
	}
	if c.Revision > w.rev {
		return nil, ErrFutureRev
	}
	w.compactRev = c.Revision
	return &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: w.rev}}, nil
}

func (w *writer) alarm(a *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	resp := &pb.AlarmResponse{Header: &pb.ResponseHeader{Revision: w.rev}}
	s := w.s
	idx := slices.IndexFunc(s.alarms, func(m *pb.AlarmMember) bool {
		return m.MemberID == a.MemberID && m.Alarm == a.Alarm
	})
	switch a.Action {
	case pb.AlarmRequest_GET:
		for _, m := range s.alarms {
			if a.Alarm == pb.AlarmType_NONE || m.Alarm == a.Alarm {
				resp.Alarms = append(resp.Alarms, m)
			}
		}
		return resp, nil
	case pb.AlarmRequest_ACTIVATE:
		if a.Alarm == pb.AlarmType_NONE {
			return resp, nil
		}
		if idx >= 0 {
			resp.Alarms = []*pb.AlarmMember{s.alarms[idx]}
			return resp, nil
		}
		m := &pb.AlarmMember{MemberID: a.MemberID, Alarm: a.Alarm}
		s.setAlarms(append(slices.Clone(s.alarms), m))
		resp.Alarms = []*pb.AlarmMember{m}
	case pb.AlarmRequest_DEACTIVATE:
		if idx < 0 {
			return resp, nil
		}
		resp.Alarms = []*pb.AlarmMember{s.alarms[idx]}
		s.setAlarms(slices.Delete(slices.Clone(s.alarms), idx, idx+1))
	}
	b, err := proto.Marshal(&pb.AlarmResponse{Alarms: s.alarms})
	if err != nil {
		return nil, err
	}
	w.b.Set(metaAlarms, b, nil)
	return resp, nil
}

func (s *Store) setAlarms(a []*pb.AlarmMember) {
	s.mu.Lock()
	s.alarms = a
	s.mu.Unlock()
}

func (s *Store) hasAlarm(t pb.AlarmType) bool {
	return slices.ContainsFunc(s.alarms, func(a *pb.AlarmMember) bool { return a.Alarm == t })
}

// refusedWhenCorrupt lists what a CORRUPT alarm stops, as etcd's corrupt
// applier does: every change to keys, compaction and lease grants and
// revokes. Alarms, auth, members and lease checkpoints still apply, so the
// alarm can be disarmed once the bad member is replaced.
func refusedWhenCorrupt(r *pb.InternalRaftRequest) bool {
	return r.Put != nil || r.DeleteRange != nil || r.Txn != nil || r.Compaction != nil || r.LeaseGrant != nil || r.LeaseRevoke != nil
}

// leaseKeys returns the keys attached to lease id, in key order.
func leaseKeys(r pebble.Reader, id int64) ([][]byte, error) {
	p := attachedPrefix(id)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: store.PrefixEnd(p)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var keys [][]byte
	for ok := it.First(); ok; ok = it.Next() {
		keys = append(keys, append([]byte(nil), it.Key()[len(p):]...))
	}
	return keys, it.Error()
}
