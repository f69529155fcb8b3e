package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// Benchmarks over the simulated WAN of the regions tests (wanDelay: three
// regions 30, 50 and 60 ms apart one way), for docs/benchmarks.md:
//
//	make bench-regions
//
// BenchmarkRegionsLatency compares a three-member Ballast with a
// three-member etcd v3.7, one member per region, the same round trips
// between regions given to both through the same proxies. Each operation
// is one request of one client, in turn, through the member of the
// client's region; ns/op is the mean, p50-ms and p99-ms the percentiles.
// BenchmarkRegionsLossRestore is Ballast's alone: etcd never restores its
// voter count by itself.

// benchRegions are the regions of a three-member cluster's members, in
// order.
var benchRegions = []string{"a", "b", "c"}

func oneWay(x, y string) time.Duration {
	if d, ok := wanDelay[[2]string{x, y}]; ok {
		return d
	}
	return wanDelay[[2]string{y, x}]
}

// hubDelay is the delay DelayInto gives the member of region r so that,
// etcd's streams adding the delays of both ends to a round trip, every
// round trip between two regions takes what wanDelay makes it take:
// in(X) + in(Y) = 2 * oneWay(X, Y), solved for three regions.
func hubDelay(r string) time.Duration {
	var others []string
	for _, o := range benchRegions {
		if o != r {
			others = append(others, o)
		}
	}
	return oneWay(r, others[0]) + oneWay(r, others[1]) - oneWay(others[0], others[1])
}

// startWANCluster starts three members of bin, one per region of
// benchRegions, with the WAN's delays on their peer links.
func startWANCluster(b *testing.B, name, bin string) []*harness.Node {
	nodes := harness.StartCluster(b, bin, 3, harness.Options{Name: name, Proxied: true})
	region := func(n *harness.Node) string { return benchRegions[slices.Index(nodes, n)] }
	if name != "etcd" {
		delayWAN(nodes, region)
		return nodes
	}
	for _, n := range nodes {
		harness.DelayInto(n, hubDelay(region(n)))
	}
	return nodes
}

// moveLeaderTo makes to the leader and waits until every member says so.
func moveLeaderTo(b *testing.B, cl *clients, nodes []*harness.Node, to *harness.Node) {
	b.Helper()
	target, err := cl.of(to).Status(testCtx(b, 10*time.Second), to.ClientURL)
	if err != nil {
		b.Fatal(err)
	}
	id := target.Header.MemberId
	waitUntil(b, time.Minute, "leader "+to.Name, func(ctx context.Context) error {
		var disagree error
		for _, n := range nodes {
			st, err := cl.of(n).Status(ctx, n.ClientURL)
			if err != nil {
				return err
			}
			if st.Leader == st.Header.MemberId && st.Leader != id {
				if _, err := cl.of(n).MoveLeader(ctx, id); err != nil {
					return fmt.Errorf("MoveLeader from %s: %v", n.Name, err)
				}
			}
			if st.Leader != id && disagree == nil {
				disagree = fmt.Errorf("%s says the leader is %x", n.Name, st.Leader)
			}
		}
		return disagree
	})
}

