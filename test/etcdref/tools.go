//go:build tools

// Package etcdref pins the reference etcd release used by the compatibility
// suite. It is a module of its own so that Ballast never depends on etcd's
// server code; build.sh builds bin/etcd and bin/etcdctl from it.
package etcdref

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3/etcdmain"
)
