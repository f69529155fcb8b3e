package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestMainUsageAndErrors(t *testing.T) {
	down := closedPort(t)
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no workload", nil, 2, "Workloads:"},
		{"unknown workload", []string{"frobnicate"}, 2, `unknown workload "frobnicate"`},
		{"help", []string{"-h"}, 0, "Workloads:"},
		{"workload help", []string{"put", "-h"}, 0, "-sequential-keys"},
		{"bad format", []string{"-w", "yaml", "put"}, 2, "-w must be table or json"},
		{"range needs a key", []string{"range"}, 2, "Usage: ballast bench [global flags] range"},
		{"range bad consistency", []string{"--endpoints", down, "range", "k", "--consistency", "x"}, 2, "--consistency must be l or s"},
		{"key space too big for key", []string{"put", "--key-size", "1", "--key-space-size", "1000"}, 2, "too small"},
		{"txn-ops over key space", []string{"txn-put", "--txn-ops", "5", "--key-space-size", "2"}, 2, "larger than --key-space-size"},
		{"server down, global flag before", []string{"--endpoints", down, "--dial-timeout", "300ms", "put"}, 1, "probe " + down},
		{"server down, global flag after", []string{"put", "--endpoints", down, "--dial-timeout=300ms"}, 1, "probe " + down},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(tt.args, &out, &errb)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.code, errb.String())
			}
			if !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.stderr, errb.String())
			}
			if out.Len() != 0 {
				t.Errorf("unexpected stdout: %s", out.String())
			}
		})
	}
}

// Every workload's flags register beside the global ones: a clash (the
// watch workload's --key met the TLS --key) panics at start.
func TestEveryWorkloadShowsItsHelp(t *testing.T) {
	for _, wl := range workloads {
		t.Run(wl.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := Main([]string{wl.name, "-h"}, &out, &errb); code != 0 {
				t.Fatalf("%s -h: exit code %d; stderr:\n%s", wl.name, code, errb.String())
			}
			if !strings.Contains(errb.String(), "Usage: ballast bench [global flags] "+wl.name) {
				t.Fatalf("%s -h printed no usage:\n%s", wl.name, errb.String())
			}
		})
	}
}

func TestWriteResult(t *testing.T) {
	h := NewHistogram()
	for i := 1; i <= 100; i++ {
		h.Record(msDur(float64(i)))
	}
	r := &Result{Workload: "put", Ops: 100, Latency: "request", Params: map[string]string{"clients": "1"}}
	r.setRate(2e9)
	r.fillLatency(h)
	r.extra("pages", 3)

	var js bytes.Buffer
	if err := writeResult(&js, r, "json"); err != nil {
		t.Fatal(err)
	}
	if bytes.Count(js.Bytes(), []byte("\n")) != 1 {
		t.Fatalf("json output is not one line: %q", js.String())
	}
	var m map[string]any
	if err := json.Unmarshal(js.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"workload", "ops", "duration", "ops_per_sec", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors"} {
		if _, ok := m[k]; !ok {
			t.Errorf("json lacks %q: %s", k, js.String())
		}
	}
	if m["ops_per_sec"] != 50.0 || m["duration"] != 2.0 || m["max_ms"] != 100.0 {
		t.Errorf("ops_per_sec/duration/max_ms = %v/%v/%v", m["ops_per_sec"], m["duration"], m["max_ms"])
	}
	if p := m["p50_ms"].(float64); p < 49.5 || p > 50.5 {
		t.Errorf("p50_ms = %v", p)
	}

	var tb bytes.Buffer
	if err := writeResult(&tb, r, "table"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"put: clients=1", "ops/s", "p99 ms", "50.0", "pages"} {
		if !strings.Contains(tb.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, tb.String())
		}
	}
}

func msDur(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

// TestClosedLoopRate: with --rate, operations start no earlier than their
// due times, and a server slower than the rate is charged from the due
// time, so the queue it causes shows in the latencies.
func TestClosedLoopRate(t *testing.T) {
	e := &env{global: global{maxDuration: time.Minute}, ctx: context.Background(), stdout: io.Discard, stderr: io.Discard}
	clients := []*clientv3.Client{nil, nil}

	h := NewHistogram()
	start := time.Now()
	st := e.closedLoop(clients, load{total: 21, rate: 100}, h, func(context.Context, *clientv3.Client, int) error { return nil })
	if st.ops != 21 {
		t.Fatalf("ops %d, want 21", st.ops)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("21 operations at 100/s took %v, want at least 200ms", d)
	}

	// One client, due every 10ms, each operation taking 30ms: operation 9
	// is due at 90ms and ends at 300ms or later.
	h = NewHistogram()
	var late time.Duration // the longest an operation started after its due time
	e.closedLoop(clients[:1], load{total: 10, rate: 100}, h, func(ctx context.Context, _ *clientv3.Client, _ int) error {
		late = max(late, time.Since(dueTime(ctx)))
		time.Sleep(30 * time.Millisecond)
		return nil
	})
	if m := h.Max(); m < 200*time.Millisecond {
		t.Fatalf("largest latency %v, want at least 200ms: a late start must count from the due time", m)
	}
	// Operations that time their parts (the Kubernetes profile's) count
	// from the same due time.
	if late < 150*time.Millisecond {
		t.Fatalf("operations started at most %v after their due times, want the last one about 180ms late", late)
	}
}
