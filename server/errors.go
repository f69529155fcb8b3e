package server

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/ballast-kv/ballast/mvcc"
	"github.com/ballast-kv/ballast/raftlog"
)

// errNoSpace is raised before proposing when the quota would be exceeded.
var errNoSpace = errors.New("server: database space exceeded")

var wireErrors = map[error]error{
	mvcc.ErrCompacted:         rpctypes.ErrGRPCCompacted,
	mvcc.ErrFutureRev:         rpctypes.ErrGRPCFutureRev,
	mvcc.ErrKeyNotFound:       rpctypes.ErrGRPCKeyNotFound,
	mvcc.ErrLeaseNotFound:     rpctypes.ErrGRPCLeaseNotFound,
	mvcc.ErrLeaseExists:       rpctypes.ErrGRPCLeaseExist,
	mvcc.ErrLeaseTTLTooBig:    rpctypes.ErrGRPCLeaseTTLTooLarge,
	mvcc.ErrNoSpace:           rpctypes.ErrGRPCNoSpace,
	errNoSpace:                rpctypes.ErrGRPCNoSpace,
	mvcc.ErrCorruptCluster:    rpctypes.ErrGRPCCorrupt,
	raftlog.ErrNoLeader:       rpctypes.ErrGRPCNoLeader,
	raftlog.ErrNotLeader:      rpctypes.ErrGRPCNoLeader,
	raftlog.ErrUnknownOutcome: rpctypes.ErrGRPCTimeoutDueToLeaderFail,
	raftlog.ErrTimeout:        rpctypes.ErrGRPCTimeout,
	raftlog.ErrStopped:        rpctypes.ErrGRPCStopped,
	mvcc.ErrClosed:            rpctypes.ErrGRPCStopped,

	mvcc.ErrRootUserNotExist:     rpctypes.ErrGRPCRootUserNotExist,
	mvcc.ErrRootRoleNotExist:     rpctypes.ErrGRPCRootRoleNotExist,
	mvcc.ErrUserAlreadyExist:     rpctypes.ErrGRPCUserAlreadyExist,
	mvcc.ErrUserEmpty:            rpctypes.ErrGRPCUserEmpty,
	mvcc.ErrUserNotFound:         rpctypes.ErrGRPCUserNotFound,
	mvcc.ErrRoleAlreadyExist:     rpctypes.ErrGRPCRoleAlreadyExist,
	mvcc.ErrRoleNotFound:         rpctypes.ErrGRPCRoleNotFound,
	mvcc.ErrRoleEmpty:            rpctypes.ErrGRPCRoleEmpty,
	mvcc.ErrPermissionNotGiven:   rpctypes.ErrGRPCPermissionNotGiven,
	mvcc.ErrAuthFailed:           rpctypes.ErrGRPCAuthFailed,
	mvcc.ErrPermissionDenied:     rpctypes.ErrGRPCPermissionDenied,
	mvcc.ErrRoleNotGranted:       rpctypes.ErrGRPCRoleNotGranted,
	mvcc.ErrPermissionNotGranted: rpctypes.ErrGRPCPermissionNotGranted,
	mvcc.ErrAuthNotEnabled:       rpctypes.ErrGRPCAuthNotEnabled,
	mvcc.ErrAuthOldRevision:      rpctypes.ErrGRPCAuthOldRevision,
	mvcc.ErrInvalidAuthMgmt:      rpctypes.ErrGRPCInvalidAuthMgmt,
}

// toGRPC is the single translation point from internal errors to the codes
// and messages etcd clients match on.
func toGRPC(err error) error {
	if err == nil {
		return nil
	}
	for internal, wire := range wireErrors {
		if errors.Is(err, internal) {
			return wire
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return rpctypes.ErrGRPCCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return rpctypes.ErrGRPCDeadlineExceeded
	}
	return err
}
