package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/ballast-kv/ballast/sqlbridge"
)

// Config is a member's configuration, filled by cmd/ballast from etcd-named
// flags. DefaultConfig matches `etcd` run with no flags.
type Config struct {
	Name                        string
	DataDir                     string
	ListenClientURLs            []string
	AdvertiseClientURLs         []string
	ListenPeerURLs              []string
	InitialAdvertisePeerURLs    []string
	InitialCluster              string // name=url,name=url
	InitialClusterState         string // new | existing
	InitialClusterToken         string
	HeartbeatInterval           time.Duration
	ElectionTimeout             time.Duration
	SnapshotCount               uint64
	MaxRequestBytes             int
	MaxTxnOps                   int
	QuotaBackendBytes           int64
	AutoCompactionMode          string // periodic | revision
	AutoCompactionRetention     string
	WatchProgressNotifyInterval time.Duration
	EnablePprof                 bool
	// ListenMetricsURLs serve /metrics and the health endpoints on ports
	// of their own (https ones with the client certificate).
	ListenMetricsURLs []string
	// Regions (docs/regions.md). Region and Zone label this member.
	// GossipListenAddr turns gossip on, and with it automatic placement:
	// Join lists gossip seeds; a member with Join and no InitialCluster
	// asks the running cluster to admit it. Voters is the voter target (0:
	// 3, or 5 with five or more members over three or more regions);
	// LeaderRegion is where leadership should be; a voter down longer than
	// StabilizationWindow is replaced.
	Region, Zone        string
	GossipListenAddr    string
	Join                []string
	GossipKeyFile       string
	Voters              int
	LeaderRegion        string
	StabilizationWindow time.Duration
	// SQLMirror is a postgres:// URL the leader mirrors the revision log
	// into, in kine's table layout (docs/sql.md); SQLMirrorDialect is
	// postgres or yugabyte.
	SQLMirror        string
	SQLMirrorDialect string
	// CorruptCheckTime is how often the leader compares every member's
	// HashKV; 0 turns the check off.
	CorruptCheckTime time.Duration
	// AuthToken is etcd's --auth-token: "simple" or
	// "jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...".
	AuthToken string
	// AuthTokenTTL is how long an unused simple token lives.
	AuthTokenTTL time.Duration
	// BcryptCost hashes passwords (etcd's --bcrypt-cost).
	BcryptCost int
	// ClientTLS serves the https:// client URLs; PeerTLS secures every
	// peer connection, both ways (then every peer URL is https://).
	ClientTLS TLSFiles
	PeerTLS   TLSFiles
	Logger    *slog.Logger
}

// DefaultConfig returns etcd's defaults.
func DefaultConfig() Config {
	return Config{
		Name:                        "default",
		ListenClientURLs:            []string{"http://localhost:2379"},
		AdvertiseClientURLs:         []string{"http://localhost:2379"},
		ListenPeerURLs:              []string{"http://localhost:2380"},
		InitialAdvertisePeerURLs:    []string{"http://localhost:2380"},
		InitialClusterState:         "new",
		InitialClusterToken:         "etcd-cluster",
		HeartbeatInterval:           100 * time.Millisecond,
		ElectionTimeout:             time.Second,
		SnapshotCount:               10000,
		MaxRequestBytes:             1572864,
		MaxTxnOps:                   128,
		QuotaBackendBytes:           2 << 30,
		AutoCompactionMode:          "periodic",
		WatchProgressNotifyInterval: 10 * time.Minute,
		CorruptCheckTime:            5 * time.Minute, // etcd: off
		StabilizationWindow:         30 * time.Second,
		AuthToken:                   "simple",
		AuthTokenTTL:                defaultTokenTTL,
		BcryptCost:                  bcrypt.DefaultCost,
	}
}

// peer is one member of --initial-cluster.
type peer struct {
	name string
	urls []string
}