// reportLatencies reports the percentiles of lat in milliseconds.
func reportLatencies(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

func BenchmarkRegionsLatency(b *testing.B) {
	value := strings.Repeat("v", 256)
	put := func(ctx context.Context, cli *clientv3.Client, i int) error {
		_, err := cli.Put(ctx, fmt.Sprintf("/bench/regions/%08d", i), value)
		return err
	}
	get := func(opts ...clientv3.OpOption) func(context.Context, *clientv3.Client, int) error {
		return func(ctx context.Context, cli *clientv3.Client, _ int) error {
			r, err := cli.Get(ctx, "/bench/regions/read", opts...)
			if err == nil && len(r.Kvs) != 1 {
				err = fmt.Errorf("read %d keys, want 1", len(r.Kvs))
			}
			return err
		}
	}
	for _, sys := range []string{"etcd", "ballast"} {
		b.Run(sys, func(b *testing.B) {
			bin := harness.BallastBin(b)
			if sys == "etcd" {
				bin = harness.EtcdBin(b)
			}
			nodes := startWANCluster(b, sys, bin)
			cl := newClients(b)
			a, c := nodes[0], nodes[2]
			if _, err := cl.of(a).Put(testCtx(b, 10*time.Second), "/bench/regions/read", value); err != nil {
				b.Fatal(err)
			}
			cases := []struct {
				name        string
				leader, via *harness.Node
				op          func(context.Context, *clientv3.Client, int) error
			}{
				{"put/leader-in-writers-region", a, a, put},
				{"put/leader-in-another-region", c, a, put},
				{"get-linearizable/far-region", a, c, get()},
				{"get-serializable/far-region", a, c, get(clientv3.WithSerializable())},
			}
			for _, tc := range cases {
				b.Run(tc.name, func(b *testing.B) {
					moveLeaderTo(b, cl, nodes, tc.leader)
					cli := cl.of(tc.via)
					if err := tc.op(testCtx(b, 10*time.Second), cli, -1); err != nil { // warm the connection
						b.Fatal(err)
					}
					lat := make([]time.Duration, 0, b.N)
					b.ResetTimer()
					for i := range b.N {
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						start := time.Now()
						err := tc.op(ctx, cli, i)
						lat = append(lat, time.Since(start))
						cancel()
						if err != nil {
							b.Fatalf("%s through %s: %v", tc.name, tc.via.Name, err)
						}
					}
					b.StopTimer()
					reportLatencies(b, lat)
				})
			}
		})
	}
}

// Six Ballast members, two per region, --voters 3 (one per region) and a
// 10s stabilisation window: the region holding the leader is killed, and
// restore-s is the time until three live voters are configured again and
// the dead are removed; first-write-s the time to the first successful
// write after the kill. Each iteration starts a fresh cluster.
func BenchmarkRegionsLossRestore(b *testing.B) {
	const window = 10 * time.Second
	var restore, firstWrite time.Duration
	for range b.N {
		b.StopTimer()
		rc := newRegionCluster(b, "--voters", "3", "--stabilization-window", window.String())
		for _, r := range []string{"a", "a", "b", "b", "c", "c"} {
			rc.add(fmt.Sprintf("%s%d", r, len(rc.in(r))+1), r)
		}
		waitUntil(b, 2*time.Minute, "three voters, one per region", func(ctx context.Context) error {
			voters, _, _, err := rc.roles(ctx, rc.nodes[0])
			if err != nil {
				return err
			}
			if len(voters["a"]) != 1 || len(voters["b"]) != 1 || len(voters["c"]) != 1 {
				return fmt.Errorf("voters %v", voters)
			}
			return nil
		})
		leader, err := rc.leaderName(testCtx(b, 10*time.Second), rc.nodes[0])
		if err != nil {
			b.Fatal(err)
		}
		lost := rc.region[leader]
		var live *harness.Node
		for _, n := range rc.nodes {
			if rc.region[n.Name] != lost {
				live = n
				break
			}
		}
		b.StartTimer()
		start := time.Now()
		for _, n := range rc.in(lost) {
			n.Kill()
		}
		fw := waitUntil(b, time.Minute, "a write after the loss", func(ctx context.Context) error {
			_, err := rc.cl.of(live).Put(ctx, "after-loss", "1")
			return err
		})
		firstWrite += fw
		waitUntil(b, 3*time.Minute, "three live voters and the dead removed", func(ctx context.Context) error {
			voters, others, ids, err := rc.roles(ctx, live)
			if err != nil {
				return err
			}
			if len(voters[lost]) > 0 || len(voters["a"])+len(voters["b"])+len(voters["c"]) != 3 || len(ids) != 4 {
				return fmt.Errorf("voters %v, non-voters %v", voters, others)
			}
			return nil
		})
		restore += time.Since(start)
		b.StopTimer()
		b.Logf("region %s (the leader's) lost: a write after %v, three voters again after %v", lost, fw, time.Since(start))
		for _, n := range rc.nodes {
			n.Kill()
		}
	}
	b.ReportMetric(restore.Seconds()/float64(b.N), "restore-s")
	b.ReportMetric(firstWrite.Seconds()/float64(b.N), "first-write-s")
	b.ReportMetric(window.Seconds(), "window-s")
}
