#!/usr/bin/env bash
# Build the S3-compatible server used by the tests and `renderfarm local --s3`:
# SeaweedFS `weed`, from the Go module proxy, into a cache folder outside the
# clone keyed by its version (like build-tools.sh does for Kubernetes):
#   ${RF_K8S_CACHE:-$HOME/.cache/renderfarm/k8s}/s3-<hash>/bin/weed
# <hash> covers SEAWEEDFS_VERSION and S3_BUILD_REV in versions.env only.
#
# `go install github.com/seaweedfs/seaweedfs/weed@<v>` refuses the module
# because its go.mod has a replace directive (go-bip39 => a maintained fork),
# so the build runs inside a go.mod of our own that carries the same replace.
#
# Usage:
#   k8s/dev/build-s3.sh                  build what is missing, print the bin dir
#   k8s/dev/build-s3.sh --print-bin-dir  print the bin dir (no build)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSIONS_FILE="$HERE/versions.env"
S3_KEYS='SEAWEEDFS_VERSION|S3_BUILD_REV'
# renderfarm.cli.s3server (weed_binary) computes the same key; keep the two in step.
key_lines() { grep -E "^($S3_KEYS)=" "$VERSIONS_FILE" | sed -e 's/[[:space:]]*$//'; }
KEY="s3-$(key_lines | sha256sum | cut -c1-12)"
CACHE_ROOT="${RF_K8S_CACHE:-$HOME/.cache/renderfarm/k8s}"
DIR="$CACHE_ROOT/$KEY"
BIN="$DIR/bin"

case "${1:-}" in
  --print-dir) echo "$DIR"; exit 0 ;;
  --print-bin-dir) echo "$BIN"; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--print-dir|--print-bin-dir]" >&2; exit 2 ;;
esac

# shellcheck source=versions.env
. "$VERSIONS_FILE"
: "${SEAWEEDFS_VERSION:?}"
MODULE=github.com/seaweedfs/seaweedfs

if [[ -f "$DIR/.complete" && -x "$BIN/weed" ]]; then
  echo "s3 tools: cached in $BIN"; echo "$BIN"; exit 0
fi
mkdir -p "$BIN" "$DIR/src"
exec 9>"$DIR/.lock"
flock 9
if [[ -f "$DIR/.complete" && -x "$BIN/weed" ]]; then
  echo "s3 tools: cached in $BIN"; echo "$BIN"; exit 0
fi

GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else echo "build-s3.sh: no Go toolchain found (set GO=/path/to/go)" >&2; exit 1
  fi
fi
export CGO_ENABLED=0 GOWORK=off
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
# now, elapsed, mod_field, build_one (shared with build-tools.sh)
# shellcheck source=gomod-lib.sh
. "$HERE/gomod-lib.sh"
TIMES_FILE="$DIR/build-times.txt"
T_TOTAL="$(now)"
echo "--- build started $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores" >>"$TIMES_FILE"
echo "s3 tools: building weed ($MODULE@$SEAWEEDFS_VERSION) with $("$GO" version)"

SRC="$DIR/src/seaweedfs"
if [[ ! -f "$SRC/.ready" ]]; then
  t="$(now)"
  rm -rf "$SRC"; mkdir -p "$SRC"
  gomod="$(mod_field "$MODULE@$SEAWEEDFS_VERSION" GoMod)"
  goline="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod" | head -n1)"
  printf 'module renderfarm.local/s3-tools\n\ngo %s\n' "${goline:-1.26}" >"$SRC/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s/weed"\n' "$MODULE" >"$SRC/tools.go"
  (
    cd "$SRC"
    "$GO" mod edit -require="$MODULE@$SEAWEEDFS_VERSION"
    # upstream's module-to-module replaces (not the commented local ones)
    sed -n -E 's#^replace[[:space:]]+([^[:space:]]+)[[:space:]]+=>[[:space:]]+([^.[:space:]][^[:space:]]*)[[:space:]]+(v[^[:space:]]+).*#\1=\2@\3#p' "$gomod" |
      while read -r r; do "$GO" mod edit -replace="$r"; done
    "$GO" mod tidy
  ) >&2
  touch "$SRC/.ready"
  echo "s3 tools: seaweedfs module ready in $(elapsed "$t")s" | tee -a "$TIMES_FILE"
fi
build_one weed "$SRC" "-s -w" "$MODULE/weed"

touch "$DIR/.complete"
echo "s3 tools: total $(elapsed "$T_TOTAL")s" | tee -a "$TIMES_FILE"
echo "$BIN"
