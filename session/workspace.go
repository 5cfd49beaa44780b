package session

import "github.com/enclave-mcp/enclave-mcp/sandbox"

// Current returns the caller's own sandbox, the one Run starts on the caller's first call,
// when it exists and runs. It never starts one: read-only views of a session's workspace
// (MCP resources) have nothing to show before the first call, and must not cost a sandbox.
func (l *Caller) Current() (sandbox.Sandbox, bool) {
	for _, sb := range l.m.ListOwned(l.owner) {
		info := sb.Info()
		if info.Type == l.sessionType && runnable(info, "") == nil {
			return sb, true
		}
	}
	return nil, false
}

// WorkingDir is sb's workspace: the directory its tools run in and resolve relative paths
// against.
func WorkingDir(sb sandbox.Sandbox) string {
	if rc, ok := sb.(configured); ok && rc.Config().WorkingDir != "" {
		return rc.Config().WorkingDir
	}
	return sandbox.DefaultWorkingDir
}
