#!/usr/bin/env bash
# Builds the test cluster's binaries from the Go module proxy, once per version, into
# ~/.cache/enclave-mcp/kube (KUBE_CACHE): a second run finds them and returns at once.
#   $KUBE_CACHE/kubernetes-$KUBE_VERSION/bin/kube   one multi-call binary (deploy/kube/build):
#        kube-apiserver, kubelet, kube-scheduler, kube-controller-manager, kube-proxy, kubectl (symlinks)
#   $KUBE_CACHE/containerd-$CONTAINERD_VERSION/bin/{containerd,ctr,containerd-shim-runc-v2}
# The first Kubernetes build takes ~25 min on 2 cores; builds run under `nice -n 10`.
# Usage: scripts/kube-build.sh [kubernetes|containerd|all]   (default all)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
KUBE_CACHE=${KUBE_CACHE:-$HOME/.cache/enclave-mcp/kube}
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
GO=${GO:-go}

log() { printf 'kube-build: %s\n' "$*" >&2; }

# version_flags stamps KUBE_VERSION where `kubectl version` and the node's kubelet version read
# it (go build alone leaves v0.0.0-master).
version_flags() {
	local v=${KUBE_VERSION#v} pkg f
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		for f in "gitVersion=$KUBE_VERSION" "gitMajor=${v%%.*}" "gitMinor=$(echo "$v" | cut -d. -f2)" gitTreeState=clean; do
			printf -- '-X %s.%s ' "$pkg" "$f"
		done
	done
}

# build_kubernetes builds the multi-call binary of deploy/kube/build, whose go.mod pins the
# version (KUBE_VERSION names the cache directory and must match it).
build_kubernetes() {
	local dir=$KUBE_CACHE/kubernetes-$KUBE_VERSION
	if [ -x "$dir/bin/kube" ]; then return 0; fi
	if ! grep -q "k8s.io/kubernetes $KUBE_VERSION\$" "$repo/deploy/kube/build/go.mod"; then
		log "deploy/kube/build/go.mod does not require k8s.io/kubernetes $KUBE_VERSION"
		return 1
	fi
	mkdir -p "$dir/bin"
	log "building Kubernetes $KUBE_VERSION (first time: ~25 min on 2 cores)"
	local start=$SECONDS
	(cd "$repo/deploy/kube/build" &&
		CGO_ENABLED=0 nice -n 10 "$GO" build -trimpath -ldflags "-s -w $(version_flags)" -o "$dir/bin/kube.tmp" .)
	mv "$dir/bin/kube.tmp" "$dir/bin/kube"
	for c in kube-apiserver kubelet kube-scheduler kube-controller-manager kube-proxy kubectl; do
		ln -sf kube "$dir/bin/$c"
	done
	log "Kubernetes $KUBE_VERSION built in $((SECONDS - start)) s"
}

# build_containerd builds containerd 2, ctr and the runc shim from their Go module.
build_containerd() {
	local dir=$KUBE_CACHE/containerd-$CONTAINERD_VERSION
	if [ -x "$dir/bin/containerd" ] && [ -x "$dir/bin/ctr" ] && [ -x "$dir/bin/containerd-shim-runc-v2" ]; then
		return 0
	fi
	mkdir -p "$dir/bin"
	log "building containerd $CONTAINERD_VERSION"
	local start=$SECONDS src
	src=$(cd "$repo" && GOFLAGS=-mod=mod "$GO" mod download -json "github.com/containerd/containerd/v2@$CONTAINERD_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	if [ -z "$src" ]; then
		log "could not download github.com/containerd/containerd/v2@$CONTAINERD_VERSION"
		return 1
	fi
	# Built inside the module's own (read-only) directory so its go.mod and go.sum apply.
	# no_btrfs: no cgo btrfs headers needed; the overlayfs snapshotter is the one used.
	for c in containerd ctr containerd-shim-runc-v2; do
		(cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 "$GO" build -trimpath \
			-tags "no_btrfs urfave_cli_no_docs" -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
			-o "$dir/bin/$c.tmp" "./cmd/$c")
		mv "$dir/bin/$c.tmp" "$dir/bin/$c"
	done
	log "containerd $CONTAINERD_VERSION built in $((SECONDS - start)) s"
}

case "${1:-all}" in
kubernetes) build_kubernetes ;;
containerd) build_containerd ;;
all) build_containerd && build_kubernetes ;;
*)
	echo "usage: $0 [kubernetes|containerd|all]" >&2
	exit 2
	;;
esac
