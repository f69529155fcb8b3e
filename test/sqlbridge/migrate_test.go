package sqlbridgetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ballast-kv/ballast/sqlbridge/pgtest"
	"github.com/ballast-kv/ballast/test/internal/harness"
)

func runBallast(t testing.TB, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(harness.BallastBin(t), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// kubernetesLike writes through cli what kube-apiserver would (and what
// kine supports): creates if absent, guaranteed updates at a mod revision,
// deletes at a mod revision, re-creates, and objects on a lease.
func kubernetesLike(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	ctx := context.Background()
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	create := func(k, v string, opts ...clientv3.OpOption) {
		r, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", 0)).Then(clientv3.OpPut(k, v, opts...)).Else(clientv3.OpGet(k)).Commit()
		if err != nil || !r.Succeeded {
			t.Fatalf("create %s: %v %v", k, err, r)
		}
	}
	mod := func(k string) int64 {
		r, err := cli.Get(ctx, k)
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("get %s: %v %v", k, err, r)
		}
		return r.Kvs[0].ModRevision
	}
	for i := range 60 {
		create(fmt.Sprintf("/registry/pods/default/p%d", i), fmt.Sprintf("pod-%d", i))
	}
	for i := range 120 {
		k := fmt.Sprintf("/registry/pods/default/p%d", i%60)
		r, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", mod(k))).Then(clientv3.OpPut(k, fmt.Sprintf("pod-%d-v%d", i%60, i))).Else(clientv3.OpGet(k)).Commit()
		if err != nil || !r.Succeeded {
			t.Fatalf("update %s: %v", k, err)
		}
	}
	for i := range 15 {
		k := fmt.Sprintf("/registry/pods/default/p%d", i*4)
		r, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", mod(k))).Then(clientv3.OpDelete(k)).Else(clientv3.OpGet(k)).Commit()
		if err != nil || !r.Succeeded {
			t.Fatalf("delete %s: %v", k, err)
		}
	}
	for i := range 5 {
		create(fmt.Sprintf("/registry/pods/default/p%d", i*4), "recreated")
	}
	for i := range 10 {
		create(fmt.Sprintf("/registry/events/default/e%d", i), "event", clientv3.WithLease(lease.ID))
	}
}

// sameAsKine compares keys, values, create and mod revisions of two
// `etcdctl get -w json` answers.
func sameRevisions(t *testing.T, a, b ctlGet, skip func(ctlKV) bool) {
	t.Helper()
	sameKeysAndValues(t, "state", a, b)
	for i := range a.Kvs {
		if skip != nil && skip(a.Kvs[i]) {
			continue
		}
		if a.Kvs[i].CreateRevision != b.Kvs[i].CreateRevision || a.Kvs[i].ModRevision != b.Kvs[i].ModRevision {
			t.Fatalf("key %q: create/mod %d/%d and %d/%d", a.Kvs[i].Key, a.Kvs[i].CreateRevision, a.Kvs[i].ModRevision,
				b.Kvs[i].CreateRevision, b.Kvs[i].ModRevision)
		}
	}
}

// TestMigrateFromKine: a database kine wrote becomes a Ballast cluster with
// the same keys, values, create and mod revisions and revision; leases
// carry over as leases of the same TTL; a re-run writes the same file.
func TestMigrateFromKine(t *testing.T) {
	pg := pgtest.Start(t)
	pg.CreateDB("k3s")
	url := pg.URL("k3s")
	kine := startKine(t, url)
	kcli, err := clientv3.New(clientv3.Config{Endpoints: []string{kine}})
	if err != nil {
		t.Fatal(err)
	}
	defer kcli.Close()
	kubernetesLike(t, kcli)
	want := etcdctlGet(t, kine, "/registry/")

	dir := t.TempDir()
	file := filepath.Join(dir, "from-kine.db")
	out, errOut, err := runBallast(t, "migrate", "from-kine", "--source", url, "--output", file, "-w", "json")
	if err != nil {
		t.Fatalf("migrate from-kine: %v\n%s", err, errOut)
	}
	var res struct {
		Revision, Rows, Keys, Leases int64
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("migrate output %q: %v", out, err)
	}
	if res.Keys < int64(len(want.Kvs)) || res.Leases != 1 || res.Revision < want.Header.Revision {
		t.Fatalf("migrate from-kine: %+v; kine has %d keys at revision %d", res, len(want.Kvs), want.Header.Revision)
	}
	first, _ := os.ReadFile(file)
	if _, errOut, err := runBallast(t, "migrate", "from-kine", "--source", url, "--output", file); err != nil {
		t.Fatalf("re-run: %v\n%s", err, errOut)
	}
	again, _ := os.ReadFile(file)
	if sha256.Sum256(first) != sha256.Sum256(again) {
		t.Fatal("a re-run of migrate from-kine wrote a different file")
	}

	nodes := harness.StartCluster(t, harness.BallastBin(t), 1, harness.Options{
		BeforeFirstStart: func(n *harness.Node, initialCluster string) error {
			out, errOut, err := runBallast(t, "snapshot", "restore", file, "--name", n.Name, "--data-dir", n.DataDir,
				"--initial-cluster", initialCluster, "--initial-advertise-peer-urls", n.PeerURL)
			if err != nil {
				return fmt.Errorf("%v: %s%s", err, out, errOut)
			}
			return nil
		},
	})
	got := etcdctlGet(t, nodes[0].ClientURL, "/registry/")
	sameRevisions(t, want, got, nil)
	if got.Header.Revision != res.Revision {
		t.Fatalf("Ballast starts at revision %d, kine's table ends at %d", got.Header.Revision, res.Revision)
	}
	// The events kept their lease: a lease of kine's TTL, with the keys.
	cli := nodes[0].Client(t)
	ls, err := cli.Leases(context.Background())
	if err != nil || len(ls.Leases) != 1 {
		t.Fatalf("leases after import: %v %v", ls, err)
	}
	ttl, err := cli.TimeToLive(context.Background(), ls.Leases[0].ID, clientv3.WithAttachedKeys())
	if err != nil || ttl.GrantedTTL != 3600 || len(ttl.Keys) != 10 {
		t.Fatalf("imported lease: %+v %v", ttl, err)
	}
	// And the cluster takes writes after the imported revision.
	r, err := cli.Put(context.Background(), "/registry/after", "x")
	if err != nil || r.Header.Revision != res.Revision+1 {
		t.Fatalf("first write after the import: %v %v", r, err)
	}
}

// TestMigrateToKine: a Ballast cluster's state, written into an empty
// database, is served by kine with the same keys and values (and the same
// revisions, except for keys that shared a revision), and kine takes writes
// after it. A re-run before kine writes is safe; after, it is refused.
func TestMigrateToKine(t *testing.T) {
	m := startMirrored(t, 1) // the mirror goes to "mirror"; the export to "k3s"
	m.pg.CreateDB("k3s")
	target := m.pg.URL("k3s")
	cli := m.client(t)
	kubernetesLike(t, cli)
	ctx := context.Background()
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("/registry/a", "1"), clientv3.OpPut("/registry/b", "2")).Commit(); err != nil {
		t.Fatal(err)
	}
	want := etcdctlGet(t, m.nodes[0].ClientURL, "/registry/")

	export := func() (string, string, error) {
		return runBallast(t, "migrate", "to-kine", "--endpoints", m.nodes[0].ClientURL, "--target", target, "-w", "json")
	}
	for run := range 2 {
		out, errOut, err := export()
		if err != nil {
			t.Fatalf("migrate to-kine (run %d): %v\n%s", run+1, err, errOut)
		}
		var res struct{ Revision, Keys, Renumbered int64 }
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("output %q: %v", out, err)
		}
		if res.Revision != want.Header.Revision || res.Keys != int64(len(want.Kvs)) || res.Renumbered != 1 {
			t.Fatalf("migrate to-kine (run %d): %+v, Ballast has %d keys at %d", run+1, res, len(want.Kvs), want.Header.Revision)
		}
	}
	if _, errOut, err := runBallast(t, "migrate", "to-kine", "--endpoints", m.nodes[0].ClientURL, "--target", m.url); err == nil ||
		!strings.Contains(errOut, "live mirror") {
		t.Fatalf("to-kine into the live mirror: %v %s", err, errOut)
	}

	kine := startKine(t, target)
	got := etcdctlGet(t, kine, "/registry/")
	// kine writes its health key when it starts.
	got.Kvs = slices.DeleteFunc(got.Kvs, func(kv ctlKV) bool { return string(kv.Key) == "/registry/health" })
	renumbered := func(kv ctlKV) bool { return string(kv.Key) == "/registry/b" }
	sameRevisions(t, want, got, renumbered)
	if got.Header.Revision <= want.Header.Revision {
		t.Fatalf("kine starts at revision %d, not after Ballast's %d", got.Header.Revision, want.Header.Revision)
	}
	kcli, err := clientv3.New(clientv3.Config{Endpoints: []string{kine}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer kcli.Close()
	r, err := kcli.Put(ctx, "/registry/by-kine", "x")
	if err != nil || r.Header.Revision <= got.Header.Revision {
		t.Fatalf("kine's first write: %v %v", r, err)
	}
	if _, errOut, err := export(); err == nil || !strings.Contains(errOut, "kine has written to it") {
		t.Fatalf("re-run after kine wrote: %v %s", err, errOut)
	}
}
