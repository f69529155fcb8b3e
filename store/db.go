package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/objstorage"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/sstable/blob"
	"github.com/cockroachdb/pebble/v2/sstable/block"
	"github.com/cockroachdb/pebble/v2/sstable/colblk"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Config says where and how to open one Pebble instance.
type Config struct {
	Dir       string
	FS        vfs.FS // nil means the real filesystem
	CacheSize int64  // block cache bytes; bounded memory regardless of data size
	// MemTableSize bounds each memtable (default defaultMemTableSize).
	// Pebble preallocates every WAL file at 110% of it and keeps one per
	// unflushed memtable, so it sets the floor of the directory's size as
	// well as memory.
	MemTableSize uint64
	Logger       *slog.Logger
	// SyncInterval, if set, syncs the WAL that often while unsynced
	// commits (pebble.NoSync) have been made. A synced WAL records how far
	// it was synced in the chunks written after, which is what lets a
	// flipped bit in it be told from a torn write (integrity.go); and a
	// power loss then costs at most that much of the unsynced writes.
	SyncInterval time.Duration
	// FullSizeWALs gives each new WAL file its whole preallocated size at
	// once, as etcd does its WAL segments, for a store whose every commit
	// syncs (the Raft log). Pebble preallocates the same blocks but keeps
	// the file's size, so each synced append also grew the size, and the
	// fdatasync had to commit that too: 280 against 230 µs a sync under one
	// client's puts here (docs/benchmarks.md).
	FullSizeWALs bool
	// NoWAL opens the instance without a WAL, for a store whose writes
	// another durable log can replay: the state store, whose every write
	// comes from a synced Raft entry. A crash then loses what no flush has
	// written yet; a synced commit (MustCommit with pebble.Sync) and
	// MustSync flush instead. Each write is no longer written twice (WAL,
	// then flush) nor costs the apply path a write call.
	NoWAL bool
}

// DB is one Pebble instance. It embeds *pebble.DB: Ballast uses Pebble's own
// batches and iterators rather than wrapping each one.
type DB struct {
	*pebble.DB
	log *slog.Logger

	sizeMu sync.Mutex
	size   Size
	sizeAt time.Time

	lock     *pebble.Lock  // the directory's, held from before the open checks until Close
	rec      *fileRecord   // what a sync made durable, for the next open's checks
	noWAL    bool          // Config.NoWAL: durability is a flush
	unsynced atomic.Bool   // a NoSync commit since the last periodic sync
	stop     chan struct{} // closed by Close: ends housekeep
	stopped  chan struct{}
}

// defaultCacheSize is the block cache of the state store. Kubernetes'
// lists and gets read values from blob files: with 24 MiB, the Kubernetes
// traffic profile read most blocks back from the OS page cache (a pread,
// a checksum and a decompression each, 18% of a member's CPU) and its
// throughput fell to 0.76x etcd's; with 64 MiB it was 0.91x, and a member's
// RSS after the run stayed under etcd's (240 MiB against 263 MiB). 96 MiB
// gave 0.93x but an RSS above etcd's (docs/benchmarks.md). The cache fills
// only as blocks are read, so a store that is only written stays small.
const defaultCacheSize = 64 << 20

// defaultMemTableSize is small because a flush is a burst of CPU: all of a
// cluster's members apply the same writes, so their memtables fill and
// flush together, and a 16 MiB flush took 40-70 ms of CPU. On a small
// machine that burst was where Kubernetes requests were slow; 4 MiB
// flushes take a quarter as long, four times as often (docs/benchmarks.md,
// session 16). Memtables are counted against the block cache, so smaller
// ones also leave it more room.
const defaultMemTableSize = 4 << 20

