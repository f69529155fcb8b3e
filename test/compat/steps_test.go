package compat

// Lease and watch steps. They use the raw gRPC stubs on the client's
// connection rather than clientv3's wrappers, so that what is compared is
// exactly what the server sent (clientv3 hides watch creation and
// cancellation responses and rewrites lease responses).

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

func leaseClient(tg *target) pb.LeaseClient { return pb.NewLeaseClient(tg.cli.ActiveConnection()) }

// grantClient grants leases. On a cluster it is always the first member:
// lease IDs come from the granting member's ID generator (in etcd too), so
// grants spread over members would order IDs differently from a single
// etcd, and scripts compare leases by ID.
func grantClient(tg *target) pb.LeaseClient {
	if len(tg.members) > 0 {
		return pb.NewLeaseClient(tg.members[0].ActiveConnection())
	}
	return leaseClient(tg)
}

// grant grants a lease chosen by the server; it becomes L<n> of the case.
func grant(ttl int64) step { return grantID(0, ttl) }

// grantID grants a lease with a client-chosen ID (0: server-chosen).
func grantID(id, ttl int64) step {
	desc := fmt.Sprintf("lease grant ttl=%d", ttl)
	if id != 0 {
		desc += fmt.Sprintf(" id=%#x", id)
	}
	return step{desc: desc, run: func(ctx context.Context, tg *target) string {
		resp, err := grantClient(tg).LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: ttl})
		if err == nil && resp.Error == "" {
			tg.addLease(resp.ID)
		}
		return tg.render(resp, err)
	}}
}

func revoke(l leaseArg) step {
	return step{desc: "lease revoke " + l.String(), run: func(ctx context.Context, tg *target) string {
		resp, err := leaseClient(tg).LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: l.resolve(tg)})
		return tg.render(resp, err)
	}}
}

func timeToLive(l leaseArg, keys bool) step {
	desc := "lease timetolive " + l.String()
	if keys {
		desc += " --keys"
	}
	return step{desc: desc, run: func(ctx context.Context, tg *target) string {
		resp, err := leaseClient(tg).LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: l.resolve(tg), Keys: keys})
		return tg.render(resp, err)
	}}
}

func leases() step {
	return step{desc: "lease list", run: func(ctx context.Context, tg *target) string {
		resp, err := leaseClient(tg).LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
		return tg.render(resp, err)
	}}
}

func keepAliveOnce(l leaseArg) step {
	return step{desc: "lease keep-alive " + l.String(), run: func(ctx context.Context, tg *target) string {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		s, err := leaseClient(tg).LeaseKeepAlive(ctx)
		if err != nil {
			return tg.render(nil, err)
		}
		if err := s.Send(&pb.LeaseKeepAliveRequest{ID: l.resolve(tg)}); err != nil {
			return tg.render(nil, err)
		}
		resp, err := s.Recv()
		return tg.render(resp, err)
	}}
}

// waitGone polls until key k is gone (its lease expired), then reports the
// read that saw it gone.
func waitGone(k string, timeout time.Duration) step {
	return step{desc: fmt.Sprintf("wait until %s is gone (at most %v)", q(k), timeout), run: func(ctx context.Context, tg *target) string {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			resp, err := tg.cli.Get(ctx, k)
			if err == nil && len(resp.Kvs) == 0 {
				return tg.render((*pb.RangeResponse)(resp), nil)
			}
			select {
			case <-ctx.Done():
				return fmt.Sprintf("still present after %v: %s", timeout, tg.render((*pb.RangeResponse)(resp), err))
			case <-tick.C:
			}
		}
	}}
}

// restart stops the server with SIGTERM and starts it again on the same data
// directory (a cluster: every member in turn), then reports the current
// revision.
func restart() step {
	return step{desc: "restart the server", serial: true, run: func(ctx context.Context, tg *target) string {
		for _, n := range tg.nodes {
			n.Restart()
		}
		resp, err := tg.cli.Get(ctx, "compat-sync")
		return tg.render((*pb.RangeResponse)(resp), err)
	}}
}

// wopt is an option of a watch step.
type wopt struct {
	desc   string
	req    func(tg *target, r *pb.WatchCreateRequest)
	during []step
	cancel bool
}

func wPrefix() wopt {
	return wopt{desc: "--prefix", req: func(_ *target, r *pb.WatchCreateRequest) {
		r.RangeEnd = []byte(clientv3.GetPrefixRangeEnd(string(r.Key)))
	}}
}

func wRangeEnd(e string) wopt {
	return wopt{desc: "--range-end=" + q(e), req: func(_ *target, r *pb.WatchCreateRequest) { r.RangeEnd = []byte(e) }}
}

