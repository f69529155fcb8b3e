package placement

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func facts(leader string, ms ...Member) Facts {
	return Facts{Members: ms, Leader: idOf(leader), CommitIndex: commit}
}

// TestSettles runs each cluster to its fixed point through converge (which
// checks every change and the quorum) and checks where the voters end up.
func TestSettles(t *testing.T) {
	tests := []struct {
		name    string
		f       Facts
		p       Policy
		regions []int    // voters per region, largest first
		zones   []int    // voters per region/zone, largest first (nil: not checked)
		voters  []string // exact voter set (nil: not checked)
		leader  string   // "" = unchanged
	}{
		{
			name: "seven members over three regions 3/2/2 get five voters 2/2/1",
			f: facts("a1",
				mem("a1", "A", "a", Voter), mem("a2", "A", "b", NonVoter), mem("a3", "A", "c", NonVoter),
				mem("b1", "B", "a", Voter), mem("b2", "B", "b", NonVoter),
				mem("c1", "C", "a", Voter), mem("c2", "C", "b", NonVoter)),
			regions: []int{2, 2, 1},
			zones:   []int{1, 1, 1, 1, 1},
		},
		{
			name: "seven members over three regions 3/3/1 get five voters 2/2/1",
			f: facts("a1",
				mem("a1", "A", "a", Voter), mem("a2", "A", "b", NonVoter), mem("a3", "A", "c", NonVoter),
				mem("b1", "B", "a", NonVoter), mem("b2", "B", "b", NonVoter), mem("b3", "B", "c", NonVoter),
				mem("c1", "C", "a", NonVoter)),
			regions: []int{2, 2, 1},
			zones:   []int{1, 1, 1, 1, 1},
			voters:  []string{"a1", "a2", "b1", "b2", "c1"},
		},
		{
			name: "seven members, all voters in one region at first, are moved to 2/2/1",
			f: facts("a1",
				mem("a1", "A", "a", Voter), mem("a2", "A", "a", Voter), mem("a3", "A", "b", Voter),
				mem("b1", "B", "a", NonVoter), mem("b2", "B", "b", NonVoter),
				mem("c1", "C", "a", NonVoter), mem("c2", "C", "a", NonVoter)),
			regions: []int{2, 2, 1},
			zones:   []int{1, 1, 1, 1, 1},
		},
		{
			name: "three regions one member each get three voters 1/1/1",
			f: facts("a1",
				mem("a1", "A", "a", Voter), mem("b1", "B", "a", NonVoter), mem("c1", "C", "a", NonVoter)),
			regions: []int{1, 1, 1},
		},
		{
			name:    "a single member is one voter",
			f:       facts("a1", mem("a1", "A", "a", Voter)),
			regions: []int{1},
			voters:  []string{"a1"},
		},
		{
			name: "two members keep one voter (no even count by promotion)",
			f:    facts("a1", mem("a1", "A", "a", Voter), mem("b1", "B", "a", NonVoter)),
			// The leader's region keeps its voter: nothing to gain by moving it.
			voters: []string{"a1"},
		},
		{
			name:   "two voters and nothing else stay two",
			f:      facts("a1", mem("a1", "A", "a", Voter), mem("b1", "B", "a", Voter)),
			voters: []string{"a1", "b1"},
		},
		{
			name: "two regions of two get three voters 2/1",
			f: facts("a1",
				mem("a1", "A", "a", Voter), mem("a2", "A", "b", NonVoter),
				mem("b1", "B", "a", NonVoter), mem("b2", "B", "b", NonVoter)),
			regions: []int{2, 1},
			zones:   []int{1, 1, 1},
		},
		{
			name: "two regions of three, five voters asked for, get 3/2",
			f: facts("a1",
				mem("a1", "A", "a", Voter), mem("a2", "A", "b", Voter), mem("a3", "A", "c", Voter),
				mem("b1", "B", "a", NonVoter), mem("b2", "B", "b", NonVoter), mem("b3", "B", "c", NonVoter)),
			p:       Policy{Voters: 5},
			regions: []int{3, 2},
		},
		{
			name: "one region, three zones 3/1/1: voters 1/1/1",
			f: facts("a1",
				mem("a1", "A", "a", Voter), mem("a2", "A", "a", Voter), mem("a3", "A", "a", Voter),
				mem("a4", "A", "b", NonVoter), mem("a5", "A", "c", NonVoter)),
			zones:  []int{1, 1, 1},
			voters: []string{"a1", "a4", "a5"},
		},
		{
			name: "an even Policy.Voters is rounded down",
			f: facts("a1",
				mem("a1", "A", "a", Voter), mem("b1", "B", "a", NonVoter), mem("c1", "C", "a", NonVoter),
				mem("d1", "D", "a", NonVoter), mem("e1", "E", "a", NonVoter)),
			p:       Policy{Voters: 4},
			regions: []int{1, 1, 1},
		},
		{
			name: "a lowered target demotes the surplus, never the leader, and keeps the spread",
			f: facts("a1",
				mem("a1", "A", "a", Voter), mem("a2", "A", "b", Voter),
				mem("b1", "B", "a", Voter), mem("b2", "B", "b", Voter),
				mem("c1", "C", "a", Voter)),
			p:       Policy{Voters: 3},
			regions: []int{1, 1, 1},
			voters:  []string{"a1", "b1", "c1"},
		},
		{
			name: "the leader in a crowded region keeps its vote; others are moved",
			f: facts("a3",
				mem("a1", "A", "a", Voter), mem("a2", "A", "b", Voter), mem("a3", "A", "c", Voter),
				mem("b1", "B", "a", NonVoter), mem("c1", "C", "a", NonVoter)),
			p:       Policy{Voters: 3},
			regions: []int{1, 1, 1},
			voters:  []string{"a3", "b1", "c1"},
		},
		{
			name: "a single voter moves to the leader region: promote, hand over, demote",
			f: facts("a1",
				mem("a1", "A", "a", Voter), mem("b1", "B", "a", NonVoter)),
			p:      Policy{Voters: 1, LeaderRegion: "B"},
			voters: []string{"b1"},
			leader: "b1",
		},
		{
			name: "the leader moves to the preferred region, to its most caught-up voter",
			f: facts("a1",
				mem("a1", "A", "a", Voter), mem("a2", "A", "b", NonVoter),
				lagging(mem("b1", "B", "a", Voter), 10), mem("b2", "B", "b", Voter),
				mem("c1", "C", "a", Voter), mem("c2", "C", "b", NonVoter)),
			p:       Policy{LeaderRegion: "B"},
			regions: []int{2, 2, 1},
			leader:  "b2",
		},
		{
			name: "a preferred leader region without a voter gets one",
			f: facts("a1",
				mem("a1", "A", "a", Voter), mem("b1", "B", "a", Voter), mem("c1", "C", "a", Voter),
				mem("d1", "D", "a", NonVoter)),
			p:      Policy{LeaderRegion: "D"},
			voters: []string{"a1", "b1", "d1"},
			leader: "d1",
		},
		{
			name: "unlabelled members count as one region",
			f: facts("x1",
				mem("x1", "", "", Voter), mem("x2", "", "", NonVoter), mem("x3", "", "", NonVoter),
				mem("a1", "A", "a", NonVoter)),
			regions: []int{2, 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, done := converge(t, tt.f, tt.p)
			regions, zones := voterSpread(f)
			if tt.regions != nil && !slices.Equal(counts(regions), tt.regions) {
				t.Errorf("voters per region %v, want %v; changes: %s", regions, tt.regions, list(done))
			}
			if tt.zones != nil && !slices.Equal(counts(zones), tt.zones) {
				t.Errorf("voters per zone %v, want %v; changes: %s", zones, tt.zones, list(done))
			}
			if tt.voters != nil {
				var got []string
				for _, m := range f.Members {
					if m.Role == Voter {
						got = append(got, m.Name)
					}
				}
				slices.Sort(got)
				if !slices.Equal(got, tt.voters) {
					t.Errorf("voters %v, want %v; changes: %s", got, tt.voters, list(done))
				}
			}
			if tt.leader != "" && f.Leader != idOf(tt.leader) {
				t.Errorf("leader %x, want %s (%x); changes: %s", f.Leader, tt.leader, idOf(tt.leader), list(done))
			}
			for _, m := range f.Members {
				if m.Role == Absent && m.Alive {
					t.Errorf("%s is up but was never added", m.Name)
				}
			}
		})
	}
}

