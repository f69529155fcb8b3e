package mvcc

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// BenchmarkApplyPuts applies batches of 100 entries of one put each, to
// keys in turn or at random among 100,000 (as many clients write).
func BenchmarkApplyPuts(b *testing.B) {
	for _, random := range []bool{false, true} {
		b.Run(fmt.Sprint("random=", random), func(b *testing.B) {
			ts := openTestStore(b, nil, Config{})
			rng := rand.New(rand.NewPCG(1, 2))
			value := make([]byte, 128)
			batch := make([]Entry, 100)
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				for j := range batch {
					i++
					k := i % 100000
					if random {
						k = rng.IntN(100000)
					}
					batch[j] = marshalEntry(b, uint64(i), &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: fmt.Appendf(nil, "key-%08d", k), Value: value}})
				}
				ts.s.Apply(batch)
			}
			b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "puts/s")
		})
	}
}

// BenchmarkRange reads 500 of 10,000 keys, at the current revision (the
// latest index) and at a past one (the version index).
func BenchmarkRange(b *testing.B) {
	ts := openTestStore(b, nil, Config{})
	value := make([]byte, 128)
	var reqs []*pb.InternalRaftRequest
	for range 2 { // two versions of every key
		for i := range 10000 {
			reqs = append(reqs, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: fmt.Appendf(nil, "key-%05d", i), Value: value}})
			if len(reqs) == 1000 {
				ts.apply(reqs...)
				reqs = reqs[:0]
			}
		}
	}
	past := int64(10000 + 5000) // first round done, half of the second
	for _, bc := range []struct {
		name string
		rev  int64
	}{{"current", 0}, {"past", past}} {
		b.Run(bc.name, func(b *testing.B) {
			q := &pb.RangeRequest{Key: []byte("key-02000"), RangeEnd: []byte("key-02500"), Revision: bc.rev}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := ts.s.Range(q)
				if err != nil || len(resp.Kvs) != 500 {
					b.Fatalf("range: %d kvs, %v", len(resp.GetKvs()), err)
				}
			}
		})
		// A page of a paged list with no count remembered for it, as on
		// a member that did not serve the page before: 500 keys and the
		// count of all 10,000.
		b.Run(bc.name+"/page", func(b *testing.B) {
			q := &pb.RangeRequest{Key: []byte("key-"), RangeEnd: []byte("key."), Limit: 500, Revision: bc.rev}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := ts.s.Range(q)
				if err != nil || len(resp.Kvs) != 500 || resp.Count != 10000 || !resp.More {
					b.Fatalf("page: %d kvs, count %d, more %v, %v", len(resp.GetKvs()), resp.GetCount(), resp.GetMore(), err)
				}
			}
		})
	}
}

// BenchmarkCompact is Kubernetes' compaction pattern over a large store:
// 100,000 keys, then rounds of 2,000 updates to random keys each followed
// by a compaction at the current revision. One op is one compaction, from
// its apply until it is physically done; the updates are not timed.
func BenchmarkCompact(b *testing.B) {
	ts := openTestStore(b, nil, Config{})
	value := make([]byte, 128)
	var reqs []*pb.InternalRaftRequest
	for i := range 100000 {
		reqs = append(reqs, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: fmt.Appendf(nil, "key-%06d", i), Value: value}})
		if len(reqs) == 1000 {
			ts.apply(reqs...)
			reqs = reqs[:0]
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for range 2000 {
			reqs = append(reqs, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: fmt.Appendf(nil, "key-%06d", rng.IntN(100000)), Value: value}})
			if len(reqs) == 100 {
				ts.apply(reqs...)
				reqs = reqs[:0]
			}
		}
		rev := ts.s.Rev()
		b.StartTimer()
		ts.apply(&pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: rev}})
		if err := ts.s.WaitCompacted(context.Background(), rev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkListPage is a Kubernetes list page: 500 of 5,000 objects of
// 4 KiB that were updated in random order (so a page's values lie in
// revision order, not key order), at the current revision and at a past one,
// with the count of the whole prefix.
func BenchmarkListPage(b *testing.B) {
	ts := openTestStore(b, nil, Config{})
	rng := rand.New(rand.NewPCG(5, 6))
	value := make([]byte, 4096)
	var reqs []*pb.InternalRaftRequest
	put := func(i int) {
		for j := range 8 {
			binary.LittleEndian.PutUint64(value[8*j:], rng.Uint64())
		}
		reqs = append(reqs, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: fmt.Appendf(nil, "/registry/pods/ns/pod-%05d", i), Value: append([]byte(nil), value...)}})
		if len(reqs) == 100 {
			ts.apply(reqs...)
			reqs = reqs[:0]
		}
	}
	for i := range 5000 {
		put(i)
	}
	for range 5000 {
		put(rng.IntN(5000))
	}
	past := ts.s.Rev() - 2500
	for _, bc := range []struct {
		name string
		rev  int64
	}{{"current", 0}, {"past", past}} {
		b.Run(bc.name, func(b *testing.B) {
			q := &pb.RangeRequest{Key: []byte("/registry/pods/"), RangeEnd: []byte("/registry/pods0"), Limit: 500, Revision: bc.rev}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := ts.s.Range(q)
				if err != nil || len(resp.Kvs) != 500 || resp.Count != 5000 {
					b.Fatalf("page: %d kvs, count %d, %v", len(resp.GetKvs()), resp.GetCount(), err)
				}
			}
		})
	}
}
