package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func rangeFlags(fs *flag.FlagSet) func(*env, []string) (*Result, error) {
	var (
		l           load
		consistency string
		prefix      bool
		limit       int64
		countOnly   bool
		keysOnly    bool
		preloadN    int
		valSize     int
	)
	l.register(fs, 10000)
	fs.StringVar(&consistency, "consistency", "l", "linearizable (l) or serializable (s)")
	fs.BoolVar(&prefix, "prefix", false, "range over every key starting with KEY")
	fs.Int64Var(&limit, "limit", 0, "maximum number of keys per response (0: no limit)")
	fs.BoolVar(&countOnly, "count-only", false, "return only the count of keys")
	fs.BoolVar(&keysOnly, "keys-only", false, "return only the keys")
	fs.IntVar(&preloadN, "preload", 0, "before measuring, put KEY (single-key range) or N keys named KEY followed by an 8-digit number (range or --prefix)")
	fs.IntVar(&valSize, "val-size", 8, "value size in bytes of preloaded keys")
	return func(e *env, args []string) (*Result, error) {
		if len(args) < 1 || len(args) > 2 || (len(args) == 2 && prefix) {
			return nil, errUsage
		}
		if err := l.validate(); err != nil {
			return nil, invalid(err)
		}
		if consistency != "l" && consistency != "s" {
			return nil, invalid(fmt.Errorf("--consistency must be l or s, not %q", consistency))
		}
		if countOnly && keysOnly {
			return nil, invalid(errors.New("--count-only and --keys-only are mutually exclusive"))
		}
		key := args[0]
		var opts []clientv3.OpOption
		single := true
		switch {
		case prefix:
			opts = append(opts, clientv3.WithPrefix())
			single = false
		case len(args) == 2:
			opts = append(opts, clientv3.WithRange(args[1]))
			single = false
		}
		if consistency == "s" {
			opts = append(opts, clientv3.WithSerializable())
		}
		if limit > 0 {
			opts = append(opts, clientv3.WithLimit(limit))
		}
		if countOnly {
			opts = append(opts, clientv3.WithCountOnly())
		}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}

		conns, closeAll, err := e.newClients(l.conns)
		if err != nil {
			return nil, err
		}
		defer closeAll()
		if preloadN > 0 {
			name := func(i int) string { return fmt.Sprintf("%s%08d", key, i) }
			n := preloadN
			if single {
				name, n = func(int) string { return key }, 1
			}
			if err := e.preload(conns, n, name, randValue(valSize)); err != nil {
				return nil, err
			}
		}

		h := NewHistogram()
		st := e.closedLoop(spread(conns, l.clients), l, h, func(ctx context.Context, c *clientv3.Client, _ int) error {
			_, err := c.Get(ctx, key, opts...)
			return err
		})
		name := "range"
		r := e.finish(name, "request", st, h, l.total)
		r.Params = l.params()
		r.Params["consistency"] = consistency
		r.Params["key"] = strconv.Quote(key)
		if len(args) == 2 {
			r.Params["end"] = strconv.Quote(args[1])
		}
		if prefix {
			r.Params["prefix"] = "true"
		}
		if limit > 0 {
			r.Params["limit"] = strconv.FormatInt(limit, 10)
		}
		return r, nil
	}
}
