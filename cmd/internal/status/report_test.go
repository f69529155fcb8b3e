package status

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ballast-kv/ballast/cluster/placement"
)

// Member IDs of the fixtures, chosen so that ID order differs from name
// order.
const (
	id1 = 0x8e9e05c52164694d
	id2 = 0x1c3a2b
	id3 = 0xfd422379fda50e48
	id4 = 0x2a
)

func member(id uint64, name string, learner bool) *pb.Member {
	m := &pb.Member{ID: id, Name: name, IsLearner: learner, PeerURLs: []string{"http://" + name + ":2380"}}
	if name != "" {
		m.ClientURLs = []string{"http://" + name + ":2379"}
	}
	return m
}

func list(ms ...*pb.Member) *clientv3.MemberListResponse {
	return &clientv3.MemberListResponse{Header: &pb.ResponseHeader{ClusterId: 0xcdf818194e3a8c32}, Members: ms}
}

// st is a Status answer from the member id, following leader in term.
func st(id, leader, term, applied uint64) answer {
	return answer{resp: &clientv3.StatusResponse{
		Header:           &pb.ResponseHeader{MemberId: id, RaftTerm: term},
		Leader:           leader,
		RaftTerm:         term,
		RaftIndex:        applied + 1,
		RaftAppliedIndex: applied,
		DbSize:           1 << 20,
		DbSizeInUse:      1 << 19,
	}}
}

func with(a answer, f func(*clientv3.StatusResponse)) answer {
	f(a.resp)
	return a
}

func unreachable() answer { return answer{err: errors.New("unreachable: no connection within 5s")} }

// row is what an operator reads in a row, in a form easy to compare.
type row struct {
	name, role string
	reachable  bool
	lag        int64 // -1: unknown
	errors     string
}

func rows(r *Report) []row {
	var out []row
	for _, m := range r.Members {
		lag := int64(-1)
		if m.LagKnown {
			lag = int64(m.Lag)
		}
		out = append(out, row{m.Name, m.Role, m.Reachable, lag, strings.Join(m.Errors, "; ")})
	}
	return out
}

