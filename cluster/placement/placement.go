// Package placement decides which members of a Ballast cluster vote, where
// the voters sit, and where the leader should be. Plan is a pure function
// from the cluster's facts and a Policy to a list of membership changes: no
// I/O, no clock, no goroutines, and the same input (members in any order)
// gives the same plan.
//
// The caller, a reconciler on the Raft leader, applies only the first change
// and calls Plan again with fresh facts. The list is built for that: it is
// the sequence of first changes Plan would return if each were applied in
// turn and nothing else changed. So every change in it is safe on the state
// the changes before it leave, the first is safe now, and applying first
// changes one at a time reaches a state whose plan is empty.
//
// # Voter count
//
// The target is Policy.Voters, rounded down to an odd number (an even count
// survives no more failures than the odd count below it and needs a larger
// quorum). By default it is 3, or 5 when the configuration holds at least
// five members that are not dead over at least three labelled regions.
//
// A member can vote when it is a voter that is not dead, or a non-voter that
// is up and caught up (Applied within Policy.MaxLag of the commit index).
// With fewer such members than the target, the target is the largest odd
// number of them; an even number of voters that already exists is kept, not
// demoted (two voters stay two: every acknowledged write is then on two
// disks). An even count is otherwise only a step on the way to an odd one.
//
// # Spread
//
// The target is divided between regions as evenly as the members that can
// vote allow: one slot at a time, to the region with the fewest slots that
// has a member left. Each region's slots are divided between its zones the
// same way. So no region holds a majority of the voters, and no zone a
// majority of its region's voters, whenever the members make that possible:
// seven members in three regions (3/2/2 or 3/3/1) get five voters 2/2/1 and
// two non-voters; three regions of one member get 1/1/1. Two regions get 2/1
// (or 3/2 with five voters): such a cluster survives the loss of the smaller
// region, never of the larger; surviving the loss of any one region takes
// three. Members without a region label form one region named "" (likewise
// zones), and Tolerance counts them the same way.
//
// Among regions with as many slots, the next slot goes first to
// Policy.LeaderRegion while it has none, then to a region that had a voter
// for that slot (voters that are dead included: a dead voter's replacement
// is found in its own region first, and a well-spread cluster is left as it
// is), then to Policy.LeaderRegion, the leader's region, and the region
// that sorts first by name. Within a zone, the slots go to the leader, then
// to voters that are up (most caught-up first), voters that are down, and
// non-voters (most caught-up first); the lowest ID breaks ties.
//
// Moving voters (promoting a non-voter where a voter is wanted, then demoting
// a voter where one is too many) happens only when at least the target
// number of members can vote. With fewer, no member is spare: Plan adds
// voters where they spread best but moves none.
//
// # Failures
//
// A member is down when it is not Alive, and dead once it has been down for
// Policy.Stabilization. A voter that is down but not dead is left alone: no
// change names it, so a restart or a short partition causes no churn. A dead
// voter is replaced (a promotion, as above) and only then removed. A dead
// voter that no member can replace is removed anyway: removing a voter that
// is down never lowers the number of failures the cluster survives and often
// raises it (five voters of which two are dead survive no further failure,
// the three left alone survive one). Dead non-voters are removed. A removed
// member that comes back is known by gossip but absent from the Raft
// configuration: it is added as a non-voter, and promoted once caught up if a
// voter is wanted. A non-voter's lag delays its promotion; it never causes a
// demotion.
//
// # Safety
//
// Plan returns nothing when the voters that are up are not a majority of the
// voters: such a cluster cannot commit a change and needs an operator.
// Otherwise each change leaves the voters that are up a majority; a
// demotion that would not is not made. The leader is never demoted or
// removed: when it should stop voting, leadership goes first to a voter that
// stays (in Policy.LeaderRegion if it can).
//
// # Order
//
// Promotions up to the target count (replacements included); removal of dead
// voters; demotion of voters beyond the target; addition of members absent
// from the configuration; moves, a promotion then its demotion, one pair at a
// time; removal of dead non-voters; last, leadership to Policy.LeaderRegion,
// to its most caught-up voter that is up. The leader moves to its region
// only when no membership change is left, so that it moves once, to a voter
// that stays, and not in the middle of a repair.
package placement

