package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// A backup has the shape etcd's tools check (size % 512 == 32), restores
// into a new cluster's store with the same keys, revision, history and
// leases, describes itself without a restore, and any changed byte — in
// the data, the padding or the checksum — is refused.
func TestBackupRoundTripAndChecksum(t *testing.T) {
	src := openTestStore(t, nil, Config{})
	for i := 0; i < 300; i++ {
		src.must(putReq(fmt.Sprintf("k%03d", i%120), fmt.Sprint(i)))
	}
	src.must(grantReq(7, 3600))
	src.must(putLeaseReq("leased", "v", 7))
	src.must(compactReq(100))
	src.must(delReq("k005", ""))
	src.must(&pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: 1, Alarm: pb.AlarmType_NOSPACE}})
	m := &pb.Member{ID: 42, Name: "old", PeerURLs: []string{"http://127.0.0.1:2380"}}
	data, err := EncodeMemberOp(MemberAdd, m)
	if err != nil {
		t.Fatal(err)
	}
	src.index++
	src.s.Apply([]Entry{{Index: src.index, Data: data}})

	var file bytes.Buffer
	n, err := src.s.WriteBackup(&file)
	if err != nil {
		t.Fatalf("WriteBackup: %v", err)
	}
	if n != int64(file.Len()) || n%512 != 32 {
		t.Fatalf("backup of %d bytes (reported %d): etcd's tools want size %% 512 == 32", file.Len(), n)
	}

	info, err := ReadSnapshotInfo(mustBackupReader(t, file.Bytes(), true))
	if err != nil {
		t.Fatalf("ReadSnapshotInfo: %v", err)
	}
	if info.Revision != src.s.Rev() || info.CompactRevision != 100 || info.Keys != 120 || info.Leases != 1 {
		t.Fatalf("info %+v: want revision %d, compact 100, 120 keys (119 + leased), 1 lease", info, src.s.Rev())
	}

	dst := openTestStore(t, nil, Config{})
	br := mustBackupReader(t, file.Bytes(), true)
	if err := dst.s.Restore(br); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if err := br.Verify(); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if err := dst.s.ForgetCluster(); err != nil {
		t.Fatal(err)
	}
	if dst.s.Rev() != src.s.Rev() || dst.hash(0) != src.hash(0) {
		t.Fatalf("restored rev %d hash %x, source rev %d hash %x", dst.s.Rev(), dst.hash(0), src.s.Rev(), src.hash(0))
	}
	if dst.s.AppliedIndex() != 0 || len(dst.s.Alarms()) != 0 {
		t.Fatalf("a new cluster's state keeps applied index %d and alarms %v", dst.s.AppliedIndex(), dst.s.Alarms())
	}
	if ms, err := dst.s.Members(); err != nil || len(ms) != 0 {
		t.Fatalf("a new cluster's state keeps the old members %v (%v)", ms, err)
	}
	if got := dst.get("leased"); got == nil || got.Lease != 7 {
		t.Fatalf("leased key after restore: %v", got)
	}
	// The new cluster's log starts at 1 and must be applied.
	dst.index = 0
	dst.must(putReq("after", "x"))
	if dst.s.Rev() != src.s.Rev()+1 || dst.get("after") == nil {
		t.Fatalf("the first entry of the new cluster's log was not applied: rev %d", dst.s.Rev())
	}

	for _, at := range []int{len(snapshotMagic) + 3, file.Len() - 40, file.Len() - 1} {
		bad := bytes.Clone(file.Bytes())
		bad[at] ^= 0x10
		s := openTestStore(t, nil, Config{})
		br := mustBackupReader(t, bad, true)
		err := s.s.Restore(br)
		if err == nil {
			err = br.Verify()
		}
		if !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("flipped byte %d of %d: got %v, want ErrBadSnapshot", at, len(bad), err)
		}
	}
	if _, err := NewBackupReader(bytes.NewReader(file.Bytes()[1:]), int64(file.Len()-1), true); !errors.Is(err, ErrNotBackup) {
		t.Errorf("a file of the wrong size: got %v, want ErrNotBackup", err)
	}
}

func mustBackupReader(t *testing.T, b []byte, verify bool) *BackupReader {
	t.Helper()
	br, err := NewBackupReader(bytes.NewReader(b), int64(len(b)), verify)
	if err != nil {
		t.Fatal(err)
	}
	return br
}
