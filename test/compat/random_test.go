package compat

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// testRandom runs a seeded random sequence of puts, deletes, txns, reads at
// past revisions and compactions over a small key space, comparing every
// operation. COMPAT_SEED and COMPAT_RANDOM_OPS change the seed (default 1)
// and the length (default 2000); the failing step and the seed are printed,
// so a failure replays exactly.
func testRandom(t *testing.T, p *pair) {
	seed := envInt(t, "COMPAT_SEED", 1)
	n := envInt(t, "COMPAT_RANDOM_OPS", 2000)
	t.Logf("seed %d, %d operations (COMPAT_SEED, COMPAT_RANDOM_OPS)", seed, n)
	p.begin(t)
	g := &gen{
		rng:       rand.New(rand.NewPCG(uint64(seed), 0x62616c6c617374)),
		base:      p.ref.base,
		compacted: p.ref.base,
		leases:    []int{1, 2},
	}
	mismatches := p.run(t, ops(grant(3600), grant(3600)))

	// A watch over the whole key space of the sequence, open throughout.
	live := map[*target]*liveWatch{}
	var mu sync.Mutex
	p.both(func(tg *target) {
		w := openWatch(context.Background(), tg, &pb.WatchCreateRequest{
			Key: []byte("rnd/"), RangeEnd: []byte("rnd0"), PrevKv: true})
		w.background()
		mu.Lock()
		live[tg] = w
		mu.Unlock()
	})
	defer p.both(func(tg *target) { live[tg].close() })

	for i := range n {
		s := g.next(i, p.ref.rev)
		if !p.check(t, i, s) {
			mismatches++
			if mismatches >= maxMismatches {
				t.Fatalf("stopping after %d mismatches (seed %d)", mismatches, seed)
			}
		}
	}
	p.run(t, ops(
		step{desc: "all events of the watch on rnd/ --prev-kv open since the start", run: func(_ context.Context, tg *target) string {
			live[tg].drain()
			return live[tg].out.String()
		}},
		watch("rnd/", wPrefix(), wPrevKV(), wStart(absRev(g.compacted+1))),
		get("rnd/", prefix()),
		revoke(lease(g.leases[0])),
		revoke(lease(g.leases[1])),
	))
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

// gen generates random operations. It only reads the reference's revision,
// so both servers get the same sequence.
type gen struct {
	rng       *rand.Rand
	base      int64 // revision before the first operation
	compacted int64 // last compaction revision
	leases    []int // live leases, as case lease numbers
	granted   int   // leases granted so far
}

const randomKeys = 8

func (g *gen) key() string    { return fmt.Sprintf("rnd/k%d", g.rng.IntN(randomKeys)) }
func (g *gen) value() string  { return fmt.Sprintf("v%d", g.rng.IntN(6)) }
func (g *gen) pct(p int) bool { return g.rng.IntN(100) < p }

// rev returns a revision in [lo, cur]: usually one that is not compacted.
func (g *gen) rev(cur int64) int64 {
	lo := g.compacted
	if g.pct(5) {
		lo = g.base
	}
	if cur <= lo {
		return cur
	}
	return lo + g.rng.Int64N(cur-lo+1)
}

func (g *gen) next(i int, cur int64) step {
	switch {
	case i%500 == 250:
		// A compaction, at or a little below the current revision.
		r := cur - g.rng.Int64N(20)
		if r <= g.compacted {
			r = cur
		}
		g.compacted = r
		return compact(absRev(r))
	case i == 1000:
		// Revoke a lease that keys are attached to, and grant a new one.
		g.granted++
		old := g.leases[0]
		g.leases = []int{g.leases[1], 2 + g.granted}
		return revoke(lease(old))
	case i == 1001:
		return grant(3600)
	}
	switch r := g.rng.IntN(100); {
	case r < 30:
		return g.put()
	case r < 40:
		return g.del()
	case r < 65:
		return g.txn(cur, true)
	case r < 97:
		return g.get(cur)
	case r < 98:
		return get(g.key(), atRev(absRev(cur+1+g.rng.Int64N(5))))
	default:
		return getStream("rnd/", prefix(), atRev(absRev(g.rev(cur))), limit(g.rng.Int64N(4)))
	}
}

func (g *gen) put() step {
	var o []opt
	v := g.value()
	switch {
	case g.pct(10):
		o = append(o, withLease(lease(g.leases[g.rng.IntN(len(g.leases))])))
	case g.pct(5):
		o = append(o, ignoreLease())
	case g.pct(5):
		o, v = append(o, ignoreValue()), ""
	}
	if g.pct(20) {
		o = append(o, prevKV())
	}
	return put(g.key(), v, o...)
}

func (g *gen) del() step {
	var o []opt
	k := g.key()
	switch r := g.rng.IntN(10); {
	case r < 3:
		o = append(o, rangeEnd(g.key()))
	case r < 4:
		k = "rnd/"
		o = append(o, prefix())
	}
	if g.pct(30) {
		o = append(o, prevKV())
	}
	return del(k, o...)
}

func (g *gen) get(cur int64) step {
	var o []opt
	k := g.key()
	switch r := g.rng.IntN(10); {
	case r < 3:
		o = append(o, rangeEnd(g.key()))
	case r < 6:
		k = "rnd/"
		o = append(o, prefix())
	}
	if g.pct(40) {
		o = append(o, atRev(absRev(g.rev(cur))))
	}
	if g.pct(20) {
		o = append(o, limit(g.rng.Int64N(4)))
	}
	if g.pct(20) {
		o = append(o, sortBy(sortTargets[g.rng.IntN(len(sortTargets))], sortOrders[g.rng.IntN(len(sortOrders))]))
	}
	switch r := g.rng.IntN(20); {
	case r < 2:
		o = append(o, countOnly())
	case r < 4:
		o = append(o, keysOnly())
	case r < 5:
		o = append(o, minMod(absRev(g.rev(cur))))
	case r < 6:
		o = append(o, maxCreate(absRev(g.rev(cur))))
	}
	if g.pct(10) {
		o = append(o, serializable())
	}
	return get(k, o...)
}

// txn returns a txn of random compares and branches; some keys repeat, so
// some txns are rejected as duplicates, which is compared too.
func (g *gen) txn(cur int64, nest bool) step {
	cmps := make([]cmp, g.rng.IntN(3))
	for i := range cmps {
		cmps[i] = g.cmp(cur)
	}
	branch := func() []step {
		ss := make([]step, g.rng.IntN(4))
		for i := range ss {
			switch r := g.rng.IntN(10); {
			case r < 4:
				ss[i] = put(g.key(), g.value(), g.maybe(20, prevKV())...)
			case r < 6:
				ss[i] = del(g.key(), g.maybe(30, prevKV())...)
			case r < 9 || !nest:
				ss[i] = get(g.key(), g.maybe(30, prefix())...)
			default:
				ss[i] = g.txn(cur, false)
			}
		}
		return ss
	}
	return txn(cmps, branch(), branch())
}

func (g *gen) maybe(p int, o opt) []opt {
	if g.pct(p) {
		return []opt{o}
	}
	return nil
}

func (g *gen) cmp(cur int64) cmp {
	k := g.key()
	r := cmpResults[g.rng.IntN(len(cmpResults))]
	var c cmp
	switch g.rng.IntN(5) {
	case 0:
		c = cmpValue(k, r, g.value())
	case 1:
		c = cmpVersion(k, r, g.rng.Int64N(5))
	case 2:
		c = cmpCreate(k, r, absRev(g.base+g.rng.Int64N(cur-g.base+2)))
	case 3:
		c = cmpMod(k, r, absRev(g.base+g.rng.Int64N(cur-g.base+2)))
	default:
		l := rawLease(0)
		if g.pct(50) {
			l = lease(g.leases[g.rng.IntN(len(g.leases))])
		}
		c = cmpLease(k, r, l)
	}
	if g.pct(10) {
		c = c.withPrefix()
	}
	return c
}
