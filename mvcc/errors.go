package mvcc

import "errors"

// Errors of the state machine. server maps each to etcd's rpctypes error.
var (
	ErrCompacted       = errors.New("mvcc: required revision has been compacted")
	ErrFutureRev       = errors.New("mvcc: required revision is a future revision")
	ErrKeyNotFound     = errors.New("mvcc: key not found")
	ErrLeaseNotFound   = errors.New("mvcc: requested lease not found")
	ErrLeaseExists     = errors.New("mvcc: lease already exists")
	ErrLeaseTTLTooBig  = errors.New("mvcc: too large lease TTL")
	ErrNoSpace         = errors.New("mvcc: database space exceeded")
	ErrEmptyWatchRange = errors.New("mvcc: watcher range is empty")
	ErrDuplicateWatch  = errors.New("mvcc: duplicate watch ID provided on the WatchStream")
	ErrClosed          = errors.New("mvcc: store closed")
	ErrMemberNotFound  = errors.New("mvcc: member not found")
)

// MaxLeaseTTL is etcd's largest lease TTL in seconds.
const MaxLeaseTTL = 9000000000
