package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// row is one operation: ours beside the baseline. A stats with N == 0 was not measured.
type row struct {
	Op       string
	Ours     stats
	Baseline string // what the docker column measured
	Docker   stats
	Target   time.Duration // 0: no target
	Skipped  string
}

// part is one line of the "where the time goes" table: a round trip and, when the agent
// reported it, the process's own run time inside the sandbox.
type part struct {
	Step      string
	RoundTrip stats
	Process   stats // N == 0 when the step runs no process
}

type report struct {
	Engine     string
	APIVersion string
	Kernel     string
	Nproc      int
	LoadAvg    string // at the start
	Image      string
	Agent      string
	N          int
	Started    time.Time
	Took       string
	Rows       []row
	Parts      []part
	Variants   []variant    // the same operation two ways (see variants.go)
	Removals   []removalRow // bulk removal by concurrency (see removal.go)
	Density    []densityRow // N idle sandboxes (see density.go)
}

func (r *report) add(row row) { r.Rows = append(r.Rows, row) }

func (r *report) addPart(step string, roundTrip stats, process []time.Duration) {
	r.Parts = append(r.Parts, part{Step: step, RoundTrip: roundTrip, Process: summarize(process)})
}

// addAgentTime records a tool call's round trip beside the process time the agent reported.
func (r *report) addAgentTime(op string, roundTrip stats, process []time.Duration) {
	r.addPart(op+" (tool call)", roundTrip, process)
}

func (r *report) header() string {
	return fmt.Sprintf("Docker Engine %s (API %s, kernel %s), nproc %d, load average %s, image %s, agent %s",
		r.Engine, r.APIVersion, r.Kernel, r.Nproc, r.LoadAvg, r.Image, r.Agent)
}

// printReport writes the results as Markdown.
func printReport(w io.Writer, r *report) {
	fmt.Fprintf(w, "## enclave-mcp benchmark\n\n")
	fmt.Fprintf(w, "%s; n = %d per-call runs; %s; took %s.\n\n", r.header(), r.N, r.Started.Format("2006-01-02 15:04 UTC"), r.Took)
	printRows(w, r)
	printVariants(w, r)
	printRemovals(w, r)
	printDensity(w, r)
}

// printRows writes the main table, ours beside the baseline, and the breakdown, when there
// are rows (a run limited to one kind of measurement has none).
func printRows(w io.Writer, r *report) {
	if len(r.Rows) == 0 {
		return
	}
	t := &table{}
	t.row("operation", "ours median", "p90", "min", "n", "docker (baseline)", "docker median", "p90", "min", "n", "docker / ours", "target", "pass")
	for _, row := range r.Rows {
		cells := []string{row.Op}
		cells = append(cells, statCells(row.Ours)...)
		cells = append(cells, row.Baseline)
		if row.Skipped != "" {
			cells = append(cells, row.Skipped, "", "", "")
		} else {
			cells = append(cells, statCells(row.Docker)...)
		}
		ratio := "—"
		if row.Ours.N > 0 && row.Docker.N > 0 && row.Ours.Median > 0 {
			ratio = fmt.Sprintf("%.1f×", float64(row.Docker.Median)/float64(row.Ours.Median))
		}
		target, pass := "—", "—"
		if row.Target > 0 {
			target = "≤ " + fmtDur(row.Target)
			if row.Ours.N > 0 {
				pass = "pass"
				if row.Ours.Median > row.Target {
					pass = "**FAIL**"
				}
			}
		}
		cells = append(cells, ratio, target, pass)
		t.row(cells...)
	}
	t.write(w)
	fmt.Fprint(w, `
Notes: medians decide pass/fail. Ours goes through the session core's tool-call path on a AgentSandbox (the MCP and REST path); the
docker column runs the same command per call through the Docker API, in the same container, as the same user.
Our create includes waiting for the agent's ready message; the baseline's ends when ContainerStart returns.
Close is a force remove (SIGKILL, no grace period), so how an image's PID 1 treats SIGTERM cannot slow it; the
"polite way" row shows what a docker stop would cost when PID 1 ignores SIGTERM.
The multi_code_executor rows time the whole tool call (files written, build, run, directory removed) in one
sandbox of the polyglot image; they have no docker column.
`)

	if len(r.Parts) > 0 {
		fmt.Fprintf(w, "\n### Where the time goes (ours)\n\n")
		fmt.Fprintf(w, "\"process\" is the run time the agent measured around the process inside the sandbox; the rest of the round trip is the tool layer, the JSON-lines stream through the engine's attach connection, and the agent's own work.\n\n")
		t := &table{}
		t.row("step", "round trip median", "p90", "min", "n", "process median", "outside the process (median)")
		for _, p := range r.Parts {
			cells := []string{p.Step}
			cells = append(cells, statCells(p.RoundTrip)...)
			if p.Process.N > 0 {
				cells = append(cells, fmtDur(p.Process.Median), fmtDur(p.RoundTrip.Median-p.Process.Median))
			} else {
				cells = append(cells, "—", "—")
			}
			t.row(cells...)
		}
		t.write(w)
	}
}

