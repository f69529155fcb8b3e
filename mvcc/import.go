package mvcc

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/ballast-kv/ballast/store"
)

// Importer writes another store's history (kine's, say) into an empty
// Store at the revisions it had there: one change per revision, revisions
// rising, gaps allowed. Versions are counted from what it is given.
type Importer struct {
	s       *Store
	b       *pebble.Batch
	lastRev int64
}

// NewImporter starts an import into s, which must hold no keys.
func (s *Store) NewImporter() (*Importer, error) {
	if s.Rev() > 1 {
		return nil, errors.New("mvcc: import into a store that already has revisions")
	}
	return &Importer{s: s, b: s.db.NewIndexedBatch()}, nil
}

func (im *Importer) next(rev int64) error {
	if rev <= im.lastRev || rev <= 1 {
		return fmt.Errorf("mvcc: import revision %d after %d: revisions must rise from 2", rev, im.lastRev)
	}
	im.lastRev = rev
	return nil
}

// Put records a put of key at rev. create is the key's create revision
// when the source knows it (0: rev if the key is not live, else unchanged).
func (im *Importer) Put(rev int64, key, value []byte, create, lease int64) error {
	if err := im.next(rev); err != nil {
		return err
	}
	old, exists, err := getMeta(im.b, key)
	if err != nil {
		return err
	}
	m := meta{Create: rev, Mod: Rev{Main: rev}, Version: 1, Lease: lease}
	if exists {
		m.Create, m.Version = old.Create, old.Version+1
		if old.Lease != 0 && old.Lease != lease {
			im.b.Delete(attachedKey(old.Lease, key), nil)
		}
	}
	if create != 0 {
		m.Create = create
	}
	if lease != 0 {
		im.b.Set(attachedKey(lease, key), nil, nil)
	}
	im.b.Set(latestKey(key), m.encode(), nil)
	im.b.Set(versionKey(key, m.Mod), []byte{versionPut}, nil)
	rec := record{Kind: kindPut, Key: key, Create: m.Create, Version: m.Version, Lease: lease, Value: value}
	im.b.Set(revKey(m.Mod), rec.encode(), nil)
	return im.maybeCommit()
}

// Delete records the deletion of key at rev; a key that is not live is
// left alone (and rev stays unused).
func (im *Importer) Delete(rev int64, key []byte) error {
	if err := im.next(rev); err != nil {
		return err
	}
	old, exists, err := getMeta(im.b, key)
	if err != nil || !exists {
		return err
	}
	if old.Lease != 0 {
		im.b.Delete(attachedKey(old.Lease, key), nil)
	}
	im.b.Delete(latestKey(key), nil)
	im.b.Set(versionKey(key, Rev{Main: rev}), []byte{versionTombstone}, nil)
	im.b.Set(revKey(Rev{Main: rev}), (&record{Kind: kindDelete, Key: key}).encode(), nil)
	return im.maybeCommit()
}

// GrantLease records lease id with ttl seconds; it runs from when the
// cluster's leader starts.
func (im *Importer) GrantLease(id, ttl int64) {
	im.b.Set(leaseKey(id), encodeLease(ttl, 0), nil)
}

func (im *Importer) maybeCommit() error {
	if im.b.Len() < restoreBatchBytes {
		return nil
	}
	im.s.db.MustCommit("import", im.b, pebble.NoSync)
	im.b.Close()
	im.b = im.s.db.NewIndexedBatch()
	return nil
}

// Finish sets the store's revision (at least the last imported) and
// compaction revision (0: none), makes it all durable and reloads it.
func (im *Importer) Finish(rev, compactRev int64) error {
	rev = max(rev, im.lastRev, 1)
	im.b.Set(metaRev, store.AppendUint64(nil, uint64(rev)), nil)
	if compactRev > 0 {
		im.b.Set(metaCompactRev, store.AppendUint64(nil, uint64(min(compactRev, rev))), nil)
	}
	im.s.db.MustCommit("import", im.b, pebble.Sync)
	im.b.Close()
	im.s.mu.Lock()
	defer im.s.mu.Unlock()
	im.s.metas.reset()
	return im.s.load()
}