// parseInitialCluster parses etcd's name=url[,name=url...] form.
func parseInitialCluster(s string) ([]peer, error) {
	var peers []peer
	index := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" || u == "" {
			return nil, fmt.Errorf("--initial-cluster: %q is not name=url", part)
		}
		if _, err := hostPort(u); err != nil {
			return nil, fmt.Errorf("--initial-cluster: %w", err)
		}
		if i, ok := index[name]; ok {
			peers[i].urls = append(peers[i].urls, u)
			continue
		}
		index[name] = len(peers)
		peers = append(peers, peer{name: name, urls: []string{u}})
	}
	return peers, nil
}

// hostPort extracts host:port from an http or https URL.
func hostPort(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("invalid URL %q: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("URL %q: scheme must be http or https", raw)
	}
	if u.Port() == "" {
		return "", fmt.Errorf("URL %q has no port", raw)
	}
	return u.Host, nil
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("--name must not be empty")
	case len(c.ListenClientURLs) == 0:
		return errors.New("--listen-client-urls must not be empty")
	case len(c.ListenPeerURLs) == 0:
		return errors.New("--listen-peer-urls must not be empty")
	case c.InitialClusterState != "new" && c.InitialClusterState != "existing":
		return fmt.Errorf("--initial-cluster-state must be new or existing, not %q", c.InitialClusterState)
	case c.MaxRequestBytes <= 0:
		return errors.New("--max-request-bytes must be positive")
	case c.MaxTxnOps <= 0:
		return errors.New("--max-txn-ops must be positive")
	case c.HeartbeatInterval <= 0 || c.ElectionTimeout < 5*c.HeartbeatInterval:
		return fmt.Errorf("--election-timeout (%v) must be at least 5 times --heartbeat-interval (%v)", c.ElectionTimeout, c.HeartbeatInterval)
	case c.AutoCompactionMode != "periodic" && c.AutoCompactionMode != "revision":
		return fmt.Errorf("--auto-compaction-mode must be periodic or revision, not %q", c.AutoCompactionMode)
	case c.BcryptCost < bcrypt.MinCost || c.BcryptCost > bcrypt.MaxCost:
		return fmt.Errorf("--bcrypt-cost must be between %d and %d, not %d", bcrypt.MinCost, bcrypt.MaxCost, c.BcryptCost)
	case len(c.Join) > 0 && c.GossipListenAddr == "":
		return errors.New("--join needs --gossip-listen-addr")
	case c.Voters < 0 || (c.Voters > 0 && c.Voters%2 == 0):
		return fmt.Errorf("--voters must be an odd number (or 0 for the default), not %d", c.Voters)
	case c.StabilizationWindow <= 0:
		return fmt.Errorf("--stabilization-window must be positive (set to %v)", c.StabilizationWindow)
	case c.CorruptCheckTime < 0:
		return fmt.Errorf("--corrupt-check-time must not be negative (set to %v)", c.CorruptCheckTime)
	}
	for _, u := range slices.Concat(c.ListenClientURLs, c.ListenPeerURLs, c.AdvertiseClientURLs, c.ListenMetricsURLs) {
		if _, err := hostPort(u); err != nil {
			return err
		}
	}
	if _, err := sqlbridge.ParseDialect(c.SQLMirrorDialect); err != nil {
		return fmt.Errorf("--sql-mirror-dialect: %w", err)
	}
	if c.SQLMirror != "" {
		if _, err := pgx.ParseConfig(c.SQLMirror); err != nil {
			return fmt.Errorf("--sql-mirror: %w", err)
		}
	}
	if _, err := c.autoCompaction(); err != nil {
		return err
	}
	if err := c.ClientTLS.validate(""); err != nil {
		return err
	}
	if err := c.PeerTLS.validate("peer-"); err != nil {
		return err
	}
	for flag, urls := range map[string][]string{"--listen-client-urls": c.ListenClientURLs, "--listen-metrics-urls": c.ListenMetricsURLs} {
		for _, u := range urls {
			if isHTTPS(u) && !c.ClientTLS.Enabled() {
				return fmt.Errorf("%s %s: an https URL needs --cert-file and --key-file", flag, u)
			}
		}
	}
	peers, err := c.validateMembership()
	if err != nil {
		return err
	}
	// Peer TLS is all or nothing: one dialer reaches every member.
	peerURLs := slices.Concat(c.ListenPeerURLs, c.InitialAdvertisePeerURLs)
	for _, p := range peers {
		peerURLs = append(peerURLs, p.urls...)
	}
	for _, u := range peerURLs {
		if isHTTPS(u) != c.PeerTLS.Enabled() {
			if c.PeerTLS.Enabled() {
				return fmt.Errorf("peer URL %s: with --peer-cert-file every peer URL must be https", u)
			}
			return fmt.Errorf("peer URL %s: an https peer URL needs --peer-cert-file and --peer-key-file", u)
		}
	}
	if c.InitialClusterState == "existing" && len(peers) < 2 {
		return errors.New("--initial-cluster-state=existing: --initial-cluster must list at least one running member besides this one")
	}
	return nil
}