// TestPlan checks the exact plan where the order is what the operator relies on.
func TestPlan(t *testing.T) {
	three := func(ms ...Member) Facts {
		return facts("a1", append([]Member{mem("a1", "A", "a", Voter), mem("b1", "B", "a", Voter)}, ms...)...)
	}
	tests := []struct {
		name string
		f    Facts
		p    Policy
		want []string // "kind name", the whole plan
	}{
		{
			name: "a voter down for less than the stabilization time is left alone",
			f:    three(down(mem("c1", "C", "a", Voter), stab-time.Second), mem("c2", "C", "b", NonVoter)),
			p:    Policy{Stabilization: stab},
			want: nil,
		},
		{
			name: "the default stabilization time is five minutes",
			f:    three(down(mem("c1", "C", "a", Voter), 4*time.Minute), mem("c2", "C", "b", NonVoter)),
			want: nil,
		},
		{
			name: "a dead voter is replaced in its own region first, then removed",
			f: three(down(mem("c1", "C", "a", Voter), stab+time.Second),
				lagging(mem("c2", "C", "b", NonVoter), 500), mem("a2", "A", "b", NonVoter)),
			p:    Policy{Stabilization: stab},
			want: []string{"promote c2", "remove c1"},
		},
		{
			name: "a dead voter is replaced in its own region even when another would spread as well",
			f: facts("b1",
				mem("a1", "A", "a", Voter), mem("a2", "A", "b", NonVoter),
				mem("b1", "B", "a", Voter), mem("b2", "B", "b", Voter),
				mem("c1", "C", "a", Voter), down(mem("c2", "C", "b", Voter), time.Hour), mem("c3", "C", "c", NonVoter)),
			want: []string{"promote c3", "remove c2"},
		},
		{
			name: "a well-spread cluster is left alone, whichever regions hold the extra voters",
			f: facts("a1",
				mem("a1", "A", "a", Voter), mem("a2", "A", "b", NonVoter),
				mem("b1", "B", "a", Voter), mem("b2", "B", "b", Voter),
				mem("c1", "C", "a", Voter), mem("c2", "C", "b", Voter)),
			want: nil,
		},
		{
			name: "the replacement is the most caught-up member of the region",
			f: three(down(mem("c1", "C", "a", Voter), time.Hour),
				lagging(mem("c2", "C", "b", NonVoter), 500), lagging(mem("c3", "C", "b", NonVoter), 100)),
			want: []string{"promote c3", "remove c1"},
		},
		{
			name: "with no member of its region, the replacement is in the region that keeps the spread best",
			f: three(down(mem("c1", "C", "a", Voter), time.Hour),
				mem("a2", "A", "b", NonVoter), lagging(mem("d1", "D", "a", NonVoter), 900)),
			want: []string{"promote d1", "remove c1"},
		},
		{
			name: "a non-voter that is not caught up is not promoted",
			f: three(down(mem("c1", "C", "a", Voter), time.Hour),
				lagging(mem("c2", "C", "b", NonVoter), DefaultMaxLag+1), mem("a2", "A", "b", NonVoter)),
			want: []string{"promote a2", "remove c1"},
		},
		{
			name: "the catch-up slack is a policy field",
			f: three(down(mem("c1", "C", "a", Voter), time.Hour),
				lagging(mem("c2", "C", "b", NonVoter), 5000), mem("a2", "A", "b", NonVoter)),
			p:    Policy{MaxLag: 10_000},
			want: []string{"promote c2", "remove c1"},
		},
		{
			name: "a dead voter nothing can replace is removed; two voters stay two",
			f:    three(down(mem("c1", "C", "a", Voter), time.Hour), lagging(mem("c2", "C", "b", NonVoter), 50_000)),
			want: []string{"remove c1"},
		},
		{
			name: "a member back after removal is added as a non-voter, then promoted once caught up",
			f:    three(mem("c1", "C", "a", Absent)),
			want: []string{"add-non-voter c1", "promote c1"},
		},
		{
			name: "a member back after removal and still behind is added, not promoted",
			f:    three(lagging(mem("c1", "C", "a", Absent), 20_000)),
			want: []string{"add-non-voter c1"},
		},
		{
			name: "a member absent and down is ignored",
			f:    three(down(mem("c1", "C", "a", Absent), time.Hour), mem("c2", "C", "a", Voter)),
			want: nil,
		},
		{
			name: "a dead non-voter is removed, one down briefly is not",
			f: three(mem("c1", "C", "a", Voter),
				down(mem("c2", "C", "b", NonVoter), time.Hour), down(mem("c3", "C", "b", NonVoter), time.Minute)),
			want: []string{"remove c2"},
		},
		{
			name: "a surplus voter down briefly is not demoted",
			f:    three(mem("c1", "C", "a", Voter), down(mem("c2", "C", "b", Voter), time.Minute)),
			want: nil,
		},
		{
			name: "promotions come before removals, removals before additions",
			f: three(down(mem("c1", "C", "a", Voter), time.Hour), mem("c2", "C", "b", NonVoter),
				mem("d1", "D", "a", Absent), down(mem("d2", "D", "b", NonVoter), time.Hour)),
			want: []string{"promote c2", "remove c1", "add-non-voter d1", "remove d2"},
		},
		{
			name: "a move is a promotion, then the demotion",
			f: facts("a1", mem("a1", "A", "a", Voter), mem("a2", "A", "b", Voter), mem("a3", "A", "c", Voter),
				mem("b1", "B", "a", NonVoter), mem("c1", "C", "a", NonVoter)),
			p:    Policy{Voters: 3},
			want: []string{"promote b1", "demote a2", "promote c1", "demote a3"},
		},
		{
			name: "leadership moves last, after the membership changes",
			f: three(mem("a2", "A", "b", Voter), mem("c1", "C", "a", NonVoter),
				mem("d1", "D", "a", Absent), down(mem("d2", "D", "a", NonVoter), time.Hour)),
			p:    Policy{Voters: 3, LeaderRegion: "B"},
			want: []string{"add-non-voter d1", "promote c1", "demote a2", "remove d2", "transfer-leader b1"},
		},
		{
			name: "a preferred leader region without a voter gets one, then the leader",
			f: facts("a1", mem("a1", "A", "a", Voter), mem("b1", "B", "a", Voter), mem("c1", "C", "a", Voter),
				mem("d1", "D", "a", NonVoter)),
			p:    Policy{LeaderRegion: "D"},
			want: []string{"promote d1", "demote c1", "transfer-leader d1"},
		},
		{
			name: "no leader move without a caught-up voter in the preferred region",
			f:    facts("a1", mem("a1", "A", "a", Voter), lagging(mem("b1", "B", "a", Voter), 5000), mem("c1", "C", "a", Voter)),
			p:    Policy{LeaderRegion: "B"},
			want: nil,
		},
		{
			name: "the leader leaving the voters hands over first",
			f:    facts("a1", mem("a1", "A", "a", Voter), mem("b1", "B", "a", NonVoter)),
			p:    Policy{Voters: 1, LeaderRegion: "B"},
			want: []string{"promote b1", "transfer-leader b1", "demote a1"},
		},
		{
			name: "the leader is never removed, even when the facts say it is dead",
			f: facts("a1", down(mem("a1", "A", "a", Voter), time.Hour), mem("b1", "B", "a", Voter), mem("c1", "C", "a", Voter),
				mem("d1", "D", "a", NonVoter)),
			want: []string{"promote d1"},
		},
		{
			name: "a replacement in an unlabelled region is not said to be in the dead voter's region",
			f: facts("a1", mem("a1", "A", "a", Voter), mem("b1", "B", "a", Voter), down(mem("c1", "C", "a", Voter), time.Hour),
				mem("x1", "", "", NonVoter)),
			want: []string{"promote x1", "remove c1"},
		},
		{
			name: "nothing when the voters that are up are not a majority",
			f: facts("a1", mem("a1", "A", "a", Voter), down(mem("b1", "B", "a", Voter), time.Hour),
				down(mem("c1", "C", "a", Voter), time.Hour), mem("d1", "D", "a", NonVoter), mem("e1", "E", "a", Absent)),
			want: nil,
		},
		{
			name: "a demotion that would lose the quorum waits",
			f: facts("a1", mem("a1", "A", "a", Voter), mem("a2", "A", "b", Voter), mem("b1", "B", "a", Voter),
				down(mem("c1", "C", "a", Voter), time.Minute), down(mem("d1", "D", "a", Voter), time.Minute)),
			p:    Policy{Voters: 3},
			want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := Plan(tt.f, tt.p)
			var got []string
			for _, c := range plan {
				got = append(got, c.Kind.String()+" "+c.Name)
				if c.Kind == Promote && strings.HasPrefix(c.Reason, "replaces") {
					// The replacement's reason names its region right.
					d, m := strings.Fields(c.Reason)[2], find(tt.f, c.ID)
					same := find(tt.f, idOf(strings.TrimSuffix(d, ","))).Region == m.Region
					if same != strings.Contains(c.Reason, "in its region") {
						t.Errorf("%v: the dead voter's region is %v the replacement's", c, map[bool]string{true: "", false: "not"}[same])
					}
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("plan %s\nwant %q", list(plan), tt.want)
			}
			// The whole plan is applied one first change at a time.
			_, done := converge(t, tt.f, tt.p)
			if !slices.Equal(done, plan) {
				t.Fatalf("applied %s\nplanned %s", list(done), list(plan))
			}
		})
	}
}

