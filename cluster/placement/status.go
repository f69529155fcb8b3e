package placement

import (
	"cmp"
	"slices"
	"strconv"
)

// Status is what a member tells about placement, as JSON at /placement on
// its client URL, for `ballast status`. The leader tells what its last round
// saw and planned; another member, which does not plan, only the members'
// labels from the replicated state.
type Status struct {
	// Enabled: the cluster gossips, so its leader places voters.
	Enabled bool `json:"enabled"`
	// Planner: the answering member is the leader, and Next and Tolerance
	// are its last round's.
	Planner bool           `json:"planner"`
	Policy  StatusPolicy   `json:"policy"`
	Members []StatusMember `json:"members"`
	// Next is the plan, first change first: the first is applied next.
	Next      []StatusChange  `json:"next"`
	Tolerance StatusTolerance `json:"tolerance"`
}

// StatusPolicy is the policy in force, Voters being the voter count Plan
// aims at (the default worked out when --voters is not given).
type StatusPolicy struct {
	Voters              int    `json:"voters"`
	LeaderRegion        string `json:"leader_region"`
	StabilizationWindow string `json:"stabilization_window"`
}

// StatusMember is one member's labels and, from the planner, its health.
// IDs are hex, as etcdctl prints them.
type StatusMember struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Region  string `json:"region"`
	Zone    string `json:"zone"`
	Role    string `json:"role,omitempty"`     // voter, non-voter or absent (planner only)
	Alive   *bool  `json:"alive,omitempty"`    // planner only
	DownFor string `json:"down_for,omitempty"` // planner only, when down
}

// StatusChange is one planned change.
type StatusChange struct {
	Kind   string `json:"kind"`
	ID     string `json:"id"`
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// StatusTolerance is Tolerance's answer.
type StatusTolerance struct {
	Regions int `json:"regions"`
	Zones   int `json:"zones"`
	Members int `json:"members"`
}

// PlannerStatus is the Status of a leader whose round saw f and planned
// plan under p.
func PlannerStatus(f Facts, p Policy, plan []Change) Status {
	s := Status{Enabled: true, Planner: true, Members: []StatusMember{}, Next: []StatusChange{}}
	st := newState(f, p)
	s.Policy = StatusPolicy{Voters: st.desiredVoters(), LeaderRegion: p.LeaderRegion, StabilizationWindow: st.policy.Stabilization.String()}
	for _, m := range f.Members {
		alive := m.Alive
		sm := StatusMember{ID: hexID(m.ID), Name: m.Name, Region: m.Region, Zone: m.Zone, Role: m.Role.String(), Alive: &alive}
		if !m.Alive {
			sm.DownFor = m.DownFor.Round(1e8).String()
		}
		s.Members = append(s.Members, sm)
	}
	sortMembers(s.Members)
	for _, c := range plan {
		s.Next = append(s.Next, StatusChange{Kind: c.Kind.String(), ID: hexID(c.ID), Name: c.Name, Reason: c.Reason})
	}
	s.Tolerance.Regions, s.Tolerance.Zones, s.Tolerance.Members = Tolerance(f.Members)
	return s
}

func sortMembers(ms []StatusMember) {
	slices.SortFunc(ms, func(a, b StatusMember) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID)) })
}

// LabelStatus is the Status of a member that does not plan: the labels it
// holds, by member ID, with names by ID.
func LabelStatus(enabled bool, regions, zones, names map[uint64]string) Status {
	s := Status{Enabled: enabled, Members: []StatusMember{}, Next: []StatusChange{}}
	for id, name := range names {
		s.Members = append(s.Members, StatusMember{ID: hexID(id), Name: name, Region: regions[id], Zone: zones[id]})
	}
	sortMembers(s.Members)
	return s
}

func hexID(id uint64) string { return strconv.FormatUint(id, 16) }
