package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// authTranscript is an operator's session with etcdctl: users, roles and
// permissions, auth enabled, requests refused and allowed, auth disabled.
var authTranscript = [][]string{
	{"user", "add", "root", "--new-user-password", "rootpw"},
	{"user", "grant-role", "root", "root"},
	{"auth", "enable"}, // before the role exists on u1: fine
	{"--user", "root:rootpw", "role", "add", "r1"},
	{"--user", "root:rootpw", "role", "grant-permission", "r1", "readwrite", "foo"},
	{"--user", "root:rootpw", "role", "grant-permission", "r1", "read", "pre/", "--prefix"},
	{"--user", "root:rootpw", "role", "grant-permission", "r1", "write", "w1", "w5"},
	{"--user", "root:rootpw", "role", "grant-permission", "r1", "read", "z", "--from-key"},
	{"--user", "root:rootpw", "user", "add", "u1", "--new-user-password", "u1pw"},
	{"--user", "root:rootpw", "user", "add", "nopw", "--no-password"},
	{"--user", "root:rootpw", "user", "grant-role", "u1", "r1"},
	{"--user", "root:rootpw", "user", "grant-role", "u1", "missing"},
	{"put", "foo", "bar"},
	{"--user", "u1:u1pw", "put", "foo", "bar"},
	{"--user", "u1:u1pw", "get", "foo"},
	{"--user", "u1:u1pw", "put", "other", "x"},
	{"--user", "u1:wrong", "get", "foo"},
	{"--user", "nobody:pw", "get", "foo"},
	{"--user", "u1:u1pw", "get", "pre/", "--prefix"},
	{"--user", "u1:u1pw", "put", "pre/a", "x"},
	{"--user", "u1:u1pw", "get", "foo", "--prefix"},
	{"--user", "u1:u1pw", "put", "w2", "x"},
	{"--user", "u1:u1pw", "get", "w2"},
	{"--user", "u1:u1pw", "del", "w1", "w5"},
	{"--user", "u1:u1pw", "del", "w1", "w6"},
	{"--user", "u1:u1pw", "get", "z", "--from-key"},
	{"--user", "u1:u1pw", "get", "y", "--from-key"},
	{"--user", "u1:u1pw", "txn"}, // stdin below
	{"--user", "u1:u1pw", "compaction", "1"},
	{"--user", "u1:u1pw", "user", "list"},
	{"--user", "u1:u1pw", "role", "add", "r2"},
	{"--user", "u1:u1pw", "user", "get", "u1"},
	{"--user", "u1:u1pw", "role", "get", "r1"},
	{"--user", "root:rootpw", "user", "list"},
	{"--user", "root:rootpw", "role", "list"},
	{"--user", "root:rootpw", "role", "get", "r1"},
	{"--user", "root:rootpw", "role", "get", "root"},
	{"--user", "root:rootpw", "user", "get", "u1"},
	{"--user", "root:rootpw", "role", "revoke-permission", "r1", "foo"},
	{"--user", "root:rootpw", "role", "revoke-permission", "r1", "foo"},
	{"--user", "u1:u1pw", "get", "foo"},
	{"--user", "root:rootpw", "user", "revoke-role", "u1", "r1"},
	{"--user", "root:rootpw", "user", "delete", "root"},
	{"--user", "root:rootpw", "role", "delete", "root"},
	{"--user", "root:rootpw", "user", "passwd", "u1", "--interactive=false"}, // stdin below
	{"--user", "u1:u1pw", "get", "foo"},
	{"--user", "root:rootpw", "auth", "status"},
	{"--user", "root:rootpw", "auth", "disable"},
	{"get", "foo"},
	{"auth", "status"},
	{"user", "delete", "u1"},
	{"role", "delete", "r1"},
	{"user", "list"},
}

// authTxn is the txn of the transcript: it writes outside u1's
// permission in a branch that does not run.
const authTxn = "value(\"foo\") = \"bar\"\n\nput foo baz\n\nput other evil\n\n"

func runAuthTranscript(t *testing.T, n *harness.Node) []string {
	c := newCtl(t, n)
	var out []string
	for _, args := range authTranscript {
		stdin := ""
		switch args[len(args)-1] {
		case "txn":
			stdin = authTxn
		case "--interactive=false":
			stdin = "u1pw2\n"
		}
		stdout, stderr, err := c.run(stdin, args...)
		line := "$ etcdctl " + strings.Join(args, " ") + "\n" + stdout
		if err != nil {
			line += fmt.Sprintf("exit: %v\n", err)
		}
		// etcdctl's client logs retries as JSON lines with times; keep
		// only what it tells the user.
		for _, l := range strings.Split(stderr, "\n") {
			if strings.HasPrefix(l, "Error:") {
				line += l + "\n"
			}
		}
		out = append(out, line)
	}
	return out
}

// TestAuthEtcdctlLikeEtcd runs the operator's session against etcd and
// Ballast: every command must answer the same text.
func TestAuthEtcdctlLikeEtcd(t *testing.T) {
	transcripts := map[string][]string{}
	for _, impl := range []struct{ name, bin string }{
		{"etcd", harness.EtcdBin(t)}, {"ballast", harness.BallastBin(t)},
	} {
		t.Run(impl.name, func(t *testing.T) {
			n := harness.Start(t, impl.bin, harness.Options{Args: []string{"--bcrypt-cost", "4"}})
			transcripts[impl.name] = runAuthTranscript(t, n)
		})
	}
	e, b := transcripts["etcd"], transcripts["ballast"]
	if len(e) != len(b) {
		t.Fatalf("transcripts of %d and %d steps", len(e), len(b))
	}
	for i := range e {
		if e[i] != b[i] {
			t.Errorf("step %d differs:\n--- etcd\n%s--- ballast\n%s", i, e[i], b[i])
		}
	}
	if testing.Verbose() {
		t.Logf("transcript:\n%s", strings.Join(b, ""))
	}
}
