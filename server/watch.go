package server

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/ballast-kv/ballast/mvcc"
)

type watchServer struct {
	pb.UnimplementedWatchServer
	s *Server
}

// watchSession is one client watch stream: recv handles requests, send is
// the only writer to the gRPC stream. Control responses (created, canceled)
// go through ctrl; events for a watch are held back until its created
// response has gone out, as etcd does.
type watchSession struct {
	s        *Server
	stream   pb.Watch_WatchServer
	ws       *mvcc.WatchStream
	ctrl     chan control
	progress map[int64]bool // watch ids with progress_notify
	fragment map[int64]bool
	active   map[int64]bool // ids whose events were sent since the last tick
}

func (w *watchServer) Watch(stream pb.Watch_WatchServer) error {
	w.s.metrics.watchStreams.Inc()
	defer w.s.metrics.watchStreams.Dec()
	sess := &watchSession{
		s: w.s, stream: stream, ws: w.s.kv.NewWatchStream(),
		ctrl: make(chan control, 64),
	}
	defer sess.ws.Close()
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	recvErr := make(chan error, 1)
	go func() { recvErr <- sess.recv(ctx) }()
	sendErr := make(chan error, 1)
	go func() { sendErr <- sess.send(ctx) }()
	select {
	case err := <-recvErr:
		cancel()
		<-sendErr
		if errors.Is(err, io.EOF) {
			return nil
		}
		if stream.Context().Err() != nil {
			return rpctypes.ErrGRPCWatchCanceled
		}
		return err
	case err := <-sendErr:
		return err
	}
}

// control is a created or canceled response, with the options of a newly
// created watch that send needs.
type control struct {
	resp               *pb.WatchResponse
	progress, fragment bool
}

func (ss *watchSession) recv(ctx context.Context) error {
	for {
		req, err := ss.stream.Recv()
		if err != nil {
			return err
		}
		var resp control
		switch {
		case req.GetCreateRequest() != nil:
			c := req.GetCreateRequest()
			ss.s.catchUp(ctx)
			resp = control{resp: ss.create(c), progress: c.ProgressNotify, fragment: c.Fragment}
		case req.GetCancelRequest() != nil:
			id := req.GetCancelRequest().WatchId
			if !ss.ws.Cancel(id) {
				continue // etcd does not answer an unknown id
			}
			resp = control{resp: &pb.WatchResponse{Header: ss.s.header(nil), WatchId: id, Canceled: true}}
		case req.GetProgressRequest() != nil:
			ss.ws.RequestProgress(-1)
			continue
		default:
			continue
		}
		select {
		case ss.ctrl <- resp:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (ss *watchSession) create(c *pb.WatchCreateRequest) *pb.WatchResponse {
	fail := func(reason string) *pb.WatchResponse {
		return &pb.WatchResponse{Header: ss.s.header(nil), WatchId: -1, Created: true, Canceled: true, CancelReason: reason}
	}
	if c.StartRevision < 0 {
		return fail(rpctypes.ErrCompacted.Error())
	}
	key := c.Key
	if len(key) == 0 {
		key = []byte{0}
	}
	if _, err := ss.s.authorize(ss.stream.Context(), methodWatch, &pb.WatchCreateRequest{Key: key, RangeEnd: c.RangeEnd}); err != nil {
		// As etcd: a denied watch is created and canceled at once.
		return fail(err.Error())
	}
	var end []byte
	if len(c.RangeEnd) == 1 && c.RangeEnd[0] == 0 {
		end = []byte{}
	} else if len(c.RangeEnd) > 0 {
		end = c.RangeEnd
	}
	o := mvcc.WatchOptions{PrevKV: c.PrevKv}
	for _, f := range c.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			o.NoPut = true
		case pb.WatchCreateRequest_NODELETE:
			o.NoDelete = true
		}
	}
	id, rev, err := ss.ws.Watch(c.WatchId, key, end, c.StartRevision, o)
	if err != nil {
		return fail(err.Error())
	}
	return &pb.WatchResponse{Header: ss.s.header(&pb.ResponseHeader{Revision: rev}), WatchId: id, Created: true}
}

func (ss *watchSession) send(ctx context.Context) error {
	created := map[int64]bool{}
	pending := map[int64][]*pb.WatchResponse{}
	ss.progress, ss.fragment, ss.active = map[int64]bool{}, map[int64]bool{}, map[int64]bool{}
	interval := ss.s.cfg.WatchProgressNotifyInterval
	tick := time.NewTicker(interval + time.Duration(rand.Int64N(int64(interval)/10+1)))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-ss.ctrl:
			r := c.resp
			if r.Created && !r.Canceled {
				ss.progress[r.WatchId] = c.progress
				ss.fragment[r.WatchId] = c.fragment
			}
			if err := ss.stream.Send(r); err != nil {
				return err
			}
			if r.Canceled {
				delete(created, r.WatchId)
				delete(pending, r.WatchId)
				delete(ss.progress, r.WatchId)
				delete(ss.fragment, r.WatchId)
				continue
			}
			created[r.WatchId] = true
			for _, p := range pending[r.WatchId] {
				if err := ss.sendEvents(p); err != nil {
					return err
				}
			}
			delete(pending, r.WatchId)
		case hr := <-ss.ws.Chan():
			for _, hr := range coalesce(hr, ss.ws.Chan()) {
				r := ss.toWire(hr)
				if hr.WatchID != -1 && !created[hr.WatchID] {
					pending[hr.WatchID] = append(pending[hr.WatchID], r)
					continue
				}
				if err := ss.sendEvents(r); err != nil {
					return err
				}
			}
		case <-tick.C:
			for id, on := range ss.progress {
				if on && !ss.active[id] {
					ss.ws.RequestProgress(id)
				}
			}
			ss.active = map[int64]bool{}
		}
	}
}

