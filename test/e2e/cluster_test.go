package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// Replicated clusters, driven as an operator and an application would: with
// etcdctl and clientv3 against several members, through leader changes,
// crashes, membership changes and a follower too far behind to catch up from
// the log. Every test ends by checking that all live members hold the same
// key-value history (HashKV at one revision).

// clients hands out one client per node, made on first use and closed when
// the test ends. A client keeps working across restarts of its node.
type clients struct {
	t  testing.TB
	mu sync.Mutex
	m  map[*harness.Node]*clientv3.Client
}

func newClients(t testing.TB) *clients {
	return &clients{t: t, m: map[*harness.Node]*clientv3.Client{}}
}

func (c *clients) of(n *harness.Node) *clientv3.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cli, ok := c.m[n]; ok {
		return cli
	}
	cli := n.Client(c.t)
	c.m[n] = cli
	return cli
}

// waitUntil calls f every 100ms, each time with a 3s context, until it
// returns nil, and returns how long that took; after timeout it fails the
// test with f's last error.
func waitUntil(t testing.TB, timeout time.Duration, what string, f func(ctx context.Context) error) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last error: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func without(nodes []*harness.Node, drop ...*harness.Node) []*harness.Node {
	var out []*harness.Node
	for _, n := range nodes {
		if !slices.Contains(drop, n) {
			out = append(out, n)
		}
	}
	return out
}

func hex(id uint64) string { return strconv.FormatUint(id, 16) }

// clusterLeader waits until every node of live answers Status naming the
// same leader, in the same term, and that leader is one of them. It returns
// the leader and every node's member ID.
func clusterLeader(t *testing.T, cl *clients, live []*harness.Node) (*harness.Node, map[*harness.Node]uint64) {
	t.Helper()
	var leader *harness.Node
	ids := map[*harness.Node]uint64{}
	waitUntil(t, 20*time.Second, "one leader among "+names(live), func(ctx context.Context) error {
		leader = nil
		var leaderID, term uint64
		for i, n := range live {
			st, err := cl.of(n).Status(ctx, n.ClientURL)
			if err != nil {
				return fmt.Errorf("%s: %v", n.Name, err)
			}
			ids[n] = st.Header.MemberId
			if st.Leader == 0 {
				return fmt.Errorf("%s knows no leader", n.Name)
			}
			if i > 0 && (st.Leader != leaderID || st.RaftTerm != term) {
				return fmt.Errorf("%s says leader %x in term %d, %s said %x in term %d",
					n.Name, st.Leader, st.RaftTerm, live[0].Name, leaderID, term)
			}
			leaderID, term = st.Leader, st.RaftTerm
			if st.Leader == st.Header.MemberId {
				leader = n
			}
		}
		if leader == nil {
			return fmt.Errorf("the leader %x is none of %s", leaderID, names(live))
		}
		return nil
	})
	return leader, ids
}

func names(nodes []*harness.Node) string {
	var s []string
	for _, n := range nodes {
		s = append(s, n.Name)
	}
	return strings.Join(s, ",")
}

// restart restarts n after a kill or stop. The harness picks ports below
// the ephemeral range, but while n was down another process may still have
// taken one: the restart then fails with "address already in use". Check
// first and name the holder, so such a failure is not taken for a server
// bug.
func restart(t *testing.T, n *harness.Node) {
	t.Helper()
	for _, u := range []string{n.ListenPeerURL, n.ClientURL} {
		addr := strings.TrimPrefix(u, "http://")
		l, err := net.Listen("tcp", addr)
		if err == nil {
			l.Close()
			continue
		}
		_, port, _ := net.SplitHostPort(addr)
		out, _ := exec.Command("ss", "-tanp", "sport", "=", ":"+port).CombinedOutput()
		t.Errorf("%s's address %s was taken while it was down (a harness port-allocation race, not a server bug): %v\n%s", n.Name, addr, err, out)
	}
	n.Restart()
}

