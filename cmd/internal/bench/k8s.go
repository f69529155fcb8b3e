package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The k8s workload is the traffic kube-apiserver sends its etcd, with
// Kubernetes' own request shapes (k8s.io/apiserver/pkg/storage/etcd3):
//
//   - create: Txn if mod_revision(key) == 0 then put;
//   - update (GuaranteedUpdate) of hot objects: Txn if mod_revision(key) ==
//     R then put else get, retried with the current revision on a conflict;
//   - delete: Txn if mod_revision(key) == R then delete else get;
//   - get: a linearizable Get of one object;
//   - event: a put of an Event attached to a short lease, leases granted
//     and reused for a while as kube-apiserver's lease manager does;
//   - paged lists of /registry/pods/ with limit 500, pinned to the first
//     page's revision, from --listers goroutines, back to back or at
//     --list-rate lists per second over all of them;
//   - watches of /registry/pods/ from the current revision with prev_kv and
//     progress notifications, measuring write-to-event latency;
//   - the compaction kube-apiserver runs every five minutes (here every
//     --compact-interval): a compact_rev_key Txn, then Compact to the
//     revision recorded one interval earlier.
//
// Values are 1-10 KiB, starting with Kubernetes' protobuf magic and the
// send time. The closed loop mixes the five request types 8:4:2:2:4
// (update, create, delete, get, event); lists, watches and compaction run
// beside it.

func k8sFlags(fs *flag.FlagSet) func(*env, []string) (*Result, error) {
	var (
		l                   load
		pods, hot           int
		valMin, valMax      int
		listers, watchers   int
		listRate            float64
		limit               int64
		eventTTL            int64
		leaseReuse, compact time.Duration
	)
	l.register(fs, 20000)
	fs.Lookup("total").Usage = "total number of create, update, delete, get and event requests"
	fs.IntVar(&pods, "pods", 2000, "pods preloaded under /registry/pods/")
	fs.IntVar(&hot, "hot", 100, "number of those pods the updates go to")
	fs.IntVar(&valMin, "val-min", 1024, "smallest value in bytes")
	fs.IntVar(&valMax, "val-max", 10240, "largest value in bytes")
	fs.IntVar(&listers, "listers", 2, "goroutines doing paged lists of /registry/pods/ throughout")
	fs.Float64Var(&listRate, "list-rate", 0, "whole lists per second over all --listers (with --rate, for the same load on every server); 0: each lister lists again as soon as it is done")
	fs.Int64Var(&limit, "list-limit", 500, "keys per list page")
	fs.IntVar(&watchers, "watchers", 10, "watchers of /registry/pods/")
	fs.Int64Var(&eventTTL, "event-ttl", 5, "TTL in seconds of the leases events are attached to")
	fs.DurationVar(&leaseReuse, "lease-reuse", time.Second, "how long one lease serves new events")
	fs.DurationVar(&compact, "compact-interval", 5*time.Second, "interval of Kubernetes' compaction (kube-apiserver: 5m)")
	return func(e *env, args []string) (*Result, error) {
		if len(args) != 0 {
			return nil, errUsage
		}
		if err := l.validate(); err != nil {
			return nil, invalid(err)
		}
		if pods <= 0 || hot <= 0 || hot > pods || valMin < 16 || valMax < valMin || listers < 0 || watchers < 0 || listRate < 0 ||
			limit <= 0 || eventTTL <= 0 || leaseReuse <= 0 || compact <= 0 {
			return nil, invalid(errors.New("--pods, --hot (at most --pods), --list-limit, --event-ttl, --lease-reuse and --compact-interval must be positive, --val-min at least 16 and at most --val-max, --listers, --watchers and --list-rate not negative"))
		}
		k := &k8sRun{env: e, pods: pods, hot: hot, valMin: valMin, valMax: valMax, eventTTL: eventTTL, leaseReuse: leaseReuse}
		k.listRate = listRate
		r, err := k.run(l, listers, watchers, limit, compact)
		if r != nil {
			r.Params = l.params()
			for name, v := range map[string]int{"pods": pods, "hot": hot, "val-min": valMin, "val-max": valMax, "listers": listers, "watchers": watchers} {
				r.Params[name] = strconv.Itoa(v)
			}
			r.Params["list-limit"] = strconv.FormatInt(limit, 10)
			r.Params["list-rate"] = strconv.FormatFloat(listRate, 'g', -1, 64)
			r.Params["event-ttl"] = strconv.FormatInt(eventTTL, 10)
			r.Params["lease-reuse"] = leaseReuse.String()
			r.Params["compact-interval"] = compact.String()
		}
		return r, err
	}
}

