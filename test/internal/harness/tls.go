package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a throwaway certificate authority for a test's TLS: it issues
// server certificates for the loopback addresses and client certificates
// whose common name is a user name.
type CA struct {
	CertFile string
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	dir      string
	serial   int64
}

// NewCA makes a CA whose files live in a temporary directory of t.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ballast test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &CA{cert: cert, key: key, dir: t.TempDir(), serial: 1}
	ca.CertFile = filepath.Join(ca.dir, "ca.pem")
	writePEM(t, ca.CertFile, "CERTIFICATE", der)
	return ca
}

// Issue makes a certificate and key for commonName, valid for serving on
// 127.0.0.0/8 (every address the harness uses) and as a client, and
// returns their file paths.
func (ca *CA) Issue(t testing.TB, commonName string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"localhost"},
	}
	for i := 1; i < 255; i++ {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IPv4(127, 0, 0, byte(i)))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = filepath.Join(ca.dir, fmt.Sprintf("%s-%d.pem", commonName, ca.serial))
	keyFile = filepath.Join(ca.dir, fmt.Sprintf("%s-%d-key.pem", commonName, ca.serial))
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

// ClientConfig is a TLS client configuration that trusts the CA and, when
// certFile is not empty, presents that certificate.
func (ca *CA) ClientConfig(t testing.TB, certFile, keyFile string) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg
}

func writePEM(t testing.TB, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TLS asks StartCluster for https client and peer URLs, with certificates
// from CA: every member serves and dials with one issued for "server",
// requires client certificates when ClientCertAuth is set, and the
// harness's own clients present one issued for "root".
type TLS struct {
	CA             *CA
	ClientCertAuth bool
	// ConfigFile gives the settings in etcd's YAML (client- and
	// peer-transport-security sections) through --config-file, not flags.
	ConfigFile bool
}

// args are a member's TLS flags (or its config file), with a server certificate of its own.
func (o *TLS) args(t testing.TB) []string {
	cert, key := o.CA.Issue(t, "server")
	if o.ConfigFile {
		section := func(name string, clientCertAuth bool) string {
			return fmt.Sprintf("%s:\n  cert-file: %s\n  key-file: %s\n  trusted-ca-file: %s\n  client-cert-auth: %v\n", name, cert, key, o.CA.CertFile, clientCertAuth)
		}
		path := filepath.Join(o.CA.dir, fmt.Sprintf("tls-%d.yaml", o.CA.serial))
		if err := os.WriteFile(path, []byte(section("client-transport-security", o.ClientCertAuth)+section("peer-transport-security", true)), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"--config-file", path}
	}
	args := []string{
		"--cert-file", cert, "--key-file", key, "--trusted-ca-file", o.CA.CertFile,
		"--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", o.CA.CertFile,
		"--peer-client-cert-auth",
	}
	if o.ClientCertAuth {
		args = append(args, "--client-cert-auth")
	}
	return args
}

// client issues the harness's client certificate for a member.
func (o *TLS) client(t testing.TB) ClientFiles {
	cert, key := o.CA.Issue(t, "root")
	return ClientFiles{CA: o.CA.CertFile, Cert: cert, Key: key}
}

// ClientFiles are what a TLS client of a member needs: etcdctl's --cacert,
// --cert and --key.
type ClientFiles struct{ CA, Cert, Key string }
