#!/usr/bin/env bash
# `make run`: the engine is up and the images are built (make setup did that). Print how to
# connect, then serve MCP over HTTP (and the REST API) on loopback until interrupted.
set -euo pipefail
bin=$(realpath "${1:-bin/enclave-mcp}")
addr=${ENCLAVE_ADDR:-127.0.0.1:8000}
token=${ENCLAVE_TOKEN:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}

cat >&2 <<TXT

enclave-mcp is ready.

Remote agents (MCP over HTTP, token required):
  streamable HTTP  http://$addr/mcp
  SSE              http://$addr/sse
  REST API         http://$addr/sandboxes   (ms-enclave compatible; GET /health needs no token)
  token            $token
  client config    {"mcpServers": {"enclave": {"url": "http://$addr/mcp", "headers": {"Authorization": "Bearer $token"}}}}

Desktop agents (MCP over stdio; the client starts the server itself):
  command          $bin serve
  Claude Desktop   {"mcpServers": {"enclave": {"command": "$bin", "args": ["serve"]}}}

Try it:
  curl -s http://$addr/health
  npx @modelcontextprotocol/inspector --cli $bin serve --method tools/list

Serving until Ctrl-C (every sandbox is removed on the way out).

TXT
# The token goes by the environment, not --token: argv is visible to every user in `ps`.
ENCLAVE_MCP_TOKEN=$token exec "$bin" serve --http "$addr"
