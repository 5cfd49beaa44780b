package notebook

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/textcap"
)

// Result is what one cell produced, as a notebook shows it under the cell.
type Result struct {
	// Status is the kernel's execute_reply status: "ok", "error" or "aborted"; empty when no
	// reply came (the kernel died, or the cell ignored an interrupt).
	Status         string
	ExecutionCount int
	// Output is the cell's text output in the order a notebook shows it: stdout, the text
	// of rich outputs that have no image (markdown, SVG markup, plain text, or HTML when it
	// is all there is), and the last expression's value. Capped by encoded size, head and
	// tail kept.
	Output string
	// Stderr is what the cell wrote to stderr (warnings, logging), capped the same way.
	Stderr string
	// Value is the last expression's text/plain, when the cell ended in one (it is also in
	// Output); cut at valueLimit.
	Value string
	// Error is the exception the cell raised, if any.
	Error *CellError
	// Images are the raster images the cell displayed (plots), decoded, in order.
	Images []Image
	// HTML holds text/html outputs whose plain text is in Output (a DataFrame's table, say).
	HTML []string
	// Truncated is set when Output or Stderr passed its cap; OmittedBytes counts what was
	// left out of both.
	Truncated    bool
	OmittedBytes int64
	TimedOut     bool
	Cancelled    bool
	// KernelDied is set when the kernel's process died while the cell ran.
	KernelDied bool
	// StateLost says why the variables and imports of earlier cells were gone before this
	// cell ran (the kernel died or was restarted since the previous cell); empty when state
	// carried over.
	StateLost string
	// Notes tell the caller what else happened: images left out, a restart after an
	// interrupt that did not stop the cell, a lost connection.
	Notes    []string
	Duration time.Duration
}

// CellError is an exception raised by a cell.
type CellError struct {
	Name  string
	Value string
	// Traceback is IPython's traceback, one entry per frame, with its colour codes removed.
	Traceback []string
}

// Text is the error as IPython prints it, ending with "Name: Value".
func (e *CellError) Text() string {
	tb := strings.TrimRight(strings.Join(e.Traceback, "\n"), "\n")
	summary := e.Name + ": " + e.Value
	if e.Value == "" {
		summary = e.Name
	}
	if tb == "" {
		return summary
	}
	if !strings.Contains(tb, summary) {
		tb += "\n" + summary
	}
	return tb
}

// Image is one raster image a cell displayed.
type Image struct {
	MIMEType string
	Data     []byte
	// DisplayID names the display, when the cell gave it one (update_display_data replaces it).
	DisplayID string
}

// Limits on what one cell's result holds.
const (
	// DefaultMaxOutputBytes caps Output and Stderr each, by JSON-encoded size.
	DefaultMaxOutputBytes = 1 << 20
	valueLimit            = 16 << 10
	htmlLimit             = 64 << 10
	maxHTML               = 8
	maxImages             = 16
	maxImageBytes         = 32 << 20 // all images of one cell, decoded
)

// rasterTypes are the image types returned as images, most preferred first.
func rasterTypes() [4]string {
	return [...]string{"image/png", "image/jpeg", "image/gif", "image/webp"}
}

// textTypes are the representations shown as text when a display has no raster image, most
// preferred first: what a notebook would render, in a form a model can read. SVG is markup
// that model APIs do not take as an image, so it is text here.
func textTypes() [6]string {
	return [...]string{"text/markdown", "image/svg+xml", "text/plain", "text/html", "text/latex", "application/json"}
}

// collector builds a Result from a cell's messages.
type collector struct {
	out, stderr *textcap.Capture
	blockEnded  bool // the last thing in out was a display: the next output starts a line
	clearNext   bool // clear_output(wait=True): clear when the next output arrives
	value       string
	cellErr     *CellError
	images      []Image
	imageBytes  int
	html        []string
	notes       []string
	// onStream, when set, sees every stream chunk as it arrives (progress).
	onStream func(name, text string)
}

func newCollector(limit int) *collector {
	return &collector{out: textcap.New(limit), stderr: textcap.New(limit)}
}

// handle takes one message answering the cell; it returns the execute_reply when m is it,
// and whether m says the kernel went idle after the cell (so no more output will come).
func (c *collector) handle(m *message) (reply *executeReply, idle bool) {
	switch m.Header.MsgType {
	case "stream":
		var s streamContent
		if json.Unmarshal(m.Content, &s) == nil {
			c.maybeClear()
			c.stream(s, m.truncated["text"])
		}
	case "display_data", "execute_result", "update_display_data":
		var d displayContent
		if json.Unmarshal(m.Content, &d) == nil {
			c.maybeClear()
			c.display(m.Header.MsgType, d, m.truncated)
		}
	case "error":
		var e errorContent
		if json.Unmarshal(m.Content, &e) == nil {
			c.setError(e)
		}
	case "clear_output":
		var cl clearOutputContent
		if json.Unmarshal(m.Content, &cl) == nil {
			c.clearNext = true
			if !cl.Wait {
				c.maybeClear()
			}
		}
	case "status":
		var st statusContent
		return nil, json.Unmarshal(m.Content, &st) == nil && st.ExecutionState == "idle"
	case "execute_reply":
		var r executeReply
		if json.Unmarshal(m.Content, &r) == nil {
			if r.Status == "error" && c.cellErr == nil {
				c.setError(r.errorContent)
			}
			return &r, false
		}
	}
	return nil, false
}

