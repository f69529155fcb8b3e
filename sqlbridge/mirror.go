package sqlbridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Store is what the mirror reads: the member's applied state.
type Store interface {
	Rev() int64
	CompactRev() int64
	Range(*pb.RangeRequest) (*pb.RangeResponse, error)
	// LeaseTTL is lease id's granted TTL, 0 if it is gone.
	LeaseTTL(id int64) int64
	// Follow streams every change from revision from on, in revision
	// order, until stop; a response with Compacted set ends it.
	Follow(from int64) (ch <-chan Changes, stop func(), err error)
}

// Changes are events of one or more revisions, or word that compaction
// removed revisions the follower had not seen.
type Changes struct {
	Events    []*mvccpb.Event
	Compacted bool
}

// Config configures a Mirror.
type Config struct {
	URL     string // postgres://...
	Dialect Dialect
	// PGCompatible leaves out the YugabyteDB-only clauses of the Yugabyte
	// dialect, for running it against PostgreSQL in tests.
	PGCompatible bool
	Store        Store
	ClusterID    uint64
	Member       string      // this member's name, recorded as the writer
	IsLeader     func() bool // only the leader mirrors
	Log          *slog.Logger
	Registerer   prometheus.Registerer
	// BatchRows bounds the rows one transaction writes (default 2000).
	BatchRows int
}

// Mirror copies the store's revision log into the database while this
// member leads.
type Mirror struct {
	cfg Config
	m   *metrics
	log *slog.Logger
}

