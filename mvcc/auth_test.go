package mvcc

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// Request builders for auth.

var fakeHash = base64.StdEncoding.EncodeToString([]byte("$2a$04$not-really-a-bcrypt-hash"))

func userAddReq(name string) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{AuthUserAdd: &pb.AuthUserAddRequest{Name: name, HashedPassword: fakeHash}}
}
func roleAddReq(name string) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: name}}
}
func grantRoleReq(user, role string) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: user, Role: role}}
}
func grantPermReq(role, key, end string, typ authpb.Permission_Type) *pb.InternalRaftRequest {
	p := &authpb.Permission{PermType: typ, Key: []byte(key)}
	if end != "" {
		p.RangeEnd = []byte(end)
	}
	return &pb.InternalRaftRequest{AuthRoleGrantPermission: &pb.AuthRoleGrantPermissionRequest{Name: role, Perm: p}}
}
func revokePermReq(role, key, end string) *pb.InternalRaftRequest {
	r := &pb.AuthRoleRevokePermissionRequest{Role: role, Key: []byte(key)}
	if end != "" {
		r.RangeEnd = []byte(end)
	}
	return &pb.InternalRaftRequest{AuthRoleRevokePermission: r}
}

var authEnableReq = &pb.InternalRaftRequest{AuthEnable: &pb.AuthEnableRequest{}}

// as sets the sender of a client request, as the server's propose does.
func as(user string, rev uint64, r *pb.InternalRaftRequest) *pb.InternalRaftRequest {
	r = proto.Clone(r).(*pb.InternalRaftRequest)
	r.Header = &pb.RequestHeader{Username: user, AuthRevision: rev}
	return r
}

// authScript is a history of auth changes and client writes.
func authScript() []*pb.InternalRaftRequest {
	return []*pb.InternalRaftRequest{
		userAddReq("root"),
		grantRoleReq("root", "root"),
		roleAddReq("ra"),
		grantPermReq("ra", "a/", "a0", authpb.Permission_READWRITE),
		grantPermReq("ra", "x", "\x00", authpb.Permission_READ),
		userAddReq("alice"),
		grantRoleReq("alice", "ra"),
		{AuthUserAdd: &pb.AuthUserAddRequest{Name: "nopw", Options: &authpb.UserAddOptions{NoPassword: true}}},
		putReq("a/1", "v"),
		authEnableReq,
		putReq("b/1", "v"), // internal (no header): not checked
	}
}

func TestAuthApplyErrors(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	steps := []struct {
		req  *pb.InternalRaftRequest
		want error
	}{
		{authEnableReq, ErrRootUserNotExist},
		{userAddReq("root"), nil},
		{authEnableReq, ErrRootRoleNotExist},
		{userAddReq("root"), ErrUserAlreadyExist},
		{userAddReq(""), ErrUserEmpty},
		{&pb.InternalRaftRequest{AuthUserAdd: &pb.AuthUserAddRequest{Name: "nohash"}}, ErrNoPasswordUser},
		{roleAddReq(""), ErrRoleEmpty},
		{roleAddReq("r"), nil},
		{roleAddReq("r"), ErrRoleAlreadyExist},
		{grantRoleReq("nobody", "r"), ErrUserNotFound},
		{grantRoleReq("root", "missing"), ErrRoleNotFound},
		{grantRoleReq("root", "root"), nil},
		{grantRoleReq("root", "root"), nil}, // again: no change, no error
		{grantPermReq("r", "", "", authpb.Permission_READ), ErrInvalidAuthMgmt},
		{grantPermReq("r", "b", "a", authpb.Permission_READ), ErrInvalidAuthMgmt},
		{&pb.InternalRaftRequest{AuthRoleGrantPermission: &pb.AuthRoleGrantPermissionRequest{Name: "r"}}, ErrPermissionNotGiven},
		{grantPermReq("missing", "a", "", authpb.Permission_READ), ErrRoleNotFound},
		{revokePermReq("r", "a", ""), ErrPermissionNotGranted},
		{&pb.InternalRaftRequest{AuthUserRevokeRole: &pb.AuthUserRevokeRoleRequest{Name: "root", Role: "r"}}, ErrRoleNotGranted},
		{authEnableReq, nil},
		{authEnableReq, nil}, // already enabled
		{&pb.InternalRaftRequest{AuthUserDelete: &pb.AuthUserDeleteRequest{Name: "root"}}, ErrInvalidAuthMgmt},
		{&pb.InternalRaftRequest{AuthUserRevokeRole: &pb.AuthUserRevokeRoleRequest{Name: "root", Role: "root"}}, ErrInvalidAuthMgmt},
		{&pb.InternalRaftRequest{AuthRoleDelete: &pb.AuthRoleDeleteRequest{Role: "root"}}, ErrInvalidAuthMgmt},
		{&pb.InternalRaftRequest{Authenticate: &pb.InternalAuthenticateRequest{Name: "nobody"}}, ErrAuthFailed},
	}
	for i, s := range steps {
		_, err := ts.do(s.req)
		if !errors.Is(err, s.want) {
			t.Errorf("step %d (%v): got %v, want %v", i, s.req, err, s.want)
		}
	}
}

