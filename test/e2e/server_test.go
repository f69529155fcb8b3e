package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// runBallast runs the binary in an empty directory of its own and returns
// its stdout, or its stderr if it failed. A run that fails must leave the
// directory empty (no data dir of a member that never served).
func runBallast(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.BallastBin(t), args...)
	cmd.Dir = t.TempDir()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if left, _ := os.ReadDir(cmd.Dir); len(left) > 0 {
			t.Errorf("ballast %v failed but left %s behind", args, left[0].Name())
		}
		return errb.String(), err
	}
	return out.String(), nil
}

func TestFlagErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--no-such-flag"}, "unknown flag --no-such-flag"},
		{[]string{"--auto-tls"}, "etcd flag --auto-tls is not supported by Ballast yet"},
		{[]string{"--cert-file", "x.pem"}, "--cert-file and --key-file must be given together"},
		{[]string{"--listen-client-urls", "https://127.0.0.1:2379"}, "an https URL needs --cert-file and --key-file"},
		{[]string{"--cert-file", "missing.pem", "--key-file", "missing-key.pem", "--listen-client-urls", "https://127.0.0.1:2379"}, "missing.pem"},
		{[]string{"--initial-cluster-state", "bogus"}, "--initial-cluster-state must be new or existing"},
		{[]string{"--listen-client-urls", "localhost:2379"}, "scheme must be http"},
		{[]string{"--heartbeat-interval", "500", "--election-timeout", "1000"}, "must be at least 5 times"},
		{[]string{"--auto-compaction-mode", "sometimes"}, "--auto-compaction-mode must be periodic or revision"},
		{[]string{"--log-level", "loud"}, "--log-level"},
	}
	for _, tc := range cases {
		out, err := runBallast(t, tc.args...)
		if err == nil {
			t.Errorf("ballast %v started; want error", tc.args)
			continue
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("ballast %v: output %q does not contain %q", tc.args, out, tc.want)
		}
	}
}

func TestConfigFileUnknownKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("name: x\nbogus-key: 1\n"), 0o600)
	out, err := runBallast(t, "--config-file", p)
	if err == nil || !strings.Contains(out, `unknown key "bogus-key"`) {
		t.Fatalf("err %v, output %q", err, out)
	}
}

// TestConfigFileAndSIGTERM starts a member with an etcd-style YAML file,
// checks that its settings apply and the HTTP endpoints answer, then stops
// it with SIGTERM: it must exit 0 and its data must be there on restart.
func TestConfigFileAndSIGTERM(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("max-txn-ops: 3\nsnapshot-count: 100\nlog-level: warn\n"), 0o600)
	n := harness.Start(t, harness.BallastBin(t), harness.Options{Args: []string{"--config-file", p}})
	cli := n.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	ops := []clientv3.Op{clientv3.OpPut("a", "1"), clientv3.OpPut("b", "1"), clientv3.OpPut("c", "1"), clientv3.OpPut("d", "1")}
	if _, err := cli.Txn(ctx).Then(ops...).Commit(); err == nil || !strings.Contains(err.Error(), "too many operations in txn request") {
		t.Errorf("4-op txn with max-txn-ops 3 from the config file: %v", err)
	}
	for path, want := range map[string]string{
		"/health":                   `{"health":"true","reason":""}`,
		"/version":                  `{"etcdserver":"3.6.5","etcdcluster":"3.6.0","storage":"3.6.0"}`,
		"/readyz":                   "ok\n",
		"/livez":                    "ok\n",
		"/readyz/linearizable_read": "ok\n",
	} {
		resp, err := http.Get(n.ClientURL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != want {
			t.Errorf("GET %s = %d %q, want 200 %q", path, resp.StatusCode, body, want)
		}
	}
	body := harness.Scrape(t, n)
	for _, m := range []string{"etcd_server_has_leader 1", "etcd_mvcc_db_total_size_in_bytes", "etcd_disk_wal_fsync_duration_seconds_bucket"} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
	if err := n.Stop(); err != nil {
		t.Fatalf("SIGTERM: exit %v, want clean exit", err)
	}
	n.Restart()
	got, err := n.Client(t).Get(ctx, "k")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "v" {
		t.Fatalf("after restart: %v %v", got, err)
	}
}

// TestNoFlags: `ballast` alone serves a single-node cluster on
// 127.0.0.1:2379 with its data in ./default.ballast.
func TestNoFlags(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(harness.BallastBin(t))
	cmd.Dir = dir
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://127.0.0.1:2379/health")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) == `{"health":"true","reason":""}` {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no healthy server on 127.0.0.1:2379 (is something else using the port?): %v\n%s", err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	c := &ctlRunner{t: t, bin: harness.EtcdctlBin(t), ep: "127.0.0.1:2379"}
	c.ok("put", "hello", "world")
	expect(t, "get", c.ok("get", "hello", "--print-value-only"), "world\n")
	if m := c.ok("member", "list"); !strings.Contains(m, ", started, default, http://127.0.0.1:2380, http://127.0.0.1:2379,") {
		t.Errorf("member list: %q", m)
	}
	if _, err := os.Stat(filepath.Join(dir, "default.ballast")); err != nil {
		t.Errorf("data dir: %v", err)
	}
}

// --auto-compaction-mode periodic compacts, on its own, the revisions older
// than the retention.
func TestAutoCompactionPeriodic(t *testing.T) {
	n := harness.Start(t, harness.BallastBin(t), harness.Options{Name: "ac",
		Args: []string{"--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1s"}})
	cli := n.Client(t)
	var first int64
	for i := range 5 {
		resp, err := cli.Put(testCtx(t, 10*time.Second), "k", fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = resp.Header.Revision
		}
	}
	waitUntil(t, 30*time.Second, "the first write's revision compacted", func(ctx context.Context) error {
		_, err := cli.Get(ctx, "k", clientv3.WithRev(first))
		if !errors.Is(err, rpctypes.ErrCompacted) {
			return fmt.Errorf("get at revision %d: %v", first, err)
		}
		return nil
	})
}
