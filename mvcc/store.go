package mvcc

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/ballast-kv/ballast/store"
)

// Config configures a Store.
type Config struct {
	// MinLeaseTTL in seconds; shorter grants are raised to it (etcd derives
	// it from the election timeout).
	MinLeaseTTL int64
	// Now is the clock for lease expiry; tests inject their own.
	Now    func() time.Time
	Logger *slog.Logger
	// Tokens, if set, issues and drops auth tokens as apply decides.
	Tokens Tokens
}

// Entry is one committed command to apply.
type Entry struct {
	Index uint64
	Data  []byte // a marshalled etcdserverpb.InternalRaftRequest, or a member change (EncodeMemberOp)
}

// Store is the MVCC state machine on one Pebble instance.
type Store struct {
	db  *store.DB
	cfg Config
	log *slog.Logger

	// mu orders the publication of an applied batch against readers taking
	// a snapshot, so a reader's snapshot and revision always agree.
	mu         sync.RWMutex
	rev        int64
	compactRev int64
	applied    uint64

	// Touched only by the apply goroutine (and Open).
	alarms []*pb.AlarmMember

	leases    *lessor
	hub       *hub
	compactor *compactor
	pages     pageCounts
	metas     *metaCache // apply goroutine only
	auth      atomic.Pointer[AuthState]
}

var (
	metaRev        = metaKey("rev")
	metaCompactRev = metaKey("compact-rev")
	metaApplied    = metaKey("applied-index")
	metaAlarms     = metaKey("alarms")
)

// Open loads the store's state from db.
func Open(db *store.DB, cfg Config) (*Store, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MinLeaseTTL <= 0 {
		cfg.MinLeaseTTL = 2
	}
	s := &Store{db: db, cfg: cfg, log: cfg.Logger.With("component", "mvcc"), metas: newMetaCache(defaultMetaCacheKeys, defaultMetaCacheValues)}
	if err := s.load(); err != nil {
		return nil, err
	}
	s.hub = newHub(s)
	s.compactor = newCompactor(s)
	return s, nil
}

// readMetaInt reads an 8-byte meta value, def when it is absent.
func readMetaInt(r pebble.Reader, k []byte, def int64) (int64, error) {
	b, err := store.GetCopy(r, k)
	if errors.Is(err, store.ErrNotFound) {
		return def, nil
	}
	if err != nil || len(b) != 8 {
		return 0, fmt.Errorf("mvcc: read %s: %v", k, err)
	}
	return int64(store.Uint64(b)), nil
}

// load reads the state's metadata and leases from the database (at Open,
// and after a snapshot replaced the state).
func (s *Store) load() error {
	db := s.db
	var err error
	if s.rev, err = readMetaInt(db, metaRev, 1); err != nil {
		return err
	}
	if s.compactRev, err = readMetaInt(db, metaCompactRev, -1); err != nil {
		return err
	}
	applied, err := readMetaInt(db, metaApplied, 0)
	if err != nil {
		return err
	}
	s.applied = uint64(applied)
	s.alarms = nil
	if b, err := store.GetCopy(db, metaAlarms); err == nil {
		resp := &pb.AlarmResponse{}
		if err := proto.Unmarshal(b, resp); err != nil {
			return fmt.Errorf("mvcc: alarms: %w", err)
		}
		s.alarms = resp.Alarms
	}
	auth, err := loadAuth(db)
	if err != nil {
		return err
	}
	s.auth.Store(auth)
	if s.cfg.Tokens != nil {
		s.cfg.Tokens.SetEnabled(auth.enabled)
	}
	leases, err := loadLessor(db, s.cfg)
	if err != nil {
		return err
	}
	if s.leases == nil {
		s.leases = leases
	} else {
		s.leases.replace(leases)
	}
	return nil
}

// Close stops background work. The Pebble instance is the caller's.
func (s *Store) Close() error {
	s.hub.close()
	s.compactor.close()
	return nil
}

