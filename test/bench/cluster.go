package main

// Cluster mode (-cluster N): an N-member etcd cluster against an N-member
// Ballast cluster, every member a process on 127.0.0.1.
//
//   - The workloads run on one etcd and one Ballast cluster, both started
//     once with fresh data dirs (as the two single nodes are in single-node
//     mode), alternately etcd then Ballast per round. `ballast bench` gets
//     the client endpoints of every member; each of its connections is an
//     etcd client over all of them, which balances requests round robin
//     (per RPC; watch streams likewise per stream), so every member serves
//     about a third of the requests and forwards the writes it receives to
//     the leader. The CPU time each member used during each run is logged
//     to show it.
//   - rss: after the last round of the workloads, VmRSS of every member,
//     reported as the largest and as the sum.
//   - leader-kill: per round and server, a fresh cluster, alone on the
//     machine. killClients goroutines put 256-byte values through
//     killConns etcd clients over every endpoint for -kill-load; after a
//     third of it the leader (the member whose Maintenance.Status says
//     Leader == its own Header.MemberId) gets SIGKILL. Reported: the
//     longest interval between two consecutive successful puts, and the
//     time from the kill to the first successful put issued after it.

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Cluster mode runs the single-node workloads named in sharedWorkloads
// (same arguments, same IDs) and clusterWorkloads, in clusterOrder.
var (
	sharedWorkloads  = []string{"put-1", "put-100", "range-l", "range-s", "list", "watch"}
	clusterWorkloads = []workload{
		{
			id: "put-1000", title: "put, 1000 clients",
			args: func(s float64) []string {
				return []string{"put", "--clients=1000", "--conns=100", "--total=" + n(40000, s), "--val-size=256", "--key-space-size=100000", "--prefix=/bench/put1000/"}
			},
			rows: []row{throughput("puts/s"), p50("latency"), p99("latency")},
		},
		{
			id: "range-l-1", title: "range, linearizable, 1 client",
			args: func(s float64) []string {
				return []string{"range", "/bench/range/key", "--consistency=l", "--preload=1", "--val-size=256", "--clients=1", "--conns=1", "--total=" + n(5000, s)}
			},
			rows: []row{throughput("reads/s"), p50("latency"), p99("latency")},
		},
		{
			id: "range-s-1", title: "range, serializable, 1 client",
			args: func(s float64) []string {
				return []string{"range", "/bench/range/key", "--consistency=s", "--preload=1", "--val-size=256", "--clients=1", "--conns=1", "--total=" + n(5000, s)}
			},
			rows: []row{throughput("reads/s"), p50("latency"), p99("latency")},
		},
		{
			id: "k8s", title: "Kubernetes traffic, 100 clients (1-10 KiB objects; lists, watches, leased events, compaction every 2s)",
			args: func(s float64) []string {
				return []string{"k8s", "--clients=100", "--conns=10", "--total=" + n(20000, s), "--compact-interval=2s"}
			},
			rows: k8sRows,
		},
		{
			// The closed loop above gives each server as much load as it
			// takes, so the faster one also delivers more watch events
			// and lists more; latencies compare fairly only at the same
			// load, below both servers' capacity.
			id: "k8s-paced", title: fmt.Sprintf("Kubernetes traffic paced at %d requests/s and %d whole lists/s for both (latencies at equal load)", k8sPacedRate, k8sPacedLists),
			args: func(s float64) []string {
				return []string{"k8s", "--clients=100", "--conns=10", "--rate=" + strconv.Itoa(k8sPacedRate), "--total=" + n(15*k8sPacedRate, s),
					"--listers=4", "--list-rate=" + strconv.Itoa(k8sPacedLists), "--compact-interval=2s"}
			},
			rows: k8sRows,
		},
	}
	// clusterOrder is the order of the table.
	clusterOrder = []string{"put-1", "put-100", "put-1000", "range-l-1", "range-l", "range-s-1", "range-s", "list", "watch", "k8s", "k8s-paced"}

	k8sRows = []row{
		throughput("requests/s"), p99("request"),
		extraRow("updates/s", "update_per_sec"), extraRow("update p99 (ms)", "update_p99_ms"),
		extraRow("create p99 (ms)", "create_p99_ms"), extraRow("delete p99 (ms)", "delete_p99_ms"),
		extraRow("get p99 (ms)", "get_p99_ms"), extraRow("event p99 (ms)", "event_p99_ms"),
		extraRow("list page p99 (ms)", "list_page_p99_ms"), extraRow("whole list p99 (ms)", "list_p99_ms"),
		extraRow("watch delivery p50 (ms)", "watch_p50_ms"), extraRow("watch delivery p99 (ms)", "watch_p99_ms"),
	}
)

