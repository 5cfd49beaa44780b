package notebook

import (
	"fmt"

	"github.com/enclave-mcp/enclave-mcp/internal/textcap"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Limits on the output forwarded while a cell runs. Progress is a view for a person or a
// model watching; the result carries the authoritative (capped) output. A cell printing
// 20 MB must not turn into 20 MB of notifications.
const (
	// progressChunk caps each stream's text in one notification, by encoded size.
	progressChunk = 64 << 10
	// progressBudget caps the text of all notifications of one cell.
	progressBudget = 1 << 20
)

// progress batches a running cell's stream output into capped notifications.
type progress struct {
	send           func(sandbox.Output)
	stdout, stderr *textcap.Capture
	budget         int
	exhausted      bool
}

func newProgress(send func(sandbox.Output)) *progress {
	if send == nil {
		return nil
	}
	return &progress{send: send, stdout: textcap.New(progressChunk), stderr: textcap.New(progressChunk), budget: progressBudget}
}

// add records a stream chunk for the next flush.
func (p *progress) add(name, text string) {
	if p.exhausted {
		return
	}
	if name == "stderr" {
		p.stderr.WriteString(text)
	} else {
		p.stdout.WriteString(text)
	}
}

// flush sends what arrived since the last flush, if anything, within the budget.
func (p *progress) flush() {
	if p.exhausted || (p.stdout.Len() == 0 && p.stderr.Len() == 0) {
		return
	}
	out, _, _ := p.stdout.Text()
	errText, _, _ := p.stderr.Text()
	p.stdout.Reset()
	p.stderr.Reset()
	size := len(out) + len(errText)
	if size > p.budget {
		p.exhausted = true
		p.send(sandbox.Output{Stdout: fmt.Sprintf("\n[progress output stops here: it passed %d KiB; the result keeps the head and tail of the whole output]\n", progressBudget>>10)})
		return
	}
	p.budget -= size
	p.send(sandbox.Output{Stdout: out, Stderr: errText})
}
