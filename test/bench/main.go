// Command bench compares Ballast with etcd on this machine and prints a
// markdown table for docs/benchmarks.md.
//
// It starts a single-node etcd and a single-node Ballast on free 127.0.0.1
// ports with fresh data dirs, runs every workload of `ballast bench` against
// each in turn (etcd, ballast, etcd, ballast, ... for -rounds rounds) and
// takes medians. Then, per round and server, it starts from an empty data
// dir, loads -load-keys keys and records RSS, peak RSS and data dir size,
// stops the server with SIGTERM and times a restart until the first
// successful linearizable Get.
//
//	go run ./test/bench [-rounds 3] [-scale 1] [-only put-1,watch] [-out file.md]
//
// With -cluster 3 it compares a three-member etcd cluster with a
// three-member Ballast cluster instead (see cluster.go):
//
//	go run ./test/bench -cluster 3 [-rounds 3] [-scale 1] [-only put-1000,leader-kill] [-out file.md]
//
// Environment: ETCD_BIN (default <repo>/bin/etcd, see test/etcdref/build.sh),
// BALLAST_BIN (default: go build ./cmd/ballast), BENCH_BIN (the binary run
// as `BENCH_BIN bench ...`; default BALLAST_BIN), ETCD_ARGS and BALLAST_ARGS
// (extra server flags, split on spaces).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// result is the subset of `ballast bench -w json` this program reads.
type result struct {
	Workload  string             `json:"workload"`
	Ops       int64              `json:"ops"`
	OpsPerSec float64            `json:"ops_per_sec"`
	P50Ms     float64            `json:"p50_ms"`
	P99Ms     float64            `json:"p99_ms"`
	Errors    int64              `json:"errors"`
	Extra     map[string]float64 `json:"extra"`
}

// workload is one row group of the table: `bench` arguments and the rows
// to show from its result.
type workload struct {
	id    string
	title string
	args  func(scale float64) []string
	rows  []row
}

type row struct {
	metric string
	get    func(*result) float64
}

// n scales a total, keeping at least 1.
func n(base int, scale float64) string {
	return strconv.Itoa(max(1, int(math.Round(float64(base)*scale))))
}

func throughput(unit string) row {
	return row{unit, func(r *result) float64 { return r.OpsPerSec }}
}

func p50(what string) row { return row{what + " p50 (ms)", func(r *result) float64 { return r.P50Ms }} }
func p99(what string) row { return row{what + " p99 (ms)", func(r *result) float64 { return r.P99Ms }} }

// extraRow shows one of a result's workload-specific figures.
func extraRow(metric, key string) row {
	return row{metric, func(r *result) float64 { return r.Extra[key] }}
}

var workloads = []workload{
	{
		id: "put-1", title: "put, 1 client",
		args: func(s float64) []string {
			return []string{"put", "--clients=1", "--conns=1", "--total=" + n(2000, s), "--val-size=256", "--key-space-size=100000", "--prefix=/bench/put1/"}
		},
		rows: []row{throughput("puts/s"), p50("latency"), p99("latency")},
	},
	{
		id: "put-100", title: "put, 100 clients",
		args: func(s float64) []string {
			return []string{"put", "--clients=100", "--conns=10", "--total=" + n(20000, s), "--val-size=256", "--key-space-size=100000", "--prefix=/bench/put100/"}
		},
		rows: []row{throughput("puts/s"), p50("latency"), p99("latency")},
	},
	{
		id: "range-l", title: "range, linearizable, 100 clients",
		args: func(s float64) []string {
			return []string{"range", "/bench/range/key", "--consistency=l", "--preload=1", "--val-size=256", "--clients=100", "--conns=10", "--total=" + n(20000, s)}
		},
		rows: []row{throughput("reads/s"), p50("latency"), p99("latency")},
	},
	{
		id: "range-s", title: "range, serializable, 100 clients",
		args: func(s float64) []string {
			return []string{"range", "/bench/range/key", "--consistency=s", "--preload=1", "--val-size=256", "--clients=100", "--conns=10", "--total=" + n(20000, s)}
		},
		rows: []row{throughput("reads/s"), p50("latency"), p99("latency")},
	},
	{
		id: "list", title: "paged list, 10k keys of 1 KiB, limit 500, 4 clients",
		args: func(s float64) []string {
			return []string{"list", "--keys=10000", "--limit=500", "--val-size=1024", "--clients=4", "--total=" + n(40, s)}
		},
		rows: []row{
			throughput("lists/s"), p50("page"), p99("page"),
			extraRow("list p99 (ms)", "list_p99_ms"),
		},
	},
	{
		id: "watch", title: "watch fan-out, 1000 watchers on 10 streams",
		args: func(s float64) []string {
			return []string{"watch", "--watchers=1000", "--streams=10", "--puts=" + n(500, s)}
		},
		rows: []row{throughput("events/s"), p50("put-to-event"), p99("put-to-event")},
	},
}

