package robustness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

// artifactsDir is where failing histories are saved: ROBUSTNESS_ARTIFACTS,
// or a directory under the system's temporary directory that outlives the
// test.
func artifactsDir() string {
	if d := os.Getenv("ROBUSTNESS_ARTIFACTS"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "ballast-robustness")
}

// saveVisualisation writes porcupine's HTML view of the history (the longest
// linearizable prefixes, and where each fails) and returns its path.
func saveVisualisation(t *testing.T, sc scenario, v *verdict) string {
	dir := artifactsDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("saving the history: %v", err)
		return ""
	}
	path := filepath.Join(dir, strings.ReplaceAll(sc.String(), "/", "_")+".html")
	if err := porcupine.VisualizePath(kvModel, v.info, path); err != nil {
		t.Logf("saving the history: %v", err)
		return ""
	}
	return path
}

func (r *result) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d faults, %d ops (unknown: %v), %d stale reads, %d revisions watched, converged in %v, checked in %v",
		r.Scenario, r.Injected, r.Ops, r.Unknown, r.Stale, r.Revisions, r.Converge.Round(1e6), r.CheckTime.Round(1e6))
	if len(r.WriteGaps) > 0 {
		fmt.Fprintf(&b, ", write gaps %v", r.WriteGaps)
	}
	for _, e := range r.FaultErrors {
		fmt.Fprintf(&b, "\n  injection failed: %s", e)
	}
	for _, d := range r.DiskFull {
		fmt.Fprintf(&b, "\n  disk full: %s", d)
	}
	for _, c := range r.Corruption {
		fmt.Fprintf(&b, "\n  corruption: %s: detected=%v warned=%v panicked=%v %s", c.What, c.Detected, c.Warned, c.Panicked, c.Message)
	}
	return b.String()
}
