package store

// Every key prefix written to Pebble is listed here, so that no two packages
// can collide and a reader of a data directory knows what it holds.
//
// raft/ instance:
const (
	PrefixRaftLog    byte = 'L' // L<index:8> -> encoded raft log entry
	PrefixRaftStable byte = 'S' // S<name> -> stable-store value (term, vote)
	PrefixRaftMeta   byte = 'M' // M<name> -> snapshot bookkeeping
)

// state/ instance:
const (
	PrefixMeta     byte = 'm' // m<name> -> revision, compaction, applied index, alarms
	PrefixLatest   byte = 'l' // l<key> -> latest live version of key (no value)
	PrefixVersion  byte = 'v' // v<escaped key><^main:8><^sub:8> -> put or tombstone
	PrefixRevision byte = 'r' // r<main:8><sub:8> -> event: key, kind, metadata, value
	PrefixLease    byte = 'e' // e<id:8> -> lease TTL and remaining-TTL checkpoint
	PrefixAttached byte = 'a' // a<id:8><key> -> empty; keys attached to a lease
	PrefixMember   byte = 'n' // n<id:8> -> etcdserverpb.Member: name, peer and client URLs
	PrefixLabels   byte = 'p' // p<id:8> -> JSON mvcc.Labels: a member's region and zone
	PrefixUser     byte = 'u' // u<name> -> authpb.User: password hash, roles, options
	PrefixRole     byte = 'o' // o<name> -> authpb.Role: key-range permissions
	// Auth's enabled flag and revision are meta keys (m auth-enabled, m auth-rev).
)