type config struct {
	cluster  int           // members per cluster; 0: single-node mode
	killLoad time.Duration // -cluster: length of the put load of leader-kill
	rounds   int
	scale    float64
	loadKeys int
	// defragSize is how much the defrag workload loads (bytes).
	defragSize int64
	only       map[string]bool
	workdir    string
	keep       bool
	out        string
	etcdBin    string
	ballBin    string
	benchBin   string
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() (err error) {
	var cfg config
	var only string
	flag.IntVar(&cfg.rounds, "rounds", 3, "rounds per workload and for the resource measurements; medians are reported")
	flag.Float64Var(&cfg.scale, "scale", 1, "multiplies every workload's total (e.g. 0.05 for a smoke test)")
	flag.Int64Var(&cfg.defragSize, "defrag-size", 1<<30, "bytes of values the defrag workload (-only defrag) loads before defragmenting")
	flag.IntVar(&cfg.loadKeys, "load-keys", 100000, "keys loaded before measuring RSS, disk and restart time")
	flag.StringVar(&only, "only", "", "comma-separated subset of workloads ("+workloadIDs()+", resources, defrag (only when named);\nwith -cluster: "+strings.Join(clusterIDs(), ", ")+")")
	flag.IntVar(&cfg.cluster, "cluster", 0, "cluster mode: compare an etcd cluster of `N` members (at least 3) with a Ballast cluster of N,\nall on 127.0.0.1, instead of single nodes; 'ballast bench' gets every member's client endpoint,\nand the leader-kill workload kill -9s the leader under a put load (0: single-node mode)")
	flag.DurationVar(&cfg.killLoad, "kill-load", 10*time.Second, "with -cluster: length of the put load of leader-kill; the leader is killed after a third of it")
	flag.StringVar(&cfg.workdir, "workdir", "", "directory for data dirs and logs, kept afterwards (default: a temporary one, removed)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary work directory")
	flag.StringVar(&cfg.out, "out", "", "write the markdown here instead of stdout")
	flag.Parse()
	if cfg.rounds < 1 || cfg.scale <= 0 || cfg.loadKeys < 1 {
		return errors.New("-rounds, -scale and -load-keys must be positive")
	}
	if cfg.cluster != 0 && cfg.cluster < 3 {
		return errors.New("-cluster needs at least 3 members (a leader kill must leave a quorum)")
	}
	if cfg.killLoad < time.Second {
		return errors.New("-kill-load must be at least 1s")
	}
	if only != "" {
		cfg.only = map[string]bool{}
		for _, id := range strings.Split(only, ",") {
			cfg.only[strings.TrimSpace(id)] = true
		}
		if cfg.cluster > 0 {
			for id := range cfg.only {
				if !slices.Contains(clusterIDs(), id) {
					return fmt.Errorf("-only: no cluster workload %q (there are %s)", id, strings.Join(clusterIDs(), ", "))
				}
			}
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var root string
	root, err = repoRoot()
	if err != nil {
		return err
	}
	if cfg.workdir == "" {
		if cfg.workdir, err = os.MkdirTemp("", "ballast-bench-"); err != nil {
			return err
		}
		defer func() {
			if (err == nil || ctx.Err() != nil) && !cfg.keep {
				os.RemoveAll(cfg.workdir)
			} else {
				logf("kept work directory %s for its logs", cfg.workdir)
			}
		}()
	} else if err := os.MkdirAll(cfg.workdir, 0o755); err != nil {
		return err
	}
	logf("work directory %s", cfg.workdir)

	cfg.etcdBin = envOr("ETCD_BIN", filepath.Join(root, "bin", "etcd"))
	cfg.ballBin = os.Getenv("BALLAST_BIN")
	if cfg.ballBin == "" {
		cfg.ballBin = filepath.Join(cfg.workdir, "ballast")
		logf("building %s", cfg.ballBin)
		build := exec.CommandContext(ctx, "go", "build", "-o", cfg.ballBin, "./cmd/ballast")
		build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/ballast: %w", err)
		}
	}
	cfg.benchBin = envOr("BENCH_BIN", cfg.ballBin)
	for _, b := range []string{cfg.etcdBin, cfg.ballBin, cfg.benchBin} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("binary %s: %w", b, err)
		}
	}

	tab := &table{}
	if cfg.cluster > 0 {
		if err := runCluster(ctx, &cfg, tab); err != nil {
			return err
		}
	} else {
		if err := runWorkloads(ctx, &cfg, tab); err != nil {
			return err
		}
		if cfg.only == nil || cfg.only["resources"] {
			if err := runResources(ctx, &cfg, tab); err != nil {
				return err
			}
		}
		if cfg.only["defrag"] {
			if err := runDefrag(ctx, &cfg, tab); err != nil {
				return err
			}
		}
	}

	var out io.Writer = os.Stdout
	if cfg.out != "" {
		f, err := os.Create(cfg.out)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	writeMarkdown(out, &cfg, tab)
	return nil
}

// binaries maps server names to their binary and extra-arguments variable.
func (cfg *config) binary(name string) (bin, argsEnv string) {
	if name == "etcd" {
		return cfg.etcdBin, "ETCD_ARGS"
	}
	return cfg.ballBin, "BALLAST_ARGS"
}

// startServers starts the named servers, one after the other, each with a
// fresh data dir under dir and args after its own flags, and waits until
// each serves.
func startServers(ctx context.Context, cfg *config, dir string, args []string, names ...string) ([]*server, error) {
	var ss []*server
	for _, name := range names {
		bin, argsEnv := cfg.binary(name)
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return ss, err
		}
		s, err := newServer(name, bin, append(strings.Fields(os.Getenv(argsEnv)), args...), d)
		if err != nil {
			return ss, err
		}
		if err := s.start(); err != nil {
			return ss, err
		}
		ss = append(ss, s)
		if _, err := s.waitReady(ctx, time.Now(), 60*time.Second); err != nil {
			return ss, err
		}
		logf("%s serving on %s (pid %d, data %s)", s.name, s.client, s.cmd.Process.Pid, s.dataDir)
	}
	return ss, nil
}

