package raftlog

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/ballast-kv/ballast/store"
)

// A Raft log that lost synced entries (a damaged WAL that Pebble took for a
// torn tail, a truncated file) must not start: the member may have
// acknowledged those entries. The state's applied index shows the loss.
// Regression: the fault harness's corrupt-file scenario found a member that
// started with 46 acknowledged writes gone.
func TestOpenRefusesALogBehindTheState(t *testing.T) {
	openDamaged(t, ErrLogBehindState, func(logs *LogStore, applied, last uint64) error {
		return logs.DeleteRange(applied-5, last) // the tail, as a damaged last WAL would
	})
}

// Entries missing from the middle of the log (a truncated MANIFEST made
// Pebble forget a table of them) must not start: hashicorp/raft panics
// reading them. Regression: the fault harness's corrupt-file scenario
// found a member that panicked with "log not found".
func TestOpenRefusesALogWithAGap(t *testing.T) {
	openDamaged(t, ErrLogGap, func(logs *LogStore, applied, last uint64) error {
		return logs.DeleteRange(last-10, last-8)
	})
}

// openDamaged writes 20 entries through a one-member node, damages its
// closed log, and checks that Open refuses it with want.
func openDamaged(t *testing.T, want error, damage func(logs *LogStore, applied, last uint64) error) {
	t.Helper()
	dir := t.TempDir()
	cfg := testNodeConfig(t, dir, freeAddr(t))
	sm := &memSM{}
	n := openLeader(t, cfg, sm)
	for i := range 20 {
		propose(t, n, "cmd"+string(rune('a'+i)))
	}
	applied := sm.AppliedIndex()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := store.Open(store.Config{Dir: filepath.Join(dir, "raft")})
	if err != nil {
		t.Fatal(err)
	}
	logs, err := NewLogStore(db)
	if err != nil {
		t.Fatal(err)
	}
	last, _ := logs.LastIndex()
	if err := damage(logs, applied, last); err != nil {
		t.Fatal(err)
	}
	db.Close()

	cfg.BindAddr = freeAddr(t)
	n, err = Open(cfg, sm)
	if err == nil {
		n.Close()
	}
	if !errors.Is(err, want) || !store.IsCorruption(err) {
		t.Fatalf("Open of the damaged log: %v, want %v reported as corruption", err, want)
	}
}
