package sqlbridge

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Dialect is the database the bridge writes to.
type Dialect string

const (
	Postgres  Dialect = "postgres"
	Yugabyte  Dialect = "yugabyte"
	compactRK         = "compact_rev_key" // kine's row holding the compaction revision in prev_revision
)

// ParseDialect accepts the --sql-mirror-dialect values.
func ParseDialect(s string) (Dialect, error) {
	switch Dialect(strings.ToLower(s)) {
	case Postgres, "postgresql", "":
		return Postgres, nil
	case Yugabyte, "yugabytedb":
		return Yugabyte, nil
	}
	return "", fmt.Errorf("unknown SQL dialect %q: want postgres or yugabyte", s)
}

// kineColumnsDDL are kine's columns after id, in both dialects.
const kineColumnsDDL = `name text COLLATE "C", created INTEGER, deleted INTEGER, create_revision BIGINT,
	prev_revision BIGINT, lease INTEGER, value bytea, old_value bytea`

// kineTable is kine's own PostgreSQL DDL (pkg/drivers/pgsql), so kine
// pointed at the database finds what it would have created.
var kineTable = []string{
	`CREATE TABLE IF NOT EXISTS kine (id BIGSERIAL PRIMARY KEY, ` + kineColumnsDDL + `)`,
	`CREATE INDEX IF NOT EXISTS kine_name_index ON kine (name)`,
	`CREATE INDEX IF NOT EXISTS kine_name_id_index ON kine (name,id)`,
	`CREATE INDEX IF NOT EXISTS kine_id_deleted_index ON kine (id,deleted)`,
	`CREATE INDEX IF NOT EXISTS kine_prev_revision_index ON kine (prev_revision)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision_uindex ON kine (name, prev_revision)`,
	`CREATE INDEX IF NOT EXISTS kine_list_query_index on kine(name, id DESC, deleted)`,
}

// yugabyteKineTable is the same table shaped for YugabyteDB: a
// range-sharded primary key (hash sharding would scatter kine's
// "id > N ORDER BY id" polls over every tablet), range (ASC) secondary
// indexes for kine's name ranges, and a covering list index so kine's
// MAX(id) GROUP BY name join never goes back to the table.
var yugabyteKineTable = []string{
	`CREATE TABLE IF NOT EXISTS kine (id BIGSERIAL, ` + kineColumnsDDL + `, PRIMARY KEY (id ASC))`,
	`CREATE INDEX IF NOT EXISTS kine_name_index ON kine (name ASC)`,
	`CREATE INDEX IF NOT EXISTS kine_name_id_index ON kine (name ASC, id ASC)`,
	`CREATE INDEX IF NOT EXISTS kine_id_deleted_index ON kine (id ASC, deleted)`,
	`CREATE INDEX IF NOT EXISTS kine_prev_revision_index ON kine (prev_revision ASC)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision_uindex ON kine (name ASC, prev_revision ASC)`,
	`CREATE INDEX IF NOT EXISTS kine_list_query_index ON kine (name ASC, id DESC) INCLUDE (deleted, created, create_revision, prev_revision, lease)`,
}

// yugabyteSession turns on batched nested-loop joins, which turn kine's
// list join from one index lookup per key into batches.
var yugabyteSession = []string{
	`SET yb_enable_batchednl = true`,
	`SET yb_bnl_batch_size = 1024`,
}

