// Command ballast runs a Ballast member, an etcd v3-compatible key-value
// server, or one of its operator sub-commands.
//
//	ballast [etcd flags]     run a member (no flags: a single-node cluster)
//	ballast bench ...        the load generator behind docs/benchmarks.md
//	ballast status ...       one row per member: role, Raft indexes, lag, errors
//	ballast snapshot ...     status and restore of `etcdctl snapshot save` files
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ballast-kv/ballast/cmd/internal/bench"
	"github.com/ballast-kv/ballast/cmd/internal/cli"
	"github.com/ballast-kv/ballast/cmd/internal/heapfloor"
	"github.com/ballast-kv/ballast/cmd/internal/migrate"
	"github.com/ballast-kv/ballast/cmd/internal/snapshot"
	"github.com/ballast-kv/ballast/cmd/internal/status"
	"github.com/ballast-kv/ballast/server"
	"github.com/ballast-kv/ballast/store"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "bench" {
		os.Exit(bench.Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "status" {
		os.Exit(status.Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "migrate" {
		os.Exit(migrate.Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "snapshot" {
		os.Exit(snapshot.Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	cfg, heapFloor, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ballast:", err)
		os.Exit(2)
	}
	if os.Getenv("GOGC") == "" && heapFloor > 0 {
		// An operator's GOGC is their choice; without one, the floor, for
		// the life of the process.
		heapfloor.Start(heapFloor, 100)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	s, err := server.New(cfg)
	if store.IsCorruption(err) {
		store.Fatal(cfg.Logger, "start", err) // exits with the remedy
	}
	if err != nil {
		cfg.Logger.Error("cannot start", "err", err)
		os.Exit(1)
	}
	if err := s.Run(ctx); err != nil {
		cfg.Logger.Error("stopped with error", "err", err)
		os.Exit(1)
	}
	cfg.Logger.Info("stopped")
}

// unsupported are etcd flags whose concept Ballast does not have yet; using
// one is an error that names it, never silently ignored.
var unsupported = []string{
	"discovery", "discovery-srv", "proxy",
	"max-snapshots", "max-wals",
}

// unsupportedBools are etcd's boolean flags among them: they may be given
// without a value.
var unsupportedBools = []string{
	"auto-tls", "peer-auto-tls", "enable-v2", "force-new-cluster", "strict-reconfig-check",
	"experimental-initial-corrupt-check", "unsafe-no-fsync",
}

// defaultHeapFloor is the heap goal below which the garbage collector
// does not run (cmd/internal/heapfloor).
const defaultHeapFloor = 32 << 20

// parseFlags returns the server's configuration and the GC heap floor.
func parseFlags(args []string, errOut io.Writer) (cfg server.Config, heapFloor uint64, err error) {
	cfg = server.DefaultConfig()
	cfg.ListenClientURLs = []string{"http://127.0.0.1:2379"}
	cfg.AdvertiseClientURLs = []string{"http://127.0.0.1:2379"}
	cfg.ListenPeerURLs = []string{"http://127.0.0.1:2380"}
	cfg.InitialAdvertisePeerURLs = []string{"http://127.0.0.1:2380"}

	fs := flag.NewFlagSet("ballast", flag.ContinueOnError)
	fs.SetOutput(errOut)
	urls := func(name string, dst *[]string, usage string) {
		fs.Func(name, usage+fmt.Sprintf(" (default %q)", strings.Join(*dst, ",")), func(v string) error {
			*dst = strings.Split(v, ",")
			return nil
		})
	}
	fs.StringVar(&cfg.Name, "name", cfg.Name, "human-readable name for this member")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "path to the data directory (default ${name}.ballast)")
	urls("listen-client-urls", &cfg.ListenClientURLs, "URLs to listen on for client traffic")
	urls("advertise-client-urls", &cfg.AdvertiseClientURLs, "client URLs to advertise to the cluster")
	urls("listen-peer-urls", &cfg.ListenPeerURLs, "URLs to listen on for peer traffic")
	urls("listen-metrics-urls", &cfg.ListenMetricsURLs, "URLs to serve /metrics and the health endpoints on, besides the client URLs")
	urls("initial-advertise-peer-urls", &cfg.InitialAdvertisePeerURLs, "peer URLs to advertise to the cluster")
	fs.StringVar(&cfg.InitialCluster, "initial-cluster", "", "initial cluster configuration, name=url,... (default ${name}=${initial-advertise-peer-urls})")
	fs.StringVar(&cfg.InitialClusterState, "initial-cluster-state", cfg.InitialClusterState, "new or existing")
	fs.StringVar(&cfg.InitialClusterToken, "initial-cluster-token", cfg.InitialClusterToken, "initial cluster token")
	var heartbeatMS, electionMS uint
	fs.UintVar(&heartbeatMS, "heartbeat-interval", uint(cfg.HeartbeatInterval.Milliseconds()), "time (in milliseconds) of a heartbeat interval")
	fs.UintVar(&electionMS, "election-timeout", uint(cfg.ElectionTimeout.Milliseconds()), "time (in milliseconds) for an election to timeout")
	fs.Uint64Var(&cfg.SnapshotCount, "snapshot-count", cfg.SnapshotCount, "number of committed transactions to trigger a snapshot")
	fs.IntVar(&cfg.MaxRequestBytes, "max-request-bytes", cfg.MaxRequestBytes, "maximum client request size in bytes the server will accept")
	fs.IntVar(&cfg.MaxTxnOps, "max-txn-ops", cfg.MaxTxnOps, "maximum number of operations permitted in a transaction")
	fs.Int64Var(&cfg.QuotaBackendBytes, "quota-backend-bytes", cfg.QuotaBackendBytes, "raise alarms when backend size exceeds the given quota")
	fs.StringVar(&cfg.AutoCompactionMode, "auto-compaction-mode", cfg.AutoCompactionMode, "periodic or revision")
	fs.StringVar(&cfg.AutoCompactionRetention, "auto-compaction-retention", "0", "auto compaction retention: hours or a duration (periodic), revisions (revision); 0 disables")
	fs.DurationVar(&cfg.WatchProgressNotifyInterval, "watch-progress-notify-interval", cfg.WatchProgressNotifyInterval, "duration of periodic watch progress notifications")
	fs.DurationVar(&cfg.WatchProgressNotifyInterval, "experimental-watch-progress-notify-interval", cfg.WatchProgressNotifyInterval, "deprecated alias of --watch-progress-notify-interval")
	fs.StringVar(&cfg.Region, "region", "", "region this member runs in (placement spreads voters over regions)")
	fs.StringVar(&cfg.Zone, "zone", "", "zone within the region this member runs in")
	fs.StringVar(&cfg.GossipListenAddr, "gossip-listen-addr", "", "host:port for gossip (TCP and UDP); turns on gossip membership and automatic placement")
	fs.Func("join", "comma-separated gossip addresses of running members; without --initial-cluster the member asks to join their cluster", func(v string) error {
		cfg.Join = strings.Split(v, ",")
		return nil
	})
	fs.StringVar(&cfg.GossipKeyFile, "gossip-key-file", "", "file holding a 16, 24 or 32-byte key (raw or base64) that encrypts gossip")
	fs.IntVar(&cfg.Voters, "voters", 0, "number of voters placement keeps (odd; 0: 3, or 5 with five or more members over three or more regions)")
	fs.StringVar(&cfg.LeaderRegion, "leader-region", "", "region placement moves leadership to when a healthy voter is there")
	fs.DurationVar(&cfg.StabilizationWindow, "stabilization-window", cfg.StabilizationWindow, "how long a voter must be unreachable before placement replaces it")
	fs.StringVar(&cfg.SQLMirror, "sql-mirror", "", "postgres://... URL the leader mirrors every revision into, in kine's table layout (docs/sql.md)")
	fs.StringVar(&cfg.SQLMirrorDialect, "sql-mirror-dialect", "postgres", "SQL mirror dialect: postgres or yugabyte")
	fs.DurationVar(&cfg.CorruptCheckTime, "corrupt-check-time", cfg.CorruptCheckTime, "duration of time between cluster corruption check passes; 0 disables")
	fs.DurationVar(&cfg.CorruptCheckTime, "experimental-corrupt-check-time", cfg.CorruptCheckTime, "deprecated alias of --corrupt-check-time")
	fs.StringVar(&cfg.AuthToken, "auth-token", cfg.AuthToken, "auth token type: simple, or jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...")
	tokenTTL := fs.Uint("auth-token-ttl", uint(cfg.AuthTokenTTL/time.Second), "time (in seconds) of the auth-token-ttl")
	fs.IntVar(&cfg.BcryptCost, "bcrypt-cost", cfg.BcryptCost, "bcrypt cost for hashing auth passwords, 4 to 31")
	fs.Uint64Var(&heapFloor, "gc-heap-floor-bytes", defaultHeapFloor, "heap size below which the Go garbage collector does not run (fewer collections under load for a small heap); 0 leaves it to GOGC, as does setting GOGC")
	fs.BoolVar(&cfg.EnablePprof, "enable-pprof", false, "serve runtime profiling data over HTTP at /debug/pprof/ on the client port")
	tlsFlags := func(prefix, what string, f *server.TLSFiles) {
		fs.StringVar(&f.CertFile, prefix+"cert-file", "", "path to the "+what+" server TLS certificate file")
		fs.StringVar(&f.KeyFile, prefix+"key-file", "", "path to the "+what+" server TLS key file")
		fs.StringVar(&f.TrustedCAFile, prefix+"trusted-ca-file", "", "path to the "+what+" TLS trusted CA file")
		fs.BoolVar(&f.ClientCertAuth, prefix+"client-cert-auth", false, "require "+what+" clients to present a certificate signed by the trusted CA")
	}
	tlsFlags("", "client", &cfg.ClientTLS)
	tlsFlags("peer-", "peer", &cfg.PeerTLS)
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	configFile := fs.String("config-file", "", "path to an etcd-style YAML configuration file; flags are then ignored, as in etcd")
	for _, name := range unsupported {
		fs.Func(name, "not supported by Ballast yet", func(string) error {
			return fmt.Errorf("etcd flag --%s is not supported by Ballast yet", name)
		})
	}
	for _, name := range unsupportedBools {
		fs.BoolFunc(name, "not supported by Ballast yet", func(string) error {
			return fmt.Errorf("etcd flag --%s is not supported by Ballast yet", name)
		})
	}
	if err := fs.Parse(args); err != nil {
		return cfg, 0, cli.RewordFlagError(err)
	}
	if fs.NArg() > 0 {
		return cfg, 0, fmt.Errorf("unexpected argument %q (sub-commands: bench, status, snapshot)", fs.Arg(0))
	}
	if *configFile != "" {
		if err := applyConfigFile(fs, *configFile); err != nil {
			return cfg, 0, err
		}
	}
	cfg.AuthTokenTTL = time.Duration(*tokenTTL) * time.Second
	cfg.HeartbeatInterval = msDuration(heartbeatMS)
	cfg.ElectionTimeout = msDuration(electionMS)
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	return cfg, heapFloor, nil
}
