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
// (the baseline, RemoveWorkers 1) and with 4, 8 and 16 removals at once, and how long a
// server's shutdown takes, which hands the removals to the engine (HandOffRemovals, then
// Close), beside how long the engine then takes to have removed them all. Each round
// creates the N sandboxes afresh (untimed, a few at a time), times Close, and checks by
// label that none is left on the engine. The variants take turns within a round, so drift
// on the machine weighs on each alike.

// removalWorkers are the removal concurrencies measured; 1 is the serial baseline, and
// handOffWorkers stands for the shutdown's hand-off.
var removalWorkers = []int{1, 4, 8, 16, handOffWorkers}

// handOffWorkers marks the hand-off variant among removalWorkers: HandOffRemovals, then
// Close with the default RemoveWorkers.
const handOffWorkers = 0

// removalCreateWorkers is how many sandboxes a round creates at once, outside the timing.
const removalCreateWorkers = 8

// removalRow is one sandbox count: Close's time by removal concurrency (handOffWorkers: the
// shutdown's), and after a hand-off, the time until the engine had removed every container.
type removalRow struct {
	Sandboxes   int
	ByWorkers   map[int]stats
	HandOffGone stats
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
		var gone []time.Duration
		for round := range b.removalRounds {
			// A different first concurrency each round.
			order := slices.Clone(removalWorkers)
			k := round % len(order)
			order = append(order[k:], order[:k]...)
			for _, w := range order {
				took, emptied, err := b.closeMany(ctx, n, w)
				if err != nil {
					return fmt.Errorf("removing %d sandboxes (%s): %w", n, workersName(w), err)
				}
				fmt.Fprintf(os.Stderr, "  N=%-4d %-9s round %d: %s (engine empty after %s)\n", n, workersName(w), round+1, fmtDur(took), fmtDur(emptied))
				samples[w] = append(samples[w], took)
				if w == handOffWorkers {
					gone = append(gone, emptied)
				}
			}
		}
		row := removalRow{Sandboxes: n, ByWorkers: map[int]stats{}, HandOffGone: summarize(gone)}
		for w, s := range samples {
			row.ByWorkers[w] = summarize(s)
		}
		b.rep.Removals = append(b.rep.Removals, row)
	}
	return nil
}

// workersName names a removal variant in the progress lines.
func workersName(w int) string {
	if w == handOffWorkers {
		return "hand-off"
	}
	return fmt.Sprintf("workers=%d", w)
}

// closeMany creates n sandboxes on a manager that removes workers at a time (or hands them
// off), times its Close, and how long until no container is left on the engine: at once for
// a removal, which must leave none when Close returns; for a hand-off, once the engine's
// auto-removal has removed the last.
func (b *bench) closeMany(ctx context.Context, n, workers int) (took, emptied time.Duration, err error) {
	opts := sandbox.ManagerOptions{
		Defaults:      map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: b.cfg.Config},
		Creators:      map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(b.engine, sandbox.TypeDocker)},
		RemoveWorkers: workers,
	}
	if workers == handOffWorkers {
		opts.RemoveWorkers = sandbox.RemoveWorkers
	}
	m := sandbox.NewManager(opts)
	closed := false
	defer func() {
		if !closed { // the tracker's label sweep is the backstop
			_ = m.Close(context.WithoutCancel(ctx))
		}
	}()
	err = bounded(ctx, n, removalCreateWorkers, func(i int) error {
		_, err := m.Create(ctx, fmt.Sprintf("enclave-bench-removal-%d", i), sandbox.TypeDocker, sandbox.Config{})
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("creating the sandboxes: %w", err)
	}
	start := time.Now()
	if workers == handOffWorkers {
		m.HandOffRemovals()
	}
	err = m.Close(ctx)
	took = time.Since(start)
	closed = true
	if err != nil {
		return 0, 0, err
	}
	for {
		left, err := b.engine.ListManaged(ctx, b.engine.Instance())
		if err != nil {
			return 0, 0, err
		}
		if len(left) == 0 {
			return took, time.Since(start), nil
		}
		if workers != handOffWorkers {
			return 0, 0, fmt.Errorf("%d containers left after Close returned", len(left))
		}
		if time.Since(start) > time.Duration(n)*time.Second+time.Minute {
			return 0, 0, fmt.Errorf("%d handed-off containers still on the engine after %s", len(left), fmtDur(time.Since(start)))
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return 0, 0, err
		}
	}
}

// printRemovals writes the bulk removal table, when there is one.
func printRemovals(w io.Writer, r *report) {
	if len(r.Removals) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### Bulk removal: Manager.Close of N sandboxes\n\n")
	fmt.Fprintf(w, "Median (min–max) of the rounds; \"serial\" is one removal at a time, the baseline; sandbox.RemoveWorkers is %d. "+
		"\"shutdown\" is a server's exit: HandOffRemovals, then Close, which ends each agent's stream and leaves the removal to the engine; "+
		"\"engine empty\" is when the engine had removed the last of them, measured from the same start.\n\n", sandbox.RemoveWorkers)
	t := &table{}
	head := []string{"sandboxes"}
	for _, wk := range removalWorkers {
		switch wk {
		case 1:
			head = append(head, "serial")
		case handOffWorkers:
			head = append(head, "shutdown (hand-off)", "engine empty")
		default:
			head = append(head, fmt.Sprintf("%d workers", wk))
		}
	}
	head = append(head, "serial / best removal", "serial / shutdown", "rounds")
	t.row(head...)
	for _, row := range r.Removals {
		cells := []string{fmt.Sprint(row.Sandboxes)}
		best, rounds := time.Duration(0), 0
		for _, wk := range removalWorkers {
			s := row.ByWorkers[wk]
			rounds = max(rounds, s.N)
			cells = append(cells, medianRange(s))
			if wk == handOffWorkers {
				cells = append(cells, medianRange(row.HandOffGone))
			} else if wk != 1 && s.N > 0 && (best == 0 || s.Median < best) {
				best = s.Median
			}
		}
		serial, shutdown := row.ByWorkers[1], row.ByWorkers[handOffWorkers]
		cells = append(cells, ratio(serial.Median, best), ratio(serial.Median, shutdown.Median), fmt.Sprint(rounds))
		t.row(cells...)
	}
	t.write(w)
}

// medianRange formats a median with its range, or a dash without samples.
func medianRange(s stats) string {
	if s.N == 0 {
		return "—"
	}
	return fmt.Sprintf("%s (%s–%s)", fmtDur(s.Median), fmtDur(s.Min), fmtDur(slices.Max(s.Samples)))
}

// ratio formats base / ours, or a dash when either is missing.
func ratio(base, ours time.Duration) string {
	if base <= 0 || ours <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f×", float64(base)/float64(ours))
}

type jsonRemoval struct {
	Sandboxes   int                   `json:"sandboxes"`
	ByWorkers   map[string]*jsonStats `json:"by_workers"` // "0": the shutdown's hand-off
	HandOffGone *jsonStats            `json:"hand_off_engine_empty"`
}

func (r *report) removalsJSON() []jsonRemoval {
	var out []jsonRemoval
	for _, row := range r.Removals {
		j := jsonRemoval{Sandboxes: row.Sandboxes, ByWorkers: map[string]*jsonStats{}, HandOffGone: row.HandOffGone.toJSON()}
		for wk, s := range row.ByWorkers {
			j.ByWorkers[strconv.Itoa(wk)] = s.toJSON()
		}
		out = append(out, j)
	}
	return out
}
