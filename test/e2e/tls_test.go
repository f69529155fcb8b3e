package e2e

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// A three-member cluster with etcd's TLS flags on both ports and client
// certificates required: it replicates over TLS peer links, serves gRPC
// and the HTTP endpoints (for HTTP/1.1 and HTTP/2 clients) over TLS, and
// refuses whatever does not present a certificate of its CA, speaks plain
// TCP or offers less than TLS 1.2 — on the client and the peer port.
func TestTLSCluster(t *testing.T) {
	ca := harness.NewCA(t)
	nodes := harness.StartCluster(t, harness.BallastBin(t), 3, harness.Options{TLS: &harness.TLS{CA: ca, ClientCertAuth: true}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	p, err := nodes[0].Client(t).Put(ctx, "k", "over tls")
	if err != nil {
		t.Fatal(err)
	}
	got, err := nodes[2].Client(t).Get(ctx, "k")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "over tls" || got.Header.Revision < p.Header.Revision {
		t.Fatalf("a linearizable read on another member: %v, %v", got, err)
	}
	ctl := newCtl(t, nodes[1])
	if out := ctl.ok("endpoint", "health", "--cluster"); strings.Count(out, "is healthy") != 3 {
		t.Errorf("etcdctl endpoint health --cluster over TLS:\n%s", out)
	}
	if out := ctl.ok("defrag", "--cluster"); strings.Count(out, "Finished defragmenting etcd member") != 3 {
		t.Errorf("etcdctl defrag --cluster over TLS:\n%s", out)
	}
	if out := ctl.ok("alarm", "list"); out != "" {
		t.Errorf("etcdctl alarm list on a healthy cluster: %q", out)
	}
	if out := ctl.ok("alarm", "disarm"); out != "" {
		t.Errorf("etcdctl alarm disarm with no alarm: %q", out)
	}

	host := strings.TrimPrefix(nodes[0].ClientURL, "https://")
	refused := func(what string, cfg clientv3.Config) { t.Helper(); requireRefused(t, what, cfg) }
	refused("no client certificate", clientv3.Config{Endpoints: []string{nodes[0].ClientURL}, TLS: ca.ClientConfig(t, "", "")})
	refused("plain gRPC on the TLS port", clientv3.Config{Endpoints: []string{"http://" + host}})
	other := harness.NewCA(t)
	cert, key := other.Issue(t, "root")
	untrusted := other.ClientConfig(t, cert, key)
	untrusted.RootCAs = nodes[0].TLSConfig.RootCAs // trusts the server, but its certificate is from another CA
	refused("a certificate of another CA", clientv3.Config{Endpoints: []string{nodes[0].ClientURL}, TLS: untrusted})

	old := nodes[0].TLSConfig.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if c, err := tls.Dial("tcp", host, old); err == nil {
		c.Close()
		t.Errorf("a TLS 1.1 handshake succeeded")
	}

	// HTTP/1.1 (curl's fallback) and HTTP/2 (curl's default) both reach
	// the HTTP endpoints.
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: nodes[0].TLSConfig.Clone(), ForceAttemptHTTP2: h2}
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(nodes[0].ClientURL + "/health")
		if err != nil {
			t.Fatalf("GET /health over TLS (HTTP/2 offered: %v): %v", h2, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
			t.Errorf("GET /health over TLS (HTTP/2 offered: %v): %s %s", h2, resp.Status, body)
		}
		tr.CloseIdleConnections()
	}

	// The peer port: a plain Raft handshake gets no answer, and TLS
	// without a client certificate is refused (--peer-client-cert-auth).
	peer := strings.TrimPrefix(nodes[1].PeerURL, "https://")
	c, err := net.DialTimeout("tcp", peer, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(binary.BigEndian.AppendUint64([]byte{'R'}, got.Header.ClusterId))
	var ack [1]byte
	if _, err := io.ReadFull(c, ack[:]); err == nil && ack[0] == 0 {
		t.Errorf("the peer port accepted a plain Raft connection")
	}
	c.Close()
	tc, err := tls.Dial("tcp", peer, ca.ClientConfig(t, "", ""))
	if err == nil {
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		// TLS 1.3 reports a missing client certificate on the first read.
		_, err = tc.Write([]byte{'R'})
		if err == nil {
			_, err = io.ReadFull(tc, ack[:])
		}
		tc.Close()
	}
	if err == nil {
		t.Errorf("the peer port accepted TLS without a client certificate")
	}

	// etcd's auth on a three-member TLS cluster that requires client
	// certificates, driven by etcdctl: a request without a token is the user
	// named by its certificate's CN, a password login works on any member,
	// permissions refuse what they do not grant, and auth disable lifts them.
	t.Run("auth", func(t *testing.T) {
		root := newCtl(t, nodes[0]) // its certificate's CN is "root"
		as := func(n *harness.Node, cn string) *ctlRunner {
			c := newCtl(t, n)
			cert, key := ca.Issue(t, cn)
			c.flags = ctlTLSFlags(harness.ClientFiles{CA: ca.CertFile, Cert: cert, Key: key})
			return c
		}
		for _, args := range [][]string{
			{"user", "add", "root", "--new-user-password", "rootpw"},
			{"user", "grant-role", "root", "root"},
			{"role", "add", "reader"},
			{"role", "grant-permission", "reader", "read", "app/", "--prefix"},
			{"user", "add", "alice", "--new-user-password", "alicepw"},
			{"user", "grant-role", "alice", "reader"},
			{"auth", "enable"},
			{"put", "app/x", "1"}, // as root, by certificate
		} {
			root.ok(args...)
		}
		alice := as(nodes[1], "alice")
		if out := alice.ok("get", "app/x", "--print-value-only"); out != "1\n" {
			t.Errorf("alice (by certificate) reads app/x: %q", out)
		}
		if msg := alice.fails("put", "app/x", "2"); !strings.Contains(msg, "permission denied") {
			t.Errorf("alice (by certificate) writes app/x: %q, want permission denied", msg)
		}
		if msg := alice.fails("get", "other"); !strings.Contains(msg, "permission denied") {
			t.Errorf("alice reads outside her prefix: %q, want permission denied", msg)
		}
		// A password login, on another member, is alice whatever the certificate says.
		byPassword := as(nodes[2], "root")
		if msg := byPassword.fails("--user", "alice:alicepw", "put", "app/y", "1"); !strings.Contains(msg, "permission denied") {
			t.Errorf("alice (by password) writes app/y: %q, want permission denied", msg)
		}
		if msg := byPassword.fails("--user", "alice:wrong", "get", "app/x"); !strings.Contains(msg, "authentication failed") {
			t.Errorf("a wrong password: %q, want authentication failed", msg)
		}
		if msg := as(nodes[1], "mallory").fails("get", "app/x"); msg == "" {
			t.Errorf("a certificate naming no user read app/x")
		}
		root.ok("auth", "disable")
		alice.ok("put", "app/x", "2")
	})
}

// requireRefused fails the test if a client made with cfg can Get.
func requireRefused(t *testing.T, what string, cfg clientv3.Config) {
	t.Helper()
	cfg.DialTimeout, cfg.Logger = 2*time.Second, zap.NewNop()
	c, err := clientv3.New(cfg)
	if err == nil {
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err = c.Get(ctx, "k")
	}
	if err == nil {
		t.Errorf("%s: a Get succeeded", what)
	}
}

// etcd's YAML config file nests the TLS settings in client- and
// peer-transport-security sections; a member started from one serves TLS
// and requires client certificates as with the flags.
func TestTLSFromConfigFile(t *testing.T) {
	ca := harness.NewCA(t)
	n := harness.Start(t, harness.BallastBin(t), harness.Options{TLS: &harness.TLS{CA: ca, ClientCertAuth: true, ConfigFile: true}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := n.Client(t).Put(ctx, "k", "v"); err != nil {
		t.Fatalf("a put with a client certificate: %v", err)
	}
	requireRefused(t, "no client certificate (client-cert-auth from the file)", clientv3.Config{Endpoints: []string{n.ClientURL}, TLS: ca.ClientConfig(t, "", "")})
}
