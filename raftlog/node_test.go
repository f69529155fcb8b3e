package raftlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// memSM is a StateMachine whose "disk" is the copy taken at Sync: crash()
// throws away everything applied since, as losing unsynced state would.
type memSM struct {
	mu        sync.Mutex
	applied   uint64
	cmds      []string
	delivered []uint64 // every index handed to Apply, applied or skipped

	durableApplied uint64
	durableCmds    []string
	syncs          int
}

func (m *memSM) Apply(es []Entry) []any {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]any, len(es))
	for i, e := range es {
		m.delivered = append(m.delivered, e.Index)
		if e.Index <= m.applied {
			continue
		}
		m.applied = e.Index
		m.cmds = append(m.cmds, string(e.Data))
		out[i] = fmt.Sprintf("ok:%s@%d", e.Data, e.Index)
	}
	return out
}

func (m *memSM) AppliedIndex() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied
}

func (m *memSM) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.durableApplied, m.durableCmds = m.applied, slices.Clone(m.cmds)
	m.syncs++
	return nil
}

// WriteSnapshot and Restore carry the applied index and commands as JSON.
func (m *memSM) WriteSnapshot(w io.Writer) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied, json.NewEncoder(w).Encode(memState{m.applied, m.cmds})
}

func (m *memSM) Restore(r io.Reader) error {
	var st memState
	if err := json.NewDecoder(r).Decode(&st); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applied, m.cmds = st.Applied, st.Cmds
	m.durableApplied, m.durableCmds = st.Applied, slices.Clone(st.Cmds)
	return nil
}

type memState struct {
	Applied uint64
	Cmds    []string
}

func (m *memSM) crash() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applied, m.cmds, m.delivered = m.durableApplied, slices.Clone(m.durableCmds), nil
}

func (m *memSM) snapshot() (applied uint64, cmds []string, delivered []uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied, slices.Clone(m.cmds), slices.Clone(m.delivered)
}

// freeAddr picks a loopback port: hashicorp's TCP transport must advertise
// a real port, so ":0" cannot be used.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func testNodeConfig(t *testing.T, dir, addr string) Config {
	cfg := DefaultConfig()
	cfg.ID = "1"
	cfg.Dir = dir
	cfg.BindAddr = addr
	cfg.Bootstrap = []Server{{ID: "1", Address: addr}}
	cfg.HeartbeatInterval = 50 * time.Millisecond
	cfg.ElectionTimeout = 500 * time.Millisecond
	cfg.ApplyTimeout = 10 * time.Second
	return cfg
}

func openLeader(t *testing.T, cfg Config, sm StateMachine) *Node {
	t.Helper()
	n, err := Open(cfg, sm)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	waitFor(t, 20*time.Second, "the single voter to lead", n.IsLeader)
	return n
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("gave up after %v waiting for %s", d, what)
		case <-tick.C:
		}
	}
}

