package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// etcdAlertMetrics are the series etcd's published alert rules (the etcd
// mixin) query, beyond what the dashboard shows.
var etcdAlertMetrics = []string{
	"etcd_server_has_leader", "etcd_server_leader_changes_seen_total", "etcd_server_proposals_failed_total",
	"grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
	"etcd_network_peer_sent_failures_total", "etcd_network_peer_round_trip_time_seconds_bucket",
	"etcd_disk_wal_fsync_duration_seconds_bucket", "etcd_disk_backend_commit_duration_seconds_bucket",
	"etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes", "etcd_server_quota_backend_bytes",
}

// Every metric the dashboard in deploy/ and etcd's alert rules query is on
// a Ballast member's /metrics under etcd's name, with values that follow
// what the member did: its puts, its leader, its ID, a peer it cannot
// reach.
func TestMetricsServeTheDashboard(t *testing.T) {
	names := dashboardMetrics(t)
	names = append(names, etcdAlertMetrics...)
	slices.Sort(names)
	names = slices.Compact(names)

	nodes := harness.StartCluster(t, harness.BallastBin(t), 3, harness.Options{})
	ctx := testCtx(t, time.Minute)
	cl := newClients(t)
	leader, ids := clusterLeader(t, cl, nodes)
	cli := cl.of(leader)
	const puts = 20
	for i := range puts {
		if _, err := cli.Put(ctx, fmt.Sprintf("m%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	cli.Get(ctx, "m", clientv3.WithPrefix())
	cli.Delete(ctx, "m00")
	cli.Txn(ctx).Then(clientv3.OpGet("m01")).Commit()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	cli.Watch(wctx, "m", clientv3.WithPrefix())
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.KeepAlive(wctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	// A member down: the leader's sends to it fail (etcdMembersDown).
	down := without(nodes, leader)[0]
	down.Kill()

	failedSends := regexp.MustCompile(fmt.Sprintf(`etcd_network_peer_sent_failures_total\{To="%s"\} [1-9]`, hex(ids[down])))
	var text string
	waitUntil(t, 30*time.Second, "every metric the dashboard and alerts query, and failed sends to "+down.Name, func(context.Context) error {
		text = harness.Scrape(t, leader)
		var missing []string
		for _, name := range names {
			if !regexp.MustCompile(`(?m)^` + name + `[{ ]`).MatchString(text) {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("/metrics of the leader lacks %d of the %d metrics: %v", len(missing), len(names), missing)
		}
		if !failedSends.MatchString(text) {
			return fmt.Errorf("no failed sends to the stopped member, labelled by its ID:\n%s", strings.Join(regexp.MustCompile(`(?m)^etcd_network_peer_sent_failures.*$`).FindAllString(text, -1), "\n"))
		}
		return nil
	})
	if v := harness.MetricValue(t, text, "etcd_server_has_leader"); v != 1 {
		t.Errorf("etcd_server_has_leader = %v on the leader", v)
	}
	if v := harness.MetricValue(t, text, "etcd_server_is_leader"); v != 1 {
		t.Errorf("etcd_server_is_leader = %v on the leader", v)
	}
	if v := harness.MetricValue(t, text, "etcd_mvcc_put_total"); v != puts {
		t.Errorf("etcd_mvcc_put_total = %v after %d puts through this member", v, puts)
	}
	if want := fmt.Sprintf(`etcd_server_id{server_id="%x"} 1`, ids[leader]); !strings.Contains(text, want) {
		t.Errorf("/metrics lacks %s", want)
	}
	// A counter by outcome is there from the start, so a dashboard's rate
	// sees its first increment.
	for _, outcome := range []string{"ok", "mismatch", "incomplete"} {
		harness.MetricValue(t, text, `ballast_server_corruption_checks_total\{outcome="`+outcome+`"\}`)
	}
}

// dashboardMetrics returns every metric name the dashboard's queries use.
func dashboardMetrics(t *testing.T) []string {
	b, err := os.ReadFile(harness.FromRoot(t, "deploy/grafana/ballast-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	ident := regexp.MustCompile(`\b(?:etcd|grpc|process|go|ballast)_[a-z0-9_]+`)
	labels := regexp.MustCompile(`\{[^}]*\}|\bby \([^)]*\)`) // label names are not metrics
	var names []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			names = append(names, ident.FindAllString(labels.ReplaceAllString(tg.Expr, ""), -1)...)
		}
	}
	if len(names) < 20 {
		t.Fatalf("the dashboard queries only %d metrics: %v", len(names), names)
	}
	return names
}

// httpGet returns the status and body of a GET.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// --listen-metrics-urls serves /metrics and /health on a port of its own,
// as in etcd, so Prometheus can scrape a member whose client port needs a
// client certificate; the client port keeps serving them too.
func TestListenMetricsURLs(t *testing.T) {
	addr := harness.FreeAddr(t, "127.0.0.1")
	n := harness.Start(t, harness.BallastBin(t), harness.Options{Args: []string{"--listen-metrics-urls", "http://" + addr}})
	if _, err := n.Client(t).Put(testCtx(t, 30*time.Second), "k", "v"); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) { return httpGet(t, "http://"+addr+path) }
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics on the metrics URL: %d", code)
	}
	if puts := harness.MetricValue(t, body, "etcd_mvcc_put_total"); puts < 1 {
		t.Fatalf("etcd_mvcc_put_total on the metrics URL = %v after a put", puts)
	}
	if code, body := get("/health"); code != http.StatusOK || !strings.Contains(body, `"health":"true"`) {
		t.Fatalf("GET /health on the metrics URL: %d %s", code, body)
	}
	if !strings.Contains(harness.Scrape(t, n), "etcd_mvcc_put_total") {
		t.Fatal("the client port stopped serving /metrics")
	}
}
