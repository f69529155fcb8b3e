package mvcc

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
type metaCache struct {
	max     int
	entries map[string]cachedMeta
}

type cachedMeta struct {
	m      meta
	exists bool
}

// defaultMetaCacheKeys bounds the cache. It is for the keys being written
// (a Kubernetes cluster's leases, endpoints, busy objects): a miss costs a
// Pebble read, which was 87% of a put's apply on a leader with 4096 entries
// and a 10,000-key working set (docs/benchmarks.md). Each entry costs about
// 150 bytes of heap, so the cache stays under 3 MiB.
const defaultMetaCacheKeys = 16384

func newMetaCache(max int) *metaCache {
	return &metaCache{max: max, entries: make(map[string]cachedMeta)}
}

func (c *metaCache) get(key []byte) (cachedMeta, bool) {
	e, ok := c.entries[string(key)]
	return e, ok
}

func (c *metaCache) set(key []byte, m meta, exists bool) {
	if _, ok := c.entries[string(key)]; !ok && len(c.entries) >= c.max {
		for k := range c.entries { // map order is random: random eviction
			delete(c.entries, k)
			break
		}
	}
	c.entries[string(key)] = cachedMeta{m: m, exists: exists}
}

func (c *metaCache) reset() { clear(c.entries) }

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
