package loadtest

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// Markdown renders the report as a Markdown table, followed by the first error messages
// when there were errors.
func (r Report) Markdown() string {
	var b strings.Builder
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	b.WriteString("| metric | value |\n| --- | --- |\n")
	row("sessions x python_executor calls", fmt.Sprintf("%d x %d (%d CPUs)", r.Sessions, r.CallsPerSession, runtime.NumCPU()))
	row("calls made / errors", fmt.Sprintf("%d / %d", r.Calls, r.Errors))
	row("wall time", fmt.Sprintf("%.1f s", r.Wall.Seconds()))
	row("throughput", fmt.Sprintf("%.1f calls/s", r.Throughput()))
	row("call latency p50 / p95 / p99 / max", percentiles(r.Latency))
	row("session setup (initialize + first call, sandbox created) p50 / p95 / p99 / max", percentiles(r.Setup))
	if s := r.Server; s != nil {
		row("warm pools full, from the server's start (the load waited for it)", ms(s.PoolsReady))
		row("server peak RSS (VmHWM)", fmt.Sprintf("%.1f MiB", float64(s.PeakRSS)/(1<<20)))
		row("sandboxes left after sessions closed (warm spares excepted)", fmt.Sprint(s.LeftAfterClose))
		row("warm-pool spares kept ready for new sessions", fmt.Sprint(s.WarmSpares))
		if s.Pools != "" {
			row("warm pools (bounds, growth, hand-outs)", s.Pools)
		}
		row("server stop (SIGTERM to exit)", ms(s.StopTime))
		row("engine done removing the server's sandboxes (from SIGTERM)", ms(s.EngineDone))
		row("sandboxes left after server stopped", fmt.Sprint(s.LeftAfterStop))
	} else {
		row("server peak RSS, sandboxes left", "n/a (server not started by this run)")
	}
	if len(r.ErrorSamples) > 0 {
		b.WriteString("\nFirst errors:\n\n")
		for _, e := range r.ErrorSamples {
			fmt.Fprintf(&b, "- %s\n", e)
		}
	}
	return b.String()
}

func percentiles(p Percentiles) string {
	if p.N == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%s / %s / %s / %s (n=%d)", ms(p.P50), ms(p.P95), ms(p.P99), ms(p.Max), p.N)
}

// ms prints a duration in milliseconds with precision that suits its size.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	if v < 10 {
		return fmt.Sprintf("%.2f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}
