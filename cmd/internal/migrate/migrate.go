// Package migrate is `ballast migrate`: moving data between kine tables and
// Ballast (docs/sql.md).
//
//	ballast migrate from-kine --source postgres://... --output FILE [-w table|json]
//	ballast migrate to-kine --target postgres://... [--endpoints ...] [--dialect ...] [-w table|json]
package migrate

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ballast-kv/ballast/cmd/internal/cli"
	"github.com/ballast-kv/ballast/cmd/internal/endpoints"
	"github.com/ballast-kv/ballast/mvcc"
	"github.com/ballast-kv/ballast/sqlbridge"
	"github.com/ballast-kv/ballast/store"
)

const usageText = `Usage:
  ballast migrate from-kine --source postgres://... --output FILE [-w table|json]
      Reads a kine table (in one consistent snapshot; kine may keep running)
      and writes a Ballast snapshot file with its keys, values, revisions and
      compaction. Make a new cluster of it with ballast snapshot restore.
  ballast migrate to-kine --target postgres://... [--endpoints URLS] [--dialect postgres|yugabyte] [-w table|json]
      Writes a Ballast cluster's keys at one revision into a kine table that
      kine (k3s --datastore-endpoint) can take over. The table must be empty or
      hold only an earlier run's export; re-running replaces it.
`

// Main runs `ballast migrate` with args being what follows "migrate".
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return cli.UsageError(stderr, "migrate", errors.New("want a sub-command: from-kine or to-kine"))
	}
	switch args[0] {
	case "from-kine":
		return fromKine(args[1:], stdout, stderr)
	case "to-kine":
		return toKine(args[1:], stdout, stderr)
	case "-h", "-help", "--help":
		fmt.Fprint(stderr, usageText)
		return 0
	}
	return cli.UsageError(stderr, "migrate", fmt.Errorf("unknown sub-command %q: want from-kine or to-kine", args[0]))
}

func parse(fs *flag.FlagSet, args []string, format *string, stderr io.Writer) int {
	cli.FormatFlag(fs, format)
	fs.SetOutput(io.Discard)
	rest, err := cli.ParseInterspersed(fs, args)
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("unexpected arguments %q", rest)
	}
	if err == nil {
		err = cli.CheckFormat(*format)
	}
	if err != nil {
		return cli.UsageError(stderr, "migrate", cli.RewordFlagError(err))
	}
	return 0
}

func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "ballast migrate: %v\n", err)
	return 1
}

func fromKine(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("from-kine", flag.ContinueOnError)
	source := fs.String("source", "", "postgres:// URL of the database holding kine's table")
	output := fs.String("output", "", "snapshot file to write")
	var format string
	if code := parse(fs, args, &format, stderr); code != 0 {
		return code
	}
	if *source == "" || *output == "" {
		return cli.UsageError(stderr, "migrate", errors.New("from-kine needs --source and --output"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := fromKineFile(ctx, *source, *output, newProgress(stderr, "reading kine rows"))
	if err != nil {
		return fail(stderr, err)
	}
	cli.WriteRow(stdout, format, res, "REVISION\tCOMPACTED AT\tROWS\tKEYS\tLEASES\tSIZE\tFILE",
		"%d\t%d\t%d\t%d\t%d\t%s\t%s\n", res.Revision, res.CompactRevision, res.Rows, res.Keys, res.Leases, cli.HumanBytes(res.Size), *output)
	return 0
}

// fromKineFile imports the kine table into a temporary store and writes
// its snapshot to output, through a temporary file renamed into place, so a
// re-run or a crash never leaves half a file.
func fromKineFile(ctx context.Context, source, output string, p *cli.Progress) (sqlbridge.FromKineResult, error) {
	var res sqlbridge.FromKineResult
	tmp, err := os.MkdirTemp(filepath.Dir(output), ".ballast-import-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)
	db, err := store.Open(store.Config{Dir: tmp})
	if err != nil {
		return res, err
	}
	defer db.Close()
	s, err := mvcc.Open(db, mvcc.Config{})
	if err != nil {
		return res, err
	}
	defer s.Close()
	im, err := s.NewImporter()
	if err != nil {
		return res, err
	}
	res, err = sqlbridge.FromKine(ctx, source, im, p.Report)
	p.Done()
	if err != nil {
		return res, err
	}
	all, err := s.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true})
	if err != nil {
		return res, err
	}
	res.Keys = all.Count
	f, err := os.CreateTemp(filepath.Dir(output), ".ballast-snapshot-")
	if err != nil {
		return res, err
	}
	defer os.Remove(f.Name())
	res.Size, err = s.WriteBackup(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return res, err
	}
	return res, os.Rename(f.Name(), output)
}

func toKine(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("to-kine", flag.ContinueOnError)
	target := fs.String("target", "", "postgres:// URL of the database to write kine's table into")
	eps := fs.String("endpoints", "127.0.0.1:2379", "comma-separated Ballast client URLs")
	dialect := fs.String("dialect", "postgres", "postgres or yugabyte")
	var tlsFlags endpoints.TLS
	tlsFlags.Register(fs)
	var format string
	if code := parse(fs, args, &format, stderr); code != 0 {
		return code
	}
	d, err := sqlbridge.ParseDialect(*dialect)
	if err != nil {
		return cli.UsageError(stderr, "migrate", err)
	}
	if *target == "" {
		return cli.UsageError(stderr, "migrate", errors.New("to-kine needs --target"))
	}
	tlsCfg, err := tlsFlags.Config()
	if err != nil {
		return cli.UsageError(stderr, "migrate", err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints.Split(*eps), TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fail(stderr, err)
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	kv := pb.NewKVClient(c.ActiveConnection())
	rng := func(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return kv.Range(ctx, r)
	}
	ttls := map[int64]int64{}
	ttl := func(lease int64) int64 {
		if t, ok := ttls[lease]; ok {
			return t
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		r, err := c.TimeToLive(ctx, clientv3.LeaseID(lease))
		if err != nil || r.TTL < 0 {
			ttls[lease] = 0
		} else {
			ttls[lease] = r.GrantedTTL
		}
		return ttls[lease]
	}
	p := newProgress(stderr, "writing keys")
	res, err := sqlbridge.ToKine(ctx, rng, ttl, *target, d, p.Report)
	p.Done()
	if err != nil {
		return fail(stderr, err)
	}
	cli.WriteRow(stdout, format, res, "REVISION\tKEYS\tRENUMBERED\tLAST ID",
		"%d\t%d\t%d\t%d\n", res.Revision, res.Keys, res.Renumbered, res.LastID)
	return 0
}

// newProgress reports how many items of a migration are done, on stderr.
func newProgress(w io.Writer, what string) *cli.Progress {
	return cli.NewProgress(w, func(done, total int64, perSec float64) string {
		var b strings.Builder
		fmt.Fprintf(&b, "%s: %d", what, done)
		if total > 0 {
			fmt.Fprintf(&b, " of %d (%.0f%%)", total, 100*float64(done)/float64(total))
		}
		fmt.Fprintf(&b, ", %.0f/s\n", perSec)
		return b.String()
	})
}
