package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// Network partitions of a proxied three-member cluster (Options.Proxied:
// every peer link passes through a proxy that cuts it by the sending
// member's IP). The property under test throughout: a member that cannot
// reach a quorum never serves a linearizable read with data older than a
// write acknowledged elsewhere, and never acknowledges a write; the majority
// carries on; after healing every member converges on the same history.
//
// Probes of a cut-off member go through a plain gRPC KV client (partRawKV)
// as well as clientv3: clientv3 retries an Unavailable read until its
// deadline and then reports only the deadline, while the raw client shows
// every answer the server gives, each one checked.

// partCluster is a proxied cluster with one clientv3 client and one raw KV
// client per member, made on first use and closed when the test ends.
type partCluster struct {
	t     *testing.T
	nodes []*harness.Node
	mu    sync.Mutex
	cl    *clients
	raws  map[*harness.Node]pb.KVClient
	ids   map[*harness.Node]uint64
}

func startPartCluster(t *testing.T) *partCluster {
	t.Helper()
	nodes := harness.StartCluster(t, harness.BallastBin(t), 3, harness.Options{Proxied: true})
	pc := &partCluster{t: t, nodes: nodes, cl: newClients(t),
		raws: map[*harness.Node]pb.KVClient{}, ids: map[*harness.Node]uint64{}}
	for _, n := range nodes {
		pc.cli(n)
		pc.raw(n)
	}
	return pc
}

func (pc *partCluster) cli(n *harness.Node) *clientv3.Client { return pc.cl.of(n) }

// leader waits until every node of live names the same leader in the same
// term and returns it, recording every node's member ID in pc.ids.
func (pc *partCluster) leader(live []*harness.Node) *harness.Node {
	pc.t.Helper()
	leader, ids := clusterLeader(pc.t, pc.cl, live)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	maps.Copy(pc.ids, ids)
	return leader
}

// raw returns a KV client of n without clientv3's retries.
func (pc *partCluster) raw(n *harness.Node) pb.KVClient {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if c, ok := pc.raws[n]; ok {
		return c
	}
	conn, err := grpc.NewClient(strings.TrimPrefix(n.ClientURL, "http://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		pc.t.Fatalf("gRPC client for %s: %v", n.Name, err)
	}
	pc.t.Cleanup(func() { conn.Close() })
	c := pb.NewKVClient(conn)
	pc.raws[n] = c
	return c
}

// partGet is a single Range of key on kv; serializable or not.
func partGet(ctx context.Context, kv pb.KVClient, key string, serializable bool) (val string, found bool, err error) {
	resp, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte(key), Serializable: serializable})
	if err != nil {
		return "", false, err
	}
	if len(resp.Kvs) == 0 {
		return "", false, nil
	}
	return string(resp.Kvs[0].Value), true, nil
}

// partAck is a put acknowledged to the test.
type partAck struct {
	key, val string
	rev      int64
}

// put writes key=val through n with a 5s bound, failing the test on error.
func (pc *partCluster) put(n *harness.Node, key, val string) partAck {
	pc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := pc.cli(n).Put(ctx, key, val)
	if err != nil {
		pc.t.Fatalf("put %s=%s through %s: %v", key, val, n.Name, err)
	}
	return partAck{key, val, resp.Header.Revision}
}

