package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

const watchDeadline = 20 * time.Second

// recvResp returns the stream's next response, failing after the deadline.
func recvResp(t testing.TB, ws *WatchStream) WatchResponse {
	t.Helper()
	select {
	case r := <-ws.Chan():
		return r
	case <-time.After(watchDeadline):
		t.Fatalf("no watch response within %v", watchDeadline)
	}
	return WatchResponse{}
}

// collectEvents reads responses until n events arrived.
func collectEvents(t testing.TB, ws *WatchStream, n int) []*mvccpb.Event {
	t.Helper()
	var evs []*mvccpb.Event
	for len(evs) < n {
		r := recvResp(t, ws)
		if r.CompactRevision != 0 {
			t.Fatalf("unexpected compaction response %+v after %d events", r, len(evs))
		}
		evs = append(evs, r.Events...)
	}
	return evs
}

// expectNoResponse checks that nothing is queued on the stream. The store
// queues responses synchronously in Apply for synced watchers, so this is
// not a race for them.
func expectNoResponse(t testing.TB, ws *WatchStream) {
	t.Helper()
	select {
	case r := <-ws.Chan():
		t.Fatalf("unexpected watch response %+v", r)
	default:
	}
}

func TestWatchHistoryThenSynced(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	ts.must(putReq("a", "1")) // 2
	ts.must(putReq("z", "1")) // 3 (outside the range)
	ts.must(putReq("b", "1")) // 4
	ts.must(delReq("a", ""))  // 5

	ws := ts.s.NewWatchStream()
	defer ws.Close()
	id, rev, err := ws.Watch(0, []byte("a"), []byte("c"), 2, WatchOptions{})
	if err != nil || id != 0 || rev != 5 {
		t.Fatalf("Watch = %d, %d, %v; want id 0 at rev 5", id, rev, err)
	}
	want := []*mvccpb.Event{
		{Type: mvccpb.PUT, Kv: kv("a", "1", 2, 2, 1, 0)},
		{Type: mvccpb.PUT, Kv: kv("b", "1", 4, 4, 1, 0)},
		{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("a"), ModRevision: 5}},
	}
	got := collectEvents(t, ws, 3)
	requireEvents(t, got, want)

	// Catch-up done: the watcher gets exactly one response per revision,
	// with that revision in the header. Poll until it has been moved to the
	// synced set (progress is only granted to synced watchers).
	pollUntil(t, watchDeadline, "watcher synced", func() bool {
		if !ws.RequestProgress(id) {
			return false
		}
		p := recvResp(t, ws)
		return p.Revision == 5 && len(p.Events) == 0
	})
	ts.must(txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a", "2"), opPut("z", "2"), opPut("b", "2")}})) // 6
	ts.must(putReq("z", "3"))                                                                                    // 7: no response
	ts.must(putReq("b", "3"))                                                                                    // 8
	for _, w := range []struct {
		rev int64
		evs []*mvccpb.Event
	}{
		{6, []*mvccpb.Event{{Type: mvccpb.PUT, Kv: kv("a", "2", 6, 6, 1, 0)}, {Type: mvccpb.PUT, Kv: kv("b", "2", 4, 6, 2, 0)}}},
		{8, []*mvccpb.Event{{Type: mvccpb.PUT, Kv: kv("b", "3", 4, 8, 3, 0)}}},
	} {
		r := recvResp(t, ws)
		if r.WatchID != id || r.Revision != w.rev {
			t.Fatalf("response id %d rev %d, want %d at %d", r.WatchID, r.Revision, id, w.rev)
		}
		requireEvents(t, r.Events, w.evs)
	}
	expectNoResponse(t, ws)
}

func requireEvents(t testing.TB, got, want []*mvccpb.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d:\n got %v\nwant %v", len(got), len(want), got, want)
	}
	for i := range got {
		requireProtoEqual(t, fmt.Sprintf("event %d", i), got[i], want[i])
	}
}

