package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// The users of the authorisation matrix and what their roles grant:
//
//	alice  readwrite prefix a/
//	bob    read b/k (one key), write [c/1, c/5)
//	carol  readwrite from z on; read [m, n) and [n, o) (adjacent: merged)
//	dave   no role
//	root   root
var authFixture = []authStep{
	{"role add", func(c *clientv3.Client, ctx context.Context) error { return roleAdd(ctx, c, "ra", "rb", "rc") }},
	{"grant", func(c *clientv3.Client, ctx context.Context) error {
		grants := []struct {
			role, key, end string
			perm           clientv3.PermissionType
		}{
			{"ra", "a/", clientv3.GetPrefixRangeEnd("a/"), clientv3.PermissionType(clientv3.PermReadWrite)},
			{"rb", "b/k", "", clientv3.PermissionType(clientv3.PermRead)},
			{"rb", "c/1", "c/5", clientv3.PermissionType(clientv3.PermWrite)},
			{"rc", "z", "\x00", clientv3.PermissionType(clientv3.PermReadWrite)},
			{"rc", "m", "n", clientv3.PermissionType(clientv3.PermRead)},
			{"rc", "n", "o", clientv3.PermissionType(clientv3.PermRead)},
		}
		for _, g := range grants {
			if _, err := c.RoleGrantPermission(ctx, g.role, g.key, g.end, g.perm); err != nil {
				return fmt.Errorf("grant %s %q: %w", g.role, g.key, err)
			}
		}
		return nil
	}},
	{"users", func(c *clientv3.Client, ctx context.Context) error {
		for _, u := range []struct{ name, role string }{{"root", "root"}, {"alice", "ra"}, {"bob", "rb"}, {"carol", "rc"}, {"dave", ""}} {
			if _, err := c.UserAdd(ctx, u.name, u.name+"-pw"); err != nil {
				return err
			}
			if u.role != "" {
				if _, err := c.UserGrantRole(ctx, u.name, u.role); err != nil {
					return err
				}
			}
		}
		return nil
	}},
	{"data", func(c *clientv3.Client, ctx context.Context) error {
		for _, k := range []string{"a/x", "b/k", "c/2", "m/1", "n/1", "z/1"} {
			if _, err := c.Put(ctx, k, "v"); err != nil {
				return err
			}
		}
		return nil
	}},
	{"auth enable", func(c *clientv3.Client, ctx context.Context) error {
		_, err := c.AuthEnable(ctx)
		return err
	}},
}

type authStep struct {
	name string
	do   func(*clientv3.Client, context.Context) error
}

