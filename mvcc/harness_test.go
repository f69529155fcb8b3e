package mvcc

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/ballast-kv/ballast/store"
)

// testStore is a Store on an in-memory Pebble instance, fed through Apply
// with consecutive Raft indexes, as raftlog would.
type testStore struct {
	t     testing.TB
	fs    vfs.FS
	sc    store.Config // Dir and FS are set by open
	db    *store.DB
	s     *Store
	index uint64 // last index handed to Apply
}

const testDir = "/state"

// openTestStore opens the state store as a server does: without a WAL,
// the Raft log being its WAL.
func openTestStore(t testing.TB, fs vfs.FS, cfg Config) *testStore {
	t.Helper()
	return openTestStoreWith(t, fs, cfg, store.Config{CacheSize: 8 << 20, NoWAL: true})
}

func openTestStoreWith(t testing.TB, fs vfs.FS, cfg Config, sc store.Config) *testStore {
	t.Helper()
	if fs == nil {
		fs = vfs.NewMem()
	}
	sc.Dir, sc.FS = testDir, fs
	ts := &testStore{t: t, fs: fs, sc: sc}
	ts.open(cfg)
	t.Cleanup(ts.close)
	return ts
}

func (ts *testStore) open(cfg Config) {
	ts.t.Helper()
	db, err := store.Open(ts.sc)
	if err != nil {
		ts.t.Fatalf("store.Open: %v", err)
	}
	s, err := Open(db, cfg)
	if err != nil {
		db.Close()
		ts.t.Fatalf("mvcc.Open: %v", err)
	}
	ts.db, ts.s, ts.index = db, s, s.AppliedIndex()
}

func (ts *testStore) close() {
	if ts.s == nil {
		return
	}
	ts.s.Close()
	ts.db.Close()
	ts.s = nil
}

// reopen closes the Store and its Pebble instance and opens both again on
// the same filesystem, as a restart would.
func (ts *testStore) reopen(cfg Config) {
	ts.t.Helper()
	ts.close()
	ts.open(cfg)
}

func marshalEntry(t testing.TB, index uint64, r *pb.InternalRaftRequest) Entry {
	t.Helper()
	data, err := proto.Marshal(r)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return Entry{Index: index, Data: data}
}

// entries numbers reqs from next on.
func makeEntries(t testing.TB, next uint64, reqs ...*pb.InternalRaftRequest) []Entry {
	es := make([]Entry, len(reqs))
	for i, r := range reqs {
		es[i] = marshalEntry(t, next+uint64(i), r)
	}
	return es
}

// apply hands reqs to Apply as one batch of consecutive entries.
func (ts *testStore) apply(reqs ...*pb.InternalRaftRequest) []any {
	ts.t.Helper()
	es := makeEntries(ts.t, ts.index+1, reqs...)
	ts.index += uint64(len(reqs))
	return ts.s.Apply(es)
}

// do applies one request and returns its response or error.
func (ts *testStore) do(r *pb.InternalRaftRequest) (proto.Message, error) {
	ts.t.Helper()
	res := ts.apply(r)[0]
	if err, ok := res.(error); ok {
		return nil, err
	}
	m, ok := res.(proto.Message)
	if !ok {
		ts.t.Fatalf("apply result %T (%v) is neither error nor proto", res, res)
	}
	return m, nil
}

// must applies one request that must succeed.
func (ts *testStore) must(r *pb.InternalRaftRequest) proto.Message {
	ts.t.Helper()
	m, err := ts.do(r)
	if err != nil {
		ts.t.Fatalf("apply %v: %v", prototext.Format(r), err)
	}
	return m
}

func (ts *testStore) rng(r *pb.RangeRequest) *pb.RangeResponse {
	ts.t.Helper()
	resp, err := ts.s.Range(r)
	if err != nil {
		ts.t.Fatalf("Range %v: %v", prototext.Format(r), err)
	}
	return resp
}

// get returns key's current kv, or nil.
func (ts *testStore) get(key string) *mvccpb.KeyValue {
	ts.t.Helper()
	resp := ts.rng(&pb.RangeRequest{Key: []byte(key)})
	if len(resp.Kvs) == 0 {
		return nil
	}
	return resp.Kvs[0]
}

func (ts *testStore) hash(rev int64) uint32 {
	ts.t.Helper()
	h, _, _, _, err := ts.s.HashKV(rev)
	if err != nil {
		ts.t.Fatalf("HashKV(%d): %v", rev, err)
	}
	return h
}

// Request builders.

func putReq(k, v string) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}
}

func putLeaseReq(k, v string, lease int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(k), Value: []byte(v), Lease: lease}}
}

// delReq deletes key, or [key, end) when end != "".
func delReq(k, end string) *pb.InternalRaftRequest {
	d := &pb.DeleteRangeRequest{Key: []byte(k)}
	if end != "" {
		d.RangeEnd = []byte(end)
	}
	return &pb.InternalRaftRequest{DeleteRange: d}
}

func txnReq(t *pb.TxnRequest) *pb.InternalRaftRequest { return &pb.InternalRaftRequest{Txn: t} }

func compactReq(rev int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: rev}}
}

func grantReq(id, ttl int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: id, TTL: ttl}}
}

func revokeReq(id int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}}
}

func opPut(k, v string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}

func opDel(k, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: delReq(k, end).DeleteRange}}
}

func opRange(r *pb.RangeRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
}

func opTxn(t *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t}}
}

func cmpValue(k string, res pb.Compare_CompareResult, v string) *pb.Compare {
	return &pb.Compare{Key: []byte(k), Target: pb.Compare_VALUE, Result: res, TargetUnion: &pb.Compare_Value{Value: []byte(v)}}
}

func cmpInt(k string, target pb.Compare_CompareTarget, res pb.Compare_CompareResult, n int64) *pb.Compare {
	c := &pb.Compare{Key: []byte(k), Target: target, Result: res}
	switch target {
	case pb.Compare_VERSION:
		c.TargetUnion = &pb.Compare_Version{Version: n}
	case pb.Compare_CREATE:
		c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: n}
	case pb.Compare_MOD:
		c.TargetUnion = &pb.Compare_ModRevision{ModRevision: n}
	case pb.Compare_LEASE:
		c.TargetUnion = &pb.Compare_Lease{Lease: n}
	}
	return c
}

// kv builds an expected KeyValue.
func kv(k, v string, create, mod, ver, lease int64) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(k), Value: []byte(v), CreateRevision: create, ModRevision: mod, Version: ver, Lease: lease}
}

func requireProtoEqual(t testing.TB, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("%s:\n got: %v\nwant: %v", what, prototext.Format(got), prototext.Format(want))
	}
}

// pollUntil retries cond until it holds or the deadline passes.
func pollUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitCompacted(t testing.TB, s *Store, rev int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitCompacted(ctx, rev); err != nil {
		t.Fatalf("WaitCompacted(%d): %v", rev, err)
	}
}

// countPrefix counts the Pebble keys under prefix p (a white-box look at
// what compaction leaves behind).
func countPrefix(t testing.TB, db *store.DB, p []byte) int {
	t.Helper()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: store.PrefixEnd(p)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	return n
}

// fakeClock is an injectable Config.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
