package robustness

import (
	"strings"
	"testing"
	"time"
)

// The checker is what makes a scenario's pass mean something, so it is
// tested on its own: each history below breaks one promise, and the checker
// must name it; the correct ones must pass.

// fixture builds a history and one watcher's stream by hand.
type fixture struct {
	h *history
	w *watcher
	c *compactor
	t int64
}

func newFixture() *fixture {
	h := &history{}
	return &fixture{h: h, w: &watcher{name: "w", h: h, start: 1}, c: &compactor{h: h}}
}

// op records a request that took 10 time units, starting after the last.
func (f *fixture) op(client int, in input, out output) {
	f.t += 10
	f.h.ops = append(f.h.ops, record{Client: client, In: in, Out: out, Call: f.t, Return: f.t + 10})
	f.t += 10
}

// events records a watch response holding one revision's events.
func (f *fixture) events(evs ...event) {
	f.w.resps = append(f.w.resps, watchResponse{From: f.w.start, Time: f.t, Events: evs})
}

func putEv(k int, value string, create, mod, version int64) event {
	return event{Key: k, KV: keyValue{Value: value, Create: create, Mod: mod, Version: version}}
}

func (f *fixture) check(finalRev int64) *verdict {
	return check(f.h, []*watcher{f.w}, f.c, finalRev, 10*time.Second)
}

func wantViolation(t *testing.T, v *verdict, substr string) {
	t.Helper()
	for _, msg := range v.Violations {
		if strings.Contains(msg, substr) {
			return
		}
	}
	t.Fatalf("no violation mentioning %q; got %q", substr, v.Violations)
}

func wantClean(t *testing.T, v *verdict) {
	t.Helper()
	if len(v.Violations) > 0 {
		t.Fatalf("violations in a correct history: %q", v.Violations)
	}
}

// twoPuts is a correct history: two puts, a read of both, and the watch.
func twoPuts() *fixture {
	f := newFixture()
	f.op(0, input{Kind: opPut, Key: 1, Value: "a"}, output{Rev: 2})
	f.events(putEv(1, "a", 2, 2, 1))
	f.op(1, input{Kind: opPut, Key: 1, Value: "b"}, output{Rev: 3})
	f.events(putEv(1, "b", 2, 3, 2))
	f.op(0, input{Kind: opList}, output{Rev: 3, Count: 1,
		KVs: []namedKV{{1, keyValue{Value: "b", Create: 2, Mod: 3, Version: 2}}}})
	return f
}

func TestCheckAcceptsACorrectHistory(t *testing.T) {
	f := twoPuts()
	v := f.check(3)
	wantClean(t, v)
	if v.Ops != 3 || !v.Complete {
		t.Fatalf("checked %d ops, complete=%v", v.Ops, v.Complete)
	}
}

func TestCheckFindsALostWrite(t *testing.T) {
	f := twoPuts()
	// A read after both puts that sees the first one only.
	f.op(2, input{Kind: opGet, Key: 1}, output{Rev: 3, Count: 1,
		KVs: []namedKV{{1, keyValue{Value: "a", Create: 2, Mod: 2, Version: 1}}}})
	wantViolation(t, f.check(3), "not linearizable")
}

func TestCheckFindsAStaleLinearizableRead(t *testing.T) {
	f := newFixture()
	f.op(0, input{Kind: opPut, Key: 1, Value: "a"}, output{Rev: 2})
	f.events(putEv(1, "a", 2, 2, 1))
	f.op(1, input{Kind: opGet, Key: 1}, output{Rev: 1}) // after the put returned
	wantViolation(t, f.check(2), "not linearizable")
}

func TestCheckFindsAWatchGap(t *testing.T) {
	f := newFixture()
	f.op(0, input{Kind: opPut, Key: 1, Value: "a"}, output{Rev: 2})
	f.op(0, input{Kind: opPut, Key: 2, Value: "b"}, output{Rev: 3})
	f.op(0, input{Kind: opPut, Key: 3, Value: "c"}, output{Rev: 4})
	f.events(putEv(1, "a", 2, 2, 1))
	f.events(putEv(3, "c", 4, 4, 1)) // revision 3 never delivered
	v := f.check(4)
	wantViolation(t, v, "gap")
	wantViolation(t, v, "not up to the final revision")
}