func roleAdd(ctx context.Context, c *clientv3.Client, roles ...string) error {
	for _, r := range roles {
		if _, err := c.RoleAdd(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// errText is the etcd error text a client sees ("" for success).
func errText(err error) string {
	if err == nil {
		return ""
	}
	var ee rpctypes.EtcdError
	if errors.As(rpctypes.Error(err), &ee) {
		return ee.Error()
	}
	return err.Error()
}

const (
	denied   = "etcdserver: permission denied"
	noUser   = "etcdserver: user name is empty"
	badToken = "etcdserver: invalid auth token"
)

// setupAuth starts a node, creates the fixture and enables auth; it
// returns the node and a client per user (anonymous under "").
// applyAuthFixture creates the users and roles of authFixture through cli
// and enables auth.
func applyAuthFixture(t *testing.T, ctx context.Context, cli *clientv3.Client) {
	t.Helper()
	for _, s := range authFixture {
		if err := s.do(cli, ctx); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
}

func setupAuth(t *testing.T, args ...string) (*harness.Node, map[string]*clientv3.Client) {
	t.Helper()
	n := harness.Start(t, harness.BallastBin(t), harness.Options{Args: append([]string{"--bcrypt-cost", "4"}, args...)})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	anon := n.Client(t)
	applyAuthFixture(t, ctx, anon)
	clients := map[string]*clientv3.Client{"": anon}
	for _, u := range []string{"root", "alice", "bob", "carol", "dave"} {
		clients[u] = n.Client(t, func(c *clientv3.Config) { c.Username, c.Password = u, u+"-pw" })
	}
	return n, clients
}

type authCase struct {
	user string
	name string
	op   func(ctx context.Context, c *clientv3.Client) error
	want string // "" allowed, else the etcd error text
}

func get(key string, opts ...clientv3.OpOption) func(context.Context, *clientv3.Client) error {
	return func(ctx context.Context, c *clientv3.Client) error { _, err := c.Get(ctx, key, opts...); return err }
}

func put(key string, opts ...clientv3.OpOption) func(context.Context, *clientv3.Client) error {
	return func(ctx context.Context, c *clientv3.Client) error {
		_, err := c.Put(ctx, key, "w", opts...)
		return err
	}
}

func del(key string, opts ...clientv3.OpOption) func(context.Context, *clientv3.Client) error {
	return func(ctx context.Context, c *clientv3.Client) error { _, err := c.Delete(ctx, key, opts...); return err }
}

func txn(cmps []clientv3.Cmp, then, els []clientv3.Op) func(context.Context, *clientv3.Client) error {
	return func(ctx context.Context, c *clientv3.Client) error {
		_, err := c.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
		return err
	}
}

// rangeStream reads [key, end) with etcd 3.7's KV.RangeStream.
func rangeStream(key, end string) func(context.Context, *clientv3.Client) error {
	return func(ctx context.Context, c *clientv3.Client) error {
		st, err := pb.NewKVClient(c.ActiveConnection()).RangeStream(ctx, &pb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end)})
		if err != nil {
			return err
		}
		for {
			resp, err := st.Recv()
			if err != nil {
				return err
			}
			if resp.RangeResponse.GetHeader() != nil {
				return nil
			}
		}
	}
}

// watchErr opens a watch and returns the reason it was canceled, if it was.
func watchErr(key string, opts ...clientv3.OpOption) func(context.Context, *clientv3.Client) error {
	return func(ctx context.Context, c *clientv3.Client) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		wc := c.Watch(clientv3.WithRequireLeader(ctx), key, append(opts, clientv3.WithCreatedNotify())...)
		select {
		case wr, ok := <-wc:
			if !ok {
				return errors.New("watch channel closed")
			}
			if wr.Canceled {
				return errors.New(wr.Err().Error())
			}
			if !wr.Created {
				return fmt.Errorf("first watch response is not created: %+v", wr)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// TestAuthMatrix runs users × operations × key ranges against a Ballast
// process: every request kind passes the one authorisation choke point.
func TestAuthMatrix(t *testing.T) {
	n, cli := setupAuth(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Leases: L1 holds a/l1 and b/k (b/k outside alice's permission), L2
	// holds a/l2 only.
	l1, err := cli["root"].Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := cli["root"].Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	for k, l := range map[string]clientv3.LeaseID{"a/l1": l1.ID, "b/k": l1.ID, "a/l2": l2.ID} {
		if _, err := cli["root"].Put(ctx, k, "v", clientv3.WithLease(l)); err != nil {
			t.Fatal(err)
		}
	}
	ttl := func(id clientv3.LeaseID, keys bool) func(context.Context, *clientv3.Client) error {
		return func(ctx context.Context, c *clientv3.Client) error {
			var opts []clientv3.LeaseOption
			if keys {
				opts = append(opts, clientv3.WithAttachedKeys())
			}
			_, err := c.TimeToLive(ctx, id, opts...)
			return err
		}
	}
	revoke := func(id clientv3.LeaseID) func(context.Context, *clientv3.Client) error {
		return func(ctx context.Context, c *clientv3.Client) error { _, err := c.Revoke(ctx, id); return err }
	}
	ep := n.ClientURL

	cases := []authCase{
		// Single keys, prefixes, from-key and straddling ranges.
		{"alice", "get own key", get("a/x"), ""},
		{"alice", "get own prefix", get("a/", clientv3.WithPrefix()), ""},
		{"alice", "get serializable", get("a/x", clientv3.WithSerializable()), ""},
		{"alice", "get other key", get("b/k"), denied},
		{"alice", "get other key serializable", get("b/k", clientv3.WithSerializable()), denied},
		{"alice", "get range straddling the prefix end", get("a/", clientv3.WithRange("b")), denied},
		{"alice", "get range straddling the prefix start", get("a", clientv3.WithRange("a/z")), denied},
		{"alice", "get from-key in prefix", get("a/", clientv3.WithFromKey()), denied},
		{"alice", "get everything", get("", clientv3.WithFromKey()), denied},
		{"alice", "put own key", put("a/new"), ""},
		{"alice", "put other key", put("b/new"), denied},
		{"alice", "put own key with prev_kv", put("a/new", clientv3.WithPrevKV()), ""},
		{"alice", "delete own prefix", del("a/tmp", clientv3.WithPrefix()), ""},
		{"bob", "get read-only key", get("b/k"), ""},
		{"bob", "get next to the one key", get("b/k", clientv3.WithPrefix()), denied},
		{"bob", "put read-only key", put("b/k"), denied},
		{"bob", "put write-only key", put("c/2"), ""},
		{"bob", "put write-only key with prev_kv", put("c/2", clientv3.WithPrevKV()), denied},
		{"bob", "put at the range end", put("c/5"), denied},
		{"bob", "get write-only key", get("c/2"), denied},
		{"bob", "delete write-only range", del("c/1", clientv3.WithRange("c/5")), ""},
		{"bob", "delete past the range end", del("c/1", clientv3.WithRange("c/6")), denied},
		{"bob", "delete write-only key with prev_kv", del("c/2", clientv3.WithPrevKV()), denied},
		{"carol", "get across two adjacent permissions", get("m", clientv3.WithRange("o")), ""},
		{"carol", "get past the merged permissions", get("m", clientv3.WithRange("o/")), denied},
		{"carol", "get from-key inside from-key permission", get("z/", clientv3.WithFromKey()), ""},
		{"carol", "get from-key before it", get("y", clientv3.WithFromKey()), denied},
		{"carol", "put from-key region", put("zz"), ""},
		{"dave", "get with no role", get("a/x"), denied},
		{"dave", "put with no role", put("a/x"), denied},
		{"root", "get everything", get("", clientv3.WithFromKey()), ""},
		{"root", "put anywhere", put("q"), ""},
		{"", "anonymous get", get("a/x"), noUser},
		{"", "anonymous put", put("a/x"), noUser},

		// Txn: compares and every branch, nested, whichever runs.
		{"alice", "txn inside", txn([]clientv3.Cmp{clientv3.Compare(clientv3.Version("a/x"), ">", 0)},
			[]clientv3.Op{clientv3.OpPut("a/t", "1")}, []clientv3.Op{clientv3.OpGet("a/x")}), ""},
		{"alice", "txn compare outside", txn([]clientv3.Cmp{clientv3.Compare(clientv3.Version("b/k"), ">", 0)},
			[]clientv3.Op{clientv3.OpPut("a/t", "1")}, nil), denied},
		{"alice", "txn nested put outside in then", txn(nil,
			[]clientv3.Op{clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpPut("a/t", "1"), clientv3.OpPut("b/evil", "1")}, nil)}, nil), denied},
		{"alice", "txn put outside in the else that will not run", txn(nil,
			[]clientv3.Op{clientv3.OpPut("a/t", "1")}, []clientv3.Op{clientv3.OpPut("b/evil", "1")}), denied},
		{"alice", "txn nested compare outside", txn(nil,
			[]clientv3.Op{clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value("b/k"), "=", "v")}, nil, nil)}, nil), denied},
		{"alice", "read-only txn outside", txn(nil, []clientv3.Op{clientv3.OpGet("b/k")}, nil), denied},
		{"alice", "txn delete with prev_kv inside", txn(nil, []clientv3.Op{clientv3.OpDelete("a/t", clientv3.WithPrevKV())}, nil), ""},
		{"bob", "txn delete with prev_kv on write-only", txn(nil, []clientv3.Op{clientv3.OpDelete("c/2", clientv3.WithPrevKV())}, nil), denied},

		// Watches.
		{"alice", "watch own key", watchErr("a/x"), ""},
		{"alice", "watch own prefix with prev_kv", watchErr("a/", clientv3.WithPrefix(), clientv3.WithPrevKV()), ""},
		{"alice", "watch other key", watchErr("b/k"), denied},
		{"alice", "watch from-key", watchErr("a/", clientv3.WithFromKey()), denied},
		{"carol", "watch from-key inside from-key permission", watchErr("z", clientv3.WithFromKey()), ""},
		{"carol", "watch from-key before it", watchErr("y", clientv3.WithFromKey()), denied},
		{"", "anonymous watch", watchErr("a/x"), noUser},

		// Leases.
		{"alice", "lease ttl without keys", ttl(l1.ID, false), ""},
		{"alice", "lease ttl with a key outside", ttl(l1.ID, true), denied},
		{"alice", "lease ttl with own keys", ttl(l2.ID, true), ""},
		{"alice", "put with a lease holding a key outside", put("a/p", clientv3.WithLease(l1.ID)), denied},
		{"alice", "revoke a lease holding a key outside", revoke(l1.ID), denied},
		{"", "anonymous lease grant", func(ctx context.Context, c *clientv3.Client) error { _, err := c.Grant(ctx, 60); return err }, noUser},
		{"alice", "keep alive a lease holding a key outside", func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.KeepAliveOnce(ctx, l1.ID)
			return err
		}, denied},
		{"alice", "keep alive a lease holding own keys", func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.KeepAliveOnce(ctx, l2.ID)
			return err
		}, ""},
		{"alice", "list leases, one holding a key outside", func(ctx context.Context, c *clientv3.Client) error { _, err := c.Leases(ctx); return err }, denied},
		{"root", "list leases", func(ctx context.Context, c *clientv3.Client) error { _, err := c.Leases(ctx); return err }, ""},
		{"alice", "range stream own prefix", rangeStream("a/", "a0"), ""},
		{"alice", "range stream straddling", rangeStream("a/", "b"), denied},
		{"alice", "lease grant", func(ctx context.Context, c *clientv3.Client) error { _, err := c.Grant(ctx, 60); return err }, ""},

		// Maintenance, cluster and auth administration.
		{"alice", "compact", func(ctx context.Context, c *clientv3.Client) error { _, err := c.Compact(ctx, 2); return err }, denied},
		{"alice", "defragment", func(ctx context.Context, c *clientv3.Client) error { _, err := c.Defragment(ctx, ep); return err }, denied},
		{"alice", "hashkv", func(ctx context.Context, c *clientv3.Client) error { _, err := c.HashKV(ctx, ep, 0); return err }, denied},
		{"alice", "snapshot", func(ctx context.Context, c *clientv3.Client) error {
			rc, err := c.Snapshot(ctx)
			if err == nil {
				_, err = rc.Read(make([]byte, 1))
				rc.Close()
			}
			return err
		}, denied},
		{"alice", "move leader", func(ctx context.Context, c *clientv3.Client) error { _, err := c.MoveLeader(ctx, 1); return err }, denied},
		{"alice", "member add", func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.MemberAdd(ctx, []string{"http://127.0.0.1:1"})
			return err
		}, denied},
		{"alice", "alarm disarm", func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: 1, Alarm: pb.AlarmType_NOSPACE})
			return err
		}, denied},
		{"alice", "alarm list", func(ctx context.Context, c *clientv3.Client) error { _, err := c.AlarmList(ctx); return err }, ""},
		{"alice", "status", func(ctx context.Context, c *clientv3.Client) error { _, err := c.Status(ctx, ep); return err }, ""},
		{"", "anonymous status", func(ctx context.Context, c *clientv3.Client) error { _, err := c.Status(ctx, ep); return err }, noUser},
		{"alice", "member list", func(ctx context.Context, c *clientv3.Client) error { _, err := c.MemberList(ctx); return err }, ""},
		{"alice", "user add", func(ctx context.Context, c *clientv3.Client) error { _, err := c.UserAdd(ctx, "eve", "x"); return err }, denied},
		{"alice", "user list", func(ctx context.Context, c *clientv3.Client) error { _, err := c.UserList(ctx); return err }, denied},
		{"alice", "role list", func(ctx context.Context, c *clientv3.Client) error { _, err := c.RoleList(ctx); return err }, denied},
		{"alice", "grant herself more", func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.RoleGrantPermission(ctx, "ra", "b/", "c/", clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}, denied},
		{"alice", "grant herself root", func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.UserGrantRole(ctx, "alice", "root")
			return err
		}, denied},
		{"alice", "auth disable", func(ctx context.Context, c *clientv3.Client) error { _, err := c.AuthDisable(ctx); return err }, denied},
		{"alice", "user get herself", func(ctx context.Context, c *clientv3.Client) error { _, err := c.UserGet(ctx, "alice"); return err }, ""},
		{"alice", "user get bob", func(ctx context.Context, c *clientv3.Client) error { _, err := c.UserGet(ctx, "bob"); return err }, denied},
		{"alice", "role get her role", func(ctx context.Context, c *clientv3.Client) error { _, err := c.RoleGet(ctx, "ra"); return err }, ""},
		{"alice", "role get another", func(ctx context.Context, c *clientv3.Client) error { _, err := c.RoleGet(ctx, "rb"); return err }, denied},
		{"alice", "auth status", func(ctx context.Context, c *clientv3.Client) error { _, err := c.AuthStatus(ctx); return err }, ""},
		{"", "anonymous auth status", func(ctx context.Context, c *clientv3.Client) error { _, err := c.AuthStatus(ctx); return err }, ""},
		{"root", "user list", func(ctx context.Context, c *clientv3.Client) error { _, err := c.UserList(ctx); return err }, ""},
		{"root", "hashkv", func(ctx context.Context, c *clientv3.Client) error { _, err := c.HashKV(ctx, ep, 0); return err }, ""},
		{"root", "compact", func(ctx context.Context, c *clientv3.Client) error { _, err := c.Compact(ctx, 2); return err }, ""},

		// Last: alice may revoke a lease whose keys are all hers.
		{"alice", "revoke a lease holding own keys", revoke(l2.ID), ""},
	}
	for _, tc := range cases {
		user := tc.user
		if user == "" {
			user = "anonymous"
		}
		t.Run(user+"/"+strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
			defer ccancel()
			got := errText(tc.op(cctx, cli[tc.user]))
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("got error %q, want %q", got, tc.want)
			}
		})
	}

	// Nothing a denied request tried was written.
	resp, err := cli["root"].Get(ctx, "b/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if string(kv.Key) != "b/k" {
			t.Errorf("denied write left %q", kv.Key)
		}
	}
}

