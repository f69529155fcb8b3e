#!/usr/bin/env bash
# Builds the reference kine (the version pinned in this module's go.mod)
# into <repo>/bin, without cgo (kine's SQLite driver is left out; the tests
# use its PostgreSQL driver). Does nothing when bin/kine is already built
# from the current sources. Usage: test/kineref/build.sh [-f]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$root/bin"
stamp="$bin/.kineref.stamp"

want="$(cat "$here/go.mod" "$here/go.sum" "$here/kine/main.go" "$here/build.sh" | sha256sum | cut -d' ' -f1) $(go env GOVERSION)"
if [[ "${1:-}" != "-f" && -x "$bin/kine" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
	exit 0
fi

mkdir -p "$bin"
cd "$here"
CGO_ENABLED=0 go build -mod=readonly -trimpath -o "$bin/kine" ./kine
echo "$want" >"$stamp"
"$bin/kine" --version | sed -n 1p
