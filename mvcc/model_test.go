package mvcc

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/ballast-kv/ballast/store"
)

// model is a deliberately naive reference for the store: the full live state
// at every revision, the events of every revision, and the leases. It follows
// /work/notes/etcd-semantics.md §2-§7 and shares no code with the store.
type model struct {
	rev     int64
	compact int64
	minTTL  int64
	states  []map[string]mkv  // states[r]: live keys at revision r (states[0] unused)
	events  [][]*mvccpb.Event // events[r]: events of revision r, in order
	leases  map[int64]int64   // id -> effective TTL
}

type mkv struct {
	val                     []byte
	create, mod, ver, lease int64
}

func (k mkv) pb(key string) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(key), Value: bytes.Clone(k.val), CreateRevision: k.create, ModRevision: k.mod, Version: k.ver, Lease: k.lease}
}

func newModel(minTTL int64) *model {
	return &model{rev: 1, compact: -1, minTTL: minTTL, states: []map[string]mkv{nil, {}}, events: [][]*mvccpb.Event{nil, nil}, leases: map[int64]int64{}}
}

func (m *model) cur() map[string]mkv { return m.states[m.rev] }

// matchKeys returns the keys of st in etcd's [key, range_end), sorted.
func matchKeys(st map[string]mkv, key, end []byte) []string {
	var out []string
	for k := range st {
		kb := []byte(k)
		var in bool
		switch {
		case len(end) == 0:
			in = bytes.Equal(kb, key)
		case len(end) == 1 && end[0] == 0:
			in = bytes.Compare(kb, key) >= 0
		default:
			in = bytes.Compare(kb, key) >= 0 && bytes.Compare(kb, end) < 0
		}
		if in {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// modelRange is etcd's executeRange over one state (notes §2).
func modelRange(st map[string]mkv, r *pb.RangeRequest, headerRev int64) *pb.RangeResponse {
	keys := matchKeys(st, r.Key, r.RangeEnd)
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: headerRev}, Count: int64(len(keys))}
	if r.CountOnly {
		return resp
	}
	hasFilters := r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0
	defaultOrder := r.SortOrder == pb.RangeRequest_NONE || (r.SortTarget == pb.RangeRequest_KEY && r.SortOrder == pb.RangeRequest_ASCEND)
	if r.Limit > 0 && defaultOrder && !hasFilters && int64(len(keys)) > r.Limit+1 {
		// etcd's rangeLimit pushes limit+1 down whenever sort_order is
		// NONE, even when a non-KEY target then sorts what was fetched.
		keys = keys[:r.Limit+1]
	}
	var kvs []*mvccpb.KeyValue
	for _, k := range keys {
		kv := st[k].pb(k)
		switch {
		case r.MaxModRevision != 0 && kv.ModRevision > r.MaxModRevision:
		case r.MinModRevision != 0 && kv.ModRevision < r.MinModRevision:
		case r.MaxCreateRevision != 0 && kv.CreateRevision > r.MaxCreateRevision:
		case r.MinCreateRevision != 0 && kv.CreateRevision < r.MinCreateRevision:
		default:
			kvs = append(kvs, kv)
		}
	}
	order := r.SortOrder
	if r.SortTarget != pb.RangeRequest_KEY && order == pb.RangeRequest_NONE {
		order = pb.RangeRequest_ASCEND
	}
	if !(order == pb.RangeRequest_NONE || (r.SortTarget == pb.RangeRequest_KEY && order == pb.RangeRequest_ASCEND)) {
		field := func(kv *mvccpb.KeyValue) []byte {
			switch r.SortTarget {
			case pb.RangeRequest_KEY:
				return kv.Key
			case pb.RangeRequest_VALUE:
				return kv.Value
			case pb.RangeRequest_VERSION:
				return store.AppendUint64(nil, uint64(kv.Version))
			case pb.RangeRequest_CREATE:
				return store.AppendUint64(nil, uint64(kv.CreateRevision))
			}
			return store.AppendUint64(nil, uint64(kv.ModRevision))
		}
		// With at most 12 keys Go's sort.Sort is an insertion sort, hence
		// stable: ties keep key order, in both directions.
		sort.SliceStable(kvs, func(i, j int) bool {
			c := bytes.Compare(field(kvs[i]), field(kvs[j]))
			if order == pb.RangeRequest_DESCEND {
				return c > 0
			}
			return c < 0
		})
	}
	if r.Limit > 0 && int64(len(kvs)) > r.Limit {
		kvs = kvs[:r.Limit]
		resp.More = true
	}
	if r.KeysOnly {
		for _, kv := range kvs {
			kv.Value = nil
			if r.SortTarget != pb.RangeRequest_VALUE {
				kv.Lease = 0
			}
		}
	}
	resp.Kvs = kvs
	return resp
}

// rangeExpect is a standalone Range against the model.
func (m *model) rangeExpect(r *pb.RangeRequest) (*pb.RangeResponse, error) {
	rev := r.Revision
	if rev > m.rev {
		return nil, ErrFutureRev
	}
	if rev <= 0 {
		rev = m.rev
	}
	if rev < m.compact {
		return nil, ErrCompacted
	}
	return modelRange(m.states[rev], r, m.rev), nil
}

// apply applies one request to the model and returns the expected result.
func (m *model) apply(r *pb.InternalRaftRequest) (proto.Message, error) {
	w := &mwriter{m: m, base: m.rev, st: maps.Clone(m.cur())}
	var resp proto.Message
	var err error
	switch {
	case r.Put != nil:
		if err = w.checkPut(r.Put); err == nil {
			resp = w.put(r.Put)
		}
	case r.DeleteRange != nil:
		resp = w.deleteRange(r.DeleteRange)
	case r.Txn != nil:
		resp, err = w.txn(r.Txn)
	case r.Compaction != nil:
		switch rev := r.Compaction.Revision; {
		case rev <= m.compact:
			err = ErrCompacted
		case rev > m.rev:
			err = ErrFutureRev
		default:
			m.compact = rev
			resp = &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: m.rev}}
		}
	case r.LeaseGrant != nil:
		g := r.LeaseGrant
		if g.TTL > MaxLeaseTTL {
			err = ErrLeaseTTLTooBig
		} else if _, ok := m.leases[g.ID]; ok {
			err = ErrLeaseExists
		} else {
			m.leases[g.ID] = max(g.TTL, m.minTTL)
			resp = &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: m.rev}, ID: g.ID, TTL: m.leases[g.ID]}
		}
	case r.LeaseRevoke != nil:
		id := r.LeaseRevoke.ID
		if _, ok := m.leases[id]; !ok {
			err = ErrLeaseNotFound
		} else {
			for _, k := range slices.Sorted(maps.Keys(w.st)) {
				if w.st[k].lease == id {
					w.tombstone(k)
				}
			}
			delete(m.leases, id)
			resp = &pb.LeaseRevokeResponse{Header: &pb.ResponseHeader{Revision: w.cur()}}
		}
	default:
		panic(fmt.Sprintf("model: unsupported request %v", r))
	}
	if err != nil {
		return nil, err
	}
	if w.changed {
		m.states = append(m.states, w.st)
		m.events = append(m.events, w.evs)
		m.rev++
	}
	return resp, nil
}