import (
	"fmt"
	"time"
)

// Role is a member's place in the Raft configuration.
type Role int

const (
	// Absent: known by gossip but not in the Raft configuration (the zero Role).
	Absent Role = iota
	// NonVoter: in the configuration, follows the log, serves local reads, does not vote.
	NonVoter
	// Voter: in the configuration and counted in the quorum.
	Voter
)

func (r Role) String() string {
	switch r {
	case Absent:
		return "absent"
	case NonVoter:
		return "non-voter"
	case Voter:
		return "voter"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// Member is what the leader knows about one member.
type Member struct {
	ID      uint64
	Name    string
	Region  string // "" = unlabelled
	Zone    string // "" = unlabelled
	Role    Role
	Alive   bool          // reachable and present in gossip now
	DownFor time.Duration // how long it has been unreachable (0 when Alive)
	Applied uint64        // the Raft index it has applied
}

// Facts are the cluster's state as the leader sees it.
type Facts struct {
	Members     []Member // in any order; IDs are unique (a repeated ID is ignored)
	Leader      uint64   // the current leader's ID
	CommitIndex uint64   // the leader's commit index
}

// Policy is what the operator asks for. The zero Policy is the default.
type Policy struct {
	// Voters is the target number of voters; 0 means 3, or 5 when there are at
	// least five members over at least three labelled regions. An even number
	// is rounded down.
	Voters int
	// LeaderRegion is where the leader should be; "" means anywhere.
	LeaderRegion string
	// Stabilization is how long a member must be down before it is replaced
	// (a voter) or removed; 0 means DefaultStabilization.
	Stabilization time.Duration
	// MaxLag is how far behind the commit index a member may be and still be
	// promoted or handed leadership; 0 means DefaultMaxLag.
	MaxLag uint64
}

const (
	// DefaultStabilization is Policy.Stabilization's default: long enough for
	// a restart or an upgrade not to look like a failure.
	DefaultStabilization = 5 * time.Minute
	// DefaultMaxLag is Policy.MaxLag's default, in Raft entries.
	DefaultMaxLag uint64 = 1000
)

// Kind is the kind of a membership change.
type Kind int

const (
	// AddNonVoter adds a member absent from the Raft configuration as a non-voter.
	AddNonVoter Kind = iota + 1
	// Promote makes a non-voter a voter.
	Promote
	// Demote makes a voter a non-voter.
	Demote
	// Remove takes a dead member out of the Raft configuration.
	Remove
	// TransferLeader hands leadership to a voter.
	TransferLeader
)

func (k Kind) String() string {
	switch k {
	case AddNonVoter:
		return "add-non-voter"
	case Promote:
		return "promote"
	case Demote:
		return "demote"
	case Remove:
		return "remove"
	case TransferLeader:
		return "transfer-leader"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Change is one membership change.
type Change struct {
	Kind   Kind
	ID     uint64 // the member changed, or the new leader
	Name   string // its name, for messages
	Reason string // why, a short sentence for `ballast status` and logs
}

// String is "kind name (id): reason", with the ID in hex as etcd prints it.
func (c Change) String() string {
	if c.Name == "" {
		return fmt.Sprintf("%s %x: %s", c.Kind, c.ID, c.Reason)
	}
	return fmt.Sprintf("%s %s (%x): %s", c.Kind, c.Name, c.ID, c.Reason)
}

// Plan returns the membership changes that take the cluster described by f
// to what p asks for, first change first; nil when there is nothing to do or
// when the voters that are up are not a majority. Apply only the first
// change, then call Plan again with fresh facts.
func Plan(f Facts, p Policy) []Change {
	s := newState(f, p)
	// Plans are short (a member is added, promoted, demoted or removed a few
	// times at most); the tests check on random clusters that the fixed point
	// comes within this bound. The bound only keeps a bug from looping.
	limit := 6*len(s.members) + 4
	var out []Change
	for len(out) < limit {
		c, ok := s.next()
		if !ok {
			break
		}
		out = append(out, c)
		s.apply(c)
	}
	return out
}
