package notebook

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Output reaches the model inside a JSON string, so its caps are measured the way it will
// be sent: by JSON-encoded size (a control character costs the six bytes of its \u escape).
// The agent caps process output the same way; this is the notebook's copy of the rule.

// encodedCost is the size of one rune of text once JSON-encoded, quotes excluded. It is the
// worst case over common encoders (Go's escapes <, > and & unless told not to).
func encodedCost(r rune, size int) int {
	switch {
	case r == utf8.RuneError && size == 1:
		return 6 // an invalid byte is sent as \ufffd
	case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t' || r == '\b' || r == '\f':
		return 2
	case r < 0x20 || r == 0x7f || r == '<' || r == '>' || r == '&' || r == '\u2028' || r == '\u2029':
		return 6
	default:
		return size
	}
}

// encodedLen is the JSON-encoded size of b as (part of) a string.
func encodedLen(b []byte) int {
	total := 0
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		total += encodedCost(r, size)
		i += size
	}
	return total
}

// fitPrefix is the longest prefix of b that encodes within budget and ends on a rune.
func fitPrefix(b []byte, budget int) []byte {
	n, used := 0, 0
	for n < len(b) {
		r, size := utf8.DecodeRune(b[n:])
		if used+encodedCost(r, size) > budget {
			break
		}
		used += encodedCost(r, size)
		n += size
	}
	return b[:n]
}

// fitSuffix is the longest suffix of b that encodes within budget and starts on a rune. b
// may begin inside a rune cut off by the window it came from; those bytes are dropped.
func fitSuffix(b []byte, budget int) []byte {
	for i := 0; i < utf8.UTFMax-1 && len(b) > 0 && !utf8.RuneStart(b[0]); i++ {
		b = b[1:]
	}
	used := encodedLen(b)
	for used > budget && len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		used -= encodedCost(r, size)
		b = b[size:]
	}
	return b
}

// omissionMarker stands in for the middle of a text that passed its cap.
func omissionMarker(omitted int64) string {
	return fmt.Sprintf("\n[... %d bytes omitted ...]\n", omitted)
}

// textCap keeps the head and the tail of a text written in pieces, so that whatever its
// length, the text reported encodes within limit and memory stays bounded by it. Every byte
// encodes to at least one, so limit raw bytes (half kept from the start, half the latest)
// always hold what will be reported.
type textCap struct {
	limit int
	head  []byte
	ring  []byte // the latest bytes after the head, up to tailMax
	start int    // once ring is full, the index of its oldest byte
	total int64
	// headDone stops the head growing once bytes were skipped, so that it stays one
	// contiguous piece of the text.
	headDone bool
}

func newTextCap(limit int) *textCap { return &textCap{limit: limit} }

func (c *textCap) headMax() int { return c.limit / 2 }
func (c *textCap) tailMax() int { return c.limit - c.limit/2 }

// WriteString records s.
func (c *textCap) WriteString(s string) {
	c.total += int64(len(s))
	if room := c.headMax() - len(c.head); room > 0 && !c.headDone {
		n := min(room, len(s))
		c.head = append(c.head, s[:n]...)
		s = s[n:]
	}
	tailMax := c.tailMax()
	if len(s) == 0 || tailMax == 0 {
		return
	}
	if len(s) >= tailMax {
		c.ring = append(c.ring[:0], s[len(s)-tailMax:]...)
		c.start = 0
		return
	}
	if room := tailMax - len(c.ring); room > 0 {
		n := min(room, len(s))
		c.ring = append(c.ring, s[:n]...)
		s = s[n:]
	}
	for len(s) > 0 {
		n := copy(c.ring[c.start:], s)
		s = s[n:]
		c.start = (c.start + n) % tailMax
	}
}

// skip records n bytes that were dropped before they got here (a string cut while it was
// read): they count as omitted, and the tail restarts after them.
func (c *textCap) skip(n int64) {
	c.total += n
	c.ring, c.start = c.ring[:0], 0
	c.headDone = true
}

// Len is the number of bytes written so far.
func (c *textCap) Len() int64 { return c.total }

// endsWith reports whether the text written so far ends with byte b.
func (c *textCap) endsWith(b byte) bool {
	switch {
	case len(c.ring) > 0:
		i := c.start - 1
		if i < 0 {
			i = len(c.ring) - 1
		}
		return c.ring[i] == b
	case len(c.head) > 0:
		return c.head[len(c.head)-1] == b
	}
	return false
}

// Text is the text as reported: whole if it encodes within the limit, else its head, a
// marker saying how many bytes were left out, and its tail.
func (c *textCap) Text() (text string, truncated bool, omitted int64) {
	tail := append(append([]byte(nil), c.ring[c.start:]...), c.ring[:c.start]...)
	headFrom := c.head
	if c.total == int64(len(c.head)+len(tail)) {
		all := append(append([]byte(nil), c.head...), tail...)
		if encodedLen(all) <= c.limit {
			return strings.ToValidUTF8(string(all), "\uFFFD"), false, 0
		}
		headFrom = all
		tail = all[len(fitPrefix(all, c.headMax())):]
	}
	h := fitPrefix(headFrom, c.headMax())
	t := fitSuffix(tail, c.tailMax())
	omitted = c.total - int64(len(h)) - int64(len(t))
	return strings.ToValidUTF8(string(h), "\uFFFD") + omissionMarker(omitted) + strings.ToValidUTF8(string(t), "\uFFFD"), true, omitted
}

// reset empties the cap for reuse.
func (c *textCap) reset() {
	c.head, c.ring, c.start, c.total, c.headDone = c.head[:0], c.ring[:0], 0, 0, false
}

// stripANSI removes terminal escape sequences (colours, cursor moves) that IPython puts in
// tracebacks: CSI sequences (ESC [ ... final byte) and OSC sequences (ESC ] ... BEL or ST).
func stripANSI(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if s[i] != 0x1b {
			b.WriteByte(s[i])
			i++
			continue
		}
		i++
		if i >= len(s) {
			break
		}
		switch s[i] {
		case '[': // CSI: parameters and intermediates, then one final byte in @..~
			i++
			for i < len(s) && (s[i] < 0x40 || s[i] > 0x7e) {
				i++
			}
			i++
		case ']': // OSC: up to BEL or ESC backslash
			i++
			for i < len(s) && s[i] != 0x07 && !(s[i] == 0x1b && i+1 < len(s) && s[i+1] == '\\') {
				i++
			}
			if i < len(s) && s[i] == 0x1b {
				i++
			}
			i++
		default: // a two-byte escape
			i++
		}
	}
	return b.String()
}
