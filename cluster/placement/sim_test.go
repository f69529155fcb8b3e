package placement

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestSimulation plays the reconciler on random clusters: random regions,
// zones, roles, failures and lag, several fixed seeds. converge checks every
// applied change (only caught-up members promoted, nothing down briefly
// touched, the leader never demoted or removed), that the voters that are up
// stay a majority whenever they were one, and that a fixed point is reached
// within a bound. Then time passes and lagging members catch up, dead
// members come back, a voter dies; after each, the cluster must settle again,
// and at the end it must meet the count and spread rules.
func TestSimulation(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
		for i := range 150 {
			f, p := randomCluster(rng)
			t.Run(fmt.Sprintf("seed%d/%d", seed, i), func(t *testing.T) {
				simulate(t, rng, f, p)
			})
		}
	}
}

func randomCluster(rng *rand.Rand) (Facts, Policy) {
	regions := []string{"eu", "us", "ap", "sa", "af"}[:1+rng.IntN(5)]
	if rng.IntN(6) == 0 {
		regions = append(regions, "") // some unlabelled members
	}
	n := 1 + rng.IntN(12)
	f := Facts{CommitIndex: commit}
	var voters []uint64
	for i := range n {
		m := Member{
			ID:      uint64(100 + i),
			Name:    fmt.Sprintf("m%d", i),
			Region:  regions[rng.IntN(len(regions))],
			Zone:    []string{"a", "b", "c"}[rng.IntN(1+rng.IntN(3))],
			Role:    []Role{Voter, Voter, NonVoter, NonVoter, Absent}[rng.IntN(5)],
			Alive:   rng.IntN(5) > 0,
			Applied: commit - uint64(rng.IntN(3))*uint64(rng.IntN(3000)),
		}
		if !m.Alive {
			m.DownFor = []time.Duration{time.Second, 4 * time.Minute, stab, time.Hour}[rng.IntN(4)]
		}
		if m.Role == Voter && m.Alive {
			voters = append(voters, m.ID)
		}
		f.Members = append(f.Members, m)
	}
	if len(voters) > 0 {
		f.Leader = voters[rng.IntN(len(voters))]
	}
	p := Policy{
		Voters:        []int{0, 0, 0, 1, 3, 4, 5, 7, 9}[rng.IntN(9)],
		Stabilization: stab,
	}
	if rng.IntN(3) == 0 {
		p.LeaderRegion = regions[rng.IntN(len(regions))]
	}
	return f, p
}

func simulate(t *testing.T, rng *rand.Rand, f Facts, p Policy) {
	if !quorate(f) {
		if plan := Plan(f, p); len(plan) != 0 {
			t.Fatalf("no quorum, yet a plan: %s", list(plan))
		}
		return
	}
	f, _ = converge(t, f, p)

	// Time passes: every member down is now dead, every member up caught up.
	f = clone(f)
	for i := range f.Members {
		m := &f.Members[i]
		if m.Alive {
			m.Applied = commit
		} else {
			m.DownFor += stab
		}
	}
	f, _ = converge(t, f, p)
	settled(t, f, p)

	// Dead members come back, behind, then catch up.
	f = clone(f)
	for i := range f.Members {
		if m := &f.Members[i]; !m.Alive && rng.IntN(2) == 0 {
			m.Alive, m.DownFor, m.Applied = true, 0, commit-50_000
		}
	}
	f, _ = converge(t, f, p)
	for i := range f.Members {
		f.Members[i].Applied = commit
	}
	f, _ = converge(t, f, p)
	settled(t, f, p)

	// A voter other than the leader dies, if the cluster survives it.
	var victims []int
	for i, m := range f.Members {
		if m.Role == Voter && m.ID != f.Leader {
			victims = append(victims, i)
		}
	}
	if len(victims) == 0 {
		return
	}
	f = clone(f)
	m := &f.Members[victims[rng.IntN(len(victims))]]
	m.Alive, m.DownFor = false, stab
	if !quorate(f) {
		return
	}
	f, _ = converge(t, f, p)
	settled(t, f, p)
}

// settled checks a cluster at its fixed point in which no member is down
// briefly and every member up is caught up: no dead member in the
// configuration, every member up in it, the voter count the policy asks for,
// and, when at least that many members can vote, the voters spread as
// evenly over regions, and over each region's zones, as the members allow.
func settled(t *testing.T, f Facts, p Policy) {
	t.Helper()
	up, population := 0, 0
	regions := map[string]bool{}
	capacity := map[string]int{}
	zcap := map[string]map[string]int{}
	voters := 0
	for _, m := range f.Members {
		if !m.Alive && !isDead(p, &m) {
			t.Fatalf("member %s neither up nor dead: %+v", m.Name, m)
		}
		if m.Role != Absent && !m.Alive {
			t.Errorf("dead member %s is still a %v", m.Name, m.Role)
		}
		if m.Role == Absent && m.Alive {
			t.Errorf("member %s is up but not in the configuration", m.Name)
		}
		if !m.Alive {
			continue
		}
		up++
		population++
		if m.Region != "" {
			regions[m.Region] = true
		}
		capacity[m.Region]++
		if zcap[m.Region] == nil {
			zcap[m.Region] = map[string]int{}
		}
		zcap[m.Region][m.Zone]++
		if m.Role == Voter {
			voters++
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	want := p.Voters
	if want <= 0 {
		want = 3
		if population >= 5 && len(regions) >= 3 {
			want = 5
		}
	}
	if want%2 == 0 {
		want--
	}
	if up < want {
		// Fewer members than the target: the largest odd number, or an even
		// number of voters that every member up holds.
		if voters != up-(1-up%2) && voters != up {
			t.Fatalf("%d voters of %d members, policy %d: want %d (or all %d)", voters, up, want, up-(1-up%2), up)
		}
		return
	}
	if voters != want {
		t.Fatalf("%d voters of %d members, want %d", voters, up, want)
	}
	rv, _ := voterSpread(f)
	if got, best := maxOf(rv), evenest(want, capacity); got != best {
		t.Fatalf("voters per region %v (members %v): largest %d, want %d", rv, capacity, got, best)
	}
	if best := evenest(want, capacity); 2*best < want {
		// No region need hold a majority, so none does: any one can go.
		if lost, _, _ := Tolerance(f.Members); lost < 1 {
			t.Fatalf("voters per region %v survive the loss of no region", rv)
		}
	}
	for r, n := range rv {
		zv := map[string]int{}
		for _, m := range f.Members {
			if m.Role == Voter && m.Region == r {
				zv[m.Zone]++
			}
		}
		if got, best := maxOf(zv), evenest(n, zcap[r]); got != best {
			t.Fatalf("region %q: voters per zone %v (members %v): largest %d, want %d", r, zv, zcap[r], got, best)
		}
	}
	if lr := p.LeaderRegion; lr != "" {
		if l := find(f, f.Leader); l.Region != lr && rv[lr] > 0 {
			t.Fatalf("leader %s in region %q, a voter is in the preferred region %q", l.Name, l.Region, lr)
		}
	}
}

// evenest is the smallest largest share possible when n voters are spread
// over groups with these many members.
func evenest(n int, members map[string]int) int {
	for share := 0; ; share++ {
		fit := 0
		for _, c := range members {
			fit += min(c, share)
		}
		if fit >= n {
			return share
		}
	}
}

func maxOf(m map[string]int) int {
	most := 0
	for _, v := range m {
		most = max(most, v)
	}
	return most
}
