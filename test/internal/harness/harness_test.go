package harness_test

import (
	"context"
	"testing"
	"time"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// TestEtcdRestart checks the harness itself against the reference etcd:
// start, write, restart on the same data directory, read, kill.
func TestEtcdRestart(t *testing.T) {
	n := harness.Start(t, harness.EtcdBin(t), harness.Options{})
	cli := n.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	n.Restart()
	resp, err := cli.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after restart: got %v, want k=v", resp.Kvs)
	}
	n.Kill()
	if n.Running() {
		t.Fatal("still running after Kill")
	}
}

// TestEtcdCluster checks StartCluster: a write on one member is read on
// another.
func TestEtcdCluster(t *testing.T) {
	nodes := harness.StartCluster(t, harness.EtcdBin(t), 3, harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := nodes[0].Client(t).Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := nodes[2].Client(t).Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("got %v from %s, want k=v", resp.Kvs, nodes[2].Name)
	}
}

// TestEtcdStop checks that a SIGTERM shutdown of etcd counts as clean.
func TestEtcdStop(t *testing.T) {
	n := harness.Start(t, harness.EtcdBin(t), harness.Options{})
	if err := n.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if n.Running() {
		t.Fatal("still running after Stop")
	}
}

// TestFreeAddrNeverRepeats: a node's client and peer addresses come from two
// calls a moment apart; the same port twice made a member fail to start with
// "address already in use" against itself.
func TestFreeAddrNeverRepeats(t *testing.T) {
	seen := map[string]bool{}
	for range 2000 {
		a := harness.FreeAddr(t, "127.0.0.1")
		if seen[a] {
			t.Fatalf("FreeAddr returned %s twice", a)
		}
		seen[a] = true
	}
}
