package sqlbridgetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// startKine runs the reference kine on database url and returns its client
// URL once it answers.
func startKine(t *testing.T, url string) string {
	t.Helper()
	addr := harness.FreeAddr(t, "127.0.0.1")
	logPath := filepath.Join(t.TempDir(), "kine.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(harness.KineBin(t), "--endpoint", url, "--listen-address", addr, "--metrics-bind-address", "0")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("kine log:\n%s", b)
		}
	})
	ep := "http://" + addr
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "/registry/health")
		cancel()
		if err == nil {
			return ep
		}
		if time.Now().After(deadline) {
			t.Fatalf("kine did not answer within 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ctlKV is a key as `etcdctl get -w json` prints it.
type ctlKV struct {
	Key            []byte `json:"key"`
	Value          []byte `json:"value"`
	CreateRevision int64  `json:"create_revision"`
	ModRevision    int64  `json:"mod_revision"`
	Version        int64  `json:"version"`
}

type ctlGet struct {
	Header struct {
		Revision int64 `json:"revision"`
	} `json:"header"`
	Kvs []ctlKV `json:"kvs"`
}

// etcdctlGet runs `etcdctl get PREFIX --prefix -w json` against ep.
func etcdctlGet(t *testing.T, ep, prefix string) ctlGet {
	t.Helper()
	out, err := exec.Command(harness.EtcdctlBin(t), "--endpoints", ep, "get", prefix, "--prefix", "-w", "json").Output()
	if err != nil {
		t.Fatalf("etcdctl get %s --prefix against %s: %v", prefix, ep, err)
	}
	var g ctlGet
	if err := json.Unmarshal(out, &g); err != nil {
		t.Fatalf("etcdctl output %q: %v", out, err)
	}
	return g
}

func sameKeysAndValues(t *testing.T, what string, ballast, kine ctlGet) {
	t.Helper()
	if len(ballast.Kvs) != len(kine.Kvs) {
		t.Fatalf("%s: Ballast has %d keys, kine %d", what, len(ballast.Kvs), len(kine.Kvs))
	}
	for i, b := range ballast.Kvs {
		k := kine.Kvs[i]
		if !bytes.Equal(b.Key, k.Key) || !bytes.Equal(b.Value, k.Value) {
			t.Fatalf("%s: key %d: Ballast %q=%q, kine %q=%q", what, i, b.Key, b.Value, k.Key, k.Value)
		}
	}
}

// TestKineServesTheMirror points the real kine at a mirror: etcdctl gets
// the same keys and values from it as from Ballast, with the same
// revisions while every revision changed one key; kine's own writes are
// refused, and the mirror carries on.
func TestKineServesTheMirror(t *testing.T) {
	m := startMirrored(t, 1)
	cli := m.client(t)
	ctx := context.Background()
	for i := range 300 {
		k := fmt.Sprintf("/registry/configmaps/ns%d/cm%d", i%4, i%37)
		var err error
		switch i % 7 {
		case 3:
			_, err = cli.Delete(ctx, k)
		default:
			_, err = cli.Put(ctx, k, strings.Repeat(fmt.Sprint(i), 1+i%50))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, "/bin/a\x00b", "binary key"); err != nil {
		t.Fatal(err)
	}
	rev := etcdctlGet(t, m.nodes[0].ClientURL, "/").Header.Revision
	m.waitMirrored(t, rev, 0)

	kine := startKine(t, m.url)
	b, k := etcdctlGet(t, m.nodes[0].ClientURL, "/registry/"), etcdctlGet(t, kine, "/registry/")
	sameKeysAndValues(t, "single-key history", b, k)
	for i := range b.Kvs {
		if b.Kvs[i].ModRevision != k.Kvs[i].ModRevision || b.Kvs[i].CreateRevision != k.Kvs[i].CreateRevision {
			t.Fatalf("key %q: Ballast create/mod %d/%d, kine %d/%d", b.Kvs[i].Key, b.Kvs[i].CreateRevision, b.Kvs[i].ModRevision,
				k.Kvs[i].CreateRevision, k.Kvs[i].ModRevision)
		}
	}
	if b.Header.Revision != k.Header.Revision {
		t.Fatalf("Ballast is at revision %d, kine at %d", b.Header.Revision, k.Header.Revision)
	}
	// The binary key is there under its escaped name (docs/sql.md).
	if kb := etcdctlGet(t, kine, "/bin/a"); len(kb.Kvs) != 1 || string(kb.Kvs[0].Key) != "/bin/a\uffff00b" || string(kb.Kvs[0].Value) != "binary key" {
		t.Fatalf("kine's view of the binary key: %+v", kb.Kvs)
	}

	// kine cannot write into a mirror: the guard refuses its insert (kine's
	// Put does not pass the error on to the client, so look at the table).
	exec.Command(harness.EtcdctlBin(t), "--endpoints", kine, "put", "/registry/x", "from-kine").Run()
	var written int
	if err := m.pg.Connect("mirror").QueryRow(ctx, `SELECT count(*) FROM kine WHERE name = '/registry/x'`).Scan(&written); err != nil || written != 0 {
		t.Fatalf("kine's put reached the mirror: %d rows (%v)", written, err)
	}

	// A revision changing several keys takes several ids; kine still
	// serves the same keys and values.
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("/registry/a", "1"), clientv3.OpPut("/registry/b", "2"), clientv3.OpDelete("/registry/configmaps/ns1/", clientv3.WithPrefix())).Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/registry/c", "3"); err != nil {
		t.Fatal(err)
	}
	rev = etcdctlGet(t, m.nodes[0].ClientURL, "/").Header.Revision
	m.waitMirrored(t, rev, 0)
	waitKine(t, func() error {
		b, k := etcdctlGet(t, m.nodes[0].ClientURL, "/registry/"), etcdctlGet(t, kine, "/registry/")
		if len(b.Kvs) != len(k.Kvs) {
			return fmt.Errorf("Ballast %d keys, kine %d", len(b.Kvs), len(k.Kvs))
		}
		sameKeysAndValues(t, "after a multi-key txn", b, k)
		return nil
	})
	// Watches through kine see the mirror's new rows.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	kcli, err := clientv3.New(clientv3.Config{Endpoints: []string{kine}})
	if err != nil {
		t.Fatal(err)
	}
	defer kcli.Close()
	wch := kcli.Watch(wctx, "/registry/watched", clientv3.WithCreatedNotify())
	if created := <-wch; !created.Created {
		t.Fatalf("kine's watch: %+v before it was created", created)
	}
	if _, err := cli.Put(ctx, "/registry/watched", "seen"); err != nil {
		t.Fatal(err)
	}
	select {
	case resp := <-wch:
		if len(resp.Events) != 1 || string(resp.Events[0].Kv.Value) != "seen" {
			t.Fatalf("kine's watch got %+v", resp)
		}
	case <-wctx.Done():
		t.Fatal("kine's watch never saw the mirrored put")
	}
}

func waitKine(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestMirrorResyncsAfterCompaction: with PostgreSQL down, Ballast keeps
// taking writes and compacts past everything the mirror copied. When the
// database is back, the mirror rebuilds from a snapshot, says so in its
// log and metrics, and then follows again.
func TestMirrorResyncsAfterCompaction(t *testing.T) {
	m := startMirrored(t, 1)
	cli := m.client(t)
	ctx := context.Background()
	for i := range 50 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/k%d", i%10), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	resp, _ := cli.Get(ctx, "/")
	m.waitMirrored(t, resp.Header.Revision, 0)

	m.pg.Kill()
	for i := range 200 {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		var err error
		if i%9 == 0 {
			_, err = cli.Delete(c, fmt.Sprintf("/registry/k%d", i%10))
		} else {
			_, err = cli.Put(c, fmt.Sprintf("/registry/k%d", i%13), fmt.Sprint("down-", i))
		}
		cancel()
		if err != nil {
			t.Fatalf("write %d with the database down: %v", i, err)
		}
	}
	resp, _ = cli.Get(ctx, "/")
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	m.pg.Restart()
	m.waitMirrored(t, resp.Header.Revision, resp.Header.Revision)
	if !strings.Contains(m.nodes[0].Log(), "SQL mirror resynchronised from a snapshot") {
		t.Fatal("the resync was not logged")
	}
	if v := harness.MetricValue(t, harness.Scrape(t, m.nodes[0]), "ballast_sqlbridge_resyncs_total"); v != 1 {
		t.Fatalf("ballast_sqlbridge_resyncs_total = %v, want 1", v)
	}
	conn := m.pg.Connect("mirror")
	resynced := resp.Header.Revision
	checkCurrent(t, cli, conn, resynced)

	// Then it follows again, one id per revision after the block.
	for i := range 20 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/after%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	resp, _ = cli.Get(ctx, "/")
	m.waitMirrored(t, resp.Header.Revision, 0)
	checkCurrent(t, cli, conn, resynced)
	if v := harness.MetricValue(t, harness.Scrape(t, m.nodes[0]), "ballast_sqlbridge_lag_revisions"); v != 0 {
		t.Fatalf("ballast_sqlbridge_lag_revisions = %v once caught up", v)
	}
}