// requireSameHashKV checks that every node holds the same history: it writes
// once through nodes[0], waits until every node has applied that revision,
// and compares HashKV at it.
func requireSameHashKV(t *testing.T, nodes []*harness.Node) {
	t.Helper()
	cl := newClients(t)
	ctx := testCtx(t, 60*time.Second)
	resp, err := cl.of(nodes[0]).Put(ctx, "hashkv-check", time.Now().Format(time.RFC3339Nano))
	if err != nil {
		t.Fatalf("final write through %s: %v", nodes[0].Name, err)
	}
	rev := resp.Header.Revision
	type result struct {
		hash          uint32
		compact, hrev int64
	}
	var first result
	for i, n := range nodes {
		waitUntil(t, 30*time.Second, fmt.Sprintf("%s applies revision %d", n.Name, rev), func(ctx context.Context) error {
			r, err := cl.of(n).Get(ctx, "hashkv-check", clientv3.WithSerializable())
			if err != nil {
				return err
			}
			if r.Header.Revision < rev {
				return fmt.Errorf("at revision %d", r.Header.Revision)
			}
			return nil
		})
		h, err := cl.of(n).HashKV(ctx, n.ClientURL, rev)
		if err != nil {
			t.Fatalf("HashKV(%d) on %s: %v", rev, n.Name, err)
		}
		got := result{h.Hash, h.CompactRevision, h.HashRevision}
		if i == 0 {
			first = got
			continue
		}
		if got != first {
			t.Errorf("HashKV at revision %d: %s has %+v, %s has %+v", rev, n.Name, got, nodes[0].Name, first)
		}
	}
	t.Logf("HashKV at revision %d: %08x on %s", rev, first.hash, names(nodes))
}