func wFromKey() wopt { return wRangeEnd("\x00") }

func wStart(rev revArg) wopt {
	return wopt{desc: fmt.Sprintf("--rev=%v", rev), req: func(tg *target, r *pb.WatchCreateRequest) { r.StartRevision = rev.resolve(tg) }}
}

func wPrevKV() wopt {
	return wopt{desc: "--prev-kv", req: func(_ *target, r *pb.WatchCreateRequest) { r.PrevKv = true }}
}

func wNoPut() wopt {
	return wopt{desc: "--filter=noput", req: func(_ *target, r *pb.WatchCreateRequest) {
		r.Filters = append(r.Filters, pb.WatchCreateRequest_NOPUT)
	}}
}

func wNoDelete() wopt {
	return wopt{desc: "--filter=nodelete", req: func(_ *target, r *pb.WatchCreateRequest) {
		r.Filters = append(r.Filters, pb.WatchCreateRequest_NODELETE)
	}}
}

// wDuring runs steps after the watch is created and before it is drained.
func wDuring(steps ...step) wopt { return wopt{during: steps} }

// wCancel cancels the watch after draining it and reports the response.
func wCancel() wopt { return wopt{desc: "then cancel", cancel: true} }

// watch opens a watch stream, creates one watch, runs the wDuring steps, then
// reads until a progress notification arrives (see drain) and, with wCancel,
// cancels the watch. A watch whose start revision is ahead of the current
// revision after the wDuring steps never gets a progress notification from
// etcd, so scripts must not do that.
func watch(key string, opts ...wopt) step {
	parts := []string{"watch", q(key)}
	for _, o := range opts {
		if o.desc != "" {
			parts = append(parts, o.desc)
		}
	}
	return step{desc: strings.Join(parts, " "), run: func(ctx context.Context, tg *target) string {
		req := &pb.WatchCreateRequest{Key: []byte(key)}
		for _, o := range opts {
			if o.req != nil {
				o.req(tg, req)
			}
		}
		w := openWatch(ctx, tg, req)
		defer w.close()
		for _, o := range opts {
			for _, s := range o.during {
				if w.err == nil {
					w.section("during "+s.desc, s.exec(ctx, tg))
				}
			}
		}
		w.drain()
		if hasCancel(opts) {
			w.cancelWatch()
		}
		return w.out.String()
	}}
}

// liveWatch is one watch on its own stream, and the rendering of everything
// received on it. After an error it records the error and does nothing more.
type liveWatch struct {
	tg   *target
	wc   pb.Watch_WatchClient
	stop context.CancelFunc
	id   int64 // the watch ID the server assigned
	done bool  // the server canceled the watch
	// recvCh, set by background, delivers what a goroutine received.
	recvCh chan recvResult
	err    error
	out    strings.Builder
}

// openWatch creates a watch on a new stream that lives until close or
// until ctx is done, and records the creation response.
func openWatch(ctx context.Context, tg *target, req *pb.WatchCreateRequest) *liveWatch {
	ctx, stop := context.WithCancel(ctx)
	w := &liveWatch{tg: tg, stop: stop}
	w.wc, w.err = pb.NewWatchClient(tg.cli.ActiveConnection()).Watch(ctx)
	if w.fail("watch") {
		return w
	}
	w.err = w.wc.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: req}})
	if w.fail("send create") {
		return w
	}
	created, err := w.wc.Recv()
	w.err = err
	if w.fail("recv created") {
		return w
	}
	w.id = created.WatchId
	w.done = created.Canceled
	w.section("created", tg.render(created, nil))
	return w
}

func (w *liveWatch) section(title, body string) {
	w.out.WriteString(title + ":\n")
	for _, l := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
		w.out.WriteString("  " + l + "\n")
	}
}

// fail records w.err, if any, and reports whether there was one.
func (w *liveWatch) fail(what string) bool {
	if w.err == nil {
		return false
	}
	w.section(what+" failed", renderErr(w.err))
	return true
}

// read records everything received up to and including the first response
// for which stop is true. Progress notifications are recorded only when
// wanted: the fence in drain may cause several.
func (w *liveWatch) read(showProgress bool, stop func(*pb.WatchResponse) bool) error {
	for {
		resp, err := w.recv()
		if err != nil {
			return err
		}
		for _, ev := range resp.Events {
			w.section("event", w.tg.render(ev, nil))
		}
		switch {
		case isProgress(resp):
			if showProgress {
				w.section("progress", w.tg.render(resp, nil))
			}
		case resp.Created || resp.Canceled || resp.CompactRevision != 0:
			r := proto.Clone(resp).(*pb.WatchResponse)
			r.Events = nil
			w.section("response", w.tg.render(r, nil))
		}
		if resp.Canceled && resp.WatchId == w.id {
			w.done = true
		}
		if stop(resp) {
			return nil
		}
	}
}

