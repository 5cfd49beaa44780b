package notebook

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
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
	maxNotes              = 8
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
	// notesDropped counts the notes past maxNotes.
	notesDropped int
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
		c.maybeClear()
		c.stream(streamOf(m.Content), m.truncated["text"])
	case "display_data", "execute_result", "update_display_data":
		c.maybeClear()
		c.display(m.Header.MsgType, displayOf(m.Content), m.truncated)
	case "error":
		c.setError(errorOf(m.Content))
	case "clear_output":
		c.clearNext = true
		if !m.Content.flag("wait") {
			c.maybeClear()
		}
	case "status":
		return nil, m.Content.str("execution_state") == "idle"
	case "execute_reply":
		r := replyOf(m.Content)
		if r.Status == "error" && c.cellErr == nil {
			c.setError(r.errorContent)
		}
		return &r, false
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
	if mime, data, ok := rasterOf(d.Data, truncated); ok {
		// A notebook shows the image, not its text/plain ("<Figure size ...>").
		c.image(mime, data, d.DisplayID, kind == "update_display_data", truncated[mime])
		return
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

// rasterOf picks the image a display shows: the most preferred raster type that arrived
// whole, else the most preferred one that was cut while read (which image then refuses).
func rasterOf(data fields, truncated map[string]int64) (mime, b64 string, ok bool) {
	for _, t := range rasterTypes() {
		if s, isStr := data[t].(string); isStr {
			if truncated[t] == 0 {
				return t, s, true
			}
			if !ok {
				mime, b64, ok = t, s, true
			}
		}
	}
	return mime, b64, ok
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
		c.note(fmt.Sprintf("an %s output of about %d MB was left out: it is over the %d MB limit; save it to a file, or display it smaller (a lower dpi or figsize)",
			mime, (int64(len(b64))+truncated)*3/4>>20, maxImagePayload*3/4>>20))
		return
	}
	// The limits are checked on the size the data decodes to, before it is decoded.
	size := base64.StdEncoding.DecodedLen(len(b64))
	replaces := -1
	if update && displayID != "" {
		for i := range c.images {
			if c.images[i].DisplayID == displayID {
				replaces = i
				break
			}
		}
	}
	total := c.imageBytes + size
	if replaces >= 0 {
		total -= len(c.images[replaces].Data)
	}
	if (replaces < 0 && len(c.images) >= maxImages) || total > maxImageBytes {
		c.note(fmt.Sprintf("an %s output was left out: one cell returns at most %d images and %d MB of them", mime, maxImages, maxImageBytes>>20))
		return
	}
	data, err := decodeBase64(b64)
	if err != nil {
		c.note(fmt.Sprintf("an %s output was left out: its data is not valid base64", mime))
		return
	}
	img := Image{MIMEType: mime, Data: data, DisplayID: displayID}
	if replaces >= 0 {
		c.imageBytes += len(data) - len(c.images[replaces].Data)
		c.images[replaces] = img
		return
	}
	c.images = append(c.images, img)
	c.imageBytes += len(data)
}

// decodeBase64 decodes standard base64 that may be broken into lines or padded with
// spaces straight into one buffer of the decoded size, without copying the text first.
func decodeBase64(s string) ([]byte, error) {
	dst := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	dec := base64.NewDecoder(base64.StdEncoding, &spaceless{s: s})
	n := 0
	var probe [1]byte // dst is at least as long as the data: reading on into probe finds EOF or an error
	for {
		into := dst[n:]
		if len(into) == 0 {
			into = probe[:]
		}
		m, err := dec.Read(into)
		switch {
		case errors.Is(err, io.EOF):
			return dst[:n], nil
		case err != nil:
			return nil, err
		case len(dst[n:]) == 0 && m > 0:
			return nil, errors.New("more data than its length allows")
		}
		n += m
	}
}

// spaceless reads a string leaving out ASCII white space.
type spaceless struct{ s string }

func (r *spaceless) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(r.s) > 0 {
		if c := r.s[0]; c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			p[n] = c
			n++
		}
		r.s = r.s[1:]
	}
	if n == 0 && len(r.s) == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// note adds a note for the result, up to maxNotes of them: a kernel can send endless
// outputs that each earn one.
func (c *collector) note(text string) {
	if len(c.notes) < maxNotes {
		c.notes = append(c.notes, text)
		return
	}
	c.notesDropped++
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
	r := Result{Value: c.value, Error: c.cellErr, Images: c.images, HTML: c.html, Notes: slices.Clone(c.notes)}
	if c.notesDropped > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("and %d more notes like these", c.notesDropped))
	}
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