// TestClusterEtcdctl drives a cluster with etcdctl as an operator would:
// member list, endpoint status, reads across members, move-leader, adding a
// voter, adding and promoting a learner, removing a member.
func TestClusterEtcdctl(t *testing.T) {
	bin := harness.BallastBin(t)
	nodes := harness.StartCluster(t, bin, 3, harness.Options{})
	ctlBin := harness.EtcdctlBin(t)
	ctlFor := func(ns ...*harness.Node) *ctlRunner {
		var eps []string
		for _, n := range ns {
			eps = append(eps, n.ClientURL)
		}
		return &ctlRunner{t: t, bin: ctlBin, ep: strings.Join(eps, ",")}
	}
	all := ctlFor(nodes...)

	type member struct {
		ID         uint64   `json:"ID"`
		Name       string   `json:"name"`
		PeerURLs   []string `json:"peerURLs"`
		ClientURLs []string `json:"clientURLs"`
		IsLearner  bool     `json:"isLearner"`
	}
	memberList := func(c *ctlRunner) map[string]member { // by peer URL
		t.Helper()
		var doc struct {
			Members []member `json:"members"`
		}
		out := c.ok("member", "list", "-w", "json")
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("member list -w json: %v in\n%s", err, out)
		}
		byPeer := map[string]member{}
		for _, m := range doc.Members {
			if len(m.PeerURLs) != 1 {
				t.Fatalf("member %x has peer URLs %v, want one", m.ID, m.PeerURLs)
			}
			byPeer[m.PeerURLs[0]] = m
		}
		if len(byPeer) != len(doc.Members) {
			t.Fatalf("member list: two members share a peer URL:\n%s", out)
		}
		return byPeer
	}
	checkMember := func(ms map[string]member, n *harness.Node, learner bool) error {
		m, ok := ms[n.PeerURL]
		switch {
		case !ok:
			return fmt.Errorf("no member with peer URL %s", n.PeerURL)
		case m.Name != n.Name || !slices.Equal(m.ClientURLs, []string{n.ClientURL}) || m.IsLearner != learner:
			return fmt.Errorf("member %s: %+v, want name %s, client URLs [%s], learner %v", n.PeerURL, m, n.Name, n.ClientURL, learner)
		}
		return nil
	}
	// published checks that n, which serves clients, is listed with its
	// name and client URL: an etcd member publishes them through Raft
	// before it serves any client. If they are missing the test fails, and
	// waits for them so that the rest still runs.
	published := func(n *harness.Node, learner bool) {
		t.Helper()
		if err := checkMember(memberList(all), n, learner); err != nil {
			t.Errorf("%s serves clients, but member list lacks its name or client URL: %v "+
				"(etcd publishes a member's name and client URLs before it serves clients; "+
				"etcdctl --cluster and clientv3's Sync find members by them)", n.Name, err)
			waitUntil(t, 20*time.Second, "member list shows "+n.Name+" with its name and client URL", func(context.Context) error {
				return checkMember(memberList(all), n, learner)
			})
		}
	}

	ms := memberList(all)
	if len(ms) != 3 {
		t.Fatalf("member list: %d members, want 3: %+v", len(ms), ms)
	}
	ids := map[*harness.Node]uint64{}
	for _, n := range nodes {
		published(n, false)
		ids[n] = ms[n.PeerURL].ID
	}
	nodeOf := func(id uint64) *harness.Node {
		for n, nid := range ids {
			if nid == id {
				return n
			}
		}
		t.Fatalf("no node has member ID %x", id)
		return nil
	}

	type epStatus struct {
		Endpoint string `json:"Endpoint"`
		Status   struct {
			Header struct {
				MemberID uint64 `json:"member_id"`
				RaftTerm uint64 `json:"raft_term"`
			} `json:"header"`
			Leader           uint64 `json:"leader"`
			RaftIndex        uint64 `json:"raftIndex"`
			RaftTerm         uint64 `json:"raftTerm"`
			RaftAppliedIndex uint64 `json:"raftAppliedIndex"`
			IsLearner        bool   `json:"isLearner"`
		} `json:"Status"`
	}
	// status runs endpoint status --cluster and returns the leader's ID
	// once every member agrees on it, else an error.
	status := func(c *ctlRunner, want int) (uint64, []epStatus, error) {
		out, stderr, err := c.run("", "endpoint", "status", "--cluster", "-w", "json")
		if err != nil {
			return 0, nil, fmt.Errorf("endpoint status --cluster: %v: %s", err, stderr)
		}
		var sts []epStatus
		if err := json.Unmarshal([]byte(out), &sts); err != nil {
			return 0, nil, fmt.Errorf("endpoint status -w json: %v in\n%s", err, out)
		}
		if len(sts) != want {
			return 0, nil, fmt.Errorf("endpoint status --cluster: %d endpoints, want %d:\n%s", len(sts), want, out)
		}
		var leaders []uint64
		for _, s := range sts {
			st := s.Status
			if st.Leader != sts[0].Status.Leader || st.RaftTerm != sts[0].Status.RaftTerm {
				return 0, nil, fmt.Errorf("members disagree on leader or term:\n%s", out)
			}
			if st.Header.MemberID == st.Leader {
				leaders = append(leaders, st.Leader)
			}
			if st.RaftTerm == 0 || st.Header.RaftTerm != st.RaftTerm || st.RaftAppliedIndex == 0 || st.RaftIndex < st.RaftAppliedIndex || st.IsLearner {
				return 0, nil, fmt.Errorf("%s: term, indexes or learner flag wrong: %+v", s.Endpoint, st)
			}
		}
		if len(leaders) != 1 {
			return 0, nil, fmt.Errorf("%d members say they lead, want 1:\n%s", len(leaders), out)
		}
		return leaders[0], sts, nil
	}
	leaderID, sts, err := status(all, 3)
	if err != nil {
		t.Fatal(err)
	}
	var eps []string
	for _, s := range sts {
		eps = append(eps, s.Endpoint)
	}
	for _, n := range nodes {
		if !slices.Contains(eps, n.ClientURL) {
			t.Errorf("endpoint status --cluster: no status for %s (%s): %v", n.Name, n.ClientURL, eps)
		}
	}

	// Read-your-writes across members: linearizable reads see a write made
	// through any other member at once.
	for _, w := range nodes {
		key, val := "ctl/"+w.Name, "written through "+w.Name
		expect(t, "put via "+w.Name, ctlFor(w).ok("put", key, val), "OK\n")
		for _, r := range without(nodes, w) {
			expect(t, "get "+key+" via "+r.Name, ctlFor(r).ok("get", key, "--print-value-only"), val+"\n")
		}
	}

	// move-leader to a follower: etcdctl finds the leader among the
	// endpoints and asks it.
	oldLeader := nodeOf(leaderID)
	target := without(nodes, oldLeader)[0]
	out := all.ok("move-leader", hex(ids[target]))
	expect(t, "move-leader", out, fmt.Sprintf("Leadership transferred from %s to %s\n", hex(leaderID), hex(ids[target])))
	waitUntil(t, 10*time.Second, "every member names "+target.Name+" leader", func(ctx context.Context) error {
		id, _, err := status(all, 3)
		if err == nil && id != ids[target] {
			err = fmt.Errorf("leader is %x", id)
		}
		return err
	})
	cl := newClients(t)
	ctx := testCtx(t, 2*time.Minute)
	if _, err := cl.of(oldLeader).MoveLeader(ctx, ids[oldLeader]); err == nil || rpctypes.ErrorDesc(err) != "etcdserver: not leader" {
		t.Errorf("MoveLeader sent to %s, no longer the leader: %v, want etcdserver: not leader", oldLeader.Name, err)
	}
	leader := target

	// member add, as etcd's documentation says: add, then start the member
	// with what etcdctl printed.
	addRe := regexp.MustCompile(`^Member +([0-9a-f]+) added (as learner )?to cluster +[0-9a-f]+\n`)
	icRe := regexp.MustCompile(`\nETCD_INITIAL_CLUSTER="([^"]*)"\n`)
	memberAdd := func(n *harness.Node, learner bool) (uint64, string) {
		t.Helper()
		args := []string{"member", "add", n.Name, "--peer-urls=" + n.PeerURL}
		if learner {
			args = append(args, "--learner")
		}
		out := all.ok(args...)
		m, ic := addRe.FindStringSubmatch(out), icRe.FindStringSubmatch(out)
		if m == nil || ic == nil || (m[2] != "") != learner || !strings.Contains(out, "\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n") {
			t.Fatalf("etcdctl %s:\n%s", strings.Join(args, " "), out)
		}
		id, _ := strconv.ParseUint(m[1], 16, 64)
		return id, ic[1]
	}
	sameMembers := func(ic string, want []*harness.Node) {
		t.Helper()
		got := strings.Split(ic, ",")
		exp := strings.Split(harness.InitialCluster(want), ",")
		sort.Strings(got)
		sort.Strings(exp)
		if !slices.Equal(got, exp) {
			t.Fatalf("member add printed ETCD_INITIAL_CLUSTER=%q, want the members %q", ic, harness.InitialCluster(want))
		}
	}
	// caughtUp waits until n has applied at least what the leader had
	// applied when called.
	caughtUp := func(n *harness.Node) {
		t.Helper()
		st, err := cl.of(leader).Status(ctx, leader.ClientURL)
		if err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 30*time.Second, n.Name+" catches up with the leader", func(ctx context.Context) error {
			s, err := cl.of(n).Status(ctx, n.ClientURL)
			if err != nil {
				return err
			}
			if s.IsLearner {
				return fmt.Errorf("%s says it is a learner", n.Name)
			}
			if s.RaftAppliedIndex < st.RaftAppliedIndex {
				return fmt.Errorf("applied %d, the leader had applied %d", s.RaftAppliedIndex, st.RaftAppliedIndex)
			}
			return nil
		})
	}

	n4 := harness.NewMember(t, bin, nodes, "n4", harness.Options{})
	id4, ic := memberAdd(n4, false)
	sameMembers(ic, append(slices.Clone(nodes), n4))
	ms = memberList(all)
	if m := ms[n4.PeerURL]; len(ms) != 4 || m.ID != id4 || m.IsLearner {
		t.Errorf("member list right after member add: %d members, new one %+v; want 4, ID %x, not a learner", len(ms), m, id4)
	}
	n4.Join(ic)
	ids[n4] = id4
	published(n4, false)
	caughtUp(n4)

	// A learner: promote is refused until it has caught up.
	members := append(slices.Clone(nodes), n4)
	n5 := harness.NewMember(t, bin, members, "n5", harness.Options{})
	id5, ic := memberAdd(n5, true)
	sameMembers(ic, append(slices.Clone(members), n5))
	if m := memberList(all)[n5.PeerURL]; m.ID != id5 || !m.IsLearner {
		t.Errorf("member list after member add --learner: %+v, want ID %x, a learner", m, id5)
	}
	const notReady = "etcdserver: can only promote a learner member which is in sync with leader"
	if e := all.fails("member", "promote", hex(id5)); !strings.Contains(e, notReady) {
		t.Errorf("member promote of a learner not started: %q, want %q", e, notReady)
	}
	n5.Join(ic)
	ids[n5] = id5
	published(n5, true)
	waitUntil(t, 30*time.Second, "member promote n5", func(context.Context) error {
		out, stderr, err := all.run("", "member", "promote", hex(id5))
		if err != nil {
			return fmt.Errorf("%v: %s", err, stderr)
		}
		if !strings.HasPrefix(out, "Member "+fmt.Sprintf("%16x", id5)+" promoted in cluster ") {
			t.Errorf("member promote printed %q", out)
		}
		return nil
	})
	if err := checkMember(memberList(all), n5, false); err != nil {
		t.Errorf("after member promote: %v", err)
	}
	caughtUp(n5)
	members = append(members, n5)

	// member remove of a follower: it stops, and the others carry on.
	victim := without(nodes, leader)[0]
	rest := without(members, victim)
	all = ctlFor(rest...)
	if out := all.ok("member", "remove", hex(ids[victim])); !strings.HasPrefix(out, fmt.Sprintf("Member %16x removed from cluster ", ids[victim])) {
		t.Errorf("member remove printed %q", out)
	}
	waitUntil(t, 10*time.Second, victim.Name+" exits after its removal", func(context.Context) error {
		if victim.Running() {
			return fmt.Errorf("%s still running", victim.Name)
		}
		return nil
	})
	if !strings.Contains(victim.Log(), "removed from the cluster") {
		t.Errorf("%s's log does not say it was removed from the cluster", victim.Name)
	}
	ms = memberList(all)
	if len(ms) != 4 {
		t.Errorf("member list after member remove: %d members, want 4: %+v", len(ms), ms)
	}
	for _, n := range rest {
		if err := checkMember(ms, n, false); err != nil {
			t.Error(err)
		}
	}
	if _, ok := ms[victim.PeerURL]; ok {
		t.Errorf("member list still has the removed %s", victim.Name)
	}
	for _, w := range rest {
		key, val := "after-remove/"+w.Name, "written through "+w.Name
		expect(t, "put via "+w.Name, ctlFor(w).ok("put", key, val), "OK\n")
		for _, r := range without(rest, w) {
			expect(t, "get "+key+" via "+r.Name, ctlFor(r).ok("get", key, "--print-value-only"), val+"\n")
		}
	}
	if _, _, err := status(all, 4); err != nil {
		t.Error(err)
	}
	requireSameHashKV(t, rest)
}

