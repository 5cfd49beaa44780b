# enclave-mcp: the two commands a fresh machine needs are `make run` and `make test`.
GO      ?= go
BIN     := bin/enclave-mcp
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# The binary is also the in-sandbox agent, injected into images without libc: static only.
export CGO_ENABLED := 0

.PHONY: all build setup images run test test-short bench bench-density load faults snapshots fmt vet clean gvisor test-gvisor bench-gvisor conformance test-kube bench-kube

all: build

build:
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/enclave-mcp
	$(GO) build -trimpath -ldflags "-s -w" -o bin/enclave-agent ./cmd/enclave-agent

# Installs and starts a Docker engine when none answers, then builds the default images
# from Debian packages when the engine lacks them.
setup: build
	scripts/ensure-docker.sh
	$(BIN) images build --missing

images: build
	scripts/ensure-docker.sh
	$(BIN) images build

run: setup
	scripts/run.sh $(BIN)

# Every test, Docker integration tests included, against the real engine. -race needs cgo.
# Then the load command at CI size, and last, alone, the test that stops and restarts the
# Docker engine (while it runs, every other test using the engine would fail).
test: setup
	$(MAKE) chart-check
	$(MAKE) conformance
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 25m ./...
	cd examples/agents && CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 10m ./...
	$(GO) run ./cmd/enclave-load -sessions 8 -calls 5
	# Restarts the engine under everything else: last, and alone.
	CGO_ENABLED=1 $(GO) test -race -tags faults -run EngineRestart -count=1 -timeout 5m ./loadtest/

# The MCP conformance suite (npm @modelcontextprotocol/conformance, pinned: 0.1.16 on spec
# 2025-11-25, 0.2.0-alpha.12 on 2026-07-28 with the tasks extension) against a real server
# behind a token-adding proxy; fails on any scenario outside e2e/conformance/expected-failures-*.yaml
# (or on a listed one that passes). Installs the suites, and Node 22 from the npm registry
# when the system's node is older, once into ~/.cache/enclave-mcp/conformance.
conformance: build
	scripts/conformance.sh $(BIN)

# Unit tests only (no engine needed): for a quick local loop.
test-short:
	CGO_ENABLED=1 $(GO) test -race -short -count=1 ./...

bench: setup
	$(GO) run ./cmd/enclave-bench

# Density: what 100 and 500 idle sandboxes cost the host and the server, beside as many plain
# containers and beside enclave-mcp as its own agent, and a tool call with N alive beside one
# alive (about 30 minutes on 2 cores; it creates 3 x 600 containers and removes them all).
bench-density: setup
	$(GO) run ./cmd/enclave-bench -density-only -density-sizes 100,500

# gVisor: installs Debian's runsc, registers it with the running dockerd (config file +
# SIGHUP: dockerd is never restarted) and checks that a hardened container runs under it.
# Fails, with runsc's own error, where runsc cannot run containers.
gvisor: setup
	scripts/ensure-gvisor.sh

# The core behaviour tables (exec, files, background jobs, timeouts killing the whole tree,
# output caps, bad input, the container hardening) with every sandbox under gVisor. Skipped,
# because gVisor differs there by design (both are still refused or contained):
#  - writes to the read-only rootfs by a non-root user fail with EACCES, not EROFS, so the
#    two tests that match the error text ("read-only file system") cannot;
#  - the memory cgroup's OOM kill lands on gVisor's kernel (the Sentry), so a memory hog
#    ends the whole sandbox (the session's next call gets a fresh one) instead of one
#    process with oom_killed set.
GVISOR_TESTS := ^TestIntegration(SandboxLifecycle|RuntimeInUse|Ulimits|SeccompPinned|AppArmorWhereEnabled|FileOperations|BackgroundJobs|ShellOption|OutputCapOption|StdioFloor|StdioBadInput|StdioLargeOutput|StdioSecurity)$$
GVISOR_SKIP  := ^TestIntegration(FileOperations|StdioSecurity)$$/^(write_outside_the_workspace_fails|read-only_root|memory_hog)$$
test-gvisor: gvisor
	ENCLAVE_TEST_RUNTIME=runsc CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m \
		-run '$(GVISOR_TESTS)' -skip '$(GVISOR_SKIP)' ./sandbox/ ./tools/ ./mcp/

