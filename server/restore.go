package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/ballast-kv/ballast/mvcc"
	"github.com/ballast-kv/ballast/store"
)

// Restore describes a finished RestoreBackup.
type Restore struct {
	MemberID, ClusterID uint64
	DataDir             string // as given, or the default ${name}.ballast
	Info                mvcc.SnapshotInfo
}

// RestoreBackup makes cfg.DataDir the data dir of one member of a new
// cluster seeded from a backup (`etcdctl snapshot save`'s file), as
// `etcdutl snapshot restore` does: run it once per member with the same
// file, --initial-cluster and --initial-cluster-token, then start every
// member with those flags. Keys, revisions, history above the compaction
// and leases are kept; the old member table and alarms are not. The data
// dir must not exist yet; on any error nothing is left behind. Without
// verify, the file's sha256 is not compared (--skip-hash-check).
func RestoreBackup(cfg Config, backup io.Reader, size int64, verify bool) (Restore, error) {
	peers, err := cfg.validateMembership()
	if err != nil {
		return Restore{}, err
	}
	cfg.DataDir = cfg.dataDir()
	if _, err := os.Stat(cfg.DataDir); err == nil {
		return Restore{}, fmt.Errorf("data dir %s already exists: restore into a new directory", cfg.DataDir)
	} else if !errors.Is(err, os.ErrNotExist) {
		return Restore{}, err
	}
	id, cid, _ := newClusterIDs(cfg.Name, cfg.InitialClusterToken, peers)
	res := Restore{MemberID: id, ClusterID: cid, DataDir: cfg.DataDir}
	br, err := mvcc.NewBackupReader(backup, size, verify)
	if err != nil {
		return res, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return res, err
	}
	if res.Info, err = restoreState(cfg, br); err != nil {
		os.RemoveAll(cfg.DataDir)
		return res, err
	}
	// The member file last: a data dir without one is not a member's.
	if err := store.WriteFileAtomically(vfs.Default, filepath.Join(cfg.DataDir, "member"), memberFile(id, cid)); err != nil {
		os.RemoveAll(cfg.DataDir)
		return res, err
	}
	return res, nil
}

func restoreState(cfg Config, br *mvcc.BackupReader) (mvcc.SnapshotInfo, error) {
	db, err := store.Open(store.Config{Dir: filepath.Join(cfg.DataDir, "state"), Logger: cfg.Logger})
	if err != nil {
		return mvcc.SnapshotInfo{}, err
	}
	defer db.Close()
	kv, err := mvcc.Open(db, mvcc.Config{Logger: cfg.Logger})
	if err != nil {
		return mvcc.SnapshotInfo{}, err
	}
	defer kv.Close()
	info, err := kv.RestoreInfo(br)
	if err != nil {
		return info, err
	}
	if err := br.Verify(); err != nil {
		return mvcc.SnapshotInfo{}, err
	}
	if err := kv.ForgetCluster(); err != nil {
		return mvcc.SnapshotInfo{}, err
	}
	return info, nil
}
