package mvcc

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/ballast-kv/ballast/store"
)

// Auth data, as etcd keeps it: users (password hash, roles), roles
// (key-range permissions), an enabled flag and a revision that every change
// increments. It is replicated state: applied from the log like keys,
// stored under its own prefixes so snapshots carry it, and left out of
// HashKV as etcd leaves it out.

const (
	rootUser = "root"
	rootRole = "root"
)

var (
	metaAuthEnabled = metaKey("auth-enabled")
	metaAuthRev     = metaKey("auth-rev")
)

// rootPerm is what RoleGet shows for the root role: everything.
var rootPerm = &authpb.Permission{PermType: authpb.Permission_READWRITE, Key: []byte{}, RangeEnd: []byte{0}}

// AuthInfo is who sends a request: a user and the auth revision at which
// its credentials were checked.
type AuthInfo struct {
	User     string
	Revision uint64
}

// Tokens follows what apply decides about tokens; the server's token
// provider implements it. Its methods run on the apply goroutine of every
// member, so every member knows every simple token.
type Tokens interface {
	// Assign issues the token of an Authenticate applied at index.
	Assign(index uint64, user, simplePrefix string, authRev uint64) (string, error)
	// Invalidate drops a user's tokens (deleted, password changed).
	Invalidate(user string)
	// SetEnabled follows auth being enabled or disabled (and the state
	// loaded at open or restored from a snapshot).
	SetEnabled(bool)
}

// AuthState is an immutable view of the auth data. A change builds a new
// one: readers use the one they got without locking.
type AuthState struct {
	enabled bool
	rev     uint64
	users   map[string]*authpb.User
	roles   map[string]*authpb.Role
	perms   map[string]userPerms
}

// Enabled reports whether auth is on.
func (a *AuthState) Enabled() bool { return a.enabled }

// Revision is the auth revision.
func (a *AuthState) Revision() uint64 { return a.rev }

// User returns a user, or nil.
func (a *AuthState) User(name string) *authpb.User { return a.users[name] }

// Users lists the user names in order.
func (a *AuthState) Users() []string { return slices.Sorted(maps.Keys(a.users)) }

// Roles lists the role names in order.
func (a *AuthState) Roles() []string { return slices.Sorted(maps.Keys(a.roles)) }

// UserGet answers AuthUserGet.
func (a *AuthState) UserGet(name string) (*pb.AuthUserGetResponse, error) {
	u := a.users[name]
	if u == nil {
		return nil, ErrUserNotFound
	}
	return &pb.AuthUserGetResponse{Roles: slices.Clone(u.Roles)}, nil
}

// RoleGet answers AuthRoleGet.
func (a *AuthState) RoleGet(name string) (*pb.AuthRoleGetResponse, error) {
	r := a.roles[name]
	if r == nil {
		return nil, ErrRoleNotFound
	}
	if name == rootRole {
		return &pb.AuthRoleGetResponse{Perm: []*authpb.Permission{rootPerm}}, nil
	}
	return &pb.AuthRoleGetResponse{Perm: r.KeyPermission}, nil
}

// HasRole reports whether user has role.
func (a *AuthState) HasRole(user, role string) bool {
	u := a.users[user]
	return u != nil && slices.Contains(u.Roles, role)
}

func hasRootRole(u *authpb.User) bool { return slices.Contains(u.Roles, rootRole) }

// IsAdmin is etcd's IsAdminPermitted: anyone while auth is off, else a
// user with the root role. It does not look at the revision.
func (a *AuthState) IsAdmin(ai AuthInfo) error {
	if !a.enabled {
		return nil
	}
	if ai.User == "" {
		return ErrUserEmpty
	}
	u := a.users[ai.User]
	if u == nil {
		return ErrUserNotFound
	}
	if !hasRootRole(u) {
		return ErrPermissionDenied
	}
	return nil
}

// requireUser is etcd's requireAuthInfo: with auth on, a request must come
// from someone.
func (a *AuthState) requireUser(ai AuthInfo) error {
	if a.enabled && ai.User == "" {
		return ErrUserEmpty
	}
	return nil
}