// New registers the mirror's metrics. cfg.URL is parsed at each
// connection; the server's config validation has checked it.
func New(cfg Config) *Mirror {
	if cfg.BatchRows <= 0 {
		cfg.BatchRows = 2000
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Mirror{cfg: cfg, m: newMetrics(cfg.Registerer), log: cfg.Log.With("component", "sqlbridge")}
}

var (
	errBusy     = errors.New("another member holds the mirror lock")
	errFenced   = errors.New("the mirror's state row changed under this writer")
	errResync   = errors.New("compaction overtook the mirror")
	errNotOwner = errors.New("the mirror database belongs to another cluster")
)

// Run mirrors until ctx ends. Errors are logged, counted and retried with
// backoff; nothing here ever waits on the write path.
func (m *Mirror) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	var lastErr string
	for ctx.Err() == nil {
		if !m.cfg.IsLeader() {
			m.m.writer.Set(0)
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		err := m.session(ctx)
		m.m.writer.Set(0)
		switch {
		case err == nil || ctx.Err() != nil:
			backoff = 100 * time.Millisecond
			continue
		case errors.Is(err, errBusy):
			sleep(ctx, time.Second)
			continue
		}
		if msg := err.Error(); msg != lastErr {
			m.log.Warn("SQL mirror interrupted; retrying", "err", err, "backoff", backoff)
			lastErr = msg
		}
		if errors.Is(err, errNotOwner) {
			backoff = time.Minute
		}
		sleep(ctx, backoff)
		backoff = min(backoff*2, 10*time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// state is the mirror's state row.
type state struct {
	lastRev, lastID, compactRev int64
}

// session holds the lock on one connection and mirrors until this member
// stops leading (nil) or something fails.
func (m *Mirror) session(ctx context.Context) error {
	conn, err := connect(ctx, m.cfg.URL, m.cfg.Dialect, m.cfg.PGCompatible)
	if err != nil {
		m.m.errors.WithLabelValues("connect").Inc()
		return err
	}
	defer conn.Close(context.Background())
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, int64(mirrorLock)).Scan(&locked); err != nil {
		m.m.errors.WithLabelValues("connect").Inc()
		return err
	}
	if !locked {
		return errBusy
	}
	if _, err := conn.Exec(ctx, `SET ballast.mirror = 'on'`); err != nil {
		return err
	}
	if err := createSchema(ctx, conn, m.cfg.Dialect, m.cfg.PGCompatible, true); err != nil {
		m.m.errors.WithLabelValues("connect").Inc()
		return err
	}
	st, err := m.loadState(ctx, conn)
	if err != nil {
		m.m.errors.WithLabelValues("connect").Inc()
		return err
	}
	m.m.writer.Set(1)
	m.log.Info("SQL mirror writing", "last-revision", st.lastRev, "revision", m.cfg.Store.Rev())
	for {
		err := m.follow(ctx, conn, &st)
		if !errors.Is(err, errResync) {
			return err
		}
		if err := m.resync(ctx, conn, &st); err != nil {
			m.m.errors.WithLabelValues("resync").Inc()
			return err
		}
	}
}

func connect(ctx context.Context, url string, d Dialect, pgCompatible bool) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	cfg.RuntimeParams["application_name"] = "ballast-sqlbridge"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	for _, s := range d.session(pgCompatible) {
		if _, err := conn.Exec(ctx, s); err != nil {
			conn.Close(ctx)
			return nil, err
		}
	}
	return conn, nil
}

// loadState reads the state row, creating it (with kine's compaction row at
// id 1, the revision no write ever takes) for an empty table.
func (m *Mirror) loadState(ctx context.Context, conn *pgx.Conn) (state, error) {
	cluster := strconv.FormatUint(m.cfg.ClusterID, 16)
	var st state
	var owner string
	err := conn.QueryRow(ctx, `SELECT cluster_id, last_revision, last_id, compact_revision FROM ballast_sqlbridge_state WHERE id = 1`).
		Scan(&owner, &st.lastRev, &st.lastID, &st.compactRev)
	if err == nil {
		if owner != cluster {
			return st, fmt.Errorf("%w: it mirrors cluster %s, this is cluster %s", errNotOwner, owner, cluster)
		}
		return st, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return st, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return st, err
	}
	defer tx.Rollback(ctx)
	var rows int64
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM kine`).Scan(&rows); err != nil {
		return st, err
	}
	if rows > 0 {
		return st, fmt.Errorf("%w: table kine already holds %d rows that Ballast did not write; mirror into an empty database, or import them with ballast migrate from-kine", errNotOwner, rows)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision, lease, value, old_value)
		VALUES (1, $1, 1, 0, 0, 0, 0, ''::bytea, NULL)`, compactRK); err != nil {
		return st, err
	}
	st = state{lastRev: 1, lastID: 1}
	if _, err := tx.Exec(ctx, `INSERT INTO ballast_sqlbridge_state (id, cluster_id, last_revision, last_id, compact_revision, writer)
		VALUES (1, $1, 1, 1, 0, $2)`, cluster, m.cfg.Member); err != nil {
		return st, err
	}
	return st, tx.Commit(ctx)
}

// follow copies revisions from st.lastRev+1 on as the store applies them.
func (m *Mirror) follow(ctx context.Context, conn *pgx.Conn, st *state) error {
	s := m.cfg.Store
	if st.lastRev+1 < s.CompactRev() {
		return errResync
	}
	ch, stop, err := s.Follow(st.lastRev + 1)
	if err != nil {
		return err
	}
	defer stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	w := &batchWriter{m: m, conn: conn, st: st, ttls: leaseTTLs{src: s}}
	for {
		select {
		case <-ctx.Done():
			return nil
		case resp := <-ch:
			if resp.Compacted {
				return errResync
			}
			w.add(resp.Events)
			// Take what else is queued, up to a batch, into one transaction.
		drain:
			for w.rows < m.cfg.BatchRows {
				select {
				case resp := <-ch:
					if resp.Compacted {
						if err := w.flush(ctx); err != nil {
							return err
						}
						return errResync
					}
					w.add(resp.Events)
				default:
					break drain
				}
			}
			if err := w.flush(ctx); err != nil {
				m.m.errors.WithLabelValues("write").Inc()
				return err
			}
		case <-tick.C:
			if !m.cfg.IsLeader() {
				return nil
			}
			if err := m.mirrorCompaction(ctx, conn, st); err != nil {
				m.m.errors.WithLabelValues("compact").Inc()
				return err
			}
		}
		m.m.lag.Set(float64(max(s.Rev()-st.lastRev, 0)))
	}
}

// revision is one revision's changes.
type revision struct {
	rev     int64
	changes []change
}

// batchWriter collects revisions and writes them in one transaction.
type batchWriter struct {
	m    *Mirror
	conn *pgx.Conn
	st   *state
	revs []revision
	rows int
	ttls leaseTTLs
}

func (w *batchWriter) add(evs []*mvccpb.Event) {
	for _, ev := range evs {
		c := change{name: KeyName(ev.Kv.Key), delete: ev.Type == mvccpb.DELETE, value: ev.Kv.Value, lease: ev.Kv.Lease}
		if n := len(w.revs); n > 0 && w.revs[n-1].rev == ev.Kv.ModRevision {
			w.revs[n-1].changes = append(w.revs[n-1].changes, c)
		} else {
			w.revs = append(w.revs, revision{rev: ev.Kv.ModRevision, changes: []change{c}})
		}
		w.rows++
	}
}

// leaseTTLs caches granted lease TTLs: kine's lease column holds a TTL,
// not an ID. A lease already gone is written as 0.
type leaseTTLs struct {
	src Store
	m   map[int64]int32
}

func (l *leaseTTLs) get(id int64) int32 {
	if id == 0 {
		return 0
	}
	if t, ok := l.m[id]; ok {
		return t
	}
	if l.m == nil || len(l.m) > 10000 {
		l.m = map[int64]int32{}
	}
	t := clampTTL(l.src.LeaseTTL(id))
	l.m[id] = t
	return t
}

func (w *batchWriter) flush(ctx context.Context) error {
	if len(w.revs) == 0 {
		return nil
	}
	st := w.st
	if first := w.revs[0].rev; first != st.lastRev+1 {
		return fmt.Errorf("sqlbridge: revision %d follows %d: the revision log has a gap", first, st.lastRev)
	}
	tx, err := w.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	latest := map[string]*latestRow{}
	names := make([]string, 0, w.rows)
	seen := map[string]bool{}
	for _, r := range w.revs {
		for _, c := range r.changes {
			if !seen[c.name] {
				seen[c.name] = true
				names = append(names, c.name)
			}
		}
	}
	if err := loadLatest(ctx, tx, names, latest); err != nil {
		return err
	}
	rows := make([][]any, 0, w.rows)
	var blocks [][]any
	id, lastRev := st.lastID, st.lastRev
	for _, r := range w.revs {
		if r.rev != lastRev+1 {
			return fmt.Errorf("sqlbridge: revision %d follows %d: the revision log has a gap", r.rev, lastRev)
		}
		lastRev = r.rev
		if len(r.changes) > 1 {
			blocks = append(blocks, []any{r.rev, id + 1, id + int64(len(r.changes)), false})
		}
		for _, c := range r.changes {
			id++
			row := rowFor(id, c, latest[c.name], w.ttls.get(c.lease))
			latest[c.name] = row.latest()
			rows = append(rows, row.values())
		}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"kine"}, kineColumns, pgx.CopyFromRows(rows)); err != nil {
		return err
	}
	if len(blocks) > 0 {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"ballast_sqlbridge_blocks"}, []string{"revision", "first_id", "last_id", "resync"}, pgx.CopyFromRows(blocks)); err != nil {
			return err
		}
	}
	if err := advanceState(ctx, tx, st, lastRev, id, st.compactRev, w.m.cfg.Member); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	w.m.m.mirrored.Add(float64(lastRev - st.lastRev))
	st.lastRev, st.lastID = lastRev, id
	w.m.m.lastMirrored.Set(float64(lastRev))
	w.revs, w.rows = w.revs[:0], 0
	return nil
}