// mwriter is one request being applied to the model.
type mwriter struct {
	m       *model
	base    int64
	st      map[string]mkv
	changed bool
	evs     []*mvccpb.Event
}

func (w *mwriter) cur() int64 {
	if w.changed {
		return w.base + 1
	}
	return w.base
}

func (w *mwriter) checkPut(p *pb.PutRequest) error {
	if p.Lease != 0 {
		if _, ok := w.m.leases[p.Lease]; !ok {
			return ErrLeaseNotFound
		}
	}
	if p.IgnoreValue || p.IgnoreLease {
		if _, ok := w.st[string(p.Key)]; !ok {
			return ErrKeyNotFound
		}
	}
	return nil
}

func (w *mwriter) put(p *pb.PutRequest) *pb.PutResponse {
	k := string(p.Key)
	old, exists := w.st[k]
	resp := &pb.PutResponse{}
	if exists && p.PrevKv {
		resp.PrevKv = old.pb(k)
	}
	val, lease := p.Value, p.Lease
	if p.IgnoreValue {
		val = old.val
	}
	if p.IgnoreLease {
		lease = old.lease
	}
	rev := w.base + 1
	n := mkv{val: bytes.Clone(val), create: rev, mod: rev, ver: 1, lease: lease}
	if exists {
		n.create, n.ver = old.create, old.ver+1
	}
	w.st[k] = n
	w.changed = true
	w.evs = append(w.evs, &mvccpb.Event{Type: mvccpb.PUT, Kv: n.pb(k)})
	resp.Header = &pb.ResponseHeader{Revision: rev}
	return resp
}

