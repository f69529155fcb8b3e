package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ballast-kv/ballast/cluster/placement"
	"github.com/ballast-kv/ballast/test/internal/harness"
)

// wanDelay is the simulated one-way latency between regions a, b and c (a
// round trip takes twice as long); members of one region see none. The
// peer links go through the harness's proxies; gossip and the tests' clients
// do not. The figures satisfy the triangle inequality strictly, so the same
// round trips can be given to an etcd cluster (hubDelay).
var wanDelay = map[[2]string]time.Duration{
	{"a", "b"}: 30 * time.Millisecond,
	{"a", "c"}: 50 * time.Millisecond,
	{"b", "c"}: 60 * time.Millisecond,
}

// regionCluster is a proxied cluster of members labelled with regions that
// find each other by gossip: the first member starts alone, the others
// join through its gossip address.
type regionCluster struct {
	t      testing.TB
	bin    string
	args   []string // every member's flags beyond identity and labels
	seed   string   // the first member's gossip address
	nodes  []*harness.Node
	region map[string]string // by member name
	cl     *clients
}

func newRegionCluster(t testing.TB, args ...string) *regionCluster {
	return &regionCluster{t: t, bin: harness.BallastBin(t), args: args, seed: harness.FreeAddr(t, "127.0.0.1"), region: map[string]string{}, cl: newClients(t)}
}

// add starts a member in region (zone region+"1") and waits until it is
// ready: the first one alone, the others by gossip. It then delays the peer
// links between regions as wanDelay says.
func (rc *regionCluster) add(name, region string) *harness.Node {
	rc.t.Helper()
	labels := []string{"--region", region, "--zone", region + "1"}
	opts := harness.Options{Name: name, Proxied: true, Args: rc.args}
	var n *harness.Node
	if len(rc.nodes) == 0 {
		opts.Args = append(slices.Clone(rc.args), append(labels, "--gossip-listen-addr", rc.seed)...)
		n = harness.StartCluster(rc.t, rc.bin, 1, opts)[0]
	} else {
		n = harness.NewMember(rc.t, rc.bin, rc.nodes, name, opts)
		n.JoinByGossip(append([]string{"--join", rc.seed}, labels...)...)
	}
	rc.nodes = append(rc.nodes, n)
	rc.region[name] = region
	rc.applyWAN()
	return n
}

func (rc *regionCluster) applyWAN() {
	delayWAN(rc.nodes, func(n *harness.Node) string { return rc.region[n.Name] })
}

// delayWAN delays the peer links between members of different regions as
// wanDelay says.
func delayWAN(nodes []*harness.Node, region func(*harness.Node) string) {
	in := map[string][]*harness.Node{}
	for _, n := range nodes {
		in[region(n)] = append(in[region(n)], n)
	}
	for pair, d := range wanDelay {
		harness.DelayBetween(in[pair[0]], in[pair[1]], d)
	}
}

// in returns the members of region.
func (rc *regionCluster) in(region string) []*harness.Node {
	var ns []*harness.Node
	for _, n := range rc.nodes {
		if rc.region[n.Name] == region {
			ns = append(ns, n)
		}
	}
	return ns
}

func (rc *regionCluster) byName(name string) *harness.Node {
	for _, n := range rc.nodes {
		if n.Name == name {
			return n
		}
	}
	rc.t.Fatalf("no member %s", name)
	return nil
}

// roles asks via for the member list: the voters by region and the names of
// the non-voters, and every member's ID by name.
func (rc *regionCluster) roles(ctx context.Context, via *harness.Node) (voters map[string][]string, nonVoters []string, ids map[string]uint64, err error) {
	resp, err := rc.cl.of(via).MemberList(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	voters, ids = map[string][]string{}, map[string]uint64{}
	for _, m := range resp.Members {
		ids[m.Name] = m.ID
		if m.IsLearner {
			nonVoters = append(nonVoters, m.Name)
		} else {
			voters[rc.region[m.Name]] = append(voters[rc.region[m.Name]], m.Name)
		}
	}
	slices.Sort(nonVoters)
	return voters, nonVoters, ids, nil
}

// leaderName asks via who leads, by name.
func (rc *regionCluster) leaderName(ctx context.Context, via *harness.Node) (string, error) {
	st, err := rc.cl.of(via).Status(ctx, via.ClientURL)
	if err != nil {
		return "", err
	}
	if st.Leader == 0 {
		return "", errors.New("no leader")
	}
	resp, err := rc.cl.of(via).MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		return "", err
	}
	for _, m := range resp.Members {
		if m.ID == st.Leader {
			return m.Name, nil
		}
	}
	return "", fmt.Errorf("leader %x is not in the member list", st.Leader)
}