func TestAuthRevision(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	rev := func() uint64 { return ts.s.Auth().Revision() }
	if rev() != 1 {
		t.Fatalf("initial auth revision %d, want 1 (etcd's)", rev())
	}
	for i, r := range authScript() {
		before := rev()
		if _, err := ts.do(r); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		changesAuth := r.AuthUserAdd != nil || r.AuthRoleAdd != nil || r.AuthUserGrantRole != nil || r.AuthRoleGrantPermission != nil
		if got := rev(); changesAuth && got != before+1 || !changesAuth && got != before {
			t.Errorf("step %d: auth revision %d -> %d", i, before, got)
		}
	}
	// Like etcd, disabling increments the revision; enabling does not.
	before := rev()
	ts.must(&pb.InternalRaftRequest{AuthDisable: &pb.AuthDisableRequest{}})
	if rev() != before+1 {
		t.Errorf("disable: revision %d -> %d", before, rev())
	}
}

// TestAuthApplyRecheck: apply checks a client's write again against the
// auth state it meets, so a permission revoked (or an auth revision
// passed) between the check on the serving member and the apply holds.
func TestAuthApplyRecheck(t *testing.T) {
	ts := openTestStore(t, nil, Config{})
	for _, r := range authScript() {
		ts.must(r)
	}
	rev := ts.s.Auth().Revision()
	if _, err := ts.do(as("alice", rev, putReq("a/2", "v"))); err != nil {
		t.Fatalf("allowed put: %v", err)
	}
	if _, err := ts.do(as("alice", rev, putReq("b/2", "v"))); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("put outside: %v", err)
	}
	if _, err := ts.do(as("", 0, putReq("a/2", "v"))); !errors.Is(err, ErrUserEmpty) {
		t.Errorf("anonymous put: %v", err)
	}
	nested := txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opPut("b/3", "v")}})}})
	if _, err := ts.do(as("alice", rev, nested)); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("nested txn put outside: %v", err)
	}
	if _, err := ts.do(as("alice", rev, compactReq(2))); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("compaction by non-root: %v", err)
	}
	if _, err := ts.do(as("alice", rev, roleAddReq("mine"))); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("role add by non-root: %v", err)
	}
	// The permission is revoked after alice's request was checked.
	ts.must(revokePermReq("ra", "a/", "a0"))
	if _, err := ts.do(as("alice", rev, putReq("a/2", "v"))); !errors.Is(err, ErrAuthOldRevision) {
		t.Errorf("put checked before the revoke: got %v, want %v", err, ErrAuthOldRevision)
	}
	if _, err := ts.do(as("alice", ts.s.Auth().Revision(), putReq("a/2", "v"))); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("put after the revoke: %v", err)
	}
	// Leases: revoking one that holds a key outside the permission.
	ts.must(grantReq(9, 3600))
	ts.must(putLeaseReq("b/leased", "v", 9))
	ts.must(grantPermReq("ra", "a/", "a0", authpb.Permission_READWRITE))
	if _, err := ts.do(as("alice", ts.s.Auth().Revision(), revokeReq(9))); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("lease revoke with a key outside: %v", err)
	}
	if _, err := ts.do(as("root", ts.s.Auth().Revision(), revokeReq(9))); err != nil {
		t.Errorf("lease revoke by root: %v", err)
	}
}

// authDump renders the auth state for comparisons.
func authDump(a *AuthState) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "enabled=%v rev=%d\n", a.enabled, a.rev)
	for _, u := range a.Users() {
		m, _ := proto.Marshal(a.users[u])
		fmt.Fprintf(&b, "user %s %x\n", u, m)
	}
	for _, r := range a.Roles() {
		m, _ := proto.Marshal(a.roles[r])
		fmt.Fprintf(&b, "role %s %x\n", r, m)
	}
	return b.String()
}

