// Package heapfloor keeps the garbage collector's heap goal from falling
// below a floor.
//
// With GOGC's default of 100, Go collects whenever the heap has doubled
// since the last collection. A member's live heap is small (a few MiB when
// its data is small), and every write allocates in gRPC, Raft and the
// store, so a member under a steady write load collected three to five
// times a second, twice as often as etcd, whose live heap is larger. Each
// collection takes a share of the two cores from the writes' path and
// shows in their latency tail. A floor on the heap goal lets a small heap
// grow to the floor between collections, and leaves a heap whose goal is
// above the floor to GOGC alone. The cost is memory while the heap is
// small: with a 32 MiB floor, one client's puts through a follower
// collected 3-12 times in 8 s instead of 23-42 and their p99 fell by a
// quarter of a millisecond, and a member's RSS grew by up to 20 MiB
// (docs/benchmarks.md).
package heapfloor

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Start adjusts GOGC after every collection so that the next heap goal is
// at least floor bytes, and otherwise what base (the GOGC percent the
// process would use) gives. GOMEMLIMIT still caps the goal. stop restores
// base.
func Start(floor uint64, base int) (stop func()) {
	t := &tuner{floor: floor, base: base, sample: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
	}}
	t.adjust()
	t.arm()
	return func() {
		t.mu.Lock()
		t.stopped = true
		t.mu.Unlock()
		debug.SetGCPercent(base)
	}
}

type tuner struct {
	floor   uint64
	base    int
	mu      sync.Mutex
	stopped bool
	percent int // last set; 0 before the first adjust
	sample  []metrics.Sample
}

// sentinel is garbage as soon as it is made: its finalizer runs once the
// next collection has found it, which is how the tuner learns of nearly
// every collection (one made while a mark is under way survives that one). It holds a pointer so it is not a tiny allocation, whose
// finalizers may never run.
type sentinel struct{ t *tuner }

func (t *tuner) arm() {
	runtime.SetFinalizer(&sentinel{t}, func(s *sentinel) {
		t.mu.Lock()
		stopped := t.stopped
		t.mu.Unlock()
		if !stopped {
			t.adjust()
			t.arm()
		}
	})
}

// adjust sets the percent for the live heap the last collection left.
func (t *tuner) adjust() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	metrics.Read(t.sample)
	var v [3]uint64
	for i, s := range t.sample {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	p := Percent(v[0], v[1]+v[2], t.floor, t.base)
	if p != t.percent {
		debug.SetGCPercent(p)
		t.percent = p
	}
}

// heapMinimum is Go's smallest heap goal at GOGC=100; Go scales it with
// GOGC (runtime's defaultHeapMinimum).
const heapMinimum = 4 << 20

// Percent is the GOGC percent whose heap goal is floor, or base if base's
// goal already reaches it. Go's goal for percent p is the larger of live +
// (live + roots) * p/100, where live is the heap the last collection marked
// and roots the stacks and globals it scanned, and heapMinimum * p/100; the
// percent is capped so that the latter stays at the floor too.
func Percent(live, roots, floor uint64, base int) int {
	if live == 0 {
		// No collection yet: nothing to scale from.
		return base
	}
	if live >= floor {
		return base
	}
	p := math.Ceil(100 * float64(floor-live) / float64(live+roots))
	p = min(p, math.Floor(100*float64(floor)/heapMinimum), math.MaxInt32)
	return int(max(p, float64(base)))
}
