package mvcc

import "go.etcd.io/etcd/api/v3/mvccpb"

// metaCache keeps the latest meta of recently written keys for the apply
// goroutine. Every put and delete, and every revision compare of a txn,
// reads the key's current meta first; from Pebble that is a seek through
// the memtables and sstables. etcd keeps every key in an in-memory index;
// this keeps a bounded number (and absent keys too), so memory stays
// bounded on any data size while the hot keys are served from memory.
//
// Only the apply goroutine touches it, and only the apply goroutine changes
// a key's latest meta, writing through the cache as it writes the batch; a
// restore resets it. Batches are always committed (a failed commit stops
// the member, store.Fatal), so the cache never holds a meta Pebble does
// not.
//
// A key's entry also keeps the version its put event carried, while the
// values kept stay within a byte budget and some watcher asks for prev_kv:
// when the key next changes, that version is the event's prev_kv, which
// Kubernetes' watchers all ask for, and it then costs no read of the event
// log on the apply goroutine.
type metaCache struct {
	max        int
	entries    map[string]cachedMeta
	valueBytes int // of the kvs kept
	maxValues  int // bound on valueBytes
}

type cachedMeta struct {
	m      meta
	exists bool
	kv     *mvccpb.KeyValue // the version m describes, or nil
}

// defaultMetaCacheKeys bounds the cache. It is for the keys being written
// (a Kubernetes cluster's leases, endpoints, busy objects): a miss costs a
// Pebble read, which was 87% of a put's apply on a leader with 4096 entries
// and a 10,000-key working set (docs/benchmarks.md). Each entry costs about
// 150 bytes of heap, so the metas stay under 3 MiB; the values kept add up
// to defaultMetaCacheValues more, and about 100 bytes per KeyValue.
const defaultMetaCacheKeys = 16384

// defaultMetaCacheValues bounds the bytes of keys and values kept for
// prev_kv: a Kubernetes cluster's busy objects, at a few KiB each.
const defaultMetaCacheValues = 8 << 20

func newMetaCache(max, maxValues int) *metaCache {
	return &metaCache{max: max, maxValues: maxValues, entries: make(map[string]cachedMeta)}
}

func (c *metaCache) get(key []byte) (cachedMeta, bool) {
	e, ok := c.entries[string(key)]
	return e, ok
}

func (c *metaCache) set(key []byte, m meta, exists bool) { c.setKV(key, m, exists, nil) }

// setKV records a key's latest meta and, if kv is not nil, the version
// itself.
func (c *metaCache) setKV(key []byte, m meta, exists bool, kv *mvccpb.KeyValue) {
	if old, ok := c.entries[string(key)]; ok {
		c.valueBytes -= KVBytes(old.kv)
	} else if len(c.entries) >= c.max {
		for k, e := range c.entries { // map order is random: random eviction
			c.valueBytes -= KVBytes(e.kv)
			delete(c.entries, k)
			break
		}
	}
	c.entries[string(key)] = cachedMeta{m: m, exists: exists, kv: kv}
	c.valueBytes += KVBytes(kv)
	if c.valueBytes <= c.maxValues {
		return
	}
	for k, e := range c.entries { // over budget: drop random values, keep the metas
		if c.valueBytes <= c.maxValues {
			break
		}
		if e.kv != nil {
			c.valueBytes -= KVBytes(e.kv)
			e.kv = nil
			c.entries[k] = e
		}
	}
}

// KVBytes is the size of kv's key and value, 0 for nil: what a cache or a
// message holding it is bounded by.
func KVBytes(kv *mvccpb.KeyValue) int {
	if kv == nil {
		return 0
	}
	return len(kv.Key) + len(kv.Value)
}

func (c *metaCache) reset() {
	clear(c.entries)
	c.valueBytes = 0
}

// meta returns a key's latest meta as the writer's batch has it.
func (w *writer) meta(key []byte) (meta, bool, error) {
	if w.s == nil {
		return getMeta(w.r, key)
	}
	if e, ok := w.s.metas.get(key); ok {
		return e.m, e.exists, nil
	}
	m, ok, err := getMeta(w.r, key)
	if err == nil {
		w.s.metas.set(key, m, ok)
	}
	return m, ok, err
}

// cachedKV returns the version of key that m describes if the cache kept
// it, or nil. A version the current request wrote is not an event's
// previous version: a txn may put a key and then delete it with a range
// from a lower key (etcd lets that through), and etcd's prev_kv for that
// delete is the version before the txn, read at its revision minus one.
func (w *writer) cachedKV(key []byte, m meta) *mvccpb.KeyValue {
	if w.s == nil {
		return nil
	}
	e, ok := w.s.metas.get(key)
	if !ok || e.kv == nil || e.kv.ModRevision != m.Mod.Main || e.kv.ModRevision > w.rev {
		return nil
	}
	return e.kv
}