func (w *mwriter) tombstone(k string) {
	delete(w.st, k)
	w.changed = true
	w.evs = append(w.evs, &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(k), ModRevision: w.base + 1}})
}

func (w *mwriter) deleteRange(d *pb.DeleteRangeRequest) *pb.DeleteRangeResponse {
	keys := matchKeys(w.st, d.Key, d.RangeEnd)
	resp := &pb.DeleteRangeResponse{Deleted: int64(len(keys))}
	for _, k := range keys {
		if d.PrevKv {
			resp.PrevKvs = append(resp.PrevKvs, w.st[k].pb(k))
		}
		w.tombstone(k)
	}
	resp.Header = &pb.ResponseHeader{Revision: w.cur()}
	return resp
}

func modelCompareKV(c *pb.Compare, kv *mvccpb.KeyValue) bool {
	var res int
	switch c.Target {
	case pb.Compare_VALUE:
		res = bytes.Compare(kv.Value, c.GetValue())
	case pb.Compare_CREATE:
		res = cmp.Compare(kv.CreateRevision, c.GetCreateRevision())
	case pb.Compare_MOD:
		res = cmp.Compare(kv.ModRevision, c.GetModRevision())
	case pb.Compare_VERSION:
		res = cmp.Compare(kv.Version, c.GetVersion())
	case pb.Compare_LEASE:
		res = cmp.Compare(kv.Lease, c.GetLease())
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

func (w *mwriter) compare(c *pb.Compare) bool {
	keys := matchKeys(w.st, c.Key, c.RangeEnd)
	if len(keys) == 0 {
		return c.Target != pb.Compare_VALUE && modelCompareKV(c, &mvccpb.KeyValue{})
	}
	for _, k := range keys {
		if !modelCompareKV(c, w.st[k].pb(k)) {
			return false
		}
	}
	return true
}

func modelBranch(t *pb.TxnRequest, ok bool) []*pb.RequestOp {
	if ok {
		return t.Success
	}
	return t.Failure
}

func (w *mwriter) txn(t *pb.TxnRequest) (*pb.TxnResponse, error) {
	path := w.path(t, nil)
	if _, err := w.check(t, path); err != nil {
		return nil, err
	}
	resp, _ := w.exec(t, path)
	resp.Header = &pb.ResponseHeader{Revision: w.cur()}
	return resp, nil
}

// path evaluates the compares of t and of the nested txns on its chosen
// branches, all against the state before the txn.
func (w *mwriter) path(t *pb.TxnRequest, path []bool) []bool {
	ok := true
	for _, c := range t.Compare {
		ok = ok && w.compare(c)
	}
	path = append(path, ok)
	for _, op := range modelBranch(t, ok) {
		if n := op.GetRequestTxn(); n != nil {
			path = w.path(n, path)
		}
	}
	return path
}

func (w *mwriter) check(t *pb.TxnRequest, path []bool) ([]bool, error) {
	ok := path[0]
	path = path[1:]
	for _, op := range modelBranch(t, ok) {
		switch {
		case op.GetRequestRange() != nil:
			rev := op.GetRequestRange().Revision
			if rev > w.base {
				return nil, ErrFutureRev
			}
			if rev != 0 && rev < w.m.compact {
				return nil, ErrCompacted
			}
		case op.GetRequestPut() != nil:
			if err := w.checkPut(op.GetRequestPut()); err != nil {
				return nil, err
			}
		case op.GetRequestTxn() != nil:
			var err error
			if path, err = w.check(op.GetRequestTxn(), path); err != nil {
				return nil, err
			}
		}
	}
	return path, nil
}

func (w *mwriter) exec(t *pb.TxnRequest, path []bool) (*pb.TxnResponse, []bool) {
	ok := path[0]
	path = path[1:]
	ops := modelBranch(t, ok)
	resp := &pb.TxnResponse{Succeeded: ok, Responses: make([]*pb.ResponseOp, len(ops))}
	for i, op := range ops {
		switch {
		case op.GetRequestRange() != nil:
			rr := op.GetRequestRange()
			st := w.st
			if rr.Revision != 0 {
				st = w.m.states[rr.Revision]
			}
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: modelRange(st, rr, w.cur())}}
		case op.GetRequestPut() != nil:
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: w.put(op.GetRequestPut())}}
		case op.GetRequestDeleteRange() != nil:
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: w.deleteRange(op.GetRequestDeleteRange())}}
		case op.GetRequestTxn() != nil:
			var tr *pb.TxnResponse
			tr, path = w.exec(op.GetRequestTxn(), path)
			tr.Header = &pb.ResponseHeader{}
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: tr}}
		}
	}
	return resp, path
}

