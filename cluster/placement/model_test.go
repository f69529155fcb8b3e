package placement

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// The tests' own model of a cluster, written from the policy rather than from
// plan.go, so that a change Plan should not make fails here.

const (
	commit = 1_000_000
	stab   = 5 * time.Minute
)

// mem is an up, caught-up member; its ID is derived from its name ("a1" and
// "b2" get distinct IDs) so failures read well.
func mem(name, region, zone string, role Role) Member {
	return Member{ID: idOf(name), Name: name, Region: region, Zone: zone, Role: role, Alive: true, Applied: commit}
}

func idOf(name string) uint64 {
	var id uint64
	for _, c := range name {
		id = id*131 + uint64(c)
	}
	return id
}

func down(m Member, d time.Duration) Member {
	m.Alive, m.DownFor = false, d
	return m
}

func lagging(m Member, behind uint64) Member {
	m.Applied = commit - behind
	return m
}

func find(f Facts, id uint64) *Member {
	for i := range f.Members {
		if f.Members[i].ID == id {
			return &f.Members[i]
		}
	}
	return nil
}

func stabOf(p Policy) time.Duration {
	if p.Stabilization <= 0 {
		return DefaultStabilization
	}
	return p.Stabilization
}

func lagOf(p Policy) uint64 {
	if p.MaxLag == 0 {
		return DefaultMaxLag
	}
	return p.MaxLag
}

func caughtUp(f Facts, p Policy, m *Member) bool {
	return m.Alive && m.Applied+lagOf(p) >= f.CommitIndex
}

func isDead(p Policy, m *Member) bool { return !m.Alive && m.DownFor >= stabOf(p) }

func quorate(f Facts) bool {
	n, up := 0, 0
	for _, m := range f.Members {
		if m.Role == Voter {
			n++
			if m.Alive {
				up++
			}
		}
	}
	return 2*up > n
}

func clone(f Facts) Facts {
	f.Members = slices.Clone(f.Members)
	return f
}

// check returns an error if c is a change an operator must never see on f.
func check(f Facts, p Policy, c Change) error {
	m := find(f, c.ID)
	if m == nil {
		return fmt.Errorf("%v: no such member", c)
	}
	leader := m.ID == f.Leader
	switch c.Kind {
	case AddNonVoter:
		if m.Role != Absent || !m.Alive {
			return fmt.Errorf("%v: member is %v, alive=%v", c, m.Role, m.Alive)
		}
	case Promote:
		if m.Role != NonVoter || !caughtUp(f, p, m) {
			return fmt.Errorf("%v: member is %v, alive=%v, applied %d of %d", c, m.Role, m.Alive, m.Applied, f.CommitIndex)
		}
	case Demote:
		if m.Role != Voter || !m.Alive || leader {
			return fmt.Errorf("%v: member is %v, alive=%v, leader=%v", c, m.Role, m.Alive, leader)
		}
	case Remove:
		if m.Role == Absent || !isDead(p, m) || leader {
			return fmt.Errorf("%v: member is %v, alive=%v, down for %v, leader=%v", c, m.Role, m.Alive, m.DownFor, leader)
		}
	case TransferLeader:
		if m.Role != Voter || !caughtUp(f, p, m) || leader {
			return fmt.Errorf("%v: member is %v, alive=%v, applied %d, leader=%v", c, m.Role, m.Alive, m.Applied, leader)
		}
	default:
		return fmt.Errorf("%v: unknown kind", c)
	}
	if c.Reason == "" {
		return fmt.Errorf("%v: no reason", c)
	}
	return nil
}

// apply is a change's effect on the facts.
func apply(f Facts, c Change) Facts {
	f = clone(f)
	m := find(f, c.ID)
	switch c.Kind {
	case AddNonVoter, Demote:
		m.Role = NonVoter
	case Promote:
		m.Role = Voter
	case Remove:
		m.Role = Absent
	case TransferLeader:
		f.Leader = c.ID
	}
	return f
}

// converge plays the reconciler: apply the first change, plan again, until
// the plan is empty. Every change is checked, the voters that are up must
// stay a majority, and the rest of each plan must be the next plan (the
// list is the sequence of first changes). It returns the final facts and the
// changes applied.
func converge(t *testing.T, f Facts, p Policy) (Facts, []Change) {
	t.Helper()
	bound := 6*len(f.Members) + 4
	var done []Change
	plan := Plan(f, p)
	for len(plan) > 0 {
		if len(done) == bound {
			t.Fatalf("no fixed point after %d changes: %s\nnext: %s", bound, list(done), list(plan))
		}
		c := plan[0]
		if err := check(f, p, c); err != nil {
			t.Fatalf("after %s:\n%v", list(done), err)
		}
		before := quorate(f)
		f = apply(f, c)
		done = append(done, c)
		if before && !quorate(f) {
			t.Fatalf("%v lost the quorum (after %s)", c, list(done))
		}
		next := Plan(f, p)
		if !slices.Equal(next, plan[1:]) {
			t.Fatalf("after %v the plan is\n%s\nwant the rest of the previous one\n%s", c, list(next), list(plan[1:]))
		}
		plan = next
	}
	return f, done
}

func list(cs []Change) string {
	if len(cs) == 0 {
		return "(none)"
	}
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "\n\t%v", c)
	}
	return b.String()
}

// voterSpread counts the voters per region, and per region/zone.
func voterSpread(f Facts) (map[string]int, map[string]int) {
	regions, zones := map[string]int{}, map[string]int{}
	for _, m := range f.Members {
		if m.Role == Voter {
			regions[m.Region]++
			zones[m.Region+"/"+m.Zone]++
		}
	}
	return regions, zones
}

func counts(m map[string]int) []int {
	vs := slices.Collect(maps.Values(m))
	slices.Sort(vs)
	slices.Reverse(vs)
	return vs
}

func roleOf(f Facts, name string) Role {
	if m := find(f, idOf(name)); m != nil {
		return m.Role
	}
	return -1
}
