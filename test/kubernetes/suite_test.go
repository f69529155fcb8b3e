package kubernetes

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// clusterArgs: upstream runs its progress-notify tests on an etcd that
// sends them every second; auto-compaction stays off (the default) since
// the tests compact themselves.
var clusterArgs = []string{"--watch-progress-notify-interval=1s"}

// TestKubernetesStorageBallast runs the suite against a three-member
// Ballast cluster.
func TestKubernetesStorageBallast(t *testing.T) {
	bin := harness.BallastBin(t)
	runSuites(t, "ballast", func(t *testing.T) []*harness.Node {
		return harness.StartCluster(t, bin, 3, harness.Options{Name: "ballast", Args: clusterArgs})
	})
}

// TestKubernetesStorageEtcd runs the same suite against a three-member
// etcd v3.7 cluster, the reference.
func TestKubernetesStorageEtcd(t *testing.T) {
	bin := harness.EtcdBin(t)
	runSuites(t, "etcd", func(t *testing.T) []*harness.Node {
		return harness.StartCluster(t, bin, 3, harness.Options{Name: "etcd", Args: clusterArgs})
	})
}

// useCluster points the tests at a cluster.
func useCluster(nodes []*harness.Node) {
	endpoints = nil
	for _, n := range nodes {
		endpoints = append(endpoints, strings.TrimPrefix(n.ClientURL, "http://"))
	}
}

func runSuites(t *testing.T, server string, start func(t *testing.T) []*harness.Node) {
	shared := start(t)
	useCluster(shared)
	var counts [3]int // passed, failed, skipped
	for _, s := range []struct {
		name  string
		tests []suiteTest
	}{{"etcd3", etcd3Suite()}, {"cacher", cacherSuite()}} {
		t.Run(s.name, func(t *testing.T) {
			for _, tc := range s.tests {
				ran, skipped := false, false
				ok := t.Run(tc.name, func(t *testing.T) {
					ran = true
					defer func() { skipped = t.Skipped() }()
					if tc.fresh {
						useCluster(start(t))
						defer useCluster(shared)
					}
					tc.run(t)
				})
				switch {
				case !ran: // filtered out by -run
				case !ok:
					counts[1]++
				case skipped:
					counts[2]++
				default:
					counts[0]++
				}
			}
		})
	}
	fmt.Printf("kubernetes storage suite against %s: %d passed, %d failed, %d skipped\n", server, counts[0], counts[1], counts[2])
}
