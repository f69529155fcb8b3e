package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"

	"github.com/ballast-kv/ballast/store"
)

// LogStore is raft.LogStore and raft.StableStore on one Pebble instance.
// Appends and stable-store writes are synced before they return: that fsync
// is what makes an acknowledged write durable.
type LogStore struct {
	db *store.DB

	mu          sync.Mutex // guards first/last, which cache the log's bounds
	first, last uint64
	lastTerm    uint64 // term of entry last, when this process stored it (else 0)

	// BeforeSync, if set, sees every append before it is made durable,
	// with the entry before it when that entry's term is known.
	BeforeSync func(prev entryID, logs []*raft.Log)

	// OnSync, if set, observes the duration of each synced append (for the
	// etcd_disk_wal_fsync_duration_seconds metric).
	OnSync func(time.Duration)
}

var (
	_ raft.LogStore    = (*LogStore)(nil)
	_ raft.StableStore = (*LogStore)(nil)

	errStableNotFound = errors.New("not found") // hashicorp/raft matches this text
)

// NewLogStore uses db, which must be dedicated to Raft.
func NewLogStore(db *store.DB) (*LogStore, error) {
	s := &LogStore{db: db}
	iter, err := db.NewIter(&pebble.IterOptions{
		LowerBound: []byte{store.PrefixRaftLog},
		UpperBound: []byte{store.PrefixRaftLog + 1},
	})
	if err != nil {
		return nil, err
	}
	defer iter.Close()
	if iter.First() {
		s.first = store.Uint64(iter.Key()[1:])
	}
	if iter.Last() {
		s.last = store.Uint64(iter.Key()[1:])
	}
	return s, iter.Error()
}

// firstMissing returns the first index in from..to that has no entry, or
// 0 if none is missing. It reads keys in order, once.
func (s *LogStore) firstMissing(from, to uint64) (uint64, error) {
	iter, err := s.db.NewIter(&pebble.IterOptions{LowerBound: logKey(from), UpperBound: logKey(to + 1)})
	if err != nil {
		return 0, err
	}
	defer iter.Close()
	want := from
	for iter.First(); iter.Valid(); iter.Next() {
		if store.Uint64(iter.Key()[1:]) != want {
			return want, nil
		}
		want++
	}
	if err := iter.Error(); err != nil {
		return 0, err
	}
	if want <= to {
		return want, nil
	}
	return 0, nil
}

func logKey(index uint64) []byte {
	return store.AppendUint64([]byte{store.PrefixRaftLog}, index)
}

func (s *LogStore) FirstIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first, nil
}

func (s *LogStore) LastIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, nil
}

func (s *LogStore) GetLog(index uint64, out *raft.Log) error {
	v, err := store.GetCopy(s.db, logKey(index))
	if errors.Is(err, store.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return err
	}
	return decodeLog(v, out)
}

func (s *LogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func (s *LogStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	var buf []byte
	for _, l := range logs {
		buf = encodeLog(buf[:0], l)
		if err := b.Set(logKey(l.Index), buf, nil); err != nil {
			return err
		}
	}
	if s.BeforeSync != nil {
		var prev entryID
		s.mu.Lock()
		if s.last+1 == logs[0].Index && s.lastTerm != 0 {
			prev = entryID{s.last, s.lastTerm}
		}
		s.mu.Unlock()
		s.BeforeSync(prev, logs)
	}
	start := time.Now()
	// A log that cannot take an append cannot vote or acknowledge anything.
	s.db.MustCommit("raft log append", b, pebble.Sync)
	if s.OnSync != nil {
		s.OnSync(time.Since(start))
	}
	s.mu.Lock()
	if s.first == 0 {
		s.first = logs[0].Index
	}
	s.last, s.lastTerm = logs[len(logs)-1].Index, logs[len(logs)-1].Term
	s.mu.Unlock()
	return nil
}

func (s *LogStore) DeleteRange(min, max uint64) error {
	s.db.Must("raft log truncation", func() error { return s.db.DeleteRange(logKey(min), logKey(max+1), pebble.Sync) })
	s.mu.Lock()
	defer s.mu.Unlock()
	if min <= s.first {
		s.first = max + 1
	}
	if max >= s.last {
		s.last, s.lastTerm = min-1, 0
	}
	if s.first > s.last {
		s.first, s.last = 0, 0
	}
	return nil
}

func stableKey(k []byte) []byte { return store.Key(store.PrefixRaftStable, k) }

func (s *LogStore) Set(key, val []byte) error {
	s.db.Must("raft term and vote", func() error { return s.db.Set(stableKey(key), val, pebble.Sync) })
	return nil
}

func (s *LogStore) Get(key []byte) ([]byte, error) {
	v, err := store.GetCopy(s.db, stableKey(key))
	if errors.Is(err, store.ErrNotFound) {
		return nil, errStableNotFound
	}
	return v, err
}

func (s *LogStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, store.AppendUint64(nil, val))
}

func (s *LogStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raftlog: stable key %q has %d bytes, want 8", key, len(v))
	}
	return store.Uint64(v), nil
}

// Log entry encoding: index, term, appended-at (unix ns), type, then
// length-prefixed data and extensions.
func encodeLog(dst []byte, l *raft.Log) []byte {
	dst = binary.BigEndian.AppendUint64(dst, l.Index)
	dst = binary.BigEndian.AppendUint64(dst, l.Term)
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	dst = binary.BigEndian.AppendUint64(dst, uint64(at))
	dst = append(dst, byte(l.Type))
	dst = binary.AppendUvarint(dst, uint64(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.AppendUvarint(dst, uint64(len(l.Extensions)))
	return append(dst, l.Extensions...)
}

var errCorruptLog = errors.New("raftlog: corrupt log entry")

func decodeLog(b []byte, l *raft.Log) error {
	if len(b) < 25 {
		return errCorruptLog
	}
	l.Index = binary.BigEndian.Uint64(b)
	l.Term = binary.BigEndian.Uint64(b[8:])
	if at := int64(binary.BigEndian.Uint64(b[16:])); at != 0 {
		l.AppendedAt = time.Unix(0, at)
	} else {
		l.AppendedAt = time.Time{}
	}
	l.Type = raft.LogType(b[24])
	rest := b[25:]
	var err error
	if l.Data, rest, err = readBytes(rest); err != nil {
		return err
	}
	if l.Extensions, rest, err = readBytes(rest); err != nil {
		return err
	}
	if len(rest) != 0 {
		return errCorruptLog
	}
	return nil
}

func readBytes(b []byte) (val, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, nil, errCorruptLog
	}
	if n == 0 {
		return nil, b[k:], nil
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}
