package harness_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// fastRaft shortens etcd's (and Ballast's) failure detection so fault tests
// finish quickly.
var fastRaft = []string{"--heartbeat-interval", "50", "--election-timeout", "500"}

// eventually retries f every 100ms until it succeeds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// putEverywhere writes through every node and reads each write back,
// linearizably, from every node.
func putEverywhere(t *testing.T, nodes []*harness.Node, round string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, w := range nodes {
		key := round + "/" + w.Name
		if _, err := w.Client(t).Put(ctx, key, w.Name); err != nil {
			t.Fatalf("put through %s: %v", w.Name, err)
		}
		for _, r := range nodes {
			resp, err := r.Client(t).Get(ctx, key)
			if err != nil {
				t.Fatalf("get %s from %s: %v", key, r.Name, err)
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != w.Name {
				t.Fatalf("get %s from %s: %v, want %s", key, r.Name, resp.Kvs, w.Name)
			}
		}
	}
}

// checkPeerURLs checks that the cluster knows each member by its proxy's URL.
func checkPeerURLs(t *testing.T, cli *clientv3.Client, nodes []*harness.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, m := range resp.Members {
		got[m.Name] = m.PeerURLs
	}
	for _, n := range nodes {
		if want := []string{"http://" + n.Proxy.Addr()}; !slices.Equal(got[n.Name], want) {
			t.Errorf("member %s has peer URLs %v, want its proxy's %v", n.Name, got[n.Name], want)
		}
	}
}

// TestEtcdProxiedCluster runs the reference etcd in the proxied topology.
//
// etcd does not bind its outgoing peer connections, so they all come from
// 127.0.0.1 and only every-source rules apply. A Cut() on one member's proxy
// does not isolate an etcd member either: etcd's peers receive a member's
// messages on streams they dial to it (cut), but the member falls back to
// POSTing them to its peers (through their proxies, not cut), and it receives
// theirs on streams it dials to them. The member keeps serving; what the cut
// shows is its peers being refused while the other two serve writes. Cutting
// every proxy does stop all Raft traffic.
func TestEtcdProxiedCluster(t *testing.T) {
	nodes := harness.StartCluster(t, harness.EtcdBin(t), 3, harness.Options{Proxied: true, Args: fastRaft})
	for i, n := range nodes {
		if want := fmt.Sprintf("127.0.0.%d", 11+i); n.IP != want {
			t.Fatalf("%s has IP %s, want %s", n.Name, n.IP, want)
		}
		if n.PeerURL != "http://"+n.Proxy.Addr() || n.ListenPeerURL == n.PeerURL ||
			n.Proxy.Target() != n.ListenPeerURL[len("http://"):] {
			t.Fatalf("%s: peer URL %s, listen peer URL %s, proxy %s → %s",
				n.Name, n.PeerURL, n.ListenPeerURL, n.Proxy.Addr(), n.Proxy.Target())
		}
	}
	checkPeerURLs(t, nodes[0].Client(t), nodes)
	putEverywhere(t, nodes, "healthy")
	for _, n := range nodes {
		if s := n.Proxy.Stats(); s.Accepted == 0 {
			t.Fatalf("no peer connection went through %s's proxy: %+v", n.Name, s)
		}
	}

	// Cut everything into one member: its peers are refused, the other two
	// still serve writes.
	x, rest := nodes[2], nodes[:2]
	x.Proxy.Cut()
	refused := x.Proxy.Stats().Refused
	putEverywhere(t, rest, "cut-one")
	eventually(t, 10*time.Second, "peers reconnecting to the cut member", func(context.Context) error {
		if s := x.Proxy.Stats(); s.Refused == refused || s.Active != 0 {
			return fmt.Errorf("proxy of %s: %+v", x.Name, s)
		}
		return nil
	})

	// Cut every link: no member can confirm leadership with a quorum, so a
	// linearizable read fails everywhere.
	for _, n := range nodes {
		n.Proxy.Cut()
	}
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		cli := n.Client(t)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, errs[i] = cli.Get(ctx, "cut-one/"+rest[0].Name)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			t.Fatalf("linearizable read on %s succeeded with every peer link cut", nodes[i].Name)
		}
	}

	// Healed, every member serves again and has what was written meanwhile.
	harness.HealAll(nodes)
	for _, n := range nodes {
		eventually(t, 15*time.Second, "write through "+n.Name+" after HealAll", func(ctx context.Context) error {
			_, err := n.Client(t).Put(ctx, "healed", n.Name)
			return err
		})
	}
	putEverywhere(t, nodes, "healed")

	// An every-source delay holds up replication: a write waits at least for
	// the leader's append to reach a follower.
	const d = 100 * time.Millisecond
	for _, n := range nodes {
		n.Proxy.Delay("", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := nodes[0].Client(t).Put(ctx, "delayed", "v"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < d {
		t.Fatalf("write with every peer link delayed by %v took %v", d, took)
	}
}

// TestEtcdProxiedGrow grows a proxied etcd cluster with NewMember and Join,
// first by a learner that is then promoted, then by a voter, and restarts and
// kills a joined member. (Growing one voter to two loses quorum until the
// second joins, which makes etcd's join wait out a 6s timeout; a learner does
// not count towards the quorum.)
func TestEtcdProxiedGrow(t *testing.T) {
	bin := harness.EtcdBin(t)
	// etcd refuses a member add until the local member has been connected
	// to a quorum for 5s (HealthInterval); the check has nothing to do with
	// the topology, and waiting it out after every join would only slow the
	// test down.
	opts := harness.Options{Proxied: true, Args: append(slices.Clone(fastRaft), "--strict-reconfig-check=false")}
	nodes := harness.StartCluster(t, bin, 1, opts)
	cli := nodes[0].Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	n2 := harness.NewMember(t, bin, nodes, "n2", opts)
	if n2.IP != "127.0.0.12" || n2.Proxy == nil {
		t.Fatalf("new member: IP %s, proxy %v; want 127.0.0.12 behind a proxy", n2.IP, n2.Proxy)
	}
	add, err := cli.MemberAddAsLearner(ctx, []string{n2.PeerURL})
	if err != nil {
		t.Fatal(err)
	}
	nodes = append(nodes, n2)
	n2.Join(harness.InitialCluster(nodes)) // ready as a learner
	eventually(t, 30*time.Second, "promote "+n2.Name, func(ctx context.Context) error {
		_, err := cli.MemberPromote(ctx, add.Member.ID)
		return err
	})
	putEverywhere(t, nodes, "two")

	n3 := harness.NewMember(t, bin, nodes, "n3", opts)
	if n3.IP != "127.0.0.13" {
		t.Fatalf("new member: IP %s, want 127.0.0.13", n3.IP)
	}
	if _, err := cli.MemberAdd(ctx, []string{n3.PeerURL}); err != nil {
		t.Fatal(err)
	}
	nodes = append(nodes, n3)
	n3.Join(harness.InitialCluster(nodes))
	checkPeerURLs(t, cli, nodes)
	putEverywhere(t, nodes, "three")

	n3.Restart()
	putEverywhere(t, nodes, "restarted")
	n3.Kill()
	if n3.Running() {
		t.Fatal("n3 still running after Kill")
	}
	putEverywhere(t, nodes[:2], "n3-down")
	if err := n2.Stop(); err != nil {
		t.Fatalf("stop n2: %v", err)
	}
}
