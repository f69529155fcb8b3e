package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ballast-kv/ballast/cmd/internal/cli"
	"github.com/ballast-kv/ballast/cmd/internal/endpoints"
)

// global holds the flags every workload accepts.
type global struct {
	endpoints   string
	dialTimeout time.Duration
	maxDuration time.Duration
	format      string
	tls         endpoints.TLS
	tlsConfig   *tls.Config // from tls, once validated
}

func (g *global) register(fs *flag.FlagSet) {
	fs.StringVar(&g.endpoints, "endpoints", "127.0.0.1:2379", "comma-separated gRPC `endpoints`")
	fs.DurationVar(&g.dialTimeout, "dial-timeout", 5*time.Second, "time allowed to reach the server before the run starts")
	fs.DurationVar(&g.maxDuration, "max-duration", 60*time.Second, "upper bound on the measured phase (and separately on any preload)")
	cli.FormatFlag(fs, &g.format)
	g.tls.Register(fs)
}

func (g *global) validate() error {
	if err := cli.CheckFormat(g.format); err != nil {
		return err
	}
	if g.maxDuration <= 0 {
		return errors.New("--max-duration must be positive")
	}
	if len(g.endpointList()) == 0 {
		return errors.New("--endpoints is empty")
	}
	var err error
	g.tlsConfig, err = g.tls.Config()
	return err
}

func (g *global) endpointList() []string { return endpoints.Split(g.endpoints) }

// env is what a workload gets to run: parsed global flags, output streams
// and a context cancelled on interrupt.
type env struct {
	global
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
}

// logf prints a progress or diagnostic line to stderr, never to stdout, so
// JSON output stays one clean object.
func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.stderr, "bench: "+format+"\n", args...)
}

// workload is one sub-command.
type workload struct {
	name  string
	args  string // positional arguments, for usage
	short string
	// flags registers the workload's own flags and returns the function
	// that runs it with the positional arguments.
	flags func(fs *flag.FlagSet) func(e *env, args []string) (*Result, error)
}

var workloads = []workload{
	{name: "put", short: "write keys, one Put per request", flags: putFlags},
	{name: "range", args: "KEY [END]", short: "read a key or a range, linearizable or serializable", flags: rangeFlags},
	{name: "txn-put", short: "write keys, several Puts per Txn", flags: txnPutFlags},
	{name: "list", short: "Kubernetes-style paged list of a prefix", flags: listFlags},
	{name: "watch", short: "watch fan-out: many watchers, put-to-event latency", flags: watchFlags},
	{name: "k8s", short: "Kubernetes traffic: creates, guaranteed updates, deletes, gets, leased events, paged lists, watches, compaction", flags: k8sFlags},
}

// errUsage makes Main print the workload's usage and exit with 2.
var errUsage = errors.New("usage")

// invalidError is a bad flag value found by a workload: exit code 2.
type invalidError struct{ err error }

func (e invalidError) Error() string { return e.err.Error() }
func (e invalidError) Unwrap() error { return e.err }

// invalid marks err, if any, as a usage error.
func invalid(err error) error {
	if err == nil {
		return nil
	}
	return invalidError{err}
}

// Main runs `ballast bench` with args being what follows "bench" on the
// command line. It returns the process exit code: 0 on success, 1 when the
// run failed or every operation failed, 2 on a usage error.
func Main(args []string, stdout, stderr io.Writer) int {
	var g global
	top := flag.NewFlagSet("ballast bench", flag.ContinueOnError)
	top.SetOutput(stderr)
	g.register(top)
	top.Usage = func() { usage(stderr, top) }
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := top.Args()
	if len(rest) == 0 {
		usage(stderr, top)
		return 2
	}
	var wl *workload
	for i := range workloads {
		if workloads[i].name == rest[0] {
			wl = &workloads[i]
		}
	}
	if wl == nil {
		fmt.Fprintf(stderr, "ballast bench: unknown workload %q\n\n", rest[0])
		usage(stderr, top)
		return 2
	}

	// Registering the global flags again (they are accepted after the
	// workload name too) resets them to their defaults, so remember what
	// was given and parse it again below.
	given := globalArgs(top)
	fs := flag.NewFlagSet("ballast bench "+wl.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.register(fs)
	run := wl.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ballast bench [global flags] %s [flags] %s\n\n%s.\n\nFlags:\n", wl.name, wl.args, wl.short)
		fs.PrintDefaults()
	}
	if err := fs.Parse(given); err != nil {
		return 2
	}
	pos, err := cli.ParseInterspersed(fs, rest[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := g.validate(); err != nil {
		fmt.Fprintf(stderr, "ballast bench %s: %v\n", wl.name, err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	e := &env{global: g, ctx: ctx, stdout: stdout, stderr: stderr}
	res, err := run(e, pos)
	if err != nil {
		if errors.Is(err, errUsage) {
			fs.Usage()
			return 2
		}
		fmt.Fprintf(stderr, "ballast bench %s: %v\n", wl.name, err)
		if errors.As(err, new(invalidError)) {
			return 2
		}
		if res == nil {
			return 1
		}
	}
	if werr := writeResult(stdout, res, g.format); werr != nil {
		fmt.Fprintf(stderr, "ballast bench %s: %v\n", wl.name, werr)
		return 1
	}
	if err != nil || (res.Ops == 0 && res.Errors > 0) {
		return 1
	}
	return 0
}

// globalArgs renders the flags set on top as arguments.
func globalArgs(top *flag.FlagSet) []string {
	var out []string
	top.Visit(func(f *flag.Flag) { out = append(out, "-"+f.Name+"="+f.Value.String()) })
	return out
}

func usage(w io.Writer, top *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: ballast bench [global flags] WORKLOAD [flags] [args]\n\n")
	fmt.Fprintf(w, "Load generator for etcd v3 API servers (Ballast or etcd), over the etcd Go client.\n\nWorkloads:\n")
	for _, wl := range workloads {
		fmt.Fprintf(w, "  %-8s %s\n", wl.name, wl.short)
	}
	fmt.Fprintf(w, "\nGlobal flags (also accepted after the workload):\n")
	top.PrintDefaults()
	fmt.Fprintf(w, "\nRun 'ballast bench WORKLOAD -h' for the workload's flags.\n")
}

// newClients dials conns connections and probes the first one, so a wrong
// endpoint fails fast instead of as a run full of errors.
func (e *env) newClients(conns int) ([]*clientv3.Client, func(), error) {
	var cs []*clientv3.Client
	closeAll := func() {
		for _, c := range cs {
			c.Close()
		}
	}
	for range conns {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   e.endpointList(),
			DialTimeout: e.dialTimeout,
			Logger:      zap.NewNop(),
			TLS:         e.tlsConfig,
			// A list page or a preload Txn can be large; do not let the
			// client's defaults, rather than the server, be the limit.
			MaxCallSendMsgSize: 64 << 20,
			MaxCallRecvMsgSize: 1 << 30,
		})
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("connect to %s: %w", e.endpoints, err)
		}
		cs = append(cs, c)
	}
	timeout := e.dialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(e.ctx, timeout)
	defer cancel()
	if _, err := cs[0].Get(ctx, "ballast-bench-probe", clientv3.WithSerializable(), clientv3.WithCountOnly()); err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("probe %s: %w", e.endpoints, err)
	}
	return cs, closeAll, nil
}

// spread returns n client slots over the given connections, round robin,
// as etcd's benchmark does with --clients over --conns.
func spread(conns []*clientv3.Client, n int) []*clientv3.Client {
	out := make([]*clientv3.Client, n)
	for i := range out {
		out[i] = conns[i%len(conns)]
	}
	return out
}
