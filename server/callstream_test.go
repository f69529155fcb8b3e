package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestCallRequestRoundTrip(t *testing.T) {
	for _, c := range []callRequest{
		{id: 1, method: "Term"},
		{id: 1 << 40, method: "ReadIndex", timeout: 1500 * time.Millisecond, body: []byte{1, 2, 3}},
	} {
		got, err := readCallRequest(bufio.NewReader(bytes.NewReader(appendCallRequest(nil, c))))
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if got.id != c.id || got.method != c.method || got.timeout != c.timeout || !bytes.Equal(got.body, c.body) {
			t.Fatalf("got %+v, want %+v", got, c)
		}
	}
}

// Decoding whatever a peer sends never panics, and a decoded request
// encodes back to the same request.
func FuzzReadCallRequest(f *testing.F) {
	f.Add(appendCallRequest(nil, callRequest{id: 3, method: "Term", timeout: time.Second, body: []byte("x")}))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})               // a 4 GiB method name
	f.Add([]byte{1, 1, 'T', 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}) // a timeout of ages
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := readCallRequest(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		if len(c.method) > maxCallMethod || c.timeout > time.Hour {
			t.Fatalf("decoded past the bounds: %+v", c)
		}
		again, err := readCallRequest(bufio.NewReader(bytes.NewReader(appendCallRequest(nil, c))))
		if err != nil || again.id != c.id || again.method != c.method || again.timeout != c.timeout || !bytes.Equal(again.body, c.body) {
			t.Fatalf("%+v re-read as %+v, %v", c, again, err)
		}
	})
}

// freePort returns a 127.0.0.1 address nothing listens on just now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The call stream gives what the peer service gives over gRPC: the same
// term and read index of a running member, and an error for a method it
// does not have.
func TestPeerCallsOnStreamMatchGRPC(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Name = "c1"
	cfg.DataDir = t.TempDir()
	peer, client := "http://"+freePort(t), "http://"+freePort(t)
	cfg.ListenPeerURLs, cfg.InitialAdvertisePeerURLs = []string{peer}, []string{peer}
	cfg.ListenClientURLs, cfg.AdvertiseClientURLs = []string{client}, []string{client}
	cfg.InitialCluster = "c1=" + peer
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for deadline := time.Now().Add(10 * time.Second); !s.node.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the member did not become leader")
		}
	}
	addr := peer[len("http://"):]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := s.peers.get(addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{"Term", "ReadIndex"} {
		var onStream, onGRPC wrapperspb.UInt64Value
		if err := s.caller.call(ctx, addr, method, &emptypb.Empty{}, &onStream); err != nil {
			t.Fatalf("%s on the call stream: %v", method, err)
		}
		if err := conn.Invoke(ctx, "/"+peerService+"/"+method, &emptypb.Empty{}, &onGRPC); err != nil {
			t.Fatalf("%s over gRPC: %v", method, err)
		}
		if onStream.Value == 0 || onStream.Value != onGRPC.Value {
			t.Fatalf("%s: %d on the call stream, %d over gRPC", method, onStream.Value, onGRPC.Value)
		}
	}
	err = s.caller.call(ctx, addr, "NoSuchMethod", &emptypb.Empty{}, &emptypb.Empty{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("an unknown method on the call stream: %v, want Unimplemented", err)
	}
}

// A member without the call stream (one of an older version: its peer port
// hands the unknown protocol to gRPC, which drops it) still answers:
// callPeer makes the call over gRPC.
func TestPeerCallFallsBackToGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	g.RegisterService(&peerServiceDesc, &Server{}) // Raft not started: every method says so
	go g.Serve(ln)
	defer g.Stop()

	d := &peerDialer{}
	s := &Server{peers: &peerClients{dialer: d}, caller: &forwarder{magic: callMagic, dialer: d, clusterID: func() uint64 { return 1 }}}
	defer s.peers.close()
	defer s.caller.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := ln.Addr().String()
	if err := s.caller.call(ctx, addr, "Term", &emptypb.Empty{}, &wrapperspb.UInt64Value{}); !errors.Is(err, errForwardUnsent) {
		t.Fatalf("the call stream to a gRPC-only port: %v, want it unsent", err)
	}
	err = s.callPeer(ctx, addr, "Term", &emptypb.Empty{}, &wrapperspb.UInt64Value{})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || st.Message() != status.Convert(errPeerStarting).Message() {
		t.Fatalf("callPeer to a gRPC-only member: %v, want its own answer %v", err, errPeerStarting)
	}
}