func TestWatchFiltersAndPrevKV(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	ts.must(putReq("k", "1")) // 2
	tests := []struct {
		name string
		opts WatchOptions
		want []*mvccpb.Event
	}{
		{"all", WatchOptions{}, []*mvccpb.Event{
			{Type: mvccpb.PUT, Kv: kv("k", "2", 2, 3, 2, 0)},
			{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: 4}},
			{Type: mvccpb.PUT, Kv: kv("k", "3", 5, 5, 1, 0)},
		}},
		{"noput", WatchOptions{NoPut: true}, []*mvccpb.Event{
			{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: 4}},
		}},
		{"nodelete", WatchOptions{NoDelete: true}, []*mvccpb.Event{
			{Type: mvccpb.PUT, Kv: kv("k", "2", 2, 3, 2, 0)},
			{Type: mvccpb.PUT, Kv: kv("k", "3", 5, 5, 1, 0)},
		}},
		{"prevkv", WatchOptions{PrevKV: true}, []*mvccpb.Event{
			{Type: mvccpb.PUT, Kv: kv("k", "2", 2, 3, 2, 0), PrevKv: kv("k", "1", 2, 2, 1, 0)},
			{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: 4}, PrevKv: kv("k", "2", 2, 3, 2, 0)},
			{Type: mvccpb.PUT, Kv: kv("k", "3", 5, 5, 1, 0)}, // a create event has no prev_kv
		}},
	}
	type stream struct {
		ws *WatchStream
		n  int
	}
	var synced, history []stream
	for _, tt := range tests {
		ws := ts.s.NewWatchStream()
		defer ws.Close()
		if _, _, err := ws.Watch(0, []byte("k"), nil, 0, tt.opts); err != nil {
			t.Fatal(err)
		}
		synced = append(synced, stream{ws, len(tt.want)})
	}
	ts.must(putReq("k", "2")) // 3
	ts.must(delReq("k", ""))  // 4
	ts.must(putReq("k", "3")) // 5
	for _, tt := range tests {
		ws := ts.s.NewWatchStream()
		defer ws.Close()
		if _, _, err := ws.Watch(0, []byte("k"), nil, 3, tt.opts); err != nil {
			t.Fatal(err)
		}
		history = append(history, stream{ws, len(tt.want)})
	}
	for i, tt := range tests {
		t.Run(tt.name+"/synced", func(t *testing.T) {
			requireEvents(t, collectEvents(t, synced[i].ws, synced[i].n), tt.want)
		})
		t.Run(tt.name+"/from history", func(t *testing.T) {
			requireEvents(t, collectEvents(t, history[i].ws, history[i].n), tt.want)
		})
	}
}

func TestWatchIDsAndErrors(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	ws := ts.s.NewWatchStream()
	defer ws.Close()
	steps := []struct {
		name    string
		id      int64
		key     string
		end     []byte // nil: one key; empty: every key >= key
		wantID  int64
		wantErr error
	}{
		{"auto id starts at 0", 0, "a", nil, 0, nil},
		{"explicit id", 2, "a", nil, 2, nil},
		{"auto id 1", 0, "a", nil, 1, nil},
		{"auto id skips 2", 0, "a", nil, 3, nil},
		{"duplicate id", 2, "a", nil, -1, ErrDuplicateWatch},
		{"end before key", 0, "b", []byte("a"), -1, ErrEmptyWatchRange},
		{"end equal key", 0, "b", []byte("b"), -1, ErrEmptyWatchRange},
		{"from-key", 0, "b", []byte{}, 4, nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			id, _, err := ws.Watch(st.id, []byte(st.key), st.end, 0, WatchOptions{})
			if id != st.wantID || !errors.Is(err, st.wantErr) {
				t.Fatalf("Watch = %d, %v; want %d, %v", id, err, st.wantID, st.wantErr)
			}
		})
	}
	t.Run("cancel", func(t *testing.T) {
		if ws.Cancel(9) {
			t.Fatal("Cancel of unknown id returned true")
		}
		for _, id := range []int64{0, 1, 2, 3} {
			if !ws.Cancel(id) {
				t.Fatalf("Cancel(%d) = false", id)
			}
		}
		ts.must(putReq("a", "1"))
		ts.must(putReq("c", "1"))
		r := recvResp(t, ws) // only watcher 4 ("b" and up) remains
		if r.WatchID != 4 || len(r.Events) != 1 || string(r.Events[0].Kv.Key) != "c" {
			t.Fatalf("got %+v, want watcher 4's event for c", r)
		}
		expectNoResponse(t, ws)
	})
}

