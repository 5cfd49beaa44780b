# enclave-mcp: the two commands a fresh machine needs are `make run` and `make test`.
GO      ?= go
BIN     := bin/enclave-mcp
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# The binary is also the in-sandbox agent, injected into images without libc: static only.
export CGO_ENABLED := 0

.PHONY: all build setup images run test test-short bench load faults snapshots fmt vet clean

all: build

build:
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/enclave-mcp

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
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 25m ./...
	cd examples/agents && CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 10m ./...
	$(GO) run ./cmd/enclave-load -sessions 8 -calls 5
	# Restarts the engine under everything else: last, and alone.
	CGO_ENABLED=1 $(GO) test -race -tags faults -run EngineRestart -count=1 -timeout 5m ./loadtest/

# Unit tests only (no engine needed): for a quick local loop.
test-short:
	CGO_ENABLED=1 $(GO) test -race -short -count=1 ./...

bench: setup
	$(GO) run ./cmd/enclave-bench

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