// TestAuthDeterministicAndDurable: the same requests give the same auth
// state and HashKV on two stores, in batches of any size; auth data is
// not in HashKV (as in etcd); it survives a restart and a snapshot.
func TestAuthDeterministicAndDurable(t *testing.T) {
	reqs := authScript()
	reqs = append(reqs,
		as("root", 0, roleAddReq("rb")), // header rev 0 is never checked by admin calls: etcd's IsAdminPermitted
		grantPermReq("rb", "k", "", authpb.Permission_WRITE),
		&pb.InternalRaftRequest{AuthRoleDelete: &pb.AuthRoleDeleteRequest{Role: "ra"}},
		&pb.InternalRaftRequest{AuthUserChangePassword: &pb.AuthUserChangePasswordRequest{Name: "alice", HashedPassword: fakeHash}},
		&pb.InternalRaftRequest{AuthUserDelete: &pb.AuthUserDeleteRequest{Name: "nopw"}},
	)
	one := openTestStore(t, nil, Config{})
	for _, r := range reqs {
		one.apply(r)
	}
	two := openTestStore(t, nil, Config{})
	two.apply(reqs...)
	if a, b := authDump(one.s.Auth()), authDump(two.s.Auth()); a != b {
		t.Fatalf("auth state differs:\n%s\n---\n%s", a, b)
	}
	if one.hash(0) != two.hash(0) {
		t.Fatalf("HashKV differs")
	}
	if u := one.s.Auth().User("alice"); u == nil || slices.Contains(u.Roles, "ra") {
		t.Errorf("role delete did not leave alice without ra: %v", u)
	}
	// HashKV covers keys only: a store with the same keys and no auth
	// data hashes the same.
	plain := openTestStore(t, nil, Config{})
	for _, r := range reqs {
		if r.Put != nil {
			plain.apply(r)
		}
	}
	if plain.hash(0) != one.hash(0) {
		t.Errorf("HashKV depends on auth data")
	}

	want := authDump(one.s.Auth())
	one.reopen(Config{})
	if got := authDump(one.s.Auth()); got != want {
		t.Errorf("after restart:\n%s\nwant\n%s", got, want)
	}
	var snap bytes.Buffer
	if _, err := one.s.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	fresh := openTestStore(t, nil, Config{})
	fresh.must(userAddReq("someone-else"))
	if err := fresh.s.Restore(bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got := authDump(fresh.s.Auth()); got != want {
		t.Errorf("after restore:\n%s\nwant\n%s", got, want)
	}
	if !fresh.s.Auth().Enabled() {
		t.Errorf("restored store has auth disabled")
	}
}

// recordTokens records what apply tells the token provider.
type recordTokens struct{ log []string }

func (r *recordTokens) Assign(index uint64, user, prefix string, rev uint64) (string, error) {
	tok := fmt.Sprintf("%s.%d", prefix, index)
	r.log = append(r.log, fmt.Sprintf("assign %s %s rev=%d", user, tok, rev))
	return tok, nil
}
func (r *recordTokens) Invalidate(user string) { r.log = append(r.log, "invalidate "+user) }
func (r *recordTokens) SetEnabled(on bool)     { r.log = append(r.log, fmt.Sprint("enabled ", on)) }

func TestAuthTokensFollowApply(t *testing.T) {
	rec := &recordTokens{}
	ts := openTestStore(t, nil, Config{Tokens: rec})
	for _, r := range authScript() {
		ts.must(r)
	}
	resp := ts.must(&pb.InternalRaftRequest{Authenticate: &pb.InternalAuthenticateRequest{Name: "alice", SimpleToken: "abc"}}).(*pb.AuthenticateResponse)
	if resp.Token != fmt.Sprintf("abc.%d", ts.index) {
		t.Errorf("token %q", resp.Token)
	}
	if _, err := ts.do(&pb.InternalRaftRequest{Authenticate: &pb.InternalAuthenticateRequest{Name: "nopw"}}); !errors.Is(err, ErrAuthFailed) {
		t.Errorf("no-password user authenticated: %v", err)
	}
	ts.must(&pb.InternalRaftRequest{AuthUserChangePassword: &pb.AuthUserChangePasswordRequest{Name: "alice", HashedPassword: fakeHash}})
	ts.must(&pb.InternalRaftRequest{AuthDisable: &pb.AuthDisableRequest{}})
	want := []string{"enabled false", "enabled true", fmt.Sprintf("assign alice abc.%d rev=9", ts.index-3), "invalidate alice", "enabled false"}
	if !slices.Equal(rec.log, want) {
		t.Errorf("token events\n got %q\nwant %q", rec.log, want)
	}
}