// k8sPacedRate is about two thirds of what etcd's three members serve of
// the Kubernetes profile on the reference machine (1,770-2,300 requests/s),
// and k8sPacedLists about half the lists its two back-to-back listers
// complete beside that (11 a second).
const (
	k8sPacedRate  = 1200
	k8sPacedLists = 6
)

const (
	killClients = 50              // concurrent putters of leader-kill
	killConns   = 10              // etcd clients they share, each over every endpoint
	putTimeout  = 5 * time.Second // per put of leader-kill, as a client would set one
	retryPause  = 10 * time.Millisecond
	// recoverWait is how long leader-kill keeps the load up past -kill-load
	// for a first successful put after the kill.
	recoverWait = 60 * time.Second
)

// clusterIDs are the IDs -only accepts in cluster mode, in table order.
func clusterIDs() []string { return append(slices.Clone(clusterOrder), "rss", "leader-kill") }

func clusterWorkload(id string) workload {
	ws := clusterWorkloads
	if slices.Contains(sharedWorkloads, id) {
		ws = workloads
	}
	for _, w := range ws {
		if w.id == id {
			return w
		}
	}
	panic("no cluster workload " + id)
}

func (cfg *config) selected(id string) bool { return cfg.only == nil || cfg.only[id] }

// startCluster starts cfg.cluster members of bin (by kind, "etcd" or
// "ballast") at once, each with a fresh data dir under dir, and waits until
// each serves a linearizable read.
func startCluster(ctx context.Context, cfg *config, dir, kind, token string) ([]*server, error) {
	bin, argsEnv := cfg.binary(kind)
	ms := make([]*server, cfg.cluster)
	var initial []string
	for i := range ms {
		name := fmt.Sprintf("%s%d", kind, i+1)
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		s, err := newServer(name, bin, strings.Fields(os.Getenv(argsEnv)), d)
		if err != nil {
			return nil, err
		}
		s.member, s.clusterToken = name, token
		initial = append(initial, name+"="+s.peerURL())
		ms[i] = s
	}
	var started []*server
	for _, s := range ms {
		s.initialCluster = strings.Join(initial, ",")
		if err := s.start(); err != nil {
			return started, err
		}
		started = append(started, s)
	}
	for _, s := range ms {
		if _, err := s.waitReady(ctx, time.Now(), 60*time.Second); err != nil {
			return started, err
		}
		logf("%s serving on %s (pid %d, data %s)", s.name, s.client, s.cmd.Process.Pid, s.dataDir)
	}
	return ms, nil
}

func runCluster(ctx context.Context, cfg *config, tab *table) error {
	kinds := []string{"etcd", "ballast"}
	if err := runClusterWorkloads(ctx, cfg, tab, kinds); err != nil {
		return err
	}
	if cfg.selected("leader-kill") {
		return runLeaderKill(ctx, cfg, tab, kinds)
	}
	return nil
}

