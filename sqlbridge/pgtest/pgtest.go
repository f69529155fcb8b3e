// Package pgtest starts throwaway PostgreSQL servers for tests: a real
// postmaster from the machine's PostgreSQL binaries, in a temporary data
// directory, listening on 127.0.0.1. PostgreSQL refuses to run as root, so
// when the test runs as root the server runs as the `postgres` user.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is one running (or stopped) PostgreSQL server.
type Server struct {
	t    testing.TB
	bin  string
	dir  string // owned by the server's user: data/ and sock/
	port int
	cred *syscall.Credential
	cmd  *exec.Cmd
	exit chan struct{}
	log  *os.File
}

// Bin finds the newest installed PostgreSQL server binaries.
func Bin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)")
}

// Start initialises and starts a server that is stopped and removed when
// the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Bin()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, bin: bin, port: freePort(t)}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root and there is no postgres user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if s.dir, err = os.MkdirTemp("", "ballast-pg-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Kill()
		os.RemoveAll(s.dir)
	})
	for _, d := range []string{s.dir, filepath.Join(s.dir, "sock")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if s.cred != nil {
			if err := os.Chown(d, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", s.dataDir(), "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	s.Restart()
	return s
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }

// URL is a connection URL for database db (created with CreateDB).
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// CreateDB creates database name.
func (s *Server) CreateDB(name string) {
	s.t.Helper()
	s.Exec("postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// Exec runs SQL statements in database db and fails the test on error.
func (s *Server) Exec(db string, sql string, args ...any) {
	s.t.Helper()
	conn := s.connect(db)
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
}

// Connect opens a connection to database db, closed when the test ends.
func (s *Server) Connect(db string) *pgx.Conn {
	s.t.Helper()
	conn := s.connect(db)
	s.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func (s *Server) connect(db string) *pgx.Conn {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL(db))
	if err != nil {
		s.t.Fatal(err)
	}
	return conn
}

// Restart starts the server (again) on the same port and data, after a Kill,
// and waits until it accepts connections.
func (s *Server) Restart() {
	s.t.Helper()
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		if err := s.start(); err != nil {
			lastErr = err
			time.Sleep(250 * time.Millisecond) // a killed server's children may still hold its shared memory
			continue
		}
		return
	}
	s.t.Fatalf("PostgreSQL did not start: %v (log: %s)", lastErr, s.logTail())
}

func (s *Server) start() error {
	logf, err := os.OpenFile(filepath.Join(os.TempDir(), filepath.Base(s.dir)+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	s.log = logf
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", s.dataDir(), "-p", strconv.Itoa(s.port),
		"-k", filepath.Join(s.dir, "sock"), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exit := make(chan struct{})
	go func() { cmd.Wait(); close(exit) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exit:
			return errors.New("postmaster exited")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			s.cmd, s.exit = cmd, exit
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-exit
	return errors.New("no connection within 30s")
}

// Kill ends the server with SIGKILL, as a crash would; Restart recovers it.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exit
	s.cmd = nil
	if s.log != nil {
		s.log.Close()
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(os.TempDir(), filepath.Base(s.dir)+".log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-10):], "\n")
}

// freePort picks a free TCP port on 127.0.0.1 below the ephemeral range, so
// that no client connection takes it while the server is down.
func freePort(t testing.TB) int {
	for range 1000 {
		p := 15000 + rand.IntN(15000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		return p
	}
	t.Fatal("no free port")
	return 0
}
