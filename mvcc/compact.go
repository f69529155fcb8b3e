package mvcc

import (
	"bytes"
	"context"
	"hash/crc32"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/ballast-kv/ballast/store"
)

// compactor removes superseded versions at or below the compaction revision
// in the background, in bounded batches. Compact's apply only records the
// revision: reads below it fail at once, and reads at or above it never look
// at what the compactor removes, so physical progress can differ between
// members without changing any answer or hash.
type compactor struct {
	s      *Store
	kickCh chan struct{}
	stopCh chan struct{}
	wg     sync.WaitGroup

	mu     sync.Mutex
	done   int64         // physically compacted up to here
	doneCh chan struct{} // closed and replaced when done advances
}

var metaCompactDone = metaKey("compact-done")

// compactChunk bounds the event-log entries examined per batch, and
// compactPause is the rest between batches, as etcd compacts 1000 keys at a
// time with 10 ms between (--compaction-batch-limit,
// --compaction-sleep-interval). Every member compacts when it applies the
// same entry; in batches with rests, no member's compaction holds the CPU
// and the database for longer than a batch at a time.
const (
	compactChunk = 1000
	compactPause = 10 * time.Millisecond
)

func newCompactor(s *Store) *compactor {
	c := &compactor{s: s, kickCh: make(chan struct{}, 1), stopCh: make(chan struct{}), doneCh: make(chan struct{})}
	c.reload()
	c.wg.Add(1)
	go c.run()
	c.kick()
	return c
}

// reload reads how far physical compaction got (at start, and after a
// snapshot replaced the state).
func (c *compactor) reload() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = -1
	if b, err := store.GetCopy(c.s.db, metaCompactDone); err == nil && len(b) == 8 {
		c.done = int64(store.Uint64(b))
	}
}

func (c *compactor) kick() {
	select {
	case c.kickCh <- struct{}{}:
	default:
	}
}

func (c *compactor) close() {
	select {
	case <-c.stopCh:
	default:
		close(c.stopCh)
	}
	c.wg.Wait()
}

func (c *compactor) run() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stopCh:
			return
		case <-c.kickCh:
		}
		for {
			target := c.s.CompactRev()
			c.mu.Lock()
			done := c.done
			c.mu.Unlock()
			if target <= done {
				break
			}
			next, err := c.step(done, target)
			if err != nil {
				c.s.log.Error("compaction failed", "err", err)
				break
			}
			c.mu.Lock()
			c.done = next
			close(c.doneCh)
			c.doneCh = make(chan struct{})
			c.mu.Unlock()
			if next < target {
				select {
				case <-c.stopCh:
					return
				case <-time.After(compactPause):
				}
			}
		}
	}
}

// step compacts the keys written in (done, target], at most compactChunk
// event-log entries of them, and returns how far it got.
func (c *compactor) step(done, target int64) (int64, error) {
	snap := c.s.db.NewSnapshot()
	defer snap.Close()
	// Start at done, not after it: a tombstone at exactly the previous
	// compaction revision was kept then and must go now.
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: revKey(Rev{Main: max(done, 0)}), UpperBound: revKey(Rev{Main: target + 1})})
	if err != nil {
		return done, err
	}
	seen := map[string]bool{}
	reached := target
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		r := decodeRevKey(it.Key())
		// Stop at a revision's first entry, and only past done: a revision
		// with more entries than a chunk (a large txn) is taken whole.
		if n >= compactChunk && r.Sub == 0 && r.Main-1 > done {
			reached = r.Main - 1
			break
		}
		n++
		rec, err := decodeRecord(it.Value())
		if err != nil {
			it.Close()
			return done, err
		}
		seen[string(rec.Key)] = true
	}
	if err := it.Close(); err != nil {
		return done, err
	}
	// One iterator serves every key, in key order, so each seek starts from
	// where the last one ended; a Pebble iterator per key cost more than
	// the compaction itself.
	keys := make([][]byte, 0, len(seen))
	for k := range seen {
		keys = append(keys, []byte(k))
	}
	slices.SortFunc(keys, bytes.Compare)
	vit, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{store.PrefixVersion}, UpperBound: []byte{store.PrefixVersion + 1}})
	if err != nil {
		return done, err
	}
	defer vit.Close()
	b := c.s.db.NewBatch()
	defer b.Close()
	for _, k := range keys {
		if err := compactKey(vit, b, k, target); err != nil {
			return done, err
		}
	}
	b.Set(metaCompactDone, store.AppendUint64(nil, uint64(reached)), nil)
	c.s.db.MustCommit("compaction", b, pebble.NoSync)
	return reached, nil
}

