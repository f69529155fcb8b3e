package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// TLSFiles are the files behind etcd's --cert-file, --key-file,
// --trusted-ca-file and --client-cert-auth (or their --peer-* twins).
type TLSFiles struct {
	CertFile, KeyFile string
	TrustedCAFile     string
	ClientCertAuth    bool // require a client certificate signed by TrustedCAFile
}

// Enabled reports whether a certificate was given.
func (f TLSFiles) Enabled() bool { return f.CertFile != "" || f.KeyFile != "" }

func (f TLSFiles) validate(flagPrefix string) error {
	switch {
	case (f.CertFile == "") != (f.KeyFile == ""):
		return fmt.Errorf("--%scert-file and --%skey-file must be given together", flagPrefix, flagPrefix)
	case f.ClientCertAuth && f.TrustedCAFile == "":
		return fmt.Errorf("--%sclient-cert-auth needs --%strusted-ca-file to verify client certificates", flagPrefix, flagPrefix)
	}
	return nil
}

// tlsMinVersion is etcd's default minimum, TLS 1.2.
const tlsMinVersion = tls.VersionTLS12

// tlsHandshakeTimeout bounds a TLS handshake on any listener.
const tlsHandshakeTimeout = 10 * time.Second

// certLoader reads a key pair again when its files change, so certificates
// can be rotated without a restart (etcd reloads them too).
type certLoader struct {
	certFile, keyFile string
	mu                sync.Mutex
	cert              *tls.Certificate
	certMod, keyMod   time.Time
	checked           time.Time
}

func (l *certLoader) get() (*tls.Certificate, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cert != nil && time.Since(l.checked) < time.Second {
		return l.cert, nil
	}
	cs, err := os.Stat(l.certFile)
	if err != nil {
		return nil, err
	}
	ks, err := os.Stat(l.keyFile)
	if err != nil {
		return nil, err
	}
	l.checked = time.Now()
	if l.cert != nil && cs.ModTime().Equal(l.certMod) && ks.ModTime().Equal(l.keyMod) {
		return l.cert, nil
	}
	c, err := tls.LoadX509KeyPair(l.certFile, l.keyFile)
	if err != nil {
		return nil, err
	}
	l.cert, l.certMod, l.keyMod = &c, cs.ModTime(), ks.ModTime()
	return l.cert, nil
}

func loadCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// loadTLS reads every certificate, key and CA once: the configurations of
// the https client listeners and of the peer port, both ways. Nil: plain.
func (c *Config) loadTLS() (client, peerServer, peerDial *tls.Config, err error) {
	if c.ClientTLS.Enabled() {
		l, pool, err := c.ClientTLS.load()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("client TLS: %w", err)
		}
		client = clientTLS(serverConfig(l, pool, c.ClientTLS.ClientCertAuth))
	}
	if c.PeerTLS.Enabled() {
		l, pool, err := c.PeerTLS.load()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("peer TLS: %w", err)
		}
		peerServer, peerDial = serverConfig(l, pool, c.PeerTLS.ClientCertAuth), dialConfig(l, pool)
	}
	return client, peerServer, peerDial, nil
}

// serverConfig is the TLS configuration of a listener (see clientTLS for
// the protocols the client port offers).
func serverConfig(l *certLoader, pool *x509.CertPool, clientCertAuth bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:     tlsMinVersion,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return l.get() },
		ClientCAs:      pool,
	}
	if clientCertAuth {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg
}

// dialConfig is the TLS configuration a member dials its peers with: it
// checks their certificates against the trusted CA (or the system's) and
// presents its own, which peers with --peer-client-cert-auth require.
func dialConfig(l *certLoader, pool *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:           tlsMinVersion,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return l.get() },
		RootCAs:              pool, // nil: the system's
	}
}

// load reads the key pair once (to fail at start, not at the first
// handshake) and the trusted CAs, if any.
func (f TLSFiles) load() (*certLoader, *x509.CertPool, error) {
	l := &certLoader{certFile: f.CertFile, keyFile: f.KeyFile}
	if _, err := l.get(); err != nil {
		return nil, nil, fmt.Errorf("certificate %s, key %s: %w", f.CertFile, f.KeyFile, err)
	}
	if f.TrustedCAFile == "" {
		return l, nil, nil
	}
	pool, err := loadCAs(f.TrustedCAFile)
	return l, pool, err
}

// clientTLS picks, per connection, what the client port speaks over TLS.
// gRPC clients offer only "h2" (grpc-go insists on it) and are served by
// the gRPC server directly; a client that also offers "http/1.1" (curl, a
// browser, a health probe) gets HTTP/1.1 and the HTTP endpoints. etcd
// instead sends all TLS traffic through net/http and grpc's ServeHTTP,
// which is slower.
func clientTLS(base *tls.Config) *tls.Config {
	h2, h1 := base.Clone(), base.Clone()
	h2.NextProtos, h1.NextProtos = []string{"h2"}, []string{"http/1.1"}
	cfg := base.Clone()
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(hello.SupportedProtos, "http/1.1") || !slices.Contains(hello.SupportedProtos, "h2") {
			return h1, nil
		}
		return h2, nil
	}
	return cfg
}

// handshake runs a server-side TLS handshake within tlsHandshakeTimeout.
func handshake(c net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	tc := tls.Server(c, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// handshakenCreds lets the gRPC server take connections whose TLS
// handshake the listener already ran, and still see the peer's
// certificate (credentials.TLSInfo), which auth reads the user from.
type handshakenCreds struct{}

type plainAuthInfo struct{ credentials.CommonAuthInfo }

func (plainAuthInfo) AuthType() string { return "insecure" }

func (handshakenCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if tc, ok := c.(*tls.Conn); ok {
		return c, credentials.TLSInfo{State: tc.ConnectionState(), CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
	}
	return c, plainAuthInfo{credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (handshakenCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("handshakenCreds are for servers only")
}
func (handshakenCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}
func (c handshakenCreds) Clone() credentials.TransportCredentials { return c }
func (handshakenCreds) OverrideServerName(string) error           { return nil }