func statCells(s stats) []string {
	if s.N == 0 {
		return []string{"—", "", "", ""}
	}
	return []string{fmtDur(s.Median), fmtDur(s.P90), fmtDur(s.Min), fmt.Sprint(s.N)}
}

// table collects rows and writes them as a Markdown table with aligned columns.
type table struct{ rows [][]string }

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) {
	if len(t.rows) == 0 {
		return
	}
	widths := make([]int, len(t.rows[0]))
	for i := range widths {
		widths[i] = 3 // the least a Markdown delimiter cell takes
	}
	for _, r := range t.rows {
		for i, c := range r {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range cells {
			b.WriteString(" " + c + strings.Repeat(" ", widths[i]-len([]rune(c))) + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	line(t.rows[0])
	sep := make([]string, len(widths))
	for i, n := range widths {
		sep[i] = strings.Repeat("-", n)
	}
	line(sep)
	for _, r := range t.rows[1:] {
		line(r)
	}
}

// JSON output: durations in milliseconds.

type jsonStats struct {
	N        int       `json:"n"`
	MedianMS float64   `json:"median_ms"`
	P90MS    float64   `json:"p90_ms"`
	MinMS    float64   `json:"min_ms"`
	Samples  []float64 `json:"samples_ms"`
}

func (s stats) toJSON() *jsonStats {
	if s.N == 0 {
		return nil
	}
	j := &jsonStats{N: s.N, MedianMS: ms(s.Median), P90MS: ms(s.P90), MinMS: ms(s.Min)}
	for _, d := range s.Samples {
		j.Samples = append(j.Samples, ms(d))
	}
	return j
}

type jsonRow struct {
	Op       string     `json:"op"`
	Ours     *jsonStats `json:"ours,omitempty"`
	Baseline string     `json:"baseline"`
	Docker   *jsonStats `json:"docker,omitempty"`
	Ratio    float64    `json:"docker_over_ours,omitempty"`
	TargetMS float64    `json:"target_ms,omitempty"`
	Pass     *bool      `json:"pass,omitempty"`
	Skipped  string     `json:"skipped,omitempty"`
}

type jsonPart struct {
	Step      string     `json:"step"`
	RoundTrip *jsonStats `json:"round_trip"`
	Process   *jsonStats `json:"process,omitempty"`
}

type jsonReport struct {
	Engine     string        `json:"engine_version"`
	APIVersion string        `json:"api_version"`
	Kernel     string        `json:"kernel"`
	Nproc      int           `json:"nproc"`
	LoadAvg    string        `json:"load_average"`
	Image      string        `json:"image"`
	Agent      string        `json:"agent_binary"`
	N          int           `json:"n"`
	Started    time.Time     `json:"started"`
	Took       string        `json:"took"`
	Rows       []jsonRow     `json:"rows"`
	Parts      []jsonPart    `json:"breakdown"`
	Variants   []jsonVariant `json:"variants,omitempty"`
	Removals   []jsonRemoval `json:"bulk_removal,omitempty"`
	Density    []jsonDensity `json:"density,omitempty"`
}

func (r *report) toJSON() jsonReport {
	j := jsonReport{Engine: r.Engine, APIVersion: r.APIVersion, Kernel: r.Kernel, Nproc: r.Nproc, LoadAvg: r.LoadAvg, Image: r.Image, Agent: r.Agent, N: r.N, Started: r.Started, Took: r.Took}
	for _, row := range r.Rows {
		jr := jsonRow{Op: row.Op, Ours: row.Ours.toJSON(), Baseline: row.Baseline, Docker: row.Docker.toJSON(), Skipped: row.Skipped}
		if row.Ours.N > 0 && row.Docker.N > 0 && row.Ours.Median > 0 {
			jr.Ratio = float64(row.Docker.Median) / float64(row.Ours.Median)
		}
		if row.Target > 0 {
			jr.TargetMS = ms(row.Target)
			if row.Ours.N > 0 {
				jr.Pass = new(row.Ours.Median <= row.Target)
			}
		}
		j.Rows = append(j.Rows, jr)
	}
	for _, p := range r.Parts {
		j.Parts = append(j.Parts, jsonPart{Step: p.Step, RoundTrip: p.RoundTrip.toJSON(), Process: p.Process.toJSON()})
	}
	j.Variants = r.variantsJSON()
	j.Removals = r.removalsJSON()
	j.Density = r.densityJSON()
	return j
}
