package placement

import (
	"cmp"
	"fmt"
	"slices"
)

// state is the cluster as Plan models it while it builds the list: the facts,
// with the changes planned so far applied.
type state struct {
	members []Member // sorted by ID, IDs unique
	leader  uint64
	commit  uint64
	policy  Policy // defaults filled in
}

func newState(f Facts, p Policy) *state {
	ms := make([]Member, 0, len(f.Members))
	seen := make(map[uint64]bool, len(f.Members))
	for _, m := range f.Members {
		if !seen[m.ID] {
			seen[m.ID] = true
			ms = append(ms, m)
		}
	}
	slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	if p.Stabilization <= 0 {
		p.Stabilization = DefaultStabilization
	}
	if p.MaxLag == 0 {
		p.MaxLag = DefaultMaxLag
	}
	return &state{members: ms, leader: f.Leader, commit: f.CommitIndex, policy: p}
}

func (s *state) member(id uint64) *Member {
	i, ok := slices.BinarySearchFunc(s.members, id, func(m Member, id uint64) int { return cmp.Compare(m.ID, id) })
	if !ok {
		return nil
	}
	return &s.members[i]
}

// apply is the change's effect on the model.
func (s *state) apply(c Change) {
	if c.Kind == TransferLeader {
		s.leader = c.ID
		return
	}
	m := s.member(c.ID)
	switch c.Kind {
	case AddNonVoter, Demote:
		m.Role = NonVoter
	case Promote:
		m.Role = Voter
	case Remove:
		m.Role = Absent
	}
}

// dead: down for at least the stabilization time.
func (s *state) dead(m *Member) bool { return !m.Alive && m.DownFor >= s.policy.Stabilization }

// caughtUp: up, and Applied within MaxLag of the commit index.
func (s *state) caughtUp(m *Member) bool {
	return m.Alive && (s.commit <= s.policy.MaxLag || m.Applied >= s.commit-s.policy.MaxLag)
}

// kept: a voter that stays one unless the plan moves it (not dead).
func (s *state) kept(m *Member) bool { return m.Role == Voter && !s.dead(m) }

// promotable: a non-voter that may become a voter now.
func (s *state) promotable(m *Member) bool { return m.Role == NonVoter && s.caughtUp(m) }

func (s *state) isLeader(m *Member) bool { return m.ID == s.leader && m.Role == Voter }

// votes counts the voters and the voters that are up.
func (s *state) votes() (voters, up int) {
	for i := range s.members {
		if m := &s.members[i]; m.Role == Voter {
			voters++
			if m.Alive {
				up++
			}
		}
	}
	return voters, up
}

// safe reports whether the voters that are up are still a majority after c.
func (s *state) safe(c Change) bool {
	n, up := s.votes()
	m := s.member(c.ID)
	switch c.Kind {
	case Promote:
		n++
		if m.Alive {
			up++
		}
	case Demote, Remove:
		if m.Role == Voter {
			n--
			if m.Alive {
				up--
			}
		}
	}
	return 2*up > n
}

// next is the first change of the plan for the current state.
func (s *state) next() (Change, bool) {
	if n, up := s.votes(); n == 0 || 2*up <= n {
		return Change{}, false
	}
	a := s.analyse()
	for _, step := range []func() (Change, bool){
		a.fillDeficit,
		a.removeDeadVoter,
		a.demoteSurplus,
		a.admit,
		a.move,
		a.removeDeadNonVoter,
		a.leaderToRegion,
	} {
		if c, ok := step(); ok && s.safe(c) {
			return c, true
		}
	}
	return Change{}, false
}

type zoneKey struct{ region, zone string }

// analysis is one state's targets: how many voters, and which members.
type analysis struct {
	s        *state
	desired  int  // the policy's voter count (odd)
	eligible int  // members that could vote now: kept voters and promotable non-voters
	kept     int  // kept voters
	target   int  // the voter count to reach now
	moves    bool // voters may be moved: eligible >= desired
	chosen   map[uint64]bool
	want     map[string]int // region -> voters wanted
	have     map[string]int // region -> kept voters
	zwant    map[zoneKey]int
	zhave    map[zoneKey]int
}

func (s *state) analyse() *analysis {
	a := &analysis{
		s:      s,
		chosen: map[uint64]bool{},
		want:   map[string]int{},
		have:   map[string]int{},
		zwant:  map[zoneKey]int{},
		zhave:  map[zoneKey]int{},
	}
	a.desired = s.desiredVoters()
	for i := range s.members {
		m := &s.members[i]
		if s.kept(m) {
			a.kept++
			a.have[m.Region]++
			a.zhave[zoneKey{m.Region, m.Zone}]++
		}
		if s.kept(m) || s.promotable(m) {
			a.eligible++
		}
	}
	a.moves = a.eligible >= a.desired
	if a.moves {
		a.target = a.desired
	} else {
		a.target = oddFloor(a.eligible)
		a.target = max(a.target, a.kept) // keep an even count that exists
	}
	a.choose()
	return a
}

