package placement

import (
	"testing"
	"time"
)

// PlannerStatus tells the policy's voter count (the default worked out),
// the members with their health, the plan as given and the tolerance.
func TestPlannerStatus(t *testing.T) {
	f := Facts{Leader: 1, CommitIndex: 100, Members: []Member{
		{ID: 1, Name: "a1", Region: "a", Zone: "a1", Role: Voter, Alive: true, Applied: 100},
		{ID: 2, Name: "b1", Region: "b", Zone: "b1", Role: Voter, Alive: true, Applied: 100},
		{ID: 3, Name: "c1", Region: "c", Zone: "c1", Role: Voter, Alive: false, DownFor: time.Hour},
		{ID: 4, Name: "c2", Region: "c", Zone: "c1", Role: NonVoter, Alive: true, Applied: 100},
		{ID: 5, Name: "a2", Region: "a", Zone: "a2", Role: NonVoter, Alive: true, Applied: 100},
	}}
	plan := Plan(f, Policy{})
	st := PlannerStatus(f, Policy{}, plan)
	if !st.Enabled || !st.Planner || st.Policy.Voters != 3 || st.Policy.StabilizationWindow != DefaultStabilization.String() {
		t.Errorf("status %+v", st)
	}
	if len(plan) == 0 || len(st.Next) != len(plan) || st.Next[0].Kind != "promote" || st.Next[0].Name != "c2" || st.Next[0].ID != "4" {
		t.Errorf("plan %v, next %+v", plan, st.Next)
	}
	if len(st.Members) != 5 || st.Members[3].Name != "c1" || *st.Members[3].Alive || st.Members[3].DownFor != "1h0m0s" || st.Members[3].Role != "voter" {
		t.Errorf("members %+v", st.Members)
	}
	if st.Tolerance != (StatusTolerance{Regions: 0, Zones: 0, Members: 0}) {
		t.Errorf("tolerance %+v with one of three voters dead", st.Tolerance)
	}
	ls := LabelStatus(true, map[uint64]string{1: "a"}, map[uint64]string{1: "a1"}, map[uint64]string{1: "a1", 2: "b1"})
	if ls.Planner || len(ls.Members) != 2 || ls.Members[0].Region != "a" || ls.Members[1].Region != "" || len(ls.Next) != 0 {
		t.Errorf("label status %+v", ls)
	}
}
