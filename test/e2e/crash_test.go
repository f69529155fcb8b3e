package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// TestKill9UnderLoad: writers put keys as fast as they can; the server is
// killed with SIGKILL mid-stream and restarted. Every put that was
// acknowledged must be there with its revision, and the revision must not
// go backwards. Repeated a few times on the same data dir.
func TestKill9UnderLoad(t *testing.T) {
	n := harness.Start(t, harness.BallastBin(t), harness.Options{Args: []string{"--snapshot-count", "500"}})
	type ack struct {
		key, val string
		rev      int64
	}
	var acked []ack
	var lastRev int64
	for round := 0; round < 3; round++ {
		var mu sync.Mutex
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cli, err := n.NewClient()
				if err != nil {
					return
				}
				defer cli.Close()
				for i := 0; ctx.Err() == nil; i++ {
					k, v := fmt.Sprintf("r%d/w%d/%06d", round, w, i), fmt.Sprint(i)
					resp, err := cli.Put(ctx, k, v)
					if err != nil {
						return // the server died: outcome unknown, not acknowledged
					}
					mu.Lock()
					acked = append(acked, ack{k, v, resp.Header.Revision})
					mu.Unlock()
				}
			}()
		}
		// Let the load run, then kill while writes are in flight.
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			count := len(acked)
			mu.Unlock()
			if count >= (round+1)*1500 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		n.Kill()
		cancel()
		wg.Wait()
		n.Restart()

		cli := n.Client(t)
		ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
		for _, a := range acked {
			resp, err := cli.Get(ctx2, a.key)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != a.val || resp.Kvs[0].ModRevision != a.rev {
				t.Fatalf("round %d: acknowledged put %s=%s@%d lost after kill -9: got %v", round, a.key, a.val, a.rev, resp.Kvs)
			}
		}
		resp, err := cli.Get(ctx2, "none")
		cancel2()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Revision < lastRev {
			t.Fatalf("revision went backwards: %d after %d", resp.Header.Revision, lastRev)
		}
		lastRev = resp.Header.Revision
		t.Logf("round %d: %d acknowledged puts survived, revision %d", round, len(acked), lastRev)
	}
}
