package store

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Config says where and how to open one Pebble instance.
type Config struct {
	Dir       string
	FS        vfs.FS // nil means the real filesystem
	CacheSize int64  // block cache bytes; bounded memory regardless of data size
	// MemTableSize bounds each memtable. Pebble preallocates every WAL file
	// at 110% of it and keeps one per unflushed memtable, so it sets the
	// floor of the directory's size as well as memory.
	MemTableSize uint64
	Logger       *slog.Logger
}

// DB is one Pebble instance. It embeds *pebble.DB: Ballast uses Pebble's own
// batches and iterators rather than wrapping each one.
type DB struct {
	*pebble.DB

	sizeMu sync.Mutex
	size   int64
	sizeAt time.Time
}

// ErrNotFound is returned by Get helpers when a key is absent.
var ErrNotFound = errors.New("store: key not found")

// Open opens (creating if needed) the Pebble instance at cfg.Dir.
func Open(cfg Config) (*DB, error) {
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 24 << 20
	}
	if cfg.MemTableSize == 0 {
		cfg.MemTableSize = 16 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cache := pebble.NewCache(cfg.CacheSize)
	opts := &pebble.Options{
		FS:                          cfg.FS,
		Cache:                       cache,
		Logger:                      pebbleLogger{cfg.Logger.With("component", "pebble", "dir", cfg.Dir)},
		MemTableSize:                cfg.MemTableSize,
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       24,
	}
	// Bloom filters let a point read skip the files that lack its key:
	// every put reads its key's latest meta, and most reads are points.
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
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
	opts.EnsureDefaults()
	db, err := pebble.Open(cfg.Dir, opts)
	cache.Unref() // the DB holds its own reference
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", cfg.Dir, err)
	}
	return &DB{DB: db}, nil
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
	if err := db.DB.Flush(); err != nil {
		db.DB.Close()
		return err
	}
	return db.DB.Close()
}

// Size is the bytes the instance occupies on disk, at most sizeMaxAge old:
// computing Pebble's metrics is too costly for every write's quota check.
func (db *DB) Size() int64 {
	db.sizeMu.Lock()
	defer db.sizeMu.Unlock()
	if time.Since(db.sizeAt) > sizeMaxAge {
		db.size = int64(db.Metrics().DiskSpaceUsage())
		db.sizeAt = time.Now()
	}
	return db.size
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
	p.l.Error(fmt.Sprintf(format, args...))
	panic(fmt.Sprintf(format, args...))
}
