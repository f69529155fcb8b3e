package sqlbridge

import (
	"context"
	"math"

	"github.com/jackc/pgx/v5"
)

// change is one key's change within a revision.
type change struct {
	name   string // KeyName of the key
	delete bool
	value  []byte
	lease  int64 // Ballast lease ID, 0 for none
}

// latestRow is what the table holds as a name's newest row.
type latestRow struct {
	id, createRevision int64
	created, deleted   bool
	value              []byte
}

// createID is the id of the row that created the key, as kine derives it.
func (p *latestRow) createID() int64 {
	if p.created {
		return p.id
	}
	return p.createRevision
}

// kineRow is one row of kine's table.
type kineRow struct {
	id                           int64
	name                         string
	created, deleted             int32
	createRevision, prevRevision int64
	lease                        int32
	value, oldValue              []byte
}

var kineColumns = []string{"id", "name", "created", "deleted", "create_revision", "prev_revision", "lease", "value", "old_value"}

func (r *kineRow) values() []any {
	return []any{r.id, r.name, r.created, r.deleted, r.createRevision, r.prevRevision, r.lease, r.value, r.oldValue}
}

// rowFor is the row kine would append for c, given the name's newest row p
// (nil if none), with the id kine's sequence would have given. Like kine: a
// create follows nothing or a deletion and leaves create_revision 0 (the
// row's own id is its create revision); an update carries the create row's
// id; a deletion carries neither value nor lease nor create revision; every
// row but a first create points at the row it supersedes and copies its
// value as old_value.
func rowFor(id int64, c change, p *latestRow, ttl int32) kineRow {
	r := kineRow{id: id, name: c.name}
	if p != nil {
		r.prevRevision, r.oldValue = p.id, p.value
	}
	switch {
	case c.delete:
		r.deleted = 1
	case p == nil || p.deleted:
		r.created, r.lease, r.value = 1, ttl, nonNil(c.value)
	default:
		r.createRevision, r.lease, r.value = p.createID(), ttl, nonNil(c.value)
	}
	return r
}

// nonNil keeps an empty value an empty bytea, not NULL, as kine stores it.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func (r *kineRow) latest() *latestRow {
	return &latestRow{id: r.id, createRevision: r.createRevision, created: r.created != 0, deleted: r.deleted != 0, value: r.value}
}

// clampTTL fits a lease TTL in kine's INTEGER lease column.
func clampTTL(ttl int64) int32 {
	return int32(min(max(ttl, 0), math.MaxInt32))
}

// loadLatest reads the newest row of each of names.
func loadLatest(ctx context.Context, tx pgx.Tx, names []string, into map[string]*latestRow) error {
	if len(names) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `SELECT DISTINCT ON (name) name, id, created, deleted, COALESCE(create_revision, 0), value
		FROM kine WHERE name = ANY($1) ORDER BY name, id DESC`, names)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var created, deleted int32
		p := &latestRow{}
		if err := rows.Scan(&name, &p.id, &created, &deleted, &p.createRevision, &p.value); err != nil {
			return err
		}
		p.created, p.deleted = created != 0, deleted != 0
		into[name] = p
	}
	return rows.Err()
}
