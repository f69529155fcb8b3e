// Package status owns `ballast status`, an operator's one-screen view of a
// cluster: one row per member with its role, Raft term and indexes, how far
// it lags the leader, its database size and any error, reached through
// go.etcd.io/etcd/client/v3 so that it reports on etcd and Ballast alike.
//
// It asks the first endpoint that answers for the member list (serializable,
// so that it still works when the cluster has lost quorum), then asks every
// member for its Maintenance.Status concurrently. The pure part, turning a
// member list and the status answers into a Report, is separate from the
// network part so that roles, lag and formatting are tested without servers;
// test/e2e runs the command against a real etcd cluster and a Ballast node.
package status
