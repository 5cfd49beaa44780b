package loadtest

import (
	"math"
	"slices"
	"time"
)

// Percentiles summarises a set of durations.
type Percentiles struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50"`
	P95 time.Duration `json:"p95"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
}

// summarize computes percentiles by the nearest-rank method: every reported figure is one
// that was actually measured, never an interpolation between two.
func summarize(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return Percentiles{
		N:   len(s),
		P50: nearestRank(s, 50),
		P95: nearestRank(s, 95),
		P99: nearestRank(s, 99),
		Max: s[len(s)-1],
	}
}

// nearestRank returns the p-th percentile of sorted: the smallest value with at least p% of
// the values at or below it.
func nearestRank(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}
