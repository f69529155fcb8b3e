package raftlog

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// Entry is one committed Raft command.
type Entry struct {
	Index uint64
	Term  uint64
	Data  []byte
}

// StateMachine is what raftlog needs from the replicated state (mvcc.Store
// satisfies it through server). Apply is called from one goroutine, in log
// order; it must be deterministic, and must skip entries at or below
// AppliedIndex (they were applied before a restart). Sync is called before
// Raft truncates its log, possibly while Apply runs: after it returns,
// everything applied before it was called must survive a crash.
// WriteSnapshot streams a consistent copy of the state (with its applied
// index inside) for a member too far behind to catch up from the log;
// Restore replaces the state with such a copy.
type StateMachine interface {
	Apply(entries []Entry) []any
	AppliedIndex() uint64
	Sync() error
	WriteSnapshot(w io.Writer) (applied uint64, err error)
	Restore(r io.Reader) error
}

// fsm adapts a StateMachine to raft.BatchingFSM and tracks the applied index
// for readers waiting on it.
type fsm struct {
	sm          StateMachine
	onCommitted func(entryID) // as each batch arrives, before it is applied
	onApplied   func(uint64)  // after each batch, with the last index applied

	applied atomic.Uint64
	mu      sync.Mutex
	waitCh  chan struct{} // closed and replaced after every applied batch
}

var _ raft.BatchingFSM = (*fsm)(nil)

func newFSM(sm StateMachine) *fsm {
	f := &fsm{sm: sm, waitCh: make(chan struct{})}
	f.applied.Store(sm.AppliedIndex())
	return f
}

func (f *fsm) Apply(l *raft.Log) interface{} { return f.ApplyBatch([]*raft.Log{l})[0] }

func (f *fsm) ApplyBatch(logs []*raft.Log) []interface{} {
	entries := make([]Entry, 0, len(logs))
	for _, l := range logs {
		if l.Type == raft.LogCommand {
			entries = append(entries, Entry{Index: l.Index, Term: l.Term, Data: l.Data})
		}
	}
	last := logs[len(logs)-1]
	if f.onCommitted != nil {
		// Raft hands over only committed entries; followers told now apply
		// them while this member does, as etcd's do.
		f.onCommitted(entryID{last.Index, last.Term})
	}
	var results []any
	if len(entries) > 0 {
		results = f.sm.Apply(entries)
	}
	out := make([]interface{}, len(logs))
	j := 0
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			out[i] = results[j]
			j++
		}
	}
	f.advance(last.Index)
	if f.onApplied != nil {
		f.onApplied(last.Index)
	}
	return out
}

// advance records that everything up to index is applied and wakes waiters.
func (f *fsm) advance(index uint64) {
	if index <= f.applied.Load() {
		return
	}
	f.applied.Store(index)
	f.mu.Lock()
	close(f.waitCh)
	f.waitCh = make(chan struct{})
	f.mu.Unlock()
}

// wait returns a channel closed at the next apply, and the applied index now.
func (f *fsm) wait() (<-chan struct{}, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waitCh, f.applied.Load()
}

// Snapshot returns a marker of the applied index. The state machine's own
// data directory is the snapshot: what Raft stores is a marker with the
// index, so taking a snapshot costs one sync instead of a copy of the whole
// state. The sync is the marker's Persist, which Raft runs before it
// truncates its log but off the apply goroutine: a state store that syncs
// by flushing its memtables must not hold up applies meanwhile.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return marker{index: f.sm.AppliedIndex(), sync: f.sm.Sync}, nil
}

// Restore installs a state snapshot sent by the leader (see snapshotStore:
// it is the leader's whole state, never a marker).
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.sm.Restore(rc); err != nil {
		return fmt.Errorf("raftlog: restore state snapshot: %w", err)
	}
	f.mu.Lock()
	f.applied.Store(f.sm.AppliedIndex())
	close(f.waitCh)
	f.waitCh = make(chan struct{})
	f.mu.Unlock()
	return nil
}

// marker is a local snapshot: the applied index, made durable by sync (which
// makes everything applied so far durable, at or above the index).
type marker struct {
	index uint64
	sync  func() error
}

func (m marker) Persist(sink raft.SnapshotSink) error {
	if err := m.sync(); err != nil {
		sink.Cancel()
		return fmt.Errorf("raftlog: sync state before snapshot: %w", err)
	}
	if _, err := fmt.Fprintf(sink, "%s%d\n", markerMagic, m.index); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (marker) Release() {}