// Random workload generation.

// modelKeys covers the byte values the key escaping must get right: 0x00
// inside and at the start of keys, 0xff, and keys that prefix each other.
var modelKeys = []string{"\x00x", "a", "a\x00", "ab", "abc", "b", "b\xff", "c", "d", "\xff"}

var modelBounds = append(slices.Clone(modelKeys), "\x01", "a\x00\x00", "aa", "bz", "\xff\xff")

type gen struct {
	rng *rand.Rand
	m   *model
	big int // if > 0, values get up to this many extra bytes
}

func (g *gen) key() string   { return modelKeys[g.rng.IntN(len(modelKeys))] }
func (g *gen) bound() string { return modelBounds[g.rng.IntN(len(modelBounds))] }
func (g *gen) chance(n int) bool {
	return g.rng.IntN(n) == 0
}

func (g *gen) value() []byte {
	const alphabet = "xyz\x00"
	b := make([]byte, g.rng.IntN(4))
	for i := range b {
		b[i] = alphabet[g.rng.IntN(len(alphabet))]
	}
	if g.big > 0 {
		pad := make([]byte, g.rng.IntN(g.big))
		for i := range pad {
			pad[i] = byte(g.rng.Uint32())
		}
		b = append(b, pad...)
	}
	return b
}

// keyRange returns a (key, range_end) pair: a single key, an explicit and
// possibly inverted range, a prefix, from-key, or the whole keyspace.
func (g *gen) keyRange() (key, end []byte) {
	k := []byte(g.key())
	switch g.rng.IntN(6) {
	case 0, 1:
		return k, nil
	case 2:
		return k, []byte(g.bound())
	case 3:
		e := store.PrefixEnd(k)
		if e == nil {
			e = []byte{0}
		}
		return k, e
	case 4:
		return k, []byte{0}
	}
	return []byte{0}, []byte{0}
}

// revision picks a read revision: mostly valid, sometimes compacted or in
// the future.
func (g *gen) revision(top int64) int64 {
	m := g.m
	lo := max(1, m.compact)
	switch x := g.rng.IntN(40); {
	case x < 10:
		return 0
	case x == 10:
		return top + 1 // future
	case x == 11 && m.compact >= 2:
		return m.compact - 1 // compacted
	}
	return lo + g.rng.Int64N(top-lo+1)
}

func (g *gen) rangeReq(inTxn bool) *pb.RangeRequest {
	r := &pb.RangeRequest{}
	r.Key, r.RangeEnd = g.keyRange()
	if g.chance(3) {
		r.Limit = 1 + g.rng.Int64N(4)
	}
	r.CountOnly = g.chance(8)
	r.KeysOnly = g.chance(5)
	if g.chance(4) {
		r.SortOrder = pb.RangeRequest_SortOrder(g.rng.IntN(3))
		r.SortTarget = pb.RangeRequest_SortTarget(g.rng.IntN(5))
	}
	if g.chance(6) {
		top := g.m.rev + 1
		r.MinModRevision = g.rng.Int64N(top)
		r.MaxModRevision = g.rng.Int64N(top) * int64(g.rng.IntN(2))
		r.MinCreateRevision = g.rng.Int64N(top) * int64(g.rng.IntN(2))
		r.MaxCreateRevision = g.rng.Int64N(top) * int64(g.rng.IntN(2))
	}
	if inTxn && g.rng.IntN(5) != 0 {
		return r
	}
	r.Revision = g.revision(g.m.rev)
	return r
}

func (g *gen) leaseID() int64 { return 1 + g.rng.Int64N(3) }

func (g *gen) putReq(key string) *pb.PutRequest {
	p := &pb.PutRequest{Key: []byte(key), Value: g.value(), PrevKv: g.chance(3)}
	if g.chance(4) {
		p.Lease = g.leaseID()
	}
	switch g.rng.IntN(25) {
	case 0:
		p.IgnoreValue, p.Value = true, nil
	case 1:
		p.IgnoreLease, p.Lease = true, 0
	}
	return p
}

