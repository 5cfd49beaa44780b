// Package deploy holds how enclave-mcp is deployed, and the tests that prove it works: the
// server's own container image (scripts/build-server-image.sh, make server-image) and the
// Helm chart in helm/enclave-mcp. The package has no code; its tests lint and render the
// chart with a helm built from its Go module (scripts/ensure-helm.sh, make chart-check) and
// check what it renders, and start the server image against the Docker engine.
package deploy
