package status

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ballast-kv/ballast/cluster/placement"
	"github.com/ballast-kv/ballast/cmd/internal/cli"
)

// Member roles as printed.
const (
	roleLeader  = "leader"
	roleVoter   = "voter"
	roleLearner = "learner"
)

// errUnstarted is shown for a member that has been added but has never
// started, so it has no client URL to ask.
const errUnstarted = "unstarted"

// Report is the state of a cluster as seen by one run of the command.
type Report struct {
	ClusterID uint64
	// Leader is the leader's member ID, 0 when no member that answered
	// knows of one.
	Leader uint64
	// Term is the Raft term in which Leader leads.
	Term    uint64
	Members []Member
	// Placement is what Ballast's /placement told (the leader's plan, or
	// a member's labels); nil for etcd or when no member answered it.
	Placement *placement.Status
}

// Member is one row: what the member list says about a member and what the
// member said about itself. The Raft and size fields are zero unless
// Reachable.
type Member struct {
	Name       string
	ID         uint64
	Role       string // leader, voter or learner
	ClientURLs []string
	PeerURLs   []string
	// Region and Zone are the member's labels ("" when unlabelled or
	// unknown).
	Region, Zone string
	// Reachable reports whether the member answered Status.
	Reachable    bool
	RaftTerm     uint64
	RaftIndex    uint64
	AppliedIndex uint64
	// Lag is the leader's applied index minus this member's, 0 for the
	// leader; LagKnown is false when either index is unknown.
	Lag         uint64
	LagKnown    bool
	DBSize      int64
	DBSizeInUse int64
	// Errors are the member's own Status errors (alarms, no leader), or
	// why it could not be asked.
	Errors []string
}

// answer is the outcome of asking one member for its status: resp, or err
// worded for an operator ("unreachable: ...").
type answer struct {
	resp *clientv3.StatusResponse
	err  error
}

