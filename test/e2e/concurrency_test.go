package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// TestMutex: several contenders, each on its own session and connection,
// take the lock in turn; at most one ever holds it.
func TestMutex(t *testing.T) {
	n := harness.Start(t, harness.BallastBin(t), harness.Options{})
	const contenders, rounds = 5, 4
	var holders, maxHolders, acquired atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, contenders)
	for i := 0; i < contenders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cli := n.Client(t)
			sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
			if err != nil {
				errs <- err
				return
			}
			defer sess.Close()
			m := concurrency.NewMutex(sess, "/lock/")
			for r := 0; r < rounds; r++ {
				if err := m.Lock(ctx); err != nil {
					errs <- err
					return
				}
				h := holders.Add(1)
				for {
					old := maxHolders.Load()
					if h <= old || maxHolders.CompareAndSwap(old, h) {
						break
					}
				}
				acquired.Add(1)
				// Hold it across a round trip so overlapping holders would show.
				if _, err := cli.Put(ctx, "/protected", fmt.Sprint(i, r)); err != nil {
					errs <- err
				}
				holders.Add(-1)
				if err := m.Unlock(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := acquired.Load(); got != contenders*rounds {
		t.Fatalf("lock acquired %d times, want %d", got, contenders*rounds)
	}
	if maxHolders.Load() != 1 {
		t.Fatalf("%d contenders held the lock at once", maxHolders.Load())
	}
}

// TestElection: one leader at a time; when it resigns another campaigner
// wins, and observers see each leader's value.
func TestElection(t *testing.T) {
	n := harness.Start(t, harness.BallastBin(t), harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	observer := concurrency.NewElection(mustSession(t, n.Client(t)), "/election/")
	seen := observer.Observe(ctx)

	const candidates = 3
	elections := make([]*concurrency.Election, candidates)
	won := make(chan int, candidates)
	for i := range elections {
		elections[i] = concurrency.NewElection(mustSession(t, n.Client(t)), "/election/")
		go func() {
			if err := elections[i].Campaign(ctx, fmt.Sprint("candidate-", i)); err == nil {
				won <- i
			}
		}()
	}
	for round := 0; round < candidates; round++ {
		var leader int
		select {
		case leader = <-won:
		case <-ctx.Done():
			t.Fatalf("round %d: nobody won", round)
		}
		select {
		case other := <-won:
			t.Fatalf("candidates %d and %d lead at once", leader, other)
		case <-time.After(300 * time.Millisecond):
		}
		want := fmt.Sprint("candidate-", leader)
		for {
			select {
			case resp := <-seen:
				if len(resp.Kvs) > 0 && string(resp.Kvs[0].Value) == want {
					goto observed
				}
			case <-ctx.Done():
				t.Fatalf("observer never saw %s", want)
			}
		}
	observed:
		if err := elections[leader].Resign(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func mustSession(t *testing.T, cli *clientv3.Client) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
