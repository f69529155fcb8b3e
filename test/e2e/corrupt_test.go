package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/ballast-kv/ballast/store"
	"github.com/ballast-kv/ballast/test/internal/harness"
)

// A member whose data silently diverged is caught by the periodic
// corruption check: the leader compares every member's HashKV at one
// revision, raises a CORRUPT alarm against the member outside the
// majority, and from then on every write is refused with etcd's
// "etcdserver: corrupt cluster" while reads are served. Disarming while
// the damage is still there does not help (the next check raises the alarm
// again); replacing the member does.
func TestCorruptMemberRaisesAlarm(t *testing.T) {
	opts := harness.Options{Args: []string{"--corrupt-check-time", "300ms"}}
	bin := harness.BallastBin(t)
	nodes := harness.StartCluster(t, bin, 3, opts)
	cl := newClients(t)
	ctx := testCtx(t, 4*time.Minute)

	const original, tampered = "original-value-0001", "tampered-value-0001"
	for i := range 20 {
		if _, err := cl.of(nodes[0]).Put(ctx, fmt.Sprintf("key-%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.of(nodes[0]).Put(ctx, "victim", original); err != nil {
		t.Fatal(err)
	}
	requireSameHashKV(t, nodes)
	leader, ids := clusterLeader(t, cl, nodes)
	victim := without(nodes, leader)[0]
	if err := victim.Stop(); err != nil {
		t.Fatal(err)
	}
	if n := tamperValue(t, filepath.Join(victim.DataDir, "state"), original, tampered); n == 0 {
		t.Fatalf("found no record holding %q in %s's state", original, victim.Name)
	}
	restart(t, victim)

	alarmed := func(ctx context.Context) error {
		resp, err := cl.of(leader).AlarmList(ctx)
		if err != nil {
			return err
		}
		want := []*pb.AlarmMember{{MemberID: ids[victim], Alarm: pb.AlarmType_CORRUPT}}
		if len(resp.Alarms) != 1 || resp.Alarms[0].MemberID != want[0].MemberID || resp.Alarms[0].Alarm != want[0].Alarm {
			return fmt.Errorf("alarms = %v, want %v", resp.Alarms, want)
		}
		return nil
	}
	waitUntil(t, time.Minute, "a CORRUPT alarm against "+victim.Name, alarmed)

	t.Run("writes refused, reads served", func(t *testing.T) {
		for _, n := range nodes {
			_, err := cl.of(n).Put(ctx, "after", "x")
			if !errors.Is(err, rpctypes.ErrCorrupt) {
				t.Errorf("put through %s: err = %v, want %v", n.Name, err, rpctypes.ErrCorrupt)
			}
			if _, err := cl.of(n).Delete(ctx, "key-00"); !errors.Is(err, rpctypes.ErrCorrupt) {
				t.Errorf("delete through %s: err = %v, want %v", n.Name, err, rpctypes.ErrCorrupt)
			}
			if _, err := cl.of(n).Grant(ctx, 60); !errors.Is(err, rpctypes.ErrCorrupt) {
				t.Errorf("lease grant through %s: err = %v, want %v", n.Name, err, rpctypes.ErrCorrupt)
			}
		}
		resp, err := cl.of(leader).Get(ctx, "victim")
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != original {
			t.Fatalf("get victim through the leader = %v, %v; want %q", resp, err, original)
		}
		out := newCtl(t, leader).ok("alarm", "list")
		if want := fmt.Sprintf("memberID:%d  alarm:CORRUPT", ids[victim]); strings.TrimSpace(out) != want {
			t.Fatalf("etcdctl alarm list = %q, want %q", out, want)
		}
		if code, _ := httpGet(t, leader.ClientURL+"/readyz"); code == http.StatusOK {
			t.Fatal("/readyz answers 200 with a CORRUPT alarm active")
		}
	})

	t.Run("disarming without a repair is raised again", func(t *testing.T) {
		newCtl(t, leader).ok("alarm", "disarm")
		waitUntil(t, time.Minute, "the CORRUPT alarm raised again", alarmed)
	})

	t.Run("replacing the member repairs the cluster", func(t *testing.T) {
		if _, err := cl.of(leader).MemberRemove(ctx, ids[victim]); err != nil {
			t.Fatal(err)
		}
		victim.Kill()
		live := without(nodes, victim)
		fresh := harness.NewMember(t, bin, nodes, "fresh", opts)
		if _, err := cl.of(leader).MemberAdd(ctx, []string{fresh.PeerURL}); err != nil {
			t.Fatal(err)
		}
		fresh.Join(harness.InitialCluster(append(live, fresh)))
		live = append(live, fresh)
		newCtl(t, leader).ok("alarm", "disarm")
		if _, err := cl.of(leader).Put(ctx, "after", "x"); err != nil {
			t.Fatalf("put after the repair: %v", err)
		}
		requireSameHashKV(t, live)
		// Three more clean checks by the leader, and no alarm.
		leader, _ := clusterLeader(t, cl, live)
		okChecks := func() float64 {
			return harness.MetricValue(t, harness.Scrape(t, leader), `ballast_server_corruption_checks_total\{outcome="ok"\}`)
		}
		start := okChecks()
		waitUntil(t, time.Minute, "three clean corruption checks", func(ctx context.Context) error {
			if n := okChecks() - start; n < 3 {
				return fmt.Errorf("%v clean checks so far", n)
			}
			return nil
		})
		resp, err := cl.of(leader).AlarmList(ctx)
		if err != nil || len(resp.Alarms) != 0 {
			t.Fatalf("alarms after the repair = %v, %v; want none", resp, err)
		}
	})
}

// tamperValue replaces old by new (of the same length) in every value of
// the stopped member's state database that holds it, the way a bit flip
// or a bug would, without touching any checksum Ballast keeps. It returns
// how many records it changed.
func tamperValue(t *testing.T, dir, old, new string) int {
	t.Helper()
	db, err := store.Open(store.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	changed := 0
	for it.First(); it.Valid(); it.Next() {
		if v := it.Value(); bytes.Contains(v, []byte(old)) {
			b.Set(slices.Clone(it.Key()), bytes.ReplaceAll(v, []byte(old), []byte(new)), nil)
			changed++
		}
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	return changed
}
