package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func listFlags(fs *flag.FlagSet) func(*env, []string) (*Result, error) {
	var (
		l           load
		prefix      string
		keys        int
		valSize     int
		limit       int64
		consistency string
	)
	l.register(fs, 100)
	fs.Lookup("total").Usage = "total number of complete lists"
	fs.StringVar(&prefix, "prefix", "/registry/ballast-bench/", "key prefix to fill and list")
	fs.IntVar(&keys, "keys", 10000, "number of keys under --prefix (preloaded unless exactly that many are there)")
	fs.IntVar(&valSize, "val-size", 1024, "value size in bytes of preloaded keys")
	fs.Int64Var(&limit, "limit", 500, "keys per page")
	fs.StringVar(&consistency, "consistency", "l", "linearizable (l) or serializable (s) pages")
	return func(e *env, args []string) (*Result, error) {
		if len(args) != 0 {
			return nil, errUsage
		}
		if err := l.validate(); err != nil {
			return nil, invalid(err)
		}
		if prefix == "" || keys <= 0 || limit <= 0 {
			return nil, invalid(errors.New("--prefix must be non-empty and --keys and --limit positive"))
		}
		if consistency != "l" && consistency != "s" {
			return nil, invalid(fmt.Errorf("--consistency must be l or s, not %q", consistency))
		}
		conns, closeAll, err := e.newClients(l.conns)
		if err != nil {
			return nil, err
		}
		defer closeAll()
		if err := e.fillPrefix(conns[0], conns, prefix, keys, valSize); err != nil {
			return nil, err
		}

		end := clientv3.GetPrefixRangeEnd(prefix)
		base := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(limit)}
		if consistency == "s" {
			base = append(base, clientv3.WithSerializable())
		}
		pageHist := NewHistogram()
		var pages atomic.Int64
		listHist := NewHistogram()
		list := func(ctx context.Context, c *clientv3.Client, _ int) error {
			got, times, err := pagedList(ctx, c, prefix, base)
			if err != nil {
				return err
			}
			if got != keys {
				return fmt.Errorf("listed %d keys under %q, want %d", got, prefix, keys)
			}
			for _, d := range times {
				pageHist.Record(d)
			}
			pages.Add(int64(len(times)))
			return nil
		}
		st := e.closedLoop(spread(conns, l.clients), l, listHist, list)
		r := e.finish("list", "page", st, pageHist, l.total)
		r.extra("pages", float64(pages.Load()))
		if st.elapsed > 0 {
			r.extra("pages_per_sec", float64(pages.Load())/st.elapsed.Seconds())
			r.extra("keys_per_sec", float64(st.ops)*float64(keys)/st.elapsed.Seconds())
		}
		r.extra("list_p50_ms", ms(listHist.Quantile(0.5)))
		r.extra("list_p99_ms", ms(listHist.Quantile(0.99)))
		r.Params = l.params()
		r.Params["prefix"] = strconv.Quote(prefix)
		r.Params["keys"] = strconv.Itoa(keys)
		r.Params["val-size"] = strconv.Itoa(valSize)
		r.Params["limit"] = strconv.FormatInt(limit, 10)
		r.Params["consistency"] = consistency
		return r, nil
	}
}

// fillPrefix makes sure exactly n keys live under prefix, so that repeated
// runs (test/bench runs each workload several times) load only once. It
// deletes the prefix first when it holds more than n keys.
func (e *env) fillPrefix(c *clientv3.Client, conns []*clientv3.Client, prefix string, n, valSize int) error {
	ctx, cancel := context.WithTimeout(e.ctx, e.maxDuration)
	defer cancel()
	resp, err := c.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("count keys under %q: %w", prefix, err)
	}
	switch {
	case resp.Count == int64(n):
		e.logf("%d keys already under %q, not preloading", n, prefix)
		return nil
	case resp.Count > int64(n):
		if _, err := c.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
			return fmt.Errorf("clear %q: %w", prefix, err)
		}
	}
	return e.preload(conns, n, func(i int) string { return fmt.Sprintf("%s%08d", prefix, i) }, randValue(valSize))
}

// pagedList lists prefix as kube-apiserver pages through etcd: the first
// page at the current revision, each next page from just after the last
// key returned, pinned to the first page's revision. opts hold the range
// end and the page limit. It returns the keys listed and each page's time.
func pagedList(ctx context.Context, c *clientv3.Client, prefix string, opts []clientv3.OpOption) (int, []time.Duration, error) {
	var (
		rev   int64
		got   int
		times []time.Duration
		key   = prefix
	)
	for {
		o := opts
		if rev != 0 {
			o = append(o[:len(o):len(o)], clientv3.WithRev(rev))
		}
		st := time.Now()
		resp, err := c.Get(ctx, key, o...)
		if err != nil {
			return got, times, err
		}
		times = append(times, time.Since(st))
		if rev == 0 {
			rev = resp.Header.Revision
		}
		got += len(resp.Kvs)
		if !resp.More || len(resp.Kvs) == 0 {
			return got, times, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