func (g *gen) compare() *pb.Compare {
	k := g.key()
	c := &pb.Compare{Key: []byte(k), Result: pb.Compare_CompareResult(g.rng.IntN(4))}
	if g.chance(5) {
		_, c.RangeEnd = g.keyRange()
	}
	cur := g.m.cur()[k]
	near := func(v int64) int64 { return v + g.rng.Int64N(3) - 1 }
	switch g.rng.IntN(5) {
	case 0:
		c.Target = pb.Compare_VALUE
		v := cur.val
		if g.chance(2) {
			v = g.value()
		}
		c.TargetUnion = &pb.Compare_Value{Value: v}
	case 1:
		c.Target = pb.Compare_VERSION
		c.TargetUnion = &pb.Compare_Version{Version: near(cur.ver)}
	case 2:
		c.Target = pb.Compare_CREATE
		c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: near(cur.create)}
	case 3:
		c.Target = pb.Compare_MOD
		c.TargetUnion = &pb.Compare_ModRevision{ModRevision: near(cur.mod)}
	default:
		c.Target = pb.Compare_LEASE
		c.TargetUnion = &pb.Compare_Lease{Lease: g.rng.Int64N(4)}
	}
	return c
}

// txn builds a txn whose writes use distinct keys from pool, so it is valid
// under etcd's duplicate-key rule.
func (g *gen) txn(depth int, pool *[]string) *pb.TxnRequest {
	t := &pb.TxnRequest{}
	for range g.rng.IntN(3) {
		t.Compare = append(t.Compare, g.compare())
	}
	for _, br := range []*[]*pb.RequestOp{&t.Success, &t.Failure} {
		for range g.rng.IntN(4) {
			*br = append(*br, g.txnOp(depth, pool))
		}
	}
	return t
}

func (g *gen) txnOp(depth int, pool *[]string) *pb.RequestOp {
	pop := func() string {
		k := (*pool)[0]
		*pool = (*pool)[1:]
		return k
	}
	switch x := g.rng.IntN(10); {
	case x < 4 && len(*pool) > 0:
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: g.putReq(pop())}}
	case x < 6 && len(*pool) > 0:
		d := &pb.DeleteRangeRequest{Key: []byte(pop()), PrevKv: g.chance(2)}
		if g.chance(8) {
			// From the key onwards: etcd's duplicate check lets it cover
			// keys the txn puts, so a key may be put and deleted in one txn.
			d.RangeEnd = []byte{0}
		}
		return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}}
	case x < 7 && depth < 2:
		return opTxn(g.txn(depth+1, pool))
	}
	return opRange(g.rangeReq(true))
}

func (g *gen) request() *pb.InternalRaftRequest {
	m := g.m
	switch x := g.rng.IntN(100); {
	case x < 38:
		return &pb.InternalRaftRequest{Put: g.putReq(g.key())}
	case x < 55:
		d := &pb.DeleteRangeRequest{PrevKv: g.chance(3)}
		d.Key, d.RangeEnd = g.keyRange()
		return &pb.InternalRaftRequest{DeleteRange: d}
	case x < 82:
		pool := slices.Clone(modelKeys)
		g.rng.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
		return txnReq(g.txn(0, &pool))
	case x < 90:
		ttl := g.rng.Int64N(12) - 1
		if g.chance(20) {
			ttl = MaxLeaseTTL + 1
		}
		return grantReq(g.leaseID(), ttl)
	case x < 95:
		return revokeReq(g.leaseID())
	case x < 96:
		lo := max(m.compact, 0)
		rev := lo + g.rng.Int64N((m.rev-lo)/4+1)
		if g.chance(8) {
			rev = m.rev + 1
		}
		return compactReq(rev)
	}
	return putReq(g.key(), "p")
}

// checkResult compares an Apply result with the model's expectation.
func checkResult(t testing.TB, req *pb.InternalRaftRequest, got any, want proto.Message, wantErr error) {
	t.Helper()
	if wantErr != nil {
		err, ok := got.(error)
		if !ok || !errors.Is(err, wantErr) {
			t.Fatalf("apply %v\n got %v, want error %v", prototext.Format(req), got, wantErr)
		}
		return
	}
	m, ok := got.(proto.Message)
	if !ok {
		t.Fatalf("apply %v\n got %T %v, want %v", prototext.Format(req), got, got, prototext.Format(want))
	}
	requireProtoEqual(t, "apply "+prototext.Format(req), m, want)
}

