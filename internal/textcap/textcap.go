// Package textcap bounds text by the size it will have once JSON-encoded, keeping its head
// and tail and saying how much of the middle was left out.
//
// Output reaches its reader inside a JSON string, so its caps are measured the way it will
// be sent: by encoded size. A megabyte of NUL bytes is six megabytes on the wire, and a cap
// on raw bytes would let it through.
package textcap

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// asciiCost is the encoded size of each ASCII byte inside a JSON string. It is deliberately
// the worst case over common encoders: Go's escapes <, > and & unless told not to, and
// others escape DEL.
var asciiCost = func() (cost [utf8.RuneSelf]uint8) {
	for c := range cost {
		switch {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
			cost[c] = 2
		case c < 0x20 || c == 0x7f || c == '<' || c == '>' || c == '&':
			cost[c] = 6 // \u00XX
		default:
			cost[c] = 1
		}
	}
	return cost
}()

// nextRune decodes the first rune of b (len(b) > 0) and returns its length in b and its
// encoded size. An invalid byte is a rune of length 1 that will be sent as \ufffd.
func nextRune(b []byte) (size, cost int) {
	if c := b[0]; c < utf8.RuneSelf {
		return 1, int(asciiCost[c])
	}
	r, size := utf8.DecodeRune(b)
	switch {
	case r == utf8.RuneError && size == 1:
		return 1, 6
	case r == '\u2028' || r == '\u2029':
		return size, 6 // encoding/json escapes these for JavaScript's sake
	default:
		return size, size
	}
}

// EncodedLen is the size of b once JSON-encoded as (part of) a string, quotes excluded,
// with each invalid byte sent as \ufffd. It is never less than encoding/json produces.
func EncodedLen(b []byte) int {
	total := 0
	for i := 0; i < len(b); {
		size, cost := nextRune(b[i:])
		i += size
		total += cost
	}
	return total
}

// FitPrefix returns the longest prefix of b that encodes within budget and ends on a rune
// boundary. A rune that b ends in the middle of is left out, since the bytes that would
// complete it come after b.
func FitPrefix(b []byte, budget int) []byte {
	n, used := 0, 0
	for n < len(b) && utf8.FullRune(b[n:]) {
		size, cost := nextRune(b[n:])
		if used+cost > budget {
			break
		}
		n += size
		used += cost
	}
	return b[:n]
}

// FitSuffix returns the longest suffix of b that encodes within budget and starts on a rune
// boundary. b may be a window cut out of a longer text, so its first bytes may be the end of
// a rune that started before it; those are dropped.
func FitSuffix(b []byte, budget int) []byte {
	for i := 0; i < utf8.UTFMax-1 && len(b) > 0 && !utf8.RuneStart(b[0]); i++ {
		b = b[1:]
	}
	used := EncodedLen(b)
	for used > budget && len(b) > 0 {
		size, cost := nextRune(b)
		b = b[size:]
		used -= cost
	}
	return b
}

// Marker stands in for the middle of a text that passed its cap, omitted raw bytes of it.
func Marker(omitted int64) string {
	return fmt.Sprintf("\n[... %d bytes omitted ...]\n", omitted)
}

// validText turns b into valid UTF-8, one U+FFFD per invalid byte (as encoding/json decodes
// it), so that the text says how much was lost and encodes no larger than EncodedLen
// promised.
func validText(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 16)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			sb.WriteRune(utf8.RuneError)
		} else {
			sb.Write(b[i : i+size])
		}
		i += size
	}
	return sb.String()
}

// Capture keeps what of a text written in pieces can be reported under an encoded-size
// limit: the head (its first half) and the tail (the other half, the latest bytes), dropping
// the middle.
//
// Writes do no per-byte work, so a writer can pour text in as fast as it comes: they only
// copy raw bytes into the head and a ring buffer for the tail, and the encoded sizes are
// worked out once, by Text. That needs no more than limit raw bytes kept, because every byte
// encodes to at least one: the last tailLimit raw bytes always hold the whole tail, and a
// text of more than limit raw bytes is over its limit whatever it contains.
//
// A Capture is not safe for concurrent use.
type Capture struct {
	limit     int // encoded-size cap of the whole text
	headLimit int // encoded-size budget of the head; the tail gets the rest
	head      []byte
	tail      []byte // ring buffer of the latest bytes after the head, up to tailLimit
	tailLimit int
	oldest    int   // once the ring is full, the index of its oldest byte
	total     int64 // every byte ever written or skipped
	// headDone stops the head growing once bytes were skipped, so that it stays one
	// contiguous piece of the text.
	headDone bool
}

