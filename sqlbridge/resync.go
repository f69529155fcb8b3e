package sqlbridge

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"

	"github.com/jackc/pgx/v5"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// RangeFunc serves an etcd Range: a local store's, or a client's.
type RangeFunc func(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error)

// scanPage is how many keys one Range of a state scan asks for.
const scanPage = 1000

// scanState calls fn for every key at revision rev, in key order, one page
// in memory at a time. rev 0 reads the current revision, and then the one
// the first page answered at, so every page is of one revision. It returns
// that revision.
func scanState(ctx context.Context, rng RangeFunc, rev int64, fn func(kv *mvccpb.KeyValue) error) (int64, error) {
	key := []byte{0}
	for {
		resp, err := rng(ctx, &pb.RangeRequest{Key: key, RangeEnd: []byte{0}, Revision: rev, Limit: scanPage})
		if err != nil {
			return rev, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv); err != nil {
				return rev, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		key = append(bytes.Clone(resp.Kvs[len(resp.Kvs)-1].Key), 0)
	}
}

func md5hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

// resync rebuilds the mirror at the store's current revision after
// compaction removed revisions it had not copied: in one transaction, a
// row for every key whose value or lease differs from the table's newest
// row, a deletion for every name the store no longer holds, all as one
// block of ids that belong to that revision, and kine's compaction there.
// History between the last mirrored revision and it is lost, as it is in
// Ballast.
func (m *Mirror) resync(ctx context.Context, conn *pgx.Conn, st *state) error {
	s := m.cfg.Store
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	type known struct {
		latestRow
		sum     string
		lease   int32
		present bool
	}
	table := map[string]*known{}
	rows, err := tx.Query(ctx, `SELECT DISTINCT ON (name) name, id, created, deleted, COALESCE(create_revision, 0), COALESCE(lease, 0), md5(value)
		FROM kine WHERE name <> 'compact_rev_key' ORDER BY name, id DESC`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var name string
		var created, deleted int32
		var sum *string
		k := &known{}
		if err := rows.Scan(&name, &k.id, &created, &deleted, &k.createRevision, &k.lease, &sum); err != nil {
			rows.Close()
			return err
		}
		k.created, k.deleted = created != 0, deleted != 0
		if sum != nil {
			k.sum = *sum
		}
		table[name] = k
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	ttls := leaseTTLs{src: s}
	first := st.lastID + 1
	id := st.lastID
	var batch pgx.Batch
	insert := func(r kineRow) {
		// old_value as kine takes it: the superseded row's value.
		batch.Queue(`INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision, lease, value, old_value)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, (SELECT value FROM kine WHERE id = $6))`,
			r.id, r.name, r.created, r.deleted, r.createRevision, r.prevRevision, r.lease, r.value)
	}
	send := func() error {
		if batch.Len() == 0 {
			return nil
		}
		err := tx.SendBatch(ctx, &batch).Close()
		batch = pgx.Batch{}
		return err
	}
	rev, err := scanState(ctx, func(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) { return s.Range(r) }, 0,
		func(kv *mvccpb.KeyValue) error {
			name := KeyName(kv.Key)
			ttl := ttls.get(kv.Lease)
			k := table[name]
			if k != nil {
				k.present = true
				if !k.deleted && k.sum == md5hex(kv.Value) && k.lease == ttl {
					return nil // unchanged
				}
			}
			var p *latestRow
			if k != nil {
				p = &k.latestRow
			}
			id++
			insert(rowFor(id, change{name: name, value: kv.Value, lease: kv.Lease}, p, ttl))
			if batch.Len() >= 500 {
				return send()
			}
			return nil
		})
	if err != nil {
		return err
	}
	for name, k := range table {
		if !k.present && !k.deleted {
			id++
			insert(rowFor(id, change{name: name, delete: true}, &k.latestRow, 0))
		}
	}
	if err := send(); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO ballast_sqlbridge_blocks (revision, first_id, last_id, resync) VALUES ($1, $2, $3, true)
		ON CONFLICT (revision) DO UPDATE SET first_id = EXCLUDED.first_id, last_id = EXCLUDED.last_id, resync = true`, rev, first, id); err != nil {
		return err
	}
	// The block's ids all map to rev, and the next revision takes id+1.
	if err := compactTo(ctx, tx, rev); err != nil {
		return err
	}
	if err := advanceState(ctx, tx, st, rev, id, rev, m.cfg.Member); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	m.log.Warn("SQL mirror resynchronised from a snapshot: Ballast had compacted revisions it had not copied, so their history is not in the table",
		"missed-from", st.lastRev+1, "revision", rev, "rows", id-st.lastID)
	st.lastRev, st.lastID, st.compactRev = rev, id, rev
	m.m.resyncs.Inc()
	m.m.lastMirrored.Set(float64(rev))
	return nil
}
