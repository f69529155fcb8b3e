package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Writes a follower receives travel to the leader on one long-lived stream
// per leader rather than as gRPC calls: a unary call costs two HTTP/2
// streams' worth of framing, headers and goroutine hand-offs on each side,
// which on a small machine was a fifth of a forwarded write's latency. Like
// etcd's forwarded proposals (Raft messages on its peer streams), these are
// length-prefixed frames on a plain connection; requests and answers are
// matched by an id, and frames queued together go out in one write.
//
//	request (follower → leader): uvarint id, uvarint len, entry data
//	answer (leader → follower):  uvarint id, byte 0, uvarint len, uvarint index + response
//	                         or: uvarint id, byte 1, uvarint gRPC code, uvarint len, message
//
// A connection that breaks fails the writes in flight on it with an unknown
// outcome, as a lost gRPC call did.

// maxForwardFrame bounds a frame, as the peer gRPC service bounds a message.
const maxForwardFrame = 1 << 30

// errForwardUnsent is a forwarded write that never reached the leader: it
// can be sent again.
var errForwardUnsent = errors.New("ballast: leader unreachable")

// forwardAnswer is the leader's answer to one forwarded write.
type forwardAnswer struct {
	id    uint64
	index uint64
	resp  []byte
	err   error
}

func appendForwardAnswer(b []byte, a forwardAnswer) []byte {
	b = binary.AppendUvarint(b, a.id)
	if a.err != nil {
		st := status.Convert(a.err)
		b = append(b, 1)
		b = binary.AppendUvarint(b, uint64(st.Code()))
		b = binary.AppendUvarint(b, uint64(len(st.Message())))
		return append(b, st.Message()...)
	}
	b = append(b, 0)
	idx := binary.AppendUvarint(nil, a.index)
	b = binary.AppendUvarint(b, uint64(len(idx)+len(a.resp)))
	b = append(b, idx...)
	return append(b, a.resp...)
}

// readFrameBytes reads a uvarint length and that many bytes.
func readFrameBytes(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > maxForwardFrame {
		return nil, fmt.Errorf("forward frame of %d bytes", n)
	}
	if n <= 64<<10 {
		b := make([]byte, n)
		_, err = io.ReadFull(r, b)
		return b, err
	}
	// Grow with what arrives: a length alone does not get a large buffer.
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, r, int64(n)); err != nil {
		return nil, io.ErrUnexpectedEOF
	}
	return buf.Bytes(), nil
}

func readForwardAnswer(r *bufio.Reader) (forwardAnswer, error) {
	var a forwardAnswer
	var err error
	if a.id, err = binary.ReadUvarint(r); err != nil {
		return a, err
	}
	kind, err := r.ReadByte()
	if err != nil {
		return a, err
	}
	switch kind {
	case 0:
		body, err := readFrameBytes(r)
		if err != nil {
			return a, err
		}
		index, n := binary.Uvarint(body)
		if n <= 0 {
			return a, errors.New("forward answer without an index")
		}
		a.index, a.resp = index, body[n:]
	case 1:
		code, err := binary.ReadUvarint(r)
		if err != nil {
			return a, err
		}
		msg, err := readFrameBytes(r)
		if err != nil {
			return a, err
		}
		a.err = status.Error(codes.Code(code), string(msg))
	default:
		return a, fmt.Errorf("forward answer of kind %d", kind)
	}
	return a, nil
}

// frameWriter sends queued frames, flushing when the queue runs dry so that
// frames queued together share a write.
func frameWriter(c net.Conn, queue <-chan []byte, done <-chan struct{}, fail func(error)) {
	w := bufio.NewWriterSize(c, 64<<10)
	for {
		var f []byte
		select {
		case f = <-queue:
		case <-done:
			return
		}
		if _, err := w.Write(f); err != nil {
			fail(err)
			return
		}
		if len(queue) == 0 {
			if err := w.Flush(); err != nil {
				fail(err)
				return
			}
		}
	}
}

// serveStreams serves the connections of one stream protocol (forwarded
// writes, peer calls): read takes a request off the connection and returns
// the work that answers it, which runs on its own goroutine.
func (s *Server) serveStreams(ln *chanListener, read func(*bufio.Reader) (func(context.Context) forwardAnswer, error)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go s.serveStream(c, read)
	}
}

func (s *Server) serveStream(c net.Conn, read func(*bufio.Reader) (func(context.Context) forwardAnswer, error)) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	go func() {
		select {
		case <-s.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	queue := make(chan []byte, 1024)
	go frameWriter(c, queue, ctx.Done(), func(error) { cancel() })
	r := bufio.NewReaderSize(c, 64<<10)
	for {
		answer, err := read(r)
		if err != nil {
			return
		}
		go func() {
			a := answer(ctx)
			select {
			case queue <- appendForwardAnswer(nil, a):
			case <-ctx.Done():
			}
		}()
	}
}

// readForward reads one forwarded write.
func (s *Server) readForward(r *bufio.Reader) (func(context.Context) forwardAnswer, error) {
	id, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	data, err := readFrameBytes(r)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) forwardAnswer { return s.answerForward(ctx, id, data) }, nil
}

