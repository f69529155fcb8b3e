package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/ballast-kv/ballast/mvcc"
	"github.com/ballast-kv/ballast/store"
)

// authTestServer is a Server with just what authorisation needs: an
// in-memory state machine with auth enabled, users root and alice (read
// and write on a/), and a token provider.
func authTestServer(t *testing.T, clientCertAuth bool, tokens string) *Server {
	t.Helper()
	db, err := store.Open(store.Config{Dir: "/state", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{ClientTLS: TLSFiles{ClientCertAuth: clientCertAuth}}}
	if s.tokens, err = newTokenProvider(tokens, time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	kv, err := mvcc.Open(db, mvcc.Config{Tokens: s.tokens})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close(); db.Close() })
	s.kv = kv
	h := "JDJhJDA0JGZha2U="
	reqs := []*pb.InternalRaftRequest{
		{AuthUserAdd: &pb.AuthUserAddRequest{Name: "root", HashedPassword: h}},
		{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}},
		{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "ra"}},
		{AuthRoleGrantPermission: &pb.AuthRoleGrantPermissionRequest{Name: "ra", Perm: &authpb.Permission{PermType: authpb.Permission_READWRITE, Key: []byte("a/"), RangeEnd: []byte("a0")}}},
		{AuthUserAdd: &pb.AuthUserAddRequest{Name: "alice", HashedPassword: h}},
		{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "alice", Role: "ra"}},
		{AuthEnable: &pb.AuthEnableRequest{}},
	}
	for i, r := range reqs {
		data, _ := proto.Marshal(r)
		if res := kv.Apply([]mvcc.Entry{{Index: uint64(i + 1), Data: data}})[0]; res != nil {
			if err, ok := res.(error); ok {
				t.Fatalf("apply %v: %v", r, err)
			}
		}
	}
	return s
}

// stubKV answers every Range; only the interceptor decides.
type stubKV struct{ pb.UnimplementedKVServer }

func (stubKV) Range(context.Context, *pb.RangeRequest) (*pb.RangeResponse, error) {
	return &pb.RangeResponse{Header: &pb.ResponseHeader{}}, nil
}

type testPKI struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	server tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &testPKI{ca: ca, caKey: key, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.server = p.cert(t, "server", x509.ExtKeyUsageServerAuth)
	return p
}

