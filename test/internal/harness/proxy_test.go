package harness_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// Source IPs of the test clients. Any address in 127.0.0.0/8 reaches the
// loopback interface on Linux.
const (
	ipA = "127.0.0.21"
	ipB = "127.0.0.22"
)

// ioTimeout bounds every read and write in these tests, so a broken proxy
// fails a test instead of hanging it.
const ioTimeout = 5 * time.Second

// echoServer listens on 127.0.0.1 and writes back everything it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	return echoServerOn(t, "127.0.0.1")
}

func echoServerOn(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func newProxy(t *testing.T, listen, target string) *harness.Proxy {
	t.Helper()
	p, err := harness.NewProxy(listen, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// dialFrom connects to addr from the source IP ip.
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: ioTimeout}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echo sends msg and reads it back.
func echo(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo: got %q, want %q", got, msg)
	}
	return nil
}

func mustEcho(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if err := echo(c, msg); err != nil {
		t.Fatalf("%s -> %s: %v", c.LocalAddr(), c.RemoteAddr(), err)
	}
}

// mustBreak checks that the connection is closed by the other side: a round
// trip fails, and not by timing out.
func mustBreak(t *testing.T, c net.Conn) {
	t.Helper()
	err := echo(c, "x")
	if err == nil {
		t.Fatalf("%s -> %s: round trip succeeded, want a closed connection", c.LocalAddr(), c.RemoteAddr())
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s -> %s: timed out, want a closed connection", c.LocalAddr(), c.RemoteAddr())
	}
}

// mustRefuse checks that a new connection from ip to addr fails, and not by
// timing out. A cut proxy resets it on arrival: the dialer sees the reset on
// its first read, or already in Dial when the reset beats the end of
// connect.
func mustRefuse(t *testing.T, ip, addr string) {
	t.Helper()
	if err := link(t, ip, addr); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("new connection %s -> %s: %v, want it refused", ip, addr, err)
	}
}

// link opens a connection from ip to addr and makes one round trip on it.
func link(t *testing.T, ip, addr string) error {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: ioTimeout}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return echo(c, "x")
}

func rtt(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	start := time.Now()
	mustEcho(t, c, "ping")
	return time.Since(start)
}

func TestProxyForwards(t *testing.T) {
	p := newProxy(t, "127.0.0.1:0", echoServer(t))
	c := dialFrom(t, ipA, p.Addr())
	mustEcho(t, c, "hello")

	// Many chunks in both directions at once arrive whole and in order.
	data := make([]byte, 1<<20)
	rand.Read(data)
	got := make([]byte, len(data))
	errc := make(chan error, 1)
	go func() { _, err := c.Write(data); errc <- err }()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("1 MiB echoed through the proxy differs")
	}
	if s := p.Stats(); s.Accepted != 1 || s.Active != 1 {
		t.Fatalf("stats %+v, want 1 accepted, 1 active", s)
	}
}

func TestProxyCut(t *testing.T) {
	p := newProxy(t, "127.0.0.1:0", echoServer(t))
	a := dialFrom(t, ipA, p.Addr())
	b := dialFrom(t, ipB, p.Addr())
	mustEcho(t, a, "a")
	mustEcho(t, b, "b")

	p.Cut(ipA)
	mustBreak(t, a)              // an open connection is closed
	mustRefuse(t, ipA, p.Addr()) // a new one is refused
	mustEcho(t, b, "b")          // other sources are untouched
	mustEcho(t, dialFrom(t, ipB, p.Addr()), "b")

	p.Heal(ipA)
	mustEcho(t, dialFrom(t, ipA, p.Addr()), "a")

	// No arguments: every source.
	p.Cut()
	mustBreak(t, b)
	mustRefuse(t, ipA, p.Addr())
	mustRefuse(t, ipB, p.Addr())
	// Healing one source leaves the every-source cut in place.
	p.Heal(ipA)
	mustRefuse(t, ipA, p.Addr())
	p.Heal()
	mustEcho(t, dialFrom(t, ipA, p.Addr()), "a")
	mustEcho(t, dialFrom(t, ipB, p.Addr()), "b")

	if s := p.Stats(); s.Refused != 4 {
		t.Fatalf("stats %+v, want 4 refused", s)
	}
}

