#!/usr/bin/env bash
# Builds the reference etcd and etcdctl (the versions pinned in this module's
# go.mod) into <repo>/bin. Does nothing when both binaries are already built
# from the current sources. Usage: test/etcdref/build.sh [-f]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$root/bin"
stamp="$bin/.etcdref.stamp"

want="$(cat "$here/go.mod" "$here/go.sum" "$here/etcd/main.go" "$here/build.sh" | sha256sum | cut -d' ' -f1) $(go env GOVERSION)"
if [[ "${1:-}" != "-f" && -x "$bin/etcd" && -x "$bin/etcdctl" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
	exit 0
fi

mkdir -p "$bin"
cd "$here"
# -mod=readonly: go.sum is committed; a missing entry is an error, not a silent update.
go build -mod=readonly -trimpath -o "$bin/etcd" ./etcd
go build -mod=readonly -trimpath -o "$bin/etcdctl" go.etcd.io/etcd/etcdctl/v3
echo "$want" >"$stamp"
# sed reads every line; head would close the pipe early, and etcd, killed by
# SIGPIPE, would fail this script under pipefail.
"$bin/etcd" --version | sed -n 1p