func (p *testPKI) cert(t *testing.T, cn string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// serveTLS serves stubKV through s's interceptors over TLS that asks for,
// but does not require, a client certificate.
func serveTLS(t *testing.T, s *Server, p *testPKI) string {
	t.Helper()
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.pool, ClientAuth: tls.VerifyClientCertIfGiven})
	g := grpc.NewServer(grpc.Creds(creds), grpc.ChainUnaryInterceptor(s.authUnary))
	pb.RegisterKVServer(g, stubKV{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

func dialTLS(t *testing.T, addr string, p *testPKI, cert *tls.Certificate) pb.KVClient {
	t.Helper()
	cfg := &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewKVClient(conn)
}

// TestClientCertCommonNameIsUser: with ClientCertAuth, a request without a
// token is the user its verified certificate names; a token wins over the
// certificate; without ClientCertAuth the certificate names nobody.
func TestClientCertCommonNameIsUser(t *testing.T) {
	p := newTestPKI(t)
	alice, root := p.cert(t, "alice", x509.ExtKeyUsageClientAuth), p.cert(t, "root", x509.ExtKeyUsageClientAuth)

	s := authTestServer(t, true, "simple")
	addr := serveTLS(t, s, p)
	get := func(c pb.KVClient, ctx context.Context, key string) error {
		_, err := c.Range(ctx, &pb.RangeRequest{Key: []byte(key)})
		return err
	}
	ctx := context.Background()
	cases := []struct {
		name string
		cli  pb.KVClient
		key  string
		want error
	}{
		{"alice reads her key", dialTLS(t, addr, p, &alice), "a/x", nil},
		{"alice reads another key", dialTLS(t, addr, p, &alice), "b/x", rpctypes.ErrGRPCPermissionDenied},
		{"root reads anything", dialTLS(t, addr, p, &root), "b/x", nil},
		{"no certificate", dialTLS(t, addr, p, nil), "a/x", rpctypes.ErrGRPCUserEmpty},
	}
	for _, c := range cases {
		if err := get(c.cli, ctx, c.key); err != c.want && (err == nil || c.want == nil || err.Error() != c.want.Error()) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// A token (here an invalid one) is used before the certificate.
	bad := metadata.AppendToOutgoingContext(ctx, "token", "nope.1")
	if err := get(dialTLS(t, addr, p, &root), bad, "a/x"); err == nil || err.Error() != rpctypes.ErrGRPCInvalidAuthToken.Error() {
		t.Errorf("token over certificate: got %v", err)
	}

	off := authTestServer(t, false, "simple")
	addrOff := serveTLS(t, off, p)
	if err := get(dialTLS(t, addrOff, p, &root), ctx, "a/x"); err == nil || err.Error() != rpctypes.ErrGRPCUserEmpty.Error() {
		t.Errorf("without ClientCertAuth: got %v, want user empty", err)
	}
}

// TestJWTTokens: a JWT carries user and auth revision; a token from an
// older auth revision is refused with etcd's "revision of auth store is
// old" (clientv3 then logs in again), a tampered one is invalid.
func TestJWTTokens(t *testing.T) {
	dir := t.TempDir()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	privDER, _ := x509.MarshalPKCS8PrivateKey(key)
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	priv, pub := filepath.Join(dir, "priv.pem"), filepath.Join(dir, "pub.pem")
	os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600)
	os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600)

	for _, bad := range []string{"jwt", "jwt,sign-method=RS256", "jwt,sign-method=XX,priv-key=" + priv, "bogus", "jwt,pub-key=" + pub + ",sign-method=RS256,color=red"} {
		if _, err := newTokenProvider(bad, 0, nil); err == nil {
			t.Errorf("--auth-token %q accepted", bad)
		}
	}
	s := authTestServer(t, false, "jwt,pub-key="+pub+",priv-key="+priv+",sign-method=RS256,ttl=1m")
	rev := s.kv.Auth().Revision()
	tok, err := s.tokens.Assign(0, "alice", "", rev)
	if err != nil {
		t.Fatal(err)
	}
	ctx := func(tok string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs("token", tok))
	}
	check := func(tok, key string, want error) {
		t.Helper()
		_, err := s.authorize(ctx(tok), methodKV+"Range", &pb.RangeRequest{Key: []byte(key)})
		if err != want && (err == nil || want == nil || err.Error() != want.Error()) {
			t.Errorf("token for %q: got %v, want %v", key, err, want)
		}
	}
	check(tok, "a/x", nil)
	check(tok, "b/x", rpctypes.ErrGRPCPermissionDenied)
	check(tok+"x", "a/x", rpctypes.ErrGRPCInvalidAuthToken)
	old, _ := s.tokens.Assign(0, "alice", "", rev-1)
	check(old, "a/x", rpctypes.ErrGRPCAuthOldRevision)
	expired, _ := (&jwtTokens{method: s.tokens.(*jwtTokens).method, sign: key, ttl: -time.Minute}).Assign(0, "alice", "", rev)
	check(expired, "a/x", rpctypes.ErrGRPCInvalidAuthToken)
	verifyOnly, err := newTokenProvider("jwt,pub-key="+pub+",sign-method=RS256", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifyOnly.Assign(0, "alice", "", rev); err == nil {
		t.Errorf("a verify-only provider signed a token")
	}
	if ai, ok := verifyOnly.info(context.Background(), tok, 0); !ok || ai.User != "alice" || ai.Revision != rev {
		t.Errorf("verify-only provider: %v %v", ai, ok)
	}
}

// TestSimpleTokens: the format, expiry after the TTL without use, renewal
// on use, and invalidation.
func TestSimpleTokens(t *testing.T) {
	p, err := newTokenProvider("simple", 50*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1_700_000_000, 0)
	p.(*simpleTokens).now = func() time.Time { return clock }
	p.SetEnabled(true)
	pre := p.prefix()
	if len(pre) != 16 {
		t.Fatalf("prefix %q", pre)
	}
	tok, _ := p.Assign(42, "alice", pre, 3)
	if tok != pre+".42" {
		t.Fatalf("token %q", tok)
	}
	for range 4 { // used every 30ms: kept alive past its 50ms TTL
		clock = clock.Add(30 * time.Millisecond)
		if ai, ok := p.info(context.Background(), tok, 7); !ok || ai.User != "alice" || ai.Revision != 7 {
			t.Fatalf("token lost while in use: %v %v", ai, ok)
		}
	}
	clock = clock.Add(80 * time.Millisecond)
	if _, ok := p.info(context.Background(), tok, 7); ok {
		t.Errorf("token alive after its TTL without use")
	}
	tok, _ = p.Assign(43, "alice", pre, 3)
	p.Invalidate("alice")
	if _, ok := p.info(context.Background(), tok, 7); ok {
		t.Errorf("token alive after invalidation")
	}
	tok, _ = p.Assign(44, "bob", pre, 3)
	p.SetEnabled(false)
	if _, ok := p.info(context.Background(), tok, 7); ok {
		t.Errorf("token alive after auth was disabled")
	}
	for _, bad := range []string{"", "abc", "abc.x", "a.b.1"} {
		if _, ok := p.info(context.Background(), bad, 7); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}