func propose(t *testing.T, n *Node, cmd string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, _, err := n.Propose(ctx, []byte(cmd))
	if err != nil {
		t.Fatalf("Propose(%s): %v", cmd, err)
	}
	body, ok := strings.CutPrefix(fmt.Sprint(res), "ok:")
	got, idx, _ := strings.Cut(body, "@")
	if !ok || got != cmd {
		t.Fatalf("Propose(%s) returned %v, want the state machine's result for it", cmd, res)
	}
	index, err := strconv.ParseUint(idx, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return index
}

func TestConfigValidate(t *testing.T) {
	good := testNodeConfig(t, "/d", "127.0.0.1:1")
	tests := []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"valid", func(*Config) {}, true},
		{"no id", func(c *Config) { c.ID = "" }, false},
		{"no dir", func(c *Config) { c.Dir = "" }, false},
		{"no bind address", func(c *Config) { c.BindAddr = "" }, false},
		{"zero heartbeat", func(c *Config) { c.HeartbeatInterval = 0 }, false},
		{"election under 5 heartbeats", func(c *Config) { c.ElectionTimeout = 4 * c.HeartbeatInterval }, false},
		{"election exactly 5 heartbeats", func(c *Config) { c.ElectionTimeout = 5 * c.HeartbeatInterval }, true},
		{"zero snapshot count", func(c *Config) { c.SnapshotCount = 0 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.change(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// TestNodeSingleVoter proposes through a one-node cluster, checks the
// linearizable barrier, then restarts after losing the state machine's
// unsynced work: Raft must hand over exactly the entries above the state
// machine's applied index, so nothing is lost and nothing applied twice.
func TestNodeSingleVoter(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := testNodeConfig(t, dir, addr)
	sm := &memSM{}
	n := openLeader(t, cfg, sm)

	var want []string
	var last uint64
	for i := range 10 {
		cmd := fmt.Sprintf("cmd-%d", i)
		last = propose(t, n, cmd)
		want = append(want, cmd)
	}

	t.Run("linearizable barrier", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Go(func() { errs[i] = n.LinearizableBarrier(ctx) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("LinearizableBarrier: %v", err)
			}
		}
		if got := sm.AppliedIndex(); got < last {
			t.Fatalf("after the barrier the state machine applied %d, below the acknowledged write at %d", got, last)
		}
		if n.AppliedIndex() < last || n.CommitIndex() < last {
			t.Fatalf("node applied %d, committed %d; want >= %d", n.AppliedIndex(), n.CommitIndex(), last)
		}
	})

	if err := n.Snapshot(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	sm.mu.Lock()
	syncs, synced := sm.syncs, sm.durableApplied
	sm.mu.Unlock()
	if syncs == 0 || synced < last {
		t.Fatalf("Snapshot synced the state machine %d times, up to %d; want up to %d", syncs, synced, last)
	}
	for i := 10; i < 15; i++ {
		cmd := fmt.Sprintf("cmd-%d", i)
		propose(t, n, cmd)
		want = append(want, cmd)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := n.Propose(context.Background(), []byte("late")); !errors.Is(err, ErrStopped) {
		t.Fatalf("Propose after Close = %v, want ErrStopped", err)
	}

	sm.crash() // lose what was applied after the snapshot's sync

	n2 := openLeader(t, cfg, sm)
	want = append(want, "cmd-15")
	last = propose(t, n2, "cmd-15")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n2.LinearizableBarrier(ctx); err != nil {
		t.Fatalf("LinearizableBarrier after restart: %v", err)
	}
	applied, cmds, delivered := sm.snapshot()
	if applied < last {
		t.Fatalf("applied %d after restart, want >= %d", applied, last)
	}
	if !slices.Equal(cmds, want) {
		t.Fatalf("state machine applied %q, want %q", cmds, want)
	}
	if len(delivered) == 0 || slices.Min(delivered) <= synced {
		t.Fatalf("after restart Raft re-delivered indexes %v, the snapshot covered up to %d", delivered, synced)
	}
	seen := map[uint64]bool{}
	for _, i := range delivered {
		if seen[i] {
			t.Fatalf("index %d delivered twice after restart: %v", i, delivered)
		}
		seen[i] = true
	}
}

// TestSnapshotEverySnapshotCount: a snapshot (which lets Raft truncate the
// log to its trailing entries) is taken every SnapshotCount applied
// entries, not only when Raft's periodic check comes round every
// SnapshotInterval (10-20 s).
func TestSnapshotEverySnapshotCount(t *testing.T) {
	cfg := testNodeConfig(t, t.TempDir(), freeAddr(t))
	cfg.SnapshotCount = 200
	n := openLeader(t, cfg, &memSM{})
	start := time.Now()
	var last uint64
	for i := range 650 {
		last = propose(t, n, fmt.Sprintf("k%d", i))
	}
	snapshotIndex := func() uint64 {
		v, _ := strconv.ParseUint(n.raft.Stats()["last_snapshot_index"], 10, 64)
		return v
	}
	waitFor(t, 3*time.Second, "a snapshot within SnapshotCount of the last entry", func() bool {
		return snapshotIndex()+cfg.SnapshotCount > last
	})
	if d := time.Since(start); d >= 10*time.Second {
		t.Fatalf("took %v: Raft's periodic check may have taken the snapshot", d)
	}
}

// TestSnapshotDue: a snapshot is due SnapshotCount entries after the last
// one, never before it, and a count too large to reach never wraps round
// into a snapshot per batch.
func TestSnapshotDue(t *testing.T) {
	for _, c := range []struct {
		count, at, applied uint64
		want               bool
	}{
		{100, 1000, 1099, false},
		{100, 1000, 1100, true},
		{100, 1000, 900, false}, // applied behind the snapshot (a restart)
		{math.MaxUint64, 1000, 5000, false},
		{math.MaxUint64 - 10, 20, math.MaxUint64, false},
	} {
		n := &Node{cfg: Config{SnapshotCount: c.count}}
		n.snapshotAt.Store(c.at)
		if got := n.snapshotDue(c.applied); got != c.want {
			t.Errorf("count %d, last snapshot %d, applied %d: due %v, want %v", c.count, c.at, c.applied, got, c.want)
		}
	}
}