// coalesceBytes bounds the keys and values of one coalesced response.
const coalesceBytes = 1 << 20

// coalesce takes first and the responses already queued behind it, at most
// a stream buffer's worth, and joins consecutive event responses of the
// same watcher into one. A synced watcher gets a response per revision;
// when its client reads more slowly than revisions come, one message per
// batch of revisions instead of per revision is what lets it keep up
// rather than fall behind into catch-up from disk. etcd's clients take
// responses of many revisions (catch-up sends them); the header revision
// is the last one's. Progress notifications and cancellations stay
// messages of their own, in order.
func coalesce(first mvcc.WatchResponse, ch <-chan mvcc.WatchResponse) []mvcc.WatchResponse {
	out := []mvcc.WatchResponse{first}
	size := eventBytes(first.Events)
	for range cap(ch) {
		var next mvcc.WatchResponse
		select {
		case next = <-ch:
		default:
			return out
		}
		last := &out[len(out)-1]
		n := eventBytes(next.Events)
		if last.WatchID == next.WatchID && last.WatchID != -1 && len(last.Events) > 0 && len(next.Events) > 0 &&
			last.CompactRevision == 0 && next.CompactRevision == 0 && size+n <= coalesceBytes {
			// Clip: the first append copies, never writing into a slice
			// the hub handed over.
			last.Events = append(slices.Clip(last.Events), next.Events...)
			last.Revision = next.Revision
			size += n
			continue
		}
		out = append(out, next)
		size = n
	}
	return out
}

func eventBytes(evs []*mvccpb.Event) int {
	n := 0
	for _, ev := range evs {
		n += mvcc.KVBytes(ev.Kv) + mvcc.KVBytes(ev.PrevKv)
	}
	return n
}

func (ss *watchSession) toWire(hr mvcc.WatchResponse) *pb.WatchResponse {
	r := &pb.WatchResponse{WatchId: hr.WatchID, Events: hr.Events}
	if hr.CompactRevision != 0 {
		r.CompactRevision, r.Canceled = hr.CompactRevision, true
		r.Header = ss.s.header(&pb.ResponseHeader{})
		r.Header.Revision = 0 // etcd sends revision 0 on a compaction cancel
		return r
	}
	r.Header = ss.s.header(&pb.ResponseHeader{Revision: hr.Revision})
	return r
}

// sendEvents sends r, split into fragments when the watch asked for them
// and r is over the limit (max request bytes plus gRPC overhead).
func (ss *watchSession) sendEvents(r *pb.WatchResponse) error {
	if len(r.Events) > 0 {
		ss.active[r.WatchId] = true
	}
	limit := ss.s.cfg.MaxRequestBytes + 512*1024
	if !ss.fragment[r.WatchId] || len(r.Events) < 2 || proto.Size(r) < limit {
		return ss.stream.Send(r)
	}
	events := r.Events
	for len(events) > 0 {
		cur := &pb.WatchResponse{Header: r.Header, WatchId: r.WatchId, Fragment: true}
		n := 0
		for _, ev := range events {
			cur.Events = append(cur.Events, ev)
			if len(cur.Events) > 1 && proto.Size(cur) >= limit {
				cur.Events = cur.Events[:len(cur.Events)-1]
				break
			}
			n++
		}
		events = events[n:]
		if len(events) == 0 {
			cur.Fragment = false
		}
		if err := ss.stream.Send(cur); err != nil {
			return err
		}
	}
	return nil
}

// catchUp lets a follower apply every write acknowledged before a watch is
// created, so that a watch "from now" on any member starts after them (in
// etcd a follower may still be a few entries behind). Without a leader it
// gives up after an election timeout and the watch starts from what this
// member has.
func (s *Server) catchUp(ctx context.Context) {
	if s.node.IsLeader() {
		return // the leader applied every write it acknowledged
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ElectionTimeout)
	defer cancel()
	s.node.LinearizableBarrier(ctx)
}
