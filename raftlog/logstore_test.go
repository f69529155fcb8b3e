package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"

	"github.com/ballast-kv/ballast/store"
)

func openLogStore(t *testing.T, fs vfs.FS) (*LogStore, func()) {
	t.Helper()
	db, err := store.Open(store.Config{Dir: "/raft", FS: fs, CacheSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := NewLogStore(db)
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	closed := false
	closeFn := func() {
		if !closed {
			closed = true
			db.Close()
		}
	}
	t.Cleanup(closeFn)
	return ls, closeFn
}

func testLog(index, term uint64) *raft.Log {
	l := &raft.Log{Index: index, Term: term, Type: raft.LogCommand, Data: fmt.Appendf(nil, "entry %d/%d", index, term)}
	if index%3 == 0 {
		l.Extensions = []byte{byte(index), 0, 1}
		l.AppendedAt = time.Unix(1_700_000_000, int64(index))
	}
	if index%5 == 0 {
		l.Type = raft.LogConfiguration
		l.Data = nil
	}
	return l
}

func logsFrom(first, last, term uint64) []*raft.Log {
	var out []*raft.Log
	for i := first; i <= last; i++ {
		out = append(out, testLog(i, term))
	}
	return out
}

func requireLogEqual(t testing.TB, got, want *raft.Log) {
	t.Helper()
	if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type ||
		!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) ||
		!got.AppendedAt.Equal(want.AppendedAt) {
		t.Fatalf("log %d: got %+v, want %+v", want.Index, got, want)
	}
}

func requireBounds(t testing.TB, ls *LogStore, first, last uint64) {
	t.Helper()
	f, err1 := ls.FirstIndex()
	l, err2 := ls.LastIndex()
	if err1 != nil || err2 != nil || f != first || l != last {
		t.Fatalf("bounds = [%d, %d] (%v, %v), want [%d, %d]", f, l, err1, err2, first, last)
	}
}

// logModel is what a LogStore must hold.
type logModel map[uint64]*raft.Log

func (m logModel) store(logs []*raft.Log) {
	for _, l := range logs {
		m[l.Index] = l
	}
}

func (m logModel) deleteRange(lo, hi uint64) {
	for i := range m {
		if i >= lo && i <= hi {
			delete(m, i)
		}
	}
}

func (m logModel) bounds() (first, last uint64) {
	for i := range m {
		if first == 0 || i < first {
			first = i
		}
		last = max(last, i)
	}
	return first, last
}

// requireLogs checks bounds and every index in [0, last+10].
func requireLogs(t testing.TB, ls *LogStore, want logModel) {
	t.Helper()
	first, last := want.bounds()
	requireBounds(t, ls, first, last)
	for i := range last + 10 {
		var got raft.Log
		err := ls.GetLog(i, &got)
		if w, ok := want[i]; ok {
			if err != nil {
				t.Fatalf("GetLog(%d): %v", i, err)
			}
			requireLogEqual(t, &got, w)
		} else if !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog(%d) = %v, want raft.ErrLogNotFound", i, err)
		}
	}
}

// TestLogStore walks the life of a Raft log: append, head truncation after
// a snapshot, tail truncation after a conflict, a full wipe, a restart.
func TestLogStore(t *testing.T) {
	fs := vfs.NewMem()
	ls, closeDB := openLogStore(t, fs)
	want := logModel{}
	appendLogs := func(logs []*raft.Log) func() error {
		return func() error { want.store(logs); return ls.StoreLogs(logs) }
	}
	del := func(lo, hi uint64) func() error {
		return func() error { want.deleteRange(lo, hi); return ls.DeleteRange(lo, hi) }
	}
	steps := []struct {
		name string
		do   func() error
	}{
		{"empty", func() error { return nil }},
		{"append 1..10", appendLogs(logsFrom(1, 10, 1))},
		{"append 11 alone", func() error { want.store(logsFrom(11, 11, 2)); return ls.StoreLog(testLog(11, 2)) }},
		{"empty append is a no-op", appendLogs(nil)},
		{"delete head 1..4", del(1, 4)},
		{"delete conflicting tail 9..11", del(9, 11)},
		{"append 9..14 in a new term", appendLogs(logsFrom(9, 14, 3))},
		{"delete everything", del(5, 14)},
		{"append after a gap (snapshot install)", appendLogs(logsFrom(100, 103, 5))},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := st.do(); err != nil {
				t.Fatal(err)
			}
			requireLogs(t, ls, want)
		})
	}
	t.Run("restart recovers bounds and entries", func(t *testing.T) {
		closeDB()
		ls2, _ := openLogStore(t, fs)
		requireLogs(t, ls2, want)
	})
}

