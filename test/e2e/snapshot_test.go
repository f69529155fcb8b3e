package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// Disaster recovery as an etcd operator does it, on TLS clusters (client
// and peer, client certificates required): `etcdctl snapshot save` from a
// follower of a running three-node cluster, `ballast snapshot
// status`, `ballast snapshot restore` for every member of a new cluster,
// and the new cluster serves the same keys at the same revisions (create
// and mod revisions, versions, leases, the compaction), under its own
// cluster ID and members, and takes writes after them. A damaged file is
// refused and leaves no data directory behind.
func TestSnapshotSaveAndRestoreACluster(t *testing.T) {
	bin := harness.BallastBin(t)
	tlsOpts := &harness.TLS{CA: harness.NewCA(t), ClientCertAuth: true}
	src := harness.StartCluster(t, bin, 3, harness.Options{Name: "src", TLS: tlsOpts})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli := src[0].Client(t)
	key := func(i int) string { return fmt.Sprintf("k%03d", i) }
	for i := range 300 {
		if _, err := cli.Put(ctx, key(i%100), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Delete(ctx, key(50), clientv3.WithRange(key(60))); err != nil {
		t.Fatal(err)
	}
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	leased, err := cli.Put(ctx, "leased", "v", clientv3.WithLease(lease.ID))
	if err != nil {
		t.Fatal(err)
	}
	const compactAt = 150
	if _, err := cli.Compact(ctx, compactAt); err != nil {
		t.Fatal(err)
	}
	before, err := cli.Get(ctx, "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	atRev := leased.Header.Revision - 20
	beforeAt, err := cli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithRev(atRev))
	if err != nil {
		t.Fatal(err)
	}

	file := filepath.Join(t.TempDir(), "backup.db")
	out := newCtl(t, src[1]).ok("snapshot", "save", file)
	if !strings.Contains(out, "Snapshot saved at "+file) {
		t.Fatalf("etcdctl snapshot save printed %q", out)
	}
	var st struct {
		Revision int64 `json:"revision"`
		TotalKey int64 `json:"totalKey"`
		Leases   int64 `json:"leases"`
	}
	if err := json.Unmarshal([]byte(ballastOK(t, "snapshot", "status", file, "-w", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Revision != before.Header.Revision || st.TotalKey != before.Count || st.Leases != 1 {
		t.Fatalf("snapshot status %+v: want revision %d, %d keys, 1 lease", st, before.Header.Revision, before.Count)
	}

	// A flipped byte anywhere is refused, and no data dir is left behind.
	damaged := filepath.Join(t.TempDir(), "damaged.db")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(damaged, b, 0o600); err != nil {
		t.Fatal(err)
	}
	badDir := filepath.Join(t.TempDir(), "bad.data")
	msg := ballastFails(t, "snapshot", "restore", damaged, "--name", "x", "--data-dir", badDir,
		"--initial-cluster", "x=http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380")
	if !strings.Contains(msg, "invalid state snapshot") && !strings.Contains(msg, "sha256 mismatch") {
		t.Errorf("restore of a damaged file said %q", msg)
	}
	if _, err := os.Stat(badDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed restore left %s behind (%v)", badDir, err)
	}

	const token = "restored-cluster"
	dst := harness.StartCluster(t, bin, 3, harness.Options{
		Name: "dst",
		TLS:  tlsOpts,
		Args: []string{"--initial-cluster-token", token},
		BeforeFirstStart: func(n *harness.Node, initialCluster string) error {
			out, err := runBallast(t, "snapshot", "restore", file, "--name", n.Name, "--data-dir", n.DataDir,
				"--initial-cluster", initialCluster, "--initial-advertise-peer-urls", n.PeerURL,
				"--initial-cluster-token", token)
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		},
	})
	for _, n := range dst {
		c := n.Client(t)
		after, err := c.Get(ctx, "", clientv3.WithFromKey())
		if err != nil {
			t.Fatal(err)
		}
		if after.Header.ClusterId == before.Header.ClusterId {
			t.Errorf("%s: the restored cluster kept the old cluster ID %x", n.Name, after.Header.ClusterId)
		}
		sameKVs(t, n.Name+" after restore", after, before)
		afterAt, err := c.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithRev(atRev), clientv3.WithSerializable())
		if err != nil {
			t.Fatal(err)
		}
		sameKVs(t, n.Name+" at an old revision", afterAt, beforeAt)
		if _, err := c.Get(ctx, key(1), clientv3.WithRev(compactAt-1)); !errors.Is(err, rpctypes.ErrCompacted) {
			t.Errorf("%s: a read below the compaction: %v, want %v", n.Name, err, rpctypes.ErrCompacted)
		}
	}
	dc := dst[2].Client(t)
	ttl, err := dc.TimeToLive(ctx, lease.ID, clientv3.WithAttachedKeys())
	if err != nil || ttl.TTL <= 0 || ttl.GrantedTTL != 3600 || len(ttl.Keys) != 1 {
		t.Errorf("the lease after restore: %+v, %v", ttl, err)
	}
	ml, err := dc.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range ml.Members {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	if strings.Join(names, ",") != "dst1,dst2,dst3" {
		t.Errorf("members of the restored cluster: %v, want dst1, dst2, dst3 only", names)
	}
	p, err := dc.Put(ctx, "new", "x")
	if err != nil {
		t.Fatal(err)
	}
	if p.Header.Revision != before.Header.Revision+1 {
		t.Errorf("the first write after restore is at revision %d, want %d", p.Header.Revision, before.Header.Revision+1)
	}
	requireSameHashKV(t, dst)
}

// sameKVs compares every key, value, revision, version and lease.
func sameKVs(t *testing.T, what string, got, want *clientv3.GetResponse) {
	t.Helper()
	if got.Header.Revision != want.Header.Revision || got.Count != want.Count || len(got.Kvs) != len(want.Kvs) {
		t.Fatalf("%s: revision %d, %d keys; want revision %d, %d keys", what, got.Header.Revision, got.Count, want.Header.Revision, want.Count)
	}
	for i := range want.Kvs {
		if got.Kvs[i].String() != want.Kvs[i].String() {
			t.Fatalf("%s: key %d is %v, want %v", what, i, got.Kvs[i], want.Kvs[i])
		}
	}
}

func ballastOK(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runBallast(t, args...)
	if err != nil {
		t.Fatalf("ballast %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func ballastFails(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runBallast(t, args...)
	if err == nil {
		t.Fatalf("ballast %s succeeded, want an error", strings.Join(args, " "))
	}
	return out
}
