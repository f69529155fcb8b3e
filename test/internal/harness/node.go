package harness

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Options tune how a node is started. The zero value is usable.
type Options struct {
	// Name is the member name; StartCluster appends the member index. Default "n".
	Name string
	// Args are extra command-line flags appended after the harness's own.
	Args []string
	// Env is added to the inherited environment.
	Env []string
	// ReadyTimeout bounds the wait for the node to serve a linearizable read.
	// Default 60s.
	ReadyTimeout time.Duration
	// Proxied gives member i (1-based) its own loopback IP, 127.0.0.(10+i),
	// for its client and peer listeners, and puts a Proxy in front of its
	// peer listener: the member advertises the proxy's URL
	// (--initial-advertise-peer-urls and --initial-cluster) and listens
	// behind it (--listen-peer-urls), so every peer connection to it can be
	// cut, delayed or broken by the connecting member's IP (see Partition).
	Proxied bool
	// PrepareDataDir, when set, is called with each member's data directory
	// path before the member first starts (the directory does not exist
	// yet), to put it on a filesystem of the test's choosing.
	PrepareDataDir func(dir string) error
	// BeforeFirstStart, when set, is called by StartCluster for each member
	// once every member's URLs are known, just before the member first
	// starts: to restore a snapshot into its data directory, say.
	BeforeFirstStart func(n *Node, initialCluster string) error
	// TLS, when set, gives every member https client and peer URLs.
	TLS *TLS
}

func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = "n"
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	return o
}

// Node is one server process. Its methods are not safe for concurrent use.
type Node struct {
	Name    string
	Bin     string
	DataDir string
	// IP is the loopback address the member listens on: 127.0.0.1, or
	// 127.0.0.(10+i) for member i of a proxied cluster.
	IP        string
	ClientURL string // http://IP:port, serving gRPC
	// PeerURL is the peer URL the member advertises and the other members
	// dial: the URL of Proxy in a proxied cluster, else ListenPeerURL.
	PeerURL string
	// ListenPeerURL is the URL the process itself listens on for peers.
	ListenPeerURL string
	// Proxy sits in front of the peer listener in a proxied cluster; nil
	// otherwise.
	Proxy *Proxy
	// TLSConfig is what the harness's clients use on https URLs: it trusts
	// the test CA and presents a client certificate. Nil without TLS.
	TLSConfig *tls.Config
	// TLSFiles are the same as files, for etcdctl; empty without TLS.
	TLSFiles ClientFiles
	LogPath  string // stdout and stderr of every run of the process

	gossipAddr string // see GossipAddr

	t       testing.TB
	index   int // 1-based member number, which fixes IP in a proxied cluster
	args    []string
	extra   []string // Options.Args
	env     []string
	timeout time.Duration
	runs    int

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	werr   error         // cmd.Wait's result, valid after exited is closed
}

// Start starts a single-member cluster of bin on free 127.0.0.1 ports with a
// data directory in t.TempDir(), and waits until it serves a linearizable
// read. The process is killed when the test ends; if the test failed, its
// log is printed.
func Start(t testing.TB, bin string, opts Options) *Node {
	t.Helper()
	nodes := StartCluster(t, bin, 1, opts)
	return nodes[0]
}

// StartCluster starts size members of one cluster and waits until every one
// serves a linearizable read. Member names are opts.Name plus 1..size.
func StartCluster(t testing.TB, bin string, size int, opts Options) []*Node {
	t.Helper()
	opts = opts.withDefaults()
	nodes := make([]*Node, size)
	for i := range nodes {
		name := opts.Name
		if size > 1 {
			name = fmt.Sprintf("%s%d", opts.Name, i+1)
		}
		nodes[i] = newNode(t, bin, name, i+1, opts)
	}
	initial := InitialCluster(nodes)
	for _, n := range nodes {
		if opts.BeforeFirstStart != nil {
			if err := opts.BeforeFirstStart(n, initial); err != nil {
				t.Fatalf("harness: %s: before the first start: %v", n.Name, err)
			}
		}
		n.args = n.flags(initial, "new")
		n.spawn()
	}
	for _, n := range nodes {
		n.WaitReady()
	}
	return nodes
}