func (c *collector) maybeClear() {
	if !c.clearNext {
		return
	}
	c.clearNext = false
	c.out.Reset()
	c.images, c.imageBytes, c.html, c.value, c.blockEnded = nil, 0, nil, "", false
}

func (c *collector) stream(s streamContent, omitted int64) {
	if c.onStream != nil {
		c.onStream(s.Name, s.Text)
	}
	dst := c.out
	if s.Name == "stderr" {
		dst = c.stderr
	} else if c.blockEnded {
		c.newLine()
	}
	c.blockEnded = false
	// A string cut while it was read carries the marker where its middle was; the cap
	// counts those bytes as omitted instead of showing the marker as text.
	if omitted > 0 {
		if head, tail, ok := strings.Cut(s.Text, textcap.Marker(omitted)); ok {
			dst.WriteString(head)
			dst.Skip(omitted)
			dst.WriteString(tail)
			return
		}
	}
	dst.WriteString(s.Text)
}

func (c *collector) newLine() {
	if c.out.Len() > 0 && !c.out.EndsWith('\n') {
		c.out.WriteString("\n")
	}
}

func (c *collector) display(kind string, d displayContent, truncated map[string]int64) {
	for _, mime := range rasterTypes() {
		if data, ok := d.Data[mime].(string); ok {
			c.image(mime, data, d.Transient.DisplayID, kind == "update_display_data", truncated[mime])
			return // a notebook shows the image, not its text/plain ("<Figure size ...>")
		}
	}
	text, chosen := "", ""
	for _, mime := range textTypes() {
		if v, ok := d.Data[mime]; ok {
			text, chosen = representation(v), mime
			break
		}
	}
	if html, ok := d.Data["text/html"].(string); ok && chosen != "text/html" && len(c.html) < maxHTML {
		c.html = append(c.html, capString(html, htmlLimit))
	}
	if kind == "execute_result" {
		if plain, ok := d.Data["text/plain"].(string); ok {
			c.value = capString(plain, valueLimit)
		}
	}
	if text == "" {
		return
	}
	c.newLine()
	c.out.WriteString(text)
	c.blockEnded = true
}

// representation is a MIME bundle entry as text: strings as they are, JSON data encoded.
func representation(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func (c *collector) image(mime, b64, displayID string, update bool, truncated int64) {
	if truncated > 0 {
		c.notes = append(c.notes, fmt.Sprintf("an %s output of about %d MB was left out: it is over the %d MB limit; save it to a file, or display it smaller (a lower dpi or figsize)",
			mime, (int64(len(b64))+truncated)*3/4>>20, maxImagePayload*3/4>>20))
		return
	}
	data, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(b64), ""))
	if err != nil {
		c.notes = append(c.notes, fmt.Sprintf("an %s output was left out: its data is not valid base64", mime))
		return
	}
	if update && displayID != "" {
		for i := range c.images {
			if c.images[i].DisplayID == displayID {
				c.imageBytes += len(data) - len(c.images[i].Data)
				c.images[i] = Image{MIMEType: mime, Data: data, DisplayID: displayID}
				return
			}
		}
	}
	if len(c.images) >= maxImages || c.imageBytes+len(data) > maxImageBytes {
		c.notes = append(c.notes, fmt.Sprintf("an %s output was left out: one cell returns at most %d images and %d MB of them", mime, maxImages, maxImageBytes>>20))
		return
	}
	c.images = append(c.images, Image{MIMEType: mime, Data: data, DisplayID: displayID})
	c.imageBytes += len(data)
}

func (c *collector) setError(e errorContent) {
	tb := make([]string, len(e.Traceback))
	for i, line := range e.Traceback {
		tb[i] = stripANSI(line)
	}
	c.cellErr = &CellError{Name: e.Ename, Value: stripANSI(e.Evalue), Traceback: tb}
}

// result assembles what was collected.
func (c *collector) result() Result {
	r := Result{Value: c.value, Error: c.cellErr, Images: c.images, HTML: c.html, Notes: c.notes}
	var trunc bool
	var omitted int64
	r.Output, trunc, omitted = c.out.Text()
	r.Truncated, r.OmittedBytes = trunc, omitted
	r.Stderr, trunc, omitted = c.stderr.Text()
	r.Truncated = r.Truncated || trunc
	r.OmittedBytes += omitted
	return r
}

// capString cuts s to at most n bytes, on a rune boundary, saying so.
func capString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && cut < len(s) && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("\n[... %d bytes omitted ...]", len(s)-cut)
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
