package compat

// Lease and watch steps. They use the raw gRPC stubs on the client's
// connection rather than clientv3's wrappers, so that what is compared is
// exactly what the server sent (clientv3 hides watch creation and
// cancellation responses and rewrites lease responses).

import (
	"context"
	"fmt"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

func leaseClient(tg *target) pb.LeaseClient { return pb.NewLeaseClient(tg.cli.ActiveConnection()) }

// grant grants a lease chosen by the server; it becomes L<n> of the case.
func grant(ttl int64) step { return grantID(0, ttl) }

// grantID grants a lease with a client-chosen ID (0: server-chosen).
func grantID(id, ttl int64) step {
	desc := fmt.Sprintf("lease grant ttl=%d", ttl)
	if id != 0 {
		desc += fmt.Sprintf(" id=%#x", id)
	}
	return step{desc: desc, run: func(ctx context.Context, tg *target) string {
		resp, err := leaseClient(tg).LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: ttl})
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
// asks for a progress notification and reads until it arrives: etcd sends it
// only once the watcher has caught up, so everything before it is the complete
// stream up to the current revision. Events are compared one by one, not by
// how the server batched them into responses.
func watch(key string, opts ...wopt) step {
	parts := []string{"watch", q(key)}
	for _, o := range opts {
		if o.desc != "" {
			parts = append(parts, o.desc)
		}
	}
	return step{desc: strings.Join(parts, " "), run: func(ctx context.Context, tg *target) string {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var out strings.Builder
		section := func(title, body string) {
			out.WriteString(title + ":\n")
			for _, l := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
				out.WriteString("  " + l + "\n")
			}
		}
		fail := func(what string, err error) string {
			section(what+" failed", tg.render(nil, err))
			return out.String()
		}

		wc, err := pb.NewWatchClient(tg.cli.ActiveConnection()).Watch(ctx)
		if err != nil {
			return fail("watch", err)
		}
		defer wc.CloseSend()
		req := &pb.WatchCreateRequest{Key: []byte(key)}
		for _, o := range opts {
			if o.req != nil {
				o.req(tg, req)
			}
		}
		if err := wc.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: req}}); err != nil {
			return fail("send create", err)
		}
		created, err := wc.Recv()
		if err != nil {
			return fail("recv created", err)
		}
		section("created", tg.render(created, nil))
		for _, o := range opts {
			for _, s := range o.during {
				section("during "+s.desc, s.exec(ctx, tg))
			}
		}

		// read appends everything received up to and including the first
		// response for which stop is true.
		read := func(stop func(*pb.WatchResponse) bool) error {
			for {
				resp, err := wc.Recv()
				if err != nil {
					return err
				}
				for _, ev := range resp.Events {
					section("event", tg.render(ev, nil))
				}
				switch {
				case isProgress(resp):
					section("progress", tg.render(resp, nil))
				case resp.Created || resp.Canceled || resp.CompactRevision != 0:
					r := proto.Clone(resp).(*pb.WatchResponse)
					r.Events = nil
					section("response", tg.render(r, nil))
				}
				if stop(resp) {
					return nil
				}
			}
		}
		progress := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}
		if err := wc.Send(progress); err != nil {
			return fail("send progress request", err)
		}
		if err := read(isProgress); err != nil {
			return fail("recv until progress", err)
		}
		if hasCancel(opts) {
			cancelReq := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{
				CancelRequest: &pb.WatchCancelRequest{WatchId: created.WatchId}}}
			if err := wc.Send(cancelReq); err != nil {
				return fail("send cancel", err)
			}
			if err := read(func(r *pb.WatchResponse) bool { return r.Canceled && r.WatchId == created.WatchId }); err != nil {
				return fail("recv until canceled", err)
			}
		}
		return out.String()
	}}
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
