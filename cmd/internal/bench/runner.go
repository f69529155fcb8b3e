package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// opFunc performs operation number i (0-based) over c.
type opFunc func(ctx context.Context, c *clientv3.Client, i int) error

// loopStats is what a closed loop measured.
type loopStats struct {
	ops      int64 // successful operations
	errors   int64
	elapsed  time.Duration
	firstErr error
}

// closedLoop runs op from one goroutine per entry of clients, each issuing
// its next operation as soon as the previous one returns, until l.total
// operations have been issued or --max-duration has passed. With l.rate,
// operation i is due at start + i/rate and waits for that time; its latency
// is then counted from when it was due, so a server that falls behind the
// rate is charged for the queue it causes (no coordinated omission).
// Latencies of successful operations go into h. Operations cut short by the
// deadline or an interrupt count neither as done nor as errors.
func (e *env) closedLoop(clients []*clientv3.Client, l load, h *Histogram, op opFunc) loopStats {
	total := l.total
	ctx, cancel := context.WithTimeout(e.ctx, e.maxDuration)
	defer cancel()
	var (
		next, ops, errs atomic.Int64
		errOnce         sync.Once
		firstErr        error
		wg              sync.WaitGroup
	)
	start := time.Now()
	for _, c := range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(total) {
					return
				}
				st := time.Now()
				if l.rate > 0 {
					st = dueAt(start, i, l.rate)
					if sleepUntil(ctx, st) != nil {
						return
					}
				}
				err := op(context.WithValue(ctx, dueKey{}, st), c, int(i))
				d := time.Since(st)
				switch {
				case err == nil:
					h.Record(d)
					ops.Add(1)
				case ctx.Err() != nil:
					return
				default:
					errs.Add(1)
					errOnce.Do(func() { firstErr = err })
				}
			}
		})
	}
	wg.Wait()
	return loopStats{ops: ops.Load(), errors: errs.Load(), elapsed: time.Since(start), firstErr: firstErr}
}

// dueAt is when operation i of a loop paced at rate per second from start
// is due.
func dueAt(start time.Time, i int64, rate float64) time.Time {
	return start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
}

// dueKey holds, in an operation's context, when closedLoop had it due.
type dueKey struct{}

// dueTime is when the operation of ctx was due (closedLoop), from which an
// operation timing its parts counts, so that paced latencies include the
// wait for a free client; time.Now() outside closedLoop.
func dueTime(ctx context.Context) time.Time {
	if t, ok := ctx.Value(dueKey{}).(time.Time); ok {
		return t
	}
	return time.Now()
}

// finish turns loop statistics into a Result and reports errors and an
// early stop on stderr.
func (e *env) finish(name, latency string, st loopStats, h *Histogram, total int) *Result {
	r := &Result{Workload: name, Ops: st.ops, Errors: st.errors, Latency: latency}
	r.setRate(st.elapsed)
	r.fillLatency(h)
	if st.errors > 0 {
		e.logf("%s: %d of %d operations failed; first error: %v", name, st.errors, st.ops+st.errors, st.firstErr)
	}
	if done := st.ops + st.errors; done < int64(total) {
		e.logf("%s: stopped after %d of %d operations (--max-duration %v or interrupt)", name, done, total, e.maxDuration)
	}
	return r
}

// randValue returns n random bytes as a string, like etcd's benchmark.
func randValue(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return string(b)
}

// maxTxnBytes keeps preload transactions well under the default 1.5 MiB
// request limit of etcd and Ballast.
const maxTxnBytes = 1 << 20

// preload puts n keys, named by key(i), each with value val, in Txns of up
// to 100 puts (under the default --max-txn-ops of 128) sent from up to 8
// goroutines. It is bounded by --max-duration on its own.
func (e *env) preload(conns []*clientv3.Client, n int, key func(i int) string, val string) error {
	if n <= 0 {
		return nil
	}
	per := maxTxnBytes / (len(key(0)) + len(val) + 64)
	per = max(1, min(100, per))
	batches := (n + per - 1) / per
	workers := min(8, batches)
	e.logf("preloading %d keys (%d-byte values) in %d txns", n, len(val), batches)

	ctx, cancel := context.WithTimeout(e.ctx, e.maxDuration)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for w := range workers {
		c := conns[w%len(conns)]
		wg.Go(func() {
			ops := make([]clientv3.Op, 0, per)
			for ctx.Err() == nil {
				b := int(next.Add(1) - 1)
				if b >= batches {
					return
				}
				ops = ops[:0]
				for i := b * per; i < min(n, (b+1)*per); i++ {
					ops = append(ops, clientv3.OpPut(key(i), val))
				}
				if _, err := c.Txn(ctx).Then(ops...).Commit(); err != nil {
					errOnce.Do(func() { firstErr = err })
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("preload: %w", firstErr)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("preload: not done within --max-duration %v: %w", e.maxDuration, err)
	}
	return nil
}
