package agent

import (
	"runtime"
	"runtime/metrics"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// An idle sandbox is the agent and nothing else, so what the agent holds while it waits is
// what every idle sandbox costs on top of the engine's own share. It starts no interpreter
// until a call needs one (pyfork.go), and it is best run as the enclave-agent binary, which
// carries none of the server's packages (cmd/enclave-agent).

// selfStats is the agent's footprint: runtime/metrics reads it without stopping the world.
func selfStats() *wire.AgentStats {
	samples := []metrics.Sample{
		{Name: "/sched/goroutines:goroutines"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/total:bytes"},
	}
	metrics.Read(samples)
	st := &wire.AgentStats{Procs: runtime.GOMAXPROCS(0)}
	if v := samples[0].Value; v.Kind() == metrics.KindUint64 {
		st.Goroutines = int(v.Uint64())
	}
	if v := samples[1].Value; v.Kind() == metrics.KindUint64 {
		st.HeapBytes = v.Uint64()
	}
	if v := samples[2].Value; v.Kind() == metrics.KindUint64 {
		st.TotalBytes = v.Uint64()
	}
	return st
}
