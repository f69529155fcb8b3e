// Package endpoints reads the flags the ballast commands share with
// etcdctl to reach a cluster: --endpoints and the client TLS flags.
package endpoints

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

// Split returns the comma-separated endpoints of s, trimmed, without empty
// ones.
func Split(s string) []string {
	var eps []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	return eps
}

// TLS holds etcdctl's client TLS flags.
type TLS struct {
	CACert, Cert, Key  string
	InsecureSkipVerify bool
}

// Register adds --cacert, --cert, --key and --insecure-skip-tls-verify.
func (t *TLS) Register(fs *flag.FlagSet) {
	fs.StringVar(&t.CACert, "cacert", "", "verify the servers' certificates with this CA bundle")
	fs.StringVar(&t.Cert, "cert", "", "client certificate file, for servers that require one")
	fs.StringVar(&t.Key, "key", "", "client key file")
	fs.BoolVar(&t.InsecureSkipVerify, "insecure-skip-tls-verify", false, "do not verify the servers' certificates (testing only)")
}

// Config is the client TLS configuration the flags describe: nil when none
// was given, so https:// endpoints then use the system's CAs.
func (t *TLS) Config() (*tls.Config, error) {
	if *t == (TLS{}) {
		return nil, nil
	}
	if (t.Cert == "") != (t.Key == "") {
		return nil, errors.New("--cert and --key must be given together")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CACert != "" {
		pem, err := os.ReadFile(t.CACert)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s holds no PEM certificate", t.CACert)
		}
	}
	if t.Cert != "" {
		c, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("--cert/--key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}
