#!/usr/bin/env bash
# Build the project's images with buildah (`make images`):
#   API       Dockerfile.api                       (API + operator)
#   WORKER    Dockerfile.worker, VARIANT=cpu       (cpu pool and beat; no torch)
#   REDIS     Dockerfile.redis                     (the chart's bundled Redis, locally)
# and write build/images.env (API_IMAGE=, WORKER_IMAGE=, REDIS_IMAGE=, BASE_IMAGE=).
#
# Each image is tagged by a hash of its inputs (Dockerfile, build arguments, the
# base image's id, and the files the Dockerfile copies) and built only when no
# image with that tag exists.
#
# BASE_IMAGE (environment): the base of every image. Unset, a local stand-in is
# used (no registry is reachable here): `debootstrap --variant=minbase` of
# BASE_SUITE plus BASE_PACKAGES (versions.env) and the host's CA bundle (pip inside
# `RUN` needs it to reach the package index), committed with buildah as
# localhost/renderfarm/base:<suite>-<hash of those inputs>. On a machine with a
# registry: BASE_IMAGE=python:3.11-slim-bookworm k8s/dev/build-images.sh
#
# The GPU worker (VARIANT=gpu, ~7 GB) is not built here:
#   buildah bud -f Dockerfile.worker --build-arg VARIANT=gpu -t renderfarm-worker:gpu .
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=versions.env
. "$HERE/versions.env"
CACHE="${RF_IMAGE_CACHE:-$HOME/.cache/renderfarm/images}"
OUT="$ROOT/build/images.env"
HOST_CA=/etc/ssl/certs/ca-certificates.crt
BASE_RECIPE_REV=1  # bump when the stand-in recipe below changes

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
have_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }
image_id() { buildah inspect --type image --format '{{.FromImageID}}' "$1"; }

command -v buildah >/dev/null || { echo "build-images.sh: buildah missing (make node-deps)" >&2; exit 1; }
mkdir -p "$CACHE" "$ROOT/build"
exec 9>"$CACHE/.lock"
flock 9
TIMES="$CACHE/build-times.txt"

# --- the base -------------------------------------------------------------------
standin_base() {
  local key name t rootfs ctr mnt
  key="$(printf '%s\n' "$BASE_SUITE" "$BASE_PACKAGES" "$DEBOOTSTRAP_DEB" "$BASE_RECIPE_REV" \
          "$(sha256sum "$HOST_CA" | cut -c1-64)" | sha256sum | cut -c1-12)"
  name="localhost/renderfarm/base:$BASE_SUITE-$key"
  if have_image "$name"; then echo "$name"; return; fi
  command -v debootstrap >/dev/null || { echo "build-images.sh: debootstrap missing (make node-deps)" >&2; exit 1; }
  t="$(now)"
  rootfs="$CACHE/base-$key.rootfs"
  rm -rf "$rootfs"
  echo "images: debootstrap $BASE_SUITE (+ $BASE_PACKAGES) into $rootfs" >&2
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$BASE_SUITE" "$rootfs" http://deb.debian.org/debian >&2
  # the build host's CA bundle, apart from the one apt manages, for pip in RUN
  install -m 0644 "$HOST_CA" "$rootfs/etc/ssl/renderfarm-build-ca.crt"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  ctr="$(buildah from scratch)"
  mnt="$(buildah mount "$ctr")"
  cp -a "$rootfs/." "$mnt/"
  buildah umount "$ctr" >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --env PIP_CERT=/etc/ssl/renderfarm-build-ca.crt \
    --env SSL_CERT_FILE=/etc/ssl/renderfarm-build-ca.crt --cmd /bin/bash \
    --label "io.renderfarm.base=debootstrap $BASE_SUITE minbase + $BASE_PACKAGES" "$ctr"
  buildah commit -q --rm "$ctr" "$name" >/dev/null
  rm -rf "$rootfs"
  echo "images: base $name in $(elapsed "$t")s" | tee -a "$TIMES" >&2
  echo "$name"
}

# Every change to the sources makes new tags; without this, a developer's image store
# grows by ~2 GB a change (it reached 17 GB here). Keeps the IMAGES_KEEP newest builds
# of a repo and tag prefix (default 2: this one and the one before, for a clone a
# step behind), never the one just built.
IMAGES_KEEP="${IMAGES_KEEP:-2}"
prune() { # repo tag-prefix current
  local repo="$1" prefix="$2" current="$3" old
  old="$(buildah images --format '{{.CreatedAtRaw}} {{.Name}}:{{.Tag}}' 2>/dev/null |
         grep -E " ${repo//./\.}:${prefix}[0-9a-f]{12}\$" | LC_ALL=C sort -r | awk '{print $NF}' |
         grep -vxF "$current" | tail -n +"$IMAGES_KEEP")" || true
  for ref in $old; do
    buildah rmi "$ref" >/dev/null 2>&1 && echo "images: removed the older $ref" >&2
  done
  return 0
}

if [[ -n "${BASE_IMAGE:-}" ]]; then
  PULL=missing
else
  BASE_IMAGE="$(standin_base)"
  PULL=never
fi
BASE_ID="$(image_id "$BASE_IMAGE" 2>/dev/null || echo "$BASE_IMAGE")"

# --- the images -----------------------------------------------------------------
# The files the Dockerfiles copy (the same set .dockerignore lets through).
context_hash() {
  (cd "$ROOT" && { ls pyproject.toml constraints.txt README.md
                   find services operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc'; } |
     LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-64)
}
CONTEXT="$(context_hash)"

build() { # repo tag-prefix dockerfile [build-arg ...]
  local repo="$1" prefix="$2" dockerfile="$3"; shift 3
  local args=("$@") tag name t context=""
  # the build context counts only for a Dockerfile that copies from it
  if grep -Eq '^COPY[[:space:]]+[^-]' "$ROOT/$dockerfile"; then context="$CONTEXT"; fi
  tag="$prefix$(printf '%s\n' "$(sha256sum "$ROOT/$dockerfile")" "${args[@]}" "$BASE_ID" "$context" |
                sha256sum | cut -c1-12)"
  name="$repo:$tag"
  if ! have_image "$name"; then
    t="$(now)"
    echo "images: building $name from $dockerfile" >&2
    local bargs=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    for a in "${args[@]}"; do bargs+=(--build-arg "$a"); done
    (cd "$ROOT" && buildah bud -q --pull="$PULL" --network=host --format=docker "${bargs[@]}" \
       -f "$dockerfile" -t "$name" .) >&2
    echo "images: $name in $(elapsed "$t")s ($(buildah images --format '{{.Size}}' "$name" 2>/dev/null | head -n1))" |
      tee -a "$TIMES" >&2
  fi
  prune "$repo" "$prefix" "$name"
  echo "$name"
}

API_IMAGE="$(build localhost/renderfarm/api "" Dockerfile.api)"
WORKER_IMAGE="$(build localhost/renderfarm/worker cpu- Dockerfile.worker VARIANT=cpu)"
REDIS_IMAGE="$(build localhost/renderfarm/redis "" Dockerfile.redis)"

cat >"$OUT.tmp" <<EOF
# written by k8s/dev/build-images.sh (make images); tags are hashes of the inputs
BASE_IMAGE=$BASE_IMAGE
API_IMAGE=$API_IMAGE
WORKER_IMAGE=$WORKER_IMAGE
REDIS_IMAGE=$REDIS_IMAGE
EOF
mv -f "$OUT.tmp" "$OUT"
cat "$OUT"
