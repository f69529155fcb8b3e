// Package bench owns `ballast bench`, the load generator behind
// docs/benchmarks.md. It speaks to servers only through
// go.etcd.io/etcd/client/v3, so it measures etcd and Ballast alike.
//
// The workloads follow etcd's tools/benchmark where it has an equivalent
// (put, range, txn-put, with its flag names: --total, --conns, --clients,
// --key-size, --val-size, --key-space-size, --sequential-keys,
// --consistency) and add three that matter for Kubernetes: list, a paged
// list of a prefix as kube-apiserver performs it; watch, a fan-out of many
// watchers on one key measuring put-to-event latency; and k8s, the mix of
// requests kube-apiserver sends (see k8s.go).
//
// Every run is a closed loop bounded by its total and by --max-duration.
// Latencies go into a log-linear Histogram of fixed size, so memory does not
// grow with the number of operations. The result is printed as a small
// table, or with -w json as one JSON object (see Result) for test/bench to
// collect.
package bench
