package mvcc

import (
	"bytes"
	"cmp"
	"errors"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/ballast-kv/ballast/store"
)

// view reads the state as of one moment: r is a Pebble snapshot when
// serving, or the indexed batch of the apply in progress.
type view struct {
	r          pebble.Reader
	rev        int64 // current revision as seen by this view
	compactRev int64 // -1 before the first compaction
}

// RangeOptions narrows a range read; zero values mean "all at current".
type RangeOptions struct {
	Rev       int64 // 0: current
	Limit     int64 // 0: no limit
	CountOnly bool
	KeysOnly  bool // key, create, mod and version only (etcd's fast path)
	// SkipCount stops the scan after Limit keys, for a caller that knows
	// the count already; Count is then only the keys read.
	SkipCount bool
}

// RangeResult is a store-level range: Count is every live key in the
// range at Rev, regardless of Limit.
type RangeResult struct {
	KVs   []*mvccpb.KeyValue
	Count int64
	Rev   int64 // the view's current revision (what etcd reports)
}

// bounds turns etcd's (key, range_end) into a half-open interval over keys:
// end nil means the single key; empty end means every key >= key.
func gteEnd(end []byte) []byte {
	if len(end) == 1 && end[0] == 0 {
		return []byte{}
	}
	return end
}

func (v *view) checkRev(rev int64) (int64, error) {
	if rev > v.rev {
		return 0, ErrFutureRev
	}
	if rev <= 0 {
		rev = v.rev
	}
	if rev < v.compactRev {
		return 0, ErrCompacted
	}
	return rev, nil
}

// Range reads [key, end) at opts.Rev. end follows gteEnd's convention.
func (v *view) Range(key, end []byte, opts RangeOptions) (*RangeResult, error) {
	rev, err := v.checkRev(opts.Rev)
	if err != nil {
		return nil, err
	}
	res := &RangeResult{Rev: v.rev}
	limit := opts.Limit
	if limit <= 0 || opts.CountOnly {
		limit = math.MaxInt64
		if opts.CountOnly {
			limit = 0
		}
	}
	if rev == v.rev {
		err = v.rangeLatest(key, end, limit, opts, &res.Count, &res.KVs)
	} else {
		err = v.rangeAt(key, end, rev, limit, opts, &res.Count, &res.KVs)
	}
	return res, err
}

