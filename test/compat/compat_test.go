// Package compat runs the same operations against the reference etcd and a
// server under test (Ballast by default) and compares the responses: values,
// revisions, versions, counts, txn results, watch events, gRPC codes and
// messages. See test/README.md for how to run it.
package compat

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// stepTimeout bounds one step on one server.
const stepTimeout = 30 * time.Second

// target is one server with the state needed to resolve a script's symbolic
// revisions and leases on it. A target is used by one goroutine at a time.
type target struct {
	name    string
	nodes   []*harness.Node // one, or the members of a cluster
	cli     *clientv3.Client
	members []*clientv3.Client // one per member of a cluster, for settle

	base       int64           // revision at the start of the current case
	caseLeases []int64         // leases granted in the current case, in order
	leaseOrd   map[int64]int64 // every lease granted in the run -> its ordinal
	rev        int64           // highest header revision seen
}

func (tg *target) addLease(id int64) {
	tg.caseLeases = append(tg.caseLeases, id)
	if _, ok := tg.leaseOrd[id]; !ok {
		tg.leaseOrd[id] = int64(len(tg.leaseOrd) + 1)
	}
}

// leaseName is the normalised form of a lease ID: -n for the n-th lease
// granted in the run, the ID itself for a lease never granted.
func (tg *target) leaseName(id int64) int64 {
	if n, ok := tg.leaseOrd[id]; ok {
		return -n
	}
	return id
}

func (tg *target) observeRev(rev int64) { tg.rev = max(tg.rev, rev) }

// settle waits, on a cluster, until every member has applied the highest
// revision seen. The next step may go to any member: serializable reads,
// read-only txns and watch progress are served from the member's own state
// (in etcd too), so without this they could differ from a single etcd by
// the replication delay rather than by behaviour.
func (tg *target) settle(ctx context.Context) {
	if len(tg.nodes) < 2 {
		return
	}
	for _, cli := range tg.members {
		for {
			resp, err := cli.Get(ctx, "compat-sync", clientv3.WithSerializable())
			if err == nil && resp.Header.Revision >= tg.rev || ctx.Err() != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// pair is the reference etcd and the server under test.
type pair struct {
	ref, sut *target
}

// startPair starts etcd and the server under test: $COMPAT_TARGET_BIN, or
// Ballast (see harness.BallastBin), as a single node or, with members > 1,
// a cluster whose client spreads requests over every member.
func startPair(t *testing.T, members int) *pair {
	etcdBin := harness.EtcdBin(t)
	sutBin, sutName := os.Getenv("COMPAT_TARGET_BIN"), "ballast"
	if sutBin != "" {
		sutBin = harness.FromRoot(t, sutBin)
		sutName = filepath.Base(sutBin) + "(target)"
	} else {
		sutBin = harness.BallastBin(t)
	}
	mk := func(name, bin string, size int) *target {
		nodes := harness.StartCluster(t, bin, size, harness.Options{Name: name})
		var eps []string
		for _, n := range nodes {
			eps = append(eps, n.ClientURL)
		}
		// The raw stubs used for watches and leases on the client's
		// connection get clientv3's receive limit, not gRPC's 4 MiB.
		cli := nodes[0].Client(t, func(c *clientv3.Config) {
			c.Endpoints = eps
			c.DialOptions = append(c.DialOptions, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)))
		})
		tg := &target{name: name, nodes: nodes, cli: cli, leaseOrd: map[int64]int64{}}
		if size > 1 {
			for _, n := range nodes {
				tg.members = append(tg.members, n.Client(t))
			}
		}
		return tg
	}
	p := &pair{ref: mk("etcd", etcdBin, 1), sut: mk(sutName, sutBin, members)}
	t.Logf("reference %s at %s; target %s (%s), %d member(s), at %s", etcdBin, p.ref.nodes[0].ClientURL, sutName, sutBin, members, p.sut.cli.Endpoints())
	return p
}

// both runs f on both targets concurrently.
func (p *pair) both(f func(tg *target)) {
	var wg sync.WaitGroup
	for _, tg := range []*target{p.ref, p.sut} {
		wg.Go(func() { f(tg) })
	}
	wg.Wait()
}

// begin starts a case: it brings both servers to the same revision (padding
// the one behind with writes if an earlier case made them diverge), which
// becomes the case's base revision @0.
func (p *pair) begin(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	revs := map[*target]int64{}
	for _, tg := range []*target{p.ref, p.sut} {
		resp, err := tg.cli.Get(ctx, "compat-sync")
		if err != nil {
			t.Fatalf("%s: read the current revision: %v", tg.name, err)
		}
		revs[tg] = resp.Header.Revision
	}
	top := max(revs[p.ref], revs[p.sut])
	for _, tg := range []*target{p.ref, p.sut} {
		if revs[tg] < top {
			t.Logf("%s is %d revisions behind after an earlier mismatch; padding it with writes to zz-compat-pad", tg.name, top-revs[tg])
		}
		for r := revs[tg]; r < top; r++ {
			if _, err := tg.cli.Put(ctx, "zz-compat-pad", "x"); err != nil {
				t.Fatalf("%s: pad: %v", tg.name, err)
			}
		}
		tg.base, tg.caseLeases = top, nil
		tg.observeRev(top)
	}
}

// maxMismatches stops a script after this many differing steps: later ones
// usually follow from the first.
const maxMismatches = 10

// run executes steps on both servers, step by step, and reports every step
// whose results differ. It returns the number of mismatches.
func (p *pair) run(t *testing.T, steps []step) int {
	t.Helper()
	mismatches := 0
	for i, s := range steps {
		if !p.check(t, i, s) {
			mismatches++
			if mismatches == maxMismatches {
				t.Fatalf("stopping after %d mismatches", mismatches)
			}
		}
	}
	return mismatches
}

// check runs one step on both servers and reports a difference.
func (p *pair) check(t *testing.T, i int, s step) bool {
	t.Helper()
	var ref, sut string
	run := func(tg *target) {
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		defer cancel()
		out := s.exec(ctx, tg)
		if tg == p.ref {
			ref = out
		} else {
			sut = out
		}
	}
	if s.serial {
		run(p.ref)
		run(p.sut)
	} else {
		p.both(run)
	}
	if verbose {
		t.Logf("step %d: %s\n%s", i, s.desc, indent(ref))
	}
	if ref == sut {
		return true
	}
	t.Errorf("step %d: %s\nresults differ (- %s, + %s; lease IDs shown as -n for the n-th lease granted):\n%s",
		i, s.desc, p.ref.name, p.sut.name, lineDiff(ref, sut))
	return false
}

// verbose logs every step and its result (COMPAT_VERBOSE=1 with go test -v).
var verbose = os.Getenv("COMPAT_VERBOSE") != ""

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

// TestCompat starts one etcd and one server under test and runs every
// scripted case, then the random sequence, against both. The cases share the
// two servers and run in order; each is a subtest, so -run selects them.
func TestCompat(t *testing.T) { runCompat(t, 1) }

// TestCompatCluster runs the same cases against a three-member cluster of
// the server under test, each request going to any member.
func TestCompatCluster(t *testing.T) { runCompat(t, 3) }

func runCompat(t *testing.T, members int) {
	p := startPair(t, members)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p.begin(t)
			p.run(t, c.steps)
		})
	}
	t.Run("random", func(t *testing.T) { testRandom(t, p) })
}

// compatCase is one scripted case.
type compatCase struct {
	name  string
	steps []step
}
