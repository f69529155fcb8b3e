package harness

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// A Proxy forwards TCP connections from its own address to a target address
// and injects faults into them by the IP address of the connecting side.
//
// In a proxied cluster (Options.Proxied) one Proxy sits in front of every
// member's peer listener and the member advertises the proxy's address, so
// every peer connection to member B passes through B's proxy. Members bind
// their outgoing peer connections to their own IP, so a rule "from A" at B's
// proxy affects exactly the connections A opens to B: A's requests to B and
// B's replies on them. Connections B opens to A pass through A's proxy and
// are untouched, which is what makes one-way partitions possible.
//
// The rules (Cut, Delay, Drop) apply to new connections and to those already
// open. An empty source IP names every source; a rule for a specific IP takes
// precedence over it for Delay and Drop, and either one cuts for Cut. All
// methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex // guards rules' copy-on-write, conns and closed
	rules  atomic.Pointer[map[string]rule]
	conns  map[*proxyConn]struct{}
	closed bool

	wg        sync.WaitGroup // the accept loop and every connection's goroutines
	closeOnce sync.Once
	closeErr  error

	accepted, refused, dropped atomic.Int64
}

// rule is what applies to connections from one source. The zero rule
// forwards untouched.
type rule struct {
	cut   bool
	delay time.Duration
	drop  float64
}

// ProxyStats counts a proxy's connections since it started.
type ProxyStats struct {
	Accepted int64 // connections forwarded to the target
	Refused  int64 // connections closed on arrival by a Cut rule, or because the target could not be reached
	Dropped  int64 // connections closed by a Drop rule
	Active   int   // connections open now
}

// proxyChunkSize bounds one read from either side, and so one unit of Delay and
// Drop. proxyQueueChunks bounds how many chunks one direction of a connection holds
// while they wait out a delay; a full queue stops reading, which pushes back
// on the sender as a slow link would.
const (
	proxyChunkSize   = 32 << 10
	proxyQueueChunks = 256
)

// NewProxy listens on listenAddr (host:port; port 0 picks a free one) and
// forwards every connection to target. Close stops it.
func NewProxy(listenAddr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("harness: proxy listen: %w", err)
	}
	p := &Proxy{ln: ln, target: target, conns: make(map[*proxyConn]struct{})}
	p.rules.Store(&map[string]rule{})
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the address the proxy listens on, as host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address connections are forwarded to.
func (p *Proxy) Target() string { return p.target }

// Cut refuses new connections from the given source IPs and closes their open
// ones, both with a TCP reset. With no arguments it cuts every source.
//
// TCP gives no way to refuse a connection from user space: the kernel
// completes the handshake before Accept returns, so the dialer usually sees
// Dial succeed and its first read or write fail with "connection reset" (or
// Dial itself fail so, when the reset arrives first).
func (p *Proxy) Cut(fromIPs ...string) {
	if len(fromIPs) == 0 {
		fromIPs = []string{""}
	}
	p.update(fromIPs, func(r *rule) { r.cut = true })
}

// Delay holds every chunk of data on connections from fromIP for d before
// forwarding it, in both directions, so a request and its reply on such a
// connection take 2*d longer. Chunks keep their order and are delayed
// independently (a queue of timestamped chunks per direction), so throughput
// is not limited to one chunk per d. The new delay applies to data read after
// the call. d <= 0 removes the delay. An empty fromIP delays every source
// without a delay of its own.
func (p *Proxy) Delay(fromIP string, d time.Duration) {
	p.update([]string{fromIP}, func(r *rule) { r.delay = max(d, 0) })
}

// Drop models a lossy link from fromIP: each chunk of data forwarded in either
// direction of its connections is, with probability prob, discarded and the
// connection reset. prob <= 0 removes the rule, prob >= 1 resets a
// connection on its first chunk. An empty fromIP applies to every source
// without a drop rule of its own.
//
// TCP never loses bytes silently: a stream either delivers every byte in
// order or breaks. So a lost chunk ends its connection, which is what an
// application sees on a real lossy link once retransmissions give up: the
// messages in flight are lost and the sender must notice, reconnect and
// resend. Stalling the connection instead would model congestion, not loss,
// and a stall without an end cannot be told apart from Cut.
func (p *Proxy) Drop(fromIP string, prob float64) {
	p.update([]string{fromIP}, func(r *rule) { r.drop = min(max(prob, 0), 1) })
}

// Heal removes every rule for the given source IPs (an empty IP: the rules for
// every source, set by Cut() or with an empty fromIP). With no arguments it
// removes all rules. Closed connections stay closed; new ones go through.
func (p *Proxy) Heal(fromIPs ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(fromIPs) == 0 {
		p.rules.Store(&map[string]rule{})
		return
	}
	next := p.copyRules()
	for _, ip := range fromIPs {
		delete(next, ip)
	}
	p.rules.Store(&next)
}

// Stats returns the proxy's connection counters.
func (p *Proxy) Stats() ProxyStats {
	p.mu.Lock()
	active := len(p.conns)
	p.mu.Unlock()
	return ProxyStats{
		Accepted: p.accepted.Load(),
		Refused:  p.refused.Load(),
		Dropped:  p.dropped.Load(),
		Active:   active,
	}
}

// Close stops listening, resets every open connection and waits for the
// proxy's goroutines to end. It is idempotent.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		conns := make([]*proxyConn, 0, len(p.conns))
		for c := range p.conns {
			conns = append(conns, c)
		}
		p.mu.Unlock()
		p.closeErr = p.ln.Close()
		for _, c := range conns {
			c.abort()
		}
		p.wg.Wait()
	})
	return p.closeErr
}

