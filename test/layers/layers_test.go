// Package layers checks DESIGN.md §3: dependencies point down
// (cmd -> server -> {raftlog, mvcc, cluster, sqlbridge} -> store) and the
// middle layers never import each other.
package layers

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/ballast-kv/ballast/"

func TestLayers(t *testing.T) {
	allowed := map[string][]string{
		"store":     {},
		"raftlog":   {"store"},
		"mvcc":      {"store"},
		"cluster":   {"store"},
		"sqlbridge": {"store"},
		"server":    {"store", "raftlog", "mvcc", "cluster", "sqlbridge"},
	}
	for layer, ok := range allowed {
		if _, err := os.Stat("../../" + layer); err != nil {
			continue // the layer has no code yet
		}
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "../../"+layer+"/...").CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "matched no packages") {
				continue // the layer has no code yet
			}
			t.Fatalf("go list %s: %v\n%s", layer, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			rest, ours := strings.CutPrefix(dep, mod)
			if !ours {
				continue
			}
			top, _, _ := strings.Cut(rest, "/")
			if top == layer {
				continue
			}
			allowedDep := false
			for _, a := range ok {
				allowedDep = allowedDep || a == top
			}
			if !allowedDep {
				t.Errorf("%s imports %s: layers must point down (DESIGN.md §3)", layer, dep)
			}
		}
	}
}