// desiredVoters is the policy's voter count: Policy.Voters, or the default
// for the members in the configuration that are not dead.
func (s *state) desiredVoters() int {
	if v := s.policy.Voters; v > 0 {
		return oddFloor(v)
	}
	n := 0
	regions := map[string]bool{}
	for i := range s.members {
		if m := &s.members[i]; m.Role != Absent && !s.dead(m) {
			n++
			if m.Region != "" {
				regions[m.Region] = true
			}
		}
	}
	if n >= 5 && len(regions) >= 3 {
		return 5
	}
	return 3
}

func oddFloor(n int) int {
	if n > 0 && n%2 == 0 {
		return n - 1
	}
	return n
}

// group is a region or a zone competing for voter slots.
type group struct {
	key       string
	capacity  int  // eligible members
	voters    int  // voters, dead ones included: slots it had
	leader    bool // holds the leader
	preferred bool // Policy.LeaderRegion
}

// before is the order in which groups at the same number of slots get the
// next one: the preferred leader region first while it has none, then a group
// that had a voter for that slot, then the preferred region, the leader's,
// and the key.
func before(g group, gn int, h group, hn int) bool {
	if gn != hn {
		return gn < hn
	}
	if gn == 0 && g.preferred != h.preferred {
		return g.preferred
	}
	if gk, hk := gn < g.voters, hn < h.voters; gk != hk {
		return gk
	}
	if g.preferred != h.preferred {
		return g.preferred
	}
	if g.leader != h.leader {
		return g.leader
	}
	return g.key < h.key
}