// Seven members over three regions (3/2/2) that find each other by gossip,
// with WAN latency between the regions, end with five voters spread 2/2/1
// and two non-voters, no region holding a majority; killing every member of
// a region that holds two voters keeps writes going, and placement restores
// five voters from the survivors and removes the dead.
func TestRegionsPlaceVoters(t *testing.T) {
	rc := newRegionCluster(t, "--voters", "5", "--stabilization-window", "3s")
	for i, r := range []string{"a", "a", "a", "b", "b", "c", "c"} {
		rc.add(fmt.Sprintf("n%d", i+1), r)
	}
	first := rc.nodes[0]

	var spread map[string][]string
	waitUntil(t, 2*time.Minute, "five voters spread 2/2/1 and two non-voters", func(ctx context.Context) error {
		perRegion, others, _, err := rc.roles(ctx, first)
		if err != nil {
			return err
		}
		var counts []int
		for _, r := range []string{"a", "b", "c"} {
			counts = append(counts, len(perRegion[r]))
		}
		slices.Sort(counts)
		if !slices.Equal(counts, []int{1, 2, 2}) || len(others) != 2 {
			return fmt.Errorf("voters %v, non-voters %v", perRegion, others)
		}
		spread = perRegion
		return nil
	})
	t.Logf("voters by region: %v", spread)
	waitUntil(t, 30*time.Second, "the leader reports it can lose one region", func(ctx context.Context) error {
		for _, n := range rc.nodes {
			if strings.Contains(harness.Scrape(t, n), `ballast_placement_failure_tolerance{domain="region"} 1`) {
				return nil
			}
		}
		return fmt.Errorf("no member reports ballast_placement_failure_tolerance{domain=\"region\"} 1")
	})

	lost := "b"
	if len(spread["b"]) != 2 {
		lost = "c"
	}
	dead := rc.in(lost)
	var live []*harness.Node
	for _, n := range rc.nodes {
		if rc.region[n.Name] != lost {
			live = append(live, n)
		}
	}
	for _, n := range dead {
		n.Kill()
	}
	t.Logf("killed region %s: %s", lost, names(dead))
	waitUntil(t, time.Minute, "a write after losing region "+lost, func(ctx context.Context) error {
		_, err := rc.cl.of(first).Put(ctx, "after-region-loss", "1")
		return err
	})
	restored := waitUntil(t, 2*time.Minute, "five voters among the survivors and the dead removed", func(ctx context.Context) error {
		perRegion, others, ids, err := rc.roles(ctx, first)
		if err != nil {
			return err
		}
		if len(perRegion[lost]) > 0 || slices.ContainsFunc(others, func(n string) bool { return rc.region[n] == lost }) {
			return fmt.Errorf("members of the lost region remain: voters %v, non-voters %v", perRegion, others)
		}
		if len(perRegion["a"])+len(perRegion["b"])+len(perRegion["c"]) != 5 || len(ids) != 5 {
			return fmt.Errorf("voters %v among %d members", perRegion, len(ids))
		}
		return nil
	})
	t.Logf("five voters again %v after the first write", restored)
	if _, err := rc.cl.of(first).Put(testCtx(t, 30*time.Second), "after-restore", "1"); err != nil {
		t.Fatalf("write after placement restored the voters: %v", err)
	}
	requireSameHashKV(t, live)
}

