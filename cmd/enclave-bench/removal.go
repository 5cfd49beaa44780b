package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Bulk removal: how long sandbox.Manager.Close takes to remove N sandboxes, one at a time
// (the baseline, RemoveWorkers 1) and with 4, 8 and 16 removals at once. Each round
// creates the N sandboxes afresh (untimed, a few at a time), times Close, and checks by
// label that none is left on the engine. The worker counts take turns within a round, so
// drift on the machine weighs on each alike.

// removalWorkers are the removal concurrencies measured; 1 is the serial baseline.
var removalWorkers = []int{1, 4, 8, 16}

// removalCreateWorkers is how many sandboxes a round creates at once, outside the timing.
const removalCreateWorkers = 8

// removalRow is one sandbox count: Close's time by removal concurrency.
type removalRow struct {
	Sandboxes int
	ByWorkers map[int]stats
}

// parseSizes reads a comma-separated list of positive counts.
func parseSizes(flagName, s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s: %q is not a positive count", flagName, f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no count in %q", flagName, s)
	}
	return out, nil
}

func (b *bench) removal(ctx context.Context) error {
	fmt.Fprintf(os.Stderr, "bulk removal (Manager.Close), %d rounds per size:\n", b.removalRounds)
	for _, n := range b.removalSizes {
		samples := map[int][]time.Duration{}
		for round := range b.removalRounds {
			// A different first concurrency each round.
			order := slices.Clone(removalWorkers)
			k := round % len(order)
			order = append(order[k:], order[:k]...)
			for _, w := range order {
				took, err := b.closeMany(ctx, n, w)
				if err != nil {
					return fmt.Errorf("removing %d sandboxes with %d workers: %w", n, w, err)
				}
				fmt.Fprintf(os.Stderr, "  N=%-4d workers=%-2d round %d: %s\n", n, w, round+1, fmtDur(took))
				samples[w] = append(samples[w], took)
			}
		}
		row := removalRow{Sandboxes: n, ByWorkers: map[int]stats{}}
		for w, s := range samples {
			row.ByWorkers[w] = summarize(s)
		}
		b.rep.Removals = append(b.rep.Removals, row)
	}
	return nil
}

// closeMany creates n sandboxes on a manager that removes workers at a time, and times its
// Close; every container must be gone when Close returns.
func (b *bench) closeMany(ctx context.Context, n, workers int) (time.Duration, error) {
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults:      map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: b.cfg.Config},
		Creators:      map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(b.engine, sandbox.TypeDocker)},
		RemoveWorkers: workers,
	})
	closed := false
	defer func() {
		if !closed { // the tracker's label sweep is the backstop
			_ = m.Close(context.WithoutCancel(ctx))
		}
	}()
	err := bounded(ctx, n, removalCreateWorkers, func(i int) error {
		_, err := m.Create(ctx, fmt.Sprintf("enclave-bench-removal-%d", i), sandbox.TypeDocker, sandbox.Config{})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("creating the sandboxes: %w", err)
	}
	start := time.Now()
	err = m.Close(ctx)
	took := time.Since(start)
	closed = true
	if err != nil {
		return 0, err
	}
	left, err := b.engine.ListManaged(ctx, b.engine.Instance())
	if err != nil {
		return 0, err
	}
	if len(left) > 0 {
		return 0, fmt.Errorf("%d containers left after Close returned", len(left))
	}
	return took, nil
}

// printRemovals writes the bulk removal table, when there is one.
func printRemovals(w io.Writer, r *report) {
	if len(r.Removals) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### Bulk removal: Manager.Close of N sandboxes\n\n")
	fmt.Fprintf(w, "Median (min–max) of the rounds; \"serial\" is one removal at a time, the baseline; sandbox.RemoveWorkers is %d.\n\n", sandbox.RemoveWorkers)
	t := &table{}
	head := []string{"sandboxes"}
	for _, wk := range removalWorkers {
		if wk == 1 {
			head = append(head, "serial")
		} else {
			head = append(head, fmt.Sprintf("%d workers", wk))
		}
	}
	head = append(head, "serial / best", "rounds")
	t.row(head...)
	for _, row := range r.Removals {
		cells := []string{fmt.Sprint(row.Sandboxes)}
		best, rounds := time.Duration(0), 0
		for _, wk := range removalWorkers {
			s := row.ByWorkers[wk]
			rounds = max(rounds, s.N)
			if s.N == 0 {
				cells = append(cells, "—")
				continue
			}
			mx := slices.Max(s.Samples)
			cells = append(cells, fmt.Sprintf("%s (%s–%s)", fmtDur(s.Median), fmtDur(s.Min), fmtDur(mx)))
			if wk != 1 && (best == 0 || s.Median < best) {
				best = s.Median
			}
		}
		ratio := "—"
		if serial := row.ByWorkers[1]; serial.N > 0 && best > 0 {
			ratio = fmt.Sprintf("%.1f×", float64(serial.Median)/float64(best))
		}
		cells = append(cells, ratio, fmt.Sprint(rounds))
		t.row(cells...)
	}
	t.write(w)
}

type jsonRemoval struct {
	Sandboxes int                   `json:"sandboxes"`
	ByWorkers map[string]*jsonStats `json:"by_workers"`
}

func (r *report) removalsJSON() []jsonRemoval {
	var out []jsonRemoval
	for _, row := range r.Removals {
		j := jsonRemoval{Sandboxes: row.Sandboxes, ByWorkers: map[string]*jsonStats{}}
		for wk, s := range row.ByWorkers {
			j.ByWorkers[strconv.Itoa(wk)] = s.toJSON()
		}
		out = append(out, j)
	}
	return out
}