func TestBuild(t *testing.T) {
	three := list(member(id3, "n3", false), member(id1, "n1", false), member(id2, "n2", false))
	tests := []struct {
		name        string
		ml          *clientv3.MemberListResponse
		answers     map[uint64]answer
		wantLeader  uint64
		wantTerm    uint64
		wantRows    []row
		wantHealthy bool
	}{
		{
			name:       "healthy, sorted by name, lag behind the leader",
			ml:         three,
			answers:    map[uint64]answer{id1: st(id1, id2, 4, 100), id2: st(id2, id2, 4, 112), id3: st(id3, id2, 4, 112)},
			wantLeader: id2, wantTerm: 4,
			wantRows: []row{
				{"n1", "voter", true, 12, ""},
				{"n2", "leader", true, 0, ""},
				{"n3", "voter", true, 0, ""},
			},
			wantHealthy: true,
		},
		{
			name: "a follower that applied more than the leader had is not behind",
			ml:   three,
			answers: map[uint64]answer{
				id1: st(id1, id1, 2, 50), id2: st(id2, id1, 2, 53), id3: st(id3, id1, 2, 49),
			},
			wantLeader: id1, wantTerm: 2,
			wantRows: []row{
				{"n1", "leader", true, 0, ""},
				{"n2", "voter", true, 0, ""},
				{"n3", "voter", true, 1, ""},
			},
			wantHealthy: true,
		},
		{
			name: "learner from the member list or from its own status",
			ml:   list(member(id1, "n1", false), member(id2, "n2", true), member(id3, "n3", false)),
			answers: map[uint64]answer{
				id1: st(id1, id1, 3, 10),
				id2: st(id2, id1, 3, 10),
				id3: with(st(id3, id1, 3, 7), func(s *clientv3.StatusResponse) { s.IsLearner = true }),
			},
			wantLeader: id1, wantTerm: 3,
			wantRows: []row{
				{"n1", "leader", true, 0, ""},
				{"n2", "learner", true, 0, ""},
				{"n3", "learner", true, 3, ""},
			},
			wantHealthy: true,
		},
		{
			name:       "an unreachable follower",
			ml:         three,
			answers:    map[uint64]answer{id1: st(id1, id1, 5, 20), id2: st(id2, id1, 5, 20), id3: unreachable()},
			wantLeader: id1, wantTerm: 5,
			wantRows: []row{
				{"n1", "leader", true, 0, ""},
				{"n2", "voter", true, 0, ""},
				{"n3", "voter", false, -1, "unreachable: no connection within 5s"},
			},
		},
		{
			name:       "an unreachable leader: still named by its followers, lag unknown",
			ml:         three,
			answers:    map[uint64]answer{id1: unreachable(), id2: st(id2, id1, 5, 20), id3: st(id3, id1, 5, 18)},
			wantLeader: id1, wantTerm: 5,
			wantRows: []row{
				{"n1", "leader", false, -1, "unreachable: no connection within 5s"},
				{"n2", "voter", true, -1, ""},
				{"n3", "voter", true, -1, ""},
			},
		},
		{
			name: "no leader: the members' own errors are shown",
			ml:   three,
			answers: map[uint64]answer{
				id1: with(st(id1, 0, 7, 20), func(s *clientv3.StatusResponse) { s.Errors = []string{"etcdserver: no leader"} }),
				id2: unreachable(), id3: unreachable(),
			},
			wantRows: []row{
				{"n1", "voter", true, -1, "etcdserver: no leader"},
				{"n2", "voter", false, -1, "unreachable: no connection within 5s"},
				{"n3", "voter", false, -1, "unreachable: no connection within 5s"},
			},
		},
		{
			name: "a deposed leader (older term) and a candidate (newer term, no leader) do not hide the leader",
			ml:   three,
			answers: map[uint64]answer{
				id1: st(id1, id1, 3, 40), // partitioned, still believes it leads
				id2: st(id2, id3, 4, 45),
				id3: st(id3, id3, 4, 45),
			},
			wantLeader: id3, wantTerm: 4,
			wantRows: []row{
				{"n1", "voter", true, 5, ""},
				{"n2", "voter", true, 0, ""},
				{"n3", "leader", true, 0, ""},
			},
			wantHealthy: true,
		},
		{
			name: "a candidate in a newer term without a leader",
			ml:   three,
			answers: map[uint64]answer{
				id1: st(id1, 0, 9, 40), id2: st(id2, id2, 8, 41), id3: st(id3, id2, 8, 41),
			},
			wantLeader: id2, wantTerm: 8,
			wantRows: []row{
				{"n1", "voter", true, 1, ""},
				{"n2", "leader", true, 0, ""},
				{"n3", "voter", true, 0, ""},
			},
			wantHealthy: true,
		},
		{
			name: "alarms are errors but the member answered",
			ml:   list(member(id1, "solo", false)),
			answers: map[uint64]answer{id1: with(st(id1, id1, 2, 9), func(s *clientv3.StatusResponse) {
				s.Errors = []string{"memberID:10276657743932975437 alarm:NOSPACE", "memberID:1 alarm:CORRUPT"}
			})},
			wantLeader: id1, wantTerm: 2,
			wantRows: []row{
				{"solo", "leader", true, 0, "memberID:10276657743932975437 alarm:NOSPACE; memberID:1 alarm:CORRUPT"},
			},
			wantHealthy: true,
		},
		{
			name:       "a member added but never started comes last, unstarted",
			ml:         list(member(id4, "", false), member(id2, "n2", false), member(id1, "n1", false)),
			answers:    map[uint64]answer{id1: st(id1, id1, 2, 9), id2: st(id2, id1, 2, 9)},
			wantLeader: id1, wantTerm: 2,
			wantRows: []row{
				{"n1", "leader", true, 0, ""},
				{"n2", "voter", true, 0, ""},
				{"", "voter", false, -1, "unstarted"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := build(tt.ml, tt.answers)
			if r.Leader != tt.wantLeader || r.Term != tt.wantTerm {
				t.Errorf("leader %x in term %d, want %x in term %d", r.Leader, r.Term, tt.wantLeader, tt.wantTerm)
			}
			if got := rows(r); !slices.Equal(got, tt.wantRows) {
				t.Errorf("rows:\n got %+v\nwant %+v", got, tt.wantRows)
			}
			if r.Healthy() != tt.wantHealthy {
				t.Errorf("Healthy() = %v, want %v", r.Healthy(), tt.wantHealthy)
			}
			if r.ClusterID != 0xcdf818194e3a8c32 {
				t.Errorf("cluster ID %x", r.ClusterID)
			}
		})
	}
}

func TestBuildKeepsStatusNumbers(t *testing.T) {
	a := st(id1, id1, 6, 1041)
	a.resp.DbSize, a.resp.DbSizeInUse = 5000, 3000
	r := build(list(member(id1, "n1", false)), map[uint64]answer{id1: a})
	m := r.Members[0]
	if m.ID != id1 || m.RaftTerm != 6 || m.RaftIndex != 1042 || m.AppliedIndex != 1041 || m.DBSize != 5000 || m.DBSizeInUse != 3000 {
		t.Fatalf("member %+v", m)
	}
	if !slices.Equal(m.ClientURLs, []string{"http://n1:2379"}) || !slices.Equal(m.PeerURLs, []string{"http://n1:2380"}) {
		t.Fatalf("URLs %q %q", m.ClientURLs, m.PeerURLs)
	}
}

func TestSummary(t *testing.T) {
	tests := []struct {
		ml      *clientv3.MemberListResponse
		answers map[uint64]answer
		want    string
	}{
		{
			list(member(id1, "n1", false), member(id2, "n2", false), member(id3, "n3", false)),
			map[uint64]answer{id1: st(id1, id2, 4, 100), id2: st(id2, id2, 4, 112), id3: st(id3, id2, 4, 112)},
			"3 members, leader n2 (term 4), max lag 12",
		},
		{
			list(member(id1, "n1", false)),
			map[uint64]answer{id1: st(id1, id1, 2, 3)},
			"1 member, leader n1 (term 2), max lag 0",
		},
		{
			list(member(id1, "n1", false), member(id2, "n2", false), member(id4, "", false)),
			map[uint64]answer{id1: unreachable(), id2: st(id2, id1, 3, 5)},
			"3 members, leader n1 (term 3), 1 unreachable, 1 unstarted",
		},
		{
			list(member(id1, "n1", false), member(id2, "n2", false)),
			map[uint64]answer{id1: st(id1, 0, 3, 5), id2: unreachable()},
			"2 members, no leader, 1 unreachable",
		},
		{
			// A leader missing from the member list is named by its ID.
			list(member(id1, "n1", false)),
			map[uint64]answer{id1: st(id1, 0xabc, 3, 5)},
			"1 member, leader abc (term 3)",
		},
	}
	for _, tt := range tests {
		if got := build(tt.ml, tt.answers).Summary(); got != tt.want {
			t.Errorf("Summary() = %q, want %q", got, tt.want)
		}
	}
}

func TestWriteTable(t *testing.T) {
	ml := list(member(id1, "n1", false), member(id2, "n2", false), member(id3, "n3", true), member(id4, "", false))
	big := st(id2, id2, 4, 1043)
	big.resp.DbSize = 25 << 20
	r := build(ml, map[uint64]answer{
		id1: st(id1, id2, 4, 1031),
		id2: big,
		id3: unreachable(),
	})
	var b strings.Builder
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	want := `NAME  ID                ROLE     CLIENT URL      RAFT TERM  RAFT INDEX  APPLIED INDEX  LAG  DB SIZE   ERRORS
n1    8e9e05c52164694d  voter    http://n1:2379  4          1032        1031           12   1.0 MiB
n2    1c3a2b            leader   http://n2:2379  4          1044        1043           0    25.0 MiB
n3    fd422379fda50e48  learner  http://n3:2379  -          -           -              -    -         unreachable: no connection within 5s
-     2a                voter    -               -          -           -              -    -         unstarted

4 members, leader n2 (term 4), max lag 12, 1 unreachable, 1 unstarted
`
	if got := b.String(); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}

// With Ballast's placement state, the table gains region and zone columns
// and the plan follows the summary; -w json carries both.
func TestWritePlacement(t *testing.T) {
	ml := list(member(id1, "n1", false), member(id2, "n2", false), member(id3, "n3", true))
	r := build(ml, map[uint64]answer{id1: st(id1, id1, 4, 100), id2: st(id2, id1, 4, 100), id3: st(id3, id1, 4, 90)})
	alive, dead := true, false
	r.addPlacement(&placement.Status{
		Enabled: true, Planner: true,
		Policy: placement.StatusPolicy{Voters: 3, LeaderRegion: "a", StabilizationWindow: "30s"},
		Members: []placement.StatusMember{
			{ID: hexID(id1), Name: "n1", Region: "a", Zone: "a1", Role: "voter", Alive: &alive},
			{ID: hexID(id2), Name: "n2", Region: "b", Zone: "b1", Role: "voter", Alive: &dead, DownFor: "40s"},
			{ID: hexID(id3), Name: "n3", Region: "b", Zone: "b2", Role: "non-voter", Alive: &alive},
		},
		Next: []placement.StatusChange{
			{Kind: "promote", ID: hexID(id3), Name: "n3", Reason: "replaces n2"},
			{Kind: "remove", ID: hexID(id2), Name: "n2", Reason: "down for 40s"},
		},
		Tolerance: placement.StatusTolerance{Regions: 0, Zones: 0, Members: 0},
	})
	var b strings.Builder
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	want := `NAME  ID                ROLE     REGION  ZONE  CLIENT URL      RAFT TERM  RAFT INDEX  APPLIED INDEX  LAG  DB SIZE  ERRORS
n1    8e9e05c52164694d  leader   a       a1    http://n1:2379  4          101         100            0    1.0 MiB
n2    1c3a2b            voter    b       b1    http://n2:2379  4          101         100            0    1.0 MiB
n3    fd422379fda50e48  learner  b       b2    http://n3:2379  4          91          90             10   1.0 MiB

3 members, leader n1 (term 4), max lag 10
placement: 3 voters wanted, leader in region a, stabilisation window 30s; can lose 0 regions, 0 zones, 0 members and keep a quorum
placement next: promote n3 (fd422379fda50e48): replaces n2
placement then: remove n2 (1c3a2b): down for 40s
`
	if got := b.String(); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}

	b.Reset()
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Members []struct {
			Name, Region, Zone string
		}
		Placement *placement.Status
	}
	if err := json.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Fatalf("%v in\n%s", err, b.String())
	}
	if doc.Placement == nil || len(doc.Placement.Next) != 2 || doc.Placement.Next[0].Kind != "promote" || doc.Members[2].Zone != "b2" {
		t.Errorf("json:\n%s", b.String())
	}

	// Without gossip: no plan, no columns when nobody is labelled.
	r = build(ml, map[uint64]answer{id1: st(id1, id1, 4, 100)})
	r.addPlacement(&placement.Status{Enabled: false})
	b.Reset()
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "REGION") || strings.Contains(b.String(), "placement") {
		t.Errorf("unlabelled cluster without gossip:\n%s", b.String())
	}
}