// SpreadMemTableSize is a memtable size between 4 and 6 MiB chosen by seed
// (a member's id). Members apply the same writes, so with equal memtables
// they flush, and then compact, at the same moments, and a write, which
// needs a quorum, met the stall of every member at once. Sizes that differ
// per member spread those bursts apart, so a quorum usually has members
// that are not flushing.
func SpreadMemTableSize(seed uint64) uint64 {
	return defaultMemTableSize + seed%64*(32<<10)
}

// ErrNotFound is returned by Get helpers when a key is absent.
var ErrNotFound = errors.New("store: key not found")

// Open opens (creating if needed) the Pebble instance at cfg.Dir.
func Open(cfg Config) (*DB, error) {
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = defaultCacheSize
	}
	if cfg.MemTableSize == 0 {
		cfg.MemTableSize = defaultMemTableSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NoWAL && cfg.SyncInterval > 0 {
		return nil, errors.New("store: a sync interval needs a WAL")
	}
	log := cfg.Logger.With("component", "pebble", "dir", cfg.Dir)
	cache := pebble.NewCache(cfg.CacheSize)
	opts := &pebble.Options{
		FS:                          cfg.FS,
		Cache:                       cache,
		Logger:                      pebbleLogger{log},
		MemTableSize:                cfg.MemTableSize,
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       24,
		DisableWAL:                  cfg.NoWAL,
	}
	// Pebble sizes a table by the blob values it references as well as by
	// its own bytes, so with 2 MiB targets a compaction of under 1 MB of
	// keys wrote ten tables of 70 KB, with a sync each, and flushes were
	// split the same way. 32 MiB (64 at the base level) writes one or two.
	opts.TargetFileSizes[0] = 32 << 20
	// Bloom filters let a point read skip the files that lack its key:
	// every put reads its key's latest meta, and most reads are points.
	//
	// Blocks are not compressed. Kubernetes objects are what fills a store;
	// compressing them cost a flush CPU in the burst that made requests
	// slow and a read a decompression on each block cache miss, while
	// their on-disk size is then what etcd's is (bbolt does not compress
	// either), so the space quota means the same bytes as etcd's.
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		opts.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.NoCompression }
	}
	// Values of 512 bytes and more (Kubernetes objects are kilobytes) live
	// in blob files that compactions do not rewrite: without this, every
	// level of the LSM copies them again, and compactions of large values
	// were the largest user of CPU on a member under Kubernetes traffic.
	opts.FormatMajorVersion = pebble.FormatValueSeparation
	opts.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
		return pebble.ValueSeparationPolicy{
			Enabled:               true,
			MinimumSize:           512,
			MaxBlobReferenceDepth: 10,
			RewriteMinimumAge:     5 * time.Minute,
			TargetGarbageRatio:    0.2,
		}
	}
	// Pebble checks every block it reads against its checksum; a mismatch
	// stops the member rather than serve or replicate damaged data.
	opts.EventListener = &pebble.EventListener{DataCorruption: func(info pebble.DataCorruptionInfo) {
		Fatal(log, "read "+info.Path, fmt.Errorf("%w: %w", pebble.ErrCorruption, info.Details))
	}}
	opts.EnsureDefaults()
	fs := opts.FS
	// The directory is locked before the checks read it, so they never
	// read files another process is writing.
	if err := fs.MkdirAll(cfg.Dir, 0o755); err != nil {
		cache.Unref()
		return nil, fmt.Errorf("store: create %s: %w", cfg.Dir, err)
	}
	lock, err := pebble.LockDirectory(cfg.Dir, fs)
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("store: lock %s: %w", cfg.Dir, err)
	}
	opts.Lock = lock
	fresh, rec, err := checkFiles(fs, cfg.Dir, log)
	if err != nil {
		cache.Unref()
		lock.Close()
		if IsCorruption(err) {
			Fatal(log, "open "+cfg.Dir, err)
		}
		return nil, fmt.Errorf("store: check %s: %w", cfg.Dir, err)
	}
	tracking := &trackingFS{FS: fs, rec: rec}
	if cfg.FullSizeWALs {
		// Pebble's own preallocation: 110% of the memtable.
		tracking.walSize = int64(cfg.MemTableSize + cfg.MemTableSize/10)
	}
	opts.FS = tracking
	db, err := pebble.Open(cfg.Dir, opts)
	if err == nil && fresh && !cfg.NoWAL {
		// A new store's first WAL is written in the older chunk format,
		// without sync offsets, where damage cannot be told from a torn
		// write (integrity.go). Closed at once, that WAL stays empty. A
		// store without a WAL has none to reopen for.
		if err = db.Close(); err == nil {
			db, err = pebble.Open(cfg.Dir, opts)
		}
	}
	cache.Unref() // the DB holds its own reference
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("store: open %s: %w", cfg.Dir, err)
	}
	d := &DB{DB: db, log: log, lock: lock, rec: rec, noWAL: cfg.NoWAL, stop: make(chan struct{}), stopped: make(chan struct{})}
	if err := tidyAfterOpen(opts.FS, cfg.Dir, rec); err != nil {
		d.closeDB()
		return nil, fmt.Errorf("store: after opening %s: %w", cfg.Dir, err)
	}
	if err := verify(db, fs, cfg.Dir, opts); err != nil {
		d.closeDB()
		if IsCorruption(err) {
			Fatal(log, "verify "+cfg.Dir, err)
		}
		return nil, fmt.Errorf("store: verify %s: %w", cfg.Dir, err)
	}
	go d.housekeep(cfg.SyncInterval)
	return d, nil
}