# The benchmark with runsc rows beside runc's, measured in the same run.
bench-gvisor: gvisor
	$(GO) run ./cmd/enclave-bench -runtimes runsc

# 50 concurrent MCP sessions x 20 python_executor calls against a fresh server; prints a table.
load: setup
	$(GO) run ./cmd/enclave-load -sessions 50 -calls 20

# The fault tests, the Docker engine restart included (a sequential test: it runs before
# the parallel ones start).
faults: setup
	CGO_ENABLED=1 $(GO) test -race -tags faults -count=1 -timeout 10m ./loadtest/

snapshots:
	UPDATE_SNAPSHOTS=1 $(GO) test ./schema/... ./tools/...

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf bin

# Deployment (deploy/, README "Deployment"). The server's own image, enclave/enclave-mcp:<version>
# and :latest: the static binary in an empty root, imported with docker import (seconds, no
# registry). It drives the engine whose socket it is given; build the sandbox images there.
.PHONY: server-image chart-check
server-image: build
	scripts/ensure-docker.sh
	scripts/build-server-image.sh $(BIN)

# The Helm chart: helm lint --strict with the default values and with ci/full-values.yaml
# (every option), then helm template with those and more, the rendered documents checked by
# deploy/chart_test.go. helm is built from its Go module (helm.sh/helm/v4) the first time
# (scripts/ensure-helm.sh: a few minutes on 2 cores), then reused.
CHART := deploy/helm/enclave-mcp
chart-check:
	@helm=$$(scripts/ensure-helm.sh) && set -x && \
		$$helm lint --strict $(CHART) && \
		$$helm lint --strict $(CHART) --values $(CHART)/ci/full-values.yaml && \
		HELM=$$helm $(GO) test -count=1 -run '^TestChart' ./deploy/

# multi_code_executor's languages. The polyglot image (every toolchain Debian packages for
# them: ~3 GB, ~6 minutes to build) is not part of setup; images-polyglot (re)builds it, and
# the other two build it first when it is missing.
.PHONY: images-polyglot test-polyglot bench-polyglot
POLYGLOT := enclave/polyglot:bookworm

images-polyglot: build
	scripts/ensure-docker.sh
	$(BIN) images build --image $(POLYGLOT)

# Every language over MCP with a real client: a hello-world and a failing build each.
test-polyglot: setup
	$(BIN) images build --missing --image $(POLYGLOT)
	CGO_ENABLED=1 $(GO) test -race -tags polyglot -count=1 -timeout 20m -run TestIntegrationPolyglot ./tools/

# The README's language table: each language's hello-world, and a loop for compiled ones.
bench-polyglot: setup
	$(BIN) images build --missing --image $(POLYGLOT)
	$(GO) run ./cmd/enclave-bench -polyglot-only

# A single-node Kubernetes cluster on this machine, offline, for the Kubernetes backend's tests
# (README "Kubernetes cluster for tests"): scripts/kube-cluster.sh builds kube-apiserver, the
# kubelet and the rest from the Go module proxy the first time (~25 min on 2 cores, cached in
# ~/.cache/enclave-mcp/kube), then starts in seconds. Not part of `make test`. kube-down stops
# every process kube-up started; the cluster's state stays in /var/lib/enclave-kube.
.PHONY: kube-up kube-down kube-smoke test-kube bench-kube
kube-up:
	scripts/kube-cluster.sh up

kube-down:
	scripts/kube-cluster.sh down

# A hardened Pod of enclave/python:bookworm runs, and commands run in it through the API server.
kube-smoke: kube-up
	eval "$$(scripts/kube-cluster.sh env)" && cd deploy/kube/build && \
		$(GO) test -count=1 -v -timeout 5m ./smoke/