// TestAuthTokens covers the token paths: a wrong password, a token that
// is not one, an old auth revision, and a permission revoked while a
// client holds its token.
func TestAuthTokens(t *testing.T) {
	n, cli := setupAuth(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if _, err := n.NewClient(func(c *clientv3.Config) { c.Username, c.Password = "alice", "wrong" }); errText(err) != "etcdserver: authentication failed, invalid user ID or password" {
		t.Errorf("wrong password: %v", err)
	}
	bogus := metadata.AppendToOutgoingContext(ctx, "token", "notatoken.1")
	if _, err := cli[""].Get(bogus, "a/x"); !strings.Contains(errText(err), badToken) {
		t.Errorf("bogus token: got %v, want %q", err, badToken)
	}

	// The permission is revoked while alice holds a token: her next
	// request is refused; granted back, allowed.
	if _, err := cli["alice"].Get(ctx, "a/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli["root"].RoleRevokePermission(ctx, "ra", "a/", clientv3.GetPrefixRangeEnd("a/")); err != nil {
		t.Fatal(err)
	}
	if _, err := cli["alice"].Put(ctx, "a/x", "1"); !strings.Contains(errText(err), denied) {
		t.Errorf("after revoke: got %v, want %q", err, denied)
	}
	if _, err := cli["root"].RoleGrantPermission(ctx, "ra", "a/", clientv3.GetPrefixRangeEnd("a/"), clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli["alice"].Put(ctx, "a/x", "1"); err != nil {
		t.Errorf("after grant: %v", err)
	}

	// A changed password invalidates the old simple token: clientv3
	// cannot log in again with the old password.
	if _, err := cli["root"].UserChangePassword(ctx, "dave", "new-pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli["dave"].Get(ctx, "a/x"); err == nil || strings.Contains(errText(err), denied) {
		t.Errorf("old token after password change: got %v, want an auth failure", err)
	}

	// Auth status and revision.
	st, err := cli["root"].AuthStatus(ctx)
	if err != nil || !st.Enabled || st.AuthRevision < 10 {
		t.Errorf("auth status: %+v %v", st, err)
	}

	// Disabled: everyone may do anything, anonymous included.
	if _, err := cli["root"].AuthDisable(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cli[""].Put(ctx, "b/anything", "1"); err != nil {
		t.Errorf("auth disabled: %v", err)
	}
	if _, err := cli[""].Authenticate(ctx, "alice", "alice-pw"); errText(err) != "etcdserver: authentication is not enabled" {
		t.Errorf("authenticate with auth disabled: %v", err)
	}
}
