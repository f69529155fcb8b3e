package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// crashCopy copies an open store's directory as a kill -9 would leave it:
// everything written so far, nothing flushed or closed.
func crashCopy(t *testing.T, dir string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == "LOCK" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			// Renamed or removed since the listing (the record's temporary
			// file, say): a crash now would not leave it either.
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// syncedWrites opens a new store at dir and commits n synced puts of 100
// bytes, as the Raft log does, leaving the store open.
func syncedWrites(t *testing.T, dir string, n int) *DB {
	t.Helper()
	db, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	val := bytes.Repeat([]byte{'v'}, 100)
	for i := range n {
		if err := db.Set(fmt.Appendf(nil, "k%05d", i), val, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func onlyFile(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	if len(m) != 1 {
		t.Fatalf("%s in %s: %v, want one file", pattern, dir, m)
	}
	return m[0]
}

func flipBit(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x04
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// countKeys opens dir with Pebble alone (no Ballast check) and counts keys.
func countKeys(t *testing.T, dir string) int {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{FormatMajorVersion: pebble.FormatValueSeparation})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	it, _ := db.NewIter(nil)
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	it.Close()
	return n
}

// openExitCode opens dir with Ballast's Open and returns the exit status
// it stopped with (0: it opened).
func openExitCode(t *testing.T, dir string) (code int) {
	t.Helper()
	exit = func(c int) { code = c; panic("exit") }
	defer func() { exit = os.Exit }()
	defer func() {
		if r := recover(); r != nil && r != "exit" {
			panic(r)
		}
	}()
	db, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	db.Close()
	return 0
}

// A store left by a crash, WAL and all, passes the check and keeps every
// synced write; so does one opened and closed again and again.
func TestCheckFilesAcceptsHealthyStores(t *testing.T) {
	dir := t.TempDir()
	db := syncedWrites(t, dir, 600)
	crashed := crashCopy(t, dir)
	db.Close()
	if _, _, err := checkFiles(vfs.Default, crashed, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("check of a crashed store: %v", err)
	}
	if code := openExitCode(t, crashed); code != 0 {
		t.Fatalf("a crashed, undamaged store did not open: exit %d", code)
	}
	if n := countKeys(t, crashed); n != 600 {
		t.Fatalf("after the crash %d keys, want 600", n)
	}
	for range 3 {
		if code := openExitCode(t, dir); code != 0 {
			t.Fatalf("reopen: exit %d", code)
		}
	}
}

// A flipped bit in a WAL's last block, followed by records synced after
// it, is damage: Pebble alone would take it for a torn write and drop the
// synced records after it; Ballast refuses to open.
func TestCheckFilesFindsAFlipInTheWALsLastBlock(t *testing.T) {
	dir := t.TempDir()
	db := syncedWrites(t, dir, 600) // about 80 KiB of WAL: the flip is in block 2
	crashed := crashCopy(t, dir)
	db.Close()
	wal := onlyFile(t, crashed, "*.log")
	info, _ := os.Stat(wal)
	off := info.Size() - 40*140 // about 40 records before the end
	if off/logBlockSize != (info.Size()-1)/logBlockSize {
		t.Fatalf("offset %d is not in the last block of %d bytes", off, info.Size())
	}
	flipBit(t, wal, off)

	plain := crashCopy(t, crashed)
	if n := countKeys(t, plain); n >= 600 {
		t.Fatalf("Pebble alone kept all %d keys: the flip missed the records", n)
	}
	_, _, err := checkFiles(vfs.Default, crashed, slog.New(slog.DiscardHandler))
	if !errors.Is(err, pebble.ErrCorruption) || !strings.Contains(err.Error(), wal) {
		t.Fatalf("check: %v, want corruption in %s", err, wal)
	}
	if code := openExitCode(t, crashed); code != ExitStorageFailure {
		t.Fatalf("open: exit %d, want %d", code, ExitStorageFailure)
	}
}

// Damage in the last record written, past what the record of synced
// files vouches for, cannot be told from a torn write: the store opens
// without that record, as after a crash before its sync. Once the record
// says the bytes were synced, the same flip is damage.
func TestCheckFilesTakesOnlyAnUnsyncedLastRecordForATornWrite(t *testing.T) {
	for _, vouched := range []bool{false, true} {
		t.Run(fmt.Sprint("vouched=", vouched), func(t *testing.T) {
			dir := t.TempDir()
			db := syncedWrites(t, dir, 100)
			db.rec.flush()
			crashed := crashCopy(t, dir)
			db.Close()
			if !vouched { // a crash before the record was written
				os.Remove(filepath.Join(crashed, recordFile))
			}
			wal := onlyFile(t, crashed, "*.log")
			info, _ := os.Stat(wal)
			flipBit(t, wal, info.Size()-10)
			code := openExitCode(t, crashed)
			if vouched {
				if code != ExitStorageFailure {
					t.Fatalf("open: exit %d, want %d", code, ExitStorageFailure)
				}
				return
			}
			if code != 0 {
				t.Fatalf("open: exit %d, want it to open", code)
			}
			if n := countKeys(t, crashed); n != 99 {
				t.Fatalf("%d keys, want 99", n)
			}
		})
	}
}

// A log cut short of what had been synced is damage, even where the cut
// falls between two records and leaves nothing that fails a checksum.
func TestCheckFilesFindsALogCutShort(t *testing.T) {
	dir := t.TempDir()
	db := syncedWrites(t, dir, 100)
	db.rec.flush()
	crashed := crashCopy(t, dir)
	db.Close()
	wal := onlyFile(t, crashed, "*.log")
	f, err := os.Open(wal)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := f.Stat()
	c, err := checkLog(f, info.Size(), walNum(t, wal))
	f.Close()
	if err != nil || c.torn || c.stop != info.Size() {
		t.Fatalf("an undamaged WAL: %+v, %v", c, err)
	}
	// Cut at the start of the last record: a clean end, as a log that was
	// never written further would have.
	if err := os.Truncate(wal, lastChunkStart(t, wal)); err != nil {
		t.Fatal(err)
	}
	_, _, err = checkFiles(vfs.Default, crashed, slog.New(slog.DiscardHandler))
	if !errors.Is(err, pebble.ErrCorruption) || !strings.Contains(err.Error(), "had been synced") {
		t.Fatalf("check of a WAL cut short: %v, want corruption", err)
	}
}

// A flip in the last record of the current MANIFEST has no later record to
// prove it; the record of synced files does, as Pebble syncs each edit.
func TestCheckFilesFindsAFlipInTheManifestsLastRecord(t *testing.T) {
	crashed, manifest := crashAfterFlushes(t, 3)
	flipBit(t, manifest, lastChunkStart(t, manifest)+8) // inside the last record's payload
	_, _, err := checkFiles(vfs.Default, crashed, slog.New(slog.DiscardHandler))
	if !errors.Is(err, pebble.ErrCorruption) || !strings.Contains(err.Error(), manifest) {
		t.Fatalf("check: %v, want corruption in %s", err, manifest)
	}
}

// lastChunkStart is the offset of the last valid chunk of a WAL or
// MANIFEST.
func lastChunkStart(t *testing.T, path string) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	last := int64(-1)
	for base := 0; base < len(data); base += logBlockSize {
		b := data[base:min(len(data), base+logBlockSize)]
		for off := 0; off < len(b); {
			c, ok := chunkAt(b, off)
			if !ok {
				break
			}
			if c.end > off+headerSize(c.typ) { // not an empty EOF trailer
				last = int64(base + off)
			}
			off = c.end
		}
	}
	if last < 0 {
		t.Fatalf("no chunk in %s", path)
	}
	return last
}

func walNum(t *testing.T, path string) uint32 {
	n, ok := fileNum(filepath.Base(path), "", ".log")
	if !ok {
		t.Fatalf("not a WAL: %s", path)
	}
	return uint32(n)
}

// crashAfterFlushes writes and flushes n times (n version edits after the
// first), and returns a crash copy of the store and its current MANIFEST.
func crashAfterFlushes(t *testing.T, n int) (crashed, manifest string) {
	t.Helper()
	dir := t.TempDir()
	db, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := db.Set(fmt.Appendf(nil, "k%d", i), []byte("v"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		if err := db.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	crashed = crashCopy(t, dir)
	db.Close()
	manifests, _ := filepath.Glob(filepath.Join(crashed, "MANIFEST-*"))
	return crashed, slices.Max(manifests)
}

// A flipped bit in the middle of a MANIFEST makes Pebble stop reading it
// there; Ballast refuses to open.
func TestCheckFilesFindsAFlipInTheManifest(t *testing.T) {
	crashed, manifest := crashAfterFlushes(t, 5)
	flipBit(t, manifest, 20) // inside the first record
	_, _, err := checkFiles(vfs.Default, crashed, slog.New(slog.DiscardHandler))
	if !errors.Is(err, pebble.ErrCorruption) || !strings.Contains(err.Error(), manifest) {
		t.Fatalf("check: %v, want corruption in %s", err, manifest)
	}
}

// The OPTIONS file has no checksum of its own; Ballast records one.
func TestCheckFilesFindsAFlipInTheOptions(t *testing.T) {
	for _, target := range []string{"OPTIONS-*", recordFile} {
		t.Run(target, func(t *testing.T) {
			dir := t.TempDir()
			if code := openExitCode(t, dir); code != 0 {
				t.Fatalf("first open: exit %d", code)
			}
			path := onlyFile(t, dir, target)
			flipBit(t, path, 12)
			if target == recordFile {
				// Also a flip that only changes a hex digit's case.
				b, _ := os.ReadFile(path)
				flipBit(t, path, 12)                                    // undo
				i := max(0, bytes.LastIndexAny(b[:len(b)-1], "abcdef")) // else the O of OPTIONS
				b, _ = os.ReadFile(path)
				b[i] ^= 0x20
				os.WriteFile(path, b, 0o644)
			}
			if code := openExitCode(t, dir); code != ExitStorageFailure {
				t.Fatalf("open with a flipped bit in %s: exit %d, want %d", filepath.Base(path), code, ExitStorageFailure)
			}
		})
	}
	// No record yet (a crash before it was written) is no damage.
	dir := t.TempDir()
	if code := openExitCode(t, dir); code != 0 {
		t.Fatal("first open failed")
	}
	os.Remove(filepath.Join(dir, recordFile))
	if code := openExitCode(t, dir); code != 0 {
		t.Fatalf("open without a record: exit %d", code)
	}
}

// The check reads arbitrary bytes without panicking, and never calls a
// log that ends in zeroes damaged.
func FuzzDamagedChunk(f *testing.F) {
	f.Add([]byte{}, uint32(1), 0)
	f.Add(bytes.Repeat([]byte{0}, 100), uint32(2), 50)
	f.Add([]byte("\xc2\xa9\x4d\x07\x23\x00\x05\x02\x00\x00\x00"), uint32(2), 3)
	f.Fuzz(func(t *testing.T, data []byte, logNum uint32, zeroTail int) {
		damagedLog(t, data, logNum)
		if zeroTail < 0 || zeroTail > 1<<16 {
			return
		}
		// A healthy log followed by preallocated zeroes is never damaged.
		var log bytes.Buffer
		log.Write(legacyChunk(data))
		log.Write(make([]byte, zeroTail))
		if bad := damagedLog(t, log.Bytes(), legacyLog); bad >= 0 {
			t.Fatalf("a valid chunk and %d zeroes called damaged at %d", zeroTail, bad)
		}
	})
}

// damagedLog runs the check of a WAL or MANIFEST over data, and returns
// where it proves damage, or -1.
func damagedLog(t *testing.T, data []byte, logNum uint32) int64 {
	c, err := checkLog(bytes.NewReader(data), int64(len(data)), logNum)
	if err != nil {
		t.Fatal(err)
	}
	if !c.proven {
		return -1
	}
	return c.stop
}

// legacyChunk is one full legacy chunk holding p (cut to fit a block).
func legacyChunk(p []byte) []byte {
	p = p[:min(len(p), logBlockSize-legacyHeader)]
	b := make([]byte, legacyHeader+len(p))
	b[4], b[5], b[6] = byte(len(p)), byte(len(p)>>8), 1
	copy(b[legacyHeader:], p)
	sum := maskedCRC(b[6:])
	b[0], b[1], b[2], b[3] = byte(sum), byte(sum>>8), byte(sum>>16), byte(sum>>24)
	return b
}

// A crash can leave a MANIFEST Pebble was starting: empty, not yet named
// by the marker. It is no damage, and the store opens. Superseded
// MANIFESTs, which Pebble never reads again, are removed at open.
func TestCheckFilesAcceptsAManifestACrashLeaves(t *testing.T) {
	dir := t.TempDir()
	if code := openExitCode(t, dir); code != 0 {
		t.Fatalf("open: exit %d", code)
	}
	if m := globAll(t, dir, "MANIFEST-*"); len(m) != 1 {
		t.Fatalf("MANIFESTs after open: %v, want only the current one", m)
	}
	if err := os.WriteFile(filepath.Join(dir, "MANIFEST-999999"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := openExitCode(t, dir); code != 0 {
		t.Fatalf("open after a crash's leftover: exit %d, want it to open", code)
	}
}

// Unsynced commits (the state store's applies) leave no proof in the WAL
// that a damaged record had been written whole; the periodic sync writes
// it.
func TestPeriodicSyncMakesUnsyncedWALDamageProvable(t *testing.T) {
	for _, interval := range []time.Duration{0, 5 * time.Millisecond} {
		t.Run(fmt.Sprint("sync every ", interval), func(t *testing.T) {
			dir := t.TempDir()
			db, err := Open(Config{Dir: dir, SyncInterval: interval})
			if err != nil {
				t.Fatal(err)
			}
			val := bytes.Repeat([]byte{'v'}, 100)
			for i := range 600 {
				b := db.NewBatch()
				b.Set(fmt.Appendf(nil, "k%05d", i), val, nil)
				db.MustCommit("test", b, pebble.NoSync)
				if i%50 == 0 && interval > 0 {
					waitForPeriodicSync(t, db)
				}
			}
			// Unsynced commits reach the file when Pebble's flush loop
			// writes them: wait for all 600 records (over 100 bytes each).
			waitForWAL(t, dir, 600*100)
			crashed := crashCopy(t, dir)
			db.Close()
			wal := slices.Max(globAll(t, crashed, "*.log"))
			info, _ := os.Stat(wal)
			flipBit(t, wal, info.Size()/3)
			_, _, err = checkFiles(vfs.Default, crashed, slog.New(slog.DiscardHandler))
			if detected := errors.Is(err, pebble.ErrCorruption); detected != (interval > 0) {
				t.Fatalf("check: %v; want corruption found only with a periodic sync", err)
			}
		})
	}
}

// waitForPeriodicSync waits until the periodic sync has taken up the
// commits made so far: it clears the flag just before its synced write,
// which follows them in the WAL.
func waitForPeriodicSync(t *testing.T, db *DB) {
	t.Helper()
	eventually(t, "a periodic sync", func() bool { return !db.unsynced.Load() })
}

// waitForWAL waits until dir's newest WAL holds at least size bytes.
func waitForWAL(t *testing.T, dir string, size int64) {
	t.Helper()
	eventually(t, fmt.Sprintf("a WAL of %d bytes", size), func() bool {
		info, err := os.Stat(slices.Max(globAll(t, dir, "*.log")))
		return err == nil && info.Size() >= size
	})
}

// eventually polls cond every millisecond until it holds, failing after 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("no %s within 5s", what)
		case <-tick.C:
		}
	}
}

func globAll(t *testing.T, dir, pattern string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	if len(m) == 0 {
		t.Fatalf("no %s in %s", pattern, dir)
	}
	return m
}

// walSyncChunk is one full WAL-sync chunk of log logNum holding p.
func walSyncChunk(logNum uint32, synced uint64, p []byte) []byte {
	b := make([]byte, walSyncHeader+len(p))
	binary.LittleEndian.PutUint16(b[4:], uint16(len(p)))
	b[6] = firstWALSyncType
	binary.LittleEndian.PutUint32(b[7:], logNum)
	binary.LittleEndian.PutUint64(b[11:], synced)
	copy(b[walSyncHeader:], p)
	binary.LittleEndian.PutUint32(b, maskedCRC(b[6:]))
	return b
}

// Only a chunk where the writer put one proves damage: a valid-looking
// chunk inside a payload (a client's value can hold any bytes) is not one.
func TestProofIsReadAtChunkBoundariesOnly(t *testing.T) {
	first := walSyncChunk(7, 0, []byte("first record"))
	planted := walSyncChunk(7, 1<<40, []byte("planted"))
	torn := walSyncChunk(7, uint64(len(first)), append([]byte("value: "), planted...))
	torn[len(torn)-1] ^= 1 // the torn record's payload fails its checksum
	log := append(append([]byte{}, first...), torn...)
	if bad := damagedLog(t, log, 7); bad >= 0 {
		t.Fatalf("a chunk inside a torn record's payload taken as proof of damage at %d", bad)
	}
	// The record after it, where the writer put it, is proof.
	next := walSyncChunk(7, uint64(len(log)), []byte("next record"))
	if bad := damagedLog(t, append(log, next...), 7); bad != int64(len(first)) {
		t.Fatalf("damage with a synced record after it: found at %d, want %d", bad, len(first))
	}
	// A cleanly closed log ends at its EOF trailer (whose checksum is
	// zero); nothing after it is read.
	trailer := make([]byte, recyclableHeader)
	trailer[6] = firstRecyclable
	binary.LittleEndian.PutUint32(trailer[7:], 8)
	clean := append(append([]byte{}, first...), trailer...)
	if bad := damagedLog(t, append(clean, next...), 7); bad >= 0 {
		t.Fatalf("bytes after an EOF trailer checked: damage at %d", bad)
	}
}

// A Raft log's WAL is created at its full size (FullSizeWALs). Left by a
// crash, its unwritten rest is zeroes: the store opens with every synced
// write, and the check takes the zeroes for the log's clean end, not for a
// torn write. A flip in its last record that the record of synced files
// vouches for is still damage.
func TestFullSizeWALs(t *testing.T) {
	const memtable = 1 << 20
	open := func(dir string) *DB {
		db, err := Open(Config{Dir: dir, MemTableSize: memtable, FullSizeWALs: true})
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	dir := t.TempDir()
	db := open(dir)
	val := bytes.Repeat([]byte{'v'}, 100)
	for i := range 300 {
		if err := db.Set(fmt.Appendf(nil, "k%05d", i), val, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	db.rec.flush()
	crashed := crashCopy(t, dir)
	db.Close()

	wal := onlyFile(t, crashed, "*.log")
	info, _ := os.Stat(wal)
	if want := int64(memtable + memtable/10); info.Size() != want {
		t.Fatalf("the WAL is %d bytes, want its full size %d", info.Size(), want)
	}
	c, err := checkLogFile(vfs.Default, wal, uint32(mustLogNum(t, wal)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.torn || c.proven || c.stop < 300*100 {
		t.Fatalf("check of a full-size WAL after a crash: %+v, want a clean end after the 300 records", c)
	}
	intact := crashCopy(t, crashed)
	if code := openExitCode(t, intact); code != 0 {
		t.Fatalf("open: exit %d, want it to open", code)
	}
	if n := countKeys(t, intact); n != 300 {
		t.Fatalf("%d keys after the crash, want 300", n)
	}

	flipBit(t, wal, c.stop-10)
	if code := openExitCode(t, crashed); code != ExitStorageFailure {
		t.Fatalf("open with a flip in the synced last record: exit %d, want %d", code, ExitStorageFailure)
	}
}

func mustLogNum(t *testing.T, path string) uint64 {
	t.Helper()
	n, ok := fileNum(filepath.Base(path), "", ".log")
	if !ok {
		t.Fatalf("%s is not a WAL", path)
	}
	return n
}
