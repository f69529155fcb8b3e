package store

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Whatever mix of small and large writes, syncs, stats and reads Pebble
// makes, the file holds exactly the bytes written, in order, and every
// stat and read sees all of them.
func TestBufferedFileKeepsEveryByteInOrder(t *testing.T) {
	fs := vfs.NewMem()
	raw, err := fs.Create("t.sst", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	f := newBufferedFile(raw)
	rng := rand.New(rand.NewPCG(7, 7))
	var want []byte
	for i := range 2000 {
		size := rng.IntN(8 << 10)
		if i%97 == 0 {
			size = writeBufferSize + rng.IntN(writeBufferSize) // larger than the buffer
		}
		p := make([]byte, size)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		want = append(want, p...) // before the write: Pebble's test FS scribbles over what it was given
		if n, err := f.Write(p); n != len(p) || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
		switch rng.IntN(50) {
		case 0:
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		case 1:
			if _, err := f.SyncTo(int64(len(want) / 2)); err != nil {
				t.Fatal(err)
			}
		case 2:
			info, err := f.Stat()
			if err != nil || info.Size() != int64(len(want)) {
				t.Fatalf("stat after %d bytes: %v, %v", len(want), info, err)
			}
		case 3:
			if len(want) > 0 {
				off := rng.IntN(len(want))
				got := make([]byte, min(4096, len(want)-off))
				if _, err := f.ReadAt(got, int64(off)); err != nil || !bytes.Equal(got, want[off:off+len(got)]) {
					t.Fatalf("read at %d of %d written bytes: %v", off, len(want), err)
				}
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := fs.Open("t.sst")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make([]byte, len(want)+1)
	n, _ := r.ReadAt(got, 0)
	if n != len(want) || !bytes.Equal(got[:n], want) {
		t.Fatalf("file holds %d bytes (equal prefix: %v), %d were written", n, bytes.Equal(got[:min(n, len(want))], want[:min(n, len(want))]), len(want))
	}
}

// failingFile fails every write.
type failingFile struct{ vfs.File }

var errDiskFull = errors.New("no space left on device")

func (failingFile) Write([]byte) (int, error) { return 0, errDiskFull }

// A write that fails inside the buffer is not lost: the sync (and every
// call after it) that Pebble makes before trusting the file returns it.
func TestBufferedFileReportsAFailedWriteAtTheNextSync(t *testing.T) {
	raw, err := vfs.NewMem().Create("t.blob", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	f := newBufferedFile(failingFile{raw})
	if _, err := f.Write(make([]byte, 100)); err != nil {
		t.Fatalf("a gathered write failed at once: %v", err)
	}
	if err := f.Sync(); !errors.Is(err, errDiskFull) {
		t.Fatalf("sync after a failed write = %v, want %v", err, errDiskFull)
	}
	if _, err := f.Write(make([]byte, 10)); !errors.Is(err, errDiskFull) {
		t.Fatalf("write after a failed write = %v, want %v", err, errDiskFull)
	}
	if err := f.Close(); !errors.Is(err, errDiskFull) {
		t.Fatalf("close after a failed write = %v, want %v", err, errDiskFull)
	}
}