func TestProxyDelay(t *testing.T) {
	const d = 150 * time.Millisecond
	p := newProxy(t, "127.0.0.1:0", echoServer(t))
	a := dialFrom(t, ipA, p.Addr())
	b := dialFrom(t, ipB, p.Addr())
	mustEcho(t, a, "a")

	// The delay applies to the connection already open, once each way.
	p.Delay(ipA, d)
	if got := rtt(t, a); got < 2*d {
		t.Fatalf("round trip from %s took %v, want at least %v", ipA, got, 2*d)
	}
	if got := rtt(t, b); got >= d {
		t.Fatalf("round trip from %s took %v, want it undelayed (< %v)", ipB, got, d)
	}

	// A stream of separate messages: each is delayed by at least 2*d, they
	// keep their order, and they are delayed together, not one after
	// another (which would take n*2*d).
	const n = 20
	sent := make([]time.Time, n)
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			var msg [8]byte
			binary.BigEndian.PutUint64(msg[:], uint64(i))
			sent[i] = time.Now()
			if _, err := a.Write(msg[:]); err != nil {
				errc <- err
				return
			}
			time.Sleep(10 * time.Millisecond) // separate chunks
		}
		errc <- nil
	}()
	_ = a.SetReadDeadline(time.Now().Add(ioTimeout))
	for i := range n {
		var msg [8]byte
		if _, err := io.ReadFull(a, msg[:]); err != nil {
			t.Fatal(err)
		}
		arrived := time.Now()
		if got := binary.BigEndian.Uint64(msg[:]); got != uint64(i) {
			t.Fatalf("message %d arrived in position %d", got, i)
		}
		if lat := arrived.Sub(sent[i]); lat < 2*d {
			t.Fatalf("message %d came back after %v, want at least %v", i, lat, 2*d)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if total := time.Since(start); total > 1500*time.Millisecond {
		t.Fatalf("%d messages took %v: the delay is not pipelined (serial would be %v)", n, total, n*2*d)
	}

	p.Heal(ipA)
	if got := rtt(t, a); got >= d {
		t.Fatalf("round trip after Heal took %v, want < %v", got, d)
	}

	// An empty source IP delays every source, new connections included.
	p.Delay("", d)
	if got := rtt(t, dialFrom(t, ipB, p.Addr())); got < 2*d {
		t.Fatalf("round trip under an every-source delay took %v, want at least %v", got, 2*d)
	}
}

func TestProxyDrop(t *testing.T) {
	p := newProxy(t, "127.0.0.1:0", echoServer(t))
	a := dialFrom(t, ipA, p.Addr())
	b := dialFrom(t, ipB, p.Addr())
	mustEcho(t, a, "a")

	p.Drop(ipA, 1)
	mustBreak(t, a) // the next chunk on an open connection
	mustRefuse(t, ipA, p.Addr())
	mustEcho(t, b, "b")
	if s := p.Stats(); s.Dropped != 2 {
		t.Fatalf("stats %+v, want 2 dropped", s)
	}

	p.Heal(ipA)
	mustEcho(t, dialFrom(t, ipA, p.Addr()), "a")

	// With 0.3 per chunk, a round trip (one chunk each way) survives with
	// probability 0.49: among 40 connections, neither none nor all break
	// (each with probability below 1e-11).
	p.Drop(ipA, 0.3)
	broken := 0
	for range 40 {
		err := link(t, ipA, p.Addr())
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("round trip timed out; a drop must close the connection")
		}
		if err != nil {
			broken++
		}
	}
	if broken == 0 || broken == 40 {
		t.Fatalf("%d of 40 connections broke with drop probability 0.3 per chunk", broken)
	}
	if s := p.Stats(); s.Dropped != int64(2+broken) {
		t.Fatalf("stats %+v, want %d dropped", s, 2+broken)
	}
}

func TestProxyClose(t *testing.T) {
	p := newProxy(t, "127.0.0.1:0", echoServer(t))
	a := dialFrom(t, ipA, p.Addr())
	mustEcho(t, a, "a")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	mustBreak(t, a)
	if c, err := net.DialTimeout("tcp", p.Addr(), ioTimeout); err == nil {
		c.Close()
		t.Fatal("dial succeeded after Close")
	}
	if s := p.Stats(); s.Active != 0 {
		t.Fatalf("stats %+v, want no active connections", s)
	}
}

// TestPartitionHelpers drives the partition helpers on stand-in members: an
// echo server behind a proxy on each member's IP, and clients that bind the
// member's IP as a Ballast member binds its outgoing peer connections.
func TestPartitionHelpers(t *testing.T) {
	all := make([]*harness.Node, 3)
	for i := range all {
		ip := fmt.Sprintf("127.0.0.%d", 31+i)
		all[i] = &harness.Node{
			Name:  fmt.Sprintf("m%d", i+1),
			IP:    ip,
			Proxy: newProxy(t, net.JoinHostPort(ip, "0"), echoServerOn(t, ip)),
		}
	}
	n1, n2, n3 := all[0], all[1], all[2]
	// check asserts which links work: want[i][j] for all[i] → all[j].
	check := func(step string, want [3][3]bool) {
		t.Helper()
		for i, from := range all {
			for j, to := range all {
				if i == j {
					continue
				}
				err := link(t, from.IP, to.Proxy.Addr())
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("%s: %s → %s timed out", step, from.Name, to.Name)
				}
				if ok := err == nil; ok != want[i][j] {
					t.Errorf("%s: %s → %s works = %v, want %v (%v)", step, from.Name, to.Name, ok, want[i][j], err)
				}
			}
		}
	}
	connected := [3][3]bool{{true, true, true}, {true, true, true}, {true, true, true}}
	check("start", connected)

	harness.PartitionOneWay(n1, n2)
	check("one way n1→n2", [3][3]bool{{true, false, true}, {true, true, true}, {true, true, true}})
	harness.HealAll(all)
	check("healed", connected)

	harness.Partition([]*harness.Node{n1}, []*harness.Node{n2, n3})
	check("n1 | n2 n3", [3][3]bool{{true, false, false}, {false, true, true}, {false, true, true}})
	harness.HealAll(all)

	harness.Isolate(n3, all)
	check("isolate n3", [3][3]bool{{true, true, false}, {true, true, false}, {false, false, true}})
	harness.HealAll(all)
	check("healed", connected)

	const d = 100 * time.Millisecond
	harness.DelayLinks(all, d)
	if got := rtt(t, dialFrom(t, n2.IP, n1.Proxy.Addr())); got < 2*d {
		t.Fatalf("n2 → n1 round trip under DelayLinks took %v, want at least %v", got, 2*d)
	}
	if got := rtt(t, dialFrom(t, "127.0.0.1", n1.Proxy.Addr())); got >= d {
		t.Fatalf("a non-member's round trip took %v, want it undelayed (< %v)", got, d)
	}
	harness.HealAll(all)
	if got := rtt(t, dialFrom(t, n2.IP, n1.Proxy.Addr())); got >= d {
		t.Fatalf("round trip after HealAll took %v, want < %v", got, d)
	}
}
