// Package session is the server's session core: the one place that owns callers (an MCP
// session, a REST principal), their sandboxes, and the one tool-call path every face ends
// in. A call is found, its arguments decoded strictly, its sandbox picked (the session's
// own, one named by id, or a pooled one), checked to be running, and run with the tool's
// options and timeouts; arguments the tool refuses are the same structured result on every
// face. It also owns file transfer (tar upload, download), ms-enclave's pools, stats and
// health, and sandbox_runtime's named sessions (Named: a sandbox per client-named session
// with a workspace quota, an allow-list of commands, script types and an idle clock).
//
// The faces only translate wire formats: package mcp (MCP), package httpapi (the REST API),
// package runtimeapi (sandbox_runtime's session API), and the benchmark. Caller is the
// in-process api.Manager (ms-enclave's LocalSandboxManager); client.Remote is the same
// interface over HTTP.
package session
