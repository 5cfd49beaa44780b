package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"
)

// stats summarises the samples of one operation.
type stats struct {
	N      int
	Median time.Duration
	P90    time.Duration
	Min    time.Duration
	// Samples are kept, in the order taken, for the JSON output.
	Samples []time.Duration
}

// summarize computes the median (the mean of the two middle samples when n is even), the
// 90th percentile (nearest rank) and the minimum, by sorting a copy of the samples.
func summarize(samples []time.Duration) stats {
	s := stats{N: len(samples), Samples: samples}
	if len(samples) == 0 {
		return s
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	n := len(sorted)
	if n%2 == 1 {
		s.Median = sorted[n/2]
	} else {
		s.Median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	rank := (9*n + 9) / 10 // ceil(0.9 n), 1-based
	s.P90 = sorted[rank-1]
	s.Min = sorted[0]
	return s
}

// stopwatch times one run of a measured function. It starts when the function is called;
// a function with setup to leave out calls restart after it, and one with teardown to leave
// out calls stop before it.
type stopwatch struct {
	start   time.Time
	elapsed time.Duration
	stopped bool
}

func (w *stopwatch) restart() { w.start, w.stopped = time.Now(), false }

func (w *stopwatch) stop() {
	if !w.stopped {
		w.elapsed, w.stopped = time.Since(w.start), true
	}
}

// measure runs fn once to warm up (untimed: it pays for first-use costs such as the agent
// volume, page cache and the engine's connection pool), then n times, timing each run with
// the stopwatch it hands fn. The first error, or the end of ctx, stops the measurement.
func measure(ctx context.Context, name string, n int, fn func(w *stopwatch) error) (stats, error) {
	return measureRuns(ctx, name, n, true, fn)
}

// measureNoWarmup is measure without the warm-up run, for operations too slow to repeat.
func measureNoWarmup(ctx context.Context, name string, n int, fn func(w *stopwatch) error) (stats, error) {
	return measureRuns(ctx, name, n, false, fn)
}

func measureRuns(ctx context.Context, name string, n int, warmup bool, fn func(w *stopwatch) error) (stats, error) {
	fmt.Fprintf(os.Stderr, "  %-44s", name)
	if warmup {
		if err := fn(&stopwatch{start: time.Now()}); err != nil {
			fmt.Fprintln(os.Stderr, "failed")
			return stats{}, fmt.Errorf("%s: warm-up: %w", name, err)
		}
	}
	samples := make([]time.Duration, 0, n)
	for i := range n {
		if err := ctx.Err(); err != nil {
			fmt.Fprintln(os.Stderr, "interrupted")
			return stats{}, fmt.Errorf("%s: %w", name, context.Cause(ctx))
		}
		w := &stopwatch{start: time.Now()}
		err := fn(w)
		w.stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "failed")
			return stats{}, fmt.Errorf("%s: run %d of %d: %w", name, i+1, n, err)
		}
		samples = append(samples, w.elapsed)
	}
	s := summarize(samples)
	fmt.Fprintf(os.Stderr, "median %s over %d\n", fmtDur(s.Median), n)
	return s, nil
}

// fmtDur prints a duration in milliseconds, with more digits for short ones, and in
// microseconds below 0.1 ms (where two decimals of a millisecond would read 0.00).
func fmtDur(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 0.1:
		return fmt.Sprintf("%.1f µs", ms*1000)
	case ms < 10:
		return fmt.Sprintf("%.2f ms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.2f s", ms/1000)
	}
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
