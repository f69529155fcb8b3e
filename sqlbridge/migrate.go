package sqlbridge

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Progress is told how many of total items a migration has done.
type Progress func(done, total int64)

// FromKineResult describes an import.
type FromKineResult struct {
	Revision        int64 `json:"revision"`
	CompactRevision int64 `json:"compactRevision"`
	Rows            int64 `json:"rows"`
	Keys            int64 `json:"keys"`
	Leases          int64 `json:"leases"`
	Size            int64 `json:"size"` // of the snapshot file the command writes
}

// kineLeaseID is the Ballast lease that keys written in kine with a lease
// of ttl seconds (kine's lease is a TTL) are attached to: one per TTL, the
// same on every run.
func kineLeaseID(ttl int64) int64 { return 0x6b696e65<<32 | ttl }

// Importer takes another store's history at its revisions (mvcc's).
type Importer interface {
	Put(rev int64, key, value []byte, create, lease int64) error
	Delete(rev int64, key []byte) error
	GrantLease(id, ttl int64)
	Finish(rev, compactRev int64) error
}

// FromKine reads the kine table at url in one consistent snapshot into im.
// Every row is replayed at its id as revision: keys, values, create and mod
// revisions are kine's; versions count the rows kine still holds since each
// key's creation; rows below kine's compaction are the ones it kept, and
// the compaction revision carries over.
func FromKine(ctx context.Context, url string, im Importer, progress Progress) (FromKineResult, error) {
	var res FromKineResult
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.Background())
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return res, err
	}
	defer tx.Rollback(ctx)
	var total int64
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(id), 0), COALESCE((SELECT MAX(prev_revision) FROM kine WHERE name = 'compact_rev_key'), 0), count(*) FROM kine`).
		Scan(&res.Revision, &res.CompactRevision, &total); err != nil {
		return res, fmt.Errorf("read kine table: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT id, name, created, deleted, COALESCE(create_revision, 0), COALESCE(lease, 0), value FROM kine ORDER BY id`)
	if err != nil {
		return res, err
	}
	leases := map[int64]bool{}
	var done int64
	for rows.Next() {
		var id, createRev int64
		var name string
		var created, deleted, lease int32
		var value []byte
		if err := rows.Scan(&id, &name, &created, &deleted, &createRev, &lease, &value); err != nil {
			rows.Close()
			return res, err
		}
		done++
		if progress != nil && done%1000 == 0 {
			progress(done, total)
		}
		// kine's own rows: its compaction marker and the fillers it writes
		// over gaps in its id sequence.
		if name == compactRK || (strings.HasPrefix(name, "gap-") && deleted != 0 && created == 0) {
			continue
		}
		key, err := NameKey(name)
		if err != nil {
			rows.Close()
			return res, fmt.Errorf("row %d: %w", id, err)
		}
		res.Rows++
		if deleted != 0 {
			err = im.Delete(id, key)
		} else {
			var leaseID int64
			if lease > 0 {
				leaseID = kineLeaseID(int64(lease))
				if !leases[leaseID] {
					leases[leaseID] = true
					im.GrantLease(leaseID, int64(lease))
				}
			}
			create := createRev
			if created != 0 {
				create = id
			}
			err = im.Put(id, key, value, create, leaseID)
		}
		if err != nil {
			rows.Close()
			return res, fmt.Errorf("row %d: %w", id, err)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, err
	}
	if progress != nil {
		progress(done, total)
	}
	if err := im.Finish(res.Revision, res.CompactRevision); err != nil {
		return res, err
	}
	res.Leases = int64(len(leases))
	return res, nil
}

// ToKineResult describes an export.
type ToKineResult struct {
	Revision int64 `json:"revision"`
	Keys     int64 `json:"keys"`
	// Renumbered keys shared their mod revision with another key (a txn
	// or lease revoke changed several): kine has one row per id, so they
	// take ids after Revision.
	Renumbered int64 `json:"renumbered"`
	LastID     int64 `json:"lastId"`
}

// ErrTargetInUse is returned by ToKine for a table it must not replace.
var ErrTargetInUse = errors.New("target kine table is in use")

