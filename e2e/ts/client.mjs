#!/usr/bin/env node
// End-to-end check of enclave-mcp with the official TypeScript MCP SDK.
//
//   node client.mjs /path/to/enclave-mcp [extra serve flags...]
//
// Spawns "enclave-mcp serve" over stdio, lists the tools, runs Python, checks a bad call and a
// large output (the SDK's stdio reader refuses messages over 10 MiB), then disconnects. Prints
// "CONTAINER <id>" (the sandbox's container, for the caller's leak check) and "OK"; exits
// non-zero on any failure.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { check, failures, textOf } from "./checks.mjs";

const [binary, ...serveFlags] = process.argv.slice(2);
if (!binary) {
  console.error("usage: node client.mjs /path/to/enclave-mcp [serve flags...]");
  process.exit(2);
}


const transport = new StdioClientTransport({
  command: binary,
  args: ["serve", ...serveFlags],
  // The SDK passes only a few variables by default; the server needs DOCKER_HOST and friends.
  env: { ...process.env },
  stderr: "inherit",
});
const client = new Client({ name: "enclave-e2e-ts", version: "0.0.0" });

try {
  await client.connect(transport);
  console.log("server:", JSON.stringify(client.getServerVersion()));

  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name);
  for (const want of ["file_operation", "python_executor", "shell_executor"]) {
    check(names.includes(want), `tools/list lacks ${want}: ${JSON.stringify(names)}`);
  }
  for (const t of tools) {
    check(t.inputSchema?.type === "object", `${t.name}: inputSchema.type is ${t.inputSchema?.type}`);
  }

  const py = await client.callTool({ name: "python_executor", arguments: { code: "print(6*7)" } });
  const pyText = textOf(py);
  check(!py.isError, `python_executor isError: ${pyText}`);
  check(pyText.trim() === "42", `python_executor printed ${JSON.stringify(pyText)}, want "42"`);
  check(py.structuredContent?.status === "success", `status ${py.structuredContent?.status}`);
  check(py.structuredContent?.output === "42\n", `output ${JSON.stringify(py.structuredContent?.output)}`);

  const bad = await client.callTool({ name: "python_executor", arguments: { code: "print(1)", nope: true } });
  check(bad.isError === true, "an unknown parameter was accepted");
  check(textOf(bad).includes('"nope"'), `bad-argument text ${JSON.stringify(textOf(bad))} does not name the parameter`);

  // 20 MB of control characters: JSON-escaped, that is 120 MB unless the server caps by
  // encoded size; the SDK drops any message over 10 MiB, which would hang this call.
  const big = await client.callTool(
    { name: "shell_executor", arguments: { command: "head -c 20000000 /dev/zero | tr '\\0' '\\001'" } },
    undefined,
    { timeout: 60_000 },
  );
  check(big.structuredContent?.truncated === true, "20 MB of output was not truncated");

  const id = await client.callTool({
    name: "shell_executor",
    arguments: { command: "cat /proc/self/mountinfo /proc/self/cgroup" },
  });
  const m = /(?:containers\/|docker[/-])([0-9a-f]{64})/.exec(id.structuredContent?.output ?? "");
  check(m !== null, "no container ID in the sandbox's mountinfo");
  if (m) console.log("CONTAINER " + m[1]);
} catch (err) {
  failures.push(String(err?.stack ?? err));
  console.error("FAIL:", err);
} finally {
  await client.close().catch((err) => console.error("close:", err));
}

if (failures.length > 0) {
  console.error(`${failures.length} check(s) failed`);
  process.exit(1);
}
console.log("OK");
