package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// mainModule is the module path that marks the repository root.
const mainModule = "github.com/ballast-kv/ballast"

// RepoRoot returns the directory holding the main module's go.mod, found by
// walking up from the working directory (a package directory under go test).
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	return root
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isMainModule(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod for module %s above the working directory", mainModule)
		}
		dir = parent
	}
}

func isMainModule(gomod string) bool {
	data, err := os.ReadFile(gomod)
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == mainModule
		}
	}
	return false
}

// EtcdBin returns the reference etcd binary: $ETCD_BIN, or bin/etcd in the
// repository. A missing binary fails the test: the compatibility tests must
// never pass by not running.
func EtcdBin(t testing.TB) string {
	t.Helper()
	return refBin(t, "ETCD_BIN", "etcd")
}

// EtcdctlBin returns the reference etcdctl binary: $ETCDCTL_BIN, or
// bin/etcdctl in the repository. A missing binary fails the test.
func EtcdctlBin(t testing.TB) string {
	t.Helper()
	return refBin(t, "ETCDCTL_BIN", "etcdctl")
}

// KineBin returns the reference kine binary: $KINE_BIN, or bin/kine in the
// repository (`make kine-ref`). A missing binary fails the test.
func KineBin(t testing.TB) string {
	t.Helper()
	return refBin(t, "KINE_BIN", "kine")
}

func refBin(t testing.TB, env, name string) string {
	t.Helper()
	path := os.Getenv(env)
	if path == "" {
		path = filepath.Join(RepoRoot(t), "bin", name)
	} else {
		path = FromRoot(t, path)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("harness: reference %s binary not found at %s (%v): run `make etcd-ref kine-ref` "+
			"in the repository root, or set %s", name, path, err, env)
	}
	return path
}

// FromRoot resolves a relative path given in the environment against the
// repository root, since go test runs each package in its own directory.
func FromRoot(t testing.TB, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(RepoRoot(t), path)
}

var ballastBuild struct {
	once sync.Once
	path string
	err  error
}

// BallastBin returns the ballast binary: $BALLAST_BIN, or ./cmd/ballast built
// once per test process. The build goes to bin/.harness/ in the repository
// (git-ignored) under a per-process name and is then renamed to
// bin/ballast-harness, so concurrent test processes never see a half-written
// file and nothing accumulates in the temp directory.
func BallastBin(t testing.TB) string {
	t.Helper()
	if path := os.Getenv("BALLAST_BIN"); path != "" {
		return FromRoot(t, path)
	}
	b := &ballastBuild
	b.once.Do(func() { b.path, b.err = buildBallast() })
	if b.err != nil {
		t.Fatalf("harness: %v", b.err)
	}
	return b.path
}

func buildBallast() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "bin", ".harness")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp := filepath.Join(dir, fmt.Sprintf("ballast-%d", os.Getpid()))
	cmd := exec.Command("go", "build", "-o", tmp, "./cmd/ballast")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/ballast: %v\n%s", err, out)
	}
	final := filepath.Join(root, "bin", "ballast-harness")
	if err := os.Rename(tmp, final); err != nil {
		return "", err
	}
	return final, nil
}
