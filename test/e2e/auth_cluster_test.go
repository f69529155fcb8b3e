package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// TestAuthCluster: auth data is replicated; a simple token issued through
// one member works on every member (each applied the Authenticate entry);
// reads served by followers, serializable ones included, and writes
// forwarded by followers are checked.
func TestAuthCluster(t *testing.T) {
	nodes := harness.StartCluster(t, harness.BallastBin(t), 3, harness.Options{Args: []string{"--bcrypt-cost", "4"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	anon := nodes[0].Client(t)
	applyAuthFixture(t, ctx, anon)
	resp, err := anon.Authenticate(ctx, "alice", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		c := n.Client(t)
		tctx := metadata.AppendToOutgoingContext(ctx, "token", resp.Token)
		for _, serializable := range []bool{false, true} {
			var opts []clientv3.OpOption
			if serializable {
				opts = append(opts, clientv3.WithSerializable())
			}
			if _, err := c.Get(tctx, "a/x", opts...); err != nil {
				t.Errorf("%s: alice's token, own key, serializable=%v: %v", n.Name, serializable, err)
			}
			if _, err := c.Get(tctx, "b/k", opts...); !strings.Contains(errText(err), denied) {
				t.Errorf("%s: alice's token, other key, serializable=%v: %v", n.Name, serializable, err)
			}
			if _, err := c.Get(ctx, "a/x", opts...); !strings.Contains(errText(err), noUser) {
				t.Errorf("%s: no token, serializable=%v: %v", n.Name, serializable, err)
			}
		}
		if _, err := c.Put(tctx, "a/from-"+n.Name, "v"); err != nil {
			t.Errorf("%s: put through this member: %v", n.Name, err)
		}
		if _, err := c.Put(tctx, "b/from-"+n.Name, "v"); !strings.Contains(errText(err), denied) {
			t.Errorf("%s: put outside through this member: %v", n.Name, err)
		}
		st, err := c.AuthStatus(ctx)
		if err != nil || !st.Enabled {
			t.Errorf("%s: auth status %v %v", n.Name, st, err)
		}
	}
}

// TestAuthJWT runs the binary with --auth-token jwt: clientv3 logs in,
// and after the auth revision moves on (its token's revision is old) it
// logs in again by itself.
func TestAuthJWT(t *testing.T) {
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	privDER, _ := x509.MarshalPKCS8PrivateKey(key)
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	priv, pub := filepath.Join(dir, "priv.pem"), filepath.Join(dir, "pub.pem")
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	_, cli := setupAuth(t, "--auth-token", "jwt,pub-key="+pub+",priv-key="+priv+",sign-method=RS256,ttl=10m")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	tok, err := cli[""].Authenticate(ctx, "alice", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(tok.Token, ".") != 2 {
		t.Fatalf("not a JWT: %q", tok.Token)
	}
	if _, err := cli["alice"].Get(ctx, "a/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli["root"].RoleAdd(ctx, "another"); err != nil { // the auth revision moves on
		t.Fatal(err)
	}
	old := metadata.AppendToOutgoingContext(ctx, "token", tok.Token)
	if _, err := cli[""].Get(old, "a/x"); !strings.Contains(errText(err), "etcdserver: revision of auth store is old") {
		t.Errorf("old token: got %v", err)
	}
	if _, err := cli["alice"].Get(ctx, "a/x"); err != nil {
		t.Errorf("clientv3 did not log in again after the revision moved on: %v", err)
	}
	if _, err := cli["alice"].Get(ctx, "b/k"); !strings.Contains(errText(err), denied) {
		t.Errorf("other key: %v", err)
	}
}
