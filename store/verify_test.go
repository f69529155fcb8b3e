package store

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// A flipped bit in a table is found when the store opens, before anything
// reads the damaged block, and reported as corruption: Open's checksum
// verification reads every live block.
func TestOpenDetectsACorruptedTable(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	val := make([]byte, 100)
	for i := range 2000 {
		rand.Read(val)
		if err := db.Set(fmt.Appendf(nil, "k%05d", i), val, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil { // flushes: the data is in a table now
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no table after close")
	}
	data, err := os.ReadFile(tables[0])
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/3] ^= 0x10 // in the data blocks, well before the index and footer
	if err := os.WriteFile(tables[0], data, 0o644); err != nil {
		t.Fatal(err)
	}

	var code int
	exit = func(c int) { code = c; panic("exit") }
	defer func() { exit = os.Exit }()
	func() {
		defer func() { recover() }()
		if db, err := Open(Config{Dir: dir}); err == nil {
			db.Close()
		}
	}()
	if code != ExitStorageFailure {
		t.Fatalf("opening a store with a flipped bit in a table: exit code %d, want %d", code, ExitStorageFailure)
	}
}

// Every block is read at open, not only those a walk of the keys touches:
// a flip in a table's filter block, which a read may skip, and one in a
// blob file (values of 512 bytes and more live there) are both found.
func TestOpenDetectsAFlipInAnyBlock(t *testing.T) {
	for _, target := range []string{"filter", "blob"} {
		t.Run(target, func(t *testing.T) {
			dir := t.TempDir()
			db, err := Open(Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			size := 100
			if target == "blob" {
				size = 1000
			}
			val := make([]byte, size)
			for i := range 500 {
				rand.Read(val)
				if err := db.Set(fmt.Appendf(nil, "k%05d", i), val, pebble.NoSync); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			var path string
			var off int
			var data []byte
			if target == "blob" {
				path = onlyFile(t, dir, "*.blob")
				data, _ = os.ReadFile(path)
				off = len(data) / 2
			} else {
				path = onlyFile(t, dir, "*.sst")
				data, _ = os.ReadFile(path)
				// The bloom filter follows the data and index blocks; its
				// bits look random, unlike the keys around it.
				off = filterBlockOffset(t, path)
			}
			data[off] ^= 0x04
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if code := openExitCode(t, dir); code != ExitStorageFailure {
				t.Fatalf("open with a flipped bit in the %s: exit %d, want %d", target, code, ExitStorageFailure)
			}
		})
	}
}

// A crash during a flush or a compaction leaves a partly written table or
// blob file that no version names; Pebble deletes it after it opens. It is
// no damage, and the store opens.
func TestOpenIgnoresFilesACrashLeftHalfWritten(t *testing.T) {
	dir := t.TempDir()
	if code := openExitCode(t, dir); code != 0 {
		t.Fatalf("first open: exit %d", code)
	}
	for _, name := range []string{"000999.sst", "001000.blob"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("half a table"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if code := openExitCode(t, dir); code != 0 {
		t.Fatalf("open with a crash's half-written files: exit %d, want it to open", code)
	}
}

// filterBlockOffset is an offset inside a table's filter block.
func filterBlockOffset(t *testing.T, path string) int {
	t.Helper()
	f, err := vfs.Default.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := sstable.NewSimpleReadable(f)
	if err != nil {
		t.Fatal(err)
	}
	opts := &pebble.Options{}
	opts.EnsureDefaults()
	tr, err := sstable.NewReader(context.Background(), r, opts.MakeReaderOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	l, err := tr.Layout()
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Filter) == 0 {
		t.Fatal("the table has no filter block")
	}
	h := l.Filter[0].Handle
	return int(h.Offset + h.Length/2)
}

// BenchmarkOpenVerify measures the cost of the checksum verification every
// open does: MB/s is the rate at which a member reads its data at start.
func BenchmarkOpenVerify(b *testing.B) {
	dir := b.TempDir()
	db, err := Open(Config{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	const keys, size = 64 << 10, 1 << 10 // 64 MiB of incompressible values
	val := make([]byte, size)
	batch := db.NewBatch()
	for i := range keys {
		rand.Read(val)
		batch.Set(fmt.Appendf(nil, "k%08d", i), val, nil)
		if batch.Len() > 4<<20 {
			if err := batch.Commit(pebble.NoSync); err != nil {
				b.Fatal(err)
			}
			batch = db.NewBatch()
		}
	}
	if err := batch.Commit(pebble.NoSync); err != nil {
		b.Fatal(err)
	}
	if err := db.Compact(b.Context(), []byte("k"), []byte("l"), true); err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(keys * size)
	for b.Loop() {
		db, err := Open(Config{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		db.Close()
	}
}
