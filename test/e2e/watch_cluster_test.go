package e2e

import (
	"context"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// Watches on followers see every revision in order, with no gap and no
// duplicate, across a kill -9 of the leader and across a restart of the
// member they watch (the client resumes from the next revision, as clientv3
// does after a reconnect).
func TestClusterWatchAcrossLeaderChangeAndRestart(t *testing.T) {
	nodes := harness.StartCluster(t, harness.BallastBin(t), 3, harness.Options{})
	cl := newClients(t)
	leader, _ := clusterLeader(t, cl, nodes)
	followers := without(nodes, leader)
	watched := followers[0]

	// A client of the watched member only: after its restart clientv3
	// reconnects to it and resumes each watch from its next revision.
	wcli := watched.Client(t)
	start, err := wcli.Get(testCtx(t, 5*time.Second), "w/")
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	wch := wcli.Watch(wctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1))

	load := startWriteLoad(t, cl, nodes, 8, "w/")
	load.waitAcks(t, time.Now(), 200, 20*time.Second)
	leader.Kill()
	load2 := time.Now()
	load.waitAcks(t, load2, 200, 30*time.Second) // a new leader serves writes
	restart(t, leader)
	t3 := time.Now()
	load.waitAcks(t, t3, 100, 30*time.Second)
	watched.Stop()
	t4 := time.Now()
	load.waitAcks(t, t4, 100, 30*time.Second) // written while the watched member is down
	restart(t, watched)
	t5 := time.Now()
	load.waitAcks(t, t5, 100, 30*time.Second)
	load.stop()

	acks, _ := load.snapshot()
	want := map[int64]string{}
	var last int64
	for _, a := range acks {
		want[a.rev] = a.key
		last = max(last, a.rev)
	}
	var prev int64
	seen := map[int64]bool{}
	deadline := time.After(60 * time.Second)
	for prev < last {
		select {
		case resp, ok := <-wch:
			if !ok {
				t.Fatalf("watch channel closed at revision %d: %v", prev, wctx.Err())
			}
			if err := resp.Err(); err != nil {
				t.Fatalf("watch error after revision %d: %v", prev, err)
			}
			for _, ev := range resp.Events {
				rev := ev.Kv.ModRevision
				if rev <= prev {
					t.Fatalf("event at revision %d after %d: out of order or duplicated", rev, prev)
				}
				if ev.Type != mvccpb.PUT {
					t.Fatalf("unexpected %v at revision %d", ev.Type, rev)
				}
				prev = rev
				seen[rev] = true
			}
		case <-deadline:
			t.Fatalf("watch reached revision %d, the last acknowledged write is at %d", prev, last)
		}
	}
	missing := 0
	for rev, key := range want {
		if !seen[rev] {
			missing++
			if missing <= 5 {
				t.Errorf("acknowledged put of %s at revision %d never reached the watcher", key, rev)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d acknowledged writes missing from the watch", missing)
	}
	t.Logf("watched %d revisions on %s through a leader kill and its own restart", len(seen), watched.Name)
	requireSameHashKV(t, nodes)
}