// requireAcks reads prefix linearizably on every node and checks that the
// last acknowledged put of every key is there with its value and revision.
func (pc *partCluster) requireAcks(nodes []*harness.Node, prefix string, all []partAck) {
	pc.t.Helper()
	last := map[string]partAck{}
	for _, a := range all {
		if l, ok := last[a.key]; !ok || a.rev > l.rev {
			last[a.key] = a
		}
	}
	var acks []partAck
	for _, a := range last {
		acks = append(acks, a)
	}
	failed := false
	for _, n := range nodes {
		var resp *clientv3.GetResponse
		waitUntil(pc.t, 15*time.Second, "linearizable read of "+prefix+" on "+n.Name, func(ctx context.Context) error {
			var err error
			resp, err = pc.cli(n).Get(ctx, prefix, clientv3.WithPrefix())
			return err
		})
		got := map[string]partAck{}
		for _, kv := range resp.Kvs {
			got[string(kv.Key)] = partAck{string(kv.Key), string(kv.Value), kv.ModRevision}
		}
		bad := 0
		for _, a := range acks {
			if g, ok := got[a.key]; !ok || g != a {
				if bad++; bad <= 5 {
					pc.t.Errorf("%s: acknowledged put %s=%s at revision %d: found %+v (present %v)", n.Name, a.key, a.val, a.rev, g, ok)
				}
			}
		}
		if bad > 0 {
			failed = true
			pc.t.Errorf("%s: %d of %d acknowledged puts missing or different", n.Name, bad, len(acks))
		}
	}
	if !failed {
		pc.t.Logf("the last acknowledged put of each of %d keys under %s read back linearizably on %s", len(acks), prefix, names(nodes))
	}
}

// majorityLoad alternates, on the given members, a put through one and a
// linearizable read of it through the other, until stopped. Every put must
// succeed and every read must return the value just written.
type majorityLoad struct {
	stopc chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	acks  []partAck
	errs  []string
	reads int
}

