package server

import (
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/ballast-kv/ballast/mvcc"
)

func ev(key string, rev int64, size int) *mvccpb.Event {
	return &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(key), ModRevision: rev, Value: make([]byte, size)}}
}

func evResp(id, rev int64, evs ...*mvccpb.Event) mvcc.WatchResponse {
	return mvcc.WatchResponse{WatchID: id, Events: evs, Revision: rev}
}

func describe(rs []mvcc.WatchResponse) string {
	s := ""
	for _, r := range rs {
		s += fmt.Sprintf("[id %d rev %d compact %d events", r.WatchID, r.Revision, r.CompactRevision)
		for _, e := range r.Events {
			s += fmt.Sprintf(" %s@%d", e.Kv.Key, e.Kv.ModRevision)
		}
		s += "]"
	}
	return s
}

// TestCoalesce: queued event responses of one watcher become one response
// carrying every event in order, with the last header revision; progress
// notifications, cancellations, other watchers' responses and the
// stream-wide progress (id -1) keep their own messages and their order.
func TestCoalesce(t *testing.T) {
	ch := make(chan mvcc.WatchResponse, 16)
	a5, a6, a7, b7, a9, a10 := ev("a", 5, 1), ev("a", 6, 1), ev("a", 7, 1), ev("b", 7, 1), ev("a", 9, 1), ev("a", 10, 1)
	// Spare capacity: an append that did not copy would write into it.
	hubSlice := append(make([]*mvccpb.Event, 0, 8), a5)
	first := mvcc.WatchResponse{WatchID: 1, Events: hubSlice, Revision: 5}
	for _, r := range []mvcc.WatchResponse{
		evResp(1, 6, a6),
		evResp(1, 7, a7, b7),
		{WatchID: 1, Revision: 8}, // progress
		evResp(1, 9, a9),
		evResp(2, 9, a9), // another watcher
		evResp(1, 10, a10),
		{WatchID: -1, Revision: 10}, // stream-wide progress
		{WatchID: 1, CompactRevision: 11},
	} {
		ch <- r
	}
	got := describe(coalesce(first, ch))
	want := "[id 1 rev 7 compact 0 events a@5 a@6 a@7 b@7]" +
		"[id 1 rev 8 compact 0 events]" +
		"[id 1 rev 9 compact 0 events a@9]" +
		"[id 2 rev 9 compact 0 events a@9]" +
		"[id 1 rev 10 compact 0 events a@10]" +
		"[id -1 rev 10 compact 0 events]" +
		"[id 1 rev 0 compact 11 events]"
	if got != want {
		t.Fatalf("coalesce:\n got %s\nwant %s", got, want)
	}
	if len(hubSlice) != 1 || hubSlice[0] != a5 || hubSlice[:2][1] != nil {
		t.Fatal("coalescing wrote into the slice the hub handed over")
	}
	if len(ch) != 0 {
		t.Fatalf("%d responses left queued", len(ch))
	}
}

// TestCoalesceBounded: a coalesced response stays within coalesceBytes of
// keys and values, and nothing is dropped.
func TestCoalesceBounded(t *testing.T) {
	const n, size = 40, 100 << 10
	ch := make(chan mvcc.WatchResponse, n)
	for i := 1; i < n; i++ {
		ch <- evResp(1, int64(i+1), ev("k", int64(i+1), size))
	}
	out := coalesce(evResp(1, 1, ev("k", 1, size)), ch)
	total, next := 0, int64(1)
	for _, r := range out {
		if b := eventBytes(r.Events); b > coalesceBytes {
			t.Fatalf("response of %d bytes, bound %d", b, coalesceBytes)
		}
		for _, e := range r.Events {
			if e.Kv.ModRevision != next {
				t.Fatalf("event at %d, want %d", e.Kv.ModRevision, next)
			}
			next++
		}
		total += len(r.Events)
	}
	if total != n || len(out) < 2 || len(out) >= n {
		t.Fatalf("%d events in %d responses, want %d events in between 2 and %d responses", total, len(out), n, n-1)
	}
}