// fill hands out n slots one at a time, each to the group with the fewest so
// far that has an eligible member left.
func fill(n int, gs []group) []int {
	got := make([]int, len(gs))
	for ; n > 0; n-- {
		best := -1
		for i, g := range gs {
			if got[i] < g.capacity && (best < 0 || before(g, got[i], gs[best], got[best])) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		got[best]++
	}
	return got
}

// choose picks the target voters: slots per region, per zone, then members.
func (a *analysis) choose() {
	s := a.s
	byRegion := map[string]map[string][]*Member{}
	var regions []group
	ri := map[string]int{}
	zoneGroups := map[string][]group{}
	zi := map[zoneKey]int{}
	for i := range s.members {
		m := &s.members[i]
		elig := s.kept(m) || s.promotable(m)
		wasVoter := m.Role == Voter
		if !elig && !wasVoter {
			continue
		}
		if _, ok := ri[m.Region]; !ok {
			ri[m.Region] = len(regions)
			regions = append(regions, group{key: m.Region, preferred: m.Region == s.policy.LeaderRegion && m.Region != ""})
			byRegion[m.Region] = map[string][]*Member{}
		}
		zk := zoneKey{m.Region, m.Zone}
		if _, ok := zi[zk]; !ok {
			zi[zk] = len(zoneGroups[m.Region])
			zoneGroups[m.Region] = append(zoneGroups[m.Region], group{key: m.Zone})
		}
		r, z := &regions[ri[m.Region]], &zoneGroups[m.Region][zi[zk]]
		if wasVoter {
			r.voters++
			z.voters++
		}
		if s.isLeader(m) {
			r.leader, z.leader = true, true
		}
		if elig {
			r.capacity++
			z.capacity++
			byRegion[m.Region][m.Zone] = append(byRegion[m.Region][m.Zone], m)
		}
	}
	slices.SortFunc(regions, func(x, y group) int { return cmp.Compare(x.key, y.key) })
	for ri, rn := range fill(a.target, regions) {
		r := regions[ri].key
		a.want[r] = rn
		zones := zoneGroups[r]
		slices.SortFunc(zones, func(x, y group) int { return cmp.Compare(x.key, y.key) })
		for zi, zn := range fill(rn, zones) {
			z := zones[zi].key
			a.zwant[zoneKey{r, z}] = zn
			ms := byRegion[r][z]
			slices.SortFunc(ms, s.rank)
			for _, m := range ms[:zn] {
				a.chosen[m.ID] = true
			}
		}
	}
}

// rank orders a zone's eligible members for its voter slots: the leader,
// voters that are up (most caught-up first), voters that are down, then
// non-voters (most caught-up first); the lowest ID on ties.
func (s *state) rank(x, y *Member) int {
	class := func(m *Member) int {
		switch {
		case s.isLeader(m):
			return 0
		case m.Role == Voter && m.Alive:
			return 1
		case m.Role == Voter:
			return 2
		}
		return 3
	}
	if c := cmp.Compare(class(x), class(y)); c != 0 {
		return c
	}
	if c := cmp.Compare(y.Applied, x.Applied); c != 0 {
		return c
	}
	return cmp.Compare(x.ID, y.ID)
}

// promotion is the best chosen non-voter: in the region, then the zone,
// furthest below its share, then the most caught-up, then the lowest ID.
func (a *analysis) promotion() *Member {
	var best *Member
	key := func(m *Member) [2]int {
		zk := zoneKey{m.Region, m.Zone}
		return [2]int{a.want[m.Region] - a.have[m.Region], a.zwant[zk] - a.zhave[zk]}
	}
	for i := range a.s.members {
		m := &a.s.members[i]
		if !a.chosen[m.ID] || m.Role != NonVoter {
			continue
		}
		if best == nil {
			best = m
			continue
		}
		km, kb := key(m), key(best)
		if c := cmp.Or(cmp.Compare(kb[0], km[0]), cmp.Compare(kb[1], km[1]), cmp.Compare(best.Applied, m.Applied)); c < 0 {
			best = m
		}
	}
	return best
}

// fillDeficit promotes while there are fewer kept voters than the target;
// this is how a dead voter is replaced.
func (a *analysis) fillDeficit() (Change, bool) {
	if a.kept >= a.target {
		return Change{}, false
	}
	m := a.promotion()
	if m == nil {
		return Change{}, false
	}
	why := fmt.Sprintf("%s, the target is %d; region %s has %d of its share of %d", voters(a.kept), a.target, region(m.Region), a.have[m.Region], a.want[m.Region])
	if d := a.deadVoter(func(d *Member) bool { return d.Region == m.Region }); d != nil {
		why = fmt.Sprintf("replaces voter %s, down for %s; %s is the most caught-up member in its region", name(d), d.DownFor, name(m))
	} else if d := a.deadVoter(func(*Member) bool { return true }); d != nil {
		why = fmt.Sprintf("replaces voter %s, down for %s; no member of region %s can vote, and region %s keeps the spread best", name(d), d.DownFor, region(d.Region), region(m.Region))
	}
	return change(Promote, m, why), true
}

// deadVoter is the dead voter down longest (lowest ID on ties) of those
// that match.
func (a *analysis) deadVoter(match func(*Member) bool) *Member {
	var d *Member
	for i := range a.s.members {
		m := &a.s.members[i]
		if m.Role == Voter && a.s.dead(m) && match(m) && (d == nil || m.DownFor > d.DownFor) {
			d = m
		}
	}
	return d
}

// removeDeadVoter removes the dead voter down longest; fillDeficit comes
// first, so its replacement already votes, or none can be promoted. The
// leader is never removed, even when the facts say it is down.
func (a *analysis) removeDeadVoter() (Change, bool) {
	d := a.deadVoter(func(m *Member) bool { return !a.s.isLeader(m) })
	if d == nil {
		return Change{}, false
	}
	n, up := a.s.votes()
	return change(Remove, d, fmt.Sprintf("voter down for %s (stabilization %s); %s remain, %d of them up", d.DownFor, a.s.policy.Stabilization, voters(n-1), up)), true
}

// demoteSurplus demotes a voter that is up and not chosen while there are
// more kept voters than the target; when the leader is the one to go, it
// hands leadership to a chosen voter first.
func (a *analysis) demoteSurplus() (Change, bool) {
	if a.kept <= a.target {
		return Change{}, false
	}
	s := a.s
	var best *Member
	leaderOut := false
	key := func(m *Member) [2]int {
		zk := zoneKey{m.Region, m.Zone}
		return [2]int{a.have[m.Region] - a.want[m.Region], a.zhave[zk] - a.zwant[zk]}
	}
	for i := range s.members {
		m := &s.members[i]
		if m.Role != Voter || !m.Alive || a.chosen[m.ID] || s.dead(m) {
			continue
		}
		if s.isLeader(m) {
			leaderOut = true
			continue
		}
		if best == nil {
			best = m
			continue
		}
		km, kb := key(m), key(best)
		if c := cmp.Or(cmp.Compare(kb[0], km[0]), cmp.Compare(kb[1], km[1]), cmp.Compare(m.Applied, best.Applied)); c < 0 {
			best = m
		}
	}
	if best != nil {
		c := change(Demote, best, a.surplusReason(best))
		if s.safe(c) {
			return c, true
		}
	}
	if leaderOut {
		return a.handOver()
	}
	return Change{}, false
}

func (a *analysis) surplusReason(m *Member) string {
	zk := zoneKey{m.Region, m.Zone}
	switch {
	case a.have[m.Region] > a.want[m.Region]:
		return fmt.Sprintf("region %s has %s, its share is %d", region(m.Region), voters(a.have[m.Region]), a.want[m.Region])
	case a.zhave[zk] > a.zwant[zk]:
		return fmt.Sprintf("zone %s/%s has %s, its share of region %s's %d is %d", region(m.Region), zone(m.Zone), voters(a.zhave[zk]), region(m.Region), a.want[m.Region], a.zwant[zk])
	}
	return fmt.Sprintf("%s, the target is %d", voters(a.kept), a.target)
}

// handOver transfers leadership to the best chosen voter: up and caught up,
// in the preferred leader region if possible, most caught-up, lowest ID.
func (a *analysis) handOver() (Change, bool) {
	s := a.s
	var best *Member
	pref := func(m *Member) bool { return s.policy.LeaderRegion != "" && m.Region == s.policy.LeaderRegion }
	for i := range s.members {
		m := &s.members[i]
		if m.Role != Voter || !a.chosen[m.ID] || s.isLeader(m) || !s.caughtUp(m) {
			continue
		}
		if best == nil || pref(m) && !pref(best) || pref(m) == pref(best) && m.Applied > best.Applied {
			best = m
		}
	}
	if best == nil {
		return Change{}, false
	}
	l := s.member(s.leader)
	return change(TransferLeader, best, fmt.Sprintf("the leader %s is to stop voting (%s); it hands leadership over first", name(l), a.surplusReason(l))), true
}

// admit adds a member that is up but absent from the configuration.
func (a *analysis) admit() (Change, bool) {
	for i := range a.s.members {
		if m := &a.s.members[i]; m.Role == Absent && m.Alive {
			return change(AddNonVoter, m, "up but not in the Raft configuration; it joins as a non-voter and catches up"), true
		}
	}
	return Change{}, false
}

// move promotes a chosen non-voter when the voter count is on target but a
// voter that is up sits where it is not wanted; demoteSurplus demotes that
// voter next.
func (a *analysis) move() (Change, bool) {
	if !a.moves || a.kept != a.target {
		return Change{}, false
	}
	misplaced := false
	for i := range a.s.members {
		if m := &a.s.members[i]; m.Role == Voter && m.Alive && !a.chosen[m.ID] {
			misplaced = true
		}
	}
	if !misplaced {
		return Change{}, false
	}
	m := a.promotion()
	if m == nil {
		return Change{}, false
	}
	zk := zoneKey{m.Region, m.Zone}
	why := fmt.Sprintf("region %s has %s, its share is %d; a surplus voter is demoted next", region(m.Region), voters(a.have[m.Region]), a.want[m.Region])
	if a.have[m.Region] >= a.want[m.Region] {
		why = fmt.Sprintf("zone %s/%s has %s, its share is %d; a surplus voter is demoted next", region(m.Region), zone(m.Zone), voters(a.zhave[zk]), a.zwant[zk])
	}
	return change(Promote, m, why), true
}

// removeDeadNonVoter removes a non-voter that is dead.
func (a *analysis) removeDeadNonVoter() (Change, bool) {
	var d *Member
	for i := range a.s.members {
		m := &a.s.members[i]
		if m.Role == NonVoter && a.s.dead(m) && (d == nil || m.DownFor > d.DownFor) {
			d = m
		}
	}
	if d == nil {
		return Change{}, false
	}
	return change(Remove, d, fmt.Sprintf("non-voter down for %s (stabilization %s)", d.DownFor, a.s.policy.Stabilization)), true
}

// leaderToRegion moves leadership to Policy.LeaderRegion when nothing else is
// to be done: to the most caught-up voter there that is up.
func (a *analysis) leaderToRegion() (Change, bool) {
	s := a.s
	want := s.policy.LeaderRegion
	l := s.member(s.leader)
	if want == "" || l == nil || !s.isLeader(l) || l.Region == want {
		return Change{}, false
	}
	var best *Member
	for i := range s.members {
		m := &s.members[i]
		if m.Role == Voter && m.Region == want && s.caughtUp(m) && (best == nil || m.Applied > best.Applied) {
			best = m
		}
	}
	if best == nil {
		return Change{}, false
	}
	return change(TransferLeader, best, fmt.Sprintf("the leader %s is in region %s; the policy prefers region %s", name(l), region(l.Region), want)), true
}

func change(k Kind, m *Member, why string) Change {
	return Change{Kind: k, ID: m.ID, Name: m.Name, Reason: why}
}

func name(m *Member) string {
	if m.Name != "" {
		return m.Name
	}
	return fmt.Sprintf("%x", m.ID)
}

func region(r string) string {
	if r == "" {
		return `""`
	}
	return r
}

func zone(z string) string { return region(z) }

func voters(n int) string {
	if n == 1 {
		return "1 voter"
	}
	return fmt.Sprintf("%d voters", n)
}
