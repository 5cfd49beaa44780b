#!/usr/bin/env bash
# scripts/kube-sa-kubeconfig.sh NAMESPACE OUT: applies deploy/kube/rbac/enclave-mcp.yaml in
# NAMESPACE and writes to OUT a kubeconfig that acts as its ServiceAccount (a token of two
# hours from the TokenRequest API), on the cluster of $KUBECONFIG: the server's least
# privilege, for tests that must not run as the cluster's admin.
set -euo pipefail
ns=${1:?namespace}
out=${2:?output kubeconfig}
repo=$(cd "$(dirname "$0")/.." && pwd)
kubectl -n "$ns" apply -f "$repo/deploy/kube/rbac/enclave-mcp.yaml" >/dev/null
token=$(kubectl -n "$ns" create token enclave-mcp --duration 2h)
server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
if [ -z "$ca" ]; then
	ca=$(base64 -w0 <"$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')")
fi
umask 077
cat >"$out" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster:
    server: $server
    certificate-authority-data: $ca
users:
- name: enclave-mcp
  user:
    token: $token
contexts:
- name: enclave-mcp
  context:
    cluster: cluster
    user: enclave-mcp
    namespace: $ns
current-context: enclave-mcp
KUBECONFIG