// rangeLatest scans l/: one entry per live key, in key order.
func (v *view) rangeLatest(key, end []byte, limit int64, opts RangeOptions, count *int64, kvs *[]*mvccpb.KeyValue) error {
	if end == nil {
		m, ok, err := getMeta(v.r, key)
		if err != nil || !ok {
			return err
		}
		*count = 1
		if limit > 0 {
			kv, err := v.kvFromMeta(key, m, opts.KeysOnly)
			if err != nil {
				return err
			}
			*kvs = append(*kvs, kv)
		}
		return nil
	}
	upper := store.PrefixEnd([]byte{store.PrefixLatest})
	if len(end) > 0 {
		if bytes.Compare(end, key) <= 0 {
			return nil
		}
		upper = latestKey(end)
	}
	it, err := v.r.NewIter(&pebble.IterOptions{LowerBound: latestKey(key), UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	var fills []recordFill
	for ok := it.First(); ok; ok = it.Next() {
		if int64(len(*kvs)) >= limit {
			if opts.SkipCount {
				break
			}
			*count++
			continue
		}
		*count++
		m, err := decodeMeta(it.Value())
		if err != nil {
			return err
		}
		kv := metaKV(append([]byte(nil), it.Key()[1:]...), m, opts.KeysOnly)
		if !opts.KeysOnly {
			fills = append(fills, recordFill{kv, m.Mod})
		}
		*kvs = append(*kvs, kv)
	}
	if err := it.Error(); err != nil {
		return err
	}
	return v.fill(fills, true)
}

// metaKV is key's KeyValue as far as its latest-index entry m tells: all
// but the value, and without the lease for keys only.
func metaKV(key []byte, m meta, keysOnly bool) *mvccpb.KeyValue {
	kv := &mvccpb.KeyValue{Key: key, CreateRevision: m.Create, ModRevision: m.Mod.Main, Version: m.Version}
	if !keysOnly {
		kv.Lease = m.Lease
	}
	return kv
}

// kvFromMeta is metaKV with the value read from the key's record.
func (v *view) kvFromMeta(key []byte, m meta, keysOnly bool) (*mvccpb.KeyValue, error) {
	kv := metaKV(key, m, keysOnly)
	if keysOnly {
		return kv, nil
	}
	if err := v.fill([]recordFill{{kv, m.Mod}}, true); err != nil {
		return nil, err
	}
	return kv, nil
}

// recordReader reads event-log entries through one iterator: seeking it is
// far cheaper than a Pebble Get per key when a range returns many keys.
type recordReader struct {
	v       *view
	it      *pebble.Iterator
	seeking bool // the first record was read; use the iterator from now on
}

func (v *view) records() *recordReader { return &recordReader{v: v} }

func (rr *recordReader) close() {
	if rr.it != nil {
		rr.it.Close()
	}
}

// record returns the event at r; it aliases the iterator's memory until the
// next call.
func (rr *recordReader) record(r Rev) (record, error) {
	if rr.it == nil && !rr.seeking {
		// One value (a single-key get) is cheaper with a plain Get.
		rr.seeking = true
		b, err := store.GetCopy(rr.v.r, revKey(r))
		if errors.Is(err, store.ErrNotFound) {
			return record{}, errCorrupt // the latest index points at a missing event
		}
		if err != nil {
			return record{}, err
		}
		return decodeRecord(b)
	}
	if rr.it == nil {
		it, err := rr.v.r.NewIter(&pebble.IterOptions{LowerBound: []byte{store.PrefixRevision}, UpperBound: []byte{store.PrefixRevision + 1}})
		if err != nil {
			return record{}, err
		}
		rr.it = it
	}
	k := revKey(r)
	if !rr.it.SeekGE(k) || !bytes.Equal(rr.it.Key(), k) {
		if err := rr.it.Error(); err != nil {
			return record{}, err
		}
		return record{}, errCorrupt // the latest index points at a missing event
	}
	return decodeRecord(rr.it.Value())
}

// recordFill is a returned key whose fields still come from its record.
type recordFill struct {
	kv  *mvccpb.KeyValue
	rev Rev
}

// fill reads the records of a range's returned keys after the scan, in
// revision order, through one iterator: in key order the records (and the
// values in blob files) of keys updated at random lie all over the event
// log, and each read was a seek back and forth across it. It sets create
// revision and version, and with values also lease and value.
func (v *view) fill(fills []recordFill, values bool) error {
	if len(fills) == 0 {
		return nil
	}
	slices.SortFunc(fills, func(a, b recordFill) int {
		return cmp.Or(cmp.Compare(a.rev.Main, b.rev.Main), cmp.Compare(a.rev.Sub, b.rev.Sub))
	})
	rr := v.records()
	defer rr.close()
	for _, f := range fills {
		rec, err := rr.record(f.rev)
		if err != nil {
			return err
		}
		f.kv.CreateRevision, f.kv.Version = rec.Create, rec.Version
		if values {
			f.kv.Lease = rec.Lease
			f.kv.Value = append([]byte(nil), rec.Value...)
		}
	}
	return nil
}

// rangeAt scans the version index for the newest version of each key at or
// below rev, skipping keys whose newest version there is a tombstone. It
// reads the events (values) of the first limit keys only: the others are
// counted from the index alone, unless opts.SkipCount ends the scan there.
func (v *view) rangeAt(key, end []byte, rev int64, limit int64, opts RangeOptions, count *int64, kvs *[]*mvccpb.KeyValue) error {
	lower := versionPrefix(key)
	upper := []byte{store.PrefixVersion + 1}
	switch {
	case end == nil:
		upper = store.PrefixEnd(lower)
	case len(end) > 0:
		if bytes.Compare(end, key) <= 0 {
			return nil
		}
		upper = versionPrefix(end)
	}
	it, err := v.r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	var fills []recordFill
	err = v.scanAt(it, rev, limit, opts, count, kvs, &fills)
	if err != nil {
		return err
	}
	return v.fill(fills, !opts.KeysOnly)
}

// scanAt is rangeAt's walk of the version index: it counts, and returns
// the keys with only their key and mod revision set, their records to fill.
func (v *view) scanAt(it *pebble.Iterator, rev int64, limit int64, opts RangeOptions, count *int64, kvs *[]*mvccpb.KeyValue, fills *[]recordFill) error {
	// The scan works on the index's own bytes and decodes a key only for
	// the versions it returns: counting the rest must stay cheap, since a
	// page of a list counts every key in the range.
	var prefix, seek []byte
	ok := it.First()
	for ok {
		k := it.Key()
		if !isVersionKey(k) {
			return errCorrupt
		}
		prefix = append(prefix[:0], k[:len(k)-16]...)
		r := versionRev(k)
		if r.Main > rev {
			seek = versionSeek(seek[:0], prefix, rev)
			ok = it.SeekGE(seek)
			if ok && isVersionOf(it.Key(), prefix) {
				r = versionRev(it.Key())
			} else {
				r = Rev{}
			}
		}
		if r.Main > 0 && ok && it.Value()[0] == versionPut {
			*count++
			if int64(len(*kvs)) < limit {
				key, _, err := unescapeKey(prefix[1:])
				if err != nil {
					return err
				}
				kv := &mvccpb.KeyValue{Key: key, ModRevision: r.Main}
				*kvs = append(*kvs, kv)
				*fills = append(*fills, recordFill{kv, r})
			}
			if opts.SkipCount && int64(len(*kvs)) >= limit {
				return nil
			}
		}
		ok = nextKey(it, prefix)
	}
	return it.Error()
}

// isVersionOf reports whether k is a version key of the key whose versions
// start with prefix: another key's versions may begin with the same bytes,
// but only this key's are exactly a revision (16 bytes) longer.
func isVersionOf(k, prefix []byte) bool {
	return bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+16
}

// nextKey moves it from a version of the key whose versions start with
// prefix to the first version of the next key. A key has few versions
// between compactions: stepping over them is cheaper than a seek, which
// it falls back to after a few.
func nextKey(it *pebble.Iterator, prefix []byte) bool {
	if !it.Valid() {
		return false // a seek for the version at a revision found nothing after it
	}
	if !isVersionOf(it.Key(), prefix) {
		return true // that seek already landed on the next key
	}
	for range 4 {
		if !it.Next() {
			return false
		}
		if !isVersionOf(it.Key(), prefix) {
			return true
		}
	}
	return it.SeekGE(store.PrefixEnd(prefix))
}

// kvAt returns key's version at rev, or nil if it did not exist then.
func (v *view) kvAt(key []byte, rev int64) (*mvccpb.KeyValue, error) {
	if rev < v.compactRev || rev <= 0 {
		return nil, nil
	}
	var count int64
	var kvs []*mvccpb.KeyValue
	if err := v.rangeAt(key, nil, rev, 1, RangeOptions{}, &count, &kvs); err != nil || len(kvs) == 0 {
		return nil, err
	}
	return kvs[0], nil
}

func getMeta(r pebble.Reader, key []byte) (meta, bool, error) {
	b, err := store.GetCopy(r, latestKey(key))
	if errors.Is(err, store.ErrNotFound) {
		return meta{}, false, nil
	}
	if err != nil {
		return meta{}, false, err
	}
	m, err := decodeMeta(b)
	return m, err == nil, err
}