// drain reads everything the server has for the watch up to its current
// revision. The fence: etcd answers a progress request only while every
// watcher of the stream has caught up (and drops it otherwise), so ask until
// the answer comes; everything before it is the complete stream. A watch the
// server canceled (compacted start revision) is complete when canceled.
func (w *liveWatch) drain() {
	if w.err != nil || w.done {
		return
	}
	stopAsking := make(chan struct{})
	asked := make(chan error, 1)
	go func() { asked <- askProgress(w.wc, stopAsking) }()
	w.err = w.read(true, func(r *pb.WatchResponse) bool { return isProgress(r) || w.done })
	close(stopAsking)
	if err := <-asked; w.err == nil {
		w.err = err
	}
	w.fail("recv until progress")
}

// cancelWatch cancels the watch and records the server's answer.
func (w *liveWatch) cancelWatch() {
	if w.err != nil || w.done {
		return
	}
	w.err = w.wc.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{
		CancelRequest: &pb.WatchCancelRequest{WatchId: w.id}}})
	if w.fail("send cancel") {
		return
	}
	w.err = w.read(false, func(*pb.WatchResponse) bool { return w.done })
	w.fail("recv until canceled")
}

type recvResult struct {
	resp *pb.WatchResponse
	err  error
}

// background keeps receiving in a goroutine from now on, so that a watch
// left open across many steps never makes the server hold events back. The
// responses are rendered later, by read, in the caller's goroutine.
func (w *liveWatch) background() {
	if w.err != nil {
		return
	}
	w.recvCh = make(chan recvResult, 1<<16)
	go func() {
		for {
			resp, err := w.wc.Recv()
			w.recvCh <- recvResult{resp, err}
			if err != nil {
				return
			}
		}
	}()
}

func (w *liveWatch) recv() (*pb.WatchResponse, error) {
	if w.recvCh == nil {
		return w.wc.Recv()
	}
	r := <-w.recvCh
	return r.resp, r.err
}

func (w *liveWatch) close() {
	if w.wc != nil {
		_ = w.wc.CloseSend()
	}
	w.stop()
}

// askProgress sends a progress request every 50ms until stop is closed.
func askProgress(wc pb.Watch_WatchClient, stop <-chan struct{}) error {
	req := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := wc.Send(req); err != nil {
			return err
		}
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
	}
}

func hasCancel(opts []wopt) bool {
	for _, o := range opts {
		if o.cancel {
			return true
		}
	}
	return false
}

// isProgress reports whether r is a progress notification: no events and
// nothing else to say.
func isProgress(r *pb.WatchResponse) bool {
	return len(r.Events) == 0 && !r.Created && !r.Canceled && r.CompactRevision == 0
}

// raw sends a request through the generated gRPC stubs, for requests that
// clientv3 cannot express (invalid enums, negative revisions, ...).
func raw(desc string, f func(ctx context.Context, tg *target) (proto.Message, error)) step {
	return step{desc: "raw " + desc, run: func(ctx context.Context, tg *target) string {
		resp, err := f(ctx, tg)
		return tg.render(resp, err)
	}}
}

func kvClient(tg *target) pb.KVClient { return pb.NewKVClient(tg.cli.ActiveConnection()) }

func rawRange(desc string, r *pb.RangeRequest) step {
	return raw("range "+desc, func(ctx context.Context, tg *target) (proto.Message, error) { return kvClient(tg).Range(ctx, r) })
}

func rawPut(desc string, r *pb.PutRequest) step {
	return raw("put "+desc, func(ctx context.Context, tg *target) (proto.Message, error) { return kvClient(tg).Put(ctx, r) })
}

func rawDel(desc string, r *pb.DeleteRangeRequest) step {
	return raw("delete-range "+desc, func(ctx context.Context, tg *target) (proto.Message, error) {
		return kvClient(tg).DeleteRange(ctx, r)
	})
}

func rawTxn(desc string, r *pb.TxnRequest) step {
	return raw("txn "+desc, func(ctx context.Context, tg *target) (proto.Message, error) { return kvClient(tg).Txn(ctx, r) })
}

func rawCompact(rev int64) step {
	return raw(fmt.Sprintf("compact %d", rev), func(ctx context.Context, tg *target) (proto.Message, error) {
		return kvClient(tg).Compact(ctx, &pb.CompactionRequest{Revision: rev})
	})
}

