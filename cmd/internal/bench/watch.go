package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func watchFlags(fs *flag.FlagSet) func(*env, []string) (*Result, error) {
	var (
		watchers, streams, conns int
		puts, putRate, valSize   int
		key                      string
		prefix                   bool
		drain                    time.Duration
	)
	fs.IntVar(&watchers, "watchers", 1000, "number of watchers, all on the same key or prefix")
	fs.IntVar(&streams, "streams", 10, "number of gRPC watch streams the watchers are spread over")
	fs.IntVar(&conns, "conns", 1, "number of gRPC connections the streams are spread over")
	fs.IntVar(&puts, "puts", 1000, "number of puts, made one after another by one writer")
	fs.IntVar(&putRate, "put-rate", 0, "maximum puts per second (0: as fast as the writer gets replies)")
	fs.IntVar(&valSize, "val-size", 32, "value size in bytes (at least 8: the send time is embedded)")
	// Not --key: that is the global flag for the client's TLS key file.
	fs.StringVar(&key, "watch-key", "/registry/ballast-bench-watch/key", "key written by the puts and watched")
	fs.BoolVar(&prefix, "prefix", false, "watch every key starting with --watch-key instead of the key alone")
	fs.DurationVar(&drain, "drain-timeout", 10*time.Second, "after the last put, give up waiting for events after this long without one")
	return func(e *env, args []string) (*Result, error) {
		if len(args) != 0 {
			return nil, errUsage
		}
		if watchers <= 0 || streams <= 0 || conns <= 0 || puts <= 0 || putRate < 0 {
			return nil, invalid(errors.New("--watchers, --streams, --conns and --puts must be positive, --put-rate not negative"))
		}
		if valSize < 8 {
			return nil, invalid(errors.New("--val-size must be at least 8"))
		}
		streams = min(streams, watchers)
		r, err := e.watchFanOut(watchers, streams, conns, puts, putRate, valSize, key, prefix, drain)
		if r != nil {
			r.Params = map[string]string{
				"watchers": strconv.Itoa(watchers), "streams": strconv.Itoa(streams),
				"conns": strconv.Itoa(conns), "puts": strconv.Itoa(puts),
				"put-rate": strconv.Itoa(putRate), "val-size": strconv.Itoa(valSize),
				"key": strconv.Quote(key), "prefix": strconv.FormatBool(prefix),
			}
		}
		return r, err
	}
}

