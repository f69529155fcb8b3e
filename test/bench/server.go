package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// server is one etcd or Ballast process on 127.0.0.1 ports, started with
// etcd's flag names (Ballast accepts the same ones): a single-node cluster,
// or a member of a -cluster one when member is set.
type server struct {
	name     string // "etcd" or "ballast"; a member's name in a cluster
	bin      string
	extra    []string // from ETCD_ARGS / BALLAST_ARGS
	dataDir  string
	logPath  string
	client   string // host:port
	peerPort int

	// Cluster members only (empty for a single node, which is started as
	// "bench" with itself as --initial-cluster, as it always was).
	member         string // --name
	initialCluster string // --initial-cluster
	clusterToken   string // --initial-cluster-token

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	log    *os.File
}

// freePort picks an unused 127.0.0.1 port outside the ephemeral range,
// never the same one twice, as the test harness does. A port from the kernel's
// ephemeral range could be taken by one of the bench's own connections
// before the server bound it, which once failed a run.
func freePort() (int, error) {
	addr, err := harness.PickAddr("127.0.0.1")
	if err != nil {
		return 0, err
	}
	_, port, _ := net.SplitHostPort(addr)
	return strconv.Atoi(port)
}

func newServer(name, bin string, extra []string, dir string) (*server, error) {
	cp, err := freePort()
	if err != nil {
		return nil, err
	}
	pp, err := freePort()
	if err != nil {
		return nil, err
	}
	return &server{
		name: name, bin: bin, extra: extra,
		dataDir:  filepath.Join(dir, "data"),
		logPath:  filepath.Join(dir, "server.log"),
		client:   fmt.Sprintf("127.0.0.1:%d", cp),
		peerPort: pp,
	}, nil
}

func (s *server) peerURL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.peerPort) }

// start launches the process without waiting for it to serve.
func (s *server) start() error {
	if s.cmd != nil {
		return fmt.Errorf("%s already running", s.name)
	}
	peer := s.peerURL()
	member, initial := "bench", "bench="+peer
	if s.member != "" {
		member, initial = s.member, s.initialCluster
	}
	args := []string{
		"--name", member,
		"--data-dir", s.dataDir,
		"--listen-client-urls", "http://" + s.client,
		"--advertise-client-urls", "http://" + s.client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", initial,
	}
	if s.member != "" {
		args = append(args, "--initial-cluster-state", "new", "--initial-cluster-token", s.clusterToken)
	}
	args = append(args, s.extra...)
	f, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "\n==== %s %s\n", time.Now().Format(time.RFC3339), strings.Join(args, " "))
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	s.cmd, s.log, s.exited = cmd, f, make(chan struct{})
	go func(exited chan struct{}) {
		cmd.Wait()
		close(exited)
	}(s.exited)
	return nil
}

// waitReady polls until a linearizable Get succeeds, which needs an elected
// leader and an applied read index, and returns how long that took since
// since. Each attempt uses a fresh client so gRPC reconnect backoff never
// inflates the measured time.
func (s *server) waitReady(ctx context.Context, since time.Time, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		select {
		case <-s.exited:
			return 0, fmt.Errorf("%s exited during startup (%v); %s ends with:\n%s", s.name, s.cmd.ProcessState, s.logPath, s.logTail(20))
		case <-ctx.Done():
			return 0, fmt.Errorf("%s not ready after %v; see %s", s.name, timeout, s.logPath)
		default:
		}
		if c, err := net.DialTimeout("tcp", s.client, 100*time.Millisecond); err == nil {
			c.Close()
			if s.probe(ctx) == nil {
				return time.Since(since), nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *server) probe(ctx context.Context) error {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.client}, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = c.Get(ctx, "bench-ready-probe")
	return err
}

// logTail returns the last n lines of the server's log.
func (s *server) logTail(n int) string {
	b, _ := os.ReadFile(s.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// stop sends SIGTERM and waits up to 30 s before killing the process.
func (s *server) stop() error {
	if s.cmd == nil {
		return nil
	}
	defer func() {
		s.log.Close()
		s.cmd = nil
	}()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return nil
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("%s ignored SIGTERM for 30s; killed", s.name)
	}
}

// kill sends SIGKILL and waits for the process to be gone; stop is then a
// no-op apart from closing the log.
func (s *server) kill() error {
	if s.cmd == nil {
		return errors.New("not running")
	}
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-s.exited
	return nil
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTick = 100

// cpuSeconds is the user plus system CPU time the process has used so far.
func (s *server) cpuSeconds() (float64, error) {
	if s.cmd == nil {
		return 0, errors.New("not running")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may contain spaces: fields are
	// counted after its closing parenthesis, which is field 2.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", s.cmd.Process.Pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", s.cmd.Process.Pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(utime+stime) / clockTick, nil
}

// memKB reads VmRSS and VmHWM (peak RSS) of the running process.
func (s *server) memKB() (rss, hwm int64, err error) {
	if s.cmd == nil {
		return 0, 0, errors.New("not running")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS for %s", s.name)
	}
	return rss, hwm, sc.Err()
}

// diskBytes is what `du -s` reports for the data dir: allocated blocks,
// so preallocated files count and sparse holes do not.
func (s *server) diskBytes() (int64, error) {
	var total int64
	err := filepath.WalkDir(s.dataDir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	return total, err
}
