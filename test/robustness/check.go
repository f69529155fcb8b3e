package robustness

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// verdict is what checking one scenario's history found.
type verdict struct {
	Violations   []string
	Ops          int            // operations checked for linearizability
	Unknown      map[string]int // operations left with an unknown outcome after patching, by kind
	Events       int            // distinct revisions seen by watchers
	Complete     bool           // watchers saw every revision up to the final one
	Linearizable porcupine.CheckResult
	CheckTime    time.Duration
	info         porcupine.LinearizationInfo
}

func (v *verdict) violate(format string, args ...any) {
	if len(v.Violations) < 50 {
		v.Violations = append(v.Violations, fmt.Sprintf(format, args...))
	} else if len(v.Violations) == 50 {
		v.Violations = append(v.Violations, "... (more violations left out)")
	}
}

// revEvents is what watchers saw for one revision.
type revEvents struct {
	Events    []event
	FirstSeen int64 // when a watcher first received them
	By        string
}

// check runs every check on a finished scenario: the watch streams, the
// replay of their events against what the clients wrote, the stale reads,
// and the linearizability of the rest. finalRev is the revision of the
// write that ended the scenario.
func check(h *history, watchers []*watcher, comp *compactor, finalRev int64, timeout time.Duration) *verdict {
	v := &verdict{}
	for _, msg := range h.violations {
		v.violate("%s", msg)
	}
	merged := checkWatchers(v, watchers, comp)
	v.Events = len(merged)
	states, replayed := replay(v, h, merged)
	v.Complete = replayed >= finalRev
	if !v.Complete {
		v.violate("watchers saw revisions 2..%d without a gap, not up to the final revision %d", replayed, finalRev)
	}
	checkAcknowledged(v, h, merged, replayed)
	checkStale(v, h, comp, states, replayed)
	ops := patch(v, h, merged, v.Complete)
	v.Ops = len(ops)
	started := time.Now()
	v.Linearizable, v.info = porcupine.CheckOperationsVerbose(kvModel, ops, timeout)
	v.CheckTime = time.Since(started)
	switch v.Linearizable {
	case porcupine.Illegal:
		v.violate("the history is not linearizable: %s", explain(ops, v.info))
	case porcupine.Unknown:
		v.violate("the linearizability check did not finish within %v", timeout)
	}
	return v
}

// checkWatchers checks each watcher's stream on its own (order, atomicity,
// no gaps, compaction) and against the others (the same events for the same
// revision), and returns every revision's events.
func checkWatchers(v *verdict, watchers []*watcher, comp *compactor) map[int64]*revEvents {
	merged := map[int64]*revEvents{}
	for _, w := range watchers {
		w.mu.Lock()
		resps := slices.Clone(w.resps)
		w.mu.Unlock()
		var last int64 // last revision delivered by the current watch
		from := int64(-1)
		for _, r := range resps {
			if r.From != from {
				from, last = r.From, r.From-1
			}
			if r.CompactRevision != 0 {
				if want := last + 1; want >= r.CompactRevision {
					v.violate("watcher %s: compacted at %d, but it asked for %d, which is not below it", w.name, r.CompactRevision, want)
				}
				if m := comp.maxRequested(r.Time); r.CompactRevision > m {
					v.violate("watcher %s: compact_revision %d above every compaction requested so far (%d)", w.name, r.CompactRevision, m)
				}
				continue
			}
			if r.Progress {
				if r.Rev < last {
					v.violate("watcher %s: progress notification at %d after an event at %d", w.name, r.Rev, last)
				}
				last = max(last, r.Rev)
				continue
			}
			byRev := map[int64][]event{}
			var revs []int64
			for i, ev := range r.Events {
				rev := ev.KV.Mod
				if i > 0 && rev < r.Events[i-1].KV.Mod {
					v.violate("watcher %s: events out of order within a response: %d after %d", w.name, rev, r.Events[i-1].KV.Mod)
				}
				if _, ok := byRev[rev]; !ok {
					revs = append(revs, rev)
				}
				byRev[rev] = append(byRev[rev], ev)
			}
			for _, rev := range revs {
				switch {
				case rev <= last:
					v.violate("watcher %s: revision %d delivered after revision %d (duplicate or out of order)", w.name, rev, last)
				case rev > last+1 && last+1 >= 2:
					v.violate("watcher %s: gap: revisions %d..%d missing (watch started at %d)", w.name, last+1, rev-1, from)
				}
				last = max(last, rev)
				evs := byRev[rev]
				for i := range evs {
					for j := range i {
						if evs[j].Key == evs[i].Key {
							v.violate("watcher %s: key k%d twice in revision %d", w.name, evs[i].Key, rev)
						}
					}
				}
				if m, ok := merged[rev]; !ok {
					merged[rev] = &revEvents{Events: evs, FirstSeen: r.Time, By: w.name}
				} else {
					if !sameEvents(m.Events, evs) {
						v.violate("revision %d: watcher %s saw %v, watcher %s saw %v", rev, m.By, m.Events, w.name, evs)
					}
					m.FirstSeen = min(m.FirstSeen, r.Time)
				}
			}
		}
	}
	return merged
}

