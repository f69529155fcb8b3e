package server

import (
	"context"
	"encoding/base64"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/ballast-kv/ballast/mvcc"
)

// Authorisation has one choke point, authorize: the gRPC interceptors call
// it for every unary request and every stream (and for every message a
// stream receives), and the watch stream for every watch it creates. The
// rules are etcd's (etcdserver/api/v3rpc, v3_server.go, apply/auth.go).
// Replicated requests carry the user and auth revision in their header and
// are checked again when applied.

// authInfoKey holds, in a request's context, who sent it: propose copies
// it into the Raft request's header.
type authInfoKey struct{}

func withAuthInfo(ctx context.Context, ai *mvcc.AuthInfo) context.Context {
	return context.WithValue(ctx, authInfoKey{}, ai)
}

// internal marks a proposal a member makes on its own behalf (the quota
// alarm, an Authenticate): it is not checked at apply.
func internal(ctx context.Context) context.Context { return withAuthInfo(ctx, nil) }

func authInfoFrom(ctx context.Context) *mvcc.AuthInfo {
	ai, _ := ctx.Value(authInfoKey{}).(*mvcc.AuthInfo)
	return ai
}

// identity is etcd's AuthInfoFromCtx: the token's user, else (with
// --client-cert-auth) the verified client certificate's common name.
// ok is false when the request names nobody. Auth is enabled.
func (s *Server) identity(ctx context.Context, a *mvcc.AuthState) (ai mvcc.AuthInfo, ok bool, err error) {
	if md, found := metadata.FromIncomingContext(ctx); found {
		ts := md.Get(rpctypes.TokenFieldNameGRPC)
		if len(ts) == 0 {
			ts = md.Get(rpctypes.TokenFieldNameSwagger)
		}
		if len(ts) > 0 {
			ai, ok := s.tokens.info(ctx, strings.TrimPrefix(ts[0], "Bearer "), a.Revision())
			if !ok {
				return ai, false, rpctypes.ErrGRPCInvalidAuthToken
			}
			return ai, true, nil
		}
	}
	if s.cfg.ClientTLS.ClientCertAuth {
		if cn, found := certCommonName(ctx); found {
			return mvcc.AuthInfo{User: cn, Revision: a.Revision()}, true, nil
		}
	}
	return ai, false, nil
}

// certCommonName is the CommonName of the client's verified certificate.
// As etcd does, a request proxied by the gRPC gateway does not count.
func certCommonName(ctx context.Context) (string, bool) {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return "", false
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", false
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("grpcgateway-accept")) > 0 {
		return "", false
	}
	for _, chain := range tlsInfo.State.VerifiedChains {
		if len(chain) > 0 {
			return chain[0].Subject.CommonName, true
		}
	}
	return "", false
}

const (
	methodKV          = "/etcdserverpb.KV/"
	methodLease       = "/etcdserverpb.Lease/"
	methodMaintenance = "/etcdserverpb.Maintenance/"
	methodCluster     = "/etcdserverpb.Cluster/"
	methodAuth        = "/etcdserverpb.Auth/"
	methodWatch       = "/etcdserverpb.Watch/Watch"
)

