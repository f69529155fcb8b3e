package mvcc

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/ballast-kv/ballast/store"
)

// crashWorkload is a fixed random workload with the model's view after
// every entry.
type crashWorkload struct {
	m        *model
	reqs     []*pb.InternalRaftRequest
	entries  []Entry
	wants    []proto.Message
	wantErrs []error
	after    []modelPoint // after[i]: the model after i entries
}

type modelPoint struct {
	rev, compact int64
	leases       map[int64]int64
}

func newCrashWorkload(t testing.TB, seed uint64, n, bigValues int) *crashWorkload {
	w := &crashWorkload{m: newModel(2), after: []modelPoint{{rev: 1, compact: -1, leases: map[int64]int64{}}}}
	g := &gen{rng: rand.New(rand.NewPCG(seed, 5)), m: w.m, big: bigValues}
	for range n {
		r := g.request()
		want, err := w.m.apply(r)
		w.reqs = append(w.reqs, r)
		w.wants = append(w.wants, want)
		w.wantErrs = append(w.wantErrs, err)
		w.after = append(w.after, modelPoint{w.m.rev, w.m.compact, maps.Clone(w.m.leases)})
	}
	w.entries = makeEntries(t, 1, w.reqs...)
	return w
}

// applyBatches applies es in random batch sizes, as Raft would hand them
// over, and checks each result against the model.
func (w *crashWorkload) applyBatches(t testing.TB, s *Store, es []Entry, rng *rand.Rand) {
	t.Helper()
	applied := s.AppliedIndex()
	for len(es) > 0 {
		n := min(len(es), 1+rng.IntN(12))
		res := s.Apply(es[:n])
		for i, e := range es[:n] {
			if e.Index <= applied {
				if res[i] != nil {
					t.Fatalf("entry %d at or below applied index %d returned %v", e.Index, applied, res[i])
				}
				continue
			}
			checkResult(t, w.reqs[e.Index-1], res[i], w.wants[e.Index-1], w.wantErrs[e.Index-1])
		}
		applied = max(applied, es[n-1].Index)
		es = es[n:]
	}
}

// requireModelState checks that s holds exactly the model's state after
// `applied` entries: revision, compaction, leases and every readable
// revision of the key space.
func (w *crashWorkload) requireModelState(t testing.TB, s *Store, applied uint64) {
	t.Helper()
	p := w.after[applied]
	if s.Rev() != p.rev || s.CompactRev() != p.compact {
		t.Fatalf("after %d entries: Rev %d CompactRev %d, want %d, %d", applied, s.Rev(), s.CompactRev(), p.rev, p.compact)
	}
	if got, want := sortedIDs(s.Leases()), slices.Sorted(maps.Keys(p.leases)); !slices.Equal(got, want) {
		t.Fatalf("after %d entries: leases %v, want %v", applied, got, want)
	}
	for id, ttl := range p.leases {
		resp, err := s.LeaseTimeToLive(id, false)
		if err != nil || resp.GrantedTTL != ttl {
			t.Fatalf("lease %d: %v, %v; want granted TTL %d", id, resp, err, ttl)
		}
	}
	for rev := max(1, p.compact); rev <= p.rev; rev++ {
		q := &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev}
		got, err := s.Range(q)
		if err != nil {
			t.Fatalf("range at %d: %v", rev, err)
		}
		requireProtoEqual(t, fmt.Sprintf("after %d entries, everything at rev %d", applied, rev), got, modelRange(w.m.states[rev], q, p.rev))
	}
}

// TestCrashRecovery applies a workload to a store on a crashable in-memory
// filesystem, syncs at some point, applies more, and simulates a crash that
// keeps a random part of the unsynced writes. The reopened store must have
// applied at least up to the sync, hold exactly the state after its applied
// index (never part of a batch), and reach the uncrashed store's state when
// the entries are handed over again.
//
// The server's state store has no WAL (what a crash loses is what no flush
// wrote); offline tools open it with one. Both are crashed here, the store
// without a WAL with memtables small enough that Pebble flushes on its own
// between syncs, so a crash can land after any of those flushes.
func TestCrashRecovery(t *testing.T) {
	for _, tt := range []struct {
		name      string
		bigValues int
		sc        store.Config
	}{
		{"no WAL/small values", 0, store.Config{NoWAL: true, MemTableSize: 8 << 10}},
		{"no WAL/values up to 12KiB", 12 << 10, store.Config{NoWAL: true, MemTableSize: 256 << 10}},
		{"WAL/small values", 0, store.Config{}},
		{"WAL/values up to 12KiB", 12 << 10, store.Config{}}, // batches span WAL blocks, so crashes tear them
	} {
		tt.sc.CacheSize = 8 << 20
		t.Run(tt.name, func(t *testing.T) { testCrashRecovery(t, tt.bigValues, tt.sc) })
	}
}

