package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The peer service's calls on the path of every linearizable read (a
// follower asking the leader for a read index, the leader asking the
// voters for their terms) and of lease keep-alives travel on the call
// stream, framed like forwarded writes, rather than as gRPC calls: a unary
// call on this machine cost as much as the rest of a read through a
// follower, which makes two. etcd sends the same exchanges as Raft messages
// on its peer streams.
//
//	request (caller → callee): uvarint id, uvarint len, method name,
//	                           uvarint timeout in µs (0: none), uvarint len, request
//	answer: a forwarded write's answer (forwardstream.go), the response as its
//	        body and 0 as its index
//
// The callee runs the peer service's own handler for the method, so both
// ways give the same answers and errors. A call the stream could not send
// (a member without it, or unreachable) is made over gRPC instead.

// streamedCalls are the peer methods callPeer sends on the call stream.
var streamedCalls = map[string]bool{"ReadIndex": true, "Term": true, "LeaseKeepAlive": true}

// peerHandlers are the peer service's methods by name.
var peerHandlers = func() map[string]grpc.MethodDesc {
	m := make(map[string]grpc.MethodDesc, len(peerServiceDesc.Methods))
	for _, md := range peerServiceDesc.Methods {
		m[md.MethodName] = md
	}
	return m
}()

// maxCallMethod bounds a method name on the call stream.
const maxCallMethod = 64

// callRequest is one call read off the call stream.
type callRequest struct {
	id      uint64
	method  string
	timeout time.Duration // 0: none
	body    []byte
}

func appendCallRequest(b []byte, r callRequest) []byte {
	b = binary.AppendUvarint(b, r.id)
	b = binary.AppendUvarint(b, uint64(len(r.method)))
	b = append(b, r.method...)
	b = binary.AppendUvarint(b, uint64(r.timeout/time.Microsecond))
	b = binary.AppendUvarint(b, uint64(len(r.body)))
	return append(b, r.body...)
}

func readCallRequest(r *bufio.Reader) (callRequest, error) {
	var c callRequest
	var err error
	if c.id, err = binary.ReadUvarint(r); err != nil {
		return c, err
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return c, err
	}
	if n > maxCallMethod {
		return c, fmt.Errorf("peer call method of %d bytes", n)
	}
	name := make([]byte, n)
	if _, err := io.ReadFull(r, name); err != nil {
		return c, err
	}
	c.method = string(name)
	us, err := binary.ReadUvarint(r)
	if err != nil {
		return c, err
	}
	if us > uint64(time.Hour/time.Microsecond) {
		us = uint64(time.Hour / time.Microsecond)
	}
	c.timeout = time.Duration(us) * time.Microsecond
	c.body, err = readFrameBytes(r)
	return c, err
}

// readCall reads one peer call and returns the work that answers it.
func (s *Server) readCall(r *bufio.Reader) (func(context.Context) forwardAnswer, error) {
	c, err := readCallRequest(r)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) forwardAnswer { return s.answerCall(ctx, c) }, nil
}

// answerCall runs a peer call through the peer service's handler.
func (s *Server) answerCall(ctx context.Context, c callRequest) forwardAnswer {
	md, ok := peerHandlers[c.method]
	if !ok {
		return forwardAnswer{id: c.id, err: status.Errorf(codes.Unimplemented, "unknown peer method %q", c.method)}
	}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	dec := func(m any) error { return proto.Unmarshal(c.body, m.(proto.Message)) }
	res, err := md.Handler(s, ctx, dec, nil)
	if err != nil {
		return forwardAnswer{id: c.id, err: err}
	}
	b, err := proto.Marshal(res.(proto.Message))
	if err != nil {
		return forwardAnswer{id: c.id, err: toGRPC(err)}
	}
	return forwardAnswer{id: c.id, resp: b}
}

// call makes a peer call on the stream to addr; the caller's deadline goes
// with it.
func (f *forwarder) call(ctx context.Context, addr, method string, req, resp proto.Message) error {
	body, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	var timeout time.Duration
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Microsecond)
	}
	a, err := f.roundTrip(ctx, addr, func(id uint64) []byte {
		return appendCallRequest(nil, callRequest{id: id, method: method, timeout: timeout, body: body})
	})
	if err != nil {
		return err
	}
	if a.err != nil {
		return a.err
	}
	return proto.Unmarshal(a.resp, resp)
}

// callPeer invokes a method of the peer service at addr: on the call
// stream for streamedCalls, over gRPC for the rest and for a call the
// stream could not send.
func (s *Server) callPeer(ctx context.Context, addr, method string, req, resp proto.Message) error {
	if streamedCalls[method] {
		err := s.caller.call(ctx, addr, method, req, resp)
		if !errors.Is(err, errForwardUnsent) {
			return err
		}
	}
	c, err := s.peers.get(addr)
	if err != nil {
		return err
	}
	return c.Invoke(ctx, "/"+peerService+"/"+method, req, resp)
}