// Rev is the current revision.
func (s *Store) Rev() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rev
}

// CompactRev is the last compaction revision, -1 if none.
func (s *Store) CompactRev() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.compactRev
}

// AppliedIndex is the Raft index of the last applied entry.
func (s *Store) AppliedIndex() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Sync makes every applied batch durable (before Raft truncates its log).
func (s *Store) Sync() error {
	s.db.MustSync("state sync")
	return nil
}

// Size is the bytes the state occupies on disk.
func (s *Store) Size() store.Size { return s.db.Size() }

// Alarms returns the active alarms.
func (s *Store) Alarms() []*pb.AlarmMember {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]*pb.AlarmMember(nil), s.alarms...)
}

// readView returns a consistent view of the applied state; release it.
func (s *Store) readView() (*view, func()) {
	s.mu.RLock()
	snap := s.db.NewSnapshot()
	v := &view{r: snap, rev: s.rev, compactRev: s.compactRev}
	s.mu.RUnlock()
	return v, func() { snap.Close() }
}

// Range serves a read from the applied state.
func (s *Store) Range(r *pb.RangeRequest) (*pb.RangeResponse, error) {
	v, release := s.readView()
	defer release()
	return v.rangeRequest(r, &s.pages)
}

// ReadTxn serves a read-only transaction from the applied state.
func (s *Store) ReadTxn(r *pb.TxnRequest) (*pb.TxnResponse, error) {
	v, release := s.readView()
	defer release()
	w := &writer{view: v}
	return w.txn(r)
}

// Apply applies committed entries in order, skipping those at or below the
// applied index, and returns one result per entry: a response proto or an
// error.
func (s *Store) Apply(entries []Entry) []any {
	results := make([]any, len(entries))
	s.mu.RLock()
	base := &view{rev: s.rev, compactRev: s.compactRev}
	startCompact := s.compactRev
	applied := s.applied
	s.mu.RUnlock()

	b := s.db.NewIndexedBatch()
	defer b.Close()
	base.r = b
	// One look per batch at whether any watcher wants prev_kv (a watcher
	// added meanwhile finds its first previous versions by a read).
	w := &writer{view: base, s: s, b: b, keepPrev: s.hub.prevWatchers.Load() > 0}
	var events []revEvents
	last := applied
	for i, e := range entries {
		if e.Index <= applied {
			continue // applied before a restart
		}
		last = e.Index
		w.index = e.Index
		if isMemberOp(e.Data) {
			w.begin()
			if m, err := w.applyMemberOp(e.Data); err != nil {
				results[i] = err
			} else {
				results[i] = m
			}
			w.end()
			continue
		}
		req := &pb.InternalRaftRequest{}
		if err := proto.Unmarshal(e.Data, req); err != nil {
			// Entries are produced by Ballast; a bad one means corruption.
			store.Fatal(s.log, "undecodable raft log entry", fmt.Errorf("entry %d: %w", e.Index, err))
		}
		w.begin()
		res, err := w.apply(req)
		if err != nil {
			results[i] = err
		} else {
			results[i] = res
		}
		if evs := w.end(); len(evs.events) > 0 {
			events = append(events, evs)
		}
	}
	if last == applied {
		return results
	}
	b.Set(metaRev, store.AppendUint64(nil, uint64(w.rev)), nil)
	b.Set(metaCompactRev, store.AppendUint64(nil, uint64(w.compactRev)), nil)
	b.Set(metaApplied, store.AppendUint64(nil, last), nil)

	s.mu.Lock()
	s.db.MustCommit("apply", b, pebble.NoSync)
	s.rev, s.compactRev, s.applied = w.rev, w.compactRev, last
	if w.auth != nil {
		s.auth.Store(w.auth)
	}
	s.mu.Unlock()

	if len(events) > 0 {
		s.hub.notify(events, w.rev)
	}
	if w.compactRev != startCompact {
		s.compactor.kick()
	}
	return results
}
