package mvcc

import (
	"fmt"
	"math/rand"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// A paged list pinned to its first page's revision must report, on every
// page, the same count and keys as an uncached read of that page, even
// while writes inside the range move the store on between pages and
// whether the count came from the page cache or from a scan.
func TestPagedListCountsWithWritesBetweenPages(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	rnd := rand.New(rand.NewSource(1))
	for i := 0; i < 300; i++ {
		ts.must(putReq(fmt.Sprintf("/p/%04d", i), "v"))
	}
	ts.must(putReq("/q", "outside"))
	uncached := func(r *pb.RangeRequest) *pb.RangeResponse {
		v, release := ts.s.readView()
		defer release()
		resp, err := v.rangeRequest(r, nil)
		if err != nil {
			t.Fatalf("uncached range: %v", err)
		}
		return resp
	}
	for list := 0; list < 4; list++ {
		key, rev, seen := []byte("/p/"), int64(0), 0
		for page := 0; ; page++ {
			r := &pb.RangeRequest{Key: key, RangeEnd: []byte("/p0"), Limit: 7 + int64(list), Revision: rev}
			got := ts.rng(r)
			want := uncached(r)
			requireProtoEqual(t, fmt.Sprintf("list %d page %d", list, page), got, want)
			if rev == 0 {
				rev = got.Header.Revision
			}
			seen += len(got.Kvs)
			// Writes between pages: new keys, deletes and overwrites
			// anywhere in the range, none visible at rev.
			for i := 0; i < 3; i++ {
				k := fmt.Sprintf("/p/%04d", rnd.Intn(400))
				if rnd.Intn(2) == 0 {
					ts.must(putReq(k, "w"))
				} else {
					ts.must(delReq(k, ""))
				}
			}
			if !got.More {
				break
			}
			key = append(append([]byte(nil), got.Kvs[len(got.Kvs)-1].Key...), 0)
		}
		first := ts.rng(&pb.RangeRequest{Key: []byte("/p/"), RangeEnd: []byte("/p0"), Revision: rev, CountOnly: true})
		if int64(seen) != first.Count {
			t.Fatalf("list %d saw %d keys, the range held %d at revision %d", list, seen, first.Count, rev)
		}
	}
}