// writeLoad is writers putting distinct keys through the members of a
// cluster, each writer on one member and moving to the next after an error.
// It records every acknowledged put.
type writeLoad struct {
	start  time.Time
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	acks   []ack
	failed int
	end    time.Time
}

type ack struct {
	key, val string
	rev      int64
	at       time.Time
}

// startWriteLoad starts writers putting prefix+"w<writer>/<n>" through nodes,
// with a 2s bound on each put.
func startWriteLoad(t *testing.T, cl *clients, nodes []*harness.Node, writers int, prefix string) *writeLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &writeLoad{start: time.Now(), cancel: cancel}
	nodes = slices.Clone(nodes)
	for _, n := range nodes {
		cl.of(n) // make the clients before the load starts
	}
	t.Cleanup(l.stop) // before the clients close: cleanups run last first
	for w := range writers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			at := w % len(nodes)
			for i := 0; ctx.Err() == nil; i++ {
				key, val := fmt.Sprintf("%sw%02d/%07d", prefix, w, i), fmt.Sprintf("v%d.%d", w, i)
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				resp, err := cl.of(nodes[at]).Put(pctx, key, val)
				pcancel()
				l.mu.Lock()
				if err == nil {
					l.acks = append(l.acks, ack{key, val, resp.Header.Revision, time.Now()})
				} else if ctx.Err() == nil {
					l.failed++
				}
				l.mu.Unlock()
				if err != nil {
					at = (at + 1) % len(nodes) // outcome unknown: not acknowledged
					select {
					case <-ctx.Done():
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		}()
	}
	return l
}

