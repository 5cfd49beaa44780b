package main

import (
	"os"
	"path/filepath"
)

// agentBinaryName is the agent built alone (cmd/enclave-agent), which `make build` writes
// beside enclave-mcp.
const agentBinaryName = "enclave-agent"

// agentBinaryFlag is the help text of --agent-binary.
const agentBinaryFlag = "static agent binary injected into sandboxes as PID 1 (default: " + agentBinaryName + " beside this executable when it is there and not older than it, else this executable)"

// defaultAgent is the agent binary to inject: flagValue when --agent-binary was given, else
// the one beside this executable (agentBeside), else "" (this executable is its own agent).
func defaultAgent(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	return agentBeside(self)
}

// agentBeside is enclave-agent in self's directory, or "" when there is none, it is not a
// regular file, or it is older than self: an enclave-mcp rebuilt on its own must not inject
// an agent from an earlier build. An idle agent of its own costs a sandbox about a quarter
// of the memory enclave-mcp as agent does (no server packages initialised, far fewer pages).
func agentBeside(self string) string {
	if resolved, err := filepath.EvalSymlinks(self); err == nil {
		self = resolved
	}
	selfInfo, err := os.Stat(self)
	if err != nil {
		return ""
	}
	path := filepath.Join(filepath.Dir(self), agentBinaryName)
	info, err := os.Stat(path)
	if err != nil || !info.Mode().IsRegular() || info.ModTime().Before(selfInfo.ModTime()) {
		return ""
	}
	return path
}
