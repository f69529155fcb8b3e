package mvcc

import (
	"errors"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

func TestCompactRequests(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	ts.must(putReq("a", "1")) // 2
	ts.must(putReq("a", "2")) // 3
	steps := []struct {
		name    string
		rev     int64
		wantErr error
	}{
		{"first compaction at 0 is allowed", 0, nil},
		{"again at 0", 0, ErrCompacted},
		{"negative", -1, ErrCompacted},
		{"future", 4, ErrFutureRev},
		{"at 2", 2, nil},
		{"at 2 again", 2, ErrCompacted},
		{"backwards", 1, ErrCompacted},
		{"at current", 3, nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := ts.s.CompactRev()
			m, err := ts.do(compactReq(st.rev))
			if !errors.Is(err, st.wantErr) {
				t.Fatalf("Compact(%d) = %v, want %v", st.rev, err, st.wantErr)
			}
			if err != nil {
				if ts.s.CompactRev() != before {
					t.Fatalf("failed compaction moved CompactRev %d -> %d", before, ts.s.CompactRev())
				}
				return
			}
			requireProtoEqual(t, "response", m, &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: 3}})
			if ts.s.CompactRev() != st.rev || ts.s.Rev() != 3 {
				t.Fatalf("CompactRev %d Rev %d, want %d and 3 (no bump)", ts.s.CompactRev(), ts.s.Rev(), st.rev)
			}
		})
	}
}

// versionLog is the history of one key in a deterministic workload.
type versionLog struct {
	rev       int64
	tombstone bool
}

// compactionWorkload writes n revisions over nkeys keys: mostly puts, every
// 7th a delete, so some keys end generations below the compaction revision.
func compactionWorkload(ts *testStore, n, nkeys int) map[string][]versionLog {
	hist := map[string][]versionLog{}
	var batch []*pb.InternalRaftRequest
	live := map[string]bool{}
	for i := range n {
		k := fmt.Sprintf("key-%03d", (i*7919)%nkeys)
		rev := ts.s.Rev() + int64(len(batch)) + 1
		if i%7 == 3 && live[k] {
			batch = append(batch, delReq(k, ""))
			live[k] = false
			hist[k] = append(hist[k], versionLog{rev, true})
		} else {
			batch = append(batch, putReq(k, fmt.Sprintf("value-%d", i)))
			live[k] = true
			hist[k] = append(hist[k], versionLog{rev, false})
		}
		if len(batch) == 500 {
			ts.apply(batch...)
			batch = batch[:0]
		}
	}
	ts.apply(batch...)
	return hist
}

// keptVersions counts what a compaction at target must leave: everything
// above it, and per key the newest version at or below it if that is a put,
// or a tombstone exactly at target.
func keptVersions(hist map[string][]versionLog, target int64) int {
	n := 0
	for _, vs := range hist {
		var newest *versionLog
		for i := range vs {
			if vs[i].rev > target {
				n++
			} else {
				newest = &vs[i]
			}
		}
		if newest != nil && (!newest.tombstone || newest.rev == target) {
			n++
		}
	}
	return n
}

// TestCompactionPhysical compacts a history larger than one compaction chunk
// and checks that reads at and above the compaction revision, and HashKV,
// give the same answers before, during and after physical compaction, and
// that exactly the superseded versions are gone.
func TestCompactionPhysical(t *testing.T) {
	n := 6 * compactChunk
	if testing.Short() {
		n = 3 * compactChunk
	}
	ts := openTestStore(t, nil, Config{})
	hist := compactionWorkload(ts, n, 97)
	cur := ts.s.Rev()
	target := cur - int64(n)/4 // three quarters of the history: several chunks

	all := &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}
	reads := map[int64]*pb.RangeResponse{}
	for _, rev := range []int64{target, target + 1, (target + cur) / 2, cur} {
		q := proto.Clone(all).(*pb.RangeRequest)
		q.Revision = rev
		reads[rev] = ts.rng(q)
	}
	checkReads := func(t *testing.T) {
		t.Helper()
		for rev, want := range reads {
			q := proto.Clone(all).(*pb.RangeRequest)
			q.Revision = rev
			requireProtoEqual(t, fmt.Sprintf("range at %d", rev), ts.rng(q), want)
		}
	}

	// Stop the compactor so that the hashes below are taken with nothing
	// physically compacted; the restart then lets it run.
	ts.s.compactor.close()
	ts.must(compactReq(target))
	hashCur, hashTarget := ts.hash(0), ts.hash(target)
	checkReads(t)
	if got := countPrefix(t, ts.db, []byte{'v'}); got != n {
		t.Fatalf("%d versions before physical compaction, want all %d", got, n)
	}
	ts.reopen(Config{})
	samples := 0
	for {
		ts.s.compactor.mu.Lock()
		done := ts.s.compactor.done
		ts.s.compactor.mu.Unlock()
		if h := ts.hash(0); h != hashCur {
			t.Fatalf("HashKV(0) changed from %x to %x with physical compaction at %d of %d", hashCur, h, done, target)
		}
		if h := ts.hash(target); h != hashTarget {
			t.Fatalf("HashKV(%d) changed from %x to %x with physical compaction at %d", target, hashTarget, h, done)
		}
		samples++
		if done >= target {
			break
		}
	}
	t.Logf("%d hash samples taken while compaction progressed", samples)
	waitCompacted(t, ts.s, target)
	checkReads(t)

	if _, err := ts.s.Range(&pb.RangeRequest{Key: []byte("key-001"), Revision: target - 1}); !errors.Is(err, ErrCompacted) {
		t.Fatalf("read below the compaction revision: %v, want ErrCompacted", err)
	}
	if _, _, _, _, err := ts.s.HashKV(target - 1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("HashKV below the compaction revision: %v, want ErrCompacted", err)
	}
	if _, _, _, _, err := ts.s.HashKV(cur + 1); !errors.Is(err, ErrFutureRev) {
		t.Fatalf("HashKV of a future revision: %v, want ErrFutureRev", err)
	}

	want := keptVersions(hist, target)
	if got := countPrefix(t, ts.db, []byte{'v'}); got != want {
		t.Errorf("version index holds %d entries after compaction, want %d", got, want)
	}
	if got := countPrefix(t, ts.db, []byte{'r'}); got != want {
		t.Errorf("event log holds %d entries after compaction, want %d", got, want)
	}

	t.Run("same hash as a store compacted at another moment", func(t *testing.T) {
		// Same Raft log, but the compaction entry comes last and is waited
		// for at once: the logical history, hence the hash, is identical.
		other := openTestStore(t, nil, Config{})
		compactionWorkload(other, n, 97)
		other.must(compactReq(target))
		waitCompacted(t, other.s, target)
		if h := other.hash(0); h != hashCur {
			t.Fatalf("HashKV(0) = %x, want %x", h, hashCur)
		}
		if h := other.hash(target); h != hashTarget {
			t.Fatalf("HashKV(%d) = %x, want %x", target, h, hashTarget)
		}
	})

}