// runClusterWorkloads runs the selected workloads, then reads RSS, on one
// cluster of each kind, and stops them.
func runClusterWorkloads(ctx context.Context, cfg *config, tab *table, kinds []string) error {
	var selected []workload
	for _, id := range clusterOrder {
		if cfg.selected(id) {
			selected = append(selected, clusterWorkload(id))
		}
	}
	if len(selected) > 0 || cfg.selected("rss") {
		var targets []target
		for _, kind := range kinds {
			ms, err := startCluster(ctx, cfg, filepath.Join(cfg.workdir, "workloads", kind), kind, "bench-"+kind)
			defer stopAll(ms)
			if err != nil {
				return err
			}
			targets = append(targets, target{name: kind, members: ms})
		}
		var spread []string
		for _, t := range targets {
			got, err := checkSpread(ctx, t)
			if err != nil {
				return err
			}
			logf("%-7s %s", t.name, got)
			spread = append(spread, got)
		}
		tab.notes = append(tab.notes, "Serializable Gets through one etcd client over every endpoint, as each connection of `ballast bench` is, were answered by "+
			strings.Join(spread, "; ")+" (by Header.MemberId).")
		var cpu0 [][]float64
		for _, t := range targets {
			cpu0 = append(cpu0, memberCPU(t.members))
		}
		if err := runSelected(ctx, cfg, tab, selected, targets); err != nil {
			return err
		}
		if len(selected) > 0 {
			var parts []string
			for i, t := range targets {
				parts = append(parts, t.name+" "+cpuDelta(cpu0[i], memberCPU(t.members)))
			}
			tab.notes = append(tab.notes, "CPU seconds used by each member during all workload runs (per run in the log): "+
				strings.Join(parts, "; ")+".")
		}
		if cfg.selected("rss") {
			var mx, sum [2]float64
			for i, t := range targets {
				for _, s := range t.members {
					rss, _, err := s.memKB()
					if err != nil {
						return fmt.Errorf("RSS of %s: %w", s.name, err)
					}
					mib := float64(rss) / 1024
					mx[i], sum[i] = max(mx[i], mib), sum[i]+mib
				}
				logf("%-7s RSS after the workloads: max %.1f MiB, sum %.1f MiB", t.name, mx[i], sum[i])
			}
			what := fmt.Sprintf("RSS of the %d members after the workloads", cfg.cluster)
			if len(selected) == 0 {
				what = fmt.Sprintf("RSS of the %d members, idle", cfg.cluster)
			}
			tab.add(what, "largest (MiB)", mx[0], mx[1])
			tab.add(what, "sum (MiB)", sum[0], sum[1])
		}
	}
	return nil
}

// killSample is one leader-kill run; times in milliseconds.
type killSample struct {
	gap, first float64 // longest gap; kill to first success issued after it
	gapAt      float64 // start of the longest gap, relative to the kill
	recovered  bool    // a put issued after the kill succeeded
	puts, errs int64
	leader     string
}

func runLeaderKill(ctx context.Context, cfg *config, tab *table, kinds []string) error {
	samples := map[string][]killSample{}
	for round := 1; round <= cfg.rounds; round++ {
		for _, kind := range kinds {
			dir := filepath.Join(cfg.workdir, fmt.Sprintf("leader-kill-%d", round), kind)
			ms, err := startCluster(ctx, cfg, dir, kind, fmt.Sprintf("bench-kill-%d-%s", round, kind))
			if err != nil {
				stopAll(ms)
				return err
			}
			smp, err := measureLeaderKill(ctx, cfg, ms)
			stopAll(ms)
			if err != nil {
				return fmt.Errorf("leader-kill on %s, round %d: %w", kind, round, err)
			}
			logf("round %d %-7s leader-kill (%s)  longest gap %.0f ms (from %+.0f ms of the kill)  first put after kill %.0f ms  puts %d  failed %d",
				round, kind, smp.leader, smp.gap, smp.gapAt, smp.first, smp.puts, smp.errs)
			samples[kind] = append(samples[kind], smp)
			if !smp.recovered {
				tab.notes = append(tab.notes, fmt.Sprintf("leader-kill, round %d: no put issued after the kill succeeded on %s within %v; the figures are lower bounds.",
					round, kind, cfg.killLoad*2/3+recoverWait))
			}
		}
	}
	addMedians(tab, fmt.Sprintf("kill -9 of the leader under %d clients of puts", killClients), samples, []measure[killSample]{
		{"longest gap between successful puts (ms)", func(s killSample) float64 { return s.gap }},
		{"kill to first successful put issued after it (ms)", func(s killSample) float64 { return s.first }},
	})
	for _, kind := range kinds {
		var errs, puts int64
		for _, s := range samples[kind] {
			errs, puts = errs+s.errs, puts+s.puts
		}
		tab.notes = append(tab.notes, fmt.Sprintf("leader-kill: %s had %d failed puts (retried after %v) and %d successful ones over %d rounds.",
			kind, errs, retryPause, puts, cfg.rounds))
	}
	return nil
}