// compactKey deletes the versions of key at or below target except the
// newest, which is also deleted when it is a tombstone below target. it
// ranges over the version index.
func compactKey(it *pebble.Iterator, b *pebble.Batch, key []byte, target int64) error {
	p := versionPrefix(key)
	first := true
	for ok := it.SeekGE(versionSeek(nil, p, target)); ok && isVersionOf(it.Key(), p); ok = it.Next() {
		if !isVersionKey(it.Key()) {
			return errCorrupt
		}
		rev := versionRev(it.Key())
		keep := first && (it.Value()[0] == versionPut || rev.Main == target)
		first = false
		if !keep {
			b.Delete(append([]byte(nil), it.Key()...), nil)
			b.Delete(revKey(rev), nil)
		}
	}
	return it.Error()
}

// WaitCompacted blocks until compaction at rev is physically done.
func (s *Store) WaitCompacted(ctx context.Context, rev int64) error {
	c := s.compactor
	for {
		c.mu.Lock()
		done, ch := c.done, c.doneCh
		c.mu.Unlock()
		if done >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.stopCh:
			return ErrClosed
		}
	}
}

// HashKV hashes the logical key-value history up to rev (0: current): every
// version after the compaction revision, and the version of each key that
// compaction keeps. It is the same on every member whatever their physical
// compaction progress. It returns the hash, the compaction revision, the
// revision hashed and the current revision.
func (s *Store) HashKV(rev int64) (hash uint32, compactRev, hashRev, curRev int64, err error) {
	v, release := s.readView()
	defer release()
	if rev > 0 && rev < v.compactRev {
		return 0, 0, 0, 0, ErrCompacted
	}
	if rev > v.rev {
		return 0, 0, 0, 0, ErrFutureRev
	}
	if rev <= 0 {
		rev = v.rev
	}
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	h.Write([]byte("key"))
	it, err := v.r.NewIter(&pebble.IterOptions{LowerBound: []byte{store.PrefixRevision}, UpperBound: revKey(Rev{Main: rev + 1})})
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		r := decodeRevKey(it.Key())
		if r.Main <= v.compactRev {
			kept, err := v.keptAt(it.Value(), r, v.compactRev)
			if err != nil {
				return 0, 0, 0, 0, err
			}
			if !kept {
				continue
			}
		}
		h.Write(it.Key())
		h.Write(it.Value())
	}
	return h.Sum32(), v.compactRev, rev, v.rev, it.Error()
}

// keptAt reports whether the event at r survives a compaction at target.
func (v *view) keptAt(recBytes []byte, r Rev, target int64) (bool, error) {
	rec, err := decodeRecord(recBytes)
	if err != nil {
		return false, err
	}
	p := versionPrefix(rec.Key)
	it, err := v.r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: store.PrefixEnd(p)})
	if err != nil {
		return false, err
	}
	defer it.Close()
	if !it.SeekGE(versionSeek(nil, p, target)) {
		return false, it.Error()
	}
	_, newest, err := decodeVersionKey(it.Key())
	if err != nil {
		return false, err
	}
	if newest != r {
		return false, nil
	}
	return it.Value()[0] == versionPut || r.Main == target, nil
}
