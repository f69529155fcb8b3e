package status

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/connectivity"

	"github.com/ballast-kv/ballast/cmd/internal/cli"
	"github.com/ballast-kv/ballast/cmd/internal/endpoints"
)

// config holds the command's flags.
type config struct {
	endpoints      string
	dialTimeout    time.Duration
	commandTimeout time.Duration
	format         string
	tls            endpoints.TLS
	tlsConfig      *tls.Config // from tls, once validated
}

func (c *config) register(fs *flag.FlagSet) {
	fs.StringVar(&c.endpoints, "endpoints", "127.0.0.1:2379", "comma-separated gRPC `endpoints` (host:port or http://host:port) to ask for the member list")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", 5*time.Second, "time allowed to connect to an endpoint or member")
	fs.DurationVar(&c.commandTimeout, "command-timeout", 5*time.Second, "time allowed for each request once connected")
	cli.FormatFlag(fs, &c.format)
	c.tls.Register(fs)
}

func (c *config) validate() error {
	if err := cli.CheckFormat(c.format); err != nil {
		return err
	}
	if c.dialTimeout <= 0 {
		return errors.New("--dial-timeout must be positive")
	}
	if c.commandTimeout <= 0 {
		return errors.New("--command-timeout must be positive")
	}
	eps := c.endpointList()
	if len(eps) == 0 {
		return errors.New("--endpoints is empty")
	}
	var err error
	c.tlsConfig, err = c.tls.Config()
	return err
}

func (c *config) endpointList() []string { return endpoints.Split(c.endpoints) }

// Main runs `ballast status` with args being what follows "status" on the
// command line. It returns the process exit status: 0 when every member
// answered and there is a leader, 1 otherwise (the table is still printed
// when the member list could be read), 2 on a usage error.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return run(ctx, args, stdout, stderr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c config
	fs := flag.NewFlagSet("ballast status", flag.ContinueOnError)
	// The flag package's own messages are reworded below; only -h prints.
	fs.SetOutput(io.Discard)
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stderr, fs)
			return 0
		}
		return cli.UsageError(stderr, "status", cli.RewordFlagError(err))
	}
	if fs.NArg() > 0 {
		return cli.UsageError(stderr, "status", fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if err := c.validate(); err != nil {
		return cli.UsageError(stderr, "status", err)
	}

	r, err := collect(ctx, &c)
	if err != nil {
		fmt.Fprintf(stderr, "ballast status: %v\n", err)
		return 1
	}
	write := r.WriteTable
	if c.format == "json" {
		write = r.WriteJSON
	}
	if err := write(stdout); err != nil {
		fmt.Fprintf(stderr, "ballast status: %v\n", err)
		return 1
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "ballast status: interrupted")
		return 1
	}
	if !r.Healthy() {
		return 1
	}
	return 0
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: ballast status [flags]\n\n")
	fmt.Fprintf(w, "Shows every member of an etcd v3 API cluster (Ballast or etcd): role, Raft term and\n"+
		"indexes, lag behind the leader, database size and errors; for a Ballast cluster with\n"+
		"regions also each member's region and zone, and what placement will change next.\n"+
		"Exit status: 0 when every member answered and there is a leader, 1 otherwise, 2 on a\n"+
		"usage error.\n\nFlags:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// collect reads the member list from the first endpoint that answers, then
// asks every started member for its status, all at once.
func collect(ctx context.Context, c *config) (*Report, error) {
	ml, err := memberList(ctx, c)
	if err != nil {
		return nil, err
	}
	answers := make(map[uint64]answer, len(ml.Members))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range ml.Members {
		if len(m.ClientURLs) == 0 {
			continue // added but never started
		}
		wg.Go(func() {
			a := askStatus(ctx, c, m.ClientURLs[0])
			mu.Lock()
			answers[m.ID] = a
			mu.Unlock()
		})
	}
	wg.Wait()
	r := build(ml, answers)
	r.addPlacement(askPlacement(ctx, c, r))
	return r, nil
}

// memberList asks the endpoints in order for the member list and returns the
// first answer. The read is serializable: a member answers from its own
// state, so the list is available even when the cluster has no quorum,
// which is when an operator needs it most.
func memberList(ctx context.Context, c *config) (*clientv3.MemberListResponse, error) {
	var errs []string
	for _, ep := range c.endpointList() {
		ml, err := memberListFrom(ctx, c, ep)
		if err == nil {
			return ml, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, fmt.Sprintf("%s: %v", ep, err))
	}
	return nil, fmt.Errorf("cannot read the member list: %s", strings.Join(errs, "; "))
}

func memberListFrom(ctx context.Context, c *config, ep string) (*clientv3.MemberListResponse, error) {
	cli, err := connect(ctx, ep, c.dialTimeout, c.tlsConfig)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, c.commandTimeout)
	defer cancel()
	ml, err := cli.MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		return nil, describe(ctx, err, c.commandTimeout)
	}
	return ml, nil
}

// askStatus asks the member serving url for its status.
func askStatus(ctx context.Context, c *config, url string) answer {
	cli, err := connect(ctx, url, c.dialTimeout, c.tlsConfig)
	if err != nil {
		return answer{err: err}
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, c.commandTimeout)
	defer cancel()
	// On the connection just made ready: cli.Status would dial another.
	m := clientv3.NewMaintenanceFromMaintenanceClient(pb.NewMaintenanceClient(cli.ActiveConnection()), cli)
	resp, err := m.Status(ctx, url)
	if err != nil {
		return answer{err: describe(ctx, err, c.commandTimeout)}
	}
	return answer{resp: resp}
}

// connect returns a client of ep alone once its connection is ready. The
// client connects in the background and its requests wait for the
// connection, so without this wait --dial-timeout would bound nothing and a
// member that is down would look like one that is slow to answer.
func connect(ctx context.Context, ep string, timeout time.Duration, tlsCfg *tls.Config) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{ep},
		DialTimeout: timeout,
		Logger:      zap.NewNop(),
		TLS:         tlsCfg,
	})
	if err != nil {
		return nil, fmt.Errorf("unreachable: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn := cli.ActiveConnection()
	conn.Connect()
	for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
		if !conn.WaitForStateChange(dctx, st) {
			cli.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("unreachable: no connection within %v", timeout)
		}
	}
	return cli, nil
}

// describe words the error of a request made under a timeout for the
// operator.
func describe(ctx context.Context, err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return fmt.Errorf("unresponsive: no answer within %v", timeout)
	case errors.Is(err, context.Canceled):
		return err
	default:
		return fmt.Errorf("request failed: %s", rpctypes.ErrorDesc(err))
	}
}