// stop ends the load and waits for the writers.
func (l *writeLoad) stop() {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	if l.end.IsZero() {
		l.end = time.Now()
	}
	l.mu.Unlock()
}

// ackedSince returns how many puts were acknowledged after t0.
func (l *writeLoad) ackedSince(t0 time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for i := len(l.acks) - 1; i >= 0 && l.acks[i].at.After(t0); i-- {
		n++
	}
	return n
}

// waitAcks waits until n puts have been acknowledged since t0.
func (l *writeLoad) waitAcks(t *testing.T, t0 time.Time, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for l.ackedSince(t0) < n {
		if time.Now().After(deadline) {
			t.Fatalf("write load: %d puts acknowledged in %v, want %d", l.ackedSince(t0), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// maxGap returns the longest time within [from, to] without an
// acknowledged put, and when it began. A zero to means until now (or the
// end of the load).
func (l *writeLoad) maxGap(from, to time.Time) (time.Duration, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if to.IsZero() {
		to = time.Now()
		if !l.end.IsZero() {
			to = l.end
		}
	}
	times := []time.Time{from}
	for _, a := range l.acks {
		if a.at.After(from) && a.at.Before(to) {
			times = append(times, a.at)
		}
	}
	times = append(times, to)
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	var gap time.Duration
	var at time.Time
	for i := 1; i < len(times); i++ {
		if d := times[i].Sub(times[i-1]); d > gap {
			gap, at = d, times[i-1]
		}
	}
	return gap, at
}

func (l *writeLoad) snapshot() ([]ack, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acks), l.failed
}

// requireAcked reads the load's keys on every node with one linearizable
// range read and checks that every acknowledged put is there, with its value
// and revision.
func requireAcked(t *testing.T, cl *clients, nodes []*harness.Node, l *writeLoad, prefix string) {
	t.Helper()
	acks, _ := l.snapshot()
	for _, n := range nodes {
		var resp *clientv3.GetResponse
		waitUntil(t, 30*time.Second, "linearizable read of the load's keys on "+n.Name, func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var err error
			resp, err = cl.of(n).Get(ctx, prefix, clientv3.WithPrefix())
			return err
		})
		type kv struct {
			val string
			rev int64
		}
		got := make(map[string]kv, len(resp.Kvs))
		for _, e := range resp.Kvs {
			got[string(e.Key)] = kv{string(e.Value), e.ModRevision}
		}
		bad := 0
		for _, a := range acks {
			if g, ok := got[a.key]; !ok || g.val != a.val || g.rev != a.rev {
				if bad++; bad <= 5 {
					t.Errorf("%s: acknowledged put %s=%s at revision %d: found %v (present %v)", n.Name, a.key, a.val, a.rev, g, ok)
				}
			}
		}
		if bad > 0 {
			t.Fatalf("%s: %d of %d acknowledged puts missing or different", n.Name, bad, len(acks))
		}
	}
	t.Logf("all %d acknowledged puts read back on %s", len(acks), names(nodes))
}

// TestClusterLeaderKillUnderLoad kills the leader with SIGKILL while
// writers put through every member: writes resume on a new leader within a
// few seconds, and no acknowledged put is lost.
func TestClusterLeaderKillUnderLoad(t *testing.T) {
	nodes := harness.StartCluster(t, harness.BallastBin(t), 3, harness.Options{})
	cl := newClients(t)
	leader, _ := clusterLeader(t, cl, nodes)

	const prefix = "load/"
	load := startWriteLoad(t, cl, nodes, 16, prefix)
	load.waitAcks(t, load.start, 1000, 20*time.Second)
	killed := time.Now()
	leader.Kill()
	t.Logf("killed the leader %s after %d acknowledged puts", leader.Name, load.ackedSince(load.start))

	survivors := without(nodes, leader)
	newLeader, _ := clusterLeader(t, cl, survivors)
	waitUntil(t, 10*time.Second, "a write through the new leader "+newLeader.Name, func(ctx context.Context) error {
		_, err := cl.of(newLeader).Put(ctx, "after-kill", newLeader.Name)
		return err
	})
	// Let the load run on for a while on the survivors.
	load.waitAcks(t, killed, 500, 20*time.Second)
	time.Sleep(2 * time.Second) // a measuring window, not a wait for a condition: the gap is measured over it
	load.stop()
	gap, at := load.maxGap(killed.Add(-time.Second), time.Time{})
	acks, failed := load.snapshot()
	t.Logf("leader-kill write gap: %v (from %v after the kill; new leader %s; %d puts acknowledged, %d failed)",
		gap.Round(time.Millisecond), at.Sub(killed).Round(time.Millisecond), newLeader.Name, len(acks), failed)
	if gap > 5*time.Second {
		t.Errorf("no write succeeded for %v after the leader was killed, want under 5s", gap)
	}
	if n := load.ackedSince(killed.Add(gap)); n == 0 {
		t.Errorf("no write acknowledged after the gap")
	}

	restart(t, leader)
	requireAcked(t, cl, nodes, load, prefix)
	requireSameHashKV(t, nodes)
}

// snapshotTaken reports whether a Raft snapshot was written under n's data
// directory after since (hashicorp/raft keeps each in a directory holding a
// meta.json).
func snapshotTaken(n *harness.Node, since time.Time) bool {
	found := false
	filepath.WalkDir(n.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || found {
			return nil
		}
		if !d.IsDir() && d.Name() == "meta.json" {
			if info, err := d.Info(); err == nil && info.ModTime().After(since) {
				found = true
			}
		}
		return nil
	})
	return found
}

// TestClusterFollowerCatchUpBySnapshot stops a follower, writes until the
// log it would need has been truncated, and restarts it: it must catch up
// from a streamed snapshot of the state.
func TestClusterFollowerCatchUpBySnapshot(t *testing.T) {
	nodes := harness.StartCluster(t, harness.BallastBin(t), 3, harness.Options{Args: []string{"--snapshot-count", "10000"}})
	cl := newClients(t)
	leader, _ := clusterLeader(t, cl, nodes)
	follower := without(nodes, leader)[0]
	others := without(nodes, follower)
	const restored = "state restored from snapshot"
	if err := follower.Stop(); err != nil {
		t.Fatalf("stop %s: %v", follower.Name, err)
	}
	stopped := time.Now()
	if strings.Contains(follower.Log(), restored) {
		t.Fatalf("%s restored a snapshot before it was stopped", follower.Name)
	}

	// 50k single puts (one Raft entry each): far more than --snapshot-count
	// plus the 5000 entries kept after a snapshot.
	const keys, writers = 50000, 64
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	ctx := testCtx(t, 2*time.Minute)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cl.of(others[w%len(others)])
			for i := w; i < keys; i += writers {
				if _, err := c.Put(ctx, fmt.Sprintf("snap/%06d", i), fmt.Sprint("value-", i)); err != nil {
					errc <- fmt.Errorf("put %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	last, lastVal := "snap/last", "the last write"
	if _, err := cl.of(leader).Put(ctx, last, lastVal); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d puts in %v", keys+1, time.Since(stopped).Round(time.Millisecond))

	// Raft checks every 10-20s whether to take a snapshot. Wait until both
	// live members have one (either may lead when the follower returns);
	// if the snapshot files cannot be found, wait out the longest interval.
	loaded := time.Now()
	deadline := loaded.Add(22 * time.Second)
	seen := false
	for !seen && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		seen = snapshotTaken(others[0], stopped) && snapshotTaken(others[1], stopped)
	}
	t.Logf("waited %v after the writes; snapshot files seen on %s: %v", time.Since(loaded).Round(time.Millisecond), names(others), seen)
	st, err := cl.of(leader).Status(ctx, leader.ClientURL)
	if err != nil {
		t.Fatal(err)
	}

	restart(t, follower)
	waitUntil(t, 30*time.Second, follower.Name+" applies what the leader had applied", func(ctx context.Context) error {
		s, err := cl.of(follower).Status(ctx, follower.ClientURL)
		if err != nil {
			return err
		}
		if s.RaftAppliedIndex < st.RaftAppliedIndex {
			return fmt.Errorf("applied %d, the leader had applied %d", s.RaftAppliedIndex, st.RaftAppliedIndex)
		}
		return nil
	})
	resp, err := cl.of(follower).Get(ctx, last, clientv3.WithSerializable())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != lastVal {
		t.Errorf("serializable get %s on %s: %v, want %q", last, follower.Name, resp.Kvs, lastVal)
	}
	resp, err = cl.of(follower).Get(ctx, "snap/", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithSerializable())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != keys+1 {
		t.Errorf("%s has %d keys under snap/, want %d", follower.Name, resp.Count, keys+1)
	}
	if !strings.Contains(follower.Log(), restored) {
		t.Errorf("%s's log lacks %q: it did not catch up from a snapshot (was the leader's log not truncated yet?)", follower.Name, restored)
	}
	requireSameHashKV(t, nodes)
}

// TestClusterMemberAddDuringLoad adds a voter while writers run. Until the
// new member has caught up it must not count towards the quorum: writes go
// on before it is even started, even with one of the original members down.
func TestClusterMemberAddDuringLoad(t *testing.T) {
	bin := harness.BallastBin(t)
	nodes := harness.StartCluster(t, bin, 3, harness.Options{})
	cl := newClients(t)
	leader, _ := clusterLeader(t, cl, nodes)
	followers := without(nodes, leader)

	const prefix = "add/"
	load := startWriteLoad(t, cl, nodes, 8, prefix)
	load.waitAcks(t, load.start, 200, 20*time.Second)

	n4 := harness.NewMember(t, bin, nodes, "n4", harness.Options{})
	ctx := testCtx(t, 2*time.Minute)
	added := time.Now()
	add, err := cl.of(followers[0]).MemberAdd(ctx, []string{n4.PeerURL}) // forwarded to the leader
	if err != nil {
		t.Fatalf("MemberAdd through %s: %v", followers[0].Name, err)
	}
	if add.Member.IsLearner || len(add.Members) != 4 {
		t.Errorf("MemberAdd: member %+v, %d members; want a voter among 4", add.Member, len(add.Members))
	}

	// The new member is not running. Were it a voter already, 3 of 4 votes
	// would be needed and losing one more member would stop writes.
	down := followers[1]
	down.Kill()
	wrote := time.Now()
	load.waitAcks(t, wrote, 200, 10*time.Second)
	time.Sleep(2 * time.Second) // a measuring window: a gap over 2s can only show if 2s pass under load
	gap, at := load.maxGap(added, time.Time{})
	t.Logf("write gap from MemberAdd to now, %s down, n4 not started: %v", down.Name, gap.Round(time.Millisecond))
	if gap > 2*time.Second {
		t.Errorf("no write succeeded for %v (from %v after MemberAdd) while n4 was added and not started", gap, at.Sub(added).Round(time.Millisecond))
	}
	restart(t, down)

	all := append(slices.Clone(nodes), n4)
	n4.Join(harness.InitialCluster(all))
	last := time.Now()
	load.waitAcks(t, last, 200, 10*time.Second)
	time.Sleep(time.Second)
	load.stop()
	acks, failed := load.snapshot()
	gap, at = load.maxGap(load.start, time.Time{})
	t.Logf("longest write gap of the whole load: %v, %v after the start; %d puts acknowledged, %d failed",
		gap.Round(time.Millisecond), at.Sub(load.start).Round(time.Millisecond), len(acks), failed)
	if gap > 2*time.Second {
		t.Errorf("no write succeeded for %v, from %v after the load started (MemberAdd at %v, n4 started at %v)",
			gap, at.Sub(load.start).Round(time.Millisecond), added.Sub(load.start).Round(time.Millisecond), last.Sub(load.start).Round(time.Millisecond))
	}

	// n4 serves linearizable reads of the latest write.
	lastAck := acks[len(acks)-1]
	resp, err := cl.of(n4).Get(ctx, lastAck.key)
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != lastAck.val {
		t.Fatalf("linearizable get %s on n4: %v %v, want %s", lastAck.key, resp, err, lastAck.val)
	}
	ms, err := cl.of(n4).MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms.Members) != 4 {
		t.Errorf("n4's member list has %d members, want 4", len(ms.Members))
	}
	for _, m := range ms.Members {
		if m.IsLearner {
			t.Errorf("member %s (%x) is a learner", m.Name, m.ID)
		}
	}
	// Once caught up, n4 is promoted to a voter: only a voter can take
	// leadership.
	leader, _ = clusterLeader(t, cl, all)
	waitUntil(t, 20*time.Second, "MoveLeader to n4 (a voter once promoted)", func(ctx context.Context) error {
		_, err := cl.of(leader).MoveLeader(ctx, add.Member.ID)
		return err
	})
	if l, _ := clusterLeader(t, cl, all); l != n4 {
		t.Errorf("after MoveLeader to n4 the leader is %s", l.Name)
	}
	requireAcked(t, cl, all, load, prefix)
	requireSameHashKV(t, all)
}

// TestClusterFiveNodes: a five-member cluster survives two failures, refuses
// linearizable reads (with an error, not stale data) after a third, and
// recovers when they return.
func TestClusterFiveNodes(t *testing.T) {
	nodes := harness.StartCluster(t, harness.BallastBin(t), 5, harness.Options{})
	cl := newClients(t)
	leader, _ := clusterLeader(t, cl, nodes)
	followers := without(nodes, leader)
	ctx := testCtx(t, 2*time.Minute)

	readWriteAll := func(live []*harness.Node, round string) {
		t.Helper()
		for _, w := range live {
			key, val := "five/"+round+"/"+w.Name, "through "+w.Name
			waitUntil(t, 10*time.Second, round+": put through "+w.Name, func(ctx context.Context) error {
				_, err := cl.of(w).Put(ctx, key, val)
				return err
			})
			for _, r := range live {
				resp, err := cl.of(r).Get(ctx, key)
				if err != nil {
					t.Fatalf("%s: linearizable get %s on %s: %v", round, key, r.Name, err)
				}
				if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != val {
					t.Fatalf("%s: get %s on %s: %v, want %q", round, key, r.Name, resp.Kvs, val)
				}
			}
		}
	}

	followers[0].Kill()
	followers[1].Kill()
	live := without(nodes, followers[0], followers[1])
	readWriteAll(live, "two down")

	followers[2].Kill()
	live = without(live, followers[2])
	for _, n := range live {
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := cl.of(n).Get(rctx, "five/two down/"+leader.Name)
		cancel()
		took := time.Since(start)
		if err == nil {
			t.Errorf("linearizable get on %s with 3 of 5 members down succeeded: %v", n.Name, resp.Kvs)
		} else {
			t.Logf("linearizable get on %s with 3 of 5 down: %v after %v", n.Name, err, took.Round(time.Millisecond))
		}
		if took > 6*time.Second {
			t.Errorf("linearizable get on %s took %v with a 5s deadline", n.Name, took)
		}
	}

	for _, n := range followers[:3] {
		restart(t, n)
	}
	clusterLeader(t, cl, nodes)
	readWriteAll(nodes, "recovered")
	requireSameHashKV(t, nodes)
}
