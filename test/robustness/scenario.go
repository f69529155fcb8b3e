package robustness

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// scenario is one run: a cluster of Size members, traffic for Duration, and
// the fault injected again and again while it runs.
type scenario struct {
	Fault    string
	Size     int
	Seed     uint64
	Duration time.Duration
}

func (s scenario) String() string {
	return fmt.Sprintf("%s/%d-members/seed-%d", s.Fault, s.Size, s.Seed)
}

// Traffic shape: clients each send at most one request per pace, so the
// history stays a few thousand operations, small enough to check in seconds.
const (
	trafficClients = 6
	trafficPace    = 15 * time.Millisecond
)

// result is what one scenario measured and found.
type result struct {
	Scenario    string
	Fault       string
	Size        int
	Injected    int      // faults injected
	FaultErrors []string // injections that could not complete
	NotBack     []string // those of them where a restarted member never became ready
	Ops         int
	Unknown     map[string]int
	CheckTime   time.Duration
	Stale       int
	Revisions   int
	Violations  []string
	// WriteGaps: after each leader kill, the time to the first write a
	// client sent after the kill and saw acknowledged.
	WriteGaps []time.Duration
	// Converge: from the end of the faults (every link healed, every member
	// started) until every member's HashKV at the final revision agreed.
	Converge time.Duration
	// HealConverge: after each partition, drop or delay healed, the time
	// until every member's HashKV agreed at the revision of the heal.
	HealConverge []time.Duration
	// DiskFull and Corruption describe what each such fault did.
	DiskFull   []string
	Corruption []corruptionNote
	// Saved is where a failing history's visualisation was written.
	Saved string
}

type corruptionNote struct {
	File     string // relative to the data directory
	What     string
	Detected bool   // the member refused to start
	Warned   bool   // it started, and logged that it dropped the file's damaged tail
	Message  string // the last lines of its log when it refused, or its warning
	Panicked bool
}

// cluster is the system under test and what the faults need to act on it.
type cluster struct {
	t        testing.TB
	bin      string
	opts     harness.Options
	nodes    []*harness.Node
	rng      *rand.Rand
	h        *history
	admin    *clientv3.Client
	clients  []*clientv3.Client
	nextName int

	mu    sync.Mutex
	res   *result
	kills []int64
}

func (c *cluster) endpoints() []string {
	eps := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		eps[i] = n.ClientURL
	}
	return eps
}

func (c *cluster) newClient() *clientv3.Client {
	c.t.Helper()
	eps := c.endpoints()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   rotate(eps, c.rng.IntN(len(eps))),
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		c.t.Fatalf("client: %v", err)
	}
	c.clients = append(c.clients, cli)
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

func (c *cluster) noteKill() {
	c.mu.Lock()
	c.kills = append(c.kills, c.h.now())
	c.mu.Unlock()
}

func (c *cluster) diskFullOutcome(n *harness.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n.Running() {
		c.res.DiskFull = append(c.res.DiskFull, fmt.Sprintf("%s kept running", n.Name))
		return
	}
	c.res.DiskFull = append(c.res.DiskFull, fmt.Sprintf("%s stopped (%v): %s", n.Name, n.ExitError(), exitReason(n.Log())))
}

func (c *cluster) noteCorruption(n *harness.Node, file, what string, readyErr error) {
	note := corruptionNote{File: file, What: what, Detected: readyErr != nil}
	log := lastRun(n.Log())
	note.Panicked = strings.Contains(log, "panic:") || strings.Contains(log, "goroutine ")
	if note.Detected {
		note.Message = exitReason(log)
	} else if line := tornTailWarning(log, file); line != "" {
		note.Warned, note.Message = true, line
	}
	c.mu.Lock()
	c.res.Corruption = append(c.res.Corruption, note)
	c.mu.Unlock()
}