// bridgeTables are Ballast's own, beside kine's.
var bridgeTables = []string{
	// One row: how far the mirror got. It is updated in the transaction
	// that writes the rows it covers, and only if it still says what the
	// writer read, so two writers can never both apply a revision.
	`CREATE TABLE IF NOT EXISTS ballast_sqlbridge_state (
		id INTEGER PRIMARY KEY CHECK (id = 1),
		cluster_id TEXT NOT NULL,
		last_revision BIGINT NOT NULL,
		last_id BIGINT NOT NULL,
		compact_revision BIGINT NOT NULL,
		writer TEXT NOT NULL,
		updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
	)`,
	// Revisions that did not take exactly one id: those that changed
	// several keys, and resynchronisations (every id of the block is the
	// revision it resynchronised to).
	`CREATE TABLE IF NOT EXISTS ballast_sqlbridge_blocks (
		revision BIGINT PRIMARY KEY,
		first_id BIGINT NOT NULL,
		last_id BIGINT NOT NULL,
		resync BOOLEAN NOT NULL DEFAULT false
	)`,
	`CREATE INDEX IF NOT EXISTS ballast_sqlbridge_blocks_first_id ON ballast_sqlbridge_blocks (first_id)`,
	// When each transaction of the mirror committed, by its last row id:
	// kine's table has no time, and people ask what changed in the last
	// hour. A row was mirrored at the time of the first batch at or after
	// its id (within the mirror's lag of when Ballast applied it).
	`CREATE TABLE IF NOT EXISTS ballast_sqlbridge_batches (
		last_id BIGINT PRIMARY KEY,
		last_revision BIGINT NOT NULL,
		mirrored_at TIMESTAMPTZ NOT NULL DEFAULT now()
	)`,
	// NameKey in SQL: the exact key bytes of a kine name.
	`CREATE OR REPLACE FUNCTION ballast_key(name text) RETURNS bytea LANGUAGE plpgsql IMMUTABLE STRICT AS $$
	DECLARE
		b bytea := convert_to(name, 'UTF8');
		out bytea := ''::bytea;
		i int := 0;
		n int := length(b);
	BEGIN
		IF position('\xefbfbf'::bytea IN b) = 0 THEN
			RETURN b;
		END IF;
		WHILE i < n LOOP
			IF i + 4 < n AND get_byte(b, i) = 239 AND get_byte(b, i+1) = 191 AND get_byte(b, i+2) = 191 THEN
				out := out || decode(convert_from(substring(b FROM i+4 FOR 2), 'UTF8'), 'hex');
				i := i + 5;
			ELSE
				out := out || substring(b FROM i+1 FOR 1);
				i := i + 1;
			END IF;
		END LOOP;
		RETURN out;
	END $$`,
	// The Ballast revision of a row id.
	`CREATE OR REPLACE FUNCTION ballast_revision(row_id bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
		SELECT COALESCE((SELECT b.revision + GREATEST(row_id - b.last_id, 0)
			FROM ballast_sqlbridge_blocks b WHERE b.first_id <= row_id
			ORDER BY b.first_id DESC LIMIT 1), row_id)
	$$`,
	// Every mirrored change, with its revision and exact key.
	`CREATE OR REPLACE VIEW ballast_history AS
		SELECT kv.id, ballast_revision(kv.id) AS revision, kv.name, ballast_key(kv.name) AS key,
			CASE WHEN kv.deleted <> 0 THEN 'DELETE' WHEN kv.created <> 0 THEN 'CREATE' ELSE 'UPDATE' END AS op,
			CASE WHEN kv.created <> 0 THEN kv.id ELSE NULLIF(kv.create_revision, 0) END AS create_id,
			kv.prev_revision AS prev_id, kv.lease AS lease_ttl, kv.value, kv.old_value,
			(SELECT b.mirrored_at FROM ballast_sqlbridge_batches b WHERE b.last_id >= kv.id ORDER BY b.last_id LIMIT 1) AS mirrored_at
		FROM kine kv
		WHERE kv.name <> 'compact_rev_key' AND kv.name NOT LIKE 'gap-%'`,
	// The current state: each live key's newest row.
	`CREATE OR REPLACE VIEW ballast_current AS
		SELECT l.name, l.key, l.value, l.revision AS mod_revision, ballast_revision(l.create_id) AS create_revision,
			l.lease_ttl, l.id
		FROM (SELECT DISTINCT ON (h.name) h.* FROM ballast_history h ORDER BY h.name, h.id DESC) l
		WHERE l.op <> 'DELETE'`,
	// kine pointed at a mirror must not write to it (it would create its
	// health key, expire leases and compact on its own): only a session that
	// set ballast.mirror may change the table.
	`CREATE OR REPLACE FUNCTION ballast_sqlbridge_guard() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF current_setting('ballast.mirror', true) IS DISTINCT FROM 'on' THEN
			RAISE EXCEPTION 'table kine is a read-only mirror of a Ballast cluster: write through Ballast';
		END IF;
		RETURN NULL;
	END $$`,
	`DO $$ BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'ballast_sqlbridge_guard') THEN
			CREATE TRIGGER ballast_sqlbridge_guard BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON kine
				FOR EACH STATEMENT EXECUTE FUNCTION ballast_sqlbridge_guard();
		END IF;
	END $$`,
}

// schemaLock serialises schema creation between members: concurrent
// CREATE ... IF NOT EXISTS can still collide in the catalogue.
const schemaLock = 0x62616c6c61737400 // "ballast\0"

// mirrorLock is the session advisory lock the mirroring member holds.
const mirrorLock = 0x62616c6c61737401

// kineDDL is the kine table and indexes in d. With pgCompatible, the
// clauses only YugabyteDB parses are left out, so that the rest of the
// YugabyteDB dialect can be run against PostgreSQL in tests.
func (d Dialect) kineDDL(pgCompatible bool) []string {
	if d != Yugabyte {
		return kineTable
	}
	if !pgCompatible {
		return yugabyteKineTable
	}
	out := make([]string, len(yugabyteKineTable))
	for i, s := range yugabyteKineTable {
		out[i] = strings.Replace(s, "PRIMARY KEY (id ASC)", "PRIMARY KEY (id)", 1)
	}
	return out
}

// session is what each of the bridge's connections runs first.
func (d Dialect) session(pgCompatible bool) []string {
	if d == Yugabyte && !pgCompatible {
		return yugabyteSession
	}
	return nil
}

// CreateSchema creates kine's table and the bridge's tables, views and
// guard in the database conn is connected to, if they are missing.
func createSchema(ctx context.Context, conn *pgx.Conn, d Dialect, pgCompatible, guard bool) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(schemaLock)); err != nil {
		return err
	}
	stmts := append([]string(nil), d.kineDDL(pgCompatible)...)
	stmts = append(stmts, bridgeTables...)
	if !guard {
		stmts = stmts[:len(stmts)-2]
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("create schema: %w (in %.60q)", err, s)
		}
	}
	return tx.Commit(ctx)
}