const (
	k8sPods    = "/registry/pods/"
	k8sEvents  = "/registry/events/"
	compactKey = "compact_rev_key" // kube-apiserver's
)

// k8sOps are the closed loop's request types, in the order of the mix.
var k8sOps = []struct {
	name   string
	weight int
}{{"update", 8}, {"create", 4}, {"delete", 2}, {"get", 2}, {"event", 4}}

type k8sRun struct {
	*env
	pods, hot      int
	valMin, valMax int
	eventTTL       int64
	leaseReuse     time.Duration
	listRate       float64 // whole lists per second over all listers; 0: back to back
	filler         []byte  // random bytes values are cut from

	mu       sync.Mutex
	revs     map[string]int64 // last known mod revision of the hot pods
	created  []string         // pods created by the run, oldest first, for deletes
	lease    clientv3.LeaseID
	leaseEnd time.Time

	hists     map[string]*Histogram
	conflicts atomic.Int64
}

func podKey(i int) string { return fmt.Sprintf("%sbench-ns-%02d/pod-%06d", k8sPods, i%20, i) }

// value is a Kubernetes-like blob of random size carrying the send time.
func (k *k8sRun) value() string { return k.sizedValue(k.valMin + mrand.IntN(k.valMax-k.valMin+1)) }

func (k *k8sRun) sizedValue(n int) string {
	b := make([]byte, n)
	copy(b, "k8s\x00")
	binary.BigEndian.PutUint64(b[4:12], uint64(time.Now().UnixNano()))
	off := mrand.IntN(len(k.filler) - n + 13)
	copy(b[12:], k.filler[off:])
	return string(b)
}