// newNode prepares member number index (1-based): its IP, ports, proxy, data
// directory and log file, without starting it. The node is killed, and its
// proxy closed, when the test ends.
func newNode(t testing.TB, bin, name string, index int, opts Options) *Node {
	t.Helper()
	n := &Node{
		Name:    name,
		Bin:     bin,
		DataDir: filepath.Join(t.TempDir(), name+".data"),
		IP:      "127.0.0.1",
		t:       t,
		index:   index,
		extra:   opts.Args,
		env:     opts.Env,
		timeout: opts.ReadyTimeout,
	}
	if opts.Proxied {
		n.IP = memberIP(t, index)
	}
	scheme := "http://"
	if opts.TLS != nil {
		scheme = "https://"
		n.extra = append(opts.TLS.args(t), n.extra...)
		n.TLSFiles = opts.TLS.client(t)
		n.TLSConfig = opts.TLS.CA.ClientConfig(t, n.TLSFiles.Cert, n.TLSFiles.Key)
	}
	n.ClientURL = scheme + FreeAddr(t, n.IP)
	n.ListenPeerURL = scheme + FreeAddr(t, n.IP)
	n.PeerURL = n.ListenPeerURL
	if opts.Proxied {
		p, err := NewProxy(net.JoinHostPort(n.IP, "0"), strings.TrimPrefix(n.ListenPeerURL, scheme))
		if err != nil {
			t.Fatalf("harness: %s: %v", name, err)
		}
		t.Cleanup(func() { _ = p.Close() })
		n.Proxy = p
		n.PeerURL = scheme + p.Addr()
	}
	if opts.PrepareDataDir != nil {
		if err := opts.PrepareDataDir(n.DataDir); err != nil {
			t.Fatalf("harness: %s: prepare data dir: %v", name, err)
		}
	}
	n.LogPath = filepath.Join(t.TempDir(), name+".log")
	t.Cleanup(n.cleanup) // runs before the proxy's Close: cleanups run last first
	return n
}

// memberIP returns the loopback IP of member index in a proxied cluster.
// Linux routes all of 127.0.0.0/8 to the loopback interface, so these
// addresses need no setup.
func memberIP(t testing.TB, index int) string {
	t.Helper()
	if index < 1 || index > 240 {
		t.Fatalf("harness: member number %d out of range 1..240 for a proxied cluster", index)
	}
	return fmt.Sprintf("127.0.0.%d", 10+index)
}

// flags returns the command line of the node: the harness's flags, then
// Options.Args.
func (n *Node) flags(initialCluster, state string) []string {
	return append(n.identityFlags("--initial-cluster", initialCluster, "--initial-cluster-state", state), n.extra...)
}

// identityFlags are the node's name, data dir and URLs, then more.
func (n *Node) identityFlags(more ...string) []string {
	return append([]string{
		"--name", n.Name,
		"--data-dir", n.DataDir,
		"--listen-client-urls", n.ClientURL,
		"--advertise-client-urls", n.ClientURL,
		"--listen-peer-urls", n.ListenPeerURL,
		"--initial-advertise-peer-urls", n.PeerURL,
	}, more...)
}

var (
	givenMu sync.Mutex
	given   = map[string]bool{} // addresses PickAddr has returned
)

// FreeAddr returns an address on ip with a port that was free a moment ago
// (PickAddr), and fails the test if there is none.
func FreeAddr(t testing.TB, ip string) string {
	t.Helper()
	addr, err := PickAddr(ip)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	return addr
}

// PickAddr returns an address on ip with a port that was free a moment ago.
// Another process can take it before the server binds it; the server then
// exits and WaitReady reports its log.
//
// Ports come from outside Linux's ephemeral range (portWindow): a port from
// that range can be taken by any outgoing connection while its member is
// down, and a dialer retrying a dead 127.0.0.1 port can even connect a
// socket to itself on it.
//
// A port is handed out at most once per process: two calls a moment apart
// could otherwise both find the same port free (a member was once given one
// port for both its client and peer URLs).
func PickAddr(ip string) (string, error) {
	givenMu.Lock()
	defer givenMu.Unlock()
	lo, hi := portWindow()
	for range 1000 {
		port := lo + rand.IntN(hi-lo)
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		if given[addr] {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		given[addr] = true
		return addr, nil
	}
	return "", fmt.Errorf("no free port on %s in [%d, %d), outside the ephemeral range", ip, lo, hi)
}

// portWindow is [lo, hi) of ports outside this host's ephemeral range
// (net.ipv4.ip_local_port_range, 32768-60999 by default): below it when
// there is room, else above it, else 20000-32000 as on a default host.
// The range is read once per process.
var portWindow = sync.OnceValues(func() (lo, hi int) {
	eLo, eHi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if a, err := strconv.Atoi(f[0]); err == nil {
				if z, err := strconv.Atoi(f[1]); err == nil {
					eLo, eHi = a, z
				}
			}
		}
	}
	switch {
	case eLo-10000 >= 2000:
		return 10000, eLo
	case 65536-(eHi+1) >= 2000:
		return eHi + 1, 65536
	}
	return 20000, 32000
})

func (n *Node) spawn() {
	n.t.Helper()
	n.runs++
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatalf("harness: %v", err)
	}
	fmt.Fprintf(logf, "=== harness: run %d: %s %s\n", n.runs, n.Bin, strings.Join(n.args, " "))
	cmd := exec.Command(n.Bin, n.args...)
	cmd.Env = append(os.Environ(), n.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	killWithParent(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		n.t.Fatalf("harness: start %s: %v", n.Bin, err)
	}
	n.cmd = cmd
	n.exited = make(chan struct{})
	go func() {
		n.werr = cmd.Wait()
		logf.Close()
		close(n.exited)
	}()
}

// Running reports whether the process is alive.
func (n *Node) Running() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// PID returns the process id of the current run, or 0.
func (n *Node) PID() int {
	if !n.Running() {
		return 0
	}
	return n.cmd.Process.Pid
}

