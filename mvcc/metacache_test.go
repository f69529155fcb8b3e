package mvcc

import (
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
			sum += kvBytes(e.kv)
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