// permitted checks one key (rangeEnd empty), range or from-key range.
func (a *AuthState) permitted(ai AuthInfo, key, rangeEnd []byte, write bool) error {
	if !a.enabled {
		return nil
	}
	if ai.Revision == 0 {
		return ErrUserEmpty
	}
	if ai.Revision < a.rev {
		return ErrAuthOldRevision
	}
	u := a.users[ai.User]
	if u == nil {
		return ErrPermissionDenied
	}
	if hasRootRole(u) {
		return nil
	}
	p := a.perms[ai.User]
	set := p.read
	if write {
		set = p.write
	}
	q := permSpan(key, rangeEnd)
	if !set.covers(q.begin, q.end) {
		return ErrPermissionDenied
	}
	return nil
}

// CanRead checks read permission on a key or range.
func (a *AuthState) CanRead(ai AuthInfo, key, rangeEnd []byte) error {
	return a.permitted(ai, key, rangeEnd, false)
}

// CanWrite checks write permission on a key or range.
func (a *AuthState) CanWrite(ai AuthInfo, key, rangeEnd []byte) error {
	return a.permitted(ai, key, rangeEnd, true)
}

// LeaseKeys lists the keys attached to a lease.
type LeaseKeys func(id int64) ([][]byte, error)

// CanUseLease is etcd's check for revoking a lease or attaching a key to
// it: the user must be able to write every key already attached.
func (a *AuthState) CanUseLease(ai AuthInfo, id int64, keys LeaseKeys) error {
	if id == 0 || a.IsAdmin(ai) == nil {
		return nil
	}
	// Who may write every key may write the lease's: no scan of its keys
	// (a Kubernetes lease can hold many) on every put with it.
	if a.CanWrite(ai, []byte{0}, []byte{0}) == nil {
		return nil
	}
	ks, err := keys(id)
	if err != nil {
		return err
	}
	for _, k := range ks {
		if err := a.CanWrite(ai, k, nil); err != nil {
			return err
		}
	}
	return nil
}

// CanPut checks a put: write on the key, the lease's keys, and read for
// prev_kv.
func (a *AuthState) CanPut(ai AuthInfo, p *pb.PutRequest, keys LeaseKeys) error {
	if err := a.CanWrite(ai, p.Key, nil); err != nil {
		return err
	}
	if err := a.CanUseLease(ai, p.Lease, keys); err != nil {
		return err
	}
	if p.PrevKv {
		return a.CanRead(ai, p.Key, nil)
	}
	return nil
}

// CanDelete checks a delete: write on the range, and read for prev_kv.
func (a *AuthState) CanDelete(ai AuthInfo, d *pb.DeleteRangeRequest) error {
	if err := a.CanWrite(ai, d.Key, d.RangeEnd); err != nil {
		return err
	}
	if d.PrevKv {
		return a.CanRead(ai, d.Key, d.RangeEnd)
	}
	return nil
}

