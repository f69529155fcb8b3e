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
