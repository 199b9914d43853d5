#!/usr/bin/env bash
# Build the pieces of the local cluster's real node (localkube.py --real-node):
#   kubelet and kube-proxy (the same own go.mod as kube-apiserver, build-tools.sh),
#   CoreDNS (plain `go install`), and the pause binary (gcc -static on pause.c
#   from the k8s.io/kubernetes module).
# containerd, runc, the CNI plugins, buildah, debootstrap and iptables come
# from Debian packages: `--system-deps` installs the versions pinned in
# versions.env (as root, or through sudo).
#
# Output: ${RF_K8S_CACHE:-$HOME/.cache/renderfarm/k8s}/node-<hash>/bin/, where
# <hash> covers KUBERNETES_VERSION, COREDNS_VERSION and NODE_BUILD_REV only, so
# the node pieces never invalidate the control-plane tool cache (or the reverse).
#
# Usage:
#   k8s/dev/build-node.sh                  build what is missing, print the bin dir
#   k8s/dev/build-node.sh --system-deps    install the pinned Debian packages if missing
#   k8s/dev/build-node.sh --print-dir      print the cache folder (no build)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSIONS_FILE="$HERE/versions.env"
NODE_KEYS='KUBERNETES_VERSION|COREDNS_VERSION|NODE_BUILD_REV'
# localkube.py (node_cache_dir) computes the same key; keep the two in step.
key_lines() { grep -E "^($NODE_KEYS)=" "$VERSIONS_FILE" | sed -e 's/[[:space:]]*$//'; }
KEY="node-$(key_lines | sha256sum | cut -c1-12)"
CACHE_ROOT="${RF_K8S_CACHE:-$HOME/.cache/renderfarm/k8s}"
DIR="$CACHE_ROOT/$KEY"
BIN="$DIR/bin"
BINARIES=(kubelet kube-proxy coredns pause)

# shellcheck source=versions.env
. "$VERSIONS_FILE"

# Debian package -> the binary that shows it is installed.
DEB_PACKAGES=(
  "containerd=$CONTAINERD_DEB"
  "runc=$RUNC_DEB"
  "containernetworking-plugins=$CNI_PLUGINS_DEB"
  "buildah=$BUILDAH_DEB"
  "debootstrap=$DEBOOTSTRAP_DEB"
  "iptables=$IPTABLES_DEB"
)

system_deps() {
  local want=() p name ver have
  for p in "${DEB_PACKAGES[@]}"; do
    name="${p%%=*}"; ver="${p#*=}"
    have="$(dpkg-query -W -f='${Version}' "$name" 2>/dev/null || true)"
    [[ "$have" == "$ver" ]] || want+=("$p")
  done
  [[ ${#want[@]} -eq 0 ]] && { echo "node system packages: installed"; return 0; }
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo=sudo
  echo "node system packages: installing ${want[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
  # Debian's containerd package may start the service where systemd runs; the
  # local cluster runs its own containerd with its own config and folders.
}

case "${1:-}" in
  --print-dir) echo "$DIR"; exit 0 ;;
  --print-bin-dir) echo "$BIN"; exit 0 ;;
  --system-deps) system_deps; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--system-deps|--print-dir|--print-bin-dir]" >&2; exit 2 ;;
esac

: "${KUBERNETES_VERSION:?}" "${COREDNS_VERSION:?}"
STAGING_VERSION="v0.${KUBERNETES_VERSION#v1.}"

all_present() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
}
if [[ -f "$DIR/.complete" ]] && all_present; then
  echo "node tools: cached in $BIN"; echo "$BIN"; exit 0
fi
mkdir -p "$BIN" "$DIR/src"
exec 9>"$DIR/.lock"
flock 9
if [[ -f "$DIR/.complete" ]] && all_present; then
  echo "node tools: cached in $BIN"; echo "$BIN"; exit 0
fi
rm -f "$DIR/.complete"

GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else echo "build-node.sh: no Go toolchain found (set GO=/path/to/go)" >&2; exit 1
  fi
fi
export CGO_ENABLED=0 GOWORK=off
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
# shellcheck source=gomod-lib.sh
. "$HERE/gomod-lib.sh"
TIMES_FILE="$DIR/build-times.txt"
T_TOTAL="$(now)"
echo "--- build started $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores" >>"$TIMES_FILE"
echo "node tools: building into $BIN: Kubernetes $KUBERNETES_VERSION, CoreDNS $COREDNS_VERSION"

# --- kubelet, kube-proxy (same module and flags as kube-apiserver) -------------
if [[ ! -x "$BIN/kubelet" || ! -x "$BIN/kube-proxy" ]]; then
  t="$(now)"
  d="$(prepare_module kubernetes "k8s.io/kubernetes@$KUBERNETES_VERSION" 'k8s\.io/[^[:space:]]+' "$STAGING_VERSION" \
        k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)"
  echo "node tools: kubernetes module ready in $(elapsed "$t")s" | tee -a "$TIMES_FILE"
  ldflags="$(kube_ldflags "$KUBERNETES_VERSION")"
  build_one kubelet "$d" "$ldflags" k8s.io/kubernetes/cmd/kubelet
  build_one kube-proxy "$d" "$ldflags" k8s.io/kubernetes/cmd/kube-proxy
fi

# --- CoreDNS ------------------------------------------------------------------
install_one coredns "github.com/coredns/coredns@$COREDNS_VERSION" "-s -w"

# --- pause: the sandbox image's only binary -----------------------------------
if [[ ! -x "$BIN/pause" ]]; then
  t="$(now)"
  src="$(mod_field "k8s.io/kubernetes@$KUBERNETES_VERSION" Dir)/build/pause/linux/pause.c"
  # upstream's CFLAGS (build/pause/Makefile), with our version string
  gcc -Os -Wall -Werror -static "-DVERSION=v${KUBERNETES_VERSION#v}-renderfarm" -o "$BIN/.pause.tmp" "$src"
  strip "$BIN/.pause.tmp" 2>/dev/null || true
  mv -f "$BIN/.pause.tmp" "$BIN/pause"
  echo "node tools: built pause in $(elapsed "$t")s" | tee -a "$TIMES_FILE"
fi

all_present || { echo "build-node.sh: something is still missing in $DIR" >&2; exit 1; }
key_lines >"$DIR/versions.env"
touch "$DIR/.complete"
echo "node tools: total $(elapsed "$T_TOTAL")s" | tee -a "$TIMES_FILE"
echo "$BIN"