// advanceState moves the state row from st to (rev, id, compact), only if
// it still holds st: the fence against a second writer. New rows get the
// batch's time.
func advanceState(ctx context.Context, tx pgx.Tx, st *state, rev, id, compact int64, member string) error {
	tag, err := tx.Exec(ctx, `UPDATE ballast_sqlbridge_state SET last_revision = $1, last_id = $2, compact_revision = $3,
		writer = $4, updated_at = now() WHERE id = 1 AND last_revision = $5 AND last_id = $6`,
		rev, id, compact, member, st.lastRev, st.lastID)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return errFenced
	}
	if id != st.lastID {
		_, err = tx.Exec(ctx, `INSERT INTO ballast_sqlbridge_batches (last_id, last_revision) VALUES ($1, $2)`, id, rev)
	}
	return err
}

// idOf is the last row id of revision rev (at most the last mirrored).
func idOf(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, rev int64) (int64, error) {
	var id int64
	err := q.QueryRow(ctx, `SELECT COALESCE((SELECT $1 + (b.last_id - b.revision) FROM ballast_sqlbridge_blocks b
		WHERE b.revision <= $1 ORDER BY b.revision DESC LIMIT 1), $1)`, rev).Scan(&id)
	return id, err
}

// kineCompact is kine's own PostgreSQL compaction: every row a later row
// (at or below the target) supersedes, and every deletion at or below it.
const kineCompact = `
	DELETE FROM kine AS kv
	USING (
		SELECT kp.prev_revision AS id FROM kine AS kp
		WHERE kp.name != 'compact_rev_key' AND kp.prev_revision != 0 AND kp.id <= $1
		UNION
		SELECT kd.id AS id FROM kine AS kd WHERE kd.deleted != 0 AND kd.id <= $1
	) AS ks
	WHERE kv.id = ks.id`

// mirrorCompaction compacts the table as far as Ballast has compacted, once
// the mirror has the revision: kine's compaction at the revision's last id.
func (m *Mirror) mirrorCompaction(ctx context.Context, conn *pgx.Conn, st *state) error {
	c := m.cfg.Store.CompactRev()
	if c <= st.compactRev || c > st.lastRev {
		return nil
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if err := compactTo(ctx, tx, c); err != nil {
		return err
	}
	if err := advanceState(ctx, tx, st, st.lastRev, st.lastID, c, m.cfg.Member); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	st.compactRev = c
	return nil
}

// compactTo runs kine's compaction up to revision rev's last row and
// records it where kine reads it.
func compactTo(ctx context.Context, tx pgx.Tx, rev int64) error {
	target, err := idOf(ctx, tx, rev)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, kineCompact, target); err != nil {
		return err
	}
	if _, err = tx.Exec(ctx, `UPDATE kine SET prev_revision = $1 WHERE name = 'compact_rev_key'`, target); err != nil {
		return err
	}
	// Forget the times of batches whose rows compaction removed: the next
	// batch's time then covers an empty range.
	_, err = tx.Exec(ctx, `DELETE FROM ballast_sqlbridge_batches b WHERE b.last_id < $1 AND NOT EXISTS (
		SELECT 1 FROM kine k WHERE k.name <> 'compact_rev_key' AND k.id <= b.last_id AND k.id > COALESCE(
			(SELECT max(p.last_id) FROM ballast_sqlbridge_batches p WHERE p.last_id < b.last_id), 0))`, target)
	return err
}
