#!/usr/bin/env bash
# Prints the path of a helm binary at the pinned version, building it first when missing.
# helm is a Go module (helm.sh/helm/v4): no download site or package is needed, only the Go
# module proxy. The first build takes a few minutes on 2 cores; the binary is then kept at
# $HELM_CACHE/helm-$HELM_VERSION (default $(go env GOPATH)/bin) and reused, and a rebuild
# after removing it comes from the Go build cache in seconds.
#
# Environment: HELM_VERSION (default v4.3.2), HELM_CACHE (directory of the built binary),
# GO (the go command, default go), HELM_NO_BUILD=1 (exit 3 instead of building: for quick
# test loops that use helm only when it is there). Progress goes to stderr; stdout is only
# the path, so callers write helm=$(scripts/ensure-helm.sh).
set -euo pipefail

log() { printf 'ensure-helm: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

version=${HELM_VERSION:-v4.3.2}
go=${GO:-go}
command -v "$go" >/dev/null 2>&1 || die "no Go toolchain ($go) on PATH: helm is built from its Go module"
cache=${HELM_CACHE:-$("$go" env GOPATH)/bin}
bin=$cache/helm-$version

# A binary left by an interrupted build, or of another version, is not trusted: check it.
if [ -x "$bin" ] && "$bin" version --template '{{.Version}}' 2>/dev/null | grep -qx "$version"; then
  printf '%s\n' "$bin"
  exit 0
fi

if [ "${HELM_NO_BUILD:-}" = 1 ]; then
  log "no helm $version at $bin (HELM_NO_BUILD=1: not building it; make chart-check does)"
  exit 3
fi
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.helm-build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building helm $version from its Go module (helm.sh/helm/v4/cmd/helm; a few minutes the first time)"
start=$(date +%s)
# go install pkg@version builds in module-aware mode outside this repository's go.mod, with
# helm's own pinned dependencies. The -X flags give `helm version` its version, as helm's
# release builds do (its Makefile); the module path is the one in helm's internal/version.
GOBIN=$tmp CGO_ENABLED=0 GOFLAGS=-buildvcs=false "$go" install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" \
  "helm.sh/helm/v4/cmd/helm@$version" ||
  die "building helm $version failed (the Go module proxy must be reachable: GOPROXY=$("$go" env GOPROXY))"
got=$("$tmp/helm" version --template '{{.Version}}' 2>/dev/null || true)
[ "$got" = "$version" ] || die "the built helm reports version \"$got\", want $version"
mv -f "$tmp/helm" "$bin"
log "built $bin in $(($(date +%s) - start)) s"
printf '%s\n' "$bin"