// sameEvents compares two revisions' events, ignoring prev_kv (which a
// server may leave out).
func sameEvents(a, b []event) bool {
	return slices.EqualFunc(a, b, func(x, y event) bool { return x.Delete == y.Delete && x.Key == y.Key && x.KV == y.KV })
}

// replay rebuilds the store revision by revision from the watched events,
// checking each event against the state before it and against the write
// that must have caused it. It returns the state at every revision up to the
// last one reached without a gap.
func replay(v *verdict, h *history, merged map[int64]*revEvents) (map[int64]state, int64) {
	writes := map[string]record{} // by the unique value written
	for _, r := range h.ops {
		if r.In.Kind == opPut || r.In.Kind == opCAS {
			writes[r.In.Value] = r
		}
	}
	states := map[int64]state{1: initialState()}
	s := initialState()
	rev := int64(1)
	for ; merged[rev+1] != nil; rev++ {
		s.Rev = rev + 1
		for _, ev := range merged[rev+1].Events {
			old := s.Keys[ev.Key]
			if ev.Prev != nil && *ev.Prev != old {
				v.violate("revision %d: prev_kv of k%d is %+v, but the key was %+v", s.Rev, ev.Key, *ev.Prev, old)
			}
			if ev.Delete {
				if !old.exists() || ev.KV.Mod != s.Rev {
					v.violate("revision %d: delete event %+v of k%d, which was %+v", s.Rev, ev.KV, ev.Key, old)
				}
				s.Keys[ev.Key] = keyValue{}
				continue
			}
			w, ok := writes[ev.KV.Value]
			switch {
			case !ok:
				v.violate("revision %d: k%d=%q, a value no client wrote", s.Rev, ev.Key, ev.KV.Value)
			case w.In.Key != ev.Key || w.In.Lease != ev.KV.Lease:
				v.violate("revision %d: event %+v for k%d, but that value was written by %s", s.Rev, ev.KV, ev.Key, describe(w.In, w.Out))
			}
			s.put(ev.Key, ev.KV.Value, ev.KV.Lease)
			want := s.Keys[ev.Key]
			if ev.KV != want {
				v.violate("revision %d: put event %+v of k%d, expected %+v", s.Rev, ev.KV, ev.Key, want)
				s.Keys[ev.Key] = ev.KV
			}
		}
		states[s.Rev] = s
	}
	return states, rev
}

// checkAcknowledged checks that every write acknowledged at a revision the
// watchers covered is what they saw at that revision.
func checkAcknowledged(v *verdict, h *history, merged map[int64]*revEvents, replayed int64) {
	for _, r := range h.ops {
		if r.Out.Unknown || r.Out.LeaseNotFound || r.Out.Rev > replayed {
			continue
		}
		var want event
		switch {
		case r.In.Kind == opPut || (r.In.Kind == opCAS && r.Out.Succeeded):
			want = event{Key: r.In.Key, KV: keyValue{Value: r.In.Value}}
		case r.In.Kind == opDelete && r.Out.Deleted > 0:
			want = event{Delete: true, Key: r.In.Key}
		default:
			continue
		}
		found := false
		if m := merged[r.Out.Rev]; m != nil {
			for _, ev := range m.Events {
				found = found || (ev.Delete == want.Delete && ev.Key == want.Key && (ev.Delete || ev.KV.Value == want.KV.Value))
			}
		}
		if !found {
			v.violate("acknowledged %s is not among the events of revision %d", describe(r.In, r.Out), r.Out.Rev)
		}
	}
}

// checkStale checks serializable gets and later list pages against the state
// at the revision they were served at.
func checkStale(v *verdict, h *history, comp *compactor, states map[int64]state, replayed int64) {
	for _, r := range h.stale {
		at := r.AtRev
		if r.Key >= 0 {
			at = r.Out.Rev
		}
		if r.Err != nil { // only ErrCompacted is recorded
			if m := comp.maxRequested(r.Return); at >= m {
				v.violate("client %d: list page at revision %d: %v, but compaction was only requested up to %d", r.Client, at, r.Err, m)
			}
			continue
		}
		if at > replayed {
			continue // beyond what the watchers covered: nothing to compare with
		}
		s := states[at]
		var want output
		if r.Key >= 0 {
			want, _ = respond(s, input{Kind: opGet, Key: r.Key})
		} else {
			want = pageAt(s, r.From, r.Limit)
		}
		want.Rev = r.Out.Rev
		if !want.equal(r.Out) {
			what := fmt.Sprintf("serializable get(k%d)", r.Key)
			if r.Key < 0 {
				what = fmt.Sprintf("list page from k%d at revision %d", r.From, r.AtRev)
			}
			v.violate("client %d: %s returned %s; the state at revision %d gives %s", r.Client, what,
				describe(input{Kind: opList}, r.Out), at, describe(input{Kind: opList}, want))
		}
	}
}

// pageAt is a list of the keys from k<from> in state s, at most limit of
// them (0: all); the model's lists are pages from k0.
func pageAt(s state, from int, limit int64) output {
	var out output
	for k := from; k < numKeys; k++ {
		kv := s.Keys[k]
		if !kv.exists() {
			continue
		}
		out.Count++
		if limit > 0 && int64(len(out.KVs)) == limit {
			out.More = true
			continue
		}
		out.KVs = append(out.KVs, namedKV{k, kv})
	}
	return out
}

// patch turns the history into porcupine operations. A put or txn whose
// outcome is unknown but whose value a watcher saw took effect at that
// revision, no later than when the watcher saw it; one whose value nobody
// saw, when watchers saw every revision, never took effect and is left out.
// Other unknown outcomes stay open until the end of time.
func patch(v *verdict, h *history, merged map[int64]*revEvents, complete bool) []porcupine.Operation {
	seenAt := map[string]int64{}
	for rev, m := range merged {
		for _, ev := range m.Events {
			if !ev.Delete {
				seenAt[ev.KV.Value] = rev
			}
		}
	}
	acked := map[[2]int64]bool{} // (key, revision) of acknowledged deletes
	for _, r := range h.ops {
		if r.In.Kind == opDelete && !r.Out.Unknown && r.Out.Deleted > 0 {
			acked[[2]int64{int64(r.In.Key), r.Out.Rev}] = true
		}
	}
	var ops []porcupine.Operation
	for _, r := range h.ops {
		out, ret := r.Out, r.Return
		if out.Unknown {
			switch r.In.Kind {
			case opPut, opCAS:
				if rev, ok := seenAt[r.In.Value]; ok {
					out = output{Rev: rev, Succeeded: r.In.Kind == opCAS}
					ret = max(r.Call, merged[rev].FirstSeen)
				} else if complete {
					continue
				} else {
					ret = math.MaxInt64 / 2
				}
			case opGrant:
				continue
			case opDelete:
				if complete && !deletedAfter(merged, acked, r.In.Key, r.Call) {
					continue // it deleted nothing: no event could be its doing
				}
				ret = math.MaxInt64 / 2
			default:
				ret = math.MaxInt64 / 2
			}
		}
		if out.Unknown {
			if v.Unknown == nil {
				v.Unknown = map[string]int{}
			}
			v.Unknown[r.In.Kind.String()]++
		}
		ops = append(ops, porcupine.Operation{ClientId: r.Client, Input: r.In, Call: r.Call, Output: out, Return: ret})
	}
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	return ops
}

// explain describes where the longest linearization porcupine found stops:
// the state it reached, and the earliest-returning operation left out, which
// no order could fit there.
func explain(ops []porcupine.Operation, info porcupine.LinearizationInfo) string {
	var longest []porcupine.Operation
	for _, part := range info.PartialLinearizationsOperations() {
		for _, lin := range part {
			if len(lin) > len(longest) {
				longest = lin
			}
		}
	}
	s := initialState()
	in := map[[2]int64]bool{}
	for _, op := range longest {
		_, next := kvModel.Step(s, op.Input, op.Output)
		s = next.(state)
		in[[2]int64{int64(op.ClientId), op.Call}] = true
	}
	var stuck *porcupine.Operation
	for i := range ops {
		if !in[[2]int64{int64(ops[i].ClientId), ops[i].Call}] && (stuck == nil || ops[i].Return < stuck.Return) {
			stuck = &ops[i]
		}
	}
	if stuck == nil {
		return "no operation left out"
	}
	return fmt.Sprintf("after %d operations the state is %s; client %d's %s (called at %v, returned at %v) fits no order",
		len(longest), s, stuck.ClientId, describe(stuck.Input.(input), stuck.Output.(output)),
		time.Duration(stuck.Call), time.Duration(stuck.Return))
}

// deletedAfter reports whether a watcher received a delete event for key k
// at or after time t that no acknowledged delete accounts for. A delete sent
// at t that took effect produced such an event, since no watcher can receive
// an event before the request exists.
func deletedAfter(merged map[int64]*revEvents, acked map[[2]int64]bool, k int, t int64) bool {
	for rev, m := range merged {
		if m.FirstSeen < t || acked[[2]int64{int64(k), rev}] {
			continue
		}
		for _, ev := range m.Events {
			if ev.Delete && ev.Key == k {
				return true
			}
		}
	}
	return false
}