func TestWriteJSON(t *testing.T) {
	ml := list(member(id1, "n1", false), member(id2, "n2", false), member(id4, "", false))
	var b strings.Builder
	if err := build(ml, map[uint64]answer{id1: st(id1, id1, 4, 100), id2: unreachable()}).WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		ClusterID string  `json:"cluster_id"`
		Leader    *string `json:"leader"`
		Members   []map[string]any
	}
	if err := json.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Fatalf("%v in\n%s", err, b.String())
	}
	if doc.ClusterID != "cdf818194e3a8c32" || doc.Leader == nil || *doc.Leader != "8e9e05c52164694d" {
		t.Errorf("cluster_id %q, leader %v", doc.ClusterID, doc.Leader)
	}
	if len(doc.Members) != 3 {
		t.Fatalf("%d members in\n%s", len(doc.Members), b.String())
	}
	keys := []string{"name", "id", "role", "client_urls", "peer_urls", "region", "zone", "raft_term", "raft_index", "applied_index",
		"lag", "db_size", "db_size_in_use", "errors", "reachable"}
	for _, m := range doc.Members {
		for _, k := range keys {
			if _, ok := m[k]; !ok {
				t.Errorf("member %v has no %q", m["name"], k)
			}
		}
		if len(m) != len(keys) {
			t.Errorf("member %v has fields %v, want exactly %v", m["name"], m, keys)
		}
		if _, ok := m["errors"].([]any); !ok {
			t.Errorf("member %v: errors is %v, want an array", m["name"], m["errors"])
		}
		if _, ok := m["client_urls"].([]any); !ok {
			t.Errorf("member %v: client_urls is %v, want an array", m["name"], m["client_urls"])
		}
	}
	n1, n2, unstarted := doc.Members[0], doc.Members[1], doc.Members[2]
	if n1["id"] != "8e9e05c52164694d" || n1["role"] != "leader" || n1["reachable"] != true ||
		n1["lag"] != 0.0 || n1["applied_index"] != 100.0 || n1["raft_index"] != 101.0 || n1["raft_term"] != 4.0 ||
		n1["db_size"] != float64(1<<20) || n1["db_size_in_use"] != float64(1<<19) {
		t.Errorf("n1: %v", n1)
	}
	if n2["reachable"] != false || n2["lag"] != nil || !slices.Equal(toStrings(n2["errors"]), []string{"unreachable: no connection within 5s"}) {
		t.Errorf("n2: %v", n2)
	}
	if unstarted["name"] != "" || unstarted["id"] != "2a" || !slices.Equal(toStrings(unstarted["errors"]), []string{"unstarted"}) ||
		len(toStrings(unstarted["client_urls"])) != 0 {
		t.Errorf("unstarted: %v", unstarted)
	}

	// Without a leader, "leader" is null rather than a made-up ID.
	b.Reset()
	if err := build(ml, map[uint64]answer{id1: st(id1, 0, 4, 100)}).WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var noLeader map[string]any
	if err := json.Unmarshal([]byte(b.String()), &noLeader); err != nil {
		t.Fatal(err)
	}
	if v, ok := noLeader["leader"]; !ok || v != nil {
		t.Errorf("leader = %v (present %v), want null", v, ok)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, e := range v.([]any) {
		out = append(out, e.(string))
	}
	return out
}