// update applies set to the rules of each IP and resets the open connections
// that a Cut now covers.
func (p *Proxy) update(ips []string, set func(*rule)) {
	p.mu.Lock()
	next := p.copyRules()
	for _, ip := range ips {
		r := next[ip]
		set(&r)
		if r == (rule{}) {
			delete(next, ip)
		} else {
			next[ip] = r
		}
	}
	p.rules.Store(&next)
	var victims []*proxyConn
	for c := range p.conns {
		if p.ruleFor(c.ip).cut {
			victims = append(victims, c)
		}
	}
	p.mu.Unlock()
	for _, c := range victims {
		c.abort()
	}
}

func (p *Proxy) copyRules() map[string]rule {
	cur := *p.rules.Load()
	next := make(map[string]rule, len(cur)+1)
	for ip, r := range cur {
		next[ip] = r
	}
	return next
}

// ruleFor returns the effective rule for a source IP: cut if either its own
// rule or the every-source rule cuts; its own delay and drop if set, else the
// every-source ones.
func (p *Proxy) ruleFor(ip string) rule {
	rules := *p.rules.Load()
	own, hasOwn := rules[ip]
	all := rules[""]
	r := own
	r.cut = own.cut || all.cut
	if !hasOwn || own.delay == 0 {
		r.delay = all.delay
	}
	if !hasOwn || own.drop == 0 {
		r.drop = all.drop
	}
	return r
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		p.wg.Add(1)
		go p.serve(c.(*net.TCPConn))
	}
}

// serve connects an accepted connection to the target and starts forwarding.
func (p *Proxy) serve(client *net.TCPConn) {
	defer p.wg.Done()
	ip := client.RemoteAddr().(*net.TCPAddr).IP.String()
	if p.ruleFor(ip).cut {
		p.refused.Add(1)
		resetConn(client)
		return
	}
	d, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		// The member behind the proxy is down: the dialer sees what it
		// would see without the proxy, a refused (reset) connection.
		p.refused.Add(1)
		resetConn(client)
		return
	}
	c := &proxyConn{p: p, ip: ip, client: client, server: d.(*net.TCPConn), done: make(chan struct{})}
	// The check and the registration are one step under mu, so a Cut that
	// runs concurrently either sees this connection or is seen by it.
	p.mu.Lock()
	if p.closed || p.ruleFor(ip).cut {
		p.mu.Unlock()
		p.refused.Add(1)
		c.abort()
		return
	}
	p.conns[c] = struct{}{}
	p.wg.Add(4)
	p.mu.Unlock()
	p.accepted.Add(1)

	up := make(chan proxyChunk, proxyQueueChunks)
	down := make(chan proxyChunk, proxyQueueChunks)
	var left atomic.Int32 // directions still forwarding
	left.Store(2)
	finish := func() {
		if left.Add(-1) == 0 {
			c.close()
		}
	}
	go func() { defer p.wg.Done(); c.read(c.client, up) }()
	go func() { defer p.wg.Done(); c.write(c.server, up); finish() }()
	go func() { defer p.wg.Done(); c.read(c.server, down) }()
	go func() { defer p.wg.Done(); c.write(c.client, down); finish() }()
}

// resetConn closes a connection with a TCP RST rather than a FIN, as a
// refused or broken link looks to the other side.
func resetConn(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// proxyChunk is data read from one side, held until due.
type proxyChunk struct {
	data []byte
	due  time.Time
}

// proxyConn is one forwarded connection: a client side (the dialer, whose IP
// the rules are keyed by) and a server side (the target).
type proxyConn struct {
	p              *Proxy
	ip             string
	client, server *net.TCPConn
	done           chan struct{} // closed by abort or close
	once           sync.Once
}

// read moves data from src into q, stamping each chunk with its due time,
// and closes q at end of stream. Any read error other than a clean end of
// stream resets the whole connection.
func (c *proxyConn) read(src *net.TCPConn, q chan<- proxyChunk) {
	buf := make([]byte, proxyChunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r := c.p.ruleFor(c.ip)
			if r.cut {
				c.abort()
				return
			}
			if r.drop > 0 && rand.Float64() < r.drop {
				c.p.dropped.Add(1)
				c.abort()
				return
			}
			select {
			case q <- proxyChunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(r.delay)}:
			case <-c.done:
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				close(q)
			} else {
				c.abort()
			}
			return
		}
	}
}

// write forwards chunks from q to dst once each is due, in order, and
// half-closes dst when q is closed.
func (c *proxyConn) write(dst *net.TCPConn, q <-chan proxyChunk) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		var ch proxyChunk
		var ok bool
		select {
		case ch, ok = <-q:
		case <-c.done:
			return
		}
		if !ok {
			_ = dst.CloseWrite()
			return
		}
		if wait := time.Until(ch.due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-c.done:
				return
			}
		}
		if _, err := dst.Write(ch.data); err != nil {
			c.abort()
			return
		}
	}
}

// abort resets both sides; close closes them after both directions ended
// cleanly. Whichever runs first wins.
func (c *proxyConn) abort() { c.end(resetConn) }

func (c *proxyConn) close() {
	c.end(func(tc *net.TCPConn) { _ = tc.Close() })
}

func (c *proxyConn) end(closeFn func(*net.TCPConn)) {
	c.once.Do(func() {
		close(c.done)
		closeFn(c.client)
		closeFn(c.server)
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.mu.Unlock()
	})
}