func testCrashRecovery(t *testing.T, bigValues int, sc store.Config) {
	const total = 250
	w := newCrashWorkload(t, 11, total, bigValues)
	cfg := Config{MinLeaseTTL: 2}

	ref := openTestStore(t, nil, cfg)
	w.applyBatches(t, ref.s, w.entries, rand.New(rand.NewPCG(1, 1)))
	w.requireModelState(t, ref.s, total)
	refHash := ref.hash(0)

	prefixHash := map[uint64]uint32{} // HashKV of an uncrashed store after i entries
	hashAfter := func(t *testing.T, n uint64) uint32 {
		if h, ok := prefixHash[n]; ok {
			return h
		}
		s := openTestStore(t, nil, cfg)
		w.applyBatches(t, s.s, w.entries[:n], rand.New(rand.NewPCG(n, 2)))
		prefixHash[n] = s.hash(0)
		s.close()
		return prefixHash[n]
	}

	cases := 20
	if testing.Short() {
		cases = 6
	}
	rng := rand.New(rand.NewPCG(3, 3))
	lost := 0
	for c := range cases {
		syncAt := rng.IntN(total + 1)
		crashAt := syncAt + rng.IntN(total-syncAt+1)
		pct := []int{0, 10, 50, 90, 100}[c%5]
		t.Run(fmt.Sprintf("sync=%d/crash=%d/unsynced=%d%%", syncAt, crashAt, pct), func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			ts := openTestStoreWith(t, fs, cfg, sc)
			w.applyBatches(t, ts.s, w.entries[:syncAt], rng)
			if err := ts.s.Sync(); err != nil {
				t.Fatal(err)
			}
			w.applyBatches(t, ts.s, w.entries[syncAt:crashAt], rng)
			clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rand.New(rand.NewPCG(uint64(c), 9))})
			ts.close()

			crashed := openTestStoreWith(t, clone, cfg, sc)
			applied := crashed.s.AppliedIndex()
			if applied < uint64(syncAt) || applied > uint64(crashAt) {
				t.Fatalf("AppliedIndex %d after crash, want within [synced %d, applied %d]", applied, syncAt, crashAt)
			}
			t.Logf("applied %d after crash", applied)
			if applied < uint64(crashAt) {
				lost++
			}
			w.requireModelState(t, crashed.s, applied)
			if h := crashed.hash(0); h != hashAfter(t, applied) {
				t.Fatalf("HashKV after crash %x, uncrashed store after %d entries %x", h, applied, hashAfter(t, applied))
			}

			// Raft hands over its log again: everything at or below the
			// applied index is skipped, the rest applied.
			w.applyBatches(t, crashed.s, w.entries, rng)
			w.requireModelState(t, crashed.s, total)
			if h := crashed.hash(0); h != refHash {
				t.Fatalf("HashKV after recovery %x, uncrashed %x", h, refHash)
			}

			// And the recovered store is itself durable after a sync.
			if err := crashed.s.Sync(); err != nil {
				t.Fatal(err)
			}
			again := openTestStoreWith(t, clone.CrashClone(vfs.CrashCloneCfg{}), cfg, sc)
			crashed.close()
			if again.s.AppliedIndex() != total || again.hash(0) != refHash {
				t.Fatalf("second crash after sync: applied %d, hash %x; want %d, %x", again.s.AppliedIndex(), again.hash(0), total, refHash)
			}
		})
	}
	if lost == 0 {
		t.Fatalf("no crash lost any applied entry; the test exercised no recovery")
	}
}
