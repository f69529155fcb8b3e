package server

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"
)

// connMux splits one client listener into gRPC (HTTP/2 with prior
// knowledge, as etcd clients speak) and plain HTTP/1 (health, metrics,
// version), by the connection's first bytes; on an https URL, by the
// protocol the TLS handshake settled (see clientTLS).
type connMux struct {
	ln    net.Listener
	tls   *tls.Config // nil: plain
	wrap  func(net.Conn) net.Conn
	grpc  *chanListener
	http  *chanListener
	close sync.Once
}

var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// newConnMux serves ln; wrap sees every accepted connection first.
func newConnMux(ln net.Listener, tlsCfg *tls.Config, wrap func(net.Conn) net.Conn) *connMux {
	return &connMux{ln: ln, tls: tlsCfg, wrap: wrap, grpc: newChanListener(ln.Addr()), http: newChanListener(ln.Addr())}
}

func (m *connMux) serve() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			m.grpc.shut()
			m.http.shut()
			return
		}
		go m.route(c)
	}
}

func (m *connMux) route(c net.Conn) {
	c = m.wrap(c)
	if m.tls != nil {
		tc, err := handshake(c, m.tls)
		if err != nil {
			return
		}
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			m.grpc.deliver(tc)
		} else {
			m.http.deliver(tc)
		}
		return
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len(http2Preface))
	n, err := io.ReadFull(c, buf)
	c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: c, prefix: buf[:n]}
	if err == nil && bytes.Equal(buf, http2Preface) {
		m.grpc.deliver(pc)
		return
	}
	if n == 0 {
		c.Close()
		return
	}
	m.http.deliver(pc)
}

func (m *connMux) Close() error {
	var err error
	m.close.Do(func() { err = m.ln.Close() })
	return err
}

type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// chanListener is a net.Listener fed by connMux.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) shut()          { l.once.Do(func() { close(l.done) }) }
func (l *chanListener) Close() error   { l.shut(); return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }
