package robustness

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// requestTimeout bounds each request. A request that runs out of it has an
// unknown outcome, like any other failure.
const requestTimeout = 2 * time.Second

// leaseTTL is long enough that no lease expires during a scenario: expiry is
// decided by the leader's clock, which the history cannot see.
const leaseTTL = 600

// record is one request of the history, with times in nanoseconds since the
// scenario's start.
type record struct {
	Client       int
	In           input
	Out          output
	Call, Return int64
}

// staleRead is a read the model does not order: a serializable Get (Key >=
// 0), or a later page of a paged list (Key < 0), read at revision AtRev
// (0 for a serializable Get, which reads the member's latest).
type staleRead struct {
	Client       int
	Key          int
	AtRev        int64
	From         int // the first key index a page may hold
	Limit        int64
	Out          output
	Call, Return int64
	Err          error
}

// history collects what every client did.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []record
	stale []staleRead
	// violations are responses that break the API outright (a key outside
	// the key space, a malformed txn response), found while recording.
	violations []string
}

func newHistory() *history { return &history{start: time.Now()} }

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(r record) {
	h.mu.Lock()
	h.ops = append(h.ops, r)
	h.mu.Unlock()
}

func (h *history) violate(format string, args ...any) {
	h.mu.Lock()
	h.violations = append(h.violations, fmt.Sprintf(format, args...))
	h.mu.Unlock()
}

func (h *history) addStale(r staleRead) {
	h.mu.Lock()
	h.stale = append(h.stale, r)
	h.mu.Unlock()
}

// trafficClient issues one request at a time, like one of etcd's or
// Kubernetes' clients. It holds at most one lease.
type trafficClient struct {
	id    int
	cli   *clientv3.Client
	h     *history
	rng   *rand.Rand
	lease int64
	seen  [numKeys]int64 // the last mod_revision this client read for each key
	n     int
}

// op weights: reads dominate, as in Kubernetes, but every write kind is
// frequent enough to meet every fault.
var opWeights = []struct {
	name   string
	weight int
}{
	{"get", 20}, {"stale-get", 10}, {"list", 8}, {"put", 20}, {"lease-put", 6},
	{"delete", 8}, {"cas", 16}, {"grant", 3}, {"revoke", 3},
}

func (c *trafficClient) pick() string {
	total := 0
	for _, w := range opWeights {
		total += w.weight
	}
	r := c.rng.IntN(total)
	for _, w := range opWeights {
		if r < w.weight {
			return w.name
		}
		r -= w.weight
	}
	panic("unreachable")
}

func (c *trafficClient) value() string {
	c.n++
	return fmt.Sprintf("c%d-%d", c.id, c.n)
}

// run issues requests until ctx ends, pacing them so that the client makes
// at most one request per pace (the history stays small enough to check).
func (c *trafficClient) run(ctx context.Context, pace time.Duration) {
	next := time.Now()
	for ctx.Err() == nil {
		if d := time.Until(next); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
		next = time.Now().Add(pace)
		c.step()
	}
}

func (c *trafficClient) step() {
	key := c.rng.IntN(numKeys)
	switch c.pick() {
	case "get":
		c.do(input{Kind: opGet, Key: key})
	case "stale-get":
		c.staleGet(key)
	case "list":
		c.list()
	case "put":
		c.do(input{Kind: opPut, Key: key, Value: c.value()})
	case "lease-put":
		if c.lease == 0 {
			c.do(input{Kind: opGrant})
			return
		}
		c.do(input{Kind: opPut, Key: key, Value: c.value(), Lease: c.lease})
	case "delete":
		c.do(input{Kind: opDelete, Key: key})
	case "cas":
		expect := c.seen[key]
		if c.rng.IntN(4) == 0 {
			expect = 0 // create if absent
		}
		c.do(input{Kind: opCAS, Key: key, Value: c.value(), Expect: expect})
	case "grant":
		if c.lease == 0 {
			c.do(input{Kind: opGrant})
		} else {
			c.do(input{Kind: opGet, Key: key})
		}
	case "revoke":
		if c.lease != 0 {
			c.do(input{Kind: opRevoke, Lease: c.lease})
			c.lease = 0 // whatever the outcome, this client is done with it
		}
	}
}

// do sends one request and records it. A read that fails is dropped: it
// changed nothing, and has nothing to check.
func (c *trafficClient) do(in input) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	call := c.h.now()
	out, err := c.send(ctx, in)
	ret := c.h.now()
	switch {
	case err == nil:
	case errors.Is(err, errUnexpected):
		c.h.violate("client %d: %v: %v", c.id, describe(in, output{Unknown: true}), err)
		return
	case errors.Is(err, rpctypes.ErrLeaseNotFound) && in.Kind == opPut:
		// A definite failure: clientv3 never retries a put.
		out = output{LeaseNotFound: true}
	case in.Kind == opGet || in.Kind == opList:
		return
	default:
		// Including a revoke's "lease not found": clientv3 retries a
		// revoke that failed with Unavailable, so that answer may come
		// from a second attempt after the first one revoked the lease.
		out = output{Unknown: true}
	}
	c.h.add(record{Client: c.id, In: in, Out: out, Call: call, Return: ret})
	if !out.Unknown {
		for _, kv := range out.KVs {
			c.seen[kv.Key] = kv.Mod
		}
		if in.Kind == opGrant {
			c.lease = out.LeaseID
		}
	}
}