// New returns an empty Capture whose Text encodes within limit (the omission marker aside).
func New(limit int) *Capture {
	headLimit := limit / 2
	return &Capture{limit: limit, headLimit: headLimit, tailLimit: limit - headLimit}
}

// Write records p. It never fails; the signature lets a Capture stand in for an io.Writer.
func (c *Capture) Write(p []byte) (int, error) {
	write(c, p)
	return len(p), nil
}

// WriteString records s, as Write does.
func (c *Capture) WriteString(s string) (int, error) {
	write(c, s)
	return len(s), nil
}

func write[T string | []byte](c *Capture, p T) {
	c.total += int64(len(p))
	if room := c.headLimit - len(c.head); room > 0 && !c.headDone {
		n := min(room, len(p))
		c.head = append(c.head, p[:n]...)
		p = p[n:]
	}
	if len(p) == 0 || c.tailLimit == 0 {
		return
	}
	if len(p) >= c.tailLimit {
		c.tail = append(c.tail[:0], p[len(p)-c.tailLimit:]...)
		c.oldest = 0
		return
	}
	if room := c.tailLimit - len(c.tail); room > 0 {
		n := min(room, len(p))
		c.tail = append(c.tail, p[:n]...)
		p = p[n:]
	}
	for len(p) > 0 {
		n := copy(c.tail[c.oldest:], p)
		p = p[n:]
		c.oldest = (c.oldest + n) % c.tailLimit
	}
}

// Skip records n bytes of the text that were dropped before they got here (a string cut
// while it was read): they count as omitted, the head grows no more, and the tail restarts
// after them.
func (c *Capture) Skip(n int64) {
	c.total += n
	c.tail, c.oldest = c.tail[:0], 0
	c.headDone = true
}

// Len is the number of bytes written (or skipped) so far.
func (c *Capture) Len() int64 { return c.total }

// EndsWith reports whether the text written so far ends with byte b. It knows only what
// is kept: with a limit of 0, or just after a Skip, it looks no further than the head.
func (c *Capture) EndsWith(b byte) bool {
	switch {
	case len(c.tail) > 0:
		i := c.oldest - 1
		if i < 0 {
			i = len(c.tail) - 1
		}
		return c.tail[i] == b
	case len(c.head) > 0:
		return c.head[len(c.head)-1] == b
	}
	return false
}

// tailBytes returns the ring's content oldest first.
func (c *Capture) tailBytes() []byte {
	if c.oldest == 0 {
		return c.tail
	}
	ordered := make([]byte, 0, len(c.tail))
	ordered = append(ordered, c.tail[c.oldest:]...)
	return append(ordered, c.tail[:c.oldest]...)
}

// Text returns the text as reported, valid UTF-8 with one U+FFFD per invalid byte: all of
// it if it encodes within the limit, else its head, Marker(omitted) and its tail, where
// omitted counts the raw bytes left out.
func (c *Capture) Text() (text string, truncated bool, omitted int64) {
	headFrom, tailFrom := c.head, c.tailBytes()
	if c.total == int64(len(headFrom)+len(tailFrom)) {
		all := make([]byte, 0, len(headFrom)+len(tailFrom))
		all = append(append(all, headFrom...), tailFrom...)
		if EncodedLen(all) <= c.limit {
			return validText(all), false, 0
		}
		// Nothing was dropped yet, so the tail may begin inside the head buffer.
		headFrom = all
		tailFrom = all[len(FitPrefix(all, c.headLimit)):]
	}
	head := FitPrefix(headFrom, c.headLimit)
	tail := FitSuffix(tailFrom, c.limit-c.headLimit)
	omitted = c.total - int64(len(head)) - int64(len(tail))
	return validText(head) + Marker(omitted) + validText(tail), true, omitted
}

// Reset empties the Capture for reuse, keeping its buffers.
func (c *Capture) Reset() {
	c.head, c.tail, c.oldest, c.total, c.headDone = c.head[:0], c.tail[:0], 0, 0, false
}