// TestStableStore checks Get/Set/Uint64 and the exact "not found" text that
// hashicorp/raft compares against on a fresh store.
func TestStableStore(t *testing.T) {
	ls, _ := openLogStore(t, vfs.NewMem())
	tests := []struct {
		name    string
		do      func() (any, error)
		want    any
		wantErr string
	}{
		{"get missing", func() (any, error) { return ls.Get([]byte("CurrentTerm")) }, []byte(nil), "not found"},
		{"get uint64 missing", func() (any, error) { return ls.GetUint64([]byte("CurrentTerm")) }, uint64(0), "not found"},
		{"set uint64", func() (any, error) { return nil, ls.SetUint64([]byte("CurrentTerm"), 42) }, nil, ""},
		{"get uint64", func() (any, error) { return ls.GetUint64([]byte("CurrentTerm")) }, uint64(42), ""},
		{"max uint64", func() (any, error) {
			if err := ls.SetUint64([]byte("x"), 1<<64-1); err != nil {
				return nil, err
			}
			return ls.GetUint64([]byte("x"))
		}, uint64(1<<64 - 1), ""},
		{"set bytes", func() (any, error) { return nil, ls.Set([]byte("LastVoteCand"), []byte("node-1")) }, nil, ""},
		{"get bytes", func() (any, error) { return ls.Get([]byte("LastVoteCand")) }, []byte("node-1"), ""},
		{"overwrite", func() (any, error) {
			if err := ls.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
				return nil, err
			}
			return ls.Get([]byte("LastVoteCand"))
		}, []byte("n2"), ""},
		{"uint64 of a non-8-byte value is an error", func() (any, error) { return ls.GetUint64([]byte("LastVoteCand")) }, uint64(0), "want 8"},
		{"stable keys do not collide with log indexes", func() (any, error) {
			if err := ls.StoreLogs(logsFrom(1, 3, 1)); err != nil {
				return nil, err
			}
			return ls.Get([]byte("CurrentTerm"))
		}, store.AppendUint64(nil, 42), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.do()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.wantErr == "not found" && (err == nil || err.Error() != "not found"):
				t.Fatalf("err = %v, want exactly \"not found\" (hashicorp/raft compares the text)", err)
			case tt.wantErr != "" && (err == nil || !bytes.Contains([]byte(err.Error()), []byte(tt.wantErr))):
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if tt.wantErr != "" {
				return
			}
			switch w := tt.want.(type) {
			case []byte:
				if !bytes.Equal(got.([]byte), w) {
					t.Fatalf("got %q, want %q", got, w)
				}
			case uint64:
				if got.(uint64) != w {
					t.Fatalf("got %d, want %d", got, w)
				}
			}
		})
	}
}

// TestLogStoreSurvivesCrash: StoreLogs, DeleteRange and Set return only
// after an fsync, so whatever a crash keeps of the unsynced rest, every
// acknowledged write (and delete) is there after restart.
func TestLogStoreSurvivesCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	ls, _ := openLogStore(t, fs)
	rng := rand.New(rand.NewPCG(5, 5))
	var syncs int
	ls.OnSync = func(time.Duration) { syncs++ }
	want := logModel{}
	var term uint64
	next, first := uint64(1), uint64(1)
	for round := range 80 {
		// Each round is one acknowledged write, then possibly a crash right
		// after it, before anything else could sync the WAL on its behalf.
		var what string
		switch {
		case round%9 == 8 && next-first > 10:
			// Truncate the head, as after a snapshot.
			upto := first + uint64(rng.IntN(int(next-first)/2))
			if err := ls.DeleteRange(first, upto); err != nil {
				t.Fatal(err)
			}
			want.deleteRange(first, upto)
			first = upto + 1
			what = "delete head"
		case round%11 == 10 && next-first > 4:
			// Truncate a conflicting tail.
			from := next - uint64(1+rng.IntN(3))
			if err := ls.DeleteRange(from, next-1); err != nil {
				t.Fatal(err)
			}
			want.deleteRange(from, next-1)
			next = from
			what = "delete tail"
		case round%5 == 4:
			term = uint64(round)
			if err := ls.SetUint64([]byte("CurrentTerm"), term); err != nil {
				t.Fatal(err)
			}
			what = "set term"
		default:
			n := 1 + rng.IntN(40)
			logs := logsFrom(next, next+uint64(n)-1, uint64(round))
			for _, l := range logs {
				l.Data = append(l.Data, bytes.Repeat([]byte{byte(round)}, rng.IntN(3000))...)
			}
			if err := ls.StoreLogs(logs); err != nil {
				t.Fatal(err)
			}
			want.store(logs)
			next += uint64(n)
			what = "append"
		}
		if rng.IntN(3) != 0 {
			continue
		}
		pct := []int{0, 0, 30, 70, 100}[rng.IntN(5)]
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rand.New(rand.NewPCG(uint64(round), 1))})
		t.Run(fmt.Sprintf("crash after round %d (%s), %d%% unsynced kept", round, what, pct), func(t *testing.T) {
			got, _ := openLogStore(t, clone)
			requireLogs(t, got, want)
			v, err := got.GetUint64([]byte("CurrentTerm"))
			if term == 0 && (err == nil || err.Error() != "not found") {
				t.Fatalf("CurrentTerm = %d, %v before it was ever set", v, err)
			}
			if term != 0 && (err != nil || v != term) {
				t.Fatalf("CurrentTerm = %d, %v; want %d", v, err, term)
			}
		})
	}
	if syncs == 0 {
		t.Fatal("OnSync never observed a synced append")
	}
}