// answerForward proposes a follower's write here, the leader.
func (s *Server) answerForward(ctx context.Context, id uint64, data []byte) forwardAnswer {
	if !s.raftStarted.Load() {
		return forwardAnswer{id: id, err: errPeerStarting}
	}
	if !s.node.IsLeader() {
		return forwardAnswer{id: id, err: rpctypes.ErrGRPCNotLeader}
	}
	res, index, err := s.proposeHere(ctx, data)
	if err != nil {
		return forwardAnswer{id: id, err: toGRPC(err)}
	}
	b, err := proto.Marshal(res)
	if err != nil {
		return forwardAnswer{id: id, err: toGRPC(err)}
	}
	return forwardAnswer{id: id, index: index, resp: b}
}

// forwarder keeps this member's stream of one protocol (magic) to each
// member it has sent requests to: forwarded writes to leaders, or peer
// calls.
type forwarder struct {
	magic     byte
	dialer    *peerDialer
	clusterID func() uint64
	mu        sync.Mutex
	streams   map[string]*forwardStream
	closed    bool
}

// forwardStream is one connection to a member and the requests in flight
// on it.
type forwardStream struct {
	f     *forwarder
	addr  string
	conn  net.Conn
	queue chan []byte
	done  chan struct{} // closed when the connection is gone
	once  sync.Once

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan forwardAnswer
}

// propose sends an entry to the leader at addr and returns its index and
// the encoded response.
func (f *forwarder) propose(ctx context.Context, addr string, data []byte) (uint64, []byte, error) {
	a, err := f.roundTrip(ctx, addr, func(id uint64) []byte {
		frame := binary.AppendUvarint(nil, id)
		frame = binary.AppendUvarint(frame, uint64(len(data)))
		return append(frame, data...)
	})
	if err != nil {
		return 0, nil, err
	}
	return a.index, a.resp, a.err
}

// roundTrip sends the request frame(id) to addr and waits for its answer. A
// request that never left gets errForwardUnsent; one sent on a connection
// that broke before the answer has an unknown outcome, a timeout.
func (f *forwarder) roundTrip(ctx context.Context, addr string, frame func(id uint64) []byte) (forwardAnswer, error) {
	st, err := f.stream(ctx, addr)
	if err != nil {
		return forwardAnswer{}, err
	}
	ch := make(chan forwardAnswer, 1)
	st.mu.Lock()
	st.nextID++
	id := st.nextID
	st.pending[id] = ch
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		delete(st.pending, id)
		st.mu.Unlock()
	}()
	select {
	case st.queue <- frame(id):
	case <-st.done:
		return forwardAnswer{}, errForwardUnsent
	case <-ctx.Done():
		return forwardAnswer{}, toGRPC(ctx.Err())
	}
	select {
	case a := <-ch:
		return a, nil
	case <-st.done:
		// Sent, perhaps applied: the outcome is unknown.
		return forwardAnswer{}, rpctypes.ErrGRPCTimeout
	case <-ctx.Done():
		return forwardAnswer{}, toGRPC(ctx.Err())
	}
}

// stream returns the open stream to addr, dialling one if needed.
func (f *forwarder) stream(ctx context.Context, addr string) (*forwardStream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, rpctypes.ErrGRPCStopped
	}
	if st := f.streams[addr]; st != nil {
		return st, nil
	}
	dctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	c, err := f.dialer.dialStream(dctx, addr, f.magic, f.clusterID())
	if err != nil {
		if errors.Is(err, errClusterMismatch) {
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
		return nil, errForwardUnsent
	}
	st := &forwardStream{f: f, addr: addr, conn: c, queue: make(chan []byte, 1024), done: make(chan struct{}), pending: map[uint64]chan forwardAnswer{}}
	if f.streams == nil {
		f.streams = map[string]*forwardStream{}
	}
	f.streams[addr] = st
	go frameWriter(c, st.queue, st.done, func(error) { st.close() })
	go st.readAnswers()
	return st, nil
}

func (st *forwardStream) readAnswers() {
	defer st.close()
	r := bufio.NewReaderSize(st.conn, 64<<10)
	for {
		a, err := readForwardAnswer(r)
		if err != nil {
			return
		}
		st.mu.Lock()
		ch := st.pending[a.id]
		st.mu.Unlock()
		if ch != nil {
			ch <- a
		}
	}
}

// close drops the stream: writes in flight fail, the next one redials.
func (st *forwardStream) close() {
	st.once.Do(func() {
		close(st.done)
		st.conn.Close()
		st.f.mu.Lock()
		if st.f.streams[st.addr] == st {
			delete(st.f.streams, st.addr)
		}
		st.f.mu.Unlock()
	})
}

func (f *forwarder) close() {
	f.mu.Lock()
	f.closed = true
	streams := make([]*forwardStream, 0, len(f.streams))
	for _, st := range f.streams {
		streams = append(streams, st)
	}
	f.mu.Unlock()
	for _, st := range streams {
		st.close()
	}
}