// wspec is one watch of a watchStream step; start, if set, overrides
// req.StartRevision.
type wspec struct {
	req   *pb.WatchCreateRequest
	start *revArg
}

// watchStream creates several watches on one stream and reads every creation
// response, runs the during steps, drains the stream (the progress fence of
// liveWatch.drain), then cancels the given watch IDs, reads the
// acknowledgements of those that exist and fences again. Responses are shown
// grouped by watch ID, since etcd does not order the responses of different
// watches; progress notifications are shown once per fence. A stream with no
// watch left, or with a watch canceled by compaction, gets no progress
// notification from etcd, so the fence is skipped for the first and scripts
// must avoid the second.
func watchStream(desc string, specs []wspec, during []step, cancels []int64) step {
	return step{desc: "watch-stream " + desc, run: func(ctx context.Context, tg *target) string {
		ctx, stop := context.WithCancel(ctx)
		defer stop()
		byID := map[int64]*strings.Builder{}
		var other strings.Builder
		add := func(b *strings.Builder, title, body string) {
			b.WriteString(title + ":\n")
			for _, l := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
				b.WriteString("  " + l + "\n")
			}
		}
		addID := func(id int64, title, body string) {
			if byID[id] == nil {
				byID[id] = &strings.Builder{}
			}
			add(byID[id], title, body)
		}
		finish := func(what string, err error) string {
			if err != nil {
				add(&other, what+" failed", renderErr(err))
			}
			ids := slices.Sorted(maps.Keys(byID))
			var out strings.Builder
			for _, id := range ids {
				fmt.Fprintf(&out, "watch %d:\n%s", id, byID[id].String())
			}
			out.WriteString(other.String())
			return out.String()
		}

		wc, err := pb.NewWatchClient(tg.cli.ActiveConnection()).Watch(ctx)
		if err != nil {
			return finish("watch", err)
		}
		defer wc.CloseSend()

		var (
			created   int
			progress  int
			lastProg  *pb.WatchResponse
			live      = map[int64]bool{}
			canceling = map[int64]bool{}
		)
		record := func(resp *pb.WatchResponse) {
			if isProgress(resp) {
				progress++
				lastProg = resp
				return
			}
			for _, ev := range resp.Events {
				addID(resp.WatchId, "event", tg.render(ev, nil))
			}
			if resp.Created || resp.Canceled || resp.CompactRevision != 0 {
				r := proto.Clone(resp).(*pb.WatchResponse)
				r.Events = nil
				addID(resp.WatchId, "response", tg.render(r, nil))
			}
			if resp.Created {
				created++
				live[resp.WatchId] = !resp.Canceled
			}
			if resp.Canceled && !resp.Created {
				delete(live, resp.WatchId)
				delete(canceling, resp.WatchId)
			}
		}
		recvUntil := func(done func() bool) error {
			for !done() {
				resp, err := wc.Recv()
				if err != nil {
					return err
				}
				record(resp)
			}
			return nil
		}
		fence := func() error {
			if !slices.Contains(slices.Collect(maps.Values(live)), true) {
				return nil
			}
			before := progress
			stopAsking := make(chan struct{})
			asked := make(chan error, 1)
			go func() { asked <- askProgress(wc, stopAsking) }()
			err := recvUntil(func() bool { return progress > before })
			close(stopAsking)
			if err2 := <-asked; err == nil {
				err = err2
			}
			if err == nil {
				add(&other, "progress", tg.render(lastProg, nil))
			}
			return err
		}

		for _, sp := range specs {
			req := proto.Clone(sp.req).(*pb.WatchCreateRequest)
			if sp.start != nil {
				req.StartRevision = sp.start.resolve(tg)
			}
			if err := wc.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: req}}); err != nil {
				return finish("send create", err)
			}
		}
		if err := recvUntil(func() bool { return created == len(specs) }); err != nil {
			return finish("recv created", err)
		}
		for _, s := range during {
			add(&other, "during "+s.desc, s.exec(ctx, tg))
		}
		if err := fence(); err != nil {
			return finish("fence", err)
		}
		for _, id := range cancels {
			if live[id] {
				canceling[id] = true
			}
			err := wc.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{
				CancelRequest: &pb.WatchCancelRequest{WatchId: id}}})
			if err != nil {
				return finish("send cancel", err)
			}
		}
		if err := recvUntil(func() bool { return len(canceling) == 0 }); err != nil {
			return finish("recv canceled", err)
		}
		if len(cancels) > 0 {
			if err := fence(); err != nil {
				return finish("fence after cancel", err)
			}
		}
		return finish("", nil)
	}}
}
