package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The defrag workload (-only defrag, single-node mode; not part of the
// default set, as it loads -defrag-size into each server): write latency
// while the member defragments. Per round and server it loads
// -defrag-size of 4 KiB values, deletes a quarter of them and compacts, so
// the database holds free pages (etcd) or tombstones (Ballast) for the
// defragment to reclaim. Then 16 clients put 256-byte values for a
// baseline, and again while Maintenance.Defragment runs; the latencies of
// the puts in flight during the defragment are compared with the baseline.
// etcd's defragment rewrites its bbolt file while holding the write lock,
// so every write waits for all of it; Ballast's runs a Pebble compaction
// in the background of writes.

const (
	defragValue   = 4 << 10
	defragWriters = 16
)

// defragSample is one round on one server: milliseconds, seconds, MiB.
type defragSample struct {
	baseP99, baseMax      float64 // ms, puts without a defragment
	duringP99, duringMax  float64 // ms, puts in flight during the defragment
	duringRate            float64 // puts/s completed during the defragment
	defrag                float64 // s, the Defragment call
	sizeBefore, sizeAfter float64 // MiB, Status.DbSize
	inUseAfter            float64 // MiB, Status.DbSizeInUse
}

func runDefrag(ctx context.Context, cfg *config, tab *table) error {
	samples := map[string][]defragSample{}
	for round := 1; round <= cfg.rounds; round++ {
		for _, name := range []string{"etcd", "ballast"} {
			ss, err := startServers(ctx, cfg, filepath.Join(cfg.workdir, fmt.Sprintf("defrag-%d", round)),
				[]string{"--quota-backend-bytes=" + strconv.FormatInt(max(4*cfg.defragSize, 8<<30), 10)}, name)
			if err != nil {
				stopAll(ss)
				return err
			}
			smp, err := measureDefrag(ctx, cfg, ss[0])
			stopAll(ss)
			if err != nil {
				return fmt.Errorf("defrag on %s, round %d: %w", name, round, err)
			}
			logf("round %d %-7s defrag %.2fs  put p99 %.2f ms (max %.1f) without, %.2f ms (max %.1f) during, %.0f puts/s during  db %.0f→%.0f MiB",
				round, name, smp.defrag, smp.baseP99, smp.baseMax, smp.duringP99, smp.duringMax, smp.duringRate, smp.sizeBefore, smp.sizeAfter)
			samples[name] = append(samples[name], smp)
		}
	}
	addMedians(tab, fmt.Sprintf("defragment of a %d MiB store, %d clients putting 256 B", cfg.defragSize>>20, defragWriters), samples, []measure[defragSample]{
		{"put p99 without defrag (ms)", func(s defragSample) float64 { return s.baseP99 }},
		{"put p99 during defrag (ms)", func(s defragSample) float64 { return s.duringP99 }},
		{"put max during defrag (ms)", func(s defragSample) float64 { return s.duringMax }},
		{"puts/s during defrag", func(s defragSample) float64 { return s.duringRate }},
		{"defragment call (s)", func(s defragSample) float64 { return s.defrag }},
		{"db size before defrag (MiB)", func(s defragSample) float64 { return s.sizeBefore }},
		{"db size after defrag (MiB)", func(s defragSample) float64 { return s.sizeAfter }},
		{"db size in use after defrag (MiB)", func(s defragSample) float64 { return s.inUseAfter }},
	})
	return nil
}

func measureDefrag(ctx context.Context, cfg *config, s *server) (smp defragSample, err error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return smp, err
	}
	defer cli.Close()

	keys := int(cfg.defragSize / defragValue)
	t0 := time.Now()
	if err := loadForDefrag(ctx, cli, keys); err != nil {
		return smp, err
	}
	resp, err := cli.Delete(ctx, "/defrag/drop/", clientv3.WithPrefix())
	if err != nil {
		return smp, err
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		return smp, err
	}
	logf("%s: loaded %d keys of %d B in %.0fs, deleted a quarter and compacted", s.name, keys, defragValue, time.Since(t0).Seconds())

	base := writeLoad(ctx, cli, func(context.Context) (from, to time.Time, err error) {
		from = time.Now()
		time.Sleep(10 * time.Second)
		return from, time.Now(), nil
	})
	if base.err != nil {
		return smp, base.err
	}
	smp.baseP99, smp.baseMax = base.all.p99(), base.all.max()

	during := writeLoad(ctx, cli, func(ctx context.Context) (from, to time.Time, err error) {
		time.Sleep(2 * time.Second)
		dctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		st, err := cli.Status(dctx, s.client)
		if err != nil {
			return from, to, err
		}
		smp.sizeBefore = mib(st.DbSize)
		from = time.Now()
		if _, err = cli.Defragment(dctx, s.client); err != nil {
			return from, to, err
		}
		to = time.Now()
		if st, err = cli.Status(dctx, s.client); err != nil {
			return from, to, err
		}
		smp.sizeAfter, smp.inUseAfter = mib(st.DbSize), mib(st.DbSizeInUse)
		return from, to, nil
	})
	if during.err != nil {
		return smp, during.err
	}
	smp.duringP99, smp.duringMax = during.overlapping.p99(), during.overlapping.max()
	smp.defrag = during.window.Seconds()
	smp.duringRate = float64(during.completedIn) / during.window.Seconds()
	return smp, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// loadForDefrag puts keys values of defragValue random bytes: three in four
// under /defrag/keep/, the rest under /defrag/drop/.
func loadForDefrag(ctx context.Context, cli *clientv3.Client, keys int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := make([]byte, defragValue)
			for {
				i := next.Add(1) - 1
				if i >= int64(keys) || ctx.Err() != nil {
					return
				}
				rand.Read(v)
				dir := "keep"
				if i%4 == 0 {
					dir = "drop"
				}
				if _, err := cli.Put(ctx, fmt.Sprintf("/defrag/%s/%09d", dir, i), string(v)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// latencies are put durations in milliseconds.
type latencies []float64

func (l latencies) p99() float64 {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[(len(s)*99+99)/100-1]
}

func (l latencies) max() float64 {
	if len(l) == 0 {
		return 0
	}
	return slices.Max(l)
}

// loadResult is what writeLoad saw: every put, those in flight at any time
// during the action, how many completed during it, and how long it took.
type loadResult struct {
	all, overlapping latencies
	completedIn      int
	window           time.Duration
	err              error
}

// writeLoad runs defragWriters clients putting 256-byte values from one
// second before action until one second after it; action returns the
// window it measured.
func writeLoad(ctx context.Context, cli *clientv3.Client, action func(context.Context) (from, to time.Time, err error)) loadResult {
	type op struct{ start, end time.Time }
	var mu sync.Mutex
	var ops []op
	var failed atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range defragWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := string(make([]byte, 256))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				if _, err := cli.Put(ctx, fmt.Sprintf("/defrag/w/%02d/%05d", w, i%1000), v); err != nil {
					failed.Store(err)
					return
				}
				mu.Lock()
				ops = append(ops, op{start, time.Now()})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Second)
	from, to, err := action(ctx)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	res := loadResult{window: to.Sub(from), err: err}
	if e, ok := failed.Load().(error); ok && res.err == nil {
		res.err = fmt.Errorf("put: %w", e)
	}
	for _, o := range ops {
		ms := float64(o.end.Sub(o.start)) / float64(time.Millisecond)
		res.all = append(res.all, ms)
		if o.start.Before(to) && o.end.After(from) {
			res.overlapping = append(res.overlapping, ms)
		}
		if !o.end.Before(from) && !o.end.After(to) {
			res.completedIn++
		}
	}
	return res
}