// build turns the member list and the answers of the members, by member ID,
// into a Report. A member with no entry in answers was not asked.
//
// The leader is the one reported, by any member that answered, in the
// highest term for which a leader is reported: Raft elects at most one
// leader per term, so this is never ambiguous, a deposed leader that has
// not noticed yet (a lower term) is overruled, and a candidate that has
// started an election but not won it (a higher term, no leader) does not
// hide a leader the others still follow.
func build(ml *clientv3.MemberListResponse, answers map[uint64]answer) *Report {
	r := &Report{}
	if ml.Header != nil {
		r.ClusterID = ml.Header.ClusterId
	}
	for _, a := range answers {
		if a.resp != nil && a.resp.Leader != 0 && a.resp.RaftTerm >= r.Term {
			r.Leader, r.Term = a.resp.Leader, a.resp.RaftTerm
		}
	}
	var leaderApplied uint64
	leaderKnown := false
	if a, ok := answers[r.Leader]; ok && r.Leader != 0 && a.resp != nil {
		leaderApplied, leaderKnown = a.resp.RaftAppliedIndex, true
	}

	for _, pm := range ml.Members {
		m := Member{
			Name:       pm.Name,
			ID:         pm.ID,
			Role:       roleVoter,
			ClientURLs: nonNil(pm.ClientURLs),
			PeerURLs:   nonNil(pm.PeerURLs),
			Errors:     []string{},
		}
		a, asked := answers[pm.ID]
		switch {
		case len(pm.ClientURLs) == 0:
			m.Errors = append(m.Errors, errUnstarted)
		case !asked:
			m.Errors = append(m.Errors, "not asked")
		case a.err != nil:
			m.Errors = append(m.Errors, a.err.Error())
		case a.resp != nil:
			s := a.resp
			m.Reachable = true
			m.RaftTerm, m.RaftIndex, m.AppliedIndex = s.RaftTerm, s.RaftIndex, s.RaftAppliedIndex
			m.DBSize, m.DBSizeInUse = s.DbSize, s.DbSizeInUse
			m.Errors = append(m.Errors, s.Errors...)
			if leaderKnown {
				// The answers are taken concurrently, so a follower may
				// have applied a little more than the leader had when
				// it answered: that is no lag.
				m.Lag, m.LagKnown = max(leaderApplied, s.RaftAppliedIndex)-s.RaftAppliedIndex, true
			}
		}
		switch {
		case pm.ID == r.Leader && r.Leader != 0:
			m.Role = roleLeader
		case pm.IsLearner || (a.resp != nil && a.resp.IsLearner):
			m.Role = roleLearner
		}
		r.Members = append(r.Members, m)
	}
	// By name, members not started yet (no name) last.
	slices.SortStableFunc(r.Members, func(a, b Member) int {
		if (a.Name == "") != (b.Name == "") {
			return cmp.Compare(b.Name, a.Name) // the named one first
		}
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return r
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Healthy reports whether every member answered and there is a leader: the
// command's exit status is 0 exactly then.
func (r *Report) Healthy() bool {
	if r.Leader == 0 {
		return false
	}
	for _, m := range r.Members {
		if !m.Reachable {
			return false
		}
	}
	return true
}

// leaderName is the leader's name, or its ID when it has none or is not in
// the member list.
func (r *Report) leaderName() string {
	for _, m := range r.Members {
		if m.ID == r.Leader && m.Name != "" {
			return m.Name
		}
	}
	return hexID(r.Leader)
}

// Summary is the line printed under the table, e.g.
// "3 members, leader n2 (term 4), max lag 12, 1 unreachable".
func (r *Report) Summary() string {
	parts := []string{plural(len(r.Members), "member")}
	if r.Leader != 0 {
		parts = append(parts, fmt.Sprintf("leader %s (term %d)", r.leaderName(), r.Term))
	} else {
		parts = append(parts, "no leader")
	}
	var maxLag uint64
	lagKnown, unreachable, unstarted := false, 0, 0
	for _, m := range r.Members {
		if m.LagKnown {
			maxLag, lagKnown = max(maxLag, m.Lag), true
		}
		switch {
		case len(m.ClientURLs) == 0:
			unstarted++
		case !m.Reachable:
			unreachable++
		}
	}
	if lagKnown {
		parts = append(parts, fmt.Sprintf("max lag %d", maxLag))
	}
	if unreachable > 0 {
		parts = append(parts, fmt.Sprintf("%d unreachable", unreachable))
	}
	if unstarted > 0 {
		parts = append(parts, fmt.Sprintf("%d unstarted", unstarted))
	}
	return strings.Join(parts, ", ")
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// hexID formats a member or cluster ID as etcdctl does.
func hexID(id uint64) string { return strconv.FormatUint(id, 16) }

// WriteTable prints r as an aligned table followed by the summary line.
func (r *Report) WriteTable(w io.Writer) error {
	var t strings.Builder
	tw := tabwriter.NewWriter(&t, 0, 0, 2, ' ', 0)
	labelled := r.labelled()
	labels := func(region, zone string) string {
		if !labelled {
			return ""
		}
		return region + "\t" + zone + "\t"
	}
	fmt.Fprintln(tw, "NAME\tID\tROLE\t"+labels("REGION", "ZONE")+"CLIENT URL\tRAFT TERM\tRAFT INDEX\tAPPLIED INDEX\tLAG\tDB SIZE\tERRORS")
	for _, m := range r.Members {
		name, url := cmp.Or(m.Name, "-"), "-"
		if len(m.ClientURLs) > 0 {
			url = m.ClientURLs[0]
		}
		term, index, applied, lag, size := "-", "-", "-", "-", "-"
		if m.Reachable {
			term = strconv.FormatUint(m.RaftTerm, 10)
			index = strconv.FormatUint(m.RaftIndex, 10)
			applied = strconv.FormatUint(m.AppliedIndex, 10)
			size = cli.HumanBytes(m.DBSize)
		}
		if m.LagKnown {
			lag = strconv.FormatUint(m.Lag, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			name, hexID(m.ID), m.Role, labels(cmp.Or(m.Region, "-"), cmp.Or(m.Zone, "-")), url, term, index, applied, lag, size, strings.Join(m.Errors, "; "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// tabwriter pads the cell before an empty ERRORS: no trailing blanks.
	var b strings.Builder
	for line := range strings.Lines(t.String()) {
		b.WriteString(strings.TrimRight(line, " \n"))
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "\n%s\n", r.Summary())
	for _, line := range r.placementLines() {
		fmt.Fprintln(&b, line)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// jsonReport is the -w json document.
type jsonReport struct {
	ClusterID string       `json:"cluster_id"`
	Leader    *string      `json:"leader"` // null when there is none
	Members   []jsonMember `json:"members"`
	// Placement is Ballast's /placement answer, null for etcd.
	Placement *placement.Status `json:"placement"`
}

type jsonMember struct {
	Name         string   `json:"name"`
	ID           string   `json:"id"`
	Role         string   `json:"role"`
	ClientURLs   []string `json:"client_urls"`
	PeerURLs     []string `json:"peer_urls"`
	Region       string   `json:"region"`
	Zone         string   `json:"zone"`
	RaftTerm     uint64   `json:"raft_term"`
	RaftIndex    uint64   `json:"raft_index"`
	AppliedIndex uint64   `json:"applied_index"`
	Lag          *uint64  `json:"lag"` // null when unknown
	DBSize       int64    `json:"db_size"`
	DBSizeInUse  int64    `json:"db_size_in_use"`
	Errors       []string `json:"errors"`
	// Reachable is false when the member did not answer: its Raft and
	// size fields are then 0, not values it reported.
	Reachable bool `json:"reachable"`
}

// WriteJSON prints r as one indented JSON document. IDs are hex strings, as
// etcdctl prints them in tables; JSON numbers could not hold them exactly
// in many JSON readers.
func (r *Report) WriteJSON(w io.Writer) error {
	doc := jsonReport{ClusterID: hexID(r.ClusterID), Members: []jsonMember{}, Placement: r.Placement}
	if r.Leader != 0 {
		l := hexID(r.Leader)
		doc.Leader = &l
	}
	for _, m := range r.Members {
		jm := jsonMember{
			Name: m.Name, ID: hexID(m.ID), Role: m.Role,
			ClientURLs: nonNil(m.ClientURLs), PeerURLs: nonNil(m.PeerURLs), Region: m.Region, Zone: m.Zone,
			Reachable: m.Reachable, RaftTerm: m.RaftTerm, RaftIndex: m.RaftIndex, AppliedIndex: m.AppliedIndex,
			DBSize: m.DBSize, DBSizeInUse: m.DBSizeInUse, Errors: nonNil(m.Errors),
		}
		if m.LagKnown {
			lag := m.Lag
			jm.Lag = &lag
		}
		doc.Members = append(doc.Members, jm)
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
