// Package e2e drives the real ballast binary over TCP with etcdctl and
// go.etcd.io/etcd/client/v3, as a user would.
package e2e
