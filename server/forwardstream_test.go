package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Answers keep what a follower needs: the index and response bytes, or the
// etcd error a client must get (clients match on its message).
func TestForwardAnswerRoundTrip(t *testing.T) {
	for _, a := range []forwardAnswer{
		{id: 1, index: 42, resp: []byte("response")},
		{id: 1 << 40, index: 1, resp: nil},
		{id: 7, err: rpctypes.ErrGRPCLeaseNotFound},
		{id: 8, err: rpctypes.ErrGRPCNotLeader},
	} {
		b := appendForwardAnswer(nil, a)
		got, err := readForwardAnswer(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("%+v: %v", a, err)
		}
		if got.id != a.id || got.index != a.index || !bytes.Equal(got.resp, a.resp) {
			t.Fatalf("got %+v, want %+v", got, a)
		}
		if a.err != nil && !errors.Is(rpctypes.Error(got.err), rpctypes.Error(a.err)) {
			t.Fatalf("error %v came back as %v", a.err, got.err)
		}
	}
	if errPeerNotLeader(appendAndRead(t, forwardAnswer{id: 1, err: rpctypes.ErrGRPCNotLeader}).err) == false {
		t.Fatal("a not-leader answer is not recognised as one")
	}
}

func appendAndRead(t *testing.T, a forwardAnswer) forwardAnswer {
	got, err := readForwardAnswer(bufio.NewReader(bytes.NewReader(appendForwardAnswer(nil, a))))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// A leader that drops the connection after receiving a write leaves that
// write's outcome unknown (etcd's "request timed out"); the next write
// opens a new connection and gets its answer.
func TestForwarderLostConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const cluster = 0xc1
	// serve accepts one connection, checks the handshake, reads one write
	// and either drops the connection or answers it.
	serve := func(answer bool) <-chan error {
		done := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			defer c.Close()
			var hello [9]byte
			if _, err := io.ReadFull(c, hello[:]); err != nil || hello[0] != forwardMagic || binary.BigEndian.Uint64(hello[1:]) != cluster {
				done <- errors.New("bad handshake")
				return
			}
			c.Write([]byte{0})
			r := bufio.NewReader(c)
			id, err := binary.ReadUvarint(r)
			if err != nil {
				done <- err
				return
			}
			data, err := readFrameBytes(r)
			if err != nil || string(data) != "entry" {
				done <- errors.New("bad request frame")
				return
			}
			if answer {
				_, err = c.Write(appendForwardAnswer(nil, forwardAnswer{id: id, index: 9, resp: []byte("ok")}))
			}
			done <- err
		}()
		return done
	}
	f := &forwarder{magic: forwardMagic, dialer: &peerDialer{}, clusterID: func() uint64 { return cluster }}
	defer f.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	done := serve(false)
	_, _, err = f.propose(ctx, ln.Addr().String(), []byte("entry"))
	if !errors.Is(err, rpctypes.ErrGRPCTimeout) {
		t.Fatalf("write on a dropped connection: %v, want %v", err, rpctypes.ErrGRPCTimeout)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done = serve(true)
	// The old stream may still be closing: a write that finds it gone was
	// never sent and may be sent again.
	var index uint64
	var resp []byte
	for {
		index, resp, err = f.propose(ctx, ln.Addr().String(), []byte("entry"))
		if !errors.Is(err, errForwardUnsent) && !errors.Is(err, rpctypes.ErrGRPCTimeout) {
			break
		}
	}
	if err != nil || index != 9 || string(resp) != "ok" {
		t.Fatalf("write after reconnecting: index %d, response %q, %v", index, resp, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Decoding whatever a peer sends never panics or allocates beyond the
// frame bound, and a decoded answer encodes back to the same bytes.
func FuzzReadForwardAnswer(f *testing.F) {
	f.Add(appendForwardAnswer(nil, forwardAnswer{id: 3, index: 5, resp: []byte("x")}))
	f.Add(appendForwardAnswer(nil, forwardAnswer{id: 3, err: rpctypes.ErrGRPCNoSpace}))
	f.Add([]byte{1, 2, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0x03}) // claims a 1 GiB body
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := readForwardAnswer(bufio.NewReader(bytes.NewReader(b)))
		if err != nil || a.err != nil {
			return
		}
		again, err := readForwardAnswer(bufio.NewReader(bytes.NewReader(appendForwardAnswer(nil, a))))
		if err != nil || again.id != a.id || again.index != a.index || !bytes.Equal(again.resp, a.resp) {
			t.Fatalf("%+v re-encoded as %+v (%v)", a, again, err)
		}
	})
}
