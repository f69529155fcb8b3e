package mvcc

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/cockroachdb/pebble/v2"

	"github.com/ballast-kv/ballast/store"
)

// A state snapshot is every key of the state instance, in key order:
//
//	"ballast-state-v1\n"
//	{ uvarint(len key) key uvarint(len value) value }...
//	uvarint(0)                         (keys are never empty)
//	uint64 count, uint32 crc32c of everything before it, big-endian
//
// It carries the applied Raft index with the data (meta keys are state
// keys), so a member that restores it skips the entries it already covers.
const snapshotMagic = "ballast-state-v1\n"

// metaRestoring marks a restore in progress: if the node stops half way,
// the state is not to be trusted until a snapshot is restored again.
var metaRestoring = metaKey("restoring")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// WriteSnapshot writes a consistent copy of the applied state to w and
// returns the applied index it reflects. It streams from a Pebble snapshot:
// memory stays bounded whatever the state's size.
func (s *Store) WriteSnapshot(w io.Writer) (uint64, error) {
	s.mu.RLock()
	snap := s.db.NewSnapshot()
	applied := s.applied
	s.mu.RUnlock()
	defer snap.Close()

	it, err := snap.NewIter(nil)
	if err != nil {
		return 0, err
	}
	defer it.Close()
	crc := crc32.New(crcTable)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 256<<10)
	var count uint64
	var hdr [2 * binary.MaxVarintLen64]byte
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return 0, err
	}
	for ok := it.First(); ok; ok = it.Next() {
		if string(it.Key()) == string(metaRestoring) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, err
		}
		n := binary.PutUvarint(hdr[:], uint64(len(it.Key())))
		bw.Write(hdr[:n])
		bw.Write(it.Key())
		n = binary.PutUvarint(hdr[:], uint64(len(v)))
		bw.Write(hdr[:n])
		if _, err := bw.Write(v); err != nil {
			return 0, err
		}
		count++
	}
	if err := it.Error(); err != nil {
		return 0, err
	}
	bw.WriteByte(0)
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	var trailer [12]byte
	binary.BigEndian.PutUint64(trailer[:8], count)
	binary.BigEndian.PutUint32(trailer[8:], crc.Sum32())
	_, err = w.Write(trailer[:])
	return applied, err
}

// ErrBadSnapshot is returned by Restore for a stream that is not a state
// snapshot or does not check out.
var ErrBadSnapshot = errors.New("mvcc: invalid state snapshot")

// restoreBatchBytes bounds the memory a restore holds before committing.
const restoreBatchBytes = 4 << 20

// Restore replaces the whole state with the snapshot read from r. It must be
// called from the apply goroutine. Readers are held off while it runs; watch
// streams carry on from the restored event log (or learn that they were
// compacted away).
func (s *Store) Restore(r io.Reader) error {
	_, err := s.RestoreInfo(r)
	return err
}

// RestoreInfo is Restore, and describes what it restored.
func (s *Store) RestoreInfo(r io.Reader) (SnapshotInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.metas.reset()

	b := s.db.NewBatch()
	b.DeleteRange([]byte{0}, []byte{0xff, 0xff, 0xff, 0xff}, nil)
	b.Set(metaRestoring, []byte{1}, nil)
	s.db.MustCommit("snapshot restore", b, pebble.Sync)
	b.Close()

	sr, err := newSnapshotReader(r)
	if err != nil {
		return SnapshotInfo{}, err
	}
	b = s.db.NewBatch()
	defer func() { b.Close() }()
	for {
		key, val, err := sr.next()
		if err != nil {
			return SnapshotInfo{}, err
		}
		if key == nil {
			break
		}
		b.Set(key, val, nil)
		if b.Len() >= restoreBatchBytes {
			s.db.MustCommit("snapshot restore", b, pebble.NoSync)
			b.Close()
			b = s.db.NewBatch()
		}
	}
	b.Delete(metaRestoring, nil)
	// One synced commit makes every earlier one durable too (one WAL).
	s.db.MustCommit("snapshot restore", b, pebble.Sync)
	if err := s.load(); err != nil {
		return SnapshotInfo{}, err
	}
	s.pages.reset()
	s.hub.resync(s.rev)
	s.compactor.reload()
	s.compactor.kick()
	s.log.Info("state restored from snapshot", "keys", sr.info.Keys, "entries", sr.info.Entries, "revision", s.rev, "applied-index", s.applied)
	return sr.info, nil
}

// snapshotReader reads the pairs of a state snapshot and checks its trailer.
type snapshotReader struct {
	br   *bufio.Reader
	tr   *teeByteReader
	crc  hash.Hash32
	info SnapshotInfo // filled in as pairs are read
}

func newSnapshotReader(r io.Reader) (*snapshotReader, error) {
	crc := crc32.New(crcTable)
	br := bufio.NewReaderSize(r, 256<<10)
	sr := &snapshotReader{br: br, tr: &teeByteReader{r: br, crc: crc}, crc: crc, info: SnapshotInfo{Revision: 1, CompactRevision: -1}}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(sr.tr, magic); err != nil || string(magic) != snapshotMagic {
		return nil, fmt.Errorf("%w: bad header", ErrBadSnapshot)
	}
	return sr, nil
}

// next returns the next pair, or a nil key once the trailer checked out.
// The slices are fresh for every pair.
func (sr *snapshotReader) next() (key, val []byte, err error) {
	kl, err := binary.ReadUvarint(sr.tr)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	if kl == 0 {
		sum := sr.crc.Sum32()
		var trailer [12]byte
		if _, err := io.ReadFull(sr.br, trailer[:]); err != nil {
			return nil, nil, fmt.Errorf("%w: no trailer", ErrBadSnapshot)
		}
		if binary.BigEndian.Uint64(trailer[:8]) != sr.info.Entries || binary.BigEndian.Uint32(trailer[8:]) != sum {
			return nil, nil, fmt.Errorf("%w: %d keys, checksum %08x; the trailer says %d keys, %08x", ErrBadSnapshot, sr.info.Entries, sum, binary.BigEndian.Uint64(trailer[:8]), binary.BigEndian.Uint32(trailer[8:]))
		}
		sr.info.Checksum = sum
		return nil, nil, nil
	}
	if kl > 1<<31 {
		return nil, nil, fmt.Errorf("%w: bad key length", ErrBadSnapshot)
	}
	key = make([]byte, kl)
	if _, err := io.ReadFull(sr.tr, key); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	vl, err := binary.ReadUvarint(sr.tr)
	if err != nil || vl > 1<<31 {
		return nil, nil, fmt.Errorf("%w: bad value length", ErrBadSnapshot)
	}
	val = make([]byte, vl)
	if _, err := io.ReadFull(sr.tr, val); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	sr.info.observe(key, val)
	return key, val, nil
}

// Restoring reports whether a restore was interrupted: the state is partial
// and a snapshot must be restored before it is used.
func (s *Store) Restoring() bool {
	_, err := store.GetCopy(s.db, metaRestoring)
	return err == nil
}

// teeByteReader feeds what it reads into a checksum.
type teeByteReader struct {
	r   *bufio.Reader
	crc io.Writer
}

func (t *teeByteReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.crc.Write(p[:n])
	return n, err
}

func (t *teeByteReader) ReadByte() (byte, error) {
	c, err := t.r.ReadByte()
	if err == nil {
		t.crc.Write([]byte{c})
	}
	return c, err
}