// ToKine writes the state a Range function serves at one revision into the
// kine table at url, as rows kine can take over from: each key one row at
// its mod revision (create_revision kept), keys sharing a mod revision
// after the last, kine's compaction at the revision, and kine's id sequence
// moved past every row. ttl gives a lease's granted TTL. The table must be
// empty or hold only what an earlier ToKine wrote and nothing since, which
// is then replaced: re-running is safe.
func ToKine(ctx context.Context, rng RangeFunc, ttl func(lease int64) int64, url string, d Dialect, progress Progress) (ToKineResult, error) {
	var res ToKineResult
	conn, err := connect(ctx, url, d, false)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.Background())
	if err := createSchema(ctx, conn, d, false, false); err != nil {
		return res, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return res, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS ballast_sqlbridge_export (id INTEGER PRIMARY KEY CHECK (id = 1), revision BIGINT NOT NULL, last_id BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return res, err
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE kine IN ACCESS EXCLUSIVE MODE`); err != nil {
		return res, err
	}
	var mirrors int64
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM ballast_sqlbridge_state`).Scan(&mirrors); err != nil {
		return res, err
	}
	if mirrors > 0 {
		return res, fmt.Errorf("%w: it is the live mirror of a Ballast cluster (--sql-mirror); export into another database", ErrTargetInUse)
	}
	var rows, maxID, exported int64
	if err := tx.QueryRow(ctx, `SELECT count(*), COALESCE(MAX(id), 0), COALESCE((SELECT last_id FROM ballast_sqlbridge_export), -1) FROM kine`).Scan(&rows, &maxID, &exported); err != nil {
		return res, err
	}
	if rows > 0 && maxID != exported {
		return res, fmt.Errorf("%w: it holds %d rows up to id %d that an earlier export did not leave (kine has written to it); export into an empty table", ErrTargetInUse, rows, maxID)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM kine`); err != nil {
		return res, err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM ballast_sqlbridge_blocks`); err != nil {
		return res, err
	}

	used := map[int64]bool{}
	var batch, shared [][]any
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"kine"}, kineColumns, pgx.CopyFromRows(batch))
		batch = batch[:0]
		return err
	}
	row := func(id int64, kv *mvccpb.KeyValue) []any {
		r := kineRow{id: id, name: KeyName(kv.Key), value: nonNil(kv.Value)}
		if kv.Lease != 0 {
			r.lease = clampTTL(ttl(kv.Lease))
		}
		if kv.CreateRevision == kv.ModRevision && id == kv.ModRevision {
			r.created = 1
		} else {
			r.createRevision = kv.CreateRevision
		}
		return r.values()
	}
	rev, err := scanState(ctx, rng, 0, func(kv *mvccpb.KeyValue) error {
		res.Keys++
		if progress != nil && res.Keys%1000 == 0 {
			progress(res.Keys, 0)
		}
		if used[kv.ModRevision] {
			shared = append(shared, row(0, kv))
			return nil
		}
		used[kv.ModRevision] = true
		batch = append(batch, row(kv.ModRevision, kv))
		if len(batch) >= 1000 {
			return flush()
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	res.Revision, res.LastID = rev, rev
	for _, r := range shared {
		res.LastID++
		r[0] = res.LastID
		batch = append(batch, r)
	}
	res.Renumbered = int64(len(shared))
	res.LastID++
	batch = append(batch, (&kineRow{id: res.LastID, name: compactRK, created: 1, prevRevision: rev, value: []byte{}}).values())
	if err := flush(); err != nil {
		return res, err
	}
	if res.Renumbered > 0 {
		// ballast_history maps the renumbered ids back to the revision.
		if _, err := tx.Exec(ctx, `INSERT INTO ballast_sqlbridge_blocks (revision, first_id, last_id, resync) VALUES ($1, $2, $3, true)`,
			rev, rev+1, res.LastID); err != nil {
			return res, err
		}
	}
	if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence('kine', 'id'), $1)`, res.LastID); err != nil {
		return res, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO ballast_sqlbridge_export (id, revision, last_id) VALUES (1, $1, $2)
		ON CONFLICT (id) DO UPDATE SET revision = EXCLUDED.revision, last_id = EXCLUDED.last_id, at = now()`, rev, res.LastID); err != nil {
		return res, err
	}
	if progress != nil {
		progress(res.Keys, res.Keys)
	}
	return res, tx.Commit(ctx)
}