func TestWatchCompacted(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	for i := range 9 {
		ts.must(putReq(fmt.Sprintf("k%d", i%3), fmt.Sprint(i))) // revs 2..10
	}
	ts.must(compactReq(6))
	tests := []struct {
		start       int64
		wantCompact int64
		wantFirst   int64
	}{
		{2, 6, 0},
		{5, 6, 0},
		{6, 0, 6}, // the compaction revision itself is still watchable
		{8, 0, 8},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("start=%d", tt.start), func(t *testing.T) {
			ws := ts.s.NewWatchStream()
			defer ws.Close()
			if _, _, err := ws.Watch(0, []byte("k"), []byte("l"), tt.start, WatchOptions{}); err != nil {
				t.Fatal(err)
			}
			r := recvResp(t, ws)
			if r.CompactRevision != tt.wantCompact {
				t.Fatalf("CompactRevision = %d, want %d (response %+v)", r.CompactRevision, tt.wantCompact, r)
			}
			if tt.wantCompact != 0 {
				if len(r.Events) != 0 {
					t.Fatalf("compaction response carries %d events", len(r.Events))
				}
				return
			}
			evs := append(r.Events, collectEvents(t, ws, int(10-tt.wantFirst+1)-len(r.Events))...)
			for i, ev := range evs {
				if ev.Kv.ModRevision != tt.wantFirst+int64(i) {
					t.Fatalf("event %d at rev %d, want %d", i, ev.Kv.ModRevision, tt.wantFirst+int64(i))
				}
			}
		})
	}
}

// watchSpec is one watcher and what the model says it must receive.
type watchSpec struct {
	name     string
	key, end []byte
	start    int64 // 0: from the next revision
	opts     WatchOptions
	openAt   int  // workload step at which it is opened
	slow     bool // not read until the workload is over
	overflow bool // the workload must overflow its buffer

	ws       *WatchStream
	startRev int64 // effective first revision
	got      []*mvccpb.Event
	resps    []WatchResponse
}

func (w *watchSpec) want(m *model) []*mvccpb.Event {
	var out []*mvccpb.Event
	for rev := w.startRev; rev <= m.rev; rev++ {
		for _, ev := range m.events[rev] {
			k := ev.Kv.Key
			var in bool
			switch {
			case w.end == nil:
				in = bytes.Equal(k, w.key)
			case len(w.end) == 0:
				in = bytes.Compare(k, w.key) >= 0
			default:
				in = bytes.Compare(k, w.key) >= 0 && bytes.Compare(k, w.end) < 0
			}
			if !in || (ev.Type == mvccpb.PUT && w.opts.NoPut) || (ev.Type == mvccpb.DELETE && w.opts.NoDelete) {
				continue
			}
			e := proto.Clone(ev).(*mvccpb.Event)
			if w.opts.PrevKV && !(ev.Type == mvccpb.PUT && ev.Kv.CreateRevision == ev.Kv.ModRevision) {
				if prev, ok := m.states[rev-1][string(k)]; ok {
					e.PrevKv = prev.pb(string(k))
				}
			}
			out = append(out, e)
		}
	}
	return out
}

func (w *watchSpec) drain() {
	for {
		select {
		case r := <-w.ws.Chan():
			w.resps = append(w.resps, r)
			w.got = append(w.got, r.Events...)
		default:
			return
		}
	}
}

// TestWatchMatchesModel runs a random workload while several watchers (from
// history, synced, filtered, with prev_kv, and one that is never read until
// the end) observe it; each must receive exactly the model's events for its
// range, in order, with no gap or duplicate, and a slow one must not block
// Apply. It runs with the default meta cache, whose values give prev_kv
// without a read, and with one so small that most prev_kvs are read.
func TestWatchMatchesModel(t *testing.T) {
	t.Run("default cache", func(t *testing.T) { watchMatchesModel(t, nil) })
	t.Run("tiny cache", func(t *testing.T) { watchMatchesModel(t, newMetaCache(3, 64)) })
}