// tornTailWarning is the line in which a member that started says it
// dropped the damaged tail of file (a WAL or MANIFEST past what had been
// synced, as a crash leaves it), or "".
func tornTailWarning(log, file string) string {
	for line := range strings.Lines(log) {
		if strings.Contains(line, "taken as a torn write") && strings.Contains(line, file) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// exitReason picks from the log of a process that stopped why it did: a
// panic with the first frames of its stack, or else the last line.
func exitReason(log string) string {
	log = lastRun(log)
	if i := strings.Index(log, "panic: "); i >= 0 {
		lines := strings.SplitN(log[i:], "\n", 8)
		return strings.Join(lines[:min(len(lines), 7)], "\n")
	}
	return lastLines(log, 1)
}

// lastRun is the part of a node's log written by its last run.
func lastRun(log string) string {
	if i := strings.LastIndex(log, "=== harness: run"); i >= 0 {
		return log[i:]
	}
	return log
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// tmpfsDataDir mounts a tmpfs of its own for each member's data directory,
// so that filling it affects that member alone. The data directory is a
// symbolic link into it; the filler file goes next to it.
func tmpfsDataDir(t testing.TB, size string) func(string) error {
	return func(dir string) error {
		mnt := dir + ".fs"
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			return err
		}
		if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size="+size); err != nil {
			return fmt.Errorf("mount a tmpfs for the disk-full fault (needs root): %w", err)
		}
		t.Cleanup(func() {
			if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", mnt, err)
			}
		})
		if err := os.Mkdir(filepath.Join(mnt, "data"), 0o755); err != nil {
			return err
		}
		return os.Symlink(filepath.Join(mnt, "data"), dir)
	}
}

// fillerPath is where the disk-full fault writes: on the member's tmpfs,
// outside its data directory.
func fillerPath(dataDir string) string { return filepath.Join(dataDir+".fs", "filler") }

