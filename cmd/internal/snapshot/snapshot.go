// Package snapshot is `ballast snapshot`: what etcdutl does with the file
// `etcdctl snapshot save` writes.
//
//	ballast snapshot status FILE [-w table|json]
//	ballast snapshot restore FILE --name ... --data-dir ... --initial-cluster ...
package snapshot

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/ballast-kv/ballast/cmd/internal/cli"
	"github.com/ballast-kv/ballast/mvcc"
	"github.com/ballast-kv/ballast/server"
)

// Main runs `ballast snapshot` with args being what follows "snapshot". It
// returns the exit status: 0 on success, 1 on failure, 2 on a usage error.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return cli.UsageError(stderr, "snapshot", errors.New("want a sub-command: status or restore"))
	}
	switch args[0] {
	case "status":
		return status(args[1:], stdout, stderr)
	case "restore":
		return restore(args[1:], stdout, stderr)
	case "-h", "-help", "--help":
		fmt.Fprint(stderr, usageText)
		return 0
	}
	return cli.UsageError(stderr, "snapshot", fmt.Errorf("unknown sub-command %q: want status or restore", args[0]))
}

const usageText = `Usage:
  ballast snapshot status FILE [-w table|json]
      Checks a snapshot file (etcdctl snapshot save's) and shows its checksum,
      revision, live keys, size and version.
  ballast snapshot restore FILE --name NAME --data-dir DIR --initial-cluster ... \
      --initial-cluster-token TOKEN --initial-advertise-peer-urls URLS [--skip-hash-check]
      Makes DIR the data directory of member NAME of a new cluster seeded from FILE,
      as etcdutl snapshot restore does. Run it for every member with the same file and
      cluster flags, then start the members with those flags.
`

func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "ballast snapshot: %v\n", err)
	return 1
}

// openFile adds -w to fs, parses flags that may come before or after the
// one FILE argument, and opens the file. On failure it has reported the
// error and code is the exit code.
func openFile(fs *flag.FlagSet, args []string, stderr io.Writer) (f *os.File, size int64, path, format string, code int) {
	cli.FormatFlag(fs, &format)
	fs.SetOutput(io.Discard)
	files, err := cli.ParseInterspersed(fs, args)
	if err != nil {
		return nil, 0, "", "", cli.UsageError(stderr, "snapshot", cli.RewordFlagError(err))
	}
	if len(files) != 1 {
		return nil, 0, "", "", cli.UsageError(stderr, "snapshot", fmt.Errorf("want one snapshot file, got %d", len(files)))
	}
	if err := cli.CheckFormat(format); err != nil {
		return nil, 0, "", "", cli.UsageError(stderr, "snapshot", err)
	}
	path = files[0]
	if f, err = os.Open(path); err != nil {
		return nil, 0, "", "", fail(stderr, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, "", "", fail(stderr, err)
	}
	return f, st.Size(), path, format, 0
}

// Status is what `snapshot status` prints; the JSON keys are etcdutl's,
// plus Ballast's own.
type Status struct {
	Hash            uint32 `json:"hash"`
	Revision        int64  `json:"revision"`
	TotalKey        int64  `json:"totalKey"`
	TotalSize       int64  `json:"totalSize"`
	Version         string `json:"version"`
	CompactRevision int64  `json:"compactRevision"`
	Leases          int64  `json:"leases"`
}

func status(args []string, stdout, stderr io.Writer) int {
	f, size, path, format, code := openFile(flag.NewFlagSet("status", flag.ContinueOnError), args, stderr)
	if code != 0 {
		return code
	}
	defer f.Close()
	br, err := mvcc.NewBackupReader(f, size, true)
	if err != nil {
		return fail(stderr, fmt.Errorf("%s: %w", path, err))
	}
	info, err := mvcc.ReadSnapshotInfo(br)
	if err == nil {
		err = br.Verify()
	}
	if err != nil {
		return fail(stderr, fmt.Errorf("%s: %w", path, err))
	}
	st := Status{Hash: info.Checksum, Revision: info.Revision, TotalKey: info.Keys, TotalSize: size,
		Version: server.ClusterVersion, CompactRevision: info.CompactRevision, Leases: info.Leases}
	cli.WriteRow(stdout, format, st, "HASH\tREVISION\tTOTAL KEYS\tTOTAL SIZE\tVERSION\tCOMPACTED AT\tLEASES",
		"%08x\t%d\t%d\t%s\t%s\t%s\t%d\n", st.Hash, st.Revision, st.TotalKey, cli.HumanBytes(st.TotalSize), st.Version, compacted(st.CompactRevision), st.Leases)
	return 0
}

func compacted(rev int64) string {
	if rev <= 0 {
		return "-"
	}
	return strconv.FormatInt(rev, 10)
}

func restore(args []string, stdout, stderr io.Writer) int {
	cfg := server.DefaultConfig()
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.StringVar(&cfg.Name, "name", cfg.Name, "human-readable name for this member")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "path to the data directory to create (default ${name}.ballast)")
	fs.StringVar(&cfg.InitialCluster, "initial-cluster", "", "the new cluster, name=url,... (default ${name}=${initial-advertise-peer-urls})")
	fs.StringVar(&cfg.InitialClusterToken, "initial-cluster-token", cfg.InitialClusterToken, "initial cluster token of the new cluster")
	fs.Func("initial-advertise-peer-urls", "this member's peer URLs", func(v string) error {
		cfg.InitialAdvertisePeerURLs = strings.Split(v, ",")
		return nil
	})
	skipHash := fs.Bool("skip-hash-check", false, "do not compare the file's sha256 checksum")
	f, size, path, format, code := openFile(fs, args, stderr)
	if code != 0 {
		return code
	}
	defer f.Close()
	p := newProgress(f, size, stderr)
	res, err := server.RestoreBackup(cfg, p, size, !*skipHash)
	p.p.Done()
	if err != nil {
		return fail(stderr, fmt.Errorf("restore %s: %w", path, err))
	}
	out := struct {
		MemberID  string `json:"memberID"`
		ClusterID string `json:"clusterID"`
		Revision  int64  `json:"revision"`
		TotalKey  int64  `json:"totalKey"`
		Leases    int64  `json:"leases"`
		DataDir   string `json:"dataDir"`
	}{strconv.FormatUint(res.MemberID, 16), strconv.FormatUint(res.ClusterID, 16), res.Info.Revision, res.Info.Keys, res.Info.Leases, res.DataDir}
	cli.WriteRow(stdout, format, out, "MEMBER ID\tCLUSTER ID\tREVISION\tTOTAL KEYS\tLEASES\tDATA DIR",
		"%s\t%s\t%d\t%d\t%d\t%s\n", out.MemberID, out.ClusterID, out.Revision, out.TotalKey, out.Leases, out.DataDir)
	return 0
}

// progressReader reports how much of a long read is done, on stderr.
type progressReader struct {
	r           io.Reader
	read, total int64
	p           *cli.Progress
}

func newProgress(r io.Reader, total int64, w io.Writer) *progressReader {
	return &progressReader{r: r, total: total, p: cli.NewProgress(w, func(done, total int64, perSec float64) string {
		return fmt.Sprintf("restoring: %s of %s (%.0f%%), %s/s\n", cli.HumanBytes(done), cli.HumanBytes(total),
			100*float64(done)/float64(max(total, 1)), cli.HumanBytes(int64(perSec)))
	})}
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.read += int64(n)
	p.p.Report(p.read, p.total)
	return n, err
}