func (k *k8sRun) run(l load, listers, watchers int, limit int64, compactEvery time.Duration) (*Result, error) {
	k.filler = make([]byte, 2*k.valMax)
	rand.Read(k.filler)
	k.revs = map[string]int64{}
	k.hists = map[string]*Histogram{}
	var mix []string
	for _, op := range k8sOps {
		k.hists[op.name] = NewHistogram()
		for range op.weight {
			mix = append(mix, op.name)
		}
	}
	conns, closeAll, err := k.newClients(l.conns)
	if err != nil {
		return nil, err
	}
	defer closeAll()

	// A fresh set of pods per run: remove what an earlier run left.
	ctx, cancel := context.WithTimeout(k.ctx, k.maxDuration)
	defer cancel()
	if _, err := conns[0].Delete(ctx, k8sPods, clientv3.WithPrefix()); err != nil {
		return nil, fmt.Errorf("clearing %s: %w", k8sPods, err)
	}
	if err := k.preload(conns, k.pods, podKey, k.sizedValue((k.valMin+k.valMax)/2)); err != nil {
		return nil, err
	}
	for i := range k.hot {
		resp, err := conns[0].Get(ctx, podKey(i))
		if err != nil || len(resp.Kvs) == 0 {
			return nil, fmt.Errorf("reading preloaded pod %d: %v", i, err)
		}
		k.revs[podKey(i)] = resp.Kvs[0].ModRevision
	}

	// Lists, watches and compaction run while the closed loop does.
	side, stopSide := context.WithCancel(k.ctx)
	defer stopSide()
	var wg sync.WaitGroup
	pageHist, listHist, watchHist := NewHistogram(), NewHistogram(), NewHistogram()
	var lists, watchEvents, watchErrs, compactions atomic.Int64
	listOpts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(k8sPods)), clientv3.WithLimit(limit)}
	var listSeq atomic.Int64
	listStart := time.Now()
	for i := range listers {
		c := conns[i%len(conns)]
		wg.Go(func() {
			for side.Err() == nil {
				st := time.Now()
				if k.listRate > 0 {
					// Due at its turn of the rate; counted from then.
					st = dueAt(listStart, listSeq.Add(1)-1, k.listRate)
					if sleepUntil(side, st) != nil {
						return
					}
				}
				_, times, err := pagedList(side, c, k8sPods, listOpts)
				if err != nil {
					continue // cut short when the run ends, or a compacted page: start again
				}
				listHist.Record(time.Since(st))
				for _, d := range times {
					pageHist.Record(d)
				}
				lists.Add(1)
			}
		})
	}
	start, err := conns[0].Get(ctx, compactKey)
	if err != nil {
		return nil, err
	}
	from := start.Header.Revision + 1
	ready := sync.WaitGroup{}
	for i := range watchers {
		c := conns[i%len(conns)]
		ready.Add(1)
		wg.Go(func() {
			wch := c.Watch(clientv3.WithRequireLeader(side), k8sPods, clientv3.WithPrefix(), clientv3.WithRev(from),
				clientv3.WithPrevKV(), clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
			ready.Done()
			for resp := range wch {
				if err := resp.Err(); err != nil {
					if side.Err() == nil {
						watchErrs.Add(1)
					}
					return
				}
				now := time.Now()
				for _, ev := range resp.Events {
					if ev.Type == clientv3.EventTypePut && len(ev.Kv.Value) >= 12 {
						sent := int64(binary.BigEndian.Uint64(ev.Kv.Value[4:12]))
						watchHist.Record(now.Sub(time.Unix(0, sent)))
					}
					watchEvents.Add(1)
				}
			}
		})
	}
	ready.Wait()
	wg.Go(func() {
		t := time.NewTicker(compactEvery)
		defer t.Stop()
		var version, prevRev int64
		for {
			select {
			case <-side.Done():
				return
			case <-t.C:
			}
			v, rev, err := k.compactOnce(side, conns[0], version, prevRev)
			if err != nil {
				continue
			}
			if prevRev != 0 {
				compactions.Add(1)
			}
			version, prevRev = v, rev
		}
	})

	all := NewHistogram()
	st := k.closedLoop(spread(conns, l.clients), l, all, func(ctx context.Context, c *clientv3.Client, i int) error {
		name := mix[i%len(mix)]
		t0 := dueTime(ctx)
		var err error
		switch name {
		case "update":
			err = k.update(ctx, c, podKey(mrand.IntN(k.hot)))
		case "create":
			err = k.create(ctx, c, i)
		case "delete":
			err = k.delete(ctx, c, i)
		case "get":
			_, err = c.Get(ctx, podKey(mrand.IntN(k.pods)))
		case "event":
			err = k.event(ctx, c, i)
		}
		if err == nil {
			k.hists[name].Record(time.Since(t0))
		}
		return err
	})
	stopSide()
	wg.Wait()

	r := k.finish("k8s", "request", st, all, l.total)
	secs := st.elapsed.Seconds()
	for _, op := range k8sOps {
		h := k.hists[op.name]
		if secs > 0 {
			r.extra(op.name+"_per_sec", float64(h.Count())/secs)
		}
		r.extra(op.name+"_p50_ms", ms(h.Quantile(0.5)))
		r.extra(op.name+"_p99_ms", ms(h.Quantile(0.99)))
	}
	r.extra("update_conflicts", float64(k.conflicts.Load()))
	r.extra("lists", float64(lists.Load()))
	r.extra("list_page_p99_ms", ms(pageHist.Quantile(0.99)))
	r.extra("list_p99_ms", ms(listHist.Quantile(0.99)))
	r.extra("watch_events", float64(watchEvents.Load()))
	r.extra("watch_p50_ms", ms(watchHist.Quantile(0.5)))
	r.extra("watch_p99_ms", ms(watchHist.Quantile(0.99)))
	r.extra("compactions", float64(compactions.Load()))
	if n := watchErrs.Load(); n > 0 {
		r.Errors += n
		k.logf("k8s: %d watches ended with an error", n)
	}
	return r, nil
}