// adminMethods may be called by root users only (etcd's isPermitted,
// checkMembershipOperationPermission and needAdminPermission).
var adminMethods = map[string]bool{
	methodKV + "Compact":                true,
	methodMaintenance + "Defragment":    true,
	methodMaintenance + "Snapshot":      true,
	methodMaintenance + "Hash":          true,
	methodMaintenance + "HashKV":        true,
	methodMaintenance + "MoveLeader":    true,
	methodMaintenance + "Downgrade":     true,
	methodCluster + "MemberAdd":         true,
	methodCluster + "MemberRemove":      true,
	methodCluster + "MemberUpdate":      true,
	methodCluster + "MemberPromote":     true,
	methodAuth + "AuthEnable":           true,
	methodAuth + "AuthDisable":          true,
	methodAuth + "UserAdd":              true,
	methodAuth + "UserDelete":           true,
	methodAuth + "UserChangePassword":   true,
	methodAuth + "UserGrantRole":        true,
	methodAuth + "UserRevokeRole":       true,
	methodAuth + "UserList":             true,
	methodAuth + "RoleAdd":              true,
	methodAuth + "RoleDelete":           true,
	methodAuth + "RoleGrantPermission":  true,
	methodAuth + "RoleRevokePermission": true,
	methodAuth + "RoleList":             true,
	methodMaintenance + "Status":        false, // any user
	methodCluster + "MemberList":        false,
	methodLease + "LeaseGrant":          false,
	methodLease + "LeaseLeases":         false,
	methodAuth + "AuthStatus":           false,
	methodKV + "Range":                  false, // the request decides
	methodKV + "RangeStream":            false,
	methodKV + "Put":                    false,
	methodKV + "DeleteRange":            false,
	methodKV + "Txn":                    false,
	methodLease + "LeaseRevoke":         false,
	methodLease + "LeaseTimeToLive":     false,
	methodLease + "LeaseKeepAlive":      false,
	methodMaintenance + "Alarm":         false,
	methodAuth + "UserGet":              false,
	methodAuth + "RoleGet":              false,
	methodWatch:                         false,
	"/grpc.health.v1.Health/Check":      false,
	"/grpc.health.v1.Health/Watch":      false,
	"/grpc.health.v1.Health/List":       false,
}

// authorize decides whether the request req (nil when a stream opens) to
// method may proceed, and returns who sent it. It is the one check on the
// receiving member; the writes it lets through meet mvcc's CanPropose again
// at apply, which it uses for them too.
func (s *Server) authorize(ctx context.Context, method string, req any) (mvcc.AuthInfo, error) {
	if method == methodAuth+"Authenticate" {
		return mvcc.AuthInfo{}, nil // checks the password itself
	}
	a := s.kv.Auth()
	if !a.Enabled() {
		return mvcc.AuthInfo{}, nil
	}
	ai, named, err := s.identity(ctx, a)
	if err != nil {
		return ai, err
	}
	if !named && !anonymousOK(method, req) {
		// etcd's requireAuthInfo, and what its permission checks answer
		// a request without a user.
		return ai, rpctypes.ErrGRPCUserEmpty
	}
	if admin, known := adminMethods[method]; admin || !known {
		return ai, toGRPC(a.IsAdmin(ai))
	}
	lease := s.kv.LeaseKeys
	switch r := req.(type) {
	case *pb.RangeRequest:
		err = a.CanRead(ai, r.Key, r.RangeEnd)
	case *pb.PutRequest:
		err = a.CanPropose(ai, &pb.InternalRaftRequest{Put: r}, lease)
	case *pb.DeleteRangeRequest:
		err = a.CanPropose(ai, &pb.InternalRaftRequest{DeleteRange: r}, lease)
	case *pb.TxnRequest:
		err = a.CanPropose(ai, &pb.InternalRaftRequest{Txn: r}, lease)
	case *pb.WatchCreateRequest:
		err = a.CanRead(ai, r.Key, r.RangeEnd)
	case *pb.LeaseRevokeRequest:
		err = a.CanPropose(ai, &pb.InternalRaftRequest{LeaseRevoke: r}, lease)
	case *pb.LeaseKeepAliveRequest:
		err = a.CanUseLease(ai, r.ID, lease)
	case *pb.LeaseTimeToLiveRequest:
		if r.Keys && a.IsAdmin(ai) != nil {
			err = canReadLeaseKeys(a, ai, r.ID, lease)
		}
	case *pb.LeaseLeasesRequest:
		if a.IsAdmin(ai) != nil {
			for _, id := range s.kv.Leases() {
				if err = canReadLeaseKeys(a, ai, id, lease); err != nil {
					break
				}
			}
		}
	case *pb.AlarmRequest:
		if r.Action != pb.AlarmRequest_GET {
			err = a.IsAdmin(ai)
		}
	case *pb.AuthUserGetRequest:
		if r.Name != ai.User {
			err = a.IsAdmin(ai)
		}
	case *pb.AuthRoleGetRequest:
		if !a.HasRole(ai.User, r.Role) {
			err = a.IsAdmin(ai)
		}
	}
	return ai, toGRPC(err)
}

