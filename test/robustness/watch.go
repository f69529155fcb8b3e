package robustness

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// event is one watch event as the model sees it.
type event struct {
	Delete bool
	Key    int
	KV     keyValue  // for a delete: Mod is the deletion's revision
	Prev   *keyValue // prev_kv, when the server sent one
}

// watchResponse is one response a watcher received.
type watchResponse struct {
	From            int64 // the revision the watch that sent it started from
	Time            int64 // since the scenario's start
	Rev             int64 // header revision
	Events          []event
	CompactRevision int64
	Progress        bool
}

// watcher watches the whole prefix from a chosen revision for the length of a
// scenario, through clientv3, which resumes a broken stream from the revision
// after the last one it delivered. When the server reports the start
// revision compacted, the watcher starts again at the compact revision, as
// Kubernetes' reflectors do after relisting.
type watcher struct {
	name  string
	cli   *clientv3.Client
	h     *history
	start int64

	mu    sync.Mutex
	resps []watchResponse
	last  int64 // the highest event or progress revision seen
}

func (w *watcher) record(r watchResponse) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.resps = append(w.resps, r)
	for _, ev := range r.Events {
		w.last = max(w.last, ev.KV.Mod)
	}
	if r.Progress {
		w.last = max(w.last, r.Rev)
	}
}

func (w *watcher) lastRev() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// run watches until ctx ends.
func (w *watcher) run(ctx context.Context) {
	from := w.start
	for ctx.Err() == nil {
		wctx := clientv3.WithRequireLeader(ctx)
		ch := w.cli.Watch(wctx, keyPrefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithPrevKV(),
			clientv3.WithProgressNotify())
		restart := int64(0)
		for resp := range ch {
			r := watchResponse{From: from, Time: w.h.now(), Rev: resp.Header.Revision, CompactRevision: resp.CompactRevision,
				Progress: resp.IsProgressNotify()}
			for _, ev := range resp.Events {
				e, err := convertEvent(ev)
				if err != nil {
					w.h.violate("watcher %s: %v", w.name, err)
					continue
				}
				r.Events = append(r.Events, e)
			}
			w.record(r)
			if resp.CompactRevision != 0 {
				restart = resp.CompactRevision
			}
		}
		if ctx.Err() != nil {
			return
		}
		switch {
		case restart != 0:
			from = restart
		default:
			// Canceled for another reason (no leader, say): resume after
			// what was delivered, as clientv3 itself does.
			from = max(w.lastRev()+1, from)
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func convertEvent(ev *clientv3.Event) (event, error) {
	k := keyIndex(string(ev.Kv.Key))
	if k < 0 {
		return event{}, fmt.Errorf("event for key %q outside the key space", ev.Kv.Key)
	}
	e := event{Delete: ev.Type == mvccpb.DELETE, Key: k, KV: keyValue{Value: string(ev.Kv.Value),
		Create: ev.Kv.CreateRevision, Mod: ev.Kv.ModRevision, Version: ev.Kv.Version, Lease: ev.Kv.Lease}}
	if ev.PrevKv != nil {
		e.Prev = &keyValue{Value: string(ev.PrevKv.Value), Create: ev.PrevKv.CreateRevision,
			Mod: ev.PrevKv.ModRevision, Version: ev.PrevKv.Version, Lease: ev.PrevKv.Lease}
	}
	return e, nil
}

// compactor compacts every period at the revision the store had lag ago, as
// kube-apiserver does (every 5 minutes, at the revision of the previous
// run), only much more often. It records what it asked for.
type compactor struct {
	cli    *clientv3.Client
	h      *history
	period time.Duration
	lag    time.Duration

	mu        sync.Mutex
	requested []compaction
}

type compaction struct {
	Rev  int64
	Time int64 // when the request was sent
}

// maxRequested returns the highest revision a compaction was requested at
// before time t, or 0.
func (c *compactor) maxRequested(t int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var m int64
	for _, r := range c.requested {
		if r.Time <= t {
			m = max(m, r.Rev)
		}
	}
	return m
}

func (c *compactor) run(ctx context.Context) {
	type seen struct {
		at  time.Time
		rev int64
	}
	var revs []seen
	tick := time.NewTicker(c.period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		resp, err := c.cli.Get(rctx, "/rb-compactor-probe", clientv3.WithSerializable())
		if err == nil {
			revs = append(revs, seen{time.Now(), resp.Header.Revision})
		}
		var target int64
		for len(revs) > 0 && time.Since(revs[0].at) >= c.lag {
			target = revs[0].rev
			revs = revs[1:]
		}
		if target > 1 {
			c.mu.Lock()
			c.requested = append(c.requested, compaction{Rev: target, Time: c.h.now()})
			c.mu.Unlock()
			_, _ = c.cli.Compact(rctx, target) // an error (already compacted, no leader) changes nothing
		}
		cancel()
	}
}
