# Shared by build-tools.sh and build-node.sh (sourced, not run).
# Needs: GO (the go binary), DIR (the cache folder; modules go under $DIR/src),
# BIN (where binaries go) and TIMES_FILE (build times are appended there).

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Resolve a module into the module cache; print the path of its go.mod or source dir.
mod_field() { # module@version field(GoMod|Dir)
  "$GO" mod download -json "$1" | sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\{0,1\}$/\1/p"
}

# Build with `go build` inside a generated module of our own (for upstream
# modules whose go.mod holds local replace directives, which `go install
# module@version` refuses).
#   $1: folder name under $DIR/src, $2: module@version to require,
#   $3: regex of the replaced module paths in that module's go.mod,
#   $4: version to replace them with, $5..: main packages (for tools.go)
prepare_module() {
  local name="$1" req="$2" pattern="$3" rver="$4"; shift 4
  local dir="$DIR/src/$name" gomod goline m
  if [[ -f "$dir/go.sum" && -f "$dir/.ready" ]]; then echo "$dir"; return; fi
  rm -rf "$dir"; mkdir -p "$dir"
  gomod="$(mod_field "$req" GoMod)"
  goline="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod" | head -n1)"
  {
    echo "module renderfarm.local/k8s-tools/$name"
    echo
    echo "go ${goline:-1.26}"
    # keep upstream's runtime defaults (e.g. `godebug default=go1.26`)
    grep -E '^godebug ' "$gomod" || true
  } >"$dir/go.mod"
  {
    echo "//go:build tools"
    echo
    echo "// Package tools pins the main packages built by k8s/dev/build-tools.sh."
    echo "package tools"
    echo
    echo "import ("
    for m in "$@"; do echo "	_ \"$m\""; done
    echo ")"
  } >"$dir/tools.go"
  (
    cd "$dir"
    "$GO" mod edit -require="$req"
    # every `<module> => ./local/path` replace of the upstream go.mod
    sed -n -E "s#^[[:space:]]*($pattern)[[:space:]]+=>[[:space:]]+\.{1,2}/.*#\1#p" "$gomod" |
      while read -r m; do "$GO" mod edit -replace="$m=$m@$rver"; done
    "$GO" mod tidy >&2
  ) >&2
  touch "$dir/.ready"
  echo "$dir"
}

build_one() { # name, dir, ldflags, package
  local name="$1" dir="$2" ldflags="$3" pkg="$4" t
  if [[ -x "$BIN/$name" ]]; then echo "k8s tools: $name already built"; return; fi
  t="$(now)"
  echo "k8s tools: building $name ($pkg)"
  (cd "$dir" && "$GO" build -trimpath -ldflags="$ldflags" -o "$BIN/.$name.tmp" "$pkg")
  mv -f "$BIN/.$name.tmp" "$BIN/$name"
  echo "k8s tools: built $name in $(elapsed "$t")s" | tee -a "$TIMES_FILE"
}

install_one() { # name, module/package@version, ldflags
  local name="$1" pkg="$2" ldflags="$3" t
  if [[ -x "$BIN/$name" ]]; then echo "k8s tools: $name already built"; return; fi
  t="$(now)"
  echo "k8s tools: installing $name ($pkg)"
  (cd "$DIR/src" && GOBIN="$BIN" "$GO" install -trimpath -ldflags="$ldflags" "$pkg")
  echo "k8s tools: built $name in $(elapsed "$t")s" | tee -a "$TIMES_FILE"
}

# -ldflags with the version stamping done by upstream's hack/lib/version.sh.
kube_ldflags() { # v1.X.Y
  local ver="${1#v}" major minor rest build_date p out="-s -w"
  major="${ver%%.*}"; rest="${ver#*.}"; minor="${rest%%.*}"
  build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    out+=" -X $p.gitVersion=$1 -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    out+=" -X $p.gitTreeState=clean -X $p.buildDate=$build_date"
  done
  echo "$out"
}