// run runs one scenario and checks its history.
func run(t *testing.T, sc scenario, checkTimeout time.Duration) *result {
	res := &result{Scenario: sc.String(), Fault: sc.Fault, Size: sc.Size}
	f, ok := faultByName(sc.Fault)
	if !ok {
		t.Fatalf("unknown fault %q", sc.Fault)
	}
	if sc.Size < f.minSize {
		t.Fatalf("fault %s needs %d members", f.name, f.minSize)
	}
	c := &cluster{t: t, bin: harness.BallastBin(t), rng: rand.New(rand.NewPCG(sc.Seed, 0x5eed)), res: res,
		opts: harness.Options{Proxied: true, ReadyTimeout: 30 * time.Second}}
	if f.name == "disk-full" {
		c.opts.PrepareDataDir = tmpfsDataDir(t, "256m")
	}
	c.nodes = harness.StartCluster(t, c.bin, sc.Size, c.opts)
	c.nextName = sc.Size
	c.h = newHistory()
	c.admin = c.newClient()

	// Watchers from the past (revision 1: all of history), the present and
	// the future.
	ctx := context.Background()
	resp, err := c.admin.Get(ctx, "/rb-start")
	if err != nil {
		t.Fatal(err)
	}
	now := resp.Header.Revision
	var watchers []*watcher
	for i, start := range []int64{1, now, now + 20} {
		watchers = append(watchers, &watcher{name: fmt.Sprint("w", i), cli: c.newClient(), h: c.h, start: start})
	}
	comp := &compactor{cli: c.newClient(), h: c.h, period: 300 * time.Millisecond, lag: 2 * time.Second}
	var tc []*trafficClient
	for i := range trafficClients {
		tc = append(tc, &trafficClient{id: i, cli: c.newClient(), h: c.h, rng: rand.New(rand.NewPCG(sc.Seed, uint64(i)))})
	}
	final := &trafficClient{id: trafficClients, cli: c.newClient(), h: c.h, rng: rand.New(rand.NewPCG(sc.Seed, 99))}

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var bg sync.WaitGroup
	for _, w := range watchers {
		bg.Go(func() { w.run(watchCtx) })
	}
	bg.Go(func() { comp.run(watchCtx) })
	trafficCtx, stopTraffic := context.WithTimeout(ctx, sc.Duration)
	var traffic sync.WaitGroup
	for _, cl := range tc {
		traffic.Go(func() { cl.run(trafficCtx, trafficPace) })
	}

	// Faults, one after another, from the first second until a second
	// before the traffic ends.
	time.Sleep(time.Second)
	for time.Until(deadlineOf(trafficCtx)) > time.Second {
		res.Injected++
		if err := f.inject(c); err != nil {
			res.FaultErrors = append(res.FaultErrors, err.Error())
			if errors.Is(err, errNotBack) {
				res.NotBack = append(res.NotBack, err.Error())
			}
		}
		c.sleep(300*time.Millisecond, time.Second)
	}
	traffic.Wait()
	stopTraffic()

	// Undo whatever a failed injection left behind, then end with a write
	// and a read of everything, which the model checks too.
	harness.HealAll(c.nodes)
	for _, n := range c.nodes {
		_ = n.Signal(syscall.SIGCONT)
	}
	if err := c.restart(c.nodes...); err != nil {
		res.Violations = append(res.Violations, "after the faults: "+err.Error())
		return res
	}
	healed := time.Now()
	finalRev := finalWrite(final)
	if finalRev == 0 {
		res.Violations = append(res.Violations, "no final write succeeded within 30s of the faults ending")
		return res
	}
	final.do(input{Kind: opList})
	if err := c.converge(finalRev); err != nil {
		res.Violations = append(res.Violations, err.Error())
	} else {
		res.Converge = time.Since(healed)
	}
	waitWatchers(res, watchers, finalRev)
	stopWatch()
	bg.Wait()

	v := check(c.h, watchers, comp, finalRev, checkTimeout)
	res.Ops, res.Unknown, res.Stale, res.Revisions, res.CheckTime = v.Ops, v.Unknown, len(c.h.stale), v.Events, v.CheckTime
	res.Violations = append(res.Violations, v.Violations...)
	res.WriteGaps = writeGaps(c.h, c.kills)
	if len(res.Violations) > 0 {
		res.Saved = saveVisualisation(t, sc, v)
	}
	return res
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// finalWrite writes until a write is acknowledged, and returns its revision
// (0 if none was within 30s). Every attempt is part of the history.
func finalWrite(c *trafficClient) int64 {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c.do(input{Kind: opPut, Key: 0, Value: c.value()})
		c.h.mu.Lock()
		last := c.h.ops[len(c.h.ops)-1]
		c.h.mu.Unlock()
		if !last.Out.Unknown {
			return last.Out.Rev
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0
}

// converge waits until every member answers HashKV at rev with one hash.
func (c *cluster) converge(rev int64) error {
	start := time.Now()
	var last string
	for time.Since(start) < time.Minute {
		hashes := map[uint32][]string{}
		ok := true
		for _, n := range c.nodes {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := c.admin.HashKV(ctx, strings.TrimPrefix(n.ClientURL, "http://"), rev)
			cancel()
			if err != nil {
				ok, last = false, fmt.Sprintf("%s: %v", n.Name, err)
				break
			}
			hashes[resp.Hash] = append(hashes[resp.Hash], n.Name)
		}
		if ok && len(hashes) == 1 {
			return nil
		}
		if ok {
			last = fmt.Sprint(hashes)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("members' HashKV at revision %d did not agree within a minute: %s", rev, last)
}

func waitWatchers(res *result, watchers []*watcher, rev int64) {
	deadline := time.Now().Add(30 * time.Second)
	for _, w := range watchers {
		for w.lastRev() < rev && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := w.lastRev(); got < rev {
			res.Violations = append(res.Violations, fmt.Sprintf("watcher %s reached revision %d, not the final %d, within 30s", w.name, got, rev))
		}
	}
}

// writeGaps measures, for each leader kill, the time until the first write
// sent after it was acknowledged.
func writeGaps(h *history, kills []int64) []time.Duration {
	var gaps []time.Duration
	for _, k := range kills {
		first := int64(-1)
		for _, r := range h.ops {
			if r.In.Kind.isWrite() && !r.Out.Unknown && !r.Out.LeaseNotFound && r.Call >= k && (first < 0 || r.Return < first) {
				first = r.Return
			}
		}
		if first >= 0 {
			gaps = append(gaps, time.Duration(first-k))
		}
	}
	return gaps
}