func (pc *partCluster) startMajorityLoad(members []*harness.Node, prefix string) *majorityLoad {
	l := &majorityLoad{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			select {
			case <-l.stopc:
				return
			default:
			}
			w, r := members[i%len(members)], members[(i+1)%len(members)]
			key, val := fmt.Sprintf("%s%04d", prefix, i), "through "+w.Name
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := pc.cli(w).Put(ctx, key, val)
			if err != nil {
				cancel()
				l.mu.Lock()
				l.errs = append(l.errs, fmt.Sprintf("put %s through %s: %v", key, w.Name, err))
				l.mu.Unlock()
				continue
			}
			l.mu.Lock()
			l.acks = append(l.acks, partAck{key, val, resp.Header.Revision})
			l.mu.Unlock()
			got, found, err := partGet(ctx, pc.raw(r), key, false)
			cancel()
			l.mu.Lock()
			switch {
			case err != nil:
				l.errs = append(l.errs, fmt.Sprintf("linearizable get %s on %s: %v", key, r.Name, err))
			case !found || got != val:
				l.errs = append(l.errs, fmt.Sprintf("linearizable get %s on %s right after the put was acknowledged: %q (found %v), want %q", key, r.Name, got, found, val))
			default:
				l.reads++
			}
			l.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return l
}

func (l *majorityLoad) stop() ([]partAck, int, []string) {
	close(l.stopc)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acks, l.reads, l.errs
}

// TestPartitionMinority isolates a follower: it refuses linearizable reads
// (in particular of a key the majority has overwritten since) and writes
// with an error while still answering serializable reads; the majority
// keeps serving; after healing the follower catches up.
func TestPartitionMinority(t *testing.T) {
	pc := startPartCluster(t)
	nodes := pc.nodes
	leader := pc.leader(nodes)
	minority := without(nodes, leader)[0]
	majority := without(nodes, minority)
	const prefix, key = "minority/", "minority/k"

	var acks []partAck
	for i := range 10 {
		acks = append(acks, pc.put(leader, fmt.Sprintf("%sseed/%02d", prefix, i), fmt.Sprint("seed ", i)))
	}
	acks = append(acks, pc.put(leader, key, "old"))
	waitUntil(t, 10*time.Second, minority.Name+" applies "+key+"=old", func(ctx context.Context) error {
		v, _, err := partGet(ctx, pc.raw(minority), key, true)
		if err == nil && v != "old" {
			err = fmt.Errorf("%s=%q", key, v)
		}
		return err
	})

	harness.Isolate(minority, nodes)
	isolated := time.Now()
	t.Logf("isolated the follower %s; majority %s (leader %s)", minority.Name, names(majority), leader.Name)
	acks = append(acks, pc.put(majority[0], key, "new"))
	t.Logf("overwrote %s=new through %s %v after isolating", key, majority[0].Name, time.Since(isolated).Round(time.Millisecond))

	load := pc.startMajorityLoad(majority, prefix+"majority/")

	// On the minority, in parallel: a clientv3 linearizable get, raw
	// linearizable gets in a loop, and a put; each must fail.
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := pc.cli(minority).Get(ctx, key)
		took := time.Since(start).Round(time.Millisecond)
		switch {
		case err != nil:
			t.Logf("minority %s: clientv3 linearizable get %s: error after %v: %v", minority.Name, key, took, err)
		case len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == "old":
			t.Errorf("STALE READ: minority %s answered a linearizable get of %s with the overwritten value %q after %v (revision %d), want an error",
				minority.Name, key, resp.Kvs[0].Value, took, resp.Header.Revision)
		default:
			t.Errorf("minority %s answered a linearizable get of %s after %v: %v, want an error", minority.Name, key, took, resp.Kvs)
		}
	}()
	var rawProbes int
	rawErrs := map[string]int{}
	go func() {
		defer wg.Done()
		for end := time.Now().Add(4 * time.Second); time.Now().Before(end); {
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			v, found, err := partGet(ctx, pc.raw(minority), key, false)
			cancel()
			took := time.Since(start).Round(time.Millisecond)
			rawProbes++
			switch {
			case err != nil:
				rawErrs[err.Error()]++
			case found && v == "old":
				t.Errorf("STALE READ: minority %s answered raw linearizable get %s with the overwritten value %q (%v after isolation, took %v), want an error",
					minority.Name, key, v, start.Sub(isolated).Round(time.Millisecond), took)
			default:
				t.Errorf("minority %s answered raw linearizable get %s: %q (found %v), want an error", minority.Name, key, v, found)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := pc.cli(minority).Put(ctx, prefix+"put-on-minority", "x")
		took := time.Since(start).Round(time.Millisecond)
		if err == nil {
			t.Errorf("put on the minority %s succeeded after %v (revision %d), want an error", minority.Name, took, resp.Header.Revision)
		} else {
			t.Logf("minority %s: put: error after %v: %v", minority.Name, took, err)
		}
	}()
	wg.Wait()
	t.Logf("minority %s: %d raw linearizable gets, all failed: %v", minority.Name, rawProbes, rawErrs)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	v, found, err := partGet(ctx, pc.raw(minority), key, true)
	cancel()
	if err != nil {
		t.Errorf("serializable get %s on the minority %s: %v, want its local (old) value", key, minority.Name, err)
	} else {
		t.Logf("minority %s: serializable get %s = %q (found %v): local, stale as allowed", minority.Name, key, v, found)
		if v != "old" {
			t.Errorf("serializable get %s on the isolated %s: %q, want \"old\": did the partition leak?", key, minority.Name, v)
		}
	}

	time.Sleep(500 * time.Millisecond) // a little more majority traffic
	lacks, reads, lerrs := load.stop()
	acks = append(acks, lacks...)
	t.Logf("majority %s during the partition: %d puts and %d linearizable reads of them, %d errors", names(majority), len(lacks), reads, len(lerrs))
	for i, e := range lerrs {
		if i < 5 {
			t.Errorf("majority side: %s", e)
		}
	}
	if len(lacks) < 5 || reads < 5 {
		t.Errorf("majority side served only %d puts and %d linearizable reads while the minority was isolated", len(lacks), reads)
	}
	for _, n := range majority {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, _, err := partGet(ctx, pc.raw(n), key, false)
		cancel()
		if err != nil || v != "new" {
			t.Errorf("majority %s: linearizable get %s: %q, %v; want \"new\"", n.Name, key, v, err)
		}
	}

	harness.HealAll(nodes)
	healed := time.Now()
	took := waitUntil(t, 20*time.Second, minority.Name+" reads "+key+"=new linearizably after healing", func(ctx context.Context) error {
		v, found, err := partGet(ctx, pc.raw(minority), key, false)
		switch {
		case err != nil:
			return err
		case v == "old":
			t.Errorf("STALE READ: %s answered a linearizable get of %s with the overwritten value %q %v after healing",
				minority.Name, key, v, time.Since(healed).Round(time.Millisecond))
			return errors.New("stale")
		case v != "new":
			return fmt.Errorf("%s=%q (found %v)", key, v, found)
		}
		return nil
	})
	t.Logf("%s caught up %v after healing (isolated for %v)", minority.Name, took.Round(time.Millisecond), healed.Sub(isolated).Round(time.Millisecond))
	pc.leader(nodes)
	pc.requireAcks(nodes, prefix, acks)
	requireSameHashKV(t, nodes)
}

// partRead is one linearizable read of the old leader.
type partRead struct {
	start, end time.Time
	val        string
	found      bool
	err        error
}

// TestPartitionOldLeader isolates the leader and reads from it at once, in
// a loop, while the majority elects a new leader and overwrites the key: no
// read that started after the overwrite was acknowledged may return the old
// value. The old leader may answer reads only until it notices it has lost
// the quorum.
func TestPartitionOldLeader(t *testing.T) {
	pc := startPartCluster(t)
	nodes := pc.nodes
	old := pc.leader(nodes)
	oldID := pc.ids[old]
	majority := without(nodes, old)
	const key = "oldleader/k"
	pc.put(old, key, "old")
	for _, n := range nodes {
		waitUntil(t, 10*time.Second, n.Name+" reads "+key+"=old", func(ctx context.Context) error {
			v, _, err := partGet(ctx, pc.raw(n), key, false)
			if err == nil && v != "old" {
				err = fmt.Errorf("%s=%q", key, v)
			}
			return err
		})
	}

	harness.Isolate(old, nodes)
	isolated := time.Now()

	// Reads of key on the old leader, back to back, each bounded by 1s.
	stopReads := make(chan struct{})
	readsDone := make(chan struct{})
	var readsMu sync.Mutex
	var reads []partRead
	go func() {
		defer close(readsDone)
		for {
			select {
			case <-stopReads:
				return
			default:
			}
			r := partRead{start: time.Now()}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			r.val, r.found, r.err = partGet(ctx, pc.raw(old), key, false)
			cancel()
			r.end = time.Now()
			readsMu.Lock()
			reads = append(reads, r)
			readsMu.Unlock()
			if r.err != nil {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	// When the old leader stops calling itself leader.
	stepDownc := make(chan time.Time, 1)
	go func() {
		for time.Since(isolated) < 15*time.Second {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := pc.cli(old).Status(ctx, old.ClientURL)
			cancel()
			if err == nil && st.Leader != oldID {
				stepDownc <- time.Now()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		close(stepDownc)
	}()
	// A put on the old leader: it cannot reach a quorum.
	type putResult struct {
		resp *clientv3.PutResponse
		err  error
		took time.Duration
	}
	putc := make(chan putResult, 1)
	const putKey, putVal = "oldleader/put", "through the isolated old leader"
	go func() {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := pc.cli(old).Put(ctx, putKey, putVal)
		putc <- putResult{resp, err, time.Since(start)}
	}()

	newLeader := pc.leader(majority)
	elected := time.Now()
	over := pc.put(newLeader, key, "new")
	acked := time.Now()
	t.Logf("isolated the leader %s; %s elected %v later; %s=new acknowledged through it %v after isolation (revision %d)",
		old.Name, newLeader.Name, elected.Sub(isolated).Round(time.Millisecond), key, acked.Sub(isolated).Round(time.Millisecond), over.rev)

	// Keep reading on the old leader for a while after the overwrite.
	for deadline := time.Now().Add(8 * time.Second); ; {
		readsMu.Lock()
		after := 0
		for _, r := range reads {
			if r.start.After(acked) {
				after++
			}
		}
		readsMu.Unlock()
		if (after >= 5 && time.Since(acked) > 2*time.Second) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stopReads)
	<-readsDone

	var okBefore, failed, afterAck, okAfterAckStartedBefore int
	var lastOK, firstErr partRead
	errs := map[string]int{}
	for _, r := range reads {
		if r.err != nil {
			failed++
			errs[r.err.Error()]++
			if firstErr.start.IsZero() {
				firstErr = r
			}
		} else {
			lastOK = r
		}
		if r.start.After(acked) {
			afterAck++
			switch {
			case r.err != nil:
			case r.found && r.val == "old":
				t.Errorf("STALE READ: the isolated old leader %s answered a linearizable get of %s with the overwritten value %q; "+
					"the read started %v after the overwrite was acknowledged (%v after isolation) and took %v",
					old.Name, key, r.val, r.start.Sub(acked).Round(time.Millisecond), r.start.Sub(isolated).Round(time.Millisecond), r.end.Sub(r.start).Round(time.Millisecond))
			case r.found && r.val == "new":
				// Allowed, but the isolated member cannot know the new value.
				t.Logf("unexpected: the isolated old leader %s answered a linearizable get of %s with the new value: did the partition leak?", old.Name, key)
			default:
				t.Errorf("the isolated old leader %s answered a linearizable get of %s started after the overwrite: %q (found %v), want an error or \"new\"",
					old.Name, key, r.val, r.found)
			}
		} else if r.err == nil {
			okBefore++
			if r.end.After(acked) {
				okAfterAckStartedBefore++
			}
		}
	}
	t.Logf("old leader %s: %d linearizable reads after isolation: %d answered before the overwrite was acknowledged, %d failed; %d started after the acknowledgement",
		old.Name, len(reads), okBefore, failed, afterAck)
	if !lastOK.start.IsZero() {
		t.Logf("old leader %s kept answering reads (value %q) until %v after isolation (last successful read started at %v, took %v); %d answered reads ended after the overwrite's acknowledgement (started before it: allowed)",
			old.Name, lastOK.val, lastOK.end.Sub(isolated).Round(time.Millisecond), lastOK.start.Sub(isolated).Round(time.Millisecond),
			lastOK.end.Sub(lastOK.start).Round(time.Millisecond), okAfterAckStartedBefore)
	} else {
		t.Logf("old leader %s answered no read after isolation", old.Name)
	}
	if !firstErr.start.IsZero() {
		t.Logf("first failed read on %s: started %v after isolation, failed after %v: %v",
			old.Name, firstErr.start.Sub(isolated).Round(time.Millisecond), firstErr.end.Sub(firstErr.start).Round(time.Millisecond), firstErr.err)
	}
	t.Logf("errors of reads on %s: %v", old.Name, errs)
	if at, ok := <-stepDownc; ok {
		t.Logf("old leader %s stopped reporting itself leader %v after isolation", old.Name, at.Sub(isolated).Round(time.Millisecond))
	} else {
		t.Errorf("old leader %s still reported itself leader 15s after isolation", old.Name)
	}
	if afterAck == 0 {
		t.Errorf("no read on %s started after the overwrite was acknowledged: the test checked nothing", old.Name)
	}

	pr := <-putc
	if pr.err == nil {
		t.Errorf("put %s on the isolated old leader %s succeeded after %v (revision %d); want an error", putKey, old.Name, pr.took.Round(time.Millisecond), pr.resp.Header.Revision)
	} else {
		t.Logf("put on the isolated old leader %s: error after %v (outcome unknown): %v", old.Name, pr.took.Round(time.Millisecond), pr.err)
	}

	harness.HealAll(nodes)
	healed := time.Now()
	took := waitUntil(t, 20*time.Second, old.Name+" reads "+key+"=new linearizably after healing", func(ctx context.Context) error {
		v, found, err := partGet(ctx, pc.raw(old), key, false)
		switch {
		case err != nil:
			return err
		case v == "old":
			t.Errorf("STALE READ: %s answered a linearizable get of %s with the overwritten value %q %v after healing",
				old.Name, key, v, time.Since(healed).Round(time.Millisecond))
			return errors.New("stale")
		case v != "new":
			return fmt.Errorf("%s=%q (found %v)", key, v, found)
		}
		return nil
	})
	leader := pc.leader(nodes)
	t.Logf("after healing: %s reads the new value after %v; the leader is %s", old.Name, took.Round(time.Millisecond), leader.Name)
	if leader == old {
		t.Logf("note: %s leads again (possible only after it caught up)", old.Name)
	}
	acks := []partAck{over}
	if pr.err == nil {
		acks = append(acks, partAck{putKey, putVal, pr.resp.Header.Revision})
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, found, err := partGet(ctx, pc.raw(leader), putKey, false)
		cancel()
		t.Logf("the failed put on the old leader after healing: %s=%q found=%v (err %v)", putKey, v, found, err)
	}
	pc.requireAcks(nodes, "oldleader/", acks)
	requireSameHashKV(t, nodes)
}

// TestPartitionOneWay cuts the link from the leader to one follower only
// (the follower still reaches the leader): the other two keep serving
// writes and linearizable reads; the cut follower may fail reads but never
// answers one with data older than the latest acknowledged write; after
// healing all converge.
func TestPartitionOneWay(t *testing.T) {
	pc := startPartCluster(t)
	nodes := pc.nodes
	leader := pc.leader(nodes)
	followers := without(nodes, leader)
	cut, other := followers[0], followers[1]
	serving := []*harness.Node{leader, other}
	const prefix, key = "oneway/", "oneway/k"
	acks := []partAck{pc.put(leader, key, "v0")}
	waitUntil(t, 10*time.Second, cut.Name+" reads "+key+"=v0", func(ctx context.Context) error {
		v, _, err := partGet(ctx, pc.raw(cut), key, false)
		if err == nil && v != "v0" {
			err = fmt.Errorf("%s=%q", key, v)
		}
		return err
	})

	harness.PartitionOneWay(leader, cut)
	cutAt := time.Now()
	t.Logf("cut %s -> %s (leader -> follower) only; %s still reaches %s", leader.Name, cut.Name, cut.Name, leader.Name)

	outcomes := map[string]int{}
	var outcomeOrder []string
	var noteMu sync.Mutex
	note := func(s string) {
		noteMu.Lock()
		defer noteMu.Unlock()
		if outcomes[s] == 0 {
			outcomeOrder = append(outcomeOrder, s)
		}
		outcomes[s]++
	}
	// A put through the cut follower (it still reaches the leader):
	// either outcome is allowed; one acknowledged must persist. One right
	// after the cut, while it may still know the leader, one later.
	var viaMu sync.Mutex
	var viaCut []partAck
	var viaKeys []string
	putViaCut := func() {
		start := time.Now()
		viaMu.Lock()
		viaKey := fmt.Sprintf("%svia-cut/%02d", prefix, len(viaKeys))
		viaKeys = append(viaKeys, viaKey)
		viaMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		presp, err := pc.cli(cut).Put(ctx, viaKey, "through "+cut.Name)
		cancel()
		took := time.Since(start).Round(100 * time.Millisecond)
		viaMu.Lock()
		defer viaMu.Unlock()
		if err != nil {
			note(fmt.Sprintf("put %s (%v after the cut): error after %v: %v", viaKey, start.Sub(cutAt).Round(100*time.Millisecond), took, err))
		} else {
			note(fmt.Sprintf("put %s: acknowledged after %v", viaKey, took))
			viaCut = append(viaCut, partAck{viaKey, "through " + cut.Name, presp.Header.Revision})
		}
	}
	firstPut := make(chan struct{})
	go func() { defer close(firstPut); putViaCut() }()
	const rounds = 6
	for i := 1; i <= rounds; i++ {
		// Through both serving members: a put each, read back
		// linearizably from both.
		for _, w := range serving {
			val := fmt.Sprintf("v%d by %s", i, w.Name)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := pc.cli(w).Put(ctx, key, val)
			cancel()
			if err != nil {
				t.Fatalf("round %d: put through %s with only %s -> %s cut: %v", i, w.Name, leader.Name, cut.Name, err)
			}
			acks = append(acks[:0], partAck{key, val, resp.Header.Revision})
			for _, r := range serving {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				v, _, err := partGet(ctx, pc.raw(r), key, false)
				cancel()
				if err != nil || v != val {
					t.Errorf("round %d: linearizable get %s on %s: %q, %v; want %q", i, key, r.Name, v, err, val)
				}
			}
		}
		latest := acks[0]
		// Through the cut follower: an error or the latest value.
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := pc.raw(cut).Range(ctx, &pb.RangeRequest{Key: []byte(key)})
		cancel()
		took := time.Since(start).Round(100 * time.Millisecond)
		switch {
		case err != nil:
			note(fmt.Sprintf("error %v", err))
		case len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == latest.val:
			note("the latest value")
		default:
			t.Errorf("STALE READ: round %d (%v after the cut): linearizable get %s on the cut follower %s returned %v at revision %d after %v; the latest acknowledged write is %q at revision %d",
				i, start.Sub(cutAt).Round(time.Millisecond), key, cut.Name, resp.Kvs, resp.Header.Revision, took, latest.val, latest.rev)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
		v, _, err := partGet(ctx, pc.raw(cut), key, true)
		cancel()
		if err != nil {
			note(fmt.Sprintf("serializable get: error %v", err))
		} else {
			if v == latest.val {
				note("serializable get: the latest value")
			} else {
				note(fmt.Sprintf("serializable get: older value %q", v))
			}
		}
		if i == rounds/2 {
			putViaCut()
		}
		time.Sleep(200 * time.Millisecond)
	}
	<-firstPut
	var summary []string
	for _, o := range outcomeOrder {
		summary = append(summary, fmt.Sprintf("%d× %s", outcomes[o], o))
	}
	t.Logf("cut follower %s over %d rounds (%v): %s", cut.Name, rounds, time.Since(cutAt).Round(time.Millisecond), strings.Join(summary, "; "))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	for _, n := range nodes {
		if st, err := pc.cli(n).Status(ctx, n.ClientURL); err == nil {
			t.Logf("during the cut: %s says leader %x, term %d, applied %d", n.Name, st.Leader, st.RaftTerm, st.RaftAppliedIndex)
		} else {
			t.Logf("during the cut: %s status: %v", n.Name, err)
		}
	}
	cancel()

	harness.HealAll(nodes)
	healed := time.Now()
	latest := acks[0]
	took := waitUntil(t, 20*time.Second, cut.Name+" reads the latest value after healing", func(ctx context.Context) error {
		v, _, err := partGet(ctx, pc.raw(cut), key, false)
		switch {
		case err != nil:
			return err
		case v != latest.val:
			t.Errorf("STALE READ: %s answered a linearizable get of %s with %q %v after healing; the latest acknowledged is %q",
				cut.Name, key, v, time.Since(healed).Round(time.Millisecond), latest.val)
			return errors.New("stale")
		}
		return nil
	})
	t.Logf("%s read the latest value %v after healing", cut.Name, took.Round(time.Millisecond))
	pc.leader(nodes)
	pc.requireAcks(nodes, prefix, append(acks, viaCut...))
	for _, k := range viaKeys {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, found, err := partGet(ctx, pc.raw(leader), k, false)
		cancel()
		t.Logf("after healing: put through the cut follower %s: %s=%q found=%v (err %v)", cut.Name, k, v, found, err)
	}
	requireSameHashKV(t, nodes)
}