// anonymousOK lists what a request without a user may do while auth is
// on: ask the auth status or health, and open a stream (whose messages are
// checked one by one).
func anonymousOK(method string, req any) bool {
	switch req.(type) {
	case nil, *pb.WatchRequest:
		return true
	}
	return method == methodAuth+"AuthStatus" || strings.HasPrefix(method, "/grpc.health.v1.Health/")
}

// canReadLeaseKeys is etcd's check for LeaseTimeToLive with keys: every
// attached key must be readable.
func canReadLeaseKeys(a *mvcc.AuthState, ai mvcc.AuthInfo, id int64, keys mvcc.LeaseKeys) error {
	ks, err := keys(id)
	if err != nil {
		return err
	}
	for _, k := range ks {
		if err := a.CanRead(ai, k, nil); err != nil {
			return err
		}
	}
	return nil
}

// staleRead is etcd's check after a read served without Raft: if the
// auth store changed while the request ran, its answer is withheld.
func (s *Server) staleRead(ai mvcc.AuthInfo) error {
	a := s.kv.Auth()
	if a.Enabled() && ai.Revision != 0 && ai.Revision != a.Revision() {
		return rpctypes.ErrGRPCAuthOldRevision
	}
	return nil
}

// isLocalRead reports the requests answered from this member's state.
func isLocalRead(req any) bool {
	switch r := req.(type) {
	case *pb.RangeRequest:
		return true
	case *pb.TxnRequest:
		return isReadOnly(r)
	case *pb.LeaseTimeToLiveRequest:
		return r.Keys
	}
	return false
}

func (s *Server) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ai, err := s.authorize(ctx, info.FullMethod, req)
	if err != nil {
		return nil, err
	}
	resp, err := h(withAuthInfo(ctx, &ai), req)
	if err == nil && isLocalRead(req) {
		if err := s.staleRead(ai); err != nil {
			return nil, err
		}
	}
	return resp, err
}

func (s *Server) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ai, err := s.authorize(ss.Context(), info.FullMethod, nil)
	if err != nil {
		return err
	}
	return h(srv, &authServerStream{ctxStream: ctxStream{ServerStream: ss, ctx: withAuthInfo(ss.Context(), &ai)}, s: s, method: info.FullMethod})
}

// authServerStream checks every message a stream receives.
type authServerStream struct {
	ctxStream
	s      *Server
	method string
}

func (a *authServerStream) RecvMsg(m any) error {
	if err := a.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	_, err := a.s.authorize(a.ServerStream.Context(), a.method, m)
	return err
}

type authServer struct {
	pb.UnimplementedAuthServer
	s *Server
}

// authWrite proposes an auth change; apply gives every auth response a
// header, which write fills as for any other write.
func authWrite[T proto.Message](s *Server, ctx context.Context, r *pb.InternalRaftRequest) (T, error) {
	var zero T
	resp, err := s.write(ctx, r)
	if err != nil {
		return zero, err
	}
	return resp.(T), nil
}

// hashPassword is done by the member receiving the request, before
// proposing, so apply stays deterministic (etcd's HashedPassword).
func (s *Server) hashPassword(p string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(p), s.cfg.BcryptCost)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(h), nil
}

func (a *authServer) AuthEnable(ctx context.Context, r *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	return authWrite[*pb.AuthEnableResponse](a.s, ctx, &pb.InternalRaftRequest{AuthEnable: r})
}

func (a *authServer) AuthDisable(ctx context.Context, r *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	return authWrite[*pb.AuthDisableResponse](a.s, ctx, &pb.InternalRaftRequest{AuthDisable: r})
}

func (a *authServer) AuthStatus(ctx context.Context, _ *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	if err := a.s.linearizable(ctx); err != nil {
		return nil, err
	}
	st := a.s.kv.Auth()
	return &pb.AuthStatusResponse{Header: a.s.header(nil), Enabled: st.Enabled(), AuthRevision: st.Revision()}, nil
}