func stopAll(ss []*server) {
	for _, s := range ss {
		if err := s.stop(); err != nil {
			logf("%v", err)
		}
	}
}

func runWorkloads(ctx context.Context, cfg *config, tab *table) error {
	var selected []workload
	for _, w := range workloads {
		if cfg.only == nil || cfg.only[w.id] {
			selected = append(selected, w)
		}
	}
	if len(selected) == 0 {
		return nil
	}
	ss, err := startServers(ctx, cfg, filepath.Join(cfg.workdir, "workloads"), nil, "etcd", "ballast")
	defer stopAll(ss)
	if err != nil {
		return err
	}
	var targets []target
	for _, s := range ss {
		targets = append(targets, target{name: s.name, members: []*server{s}})
	}
	return runSelected(ctx, cfg, tab, selected, targets)
}

// target is what a workload runs against: a single node, or every member
// of a cluster, whose client endpoints `ballast bench` then all gets.
type target struct {
	name    string // "etcd" or "ballast"
	members []*server
}

func (t target) endpoints() string {
	eps := make([]string, len(t.members))
	for i, s := range t.members {
		eps[i] = s.client
	}
	return strings.Join(eps, ",")
}

// runSelected runs each workload cfg.rounds times on each target in turn
// (etcd, ballast, etcd, ...) and adds the medians to tab. For a cluster it
// also logs the CPU time each member used during each run, which shows
// whether the load reached every member.
func runSelected(ctx context.Context, cfg *config, tab *table, selected []workload, targets []target) error {
	for _, w := range selected {
		runs := map[string][]*result{}
		for round := 1; round <= cfg.rounds; round++ {
			for _, t := range targets {
				cluster := len(t.members) > 1
				var cpu0 []float64
				if cluster {
					cpu0 = memberCPU(t.members)
				}
				r, err := runBenchAt(ctx, cfg, t.endpoints(), w.args(cfg.scale))
				if err != nil {
					return fmt.Errorf("%s on %s, round %d: %w", w.id, t.name, round, err)
				}
				spread := ""
				if cluster {
					spread = "  member CPU s " + cpuDelta(cpu0, memberCPU(t.members))
				}
				// The tails that vary most between rounds, so a median
				// can be read against its rounds.
				for _, k := range []string{"list_page_p99_ms", "watch_p99_ms"} {
					if v, ok := r.Extra[k]; ok {
						spread += fmt.Sprintf("  %s %.1f", k, v)
					}
				}
				logf("round %d %-7s %-8s %12.1f ops/s  p50 %8.3f ms  p99 %8.3f ms  errors %d%s",
					round, t.name, w.id, r.OpsPerSec, r.P50Ms, r.P99Ms, r.Errors, spread)
				runs[t.name] = append(runs[t.name], r)
			}
		}
		for _, rw := range w.rows {
			tab.add(w.title, rw.metric, median(runs["etcd"], rw.get), median(runs["ballast"], rw.get))
		}
		for _, name := range []string{"etcd", "ballast"} {
			var errs int64
			for _, r := range runs[name] {
				errs += r.Errors
			}
			if errs > 0 {
				tab.notes = append(tab.notes, fmt.Sprintf("%s: %s had %d errors over %d rounds.", w.title, name, errs, cfg.rounds))
			}
		}
	}
	return nil
}

