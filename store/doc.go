// Package store owns Ballast's access to Pebble: opening an instance with the
// options we rely on, the key prefixes every other package writes under
// (keys.go lists them all), and the small helpers for big-endian integers and
// prefix bounds.
//
// A data directory holds two instances: raft/ (the Raft log and stable store,
// synced on every append) and state/ (the MVCC data, written without sync
// because the Raft log is the source of truth and replays what was lost).
package store
