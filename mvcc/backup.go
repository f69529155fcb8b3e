package mvcc

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/cockroachdb/pebble/v2"

	"github.com/ballast-kv/ballast/store"
)

// A backup is what `etcdctl snapshot save` writes: a state snapshot,
// zero-padded to a multiple of 512 bytes, then the sha256 of all of that.
// etcd's tools recognise a snapshot with a checksum by exactly this shape
// (size % 512 == 32), and the checksum covers every byte before it.
const backupAlign = 512

// WriteBackup writes a backup of the applied state to w and returns its
// size, checksum included.
func (s *Store) WriteBackup(w io.Writer) (int64, error) {
	sum := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(w, sum)}
	if _, err := s.WriteSnapshot(cw); err != nil {
		return cw.n, err
	}
	if pad := (backupAlign - cw.n%backupAlign) % backupAlign; pad > 0 {
		if _, err := cw.Write(make([]byte, pad)); err != nil {
			return cw.n, err
		}
	}
	n, err := w.Write(sum.Sum(nil))
	return cw.n + int64(n), err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ErrNotBackup is returned for a file that is not a Ballast backup.
var ErrNotBackup = errors.New("not a Ballast snapshot file")

// BackupReader reads the state snapshot inside a backup of a known size and
// checks the sha256 that ends it.
type BackupReader struct {
	r    io.Reader // the bytes before the checksum
	sum  hash.Hash // nil: the checksum is read but not compared
	tail io.Reader // the checksum
}

// NewBackupReader reads a backup of size bytes from r. With verify false
// the checksum is read but not compared (etcdutl's --skip-hash-check).
func NewBackupReader(r io.Reader, size int64, verify bool) (*BackupReader, error) {
	if size < int64(len(snapshotMagic))+sha256.Size || size%backupAlign != sha256.Size {
		return nil, fmt.Errorf("%w: its size (%d bytes) is not a multiple of %d plus a sha256 checksum", ErrNotBackup, size, backupAlign)
	}
	body := io.LimitReader(r, size-sha256.Size)
	if !verify {
		return &BackupReader{r: body, tail: r}, nil
	}
	sum := sha256.New()
	return &BackupReader{r: io.TeeReader(body, sum), sum: sum, tail: r}, nil
}

func (b *BackupReader) Read(p []byte) (int, error) { return b.r.Read(p) }

// Verify reads what is left of the body (the padding) and compares the
// checksum. Call it after the snapshot has been consumed.
func (b *BackupReader) Verify() error {
	if _, err := io.Copy(io.Discard, b.r); err != nil {
		return err
	}
	want := make([]byte, sha256.Size)
	if _, err := io.ReadFull(b.tail, want); err != nil {
		return fmt.Errorf("%w: no checksum: %v", ErrBadSnapshot, err)
	}
	if b.sum == nil {
		return nil // --skip-hash-check
	}
	if got := b.sum.Sum(nil); !bytes.Equal(got, want) {
		return fmt.Errorf("%w: sha256 mismatch: the file says %x, its contents hash to %x", ErrBadSnapshot, want, got)
	}
	return nil
}

// SnapshotInfo describes a state snapshot without restoring it.
type SnapshotInfo struct {
	Revision        int64
	CompactRevision int64
	Keys            int64  // live keys
	Leases          int64  // leases granted and not yet revoked or expired
	Entries         uint64 // Pebble keys: every version, event and index entry
	Checksum        uint32 // the snapshot's own crc32c
}

// observe counts one pair of a snapshot.
func (i *SnapshotInfo) observe(key, val []byte) {
	i.Entries++
	switch {
	case key[0] == store.PrefixLatest:
		i.Keys++
	case key[0] == store.PrefixLease:
		i.Leases++
	case bytes.Equal(key, metaRev) && len(val) == 8:
		i.Revision = int64(store.Uint64(val))
	case bytes.Equal(key, metaCompactRev) && len(val) == 8:
		i.CompactRevision = int64(store.Uint64(val))
	}
}

// ReadSnapshotInfo reads a whole state snapshot, checks it and describes it.
func ReadSnapshotInfo(r io.Reader) (SnapshotInfo, error) {
	sr, err := newSnapshotReader(r)
	if err != nil {
		return SnapshotInfo{}, err
	}
	for {
		key, _, err := sr.next()
		if err != nil {
			return SnapshotInfo{}, err
		}
		if key == nil {
			return sr.info, nil
		}
	}
}

// ForgetCluster makes restored state the seed of a new cluster, as
// `etcdutl snapshot restore` does: the old member table and alarms go, and
// the applied Raft index returns to zero so that the new cluster's log,
// which starts again at 1, is applied. Keys, revisions, leases and
// compaction are kept.
func (s *Store) ForgetCluster() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.db.NewBatch()
	defer b.Close()
	b.DeleteRange([]byte{store.PrefixMember}, []byte{store.PrefixMember + 1}, nil)
	b.DeleteRange([]byte{store.PrefixLabels}, []byte{store.PrefixLabels + 1}, nil)
	b.Delete(metaAlarms, nil)
	b.Delete(metaApplied, nil)
	s.db.MustCommit("forget cluster", b, pebble.Sync)
	return s.load()
}
