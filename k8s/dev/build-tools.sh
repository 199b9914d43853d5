#!/usr/bin/env bash
# Build the local Kubernetes toolchain from upstream Go modules:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
#   kwok and helm, plus kwok's shipped Stage YAMLs.
#
# Versions come from k8s/dev/versions.env (the only place they are pinned).
# Output goes to a cache folder outside the git clone, keyed by those versions:
#   ${RF_K8S_CACHE:-$HOME/.cache/renderfarm/k8s}/<hash>/bin/
#   ${RF_K8S_CACHE:-$HOME/.cache/renderfarm/k8s}/<hash>/stages/
# Only missing binaries are built; a `.complete` marker is written once every
# binary and stage file exists, after which the script is a fast no-op.
#
# Usage:
#   k8s/dev/build-tools.sh                 build what is missing, print the bin dir
#   k8s/dev/build-tools.sh --print-dir     print the cache folder (no build)
#   k8s/dev/build-tools.sh --print-bin-dir print the bin dir (no build)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSIONS_FILE="$HERE/versions.env"

# The cache key is a hash of the KEY=VALUE lines of the tools built here only
# (comments and the real node's lines do not count; the node has its own key in
# build-node.sh). localkube.py computes the same key; keep the two in step.
TOOL_KEYS='KUBERNETES_VERSION|ETCD_VERSION|KWOK_VERSION|HELM_VERSION'
versions_lines() { grep -E "^($TOOL_KEYS)=" "$VERSIONS_FILE" | sed -e 's/[[:space:]]*$//'; }
KEY="$(versions_lines | sha256sum | cut -c1-12)"
CACHE_ROOT="${RF_K8S_CACHE:-$HOME/.cache/renderfarm/k8s}"
DIR="$CACHE_ROOT/$KEY"
BIN="$DIR/bin"
STAGES="$DIR/stages"

case "${1:-}" in
  --print-dir) echo "$DIR"; exit 0 ;;
  --print-bin-dir) echo "$BIN"; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--print-dir|--print-bin-dir]" >&2; exit 2 ;;
esac

# shellcheck source=versions.env
. "$VERSIONS_FILE"
: "${KUBERNETES_VERSION:?}" "${ETCD_VERSION:?}" "${KWOK_VERSION:?}" "${HELM_VERSION:?}"
# Staging modules follow the Kubernetes version: v1.37.2 -> v0.37.2.
STAGING_VERSION="v0.${KUBERNETES_VERSION#v1.}"

BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm)
# kwok's shipped stages, relative to kustomize/stage/ in the kwok module.
STAGE_SOURCES=(
  node/fast/node-initialize.yaml
  node/heartbeat/node-heartbeat.yaml
  pod/fast/pod-ready.yaml
  pod/fast/pod-complete.yaml
  pod/fast/pod-delete.yaml
)

all_present() {
  local b s
  for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
  for s in "${STAGE_SOURCES[@]}"; do [[ -s "$STAGES/$(basename "$s")" ]] || return 1; done
}

if [[ -f "$DIR/.complete" ]] && all_present; then
  echo "k8s tools: cached in $BIN"
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN" "$STAGES" "$DIR/src"

# One build at a time per cache folder (two test sessions may start at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$DIR/.lock"
  flock 9
  if [[ -f "$DIR/.complete" ]] && all_present; then
    echo "k8s tools: cached in $BIN"
    echo "$BIN"
    exit 0
  fi
fi
rm -f "$DIR/.complete"

GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else echo "build-tools.sh: no Go toolchain found (set GO=/path/to/go)" >&2; exit 1
  fi
fi
export CGO_ENABLED=0
export GOWORK=off
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

# now, elapsed, mod_field, prepare_module, build_one, install_one, kube_ldflags
# (shared with build-node.sh)
# shellcheck source=gomod-lib.sh
. "$HERE/gomod-lib.sh"
TIMES_FILE="$DIR/build-times.txt"
T_TOTAL="$(now)"
echo "k8s tools: building into $BIN with $("$GO" version)"
echo "k8s tools: Kubernetes $KUBERNETES_VERSION (staging $STAGING_VERSION), etcd $ETCD_VERSION, kwok $KWOK_VERSION, helm $HELM_VERSION"

echo "--- build started $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores" >>"$TIMES_FILE"

# --- etcd ------------------------------------------------------------------
if [[ ! -x "$BIN/etcd" ]]; then
  t="$(now)"
  d="$(prepare_module etcd "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 'go\.etcd\.io/etcd/[^[:space:]]+' "$ETCD_VERSION" \
        go.etcd.io/etcd/server/v3)"
  echo "k8s tools: etcd module ready in $(elapsed "$t")s" | tee -a "$TIMES_FILE"
  build_one etcd "$d" "-s -w" go.etcd.io/etcd/server/v3
fi

# --- Kubernetes ------------------------------------------------------------
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
missing_k8s=0
for b in "${K8S_CMDS[@]}"; do [[ -x "$BIN/$b" ]] || missing_k8s=1; done
if [[ "$missing_k8s" == 1 ]]; then
  t="$(now)"
  pkgs=(); for b in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  d="$(prepare_module kubernetes "k8s.io/kubernetes@$KUBERNETES_VERSION" 'k8s\.io/[^[:space:]]+' "$STAGING_VERSION" "${pkgs[@]}")"
  echo "k8s tools: kubernetes module ready in $(elapsed "$t")s" | tee -a "$TIMES_FILE"
  k8s_ldflags="$(kube_ldflags "$KUBERNETES_VERSION")"
  for b in "${K8S_CMDS[@]}"; do
    build_one "$b" "$d" "$k8s_ldflags" "k8s.io/kubernetes/cmd/$b"
  done
fi

# --- kwok and helm (plain go install) ----------------------------------------
install_one kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "-s -w"
install_one helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
  "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"

# --- kwok stages -------------------------------------------------------------
KWOK_DIR="$(mod_field "sigs.k8s.io/kwok@$KWOK_VERSION" Dir)"
for s in "${STAGE_SOURCES[@]}"; do
  install -m 0644 "$KWOK_DIR/kustomize/stage/$s" "$STAGES/$(basename "$s")"
done

all_present || { echo "build-tools.sh: something is still missing in $DIR" >&2; exit 1; }
printf '%s\n' "$(versions_lines)" >"$DIR/versions.env"
touch "$DIR/.complete"
echo "k8s tools: total $(elapsed "$T_TOTAL")s" | tee -a "$TIMES_FILE"
ls -la "$BIN"
echo "$BIN"
