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

	// Lose the log's tail, as a damaged last WAL would.
	db, err := store.Open(store.Config{Dir: filepath.Join(dir, "raft")})
	if err != nil {
		t.Fatal(err)
	}
	logs, err := NewLogStore(db)
	if err != nil {
		t.Fatal(err)
	}
	last, _ := logs.LastIndex()
	if err := logs.DeleteRange(applied-5, last); err != nil {
		t.Fatal(err)
	}
	db.Close()

	cfg.BindAddr = freeAddr(t)
	if n, err := Open(cfg, sm); !errors.Is(err, ErrLogBehindState) {
		if err == nil {
			n.Close()
		}
		t.Fatalf("Open with the log's last entries gone: %v, want ErrLogBehindState", err)
	}
}

// Entries missing from the middle of the log (a truncated MANIFEST made
// Pebble forget a table of them) must not start: hashicorp/raft panics
// reading them. Regression: the fault harness's corrupt-file scenario
// found a member that panicked with "log not found".
func TestOpenRefusesALogWithAGap(t *testing.T) {
	dir := t.TempDir()
	cfg := testNodeConfig(t, dir, freeAddr(t))
	sm := &memSM{}
	n := openLeader(t, cfg, sm)
	for i := range 20 {
		propose(t, n, "cmd"+string(rune('a'+i)))
	}
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
	if err := logs.DeleteRange(last-10, last-8); err != nil {
		t.Fatal(err)
	}
	db.Close()

	cfg.BindAddr = freeAddr(t)
	if n, err := Open(cfg, sm); !errors.Is(err, ErrLogGap) {
		if err == nil {
			n.Close()
		}
		t.Fatalf("Open with entries missing from the log's middle: %v, want ErrLogGap", err)
	}
}
