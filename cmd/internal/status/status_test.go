package status

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

func runStatus(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut strings.Builder
	code = run(t.Context(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--nope"}, "unknown flag --nope"},
		{[]string{"-w", "yaml"}, `-w must be table or json, not "yaml"`},
		{[]string{"--write-out=simple"}, `-w must be table or json, not "simple"`},
		{[]string{"--endpoints", " , "}, "--endpoints is empty"},
		{[]string{"--cert", "client.pem"}, "--cert and --key must be given together"},
		{[]string{"--dial-timeout", "0s"}, "--dial-timeout must be positive"},
		{[]string{"--command-timeout", "soon"}, `invalid value "soon" for flag -command-timeout`},
		{[]string{"members"}, `unexpected argument "members"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := runStatus(t, tt.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, "ballast status -h") {
				t.Errorf("stderr %q does not name the problem (%q) or point to -h", errOut, tt.want)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	code, _, errOut := runStatus(t, "-h")
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	for _, want := range []string{"Usage: ballast status", "-endpoints", "-dial-timeout", "-command-timeout", "-w format"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("usage lacks %q:\n%s", want, errOut)
		}
	}
}

// closedAddr returns a 127.0.0.1 address nothing listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestNoEndpointAnswers(t *testing.T) {
	a, b := closedAddr(t), closedAddr(t)
	start := time.Now()
	code, out, errOut := runStatus(t, "--endpoints", a+",http://"+b, "--dial-timeout", "300ms")
	if code != 1 || out != "" {
		t.Errorf("exit %d, stdout %q; want 1 and nothing", code, out)
	}
	for _, want := range []string{"cannot read the member list", a + ": unreachable", "http://" + b + ": unreachable"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v with a 300ms dial timeout per endpoint", d)
	}
}

// fakeMember is a gRPC server answering MemberList with members and Status
// with status; with hang, Status never answers.
type fakeMember struct {
	pb.UnimplementedClusterServer
	pb.UnimplementedMaintenanceServer
	url     string
	members []*pb.Member
	status  *pb.StatusResponse
	hang    bool
}

func (f *fakeMember) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	return &pb.MemberListResponse{Header: &pb.ResponseHeader{ClusterId: 0xc1}, Members: f.members}, nil
}

func (f *fakeMember) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	if f.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return f.status, nil
}

func serve(t *testing.T, f *fakeMember) *fakeMember {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterClusterServer(s, f)
	pb.RegisterMaintenanceServer(s, f)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	f.url = "http://" + l.Addr().String()
	return f
}

// TestAgainstFakeMembers runs the command over the network against gRPC
// servers that answer like members of a cluster: one leader, one follower
// behind it, one that never answers Status, one whose port is closed and
// one never started.
func TestAgainstFakeMembers(t *testing.T) {
	leader := serve(t, &fakeMember{status: &pb.StatusResponse{Leader: 1, RaftTerm: 3, RaftIndex: 60, RaftAppliedIndex: 60, DbSize: 3 << 20}})
	follower := serve(t, &fakeMember{status: &pb.StatusResponse{Leader: 1, RaftTerm: 3, RaftIndex: 60, RaftAppliedIndex: 52, DbSize: 3 << 20}})
	hung := serve(t, &fakeMember{hang: true})
	down := "http://" + closedAddr(t)
	all := []*pb.Member{
		{ID: 1, Name: "a", ClientURLs: []string{leader.url}},
		{ID: 2, Name: "b", ClientURLs: []string{follower.url}},
		{ID: 3, Name: "c", ClientURLs: []string{hung.url}},
		{ID: 4, Name: "d", ClientURLs: []string{down}},
		{ID: 5, PeerURLs: []string{"http://10.0.0.5:2380"}},
	}
	// The member list comes from the first endpoint that answers: the
	// closed port is skipped.
	follower.members = all

	start := time.Now()
	code, out, errOut := runStatus(t, "--endpoints", strings.TrimPrefix(down, "http://")+","+strings.TrimPrefix(follower.url, "http://"),
		"--dial-timeout", "500ms", "--command-timeout", "500ms")
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("took %v with 500ms timeouts", d)
	}
	if code != 1 {
		t.Errorf("exit %d, want 1 (stderr %q)", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 8 {
		t.Fatalf("got %d lines, want header, 5 rows, blank, summary:\n%s", len(lines), out)
	}
	wantRows := []struct{ name, role, lag, errors string }{
		{"a", "leader", "0", ""},
		{"b", "voter", "8", ""},
		{"c", "voter", "-", "unresponsive: no answer within 500ms"},
		{"d", "voter", "-", "unreachable: no connection within 500ms"},
		{"-", "voter", "-", "unstarted"},
	}
	for i, w := range wantRows {
		f := strings.Fields(lines[i+1])
		if f[0] != w.name || f[2] != w.role || f[7] != w.lag || !strings.HasSuffix(lines[i+1], w.errors) {
			t.Errorf("row %d = %q, want name %s role %s lag %s errors %q", i, lines[i+1], w.name, w.role, w.lag, w.errors)
		}
	}
	if want := "5 members, leader a (term 3), max lag 8, 2 unreachable, 1 unstarted"; lines[7] != want {
		t.Errorf("summary %q, want %q", lines[7], want)
	}

	// Only the two that answer: healthy, exit 0, and the same as JSON.
	leader.members = all[:2]
	code, out, errOut = runStatus(t, "--endpoints", leader.url, "-w", "json")
	if code != 0 {
		t.Errorf("exit %d, want 0 (stderr %q)", code, errOut)
	}
	var doc struct {
		ClusterID string `json:"cluster_id"`
		Leader    string `json:"leader"`
		Members   []struct {
			Name      string  `json:"name"`
			Role      string  `json:"role"`
			Lag       *uint64 `json:"lag"`
			DBSize    int64   `json:"db_size"`
			Reachable bool    `json:"reachable"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
	if doc.ClusterID != "c1" || doc.Leader != "1" || len(doc.Members) != 2 ||
		doc.Members[1].Name != "b" || doc.Members[1].Lag == nil || *doc.Members[1].Lag != 8 || doc.Members[1].DBSize != 3<<20 || !doc.Members[1].Reachable {
		t.Errorf("json: %+v", doc)
	}

	// Members that all answer but know no leader: exit 1.
	leader.status.Leader, follower.status.Leader = 0, 0
	if code, out, _ = runStatus(t, "--endpoints", leader.url); code != 1 || !strings.Contains(out, "2 members, no leader") {
		t.Errorf("no leader: exit %d, output\n%s", code, out)
	}
}