func watchMatchesModel(t *testing.T, metas *metaCache) {
	steps := 500
	if testing.Short() {
		steps = 150
	}
	rng := rand.New(rand.NewPCG(7, 7))
	ts := openTestStore(t, nil, Config{MinLeaseTTL: 2})
	if metas != nil {
		ts.s.metas = metas
	}
	m := newModel(2)
	g := &gen{rng: rng, m: m}
	specs := []*watchSpec{
		{name: "all from rev 1", key: []byte{0}, end: []byte{}, start: 1},
		{name: "all with prev_kv, synced", key: []byte{0}, end: []byte{}, opts: WatchOptions{PrevKV: true}},
		{name: "all, slow reader", key: []byte{0}, end: []byte{}, start: 1, slow: true, overflow: true},
		{name: "prefix a, synced", key: []byte("a"), end: []byte("b"), openAt: steps / 3},
		{name: "key b with prev_kv from history", key: []byte("b"), start: 2, opts: WatchOptions{PrevKV: true}, openAt: steps / 2},
		{name: "range with prev_kv, nodelete", key: []byte("a\x00"), end: []byte("c"), start: 5, opts: WatchOptions{PrevKV: true, NoDelete: true}, openAt: steps / 4},
		{name: "from-key b, noput, slow", key: []byte("b"), end: []byte{}, opts: WatchOptions{NoPut: true}, slow: true, openAt: steps / 5},
		{name: "future start", key: []byte{0}, end: []byte{}, start: 50, openAt: 1},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for step := range steps {
			for _, w := range specs {
				if w.openAt == step {
					w.ws = ts.s.NewWatchStream()
					if _, _, err := w.ws.Watch(0, w.key, w.end, w.start, w.opts); err != nil {
						t.Errorf("%s: Watch: %v", w.name, err)
						return
					}
					w.startRev = w.start
					if w.start == 0 {
						w.startRev = m.rev + 1
					}
				}
			}
			var reqs []*pb.InternalRaftRequest
			for range 1 + rng.IntN(6) {
				r := g.request()
				if r.Compaction != nil {
					continue // compaction is covered by TestWatchCompacted
				}
				reqs = append(reqs, r)
				m.apply(r)
			}
			ts.apply(reqs...)
			for _, w := range specs {
				if w.ws != nil && !w.slow {
					w.drain()
				}
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("Apply blocked: a watcher that is not read must not stall writes")
	}
	if t.Failed() {
		return
	}
	for _, w := range specs {
		t.Run(w.name, func(t *testing.T) {
			defer w.ws.Close()
			want := w.want(m)
			if len(want) < 20 {
				t.Fatalf("workload gave this watcher only %d events; the test would prove little", len(want))
			}
			pollUntil(t, watchDeadline, fmt.Sprintf("%d events (have %d)", len(want), len(w.got)), func() bool {
				w.drain()
				return len(w.got) >= len(want)
			})
			for i := range want {
				if !proto.Equal(w.got[i], want[i]) {
					t.Fatalf("event %d of %d:\n got %v\nwant %v", i, len(want), prototext.Format(w.got[i]), prototext.Format(want[i]))
				}
			}
			if len(w.got) != len(want) {
				t.Fatalf("%d events, want %d", len(w.got), len(want))
			}
			last := int64(0)
			for _, r := range w.resps {
				if len(r.Events) == 0 || r.CompactRevision != 0 {
					t.Fatalf("unexpected response without events: %+v", r)
				}
				top := slices.MaxFunc(r.Events, func(a, b *mvccpb.Event) int { return int(a.Kv.ModRevision - b.Kv.ModRevision) })
				if r.Revision < top.Kv.ModRevision || r.Revision < last {
					t.Fatalf("response revision %d below its events (%d) or the previous response (%d)", r.Revision, top.Kv.ModRevision, last)
				}
				last = r.Revision
			}
			if w.overflow && len(w.resps) <= streamBuffer {
				t.Fatalf("slow watcher got %d responses; the workload never overflowed its buffer of %d", len(w.resps), streamBuffer)
			}
		})
	}
}

// TestWatchSlowStreamAcrossCompaction: a watcher that fell behind and whose
// next revision gets compacted must be told so (CompactRevision), never
// silently skip events.
func TestWatchSlowStreamAcrossCompaction(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	ws := ts.s.NewWatchStream()
	defer ws.Close()
	if _, _, err := ws.Watch(0, []byte("k"), nil, 0, WatchOptions{}); err != nil {
		t.Fatal(err)
	}
	const n = 3 * streamBuffer
	for i := range n {
		ts.must(putReq("k", fmt.Sprint(i))) // revs 2..n+1
	}
	ts.must(compactReq(n))
	var evs []*mvccpb.Event
	var compact int64
	for compact == 0 {
		r := recvResp(t, ws)
		evs = append(evs, r.Events...)
		compact = r.CompactRevision
	}
	if compact != n {
		t.Fatalf("CompactRevision = %d, want %d", compact, n)
	}
	for i, ev := range evs {
		if ev.Kv.ModRevision != int64(i)+2 {
			t.Fatalf("event %d at rev %d, want %d: gap or duplicate", i, ev.Kv.ModRevision, i+2)
		}
	}
	if len(evs) < streamBuffer || len(evs) >= n {
		t.Fatalf("%d events before the compaction notice, want the buffered %d..%d", len(evs), streamBuffer, n-1)
	}
}

func TestWatchRequestProgress(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	ts.must(putReq("a", "1"))
	ws := ts.s.NewWatchStream()
	defer ws.Close()
	if ws.RequestProgress(-1) {
		t.Fatal("progress granted to a stream with no watchers")
	}
	if _, _, err := ws.Watch(0, []byte("a"), nil, 0, WatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if !ws.RequestProgress(-1) {
		t.Fatal("progress refused for a synced stream")
	}
	if r := recvResp(t, ws); r.WatchID != -1 || r.Revision != 2 || len(r.Events) != 0 {
		t.Fatalf("progress = %+v, want id -1 at rev 2", r)
	}
	for i := range 5 {
		ts.must(putReq("a", fmt.Sprint(i))) // revs 3..7
	}
	if evs := collectEvents(t, ws, 5); evs[4].Kv.ModRevision != 7 {
		t.Fatalf("last event at %d, want 7", evs[4].Kv.ModRevision)
	}
	if !ws.RequestProgress(0) {
		t.Fatal("progress refused for a synced watcher")
	}
	if r := recvResp(t, ws); r.WatchID != 0 || r.Revision != 7 || len(r.Events) != 0 {
		t.Fatalf("progress = %+v, want id 0 at rev 7", r)
	}
	if ws.RequestProgress(5) {
		t.Fatal("progress granted for an unknown watcher")
	}
}

// A watcher whose stream was full when its events came is caught up as soon
// as the reader makes room, not at the next periodic sync (here an hour
// away): a full stream costs a watcher the time its reader takes, as in
// etcd, not a sync interval on top.
func TestWatchFullStreamRetriedSoon(t *testing.T) {
	defer func(d time.Duration) { syncInterval = d }(syncInterval)
	syncInterval = time.Hour
	ts := openTestStore(t, nil, Config{})
	ws := ts.s.NewWatchStream()
	defer ws.Close()
	if _, _, err := ws.Watch(0, []byte("k"), nil, 0, WatchOptions{}); err != nil {
		t.Fatal(err)
	}
	const n = streamBuffer + 50
	for i := range n {
		ts.must(putReq("k", fmt.Sprint(i))) // revs 2..n+1; the stream fills at streamBuffer
	}
	if got := ts.s.SlowWatchers(); got != 1 {
		t.Fatalf("%d slow watchers with the stream full, want 1", got)
	}
	evs := collectEvents(t, ws, n)
	pollUntil(t, watchDeadline, "no slow watcher once the stream is read", func() bool { return ts.s.SlowWatchers() == 0 })
	for i, ev := range evs {
		if ev.Kv.ModRevision != int64(i)+2 {
			t.Fatalf("event %d at rev %d, want %d: gap or duplicate", i, ev.Kv.ModRevision, i+2)
		}
	}
}
