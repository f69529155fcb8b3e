package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// A member restoring a leader's snapshot must end with the leader's state:
// the same keys, history above the compaction, leases, member table and
// applied index; a watcher it already had carries on from the restored
// event log, in order and without gaps; and it then applies only entries
// the snapshot does not cover.
func TestSnapshotRestoreReplacesState(t *testing.T) {
	leader := openTestStore(t, nil, Config{})
	for i := 0; i < 50; i++ {
		leader.must(putReq(fmt.Sprintf("k%02d", i%10), fmt.Sprint(i)))
	}
	leader.must(grantReq(7, 3600))
	leader.must(putLeaseReq("leased", "v", 7))
	leader.must(compactReq(5))
	delRev := leader.must(delReq("k05", "")).(*pb.DeleteRangeResponse).Header.Revision
	m := &pb.Member{ID: 42, Name: "n2", PeerURLs: []string{"http://127.0.0.1:2380"}}
	data, err := EncodeMemberOp(MemberAdd, m)
	if err != nil {
		t.Fatal(err)
	}
	leader.index++
	if res := leader.s.Apply([]Entry{{Index: leader.index, Data: data}})[0]; res == nil {
		t.Fatal("member add returned nothing")
	}
	var snap bytes.Buffer
	applied, err := leader.s.WriteSnapshot(&snap)
	if err != nil {
		t.Fatalf("WriteSnapshot: %v", err)
	}
	if applied != leader.index {
		t.Fatalf("snapshot applied index %d, want %d", applied, leader.index)
	}

	// The follower has an older state (a prefix of the leader's history,
	// as Raft guarantees) and a watcher from rev 10.
	follower := openTestStore(t, nil, Config{})
	for i := 0; i < 12; i++ {
		follower.must(putReq(fmt.Sprintf("k%02d", i%10), fmt.Sprint(i)))
	}
	ws := follower.s.NewWatchStream()
	if _, _, err := ws.Watch(0, []byte("k"), []byte("l"), 10, WatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// Drain what the watcher got before the restore: revisions 10..13.
	pre := collectEvents(t, ws, 4)

	if err := follower.s.Restore(bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if follower.s.Restoring() {
		t.Fatal("Restoring() after a complete restore")
	}
	if got := follower.s.AppliedIndex(); got != leader.index {
		t.Fatalf("applied index after restore %d, want %d", got, leader.index)
	}
	all := &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}
	requireProtoEqual(t, "all keys", follower.rng(all), leader.rng(all))
	if follower.get("k05") != nil {
		t.Fatal("a key the leader deleted survived the restore")
	}
	if h, w := follower.hash(0), leader.hash(0); h != w {
		t.Fatalf("HashKV after restore %08x, leader %08x", h, w)
	}
	ttl, err := follower.s.LeaseTimeToLive(7, true)
	if err != nil || ttl.TTL == -1 || len(ttl.Keys) != 1 {
		t.Fatalf("lease 7 after restore: %v %v", ttl, err)
	}
	ms, err := follower.s.Members()
	if err != nil || len(ms) != 1 || ms[0].Name != "n2" {
		t.Fatalf("member table after restore: %v %v", ms, err)
	}
	// The watcher continues after what it saw (rev 12 was its last event
	// before the restore), through the restored history.
	last := pre[len(pre)-1].Kv.ModRevision
	untilRev := func(ws *WatchStream) []*mvccpb.Event {
		var evs []*mvccpb.Event
		for len(evs) == 0 || evs[len(evs)-1].Kv.ModRevision < delRev {
			r := recvResp(t, ws)
			if r.CompactRevision != 0 {
				t.Fatalf("compacted response %+v", r)
			}
			evs = append(evs, r.Events...)
		}
		return evs
	}
	lw := leader.s.NewWatchStream()
	if _, _, err := lw.Watch(0, []byte("k"), []byte("l"), last+1, WatchOptions{}); err != nil {
		t.Fatal(err)
	}
	want := untilRev(lw)
	got := untilRev(ws)
	if len(got) != len(want) {
		revs := func(evs []*mvccpb.Event) (out []int64) {
			for _, e := range evs {
				out = append(out, e.Kv.ModRevision)
			}
			return out
		}
		t.Logf("got %v\nwant %v", revs(got), revs(want))
		t.Fatalf("follower's watcher got %d events after the restore, the leader's history has %d", len(got), len(want))
	}
	for i := range want {
		requireProtoEqual(t, fmt.Sprintf("event %d", i), got[i], want[i])
	}

	// Entries the snapshot covers are skipped; the next ones apply on the
	// restored state, not on what the follower had before: k03 had another
	// version there, and k05, deleted on the leader, still existed.
	follower.index = leader.index
	for _, k := range []string{"after", "k03", "k05"} {
		follower.must(putReq(k, "1"))
		leader.must(putReq(k, "1"))
		requireProtoEqual(t, k+" after the restore", follower.get(k), leader.get(k))
	}
	if h, w := follower.hash(0), leader.hash(0); h != w {
		t.Fatalf("HashKV after the next entries %08x, leader %08x", h, w)
	}
}

// A corrupt snapshot is refused and leaves the state marked as restoring,
// so the member does not serve a partial state.
func TestSnapshotRestoreRejectsCorruption(t *testing.T) {
	src := openTestStore(t, nil, Config{})
	for i := 0; i < 20; i++ {
		src.must(putReq(fmt.Sprintf("k%d", i), "value"))
	}
	var snap bytes.Buffer
	if _, err := src.s.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	b := snap.Bytes()
	b[len(b)/2] ^= 0x40
	dst := openTestStore(t, nil, Config{})
	err := dst.s.Restore(bytes.NewReader(b))
	if !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("Restore of a corrupt snapshot = %v, want ErrBadSnapshot", err)
	}
	if !dst.s.Restoring() {
		t.Fatal("a failed restore must leave the state marked as restoring")
	}
}