// checkRange compares a Range against the store with the model's answer.
func checkRange(t testing.TB, s *Store, m *model, q *pb.RangeRequest) *pb.RangeResponse {
	t.Helper()
	got, err := s.Range(q)
	want, wantErr := m.rangeExpect(q)
	if wantErr != nil {
		if !errors.Is(err, wantErr) {
			t.Fatalf("Range %v: got (%v, %v), want error %v", prototext.Format(q), got, err, wantErr)
		}
		return nil
	}
	if err != nil {
		t.Fatalf("Range %v: %v", prototext.Format(q), err)
	}
	requireProtoEqual(t, "Range "+prototext.Format(q), got, want)
	return got
}

// TestModelRandomized drives the store with random puts, deletes, txns
// (nested, with compares), leases and compactions, checks every Apply result
// and random ranges at random revisions against the model, and checks that a
// read served from the latest index (l/) equals the same read served later
// from the version index (v/) at that revision.
func TestModelRandomized(t *testing.T) {
	steps := 400
	if testing.Short() {
		steps = 100
	}
	for _, seed := range []uint64{1, 2, 3, 4} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			ts := openTestStore(t, nil, Config{MinLeaseTTL: 2})
			if seed%2 == 0 {
				// A meta cache smaller than the key space evicts all the
				// time: misses must read what the batch holds.
				ts.s.metas = newMetaCache(3, 64)
			}
			m := newModel(2)
			g := &gen{rng: rng, m: m}
			type saved struct {
				q    *pb.RangeRequest
				rev  int64
				resp *pb.RangeResponse
			}
			var latest []saved
			for step := range steps {
				n := 1 + rng.IntN(8)
				reqs := make([]*pb.InternalRaftRequest, n)
				wants := make([]proto.Message, n)
				wantErrs := make([]error, n)
				for i := range reqs {
					reqs[i] = g.request()
					wants[i], wantErrs[i] = m.apply(reqs[i])
				}
				es := makeEntries(t, ts.index+1, reqs...)
				ts.index += uint64(n)
				results := ts.s.Apply(es)
				for i := range reqs {
					checkResult(t, reqs[i], results[i], wants[i], wantErrs[i])
				}
				if got := ts.s.Rev(); got != m.rev {
					t.Fatalf("step %d: Rev() = %d, want %d", step, got, m.rev)
				}
				if got := ts.s.CompactRev(); got != m.compact {
					t.Fatalf("step %d: CompactRev() = %d, want %d", step, got, m.compact)
				}
				if got := ts.s.AppliedIndex(); got != ts.index {
					t.Fatalf("step %d: AppliedIndex() = %d, want %d", step, got, ts.index)
				}
				for range 4 {
					checkRange(t, ts.s, m, g.rangeReq(false))
				}
				q := g.rangeReq(false)
				q.Revision = 0
				latest = append(latest, saved{q: q, rev: m.rev, resp: checkRange(t, ts.s, m, q)})

				if rng.IntN(20) == 0 {
					// Raft may hand over entries again after a restart.
					again := ts.s.Apply(es)
					for i, r := range again {
						if r != nil {
							t.Fatalf("re-applied entry %d returned %v, want nil (skipped)", es[i].Index, r)
						}
					}
					if ts.s.Rev() != m.rev {
						t.Fatalf("re-applying entries changed the revision to %d, want %d", ts.s.Rev(), m.rev)
					}
				}
			}
			// Same data, other path: what the latest index answered at rev R,
			// the version index must answer for revision R.
			checked := 0
			for _, sv := range latest {
				if sv.rev < m.compact || sv.rev == m.rev {
					continue
				}
				q := proto.Clone(sv.q).(*pb.RangeRequest)
				q.Revision = sv.rev
				got, err := ts.s.Range(q)
				if err != nil {
					t.Fatalf("historical Range %v: %v", prototext.Format(q), err)
				}
				want := proto.Clone(sv.resp).(*pb.RangeResponse)
				want.Header.Revision = m.rev
				requireProtoEqual(t, fmt.Sprintf("Range at %d via v/ vs l/ %v", sv.rev, prototext.Format(q)), got, want)
				checked++
			}
			if checked < steps/20 {
				t.Fatalf("only %d historical reads checked", checked)
			}
		})
	}
}
