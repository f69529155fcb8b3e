// Package raftlog wires hashicorp/raft for Ballast: the Raft log and stable
// store on Pebble (every append synced), the FSM adapter that hands committed
// entries to a StateMachine in batches, snapshots that let Raft truncate its
// log, Propose for writes and ReadIndex for linearizable reads.
//
// The state machine keeps its own applied index durable next to its data, so
// Raft runs with NoSnapshotRestoreOnStart: a restart replays only the entries
// the state machine has not applied yet.
package raftlog
