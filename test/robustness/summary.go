package robustness

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// summarize aggregates the results of a run into the figures
// docs/robustness.md reports.
func summarize(results []*result) string {
	var b strings.Builder
	type perFault struct {
		scenarios, injected, ops, violations int
		converge, heal                       []time.Duration
	}
	by := map[string]*perFault{}
	var gaps []time.Duration
	var ops, stale, revs, violations int
	corrupt := map[string][3]int{} // file kind -> {refused to start, started with a warning, started silently}
	var panics int
	for _, r := range results {
		f := by[r.Fault]
		if f == nil {
			f = &perFault{}
			by[r.Fault] = f
		}
		f.scenarios++
		f.injected += r.Injected
		f.ops += r.Ops
		f.violations += len(r.Violations)
		if r.Converge > 0 {
			f.converge = append(f.converge, r.Converge)
		}
		f.heal = append(f.heal, r.HealConverge...)
		gaps = append(gaps, r.WriteGaps...)
		ops += r.Ops
		stale += r.Stale
		revs += r.Revisions
		violations += len(r.Violations)
		for _, c := range r.Corruption {
			kind := fileKind(c.File)
			n := corrupt[kind]
			switch {
			case c.Detected:
				n[0]++
			case c.Warned:
				n[1]++
			default:
				n[2]++
			}
			corrupt[kind] = n
			if c.Panicked {
				panics++
			}
		}
	}
	fmt.Fprintf(&b, "%d histories, %d operations checked for linearizability, %d stale reads, %d watched revisions, %d violations\n",
		len(results), ops, stale, revs, violations)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fault\tscenarios\tinjected\toperations\tviolations\tHashKV agree after heal p50/max\tat the end p50/max")
	for _, name := range slices.Sorted(maps.Keys(by)) {
		f := by[name]
		heal := "-"
		if len(f.heal) > 0 {
			heal = fmt.Sprintf("%v / %v", quantile(f.heal, 0.5), quantile(f.heal, 1))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%v / %v\n", name, f.scenarios, f.injected, f.ops, f.violations,
			heal, quantile(f.converge, 0.5), quantile(f.converge, 1))
	}
	tw.Flush()
	if len(gaps) > 0 {
		fmt.Fprintf(&b, "leader kill -> first acknowledged write: %d kills, p50 %v, p99 %v, max %v\n",
			len(gaps), quantile(gaps, 0.5), quantile(gaps, 0.99), quantile(gaps, 1))
	}
	if len(corrupt) > 0 {
		fmt.Fprintf(&b, "corrupted files (%d panics):\n", panics)
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "file\trefused to start\tstarted, warned of a torn tail\tstarted silently")
		for _, k := range slices.Sorted(maps.Keys(corrupt)) {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", k, corrupt[k][0], corrupt[k][1], corrupt[k][2])
		}
		tw.Flush()
	}
	return b.String()
}

// fileKind names the kind of a data directory's file (a path relative to it).
func fileKind(file string) string {
	dir, base := filepath.Split(file)
	switch {
	case base == "member":
		return "member file"
	case strings.HasPrefix(base, "OPTIONS"):
		return "OPTIONS (Pebble's options record)"
	case strings.HasPrefix(base, "ballast-files.sum"):
		return "Ballast's record of synced files"
	case strings.HasPrefix(base, "MANIFEST"):
		return "MANIFEST"
	case dir == "snap/" || strings.HasPrefix(dir, "snap/"):
		return "raft snapshot"
	}
	kind := map[string]string{"log": "WAL", "sst": "sstable", "blob": "blob file"}[strings.TrimPrefix(filepath.Ext(base), ".")]
	switch dir {
	case "raft/":
		return "raft log " + kind
	case "state/":
		return "state " + kind
	}
	return "other"
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(q*float64(len(s))))].Round(time.Millisecond)
}