// CanTxn checks every compare and every op of both branches, nested txns
// included, whichever branch would run.
func (a *AuthState) CanTxn(ai AuthInfo, t *pb.TxnRequest, keys LeaseKeys) error {
	for _, c := range t.Compare {
		if err := a.CanRead(ai, c.Key, c.RangeEnd); err != nil {
			return err
		}
	}
	for _, ops := range [][]*pb.RequestOp{t.Success, t.Failure} {
		for _, op := range ops {
			var err error
			switch {
			case op.GetRequestRange() != nil:
				r := op.GetRequestRange()
				err = a.CanRead(ai, r.Key, r.RangeEnd)
			case op.GetRequestPut() != nil:
				err = a.CanPut(ai, op.GetRequestPut(), keys)
			case op.GetRequestDeleteRange() != nil:
				err = a.CanDelete(ai, op.GetRequestDeleteRange())
			case op.GetRequestTxn() != nil:
				err = a.CanTxn(ai, op.GetRequestTxn(), keys)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// needsAdmin lists the replicated requests only a root user may make.
func needsAdmin(r *pb.InternalRaftRequest) bool {
	return r.AuthEnable != nil || r.AuthDisable != nil || r.AuthUserAdd != nil || r.AuthUserDelete != nil ||
		r.AuthUserChangePassword != nil || r.AuthUserGrantRole != nil || r.AuthUserRevokeRole != nil ||
		r.AuthRoleAdd != nil || r.AuthRoleGrantPermission != nil || r.AuthRoleRevokePermission != nil ||
		r.AuthRoleDelete != nil || r.Compaction != nil ||
		(r.Alarm != nil && r.Alarm.Action != pb.AlarmRequest_GET)
}

// CanPropose is the check of a replicated request: the server makes it
// for the KV and lease writes it receives, and apply makes it again for
// every request, against the auth state the request really meets. (Admin
// calls the server decides by gRPC method; needsAdmin is apply's list.)
func (a *AuthState) CanPropose(ai AuthInfo, r *pb.InternalRaftRequest, keys LeaseKeys) error {
	if needsAdmin(r) {
		return a.IsAdmin(ai)
	}
	switch {
	case r.Range != nil:
		return a.CanRead(ai, r.Range.Key, r.Range.RangeEnd)
	case r.Put != nil:
		return a.CanPut(ai, r.Put, keys)
	case r.DeleteRange != nil:
		return a.CanDelete(ai, r.DeleteRange)
	case r.Txn != nil:
		return a.CanTxn(ai, r.Txn, keys)
	case r.LeaseRevoke != nil:
		if err := a.requireUser(ai); err != nil {
			return err
		}
		return a.CanUseLease(ai, r.LeaseRevoke.ID, keys)
	case r.LeaseGrant != nil:
		return a.requireUser(ai)
	}
	return nil
}

// Auth returns the current auth state.
func (s *Store) Auth() *AuthState { return s.auth.Load() }

// loadAuth reads the auth data (at open, after a restore).
func loadAuth(r pebble.Reader) (*AuthState, error) {
	a := &AuthState{rev: 1, users: map[string]*authpb.User{}, roles: map[string]*authpb.Role{}}
	if b, err := store.GetCopy(r, metaAuthEnabled); err == nil {
		a.enabled = len(b) == 1 && b[0] == 1
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	rev, err := readMetaInt(r, metaAuthRev, 1)
	if err != nil {
		return nil, err
	}
	a.rev = uint64(rev)
	for _, p := range []byte{store.PrefixUser, store.PrefixRole} {
		lo := []byte{p}
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: store.PrefixEnd(lo)})
		if err != nil {
			return nil, err
		}
		for ok := it.First(); ok; ok = it.Next() {
			name := string(it.Key()[1:])
			var m proto.Message
			if p == store.PrefixUser {
				u := &authpb.User{}
				a.users[name], m = u, u
			} else {
				ro := &authpb.Role{}
				a.roles[name], m = ro, ro
			}
			if err := proto.Unmarshal(it.Value(), m); err != nil {
				it.Close()
				return nil, fmt.Errorf("mvcc: auth %q: %w", name, err)
			}
		}
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return nil, err
		}
	}
	a.refresh()
	return a, nil
}

// refresh recomputes the merged permissions of every user.
func (a *AuthState) refresh() {
	a.perms = make(map[string]userPerms, len(a.users))
	for name, u := range a.users {
		var roles []*authpb.Role
		for _, r := range u.Roles {
			if ro := a.roles[r]; ro != nil {
				roles = append(roles, ro)
			}
		}
		a.perms[name] = mergePerms(roles)
	}
}

func (a *AuthState) clone() *AuthState {
	return &AuthState{enabled: a.enabled, rev: a.rev, users: maps.Clone(a.users), roles: maps.Clone(a.roles), perms: a.perms}
}

// authW returns the auth state the current apply batch may change.
func (w *writer) authW() *AuthState {
	if w.auth == nil {
		w.auth = w.s.Auth().clone()
	}
	return w.auth
}

// authNow is the auth state the current request meets.
func (w *writer) authNow() *AuthState {
	if w.auth != nil {
		return w.auth
	}
	return w.s.Auth()
}

func (w *writer) putUser(u *authpb.User) {
	a := w.authW()
	a.users[string(u.Name)] = u
	b, _ := proto.Marshal(u)
	w.b.Set(store.Key(store.PrefixUser, u.Name), b, nil)
}

func (w *writer) putRole(r *authpb.Role) {
	a := w.authW()
	a.roles[string(r.Name)] = r
	b, _ := proto.Marshal(r)
	w.b.Set(store.Key(store.PrefixRole, r.Name), b, nil)
}

// commitAuth increments the auth revision and recomputes permissions.
func (w *writer) commitAuth() {
	a := w.authW()
	a.rev++
	w.b.Set(metaAuthRev, store.AppendUint64(nil, a.rev), nil)
	a.refresh()
}

// applyAuth applies the Auth* requests that change the auth state, and
// Authenticate; ok is false for any other. The auth reads (status, user
// and role get and list) are answered by the server, never proposed.
func (w *writer) applyAuth(r *pb.InternalRaftRequest) (resp proto.Message, ok bool, err error) {
	ok = true
	switch {
	case r.AuthEnable != nil:
		resp, err = w.authEnable()
	case r.AuthDisable != nil:
		resp, err = w.authDisable()
	case r.Authenticate != nil:
		resp, err = w.authenticate(r.Authenticate)
	case r.AuthUserAdd != nil:
		resp, err = w.userAdd(r.AuthUserAdd)
	case r.AuthUserDelete != nil:
		resp, err = w.userDelete(r.AuthUserDelete)
	case r.AuthUserChangePassword != nil:
		resp, err = w.userChangePassword(r.AuthUserChangePassword)
	case r.AuthUserGrantRole != nil:
		resp, err = w.userGrantRole(r.AuthUserGrantRole)
	case r.AuthUserRevokeRole != nil:
		resp, err = w.userRevokeRole(r.AuthUserRevokeRole)
	case r.AuthRoleAdd != nil:
		resp, err = w.roleAdd(r.AuthRoleAdd)
	case r.AuthRoleDelete != nil:
		resp, err = w.roleDelete(r.AuthRoleDelete)
	case r.AuthRoleGrantPermission != nil:
		resp, err = w.roleGrantPermission(r.AuthRoleGrantPermission)
	case r.AuthRoleRevokePermission != nil:
		resp, err = w.roleRevokePermission(r.AuthRoleRevokePermission)
	default:
		ok = false
	}
	if err != nil {
		resp = nil
	}
	return resp, ok, err
}

func (w *writer) authEnable() (*pb.AuthEnableResponse, error) {
	a := w.authNow()
	if a.enabled {
		return &pb.AuthEnableResponse{Header: &pb.ResponseHeader{}}, nil
	}
	u := a.users[rootUser]
	if u == nil {
		return nil, ErrRootUserNotExist
	}
	if !hasRootRole(u) {
		return nil, ErrRootRoleNotExist
	}
	w.authW().enabled = true
	w.b.Set(metaAuthEnabled, []byte{1}, nil)
	w.onTokens(func(t Tokens) { t.SetEnabled(true) })
	return &pb.AuthEnableResponse{Header: &pb.ResponseHeader{}}, nil
}

func (w *writer) authDisable() (*pb.AuthDisableResponse, error) {
	if !w.authNow().enabled {
		return &pb.AuthDisableResponse{Header: &pb.ResponseHeader{}}, nil
	}
	w.authW().enabled = false
	w.b.Set(metaAuthEnabled, []byte{0}, nil)
	w.commitAuth()
	w.onTokens(func(t Tokens) { t.SetEnabled(false) })
	return &pb.AuthDisableResponse{Header: &pb.ResponseHeader{}}, nil
}

func (w *writer) authenticate(r *pb.InternalAuthenticateRequest) (*pb.AuthenticateResponse, error) {
	a := w.authNow()
	if !a.enabled {
		return nil, ErrAuthNotEnabled
	}
	u := a.users[r.Name]
	if u == nil || (u.Options != nil && u.Options.NoPassword) {
		return nil, ErrAuthFailed
	}
	resp := &pb.AuthenticateResponse{Header: &pb.ResponseHeader{}}
	if t := w.s.cfg.Tokens; t != nil {
		// Tokens issued in this batch must be known before the batch's
		// answer reaches the client: assign now, not after commit.
		tok, err := t.Assign(w.index, r.Name, r.SimpleToken, a.rev)
		if err != nil {
			return nil, err
		}
		resp.Token = tok
	}
	return resp, nil
}

// password decodes the hash the proposing member computed (etcd sends it
// base64-encoded in HashedPassword).
func password(hashed string) ([]byte, error) {
	if hashed == "" {
		return nil, ErrNoPasswordUser
	}
	b, err := base64.StdEncoding.DecodeString(hashed)
	if err != nil {
		return nil, ErrNoPasswordUser
	}
	return b, nil
}

func (w *writer) userAdd(r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	if r.Name == "" {
		return nil, ErrUserEmpty
	}
	if w.authNow().users[r.Name] != nil {
		return nil, ErrUserAlreadyExist
	}
	opts := r.Options
	if opts == nil {
		opts = &authpb.UserAddOptions{}
	}
	u := &authpb.User{Name: []byte(r.Name), Options: opts}
	if !opts.NoPassword {
		p, err := password(r.HashedPassword)
		if err != nil {
			return nil, err
		}
		u.Password = p
	}
	w.putUser(u)
	w.commitAuth()
	return &pb.AuthUserAddResponse{Header: &pb.ResponseHeader{}}, nil
}

func (w *writer) userDelete(r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	a := w.authNow()
	if a.enabled && r.Name == rootUser {
		return nil, ErrInvalidAuthMgmt
	}
	if a.users[r.Name] == nil {
		return nil, ErrUserNotFound
	}
	delete(w.authW().users, r.Name)
	w.b.Delete(store.Key(store.PrefixUser, []byte(r.Name)), nil)
	w.commitAuth()
	name := r.Name
	w.onTokens(func(t Tokens) { t.Invalidate(name) })
	return &pb.AuthUserDeleteResponse{Header: &pb.ResponseHeader{}}, nil
}

func (w *writer) userChangePassword(r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	u := w.authNow().users[r.Name]
	if u == nil {
		return nil, ErrUserNotFound
	}
	nu := &authpb.User{Name: u.Name, Roles: u.Roles, Options: u.Options}
	if u.Options == nil || !u.Options.NoPassword {
		p, err := password(r.HashedPassword)
		if err != nil {
			return nil, err
		}
		nu.Password = p
	}
	w.putUser(nu)
	w.commitAuth()
	name := r.Name
	w.onTokens(func(t Tokens) { t.Invalidate(name) })
	return &pb.AuthUserChangePasswordResponse{Header: &pb.ResponseHeader{}}, nil
}

func (w *writer) userGrantRole(r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	a := w.authNow()
	u := a.users[r.User]
	if u == nil {
		return nil, ErrUserNotFound
	}
	if r.Role != rootRole && a.roles[r.Role] == nil {
		return nil, ErrRoleNotFound
	}
	if slices.Contains(u.Roles, r.Role) {
		return &pb.AuthUserGrantRoleResponse{Header: &pb.ResponseHeader{}}, nil
	}
	nu := proto.Clone(u).(*authpb.User)
	nu.Roles = append(nu.Roles, r.Role)
	sort.Strings(nu.Roles)
	w.putUser(nu)
	w.commitAuth()
	return &pb.AuthUserGrantRoleResponse{Header: &pb.ResponseHeader{}}, nil
}

func (w *writer) userRevokeRole(r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	a := w.authNow()
	if a.enabled && r.Name == rootUser && r.Role == rootRole {
		return nil, ErrInvalidAuthMgmt
	}
	u := a.users[r.Name]
	if u == nil {
		return nil, ErrUserNotFound
	}
	if !slices.Contains(u.Roles, r.Role) {
		return nil, ErrRoleNotGranted
	}
	nu := proto.Clone(u).(*authpb.User)
	nu.Roles = slices.DeleteFunc(nu.Roles, func(x string) bool { return x == r.Role })
	w.putUser(nu)
	w.commitAuth()
	return &pb.AuthUserRevokeRoleResponse{Header: &pb.ResponseHeader{}}, nil
}

func (w *writer) roleAdd(r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	if r.Name == "" {
		return nil, ErrRoleEmpty
	}
	if w.authNow().roles[r.Name] != nil {
		return nil, ErrRoleAlreadyExist
	}
	w.putRole(&authpb.Role{Name: []byte(r.Name)})
	w.commitAuth()
	return &pb.AuthRoleAddResponse{Header: &pb.ResponseHeader{}}, nil
}

func (w *writer) roleDelete(r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	a := w.authNow()
	if a.enabled && r.Role == rootRole {
		return nil, ErrInvalidAuthMgmt
	}
	if a.roles[r.Role] == nil {
		return nil, ErrRoleNotFound
	}
	delete(w.authW().roles, r.Role)
	w.b.Delete(store.Key(store.PrefixRole, []byte(r.Role)), nil)
	for _, name := range w.authNow().Users() {
		u := w.authNow().users[name]
		if slices.Contains(u.Roles, r.Role) {
			nu := proto.Clone(u).(*authpb.User)
			nu.Roles = slices.DeleteFunc(nu.Roles, func(x string) bool { return x == r.Role })
			w.putUser(nu)
		}
	}
	w.commitAuth()
	return &pb.AuthRoleDeleteResponse{Header: &pb.ResponseHeader{}}, nil
}

func (w *writer) roleGrantPermission(r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	if r.Perm == nil {
		return nil, ErrPermissionNotGiven
	}
	if !validPermRange(r.Perm.Key, r.Perm.RangeEnd) {
		return nil, ErrInvalidAuthMgmt
	}
	ro := w.authNow().roles[r.Name]
	if ro == nil {
		return nil, ErrRoleNotFound
	}
	nr := proto.Clone(ro).(*authpb.Role)
	i := slices.IndexFunc(nr.KeyPermission, func(p *authpb.Permission) bool {
		return bytes.Equal(p.Key, r.Perm.Key) && bytes.Equal(p.RangeEnd, r.Perm.RangeEnd)
	})
	if i >= 0 {
		nr.KeyPermission[i].PermType = r.Perm.PermType
	} else {
		nr.KeyPermission = append(nr.KeyPermission, &authpb.Permission{Key: r.Perm.Key, RangeEnd: r.Perm.RangeEnd, PermType: r.Perm.PermType})
		slices.SortStableFunc(nr.KeyPermission, func(a, b *authpb.Permission) int { return bytes.Compare(a.Key, b.Key) })
	}
	w.putRole(nr)
	w.commitAuth()
	return &pb.AuthRoleGrantPermissionResponse{Header: &pb.ResponseHeader{}}, nil
}

func (w *writer) roleRevokePermission(r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	ro := w.authNow().roles[r.Role]
	if ro == nil {
		return nil, ErrRoleNotFound
	}
	nr := &authpb.Role{Name: ro.Name}
	for _, p := range ro.KeyPermission {
		if !bytes.Equal(p.Key, r.Key) || !bytes.Equal(p.RangeEnd, r.RangeEnd) {
			nr.KeyPermission = append(nr.KeyPermission, p)
		}
	}
	if len(nr.KeyPermission) == len(ro.KeyPermission) {
		return nil, ErrPermissionNotGranted
	}
	w.putRole(nr)
	w.commitAuth()
	return &pb.AuthRoleRevokePermissionResponse{Header: &pb.ResponseHeader{}}, nil
}

// authCheck re-checks a client's request against the auth state it meets
// at apply (etcd's authApplierV3): a permission revoked, or auth enabled,
// between the check on the serving member and the apply is honoured.
// Requests the members make themselves (lease expiry, checkpoints, the
// quota alarm) carry no header and are not checked.
func (w *writer) authCheck(r *pb.InternalRaftRequest) error {
	if r.Header == nil {
		return nil
	}
	a := w.authNow()
	if !a.enabled {
		return nil
	}
	ai := AuthInfo{User: r.Header.Username, Revision: r.Header.AuthRevision}
	return a.CanPropose(ai, r, func(id int64) ([][]byte, error) { return leaseKeys(w.r, id) })
}

// onTokens tells the token provider, if any, of a change applied now.
func (w *writer) onTokens(f func(Tokens)) {
	if t := w.s.cfg.Tokens; t != nil {
		f(t)
	}
}

// LeaseKeys lists the keys attached to a lease in the applied state.
func (s *Store) LeaseKeys(id int64) ([][]byte, error) {
	v, release := s.readView()
	defer release()
	return leaseKeys(v.r, id)
}