// NewClient returns a client for this node alone. The caller closes it.
// Configure may adjust the config before the client is made.
func (n *Node) NewClient(configure ...func(*clientv3.Config)) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   []string{n.ClientURL},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		TLS:         n.TLSConfig,
	}
	for _, f := range configure {
		f(&cfg)
	}
	return clientv3.New(cfg)
}

// Client returns a client for this node that is closed when the test ends.
func (n *Node) Client(t testing.TB, configure ...func(*clientv3.Config)) *clientv3.Client {
	t.Helper()
	c, err := n.NewClient(configure...)
	if err != nil {
		t.Fatalf("harness: client for %s: %v", n.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Launch starts the node again after it exited or was killed, with the same
// data directory, ports and flags, and returns without waiting: several
// members of a cluster that lost its quorum must be started before any can
// become ready. Follow it with WaitReady or AwaitReady.
func (n *Node) Launch() {
	n.t.Helper()
	if n.Running() {
		n.t.Fatalf("harness: Launch: %s is running", n.Name)
	}
	if n.runs == 0 {
		n.t.Fatalf("harness: Launch: %s was never started", n.Name)
	}
	n.spawn()
}

// AwaitReady is WaitReady that returns the failure instead of failing the
// test: for a node that may rightly refuse to start.
func (n *Node) AwaitReady() error { return n.waitReady() }

// Signal sends sig to the running process (SIGSTOP and SIGCONT, say).
func (n *Node) Signal(sig syscall.Signal) error {
	if !n.Running() {
		return fmt.Errorf("harness: %s is not running", n.Name)
	}
	return n.cmd.Process.Signal(sig)
}

// ExitError is how the last run of the process ended: nil while it runs or
// if it exited with status 0.
func (n *Node) ExitError() error {
	if n.cmd == nil || n.Running() {
		return nil
	}
	return n.werr
}

// WaitReady polls the node until Status and a linearizable Get succeed, the
// process exits, or the ready timeout passes; the last two fail the test.
func (n *Node) WaitReady() {
	n.t.Helper()
	if err := n.waitReady(); err != nil {
		n.t.Fatalf("harness: %s (%s) not ready: %v (its log is printed below)", n.Name, n.ClientURL, err)
	}
}

func (n *Node) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), n.timeout)
	defer cancel()
	cli, err := n.NewClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		err = probe(ctx, cli, n.ClientURL)
		if err == nil {
			return nil
		}
		select {
		case <-n.exited:
			return fmt.Errorf("process exited: %v", n.werr)
		case <-ctx.Done():
			return fmt.Errorf("timed out after %v: last error: %v", n.timeout, err)
		case <-poll.C:
		}
	}
}

func probe(ctx context.Context, cli *clientv3.Client, ep string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := cli.Status(ctx, ep); err != nil {
		return err
	}
	_, err := cli.Get(ctx, "harness-ready-probe")
	if err != nil && rpctypes.ErrorDesc(err) == rpctypes.ErrorDesc(rpctypes.ErrGRPCNotSupportedForLearner) {
		return nil // an etcd learner is up but refuses linearizable reads
	}
	return err
}

// Stop sends SIGTERM and waits for the process to exit, killing it after 30s.
// It returns the process's exit error, if any. Exiting with status 0 or by
// the SIGTERM itself (etcd re-raises it after shutting down) is success.
func (n *Node) Stop() error {
	n.t.Helper()
	if !n.Running() {
		return nil
	}
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-n.exited:
		var ee *exec.ExitError
		if errors.As(n.werr, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
				return nil
			}
		}
		return n.werr
	case <-time.After(30 * time.Second):
		n.Kill()
		return fmt.Errorf("harness: %s did not exit within 30s of SIGTERM; killed", n.Name)
	}
}

// Kill sends SIGKILL and waits for the process to exit.
func (n *Node) Kill() {
	if !n.Running() {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
}

// Restart stops the node (SIGTERM) if it is running and starts it again with
// the same data directory, ports and flags, then waits until it is ready.
func (n *Node) Restart() {
	n.t.Helper()
	if err := n.Stop(); err != nil {
		n.t.Logf("harness: %s stop before restart: %v", n.Name, err)
	}
	n.spawn()
	n.WaitReady()
}

// Log returns everything the process has written so far.
func (n *Node) Log() string {
	data, err := os.ReadFile(n.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(data)
}

const logTailBytes = 64 << 10

func (n *Node) logTail() string {
	log := n.Log()
	if len(log) > logTailBytes {
		log = "...\n" + log[len(log)-logTailBytes:]
	}
	return fmt.Sprintf("--- log of %s (%s) ---\n%s--- end of log of %s ---", n.Name, n.LogPath, log, n.Name)
}

var logMu sync.Mutex // keeps logs of several nodes from interleaving

func (n *Node) cleanup() {
	n.Kill()
	if n.t.Failed() {
		logMu.Lock()
		defer logMu.Unlock()
		n.t.Log("\n" + n.logTail())
	}
}
