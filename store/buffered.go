package store

import (
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// writeBufferSize is how much of a table or blob file is gathered before a
// write. Pebble buffers its writes in 4 KiB and writes each block of that
// size or more straight through, so flushing a memtable of Kubernetes
// objects (1-10 KiB values, each its own blob block) took a write system
// call per value: 6-7% of a member's CPU under the Kubernetes profile.
const writeBufferSize = 256 << 10

// bufferedFile gathers the sequential writes of a new table or blob file and
// hands them to the file in large writes. Anything else done with the file
// (a sync, a stat, a read, a positioned write, a close) first writes what
// is gathered, so each sees the file as if every write had gone through at
// once; a failed write is returned by that next call. Pebble syncs a table
// before any version names it, so nothing gathered here is ever counted
// durable before it is on disk.
type bufferedFile struct {
	vfs.File
	mu  sync.Mutex
	buf []byte
	err error // a failed write, returned until the file is closed
}

func newBufferedFile(f vfs.File) *bufferedFile {
	return &bufferedFile{File: f, buf: make([]byte, 0, writeBufferSize)}
}

func (f *bufferedFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	if len(f.buf)+len(p) > cap(f.buf) {
		if err := f.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= cap(f.buf) {
		n, err := f.File.Write(p)
		f.err = err
		return n, err
	}
	f.buf = append(f.buf, p...)
	return len(p), nil
}

func (f *bufferedFile) flushLocked() error {
	if f.err != nil || len(f.buf) == 0 {
		return f.err
	}
	_, f.err = f.File.Write(f.buf)
	f.buf = f.buf[:0]
	return f.err
}

// flushed runs op once everything gathered is written.
func (f *bufferedFile) flushed(op func() error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.flushLocked(); err != nil {
		return err
	}
	return op()
}

func (f *bufferedFile) Close() error {
	f.mu.Lock()
	err := f.flushLocked()
	f.mu.Unlock()
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	return err
}

func (f *bufferedFile) Sync() error     { return f.flushed(f.File.Sync) }
func (f *bufferedFile) SyncData() error { return f.flushed(f.File.SyncData) }

func (f *bufferedFile) SyncTo(length int64) (full bool, err error) {
	err = f.flushed(func() (err error) { full, err = f.File.SyncTo(length); return err })
	return full, err
}

func (f *bufferedFile) Stat() (info vfs.FileInfo, err error) {
	err = f.flushed(func() (err error) { info, err = f.File.Stat(); return err })
	return info, err
}

func (f *bufferedFile) Read(p []byte) (n int, err error) {
	err = f.flushed(func() (err error) { n, err = f.File.Read(p); return err })
	return n, err
}

func (f *bufferedFile) ReadAt(p []byte, off int64) (n int, err error) {
	err = f.flushed(func() (err error) { n, err = f.File.ReadAt(p, off); return err })
	return n, err
}

func (f *bufferedFile) WriteAt(p []byte, off int64) (n int, err error) {
	err = f.flushed(func() (err error) { n, err = f.File.WriteAt(p, off); return err })
	return n, err
}

func (f *bufferedFile) Preallocate(off, length int64) error {
	return f.flushed(func() error { return f.File.Preallocate(off, length) })
}
