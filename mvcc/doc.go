// Package mvcc is Ballast's replicated state machine: etcd's revision model
// (Range, Put, DeleteRange, Txn, Compact), leases, alarms, auth data (users,
// roles, permissions), the watch hub and HashKV, all kept in Pebble so memory does not grow with the number of keys.
// Apply is deterministic: the same Raft log yields the same state and hashes
// on every member. See DESIGN.md for the key layout and why.
package mvcc