# The Kubernetes backend's tests on a real single-node cluster (README "Kubernetes"): brings
# the test cluster up (KUBE_CLUSTER; reused when it is up already, brought down again at the
# end when this target started it, unless KUBE_KEEP=1), loads the agent image, and runs the
# backend's integration tests and the behaviour table's kube rows in KUBE_NAMESPACE, then two
# replica servers (as the least-privilege ServiceAccount of deploy/kube/rbac) in
# KUBE_NAMESPACE-replicas, then the Helm chart (backend=kube, two replicas, the server image
# built and loaded) in KUBE_NAMESPACE-helm, reached through its Service.
KUBE_CLUSTER   ?= scripts/kube-cluster.sh
KUBE_NAMESPACE ?= enclave-test
test-kube: build
	@was_up=0; $(KUBE_CLUSTER) status >/dev/null 2>&1 && was_up=1; \
	$(KUBE_CLUSTER) up >/dev/null && eval "$$($(KUBE_CLUSTER) env)" && \
	{ kubectl get namespace $(KUBE_NAMESPACE) >/dev/null 2>&1 || kubectl create namespace $(KUBE_NAMESPACE); } && \
	image=$$(scripts/kube-agent-image.sh --import) && \
	export ENCLAVE_TEST_KUBECONFIG=$$KUBECONFIG ENCLAVE_TEST_KUBE_NAMESPACE=$(KUBE_NAMESPACE) ENCLAVE_TEST_KUBE_AGENT_IMAGE=$$image && \
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m -run 'TestIntegrationKube' ./sandbox/kube/ && \
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m -run 'TestBehaviourOnEveryBackend/kube' ./session/ && \
	{ kubectl get namespace $(KUBE_NAMESPACE)-replicas >/dev/null 2>&1 || kubectl create namespace $(KUBE_NAMESPACE)-replicas; } && \
	sa=$$(mktemp) && scripts/kube-sa-kubeconfig.sh $(KUBE_NAMESPACE)-replicas $$sa && \
	ENCLAVE_TEST_KUBE_REPLICA_NAMESPACE=$(KUBE_NAMESPACE)-replicas ENCLAVE_TEST_KUBE_REPLICA_KUBECONFIG=$$sa \
	CGO_ENABLED=1 $(GO) test -race -count=1 -v -timeout 10m -run 'TestIntegrationKubeReplicas' ./cmd/enclave-mcp/ && \
	server=$$(scripts/build-server-image.sh $(BIN) | head -n 1) && KUBE_IMPORT_IMAGES=$$server scripts/kube-agent-image.sh --import >/dev/null && \
	{ kubectl get namespace $(KUBE_NAMESPACE)-helm >/dev/null 2>&1 || kubectl create namespace $(KUBE_NAMESPACE)-helm; } && \
	ENCLAVE_TEST_KUBE_SERVER_IMAGE=$$server ENCLAVE_TEST_KUBE_HELM_NAMESPACE=$(KUBE_NAMESPACE)-helm \
	$(GO) test -count=1 -v -timeout 10m -run 'TestIntegrationChartOnKube' ./deploy/; \
	rc=$$?; rm -f "$$sa"; if [ $$was_up = 0 ] && [ -z "$(KUBE_KEEP)" ]; then $(KUBE_CLUSTER) down; fi; exit $$rc

# The Kubernetes backend beside the Docker backend (create until ready, warm acquire, a tool
# call), on the test cluster, in namespace enclave-bench.
bench-kube: build
	@was_up=0; $(KUBE_CLUSTER) status >/dev/null 2>&1 && was_up=1; \
	$(KUBE_CLUSTER) up >/dev/null && eval "$$($(KUBE_CLUSTER) env)" && \
	{ kubectl get namespace enclave-bench >/dev/null 2>&1 || kubectl create namespace enclave-bench; } && \
	image=$$(scripts/kube-agent-image.sh --import) && \
	$(GO) run ./cmd/enclave-bench -kube "$$KUBECONFIG" -kube-namespace enclave-bench -kube-agent-image "$$image"; \
	rc=$$?; if [ $$was_up = 0 ] && [ -z "$(KUBE_KEEP)" ]; then $(KUBE_CLUSTER) down; fi; exit $$rc
