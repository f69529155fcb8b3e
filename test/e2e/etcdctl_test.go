package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// ctl runs etcdctl against n and returns its stdout; a non-zero exit fails
// the test unless wantErr is set, in which case stderr is returned.
type ctlRunner struct {
	t     *testing.T
	bin   string
	ep    string
	flags []string // TLS files
}

func newCtl(t *testing.T, n *harness.Node) *ctlRunner {
	c := &ctlRunner{t: t, bin: harness.EtcdctlBin(t), ep: n.ClientURL}
	if n.TLSFiles.CA != "" {
		c.flags = ctlTLSFlags(n.TLSFiles)
	}
	return c
}

// ctlTLSFlags are etcdctl's flags for a TLS client with files f.
func ctlTLSFlags(f harness.ClientFiles) []string {
	return []string{"--cacert", f.CA, "--cert", f.Cert, "--key", f.Key}
}

func (c *ctlRunner) run(stdin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, slices.Concat([]string{"--endpoints", c.ep}, c.flags, args)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func (c *ctlRunner) ok(args ...string) string {
	c.t.Helper()
	out, stderr, err := c.run("", args...)
	if err != nil {
		c.t.Fatalf("etcdctl %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return out
}

func (c *ctlRunner) fails(args ...string) string {
	c.t.Helper()
	out, stderr, err := c.run("", args...)
	if err == nil {
		c.t.Fatalf("etcdctl %s succeeded, want an error; output:\n%s", strings.Join(args, " "), out)
	}
	return stderr
}

func expect(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

func TestEtcdctl(t *testing.T) {
	n := harness.Start(t, harness.BallastBin(t), harness.Options{})
	c := newCtl(t, n)

	for _, kv := range [][2]string{{"a", "1"}, {"b", "2"}, {"b2", "22"}, {"c", "3"}, {"b", "20"}} {
		expect(t, "put", c.ok("put", kv[0], kv[1]), "OK\n")
	}
	// Revisions: 5 puts on a fresh store end at revision 6.
	var resp struct {
		Header struct{ Revision int64 } `json:"header"`
		Kvs    []struct {
			Key            []byte `json:"key"`
			Value          []byte `json:"value"`
			CreateRevision int64  `json:"create_revision"`
			ModRevision    int64  `json:"mod_revision"`
			Version        int64  `json:"version"`
			Lease          int64  `json:"lease"`
		} `json:"kvs"`
		Count int64 `json:"count"`
		More  bool  `json:"more"`
	}
	if err := json.Unmarshal([]byte(c.ok("get", "b", "-w", "json")), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Header.Revision != 6 || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "20" ||
		resp.Kvs[0].CreateRevision != 3 || resp.Kvs[0].ModRevision != 6 || resp.Kvs[0].Version != 2 {
		t.Errorf("get b -w json = %+v", resp)
	}

	t.Run("get options", func(t *testing.T) {
		cases := []struct {
			args []string
			want string
		}{
			{[]string{"get", "b", "--prefix"}, "b\n20\nb2\n22\n"},
			{[]string{"get", "b", "--from-key"}, "b\n20\nb2\n22\nc\n3\n"},
			{[]string{"get", "a", "c"}, "a\n1\nb\n20\nb2\n22\n"},
			{[]string{"get", "a", "--from-key", "--limit", "2"}, "a\n1\nb\n20\n"},
			{[]string{"get", "a", "--from-key", "--keys-only"}, "a\n\nb\n\nb2\n\nc\n\n"},
			{[]string{"get", "a", "--from-key", "--print-value-only"}, "1\n20\n22\n3\n"},
			{[]string{"get", "a", "--from-key", "--order", "DESCEND"}, "c\n3\nb2\n22\nb\n20\na\n1\n"},
			{[]string{"get", "a", "--from-key", "--sort-by", "VALUE", "--order", "ASCEND", "--print-value-only"}, "1\n20\n22\n3\n"},
			{[]string{"get", "a", "--from-key", "--sort-by", "MODIFY", "--order", "DESCEND", "--keys-only"}, "b\n\nc\n\nb2\n\na\n\n"},
			{[]string{"get", "a", "--from-key", "--sort-by", "VERSION", "--order", "DESCEND", "--limit", "1", "--keys-only"}, "b\n\n"},
			{[]string{"get", "b", "--rev", "3"}, "b\n2\n"},
			{[]string{"get", "b", "--rev", "2"}, ""},
			{[]string{"get", "b", "--consistency", "s"}, "b\n20\n"},
			{[]string{"get", "", "--prefix", "--keys-only", "--limit", "1"}, "a\n\n"},
		}
		for _, tc := range cases {
			expect(t, strings.Join(tc.args, " "), c.ok(tc.args...), tc.want)
		}
		if out := c.ok("get", "a", "--from-key", "--count-only", "-w", "fields"); !strings.Contains(out, "\"Count\" : 4\n") || strings.Contains(out, "\"Key\"") {
			t.Errorf("count-only: %q", out)
		}
		var cnt struct {
			Count int64 `json:"count"`
			More  bool  `json:"more"`
		}
		json.Unmarshal([]byte(c.ok("get", "a", "--from-key", "--limit", "1", "-w", "json")), &cnt)
		if cnt.Count != 4 || !cnt.More {
			t.Errorf("count/more with limit 1 = %+v, want count 4, more true", cnt)
		}
	})

	t.Run("txn", func(t *testing.T) {
		out, stderr, err := c.run("value(\"a\") = \"1\"\n\nput a 10\nget b\n\nput a 99\n\n", "txn")
		if err != nil {
			t.Fatalf("txn: %v %s", err, stderr)
		}
		expect(t, "txn success branch", out, "SUCCESS\n\nOK\n\nb\n20\n")
		out, _, _ = c.run("value(\"a\") = \"1\"\n\nput a 11\n\nput x failed\n\n", "txn")
		expect(t, "txn failure branch", out, "FAILURE\n\nOK\n")
		expect(t, "after txns", c.ok("get", "a", "--print-value-only"), "10\n")
		expect(t, "after txns", c.ok("get", "x", "--print-value-only"), "failed\n")
	})

	t.Run("del", func(t *testing.T) {
		c.ok("put", "d/1", "x")
		c.ok("put", "d/2", "y")
		expect(t, "del --prefix --prev-kv", c.ok("del", "d/", "--prefix", "--prev-kv"), "2\nd/1\nx\nd/2\ny\n")
		expect(t, "del missing", c.ok("del", "d/1"), "0\n")
	})

	t.Run("watch", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, c.bin, "--endpoints", c.ep, "watch", "b", "--prefix", "--rev", "1")
		var buf strings.Builder
		cmd.Stdout = &buf
		cmd.Run() // ends at the deadline: watch never returns by itself
		expect(t, "watch history", buf.String(), "PUT\nb\n2\nPUT\nb2\n22\nPUT\nb\n20\n")
	})

	t.Run("lease", func(t *testing.T) {
		out := c.ok("lease", "grant", "100")
		f := strings.Fields(out)
		if len(f) < 2 || f[0] != "lease" {
			t.Fatalf("lease grant: %q", out)
		}
		id := f[1]
		c.ok("put", "leased", "v", "--lease", id)
		ttl := c.ok("lease", "timetolive", id, "--keys")
		if !strings.Contains(ttl, "granted with TTL(100s)") || !strings.Contains(ttl, "attached keys([leased])") {
			t.Errorf("timetolive: %q", ttl)
		}
		if !strings.Contains(c.ok("lease", "list"), id) {
			t.Errorf("lease list lacks %s", id)
		}
		if ka := c.ok("lease", "keep-alive", "--once", id); !strings.Contains(ka, "keepalived with TTL(100)") {
			t.Errorf("keep-alive: %q", ka)
		}
		expect(t, "revoke", c.ok("lease", "revoke", id), "lease "+id+" revoked\n")
		expect(t, "key of revoked lease", c.ok("get", "leased"), "")
		if e := c.fails("put", "k", "v", "--lease", id); !strings.Contains(e, "requested lease not found") {
			t.Errorf("put with revoked lease: %q", e)
		}
	})

	t.Run("compaction", func(t *testing.T) {
		expect(t, "compaction", c.ok("compaction", "4", "--physical"), "compacted revision 4\n")
		if e := c.fails("get", "b", "--rev", "3"); !strings.Contains(e, "required revision has been compacted") {
			t.Errorf("read below compaction: %q", e)
		}
		expect(t, "read at compaction revision", c.ok("get", "b", "--rev", "4", "--print-value-only"), "2\n")
		if e := c.fails("compaction", "3"); !strings.Contains(e, "required revision has been compacted") {
			t.Errorf("compact again: %q", e)
		}
	})

	t.Run("errors", func(t *testing.T) {
		if e := c.fails("put", "", "v"); !strings.Contains(e, "key is not provided") {
			t.Errorf("empty key: %q", e)
		}
		if e := c.fails("get", "a", "--rev", "100000"); !strings.Contains(e, "required revision is a future revision") {
			t.Errorf("future revision: %q", e)
		}
	})

	t.Run("endpoint", func(t *testing.T) {
		var st []struct {
			Status struct {
				Version string `json:"version"`
				Leader  uint64 `json:"leader"`
				Header  struct {
					MemberID uint64 `json:"member_id"`
				} `json:"header"`
			} `json:"Status"`
		}
		if err := json.Unmarshal([]byte(c.ok("endpoint", "status", "-w", "json")), &st); err != nil {
			t.Fatal(err)
		}
		if len(st) != 1 || !strings.HasPrefix(st[0].Status.Version, "3.6.") || st[0].Status.Leader != st[0].Status.Header.MemberID {
			t.Errorf("endpoint status = %+v", st)
		}
		if h := c.ok("endpoint", "health"); !strings.Contains(h, "is healthy") {
			t.Errorf("endpoint health: %q", h)
		}
		if m := c.ok("member", "list"); !strings.Contains(m, "started, n, "+n.PeerURL+", "+n.ClientURL) {
			t.Errorf("member list: %q", m)
		}
	})
}