// Authenticate checks the password here (bcrypt is slow: never in apply),
// then proposes the token's issue; if the auth data changed in between,
// it checks again, as etcd does.
func (a *authServer) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	s := a.s
	if err := s.linearizable(ctx); err != nil {
		return nil, err
	}
	for {
		st := s.kv.Auth()
		if !st.Enabled() {
			return nil, rpctypes.ErrGRPCAuthNotEnabled
		}
		u := st.User(r.Name)
		if u == nil {
			return nil, rpctypes.ErrGRPCAuthFailed
		}
		if u.Options != nil && u.Options.NoPassword {
			return nil, mvcc.ErrNoPasswordUser
		}
		if bcrypt.CompareHashAndPassword(u.Password, []byte(r.Password)) != nil {
			return nil, rpctypes.ErrGRPCAuthFailed
		}
		req := &pb.InternalRaftRequest{Authenticate: &pb.InternalAuthenticateRequest{Name: r.Name, SimpleToken: s.tokens.prefix()}}
		resp, err := authWrite[*pb.AuthenticateResponse](s, internal(ctx), req)
		if err != nil {
			return nil, err
		}
		if s.kv.Auth().Revision() == st.Revision() {
			return resp, nil
		}
	}
}

func (a *authServer) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	if r.Options == nil || !r.Options.NoPassword {
		h, err := a.s.hashPassword(r.Password)
		if err != nil {
			return nil, err
		}
		r.HashedPassword, r.Password = h, ""
	}
	return authWrite[*pb.AuthUserAddResponse](a.s, ctx, &pb.InternalRaftRequest{AuthUserAdd: r})
}

func (a *authServer) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	return authWrite[*pb.AuthUserDeleteResponse](a.s, ctx, &pb.InternalRaftRequest{AuthUserDelete: r})
}

func (a *authServer) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	if u := a.s.kv.Auth().User(r.Name); u == nil || u.Options == nil || !u.Options.NoPassword {
		h, err := a.s.hashPassword(r.Password)
		if err != nil {
			return nil, err
		}
		r.HashedPassword, r.Password = h, ""
	}
	return authWrite[*pb.AuthUserChangePasswordResponse](a.s, ctx, &pb.InternalRaftRequest{AuthUserChangePassword: r})
}

func (a *authServer) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	return authWrite[*pb.AuthUserGrantRoleResponse](a.s, ctx, &pb.InternalRaftRequest{AuthUserGrantRole: r})
}

func (a *authServer) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	return authWrite[*pb.AuthUserRevokeRoleResponse](a.s, ctx, &pb.InternalRaftRequest{AuthUserRevokeRole: r})
}

func (a *authServer) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	return authWrite[*pb.AuthRoleAddResponse](a.s, ctx, &pb.InternalRaftRequest{AuthRoleAdd: r})
}

func (a *authServer) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	return authWrite[*pb.AuthRoleDeleteResponse](a.s, ctx, &pb.InternalRaftRequest{AuthRoleDelete: r})
}

func (a *authServer) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	return authWrite[*pb.AuthRoleGrantPermissionResponse](a.s, ctx, &pb.InternalRaftRequest{AuthRoleGrantPermission: r})
}

func (a *authServer) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	return authWrite[*pb.AuthRoleRevokePermissionResponse](a.s, ctx, &pb.InternalRaftRequest{AuthRoleRevokePermission: r})
}

// The reads are served from this member's state after a linearizable
// barrier (etcd sends them through Raft; the answer is the same).

func (a *authServer) UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	if err := a.s.linearizable(ctx); err != nil {
		return nil, err
	}
	resp, err := a.s.kv.Auth().UserGet(r.Name)
	if err != nil {
		return nil, toGRPC(err)
	}
	resp.Header = a.s.header(nil)
	return resp, nil
}

func (a *authServer) UserList(ctx context.Context, _ *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	if err := a.s.linearizable(ctx); err != nil {
		return nil, err
	}
	return &pb.AuthUserListResponse{Header: a.s.header(nil), Users: a.s.kv.Auth().Users()}, nil
}

func (a *authServer) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	if err := a.s.linearizable(ctx); err != nil {
		return nil, err
	}
	resp, err := a.s.kv.Auth().RoleGet(r.Role)
	if err != nil {
		return nil, toGRPC(err)
	}
	resp.Header = a.s.header(nil)
	return resp, nil
}

func (a *authServer) RoleList(ctx context.Context, _ *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	if err := a.s.linearizable(ctx); err != nil {
		return nil, err
	}
	return &pb.AuthRoleListResponse{Header: a.s.header(nil), Roles: a.s.kv.Auth().Roles()}, nil
}
