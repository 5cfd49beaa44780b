#!/usr/bin/env node
// End-to-end check of enclave-mcp's HTTP transports with the official TypeScript MCP SDK.
//
//   node http-client.mjs URL streamable|sse TOKEN
//
// URL is the server's base (http://127.0.0.1:8000); the client connects to URL/mcp
// (streamable HTTP) or URL/sse (SSE) with "Authorization: Bearer TOKEN", lists the tools,
// runs Python, writes a file and reads it back, runs two notebook cells that share state,
// then ends the session (streamable HTTP: terminateSession, a DELETE, since close() alone
// sends none; SSE: closing the stream) and disconnects. Prints "OK"; exits non-zero on any
// failure. Run by mcp/ts_http_e2e_test.go.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { check, failures, textOf } from "./checks.mjs";

const [base, kind, token] = process.argv.slice(2);
if (!base || !["streamable", "sse"].includes(kind) || !token) {
  console.error("usage: node http-client.mjs URL streamable|sse TOKEN");
  process.exit(2);
}


const headers = { Authorization: `Bearer ${token}` };
const transport =
  kind === "streamable"
    ? new StreamableHTTPClientTransport(new URL("/mcp", base), { requestInit: { headers } })
    : // requestInit's headers go on the POSTs and, in this SDK, on the stream's GET as well.
      new SSEClientTransport(new URL("/sse", base), { requestInit: { headers } });
const client = new Client({ name: `enclave-e2e-ts-${kind}`, version: "0.0.0" });

async function call(name, args) {
  const res = await client.callTool({ name, arguments: args });
  return { res, text: textOf(res) };
}

try {
  await client.connect(transport);
  console.log("server:", JSON.stringify(client.getServerVersion()), "session:", transport.sessionId ?? "(sse)");

  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name);
  for (const want of ["file_operation", "python_executor", "notebook_executor"]) {
    check(names.includes(want), `tools/list lacks ${want}: ${JSON.stringify(names)}`);
  }

  let { res, text } = await call("python_executor", { code: "print(6*7)" });
  check(!res.isError && text.trim() === "42", `python_executor: isError ${res.isError}, text ${JSON.stringify(text)}`);

  ({ res, text } = await call("file_operation", { operation: "write", file_path: "state.txt", content: "kept across calls" }));
  check(!res.isError, `file write: ${text}`);
  ({ res, text } = await call("file_operation", { operation: "read", file_path: "state.txt" }));
  check(!res.isError && text.includes("kept across calls"), `file read: isError ${res.isError}, text ${JSON.stringify(text)}`);
  ({ res, text } = await call("python_executor", { code: "print(open('state.txt').read())" }));
  check(!res.isError && text.includes("kept across calls"), `state lost between calls: ${JSON.stringify(text)}`);

  ({ res, text } = await call("notebook_executor", { code: "x = 21" }));
  check(!res.isError, `notebook x = 21: ${text}`);
  ({ res, text } = await call("notebook_executor", { code: "x * 2" }));
  check(!res.isError && text.trim() === "42", `notebook x * 2: isError ${res.isError}, text ${JSON.stringify(text)}, want 42`);
} catch (err) {
  failures.push(String(err?.stack ?? err));
  console.error("FAIL:", err);
} finally {
  if (kind === "streamable") {
    // close() only aborts the client's requests; the DELETE that ends the session (and
    // removes its sandboxes) at once is terminateSession's.
    await transport.terminateSession().catch((err) => {
      failures.push(`terminateSession: ${err}`);
      console.error("FAIL: terminateSession:", err);
    });
  }
  await client.close().catch((err) => console.error("close:", err));
}

if (failures.length > 0) {
  console.error(`${failures.length} check(s) failed`);
  process.exit(1);
}
console.log("OK");
