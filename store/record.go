package store

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// recordFile is Ballast's record of what it knows about Pebble's files,
// for the checks at the next open (integrity.go):
//
//   - for each WAL and MANIFEST, how many bytes a sync has made durable.
//     Valid records that stop short of that are damage, never a torn
//     write: this is what finds a flip in a MANIFEST's last record, or a
//     log cut short, where no later chunk is left to prove it.
//   - the checksum of the OPTIONS file Pebble wrote at the last open
//     (Pebble keeps none and reads back only two names from it).
//
// It is replaced whole (a temporary file synced, renamed over it, the
// directory synced), so a crash leaves the old record or the new one,
// never a torn one: any record that fails its own checksum is damage.
const recordFile = "ballast-files.sum"

// fileRecord holds the record in memory while the store is open.
type fileRecord struct {
	fs  vfs.FS // the FS under the tracking one
	dir string
	log *slog.Logger

	mu      sync.Mutex // serialises changes and writes of the record
	synced  map[string]int64
	optName string // the OPTIONS file whose checksum is optSum, or ""
	optSum  uint32
	dirty   bool // changed since last written
	failed  bool // the last write failed (logged once)
}

// readRecord reads dir's record. A missing record is an empty one (a store
// from before it existed, or a crash before its first write).
func readRecord(fs vfs.FS, dir string, log *slog.Logger) (*fileRecord, error) {
	r := &fileRecord{fs: fs, dir: dir, log: log, synced: map[string]int64{}}
	path := filepath.Join(dir, recordFile)
	b, err := readFile(fs, path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	var ok bool
	if r.synced, r.optName, r.optSum, ok = parseRecord(string(b)); !ok {
		return nil, fmt.Errorf("%w: %s: Ballast's record of its files fails its checksum", pebble.ErrCorruption, path)
	}
	return r, nil
}

// parseRecord reads lines "<file> synced <bytes>" and "<OPTIONS file> sum
// <checksum>", then a last line with the checksum of all before it.
func parseRecord(s string) (synced map[string]int64, optName string, optSum uint32, ok bool) {
	body, sumLine, found := cutLastLine(s)
	// Compared as text: hex parsing would take a flipped case bit ('a' to
	// 'A') for the same value.
	if !found || sumLine != fmt.Sprintf("%08x", maskedCRC([]byte(body))) {
		return nil, "", 0, false
	}
	synced = map[string]int64{}
	for line := range strings.Lines(body) {
		f := strings.Fields(line)
		if len(f) != 3 || strings.ContainsAny(f[0], `/\`) {
			return nil, "", 0, false
		}
		switch f[1] {
		case "synced":
			n, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil || n < 0 {
				return nil, "", 0, false
			}
			synced[f[0]] = n
		case "sum":
			v, err := strconv.ParseUint(f[2], 16, 32)
			if err != nil || !strings.HasPrefix(f[0], "OPTIONS-") {
				return nil, "", 0, false
			}
			optName, optSum = f[0], uint32(v)
		default:
			return nil, "", 0, false
		}
	}
	return synced, optName, optSum, true
}

// cutLastLine splits "body<last>\n" into body (with its newlines) and last.
func cutLastLine(s string) (body, last string, ok bool) {
	s, ok = strings.CutSuffix(s, "\n")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(s, '\n')
	return s[:i+1], s[i+1:], true
}

// noteSynced records that name's first n bytes are durable. With now the
// record is written at once (a MANIFEST: its syncs are rare, and the check
// must cover its last record); otherwise by the next flush.
func (r *fileRecord) noteSynced(name string, n int64, now bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n <= r.synced[name] {
		return
	}
	r.synced[name] = n
	r.dirty = true
	if now {
		r.writeLocked()
	}
}

// forget drops a file that is gone (removed, or renamed for reuse).
func (r *fileRecord) forget(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.synced[name]; ok {
		delete(r.synced, name)
		r.dirty = true
	}
}

// setOptions records the checksum of the OPTIONS file Pebble wrote, and
// writes the record.
func (r *fileRecord) setOptions(name string, sum uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.optName, r.optSum = name, sum
	r.dirty = true
	r.writeLocked()
}

// flush writes the record if it changed.
func (r *fileRecord) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dirty {
		r.writeLocked()
	}
}

// writeLocked replaces the record on disk. A failure (a full disk, say) is
// logged, not returned: the record only vouches for bytes, and one that is
// not written just vouches for fewer.
func (r *fileRecord) writeLocked() {
	var b strings.Builder
	if r.optName != "" {
		fmt.Fprintf(&b, "%s sum %08x\n", r.optName, r.optSum)
	}
	for _, name := range slices.Sorted(maps.Keys(r.synced)) {
		fmt.Fprintf(&b, "%s synced %d\n", name, r.synced[name])
	}
	fmt.Fprintf(&b, "%08x\n", maskedCRC([]byte(b.String())))
	if err := WriteFileAtomically(r.fs, filepath.Join(r.dir, recordFile), []byte(b.String())); err != nil {
		if !r.failed {
			r.log.Warn("could not write the record of synced files; the next open checks less", "err", err)
		}
		r.failed = true
		return
	}
	r.dirty, r.failed = false, false
}

// WriteFileAtomically replaces the file at path with data, whole or not at
// all, durably: a temporary file synced, renamed over it, the directory
// synced.
func WriteFileAtomically(fs vfs.FS, path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp := path + ".tmp"
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = fs.Rename(tmp, path)
	}
	if werr != nil {
		fs.Remove(tmp)
		return werr
	}
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// trackingFS is the FS Pebble writes through: it tells the record how much
// of each WAL and MANIFEST a successful sync made durable, forgets files
// Pebble removes or reuses, and gathers the writes of new tables and blob
// files (bufferedFile).
type trackingFS struct {
	vfs.FS
	rec     *fileRecord
	walSize int64 // > 0: a new WAL is given this size at once (Config.FullSizeWALs)
}

func (fs *trackingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	if err == nil && fs.walSize > 0 && strings.HasSuffix(name, ".log") {
		// Only a speed-up: where it fails, Pebble's own preallocation and
		// writes meet the same condition and report it.
		_ = extendFile(f, fs.walSize)
	}
	return fs.track(name, f, err)
}

func (fs *trackingFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	if err == nil {
		fs.rec.forget(filepath.Base(oldname))
	}
	return fs.track(newname, f, err)
}

func (fs *trackingFS) Remove(name string) error {
	err := fs.FS.Remove(name)
	if err == nil {
		fs.rec.forget(filepath.Base(name))
	}
	return err
}

func (fs *trackingFS) track(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || filepath.Dir(name) != filepath.Clean(fs.rec.dir) {
		return f, err
	}
	base := filepath.Base(name)
	if strings.HasSuffix(base, ".sst") || strings.HasSuffix(base, ".blob") {
		return newBufferedFile(f), nil
	}
	manifest := strings.HasPrefix(base, "MANIFEST-")
	if !manifest && !strings.HasSuffix(base, ".log") {
		return f, nil
	}
	return &trackedFile{File: f, name: base, rec: fs.rec, manifest: manifest}, nil
}

// trackedFile counts the bytes written to a WAL or MANIFEST (Pebble writes
// both from the start, in order) and notes each successful sync.
type trackedFile struct {
	vfs.File
	name     string
	rec      *fileRecord
	manifest bool
	written  atomic.Int64
}

func (f *trackedFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	f.written.Add(int64(n))
	return n, err
}

func (f *trackedFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	for end := off + int64(n); ; {
		w := f.written.Load()
		if end <= w || f.written.CompareAndSwap(w, end) {
			break
		}
	}
	return n, err
}

func (f *trackedFile) Sync() error     { return f.synced(f.File.Sync) }
func (f *trackedFile) SyncData() error { return f.synced(f.File.SyncData) }

func (f *trackedFile) SyncTo(length int64) (bool, error) {
	at := f.written.Load()
	full, err := f.File.SyncTo(length)
	if err == nil && full {
		f.rec.noteSynced(f.name, at, f.manifest)
	}
	return full, err
}

// synced runs a sync; what was written before it began is durable after.
func (f *trackedFile) synced(sync func() error) error {
	at := f.written.Load()
	if err := sync(); err != nil {
		return err
	}
	f.rec.noteSynced(f.name, at, f.manifest)
	return nil
}
