// Package sqlbridgetest runs the SQL bridge end to end: real Ballast
// clusters mirroring into a real PostgreSQL server, real kine reading what
// they wrote, and migrations both ways.
package sqlbridgetest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ballast-kv/ballast/sqlbridge"
	"github.com/ballast-kv/ballast/sqlbridge/pgtest"
	"github.com/ballast-kv/ballast/test/internal/harness"
)

// mirrored is a Ballast cluster mirroring into database "mirror".
type mirrored struct {
	pg    *pgtest.Server
	url   string
	nodes []*harness.Node
}

func startMirrored(t testing.TB, size int, args ...string) *mirrored {
	pg := pgtest.Start(t)
	pg.CreateDB("mirror")
	m := &mirrored{pg: pg, url: pg.URL("mirror")}
	m.nodes = harness.StartCluster(t, harness.BallastBin(t), size, harness.Options{
		Args: append([]string{"--sql-mirror", m.url}, args...),
	})
	return m
}

func (m *mirrored) client(t testing.TB) *clientv3.Client {
	var eps []string
	for _, n := range m.nodes {
		if n.Running() {
			eps = append(eps, n.ClientURL)
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// mirrorState reads the mirror's state row on a fresh connection (the
// server may have been restarted).
func mirrorState(ctx context.Context, url string) (lastRev, compactRev int64, writer string, err error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, 0, "", err
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, `SELECT last_revision, compact_revision, writer FROM ballast_sqlbridge_state`).Scan(&lastRev, &compactRev, &writer)
	return lastRev, compactRev, writer, err
}

// waitMirrored waits until the mirror holds revision rev and compaction c.
func (m *mirrored) waitMirrored(t testing.TB, rev, c int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		last, compact, _, err := mirrorState(ctx, m.url)
		cancel()
		if err == nil && last >= rev && compact >= c {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mirror did not reach revision %d (compaction %d) within 60s: at %d (compaction %d), err %v", rev, c, last, compact, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// event is one change of Ballast's history, as a watcher saw it.
type event struct {
	rev    int64
	key    []byte
	delete bool
	value  []byte
	lease  int64
}

// recordHistory watches every key from revision 1 until stop is closed and
// returns the events seen, in order.
func recordHistory(t *testing.T, cli *clientv3.Client) (stop func(upTo int64) []event) {
	ctx, cancel := context.WithCancel(context.Background())
	wch := cli.Watch(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(1))
	var mu sync.Mutex
	var evs []event
	last := int64(0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for resp := range wch {
			mu.Lock()
			for _, ev := range resp.Events {
				evs = append(evs, event{rev: ev.Kv.ModRevision, key: ev.Kv.Key, delete: ev.Type == mvccpb.DELETE, value: ev.Kv.Value, lease: ev.Kv.Lease})
				last = ev.Kv.ModRevision
			}
			mu.Unlock()
		}
	}()
	return func(upTo int64) []event {
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			l := last
			mu.Unlock()
			if l >= upTo {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the history watcher saw revision %d, not %d", l, upTo)
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		<-done
		return evs
	}
}

// kineRow is a row of kine's table.
type kineRow struct {
	ID, CreateRevision, PrevRevision int64
	Name                             string
	Created, Deleted, Lease          int32
	Value, OldValue                  []byte
}

func (r kineRow) String() string {
	return fmt.Sprintf("{id %d %q created %d deleted %d create_rev %d prev %d lease %d value %q old %q}",
		r.ID, r.Name, r.Created, r.Deleted, r.CreateRevision, r.PrevRevision, r.Lease, r.Value, r.OldValue)
}

// expectRows is what kine appends for the history, written here from
// kine's own code (pkg/logstructured, pkg/drivers/generic) independently
// of the mirror's: one row per change from id 2 on (id 1 is
// compact_rev_key); ttl gives each lease's granted TTL.
func expectRows(evs []event, ttl func(id int64, rev int64) int32) []kineRow {
	latest := map[string]kineRow{}
	var rows []kineRow
	id := int64(1)
	for _, ev := range evs {
		id++
		name := sqlbridge.KeyName(ev.key)
		r := kineRow{ID: id, Name: name}
		p, ok := latest[name]
		if ok {
			r.PrevRevision, r.OldValue = p.ID, p.Value
		}
		switch {
		case ev.delete:
			r.Deleted = 1
		case !ok || p.Deleted == 1:
			r.Created, r.Value, r.Lease = 1, ev.value, ttl(ev.lease, ev.rev)
		default:
			r.CreateRevision = p.CreateRevision
			if p.Created == 1 {
				r.CreateRevision = p.ID
			}
			r.Value, r.Lease = ev.value, ttl(ev.lease, ev.rev)
		}
		if r.Value == nil && r.Deleted == 0 {
			r.Value = []byte{}
		}
		latest[name] = r
		rows = append(rows, r)
	}
	return rows
}

// kineCompacted is the rows kine's compaction to id target keeps.
func kineCompacted(rows []kineRow, target int64) []kineRow {
	gone := map[int64]bool{}
	for _, r := range rows {
		if r.ID <= target && r.PrevRevision != 0 {
			gone[r.PrevRevision] = true
		}
		if r.ID <= target && r.Deleted != 0 {
			gone[r.ID] = true
		}
	}
	var out []kineRow
	for _, r := range rows {
		if !gone[r.ID] {
			out = append(out, r)
		}
	}
	return out
}

func readRows(t *testing.T, conn *pgx.Conn) []kineRow {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT id, name, created, deleted, create_revision, prev_revision, lease, value, old_value
		FROM kine WHERE name <> 'compact_rev_key' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []kineRow
	for rows.Next() {
		var r kineRow
		if err := rows.Scan(&r.ID, &r.Name, &r.Created, &r.Deleted, &r.CreateRevision, &r.PrevRevision, &r.Lease, &r.Value, &r.OldValue); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func compareRows(t *testing.T, what string, got, want []kineRow) {
	t.Helper()
	for i := 0; i < max(len(got), len(want)); i++ {
		switch {
		case i >= len(got):
			t.Fatalf("%s: %d rows, want %d; first missing: %v", what, len(got), len(want), want[i])
		case i >= len(want):
			t.Fatalf("%s: %d rows, want %d; first extra: %v", what, len(got), len(want), got[i])
		case got[i].String() != want[i].String():
			t.Fatalf("%s: row %d is\n  %v\nwant\n  %v", what, i, got[i], want[i])
		}
	}
}

// load drives a seeded mix of what Ballast's users send: puts, deletes,
// multi-key txns, range deletes, puts with leases and lease revokes (one
// revision deleting several keys), creates over tombstones, and keys that
// PostgreSQL text cannot hold. It runs until stop is closed.
type load struct {
	mu     sync.Mutex
	leases map[int64]int64 // lease ID -> granted TTL
	ops    int
}

func (l *load) run(ctx context.Context, cli *clientv3.Client, seed uint64, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(seed, 7))
	key := func() string {
		switch n := rng.IntN(40); {
		case n < 2:
			return fmt.Sprintf("/bin/\x00%c\xff", 'a'+n)
		default:
			return fmt.Sprintf("/registry/pods/ns%d/p%d", n%3, n)
		}
	}
	var lease clientv3.LeaseID
	for {
		select {
		case <-stop:
			return
		default:
		}
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		switch n := rng.IntN(100); {
		case n < 45:
			cli.Put(c, key(), fmt.Sprintf("v%d-%d", seed, rng.IntN(1000)))
		case n < 55:
			cli.Delete(c, key())
		case n < 65:
			a, b := key(), key()
			if a != b {
				cli.Txn(c).Then(clientv3.OpPut(a, "txn-a"), clientv3.OpPut(b, "txn-b")).Commit()
			}
		case n < 70:
			cli.Delete(c, fmt.Sprintf("/registry/pods/ns%d/", rng.IntN(3)), clientv3.WithPrefix())
		case n < 85:
			if lease == 0 {
				ttl := int64(600 + rng.IntN(600))
				if g, err := cli.Grant(c, ttl); err == nil {
					lease = g.ID
					l.mu.Lock()
					l.leases[int64(g.ID)] = g.TTL
					l.mu.Unlock()
				}
			}
			if lease != 0 {
				cli.Put(c, fmt.Sprintf("/registry/events/e%d", rng.IntN(20)), "event", clientv3.WithLease(lease))
			}
		case n < 90:
			if lease != 0 {
				cli.Revoke(c, lease)
				lease = 0
			}
		default:
			k := key()
			cli.Txn(c).If(clientv3.Compare(clientv3.ModRevision(k), "=", 0)).Then(clientv3.OpPut(k, "created")).Commit()
		}
		cancel()
		l.mu.Lock()
		l.ops++
		l.mu.Unlock()
	}
}

func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ops
}

func waitOps(t *testing.T, l *load, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for l.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("load reached %d ops, not %d", l.count(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func leader(t testing.TB, cli *clientv3.Client, nodes []*harness.Node) *harness.Node {
	t.Helper()
	for _, n := range nodes {
		if !n.Running() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		st, err := cli.Status(ctx, n.ClientURL)
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			return n
		}
	}
	t.Fatal("no leader")
	return nil
}

// TestMirrorUnderLoadAndFaults: a three-member cluster mirrors a seeded
// concurrent history while the mirroring leader is killed with SIGKILL and
// PostgreSQL is killed with SIGKILL and restarted, mid-stream. Every
// revision must then be in the table once, in order, with exactly the rows
// kine would have written; compaction is mirrored as kine's; the views give
// Ballast's revisions and current state.
func TestMirrorUnderLoadAndFaults(t *testing.T) {
	m := startMirrored(t, 3)
	cli := m.client(t)
	stopHistory := recordHistory(t, cli)

	l := &load{leases: map[int64]int64{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); l.run(context.Background(), cli, uint64(i+1), stop) }()
	}
	waitOps(t, l, 300)
	killed := leader(t, cli, m.nodes)
	t.Logf("killing the leader %s (the mirror's writer) after %d ops", killed.Name, l.count())
	killed.Kill()
	waitOps(t, l, 700)
	t.Logf("killing PostgreSQL after %d ops", l.count())
	m.pg.Kill()
	waitOps(t, l, 900)
	m.pg.Restart()
	killed.Restart()
	waitOps(t, l, 1200)
	close(stop)
	wg.Wait()

	ctx := context.Background()
	resp, err := cli.Get(ctx, "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.Header.Revision
	m.waitMirrored(t, rev, 0)
	evs := stopHistory(rev)
	_, _, writer, _ := mirrorState(ctx, m.url)
	t.Logf("%d ops, %d revisions, %d changes; writer now %s", l.count(), rev, len(evs), writer)

	revoked := map[int64]bool{}
	l.mu.Lock()
	for id := range l.leases {
		if g, err := cli.TimeToLive(ctx, clientv3.LeaseID(id)); err == nil && g.TTL == -1 {
			revoked[id] = true
		}
	}
	l.mu.Unlock()
	conn := m.pg.Connect("mirror")
	got := readRows(t, conn)
	// A lease revoked before the mirror copied a put under it has no TTL
	// left to read: the mirror writes 0 then (docs/sql.md).
	want := expectRows(evs, func(id, rev int64) int32 {
		if id == 0 {
			return 0
		}
		return int32(l.leases[id])
	})
	for i := range min(len(got), len(want)) {
		if got[i].Lease == 0 && want[i].Lease != 0 && revoked[leaseOf(evs, i)] {
			want[i].Lease = 0
		}
	}
	compareRows(t, "mirror after the load", got, want)

	// Every row maps back to the revision of its change.
	hist, err := conn.Query(ctx, `SELECT revision FROM ballast_history ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	revs, err := pgx.CollectRows(hist, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range evs {
		if i >= len(revs) || revs[i] != ev.rev {
			t.Fatalf("ballast_history row %d: revision %v, want %d", i, revs[min(i, len(revs)-1)], ev.rev)
		}
	}
	checkMirroredAt(t, conn, len(evs))
	multi := 0
	for i := 1; i < len(evs); i++ {
		if evs[i].rev == evs[i-1].rev {
			multi++
		}
	}
	if multi == 0 {
		t.Fatal("the load made no revision with several changes: the id mapping went untested")
	}

	// Compaction is mirrored as kine's own, at the revision's last row.
	compactAt := evs[len(evs)/2].rev
	if _, err := cli.Compact(ctx, compactAt); err != nil {
		t.Fatal(err)
	}
	m.waitMirrored(t, rev, compactAt)
	target := int64(0)
	for i, ev := range evs {
		if ev.rev <= compactAt {
			target = int64(i) + 2
		}
	}
	var kineCompact int64
	if err := conn.QueryRow(ctx, `SELECT prev_revision FROM kine WHERE name = 'compact_rev_key'`).Scan(&kineCompact); err != nil {
		t.Fatal(err)
	}
	if kineCompact != target {
		t.Fatalf("compact_rev_key says %d, want id %d (revision %d)", kineCompact, target, compactAt)
	}
	compareRows(t, "mirror after compaction", readRows(t, conn), kineCompacted(want, target))
	checkMirroredAt(t, conn, len(kineCompacted(want, target)))

	checkCurrent(t, cli, conn, 0)
}

// checkMirroredAt: every change has the time it was mirrored, never later
// for a later change, and docs/sql.md's "changed in the last hour" query
// finds all of the test's rows.
func checkMirroredAt(t *testing.T, conn *pgx.Conn, rows int) {
	t.Helper()
	var missing, backwards, lastHour int
	if err := conn.QueryRow(context.Background(), `SELECT
			count(*) FILTER (WHERE mirrored_at IS NULL),
			count(*) FILTER (WHERE mirrored_at < prev_at),
			count(*) FILTER (WHERE mirrored_at > now() - interval '1 hour')
		FROM (SELECT mirrored_at, lag(mirrored_at) OVER (ORDER BY id) AS prev_at FROM ballast_history) h`).
		Scan(&missing, &backwards, &lastHour); err != nil {
		t.Fatal(err)
	}
	if missing != 0 || backwards != 0 || lastHour != rows {
		t.Fatalf("mirrored_at: %d rows without, %d earlier than the row before; %d in the last hour, want %d", missing, backwards, lastHour, rows)
	}
}

func leaseOf(evs []event, i int) int64 {
	if i < len(evs) {
		return evs[i].lease
	}
	return 0
}

// checkCurrent compares the ballast_current view with Ballast's keys: keys
// and values, and mod revisions above exactFrom (rows a resync wrote carry
// the revision it resynchronised to).
func checkCurrent(t *testing.T, cli *clientv3.Client, conn *pgx.Conn, exactFrom int64) {
	t.Helper()
	ctx := context.Background()
	resp, err := cli.Get(ctx, "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT key, value, mod_revision FROM ballast_current ORDER BY key`)
	if err != nil {
		t.Fatal(err)
	}
	type kv struct {
		key, value []byte
		mod        int64
	}
	var got []kv
	for rows.Next() {
		var r kv
		if err := rows.Scan(&r.key, &r.value, &r.mod); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	rows.Close()
	var want []kv
	for _, k := range resp.Kvs {
		want = append(want, kv{k.Key, k.Value, k.ModRevision})
	}
	slices.SortFunc(got, func(a, b kv) int { return bytes.Compare(a.key, b.key) })
	if len(got) != len(want) {
		t.Fatalf("ballast_current has %d keys, Ballast %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i].key, want[i].key) || !bytes.Equal(got[i].value, want[i].value) || (want[i].mod > exactFrom && got[i].mod != want[i].mod) {
			t.Fatalf("ballast_current row %d: %q=%q@%d, Ballast %q=%q@%d", i, got[i].key, got[i].value, got[i].mod, want[i].key, want[i].value, want[i].mod)
		}
	}
}