// TestPlanIgnoresOrder: the plan depends on the members, not on their order
// in Facts.
func TestPlanIgnoresOrder(t *testing.T) {
	f := facts("a1",
		mem("a1", "A", "a", Voter), mem("a2", "A", "b", Voter), mem("a3", "A", "c", Voter),
		mem("b1", "B", "a", NonVoter), mem("b2", "B", "b", NonVoter),
		mem("c1", "C", "a", NonVoter), mem("c2", "C", "a", Absent), down(mem("c3", "C", "a", NonVoter), time.Hour))
	want := Plan(f, Policy{})
	if len(want) == 0 {
		t.Fatal("empty plan")
	}
	r := clone(f)
	slices.Reverse(r.Members)
	if got := Plan(r, Policy{}); !slices.Equal(got, want) {
		t.Fatalf("reversed members: %s\nwant %s", list(got), list(want))
	}
}

func TestChangeString(t *testing.T) {
	c := Change{Kind: Promote, ID: 0x8e9e05c52164694d, Name: "n2", Reason: "region eu has 1 voter, its share is 2"}
	if got, want := c.String(), "promote n2 (8e9e05c52164694d): region eu has 1 voter, its share is 2"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	c.Name = ""
	if got := c.String(); !strings.HasPrefix(got, "promote 8e9e05c52164694d: ") {
		t.Errorf("String() without a name = %q", got)
	}
	for k, want := range map[Kind]string{AddNonVoter: "add-non-voter", Promote: "promote", Demote: "demote", Remove: "remove", TransferLeader: "transfer-leader", 0: "Kind(0)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}