// runBench runs `BENCH_BIN bench -w json` against s and decodes the result.
func runBench(ctx context.Context, cfg *config, s *server, args []string) (*result, error) {
	return runBenchAt(ctx, cfg, s.client, args)
}

// runBenchAt runs `BENCH_BIN bench -w json` with the given comma-separated
// endpoints and decodes the result.
func runBenchAt(ctx context.Context, cfg *config, endpoints string, args []string) (*result, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	full := append([]string{"bench", "-w", "json", "--endpoints", endpoints}, args...)
	cmd := exec.CommandContext(ctx, cfg.benchBin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var r result
	if jerr := json.Unmarshal(stdout.Bytes(), &r); jerr != nil || err != nil {
		return nil, fmt.Errorf("%s %s: %v\n%s%s", cfg.benchBin, strings.Join(full, " "), errors.Join(err, jerr), stderr.String(), stdout.String())
	}
	if r.Errors > 0 {
		// The tool names the first failure on stderr; keep it in the log.
		for line := range strings.Lines(stderr.String()) {
			if strings.Contains(line, "fail") || strings.Contains(line, "error") {
				logf("%s", strings.TrimSpace(line))
			}
		}
	}
	return &r, nil
}

// runResources measures, per round and server, memory and disk after
// loading cfg.loadKeys keys into an empty server, then the restart time.
func runResources(ctx context.Context, cfg *config, tab *table) error {
	samples := map[string][]sample{}
	loadArgs := []string{"put", "--sequential-keys", "--key-space-size=" + strconv.Itoa(cfg.loadKeys),
		"--total=" + strconv.Itoa(cfg.loadKeys), "--key-size=16", "--val-size=256", "--prefix=/bench/load/",
		"--clients=100", "--conns=10", "--max-duration=10m"}
	for round := 1; round <= cfg.rounds; round++ {
		for _, name := range []string{"etcd", "ballast"} {
			// One server at a time, so the other does not share the
			// machine during the load.
			ss, err := startServers(ctx, cfg, filepath.Join(cfg.workdir, fmt.Sprintf("resources-%d", round)), nil, name)
			if err != nil {
				stopAll(ss)
				return err
			}
			smp, err := measureResources(ctx, cfg, ss[0], loadArgs)
			stopAll(ss)
			if err != nil {
				return fmt.Errorf("resources on %s, round %d: %w", name, round, err)
			}
			logf("round %d %-7s load %.1fs  RSS %.0f MiB (peak %.0f, after restart %.0f)  disk %.1f MiB  restart %.3fs",
				round, name, smp.load, smp.rss, smp.hwm, smp.rssRestart, smp.disk, smp.restart)
			samples[name] = append(samples[name], smp)
		}
	}
	addMedians(tab, fmt.Sprintf("%d keys of 256 B, loaded by 100 clients", cfg.loadKeys), samples, []measure[sample]{
		{"load time (s)", func(s sample) float64 { return s.load }},
		{"RSS after load (MiB)", func(s sample) float64 { return s.rss }},
		{"peak RSS (MiB)", func(s sample) float64 { return s.hwm }},
		{"data dir size, du (MiB)", func(s sample) float64 { return s.disk }},
		{"restart to first linearizable Get (s)", func(s sample) float64 { return s.restart }},
		{"RSS after restart (MiB)", func(s sample) float64 { return s.rssRestart }},
	})
	return nil
}

// measure is one row taken from per-round samples.
type measure[S any] struct {
	metric string
	get    func(S) float64
}

// addMedians adds a row per measure: the median over the rounds of etcd's
// and Ballast's samples.
func addMedians[S any](tab *table, what string, samples map[string][]S, ms []measure[S]) {
	for _, m := range ms {
		med := func(name string) float64 {
			var v []float64
			for _, s := range samples[name] {
				v = append(v, m.get(s))
			}
			return medianOf(v)
		}
		tab.add(what, m.metric, med("etcd"), med("ballast"))
	}
}

// sample is one round of resource measurements: seconds and MiB.
type sample struct{ load, rss, hwm, rssRestart, disk, restart float64 }

func measureResources(ctx context.Context, cfg *config, s *server, loadArgs []string) (smp sample, err error) {
	t0 := time.Now()
	r, err := runBench(ctx, cfg, s, loadArgs)
	if err != nil {
		return smp, err
	}
	if r.Ops != int64(cfg.loadKeys) {
		return smp, fmt.Errorf("loaded %d of %d keys (%d errors)", r.Ops, cfg.loadKeys, r.Errors)
	}
	smp.load = time.Since(t0).Seconds()
	rss, hwm, err := s.memKB()
	if err != nil {
		return smp, err
	}
	smp.rss, smp.hwm = float64(rss)/1024, float64(hwm)/1024
	disk, err := s.diskBytes()
	if err != nil {
		return smp, err
	}
	smp.disk = float64(disk) / (1 << 20)

	if err := s.stop(); err != nil {
		return smp, err
	}
	t1 := time.Now()
	if err := s.start(); err != nil {
		return smp, err
	}
	d, err := s.waitReady(ctx, t1, 5*time.Minute)
	if err != nil {
		return smp, err
	}
	smp.restart = d.Seconds()
	if rss, _, err = s.memKB(); err != nil {
		return smp, err
	}
	smp.rssRestart = float64(rss) / 1024
	return smp, nil
}

// table collects rows: group, metric, etcd value, ballast value.
type table struct {
	rows  [][4]string
	vals  [][2]float64
	notes []string
}

func (t *table) add(group, metric string, etcd, ballast float64) {
	t.rows = append(t.rows, [4]string{group, metric})
	t.vals = append(t.vals, [2]float64{etcd, ballast})
}

func writeMarkdown(w io.Writer, cfg *config, t *table) {
	if cfg.cluster > 0 {
		writeClusterIntro(w, cfg)
	} else {
		fmt.Fprintf(w, "Single node, %s, %d CPUs, %s/%s. etcd: %s. Medians of %d rounds, run alternately (etcd, ballast, ...); workload totals scaled by %g.\n\n",
			cpuModel(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, etcdVersion(cfg.etcdBin), cfg.rounds, cfg.scale)
	}
	fmt.Fprintf(w, "Ratio is ballast ÷ etcd: above 1 is better for rates (/s), below 1 is better for latency, memory, disk and time.\n\n")
	fmt.Fprintf(w, "| Workload | Metric | etcd | Ballast | Ratio |\n|---|---|---:|---:|---:|\n")
	prev := ""
	for i, r := range t.rows {
		group := r[0]
		if group == prev {
			group = ""
		}
		prev = r[0]
		e, b := t.vals[i][0], t.vals[i][1]
		ratio := "–"
		if e > 0 {
			ratio = fmt.Sprintf("%.2f×", b/e)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", group, r[1], num(e), num(b), ratio)
	}
	if len(t.notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range t.notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

// num prints three significant digits, more for large numbers.
func num(f float64) string {
	switch a := math.Abs(f); {
	case a >= 1000:
		return strconv.FormatFloat(math.Round(f), 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(f, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(f, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(f, 'f', 2, 64)
	default:
		return strconv.FormatFloat(f, 'f', 3, 64)
	}
}

func median(rs []*result, get func(*result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = get(r)
	}
	return medianOf(v)
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func workloadIDs() string {
	ids := make([]string, len(workloads))
	for i, w := range workloads {
		ids[i] = w.id
	}
	return strings.Join(ids, ", ")
}

// repoRoot finds the module root from the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/ballast-kv/ballast\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the ballast repository")
		}
		dir = parent
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func etcdVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "unknown version"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(strings.TrimPrefix(first, "etcd Version:"))
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}