var errUnexpected = errors.New("robustness: unexpected response")

func (c *trafficClient) send(ctx context.Context, in input) (output, error) {
	key := keyName(in.Key)
	switch in.Kind {
	case opGet:
		resp, err := c.cli.Get(ctx, key)
		if err != nil {
			return output{}, err
		}
		return rangeOutput(resp.Header.Revision, resp.Kvs, resp.Count, resp.More)
	case opList:
		resp, err := c.cli.Get(ctx, keyPrefix, clientv3.WithPrefix(), clientv3.WithLimit(in.Limit))
		if err != nil {
			return output{}, err
		}
		return rangeOutput(resp.Header.Revision, resp.Kvs, resp.Count, resp.More)
	case opPut:
		var opts []clientv3.OpOption
		if in.Lease != 0 {
			opts = append(opts, clientv3.WithLease(clientv3.LeaseID(in.Lease)))
		}
		resp, err := c.cli.Put(ctx, key, in.Value, opts...)
		if err != nil {
			return output{}, err
		}
		return output{Rev: resp.Header.Revision}, nil
	case opDelete:
		resp, err := c.cli.Delete(ctx, key)
		if err != nil {
			return output{}, err
		}
		return output{Rev: resp.Header.Revision, Deleted: resp.Deleted}, nil
	case opCAS:
		resp, err := c.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", in.Expect)).
			Then(clientv3.OpPut(key, in.Value)).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return output{}, err
		}
		out := output{Rev: resp.Header.Revision, Succeeded: resp.Succeeded}
		if !resp.Succeeded {
			if len(resp.Responses) != 1 || resp.Responses[0].GetResponseRange() == nil {
				return output{}, fmt.Errorf("%w: cas else branch: %v", errUnexpected, resp.Responses)
			}
			r := resp.Responses[0].GetResponseRange()
			got, err := rangeOutput(0, r.Kvs, r.Count, r.More)
			if err != nil {
				return output{}, err
			}
			out.KVs, out.Count = got.KVs, got.Count
		}
		return out, nil
	case opGrant:
		resp, err := c.cli.Grant(ctx, leaseTTL)
		if err != nil {
			return output{}, err
		}
		return output{LeaseID: int64(resp.ID)}, nil
	case opRevoke:
		_, err := c.cli.Revoke(ctx, clientv3.LeaseID(in.Lease))
		return output{}, err
	}
	panic("unreachable")
}

// rangeOutput converts a range response. A key outside the key space is a
// violation in itself; it is reported as an error the check will not ignore.
func rangeOutput(rev int64, kvs []*mvccpb.KeyValue, count int64, more bool) (output, error) {
	out := output{Rev: rev, Count: count, More: more}
	for _, kv := range kvs {
		k := keyIndex(string(kv.Key))
		if k < 0 {
			return output{}, fmt.Errorf("%w: key %q outside the key space", errUnexpected, kv.Key)
		}
		out.KVs = append(out.KVs, namedKV{k, keyValue{Value: string(kv.Value), Create: kv.CreateRevision,
			Mod: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}})
	}
	return out, nil
}

// staleGet is a serializable Get: the member answers from its own state,
// which may lag. It is checked against the state at the revision it reports.
func (c *trafficClient) staleGet(key int) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	r := staleRead{Client: c.id, Key: key, Call: c.h.now()}
	resp, err := c.cli.Get(ctx, keyName(key), clientv3.WithSerializable())
	r.Return = c.h.now()
	if err != nil {
		return // a failed read has nothing to check
	}
	if r.Out, err = rangeOutput(resp.Header.Revision, resp.Kvs, resp.Count, resp.More); err != nil {
		c.h.violate("client %d: serializable get: %v", c.id, err)
		return
	}
	c.h.addStale(r)
}

// list reads the prefix in pages of pageSize, as Kubernetes' paged lists do:
// the first page is a linearizable read the model orders; the others are
// read at the first page's revision, and checked against the state there.
// A later page may fail with ErrCompacted if compaction overtook it.
const pageSize = 3

func (c *trafficClient) list() {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	first := input{Kind: opList, Limit: pageSize}
	call := c.h.now()
	out, err := c.send(ctx, first)
	if err != nil {
		if errors.Is(err, errUnexpected) {
			c.h.violate("client %d: list: %v", c.id, err)
		}
		return
	}
	c.h.add(record{Client: c.id, In: first, Out: out, Call: call, Return: c.h.now()})
	rev, more, last := out.Rev, out.More, out.KVs
	for more && len(last) > 0 {
		from := last[len(last)-1].Key + 1
		r := staleRead{Client: c.id, Key: -1, AtRev: rev, From: from, Limit: pageSize, Call: c.h.now()}
		resp, err := c.cli.Get(ctx, keyName(from), clientv3.WithRange(clientv3.GetPrefixRangeEnd(keyPrefix)),
			clientv3.WithLimit(pageSize), clientv3.WithRev(rev))
		r.Return = c.h.now()
		if err != nil {
			r.Err = err
			if errors.Is(err, rpctypes.ErrCompacted) {
				c.h.addStale(r)
			}
			return
		}
		if r.Out, err = rangeOutput(resp.Header.Revision, resp.Kvs, resp.Count, resp.More); err != nil {
			c.h.violate("client %d: list page: %v", c.id, err)
			return
		}
		c.h.addStale(r)
		more, last = resp.More, r.Out.KVs
	}
}