func (e *env) watchFanOut(watchers, streams, nconns, puts, putRate, valSize int, key string, prefix bool, drain time.Duration) (*Result, error) {
	conns, closeAll, err := e.newClients(nconns)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	// Watchers live until the events are drained; only the setup and the
	// puts are bounded by --max-duration (each on its own), the drain by
	// --drain-timeout without progress.
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()

	// Times are nanoseconds since base on the monotonic clock; a put
	// embeds its send time in the first 8 bytes of its value.
	base := time.Now()
	now := func() int64 { return int64(time.Since(base)) }

	var (
		eventHist            = NewHistogram()
		delivered, watchErrs atomic.Int64
		lastEvent            atomic.Int64
		created, done        sync.WaitGroup
		errOnce              sync.Once
		firstErr             error
	)
	opts := []clientv3.OpOption{clientv3.WithCreatedNotify()}
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	// One clientv3.Watcher multiplexes its watches on one gRPC stream, so
	// a Watcher per stream gives exactly --streams streams.
	ws := make([]clientv3.Watcher, streams)
	for s := range ws {
		ws[s] = clientv3.NewWatcher(conns[s%len(conns)])
	}
	defer func() {
		for _, w := range ws {
			w.Close()
		}
		done.Wait()
	}()
	e.logf("watch: starting %d watchers on %d streams over %d connections", watchers, streams, len(conns))
	for i := range watchers {
		wch := ws[i%streams].Watch(ctx, key, opts...)
		created.Add(1)
		done.Go(func() {
			first := true
			defer func() {
				if first {
					created.Done()
				}
			}()
			for resp := range wch {
				if err := resp.Err(); err != nil || resp.Canceled {
					if err == nil {
						err = errors.New("watch canceled by the server")
					}
					if ctx.Err() == nil {
						watchErrs.Add(1)
						errOnce.Do(func() { firstErr = err })
					}
					return
				}
				if first {
					first = false
					created.Done()
				}
				for _, ev := range resp.Events {
					t := now()
					if v := ev.Kv.Value; len(v) >= 8 {
						eventHist.Record(time.Duration(t - int64(binary.BigEndian.Uint64(v))))
					}
					delivered.Add(1)
					for {
						cur := lastEvent.Load()
						if t <= cur || lastEvent.CompareAndSwap(cur, t) {
							break
						}
					}
				}
			}
		})
	}
	setupCtx, cancelSetup := context.WithTimeout(ctx, e.maxDuration)
	err = waitGroup(setupCtx, &created)
	cancelSetup()
	if err != nil {
		return nil, fmt.Errorf("watch: %d watchers not created within --max-duration: %w", watchers, err)
	}
	if n := watchErrs.Load(); n > 0 {
		return nil, fmt.Errorf("watch: %d watchers failed: %v", n, firstErr)
	}

	// The writer.
	putHist := NewHistogram()
	var putOK, putErrs int64
	var putErr error
	val := []byte(randValue(valSize))
	putCtx, cancelPuts := context.WithTimeout(ctx, e.maxDuration)
	defer cancelPuts()
	start := now()
	for i := 0; i < puts && putCtx.Err() == nil; i++ {
		if putRate > 0 {
			at := base.Add(time.Duration(start + int64(i)*int64(time.Second)/int64(putRate)))
			if err := sleepUntil(putCtx, at); err != nil {
				break
			}
		}
		st := now()
		binary.BigEndian.PutUint64(val, uint64(st))
		_, err := conns[0].Put(putCtx, key, string(val))
		switch {
		case err == nil:
			putHist.Record(time.Duration(now() - st))
			putOK++
		case putCtx.Err() == nil:
			putErrs++
			if putErr == nil {
				putErr = err
			}
		}
	}
	putEnd := now()
	if n := putOK + putErrs; n < int64(puts) {
		e.logf("watch: stopped after %d of %d puts (--max-duration %v or interrupt)", n, puts, e.maxDuration)
	}

	// Wait for the events, giving up after drain without progress.
	expected := putOK * int64(watchers)
	last, lastChange := delivered.Load(), time.Now()
	for delivered.Load() < expected && ctx.Err() == nil {
		if d := delivered.Load(); d != last {
			last, lastChange = d, time.Now()
		} else if time.Since(lastChange) > drain {
			break
		}
		if sleepUntil(ctx, time.Now().Add(5*time.Millisecond)) != nil {
			break
		}
	}

	got := delivered.Load()
	end := max(lastEvent.Load(), putEnd)
	elapsed := time.Duration(end - start)
	missing := max(0, expected-got)
	r := &Result{Workload: "watch", Ops: got, Latency: "put-to-event", Errors: putErrs + watchErrs.Load() + missing}
	r.setRate(elapsed)
	r.fillLatency(eventHist)
	r.extra("puts", float64(putOK))
	r.extra("put_errors", float64(putErrs))
	r.extra("watch_errors", float64(watchErrs.Load()))
	r.extra("expected_events", float64(expected))
	r.extra("missing_events", float64(missing))
	if d := time.Duration(putEnd - start); d > 0 {
		r.extra("puts_per_sec", float64(putOK)/d.Seconds())
	}
	r.extra("put_p50_ms", ms(putHist.Quantile(0.5)))
	r.extra("put_p99_ms", ms(putHist.Quantile(0.99)))
	if putErrs > 0 {
		e.logf("watch: %d puts failed; first error: %v", putErrs, putErr)
	}
	if n := watchErrs.Load(); n > 0 {
		e.logf("watch: %d watchers failed; first error: %v", n, firstErr)
	}
	if missing > 0 {
		e.logf("watch: %d of %d events not delivered", missing, expected)
	}
	return r, nil
}

// waitGroup waits for wg or ctx, whichever comes first.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sleepUntil sleeps until t or until ctx is done.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
