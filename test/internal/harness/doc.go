// Package harness runs server binaries (ballast or the reference etcd) as
// black-box processes for the end-to-end and compatibility tests.
//
// Both binaries take etcd's flags, so one Node type drives either: it picks
// free 127.0.0.1 ports, keeps data in t.TempDir(), waits for readiness by
// polling the gRPC endpoint under a deadline, and captures the process output
// to a file that is printed when the test fails.
//
// With Options.Proxied, StartCluster builds a topology for fault injection:
// member i listens on its own loopback IP, 127.0.0.(10+i), and a Proxy owned
// by the harness sits in front of its peer listener and is what the member
// advertises. Members bind their outgoing peer connections to their own IP,
// so each proxy knows which member a connection comes from, and Partition,
// PartitionOneWay, Isolate, DelayLinks and HealAll act on the link between
// two members in one direction or both. NewMember and Node.Join add members
// to a running cluster.
//
// Binaries come from the environment: BALLAST_BIN (default: ./cmd/ballast,
// built once per test process), ETCD_BIN and ETCDCTL_BIN (default: bin/etcd
// and bin/etcdctl in the repository, built by `make etcd-ref`). A missing
// reference binary fails the test rather than skipping it.
package harness
