#!/usr/bin/env bash
# Builds the test OpenTelemetry Collector (main.go: OTLP receiver + file exporter)
# from Go modules into the tool cache, keyed by the collector release and a hash of
# go.mod, go.sum and main.go; a cached build is reused.
#   build.sh              build if missing, print the binary's path
#   build.sh --print-bin  print the path only (exit 1 when not built)
# A cold build (modules and compile) took 331 s on the shared 2-core machine.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(sed -n 's/^const version = "\(.*\)"$/\1/p' "$here/main.go")"
key="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-12)"
cache="${RF_TOOL_CACHE:-$HOME/.cache/renderfarm}/otelcol-$version-$key"
bin="$cache/otelcol"
if [[ "${1:-}" == "--print-bin" ]]; then
  [[ -x "$bin" ]] && { echo "$bin"; exit 0; }
  exit 1
fi
if [[ ! -x "$bin" ]]; then
  command -v go >/dev/null || { echo "go (1.26+) is needed to build the test collector" >&2; exit 1; }
  mkdir -p "$cache"
  echo "building the OpenTelemetry Collector $version into $cache (cold: about 6 min)" >&2
  (cd "$here" && GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" \
     nice -n 10 go build -trimpath -ldflags=-s -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
