package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The peer port carries four protocols, told apart by a connection's first
// byte: Raft's transport (raftMagic, then a handshake), the stream of writes
// followers forward to the leader (forwardMagic, the same handshake; see
// forwardstream.go), the stream of the peer service's calls on every read's
// path (callMagic, the same handshake; see callstream.go) and the internal
// gRPC service for everything else a member asks another (HTTP/2, which
// begins with "PRI"). TLS (--peer-*) wraps the listener and the dialer:
// every protocol gets it at once.
const (
	raftMagic    = 'R'
	forwardMagic = 'F'
	callMagic    = 'C'
)

// handshakeOK is what a member that accepts a connection of the stream
// protocol magic answers its handshake with. The call stream, newer than
// the others, has its magic echoed: a member without it hands the
// connection to gRPC, whose server preface also begins with a 0 byte.
func handshakeOK(magic byte) []byte {
	if magic == callMagic {
		return []byte{0, callMagic}
	}
	return []byte{0}
}

// handshakeTimeout bounds the exchange that opens a Raft connection.
const handshakeTimeout = 5 * time.Second

// peerListener splits the peer listener into the stream protocols'
// connections (by magic) and gRPC ones.
type peerListener struct {
	ln        net.Listener
	tls       *tls.Config // nil: plain
	clusterID func() uint64
	streams   map[byte]*chanListener
	grpc      *chanListener
	onRefuse  func(remote net.Addr, theirs uint64)
	closeOnce sync.Once
}

func newPeerListener(ln net.Listener, tlsCfg *tls.Config, streams map[byte]*chanListener, grpc *chanListener, clusterID func() uint64, onRefuse func(net.Addr, uint64)) *peerListener {
	return &peerListener{ln: ln, tls: tlsCfg, clusterID: clusterID, streams: streams, grpc: grpc, onRefuse: onRefuse}
}

func (p *peerListener) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed; the shared Raft and gRPC listeners are shut by their owner
		}
		go p.route(c)
	}
}

func (p *peerListener) route(c net.Conn) {
	if p.tls != nil {
		tc, err := handshake(c, p.tls)
		if err != nil {
			return
		}
		c = tc
	}
	c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		c.Close()
		return
	}
	stream := p.streams[first[0]]
	if stream == nil {
		c.SetReadDeadline(time.Time{})
		p.grpc.deliver(&prefixConn{Conn: c, prefix: first[:]})
		return
	}
	var id [8]byte
	if _, err := io.ReadFull(c, id[:]); err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	theirs, ours := binary.BigEndian.Uint64(id[:]), p.clusterID()
	if theirs != ours {
		msg := fmt.Sprintf("cluster ID mismatch: this member belongs to cluster %x, the dialing member to %x (check --initial-cluster-token and --initial-cluster)", ours, theirs)
		c.SetWriteDeadline(time.Now().Add(handshakeTimeout))
		c.Write(append([]byte{1, byte(len(msg) >> 8), byte(len(msg))}, msg...))
		c.Close()
		if p.onRefuse != nil {
			p.onRefuse(c.RemoteAddr(), theirs)
		}
		return
	}
	c.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	if _, err := c.Write(handshakeOK(first[0])); err != nil {
		c.Close()
		return
	}
	c.SetWriteDeadline(time.Time{})
	stream.deliver(c)
}

func (p *peerListener) Close() error {
	var err error
	p.closeOnce.Do(func() { err = p.ln.Close() })
	return err
}

// errClusterMismatch is what a dial gets from a member of another cluster.
var errClusterMismatch = errors.New("refused by peer")

// peerDialer opens peer connections from this member's peer IP (when it
// listens on a specific one), so a member is recognisable by its address,
// over TLS when the cluster's peer URLs are https.
type peerDialer struct {
	local net.Addr    // nil: let the kernel choose
	tls   *tls.Config // nil: plain
	// opened may wrap each connection made; failed hears of each failure.
	opened func(addr string, c net.Conn) net.Conn
	failed func(addr string)
}

func newPeerDialer(listenPeerURL string, tlsCfg *tls.Config) *peerDialer {
	d := &peerDialer{tls: tlsCfg}
	u, err := url.Parse(listenPeerURL)
	if err != nil {
		return d
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil && !ip.IsUnspecified() {
		d.local = &net.TCPAddr{IP: ip}
	}
	return d
}

func (d *peerDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := d.dialTLS(ctx, addr)
	if err != nil {
		if d.failed != nil {
			d.failed(addr)
		}
		return nil, err
	}
	if d.opened != nil {
		c = d.opened(addr, c)
	}
	return c, nil
}

func (d *peerDialer) dialTLS(ctx context.Context, addr string) (net.Conn, error) {
	nd := net.Dialer{LocalAddr: d.local}
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil || d.tls == nil {
		return c, err
	}
	cfg := d.tls.Clone()
	cfg.ServerName, _, _ = net.SplitHostPort(addr)
	tc := tls.Client(c, cfg)
	hctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// raftStream is the raft.StreamLayer on the shared peer port.
type raftStream struct {
	ln        *chanListener
	advertise net.Addr
	dialer    *peerDialer
	clusterID func() uint64
}

func (r *raftStream) Accept() (net.Conn, error) { return r.ln.Accept() }
func (r *raftStream) Close() error              { return r.ln.Close() }
func (r *raftStream) Addr() net.Addr            { return r.advertise }

func (r *raftStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return r.dialer.dialStream(ctx, string(addr), raftMagic, r.clusterID())
}

// dialStream opens a connection of one of the peer port's stream protocols
// (magic) and passes the cluster id handshake.
func (d *peerDialer) dialStream(ctx context.Context, addr string, magic byte, clusterID uint64) (net.Conn, error) {
	c, err := d.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	hello := binary.BigEndian.AppendUint64([]byte{magic}, clusterID)
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	if _, err := c.Write(hello); err != nil {
		c.Close()
		return nil, err
	}
	var status [1]byte
	if _, err := io.ReadFull(c, status[:]); err != nil {
		c.Close()
		return nil, err
	}
	if ok := handshakeOK(magic); status[0] == 0 && len(ok) > 1 {
		rest := make([]byte, len(ok)-1)
		if _, err := io.ReadFull(c, rest); err != nil || !bytes.Equal(rest, ok[1:]) {
			// gRPC's server preface: a member without this protocol.
			c.Close()
			return nil, fmt.Errorf("%s does not serve peer protocol %q", addr, magic)
		}
	}
	if status[0] != 0 {
		var n [2]byte
		io.ReadFull(c, n[:])
		msg := make([]byte, int(n[0])<<8|int(n[1]))
		io.ReadFull(c, msg)
		c.Close()
		return nil, fmt.Errorf("%w %s: %s", errClusterMismatch, addr, msg)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// peerClients keeps one gRPC connection per peer address.
type peerClients struct {
	dialer *peerDialer
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
}

func (p *peerClients) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.conns[addr]; c != nil {
		return c, nil
	}
	c, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(p.dialer.dial),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)),
	)
	if err != nil {
		return nil, err
	}
	if p.conns == nil {
		p.conns = map[string]*grpc.ClientConn{}
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peerClients) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