func TestCheckFindsADuplicateEvent(t *testing.T) {
	f := twoPuts()
	f.events(putEv(1, "b", 2, 3, 2))
	wantViolation(t, f.check(3), "duplicate or out of order")
}

func TestCheckFindsAPhantomEvent(t *testing.T) {
	f := twoPuts()
	f.events(putEv(2, "never-written", 4, 4, 1))
	wantViolation(t, f.check(3), "a value no client wrote")
}

func TestCheckFindsAnAcknowledgedWriteMissingFromTheWatch(t *testing.T) {
	f := newFixture()
	f.op(0, input{Kind: opPut, Key: 1, Value: "a"}, output{Rev: 2})
	f.op(1, input{Kind: opPut, Key: 2, Value: "b"}, output{Rev: 3})
	f.events(putEv(1, "a", 2, 2, 1))
	f.events(putEv(2, "other", 3, 3, 1))
	f.op(0, input{Kind: opPut, Key: 2, Value: "other"}, output{Unknown: true})
	wantViolation(t, f.check(3), "is not among the events of revision 3")
}

func TestCheckFindsAWrongSerializableRead(t *testing.T) {
	f := twoPuts()
	// Served at revision 2, where k1 was "a", but it returned "b".
	f.h.stale = append(f.h.stale, staleRead{Client: 3, Key: 1, Out: output{Rev: 2, Count: 1,
		KVs: []namedKV{{1, keyValue{Value: "b", Create: 2, Mod: 3, Version: 2}}}}})
	wantViolation(t, f.check(3), "serializable get(k1)")
	// The same read returning "a" is fine: stale, but true at revision 2.
	g := twoPuts()
	g.h.stale = append(g.h.stale, staleRead{Client: 3, Key: 1, Out: output{Rev: 2, Count: 1,
		KVs: []namedKV{{1, keyValue{Value: "a", Create: 2, Mod: 2, Version: 1}}}}})
	wantClean(t, g.check(3))
}

func TestCheckFindsAWrongCompactRevision(t *testing.T) {
	f := twoPuts()
	// Compacted at 3 although nobody asked for a compaction.
	f.w.resps = append(f.w.resps, watchResponse{From: 1, Time: f.t, CompactRevision: 3})
	wantViolation(t, f.check(3), "above every compaction requested")
}

// A put whose client saw an error, but which took effect, is placed where
// the watch saw it; one that nobody saw is left out.
func TestCheckResolvesUnknownPutsFromTheWatch(t *testing.T) {
	f := newFixture()
	f.op(0, input{Kind: opPut, Key: 1, Value: "a"}, output{Unknown: true})
	f.events(putEv(1, "a", 2, 2, 1))
	f.op(1, input{Kind: opPut, Key: 1, Value: "lost"}, output{Unknown: true})
	f.op(1, input{Kind: opGet, Key: 1}, output{Rev: 2, Count: 1,
		KVs: []namedKV{{1, keyValue{Value: "a", Create: 2, Mod: 2, Version: 1}}}})
	v := f.check(2)
	wantClean(t, v)
	if len(v.Unknown) != 0 || v.Ops != 2 {
		t.Fatalf("unknown %v, %d ops; want both puts resolved (one applied, one left out)", v.Unknown, v.Ops)
	}
}

// The model's lease rules: a put with a revoked lease fails, and a revoke
// deletes the lease's keys in one revision.
func TestModelLeases(t *testing.T) {
	s := initialState()
	ok, s1 := kvModel.Step(s, input{Kind: opGrant}, output{LeaseID: 7})
	if !ok {
		t.Fatal("grant refused")
	}
	s = s1.(state)
	for k, want := range []int64{2, 3} {
		var o output
		o, s = respond(s, input{Kind: opPut, Key: k, Value: "v", Lease: 7})
		if o.Rev != want {
			t.Fatalf("put with lease: rev %d, want %d", o.Rev, want)
		}
	}
	_, s = respond(s, input{Kind: opRevoke, Lease: 7})
	if s.Rev != 4 || s.Keys[0].exists() || s.Keys[1].exists() {
		t.Fatalf("after revoke: %s; want both keys gone in revision 4", s)
	}
	if o, _ := respond(s, input{Kind: opPut, Key: 0, Value: "v", Lease: 7}); !o.LeaseNotFound {
		t.Fatalf("put with a revoked lease: %+v", o)
	}
}