// update is GuaranteedUpdate: a put conditional on the revision last seen,
// retried with the current one on a conflict.
func (k *k8sRun) update(ctx context.Context, c *clientv3.Client, key string) error {
	k.mu.Lock()
	rev := k.revs[key]
	k.mu.Unlock()
	for range 10 {
		resp, err := c.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, k.value())).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			rev = resp.Header.Revision
			break
		}
		k.conflicts.Add(1)
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return fmt.Errorf("hot pod %s is gone", key)
		}
		rev = kvs[0].ModRevision
	}
	k.mu.Lock()
	if rev > k.revs[key] {
		k.revs[key] = rev
	}
	k.mu.Unlock()
	return nil
}

func (k *k8sRun) create(ctx context.Context, c *clientv3.Client, i int) error {
	key := fmt.Sprintf("%sbench-ns-%02d/new-%08d", k8sPods, i%20, i)
	resp, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, k.value())).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("create %s: already exists", key)
	}
	k.mu.Lock()
	k.created = append(k.created, key)
	k.mu.Unlock()
	return nil
}

// delete removes the oldest pod the run created (or, before any, creates
// one first: the mix deletes what it creates).
func (k *k8sRun) delete(ctx context.Context, c *clientv3.Client, i int) error {
	k.mu.Lock()
	if len(k.created) == 0 {
		k.mu.Unlock()
		return k.create(ctx, c, i)
	}
	key := k.created[0]
	k.created = k.created[1:]
	k.mu.Unlock()
	get, err := c.Get(ctx, key, clientv3.WithSerializable())
	if err == nil && len(get.Kvs) == 0 {
		// A serializable read may come from a member that has not
		// applied the create yet; a linearizable one cannot miss it.
		get, err = c.Get(ctx, key)
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	if len(get.Kvs) == 0 {
		return fmt.Errorf("delete %s: not found", key)
	}
	resp, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", get.Kvs[0].ModRevision)).
		Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("delete %s: modified meanwhile", key)
	}
	return nil
}

// event writes an Event attached to the current short lease, granting a
// new one when it has served long enough.
func (k *k8sRun) event(ctx context.Context, c *clientv3.Client, i int) error {
	k.mu.Lock()
	if time.Now().After(k.leaseEnd) {
		g, err := c.Grant(ctx, k.eventTTL)
		if err != nil {
			k.mu.Unlock()
			return err
		}
		k.lease, k.leaseEnd = g.ID, time.Now().Add(k.leaseReuse)
	}
	lease := k.lease
	k.mu.Unlock()
	key := fmt.Sprintf("%sbench-ns-%02d/ev-%08d", k8sEvents, i%20, i)
	_, err := c.Put(ctx, key, k.value(), clientv3.WithLease(lease))
	return err
}

// compactOnce is kube-apiserver's compaction step: record the current
// revision in compact_rev_key if nobody else did since version, and
// compact to the revision recorded the time before.
func (k *k8sRun) compactOnce(ctx context.Context, c *clientv3.Client, version, prevRev int64) (int64, int64, error) {
	resp, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(compactKey), "=", version)).
		Then(clientv3.OpPut(compactKey, strconv.FormatInt(version+1, 10))).
		Else(clientv3.OpGet(compactKey)).Commit()
	if err != nil {
		return version, prevRev, err
	}
	rev := resp.Header.Revision
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return 0, rev, nil
		}
		return kvs[0].Version, rev, nil
	}
	if prevRev != 0 {
		if _, err := c.Compact(ctx, prevRev); err != nil {
			return version + 1, rev, err
		}
	}
	return version + 1, rev, nil
}
