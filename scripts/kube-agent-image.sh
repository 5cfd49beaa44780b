#!/usr/bin/env bash
# Builds the kube backend's agent image from a static agent binary and prints its tag:
# enclave/agent:<first 16 hex digits of the binary's SHA-256> (what the backend expects for
# that binary, see kube.AgentImageTag), a one-file image (/agent) made without a registry.
# With --import, also imports it (and the images named in KUBE_IMPORT_IMAGES) into the
# test cluster's containerd, where imagePullPolicy Never finds it.
#   AGENT_BINARY  the agent (default bin/enclave-agent; make build makes it)
#   CONTAINERD    containerd socket (default /var/lib/enclave-kube/containerd/containerd.sock)
#   CTR           ctr binary (default: the test cluster's build, else ctr on PATH)
# Usage: scripts/kube-agent-image.sh [--import]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
agent=${AGENT_BINARY:-$repo/bin/enclave-agent}
CONTAINERD=${CONTAINERD:-/var/lib/enclave-kube/containerd/containerd.sock}
if [ -z "${CTR:-}" ]; then
	CTR=$(ls -1 "$HOME"/.cache/enclave-mcp/kube/containerd-*/bin/ctr 2>/dev/null | tail -n 1 || true)
	CTR=${CTR:-ctr}
fi

[ -x "$agent" ] || { echo "kube-agent-image: no agent at $agent (make build)" >&2; exit 1; }
tag=enclave/agent:$(sha256sum "$agent" | cut -c1-16)
if ! docker image inspect "$tag" >/dev/null 2>&1; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	install -m 0755 "$agent" "$tmp/agent"
	tar -C "$tmp" --owner=0 --group=0 -cf - agent | docker import --change 'ENTRYPOINT ["/agent"]' - "$tag" >/dev/null
fi

if [ "${1:-}" = "--import" ]; then
	for img in "$tag" ${KUBE_IMPORT_IMAGES:-}; do
		if "$CTR" --address "$CONTAINERD" -n k8s.io images ls -q | grep -qx "docker.io/$img"; then
			continue
		fi
		echo "kube-agent-image: importing $img into $CONTAINERD" >&2
		docker save "$img" | "$CTR" --address "$CONTAINERD" -n k8s.io images import - >/dev/null
	done
fi
echo "$tag"
