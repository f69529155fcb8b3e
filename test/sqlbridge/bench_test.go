package sqlbridgetest

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// benchPut runs `ballast bench put` with 100 clients against nodes and
// returns its requests per second.
func benchPut(b *testing.B, nodes []*harness.Node, total int) float64 {
	b.Helper()
	var eps []string
	for _, n := range nodes {
		eps = append(eps, n.ClientURL)
	}
	out, errOut, err := runBallast(b, "bench", "put", "--endpoints", strings.Join(eps, ","), "--clients", "100", "--conns", "10",
		"--total", strconv.Itoa(total), "--key-space-size", "10000", "--val-size", "256", "-w", "json")
	if err != nil {
		b.Fatalf("ballast bench put: %v\n%s", err, errOut)
	}
	var r struct {
		OpsPerSec float64 `json:"ops_per_sec"`
		Errors    int64   `json:"errors"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Errors != 0 {
		b.Fatalf("bench output %q: %v", out, err)
	}
	return r.OpsPerSec
}

// BenchmarkMirror measures, on a three-member cluster under `ballast bench
// put` with 100 clients: put throughput without a mirror, with one, and
// with its PostgreSQL down (the mirror must not slow writes); the mirror's
// throughput in revisions per second from the first put until it has
// caught up; the largest lag the leader reported; and the time to catch up
// once the load stops. make bench-sqlbridge.
func BenchmarkMirror(b *testing.B) {
	const total = 50000
	for range b.N {
		plain := harness.StartCluster(b, harness.BallastBin(b), 3, harness.Options{})
		base := benchPut(b, plain, total)
		for _, n := range plain {
			n.Kill()
		}

		m := startMirrored(b, 3)
		cli := m.client(b)
		ctx := context.Background()
		resp, err := cli.Get(ctx, "/")
		if err != nil {
			b.Fatal(err)
		}
		m.waitMirrored(b, resp.Header.Revision, 0)
		startRev := resp.Header.Revision
		lead := leader(b, cli, m.nodes)
		var maxLag float64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				if v, err := harness.ReadMetric(lead, "ballast_sqlbridge_lag_revisions"); err == nil {
					maxLag = max(maxLag, v)
				}
			}
		}()
		start := time.Now()
		mirroredPut := benchPut(b, m.nodes, total)
		loadEnd := time.Now()
		resp, err = cli.Get(ctx, "/")
		if err != nil {
			b.Fatal(err)
		}
		m.waitMirrored(b, resp.Header.Revision, 0)
		caughtUp := time.Now()
		close(stop)
		wg.Wait()
		revs := float64(resp.Header.Revision - startRev)

		for _, n := range m.nodes {
			n.Kill()
		}
		m.pg.Kill()

		// A fresh mirrored cluster whose database is down from the start,
		// so that it meets the load in the same state as the others.
		down := startMirrored(b, 3)
		down.pg.Kill()
		downPut := benchPut(b, down.nodes, total)

		b.ReportMetric(base, "put/s-no-mirror")
		b.ReportMetric(mirroredPut, "put/s-mirrored")
		b.ReportMetric(downPut, "put/s-db-down")
		b.ReportMetric(revs/caughtUp.Sub(start).Seconds(), "mirror-revs/s")
		b.ReportMetric(maxLag, "max-lag-revs")
		b.ReportMetric(float64(caughtUp.Sub(loadEnd).Milliseconds()), "catchup-ms")
	}
}