// With --leader-region, over WAN latency: leadership goes to that region
// and returns there after it is moved away; a member that joins by gossip
// where no voter is wanted stays a non-voter, and becomes the voter that
// replaces its region's voter when that one dies; a region cut off from
// the others serves serializable reads but refuses linearizable ones rather
// than answer stale; and the dead voter, removed, is admitted again as a
// non-voter when it comes back.
func TestRegionsLeaderJoinAndPartition(t *testing.T) {
	rc := newRegionCluster(t, "--voters", "3", "--leader-region", "b", "--stabilization-window", "3s")
	a1, b1, c1 := rc.add("a1", "a"), rc.add("b1", "b"), rc.add("c1", "c")

	var ids map[string]uint64
	waitUntil(t, time.Minute, "voters a1, b1 and c1, led from region b", func(ctx context.Context) error {
		voters, others, got, err := rc.roles(ctx, a1)
		if err != nil {
			return err
		}
		if len(voters["a"])+len(voters["b"])+len(voters["c"]) != 3 || len(others) != 0 {
			return fmt.Errorf("voters %v, non-voters %v", voters, others)
		}
		ids = got
		if l, err := rc.leaderName(ctx, a1); err != nil || l != "b1" {
			return fmt.Errorf("leader %q (%v)", l, err)
		}
		return nil
	})

	// Away and back: MoveLeader is the operator's; placement moves it home.
	if _, err := rc.cl.of(b1).MoveLeader(testCtx(t, 20*time.Second), ids["c1"]); err != nil {
		t.Fatalf("MoveLeader to c1: %v", err)
	}
	if l, err := rc.leaderName(testCtx(t, 10*time.Second), c1); err != nil || l != "c1" {
		t.Fatalf("after MoveLeader to c1, c1 says the leader is %q (%v)", l, err)
	}
	back := waitUntil(t, 30*time.Second, "leadership back in region b", func(ctx context.Context) error {
		if l, err := rc.leaderName(ctx, a1); err != nil || l != "b1" {
			return fmt.Errorf("leader %q (%v)", l, err)
		}
		return nil
	})
	t.Logf("leadership back on b1 %v after it moved to c1", back)

	// A second member in region c is not needed as a voter.
	c2 := rc.add("c2", "c")
	if _, err := rc.cl.of(a1).Put(testCtx(t, 10*time.Second), "k", "before"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "c2 follows as a non-voter", func(ctx context.Context) error {
		_, others, _, err := rc.roles(ctx, a1)
		if err != nil {
			return err
		}
		if !slices.Equal(others, []string{"c2"}) {
			return fmt.Errorf("non-voters %v", others)
		}
		r, err := rc.cl.of(c2).Get(ctx, "k", clientv3.WithSerializable())
		if err != nil || len(r.Kvs) != 1 {
			return fmt.Errorf("serializable read on c2: %v, %v", r, err)
		}
		return nil
	})
	waitUntil(t, 30*time.Second, "the leader plans nothing with c2 caught up", func(ctx context.Context) error {
		st, err := leaderPlacement(ctx, b1)
		if err != nil {
			return err
		}
		if i := slices.IndexFunc(st.Members, func(m placement.StatusMember) bool { return m.Name == "c2" }); i < 0 || len(st.Next) > 0 {
			return fmt.Errorf("plan %+v for members %+v", st.Next, st.Members)
		}
		return nil
	})
	if _, others, _, err := rc.roles(testCtx(t, 10*time.Second), a1); err != nil || !slices.Equal(others, []string{"c2"}) {
		t.Fatalf("a few rounds later the non-voters are %v (%v): c2 was promoted with no voter wanted", others, err)
	}

	// ballast status shows the labels, and that placement is content.
	run := runStatusCmd(t, "--endpoints", a1.ClientURL)
	tb := parseStatusTable(t, run.stdout)
	if run.code != 0 || len(tb.rows) != 4 {
		t.Fatalf("ballast status: exit %d\n%s%s", run.code, run.stdout, run.stderr)
	}
	t.Logf("ballast status:\n%s", run.stdout)
	for _, row := range tb.rows {
		r := rc.region[row["NAME"]]
		if row["REGION"] != r || row["ZONE"] != r+"1" {
			t.Errorf("ballast status: %s in region %q zone %q, want %q and %q\n%s", row["NAME"], row["REGION"], row["ZONE"], r, r+"1", run.stdout)
		}
		if want := map[string]string{"b1": "leader", "c2": "learner"}[row["NAME"]]; want != "" && row["ROLE"] != want {
			t.Errorf("ballast status: %s is %s, want %s", row["NAME"], row["ROLE"], want)
		}
	}
	if len(tb.placement) != 2 || !strings.Contains(tb.placement[0], "3 voters wanted, leader in region b") ||
		!strings.Contains(tb.placement[0], "can lose 1 region") || tb.placement[1] != "placement: nothing to change" {
		t.Errorf("ballast status placement lines %q\n%s", tb.placement, run.stdout)
	}

	// Region c's voter dies: c2 replaces it. Meanwhile the leader's
	// /placement, which ballast status shows, tells what it plans.
	seen := watchPlacement(t, b1)
	c1.Kill()
	replaced := waitUntil(t, time.Minute, "c2 a voter in c1's place", func(ctx context.Context) error {
		voters, others, got, err := rc.roles(ctx, a1)
		if err != nil {
			return err
		}
		if _, ok := got["c1"]; ok || !slices.Equal(voters["c"], []string{"c2"}) || len(others) != 0 {
			return fmt.Errorf("voters %v, non-voters %v, members %v", voters, others, got)
		}
		return nil
	})
	t.Logf("c2 voted in c1's place %v after c1 was killed (stabilisation window 3s)", replaced)
	plans := seen()
	t.Logf("plans /placement showed: %q", plans)
	if !slices.Contains(plans, "c1 down") || !slices.ContainsFunc(plans, func(p string) bool { return p == "promote c2" || p == "remove c1" }) {
		t.Errorf("/placement never showed c1 down and its replacement planned: %q", plans)
	}

	// Region c cut off: local reads only.
	harness.Partition([]*harness.Node{c2}, []*harness.Node{a1, b1})
	if _, err := rc.cl.of(b1).Put(testCtx(t, 20*time.Second), "k", "after"); err != nil {
		t.Fatalf("write in the majority while region c is cut off: %v", err)
	}
	r, err := rc.cl.of(c2).Get(testCtx(t, 5*time.Second), "k", clientv3.WithSerializable())
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "before" {
		t.Fatalf("serializable read in the cut-off region: %v, %v; want the value it holds, %q", r, err, "before")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	lr, err := rc.cl.of(c2).Get(ctx, "k")
	cancel()
	if err == nil {
		t.Fatalf("linearizable read in the cut-off region answered %q; want an error", lr.Kvs)
	}
	t.Logf("linearizable read in the cut-off region: %v", err)

	harness.HealAll(rc.nodes)
	rc.applyWAN()
	waitUntil(t, 30*time.Second, "c2 serves the new value linearizably once healed", func(ctx context.Context) error {
		r, err := rc.cl.of(c2).Get(ctx, "k")
		if err != nil {
			return err
		}
		if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "after" {
			return fmt.Errorf("read %v", r.Kvs)
		}
		return nil
	})

	// c1, removed while it was dead, comes back with its data: placement
	// admits it again, as a non-voter since region c has its voter.
	c1.Launch()
	waitUntil(t, time.Minute, "c1 back as a non-voter, caught up", func(ctx context.Context) error {
		voters, others, _, err := rc.roles(ctx, a1)
		if err != nil {
			return err
		}
		if !slices.Equal(others, []string{"c1"}) || !slices.Equal(voters["c"], []string{"c2"}) {
			return fmt.Errorf("voters %v, non-voters %v", voters, others)
		}
		r, err := rc.cl.of(c1).Get(ctx, "k", clientv3.WithSerializable())
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "after" {
			return fmt.Errorf("serializable read on c1: %v, %v", r, err)
		}
		return nil
	})
	requireSameHashKV(t, []*harness.Node{a1, b1, c2, c1})
}

// leaderPlacement reads n's /placement, which must be the leader's plan.
func leaderPlacement(ctx context.Context, n *harness.Node) (*placement.Status, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.ClientURL+"/placement", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st placement.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, err
	}
	if !st.Planner {
		return nil, fmt.Errorf("%s is not the planner", n.Name)
	}
	return &st, nil
}

// watchPlacement polls n's /placement every 20ms until the test calls the
// function it returns, which gives what was seen, in order and without
// repeats: "<name> down" for a member the leader saw down, and
// "<kind> <name>" for every planned change.
func watchPlacement(t *testing.T, n *harness.Node) func() []string {
	stop := make(chan struct{})
	done := make(chan []string)
	go func() {
		var seen []string
		note := func(s string) {
			if !slices.Contains(seen, s) {
				seen = append(seen, s)
			}
		}
		for {
			select {
			case <-stop:
				done <- seen
				return
			case <-time.After(20 * time.Millisecond):
			}
			st, err := leaderPlacement(context.Background(), n)
			if err != nil {
				continue
			}
			for _, m := range st.Members {
				if m.Alive != nil && !*m.Alive {
					note(m.Name + " down")
				}
			}
			for _, c := range st.Next {
				note(c.Kind + " " + c.Name)
			}
		}
	}()
	stopped := sync.OnceValue(func() []string {
		close(stop)
		return <-done
	})
	t.Cleanup(func() { stopped() })
	return stopped
}
