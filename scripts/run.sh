#!/usr/bin/env bash
# `make run`: the engine is up and the images are built (make setup did that); print how to
# connect, then serve MCP over this terminal's stdio until interrupted.
set -euo pipefail
bin=$(realpath "${1:-bin/enclave-mcp}")

cat >&2 <<TXT

enclave-mcp is ready. It serves MCP over stdio: an MCP client starts it as a subprocess.

  command:  $bin serve

Claude Desktop (claude_desktop_config.json) or any stdio MCP client:
  {"mcpServers": {"enclave": {"command": "$bin", "args": ["serve"]}}}

Try it headless from another terminal:
  npx @modelcontextprotocol/inspector --cli $bin serve --method tools/list

Serving on this terminal's stdin/stdout now (JSON-RPC lines; Ctrl-C or Ctrl-D stops it and
removes its sandbox).

TXT
exec "$bin" serve