// TestCompactionDropsTombstoneKeptByEarlierCompaction: a compaction exactly
// at a delete's revision keeps the tombstone; a later compaction above it
// must remove it (etcd does: a tombstone ending a generation below the
// compaction revision is not kept). Otherwise every such tombstone, and its
// event-log entry, stays on disk forever.
func TestCompactionDropsTombstoneKeptByEarlierCompaction(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	ts.must(putReq("a", "1")) // 2
	ts.must(delReq("a", ""))  // 3
	ts.must(compactReq(3))
	waitCompacted(t, ts.s, 3)
	if got := countPrefix(t, ts.db, versionPrefix([]byte("a"))); got != 1 {
		t.Fatalf("after compaction at the delete: %d versions of a, want the tombstone only", got)
	}
	ts.must(putReq("b", "1")) // 4
	ts.must(compactReq(4))
	waitCompacted(t, ts.s, 4)
	if got := countPrefix(t, ts.db, versionPrefix([]byte("a"))); got != 0 {
		t.Errorf("after compaction at 4: %d versions of a remain, want 0", got)
	}
	if got := countPrefix(t, ts.db, revKey(Rev{Main: 3})[:9]); got != 0 {
		t.Errorf("after compaction at 4: event log still holds revision 3")
	}
}

// TestHashKVOfPastRevision: without compaction, the hash of the history up
// to R does not depend on what was written after R, and two stores fed the
// same entries in different batches agree.
func TestHashKVOfPastRevision(t *testing.T) {
	a := openTestStore(t, nil, Config{})
	b := openTestStore(t, nil, Config{})
	var reqs []*pb.InternalRaftRequest
	for i := range 300 {
		switch i % 5 {
		case 4:
			reqs = append(reqs, delReq(fmt.Sprintf("k%d", i%13), ""))
		case 3:
			reqs = append(reqs, txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opPut(fmt.Sprintf("t%d", i%3), "x"), opDel(fmt.Sprintf("k%d", (i+1)%13), "")}}))
		default:
			reqs = append(reqs, putReq(fmt.Sprintf("k%d", i%13), fmt.Sprint(i)))
		}
	}
	hashes := map[int64]uint32{}
	for i, r := range reqs {
		a.apply(r)
		hashes[a.s.Rev()] = a.hash(0)
		if i%37 == 36 {
			b.apply(reqs[i-36 : i+1]...)
		}
	}
	b.apply(reqs[len(reqs)-len(reqs)%37:]...)
	if a.s.Rev() != b.s.Rev() {
		t.Fatalf("revisions differ: %d vs %d", a.s.Rev(), b.s.Rev())
	}
	for rev, want := range hashes {
		if got := a.hash(rev); got != want {
			t.Fatalf("HashKV(%d) = %x later, %x when it was current", rev, got, want)
		}
		if got := b.hash(rev); got != want {
			t.Fatalf("store fed other batches: HashKV(%d) = %x, want %x", rev, got, want)
		}
	}
}

// TestCompactionLargeRevision: a revision with more event-log entries than a
// compaction chunk (a txn of many puts, all still the newest versions of
// their keys) must not stop physical compaction short of its target.
func TestCompactionLargeRevision(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	for i := range compactChunk {
		ts.must(putReq(fmt.Sprintf("a%05d", i), "v"))
	}
	big := &pb.TxnRequest{}
	for i := range compactChunk + 100 {
		big.Success = append(big.Success, opPut(fmt.Sprintf("b%05d", i), "v"))
	}
	ts.must(txnReq(big))
	for i := range 100 {
		ts.must(putReq(fmt.Sprintf("c%05d", i), "v"))
	}
	target := ts.s.Rev()
	ts.must(compactReq(target))
	waitCompacted(t, ts.s, target)
	if got, want := countPrefix(t, ts.db, []byte{'v'}), 2*compactChunk+200; got != want {
		t.Fatalf("%d versions after compaction, want %d (every key's newest)", got, want)
	}
}
