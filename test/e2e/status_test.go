package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// These tests run `ballast status` as an operator does, as a process: the
// command lives in cmd/internal and the harness in test/internal, and Go's
// internal rule lets neither import the other.

// statusRun is one run of `ballast status`.
type statusRun struct {
	code           int
	stdout, stderr string
}

func runStatusCmd(t *testing.T, args ...string) statusRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.BallastBin(t), append([]string{"status"}, args...)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := statusRun{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("ballast status %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// statusTable is the table printed by `ballast status`: rows of cells by
// column title, the summary line and the placement lines after it.
type statusTable struct {
	rows      []map[string]string
	summary   string
	placement []string
}

// parseStatusTable cuts rows at the offsets of the header's titles (the
// columns are left-aligned; cells such as "1.2 MiB" hold blanks). REGION
// and ZONE are there only when a member has a label.
func parseStatusTable(t *testing.T, out string) statusTable {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	blank := slices.Index(lines, "")
	if blank < 2 || blank+1 >= len(lines) {
		t.Fatalf("not a table, a blank line and a summary:\n%s", out)
	}
	titles := []string{"NAME", "ID", "ROLE", "CLIENT URL", "RAFT TERM", "RAFT INDEX", "APPLIED INDEX", "LAG", "DB SIZE", "ERRORS"}
	if strings.Contains(lines[0], " REGION ") {
		titles = slices.Insert(titles, 3, "REGION", "ZONE")
	}
	var at []int
	for _, title := range titles {
		i := strings.Index(lines[0], title)
		if i < 0 || (len(at) > 0 && i <= at[len(at)-1]) {
			t.Fatalf("header %q lacks %q in order", lines[0], title)
		}
		at = append(at, i)
	}
	var tb statusTable
	for _, line := range lines[1:blank] {
		row := map[string]string{}
		for i, title := range titles {
			end := len(line)
			if i+1 < len(at) {
				end = min(at[i+1], len(line))
			}
			row[title] = strings.TrimSpace(line[min(at[i], len(line)):end])
		}
		tb.rows = append(tb.rows, row)
	}
	tb.summary = lines[blank+1]
	tb.placement = lines[blank+2:]
	return tb
}

// statusJSON is the -w json document, as a script reads it.
type statusJSON struct {
	ClusterID string  `json:"cluster_id"`
	Leader    *string `json:"leader"`
	Members   []struct {
		Name         string   `json:"name"`
		ID           string   `json:"id"`
		Role         string   `json:"role"`
		ClientURLs   []string `json:"client_urls"`
		PeerURLs     []string `json:"peer_urls"`
		RaftTerm     uint64   `json:"raft_term"`
		RaftIndex    uint64   `json:"raft_index"`
		AppliedIndex uint64   `json:"applied_index"`
		Lag          *uint64  `json:"lag"`
		DBSize       int64    `json:"db_size"`
		DBSizeInUse  int64    `json:"db_size_in_use"`
		Errors       []string `json:"errors"`
		Reachable    bool     `json:"reachable"`
	} `json:"members"`
}

// TestStatusEtcdCluster runs `ballast status` against a real three-member
// etcd cluster, then again with a follower killed.
func TestStatusEtcdCluster(t *testing.T) {
	nodes := harness.StartCluster(t, harness.EtcdBin(t), 3, harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := nodes[0].Client(t)
	for i := range 20 {
		if _, err := cli.Put(ctx, "k"+strconv.Itoa(i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	// What etcd itself says, to check the command against.
	ml, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{} // name -> hex ID
	for _, m := range ml.Members {
		ids[m.Name] = strconv.FormatUint(m.ID, 16)
	}
	st, err := cli.Status(ctx, nodes[0].ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	leaderID := strconv.FormatUint(st.Leader, 16)
	clusterID := strconv.FormatUint(ml.Header.ClusterId, 16)

	// Both endpoint forms are accepted.
	eps := strings.TrimPrefix(nodes[0].ClientURL, "http://") + "," + nodes[1].ClientURL
	r := runStatusCmd(t, "--endpoints", eps)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	tb := parseStatusTable(t, r.stdout)
	if len(tb.rows) != 3 {
		t.Fatalf("%d rows, want 3:\n%s", len(tb.rows), r.stdout)
	}
	var leaders []string
	for i, row := range tb.rows {
		name := "n" + strconv.Itoa(i+1)
		if row["NAME"] != name || row["ID"] != ids[name] || row["CLIENT URL"] != nodes[i].ClientURL {
			t.Errorf("row %d: %v, want %s with ID %s at %s", i, row, name, ids[name], nodes[i].ClientURL)
		}
		wantRole := "voter"
		if row["ID"] == leaderID {
			wantRole = "leader"
		}
		if row["ROLE"] != wantRole {
			t.Errorf("%s: role %q, want %q (etcd says the leader is %s)", name, row["ROLE"], wantRole, leaderID)
		}
		if row["ROLE"] == "leader" {
			leaders = append(leaders, name)
			if row["LAG"] != "0" {
				t.Errorf("leader lag %q, want 0", row["LAG"])
			}
		}
		if _, err := strconv.ParseUint(row["LAG"], 10, 64); err != nil {
			t.Errorf("%s: lag %q is not a number", name, row["LAG"])
		}
		if applied, err := strconv.ParseUint(row["APPLIED INDEX"], 10, 64); err != nil || applied < 20 {
			t.Errorf("%s: applied index %q after 20 puts", name, row["APPLIED INDEX"])
		}
		if !strings.HasSuffix(row["DB SIZE"], "iB") || row["ERRORS"] != "" {
			t.Errorf("%s: db size %q, errors %q", name, row["DB SIZE"], row["ERRORS"])
		}
	}
	if len(leaders) != 1 {
		t.Fatalf("leaders %v, want exactly one", leaders)
	}
	if !strings.HasPrefix(tb.summary, "3 members, leader "+leaders[0]+" (term ") || !strings.Contains(tb.summary, "max lag ") {
		t.Errorf("summary %q", tb.summary)
	}

	r = runStatusCmd(t, "--endpoints", nodes[2].ClientURL, "-w", "json")
	if r.code != 0 {
		t.Fatalf("json: exit %d, want 0\n%s%s", r.code, r.stdout, r.stderr)
	}
	var doc statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("%v in\n%s", err, r.stdout)
	}
	if doc.ClusterID != clusterID || doc.Leader == nil || *doc.Leader != leaderID || len(doc.Members) != 3 {
		t.Fatalf("cluster_id %s (want %s), leader %v (want %s), %d members", doc.ClusterID, clusterID, doc.Leader, leaderID, len(doc.Members))
	}
	for i, m := range doc.Members {
		n := nodes[i]
		if m.Name != n.Name || m.ID != ids[n.Name] || !slices.Equal(m.ClientURLs, []string{n.ClientURL}) ||
			!slices.Equal(m.PeerURLs, []string{n.PeerURL}) || !m.Reachable || m.Lag == nil ||
			m.RaftTerm == 0 || m.AppliedIndex < 20 || m.RaftIndex < m.AppliedIndex || m.DBSize <= 0 || len(m.Errors) != 0 {
			t.Errorf("member %d: %+v", i, m)
		}
		if (m.Role == "leader") != (m.ID == leaderID) || (m.Role != "leader" && m.Role != "voter") {
			t.Errorf("%s: role %q, leader is %s", m.Name, m.Role, leaderID)
		}
	}

	// Kill a follower, and list it first among the endpoints: the member
	// list comes from the next one.
	var dead *harness.Node
	for _, n := range nodes {
		if ids[n.Name] != leaderID {
			dead = n
			break
		}
	}
	dead.Kill()
	var live []string
	for _, n := range nodes {
		if n != dead {
			live = append(live, n.ClientURL)
		}
	}
	start := time.Now()
	r = runStatusCmd(t, "--endpoints", dead.ClientURL+","+strings.Join(live, ","), "--dial-timeout", "1s", "--command-timeout", "2s")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v with a 1s dial timeout", d)
	}
	if r.code != 1 {
		t.Fatalf("with %s killed: exit %d, want 1\n%s%s", dead.Name, r.code, r.stdout, r.stderr)
	}
	tb = parseStatusTable(t, r.stdout)
	if len(tb.rows) != 3 {
		t.Fatalf("%d rows, want 3:\n%s", len(tb.rows), r.stdout)
	}
	for _, row := range tb.rows {
		if row["NAME"] == dead.Name {
			if !strings.HasPrefix(row["ERRORS"], "unreachable: ") || row["ROLE"] != "voter" || row["LAG"] != "-" || row["RAFT TERM"] != "-" {
				t.Errorf("killed %s: %v", dead.Name, row)
			}
			continue
		}
		if row["ERRORS"] != "" || (row["ROLE"] == "leader") != (row["ID"] == leaderID) {
			t.Errorf("live %s: %v", row["NAME"], row)
		}
	}
	if !strings.HasPrefix(tb.summary, "3 members, leader ") || !strings.HasSuffix(tb.summary, ", 1 unreachable") {
		t.Errorf("summary %q", tb.summary)
	}

	r = runStatusCmd(t, "--endpoints", strings.Join(live, ","), "--dial-timeout", "1s", "-w", "json")
	if r.code != 1 {
		t.Errorf("json with %s killed: exit %d, want 1", dead.Name, r.code)
	}
	doc = statusJSON{}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("%v in\n%s", err, r.stdout)
	}
	for _, m := range doc.Members {
		if down := m.Name == dead.Name; m.Reachable == down || (m.Lag == nil) != down {
			t.Errorf("%s (killed: %v): reachable %v, lag %v, errors %q", m.Name, down, m.Reachable, m.Lag, m.Errors)
		}
	}
}

// TestStatusBallast runs `ballast status` against a single Ballast node.
func TestStatusBallast(t *testing.T) {
	n := harness.Start(t, harness.BallastBin(t), harness.Options{})
	r := runStatusCmd(t, "--endpoints", n.ClientURL)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	tb := parseStatusTable(t, r.stdout)
	if len(tb.rows) != 1 {
		t.Fatalf("%d rows, want 1:\n%s", len(tb.rows), r.stdout)
	}
	row := tb.rows[0]
	if row["NAME"] != n.Name || row["ROLE"] != "leader" || row["CLIENT URL"] != n.ClientURL || row["LAG"] != "0" || row["ERRORS"] != "" {
		t.Errorf("row %v", row)
	}
	if !strings.HasPrefix(tb.summary, "1 member, leader "+n.Name+" (term ") || !strings.HasSuffix(tb.summary, "max lag 0") {
		t.Errorf("summary %q", tb.summary)
	}

	r = runStatusCmd(t, "--endpoints", strings.TrimPrefix(n.ClientURL, "http://"), "-w", "json")
	var doc statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 0 {
		t.Fatalf("exit %d, %v in\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	if len(doc.Members) != 1 || doc.Leader == nil || *doc.Leader != doc.Members[0].ID || !doc.Members[0].Reachable {
		t.Errorf("json %+v", doc)
	}

	// A usage error is exit 2, with the problem named.
	if r = runStatusCmd(t, "-w", "yaml"); r.code != 2 || !strings.Contains(r.stderr, `-w must be table or json, not "yaml"`) {
		t.Errorf("-w yaml: exit %d, stderr %q", r.code, r.stderr)
	}
}
