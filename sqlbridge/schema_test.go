package sqlbridge

import (
	"context"
	"strings"
	"testing"

	"github.com/ballast-kv/ballast/sqlbridge/pgtest"
)

// TestGuardRefusesOtherWriters: only a session that says it is the mirror
// may change the table; kine or a person writing into a mirror is refused
// with a message that says why.
func TestGuardRefusesOtherWriters(t *testing.T) {
	pg := pgtest.Start(t)
	pg.CreateDB("g")
	ctx := context.Background()
	conn := pg.Connect("g")
	if err := createSchema(ctx, conn, Postgres, false, true); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, `INSERT INTO kine (name, created, deleted, create_revision, prev_revision, lease, value) VALUES ('/x', 1, 0, 0, 0, 0, 'v')`)
	if err == nil || !strings.Contains(err.Error(), "read-only mirror of a Ballast cluster") {
		t.Fatalf("insert by another session: %v", err)
	}
	if _, err := conn.Exec(ctx, `SET ballast.mirror = 'on'`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO kine (name, created, deleted, create_revision, prev_revision, lease, value) VALUES ('/x', 1, 0, 0, 0, 0, 'v')`); err != nil {
		t.Fatalf("insert by the mirror's session: %v", err)
	}
}

// TestYugabyteDialectOnPostgres runs the YugabyteDB dialect's DDL against
// PostgreSQL, leaving out the two things only YugabyteDB parses (the range
// primary key "PRIMARY KEY (id ASC)" and the yb_* session settings), then
// runs kine's own list query on it. What stays untested here: YugabyteDB's range
// sharding, batched nested-loop joins, its advisory locks, and whether its
// planner picks the covering index.
func TestYugabyteDialectOnPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	pg.CreateDB("yb")
	ctx := context.Background()
	conn := pg.Connect("yb")
	if err := createSchema(ctx, conn, Yugabyte, true, true); err != nil {
		t.Fatal(err)
	}
	var def string
	if err := conn.QueryRow(ctx, `SELECT indexdef FROM pg_indexes WHERE indexname = 'kine_list_query_index'`).Scan(&def); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(def, "INCLUDE (deleted, created, create_revision, prev_revision, lease)") {
		t.Fatalf("list index: %s", def)
	}
	if got := Yugabyte.kineDDL(false)[0]; !strings.Contains(got, "PRIMARY KEY (id ASC)") {
		t.Fatalf("the YugabyteDB table is not range-sharded: %s", got)
	}
	if _, err := conn.Exec(ctx, `SET ballast.mirror = 'on'`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision, lease, value)
		SELECT g, '/registry/pods/p' || (g % 500), CASE WHEN g <= 500 THEN 1 ELSE 0 END, 0, 0, CASE WHEN g <= 500 THEN 0 ELSE g - 500 END, 0, 'v'
		FROM generate_series(1, 5000) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `ANALYZE kine`); err != nil {
		t.Fatal(err)
	}
	// kine's ListCurrent (pkg/drivers/generic) for a prefix.
	const list = `SELECT current_rev, compact_rev, id, name, created, deleted, create_revision, prev_revision, lease
		FROM (SELECT MAX(id) AS current_rev FROM kine) AS current,
		     (SELECT MAX(prev_revision) AS compact_rev FROM kine WHERE name = 'compact_rev_key') AS compact, kine
		INNER JOIN (SELECT MAX(id) AS id FROM kine WHERE name >= $1 AND name < $2 GROUP BY name) AS mkv USING (id)
		WHERE (deleted = 0 OR $3) ORDER BY name ASC LIMIT 500`
	rows, err := conn.Query(ctx, list, "/registry/pods/", "/registry/pods0", false)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		n++
	}
	rows.Close()
	if n != 500 {
		t.Fatalf("kine's list query returned %d keys, want 500", n)
	}
}