// validateMembership checks --name, --initial-cluster and
// --initial-advertise-peer-urls against each other.
func (c *Config) validateMembership() ([]peer, error) {
	if c.Name == "" {
		return nil, errors.New("--name must not be empty")
	}
	peers, err := c.peers()
	if err != nil {
		return nil, err
	}
	var own *peer
	for i := range peers {
		if peers[i].name == c.Name {
			own = &peers[i]
		}
	}
	if own == nil {
		return nil, fmt.Errorf("--initial-cluster has no member named %q (--name)", c.Name)
	}
	if !sameURLs(own.urls, c.InitialAdvertisePeerURLs) {
		return nil, fmt.Errorf("--initial-cluster has %s=%s but --initial-advertise-peer-urls is %s: they must match", c.Name, strings.Join(own.urls, ","), strings.Join(c.InitialAdvertisePeerURLs, ","))
	}
	for _, u := range c.InitialAdvertisePeerURLs {
		if _, err := hostPort(u); err != nil {
			return nil, err
		}
	}
	return peers, nil
}

// dataDir is --data-dir, by default ${name}.ballast (etcd's is
// ${name}.etcd).
func (c *Config) dataDir() string {
	if c.DataDir == "" {
		return c.Name + ".ballast"
	}
	return c.DataDir
}

func isHTTPS(u string) bool { return strings.HasPrefix(u, "https://") }

// peerScheme is the scheme of every peer URL of this cluster.
func (c *Config) peerScheme() string {
	if c.PeerTLS.Enabled() {
		return "https"
	}
	return "http"
}

func sameURLs(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

func (c *Config) peers() ([]peer, error) {
	ic := c.InitialCluster
	if ic == "" {
		parts := make([]string, len(c.InitialAdvertisePeerURLs))
		for i, u := range c.InitialAdvertisePeerURLs {
			parts[i] = c.Name + "=" + u
		}
		ic = strings.Join(parts, ",")
	}
	return parseInitialCluster(ic)
}

// autoCompaction is the retention: a duration (periodic) or a revision
// count (revision); zero disables it, as in etcd.
func (c *Config) autoCompaction() (any, error) {
	r := c.AutoCompactionRetention
	if r == "" || r == "0" {
		return nil, nil
	}
	if c.AutoCompactionMode == "revision" {
		var n int64
		if _, err := fmt.Sscan(r, &n); err != nil || n < 0 {
			return nil, fmt.Errorf("--auto-compaction-retention %q: want a revision count", r)
		}
		return n, nil
	}
	var hours int64
	if _, err := fmt.Sscan(r, &hours); err == nil && fmt.Sprint(hours) == r {
		return time.Duration(hours) * time.Hour, nil
	}
	d, err := time.ParseDuration(r)
	if err != nil || d < 0 {
		return nil, fmt.Errorf("--auto-compaction-retention %q: want hours or a duration", r)
	}
	return d, nil
}
