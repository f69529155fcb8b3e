package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// keyGen builds keys as etcd's benchmark does: the varint encoding of a
// number in [0, key-space-size) at the start of a key-size buffer of
// zeros, after an optional prefix. Sequential keys take the operation
// number modulo the key space, others a uniformly random number.
type keyGen struct {
	prefix     string
	size       int
	space      int
	sequential bool
}

func (g *keyGen) register(fs *flag.FlagSet, defaultSpace int) {
	fs.IntVar(&g.size, "key-size", 8, "key size in bytes (after --prefix)")
	fs.IntVar(&g.space, "key-space-size", defaultSpace, "number of distinct keys")
	fs.StringVar(&g.prefix, "prefix", "", "prefix for every key")
}

func (g *keyGen) validate() error {
	if g.space <= 0 {
		return fmt.Errorf("--key-space-size must be positive, got %d", g.space)
	}
	if need := len(binary.AppendVarint(nil, int64(g.space-1))); g.size < need {
		return fmt.Errorf("--key-size %d is too small for --key-space-size %d (needs %d bytes)", g.size, g.space, need)
	}
	return nil
}

// key returns the key for operation i.
func (g *keyGen) key(i int) string {
	n := i % g.space
	if !g.sequential {
		n = rand.IntN(g.space)
	}
	b := make([]byte, len(g.prefix)+g.size)
	copy(b, g.prefix)
	binary.PutVarint(b[len(g.prefix):], int64(n))
	return string(b)
}

// load holds the flags shared by the request-loop workloads.
type load struct {
	total, conns, clients int
	rate                  float64 // requests per second over all clients; 0: as fast as they go
}

func (l *load) register(fs *flag.FlagSet, total int) {
	fs.IntVar(&l.total, "total", total, "total number of requests")
	fs.IntVar(&l.conns, "conns", 1, "number of gRPC connections")
	fs.IntVar(&l.clients, "clients", 1, "number of concurrent clients, spread over --conns")
	fs.Float64Var(&l.rate, "rate", 0, "requests per second over all clients, to compare latencies at the same load; 0: each client sends its next request as soon as the last returns")
}

func (l *load) validate() error {
	if l.total <= 0 || l.conns <= 0 || l.clients <= 0 || l.rate < 0 {
		return errors.New("--total, --conns and --clients must be positive, --rate not negative")
	}
	return nil
}

func (l *load) params() map[string]string {
	return map[string]string{
		"total":   strconv.Itoa(l.total),
		"conns":   strconv.Itoa(l.conns),
		"clients": strconv.Itoa(l.clients),
		"rate":    strconv.FormatFloat(l.rate, 'g', -1, 64),
	}
}

func putFlags(fs *flag.FlagSet) func(*env, []string) (*Result, error) {
	var (
		l       load
		keys    keyGen
		valSize int
	)
	l.register(fs, 10000)
	keys.register(fs, 1)
	fs.BoolVar(&keys.sequential, "sequential-keys", false, "use keys 0, 1, 2, ... modulo --key-space-size instead of random ones")
	fs.IntVar(&valSize, "val-size", 8, "value size in bytes")
	return func(e *env, args []string) (*Result, error) {
		if len(args) != 0 {
			return nil, errUsage
		}
		if err := errors.Join(l.validate(), keys.validate()); err != nil {
			return nil, invalid(err)
		}
		conns, closeAll, err := e.newClients(l.conns)
		if err != nil {
			return nil, err
		}
		defer closeAll()
		val := randValue(valSize)
		h := NewHistogram()
		st := e.closedLoop(spread(conns, l.clients), l, h, func(ctx context.Context, c *clientv3.Client, i int) error {
			_, err := c.Put(ctx, keys.key(i), val)
			return err
		})
		r := e.finish("put", "request", st, h, l.total)
		r.Params = l.params()
		r.Params["key-size"] = strconv.Itoa(keys.size)
		r.Params["val-size"] = strconv.Itoa(valSize)
		r.Params["key-space-size"] = strconv.Itoa(keys.space)
		r.Params["sequential-keys"] = strconv.FormatBool(keys.sequential)
		return r, nil
	}
}

func txnPutFlags(fs *flag.FlagSet) func(*env, []string) (*Result, error) {
	var (
		l       load
		keys    keyGen
		valSize int
		txnOps  int
	)
	l.register(fs, 10000)
	keys.register(fs, 0)
	fs.Lookup("key-space-size").Usage = "number of distinct keys (0: --total * --txn-ops, every key once)"
	keys.sequential = true // as etcd: operation i writes keys i*ops .. i*ops+ops-1
	fs.IntVar(&valSize, "val-size", 8, "value size in bytes")
	fs.IntVar(&txnOps, "txn-ops", 1, "puts per txn")
	return func(e *env, args []string) (*Result, error) {
		if len(args) != 0 {
			return nil, errUsage
		}
		if txnOps <= 0 {
			return nil, invalid(errors.New("--txn-ops must be positive"))
		}
		if keys.space == 0 {
			keys.space = l.total * txnOps
		}
		if err := errors.Join(l.validate(), keys.validate()); err != nil {
			return nil, invalid(err)
		}
		if txnOps > keys.space {
			return nil, invalid(fmt.Errorf("--txn-ops %d is larger than --key-space-size %d (a txn may not put a key twice)", txnOps, keys.space))
		}
		conns, closeAll, err := e.newClients(l.conns)
		if err != nil {
			return nil, err
		}
		defer closeAll()
		val := randValue(valSize)
		h := NewHistogram()
		st := e.closedLoop(spread(conns, l.clients), l, h, func(ctx context.Context, c *clientv3.Client, i int) error {
			ops := make([]clientv3.Op, txnOps)
			for j := range ops {
				ops[j] = clientv3.OpPut(keys.key(i*txnOps+j), val)
			}
			_, err := c.Txn(ctx).Then(ops...).Commit()
			return err
		})
		r := e.finish("txn-put", "request", st, h, l.total)
		r.Params = l.params()
		r.Params["txn-ops"] = strconv.Itoa(txnOps)
		r.Params["key-size"] = strconv.Itoa(keys.size)
		r.Params["val-size"] = strconv.Itoa(valSize)
		r.Params["key-space-size"] = strconv.Itoa(keys.space)
		r.extra("puts_per_sec", r.OpsPerSec*float64(txnOps))
		return r, nil
	}
}
