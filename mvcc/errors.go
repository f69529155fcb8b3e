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
	ErrCorruptCluster  = errors.New("mvcc: corrupt cluster")
	ErrEmptyWatchRange = errors.New("mvcc: watcher range is empty")
	ErrDuplicateWatch  = errors.New("mvcc: duplicate watch ID provided on the WatchStream")
	ErrStreamClosed    = errors.New("mvcc: watch stream closed")
	ErrClosed          = errors.New("mvcc: store closed")
	ErrMemberNotFound  = errors.New("mvcc: member not found")
)

// Errors of auth, as etcd's auth store has them.
var (
	ErrRootUserNotExist     = errors.New("mvcc: root user does not exist")
	ErrRootRoleNotExist     = errors.New("mvcc: root user does not have root role")
	ErrUserAlreadyExist     = errors.New("mvcc: user already exists")
	ErrUserEmpty            = errors.New("mvcc: user name is empty")
	ErrUserNotFound         = errors.New("mvcc: user not found")
	ErrRoleAlreadyExist     = errors.New("mvcc: role already exists")
	ErrRoleNotFound         = errors.New("mvcc: role not found")
	ErrRoleEmpty            = errors.New("mvcc: role name is empty")
	ErrPermissionNotGiven   = errors.New("mvcc: permission not given")
	ErrAuthFailed           = errors.New("mvcc: authentication failed, invalid user ID or password")
	ErrPermissionDenied     = errors.New("mvcc: permission denied")
	ErrRoleNotGranted       = errors.New("mvcc: role is not granted to the user")
	ErrPermissionNotGranted = errors.New("mvcc: permission is not granted to the role")
	ErrAuthNotEnabled       = errors.New("mvcc: authentication is not enabled")
	ErrAuthOldRevision      = errors.New("mvcc: revision in header is old")
	ErrInvalidAuthMgmt      = errors.New("mvcc: invalid auth management")
	// ErrNoPasswordUser is a hashed password that does not decode; etcd
	// answers it with this text and no gRPC code of its own.
	ErrNoPasswordUser = errors.New("auth: authentication failed, password was given for no password user")
)

// MaxLeaseTTL is etcd's largest lease TTL in seconds.
const MaxLeaseTTL = 9000000000