// measureLeaderKill runs the put load on ms, kills the leader after a
// third of cfg.killLoad and measures the write gap.
func measureLeaderKill(ctx context.Context, cfg *config, ms []*server) (smp killSample, err error) {
	eps := make([]string, len(ms))
	for i, s := range ms {
		eps[i] = s.client
	}
	conns := make([]*clientv3.Client, killConns)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range conns {
		// Each client gets every endpoint, rotated so that their first
		// choices differ too; requests go round robin over all of them.
		rot := append(slices.Clone(eps[i%len(eps):]), eps[:i%len(eps)]...)
		c, err := clientv3.New(clientv3.Config{Endpoints: rot, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return smp, err
		}
		conns[i] = c
	}
	val := make([]byte, 256)
	rand.Read(val)

	type success struct {
		done      time.Duration // since start
		afterKill bool          // issued after the kill
	}
	var (
		start      = time.Now()
		killAt     atomic.Int64 // since start; 0 until the kill
		firstAfter atomic.Int64 // done of the first success issued after the kill; 0: none yet
		puts, errs atomic.Int64
		wg         sync.WaitGroup
		succ       = make([][]success, killClients)
	)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	for i := range killClients {
		c := conns[i%len(conns)]
		wg.Go(func() {
			for n := 0; loadCtx.Err() == nil; n++ {
				issued := time.Since(start)
				k := killAt.Load()
				after := k != 0 && int64(issued) >= k
				pctx, cancel := context.WithTimeout(loadCtx, putTimeout)
				_, err := c.Put(pctx, fmt.Sprintf("/bench/kill/%02d/%08d", i, n%2000), string(val))
				cancel()
				done := time.Since(start)
				switch {
				case err == nil:
					puts.Add(1)
					succ[i] = append(succ[i], success{done, after})
					if after {
						for {
							f := firstAfter.Load()
							if (f != 0 && f <= int64(done)) || firstAfter.CompareAndSwap(f, int64(done)) {
								break
							}
						}
					}
				case loadCtx.Err() != nil:
					return
				default:
					errs.Add(1)
					select {
					case <-loadCtx.Done():
					case <-time.After(retryPause):
					}
				}
			}
		})
	}
	stopAndWait := func() {
		stopLoad()
		wg.Wait()
	}

	select {
	case <-ctx.Done():
		stopAndWait()
		return smp, ctx.Err()
	case <-time.After(cfg.killLoad / 3):
	}
	leader, err := findLeader(ctx, ms)
	if err != nil {
		stopAndWait()
		return smp, err
	}
	smp.leader = leader.name
	if puts.Load() == 0 {
		stopAndWait()
		return smp, fmt.Errorf("no successful put before the kill (%d failed)", errs.Load())
	}
	killAt.Store(int64(time.Since(start)))
	if err := leader.kill(); err != nil {
		stopAndWait()
		return smp, fmt.Errorf("kill %s: %w", leader.name, err)
	}
	end, limit := start.Add(cfg.killLoad), start.Add(cfg.killLoad+recoverWait)
	for time.Now().Before(limit) && (time.Now().Before(end) || firstAfter.Load() == 0) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	stopAndWait()
	if ctx.Err() != nil {
		return smp, ctx.Err()
	}
	stopped := time.Since(start)

	var all []time.Duration
	for _, s := range succ {
		for _, x := range s {
			all = append(all, x.done)
		}
	}
	slices.Sort(all)
	k := time.Duration(killAt.Load())
	for i := 1; i < len(all); i++ {
		if g := all[i] - all[i-1]; msf(g) > smp.gap {
			smp.gap, smp.gapAt = msf(g), msf(all[i-1]-k)
		}
	}
	if f := firstAfter.Load(); f != 0 {
		smp.recovered, smp.first = true, msf(time.Duration(f)-k)
	} else {
		// Lower bounds: nothing succeeded up to the end of the load.
		smp.first = msf(stopped - k)
		if last := all[len(all)-1]; msf(stopped-last) > smp.gap {
			smp.gap, smp.gapAt = msf(stopped-last), msf(last-k)
		}
	}
	smp.puts, smp.errs = puts.Load(), errs.Load()
	return smp, nil
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// findLeader asks each running member for its status and returns the one
// that names itself leader (Status.Leader == Header.MemberId), retrying for
// up to 10 s.
func findLeader(ctx context.Context, ms []*server) (*server, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var last error
	for {
		for _, s := range ms {
			if s.cmd == nil {
				continue
			}
			st, err := status(ctx, s)
			if err != nil {
				last = err
				continue
			}
			if st.Leader != 0 && st.Leader == st.Header.MemberId {
				return s, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no member says it is the leader (last error: %v)", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// checkSpread sends serializable Gets through one etcd client over every
// member's endpoint, as each connection of `ballast bench` is made, and
// counts which member answered each (Header.MemberId). It fails if a member
// answered none: the load would then not reach every member.
func checkSpread(ctx context.Context, t target) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ids := make([]uint64, len(t.members))
	for i, s := range t.members {
		st, err := status(ctx, s)
		if err != nil {
			return "", err
		}
		ids[i] = st.Header.MemberId
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(t.endpoints(), ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return "", err
	}
	defer c.Close()
	counts := map[uint64]int{}
	for range 20 * len(t.members) {
		resp, err := c.Get(ctx, "bench-spread-probe", clientv3.WithSerializable())
		if err != nil {
			return "", fmt.Errorf("%s: spread probe: %w", t.name, err)
		}
		counts[resp.Header.MemberId]++
	}
	var parts []string
	for i, s := range t.members {
		parts = append(parts, fmt.Sprintf("%s %d", s.name, counts[ids[i]]))
		if counts[ids[i]] == 0 {
			return "", fmt.Errorf("%s answered none of %d Gets through a client over every endpoint: %v", s.name, 20*len(t.members), counts)
		}
	}
	return strings.Join(parts, ", "), nil
}

// status asks s alone for its Maintenance.Status.
func status(ctx context.Context, s *server) (*clientv3.StatusResponse, error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.client}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := c.Status(ctx, s.client)
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", s.name, err)
	}
	return st, nil
}

// memberCPU returns the CPU seconds each member has used so far (NaN for
// one that is not running).
func memberCPU(ms []*server) []float64 {
	v := make([]float64, len(ms))
	for i, s := range ms {
		c, err := s.cpuSeconds()
		if err != nil {
			c = math.NaN()
		}
		v[i] = c
	}
	return v
}

// cpuDelta renders the CPU seconds each member used between two readings.
func cpuDelta(before, after []float64) string {
	parts := make([]string, len(after))
	for i := range after {
		parts[i] = strconv.FormatFloat(after[i]-before[i], 'f', 2, 64)
	}
	return strings.Join(parts, "/")
}

var memberWords = map[int]string{3: "Three", 4: "Four", 5: "Five", 6: "Six", 7: "Seven"}

func writeClusterIntro(w io.Writer, cfg *config) {
	size := memberWords[cfg.cluster]
	if size == "" {
		size = strconv.Itoa(cfg.cluster)
	}
	fmt.Fprintf(w, "%s-member cluster, Ballast vs etcd, every member a process on this machine: %s, %d CPUs, %s/%s. etcd: %s. "+
		"Medians of %d rounds, run alternately (etcd, ballast, ...); workload totals scaled by %g.\n\n",
		size, cpuModel(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, etcdVersion(cfg.etcdBin), cfg.rounds, cfg.scale)
	fmt.Fprintf(w, "`ballast bench` gets every member's client endpoint; each of its connections is an etcd client over all of them, "+
		"which sends requests round robin, so every member serves its share and followers forward writes to the leader. "+
		"Both clusters run during the workloads, as the two nodes do in single-node mode; RSS is read once, after the last round.")
	if cfg.selected("leader-kill") {
		fmt.Fprintf(w, " Leader kill: a fresh cluster per round, alone on the machine, %d clients putting 256 B values through %d such connections for %v, "+
			"SIGKILL to the leader (the member whose Status names itself leader) after a third of it; the gap is the longest time between two consecutive "+
			"successful puts (a failed put is retried after %v; each put has a %v timeout).",
			killClients, killConns, cfg.killLoad, retryPause, putTimeout)
	}
	fmt.Fprint(w, "\n\n")
}