// recordInterval is how often the record of synced files is rewritten
// while it changes: a WAL's bytes synced since are vouched for only by
// the later chunks that carry a sync offset (integrity.go).
const recordInterval = 100 * time.Millisecond

// housekeep, until Close, syncs the WAL every syncInterval (if set) in
// which unsynced commits were made, and writes the record of synced files
// every recordInterval in which it changed.
func (db *DB) housekeep(syncInterval time.Duration) {
	defer close(db.stopped)
	interval := recordInterval
	if syncInterval > 0 {
		interval = min(interval, syncInterval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-db.stop:
			return
		case <-t.C:
			if syncInterval > 0 && db.unsynced.Swap(false) {
				db.Must("periodic sync", func() error { return db.LogData(nil, pebble.Sync) })
			}
			db.rec.flush()
		}
	}
}

// verify reads every block of every live table and blob file at open, so
// that Pebble checks each against its checksum: a member with a damaged
// file stops at start with a clear message, rather than when a read or a
// compaction first touches the damage (or never, for a block such as a
// filter that a read may skip). Pebble checks the WAL and the MANIFEST as
// it replays them, and checkFiles before. It costs one sequential read of
// the data (docs/robustness.md).
//
// Only the current version's files are read: a crash during a flush or a
// compaction leaves a partly written file that no version names, which
// Pebble deletes in the background after it opens. A blob file that a
// rewrite replaced is named by the number of the one it replaced, so it is
// not read here; Pebble still checks each block it reads from it.
func verify(db *pebble.DB, fs vfs.FS, dir string, opts *pebble.Options) error {
	levels, err := db.SSTables()
	if err != nil {
		return err
	}
	live := map[string]func(objstorage.Readable) error{}
	checkTable := func(r objstorage.Readable) error {
		t, err := sstable.NewReader(context.Background(), r, opts.MakeReaderOptions())
		if err != nil {
			return err
		}
		defer t.Close()
		return t.ValidateBlockChecksums()
	}
	for _, level := range levels {
		for _, t := range level {
			live[fmt.Sprintf("%06d.sst", uint64(t.BackingSSTNum))] = checkTable
			for _, id := range t.GetBlobReferenceFiles() {
				live[fmt.Sprintf("%06d.blob", uint64(id))] = verifyBlobFile
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(live)) {
		path := filepath.Join(dir, name)
		if err := verifyFile(fs, path, live[name]); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}

// verifyBlobFile reads a blob file's index block and every value block
// it lists, each checked against its checksum.
func verifyBlobFile(r objstorage.Readable) error {
	ctx := context.Background()
	b, err := blob.NewFileReader(ctx, r, blob.FileReaderOptions{})
	if err != nil {
		return err
	}
	defer b.Close()
	index, err := b.ReadIndexBlock(ctx, block.NoReadEnv, nil)
	if err != nil {
		return err
	}
	defer index.Release()
	for _, h := range blobValueBlocks(index.BlockData()) {
		v, err := b.ReadValueBlock(ctx, block.NoReadEnv, nil, h)
		if err != nil {
			return err
		}
		v.Release()
	}
	return nil
}

// blobValueBlocks lists the value blocks of a blob file's index block (its
// checksum already checked). The layout is Pebble's (sstable/blob's
// indexBlockDecoder, which it does not export): a 4-byte count of virtual
// blocks, then a columnar block whose second column holds each block's
// start offset and, last, the end of the last one. Pebble is pinned in
// go.mod, and TestOpenDetectsAFlipInAnyBlock fails if this drifts.
func blobValueBlocks(index []byte) []block.Handle {
	const customHeader, offsetsColumn = 4, 1
	if len(index) < customHeader {
		return nil
	}
	var bd colblk.BlockDecoder
	bd.Init(index, customHeader)
	offsets := colblk.DecodeColumn(&bd, offsetsColumn, bd.Rows()+1, colblk.DataTypeUint, colblk.DecodeUnsafeUints)
	hs := make([]block.Handle, bd.Rows())
	for i := range hs {
		start, end := offsets.At(i), offsets.At(i+1)
		hs[i] = block.Handle{Offset: start, Length: end - start - block.TrailerLen}
	}
	return hs
}

// verifyFile runs check on one file. One Pebble removed since (a table a
// compaction replaced) is skipped.
func verifyFile(fs vfs.FS, path string, check func(objstorage.Readable) error) error {
	f, err := fs.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	r, err := sstable.NewSimpleReadable(f)
	if err != nil {
		f.Close()
		return err
	}
	// The readers close r, the blob reader only on success.
	if err := check(r); err != nil {
		r.Close()
		return err
	}
	return nil
}

// Must runs a write (a batch commit, a Set, a LogData) that the member
// cannot go on without, and stops the member with Fatal if it fails. Pebble
// panics when it cannot write its WAL (a full disk, say) and is unusable
// after; the panic is turned into Fatal's one clear line.
func (db *DB) Must(what string, write func() error) {
	defer func() {
		if r := recover(); r != nil {
			err, ok := r.(error)
			if !ok {
				panic(r) // not Pebble reporting an I/O failure: a bug
			}
			Fatal(db.log, what, err)
		}
	}()
	if err := write(); err != nil {
		Fatal(db.log, what, err)
	}
}

// MustCommit commits b through Must.
func (db *DB) MustCommit(what string, b *pebble.Batch, o *pebble.WriteOptions) {
	if db.noWAL {
		db.Must(what, func() error { return b.Commit(pebble.NoSync) })
		if o.GetSync() {
			db.MustSync(what)
		}
		return
	}
	db.Must(what, func() error { return b.Commit(o) })
	if !o.GetSync() {
		db.unsynced.Store(true)
	}
}

// MustSync makes every commit made so far durable: a sync of the WAL, or
// without one (Config.NoWAL) a flush of the memtables.
func (db *DB) MustSync(what string) {
	if db.noWAL {
		db.Must(what, db.DB.Flush)
		return
	}
	db.Must(what, func() error { return db.LogData(nil, pebble.Sync) })
}

// GetCopy returns a copy of the value at key, or ErrNotFound.
func GetCopy(r pebble.Reader, key []byte) ([]byte, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	closer.Close()
	return out, nil
}

// Close flushes the memtables first, so the next open has no WAL to replay
// and a clean restart is fast.
func (db *DB) Close() error {
	close(db.stop)
	<-db.stopped
	if err := db.DB.Flush(); err != nil {
		db.closeDB()
		return err
	}
	return db.closeDB()
}

// closeDB closes Pebble, records what its last syncs made durable, then
// releases the directory's lock.
func (db *DB) closeDB() error {
	err := db.DB.Close()
	db.rec.flush()
	if lerr := db.lock.Close(); err == nil {
		err = lerr
	}
	return err
}

// Size is what an instance occupies on disk.
type Size struct {
	// Total is every byte of its files, including space Pebble has not
	// handed back yet: obsolete files awaiting deletion, WAL files kept for
	// reuse. Like the size of etcd's bbolt file, free pages and all.
	Total int64
	// InUse is the bytes of live data: the tables and blob files of the
	// current version and the WAL of unflushed memtables. What the quota
	// is checked against: it shrinks as soon as compactions drop deleted
	// data, the way etcd's in-use size does after a defragmentation.
	InUse int64
}

// Size returns the instance's sizes, at most sizeMaxAge old: computing
// Pebble's metrics is too costly for every write's quota check.
func (db *DB) Size() Size {
	db.sizeMu.Lock()
	defer db.sizeMu.Unlock()
	if time.Since(db.sizeAt) > sizeMaxAge {
		m := db.Metrics()
		db.size = Size{
			Total: int64(m.DiskSpaceUsage()),
			InUse: int64(m.WAL.Size + m.Table.Local.LiveSize + m.BlobFiles.Local.LiveSize),
		}
		db.sizeAt = time.Now()
	}
	return db.size
}

// RefreshSize makes the next Size call read Pebble's metrics afresh: after a
// compaction that an operator waits on, say.
func (db *DB) RefreshSize() {
	db.sizeMu.Lock()
	db.sizeAt = time.Time{}
	db.sizeMu.Unlock()
}

const sizeMaxAge = 250 * time.Millisecond

// pebbleLogger adapts slog to Pebble's logger; Pebble's info chatter goes to debug.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	Fatal(p.l, "pebble", fmt.Errorf(format, args...))
}

// ExitStorageFailure is the exit status of a member that stopped because its
// storage failed.
const ExitStorageFailure = 3

// Fatal logs a storage failure the member cannot go on from (a write the
// disk refused, a corrupted file) and exits with ExitStorageFailure. It
// exits rather than panics: the cause is outside the program, and the
// operator needs one clear line, not a stack. Nothing acknowledged is lost:
// writes are acknowledged only once in the synced Raft log of a quorum, and
// a restarted member replays or re-fetches what it had not applied.
func Fatal(l *slog.Logger, what string, err error) {
	args := []any{"op", what, "err", err}
	switch {
	case errors.Is(err, syscall.ENOSPC):
		args = append(args, "cause", "disk full", "hint", "free space, then restart the member")
	case IsCorruption(err):
		args = append(args, "cause", "corrupted file",
			"hint", "replace the member: remove it, then add a new one with an empty data directory")
	}
	l.Error("storage failure; stopping", args...)
	exit(ExitStorageFailure)
}

// ErrDamaged marks damage Ballast finds in a member's own files (Pebble's
// own findings carry pebble.ErrCorruption).
var ErrDamaged = errors.New("damaged file")

// IsCorruption says whether err reports a damaged file: the member must be
// replaced, not restarted.
func IsCorruption(err error) bool {
	// Pebble marks some of its own (a block's checksum) in a way only its
	// errors package sees through a wrap.
	return errors.Is(err, pebble.ErrCorruption) || errors.Is(err, ErrDamaged) || pebble.IsCorruptionError(err)
}

// exit is os.Exit; tests replace it.
var exit = os.Exit
