package mvcc

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// TestMetaCacheValueBudget: whatever is written, the values kept stay within
// the budget and the count bound, the accounting matches what is kept, and
// dropping a value keeps the key's meta (a later write still finds it).
func TestMetaCacheValueBudget(t *testing.T) {
	const maxKeys, maxValues = 50, 4096
	c := newMetaCache(maxKeys, maxValues)
	rng := rand.New(rand.NewPCG(1, 2))
	latest := map[string]int64{}
	for i := range 5000 {
		key := []byte(fmt.Sprintf("k%03d", rng.IntN(80)))
		rev := int64(i + 1)
		switch rng.IntN(4) {
		case 0:
			c.set(key, meta{}, false)
			delete(latest, string(key))
		default:
			kv := &mvccpb.KeyValue{Key: key, ModRevision: rev, Value: make([]byte, rng.IntN(1500))}
			c.setKV(key, meta{Mod: Rev{Main: rev}}, true, kv)
			latest[string(key)] = rev
		}
		if len(c.entries) > maxKeys {
			t.Fatalf("step %d: %d entries, bound %d", i, len(c.entries), maxKeys)
		}
		sum := 0
		for k, e := range c.entries {
			sum += KVBytes(e.kv)
			if rev, ok := latest[k]; ok != e.exists || (ok && e.m.Mod.Main != rev) {
				t.Fatalf("step %d: key %s cached as (%v, %d), latest (%v, %d)", i, k, e.exists, e.m.Mod.Main, ok, rev)
			}
			if e.kv != nil && e.kv.ModRevision != e.m.Mod.Main {
				t.Fatalf("step %d: key %s keeps value of rev %d with meta of rev %d", i, k, e.kv.ModRevision, e.m.Mod.Main)
			}
		}
		if sum != c.valueBytes || sum > maxValues {
			t.Fatalf("step %d: values kept %d bytes, accounted %d, budget %d", i, sum, c.valueBytes, maxValues)
		}
	}
	kept := 0
	for _, e := range c.entries {
		if e.kv != nil {
			kept++
		}
	}
	if kept == 0 {
		t.Fatal("no value kept: the budget evicts everything")
	}
	c.reset()
	if len(c.entries) != 0 || c.valueBytes != 0 {
		t.Fatalf("after reset: %d entries, %d value bytes", len(c.entries), c.valueBytes)
	}
}

// TestMetaCacheValuesOnlyForPrevKVWatchers: apply keeps values for prev_kv
// only while a watcher asks for prev_kv, and the count of such watchers
// follows Watch, Cancel and Close.
func TestMetaCacheValuesOnlyForPrevKVWatchers(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	ts.must(putReq("a", "1"))
	if ts.s.metas.valueBytes != 0 {
		t.Fatalf("%d value bytes kept with no prev_kv watcher", ts.s.metas.valueBytes)
	}
	ws := ts.s.NewWatchStream()
	if _, _, err := ws.Watch(0, []byte("a"), nil, 0, WatchOptions{}); err != nil {
		t.Fatal(err)
	}
	ts.must(putReq("a", "2"))
	if ts.s.metas.valueBytes != 0 {
		t.Fatalf("%d value bytes kept with only a watcher without prev_kv", ts.s.metas.valueBytes)
	}
	withPrev, _, err := ws.Watch(0, []byte("a"), nil, 0, WatchOptions{PrevKV: true})
	if err != nil {
		t.Fatal(err)
	}
	ts.must(putReq("a", "3"))
	if got := ts.s.metas.valueBytes; got != len("a3") {
		t.Fatalf("%d value bytes kept with a prev_kv watcher, want %d", got, len("a3"))
	}
	ts.must(putReq("a", "4"))
	// The prev_kv watcher got version 3 as the previous version of 4.
	pollUntil(t, watchDeadline, "the prev_kv watcher's second event", func() bool {
		for {
			select {
			case r := <-ws.Chan():
				for _, ev := range r.Events {
					if r.WatchID == withPrev && string(ev.Kv.Value) == "4" {
						if ev.PrevKv == nil || string(ev.PrevKv.Value) != "3" {
							t.Fatalf("prev_kv of a=4 is %v, want a=3", ev.PrevKv)
						}
						return true
					}
				}
			default:
				return false
			}
		}
	})
	ws.Cancel(withPrev)
	if n := ts.s.hub.prevWatchers.Load(); n != 0 {
		t.Fatalf("%d prev_kv watchers after Cancel", n)
	}
	ws.Close()
	if n := ts.s.hub.prevWatchers.Load(); n != 0 {
		t.Fatalf("%d prev_kv watchers after Close", n)
	}
	ws2 := ts.s.NewWatchStream()
	if _, _, err := ws2.Watch(0, []byte("b"), nil, 0, WatchOptions{PrevKV: true}); err != nil {
		t.Fatal(err)
	}
	ws2.Close()
	if n := ts.s.hub.prevWatchers.Load(); n != 0 {
		t.Fatalf("%d prev_kv watchers after closing a stream that had one", n)
	}
	// A watch asked for on a stream already closed is refused: it would
	// never be removed.
	if _, _, err := ws2.Watch(0, []byte("c"), nil, 0, WatchOptions{PrevKV: true}); !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("Watch on a closed stream: %v, want ErrStreamClosed", err)
	}
	if n, w := ts.s.hub.prevWatchers.Load(), ts.s.Watchers(); n != 0 || w != 0 {
		t.Fatalf("%d prev_kv watchers, %d watchers after a watch on a closed stream", n, w)
	}

	// A watcher canceled by compaction stays counted until the client
	// cancels it, then is not.
	ws3 := ts.s.NewWatchStream()
	defer ws3.Close()
	for _, v := range []string{"1", "2", "3"} {
		ts.must(putReq("d", v))
	}
	old := ts.s.Rev() - 1
	ts.must(compactReq(ts.s.Rev()))
	id, _, err := ws3.Watch(0, []byte("d"), nil, old, WatchOptions{PrevKV: true})
	if err != nil {
		t.Fatal(err)
	}
	pollUntil(t, watchDeadline, "the compaction cancel", func() bool {
		select {
		case r := <-ws3.Chan():
			return r.CompactRevision != 0
		default:
			return false
		}
	})
	if n := ts.s.hub.prevWatchers.Load(); n != 1 {
		t.Fatalf("%d prev_kv watchers after a compaction cancel, want 1 until the client cancels", n)
	}
	if !ws3.Cancel(id) {
		t.Fatal("Cancel of the compacted watcher: not found")
	}
	if n := ts.s.hub.prevWatchers.Load(); n != 0 {
		t.Fatalf("%d prev_kv watchers after canceling the compacted watcher", n)
	}
}
